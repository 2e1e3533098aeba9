"""Image probing for ingest: format, EXIF-oriented size, and the checks that reject a record.

Pure functions on bytes (executor-safe; no Spark, no lake). The order matters:
the pixel count comes from the header, so a decompression bomb is refused
before a single pixel is decoded; only then (with `decode="full"`) are the
pixels decoded to catch truncated or corrupt data.
"""

from __future__ import annotations

import io
import warnings
import zlib
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
    decode: str = "header"  # header | full (see IngestConfig.decode)


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
    header = parse_header(data) if limits.decode == "header" else None
    if header is not None:
        fmt, w, h, orientation = header
        _check_format(fmt, limits)
        _check_pixels(w, h, limits)
        _check_complete(data, fmt)
        return _oriented(fmt, w, h, orientation, limits)
    with warnings.catch_warnings():
        # Pillow warns above its own limit; ours is checked explicitly below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = _open(data)
        with im:
            fmt = (im.format or "unknown").lower()
            _check_format(fmt, limits)
            w, h = im.size
            _check_pixels(w, h, limits)
            _check_complete(data, fmt)
            if limits.decode == "full":
                _decode(im, w, h)
            orientation = _orientation(im)
    return _oriented(fmt, w, h, orientation, limits)


def _oriented(fmt: str, w: int, h: int, orientation: int, limits: ImageLimits) -> ImageInfo:
    """The displayed size (EXIF orientation applied), checked against `min_side`."""
    if orientation in _SWAPS_SIDES:
        w, h = h, w
    if min(w, h) < limits.min_side:
        raise ImageRejected(
            "too_small", f"{w}x{h}: shorter side < ingest.min_side={limits.min_side}"
        )
    return ImageInfo(fmt, w, h, orientation)


def _check_format(fmt: str, limits: ImageLimits) -> None:
    if fmt not in limits.formats:
        raise ImageRejected(
            "unsupported_format", f"{fmt} is not in ingest.image_formats {limits.formats}"
        )


# --- header parsing without Pillow (decode="header") ------------------------------------
# Pillow's open parses every JPEG marker segment (quantization and Huffman tables
# included); ingest needs only the format, the size and the EXIF orientation. Any
# shape these parsers do not fully understand returns None, and Pillow decides.

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers (baseline, extended, progressive, lossless; not DHT/JPG/DAC).
_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


def parse_header(data: bytes) -> tuple[str, int, int, int] | None:
    """(format, width, height, EXIF orientation) of a plain JPEG or PNG, else None."""
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_header(data)
    if data[:8] == _PNG_SIGNATURE:
        return _png_header(data)
    return None


def _jpeg_header(data: bytes) -> tuple[str, int, int, int] | None:
    pos, n = 2, len(data)
    size, orientation = None, 1
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the header is over
            return None if size is None else ("jpeg", size[0], size[1], orientation)
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:
            return None  # markers without a length have no place in the header
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > n:
            return None
        body = data[pos + 4 : end]
        if marker in _SOF:
            if size is not None or length < 8:
                return None
            h, w = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
            size = (w, h)
        elif marker == 0xE1 and body[:6] == b"Exif\x00\x00":
            orientation = _tiff_orientation(body[6:])
        elif marker == 0xE2 and body[:4] == b"MPF\x00":
            return None  # a multi-picture file: Pillow names it MPO
        pos = end
    return None


def _tiff_orientation(tiff: bytes) -> int:
    """The orientation tag of IFD0 in an EXIF TIFF block; 1 when absent or broken."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return 1
    count = int.from_bytes(tiff[ifd : ifd + 2], order)
    for i in range(count):
        entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        if len(entry) < 12:
            return 1
        if int.from_bytes(entry[0:2], order) == ORIENTATION_TAG:
            if int.from_bytes(entry[2:4], order) != 3:  # SHORT
                return 1
            value = int.from_bytes(entry[8:10], order)
            return value if 1 <= value <= 8 else 1
    return 1


def _png_header(data: bytes) -> tuple[str, int, int, int] | None:
    ihdr = data[8:33]
    if len(ihdr) < 25 or ihdr[:8] != b"\x00\x00\x00\x0dIHDR":
        return None
    if zlib.crc32(ihdr[4:21]) != int.from_bytes(ihdr[21:25], "big"):
        return None
    if b"eXIf" in data:  # an EXIF chunk may carry an orientation: Pillow reads it
        return None
    return ("png", int.from_bytes(ihdr[8:12], "big"), int.from_bytes(ihdr[12:16], "big"), 1)


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
