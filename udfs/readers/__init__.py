"""Source readers for ingest: a registry of format -> reader (executor-safe).

`READERS.get(fmt)(source_file, reader_options)` yields `RawRecord`s:
`webdataset` (tar / tar.gz, streamed), `folder` (sidecar .txt or COCO captions),
`parquet` and `jsonl` (image bytes or paths). `task` validates records on
executors. The driver side (expanding SOURCE arguments into units of work, and
downloading `urls` lists with img2dataset) lives in `lakecurate.sources`.
"""

from lakecurate.udfs.readers import folder, table, tar  # noqa: F401  (register readers)
from lakecurate.udfs.readers.base import (
    READERS,
    RawRecord,
    ReaderOptions,
    SourceFile,
)

__all__ = ["READERS", "RawRecord", "ReaderOptions", "SourceFile"]
