"""The executor side of ingest: read one source, validate every record, write the pairs.

`ingest_partition` is the `mapInArrow` function. Its input is a task id per
Spark task (`spark.range`), naming its group of sources, usually one file. Valid records go
straight into new Parquet files of the `pairs` table (`table_files.TableFileWriter`:
uncommitted, so invisible until the driver commits them), so image bytes never
pass through the JVM or a shuffle. What the task returns is small
(`OUTPUT_SCHEMA.kind`): one `pair` row per written record (uid, source key and
the file holding it), `reject` rows (reason + detail), one `source` row per
source with its ledger status and counts, and one `file` row per written file
(its add-action). Validation is `validate_record`, a plain function tests call
without Spark.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

from lakecurate.schemas import TABLES
from lakecurate.udfs.images import ImageInfo, ImageLimits, Rejected, probe_image, reencode
from lakecurate.udfs.readers.base import READERS, RawRecord, ReaderOptions, SourceFile
from lakecurate.udfs.table_files import (
    FileWritten,
    TableFileWriter,
    delete_table_files,
    filesystem,
)
from lakecurate.udfs.text import make_uid

OUTPUT_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),  # pair | reject | source | file
        ("uid", pa.string()),
        ("source_uri", pa.string()),
        ("source_key", pa.string()),
        ("file_path", pa.string()),  # pair: the file holding it; file: the file
        ("file_stats", pa.string()),  # file: Delta stats JSON
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("checksum", pa.string()),
        ("format", pa.string()),
        ("size_bytes", pa.int64()),
        ("status", pa.string()),
        ("rows_ok", pa.int64()),
        ("rows_rejected", pa.int64()),
        ("error", pa.string()),
    ]
)
# Rejects that mean the source itself broke: later records were never seen.
DAMAGE_REASONS = ("truncated_tar", "truncated_source", "unreadable_source")
_FLUSH_BYTES = 32 * 1024 * 1024
PAIRS_SCHEMA = TABLES["pairs"].schema
_FILE_BYTES = 512 * 1024 * 1024  # a task starts a new pairs file after this much image data


@dataclass(frozen=True)
class IngestOptions:
    """Everything an ingest task needs, picklable (built from `IngestConfig`)."""

    reader: ReaderOptions = field(default_factory=ReaderOptions)
    limits: ImageLimits = field(default_factory=ImageLimits)
    max_caption_chars: int = 4096
    resize_max_side: int = 0
    resize_quality: int = 95


FILE_HASH = "xxh3_128"  # checksum of a source file: change detection, not security


@dataclass(frozen=True)
class Ledger:
    """What the `sources` ledger tells an ingest task: the (uri, checksum) pairs already
    ingested, and the uris it knows by a sha256 checksum (runs before xxh3 checksums),
    which keep being checksummed that way so that they still match."""

    done: frozenset[tuple[str, str]] = frozenset()
    sha256_uris: frozenset[str] = frozenset()

    def algorithm(self, uri: str) -> str:
        return "sha256" if uri in self.sha256_uris else FILE_HASH

    def holds(self, src: SourceFile) -> bool:
        return (src.uri, src.checksum) in self.done


class RecordRejected(Rejected):
    """A record that fails validation outside its image (caption, key, pairing)."""


def _caption(rec: RawRecord, opts: IngestOptions) -> str:
    raw = rec.caption
    if raw is None:
        raise RecordRejected("missing_caption", f"{rec.key!r} has an image but no caption")
    if isinstance(raw, bytes | bytearray):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as e:
            raise RecordRejected("caption_not_utf8", f"invalid UTF-8 at byte {e.start}") from None
    if not isinstance(raw, str):
        raise RecordRejected("bad_record", f"the caption is a {type(raw).__name__}, not text")
    text = raw.strip()
    if not text:
        raise RecordRejected("empty_caption", "the caption is empty or whitespace")
    if len(text) > opts.max_caption_chars:
        raise RecordRejected(
            "caption_too_long",
            f"{len(text)} chars > ingest.max_caption_chars={opts.max_caption_chars}",
        )
    return text


def _image(data: bytes, opts: IngestOptions) -> tuple[bytes, ImageInfo, dict]:
    """Probe (and, with a resize policy, re-encode) the image; extra meta for the row."""
    info = probe_image(data, opts.limits)
    if opts.resize_max_side and max(info.width, info.height) > opts.resize_max_side:
        orig = {"original_width": info.width, "original_height": info.height}
        data = reencode(data, info, opts.resize_max_side, opts.resize_quality)
        return data, probe_image(data, opts.limits), orig
    return data, info, {}


def validate_record(rec: RawRecord, opts: IngestOptions) -> dict:
    """The `pairs` columns of a valid record, or raise RecordRejected."""
    if rec.reject is not None:
        raise RecordRejected(*rec.reject)
    if rec.image is None:
        raise RecordRejected("missing_image", f"{rec.key!r} has no image")
    caption = _caption(rec, opts)
    data, info, extra = _image(rec.image, opts)
    sha = hashlib.sha256(data).hexdigest()
    meta = {**(rec.meta or {}), **extra}
    return {
        "uid": make_uid(sha, caption),
        "image_sha256": sha,
        "caption": caption,
        "image": data,
        "image_format": info.format,
        "width": info.width,
        "height": info.height,
        "url": rec.url,
        "meta_json": json.dumps(meta, default=str, sort_keys=True) if meta else None,
    }


@dataclass
class SourceStats:
    """Counts of one source while it is read; becomes its `source` row."""

    src: SourceFile
    ok: int = 0
    rejected: int = 0
    damage: str | None = None

    def row(self) -> dict:
        status = "ok" if self.damage is None else ("partial" if self.ok else "failed")
        return {
            "kind": "source",
            "source_uri": self.src.uri,
            "checksum": self.src.checksum,
            "format": self.src.format,
            "size_bytes": self.src.size_bytes,
            "status": status,
            "rows_ok": self.ok,
            "rows_rejected": self.rejected,
            "error": self.damage,
        }


def _records(src: SourceFile, opts: IngestOptions) -> Iterator[RawRecord]:
    """The reader's records; an unexpected failure ends the source as one reject."""
    n = 0
    try:
        for rec in READERS.get(src.format)(src, opts.reader):
            n += 1
            yield rec
    except Exception as e:  # I/O or a reader bug: the job goes on, the source is marked
        detail = f"reading stopped after {n} records: {type(e).__name__}: {e}"
        yield RawRecord(key=f"@record{n}", reject=("unreadable_source", detail))


def ingest_source(src: SourceFile, opts: IngestOptions) -> Iterator[dict]:
    """Output rows (pairs and rejects, then the source row) of one source."""
    stats = SourceStats(src)
    seen: set[str] = set()
    for rec in _records(src, opts):
        base = {"source_uri": src.uri, "source_key": rec.key}
        try:
            if rec.key in seen and rec.reject is None:
                raise RecordRejected("duplicate_key", f"key {rec.key!r} seen before in this source")
            seen.add(rec.key)
            row = validate_record(rec, opts)
        except Rejected as e:  # the record's or its image's check
            stats.rejected += 1
            if e.reason in DAMAGE_REASONS and stats.damage is None:
                stats.damage = f"{e.reason}: {e.detail}"
            yield {**base, "kind": "reject", "reason": e.reason, "detail": e.detail}
            continue
        stats.ok += 1
        yield {**base, **row, "kind": "pair"}
    yield stats.row()


class ArrowBatcher:
    """Collects row dicts into RecordBatches of `schema` (by rows or image bytes)."""

    def __init__(self, max_rows: int, schema: pa.Schema = OUTPUT_SCHEMA):
        self.max_rows = max_rows
        self.schema = schema
        self._reset()

    def _reset(self) -> None:
        self.cols: dict[str, list] = {n: [] for n in self.schema.names}
        self.n = 0
        self.nbytes = 0

    def add(self, row: dict) -> pa.RecordBatch | None:
        for name, values in self.cols.items():
            values.append(row.get(name))
        self.n += 1
        self.nbytes += len(row.get("image") or b"")
        if self.n >= self.max_rows or self.nbytes >= _FLUSH_BYTES:
            return self.flush()
        return None

    def flush(self) -> pa.RecordBatch | None:
        if self.n == 0:
            return None
        batch = pa.RecordBatch.from_pydict(self.cols, schema=self.schema)
        self._reset()
        return batch


def task_sources(batch: pa.RecordBatch, groups: list[list[SourceFile]]) -> Iterator[SourceFile]:
    """The sources of the task ids in `batch` (a `spark.range` column `id`)."""
    for i in batch.column("id").to_pylist():
        yield from groups[i]


@dataclass(frozen=True)
class PairsTarget:
    """Where an ingest run writes its pairs files, and the run columns it stamps on them."""

    table_uri: str
    run_id: str
    ingested_at: datetime


class PairsSink:
    """Valid records of one task -> `pairs` files (a new file after `_FILE_BYTES`)."""

    def __init__(self, target: PairsTarget, batch_rows: int):
        self.target = target
        self.batcher = ArrowBatcher(batch_rows, PAIRS_SCHEMA)
        self.written: list[FileWritten] = []
        self._bytes = 0
        self._new_file()

    def _new_file(self) -> None:
        self.file = TableFileWriter(self.target.table_uri, PAIRS_SCHEMA, self.target.run_id)

    def add(self, row: dict) -> str:
        """Queue a pair row; return the name of the file it goes to."""
        name = self.file.name
        row = {**row, "run_id": self.target.run_id, "ingested_at": self.target.ingested_at}
        if (batch := self.batcher.add(row)) is not None:
            self._write(batch)
        return name

    def _write(self, batch: pa.RecordBatch) -> None:
        self.file.write_batch(batch)
        self._bytes += batch.column("image").nbytes
        if self._bytes >= _FILE_BYTES:
            self._roll()

    def _roll(self) -> None:
        if (done := self.file.close()).num_rows:
            self.written.append(done)
        self._bytes = 0
        self._new_file()

    def close(self) -> list[FileWritten]:
        if (batch := self.batcher.flush()) is not None:
            self.file.write_batch(batch)
        self._roll()
        return self.written

    def discard(self) -> None:
        """A failed task: remove every file it wrote (none was committed)."""
        self.file.discard()
        fs, root = filesystem(self.target.table_uri)
        delete_table_files(fs, root, [f.path for f in self.written])


def _file_row(f: FileWritten) -> dict:
    return {
        "kind": "file",
        "file_path": f.path,
        "size_bytes": f.size,
        "rows_ok": f.num_rows,
        "file_stats": f.stats,
    }


def ingest_partition(
    batches: Iterator[pa.RecordBatch],
    groups: list[list[SourceFile]],
    opts: IngestOptions,
    target: PairsTarget,
    ledger: Ledger = Ledger(),
) -> Iterator[pa.RecordBatch]:
    """`mapInArrow` body over `spark.range(len(groups))`: the sources of each task id;
    pairs to files, the rest returned. (The task list travels in the closure, so no
    Python-side input rows are needed: each task starts without a round trip.)

    A source without a checksum (a uri the ledger does not know) is checksummed here
    first, with the algorithm the `ledger` uses for its uri."""
    out = ArrowBatcher(opts.reader.batch_rows)
    sink = PairsSink(target, opts.reader.batch_rows)
    try:
        for batch in batches:
            for src in task_sources(batch, groups):
                if not src.checksum:
                    src = checksum_source(src, ledger.algorithm(src.uri))
                for row in ingest_source(src, opts):
                    if row["kind"] == "pair":
                        path = sink.add(row)
                        row = {k: row[k] for k in _PAIR_KEYS} | {"file_path": path}
                    if (ready := out.add(row)) is not None:
                        yield ready
        for f in sink.close():
            if (ready := out.add(_file_row(f))) is not None:
                yield ready
    except BaseException:
        sink.discard()
        raise
    if (ready := out.flush()) is not None:
        yield ready


_PAIR_KEYS = ("kind", "uid", "source_uri", "source_key")


def drop_rows(item: tuple[str, list[tuple[str, str]]], table_uri: str, tag: str) -> dict:
    """Rewrite one uncommitted pairs file without the rows keyed (source_uri, source_key).

    Executor side. Returns {"old": path, "new": FileWritten or None (nothing left),
    "dropped": n}; the old file is deleted once the new one is complete.
    """
    import pyarrow.parquet as pq

    path, keys = item
    fs, root = filesystem(table_uri)
    table = pq.read_table(f"{root}/{path}", filesystem=fs, schema=PAIRS_SCHEMA)
    drop = {tuple(k) for k in keys}
    ids = zip(
        table.column("source_uri").to_pylist(), table.column("source_key").to_pylist(), strict=True
    )
    keep = pa.array([k not in drop for k in ids], pa.bool_())
    kept = table.filter(keep)
    new = None
    if kept.num_rows:
        w = TableFileWriter(table_uri, PAIRS_SCHEMA, tag)
        try:
            for batch in kept.to_batches():
                w.write_batch(batch)
            new = w.close()
        except BaseException:
            w.discard()
            raise
    delete_table_files(fs, root, [path])
    return {"old": path, "new": new, "dropped": table.num_rows - kept.num_rows}


def checksum_source(src: SourceFile, algorithm: str = FILE_HASH) -> SourceFile:
    """The source with its checksum and size: a hash of its bytes (`algorithm`, xxh3_128
    by default, at several GB/s; or sha256); a folder: sha256 of its listing."""
    import xxhash

    from lakecurate.udfs.readers.base import open_binary
    from lakecurate.udfs.readers.folder import list_dir

    try:
        if src.format == "folder":
            h = hashlib.sha256()
            listing = list_dir(src.uri)
            for name, size, mtime in listing:
                h.update(f"{name}\0{size}\0{mtime}\n".encode())
            return SourceFile(
                src.uri, src.format, "list-sha256:" + h.hexdigest(), sum(s for _, s, _ in listing)
            )
        digest = xxhash.xxh3_128 if algorithm == "xxh3_128" else algorithm
        with open_binary(src.uri) as f:
            h = hashlib.file_digest(f, digest)
            size = f.tell()
        return SourceFile(src.uri, src.format, f"{algorithm}:{h.hexdigest()}", size)
    except OSError as e:
        return SourceFile(src.uri, src.format, f"unreadable:{type(e).__name__}", 0)
