"""`lakecurate export-embeddings OUT`: embeddings in clip-retrieval's layout, for autofaiss.

Reads `embeddings` (the rows of one `model_id`) joined with `pairs` (caption, url).
Writes files only, no table:

* `--format npy` (clip-retrieval's `inference` output, what `autofaiss build_index
  --embeddings OUT/img_emb` and `clip-retrieval index` read)::

      OUT/img_emb/img_emb_<i>.npy          (rows, dim) float32 (or --dtype float16)
      OUT/text_emb/text_emb_<i>.npy        same rows, same order
      OUT/metadata/metadata_<i>.parquet    uid, caption, url: row j describes row j

* `--format parquet` (embedding-reader's parquet format, `--file_format parquet
  --embedding_column_name embedding`): `img_emb/img_emb_<i>.parquet` and
  `text_emb/text_emb_<i>.parquet` with columns uid, caption, url, embedding
  (float32 lists), plus the same `metadata/` files.

Files are numbered 0..k-1 with clip-retrieval's zero padding; rows are ordered by
uid. Each executor task writes one file set; `OUT/export.json` (model_id, table
version, counts) is written last and marks a complete export.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lakecurate.curation.models import (
    add_model_arguments,
    apply_model_args,
    model_id,
    resolve_model,
)
from lakecurate.deltaio.lake import Lake
from lakecurate.runtime import jobkit
from lakecurate.runtime.config import Config, replace
from lakecurate.runtime.errors import ConfigError, JobError
from lakecurate.udfs.table_files import filesystem

NAME = "export-embeddings"
HELP = "export embeddings as clip-retrieval npy/parquet files (img_emb/, text_emb/, metadata/)"
NEEDS_SPARK = True
KINDS = ("img_emb", "text_emb")
COLUMNS = {"img_emb": "image_emb", "text_emb": "text_emb"}
METADATA_COLUMNS = ("uid", "caption", "url")
MANIFEST = "export.json"
RESULT_SCHEMA = pa.schema([("part", pa.int32()), ("tmp", pa.string()), ("rows", pa.int64())])

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOptions:
    """Where and how to export; `model_id` defaults to the configured model's id."""

    out: str
    format: str = "npy"  # npy | parquet
    model_id: str = ""
    rows_per_file: int = 100_000  # a task holds one file set: rows x dim x 8 bytes
    dtype: str = "float32"  # npy only: float32 | float16
    overwrite: bool = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="OUT", help="output directory or URI")
    p.add_argument("--format", choices=["npy", "parquet"], default="npy")
    add_model_arguments(p)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--model-id", help="export this exact model_id (see `lakecurate sql`)")
    p.add_argument(
        "--rows-per-file", type=int, default=100_000, help="rows per file set (default 100000)"
    )
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export in OUT")


def apply_args(cfg: Config, args: argparse.Namespace) -> Config:
    """--model/--pretrained/--precision pick the model_id exactly as `embed` names it."""
    cfg = apply_model_args(cfg, args)
    return replace(cfg, model={"precision": args.precision}) if args.precision else cfg


def options_from_args(cfg: Config, args: argparse.Namespace) -> ExportOptions:
    if args.rows_per_file < 1:
        raise ConfigError("--rows-per-file", "must be >= 1")
    return ExportOptions(
        out=args.out,
        format=args.format,
        model_id=args.model_id or model_id(cfg.model),
        rows_per_file=args.rows_per_file,
        dtype=args.dtype,
        overwrite=args.overwrite,
    )


def command(spark, cfg: Config, args: argparse.Namespace) -> int:
    if not args.model_id:
        from lakecurate.deltaio.lake import Lake

        cfg = resolve_model(Lake(cfg.lake.path, cfg.lake.engine), cfg)
    summary = export(spark, cfg, options_from_args(cfg, args))
    if getattr(args, "json", False):
        print(json.dumps(summary))
    else:
        print(
            f"export-embeddings: {summary['rows']} rows of {summary['model_id']} "
            f"in {summary['files']} file set(s) -> {summary['out']}"
        )
    return 0


# --- driver ------------------------------------------------------------------------------


def export(spark, cfg: Config, opts: ExportOptions) -> dict:
    """Write the export; return its manifest (also stored as OUT/export.json)."""
    from pyspark.sql import functions as F

    lake = Lake(cfg.lake.path)
    if not lake.exists("embeddings"):
        raise JobError(f"lake {lake.root} has no `embeddings` table: run `lakecurate embed` first")
    fs, root = filesystem(opts.out)
    _prepare_out(fs, root, opts.overwrite)
    version = lake.version("embeddings")
    emb = lake.read(spark, "embeddings", version).filter(F.col("model_id") == opts.model_id)
    pairs = lake.read(spark, "pairs").select(*METADATA_COLUMNS)
    rows = emb.select("uid", "image_emb", "text_emb").join(pairs, "uid", "left")
    n = rows.count()
    if n == 0:
        raise ConfigError(
            "--model-id", f"no embeddings for {opts.model_id!r}; {_known(lake, spark)}"
        )
    parts = math.ceil(n / opts.rows_per_file)
    rows = rows.repartitionByRange(parts, "uid").sortWithinPartitions("uid")
    write = _task_writer(opts.out, opts.format, opts.dtype)
    done = rows.mapInArrow(write, "part int, tmp string, rows long").collect()
    written = [r["tmp"] for r in sorted(done, key=lambda r: r["part"]) if r["rows"]]
    files = _publish(fs, root, written, opts)
    manifest = {
        "out": opts.out,
        "format": opts.format,
        "model_id": opts.model_id,
        "embeddings_version": version,
        "rows": n,
        "files": len(files),
        "dim": _dim(rows),
        "options": asdict(opts),
    }
    with fs.open_output_stream(f"{root}/{MANIFEST}") as f:
        f.write(json.dumps(manifest, indent=2).encode())
    log.info("export-embeddings: %d rows of %s in %d file sets", n, opts.model_id, len(files))
    return manifest


def _known(lake: Lake, spark) -> str:
    ids = [r[0] for r in lake.read(spark, "embeddings").select("model_id").distinct().collect()]
    return f"model_ids in the lake: {', '.join(sorted(ids)) or 'none'}"


def _dim(rows) -> int:
    from pyspark.sql import functions as F

    first = rows.select(F.size("image_emb").alias("d")).first()
    return int(first["d"]) if first else 0


def _prepare_out(fs: pafs.FileSystem, root: str, overwrite: bool) -> None:
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        raise ConfigError("OUT", f"{root} is a file; give a directory")
    if info.type == pafs.FileType.Directory:
        entries = fs.get_file_info(pafs.FileSelector(root))
        if entries and not overwrite:
            raise ConfigError("OUT", f"{root} is not empty; pass --overwrite to replace an export")
        for e in entries:
            if e.base_name in (*KINDS, "metadata", "_tmp"):
                fs.delete_dir(e.path)
            elif e.base_name == MANIFEST:
                fs.delete_file(e.path)
    fs.create_dir(f"{root}/_tmp", recursive=True)


def _publish(fs: pafs.FileSystem, root: str, written: list[str], opts) -> list[str]:
    """Rename task outputs to contiguous names img_emb_<i> (clip-retrieval's zero padding)."""
    width = int(math.log10(max(1, len(written)))) + 1
    ext = "npy" if opts.format == "npy" else "parquet"
    for kind in (*KINDS, "metadata"):
        fs.create_dir(f"{root}/{kind}", recursive=True)
    names = []
    for i, tmp in enumerate(written):
        num = str(i).zfill(width)
        for kind in KINDS:
            fs.move(f"{root}/_tmp/{tmp}.{kind}.{ext}", f"{root}/{kind}/{kind}_{num}.{ext}")
        fs.move(f"{root}/_tmp/{tmp}.metadata.parquet", f"{root}/metadata/metadata_{num}.parquet")
        names.append(num)
    fs.delete_dir(f"{root}/_tmp")
    return names


# --- executor ----------------------------------------------------------------------------


def _matrix(col: pa.Array, dtype: str) -> np.ndarray:
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(col), -1).astype(dtype, copy=False)


def _write_npy(fs, path: str, table: pa.Table, column: str, dtype: str) -> None:
    buf = io.BytesIO()
    np.save(buf, _matrix(table.column(column).combine_chunks(), dtype))
    with fs.open_output_stream(path) as f:
        f.write(buf.getvalue())


def _write_parquet_emb(fs, path: str, table: pa.Table, column: str, dtype: str) -> None:
    out = table.select(list(METADATA_COLUMNS)).append_column("embedding", table.column(column))
    pq.write_table(out, path, filesystem=fs)


WRITERS: dict[str, Callable] = {"npy": _write_npy, "parquet": _write_parquet_emb}


def _task_writer(out: str, fmt: str, dtype: str):
    """mapInArrow function: write this partition's file set under OUT/_tmp."""
    ext = "npy" if fmt == "npy" else "parquet"

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        part = TaskContext.get().partitionId()
        table = pa.Table.from_batches(list(batches))
        tmp = uuid.uuid4().hex
        if table.num_rows:
            fs, root = filesystem(out)
            for kind in KINDS:
                WRITERS[fmt](fs, f"{root}/_tmp/{tmp}.{kind}.{ext}", table, COLUMNS[kind], dtype)
            meta = table.select(list(METADATA_COLUMNS))
            pq.write_table(meta, f"{root}/_tmp/{tmp}.metadata.parquet", filesystem=fs)
        row = {"part": part, "tmp": tmp, "rows": table.num_rows}
        yield pa.RecordBatch.from_pylist([row], schema=RESULT_SCHEMA)

    return write


build_parser, main = jobkit.entry_points(__name__)


if __name__ == "__main__":
    sys.exit(main())
