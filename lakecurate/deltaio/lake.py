"""The lake: Delta tables written from Spark and committed with delta-rs.

Delta's Spark jars cannot be fetched on the machines this project targets, so
the table layer speaks the Delta protocol through `deltalake` and keeps Spark for
compute (DESIGN.md, "Delta without Delta's jars"):

* write: `DeltaCommitDataSource` is a PySpark Python data source. Each executor
  task streams its Arrow batches into one Parquet file inside the table directory
  (under a temporary name, renamed when the task finishes) and returns the file's
  add-action. The driver-side `commit()` checks every file and commits them all in
  ONE Delta transaction, with the job, run id and config hash in the commit's
  metadata. `abort()` removes the files of finished tasks; a failed task leaves at
  most an `.inprogress` file that no table version references.
* read: the file list of a version comes from delta-rs; Spark reads the Parquet
  files natively with the table's schema.

Where a cluster does have Delta's jars (Databricks, EMR), `lake.engine: delta-spark`
writes and reads through delta-spark (`format("delta")`, `versionAsOf`,
`replaceWhere`, commit metadata in `userMetadata`) behind the same `Lake` methods.
Tables written either way are plain Delta and read the same way by delta-rs.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
from pyspark.sql.datasource import DataSource, DataSourceArrowWriter, WriterCommitMessage

from lakecurate.deltaio import conflicts
from lakecurate.deltaio.conflicts import ReadScope
from lakecurate.runtime.errors import JobError
from lakecurate.schemas import TABLES, TableSpec
from lakecurate.udfs.table_files import (
    FileWritten,
    TableFileWriter,
    delete_table_files,
    filesystem,
)

log = logging.getLogger(__name__)

FORMAT = "lakecurate_delta"
FILES_FORMAT = "lakecurate_files"
META_PREFIX = "lakecurate."
VOLATILE_COLUMNS = ("run_id", "ingested_at", "rejected_at", "embedded_at", "created_at")


# --- executor side: lakecurate.udfs.table_files writes the files ------------------------


@dataclass
class TaskFile(FileWritten, WriterCommitMessage):
    """A task's `FileWritten`, as the commit message Spark hands to the driver."""


class _TaskWriter(DataSourceArrowWriter):
    def __init__(self, table_uri: str, schema: pa.Schema, options: dict[str, str]):
        self.table_uri = table_uri
        self.schema = schema
        self.options = options

    def write(self, iterator: Iterator[pa.RecordBatch]) -> FileWritten:
        out = TableFileWriter(self.table_uri, self.schema)
        try:
            for batch in iterator:
                out.write_batch(batch)
            return TaskFile(**asdict(out.close()))
        except BaseException:
            out.discard()
            raise

    def commit(self, messages: list[FileWritten | None]) -> None:
        files = [m for m in messages if m is not None and m.num_rows > 0]
        read = self.options.get("read_version", "")
        try:
            self._commit(files, read)
        except BaseException:  # a conflict, or an outcome the log must tell
            discard_files(self.table_uri, [f.path for f in files])
            raise

    def _commit(self, files: list[FileWritten], read: str) -> None:
        commit_files(
            self.table_uri,
            self.schema,
            files,
            mode=self.options.get("mode", "append"),
            remove=json.loads(self.options.get("remove", "[]")),
            metadata=json.loads(self.options.get("metadata", "{}")),
            read_version=int(read) if read else None,
            scope=ReadScope(**json.loads(self.options.get("scope", "{}"))),
            txn=tuple(json.loads(self.options["txn"])) if self.options.get("txn") else None,
        )

    def abort(self, messages: list[FileWritten | None]) -> None:
        paths = [m.path for m in messages if m is not None and m.path]
        discard_files(self.table_uri, paths)


def _is_file(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


def discard_files(table_uri: str, paths: list[str]) -> None:
    """Delete the written files that no table version references. A commit whose
    outcome is unknown (a timeout after the log entry was written) is resolved by
    reading the log: files it committed are never deleted."""
    from deltalake import DeltaTable

    committed: set[str] = set()
    if paths and DeltaTable.is_deltatable(table_uri):
        actions = DeltaTable(table_uri).get_add_actions(flatten=False)
        committed = set(pa.table(actions).column("path").to_pylist())
    if committed & set(paths):
        log.warning("%s: the failed write's files are in the log (committed); kept", table_uri)
    fs, root = filesystem(table_uri)
    delete_table_files(fs, root, [p for p in paths if p not in committed])


class DeltaCommitDataSource(DataSource):
    """`df.write.format("lakecurate_delta").option("table", name).save(uri)`."""

    @classmethod
    def name(cls) -> str:
        return FORMAT

    def writer(self, schema, overwrite: bool) -> _TaskWriter:
        table = self.options["table"]
        uri = self.options["path"]
        opts = dict(self.options)
        if overwrite:
            opts["mode"] = "overwrite"
        return _TaskWriter(uri, TABLES[table].schema, opts)


class TableFilesDataSource(DataSource):
    """`spark.read.format("lakecurate_files").option("table", T).option("files", JSON)`:
    the given Parquet files of table T (or of any Parquet files, with option "schema":
    an Arrow schema, serialized and base64-encoded), read by pyarrow in Python tasks
    (`lakecurate.udfs.table_reader`): no JVM filesystem connector needed."""

    @classmethod
    def name(cls) -> str:
        return FILES_FORMAT

    def _arrow_schema(self) -> pa.Schema:
        if self.options.get("schema"):
            import base64

            raw = base64.b64decode(self.options["schema"])
            schema = pa.ipc.read_schema(pa.py_buffer(raw))
        else:
            schema = TABLES[self.options["table"]].schema
        columns = json.loads(self.options.get("columns", "[]"))
        return pa.schema([schema.field(c) for c in columns]) if columns else schema

    def schema(self):
        from pyspark.sql.pandas.types import from_arrow_schema

        schema = self._arrow_schema()
        if self.options.get("file_column"):
            schema = schema.append(pa.field(self.options["file_column"], pa.string()))
        return from_arrow_schema(schema)

    def reader(self, schema):
        from lakecurate.udfs.table_reader import TableFilesReader

        files = json.loads(self.options["files"])
        per_task = int(self.options.get("files_per_task", "4"))
        file_column = self.options.get("file_column", "")
        return TableFilesReader(files, self._arrow_schema(), per_task, file_column)


def read_parquet_files(spark, uris: list[str], schema: pa.Schema, file_column: str = ""):
    """Parquet files that are not a lake table (e.g. a published version's shard
    indexes) as a DataFrame with `schema`: Spark's reader where its JVM can open the
    URIs' scheme, else pyarrow in Python tasks. `file_column`: each row's file URI."""
    if uris and "://" in uris[0] and not _jvm_reads(spark, spark_uri(uris[0])):
        import base64

        blob = base64.b64encode(schema.serialize().to_pybytes()).decode()
        return (
            spark.read.format(FILES_FORMAT)
            .option("schema", blob)
            .option("files", json.dumps(uris))
            .option("file_column", file_column)
            .load()
        )
    from pyspark.sql.pandas.types import from_arrow_schema

    return _spark_parquet(spark, uris, from_arrow_schema(schema), file_column)


def _spark_parquet(spark, uris: list[str], sschema, file_column: str = ""):
    """Spark's own Parquet reader over `uris`; `file_column`: each row's file, from the
    scan's metadata column (input_file_name() can be "" once columns are pruned)."""
    from pyspark.sql import functions as F

    paths = [spark_uri(u) for u in uris]
    if all(p.startswith("file:") or "://" not in p for p in paths):
        # a local table's files are listed on the driver: past 32 paths Spark would run
        # a job to stat them, which costs more than the stats (0.5-0.8 s a read)
        with _sql_conf(spark, LISTING_THRESHOLD, str(len(paths) + 1)):
            df = spark.read.schema(sschema).parquet(*paths)
    else:
        df = spark.read.schema(sschema).parquet(*paths)
    return df.withColumn(file_column, F.col("_metadata.file_path")) if file_column else df


LISTING_THRESHOLD = "spark.sql.sources.parallelPartitionDiscovery.threshold"


@contextmanager
def _sql_conf(spark, key: str, value: str):
    """A Spark SQL setting for the duration of the block (the previous value after)."""
    before = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def _jvm_reads(spark, uri: str) -> bool:
    """Whether Spark's JVM has a Hadoop filesystem for `uri`'s scheme (s3a needs hadoop-aws)."""
    if "://" not in uri or uri.startswith("file:"):
        return True
    try:
        jvm = spark.sparkContext._jvm
        conf = spark.sparkContext._jsc.hadoopConfiguration()
        jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(uri.split("://", 1)[0], conf)
        return True
    except Exception:
        return False


# --- driver side ------------------------------------------------------------------------


def commit_files(
    table_uri: str,
    schema: pa.Schema,
    files: list[FileWritten],
    mode: str = "append",
    remove: list[dict] | None = None,
    metadata: dict[str, Any] | None = None,
    read_version: int | None = None,
    scope: ReadScope | None = None,
    txn: tuple[str, int] | None = None,
) -> None:
    """Check that every file exists, then commit adds (and removes) in one transaction.

    `read_version`/`scope`: the table version the write read and what it read of it;
    a concurrent commit that changed that raises ConflictError (conflicts.py).
    `txn`: (run id, per-run commit number), recorded as a Delta application
    transaction, so a commit that is retried, or whose outcome was unknown, is applied
    once.
    """
    from deltalake import CommitProperties, DeltaTable
    from deltalake import Schema as DeltaSchema
    from deltalake.transaction import (
        AddAction,
        RemoveAction,
        Transaction,
        create_table_with_add_actions,
    )

    fs, root = filesystem(table_uri)
    now = int(time.time() * 1000)
    adds = []
    for f in files:
        info = fs.get_file_info(f"{root}/{f.path}")
        if info.type != pafs.FileType.File or info.size != f.size:
            raise JobError(
                f"{table_uri}: written file {f.path} is missing or changed; not committed"
            )
        adds.append(AddAction(f.path, f.size, {}, now, True, f.stats))
    removes = [RemoveAction(r["path"], True, now, r.get("size")) for r in (remove or [])]
    txns = [Transaction(txn[0], txn[1], now)] if txn else None
    props = CommitProperties(custom_metadata=metadata or {}, app_transactions=txns)
    if not DeltaTable.is_deltatable(table_uri):
        create_table_with_add_actions(
            table_uri, DeltaSchema.from_arrow(schema), adds, mode="error", commit_properties=props
        )
        return
    if not adds and not removes and mode == "append":
        return
    scope = scope or (ReadScope.whole() if mode == "overwrite" else ReadScope.nothing())
    latest = DeltaTable(table_uri).version()
    base = conflicts.check(table_uri, latest if read_version is None else read_version, scope)
    dt = DeltaTable(table_uri, version=base)
    if txn and conflicts.already_committed(dt, *txn):
        log.info("%s: transaction %s/%d is already in the log", table_uri, *txn)
        return
    add_missing_columns(dt, schema)
    try:
        dt.create_write_transaction(
            adds + removes, mode, DeltaSchema.from_arrow(schema), commit_properties=props
        )
    except Exception:
        if txn and conflicts.already_committed(DeltaTable(table_uri), *txn):
            log.warning("%s: the commit raised but its transaction is in the log", table_uri)
            return
        raise


def add_missing_columns(dt, schema: pa.Schema) -> None:
    """Add the table spec's nullable columns that a table made by an older lakecurate
    lacks (e.g. `signals.thumb`), so Delta readers see them; old files read as null."""
    from deltalake import Field
    from deltalake import Schema as DeltaSchema

    have = {f.name for f in dt.schema().fields}
    new = [f for f in schema if f.name not in have]
    if not new:
        return
    if any(not f.nullable for f in new):
        raise JobError(
            f"{dt.table_uri}: columns {[f.name for f in new]} are missing and not nullable; "
            "this lake needs a migration"
        )
    fields = DeltaSchema.from_arrow(pa.schema(new)).fields
    dt.alter.add_columns([Field(f.name, f.type, nullable=True) for f in fields])


@dataclass(frozen=True)
class Commit:
    """Who writes a commit: stored under `lakecurate.*` keys in its metadata."""

    job: str
    run_id: str
    config_hash: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    _txns: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    _writer: str = field(default_factory=lambda: uuid.uuid4().hex[:8], compare=False, repr=False)

    def next_txn(self, table: str) -> tuple[str, int]:
        """(app id, version) of this writer's next commit to `table`: the Delta `txn`.
        The app id is the run id plus this Commit's own tag, so two Commit objects that
        share a run id never mistake each other's commits for their own."""
        self._txns[table] = self._txns.get(table, 0) + 1
        return f"lakecurate:{self.run_id}:{self._writer}", self._txns[table]

    def metadata(self, **more: Any) -> dict[str, Any]:
        meta = {"job": self.job, "run_id": self.run_id, "config_hash": self.config_hash}
        meta.update(self.extra)
        meta.update(more)
        return {META_PREFIX + k: v for k, v in meta.items()}


ENGINES = ("deltalake", "delta-spark")
SMALL_APPEND = 20_000  # rows up to which `Lake.append_new` appends from the driver
# key columns holding hashes: file statistics cannot prune lookups by them
HASHED_KEYS = ("uid",)


class Lake:
    """A directory (or object-store prefix) of Delta tables named in `schemas.TABLES`.

    `engine`: "deltalake" (Spark writes files, delta-rs commits) or "delta-spark"
    (Delta's own Spark data source, where its jars are on the classpath).
    """

    def __init__(self, root: str, engine: str = "deltalake", read_path: str = "auto"):
        if engine not in ENGINES:
            raise JobError(f"unknown lake engine {engine!r}; engines: {', '.join(ENGINES)}")
        self.root = root.rstrip("/")
        self.engine = engine
        self.read_path = read_path
        self._arrow: bool | None = None

    def reads_with_arrow(self, spark) -> bool:
        """Whether Spark reads table files with pyarrow tasks (`TableFilesDataSource`)
        instead of its own Parquet reader: `lake.read_path`, where `auto` means arrow
        only for an object store the JVM has no filesystem connector for."""
        if self._arrow is None:
            if self.read_path != "auto":
                self._arrow = self.read_path == "arrow"
            else:
                scheme = self.root.split("://", 1)[0] if "://" in self.root else "file"
                self._arrow = scheme != "file" and not _jvm_reads(spark, spark_uri(self.root))
        return self._arrow

    def uri(self, table: str) -> str:
        return f"{self.root}/{table}"

    @staticmethod
    def spec(table: str) -> TableSpec:
        if table not in TABLES:
            raise JobError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
        return TABLES[table]

    def exists(self, table: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.uri(table))

    def delta(self, table: str, version: int | str | None = None):
        from deltalake import DeltaTable

        if not self.exists(table):
            raise JobError(f"table {table!r} does not exist yet in lake {self.root}")
        return DeltaTable(self.uri(table), version=version)

    def version(self, table: str) -> int | None:
        return self.delta(table).version() if self.exists(table) else None

    def versions(self) -> dict[str, int]:
        return {t: v for t in TABLES if (v := self.version(t)) is not None}

    def ensure(self, table: str, commit: Commit) -> int:
        """Create `table` empty if it does not exist; return its version."""
        if not self.exists(table):
            commit_files(self.uri(table), self.spec(table).schema, [], metadata=commit.metadata())
        return self.version(table)

    # -- reads ----------------------------------------------------------------------------

    def read(
        self, spark, table: str, version: int | str | None = None, columns: list[str] | None = None
    ):
        """The table at `version` (int, ISO timestamp, or None for the latest) as a
        DataFrame; `columns`: only these (the arrow read path cannot prune otherwise)."""
        df = self._read(spark, table, version, columns)
        return df.select(*columns) if columns else df

    def _read(self, spark, table: str, version, columns: list[str] | None):
        spec = self.spec(table)
        sschema = spec.spark_schema()
        if version is None and not self.exists(table):
            return spark.createDataFrame([], sschema)
        if self.engine == "delta-spark":
            return _delta_spark_read(spark, self.uri(table), version)
        dt = self.delta(table)
        if isinstance(version, str):
            from datetime import datetime

            dt.load_as_version(datetime.fromisoformat(version))
        elif version is not None:
            dt.load_as_version(int(version))
        if not dt.file_uris():
            return spark.createDataFrame([], sschema)
        return self.read_files(spark, table, dt.file_uris(), columns)

    def read_files(
        self,
        spark,
        table: str,
        uris: list[str],
        columns: list[str] | None = None,
        file_column: str = "",
    ):
        """The rows of some of `table`'s files (absolute URIs), by the lake's read path;
        `file_column`: also each row's file URI, as delta-rs lists it."""
        if self.reads_with_arrow(spark):
            return (
                spark.read.format(FILES_FORMAT)
                .option("table", table)
                .option("files", json.dumps(uris))
                .option("columns", json.dumps(columns or []))
                .option("file_column", file_column)
                .load()
            )
        df = _spark_parquet(spark, uris, self.spec(table).spark_schema(), file_column)
        if columns:
            df = df.select(*columns, *([file_column] if file_column else []))
        return df

    def history(self, table: str) -> list[dict[str, Any]]:
        rows = []
        for h in self.delta(table).history():
            h = {**_user_metadata(h), **h}
            rows.append(
                {
                    "version": h.get("version"),
                    "timestamp": h.get("timestamp"),
                    "operation": h.get("operation"),
                    **{k[len(META_PREFIX) :]: v for k, v in h.items() if k.startswith(META_PREFIX)},
                }
            )
        return rows

    def count(self, table: str) -> int:
        if not self.exists(table):
            return 0
        return sum(int(a.get("num_records") or 0) for a in self.add_actions(table))

    def add_actions(self, table: str, version: int | None = None) -> list[dict[str, Any]]:
        """The files of `table` (at `version`, default latest) with flattened stats
        (`min.<col>`, `max.<col>`)."""
        return pa.table(self.delta(table, version).get_add_actions(flatten=True)).to_pylist()

    def changes_since(
        self, table: str, version: int | None, until: int | None = None
    ) -> tuple[int, list[str], list[str]] | None:
        """(the version `until`, default the latest; URIs of the files it holds that
        `version` lacks; URIs of the files `version` holds that it lacks): the rows of
        the first list minus those of the second are what changed.

        None when that cannot be told: no table or no `version`, `version` can no longer
        be loaded (its log was cleaned up), or a removed file is gone from storage (a
        vacuum). Callers then read the whole table instead.
        """
        if version is None or not self.exists(table):
            return None
        now = self.delta(table, until)
        try:
            then = self.delta(table, version)
        except Exception as e:  # deltalake raises its own error types for a lost version
            log.info("%s@%s cannot be loaded (%s): no diff from the log", table, version, e)
            return None
        before, current = then.file_uris(), set(now.file_uris())
        removed = [u for u in before if u not in current]
        if not all(_is_file(u) for u in removed):
            return None
        held = set(before)
        return now.version(), [u for u in now.file_uris() if u not in held], removed

    def added_since(self, table: str, version: int | None) -> tuple[int | None, list[str] | None]:
        """(latest version, URIs of its files that `table@version` lacks) when the table
        has only gained files since `version` (appends): the files of the rows added.
        The list is None when files were also removed since (a rewrite, a compaction) or
        `changes_since` cannot tell; callers then read the whole table."""
        if not self.exists(table):
            return None, None
        changes = self.changes_since(table, version)
        if changes is None or changes[2]:
            return self.version(table), None
        return changes[0], changes[1]

    def distinct_values(self, table: str, column: str) -> list:
        """The values `column` takes in `table`, sorted. From the files' min/max stats
        when every file holds one value (embed writes one model per file); otherwise
        from a read of that one column."""
        if not self.exists(table):
            return []
        actions = self.add_actions(table)
        bounds = [(a.get(f"min.{column}"), a.get(f"max.{column}")) for a in actions]
        if all(lo is not None and lo == hi for lo, hi in bounds):
            return sorted({lo for lo, _ in bounds})
        import pyarrow.compute as pc

        col = self.delta(table).to_pyarrow_dataset().to_table(columns=[column]).column(0)
        return sorted(v for v in pc.unique(col).to_pylist() if v is not None)

    # -- writes ---------------------------------------------------------------------------

    def write(
        self,
        df,
        table: str,
        commit: Commit,
        mode: str = "append",
        remove: list[dict] | None = None,
        read_version: int | None = None,
        scope: ReadScope | None = None,
        **metadata: Any,
    ) -> int:
        """Write `df` to `table` in one Delta commit; return the table's version after it.

        `read_version`/`scope`: the version the caller read and what it read of it
        (default: the version now, and the whole table for an overwrite, nothing for
        an append); a concurrent commit that changed that raises ConflictError."""
        spec = self.spec(table)
        df = df.select(*spec.columns)
        if self.engine == "delta-spark":
            _delta_spark_write(df, self.uri(table), mode, commit.metadata(**metadata))
            return self.version(table)
        if read_version is None:
            read_version = self.version(table)
        if read_version is None:
            read_version = -1  # absent: a table created meanwhile is a concurrent change
        scope = scope or (ReadScope.whole() if mode == "overwrite" else ReadScope.nothing())
        writer = (
            df.write.format(FORMAT)
            .mode("overwrite" if mode == "overwrite" else "append")
            .option("table", table)
            .option("remove", json.dumps(remove or []))
            .option("metadata", json.dumps(commit.metadata(**metadata), default=str))
            .option("read_version", "" if read_version is None else str(read_version))
            .option("scope", json.dumps(asdict(scope), default=str))
            .option("txn", json.dumps(commit.next_txn(table)))
        )
        try:
            writer.save(self.uri(table))
        except Exception as e:  # the commit runs in a Python worker: its error comes wrapped
            said = _raised(e, "ConflictError")
            if said is not None:
                raise conflicts.ConflictError(said) from None
            raise
        if not self.exists(table):  # nothing written to a new table: still create it
            self.ensure(table, commit)
        return self.version(table)

    def append_new(self, df, table: str, commit: Commit, **metadata: Any) -> tuple[int, int]:
        """Append the rows of `df` whose key is not in the table yet; return (version, rows).

        At most `SMALL_APPEND` rows (a nightly increment) of a table keyed by uid are
        collected and appended from the driver (`append_new_rows`, present keys looked up
        by uid); more, or other tables, are matched against the table and written by Spark.
        """
        spec = self.spec(table)
        df = df.select(*spec.columns).persist()
        try:
            n = df.count()
            if n == 0:
                return self.ensure(table, commit), 0
            spark = self.spark_of(df)
            if n <= SMALL_APPEND and self.engine == "deltalake" and "uid" in spec.key:
                rows = df.toArrow()
                return self.append_new_rows(spark, rows, table, commit, "uid", **metadata)
            new = df.dropDuplicates(list(spec.key))
            read = self.version(table)
            if read is not None:
                current = self.read(spark, table, read).select(*spec.key)
                new = new.join(current, on=list(spec.key), how="left_anti")
            new = new.persist()
            try:
                n = new.count()
                if n == 0:
                    return self.ensure(table, commit), 0
                return self.write(
                    new,
                    table,
                    commit,
                    read_version=-1 if read is None else read,
                    scope=ReadScope.keys(),
                    rows_added=n,
                    **metadata,
                ), n
            finally:
                new.unpersist()
        finally:
            df.unpersist()

    def append_new_rows(
        self,
        spark,
        rows: pa.Table,
        table: str,
        commit: Commit,
        within: str | None = None,
        **metadata: Any,
    ) -> tuple[int, int]:
        """`append_new` for a small Arrow table built on the driver. `within`: a key
        column; only existing rows sharing one of its values with `rows` are read to
        find present keys: on the driver where file statistics prune (a source URI),
        by a Spark job where they cannot (`uid`, a hash: every file's min/max spans
        it, so the driver would read the whole column). Returns (version, rows added)."""
        spec = self.spec(table)
        rows = rows.select(spec.columns).cast(spec.schema)
        values = rows.column(within).unique().to_pylist() if within and rows.num_rows else None
        read = self.version(table)
        if not rows.num_rows:
            seen = set()
        elif within in HASHED_KEYS and spark is not None:
            seen = self._keys_on_executors(spark, table, within, values, read)
        else:
            seen = self._keys(table, within, values, read)
        keep = []
        for k in zip(*(rows.column(c).to_pylist() for c in spec.key), strict=True):
            keep.append(k not in seen)
            seen.add(k)
        rows = rows.filter(pa.array(keep, pa.bool_()))
        n = rows.num_rows
        if n == 0:
            return self.ensure(table, commit), 0
        if self.engine == "delta-spark":
            df = spark.createDataFrame(rows.to_pandas(), spec.spark_schema())
            return self.write(df, table, commit, rows_added=n, **metadata), n
        from deltalake import CommitProperties, DeltaTable, write_deltalake
        from deltalake.transaction import Transaction

        target: Any = self.uri(table)
        if self.exists(table):  # commit on the snapshot checked against the keys read
            read = -1 if read is None else read
            base = conflicts.check(self.uri(table), read, ReadScope.keys())
            target = DeltaTable(self.uri(table), version=base)
        app, txn = commit.next_txn(table)
        props = CommitProperties(
            custom_metadata=commit.metadata(rows_added=n, **metadata),
            app_transactions=[Transaction(app, txn, int(time.time() * 1000))],
        )
        write_deltalake(target, rows, mode="append", commit_properties=props)
        return self.version(table), n

    def _keys_on_executors(self, spark, table: str, column: str, values: list, version) -> set:
        """The key tuples of `table@version` whose `column` is in `values`: Spark tasks
        scan the key columns and keep the rows matching a broadcast of `values`; only
        those (at most one per value and key) reach the driver."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import StructField, StructType

        if version is None or not values:
            return set()
        key = list(self.spec(table).key)
        field = self.spec(table).spark_schema()[column]
        probe = spark.createDataFrame(
            [(v,) for v in values], StructType([StructField(column, field.dataType)])
        )
        found = (
            self.read(spark, table, version)
            .select(*key)
            .join(F.broadcast(probe), column, "left_semi")
            .collect()
        )
        return {tuple(r[c] for c in key) for r in found}

    def _keys(
        self,
        table: str,
        column: str | None = None,
        values: list | None = None,
        version: int | None = None,
    ) -> set:
        """The key tuples of `table` at `version` (default latest; only rows whose
        `column` is in `values`, if given), read on the driver."""
        import pyarrow.compute as pc

        if not self.exists(table):
            return set()
        key = list(self.spec(table).key)
        where = pc.field(column).isin(values) if column else None
        cols = (
            self.delta(table, version)
            .to_pyarrow_dataset()
            .to_table(columns=key, filter=where)
            .columns
        )
        return set(zip(*(c.to_pylist() for c in cols), strict=True))

    def replace_where(
        self, df, table: str, column: str, value: str, commit: Commit, **metadata: Any
    ) -> tuple[int, bool]:
        """Make the rows with `column == value` exactly those of `df`, in one commit.

        Files holding only that value are removed and the new files added in the same
        transaction; a file that mixes values is rewritten without them. When the
        content (ignoring run ids and timestamps) is unchanged, nothing is committed.
        Returns (version, changed).
        """
        from pyspark.sql import functions as F

        spec = self.spec(table)
        df = df.select(*spec.columns).persist()
        try:
            if not self.exists(table):
                return self.write(df, table, commit, **metadata), True
            spark = self.spark_of(df)
            read = self.version(table)  # one snapshot: the rows compared, the files removed
            current = self.read(spark, table, read).filter(F.col(column) == value)
            if fingerprint(current, spec) == fingerprint(df, spec):
                return read, False
            if self.engine == "delta-spark":
                where = f"{column} = '{value}'"
                meta = commit.metadata(**metadata)
                _delta_spark_write(df, self.uri(table), "overwrite", meta, replace_where=where)
                return self.version(table), True
            whole, mixed = self._files_holding(table, column, value, read)
            new = df
            if mixed:
                keep = self.read_files(
                    spark, table, [f"{self.root}/{table}/{m['path']}" for m in mixed]
                )
                new = df.unionByName(keep.filter(F.col(column) != value))
            scope = ReadScope.rows_where(column, value)
            version = self.write(
                new, table, commit, remove=whole + mixed, read_version=read, scope=scope, **metadata
            )
            return version, True
        finally:
            df.unpersist()

    def _files_holding(
        self, table: str, column: str, value: str, version: int | None = None
    ) -> tuple[list, list]:
        whole, mixed = [], []
        for a in self.add_actions(table, version):
            lo, hi = a.get(f"min.{column}"), a.get(f"max.{column}")
            entry = {"path": a["path"], "size": a["size_bytes"]}
            if lo == hi == value:
                whole.append(entry)
            elif lo is None or hi is None or lo <= value <= hi:
                mixed.append(entry)
        return whole, mixed

    @staticmethod
    def spark_of(df):
        return df.sparkSession


def _raised(e: Exception, name: str) -> str | None:
    """The message of a `name` exception raised in a Python worker and wrapped by Spark."""
    for line in str(e).splitlines():
        _, sep, said = line.partition(f"{name}: ")
        if sep:
            return said.strip()
    return None


def fingerprint(df, spec: TableSpec) -> tuple[int, str]:
    """(row count, order-independent content hash) ignoring run ids and timestamps."""
    from pyspark.sql import functions as F

    cols = [c for c in spec.columns if c not in VOLATILE_COLUMNS]
    row = (
        df.select(F.xxhash64(*cols).cast("decimal(38,0)").alias("h"))
        .agg(F.count("*").alias("n"), F.sum("h").alias("s"))
        .first()
    )
    return int(row["n"]), str(row["s"])


def _delta_spark_write(df, uri: str, mode: str, meta: dict, replace_where: str = "") -> None:
    writer = (
        df.write.format("delta").mode(mode).option("userMetadata", json.dumps(meta, default=str))
    )
    if replace_where:
        writer = writer.option("replaceWhere", replace_where)
    writer.save(spark_uri(uri))


def _delta_spark_read(spark, uri: str, version: int | str | None):
    reader = spark.read.format("delta")
    if isinstance(version, str):
        reader = reader.option("timestampAsOf", version)
    elif version is not None:
        reader = reader.option("versionAsOf", int(version))
    return reader.load(spark_uri(uri))


def _user_metadata(commit_info: dict) -> dict:
    """delta-spark keeps our commit metadata as a JSON string in `userMetadata`."""
    raw = commit_info.get("userMetadata")
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def delta_spark_available(spark) -> bool:
    """True when Delta's Spark jars are on the classpath (Databricks, EMR, --packages)."""
    try:
        spark._jvm.java.lang.Class.forName("io.delta.tables.DeltaTable")
        return True
    except Exception:
        return False


def spark_uri(uri: str) -> str:
    """delta-rs object-store schemes -> Hadoop's (s3:// -> s3a://)."""
    if uri.startswith("s3://"):
        return "s3a://" + uri[len("s3://") :]
    return uri


def new_run_id(job: str) -> str:
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{job}-{uuid.uuid4().hex[:8]}"
