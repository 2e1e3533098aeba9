"""Parquet and JSONL files with a caption column and image bytes or an image path/URI.

Rows are read in batches (bounded memory). The image comes from, in order:
`image_column` as bytes (JSONL: base64 text; a `{"bytes": ..., "path": ...}`
struct as Hugging Face datasets write it), or `path_column`, a local path or URI
(relative paths are resolved against the file's folder). The key is
`key_column` when the file has it, else the row index.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
from collections.abc import Iterator
from typing import Any

from lakecurate.udfs.readers.base import (
    READERS,
    RawRecord,
    ReaderOptions,
    SourceFile,
    join_uri,
    open_binary,
    parent_uri,
)

_META_SKIP = (bytes, bytearray, dict, list)
Problem = tuple[str, str] | None  # (reason, detail) when the image cannot be had


def _image_value(value: Any, folder: str, opts: ReaderOptions) -> tuple[bytes | None, Problem]:
    """(bytes, problem) from an image cell: bytes, base64 text, or a bytes/path struct."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return _image_value(value["bytes"], folder, opts)
        if value.get("path"):
            return _read_path(str(value["path"]), folder, opts)
        return None, None
    if isinstance(value, bytes | bytearray):
        return bytes(value), None
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True), None
        except (binascii.Error, ValueError):
            return None, ("missing_image", "the image column holds text that is not base64")
    return None, None


def _read_path(path: str, folder: str, opts: ReaderOptions) -> tuple[bytes | None, Problem]:
    uri = join_uri(folder, path)
    try:
        with open_binary(uri) as f:
            data = f.read(opts.max_image_bytes + 1)
    except FileNotFoundError:
        return None, ("missing_image", f"{uri} not found")
    except OSError as e:
        return None, ("missing_image", f"{uri}: {e}")
    if len(data) > opts.max_image_bytes:
        return None, ("image_too_large", f"{uri} is over ingest.max_image_bytes")
    return data, None


def _record(row: dict, index: int, folder: str, opts: ReaderOptions) -> RawRecord:
    key = row.get(opts.key_column)
    rec = RawRecord(key=str(key) if key is not None else str(index))
    rec.caption = row.get(opts.caption_column)
    url = row.get(opts.url_column)
    rec.url = url if isinstance(url, str) else None
    image, problem = None, None
    if row.get(opts.image_column) is not None:
        image, problem = _image_value(row[opts.image_column], folder, opts)
    elif row.get(opts.path_column):
        image, problem = _read_path(str(row[opts.path_column]), folder, opts)
    rec.image, rec.reject = image, problem
    skip = {opts.image_column, opts.caption_column}
    rec.meta = {k: v for k, v in row.items() if k not in skip and not isinstance(v, _META_SKIP)}
    return rec


@READERS.register("parquet")
def read_parquet(src: SourceFile, opts: ReaderOptions) -> Iterator[RawRecord]:
    """Rows of one Parquet file, a row group batch at a time."""
    import pyarrow.parquet as pq

    folder = parent_uri(src.uri)
    with open_binary(src.uri) as f:
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a non-Parquet file
            yield RawRecord(
                key="", reject=("unreadable_source", f"not a readable Parquet file: {e}")
            )
            return
        index = 0
        for batch in pf.iter_batches(batch_size=opts.batch_rows):
            for row in batch.to_pylist():
                yield _record(row, index, folder, opts)
                index += 1


def _lines(src: SourceFile) -> Iterator[bytes]:
    with open_binary(src.uri) as raw:
        f = gzip.GzipFile(fileobj=raw) if src.uri.endswith(".gz") else raw
        yield from f


@READERS.register("jsonl")
def read_jsonl(src: SourceFile, opts: ReaderOptions) -> Iterator[RawRecord]:
    """One record per non-empty line; a line that is not a JSON object is rejected."""
    folder = parent_uri(src.uri)
    index = -1
    try:
        for line in _lines(src):
            index += 1
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                yield RawRecord(key=str(index), reject=("bad_record", f"line {index}: {e}"))
                continue
            if not isinstance(row, dict):
                yield RawRecord(key=str(index), reject=("bad_record", "not a JSON object"))
                continue
            yield _record(row, index, folder, opts)
    except (OSError, EOFError) as e:  # a truncated .jsonl.gz
        yield RawRecord(key=f"@line{index + 1}", reject=("truncated_source", f"stream broke: {e}"))
