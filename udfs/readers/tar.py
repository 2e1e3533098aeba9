"""WebDataset tars (img2dataset's layout: `key.jpg|png|webp`, `key.txt`, `key.json`).

The tar is read as a stream (plain or gzip): one pass, members in order, only the
current sample's members in memory, nothing written to disk. `TarStream` parses
the 512-byte headers itself (ustar, GNU long names, pax `path`/`size`) because
`tarfile`'s per-member machinery costs more than everything else ingest does
with a small sample; it checks every header checksum and the end-of-archive
block, and it never follows or creates anything. Members of a sample are
adjacent (the WebDataset convention). Members larger than the caps are skipped
unread; links, devices and names that are absolute or contain `..` become
`unsafe_member` rejects. A stream that breaks (truncated tar, bad header, corrupt
gzip) keeps what came before and rejects the rest as `truncated_tar`.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Iterator
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
STREAM_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)  # TarStreamError is one


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


class TarStreamError(tarfile.ReadError):
    """The stream is not (or no longer) a valid tar."""


_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_REGULAR = (b"0", b"\0", b"7")
_KINDS = {b"1": "hardlink", b"2": "symlink", b"3": "device", b"4": "device", b"6": "fifo"}
_SKIP_CHUNK = 1 << 20


@dataclass
class Member:
    """One tar member's header: name, size and type flag (b"0" regular, b"5" dir, ...)."""

    name: str
    size: int
    type: bytes
    linkname: str = ""

    @property
    def is_dir(self) -> bool:
        return self.type == b"5" or (self.type in _REGULAR and self.name.endswith("/"))


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 (sizes of 8 GiB and more)
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarStreamError(f"bad {what} field {field!r} in a tar header") from None


def _pax_int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise TarStreamError(f"bad pax size {value!r}") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def _pax(data: bytes) -> dict[str, str]:
    """Records `"<len> <key>=<value>\\n"` of a pax extended header."""
    out, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarStreamError("bad pax extended header") from None
        if length <= 0:
            raise TarStreamError("bad pax extended header")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "backslashreplace")
        pos += length
    return out


class TarStream:
    """Iterate the members of a tar stream: `next()` -> Member or None at the end."""

    def __init__(self, f: IO[bytes]):
        self.f = f
        self.offset = 0  # bytes consumed
        self._pending = 0  # unread data (with padding) of the current member

    def _read(self, n: int) -> bytes:
        data = self.f.read(n)
        self.offset += len(data)
        if len(data) != n:
            raise TarStreamError(f"unexpected end of data at byte {self.offset}")
        return data

    def _header(self) -> bytes | None:
        self.skip()
        block = self.f.read(_BLOCK)
        self.offset += len(block)
        if not block:
            raise TarStreamError(f"no end-of-archive block after byte {self.offset}")
        if len(block) != _BLOCK:
            raise TarStreamError(f"unexpected end of data at byte {self.offset}")
        if block == _ZERO_BLOCK:
            return None
        if not _is_header(block):
            raise TarStreamError(f"bad header checksum at byte {self.offset - _BLOCK}")
        return block

    def _data(self, size: int) -> bytes:
        data = self._read(size)
        self._read(-size % _BLOCK)
        return data

    def next(self) -> Member | None:
        long_name = long_link = None
        pax: dict[str, str] = {}
        while (block := self._header()) is not None:
            kind = block[156:157]
            size = _octal(block[124:136], "size")
            if kind in (b"L", b"K", b"x", b"g"):
                data = self._data(size)
                if kind == b"L":
                    long_name = _text(data)
                elif kind == b"K":
                    long_link = _text(data)
                elif kind == b"x":
                    pax.update(_pax(data))
                continue  # global pax headers carry nothing we use
            name = _text(block[0:100])
            if block[257:263] == b"ustar\0" and block[345] != 0:
                name = _text(block[345:500]) + "/" + name
            name = pax.get("path", long_name or name)
            if "size" in pax:
                size = _pax_int(pax["size"])
            link = pax.get("linkpath", long_link or _text(block[157:257]))
            has_data = kind not in _KINDS and kind != b"5"
            self._pending = size + (-size % _BLOCK) if has_data else 0
            return Member(name, size if has_data else 0, kind, link)
        return None

    def read(self, m: Member) -> bytes:
        """The data of `m`, the member `next()` returned last."""
        self._pending = 0
        return self._data(m.size)

    def skip(self) -> None:
        """Consume the rest of the current member (read and dropped: streams do not seek)."""
        while self._pending:
            n = min(self._pending, _SKIP_CHUNK)
            self._read(n)
            self._pending -= n

    def check_end(self) -> None:
        """After the first zero block: the archive must have its end, not more garbage."""
        # Trailing zero blocks and a record's padding follow; nothing in them is ours.
        while self.f.read(1 << 16):
            pass


def _unsafe(m: Member) -> str | None:
    """Why a member must not be read, or None. Nothing is extracted, but a link or a
    path escaping the archive is a sign of a hostile or broken shard."""
    kind = _KINDS.get(m.type)
    if kind in ("symlink", "hardlink"):
        return f"{m.name!r} is a {kind} to {m.linkname!r}"
    if kind is not None:
        return f"{m.name!r} is a device or fifo"
    if m.type not in _REGULAR:
        return f"{m.name!r} is not a regular file (type {m.type.decode('latin-1')!r})"
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


def _members(
    tar: TarStream, opts: ReaderOptions
) -> Iterator[tuple[str, bytes | None, tuple | None]]:
    """(name, data, problem) for each member we care about, in tar order."""
    while (m := tar.next()) is not None:
        if m.is_dir:
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
        yield m.name, tar.read(m), None


def _samples(tar: TarStream, opts: ReaderOptions) -> Iterator[RawRecord]:
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
        tar.check_end()
    except STREAM_ERRORS as e:
        where = current.key if current is not None else f"@member{n}"
        detail = f"stream broke after {n} members: {type(e).__name__}: {e}"
        yield RawRecord(key=where, reject=("truncated_tar", detail))
        return
    if current is not None:
        yield current.record()


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    """gzip by its magic bytes; GzipFile raises EOFError on a cut stream."""
    buf = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
    return gzip.GzipFile(fileobj=buf) if buf.peek(2)[:2] == b"\x1f\x8b" else buf


@READERS.register("webdataset")
def read_webdataset(src: SourceFile, opts: ReaderOptions) -> Iterator[RawRecord]:
    """Stream the samples of one `.tar` / `.tar.gz` shard."""
    with open_binary(src.uri) as raw:
        try:
            f = _decompressed(raw)
            first = f.peek(_BLOCK)[:_BLOCK] if hasattr(f, "peek") else b""
        except STREAM_ERRORS as e:
            yield RawRecord(key="", reject=("unreadable_source", f"not a readable tar: {e}"))
            return
        if not first:
            yield RawRecord(key="", reject=("unreadable_source", "not a tar: the file is empty"))
            return
        if len(first) == _BLOCK and first != _ZERO_BLOCK and not _is_header(first):
            yield RawRecord(key="", reject=("unreadable_source", "not a tar: bad first header"))
            return
        yield from _samples(TarStream(f), opts)


def _is_header(block: bytes) -> bool:
    """The header checksum holds: the sum of its bytes with the checksum field as spaces
    (unsigned, or signed as some old tars wrote it)."""
    try:
        stored = _octal(block[148:156], "checksum")
    except TarStreamError:
        return False
    rest = block[:148] + block[156:]
    unsigned = sum(rest) + 8 * 32
    return stored == unsigned or stored == unsigned - 256 * sum(b > 127 for b in rest)
