"""`lakecurate select [--recipe NAME|FILE]`: turn signals, embeddings and duplicate
verdicts into a selection, with the rule that dropped every dropped uid.

Reads (only what the recipe's rules need, at their latest versions):
  pairs       uid, caption, width, height (caption words/chars, resolution and aspect
              are derived here, so quality rules need no other job)
  embeddings  clip_score / image_emb / text_emb of `model_id(cfg.model)`
  signals     semantic_cluster, centroid_sim (written by `dedup --methods semantic`)
  duplicates  per method: a uid is a duplicate when its keeper_uid is another uid
Writes:
  selection   one row per uid of pairs: uid, recipe_id, kept, reason (label of the
              first rule that dropped it; null if kept), run_id. The rows of this
              recipe_id are replaced in one commit (none when nothing changed); the
              commit metadata holds the recipe, its rules, the per-rule funnel, the
              thresholds of its percentile rules and the churn.

Percentile rules keep the thresholds of their last fit (frozen) until the lake has grown
by `select.refit_growth`, the model changed, or `--refit` asks
(`lakecurate.curation.selection.thresholds`). The churn (uids the previous selection of
the recipe kept that this one drops) is reported by cause.

With the thresholds frozen, a run after an earlier one labels only the pairs whose
inputs changed since it, closed over the rows the cross-row rules link them to, and
rewrites the rows among them whose verdict moved; its funnel and churn are the earlier
run's plus what changed (`lakecurate.curation.selection.incremental`). `--full`
labels every pair; so does a refit, another model, or a first run.

Every missing input is reported, with the command that produces it, before any Spark
work starts; a bad recipe is a ConfigError (exit 2) naming the rule and parameter.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace as replace_fit

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakecurate.curation.concepts import counts as concept_counts
from lakecurate.curation.models import (
    add_model_arguments,
    apply_model_args,
    model_id,
    resolve_model,
)
from lakecurate.curation.selection import incremental
from lakecurate.curation.selection.recipes import (
    Recipe,
    builtin_recipes,
    duplicate_drops,
    format_funnel,
    funnel,
    label_rows,
    load_recipe,
    recipe_for,
    rule_labels,
)
from lakecurate.curation.selection.rules import COLUMNS, BalanceRule, head_counts
from lakecurate.curation.selection.thresholds import (
    Fit,
    Thresholds,
    churn,
    fitted_labels,
    refit_reason,
    stored_fit,
)
from lakecurate.deltaio.keyed import replace_rows
from lakecurate.deltaio.lake import Lake
from lakecurate.runtime import jobkit, progress
from lakecurate.runtime.config import Config, replace
from lakecurate.runtime.errors import JobError
from lakecurate.runtime.jobkit import JobContext, JobResult
from lakecurate.runtime.runs import last_run, record_run, table_watermark

NAME = "select"
WRITES = True
HELP = "apply a selection recipe (default, datacomp-clip, bunny, or a YAML file)"

log = logging.getLogger(__name__)


# --- inputs: what each table provides, how to check it is there, how to join it ---------


def _caption() -> Column:
    collapsed = F.regexp_replace(F.coalesce(F.col("caption"), F.lit("")), r"\s+", " ")
    return F.trim(collapsed)


def _caption_words() -> Column:
    cap = _caption()
    return F.when(cap == "", F.lit(0)).otherwise(F.size(F.split(cap, " ")))


def _resolution() -> Column:
    # least() skips nulls; an image with an unknown side has no resolution
    known = F.col("width").isNotNull() & F.col("height").isNotNull()
    return F.when(known, F.least("width", "height"))


def _aspect() -> Column:
    short = _resolution()
    return F.when(short > 0, F.greatest("width", "height").cast("double") / short)


PAIR_COLUMNS: dict[str, Callable[[], Column]] = {
    "caption_words": _caption_words,
    "caption_chars": lambda: F.char_length(_caption()),
    "resolution": _resolution,
    "aspect": _aspect,
}


def _stats_may_hold(lake: Lake, table: str, column: str, value: str) -> bool:
    """Whether any file's min/max stats of `column` admit `value` (no Spark needed)."""
    for a in lake.add_actions(table):
        lo, hi = a.get(f"min.{column}"), a.get(f"max.{column}")
        if int(a.get("num_records") or 0) > 0 and (lo is None or hi is None or lo <= value <= hi):
            return True
    return False


def _non_null_rows(lake: Lake, table: str, column: str) -> int:
    """Non-null values of `column`, from the file statistics (a file written before the
    column existed has no statistics for it, and holds none)."""
    key = f"null_count.{column}"
    return sum(
        int(a.get("num_records") or 0) - int(a.get(key) or 0)
        for a in lake.add_actions(table)
        if a.get(key) is not None
    )


def _check_pairs(lake: Lake, cfg: Config, cols: list[str]) -> None:
    if not lake.exists("pairs"):
        raise JobError(f"table pairs does not exist in {lake.root}: run `lakecurate ingest` first")


HEAD_COLUMNS = {"aesthetic_score": "aesthetic", "unsafe_score": "unsafe"}


def _check_embeddings(lake: Lake, cfg: Config, cols: list[str]) -> None:
    mid = model_id(cfg.model)
    if lake.exists("embeddings") and _stats_may_hold(lake, "embeddings", "model_id", mid):
        for c in (c for c in cols if c in HEAD_COLUMNS):
            if _non_null_rows(lake, "embeddings", c) == 0:
                head = HEAD_COLUMNS[c]
                raise JobError(
                    f"the recipe reads {c}, which no embedding has: embed writes it when "
                    f"given a score head, `lakecurate embed --{head}-head FILE.pth` (config "
                    f"embed.heads.{head}); rows embedded before that have none"
                )
        return
    held = set()
    if lake.exists("embeddings"):
        held = {
            a.get(k)
            for a in lake.add_actions("embeddings")
            for k in ("min.model_id", "max.model_id")
        }
    raise JobError(
        f"the recipe reads {', '.join(cols)} from table embeddings, which has no rows for "
        f"model {mid} (it holds: {', '.join(sorted(map(str, held - {None}))) or 'nothing'}); "
        f"run `lakecurate embed --model {cfg.model.name} --pretrained {cfg.model.pretrained}` first"
    )


def _check_signals(lake: Lake, cfg: Config, cols: list[str]) -> None:
    for c in cols:
        if not lake.exists("signals") or _non_null_rows(lake, "signals", c) == 0:
            writer = (
                "semantic dedup writes it: run `lakecurate dedup --methods semantic`"
                if c in ("semantic_cluster", "centroid_sim")
                else "dedup writes it: run `lakecurate dedup`"
            )
            raise JobError(
                f"the recipe reads {c} from table signals, which has no {c} values; {writer} first"
            )


def _methods(cols: list[str]) -> list[str]:
    """The duplicate methods of `dup_<method>` / `dupk_<method>` columns, in order."""
    names = [c.split("_", 1)[1] for c in cols if c.startswith(("dup_", "dupk_"))]
    return list(dict.fromkeys(names))


def _check_duplicates(lake: Lake, cfg: Config, cols: list[str]) -> None:
    methods = _methods(cols)
    if not lake.exists("duplicates"):
        raise JobError(
            "the recipe drops duplicates but table duplicates does not exist: run "
            f"`lakecurate dedup --methods {','.join(methods)}` first"
        )
    for m in methods:
        if not _stats_may_hold(lake, "duplicates", "method", m):
            log.warning(
                "duplicates has no rows of method %s: either none were found or "
                "`lakecurate dedup --methods %s` has not run; not_duplicate drops none for it",
                m,
                m,
            )


_EPS = re.compile(r"(?:^|_)eps([0-9][0-9.e+-]*)(?:_|$)")


def check_semantic_eps(spark, ctx: JobContext, recipe: Recipe) -> None:
    """Fail when a rule asks for semantic verdicts made at another `dedup.semantic_eps`.

    The eps is read from the verdicts' `config_slug` (dedup writes `..._eps<eps>_...`).
    """
    rules = enumerate(recipe.rules, 1)
    wanted = [(i, r.semantic_eps) for i, r in rules if getattr(r, "semantic_eps", None)]
    if not wanted:
        return
    rows = (
        ctx.read(spark, "duplicates")
        .filter(F.col("method") == "semantic")
        .select("config_slug")
        .distinct()
        .collect()
    )
    found = {m.group(1) for r in rows if r[0] and (m := _EPS.search(r[0]))}
    for position, eps in wanted:
        other = sorted(f for f in found if abs(float(f) - eps) > 1e-9)
        if other:
            raise JobError(
                f"recipe {recipe.name}, rule {position} (not_duplicate) wants semantic "
                f"duplicates found at dedup.semantic_eps {eps:g} (cosine {1 - eps:g}), but "
                f"table duplicates holds semantic verdicts made at eps {', '.join(other)}: set "
                f"`dedup: {{semantic_eps: {eps:g}}}` in the config and run "
                "`lakecurate dedup --methods semantic`"
            )
        if not found:
            log.warning("cannot tell the eps of the semantic verdicts (no config_slug)")


# `read(table) -> DataFrame` gives the rows a frame is built from: the whole table, or
# only some uids' rows (`lakecurate.curation.selection.incremental.restricted_reader`).
Read = Callable[[str], DataFrame]


def _attach_embeddings(read: Read, cfg: Config, frame: DataFrame, cols: list[str]) -> DataFrame:
    mid = model_id(cfg.model)
    emb = read("embeddings").filter(F.col("model_id") == mid).select("uid", *cols)
    return frame.join(emb, "uid", "left")


def _attach_signals(read: Read, cfg: Config, frame: DataFrame, cols: list[str]) -> DataFrame:
    return frame.join(read("signals").select("uid", *cols), "uid", "left")


def _attach_duplicates(read: Read, cfg: Config, frame: DataFrame, cols: list[str]) -> DataFrame:
    methods = _methods(cols)
    dups = (
        read("duplicates")
        .filter(F.col("method").isin(methods) & (F.col("keeper_uid") != F.col("uid")))
        .groupBy("uid")
        .pivot("method", methods)
        .agg(
            # a non-keeper without a recorded similarity is a duplicate at any threshold
            F.max(F.coalesce(F.col("similarity").cast("double"), F.lit(1.0))).alias("s"),
            F.max("keeper_uid").alias("k"),
        )
    )
    wanted = set(cols)
    picked = [
        F.col(f"{m}_{part}").alias(f"{prefix}{m}")
        for m in methods
        for part, prefix in (("s", "dup_"), ("k", "dupk_"))
        if f"{prefix}{m}" in wanted
    ]
    return frame.join(dups.select("uid", *picked), "uid", "left")


def _check_concepts(lake: Lake, cfg: Config, cols: list[str]) -> None:
    mv = concept_counts.require_metadata_version(lake)
    if not lake.exists("concepts") or not _stats_may_hold(lake, "concepts", "metadata_version", mv):
        raise JobError(
            f"the recipe reads concept matches, and table concepts has none for metadata "
            f"v{mv}: run `lakecurate concepts` first"
        )


def _attach_concepts(read: Read, cfg: Config, frame: DataFrame, cols: list[str]) -> DataFrame:
    mv = concept_counts.require_metadata_version(Lake(cfg.lake.path, cfg.lake.engine))
    rows = read("concepts").filter(F.col("metadata_version") == mv).select("uid", *cols)
    return frame.join(rows, "uid", "left")


def balance_counts(
    lake: Lake, recipe: Recipe, thresholds: Thresholds
) -> tuple[int, dict[int, int]] | None:
    """Give each `balance` rule the per-entry counts of the whole lake (`concept_counts`,
    newest metadata version): its probabilities follow the counts on every run. Returns
    the last balance rule's t and the counts (None: the recipe does not balance)."""
    labels = rule_labels(recipe.rules)
    rules = [
        (lab, r) for lab, r in zip(labels, recipe.rules, strict=True) if isinstance(r, BalanceRule)
    ]
    if not rules:
        return None
    counts = concept_counts.entry_counts(lake, concept_counts.require_metadata_version(lake))
    for label, rule in rules:
        thresholds.frozen[label] = head_counts(rule.t, counts)
    return rules[-1][1].t, counts


def balance_summary(labeled: DataFrame, balance: tuple[int, dict[int, int]] | None) -> dict:
    """Head and tail entries' matches in the pool and among the kept pairs (empty
    without a balance rule): the funnel's view of what balancing did."""
    if balance is None:
        return {}
    t, pool = balance
    rows = (
        labeled.filter(F.col("reason").isNull())
        .select(F.explode("entry_ids").alias("e"))
        .groupBy("e")
        .count()
        .collect()
    )
    kept = {int(r["e"]): int(r["count"]) for r in rows}
    return {"balance": concept_counts.head_tail(t, pool, kept)}


@dataclass(frozen=True)
class InputTable:
    """A table the recipe may read: a pre-Spark check and a join onto the frame."""

    check: Callable[[Lake, Config, list[str]], None]
    attach: Callable[..., DataFrame] | None


INPUTS: dict[str, InputTable] = {
    "pairs": InputTable(_check_pairs, None),  # the base frame
    "embeddings": InputTable(_check_embeddings, _attach_embeddings),
    "signals": InputTable(_check_signals, _attach_signals),
    "duplicates": InputTable(_check_duplicates, _attach_duplicates),
    "concepts": InputTable(_check_concepts, _attach_concepts),
}


def needed_columns(recipe: Recipe) -> dict[str, list[str]]:
    """table -> the columns the recipe's rules read from it (pairs always present)."""
    by_table: dict[str, list[str]] = {"pairs": []}
    for rule in recipe.rules:  # in recipe order, so errors follow the recipe
        for c in rule.columns():
            cols = by_table.setdefault(COLUMNS[c], [])
            if c != "uid" and c not in cols:
                cols.append(c)
    return by_table


def check_inputs(recipe: Recipe, cfg: Config, lake: Lake) -> dict[str, list[str]]:
    """Fail (before any Spark work) when a table the recipe needs is missing."""
    tables = needed_columns(recipe)
    for table, cols in tables.items():
        INPUTS[table].check(lake, cfg, cols)
    return tables


def build_frame(read: Read, cfg: Config, tables: dict[str, list[str]]) -> DataFrame:
    """One row per uid of `read("pairs")` with every column the recipe's rules read."""
    derived = [PAIR_COLUMNS.get(c, lambda c=c: F.col(c))().alias(c) for c in tables["pairs"]]
    frame = read("pairs").select("uid", *derived)
    for table, cols in tables.items():
        if INPUTS[table].attach is not None:
            frame = INPUTS[table].attach(read, cfg, frame, cols)
    return frame


def _log_missing(frame: DataFrame, tables: dict[str, list[str]]) -> int:
    """Count the rows (and warn about columns) an input table left null; return rows."""
    cols = [c for t, cs in tables.items() if t not in ("pairs", "duplicates") for c in cs]
    aggs = [F.count_if(F.col(c).isNull()).alias(c) for c in cols]
    row = frame.agg(F.count("*").alias("_n"), *aggs).first()
    for c in cols:
        if row[c]:
            msg = "%d of %d pairs have no %s (from %s); rules reading it drop them"
            log.warning(msg, row[c], row["_n"], c, COLUMNS[c])
    return int(row["_n"])


# --- the job ----------------------------------------------------------------------------


def add_arguments(p) -> None:
    add_recipe_argument(p)
    add_model_arguments(p)  # the model whose embeddings and CLIP scores rules read
    p.add_argument(
        "--full",
        action="store_true",
        default=None,
        help="label every pair again (by default a run after an earlier one labels only "
        "the pairs whose inputs changed since, and those linked to them)",
    )
    p.add_argument(
        "--refit",
        action="store_true",
        default=None,
        help="fit the percentile rules' thresholds afresh (they are otherwise frozen "
        "until the lake grows by select.refit_growth)",
    )


def add_recipe_argument(p) -> None:
    p.add_argument(
        "--recipe",
        default=None,
        help=f"a built-in recipe ({', '.join(builtin_recipes())}) or a YAML file "
        "(default: select.recipe of the config, `default`)",
    )


def apply_args(cfg: Config, args) -> Config:
    cfg = apply_model_args(cfg, args)
    if getattr(args, "recipe", None):
        cfg = replace(cfg, select={"recipe": args.recipe})
    if getattr(args, "refit", None):
        cfg = replace(cfg, select={"refit": True})
    if getattr(args, "full", None):
        cfg = replace(cfg, select={"full": True})
    # a bad recipe fails here, before a Spark session starts. Missing inputs are checked
    # in run(): refresh applies these arguments before its own ingest/embed/dedup run.
    recipe_for(cfg)
    return cfg


# What a select run's rows depend on, recorded per recipe after each run as
# <lake>/_runs/select-watermark-<recipe_id>.json (written last).
WATERMARK_TABLES = (
    "pairs", "embeddings", "signals", "duplicates", "concepts", "concept_counts", "selection"
)  # fmt: skip
PER_RUN_COUNTS = {"changed": False, "refitted": False, "churn": None}


def watermark(lake: Lake, cfg: Config, recipe: Recipe) -> dict:
    """The versions of select's inputs and output, the recipe, its model and the
    refit rule: equal to the last run's, the selection would come out the same."""
    mid = model_id(cfg.model) if "embeddings" in needed_columns(recipe) else ""
    config = f"{recipe.recipe_id}-{mid}-{cfg.select.refit_growth:g}"
    return table_watermark(lake, WATERMARK_TABLES, config)


def _watermark_name(recipe: Recipe) -> str:
    return f"select-watermark-{recipe.recipe_id}"


def run(spark, cfg: Config) -> JobResult:
    recipe = load_recipe(cfg.select.recipe)
    ctx = JobContext(NAME, cfg)
    if "embeddings" in needed_columns(recipe):
        cfg = ctx.cfg = resolve_model(ctx.lake, cfg)
    tables = check_inputs(recipe, cfg, ctx.lake)
    rid = recipe.recipe_id
    mark = watermark(ctx.lake, cfg, recipe)
    previous = last_run(cfg.lake.path, _watermark_name(recipe))
    if not (cfg.select.refit or cfg.select.full) and previous and previous.get("watermark") == mark:
        return _nothing_new(ctx, recipe, previous)  # a refresh with nothing new: no Spark job
    log.info("select: recipe %s (%s) from %s: %s", recipe.name, rid, recipe.origin, recipe.rules)
    progress.describe(spark, f"recipe {recipe.name}")
    check_semantic_eps(spark, ctx, recipe)
    mid = model_id(cfg.model) if "embeddings" in tables else ""
    history = ctx.lake.history("selection") if ctx.lake.exists("selection") else []
    fit = stored_fit(history, rid)
    labels = rule_labels(recipe.rules)
    why = refit_reason(fit, ctx.lake.count("pairs"), mid, cfg.select.refit_growth, cfg.select.refit)
    if fitted_labels(recipe.rules, labels) and why:
        full = f"the thresholds are fitted again ({why})"
    elif cfg.select.full:
        full = "asked for (select --full)"
    else:
        full = incremental.full_reason(recipe, previous, mark, history)
    if not full:
        inc = incremental.plan(spark, ctx, recipe, tables, previous, mid)
        if isinstance(inc, incremental.Increment):
            return _select_increment(spark, ctx, recipe, tables, inc, fit, previous)
        full = inc
    log.info("select: labelling every pair: %s", full)
    return _select_all(spark, ctx, recipe, tables, fit, why)


def _nothing_new(ctx: JobContext, recipe: Recipe, last: dict) -> JobResult:
    for t, v in last["watermark"]["versions"].items():
        if v is not None and t in INPUTS:  # what this result was computed from
            ctx.result.read_versions[t] = v
    counts = {**last["counts"], **PER_RUN_COUNTS, **churn_counts(NO_CHURN)}
    counts["churn"] = NO_CHURN
    return ctx.done(
        f"recipe {recipe.name} ({recipe.recipe_id}): nothing new since select run "
        f"{last['run_id']} (kept {counts.get('kept', 0):,} of {counts.get('rows', 0):,})",
        **counts,
    )


def _select_all(spark, ctx: JobContext, recipe: Recipe, tables, fit: Fit | None, why) -> JobResult:
    """Label every pair of the lake and make the recipe's rows of `selection` those."""
    cfg, rid = ctx.cfg, recipe.recipe_id
    frame = build_frame(lambda t: ctx.read(spark, t), cfg, tables).persist()
    mid = model_id(cfg.model) if "embeddings" in tables else ""
    labeled = None
    try:
        total = _log_missing(frame, tables)
        labels = rule_labels(recipe.rules)
        thresholds = Thresholds(frozen={} if why or fit is None else dict(fit.values))
        balance = balance_counts(ctx.lake, recipe, thresholds)
        labeled = label_rows(frame, recipe.rules, thresholds).persist()
        steps = funnel(labeled, recipe.rules)
        more = balance_summary(labeled, balance)
        refitted = bool(thresholds.fitted)
        if fitted_labels(recipe.rules, labels):
            if refitted or fit is None:  # (balance alone takes its counts from the lake)
                fit = Fit(thresholds.used, total, mid, ctx.run_id)
                log.info("select: fitted the thresholds of %s (%s)", thresholds.fitted, why)
            else:  # what was used: the frozen fit, and the balance rules' current counts
                fit = replace_fit(fit, values=thresholds.used)
                log.info(
                    "select: thresholds frozen at the fit of run %s (%d pairs)",
                    fit.run_id,
                    fit.rows,
                )
        moved = _churn(spark, ctx, rid, labeled, recipe.rules, labels, refitted)
        dup_drops = duplicate_drops(labeled, recipe.rules)
        out = labeled.select(
            "uid",
            F.lit(rid).alias("recipe_id"),
            F.col("reason").isNull().alias("kept"),
            "reason",
            F.lit(ctx.run_id).alias("run_id"),
        )
        meta = _commit_metadata(ctx, recipe, tables, steps, dup_drops, fit, moved)
        version, changed = ctx.lake.replace_where(
            out, "selection", "recipe_id", rid, ctx.commit, **meta
        )
    finally:
        frame.unpersist()
        if labeled is not None:
            labeled.unpersist()
    return _finish(
        ctx, recipe, total, steps, dup_drops, fit, moved, version, changed, why, refitted, **more
    )


def _select_increment(
    spark, ctx: JobContext, recipe: Recipe, tables, inc, fit: Fit | None, last: dict
) -> JobResult:
    """Label the pairs of `inc` (closed over the cross-row rules), rewrite the recipe's
    rows among them that changed, and carry the last run's figures forward."""
    cfg, rid, rules = ctx.cfg, recipe.recipe_id, recipe.rules
    uids = incremental.uid_frame(spark, inc.uids).persist()
    frame = build_frame(incremental.restricted_reader(spark, ctx, uids, None), cfg, tables)
    frame = frame.persist()
    selected = (
        ctx.read(spark, "selection")
        .filter(F.col("recipe_id") == rid)
        .join(F.broadcast(uids), "uid", "left_semi")
        .select("uid", "kept", "reason")
        .persist()
    )
    labeled = None
    try:
        _log_missing(frame, tables)
        labels = rule_labels(rules)
        thresholds = Thresholds(frozen=dict(fit.values) if fit else {})
        labeled = label_rows(frame, rules, thresholds).persist()
        total = ctx.lake.count("pairs")
        dropped = incremental.combine(
            incremental.drops_by_label(last["counts"]["funnel"]),
            incremental.reason_counts(selected),
            incremental.reason_counts(labeled),
        )
        steps = incremental.funnel_from(labels, total, dropped)
        dup_drops = duplicate_drops(labeled, rules)
        if dup_drops:
            then = incremental.restricted_reader(spark, ctx, uids, inc.since)
            before = build_frame(then, cfg, tables).join(selected.select("uid", "reason"), "uid")
            dup_drops = incremental.combine_duplicate_drops(
                last["counts"]["duplicate_drops"], duplicate_drops(before, rules), dup_drops
            )
        before_kept = selected.filter(F.col("kept")).select("uid")
        moved = churn(before_kept, labeled, rules, labels, False)
        new = labeled.select("uid", F.col("reason").isNull().alias("kept"), "reason")
        old = selected.select("uid", F.col("kept").alias("_k"), F.col("reason").alias("_r"))
        same = F.col("_k").isNotNull() & (F.col("_k") == F.col("kept"))
        same = same & F.col("_r").eqNullSafe(F.col("reason"))
        rows = (
            new.join(old, "uid", "left")
            .filter(~same)
            .select(
                "uid",
                F.lit(rid).alias("recipe_id"),
                "kept",
                "reason",
                F.lit(ctx.run_id).alias("run_id"),
            )
            .persist()
        )
        try:
            changed = rows.count() > 0
            version = ctx.lake.version("selection")
            if changed:
                meta = _commit_metadata(ctx, recipe, tables, steps, dup_drops, fit, moved)
                version = replace_rows(spark, ctx.lake, ctx.commit, "selection", rows, rows, **meta)
        finally:
            rows.unpersist()
    finally:
        for df in (uids, frame, selected, labeled):
            if df is not None:
                df.unpersist()
    log.info("select: labelled %d pairs again (their inputs or linked rows changed)", len(inc.uids))
    return _finish(
        ctx, recipe, total, steps, dup_drops, fit, moved, version, changed, None, False,
        relabelled=len(inc.uids),
    )  # fmt: skip


def _commit_metadata(ctx, recipe: Recipe, tables, steps, dup_drops, fit, moved) -> dict:
    meta = {
        "recipe": recipe.name,
        "recipe_id": recipe.recipe_id,
        "recipe_rules": json.dumps(recipe.canonical()),
        "funnel": json.dumps([s.as_dict() for s in steps]),
        "duplicate_drops": json.dumps(dup_drops),
    }
    if "embeddings" in tables:
        meta["model_id"] = model_id(ctx.cfg.model)
    if fitted_labels(recipe.rules, rule_labels(recipe.rules)):
        meta["thresholds"] = fit.to_json()
    if moved is not None:
        meta["churn"] = json.dumps(moved, sort_keys=True)
    return meta


def _finish(
    ctx, recipe, total, steps, dup_drops, fit, moved, version, changed, why, refitted, **more
) -> JobResult:
    """Record the run (its watermark last) and say what it did."""
    rid = recipe.recipe_id
    if changed:
        ctx.wrote("selection", version)
    kept = steps[-1].rows_out if steps else total
    note = "" if changed else " (selection unchanged: no commit)"
    lines = [f"recipe {recipe.name} ({rid}) kept {kept:,} of {total:,}{note}", format_funnel(steps)]
    log.info("select: funnel of %s over %d pairs\n%s", recipe.name, total, lines[-1])
    lines += [format_duplicate_drops(d) for d in dup_drops]
    if fitted_labels(recipe.rules, rule_labels(recipe.rules)):
        lines.append(
            f"thresholds: {'refitted (' + why + ')' if refitted else 'frozen'}; "
            f"{json.dumps(fit.values, sort_keys=True)}"
        )
    if moved is not None:
        lines.append(format_churn(moved))
    totals = {
        "recipe": recipe.name,
        "recipe_id": rid,
        "rows": total,
        "kept": kept,
        "dropped": total - kept,
        "funnel": [s.as_dict() for s in steps],
        "duplicate_drops": dup_drops,
    }
    if "balance" in more:  # a total, shown again by a run with nothing new
        totals["balance"] = more.pop("balance")
        lines.append(concept_counts.format_head_tail(totals["balance"]))
    record_run(
        ctx.cfg.lake.path,
        _watermark_name(recipe),
        "ok",
        run_id=ctx.run_id,
        watermark=watermark(ctx.lake, ctx.cfg, recipe),
        counts=totals,
    )
    return ctx.done(
        "\n".join(lines),
        **totals,
        changed=changed,
        refitted=refitted,
        churn=moved,
        **churn_counts(moved),
        **more,
    )


NO_CHURN = {"removed": 0, "by_cause": {}, "by_rule": {}}


def churn_counts(c: dict | None) -> dict[str, int]:
    """The churn as flat counts (`churn_removed`, `churn_<cause>`), for run summaries."""
    if c is None:
        return {}
    return {"churn_removed": c["removed"], **{f"churn_{k}": v for k, v in c["by_cause"].items()}}


def _churn(spark, ctx: JobContext, rid: str, labeled, rules, labels, refitted: bool):
    """The churn against the selection of `rid` this run replaces (None: there is none)."""
    if not ctx.lake.exists("selection"):
        return None
    sel = ctx.read(spark, "selection")
    before = sel.filter((F.col("recipe_id") == rid) & F.col("kept")).select("uid")
    return churn(before, labeled, rules, labels, refitted)


def format_churn(c: dict) -> str:
    """One line: how many uids the previous selection kept that this one drops, and why."""
    if not c["removed"]:
        return "churn: none of the previous selection's samples dropped"
    causes = ", ".join(f"{k} {v:,}" for k, v in c["by_cause"].items())
    return f"churn: {c['removed']:,} of the previous selection's samples dropped ({causes})"


def format_duplicate_drops(d: dict) -> str:
    by = ", ".join(f"{m} {n:,}" for m, n in d["dropped_by_method"].items())
    kept = d["duplicates_kept_keeper_dropped_earlier"]
    return (
        f"{d['rule']}: dropped by method: {by}; {kept:,} duplicates kept because their "
        "keeper was dropped by an earlier rule"
    )


build_parser, main = jobkit.entry_points(__name__)


if __name__ == "__main__":
    sys.exit(main())
