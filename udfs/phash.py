"""64-bit DCT perceptual hash (pHash) of images, in numpy, as signed int64.

The classic construction: grey scale, resize to 32x32, 2-D DCT-II, keep the 8x8
lowest frequencies, and set a bit where a coefficient exceeds their median. The DCT
is two matrix products with a cached 32x32 cosine basis, applied to a whole batch at
once. Bit 63 (the sign bit of the int64) is the DC coefficient, then row-major.

JPEG decoding uses `Image.draft` so that large images decode at a reduced scale
(at least 2x the 32 px target): most of the cost of decoding a photo is avoided and
the hash only needs low frequencies anyway. Undecodable bytes give a null hash.

Executor-safe: imports numpy, Pillow and pyarrow only.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image

SIZE = 32
LOW = 8


@lru_cache(maxsize=2)
def dct_basis(n: int = SIZE) -> np.ndarray:
    """Unnormalized DCT-II basis: C[k, i] = cos(pi * k * (2i + 1) / (2n))."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * k * (2 * i + 1) / (2 * n))


def grey_thumbnail(data: bytes) -> np.ndarray | None:
    """32x32 float32 luminance of an encoded image, or None if it cannot be decoded."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("L", (SIZE * 2, SIZE * 2))
            small = im.convert("L").resize((SIZE, SIZE), Image.Resampling.LANCZOS)
            return np.asarray(small, dtype=np.float32)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def phash_pixels(pixels: np.ndarray) -> np.ndarray:
    """int64 pHash for a stack of 32x32 grey images, shape (n, 32, 32) -> (n,)."""
    c = dct_basis()[:LOW]
    low = np.einsum("ki,nij,lj->nkl", c, pixels.astype(np.float64), c)
    flat = low.reshape(len(pixels), LOW * LOW)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">i8").reshape(-1).astype(np.int64)


def phash_images(images: list[bytes | None]) -> list[int | None]:
    """pHash of each encoded image; None for bytes that do not decode."""
    thumbs = [grey_thumbnail(b) if b else None for b in images]
    ok = [i for i, t in enumerate(thumbs) if t is not None]
    out: list[int | None] = [None] * len(images)
    if ok:
        hashes = phash_pixels(np.stack([thumbs[i] for i in ok]))
        for i, h in zip(ok, hashes.tolist(), strict=True):
            out[i] = h
    return out


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bit distance between int64 hashes (vectorized)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    return np.bitwise_count(x.view(np.uint64)).astype(np.int64)


# --- the `signals` row of a pair -----------------------------------------------------------

SIGNAL_INPUTS = ("uid", "image", "caption", "width", "height")


def _caption_stats(captions: list[str | None]) -> tuple[list, list, list]:
    from lakecurate.udfs.text import normalize_caption, sha256_hex

    norm = [normalize_caption(c) for c in captions]
    sha = [sha256_hex(t.encode("utf-8")) if t else None for t in norm]
    return sha, [len(t) for t in norm], [len(t.split()) for t in norm]


def signal_batches(batches, run_id: str):
    """mapInArrow body: pairs (uid, image, caption, width, height) -> `signals` rows.

    pHash, caption identity and counts of the normalized caption, size, aspect
    (long side / short side) and resolution (short side). The semantic columns stay
    null: semantic dedup fills them.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    for batch in batches:
        if batch.num_rows == 0:
            continue
        hashes = phash_images(batch.column("image").to_pylist())
        sha, chars, words = _caption_stats(batch.column("caption").to_pylist())
        w = batch.column("width").cast(pa.int32())
        h = batch.column("height").cast(pa.int32())
        lo, hi = pc.min_element_wise(w, h), pc.max_element_wise(w, h)
        aspect = pc.divide(hi.cast(pa.float32()), pc.if_else(pc.greater(lo, 0), lo, None))
        n = batch.num_rows
        yield pa.RecordBatch.from_pydict(
            {
                "uid": batch.column("uid"),
                "phash": pa.array(hashes, pa.int64()),
                "caption_sha256": pa.array(sha, pa.string()),
                "caption_chars": pa.array(chars, pa.int32()),
                "caption_words": pa.array(words, pa.int32()),
                "width": w,
                "height": h,
                "aspect": aspect.cast(pa.float32()),
                "resolution": lo,
                "semantic_cluster": pa.nulls(n, pa.int32()),
                "centroid_sim": pa.nulls(n, pa.float32()),
                "run_id": pa.array([run_id] * n, pa.string()),
            }
        )
