"""MinHash signatures of captions, vectorized over a batch, identical to datasketch's.

datasketch 2.0's default `MinHash(num_perm, seed)` uses the "affine32" scheme: each
shingle (UTF-8 bytes) is hashed with `sha1_hash32` (the first 4 bytes of SHA-1, little
endian), mixed once with the 32-bit MurmurHash3 finalizer, then permuted by
`a_k * h + b_k mod 2^32` with `(a, b)` drawn from `numpy.random.RandomState(seed)`;
the signature is the per-permutation minimum. `minhash_signatures` computes exactly
that for a whole batch at once: shingles are factorized across the batch so every
distinct shingle is hashed once (captions share most character n-grams), the
permutations run as one uint32 matrix, and per-caption minima come from
`np.minimum.reduceat`. Tests compare the result with real datasketch.

Signatures travel as little-endian uint32 bytes (`num_perm * 4` bytes per row).
Executor-safe: imports numpy/pandas/pyarrow and our text helpers only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa

from lakecurate.udfs.text import normalize_caption

MAX_HASH = np.uint32(0xFFFFFFFF)  # datasketch's empty-slot value for affine32
_PUNCT = re.compile(r"[^\w\s]+")
_CACHE_LIMIT = 1 << 21  # distinct shingles kept per worker before the cache resets
_hash_cache: dict[str, int] = {}


@dataclass(frozen=True)
class MinHashParams:
    """What defines a signature: shingling, permutations and LSH banding."""

    num_perm: int = 128
    seed: int = 1
    shingle: str = "char"  # char | word
    ngram: int = 5
    bands: int = 0  # 0: derived from `threshold` (datasketch's optimum)
    rows: int = 0
    threshold: float = 0.45
    fn_weight: float = 0.7  # false-negative weight of the banding objective (fp: 1 - this)

    @property
    def band_rows(self) -> tuple[int, int]:
        if self.bands and self.rows:
            return self.bands, self.rows
        if self.bands:
            return self.bands, self.num_perm // self.bands
        return optimal_bands(self.threshold, self.num_perm, (1 - self.fn_weight, self.fn_weight))

    @property
    def slug(self) -> str:
        """Identity of stored signatures (banding and threshold do not change them)."""
        return f"{self.shingle}{self.ngram}_p{self.num_perm}_s{self.seed}_sha1a32"


# --- text -> shingles --------------------------------------------------------------------


def minhash_text(text: str | None) -> str:
    """The caption normalized (`normalize_caption`) with punctuation folded to spaces."""
    return " ".join(_PUNCT.sub(" ", normalize_caption(text)).split())


def shingles(text: str | None, kind: str = "char", n: int = 5) -> list[str]:
    """Character or word n-grams of the normalized text; a shorter text is one shingle."""
    t = minhash_text(text)
    if not t:
        return []
    if kind == "word":
        words = t.split(" ")
        if len(words) <= n:
            return [t]
        return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    if len(t) <= n:
        return [t]
    return [t[i : i + n] for i in range(len(t) - n + 1)]


# --- the datasketch affine32 scheme -------------------------------------------------------


@lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) exactly as datasketch draws them for the affine32 scheme."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (wrapping uint32 arithmetic)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _sha1_32(s: str) -> int:
    return int.from_bytes(hashlib.sha1(s.encode("utf-8")).digest()[:4], "little")


def hash_shingles(unique: np.ndarray) -> np.ndarray:
    """sha1_hash32 of each distinct shingle, memoized per worker (shingles repeat a lot)."""
    if len(_hash_cache) > _CACHE_LIMIT:
        _hash_cache.clear()
    cache = _hash_cache
    out = np.empty(len(unique), dtype=np.uint32)
    for i, s in enumerate(unique):
        h = cache.get(s)
        if h is None:
            h = cache[s] = _sha1_32(s)
        out[i] = h
    return out


def minhash_signatures(
    texts: list[str | None] | pd.Series, params: MinHashParams, chunk: int = 2048
) -> np.ndarray:
    """uint32 signatures, shape (len(texts), num_perm), equal to datasketch's per text."""
    texts = list(texts)
    a, b = permutations(params.num_perm, params.seed)
    out = np.full((len(texts), params.num_perm), MAX_HASH, dtype=np.uint32)
    for lo in range(0, len(texts), chunk):
        part = texts[lo : lo + chunk]
        codes, lengths, unique = _shingle_codes(part, params.shingle, params.ngram)
        if len(unique):
            hv = fmix32(hash_shingles(unique))
            phv = np.vstack([hv[:, None] * a[None, :] + b[None, :], np.full_like(a, MAX_HASH)])
            _segment_min(out[lo : lo + len(part)], phv, codes, lengths)
    return out


def _shingle_codes(
    texts: list[str | None], kind: str, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes of every shingle occurrence, shingles per text, distinct shingle strings)."""
    if kind == "char":
        fast = _char_codes([minhash_text(t) for t in texts], n)
        if fast is not None:
            return fast
    grams = [shingles(t, kind, n) for t in texts]
    lengths = np.fromiter((len(g) for g in grams), dtype=np.int64, count=len(grams))
    flat = [s for g in grams for s in g]
    if not flat:
        return np.zeros(0, np.int64), lengths, np.zeros(0, object)
    codes, unique = pd.factorize(pd.Series(flat, dtype=object), sort=False)
    return codes.astype(np.int64), lengths, np.asarray(unique, dtype=object)


_K = np.uint64(0x100000001B3)


def _char_codes(norm: list[str], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Character n-grams identified in numpy: a rolling key, factorized, then checked.

    The 64-bit key could collide; every occurrence is compared with its class's first
    occurrence code point by code point, and on any mismatch the caller falls back to
    the exact string path. Texts no longer than n are one shingle each (as `shingles`).
    """
    lens = np.fromiter((len(t) for t in norm), dtype=np.int64, count=len(norm))
    if not len(norm) or lens.sum() == 0:
        return None
    cps = np.frombuffer("".join(norm).encode("utf-32-le"), dtype=np.uint32)
    starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
    long = lens > n
    counts = np.where(long, lens - n + 1, 0)
    total = int(counts.sum())
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    pos = np.repeat(starts, counts) + (np.arange(total) - np.repeat(first, counts))
    key = np.zeros(total, dtype=np.uint64)
    for j in range(n):
        key = key * _K + cps[pos + j].astype(np.uint64)
    codes, ukeys = pd.factorize(key, sort=False)
    rep = np.zeros(len(ukeys), dtype=np.int64)
    rep[codes] = pos  # any occurrence represents its class: all are compared below
    for j in range(n):
        if not np.array_equal(cps[pos + j], cps[rep[codes] + j]):
            return None
    joined = "".join(norm)
    unique = [joined[p : p + n] for p in rep]
    short = np.flatnonzero((lens > 0) & ~long)
    lengths = counts.copy()
    if len(short):  # whole-text shingles get codes after the n-grams
        lengths[short] = 1
        codes = _insert_short(codes.astype(np.int64), counts, short, len(unique))
        unique += [norm[i] for i in short]
    return codes.astype(np.int64), lengths, np.asarray(unique, dtype=object)


def _insert_short(codes: np.ndarray, counts: np.ndarray, short: np.ndarray, base: int):
    """Splice one code per short text into the flat code array at its text's place."""
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return np.insert(codes, first[short], base + np.arange(len(short)))


def _segment_min(
    out: np.ndarray, phv: np.ndarray, codes: np.ndarray, lengths: np.ndarray, group: int = 64
) -> None:
    """out[i] = min over text i's shingle rows of phv (last phv row is the MAX sentinel).

    Texts are sorted by length and padded in small groups: a dense (group, L, P) min is
    an order of magnitude faster than `np.minimum.reduceat` over ragged segments.
    """
    sentinel = len(phv) - 1
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    order = np.argsort(lengths, kind="stable")
    order = order[lengths[order] > 0]
    for lo in range(0, len(order), group):
        idx = order[lo : lo + group]
        width = int(lengths[idx].max())
        offs = np.arange(width)[None, :]
        valid = offs < lengths[idx][:, None]
        src = np.where(valid, starts[idx][:, None] + offs, 0)
        rows = np.where(valid, codes[src], sentinel)
        out[idx] = phv[rows].min(axis=1)


# --- LSH banding ---------------------------------------------------------------------------


def _integral(f: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trapezoid integral of f (..., len(x)) over x along the last axis."""
    dx = np.diff(x)
    return ((f[..., 1:] + f[..., :-1]) * 0.5 * dx).sum(axis=-1)


def optimal_bands(
    threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)
) -> tuple[int, int]:
    """(bands, rows) minimizing weighted false positive + false negative mass.

    Same objective and search order as datasketch's MinHashLSH: for every b and every
    r <= num_perm // b, P(candidate | s) = 1 - (1 - s^r)^b integrated below the
    threshold (false positives) and its complement above (false negatives).
    """
    grid_lo = np.linspace(0.0, threshold, 2001)
    grid_hi = np.linspace(threshold, 1.0, 2001)
    best, opt = np.inf, (1, 1)
    for b in range(1, num_perm + 1):
        r = np.arange(1, num_perm // b + 1, dtype=np.float64)[:, None]
        fp = _integral(1 - (1 - grid_lo[None, :] ** r) ** b, grid_lo)
        fn = _integral((1 - grid_hi[None, :] ** r) ** b, grid_hi)
        err = fp * weights[0] + fn * weights[1]
        i = int(np.argmin(err))
        if err[i] < best - 1e-12:
            best, opt = float(err[i]), (b, i + 1)
    return opt


def jaccard_estimates(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Fraction of equal slots per row (datasketch's `MinHash.jaccard`)."""
    return (left == right).mean(axis=1).astype(np.float32)


# --- Arrow / Spark glue --------------------------------------------------------------------


def to_binary(sigs: np.ndarray) -> pa.Array:
    """(n, num_perm) uint32 -> binary array of little-endian rows."""
    width = sigs.shape[1] * 4
    data = np.ascontiguousarray(sigs.astype("<u4")).view(np.uint8).reshape(-1)
    offsets = np.arange(0, (len(sigs) + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.binary(), len(sigs), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def from_binary(arr: pa.Array | pa.ChunkedArray, num_perm: int) -> np.ndarray:
    """Binary signatures -> (n, num_perm) uint32 (rows must all be non-null)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        raise ValueError("a MinHash signature is null")
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[
        arr.offset : arr.offset + len(arr) + 1
    ]
    if len(arr) and not np.all(np.diff(offsets) == num_perm * 4):
        raise ValueError(f"MinHash signatures must be {num_perm * 4} bytes (num_perm={num_perm})")
    raw = (
        np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        if len(arr)
        else b""
    )
    return np.frombuffer(raw, dtype="<u4").reshape(len(arr), num_perm).astype(np.uint32)


def signature_batches(
    batches: Iterator[pa.RecordBatch], params: MinHashParams, text_col: str = "caption"
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: (uid, caption) -> (uid, signature)."""
    for batch in batches:
        texts = batch.column(text_col).to_pylist()
        sigs = minhash_signatures(texts, params)
        yield pa.RecordBatch.from_arrays(
            [batch.column("uid"), to_binary(sigs)], names=["uid", "signature"]
        )


def jaccard_batches(
    batches: Iterator[pa.RecordBatch], params: MinHashParams
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: (a, b, sig_a, sig_b) -> (a, b, similarity)."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        left = from_binary(batch.column("sig_a"), params.num_perm)
        right = from_binary(batch.column("sig_b"), params.num_perm)
        yield pa.RecordBatch.from_arrays(
            [batch.column("a"), batch.column("b"), pa.array(jaccard_estimates(left, right))],
            names=["a", "b", "similarity"],
        )
