"""Executor side of MetaCLIP concept matching: which metadata entries a caption holds.

Matching follows MetaCLIP's substring rule (Xu et al. 2023, `substr_matching.py`): the
caption is padded with a space on each side, the punctuation , . ; : ? ! ` gets a space
on each side, tabs and line breaks become spaces, and an entry matches when
" entry " occurs in that text. Case is kept, as the reference keeps it.

One Aho-Corasick automaton (pyahocorasick) of the padded entries is built per Python
worker and metadata version, from the `metadata` table itself (read by URI, so no
driver state travels with the tasks), and reused by every task of that worker.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pyarrow as pa

PUNCTUATION = (",", ".", ";", ":", "?", "!", "`")
BREAKS = ("\t", "\n", "\r")


def spaced(text: str) -> str:
    """The caption as matching sees it (MetaCLIP's spacing)."""
    out = f" {text} "
    for p in PUNCTUATION:
        out = out.replace(p, f" {p} ")
    for b in BREAKS:
        out = out.replace(b, " ")
    return out


class Matcher:
    """An automaton over `entries` (entry id = position); `match` gives sorted ids."""

    def __init__(self, entries: list[str], ids: list[int] | None = None):
        import ahocorasick

        self.automaton = ahocorasick.Automaton()
        ids = list(range(len(entries))) if ids is None else ids
        added = 0
        for i, entry in zip(ids, entries, strict=True):
            if entry and entry.strip():
                key = f" {entry} "
                # an entry listed twice keeps its first id, as a set of matches would
                if not self.automaton.exists(key):
                    self.automaton.add_word(key, int(i))
                    added += 1
        self.size = added
        if added:
            self.automaton.make_automaton()

    def match(self, caption: str | None) -> list[int]:
        if not caption or not self.size:
            return []
        return sorted({i for _, i in self.automaton.iter(spaced(caption))})


_MATCHERS: dict[tuple[str, int], Matcher] = {}
_LOCK = threading.Lock()


def matcher_for(table_uri: str, version: int) -> Matcher:
    """The worker's automaton for `metadata` rows of `version` (built on first use; the
    object-store settings come from the environment, as for every executor read)."""
    key = (table_uri, version)
    with _LOCK:
        found = _MATCHERS.get(key)
        if found is None:
            import pyarrow.compute as pc
            from deltalake import DeltaTable

            dt = DeltaTable(table_uri)
            rows = dt.to_pyarrow_dataset().to_table(
                columns=["entry_id", "entry"], filter=pc.field("version") == version
            )
            found = Matcher(rows.column("entry").to_pylist(), rows.column("entry_id").to_pylist())
            _MATCHERS.clear()  # one metadata version at a time per worker
            _MATCHERS[key] = found
    return found


def match_batches(
    batches: Iterator[pa.RecordBatch],
    table_uri: str,
    version: int,
    run_id: str,
    counter=None,
) -> Iterator[pa.RecordBatch]:
    """(uid, caption) batches -> `concepts` rows (uid, metadata_version, entry_ids, run_id)."""
    m = matcher_for(table_uri, version)
    version_value, run_value = pa.scalar(version, pa.int32()), pa.scalar(run_id, pa.string())
    for b in batches:
        ids = [m.match(c) for c in b.column("caption").to_pylist()]
        n = len(ids)
        yield pa.RecordBatch.from_arrays(
            [
                b.column("uid"),
                pa.repeat(version_value, n),
                int_lists(ids),
                pa.repeat(run_value, n),
            ],
            names=["uid", "metadata_version", "entry_ids", "run_id"],
        )
        if counter is not None:
            counter.add(n)


def int_lists(ids: list[list[int]]) -> pa.ListArray:
    """A list<int32> array from offsets and one flat array (several times faster than
    converting the nested Python lists one by one)."""
    import itertools

    import numpy as np

    offsets = np.zeros(len(ids) + 1, np.int32)
    np.cumsum([len(x) for x in ids], out=offsets[1:])
    flat = pa.array(list(itertools.chain.from_iterable(ids)), pa.int32())
    return pa.ListArray.from_arrays(pa.array(offsets), flat)
