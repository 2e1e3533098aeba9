"""Image probing for ingest: format, EXIF-oriented size, and the checks that reject a record.

Pure functions on bytes (executor-safe; no Spark, no lake). The order matters:
the pixel count comes from the header, so a decompression bomb is refused
before a single pixel is decoded; only then (with `decode="full"`) are the
pixels decoded to catch truncated or corrupt data.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

ORIENTATION_TAG = 0x0112
# EXIF orientations 5..8 rotate by 90 or 270 degrees: width and height swap.
_SWAPS_SIDES = {5, 6, 7, 8}


@dataclass(frozen=True)
class ImageLimits:
    """What an acceptable image is (from `IngestConfig`)."""

    max_pixels: int = 89_478_485
    min_side: int = 16
    max_bytes: int = 64 * 1024 * 1024
    formats: tuple[str, ...] = ("jpeg", "png", "webp", "gif", "bmp", "tiff", "mpo")
    decode: str = "full"  # full | header


@dataclass(frozen=True)
class ImageInfo:
    """A probed image: lower-case format and the size as displayed (after EXIF orientation)."""

    format: str
    width: int
    height: int
    orientation: int = 1


class Rejected(Exception):
    """A record that fails a check: a `reason` code from `schemas.rejects.REASONS` and a detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ImageRejected(Rejected):
    """An image that fails a check."""


def probe_image(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Check `data` against `limits`; return its ImageInfo or raise ImageRejected."""
    if not data:
        raise ImageRejected("empty_image", "the image has 0 bytes")
    if len(data) > limits.max_bytes:
        raise ImageRejected(
            "image_too_large", f"{len(data)} bytes > ingest.max_image_bytes={limits.max_bytes}"
        )
    with warnings.catch_warnings():
        # Pillow warns above its own limit; ours is checked explicitly below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = _open(data)
        with im:
            fmt = (im.format or "unknown").lower()
            if fmt not in limits.formats:
                raise ImageRejected(
                    "unsupported_format", f"{fmt} is not in ingest.image_formats {limits.formats}"
                )
            w, h = im.size
            _check_pixels(w, h, limits)
            _check_complete(data, fmt)
            if limits.decode == "full":
                _decode(im, w, h)
            orientation = _orientation(im)
    if orientation in _SWAPS_SIDES:
        w, h = h, w
    if min(w, h) < limits.min_side:
        raise ImageRejected(
            "too_small", f"{w}x{h}: shorter side < ingest.min_side={limits.min_side}"
        )
    return ImageInfo(fmt, w, h, orientation)


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:  # above twice Pillow's limit: refused in the header
        raise ImageRejected("too_many_pixels", str(e)) from None
    except UnidentifiedImageError:
        raise ImageRejected(
            "undecodable_image", f"not a known image format ({_magic(data)})"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:  # a header Pillow recognises but cannot parse
        raise ImageRejected("undecodable_image", f"bad header: {e}") from None


def _check_pixels(w: int, h: int, limits: ImageLimits) -> None:
    if w <= 0 or h <= 0:
        raise ImageRejected("undecodable_image", f"header says {w}x{h}")
    if w * h > limits.max_pixels:
        raise ImageRejected(
            "too_many_pixels", f"{w}x{h} = {w * h} pixels > ingest.max_pixels={limits.max_pixels}"
        )


def _ends_with_marker(data: bytes, marker: bytes, window: int) -> bool:
    return data.rfind(marker, max(0, len(data) - window)) != -1


def _riff_complete(data: bytes) -> bool:
    return len(data) >= 12 and int.from_bytes(data[4:8], "little") + 8 <= len(data)


# Cheap end-of-stream checks: a cut-off file lacks its trailer. The windows allow
# for the trailing bytes some encoders append after the marker.
_COMPLETE = {
    "jpeg": lambda d: _ends_with_marker(d, b"\xff\xd9", 4096),
    "mpo": lambda d: _ends_with_marker(d, b"\xff\xd9", 4096),
    "png": lambda d: _ends_with_marker(d, b"IEND", 64),
    "gif": lambda d: _ends_with_marker(d, b"\x3b", 16),
    "webp": _riff_complete,
}


def _check_complete(data: bytes, fmt: str) -> None:
    check = _COMPLETE.get(fmt)
    if check is not None and not check(data):
        raise ImageRejected("truncated_image", f"the {fmt} data ends before its end marker")


def _decode(im: Image.Image, w: int, h: int) -> None:
    """Decode the pixels; JPEG at 1/8 scale (the entropy stream is still read in full)."""
    if im.format in ("JPEG", "MPO"):
        im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
    try:
        im.load()
    except OSError as e:
        reason = "truncated_image" if "truncated" in str(e) else "undecodable_image"
        raise ImageRejected(reason, str(e)) from None
    except (SyntaxError, ValueError, EOFError) as e:
        raise ImageRejected("undecodable_image", f"{type(e).__name__}: {e}") from None


def _orientation(im: Image.Image) -> int:
    # A PNG keeps EXIF after the pixels; asking for it would decode the image.
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block does not make the image unusable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _magic(data: bytes) -> str:
    return "starts with " + data[:8].hex(" ") if data else "empty"


def reencode(data: bytes, info: ImageInfo, max_side: int, quality: int) -> bytes:
    """The optional resize policy: upright, shrink to `max_side`, JPEG. Small images pass as given."""
    if max(info.width, info.height) <= max_side:
        return data
    with Image.open(io.BytesIO(data)) as im:
        im = ImageOps.exif_transpose(im)
        im = im if im.mode == "RGB" else im.convert("RGB")
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
