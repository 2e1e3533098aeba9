"""New pHashes against the lake's, without a shuffle: an index of the few, a scan of the many.

A refresh must find every pair within `max_distance` bits that involves a new image:
a new whole-frame hash against any hash of any image (whole frame or window), and a
new window hash against every whole-frame hash (`phash.WINDOWS`: a crop or a border;
a window never meets a window). The Spark band join does that by shuffling every hash
of the lake (16 per image with crops) on each refresh. Here the new images' hashes,
a few thousand, are indexed in each Python worker and the lake's rows stream past in
their own partitions:

* the index holds, for each of the 4 bands of 16 bits, every band value within
  `max_distance // 4` bits of each new hash's (its flips), in a CSR over the 2**18
  (band, value) keys; by the pigeonhole principle a hash within `max_distance` bits
  of a new one shares one band value exactly with one of those flips;
* a streamed whole-frame hash looks up its 4 exact band values in the index of all new
  hashes, a streamed window hash in the index of the new whole frames; candidates are
  verified with a popcount.

The work per lake row is 4 lookups per hash and a few popcounts, with no shuffle of
the lake; only the edges (few) are shuffled to drop pairs found from both sides.
Executor-safe: imports numpy and pyarrow only.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from lakecurate.udfs import phash as ph

BANDS = 4
BAND_BITS = 16
KEYS = BANDS << BAND_BITS
EDGE_SCHEMA = pa.schema([("a", pa.string()), ("b", pa.string()), ("similarity", pa.float32())])


def flip_masks(radius: int, bits: int = BAND_BITS) -> np.ndarray:
    """Every mask of at most `radius` set bits within a band (0 included)."""
    masks = [0]
    for r in range(1, radius + 1):
        masks += [sum(1 << i for i in combo) for combo in itertools.combinations(range(bits), r)]
    return np.asarray(masks, dtype=np.uint64)


def band_keys(hashes: np.ndarray) -> np.ndarray:
    """(n,) uint64 hashes -> (n, BANDS) int64 keys `band << 16 | value`."""
    shifts = np.arange(BANDS, dtype=np.uint64) * np.uint64(BAND_BITS)
    values = (hashes[:, None] >> shifts[None, :]) & np.uint64(0xFFFF)
    bands = np.arange(BANDS, dtype=np.uint64) << np.uint64(BAND_BITS)
    return (values | bands[None, :]).astype(np.int64)


@dataclass(frozen=True)
class _Csr:
    """Hash indexes grouped by (band, value) key: entries[offsets[k]:offsets[k + 1]]."""

    offsets: np.ndarray  # (KEYS + 1,) int64
    entries: np.ndarray  # int32 indexes into NewHashes.hashes

    @classmethod
    def build(cls, hashes: np.ndarray, which: np.ndarray, masks: np.ndarray) -> _Csr:
        """Index the hashes `which` (indexes into `hashes`) under every flip by `masks`."""
        keys = band_keys(hashes[which])  # (m, BANDS)
        # flipping the value bits never touches the band bits above them
        flipped = (keys[:, :, None] ^ masks.astype(np.int64)[None, None, :]).reshape(-1)
        owner = np.repeat(which.astype(np.int32), BANDS * len(masks))
        order = np.argsort(flipped, kind="stable")
        counts = np.bincount(flipped, minlength=KEYS)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(offsets, owner[order])

    def lookup(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """queries (q,) uint64 hashes -> (query index, entry) for every entry sharing an
        exact band key with a query."""
        keys = band_keys(queries).reshape(-1)
        starts, ends = self.offsets[keys], self.offsets[keys + 1]
        counts = ends - starts
        total = int(counts.sum())
        if total == 0:
            return np.empty(0, np.int64), np.empty(0, np.int32)
        first = np.repeat(starts - (np.cumsum(counts) - counts), counts)
        positions = first + np.arange(total)
        query = np.repeat(np.arange(len(keys)) // BANDS, counts)
        return query, self.entries[positions]


@dataclass(frozen=True)
class NewHashes:
    """The new images' hashes and their two indexes (see the module docstring)."""

    uids: np.ndarray  # (n,) object: the new images
    hashes: np.ndarray  # (m,) uint64: every whole-frame and window hash
    owner: np.ndarray  # (m,) int32: the image of each hash
    every: _Csr  # all hashes
    whole: _Csr  # whole-frame hashes only

    @classmethod
    def build(cls, rows: list[tuple[str, int, bytes | None]], max_distance: int) -> NewHashes:
        """rows (uid, whole-frame pHash as signed int64, window hashes or None)."""
        uids = np.asarray([r[0] for r in rows], dtype=object)
        whole = np.asarray([r[1] for r in rows], dtype=np.int64).view(np.uint64)
        hashes, owner = [whole], [np.arange(len(rows), dtype=np.int32)]
        for i, r in enumerate(rows):
            w = window_hashes(r[2])
            if w is not None:
                hashes.append(w)
                owner.append(np.full(len(w), i, dtype=np.int32))
        all_hashes = np.concatenate(hashes)
        masks = flip_masks(max_distance // BANDS)
        whole_idx = np.arange(len(rows))
        return cls(
            uids,
            all_hashes,
            np.concatenate(owner),
            _Csr.build(all_hashes, np.arange(len(all_hashes)), masks),
            _Csr.build(all_hashes, whole_idx, masks),
        )


def window_hashes(blob: bytes | None) -> np.ndarray | None:
    """`signals.phash_windows` -> (len(WINDOWS),) uint64, or None where absent or stale."""
    if blob is None or len(blob) != ph.WINDOW_BYTES:
        return None
    return np.frombuffer(blob, dtype=">u8").astype(np.uint64)


def probe(
    new: NewHashes, uids: np.ndarray, whole: np.ndarray, windows: list[bytes | None], d: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Streamed images -> (streamed index, new image index, distance) of every pair
    within `d` bits, the smallest distance of each pair, without self-pairs."""
    w_rows, w_hashes = [], []
    for i, blob in enumerate(windows):
        w = window_hashes(blob)
        if w is not None:
            w_rows.append(np.full(len(w), i, dtype=np.int64))
            w_hashes.append(w)
    found = []
    q, e = new.every.lookup(whole)  # streamed whole frames: every new hash
    found.append((q, e, whole[q]))
    if w_hashes:  # streamed windows: new whole frames only
        wh, wr = np.concatenate(w_hashes), np.concatenate(w_rows)
        q, e = new.whole.lookup(wh)
        found.append((wr[q], e, wh[q]))
    rows = np.concatenate([f[0] for f in found])
    entries = np.concatenate([f[1] for f in found])
    qhash = np.concatenate([f[2] for f in found])
    dist = np.bitwise_count(qhash ^ new.hashes[entries]).astype(np.int64)
    target = new.owner[entries].astype(np.int64)
    ok = dist <= d
    rows, target, dist = rows[ok], target[ok], dist[ok]
    ok = uids[rows] != new.uids[target]
    rows, target, dist = rows[ok], target[ok], dist[ok]
    # one row per pair, its smallest distance
    pair = rows * len(new.uids) + target
    order = np.lexsort((dist, pair))
    pair, dist = pair[order], dist[order]
    first = np.ones(len(pair), dtype=bool)
    first[1:] = pair[1:] != pair[:-1]
    pair, dist = pair[first], dist[first]
    return pair // len(new.uids), pair % len(new.uids), dist


_BUILT: dict[str, NewHashes] = {}  # token -> index, built once per Python worker


def probe_batches(
    batches: Iterator[pa.RecordBatch],
    rows: list[tuple[str, int, bytes | None]],
    max_distance: int,
    token: str,
) -> Iterator[pa.RecordBatch]:
    """mapInArrow: (uid, phash, phash_windows) batches of the lake -> edges (a < b,
    similarity 1 - distance / 64) between them and the new images `rows`."""
    new = _BUILT.get(token)
    if new is None:
        _BUILT.clear()
        new = _BUILT[token] = NewHashes.build(rows, max_distance)
    for batch in batches:
        hashes = batch.column("phash")
        valid = np.asarray(hashes.is_valid())
        if not valid.any():
            continue
        uids = np.asarray(batch.column("uid").to_pylist(), dtype=object)[valid]
        whole = np.asarray(hashes.fill_null(0), dtype=np.int64).view(np.uint64)[valid]
        windows = [
            w for w, v in zip(batch.column("phash_windows").to_pylist(), valid, strict=True) if v
        ]
        s, t, dist = probe(new, uids, whole, windows, max_distance)
        if len(s) == 0:
            continue
        x, y = uids[s], new.uids[t]
        a = np.where(x < y, x, y)
        b = np.where(x < y, y, x)
        sim = (1.0 - dist / 64.0).astype(np.float32)
        yield pa.RecordBatch.from_arrays(
            [pa.array(a.tolist(), pa.string()), pa.array(b.tolist(), pa.string()), pa.array(sim)],
            schema=EDGE_SCHEMA,
        )
