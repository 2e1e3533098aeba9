"""`lakecurate dedup [--methods exact,phash,minhash,semantic]`: find duplicate groups.

Reads `pairs` (uid, image, caption, width, height, image_sha256) and, for semantic
dedup and the clip_score keeper, `embeddings` of the configured model. Writes:

* `signals`: one row per uid (pHash, caption identity and counts, size, aspect,
  resolution), computed for uids not in the table yet, plus the `semantic_cluster` /
  `centroid_sim` columns set by semantic dedup.
* `duplicates`: one row per (uid, method) for every member of a group of two or more,
  with its keeper (`keeper_uid == uid` for a keeper) and the similarity to it. Exact
  groups have one keeper; a near-duplicate group (components chain) may have several:
  greedy keepers in rank order, each duplicate within the method's threshold of its
  keeper (`udfs/keepers.py`). Methods: `exact` (image bytes), `exact_caption` (normalized caption; run by
  `exact`), `phash`, `minhash`, `semantic`. Nothing is ever deleted from `pairs`.
* `dedup_index`: per (uid, method), the configuration the uid was matched under (and
  its MinHash signature), written after the method's duplicates: the completion
  marker of a uid.
* `semantic_centroids`: the k-means fit semantic dedup assigns new uids to.

Incremental runs. Each method matches only the uids missing from `dedup_index`
(exact: the hash values of new rows; phash: the lake's hashes streamed past an index
of the new ones, `udfs/phash_probe.py`, with no shuffle of the lake; minhash: the
buckets of new signatures; semantic: new embeddings against their cluster) and
rebuilds only the groups those matches touch: components of the new edges plus the
touched groups' edges, keepers and similarities of those groups. With
`dedup.stable_keepers` (default) the members matched earlier rank before the new
ones, so earlier verdicts stand and a refresh only adds to the selection, except
where a new row joins two groups; with `false`, keepers are those of a full run and
groups whose keeper changed (a clip score embedded since, another `dedup.keeper`)
are rebuilt too. The rows of
the rebuilt groups of every incremental method replace the old ones in one commit that
rewrites only the Parquet files holding them, then one append to `dedup_index` marks
the new uids (`dedup_groups.write_deferred`); a run with nothing new commits nothing.
With `stable_keepers: false` the result equals a full run over the same rows for
exact, exact_caption and phash (tested). MinHash buckets
larger than `bucket_limit` link their members by leader and neighbour; a new member
is linked to its bucket's leader and neighbours and the old links stay, so where
such buckets are involved, minhash groups can differ slightly from a full run's
(they are never split, and every duplicate is still verified against its keeper).
Re-matching those buckets exactly cost a near-full run on every refresh (half the
lake reached through large buckets at 20k captions). The first run of a method, or
a changed matching configuration (its slug), re-matches everything. After a complete
run with the same settings only the pairs added since can be unmatched (`arrivals`): a
refresh broadcasts their uids into its scans of `signals` and `dedup_index` instead of
joining the lake's uid columns.

Semantic: a refit (k-means on a sample, every embedding assigned, all pairs within
each cluster compared, every semantic verdict replaced) happens on the first run, when
the clustering configuration, model, eps or keep policy changed, when the lake holds
more than (1 + `dedup.semantic_refit_growth`) times the embeddings of the last fit,
or after an interrupted refit. Otherwise new uids are assigned to the stored
centroids and compared with the old and new members of their cluster; the clusters
of the last fit stay fixed, so results are those of that fit applied to the new rows
(deterministic), not of a refit on the grown lake.

Keepers are deterministic: `dedup.keeper` order (clip_score desc, resolution desc,
uid asc; missing values last), preceded for semantic groups by the SemDeDup keep
policy (`hard`: farthest from the cluster centroid, `easy`: nearest, `random`: a
seeded hash of the uid).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecurate.curation.dedup import methods as dedup_methods
from lakecurate.curation.dedup import signals as signal_rows
from lakecurate.curation.dedup.groups import DedupRun, method_counts, write_deferred
from lakecurate.curation.models import (
    add_model_arguments,
    apply_model_args,
    model_id,
    resolve_model,
)
from lakecurate.deltaio.keyed import BROADCAST_UIDS
from lakecurate.deltaio.lake import Lake
from lakecurate.runtime import jobkit, progress
from lakecurate.runtime.config import Config, config_hash, replace
from lakecurate.runtime.errors import ConfigError, JobError
from lakecurate.runtime.jobkit import JobContext, JobResult
from lakecurate.runtime.runs import last_run, record_run, table_watermark, unchanged_since

NAME = "dedup"
HELP = "find exact, perceptual, caption and semantic duplicate groups (never deletes)"
log = logging.getLogger(__name__)


def writes(args: argparse.Namespace) -> bool:
    """`dedup explain` only reads."""
    return getattr(args, "action", None) != "explain"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        nargs="?",
        choices=["explain"],
        help="explain UID: show a pair's verdicts (each method's keeper and similarity, "
        "the pHash verification figures, the selections) instead of running dedup",
    )
    p.add_argument("uid", nargs="?", help="the pair to explain")
    p.add_argument(
        "--methods",
        help="comma-separated: exact,phash,minhash,semantic (exact includes exact_caption); "
        "default: the config's dedup.methods (exact,phash)",
    )
    add_model_arguments(p)  # semantic dedup reads this model's embeddings


def command(spark, cfg: Config, args: argparse.Namespace):
    """`dedup` runs the job; `dedup explain UID` prints a pair's verdicts."""
    if getattr(args, "action", None) != "explain":
        return run(spark, cfg)
    from lakecurate.curation.dedup.explain import explain

    ex = explain(spark, Lake(cfg.lake.path), args.uid)
    if getattr(args, "json", False):
        print(json.dumps(ex.to_json(), default=str))
    else:
        print("\n".join(ex.lines()))
    return 0


def apply_args(cfg: Config, args: argparse.Namespace) -> Config:
    cfg = apply_model_args(cfg, args)
    if getattr(args, "action", None) == "explain":
        if not args.uid:
            raise ConfigError("dedup explain", "name the uid to explain: dedup explain UID")
        return cfg
    if getattr(args, "uid", None):
        raise ConfigError("dedup", f"unexpected argument {args.uid!r} (did you mean explain?)")
    if getattr(args, "methods", None):
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        if not methods:
            raise ConfigError("--methods", "name at least one of exact, phash, minhash, semantic")
        cfg = replace(cfg, dedup={"methods": methods})
    check_inputs(Lake(cfg.lake.path), cfg)  # a missing input fails before Spark starts
    return cfg


# --- inputs and signals -----------------------------------------------------------------


def check_inputs(lake: Lake, cfg: Config) -> None:
    """Fail before any Spark work when a required table is missing."""
    if not lake.exists("pairs"):
        raise JobError(f"lake {lake.root} has no `pairs` table: run `lakecurate ingest` first")
    if "semantic" in cfg.dedup.methods:
        cfg = resolve_model(lake, cfg)
        mid = model_id(cfg.model)
        held = lake.exists("embeddings") and any(
            (a.get("min.model_id") or "") <= mid <= (a.get("max.model_id") or "")
            for a in lake.add_actions("embeddings")
        )
        if not held:
            raise JobError(
                f"semantic dedup needs image embeddings of model {mid} in table embeddings "
                f"and there are none: run `lakecurate embed --model {cfg.model.name} "
                f"--pretrained {cfg.model.pretrained}` first (or leave semantic out of --methods)"
            )


def keeper_ranks(spark, ctx: JobContext, cfg: Config, signals: DataFrame) -> tuple[DataFrame, ...]:
    """The sources of the keeper rank columns, each (uid, its column): `resolution` from
    `signals`, `clip_score` of the configured model from `embeddings` (null without)."""
    resolution = signals.select("uid", "resolution")
    if "clip_score" in cfg.dedup.keeper and ctx.lake.exists("embeddings"):
        mid = model_id(cfg.model)
        emb = ctx.read(spark, "embeddings").filter(F.col("model_id") == mid)
        return resolution, emb.select("uid", "clip_score")
    return (resolution.withColumn("clip_score", F.lit(None).cast("float")),)


# --- the job ------------------------------------------------------------------------------


def expand_methods(methods: tuple[str, ...]) -> list[str]:
    """Config methods -> `duplicates` method names (exact brings exact_caption along)."""
    out: list[str] = []
    for m in methods:
        out += ["exact", "exact_caption"] if m == "exact" else [m]
    return list(dict.fromkeys(out))


# What a dedup run's verdicts depend on: recorded after each run as
# <lake>/_runs/dedup-watermark.json (written last: a run that dies leaves the old one).
WATERMARK = "dedup-watermark"
WATERMARK_TABLES = (
    "pairs", "embeddings", "signals", "duplicates", "dedup_index", "semantic_centroids"
)  # fmt: skip
PER_RUN_COUNTS = ("new_rows", "semantic_refit", "semantic_assigned")  # the rest are totals


def watermark(lake, cfg: Config) -> dict:
    """The versions of dedup's inputs and outputs and the hash of its configuration (the
    dedup section and the model that ranks keepers)."""
    return table_watermark(lake, WATERMARK_TABLES, _config(cfg))


def _config(cfg: Config) -> str:
    return f"{config_hash(cfg.dedup)}-{config_hash(cfg.model)}"


def unchanged_since_last_run(ctx: JobContext, cfg: Config) -> dict | None:
    """The last run's record when nothing changed since it (`watermark`), else None."""
    return unchanged_since(cfg.lake.path, WATERMARK, watermark(ctx.lake, cfg))


def arrivals(spark, ctx: JobContext, cfg: Config) -> DataFrame | None:
    """The uids of the `pairs` rows added since the last complete run with the same
    settings, persisted (None: a first run, other settings since, `pairs` rewritten
    since, or a bulk load).

    That run matched every pair of the version it read with every method it ran, so
    only these can lack a `signals` row or an index row: a refresh looks them up instead
    of joining the lake's uid columns. Semantic dedup does not use them (an embedding
    may arrive after its pair)."""
    last = last_run(cfg.lake.path, WATERMARK) or {}
    through = (last.get("matched_through") or {}).get("pairs")
    if through is None or (last.get("watermark") or {}).get("config") != _config(cfg):
        return None
    uids, files = ctx.read_added(spark, "pairs", through, ["uid"])
    if files is None:
        return None
    uids = uids.persist()
    if uids.count() > BROADCAST_UIDS:
        uids.unpersist()
        return None
    return uids


def run(spark, cfg: Config) -> JobResult:
    ctx = JobContext(NAME, cfg)
    if "semantic" in expand_methods(cfg.dedup.methods):
        cfg = ctx.cfg = resolve_model(ctx.lake, cfg)
    check_inputs(ctx.lake, cfg)
    last = unchanged_since_last_run(ctx, cfg)
    if last is not None:  # a refresh with nothing new: no Spark job at all
        log.info(
            "dedup: nothing new since run %s (same table versions and settings)", last["run_id"]
        )
        counts = dict(last.get("counts", {}), new_rows=0)
        counts |= {k: 0 for k in PER_RUN_COUNTS if k in counts}
        return ctx.done(f"nothing new since dedup run {last['run_id']}", **counts)
    arrived = arrivals(spark, ctx, cfg)  # records the pairs version it looked at
    pairs = ctx.read(spark, "pairs", ctx.result.read_versions.get("pairs"))
    added = signal_rows.add_missing(spark, ctx, pairs, arrived)
    if "phash" in cfg.dedup.methods and signal_rows.phash_rematches(
        spark, ctx, dedup_methods.phash_slug(cfg)
    ):
        n = signal_rows.refresh_stale(spark, ctx, pairs)
        log.info("dedup: recomputed %d signals rows made by an older verification", n)
    # not cached: each method reads its few columns (the table holds the verification
    # thumbnails, kilobytes a row)
    signals = ctx.lake.read(spark, "signals")
    state = DedupRun(spark, ctx, cfg, pairs, signals, keeper_ranks(spark, ctx, cfg, signals))
    state.arrivals = arrived
    counts: dict[str, int] = {"rows": ctx.lake.count("signals"), "new_rows": added}
    try:
        for method in expand_methods(cfg.dedup.methods):
            t0 = time.perf_counter()
            progress.describe(spark, f"{method} over {counts['rows']:,} rows")
            with state.method():
                counts.update(dedup_methods.METHODS[method](state))
            log.info("dedup: %s in %.1f s", method, time.perf_counter() - t0)
        t0 = time.perf_counter()
        write_deferred(state)
        log.info("dedup: incremental changes written in %.1f s", time.perf_counter() - t0)
    finally:
        state.release()
        if arrived is not None:
            arrived.unpersist()
    counts |= method_counts(state, expand_methods(cfg.dedup.methods))
    counts["duplicates"] = sum(v for k, v in counts.items() if k.endswith("_duplicates"))
    methods = ", ".join(expand_methods(cfg.dedup.methods))
    record_run(
        cfg.lake.path,
        WATERMARK,
        "ok",
        run_id=ctx.run_id,
        watermark=watermark(ctx.lake, cfg),
        matched_through={"pairs": ctx.result.read_versions["pairs"]},
        counts=counts,
    )
    return ctx.done(f"{counts['duplicates']} duplicate rows over methods {methods}", **counts)


build_parser, main = jobkit.entry_points(__name__)


if __name__ == "__main__":
    sys.exit(main())
