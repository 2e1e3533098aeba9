"""SemDeDup's numerical pieces: spherical k-means, assignment, within-cluster pairs.

Plain numpy on L2-normalized embeddings (cosine = dot product). `fit_kmeans` runs on
the driver over a sample; `assign_batches`, `block_pairs` (all pairs of a cluster) and
`probe_pairs` (new members against their cluster) run in executors.
Executor-safe: imports numpy, pandas and pyarrow only.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa


def normalize_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def fit_kmeans(x: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    """Spherical k-means (k-means++ seeding, Lloyd steps on the unit sphere)."""
    x = normalize_rows(x.astype(np.float32))
    rng = np.random.default_rng(seed)
    k = max(1, min(k, len(x)))
    centers = [x[rng.integers(len(x))]]
    dist = 1.0 - x @ centers[0]
    for _ in range(1, k):
        p = np.clip(dist, 0, None)
        idx = rng.choice(len(x), p=p / p.sum()) if p.sum() > 0 else rng.integers(len(x))
        centers.append(x[idx])
        dist = np.minimum(dist, 1.0 - x @ x[idx])
    c = np.stack(centers)
    for _ in range(iterations):
        labels = np.argmax(x @ c.T, axis=1)
        sums = np.zeros_like(c)
        np.add.at(sums, labels, x)
        empty = np.linalg.norm(sums, axis=1) == 0
        sums[empty] = c[empty]  # an emptied cluster keeps its centre
        new = normalize_rows(sums)
        if np.allclose(new, c, atol=1e-6):
            break
        c = new
    return c


def _matrix(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    dim = len(col[0]) if len(col) else 0
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return normalize_rows(flat.reshape(len(col), dim))


def assign_batches(
    batches: Iterator[pa.RecordBatch], centroids: np.ndarray
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: (uid, image_emb) -> (uid, image_emb, semantic_cluster, centroid_sim)."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        sims = _matrix(batch.column("image_emb")) @ centroids.T
        best = np.argmax(sims, axis=1)
        yield pa.RecordBatch.from_arrays(
            [
                batch.column("uid"),
                batch.column("image_emb"),
                pa.array(best.astype(np.int32)),
                pa.array(sims[np.arange(len(best)), best].astype(np.float32)),
            ],
            names=["uid", "image_emb", "semantic_cluster", "centroid_sim"],
        )


def block_pairs(frame: pd.DataFrame, min_cos: float) -> pd.DataFrame:
    """applyInPandas body for one (cluster, lo, hi) block: pairs with cosine >= min_cos.

    `frame` holds the members of chunk `lo` and chunk `hi` of one cluster (`chunk`
    column); a block with lo == hi compares its chunk with itself (upper triangle).
    """
    lo, hi = int(frame["lo"].iloc[0]), int(frame["hi"].iloc[0])
    left = frame[frame["chunk"] == lo]
    right = frame[frame["chunk"] == hi]
    ea = normalize_rows(np.stack(left["image_emb"].to_numpy()).astype(np.float32))
    eb = normalize_rows(np.stack(right["image_emb"].to_numpy()).astype(np.float32))
    sims = ea @ eb.T
    mask = sims >= min_cos
    if lo == hi:
        mask &= np.triu(np.ones_like(mask, dtype=bool), k=1)
    i, j = np.nonzero(mask)
    return _oriented(left["uid"].to_numpy()[i], right["uid"].to_numpy()[j], sims[i, j])


def block_pairs_fn(min_cos: float):
    """A one-argument `applyInPandas` function (no type hints for Spark to inspect)."""

    def pairs(frame):
        return block_pairs(frame, min_cos)

    return pairs


def probe_pairs(frame: pd.DataFrame, min_cos: float) -> pd.DataFrame:
    """applyInPandas body for one (cluster, probe chunk, base chunk) task of an increment.

    `frame` holds new members (`probe` true) and members of one base chunk (`probe`
    false; old and new, flagged by `is_new`). Gives every pair of a new member with a
    base member at cosine >= min_cos; a pair of two new members only from the smaller
    uid's side, so each pair comes once.
    """
    left = frame[frame["probe"]]
    right = frame[~frame["probe"]]
    ea = normalize_rows(np.stack(left["image_emb"].to_numpy()).astype(np.float32))
    eb = normalize_rows(np.stack(right["image_emb"].to_numpy()).astype(np.float32))
    sims = ea @ eb.T
    ua = left["uid"].to_numpy()
    ub = right["uid"].to_numpy()
    once = ~right["is_new"].to_numpy(dtype=bool)[None, :] | (ua[:, None] < ub[None, :])
    i, j = np.nonzero((sims >= min_cos) & (ua[:, None] != ub[None, :]) & once)
    return _oriented(ua[i], ub[j], sims[i, j])


def _oriented(a: np.ndarray, b: np.ndarray, sims: np.ndarray) -> pd.DataFrame:
    """Pairs as (smaller uid, larger uid, similarity)."""
    return pd.DataFrame(
        {
            "a": np.where(a < b, a, b),
            "b": np.where(a < b, b, a),
            "similarity": sims.astype(np.float32),
        }
    )


def probe_pairs_fn(min_cos: float):
    """A one-argument `applyInPandas` function for `probe_pairs`."""

    def pairs(frame):
        return probe_pairs(frame, min_cos)

    return pairs
