"""What every source reader shares: the record it yields, its options, and file access.

Executor-safe: no Spark session, no lake code. Local paths are opened directly;
any other URI (s3://, gs://, ...) goes through fsspec with the user's credentials.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
TAR_EXTS = (".tar", ".tar.gz", ".tgz")


@dataclass
class RawRecord:
    """One record as a reader found it, before validation.

    `reject` is set when the reader itself already knows the record is bad
    (an unsafe tar member, a broken stream): (reason, detail).
    """

    key: str
    image: bytes | None = None
    caption: bytes | str | None = None
    meta: dict[str, Any] | None = None
    url: str | None = None
    reject: tuple[str, str] | None = None


@dataclass(frozen=True)
class SourceFile:
    """One unit of ingest work: a file (or, for `folder`, a directory) and its format."""

    uri: str
    format: str
    checksum: str = ""
    size_bytes: int = 0


@dataclass(frozen=True)
class ReaderOptions:
    """The column names and size caps readers need (from `IngestConfig`)."""

    caption_column: str = "caption"
    image_column: str = "image"
    path_column: str = "image_path"
    url_column: str = "url"
    key_column: str = "key"
    max_image_bytes: int = 64 * 1024 * 1024
    max_caption_bytes: int = 4 * 4096 + 16
    batch_rows: int = 256


Reader = Callable[[SourceFile, ReaderOptions], Iterator[RawRecord]]


@dataclass
class ReaderRegistry:
    """Format name -> reader; `register` is a decorator."""

    readers: dict[str, Reader] = field(default_factory=dict)

    def register(self, name: str) -> Callable[[Reader], Reader]:
        def deco(fn: Reader) -> Reader:
            self.readers[name] = fn
            return fn

        return deco

    def get(self, name: str) -> Reader:
        if name not in self.readers:
            raise KeyError(f"no reader for format {name!r}; formats: {', '.join(self.readers)}")
        return self.readers[name]


READERS = ReaderRegistry()


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def open_binary(uri: str) -> IO[bytes]:
    """Open a file for streaming reads (never read whole)."""
    if is_local(uri):
        return open(local_path(uri), "rb")  # noqa: SIM115 - the caller closes it
    from lakecurate.udfs.storage import open_uri

    return open_uri(uri, "rb")


def join_uri(base_dir: str, name: str) -> str:
    if "://" in name or os.path.isabs(name):
        return name
    return f"{base_dir.rstrip('/')}/{name}"


def parent_uri(uri: str) -> str:
    return uri.rsplit("/", 1)[0] if "/" in uri else "."


def split_key(name: str) -> tuple[str, str]:
    """WebDataset naming: `dir/abc.seg.png` -> key `dir/abc`, extension `seg.png`."""
    d, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{d}/{stem}" if d else stem), (ext.lower() if dot else "")


def image_ext(ext: str) -> bool:
    return ext.rsplit(".", 1)[-1] in IMAGE_EXTS


def parse_meta(raw: bytes | None) -> dict:
    """A sample's `.json` as a dict; broken JSON is noted, not fatal."""
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {"meta_error": "the .json is not valid JSON"}
    return meta if isinstance(meta, dict) else {"meta": meta}
