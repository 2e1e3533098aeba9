"""Executor side: read the Parquet files of a Delta table version with pyarrow.

Spark's own Parquet reader needs a JVM filesystem connector for the lake's storage
(`s3a://` needs hadoop-aws, which most Spark images ship and pip's pyspark does not).
This reader needs none: each task opens its files through pyarrow's filesystems
(local, S3 configured by the usual `AWS_*` variables, GCS, HDFS) and streams Arrow
batches to Spark. The driver lists the version's files with delta-rs
(`lakecurate.deltaio.lake.Lake.read`) and hands each task a few of them.

Files written before a column joined the table lack it: it reads as null, as Delta
readers do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql.datasource import DataSourceReader, InputPartition

from lakecurate.udfs.table_files import filesystem

BATCH_ROWS = 4096


@dataclass
class FilesPartition(InputPartition):
    """The files one task reads (absolute URIs)."""

    files: list[str]


def files_partitions(files: list[str], per_task: int) -> list[FilesPartition]:
    return [FilesPartition(files[i : i + per_task]) for i in range(0, len(files), per_task)]


def read_file(
    uri: str, schema: pa.Schema, batch_rows: int = BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """The rows of one Parquet file with the columns of `schema`, in its types."""
    fs, path = filesystem(uri)
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        have = set(pf.schema_arrow.names)
        cols = [n for n in schema.names if n in have]
        for batch in pf.iter_batches(batch_size=batch_rows, columns=cols):
            arrays = [
                batch.column(n).cast(field.type)
                if n in have
                else pa.nulls(batch.num_rows, field.type)
                for n, field in zip(schema.names, schema, strict=True)
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)


class TableFilesReader(DataSourceReader):
    """A table version's files, `per_task` to a Spark task, read with pyarrow."""

    def __init__(
        self, files: list[str], schema: pa.Schema, per_task: int = 4, file_column: str = ""
    ):
        self.files = files
        self.schema = schema
        self.per_task = max(1, per_task)
        self.file_column = file_column  # also yield each row's file URI in this column

    def partitions(self) -> list[FilesPartition]:
        return files_partitions(self.files, self.per_task) or [FilesPartition([])]

    def read(self, partition: FilesPartition) -> Iterator[pa.RecordBatch]:
        for uri in partition.files:
            for batch in read_file(uri, self.schema):
                if self.file_column:
                    name = pa.array([uri] * batch.num_rows, pa.string())
                    batch = batch.append_column(self.file_column, name)
                yield batch
