"""`lakecurate concepts`: match captions against the concept metadata (MetaCLIP) and
keep each entry's count.

Reads `metadata` (its newest version), `pairs` (uid, caption), `concepts`.
Writes
  concepts        one row per uid of pairs without one for that metadata version: the
                  ids of the entries its caption matches (`udfs/concepts.py`: MetaCLIP's
                  substring rule, one Aho-Corasick automaton per Python worker);
  concept_counts  per entry, how many of the `concepts` rows not counted yet match it,
                  with the `concepts` version counted through (one row per entry
                  and counting run; every FOLD_RUNS runs folded to one per entry).
Counts are additive: a refresh matches its new captions and adds their counts; the
old captions are neither matched nor counted again. The two commits are in that
order, and the counts catch up on any `concepts` rows a killed run left uncounted, so
running again completes a run killed anywhere. A new metadata version (`lakecurate
metadata import|build`) is matched and counted afresh.

`select` reads both for the `has_concept` and `balance` rules (recipe `metaclip`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from functools import partial

from lakecurate.curation.concepts import counts as concept_counts
from lakecurate.deltaio.keyed import rows_for_uids
from lakecurate.runtime import jobkit, progress
from lakecurate.runtime.config import Config
from lakecurate.runtime.errors import JobError
from lakecurate.runtime.jobkit import JobContext, JobResult
from lakecurate.runtime.runs import last_run, record_run
from lakecurate.schemas import TABLES
from lakecurate.udfs.concepts import match_batches

NAME = "concepts"
WRITES = True
HELP = "match captions against the concept metadata (MetaCLIP) and count each entry"

log = logging.getLogger(__name__)
FOLD_RUNS = 30  # counting runs after which concept_counts is folded (`fold_counts`)
# Captions a matching task takes at most. A task's fixed cost (launch, hand-off to the
# Python worker, Arrow streams) is about 0.1 s, the time of 15k captions against 500k
# entries; `pairs` files are split by their bytes, images included, so their natural
# tasks hold a few thousand captions each, and a lake of small files spent most of
# its matching time starting tasks (`benchmarks/metaclip_match.py`: 32 tasks for
# 600k captions on 2 cores ran at 0.57 of one plain process per core, 2 tasks at 0.87).
CAPTIONS_PER_TASK = 200_000


def match_tasks(cores: int, captions: int) -> int:
    """How many tasks match `captions` on `cores`: a whole number of rounds of one
    task per core, each task at most `CAPTIONS_PER_TASK` captions."""
    cores = max(1, cores)
    return cores * max(1, -(-captions // (cores * CAPTIONS_PER_TASK)))


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


MATCHED = "concepts-matched"  # <lake>/_runs/concepts-matched.json: the last complete match


def pending_uids(spark, ctx: JobContext, mv: int):
    """uids of pairs without a `concepts` row for metadata version `mv` (uid columns only).

    After a complete match of `mv` (`record_matched`), only the pairs added since can be
    pending and only the `concepts` rows added since can cover them: a refresh reads
    those files, broadcast into each other, not the lake's uid columns."""
    from pyspark.sql import functions as F

    last = last_run(ctx.cfg.lake.path, MATCHED) or {}
    since = (last.get("versions") or {}) if last.get("metadata_version") == mv else {}
    pairs, files = ctx.read_added(spark, "pairs", since.get("pairs"), ["uid"])
    if not ctx.lake.exists("concepts"):
        return pairs
    if files is None:  # every pair (`pairs` rewritten, say): any concepts row can cover one
        since = {}
    done, _ = ctx.read_added(spark, "concepts", since.get("concepts"), ["uid", "metadata_version"])
    done = done.filter(F.col("metadata_version") == mv).select("uid")
    if files is not None:  # a few new uids: broadcast them into the concepts scan
        done = done.join(F.broadcast(pairs), "uid", "left_semi")
    return pairs.join(done, "uid", "left_anti")


def record_matched(ctx: JobContext, mv: int) -> None:
    """Every uid of the `pairs` version read now has a `concepts` row for `mv`."""
    versions = {
        "pairs": ctx.result.read_versions["pairs"],
        "concepts": ctx.lake.version("concepts"),
    }
    record_run(
        ctx.cfg.lake.path, MATCHED, "ok", run_id=ctx.run_id, metadata_version=mv, versions=versions
    )


def captions_to_match(spark, ctx: JobContext, uids, n: int):
    """(uid, caption) of the `n` pending `uids`, in at most `match_tasks` partitions (the
    file splits of `pairs` merged, no shuffle)."""
    version = ctx.result.read_versions["pairs"]
    rows = rows_for_uids(spark, ctx.lake, "pairs", version, uids, n, ["uid", "caption"])
    return rows.coalesce(match_tasks(spark.sparkContext.defaultParallelism, n))


def match_new(spark, ctx: JobContext, mv: int) -> int:
    """Append `concepts` rows for the uids without one; return how many."""
    uids = pending_uids(spark, ctx, mv).persist()
    try:
        n = uids.count()
        if n == 0:
            ctx.lake.ensure("concepts", ctx.commit)
            record_matched(ctx, mv)
            return 0
        progress.describe(spark, f"matching {n:,} captions against metadata v{mv}", rows=n)
        rows = captions_to_match(spark, ctx, uids, n)
        fn = partial(
            match_batches,
            table_uri=ctx.lake.uri("metadata"),
            version=mv,
            run_id=ctx.run_id,
            counter=progress.row_counter(),
        )
        out = rows.mapInArrow(fn, TABLES["concepts"].spark_schema())
        v, added = ctx.lake.append_new(out, "concepts", ctx.commit, metadata_version=mv)
    finally:
        uids.unpersist()
    if added:
        ctx.wrote("concepts", v)
    record_matched(ctx, mv)
    return added


def count_new(spark, ctx: JobContext, mv: int) -> int:
    """Bring `concept_counts` of `mv` up to the latest `concepts` version: add the counts
    of the rows added since the version last counted (all of them when the table is
    not append-only since then: its counts are then replaced). Returns rows counted."""
    from pyspark.sql import functions as F

    lake = ctx.lake
    counted = concept_counts.counted_through(lake, mv)
    version, files = lake.added_since("concepts", counted)
    if version is None or version == counted:
        return 0
    ctx.result.read_versions["concepts"] = version
    if files is None:
        rows = lake.read(spark, "concepts", version)
    elif files:
        rows = lake.read_files(spark, "concepts", files)
    else:
        rows = None
    n = 0
    parts = []
    if rows is not None:
        rows = rows.filter(F.col("metadata_version") == mv).persist()
        n = rows.count()
        parts.append(
            rows.select(F.explode("entry_ids").alias("entry_id")).groupBy("entry_id").count()
        )
    marker = spark.range(1).select(
        F.lit(concept_counts.MARKER).alias("entry_id"), F.lit(0).cast("long").alias("count")
    )
    increments = marker if not parts else parts[0].unionByName(marker)
    out = increments.select(
        F.lit(mv).cast("int").alias("metadata_version"),
        F.col("entry_id").cast("int"),
        F.col("count").cast("long"),
        F.lit(version).cast("long").alias("concepts_version"),
        F.lit(ctx.run_id).alias("run_id"),
    )
    try:
        if files is None and counted is not None:  # recount: replace this version's rows
            v, _ = lake.replace_where(out, "concept_counts", "metadata_version", mv, ctx.commit)
        else:
            v = lake.write(out, "concept_counts", ctx.commit, rows_counted=n)
    finally:
        if rows is not None:
            rows.unpersist()
    ctx.wrote("concept_counts", v)
    return n


def fold_counts(spark, ctx: JobContext, mv: int) -> bool:
    """Once `FOLD_RUNS` counting runs have appended their rows for `mv`, replace them by
    one row per entry (its sum; the newest `concepts` version counted), in one commit:
    the table stays about the size of the metadata instead of growing every night,
    and the sums and the version counted through are unchanged."""
    from pyspark.sql import functions as F

    if concept_counts.counting_runs(ctx.lake, mv) < FOLD_RUNS:
        return False
    rows = ctx.read(spark, "concept_counts").filter(F.col("metadata_version") == mv)
    folded = rows.groupBy("metadata_version", "entry_id").agg(
        F.sum("count").cast("long").alias("count"),
        F.max("concepts_version").alias("concepts_version"),
        F.lit(ctx.run_id).alias("run_id"),
    )
    v, _ = ctx.lake.replace_where(
        folded, "concept_counts", "metadata_version", mv, ctx.commit, folded=True
    )
    ctx.wrote("concept_counts", v)
    log.info("concepts: folded the counts of metadata v%d into one row per entry", mv)
    return True


def run(spark, cfg: Config) -> JobResult:
    ctx = JobContext(NAME, cfg)
    if not ctx.lake.exists("pairs"):
        raise JobError(f"lake {ctx.lake.root} has no `pairs` table: run `lakecurate ingest` first")
    mv = concept_counts.require_metadata_version(ctx.lake)
    matched = match_new(spark, ctx, mv)
    counted = count_new(spark, ctx, mv)
    fold_counts(spark, ctx, mv)
    counts = concept_counts.entry_counts(ctx.lake, mv)
    message = (
        f"matched {matched:,} new captions against metadata v{mv}; "
        f"{len(counts):,} entries matched so far"
    )
    return ctx.done(
        message, metadata_version=mv, matched=matched, counted=counted, entries=len(counts)
    )


build_parser, main = jobkit.entry_points(__name__)


if __name__ == "__main__":
    sys.exit(main())
