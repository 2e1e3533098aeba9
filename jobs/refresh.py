"""`lakecurate refresh [SOURCE ...]`: the nightly incremental run, one per lake at a time.

Runs the stage jobs in order, each at the latest table versions the previous one
left, under the lake's lease (`lakecurate.runtime.lease`):

  ingest   sources (default: the config's `sources`) -> pairs, rejects, sources
           (a source already in the ledger with the same checksum is skipped)
  embed    pairs -> embeddings (only uids without a row for this model_id)
  dedup    pairs, embeddings -> signals, duplicates (new rows against the whole lake)
  concepts pairs, metadata -> concepts, concept_counts (only when the recipe balances
           concepts, MetaCLIP: new captions matched, their counts added)
  select   pairs, embeddings, signals, duplicates -> selection (no commit if unchanged)
  publish  selection, pairs, embeddings -> shards + datasets, ONLY when the hash of the
           kept uids differs from the latest `datasets` row of the dataset name

Every stage is idempotent and writes its completion marker last, so a refresh
killed at any point (even SIGKILL) is completed by running it again: the tables
and the published version then equal those of an uninterrupted run.

Exit codes: 0 done, including "selection unchanged, nothing published";
1 a stage failed, or another refresh holds the lease (the message names it);
2 bad usage or config. `--log-json`/`--log-file` give JSON-lines logs and a final
`refresh_summary` event (rows in/out per stage, versions written, durations).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from lakecurate.runtime import jobkit, progress
from lakecurate.runtime.config import SOURCE_FORMATS, Config, replace
from lakecurate.runtime.errors import ConfigError
from lakecurate.runtime.jobkit import JobContext, JobResult
from lakecurate.runtime.lease import Lease, open_lease
from lakecurate.runtime.logs import (
    RunSummary,
    StageSummary,
    configure_logging,
    event,
    format_run,
)
from lakecurate.runtime.runs import record_run

NAME = "refresh"
HELP = "incremental nightly run: ingest new sources, embed, dedup, select, publish if changed"
NEEDS_SPARK = False  # the lease is taken before a Spark session starts
log = logging.getLogger(__name__)

Counts = dict


def _get(c: Counts, *keys: str) -> int | None:
    vals = [c[k] for k in keys if isinstance(c.get(k), int | float)]
    return int(sum(vals)) if vals else None


@dataclass(frozen=True)
class Stage:
    """One step of the refresh: the job module it runs and how to read its row counts."""

    name: str
    module: str
    rows_in: Callable[[Counts], int | None]
    rows_out: Callable[[Counts], int | None]


STAGES: tuple[Stage, ...] = (
    Stage(
        "ingest",
        "lakecurate.jobs.ingest",
        lambda c: _get(c, "rows_ok", "rows_rejected"),
        lambda c: _get(c, "pairs_added"),
    ),
    Stage(
        "embed",
        "lakecurate.jobs.embed",
        lambda c: _get(c, "embedded", "rejected"),
        lambda c: _get(c, "embedded"),
    ),
    Stage(
        "dedup",
        "lakecurate.jobs.dedup",
        lambda c: _get(c, "new_rows"),  # uids hashed and matched against the lake
        lambda c: _get(c, "duplicates"),
    ),
    Stage(
        "concepts",
        "lakecurate.jobs.concepts",
        lambda c: _get(c, "matched"),  # new captions matched against the metadata
        lambda c: _get(c, "entries"),
    ),
    Stage(
        "select", "lakecurate.jobs.selection", lambda c: _get(c, "rows"), lambda c: _get(c, "kept")
    ),
    Stage("publish", "lakecurate.jobs.publish", lambda c: None, lambda c: _get(c, "num_samples")),
)


# --- command line -------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="default: the config's sources")
    p.add_argument("--format", choices=SOURCE_FORMATS, help="format of the SOURCEs (default auto)")
    p.add_argument("--name", help="dataset name to publish (default: publish.name)")
    p.add_argument("--log-json", action="store_true", default=None, help="JSON-lines logs")
    p.add_argument("--log-file", help="also write the logs (JSON lines) to this file")
    p.add_argument("--lease-timeout", type=int, help="seconds before a lease is stale")
    _job("embed").add_arguments(p)  # --model, --pretrained, --device, ... (same flags as embed)
    _job("selection").add_recipe_argument(p)  # --recipe


def apply_args(cfg: Config, args: argparse.Namespace) -> Config:
    if args.sources:
        fmt = args.format or "auto"
        cfg = replace(cfg, sources=[{"uri": s, "format": fmt} for s in args.sources])
    elif args.format:
        raise ConfigError("--format", "given without SOURCEs; it applies to SOURCEs only")
    refresh = {"log_json": args.log_json, "log_file": args.log_file}
    refresh["lease_timeout_s"] = args.lease_timeout
    cfg = replace(cfg, refresh={k: v for k, v in refresh.items() if v is not None})
    if args.name:
        cfg = replace(cfg, publish={"name": args.name})
    cfg = _job("embed").apply_args(cfg, args)
    return _job("selection").apply_args(cfg, args)


def _job(name: str):
    return importlib.import_module(f"lakecurate.jobs.{name}")


def command(spark, cfg: Config, args: argparse.Namespace) -> int:
    """Logs, lease, then a Spark session; prints the summary (or one JSON document)."""
    configure_logging(cfg.refresh.log_json, cfg.refresh.log_file, getattr(args, "log_level", None))
    with lease_for(cfg) as lease:
        from lakecurate.runtime.session import spark_session

        with spark_session(
            cfg.spark, getattr(args, "log_level", None), cfg.lake.storage_options
        ) as session:
            result = refresh(session, cfg, lease)
    if getattr(args, "json", False):
        print(result.to_json())
    else:
        print(format_run(result.run_id, result.message, result.counts["stages"]))
    return 0


def lease_for(cfg: Config) -> Lease:
    return open_lease(
        cfg.lake.path,
        cfg.refresh.lease_dir,
        owner=f"refresh:{os.environ.get('USER', 'user')}",
        timeout_s=cfg.refresh.lease_timeout_s,
        heartbeat_s=cfg.refresh.heartbeat_s,
    )


# --- the run ------------------------------------------------------------------------------


def run(spark, cfg: Config) -> JobResult:
    """The refresh in an existing session (tests, notebooks): takes the lease itself."""
    with lease_for(cfg) as lease:
        return refresh(spark, cfg, lease)


def refresh(spark, cfg: Config, lease: Lease) -> JobResult:
    ctx = JobContext(NAME, cfg)
    summary = RunSummary(ctx.run_id)
    event(log, "refresh_start", f"refresh {ctx.run_id} on {cfg.lake.path}", run_id=ctx.run_id)
    try:
        for stage in STAGES:
            lease.check()
            st = summary.stage(stage.name)
            # under the refresh's job group when there is one (the CLI), else the stage's
            with progress.stage(spark, stage.name):
                jobs0 = progress.spark_jobs(spark)
                try:
                    skip = skip_reason(spark, cfg, stage.name, ctx)
                    if skip:
                        st.status, st.message = "skipped", skip
                        event(log, "stage_skipped", f"{stage.name}: {skip}", stage=stage.name)
                    else:
                        _run_stage(spark, cfg, stage, st)
                finally:
                    jobs1 = progress.spark_jobs(spark)
                    if jobs0 is not None and jobs1 is not None:
                        st.spark_jobs = jobs1 - jobs0
        summary.outcome = outcome(summary, cfg)
    except BaseException as e:
        summary.outcome = f"failed: {type(e).__name__}: {e}"
        raise
    finally:
        event(log, "refresh_summary", summary.outcome, summary=summary.to_dict())
        log.info("%s", summary.text())
        record_run(
            cfg.lake.path,
            NAME,
            "failed" if summary.outcome.startswith("failed") else "ok",
            run_id=ctx.run_id,
            outcome=summary.outcome,
            stages=summary.to_dict()["stages"],
        )
    for s in summary.stages:
        ctx.result.read_versions.update(
            {t: v for t, v in s.read_versions.items() if t not in ctx.result.read_versions}
        )
        ctx.result.written_versions.update(s.written_versions)
    pub = summary.stages[-1]
    return ctx.done(
        summary.outcome,
        published=pub.status == "ok" and pub.counts.get("published", True) is not False,
        dataset=cfg.publish.name,
        dataset_version=pub.counts.get("version", ctx.result.counts.get("dataset_version")),
        stages=summary.to_dict()["stages"],
    )


def _run_stage(spark, cfg: Config, stage: Stage, st: StageSummary) -> None:
    event(log, "stage_start", f"{stage.name}: started", stage=stage.name)
    t0 = time.time()
    try:
        result: JobResult = jobkit.run_job(_job_module(stage), spark, cfg)
    except BaseException as e:
        st.status, st.seconds, st.message = "failed", time.time() - t0, f"{type(e).__name__}: {e}"
        event(log, "stage_failed", f"{stage.name}: {st.message}", stage=stage.name)
        raise
    st.status, st.seconds = "ok", time.time() - t0
    st.read_versions, st.written_versions = result.read_versions, result.written_versions
    st.counts = {k: v for k, v in result.counts.items() if _scalar(v)}
    st.rows_in, st.rows_out = stage.rows_in(result.counts), stage.rows_out(result.counts)
    st.message = result.message
    event(
        log,
        "stage_done",
        f"{stage.name}: {result.message}",
        stage=stage.name,
        seconds=round(st.seconds, 3),
        rows_in=st.rows_in,
        rows_out=st.rows_out,
        written=st.written_versions,
    )


def _job_module(stage: Stage):
    try:
        return importlib.import_module(stage.module)
    except ModuleNotFoundError as e:
        if e.name != stage.module:
            raise
        from lakecurate.runtime.errors import JobError

        raise JobError(
            f"refresh needs the {stage.name} job ({stage.module}), not installed"
        ) from None


def _scalar(v) -> bool:
    return isinstance(v, str | int | float | bool) or v is None


# --- decisions ----------------------------------------------------------------------------


def skip_reason(spark, cfg: Config, stage: str, ctx: JobContext) -> str:
    """Why `stage` does not run this time ("" = it runs)."""
    fn = SKIP_RULES.get(stage)
    return fn(spark, cfg, ctx) if fn else ""


def _skip_ingest(spark, cfg: Config, ctx: JobContext) -> str:
    if cfg.sources:
        return ""
    if not ctx.lake.exists("pairs"):
        raise ConfigError(
            "sources",
            "no SOURCE given, none in the config, and the lake has no pairs yet: "
            "pass SOURCE ... or list them under `sources:` in the config",
        )
    return "no sources given or configured; refreshing what the lake holds"


def _skip_publish(spark, cfg: Config, ctx: JobContext) -> str:
    new_hash, old = selection_change(spark, cfg, ctx)
    if old is None:
        return ""
    if new_hash == old["selection_hash"]:
        ctx.result.counts["dataset_version"] = old["version"]
        return (
            f"selection unchanged since {cfg.publish.name}@{old['version']} "
            f"(hash {new_hash[:12]}); nothing new to publish"
        )
    return ""


def _skip_concepts(spark, cfg: Config, ctx: JobContext) -> str:
    selection = _job("selection")
    recipe = selection.load_recipe(cfg.select.recipe)
    if "concepts" in selection.needed_columns(recipe):
        return ""
    return f"recipe {recipe.name} matches no concepts"


SKIP_RULES: dict[str, Callable[..., str]] = {
    "ingest": _skip_ingest,
    "concepts": _skip_concepts,
    "publish": _skip_publish,
}


def selection_change(spark, cfg: Config, ctx: JobContext) -> tuple[str, dict | None]:
    """(hash of the current selection, latest `datasets` row of the name or None)."""
    publish = _job("publish")
    lake = ctx.lake
    sel_version = lake.version("selection")
    rid = publish.resolve_recipe_id(spark, lake, cfg, sel_version)
    latest = publish.latest_row(spark, lake, cfg.publish.name)
    new_hash = publish.current_hash(spark, lake, rid, sel_version, latest)
    if latest is None or latest["recipe_id"] != rid:
        return new_hash, None
    return new_hash, latest.asDict()


def outcome(summary: RunSummary, cfg: Config) -> str:
    pub = next(s for s in summary.stages if s.stage == "publish")
    if pub.status == "skipped" or pub.counts.get("published") is False:
        return pub.message
    version = pub.counts.get("version")
    sel = next(s for s in summary.stages if s.stage == "select")
    churned = ""
    if sel.counts.get("churn_removed") is not None:
        causes = [
            f"{k[len('churn_') :]} {v}"
            for k, v in sorted(sel.counts.items())
            if k.startswith("churn_") and k != "churn_removed"
        ]
        churned = f"; churn {sel.counts['churn_removed']}" + (
            f" ({', '.join(causes)})" if causes else ""
        )
    return f"published {cfg.publish.name}@{version} ({pub.rows_out} samples{churned})"


build_parser, main = jobkit.entry_points(__name__)


if __name__ == "__main__":
    sys.exit(main())
