"""The `signals` table: one row per uid, computed once, refreshed when its format moves.

`update` adds rows for uids that have none. When pHash is about to re-match every uid
(its configuration slug changed, e.g. a new verification), rows whose verification
blob (`signals.thumb`) is not the current one are recomputed first, keeping their
semantic cluster columns, so an upgraded lake verifies every pair the same way instead
of treating its older rows as never a copy. Only a full pHash run pays for that.
"""

from __future__ import annotations

from functools import partial

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecurate.curation.dedup.groups import unmatched
from lakecurate.curation.dedup.semantic import CLUSTER_COLUMNS
from lakecurate.deltaio.keyed import replace_rows, rows_for_uids
from lakecurate.runtime import progress
from lakecurate.runtime.jobkit import JobContext
from lakecurate.schemas import TABLES
from lakecurate.udfs import phash as ph


def _computed(pairs: DataFrame, run_id: str) -> DataFrame:
    schema = TABLES["signals"].spark_schema()
    fn = partial(ph.signal_batches, run_id=run_id, counter=progress.row_counter())
    return pairs.select(*ph.SIGNAL_INPUTS).mapInArrow(fn, schema)


def add_missing(spark, ctx: JobContext, pairs: DataFrame, arrivals: DataFrame | None) -> int:
    """Compute `signals` rows for uids that have none; return how many were added.

    The missing uids are found from the uid columns alone, among `arrivals` where known
    (`groups.unmatched`); the images of those are read from only the `pairs` files that
    hold them (`keyed.rows_for_uids`), so a refresh neither reads nor shuffles the
    lake's image bytes.
    """
    have = ctx.lake.read(spark, "signals").select("uid")
    missing = unmatched(pairs.select("uid"), have, arrivals).persist()
    try:
        n = missing.count()
        if n == 0:
            ctx.lake.ensure("signals", ctx.commit)
            return 0
        if ctx.lake.count("signals") == 0:  # a first run: every pair, no join
            todo = pairs.select(*ph.SIGNAL_INPUTS)
        else:
            version = ctx.result.read_versions["pairs"]
            todo = rows_for_uids(spark, ctx.lake, "pairs", version, missing, n, ph.SIGNAL_INPUTS)
        version, added = ctx.lake.append_new(_computed(todo, ctx.run_id), "signals", ctx.commit)
    finally:
        missing.unpersist()
    if added:
        ctx.wrote("signals", version)
    return added


def stale_blob() -> F.Column:
    """Rows with a hash whose verification blob or window hashes are absent or of an
    older format."""
    return F.col("phash").isNotNull() & (
        F.col("thumb").isNull()
        | (F.length("thumb") != ph.VERIFY_BYTES)
        | F.col("phash_windows").isNull()
        | (F.length("phash_windows") != ph.WINDOW_BYTES)
    )


def refresh_stale(spark, ctx: JobContext, pairs: DataFrame) -> int:
    """Recompute the rows whose blob is stale (`stale_blob`), in one commit that rewrites
    only the files holding them; return how many."""
    if not ctx.lake.exists("signals"):
        return 0
    stale = ctx.lake.read(spark, "signals").filter(stale_blob()).select("uid", *CLUSTER_COLUMNS)
    todo = pairs.join(stale.select("uid"), "uid", "left_semi")
    spec = TABLES["signals"]
    rows = (
        _computed(todo, ctx.run_id)
        .drop(*CLUSTER_COLUMNS)
        .join(stale, "uid")
        .select(*spec.columns)
        .persist()
    )
    try:
        n = rows.count()
        if n:
            ctx.wrote(
                "signals",
                replace_rows(spark, ctx.lake, ctx.commit, "signals", rows, rows.select("uid")),
            )
        return n
    finally:
        rows.unpersist()


def phash_rematches(spark, ctx: JobContext, slug: str) -> bool:
    """Whether the phash method will match every uid while signals rows already exist:
    its first run over a lake deduped before (without phash), or a run under a new
    configuration slug. Then rows of an older blob format must be recomputed first."""
    if not ctx.lake.exists("signals") or ctx.lake.count("signals") == 0:
        return False
    if not ctx.lake.exists("dedup_index"):
        return True
    idx = ctx.lake.read(spark, "dedup_index").filter(F.col("method") == "phash")
    slugs = {r[0] for r in idx.select("config_slug").distinct().collect()}
    return slugs != {slug}
