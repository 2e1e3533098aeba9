"""Caption normalisation and content-derived ids (pure functions, executor-safe)."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SPACE = re.compile(r"\s+")


def normalize_caption(text: str | None) -> str:
    """NFKC, lower case, whitespace collapsed, trimmed: the caption identity used by uids."""
    if not text:
        return ""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_uid(image_sha256: str, caption: str | None) -> str:
    """uid = hash(image bytes' sha256, normalised caption): the same pair is the same row."""
    h = hashlib.sha256()
    h.update(image_sha256.encode())
    h.update(b"\x00")
    h.update(normalize_caption(caption).encode())
    return h.hexdigest()[:32]
