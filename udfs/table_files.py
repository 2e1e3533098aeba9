"""Executor side of the lake: stream Arrow batches into new Parquet files of a Delta
table, with the Delta `stats` of each file.

A file written here is part of no table version until the driver commits it
(`lakecurate.deltaio.lake.commit_files`). Used by the lake's Spark data source and by ingest
tasks. Imports pyarrow only (no pyspark, no driver code), so any executor can use it.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

_STAT_STRING_MAX = 64  # longer strings get no min/max stats


@dataclass
class FileWritten:
    """What one task wrote: a Parquet file relative to the table root, and its stats."""

    path: str
    size: int
    num_rows: int
    stats: str


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    return pafs.FileSystem.from_uri(uri)


class _StatsCollector:
    """Delta `stats` JSON (numRecords, minValues, maxValues, nullCount) over batches."""

    def __init__(self, schema: pa.Schema):
        self.cols = [
            f.name
            for f in schema
            if pa.types.is_integer(f.type)
            or pa.types.is_floating(f.type)
            or pa.types.is_string(f.type)
            or pa.types.is_boolean(f.type)
        ]
        self.num_rows = 0
        self.mins: dict[str, Any] = {}
        self.maxs: dict[str, Any] = {}
        self.nulls: dict[str, int] = {c: 0 for c in self.cols}
        self.skip: set[str] = set()

    def update(self, batch: pa.RecordBatch) -> None:
        import pyarrow.compute as pc

        self.num_rows += batch.num_rows
        for c in self.cols:
            arr = batch.column(c)
            self.nulls[c] += arr.null_count
            if c in self.skip or arr.null_count == len(arr):
                continue
            mm = pc.min_max(arr).as_py()
            lo, hi = mm["min"], mm["max"]
            if isinstance(lo, str) and max(len(lo), len(hi)) > _STAT_STRING_MAX:
                self.skip.add(c)
                continue
            self.mins[c] = lo if c not in self.mins else min(self.mins[c], lo)
            self.maxs[c] = hi if c not in self.maxs else max(self.maxs[c], hi)

    def to_json(self) -> str:
        keep = [c for c in self.mins if c not in self.skip]
        return json.dumps(
            {
                "numRecords": self.num_rows,
                "minValues": {c: self.mins[c] for c in keep},
                "maxValues": {c: self.maxs[c] for c in keep},
                "nullCount": self.nulls,
            },
            allow_nan=False,
            default=str,
        )


class TableFileWriter:
    """Executor side: stream Arrow batches into ONE new Parquet file of a table.

    The file is written under a hidden `.inprogress` name and renamed when `close()`
    returns its `FileWritten` (path relative to the table root, size, Delta stats); it
    is part of the table only once the driver commits it (`commit_files`). `name` is
    fixed at construction so callers can refer to the file while it is written.
    Binary columns (image bytes: already compressed media) are stored uncompressed;
    the rest use zstd.
    """

    def __init__(self, table_uri: str, schema: pa.Schema, tag: str = ""):
        self.fs, self.root = filesystem(table_uri)
        self.schema = schema
        self.name = f"part-{tag + '-' if tag else ''}{uuid.uuid4().hex}-c000.zstd.parquet"
        self._tmp = f"{self.root}/.{self.name}.inprogress"
        self._stats = _StatsCollector(schema)
        self._writer: pq.ParquetWriter | None = None

    @property
    def num_rows(self) -> int:
        return self._stats.num_rows

    def write_batch(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        batch = conform(batch, self.schema)
        if self._writer is None:
            self.fs.create_dir(self.root, recursive=True)
            codecs = {f.name: "none" if pa.types.is_binary(f.type) else "zstd" for f in self.schema}
            self._writer = pq.ParquetWriter(
                self._tmp, self.schema, filesystem=self.fs, compression=codecs
            )
        self._writer.write_batch(batch)
        self._stats.update(batch)

    def close(self) -> FileWritten:
        """Finish the file and return it (an empty FileWritten when no row was written)."""
        if self._writer is None:
            return FileWritten(path="", size=0, num_rows=0, stats="")
        self._writer.close()
        self._writer = None
        final = f"{self.root}/{self.name}"
        self.fs.move(self._tmp, final)
        size = self.fs.get_file_info(final).size
        return FileWritten(self.name, size, self._stats.num_rows, self._stats.to_json())

    def discard(self) -> None:
        """Drop whatever was written (a failed task): no file of ours is left behind."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:
                pass
            self._writer = None
        delete_table_files(self.fs, self.root, [f".{self.name}.inprogress", self.name])


def delete_table_files(fs: pafs.FileSystem, root: str, names: list[str]) -> None:
    """Remove files (relative to a table root) that no commit references; missing is fine."""
    for name in names:
        try:
            fs.delete_file(f"{root}/{name}")
        except (FileNotFoundError, OSError):
            pass


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Cast a batch to the table schema (Spark hands over its own integer/timestamp types)."""
    if batch.schema.equals(schema):
        return batch
    missing = [n for n in schema.names if n not in batch.schema.names]
    if missing:
        raise ValueError(f"rows written lack columns {missing} of the table schema")
    cols = [batch.column(n).cast(schema.field(n).type) for n in schema.names]
    return pa.RecordBatch.from_arrays(cols, schema=schema)
