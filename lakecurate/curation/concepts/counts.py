"""Reading the `metadata` and `concept_counts` tables on the driver (both are small: one
row per entry, and one per entry and counting run)."""

from __future__ import annotations

import pyarrow.compute as pc

from lakecurate.deltaio.lake import Lake
from lakecurate.runtime.errors import JobError

# each counting run also appends a row of this entry id (count 0): it records the
# `concepts` version counted even when the new captions match nothing
MARKER = -1


def latest_metadata_version(lake: Lake) -> int | None:
    """The newest entry list's version (None: no metadata yet)."""
    if not lake.exists("metadata"):
        return None
    got = [a.get("max.version") for a in lake.add_actions("metadata") if a.get("num_records")]
    got = [int(v) for v in got if v is not None]
    return max(got) if got else None


def require_metadata_version(lake: Lake) -> int:
    mv = latest_metadata_version(lake)
    if mv is None:
        raise JobError(
            f"lake {lake.root} has no concept metadata: run `lakecurate metadata import FILE` "
            "(MetaCLIP's metadata.json or one entry a line) or `lakecurate metadata build`"
        )
    return mv


def _rows(lake: Lake, table: str, columns: list[str], version: int):
    ds = lake.delta(table).to_pyarrow_dataset()
    return ds.to_table(columns=columns, filter=pc.field("metadata_version") == version)


def entry_counts(lake: Lake, metadata_version: int) -> dict[int, int]:
    """entry id -> pairs of the lake whose caption matches it (the sum of its rows)."""
    if not lake.exists("concept_counts"):
        return {}
    t = _rows(lake, "concept_counts", ["entry_id", "count"], metadata_version)
    t = t.filter(pc.field("entry_id") != MARKER)
    if not t.num_rows:
        return {}
    summed = t.group_by("entry_id").aggregate([("count", "sum")])
    return dict(
        zip(
            summed.column("entry_id").to_pylist(),
            summed.column("count_sum").to_pylist(),
            strict=True,
        )
    )


def counting_runs(lake: Lake, metadata_version: int) -> int:
    """How many counting runs' rows `concept_counts` holds for the version (each run
    appends one MARKER row; a fold leaves one)."""
    if not lake.exists("concept_counts"):
        return 0
    t = _rows(lake, "concept_counts", ["entry_id"], metadata_version)
    return int(pc.sum(pc.equal(t.column("entry_id"), MARKER)).as_py() or 0)


def counted_through(lake: Lake, metadata_version: int) -> int | None:
    """The `concepts` version the counts of `metadata_version` account for (None: none)."""
    if not lake.exists("concept_counts"):
        return None
    t = _rows(lake, "concept_counts", ["concepts_version"], metadata_version)
    return pc.max(t.column("concepts_version")).as_py() if t.num_rows else None


def entries(lake: Lake, metadata_version: int) -> dict[int, str]:
    """entry id -> entry of one metadata version."""
    ds = lake.delta("metadata").to_pyarrow_dataset()
    t = ds.to_table(columns=["entry_id", "entry"], filter=pc.field("version") == metadata_version)
    return dict(zip(t.column("entry_id").to_pylist(), t.column("entry").to_pylist(), strict=True))


def head_tail(t: int, pool: dict[int, int], kept: dict[int, int]) -> dict[str, int]:
    """The balance funnel: entries above `t` matches in the pool (head) and the rest
    (tail), with their matches in the pool and among the kept pairs (a pair matching
    several entries counts once for each)."""
    head = {e for e, c in pool.items() if c > t}
    out = {"t": t, "head_entries": len(head), "tail_entries": len(pool) - len(head)}
    for name, inside in (("head", True), ("tail", False)):
        ids = [e for e in pool if (e in head) == inside]
        out[f"{name}_pool"] = sum(pool[e] for e in ids)
        out[f"{name}_kept"] = sum(kept.get(e, 0) for e in ids)
    return out


def format_head_tail(s: dict[str, int]) -> str:
    return (
        f"balance (t={s['t']:,}): {s['head_entries']:,} head entries, matches "
        f"{s['head_pool']:,} -> {s['head_kept']:,} kept; {s['tail_entries']:,} tail entries, "
        f"{s['tail_pool']:,} -> {s['tail_kept']:,}"
    )
