"""WebDataset tars (img2dataset's layout: `key.jpg|png|webp`, `key.txt`, `key.json`).

The tar is read in stream mode (`r|*`, plain or gzip): one pass, members in
order, only the current sample's members in memory, nothing written to disk.
Members of a sample are adjacent (the WebDataset convention). Members larger
than the caps are skipped unread; links, devices and names that are absolute or
contain `..` become `unsafe_member` rejects. A stream that breaks (truncated
tar, bad header, corrupt gzip) keeps what came before and rejects the rest as
`truncated_tar`.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

from lakecurate.udfs.readers.base import (
    READERS,
    RawRecord,
    ReaderOptions,
    SourceFile,
    image_ext,
    open_binary,
    parse_meta,
    split_key,
)

_META_CAP = 1 << 20
# What a broken tar or gzip stream raises while being read.
STREAM_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


@dataclass
class _Sample:
    """The members of one key seen so far."""

    key: str
    images: list[tuple[str, bytes]] = field(default_factory=list)
    caption: bytes | None = None
    meta: bytes | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)
    exts: set[str] = field(default_factory=set)

    def add(self, ext: str, data: bytes | None, problem: tuple[str, str] | None) -> None:
        self.exts.add(ext)
        if problem is not None:
            self.problems.append(problem)
        elif image_ext(ext):
            self.images.append((ext, data))
        elif ext == "txt":
            self.caption = data
        elif ext == "json":
            self.meta = data

    def record(self) -> RawRecord:
        meta = parse_meta(self.meta)
        rec = RawRecord(
            key=self.key,
            image=self.images[0][1] if self.images else None,
            caption=self.caption,
            meta=meta,
            url=meta.get("url") if isinstance(meta.get("url"), str) else None,
        )
        if self.problems:
            rec.reject = self.problems[0]
        elif len(self.images) > 1:
            exts = ", ".join(e for e, _ in self.images)
            rec.reject = ("duplicate_key", f"key {self.key!r} has several images ({exts})")
        return rec


def _unsafe(m: tarfile.TarInfo) -> str | None:
    """Why a member must not be read, or None. Nothing is extracted, but a link or a
    path escaping the archive is a sign of a hostile or broken shard."""
    if m.issym() or m.islnk():
        return f"{m.name!r} is a {'symlink' if m.issym() else 'hardlink'} to {m.linkname!r}"
    if m.ischr() or m.isblk() or m.isfifo():
        return f"{m.name!r} is a device or fifo"
    if not m.isreg():
        return f"{m.name!r} is not a regular file (type {m.type!r})"
    parts = m.name.replace("\\", "/").split("/")
    if m.name.startswith(("/", "\\")) or (len(m.name) > 1 and m.name[1] == ":") or ".." in parts:
        return f"{m.name!r} is an absolute path or contains '..'"
    return None


def _cap(ext: str, opts: ReaderOptions) -> tuple[int, str] | None:
    """The size cap and its reject reason for an extension we read; None: skip the member."""
    if image_ext(ext):
        return opts.max_image_bytes, "image_too_large"
    if ext == "txt":
        return opts.max_caption_bytes, "caption_too_long"
    if ext == "json":
        return _META_CAP, "meta_too_large"
    return None


def _read_member(tar: tarfile.TarFile, m: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(m)
    data = f.read() if f is not None else b""
    if len(data) != m.size:
        raise tarfile.ReadError(f"unexpected end of data in {m.name!r}")
    return data


def _members(
    tar: tarfile.TarFile, opts: ReaderOptions
) -> Iterator[tuple[str, bytes | None, tuple | None]]:
    """(name, data, problem) for each member we care about, in tar order."""
    while (m := tar.next()) is not None:
        if m.isdir():
            continue
        reason = _unsafe(m)
        if reason is not None:
            yield m.name, None, ("unsafe_member", reason)
            continue
        cap = _cap(split_key(m.name)[1], opts)
        if cap is None:
            continue  # other extensions (cls, npy, ...) are not ours; the stream skips them
        if m.size > cap[0]:
            yield m.name, None, (cap[1], f"{m.name!r} has {m.size} bytes > limit {cap[0]}")
            continue
        yield m.name, _read_member(tar, m), None


def _samples(
    tar: tarfile.TarFile, opts: ReaderOptions, check_end: Callable[[], None]
) -> Iterator[RawRecord]:
    current: _Sample | None = None
    n = 0
    try:
        for name, data, problem in _members(tar, opts):
            n += 1
            if problem is not None and problem[0] == "unsafe_member":
                yield RawRecord(key=name, reject=problem)
                continue
            key, ext = split_key(name)
            if current is not None and (key != current.key or ext in current.exts):
                yield current.record()
                current = None
            current = current or _Sample(key)
            current.add(ext, data, problem)
        check_end()
    except STREAM_ERRORS as e:
        where = current.key if current is not None else f"@member{n}"
        detail = f"stream broke after {n} members: {type(e).__name__}: {e}"
        yield RawRecord(key=where, reject=("truncated_tar", detail))
        return
    if current is not None:
        yield current.record()


class _CountingReader:
    """Counts the (decompressed) bytes tarfile reads, to find a missing end-of-archive."""

    def __init__(self, f: IO[bytes]):
        self.f = f
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.count += len(data)
        return data


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    """gzip by its magic bytes; GzipFile raises EOFError on a cut stream, unlike tarfile's."""
    buf = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
    return gzip.GzipFile(fileobj=buf) if buf.peek(2)[:2] == b"\x1f\x8b" else buf


def _check_end(tar: tarfile.TarFile, counter: _CountingReader) -> None:
    """A tar cut at a member boundary ends without error: require its zero end block."""
    while counter.read(1 << 16):
        pass
    if counter.count < tar.offset + tarfile.BLOCKSIZE:
        raise tarfile.ReadError(f"no end-of-archive block after byte {tar.offset}")


@READERS.register("webdataset")
def read_webdataset(src: SourceFile, opts: ReaderOptions) -> Iterator[RawRecord]:
    """Stream the samples of one `.tar` / `.tar.gz` shard."""
    with open_binary(src.uri) as raw:
        counter = _CountingReader(_decompressed(raw))
        try:
            tar = tarfile.open(fileobj=counter, mode="r|")
        except STREAM_ERRORS as e:
            yield RawRecord(key="", reject=("unreadable_source", f"not a readable tar: {e}"))
            return
        with tar:
            yield from _samples(tar, opts, lambda: _check_end(tar, counter))
