"""Selecting again after a refresh: only the rows whose verdict can have moved.

A row's verdict under a recipe depends on its own columns (pairs, embeddings, signals,
duplicates) and, through the two rules that look across rows, on a few other rows:
`not_duplicate` on whether its keeper is still in play, `caption_repeat_cap` on the
other pairs of its caption group. With the percentile thresholds frozen (no refit), a
run after the last one therefore has to look only at

1. the uids whose input rows changed since the versions the last run read: the rows of
   the files each table gained since then, less the rows of the files it lost (a
   rewrite carries most of its rows over unchanged; those cancel out);
2. closed over "is a keeper or a duplicate of" and "shares a caption group with", so
   that every row of the set is labelled from rows of the set alone (`closure`).

Labelling that set with the recipe's rules gives exactly what a run over the whole lake
gives for it, and the rows outside it keep their verdicts. The funnel, the duplicate
drops and the churn are the last run's figures plus what this set changed: each is a
sum over rows, so the set's old rows (read at the last run's versions) are subtracted
and its new rows added.

`plan` says why a run must instead look at every row (a first run, another recipe
configuration, a refit, a user rule that looks across rows, a table whose history
cannot be diffed, or a set too large to broadcast).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from lakecurate.curation.selection.recipes import FunnelStep, Recipe
from lakecurate.curation.selection.rules import (
    BalanceRule,
    CaptionRepeatCapRule,
    NotDuplicateRule,
    Rule,
)
from lakecurate.deltaio.keyed import BROADCAST_UIDS, changed_keys
from lakecurate.runtime.jobkit import JobContext

log = logging.getLogger(__name__)

MAX_ROUNDS = 8  # closure rounds before giving up on a chain (a full run then)
CROSS_ROW_RULES = (NotDuplicateRule, CaptionRepeatCapRule)

# the columns of each input table whose change can move a verdict (besides uid)
DIFF_COLUMNS = {
    "pairs": ["caption", "width", "height"],
    "duplicates": ["method", "keeper_uid", "similarity"],
}


@dataclass(frozen=True)
class Increment:
    """The closed set of uids to label again, and the versions the last run read."""

    uids: set[str]
    since: dict[str, int]


def uid_frame(spark, uids) -> DataFrame:
    schema = StructType([StructField("uid", StringType(), False)])
    return spark.createDataFrame([(u,) for u in uids], schema)


def full_reason(recipe: Recipe, last: dict | None, mark: dict, history: list[dict]) -> str:
    """Why this run must label every row ("" when an increment will do). `last`: the
    last run's watermark record; `mark`: this run's watermark (before it writes);
    `history`: the `selection` table's commits."""
    if last is None or last.get("status") != "ok" or not last.get("watermark"):
        return "no earlier run of this recipe"
    if last["watermark"].get("config") != mark["config"]:
        return "the recipe's model or refit setting changed"
    if any(isinstance(r, BalanceRule) for r in recipe.rules):
        return "balance probabilities follow the concept counts, which every refresh moves"
    rules = [r for r in recipe.rules if type(r).drops is not Rule.drops]
    other = [r.name for r in rules if not isinstance(r, CROSS_ROW_RULES)]
    if other:
        return f"rule {other[0]} looks across rows in a way only a full run follows"
    since = last["watermark"]["versions"].get("selection")
    if since is None:
        return "the last run wrote no selection"
    for h in history:  # a commit of this recipe since the last run: someone else's
        if (h.get("version") or 0) > since and h.get("recipe_id") == recipe.recipe_id:
            return f"selection@v{h['version']} rewrote this recipe's rows since the last run"
    return ""


def changed_uids(
    spark, ctx: JobContext, table: str, since: int | None, columns: list[str], where=None
) -> DataFrame | None:
    """The uids whose rows of `table` (in `columns`, restricted by `where`) changed since
    version `since`; None when the log cannot tell (read everything then)."""
    found = changed_keys(spark, ctx.lake, table, since, columns, where)
    if found is None:
        return None
    ctx.result.read_versions[table] = found[0]
    return found[1]


def seed(spark, ctx: JobContext, tables: dict[str, list[str]], since: dict, mid: str):
    """The uids with a changed input row, as a set; None when a table cannot be diffed
    or they are too many to broadcast."""
    parts = []
    for table, cols in tables.items():
        where = None
        if table == "embeddings":
            where = F.col("model_id") == mid
            cols = [*cols, "model_id"]
        elif table == "pairs":
            cols = DIFF_COLUMNS["pairs"]
        elif table == "duplicates":
            cols = DIFF_COLUMNS["duplicates"]
        uids = changed_uids(spark, ctx, table, since.get(table), cols, where)
        if uids is None:
            log.info("select: %s cannot be diffed since v%s", table, since.get(table))
            return None
        parts.append(uids)
    union = parts[0]
    for p in parts[1:]:
        union = union.unionByName(p)
    found = {r["uid"] for r in union.distinct().collect()}
    return found if len(found) <= BROADCAST_UIDS else None


def closure(spark, ctx: JobContext, recipe: Recipe, seed_uids: set[str]) -> set[str] | None:
    """`seed_uids` closed over the links the cross-row rules follow: keepers and their
    duplicates (under the methods of `not_duplicate` rules) and caption groups (under
    `caption_repeat_cap`). None when the set outgrows a broadcast or the links chain on
    for more than MAX_ROUNDS rounds."""
    methods = sorted(
        {m for r in recipe.rules if isinstance(r, NotDuplicateRule) for m in r.methods}
    )
    capped = any(isinstance(r, CaptionRepeatCapRule) for r in recipe.rules)
    if not (methods or capped) or not seed_uids:
        return seed_uids
    dups = captions = None
    if methods and ctx.lake.exists("duplicates"):
        dups = (
            ctx.read(spark, "duplicates")
            .filter(F.col("method").isin(methods) & (F.col("keeper_uid") != F.col("uid")))
            .select("uid", "keeper_uid")
        )
    if capped and ctx.lake.exists("signals"):
        captions = (
            ctx.read(spark, "signals")
            .filter(F.col("caption_sha256").isNotNull())
            .select("uid", "caption_sha256")
        )
    uids, frontier = set(seed_uids), set(seed_uids)
    for _ in range(MAX_ROUNDS):
        f = F.broadcast(uid_frame(spark, frontier))
        linked: list[DataFrame] = []
        if dups is not None:
            linked.append(dups.join(f, "uid", "left_semi").select(F.col("keeper_uid").alias("uid")))
            kept = f.withColumnRenamed("uid", "keeper_uid")
            linked.append(dups.join(kept, "keeper_uid", "left_semi").select("uid"))
        if captions is not None:
            groups = captions.join(f, "uid", "left_semi").select("caption_sha256").distinct()
            linked.append(captions.join(F.broadcast(groups), "caption_sha256").select("uid"))
        if not linked:
            return uids
        union = linked[0]
        for d in linked[1:]:
            union = union.unionByName(d)
        frontier = {r["uid"] for r in union.distinct().collect()} - uids
        if not frontier:
            return uids
        uids |= frontier
        if len(uids) > BROADCAST_UIDS:
            return None
    return None


def plan(spark, ctx: JobContext, recipe: Recipe, tables, last: dict, mid: str):
    """An Increment, or a string saying why every row must be labelled."""
    since = dict(last["watermark"]["versions"])
    changed = seed(spark, ctx, tables, since, mid)
    if changed is None:
        return "an input table was rewritten in a way its log cannot diff, or too much changed"
    uids = closure(spark, ctx, recipe, changed)
    if uids is None:
        return "the rows linked to the changed ones are too many for a broadcast"
    log.info("select: %d changed uids, %d with the rows they link to", len(changed), len(uids))
    return Increment(uids, since)


def restricted_reader(spark, ctx: JobContext, uids: DataFrame, versions: dict | None):
    """A `read(table)` for `build_frame` that reads only the rows of `uids` (a broadcast),
    at `versions` (None: the latest, recorded as read)."""
    small = F.broadcast(uids)

    def read(table: str) -> DataFrame:
        if versions is None:
            df = ctx.read(spark, table)
        else:
            df = ctx.lake.read(spark, table, versions.get(table))
        return df.join(small, "uid", "left_semi")

    return read


# --- figures: last run's + the set's new rows - the set's old rows ------------------------


def drops_by_label(steps: list[dict]) -> dict[str, int]:
    return {s["rule"]: int(s["dropped"]) for s in steps}


def funnel_from(labels: list[str], total: int, dropped: dict[str, int]) -> list[FunnelStep]:
    steps, rows_in = [], total
    for lab in labels:
        d = dropped.get(lab, 0)
        steps.append(FunnelStep(lab, rows_in, d, rows_in - d))
        rows_in -= d
    return steps


def reason_counts(labeled: DataFrame) -> dict[str, int]:
    rows = labeled.filter(F.col("reason").isNotNull()).groupBy("reason").count().collect()
    return {r["reason"]: int(r["count"]) for r in rows}


def combine(last: dict, old: dict, new: dict) -> dict:
    """last - old + new, key by key (nested dicts of counts)."""
    out = {}
    for k in set(last) | set(old) | set(new):
        a, b, c = last.get(k, 0), old.get(k, 0), new.get(k, 0)
        if isinstance(a, dict) or isinstance(b, dict) or isinstance(c, dict):
            out[k] = combine(a or {}, b or {}, c or {})
        else:
            out[k] = int(a) - int(b) + int(c)
    return out


def combine_duplicate_drops(last: list[dict], old: list[dict], new: list[dict]) -> list[dict]:
    def keyed(items: list[dict]) -> dict:
        return {d["rule"]: {k: v for k, v in d.items() if k != "rule"} for d in items}

    merged = combine(keyed(last), keyed(old), keyed(new))
    return [{"rule": d["rule"], **merged[d["rule"]]} for d in new]


Reader = Callable[[str], DataFrame]
