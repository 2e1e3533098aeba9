"""Turn SOURCE arguments (a file, a directory, a glob; local or fsspec URI) into units of work.

Runs on the driver and only lists files (plus one schema/first-line peek for
`auto` Parquet/JSONL, which may be URL lists). Each unit is a `SourceFile`: a
shard or file, or for `folder` one directory of images. Names starting with `.`
or `_` (temporary and stats files) are skipped, and so is img2dataset's per-shard
`.parquet` next to its `.tar`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from lakecurate.udfs.readers.base import IMAGE_EXTS, ReaderOptions, SourceFile

SUFFIX_FORMATS: dict[str, str] = {
    ".tar": "webdataset",
    ".tar.gz": "webdataset",
    ".tgz": "webdataset",
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".csv": "urls",
    ".csv.gz": "urls",
    ".tsv": "urls",
    ".tsv.gz": "urls",
}
_GLOB_CHARS = "*?["


class SourceNotFound(ValueError):
    """A SOURCE argument that names nothing ingestible."""


@dataclass(frozen=True)
class _Fs:
    fs: object
    remote_prefix: str  # "" for local paths

    def uri(self, path: str) -> str:
        return f"{self.remote_prefix}{path}" if self.remote_prefix else path


def _filesystem(uri: str) -> tuple[_Fs, str]:
    if "://" not in uri or uri.startswith("file://"):
        import fsspec

        path = os.path.abspath(uri[len("file://") :] if uri.startswith("file://") else uri)
        return _Fs(fsspec.filesystem("file"), ""), path
    from lakecurate.udfs.storage import url_to_fs

    fs, path = url_to_fs(uri)
    return _Fs(fs, uri.split("://", 1)[0] + "://"), path


def suffix_format(name: str) -> str | None:
    low = name.lower()
    for suffix in sorted(SUFFIX_FORMATS, key=len, reverse=True):
        if low.endswith(suffix):
            return SUFFIX_FORMATS[suffix]
    return None


def _hidden(path: str, root: str) -> bool:
    rel = os.path.relpath(path, root) if path != root else ""
    return any(p.startswith((".", "_")) for p in rel.split(os.sep) if p)


def _peek_columns(fsx: _Fs, path: str, fmt: str) -> set[str]:
    """Column names of a Parquet file, or the keys of a JSONL file's first record."""
    try:
        with fsx.fs.open(path, "rb") as f:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                return set(pq.read_schema(f).names)
            if path.endswith(".gz"):
                import gzip

                f = gzip.GzipFile(fileobj=f)
            first = f.readline()
        return set(json.loads(first)) if first.strip() else set()
    except Exception:  # unreadable here: the reader reports it as a reject
        return set()


def _auto_table_format(fsx: _Fs, path: str, fmt: str, opts: ReaderOptions) -> str:
    """A Parquet/JSONL file with URLs but no image column is a URL list."""
    cols = _peek_columns(fsx, path, fmt)
    has_image = opts.image_column in cols or opts.path_column in cols
    return "urls" if opts.url_column in cols and not has_image else fmt


# What a directory listing accepts for an explicit --format.
_LISTED = {
    "webdataset": ("webdataset",),
    "parquet": ("parquet",),
    "jsonl": ("jsonl",),
    "urls": ("urls", "parquet", "jsonl"),
}


def _file_unit(
    fsx: _Fs, path: str, fmt: str, opts: ReaderOptions, named: bool
) -> SourceFile | None:
    """The unit for one file; `named`: the user named this file (trust an explicit format)."""
    found = suffix_format(path)
    if fmt == "auto":
        if found in ("parquet", "jsonl"):
            found = _auto_table_format(fsx, path, found, opts)
        return SourceFile(fsx.uri(path), found) if found else None
    if fmt == "folder":
        return None
    if named or found in _LISTED.get(fmt, ()):
        return SourceFile(fsx.uri(path), fmt)
    return None


def _dir_units(fsx: _Fs, root: str, fmt: str, opts: ReaderOptions) -> list[SourceFile]:
    files = sorted(p for p in fsx.fs.find(root) if not _hidden(p, root))
    tars = {p.rsplit(".", 1)[0] for p in files if suffix_format(p) == "webdataset"}
    units, image_dirs = [], set()
    for p in files:
        if p.lower().rsplit(".", 1)[-1] in IMAGE_EXTS:
            image_dirs.add(p.rsplit("/", 1)[0])
            continue
        if p.endswith(".parquet") and p[: -len(".parquet")] in tars:
            continue  # img2dataset's per-shard metadata: the tar holds the samples
        if fmt != "folder" and (unit := _file_unit(fsx, p, fmt, opts, named=False)) is not None:
            units.append(unit)
    if fmt == "folder" or (fmt == "auto" and not units):
        units += [SourceFile(fsx.uri(d), "folder") for d in sorted(image_dirs)]
    return units


def expand_source(
    uri: str, fmt: str = "auto", opts: ReaderOptions | None = None
) -> list[SourceFile]:
    """The units of work named by one SOURCE argument; SourceNotFound if there are none."""
    opts = opts or ReaderOptions()
    fsx, path = _filesystem(uri)
    if any(c in path for c in _GLOB_CHARS):
        paths = sorted(fsx.fs.glob(path))
    elif fsx.fs.exists(path):
        paths = [path]
    else:
        raise SourceNotFound(f"{uri} does not exist")
    units: list[SourceFile] = []
    for p in paths:
        if fsx.fs.isdir(p):
            units += _dir_units(fsx, p.rstrip("/"), fmt, opts)
        elif (unit := _file_unit(fsx, p, fmt, opts, named=True)) is not None:
            units.append(unit)
    if not units:
        raise SourceNotFound(
            f"{uri}: nothing to ingest as format {fmt!r} (looked for "
            f"{', '.join(sorted(SUFFIX_FORMATS))} files and folders of images)"
        )
    return units
