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


# Window hashes: the pHash of sub-rectangles ((sx, tx), (sy, ty)) of the frame, in
# fractions of each side. A crop of 2-10 % or a border of 3-8 % moves every pixel of the
# frame, so the whole-frame hashes of a copy and its original are far apart; but the
# bigger image's hash over the window where the smaller one lies is near the smaller
# one's whole-frame hash. These windows were chosen by a greedy set cover over the real
# crops and borders of benchmarks/real_images.py (see benchmarks/dedup_quality.py). They
# are area averages of the 64x64 detail image (`window_pixels`): one matrix product per
# image, with the same recall as resizing the decoded image per window (which made the
# signals pass 6.5x slower; this, 2.3x on small generated images, where decoding is
# cheap: benchmarks/phash_crops.py).
# 15 windows find 0.98 of those copies within 6 bits (crops: emoji 0.98, icons 0.94,
# photos 0.95; borders 0.95-1.0); 8 windows would find 0.93, 24 windows 0.995.
WINDOWS: tuple[tuple[tuple[float, float], tuple[float, float]], ...] = (
    ((0.9, 0.05), (0.9, 0.05)),
    ((0.93, 0.035), (0.93, 0.0525)),
    ((0.96, 0.03), (0.93, 0.0175)),
    ((0.87, 0.065), (0.87, 0.065)),
    ((0.93, 0.0175), (0.96, 0.02)),
    ((0.96, 0.04), (0.93, 0.0525)),
    ((0.96, 0), (0.93, 0)),
    ((0.9, 0.025), (0.93, 0.07)),
    ((0.93, 0.07), (0.93, 0.0175)),
    ((0.93, 0.035), (0.93, 0.035)),
    ((0.93, 0.0525), (0.93, 0.07)),
    ((0.96, 0.03), (0.93, 0)),
    ((0.93, 0), (0.96, 0)),
    ((0.9, 0.075), (0.96, 0.02)),
    ((0.96, 0), (0.96, 0.03)),
)
WINDOW_BYTES = 8 * len(WINDOWS)  # big-endian int64 pHashes, in WINDOWS order


def _area_weights(scale: float, shift: float, n: int, m: int) -> np.ndarray:
    """(m, n) matrix averaging a length-n signal over m equal cells of [shift, shift +
    scale) (fractions of its length): each cell's mean, by overlap with each pixel."""
    edges = (shift + scale * np.arange(m + 1) / m) * n
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n)[None, :]
    overlap = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


@lru_cache(maxsize=1)
def _window_matrices() -> tuple[np.ndarray, np.ndarray]:
    """(rows (W, 32, 64), columns (W, 64, 32)): window k of a 64x64 detail image at 32x32
    is rows[k] @ detail @ columns[k]."""
    ys = np.stack([_area_weights(sy, ty, DETAIL, SIZE) for _, (sy, ty) in WINDOWS])
    xs = np.stack([_area_weights(sx, tx, DETAIL, SIZE).T for (sx, tx), _ in WINDOWS])
    return ys, xs


def window_pixels(detail: np.ndarray) -> np.ndarray:
    """(len(WINDOWS), 32, 32) grey windows of one 64x64 detail image, by area averaging:
    one batched matrix product instead of a resize per window."""
    ys, xs = _window_matrices()
    return ys @ detail.astype(np.float32) @ xs


def thumbnails(data: bytes) -> tuple[np.ndarray, bytes, np.ndarray] | None:
    """(32x32 float32 luminance for the hash, the `VERIFY_BYTES` verification blob, the
    (len(WINDOWS), 32, 32) luminance of the windows) of an encoded image, from one
    decode; None if it cannot be decoded."""
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
            windows = window_pixels(np.asarray(detail)) if WINDOWS else None
            return np.asarray(grey, dtype=np.float32), blob, windows
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


@lru_cache(maxsize=64)
def _blur_matrix(sigma: float, n: int) -> np.ndarray:
    """(n, n) matrix of a Gaussian blur along one axis, edges repeated."""
    k = _kernel(sigma)
    r = len(k) // 2
    m = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        for j, w in enumerate(k):
            m[i, min(max(i + j - r, 0), n - 1)] += w
    return m


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a stack of images (n, h, w[, c]) over h and w, edges repeated:
    one matrix product per axis."""
    x = x.astype(np.float32)
    bh, bw = _blur_matrix(sigma, x.shape[1]), _blur_matrix(sigma, x.shape[2])
    if x.ndim == 4:
        return np.stack([bh @ x[..., c] @ bw.T for c in range(x.shape[3])], axis=-1)
    return bh @ x @ bw.T


def gain_difference(
    a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(largest per-pixel difference, gain) of image stacks a -> b, row by row, after the
    least-squares gain (on pixels unsaturated in both, clipped to GAIN_RANGE) maps a
    onto b; colour stacks take the largest channel difference. `where` (n, h, w), if
    given, says which pixels count at all (a warped pair's overlap)."""
    axes = tuple(range(1, a.ndim))
    live = (a > 5) & (a < 250) & (b > 5) & (b < 250)
    if where is not None:
        where = where.reshape(where.shape + (1,) * (a.ndim - where.ndim))
        live = live & where
    live = live.astype(np.float32)
    num, den = (a * b * live).sum(axis=axes), (a * a * live).sum(axis=axes)
    gain = np.where(den > 0, num / np.maximum(den, 1.0), 1.0)
    gain = np.clip(gain, *GAIN_RANGE).astype(np.float32)
    scaled = np.clip(a * gain.reshape((-1,) + (1,) * (a.ndim - 1)), 0, 255)
    diff = np.abs(scaled - b)
    if where is not None:
        diff = diff * where
    return diff.reshape(len(a), -1).max(axis=1), gain


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
    low = c @ pixels.astype(np.float64) @ c.T
    flat = low.reshape(len(pixels), LOW * LOW)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">i8").reshape(-1).astype(np.int64)


def phash_and_thumbs(
    images: list[bytes | None],
) -> tuple[list[int | None], list[bytes | None], list[bytes | None]]:
    """pHash, verification blob and window hashes (`WINDOW_BYTES`) of each encoded
    image; None for bytes that do not decode."""
    decoded = [thumbnails(b) if b else None for b in images]
    ok = [i for i, t in enumerate(decoded) if t is not None]
    hashes: list[int | None] = [None] * len(images)
    thumbs: list[bytes | None] = [None] * len(images)
    windows: list[bytes | None] = [None] * len(images)
    if ok:
        values = phash_pixels(np.stack([decoded[i][0] for i in ok]))
        per_window = np.zeros((len(ok), len(WINDOWS)), dtype=">i8")
        if WINDOWS:
            stack = np.concatenate([decoded[i][2] for i in ok])
            per_window[:] = phash_pixels(stack).reshape(len(ok), len(WINDOWS))
        for j, (i, h) in enumerate(zip(ok, values.tolist(), strict=True)):
            hashes[i], thumbs[i], windows[i] = h, decoded[i][1], per_window[j].tobytes()
    return hashes, thumbs, windows


def phash_images(images: list[bytes | None]) -> list[int | None]:
    """pHash of each encoded image; None for bytes that do not decode."""
    return phash_and_thumbs(images)[0]


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bit distance between int64 hashes (vectorized)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    return np.bitwise_count(x.view(np.uint64)).astype(np.int64)


# A `phash_verified` row (`verification_rows`): the pHash (8 bytes), the verification
# blob, the window hashes, then one byte of flags.
BLOB = slice(8, 8 + VERIFY_BYTES)
WINDOW_HASHES = slice(8 + VERIFY_BYTES, 8 + VERIFY_BYTES + WINDOW_BYTES)
HAS_BLOB, HAS_WINDOWS = 1, 2


def verification_rows(vectors) -> np.ndarray:
    """`phash_verified` vectors (8 bytes of big-endian pHash, then the `signals.thumb`
    blob, then optionally the `signals.phash_windows` hashes) -> (n, 8 + VERIFY_BYTES +
    WINDOW_BYTES + 1) uint8 rows whose last byte flags what is there. A blob of another
    size (signals older than this verification: null, or the 16x16 thumbnail alone)
    counts as absent: such a row is never a pHash copy."""
    out = np.zeros((len(vectors), WINDOW_HASHES.stop + 1), dtype=np.uint8)
    for i, v in enumerate(vectors):
        row = np.frombuffer(v, dtype=np.uint8)
        out[i, : min(len(row), 8)] = row[:8]
        if len(row) in (BLOB.stop, WINDOW_HASHES.stop):
            out[i, BLOB] = row[BLOB]
            out[i, -1] = HAS_BLOB
        if len(row) == WINDOW_HASHES.stop:
            out[i, WINDOW_HASHES] = row[WINDOW_HASHES]
            out[i, -1] |= HAS_WINDOWS
    return out


def _hashes(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows[:, :8]).view(">u8").reshape(-1).astype(np.uint64)


def _window_hashes(rows: np.ndarray) -> np.ndarray:
    w = np.ascontiguousarray(rows[:, WINDOW_HASHES]).view(">u8")
    return w.reshape(len(rows), len(WINDOWS)).astype(np.uint64)


def distances(keepers: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(whole-frame distance, crop distance) of a member to each keeper: the bits between
    their pHashes, and the fewest bits between a window hash of either and the other's
    whole-frame hash (65 where a row has no windows)."""
    hk, hm = _hashes(keepers), _hashes(member[None])[0]
    full = np.bitwise_count(hk ^ hm).astype(np.int64)
    crop = np.full(len(keepers), 65, dtype=np.int64)
    both = ((keepers[:, -1] & member[-1] & HAS_WINDOWS) > 0).nonzero()[0]
    if len(both) and WINDOWS:
        wk = _window_hashes(keepers[both])  # keeper bigger: its windows, the member's hash
        wm = _window_hashes(member[None])[0]  # member bigger: its windows, keepers' hashes
        crop[both] = np.minimum(
            np.bitwise_count(wk ^ hm).min(axis=1),
            np.bitwise_count(wm[None] ^ hk[both, None]).min(axis=1),
        )
    return full, crop


def _warp_starts(big: np.ndarray, small: np.ndarray) -> np.ndarray:
    """The window of each big row nearest the small row's hash, as (sx, tx, sy, ty)."""
    d = np.bitwise_count(_window_hashes(big) ^ _hashes(small)[:, None])
    win = np.asarray([(sx, tx, sy, ty) for (sx, tx), (sy, ty) in WINDOWS], dtype=np.float64)
    return win[np.argmin(d, axis=1)]


def compare_warped(big: np.ndarray, small: np.ndarray, params: np.ndarray) -> dict[str, np.ndarray]:
    """`compare` of blobs after warping big[i] onto small[i] by params[i] (`registration`):
    only the overlap counts, away from the frame's edges."""
    from lakecurate.udfs import registration as reg

    short = np.minimum(_short(big), _short(small))
    sigma = np.maximum(detail_sigma(short), 1.5)
    a, inside = reg.warp(_detail(big).astype(np.float32), params)
    b = _detail(small).astype(np.float32)
    live = inside & reg.edge_mask(DETAIL, reg.EDGE)
    a = np.where(live, a, b)
    detail = np.zeros(len(big), dtype=np.float32)
    for s in np.unique(sigma):
        rows = np.flatnonzero(sigma == s)
        detail[rows] = gain_difference(blur(a[rows], s), blur(b[rows], s), live[rows])[0]
    colour = _warped_colour_difference(big, small, params, COLOUR_SIGMA)
    return {
        "colour": colour,
        "detail": detail,
        "params": params,
        "verified": (colour <= COLOUR_TAU)
        & (detail <= reg.WARP_DETAIL_TAU)
        & reg.plausible(params),
    }


ROUGH_COLOUR_TAU = 2 * COLOUR_TAU  # levels: the colour thumbnails at the matched window


def _roughly_alike(big: np.ndarray, small: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The colour thumbnails compared at the matched window, before any fitting: a cheap
    test that turns away most look-alikes (another flag, another colour) before the
    costly registration. Loose, since the window is up to 2 % off."""
    return _warped_colour_difference(big, small, start, 1.5) <= ROUGH_COLOUR_TAU


def _warped_colour_difference(big, small, params, sigma: float) -> np.ndarray:
    """Largest colour-thumbnail difference (levels, after the gain) of blobs big[i] warped
    onto small[i] by params[i], over their overlap away from the edge, blurred by sigma."""
    from lakecurate.udfs import registration as reg

    a, inside = reg.warp(_colour(big).astype(np.float32), params)
    b = _colour(small).astype(np.float32)
    live = inside & reg.edge_mask(THUMB, 1)
    a = np.where(live[..., None], a, b)
    return gain_difference(blur(a, sigma), blur(b, sigma), live)[0]


def verify_crops(big: np.ndarray, small: np.ndarray) -> dict[str, np.ndarray]:
    """Register each small row inside its big row (both `verification_rows`), from the
    window that matched, and check the warped pair (`compare_warped`). Pairs whose
    colours disagree at that window already (`_roughly_alike`) are not registered."""
    from lakecurate.udfs import registration as reg

    start = _warp_starts(big, small)
    n = len(big)
    out = {
        "colour": np.full(n, np.inf, dtype=np.float32),
        "detail": np.full(n, np.inf, dtype=np.float32),
        "params": start,
        "verified": np.zeros(n, dtype=bool),
    }
    rows = np.flatnonzero(_roughly_alike(big[:, BLOB], small[:, BLOB], start))
    if len(rows):
        params = reg.register(
            _detail(big[rows][:, BLOB]).astype(np.float32),
            _detail(small[rows][:, BLOB]).astype(np.float32),
            start[rows],
        )
        got = compare_warped(big[rows][:, BLOB], small[rows][:, BLOB], params)
        for key in ("colour", "detail", "params", "verified"):
            out[key][rows] = got[key]
    return out


def verified_similarity(
    keepers: np.ndarray, member: np.ndarray, min_similarity: float = 0.0
) -> np.ndarray:
    """Similarity of a member to each keeper (rows of `verification_rows`): 1 - pHash
    distance / 64 where `compare` verifies the pair, else, for a crop or border (a window
    hash within the distance, `distances`), 1 - that distance / 64 where the registered
    pair verifies (`verify_crops`); else 0 (never a duplicate; so is a row without a
    blob). Only keepers at least `min_similarity` alike by a hash are verified (the
    others count 0): in a large group most keepers are far, and the image comparison is
    the costly part."""
    full, crop = distances(keepers, member)
    max_bits = int(np.floor((1.0 - min_similarity) * 64 + 1e-6))
    blob = (keepers[:, -1] & member[-1] & HAS_BLOB) > 0
    sim = np.zeros(len(keepers), dtype=np.float32)
    rows = np.flatnonzero(blob & (full <= max_bits))
    if len(rows):
        same = np.broadcast_to(member[BLOB], (len(rows), VERIFY_BYTES))
        ok = compare(keepers[rows, BLOB], same)["verified"]
        sim[rows[ok]] = 1.0 - full[rows[ok]] / 64.0
    rows = np.flatnonzero(blob & (sim == 0) & (crop <= max_bits))
    if len(rows):
        k = keepers[rows]
        ok = crop_check(k, np.broadcast_to(member, k.shape))["verified"]
        sim[rows[ok]] = 1.0 - crop[rows[ok]] / 64.0
    return sim


def crop_check(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """`verify_crops` of rows a[i] and b[i] (`verification_rows` with windows), the one
    whose window hash is nearer the other's whole-frame hash taken as the bigger
    picture; `a_bigger` says which that was."""
    wa = np.bitwise_count(_window_hashes(a) ^ _hashes(b)[:, None]).min(axis=1)
    wb = np.bitwise_count(_window_hashes(b) ^ _hashes(a)[:, None]).min(axis=1)
    a_bigger = (wa <= wb)[:, None]
    out = verify_crops(np.where(a_bigger, a, b), np.where(a_bigger, b, a))
    return {**out, "a_bigger": a_bigger[:, 0]}


# --- the `signals` row of a pair -----------------------------------------------------------

SIGNAL_INPUTS = ("uid", "image", "caption", "width", "height")


def _caption_stats(captions: list[str | None]) -> tuple[list, list, list]:
    from lakecurate.udfs.text import normalize_caption, sha256_hex

    norm = [normalize_caption(c) for c in captions]
    sha = [sha256_hex(t.encode("utf-8")) if t else None for t in norm]
    return sha, [len(t) for t in norm], [len(t.split()) for t in norm]


def signal_batches(batches, run_id: str, counter=None):
    """mapInArrow body: pairs (uid, image, caption, width, height) -> `signals` rows.

    pHash, verification blob and window hashes, caption identity and counts of the
    normalized caption, size, aspect (long side / short side) and resolution (short
    side). The semantic columns stay null: semantic dedup fills them. `counter` (a Spark
    accumulator, or None) gets each batch's rows as it is done.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    for batch in batches:
        if batch.num_rows == 0:
            continue
        hashes, thumbs, windows = phash_and_thumbs(batch.column("image").to_pylist())
        sha, chars, words = _caption_stats(batch.column("caption").to_pylist())
        w = batch.column("width").cast(pa.int32())
        h = batch.column("height").cast(pa.int32())
        lo, hi = pc.min_element_wise(w, h), pc.max_element_wise(w, h)
        aspect = pc.divide(hi.cast(pa.float32()), pc.if_else(pc.greater(lo, 0), lo, None))
        n = batch.num_rows
        if counter is not None:
            counter.add(n)
        yield pa.RecordBatch.from_pydict(
            {
                "uid": batch.column("uid"),
                "phash": pa.array(hashes, pa.int64()),
                "thumb": pa.array(thumbs, pa.binary()),
                "phash_windows": pa.array(windows, pa.binary()),
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
