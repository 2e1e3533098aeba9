"""64-bit DCT perceptual hash (pHash) of images, in numpy, as signed int64.

The classic construction: grey scale, resize to 32x32, 2-D DCT-II, keep the 8x8
lowest frequencies, and set a bit where a coefficient exceeds their median. The DCT
is two matrix products with a cached 32x32 cosine basis, applied to a whole batch at
once. Bit 63 (the sign bit of the int64) is the DC coefficient, then row-major.

JPEG decoding uses `Image.draft` so that large images decode at a reduced scale
(at least 2x the 32 px target): most of the cost of decoding a photo is avoided and
the hash only needs low frequencies anyway. Undecodable bytes give a null hash.

Verification. A grey 8x8 DCT hash cannot tell the flags of France and Italy apart,
nor one icon in six colours, nor the five skin tones of an emoji. The same decode
therefore also keeps a 16x16 colour thumbnail (`THUMB_BYTES`, RGB, area-averaged), and
a pHash match counts only when the thumbnails agree (`thumbs_agree`): after one global
gain (a light brightness change) no thumbnail pixel differs by more than `tau` levels
in any channel, in more than a `fraction` of the pixels. Measured on real images
(`benchmarks/dedup_quality.py`); the README gives the figures.

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


THUMB = 16  # side of the colour thumbnail that verifies a pHash match
THUMB_BYTES = THUMB * THUMB * 3


def thumbnails(data: bytes) -> tuple[np.ndarray, bytes] | None:
    """(32x32 float32 luminance, 16x16 RGB uint8 thumbnail bytes) of an encoded image,
    from one decode; None if it cannot be decoded."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (SIZE * 2, SIZE * 2))
            rgb = im.convert("RGB")
            grey = rgb.convert("L").resize((SIZE, SIZE), Image.Resampling.LANCZOS)
            thumb = rgb.resize((THUMB, THUMB), Image.Resampling.BOX)
            return np.asarray(grey, dtype=np.float32), thumb.tobytes()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def thumbs_agree(a: np.ndarray, b: np.ndarray, tau: int, fraction: float) -> np.ndarray:
    """Whether colour thumbnails show the same picture, row by row.

    a, b: (n, THUMB_BYTES) uint8. After the least-squares gain that maps a onto b
    (clipped to 0.85..1.18: a light brightness change), at most `fraction` of the
    pixels may differ by more than `tau` levels in some channel.
    """
    return thumb_difference(a, b, tau)[0] <= fraction


def thumb_difference(a: np.ndarray, b: np.ndarray, tau: int) -> tuple[np.ndarray, np.ndarray]:
    """(share of pixels differing by more than `tau` levels, the gain applied to a)."""
    x = a.reshape(len(a), -1, 3).astype(np.float32)
    y = b.reshape(len(b), -1, 3).astype(np.float32)
    gain = (x * y).sum(axis=(1, 2)) / np.maximum((x * x).sum(axis=(1, 2)), 1.0)
    gain = np.clip(gain, 0.85, 1.18)
    x = np.clip(x * gain[:, None, None], 0, 255)
    return (np.abs(x - y).max(axis=2) > tau).mean(axis=1), gain


def phash_pixels(pixels: np.ndarray) -> np.ndarray:
    """int64 pHash for a stack of 32x32 grey images, shape (n, 32, 32) -> (n,)."""
    c = dct_basis()[:LOW]
    low = np.einsum("ki,nij,lj->nkl", c, pixels.astype(np.float64), c)
    flat = low.reshape(len(pixels), LOW * LOW)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">i8").reshape(-1).astype(np.int64)


def phash_and_thumbs(images: list[bytes | None]) -> tuple[list[int | None], list[bytes | None]]:
    """pHash and colour thumbnail of each encoded image; None for bytes that do not decode."""
    decoded = [thumbnails(b) if b else None for b in images]
    ok = [i for i, t in enumerate(decoded) if t is not None]
    hashes: list[int | None] = [None] * len(images)
    thumbs: list[bytes | None] = [None] * len(images)
    if ok:
        values = phash_pixels(np.stack([decoded[i][0] for i in ok]))
        for i, h in zip(ok, values.tolist(), strict=True):
            hashes[i], thumbs[i] = h, decoded[i][1]
    return hashes, thumbs


def phash_images(images: list[bytes | None]) -> list[int | None]:
    """pHash of each encoded image; None for bytes that do not decode."""
    return phash_and_thumbs(images)[0]


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bit distance between int64 hashes (vectorized)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    return np.bitwise_count(x.view(np.uint64)).astype(np.int64)


# Verification thresholds, measured on real images (benchmarks/dedup_quality.py): no
# thumbnail pixel may differ by more than 28 levels once a light brightness change is
# undone. Part of the phash method's configuration slug.
VERIFY_TAU = 28
VERIFY_FRACTION = 0.0
VERIFY_SLUG = f"v{THUMB}t{VERIFY_TAU}f{VERIFY_FRACTION:g}"


def verification_rows(vectors) -> np.ndarray:
    """`phash_verified` vectors (8 bytes of big-endian pHash + a thumbnail, or the pHash
    alone where the row has no thumbnail) -> (n, 8 + THUMB_BYTES + 1) uint8 rows whose
    last byte says whether the thumbnail is there."""
    out = np.zeros((len(vectors), 8 + THUMB_BYTES + 1), dtype=np.uint8)
    for i, v in enumerate(vectors):
        row = np.frombuffer(v, dtype=np.uint8)
        out[i, : min(len(row), 8)] = row[:8]
        if len(row) == 8 + THUMB_BYTES:
            out[i, 8:-1] = row[8:]
            out[i, -1] = 1
    return out


def verified_similarity(
    keepers: np.ndarray, member: np.ndarray, min_similarity: float = 0.0
) -> np.ndarray:
    """Similarity of a member to each keeper (rows of `verification_rows`): 1 - pHash
    distance / 64 where the thumbnails agree, else 0 (never a duplicate; so is a row
    without a thumbnail). Only keepers at least `min_similarity` alike by pHash are
    verified (the others count 0): in a large group most keepers are far, and the
    thumbnail comparison is the costly part."""
    hk = keepers[:, :8].copy().view(">u8").reshape(-1)
    hm = member[:8].copy().view(">u8")[0]
    sim = 1.0 - np.bitwise_count(hk ^ hm).astype(np.float32) / 64.0
    valid = (keepers[:, -1] == 1) & (member[-1] == 1) & (sim >= min_similarity)
    if valid.any():
        rows = np.flatnonzero(valid)
        same = np.broadcast_to(member[8:-1], (len(rows), THUMB_BYTES))
        agree = thumbs_agree(keepers[rows, 8:-1], same, VERIFY_TAU, VERIFY_FRACTION)
        valid[rows] = agree
    return np.where(valid, sim, 0.0).astype(np.float32)


# --- the `signals` row of a pair -----------------------------------------------------------

SIGNAL_INPUTS = ("uid", "image", "caption", "width", "height")


def _caption_stats(captions: list[str | None]) -> tuple[list, list, list]:
    from lakecurate.udfs.text import normalize_caption, sha256_hex

    norm = [normalize_caption(c) for c in captions]
    sha = [sha256_hex(t.encode("utf-8")) if t else None for t in norm]
    return sha, [len(t) for t in norm], [len(t.split()) for t in norm]


def signal_batches(batches, run_id: str):
    """mapInArrow body: pairs (uid, image, caption, width, height) -> `signals` rows.

    pHash and colour thumbnail, caption identity and counts of the normalized caption, size, aspect
    (long side / short side) and resolution (short side). The semantic columns stay
    null: semantic dedup fills them.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    for batch in batches:
        if batch.num_rows == 0:
            continue
        hashes, thumbs = phash_and_thumbs(batch.column("image").to_pylist())
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
                "thumb": pa.array(thumbs, pa.binary()),
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
