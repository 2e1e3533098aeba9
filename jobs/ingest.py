"""`lakecurate ingest SOURCE [SOURCE ...]`: bring image-text pairs into the lake.

Reads: `sources` (the ledger: which source files are already in), `pairs` (uids,
to append only new ones). Writes, in this order: `pairs` (valid records, one
row per uid), `rejects` (every bad record with a reason code, stage "ingest"),
and last `sources` (one row per source file with checksum, status, counts).

Sources are WebDataset tars, Parquet/JSONL, image folders, or URL lists that
img2dataset downloads first. Files whose uri the ledger knows are checksummed
first (xxh3-128; sha256 for sources the ledger knows by sha256) and skipped when
the ledger holds them with that checksum (`--force` reads them again). Each
remaining file is one Spark task, which checksums a new uri's file itself and
streams and validates it (`udfs.readers.task`): a first ingest reads its inputs
once for the checksum and once to ingest, in the same task.

The task writes its valid records straight into new, uncommitted Parquet files
of `pairs` and hands Spark only small rows (keys, rejects, ledger rows, file
add-actions), kept once in a local checkpoint so every later step sees the same
task output. Image bytes never enter the JVM or a shuffle. The driver then
finds the records that must not land (a uid already in the lake, or a second
copy in this run: the first by (source_uri, source_key) wins), has the few files
holding them rewritten without them, and commits all pairs files in ONE Delta
transaction. Because the ledger is written last and every step is idempotent by
key, a run killed at any moment is completed exactly by running it again; files
of a killed run are never committed, so no table version shows them.
"""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial

from lakecurate.deltaio.conflicts import ReadScope
from lakecurate.deltaio.lake import commit_files, discard_files, spark_uri
from lakecurate.runtime import jobkit, progress
from lakecurate.runtime.config import SOURCE_FORMATS, Config, replace
from lakecurate.runtime.errors import ConfigError
from lakecurate.runtime.jobkit import JobContext, JobResult
from lakecurate.schemas import TABLES
from lakecurate.sources.discover import SourceNotFound, expand_source
from lakecurate.sources.urls import DownloadOptions, download_list, require_img2dataset
from lakecurate.udfs.images import ImageLimits
from lakecurate.udfs.readers.base import ReaderOptions, SourceFile
from lakecurate.udfs.readers.task import (
    OUTPUT_SCHEMA,
    PAIRS_SCHEMA,
    IngestOptions,
    Ledger,
    PairsTarget,
    checksum_source,
    drop_rows,
    ingest_partition,
)
from lakecurate.udfs.table_files import FileWritten, delete_table_files, filesystem

NAME = "ingest"
WRITES = True
HELP = "ingest WebDataset tars, Parquet/JSONL, image folders or URL lists into the lake"
log = logging.getLogger(__name__)
DONE_STATUSES = ("ok", "partial")  # a failed source is tried again on the next run


def add_arguments(p) -> None:
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="file, directory, glob or URI")
    p.add_argument("--format", default="auto", choices=SOURCE_FORMATS, help="default: by suffix")
    p.add_argument("--force", action="store_true", help="re-ingest sources already in the ledger")


def apply_args(cfg: Config, args) -> Config:
    sources = [{"uri": s, "format": args.format} for s in args.sources]
    return replace(cfg, sources=sources, ingest={"force": True} if args.force else {})


# --- options ------------------------------------------------------------------------------


def reader_options(cfg: Config) -> ReaderOptions:
    ic = cfg.ingest
    return ReaderOptions(
        caption_column=ic.caption_column,
        image_column=ic.image_column,
        path_column=ic.path_column,
        url_column=ic.url_column,
        key_column=ic.key_column,
        max_image_bytes=ic.max_image_bytes,
        max_caption_bytes=4 * ic.max_caption_chars + 16,  # UTF-8: at most 4 bytes a char
        batch_rows=cfg.spark.arrow_batch_rows,
    )


def ingest_options(cfg: Config) -> IngestOptions:
    ic = cfg.ingest
    limits = ImageLimits(
        max_pixels=ic.max_pixels,
        min_side=ic.min_side,
        max_bytes=ic.max_image_bytes,
        formats=tuple(f.lower() for f in ic.image_formats),
        decode=ic.decode,
    )
    return IngestOptions(
        reader=reader_options(cfg),
        limits=limits,
        max_caption_chars=ic.max_caption_chars,
        resize_max_side=ic.resize_max_side,
        resize_quality=ic.resize_quality,
    )


def download_options(cfg: Config) -> DownloadOptions:
    ic = cfg.ingest
    return DownloadOptions(
        url_column=ic.url_column,
        caption_column=ic.caption_column,
        timeout_s=ic.download_timeout_s,
        threads=ic.download_threads,
        retries=ic.download_retries,
        shard_size=ic.download_shard_size,
    )


# --- driver steps ---------------------------------------------------------------------------


def discover(cfg: Config) -> list[SourceFile]:
    """Every unit of work named by `cfg.sources`, in order, without repeats."""
    if not cfg.sources:
        raise ConfigError("sources", "nothing to ingest: give SOURCE paths or set `sources`")
    units: dict[str, SourceFile] = {}
    for i, s in enumerate(cfg.sources):
        if s.format not in SOURCE_FORMATS:
            raise ConfigError(
                f"sources[{i}].format", f"got {s.format!r}; allowed: {SOURCE_FORMATS}"
            )
        try:
            found = expand_source(s.uri, s.format, reader_options(cfg))
        except SourceNotFound as e:
            raise ConfigError(f"sources[{i}]", f"{e}; check the path or pass --format") from None
        for u in found:
            units.setdefault(u.uri, u)
    return list(units.values())


def ledger(ctx: JobContext, force: bool) -> Ledger:
    """The sources ingested before (status ok or partial; none with `force`)."""
    if not ctx.lake.exists("sources"):
        return Ledger()
    dt = ctx.lake.delta("sources")  # one row per source file: read on the driver
    ctx.result.read_versions["sources"] = dt.version()
    rows = dt.to_pyarrow_table(columns=["source_uri", "checksum", "status"]).to_pylist()
    done = {(r["source_uri"], r["checksum"]) for r in rows if r["status"] in DONE_STATUSES}
    sha = {r["source_uri"] for r in rows if (r["checksum"] or "").startswith("sha256:")}
    return Ledger(frozenset() if force else frozenset(done), frozenset(sha))


def download_dir(cfg: Config) -> str:
    return cfg.ingest.download_dir or f"{cfg.lake.path.rstrip('/')}/_downloads"


def download(
    cfg: Config, lists: list[SourceFile], known: Ledger
) -> tuple[list[SourceFile], list[dict]]:
    """Run img2dataset on each new URL list: its shards, plus rejects and ledger rows."""
    shards, rows = [], []
    if lists:
        require_img2dataset(f"sources: {lists[0].uri}")
    for u in lists:
        if "://" in u.uri and not u.uri.startswith("file://"):
            raise ConfigError("sources", f"{u.uri}: URL lists are read from local paths")
        u = checksum_source(u, known.algorithm(u.uri))
        if known.holds(u):
            log.info("skip %s: already ingested (%s)", u.uri, u.checksum)
            continue
        out = os.path.join(download_dir(cfg), u.checksum.split(":")[-1][:16])
        res = download_list(u, out, download_options(cfg))
        shards += res.shards
        rows += res.rejects
        rows.append(
            {
                "kind": "source",
                "source_uri": u.uri,
                "checksum": u.checksum,
                "format": "urls",
                "size_bytes": u.size_bytes,
                "status": "ok",
                "rows_ok": res.ok,
                "rows_rejected": len(res.rejects),
            }
        )
    return shards, rows


def ingest_frame(
    spark, cfg: Config, units: list[SourceFile], extra_rows: list[dict], ctx, known: Ledger
):
    """The output rows (OUTPUT_SCHEMA) of all units, one Spark task per unit."""
    from pyspark.sql.pandas.types import from_arrow_schema

    sschema = from_arrow_schema(OUTPUT_SCHEMA)
    per_task = cfg.ingest.files_per_task
    groups = [units[i : i + per_task] for i in range(0, len(units), per_task)]
    target = PairsTarget(ctx.lake.uri("pairs"), ctx.run_id, datetime.now(UTC))
    # tasks only choose a checksum algorithm: ship the legacy sha256 uris of this run alone
    legacy = Ledger(sha256_uris=frozenset(u.uri for u in units) & known.sha256_uris)
    opts = ingest_options(cfg)
    body = partial(ingest_partition, groups=groups, opts=opts, target=target, ledger=legacy)
    out = spark.range(0, len(groups), 1, max(1, len(groups))).mapInArrow(body, sschema)
    if extra_rows:
        cols = OUTPUT_SCHEMA.names
        extra = spark.createDataFrame([tuple(r.get(c) for c in cols) for r in extra_rows], sschema)
        out = out.unionByName(extra)
    return out


def stage(out):
    """Run the ingest tasks once: their small output rows, kept for every later step.

    The tasks write pairs files as a side effect, so their output must never be
    recomputed by a later action. A local checkpoint runs them now and cuts the
    lineage: later actions read the rows from the executors' block managers, on any
    file system (no staging directory, no JVM connector for the lake's store). An
    executor lost with its blocks fails the run instead of re-running its tasks;
    nothing is committed then, and the next run ingests those sources again.
    """
    return out.localCheckpoint(eager=True)


def staged_rows(staged, kind: str, columns: list[str]):
    """The staged rows of one small kind (source, file, reject, pair) as Arrow, on the
    driver."""
    from pyspark.sql import functions as F

    return staged.filter(F.col("kind") == kind).select(*columns).toArrow()


def losers(spark, staged, ctx: JobContext):
    """(file_path, source_uri, source_key) of pair rows that must not land: a uid
    already in `pairs`, or not the first copy of its uid in this run."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    keys = staged.filter(F.col("kind") == "pair").select(
        "uid", "source_uri", "source_key", "file_path"
    )
    first = Window.partitionBy("uid").orderBy("source_uri", "source_key")
    ranked = keys.withColumn("_n", F.row_number().over(first))
    out = ranked.filter(F.col("_n") > 1)
    if ctx.lake.exists("pairs"):
        have = ctx.read(spark, "pairs").select("uid")
        out = out.unionByName(ranked.filter(F.col("_n") == 1).join(have, "uid", "left_semi"))
    return out.select("file_path", "source_uri", "source_key")


def losers_on_driver(staged, ctx: JobContext) -> dict[str, list]:
    """`losers` for a small run into a small lake, in Arrow on the driver (no Spark
    job): file_path -> [(source_uri, source_key), ...]. The same rule: per uid the
    first by (source_uri, source_key) wins unless the uid is already in `pairs`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = staged_rows(staged, "pair", ["uid", "source_uri", "source_key", "file_path"])
    if keys.num_rows == 0:
        return {}
    order = [("uid", "ascending"), ("source_uri", "ascending"), ("source_key", "ascending")]
    keys = keys.take(pc.sort_indices(keys, sort_keys=order))
    uid = keys.column("uid").combine_chunks()
    repeat = pc.equal(uid.slice(1), uid.slice(0, len(uid) - 1))
    lose = pa.concat_arrays([pa.array([False]), repeat.fill_null(False)])
    if ctx.lake.exists("pairs"):
        ctx.result.read_versions["pairs"] = read = ctx.lake.version("pairs")
        present = ctx.lake.delta("pairs", read).to_pyarrow_dataset()
        have = present.to_table(columns=["uid"], filter=pc.field("uid").isin(uid.unique()))
        lose = pc.or_(lose, pc.is_in(uid, have.column("uid")))
    out: dict[str, list] = {}
    for r in keys.filter(lose).to_pylist():
        out.setdefault(r["file_path"], []).append((r["source_uri"], r["source_key"]))
    return out


def small_run(ctx: JobContext, pairs_in_run: int) -> bool:
    """Few enough keys (this run's and the lake's) to find losers on the driver."""
    return pairs_in_run <= DRIVER_KEYS and ctx.lake.count("pairs") <= DRIVER_KEYS


def pairs_files(spark, staged, ctx: JobContext, pairs_in_run: int) -> tuple[list, int]:
    """The pairs files to commit (rewritten without losers where needed), and how many
    pair rows were dropped as already present."""
    from pyspark.sql import functions as F

    cols = ["file_path", "size_bytes", "rows_ok", "file_stats"]
    written = {
        r["file_path"]: FileWritten(*(r[c] for c in cols))
        for r in staged_rows(staged, "file", cols).to_pylist()
    }
    rewrite = partial(drop_rows, table_uri=ctx.lake.uri("pairs"), tag=ctx.run_id)
    if small_run(ctx, pairs_in_run):
        items = list(losers_on_driver(staged, ctx).items())
        with ThreadPoolExecutor(min(4, max(1, len(items)))) as pool:  # Arrow I/O frees the GIL
            results = list(pool.map(rewrite, items))
    else:
        per_file = (
            losers(spark, staged, ctx)
            .groupBy("file_path")
            .agg(F.collect_list(F.array("source_uri", "source_key")).alias("keys"))
        )
        results = per_file.rdd.map(lambda row: rewrite((row.file_path, row["keys"]))).collect()
    dropped = 0
    for r in results:
        dropped += r["dropped"]
        written.pop(r["old"], None)
        if r["new"] is not None:
            written[r["new"].path] = r["new"]
    return list(written.values()), dropped


def commit_pairs(spark, staged, ctx: JobContext, pairs_in_run: int) -> int:
    """Commit this run's pairs files in one transaction; return the rows added."""
    files, _ = pairs_files(spark, staged, ctx, pairs_in_run)
    fs, root = filesystem(ctx.lake.uri("pairs"))
    names = [f.path for f in files]
    added = sum(f.num_rows for f in files)
    try:
        if added and ctx.lake.engine == "delta-spark":
            # Delta's own writer owns the table: the rows go through it, our files go.
            paths = [spark_uri(f"{ctx.lake.uri('pairs')}/{n}") for n in names]
            df = spark.read.schema(TABLES["pairs"].spark_schema()).parquet(*paths)
            ctx.lake.write(df, "pairs", ctx.commit, rows_added=added)
        elif added:
            meta = ctx.commit.metadata(rows_added=added)
            commit_files(
                ctx.lake.uri("pairs"),
                PAIRS_SCHEMA,
                files,
                metadata=meta,
                read_version=ctx.result.read_versions.get("pairs", -1),
                scope=ReadScope.keys(),  # uids were matched against pairs at that version
                txn=ctx.commit.next_txn("pairs"),
            )
            names = []  # committed: they are the table's now
    finally:
        if ctx.lake.engine == "delta-spark":
            delete_table_files(fs, root, names)  # copied into Delta's own files
        else:
            discard_files(ctx.lake.uri("pairs"), names)  # only what the log does not hold
    ctx.wrote("pairs", ctx.lake.ensure("pairs", ctx.commit))
    return added


DRIVER_ROWS = 100_000  # fewer rejects than this are appended from the driver, without Spark
DRIVER_KEYS = 1_000_000  # runs and lakes up to this many pairs find losers on the driver
SOURCE_COLUMNS = ["source_uri", "checksum", "format", "size_bytes", "status", "rows_ok"]
SOURCE_COLUMNS += ["rows_rejected", "error"]
REJECT_COLUMNS = ["source_uri", "source_key", "reason", "detail"]


def rejects_table(rows, ctx: JobContext):
    """Staged reject rows (Arrow) as `rejects` rows of this run."""
    import pyarrow as pa

    n = rows.num_rows
    spec = TABLES["rejects"]
    extra = {
        "stage": pa.array(["ingest"] * n, pa.string()),
        "uid": pa.nulls(n, pa.string()),
        "run_id": pa.array([ctx.run_id] * n, pa.string()),
        "rejected_at": pa.array([datetime.now(UTC)] * n, spec.schema.field("rejected_at").type),
    }
    for name, col in extra.items():
        rows = rows.append_column(name, col)
    return rows.select(spec.columns)


def rejects_frame(out, ctx: JobContext):
    from pyspark.sql import functions as F

    return (
        out.filter(F.col("kind") == "reject")
        .withColumn("stage", F.lit("ingest"))
        .withColumn("uid", F.lit(None).cast("string"))
        .withColumn("run_id", F.lit(ctx.run_id))
        .withColumn("rejected_at", F.current_timestamp())
        .select(*TABLES["rejects"].columns)
    )


def sources_table(rows: list[dict], ctx: JobContext):
    """The ledger rows of this run (small: one per source file), built on the driver."""
    import pyarrow as pa

    now = datetime.now(UTC)
    spec = TABLES["sources"]
    full = [{**r, "run_id": ctx.run_id, "ingested_at": now} for r in rows]
    return pa.Table.from_pylist(full, schema=spec.schema) if full else spec.empty()


# --- the job ---------------------------------------------------------------------------------


def write(spark, out, ctx: JobContext) -> dict:
    """pairs, then rejects, then the ledger: the completion marker goes last."""

    try:
        staged = stage(out)
        srows = staged_rows(staged, "source", SOURCE_COLUMNS).to_pylist()
        added = commit_pairs(spark, staged, ctx, sum(int(r["rows_ok"] or 0) for r in srows))
        if sum(int(r["rows_rejected"] or 0) for r in srows) <= DRIVER_ROWS:
            rows = rejects_table(staged_rows(staged, "reject", REJECT_COLUMNS), ctx)
            v, rejected = ctx.lake.append_new_rows(
                spark, rows, "rejects", ctx.commit, within="source_uri"
            )
        else:
            v, rejected = ctx.lake.append_new(rejects_frame(staged, ctx), "rejects", ctx.commit)
        ctx.wrote("rejects", v)
        v, _ = ctx.lake.append_new_rows(spark, sources_table(srows, ctx), "sources", ctx.commit)
        ctx.wrote("sources", v)
    except BaseException:
        discard_uncommitted(ctx)
        raise
    status = [r["status"] for r in srows]
    return {
        "sources": len(srows),
        "skipped": 0,
        "pairs_added": added,
        "rows_ok": sum(int(r["rows_ok"] or 0) for r in srows),
        "rows_rejected": sum(int(r["rows_rejected"] or 0) for r in srows),
        "rejects_added": rejected,
        "partial": status.count("partial"),
        "failed": status.count("failed"),
    }


def discard_uncommitted(ctx: JobContext) -> None:
    """After a failure: remove this run's pairs files that no table version references
    (tasks that finished before another failed). Committed files are never touched."""
    import pyarrow.fs as pafs

    fs, root = filesystem(ctx.lake.uri("pairs"))
    mine = f"part-{ctx.run_id}-"
    try:
        names = [i.base_name for i in fs.get_file_info(pafs.FileSelector(root))]
    except (FileNotFoundError, OSError):
        return
    committed = set()
    if ctx.lake.exists("pairs"):
        committed = {u.rsplit("/", 1)[-1] for u in ctx.lake.delta("pairs").file_uris()}
    delete_table_files(fs, root, [n for n in names if mine in n and n not in committed])


def recheck(spark, files: list[SourceFile], known: Ledger) -> tuple[list[SourceFile], int]:
    """(files to read, how many the ledger holds unchanged). Only a file whose uri the
    ledger knows can be skipped; those are checksummed first, in a few Spark tasks
    (a task per skipped file would cost more than its checksum). Any other file is
    checksummed by the task that reads it."""
    uris = {u for u, _ in known.done}
    seen = [u for u in files if u.uri in uris]
    if not seen:
        return files, 0
    slices = min(len(seen), 2 * spark.sparkContext.defaultParallelism)
    fn = partial(_checksum_known, known=known)
    checked = spark.sparkContext.parallelize(seen, slices).map(fn).collect()
    changed = [u for u in checked if not known.holds(u)]
    return [u for u in files if u.uri not in uris] + changed, len(checked) - len(changed)


def _checksum_known(u: SourceFile, known: Ledger) -> SourceFile:
    return checksum_source(u, known.algorithm(u.uri))


def run(spark, cfg: Config) -> JobResult:
    """Ingest `cfg.sources` into `pairs`/`rejects`, recording each source in `sources`."""
    ctx = JobContext(NAME, cfg)
    units = discover(cfg)
    known = ledger(ctx, cfg.ingest.force)
    shards, extra = download(cfg, [u for u in units if u.format == "urls"], known)
    files, skipped = recheck(spark, [u for u in units if u.format != "urls"] + shards, known)
    log.info("ingest: %d source files to read, %d already ingested", len(files), skipped)
    progress.describe(spark, f"{len(files):,} source files")
    counts = {"sources": 0, "skipped": 0, "pairs_added": 0}
    step = cfg.ingest.commit_every_files
    groups = [files[i : i + step] for i in range(0, len(files), step)] or [[]]
    for i, group in enumerate(groups):
        rows = extra if i == 0 else []  # url-list ledger rows and download rejects
        if not group and not rows:
            continue
        if len(groups) > 1:
            progress.describe(spark, f"commit {i + 1}/{len(groups)}: {len(group):,} source files")
        done = write(spark, ingest_frame(spark, cfg, group, rows, ctx, known), ctx)
        counts = {k: counts.get(k, 0) + v for k, v in done.items()}
    counts["skipped"] += skipped
    if not counts["sources"]:
        return ctx.done("nothing new to ingest", **counts)
    msg = f"{counts['pairs_added']} new pairs from {counts['sources']} sources"
    if counts["skipped"]:
        msg += f" ({counts['skipped']} already ingested)"
    return ctx.done(msg, **counts)


build_parser, main = jobkit.entry_points(__name__)


if __name__ == "__main__":
    sys.exit(main())
