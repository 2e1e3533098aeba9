"""Aligning a cropped or bordered copy onto its original, on the verification blobs.

A crop (2-10 % cut from the sides) or a border (3-8 % margin) moves every pixel of the
frame, so neither the whole-frame pHash nor the pixel comparison of `phash.compare`
sees the copy. pHash finds the candidate through a window hash (the big image's pHash
over a sub-rectangle, `phash.WINDOWS`, against the small image's whole-frame hash);
this module then proves it, or not, on the 64x64 grey detail images:

* the model maps the small image's unit square onto a rectangle of the big one,
  x -> sx * x + tx and y -> sy * y + ty (crops and borders scale and shift each axis
  independently, and both images were squashed to 64x64, so the aspect is free);
* the four parameters, plus a gain and an offset for the light, are fitted by
  Gauss-Newton on blurred images (sigma 3, then 1.5), starting from the window that
  matched; warping is bilinear and separable (two small interpolation matrices per
  pair), so a batch of pairs is a few matrix products;
* the fitted warp is then checked as `phash.compare` checks a plain pair: after the
  gain, no detail pixel (blurred, inside the overlap, away from the edges) may differ
  by more than `WARP_DETAIL_TAU` levels and no colour pixel by more than the colour tau.

Only a real crop or border passes: the fitted rectangle must cover at least
`MIN_SCALE` of each axis and move the frame by at least `MIN_WARP` (an identity warp
is the plain comparison, already refused), which keeps look-alikes out (emoji skin
tones and genders differ in a few pixels that a free warp could otherwise hide).

Executor-safe: numpy only.
"""

from __future__ import annotations

import numpy as np

MIN_SCALE = 0.8  # the small image covers at least this share of each axis of the big one
MAX_SCALE = 1.02  # and at most this (it lies inside the big one, up to resampling)
MIN_WARP = 0.012  # a warp closer than this to the identity (scale or shift) is no crop
WARP_DETAIL_TAU = 12.0  # levels, 64x64 grey at the pair's resolution after the warp
EDGE = 3  # pixels of the 64x64 frame that blur and resampling make unreliable
STEPS = ((3.0, 4), (1.5, 3))  # (blur sigma, Gauss-Newton iterations), coarse to fine
SLUG = (
    f"w{MIN_SCALE:g}-{MAX_SCALE:g}m{MIN_WARP:g}t{WARP_DETAIL_TAU:g}e{EDGE}"
    f"s{'-'.join(f'{s:g}x{n}' for s, n in STEPS)}"
)


def interpolation(scale: np.ndarray, shift: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(weights (k, n, n), inside (k, n)): row j of weights[i] samples a length-n signal at
    the centre of pixel j of the small frame mapped by x -> scale[i] * x + shift[i]
    (bilinear, clamped at the ends); inside says whether that point lies in the frame."""
    centres = (np.arange(n) + 0.5) / n
    pos = (scale[:, None] * centres[None, :] + shift[:, None]) * n - 0.5  # (k, n)
    inside = (pos >= -0.5) & (pos <= n - 0.5)
    p = np.clip(pos, 0, n - 1)
    lo = np.minimum(np.floor(p).astype(np.int64), n - 2)
    frac = (p - lo).astype(np.float32)
    w = np.zeros((len(scale), n, n), dtype=np.float32)
    rows = np.arange(n)[None, :].repeat(len(scale), 0)
    batch = np.arange(len(scale))[:, None].repeat(n, 1)
    w[batch, rows, lo] = 1 - frac
    w[batch, rows, lo + 1] += frac
    return w, inside


def warp(images: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(warped, inside): images (k, n, n[, c]) sampled on the small frame by params
    (k, 4) = (sx, tx, sy, ty); inside (k, n, n) says which samples fall in the frame."""
    wx, ix = interpolation(params[:, 0], params[:, 1], images.shape[2])
    wy, iy = interpolation(params[:, 2], params[:, 3], images.shape[1])
    return _apply(images, wy, wx.transpose(0, 2, 1)), iy[:, :, None] & ix[:, None, :]


def _apply(images: np.ndarray, wy: np.ndarray, wxt: np.ndarray) -> np.ndarray:
    if images.ndim == 4:  # colour: warp each channel
        return np.stack([wy @ images[..., c] @ wxt for c in range(images.shape[3])], axis=-1)
    return wy @ images @ wxt


def _gradients(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gy, gx = np.gradient(images, axis=(1, 2))
    return gx.astype(np.float32), gy.astype(np.float32)


def edge_mask(n: int, edge: int) -> np.ndarray:
    m = np.zeros((n, n), dtype=bool)
    m[edge : n - edge, edge : n - edge] = True
    return m


def _fit(big: np.ndarray, small: np.ndarray, params: np.ndarray, iterations: int) -> np.ndarray:
    """Gauss-Newton steps of the warp (plus gain and offset) mapping big onto small."""
    k, n = big.shape[0], big.shape[1]
    gx, gy = _gradients(big)
    stack = np.stack([big, gx, gy], axis=-1)  # warped together: one product per axis
    centres = ((np.arange(n) + 0.5) / n).astype(np.float32)
    frame = edge_mask(n, EDGE)
    gain = np.ones(k, dtype=np.float32)
    offset = np.zeros(k, dtype=np.float32)
    for _ in range(iterations):
        wx, ix = interpolation(params[:, 0], params[:, 1], n)
        wy, iy = interpolation(params[:, 2], params[:, 3], n)
        warped = _apply(stack, wy, wx.transpose(0, 2, 1))
        a, dx, dy = warped[..., 0], warped[..., 1] * n, warped[..., 2] * n
        live = (iy[:, :, None] & ix[:, None, :] & frame).reshape(k, -1, 1)
        # d(sample)/d(param), in levels per unit of the parameter
        g = gain[:, None, None]
        jac = (
            np.stack(
                [g * dx * centres, g * dx, g * dy * centres[:, None], g * dy, a, np.ones_like(a)],
                axis=-1,
            ).reshape(k, -1, 6)
            * live
        )
        res = (g * a + offset[:, None, None] - small).reshape(k, -1, 1) * live
        jt = jac.transpose(0, 2, 1)
        step = np.linalg.solve(jt @ jac + 1e-3 * np.eye(6, dtype=np.float32), -(jt @ res))[..., 0]
        params = params + step[:, :4]
        params[:, [0, 2]] = np.clip(params[:, [0, 2]], MIN_SCALE - 0.05, MAX_SCALE + 0.05)
        params[:, [1, 3]] = np.clip(params[:, [1, 3]], -0.1, 0.3)
        gain = np.clip(gain + step[:, 4], 0.5, 2.0).astype(np.float32)
        offset = (offset + step[:, 5]).astype(np.float32)
    return params


def register(big: np.ndarray, small: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Warps (k, 4) = (sx, tx, sy, ty) aligning the grey 64x64 images `big` onto `small`,
    fitted coarse to fine from `start` (the matched window)."""
    from lakecurate.udfs.phash import blur

    params = start.astype(np.float64)
    for sigma, iterations in STEPS:
        params = _fit(blur(big, sigma), blur(small, sigma), params, iterations)
    return params


def plausible(params: np.ndarray) -> np.ndarray:
    """Warps that a crop or border makes: inside the frame, large, not the identity."""
    s, t = params[:, [0, 2]], params[:, [1, 3]]
    inside = (s >= MIN_SCALE) & (s <= MAX_SCALE) & (t >= -0.02) & (t + s <= 1.02)
    moved = (np.abs(1 - s) >= MIN_WARP) | (np.abs(t) >= MIN_WARP)
    return inside.all(axis=1) & moved.any(axis=1)
