"""64-bit DCT perceptual hash (pHash) of images, in numpy, as signed int64.

The classic construction: grey scale, resize to 32x32, 2-D DCT-II, keep the 8x8
lowest frequencies, and set a bit where a coefficient exceeds their median. The DCT
is two matrix products with a cached 32x32 cosine basis, applied to a whole batch at
once. Bit 63 (the sign bit of the int64) is the DC coefficient, then row-major.

JPEG decoding uses `Image.draft` so that large images decode at a reduced scale
(at least 2x the 32 px target): most of the cost of decoding a photo is avoided and
the hash only needs low frequencies anyway. Undecodable bytes give a null hash.

Verification. A grey 8x8 DCT hash cannot tell the flags of France and Italy apart,
nor one icon in six colours, nor the five skin tones of an emoji, nor "neutral face"
from "confused face". The same decode therefore also keeps, in `signals.thumb`, what a
match is verified with (`VERIFY_BYTES`):

* a 16x16 colour thumbnail (RGB, area-averaged): hue and large regions;
* a 64x64 grey detail image (bilinear, antialiased): structure at a finer scale,
  a mouth's shape, a badge, a glyph;
* the image's short side, so a pair is compared at the resolution both images have.

Two rows show the same picture (`verify`) when, after one global gain fitted on the
unsaturated pixels (a light brightness change), both blurred with a Gaussian of
`sigma` pixels, no thumbnail pixel differs by more than `COLOUR_TAU` levels in any
channel and no detail pixel by more than `DETAIL_TAU`. The detail blur grows as the
smaller image shrinks (sigma = 64 / its short side, at least 1): a 30 px copy of a
64 px icon is compared at 30 px, where resampling no longer looks like a change of
content. Measured on real images (`benchmarks/dedup_quality.py --real`); the README
gives the figures.

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
DETAIL = 64  # side of the grey detail image that verifies a pHash match
DETAIL_BYTES = DETAIL * DETAIL
VERIFY_BYTES = THUMB_BYTES + DETAIL_BYTES + 2  # colour, detail, short side (uint16 BE)


def thumbnails(data: bytes) -> tuple[np.ndarray, bytes] | None:
    """(32x32 float32 luminance for the hash, the `VERIFY_BYTES` verification blob) of an
    encoded image, from one decode; None if it cannot be decoded."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            short = min(im.size)
            im.draft("RGB", (DETAIL * 2, DETAIL * 2))
            rgb = im.convert("RGB")
            luma = rgb.convert("L")
            grey = luma.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
            colour = rgb.resize((THUMB, THUMB), Image.Resampling.BOX)
            detail = luma.resize((DETAIL, DETAIL), Image.Resampling.BILINEAR)
            blob = colour.tobytes() + detail.tobytes() + min(short, 65535).to_bytes(2, "big")
            return np.asarray(grey, dtype=np.float32), blob
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


# Verification thresholds, measured on real images (benchmarks/dedup_quality.py --real):
# part of the phash method's configuration slug, so changing them re-runs phash whole.
COLOUR_TAU = 28  # levels, any channel, 16x16 thumbnail blurred by COLOUR_SIGMA
COLOUR_SIGMA = 1.0
DETAIL_TAU = 18  # levels, 64x64 grey blurred by DETAIL_SIGMA at the pair's resolution
DETAIL_SIGMA = 1.0
GAIN_RANGE = (0.85, 1.18)  # a light brightness change, undone before comparing
SIGMAS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)  # detail blurs, so pairs batch by blur
VERIFY_SLUG = (
    f"v2c{THUMB}t{COLOUR_TAU}s{COLOUR_SIGMA:g}d{DETAIL}t{DETAIL_TAU}s{DETAIL_SIGMA:g}"
    f"g{GAIN_RANGE[0]:g}-{GAIN_RANGE[1]:g}l{'-'.join(f'{x:g}' for x in SIGMAS)}"
)


@lru_cache(maxsize=16)
def _kernel(sigma: float) -> np.ndarray:
    r = int(4 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a stack of images (n, h, w[, c]) over h and w, edges repeated."""
    k = _kernel(sigma)
    r = len(k) // 2
    out = x.astype(np.float32)
    for axis in (1, 2):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        p = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, w in enumerate(k):
            acc += w * np.take(p, np.arange(i, i + n), axis=axis)
        out = acc
    return out


def gain_difference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(largest per-pixel difference, gain) of image stacks a -> b, row by row, after the
    least-squares gain (on pixels unsaturated in both, clipped to GAIN_RANGE) maps a
    onto b; colour stacks take the largest channel difference."""
    axes = tuple(range(1, a.ndim))
    live = ((a > 5) & (a < 250) & (b > 5) & (b < 250)).astype(np.float32)
    num, den = (a * b * live).sum(axis=axes), (a * a * live).sum(axis=axes)
    gain = np.where(den > 0, num / np.maximum(den, 1.0), 1.0)
    gain = np.clip(gain, *GAIN_RANGE).astype(np.float32)
    scaled = np.clip(a * gain.reshape((-1,) + (1,) * (a.ndim - 1)), 0, 255)
    return np.abs(scaled - b).reshape(len(a), -1).max(axis=1), gain


def detail_sigma(short: np.ndarray) -> np.ndarray:
    """The detail blur for pairs whose smaller image has this short side: DETAIL_SIGMA at
    the resolution both images have, rounded up to one of `SIGMAS`."""
    need = DETAIL_SIGMA * DETAIL / np.clip(short, 1, DETAIL)
    idx = np.minimum(np.searchsorted(np.asarray(SIGMAS), need - 1e-6), len(SIGMAS) - 1)
    return np.asarray(SIGMAS)[idx]


def _colour(rows: np.ndarray) -> np.ndarray:
    return rows[:, :THUMB_BYTES].reshape(-1, THUMB, THUMB, 3)


def _detail(rows: np.ndarray) -> np.ndarray:
    return rows[:, THUMB_BYTES : THUMB_BYTES + DETAIL_BYTES].reshape(-1, DETAIL, DETAIL)


def _short(rows: np.ndarray) -> np.ndarray:
    hi, lo = rows[:, VERIFY_BYTES - 2].astype(np.int64), rows[:, VERIFY_BYTES - 1]
    return hi * 256 + lo


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Verification figures of blobs a[i] against b[i] ((n, VERIFY_BYTES) uint8 each):
    colour and detail differences in levels, their gains, the detail blur, and
    `verified` (both within their tau)."""
    colour, colour_gain = gain_difference(
        blur(_colour(a), COLOUR_SIGMA), blur(_colour(b), COLOUR_SIGMA)
    )
    sigma = detail_sigma(np.minimum(_short(a), _short(b)))
    detail = np.zeros(len(a), dtype=np.float32)
    detail_gain = np.ones(len(a), dtype=np.float32)
    for s in np.unique(sigma):
        rows = np.flatnonzero(sigma == s)
        d, g = gain_difference(blur(_detail(a[rows]), s), blur(_detail(b[rows]), s))
        detail[rows], detail_gain[rows] = d, g
    return {
        "colour": colour,
        "colour_gain": colour_gain,
        "detail": detail,
        "detail_gain": detail_gain,
        "sigma": sigma,
        "verified": (colour <= COLOUR_TAU) & (detail <= DETAIL_TAU),
    }


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


def verification_rows(vectors) -> np.ndarray:
    """`phash_verified` vectors (8 bytes of big-endian pHash, then the `signals.thumb`
    blob) -> (n, 8 + VERIFY_BYTES + 1) uint8 rows whose last byte says whether the blob
    is there. A blob of another size (signals older than this verification: null, or
    the 16x16 thumbnail alone) counts as absent: such a row is never a pHash copy."""
    out = np.zeros((len(vectors), 8 + VERIFY_BYTES + 1), dtype=np.uint8)
    for i, v in enumerate(vectors):
        row = np.frombuffer(v, dtype=np.uint8)
        out[i, : min(len(row), 8)] = row[:8]
        if len(row) == 8 + VERIFY_BYTES:
            out[i, 8:-1] = row[8:]
            out[i, -1] = 1
    return out


def verified_similarity(
    keepers: np.ndarray, member: np.ndarray, min_similarity: float = 0.0
) -> np.ndarray:
    """Similarity of a member to each keeper (rows of `verification_rows`): 1 - pHash
    distance / 64 where `compare` verifies the pair, else 0 (never a duplicate; so is a
    row without a blob). Only keepers at least `min_similarity` alike by pHash are
    verified (the others count 0): in a large group most keepers are far, and the
    image comparison is the costly part."""
    hk = keepers[:, :8].copy().view(">u8").reshape(-1)
    hm = member[:8].copy().view(">u8")[0]
    sim = 1.0 - np.bitwise_count(hk ^ hm).astype(np.float32) / 64.0
    valid = (keepers[:, -1] == 1) & (member[-1] == 1) & (sim >= min_similarity)
    if valid.any():
        rows = np.flatnonzero(valid)
        same = np.broadcast_to(member[8:-1], (len(rows), VERIFY_BYTES))
        valid[rows] = compare(keepers[rows, 8:-1], same)["verified"]
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
