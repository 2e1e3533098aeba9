"""The refresh's pHash probe (udfs/phash_probe.py) finds exactly the pairs a brute force finds."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from lakecurate.udfs import phash as ph
from lakecurate.udfs import phash_probe as pp

N_WINDOWS = len(ph.WINDOWS)


def _hashes(rng, n: int) -> np.ndarray:
    return rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64, endpoint=True).view(np.uint64)


def _flip(rng, h: np.uint64, k: int) -> np.uint64:
    mask = 0
    for bit in rng.choice(64, k, replace=False):
        mask |= 1 << int(bit)
    return h ^ np.uint64(mask)


def _blob(w: np.ndarray | None) -> bytes | None:
    return None if w is None else w.astype(">u8").tobytes()


def _brute_force(uids, whole, windows, new: set[int], d: int) -> dict[tuple[str, str], int]:
    """Every pair with a new image: whole against whole or window, window against whole."""
    none = np.zeros(N_WINDOWS, np.uint64)
    has = np.asarray([w is not None for w in windows])
    wins = np.stack([w if w is not None else none for w in windows])  # (n, W)
    found: dict[tuple[str, str], int] = {}
    for t in sorted(new):
        ds = [np.bitwise_count(whole ^ whole[t])]
        if windows[t] is not None:  # every whole frame against t's windows
            ds.append(np.bitwise_count(whole[:, None] ^ wins[t][None, :]).min(axis=1))
        other = np.bitwise_count(wins ^ whole[t]).min(axis=1)  # windows against t's frame
        ds.append(np.where(has, other, 64))
        best = np.min(np.stack(ds), axis=0).astype(int)
        for s in np.flatnonzero(best <= d):
            if s != t:
                key = tuple(sorted((uids[s], uids[t])))
                found[key] = min(found.get(key, 64), int(best[s]))
    return found


@pytest.fixture(scope="module")
def lake():
    """500 old images and 60 new ones; a third of the new ones planted near an old one:
    a whole frame a few bits off, a window that is an old whole frame, a whole frame
    that is an old window; two new images identical; some images without windows."""
    rng = np.random.default_rng(7)
    n_old, n_new = 500, 60
    whole = _hashes(rng, n_old + n_new)
    windows = [_hashes(rng, N_WINDOWS) if i % 7 else None for i in range(n_old + n_new)]
    for i in range(n_old, n_old + n_new, 2):
        j, bits = int(rng.integers(n_old)), int(rng.integers(0, 9))  # 0-8: some too far
        kind = (i // 2) % 3
        if kind == 0:
            whole[i] = _flip(rng, whole[j], bits)
        elif kind == 1 and windows[i] is not None:
            windows[i][int(rng.integers(N_WINDOWS))] = _flip(rng, whole[j], bits)
        elif windows[j] is not None:
            whole[i] = _flip(rng, windows[j][int(rng.integers(N_WINDOWS))], bits)
    whole[n_old + 1] = whole[n_old + 3]
    uids = np.asarray([f"u{i:04d}" for i in range(n_old + n_new)], dtype=object)
    return uids, whole, windows, set(range(n_old, n_old + n_new))


@pytest.mark.parametrize("d", [0, 3, 6, 9])
def test_probe_finds_what_a_brute_force_finds(lake, d):
    uids, whole, windows, new = lake
    rows = [(uids[i], int(whole[i].view(np.int64)), _blob(windows[i])) for i in sorted(new)]
    index = pp.NewHashes.build(rows, d)
    s, t, dist = pp.probe(index, uids, whole, [_blob(w) for w in windows], d)
    got: dict[tuple[str, str], int] = {}
    for a, b, x in zip(s, t, dist, strict=True):
        key = tuple(sorted((uids[a], index.uids[b])))
        got[key] = min(got.get(key, 64), int(x))
    want = _brute_force(uids, whole, windows, new, d)
    assert got == want
    if d >= 6:  # the planted pairs are there, of all three kinds
        assert len(want) >= 15


def test_probe_batches_give_edges_once_with_similarity(lake):
    uids, whole, windows, new = lake
    rows = [(uids[i], int(whole[i].view(np.int64)), _blob(windows[i])) for i in sorted(new)]
    batch = pa.record_batch(
        {
            "uid": pa.array(list(uids) + ["no-hash"], pa.string()),
            "phash": pa.array([int(h) for h in whole.view(np.int64)] + [None], pa.int64()),
            "phash_windows": pa.array([_blob(w) for w in windows] + [None], pa.binary()),
        }
    )
    out = pa.Table.from_batches(
        list(pp.probe_batches(iter([batch]), rows=rows, max_distance=6, token="t"))
    )
    edges = {
        (a, b): s
        for a, b, s in zip(
            *(out.column(c).to_pylist() for c in "a b".split()),
            out.column("similarity").to_pylist(),
            strict=True,
        )
    }
    want = _brute_force(uids, whole, windows, new, 6)
    # a pair of two new images is found from both sides: the caller keeps one
    assert set(edges) == set(want)
    assert all(a < b for a, b in edges)
    assert all(abs(edges[k] - (1 - want[k] / 64)) < 1e-6 for k in want)
