"""`lakecurate embed`: CLIP image/text embeddings and CLIP score for every pair.

Reads `pairs` (uid, caption, image, source_uri, source_key), `embeddings` and `rejects`.
Writes `embeddings` (uid, model_id, image_emb, text_emb, clip_score, run_id,
embedded_at) for the uids of `pairs` that have no row for this `model_id` yet, and a
`rejects` row (stage `embed`) for each image that fails to decode here. After a
complete run of the model, the next one looks only at the `pairs` files added since
(and the `embeddings` / `rejects` rows added since): a +1% night reads about 1% of the
uids and of the image bytes, whatever the lake holds (`pending_uids`).

* `model_id` = `<name>/<weights>/<precision>` (`lakecurate.curation.models.model_id`); a second
  model adds its own rows, a re-run adds none. Uids already rejected at the embed
  stage are not retried (decoding the same bytes fails the same way).
* `image_emb`/`text_emb` are L2-normalised float32 lists (4 bytes a dimension: 2 KiB
  a pair for ViT-B-32); `clip_score` is their cosine.
* Weights are checked on the driver, within seconds, before any Spark work: an
  unknown tag, a missing file or an unreachable hub is a ConfigError saying how to
  point at a local checkpoint. Random weights (`--pretrained none`) are logged loudly.
* Device and cluster settings: see `lakecurate.udfs.clip` (one GPU per executor).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Any

from lakecurate.curation.models import (
    add_model_arguments,
    apply_model_args,
    ensure_weights,
    model_id,
    resolve_device,
    resolve_model,
    resolve_precision,
)
from lakecurate.deltaio.keyed import BROADCAST_UIDS, rows_for_uids
from lakecurate.runtime import jobkit, progress
from lakecurate.runtime.config import Config, ModelConfig, replace
from lakecurate.runtime.errors import ConfigError, JobError
from lakecurate.runtime.jobkit import JobContext, JobResult
from lakecurate.runtime.runs import last_run, record_run
from lakecurate.udfs.clip import ClipSpec, clip_udf

NAME = "embed"
WRITES = True
HELP = "compute CLIP image/text embeddings and CLIP scores for pairs not yet embedded"
ROWS_PER_TASK_BATCHES = 16  # a task gets about this many model batches (>= one per core)
REQUIRED_PAIRS_COLUMNS = ("uid", "caption", "image", "source_uri", "source_key")

log = logging.getLogger(__name__)

FLAGS = {  # flag dest -> ModelConfig key (besides --model/--pretrained)
    "device": "device",
    "precision": "precision",
    "batch_size": "batch_size",
    "decode_threads": "decode_threads",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--batch-size", type=int, help="images per model batch")
    p.add_argument(
        "--commit-every",
        type=int,
        help="pairs per commit (default 200000): a killed run keeps them",
    )
    p.add_argument("--decode-threads", type=int, help="JPEG decode threads per task")
    for name, what in (
        ("aesthetic", "an aesthetic score"),
        ("unsafe", "an unsafe-content probability"),
    ):
        p.add_argument(
            f"--{name}-head",
            metavar="PTH",
            help=f"a LAION-format head (PyTorch state dict) giving {what} per image, "
            f"stored as embeddings.{name}_score (config: embed.heads.{name})",
        )


def apply_args(cfg: Config, args: argparse.Namespace) -> Config:
    cfg = apply_model_args(cfg, args)
    changes = {key: getattr(args, dest) for dest, key in FLAGS.items()}
    changes = {k: v for k, v in changes.items() if v is not None}
    if getattr(args, "commit_every", None) is not None:
        cfg = replace(cfg, embed={"commit_every": args.commit_every})
    heads = {n: getattr(args, f"{n}_head", None) for n in ("aesthetic", "unsafe")}
    heads = {n: p for n, p in heads.items() if p}
    if heads:
        cfg = replace(cfg, embed={"heads": {**cfg.embed.heads, **heads}})
    return replace(cfg, model=changes) if changes else cfg


def _gpu_scheduled(spark) -> bool:
    conf = spark.sparkContext.getConf()
    return float(conf.get("spark.task.resource.gpu.amount", "0") or 0) > 0


def check_heads(heads: dict, model_name: str) -> tuple[tuple[str, str], ...]:
    """Load each score head on the driver (a bad file fails before Spark work) and check
    that it takes the model's embedding size; (name, absolute path) pairs."""
    import open_clip

    from lakecurate.udfs.clip import register_model_configs
    from lakecurate.udfs.heads import HeadError, load_head

    register_model_configs()
    dim = (open_clip.get_model_config(model_name) or {}).get("embed_dim")
    out = []
    for name, path in sorted(heads.items()):
        path = os.path.abspath(os.path.expanduser(path))
        try:
            head = load_head(name, path)
        except HeadError as e:
            raise ConfigError(f"embed.heads.{name}", str(e)) from e
        if dim is not None and head.input_size != dim:
            raise ConfigError(
                f"embed.heads.{name}",
                f"{path} takes embeddings of size {head.input_size}, but {model_name} makes "
                f"{dim}: use a head trained on this model's image embeddings",
            )
        out.append((name, path))
    return tuple(out)


def plan(spark, mcfg: ModelConfig, heads: dict | None = None) -> tuple[str, ClipSpec]:
    """Check weights (and score heads) and resolve device/precision on the driver:
    (model_id, ClipSpec)."""
    checked = check_heads(heads or {}, mcfg.name)
    _, offline = ensure_weights(mcfg)
    device = resolve_device(mcfg, gpu_scheduled=_gpu_scheduled(spark))
    precision = resolve_precision(mcfg, device)
    task_cpus = int(spark.sparkContext.getConf().get("spark.task.cpus", "1"))
    spec = ClipSpec(
        name=mcfg.name,
        pretrained=mcfg.pretrained,
        precision=precision,
        device=mcfg.device,
        batch_size=mcfg.batch_size,
        decode_threads=mcfg.decode_threads,
        torch_threads=task_cpus,
        hub_offline=offline,
        heads=checked,
    )
    return model_id(mcfg, device), spec


# After a complete run of a model: the versions of `pairs` it read and of `embeddings`
# and `rejects` it left, in <lake>/_runs/embed-done-<model hash>.json (written last).
DONE_TABLES = ("pairs", "embeddings", "rejects")


def _done_name(mid: str) -> str:
    return f"embed-done-{hashlib.sha256(mid.encode()).hexdigest()[:12]}"


@dataclass
class Pending:
    """The uids to embed (`uids`, a narrow frame) and the `pairs` files that can hold
    them (`files`; None: any file of `pairs@version`)."""

    uids: Any
    version: int
    files: list[str] | None


def pending_uids(ctx: JobContext, spark, mid: str) -> Pending:
    """The uids of pairs with no embedding for `mid` and no embed-stage reject (narrow:
    no image bytes are read to find them).

    After a complete run of `mid`, only uids of the `pairs` files added since the
    version it read can be pending, and only rows added to `embeddings` / `rejects`
    since it finished can cover them: a refresh reads those files, not the lake's uid
    columns. A table rewritten since (not append-only) is read whole, and when that is
    `pairs`, so are the tables that cover its uids.
    """
    from pyspark.sql import functions as F

    if not ctx.lake.exists("pairs"):
        raise JobError(f"lake {ctx.lake.root} has no `pairs` table: run `lakecurate ingest` first")
    done = last_run(ctx.cfg.lake.path, _done_name(mid)) or {}
    since = done.get("versions") or {}
    pairs, files = ctx.read_added(spark, "pairs", since.get("pairs"), ["uid"])
    if files is None:  # every pair (first run, or `pairs` rewritten: a compaction, say)
        since = {}  # so every embedding and reject can cover one
    emb, _ = ctx.read_added(spark, "embeddings", since.get("embeddings"), ["uid", "model_id"])
    rej, _ = ctx.read_added(spark, "rejects", since.get("rejects"), ["uid", "stage"])
    embedded = emb.filter(F.col("model_id") == mid).select("uid")
    rejected = rej.filter(F.col("stage") == NAME).select("uid").distinct()
    if files is not None:  # a few new uids: broadcast them into the other scans
        embedded = embedded.join(F.broadcast(pairs), "uid", "left_semi")
        rejected = rejected.join(F.broadcast(pairs), "uid", "left_semi")
    uids = pairs.join(embedded, "uid", "left_anti").join(rejected, "uid", "left_anti")
    return Pending(uids, ctx.result.read_versions["pairs"], files)


def record_done(ctx: JobContext, mid: str, pairs_version: int) -> None:
    """Every uid of `pairs@pairs_version` now has an embedding of `mid` or a reject."""
    versions = {"pairs": pairs_version}
    versions |= {t: ctx.lake.version(t) for t in DONE_TABLES if t != "pairs"}
    record_run(ctx.cfg.lake.path, _done_name(mid), "ok", run_id=ctx.run_id, versions=versions)


def pending(ctx: JobContext, spark, todo: Pending, uids, n: int):
    """The pairs columns the model needs for `uids` (`n` of them, part of `todo`): the
    new files when known, else only the `pairs` files that hold them
    (`lakecurate.deltaio.keyed.rows_for_uids`)."""
    from pyspark.sql import functions as F

    cols = REQUIRED_PAIRS_COLUMNS
    if todo.files is not None and n <= BROADCAST_UIDS:
        rows = ctx.lake.read_files(spark, "pairs", todo.files, list(cols))
        return rows.join(F.broadcast(uids), "uid", "left_semi")
    return rows_for_uids(spark, ctx.lake, "pairs", todo.version, uids, n, cols)


def compute(spark, todo, n: int, spec: ClipSpec):
    """The UDF over `todo`, spread so every core gets work; persisted (used twice)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    per_task = spec.batch_size * ROWS_PER_TASK_BATCHES
    parts = max(spark.sparkContext.defaultParallelism, math.ceil(n / per_task))
    udf = clip_udf(spec, progress.row_counter())
    out = todo.repartition(parts).withColumn("r", udf(F.col("image"), F.col("caption")))
    return out.select("uid", "source_uri", "source_key", "r.*").persist(
        StorageLevel.MEMORY_AND_DISK
    )


def embedding_rows(out, mid: str, run_id: str):
    from pyspark.sql import functions as F

    return out.filter(F.col("reject_reason").isNull()).select(
        "uid",
        F.lit(mid).alias("model_id"),
        "image_emb",
        "text_emb",
        "clip_score",
        "aesthetic_score",
        "unsafe_score",
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("embedded_at"),
    )


def reject_rows(out, run_id: str):
    from pyspark.sql import functions as F

    return out.filter(F.col("reject_reason").isNotNull()).select(
        "source_uri",
        "source_key",
        F.col("reject_reason").alias("reason"),
        F.col("reject_detail").alias("detail"),
        F.lit(NAME).alias("stage"),
        "uid",
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("rejected_at"),
    )


def run(spark, cfg: Config) -> JobResult:
    ctx = JobContext(NAME, cfg)
    cfg = resolve_model(ctx.lake, cfg)
    mid, spec = plan(spark, cfg.model, cfg.embed.heads)  # fails in seconds on bad weights
    log.info("embed: model_id=%s, %d torch threads per task", mid, spec.torch_threads)
    todo = pending_uids(ctx, spark, mid)
    uids = todo.uids.persist()
    n = uids.count()
    if n == 0:
        uids.unpersist()
        record_done(ctx, mid, todo.version)
        return ctx.done(f"nothing to embed for {mid}", model_id=mid, embedded=0, rejected=0)
    chunks = math.ceil(n / cfg.embed.commit_every)
    log.info("embed: %d pairs to embed with %s, in %d commit(s)", n, mid, chunks)
    embedded = rejected = 0
    try:
        for i, part in enumerate(chunked(uids, chunks)):
            if chunks > 1:  # one chunk is `uids` itself, already cached
                part = part.persist()
            m = part.count() if chunks > 1 else n
            said = f"chunk {i + 1}/{chunks}: " if chunks > 1 else ""
            progress.describe(spark, f"{said}{m:,} of {n:,} pairs, {mid}", rows=m)
            e, r = embed_chunk(spark, ctx, pending(ctx, spark, todo, part, m), m, spec, mid)
            if chunks > 1:
                part.unpersist()
            embedded, rejected = embedded + e, rejected + r
            if chunks > 1:
                log.info("embed: committed chunk %d/%d (%d pairs)", i + 1, chunks, e + r)
    finally:
        uids.unpersist()
    record_done(ctx, mid, todo.version)
    message = f"embedded {embedded} pairs with {mid}"
    return ctx.done(message, model_id=mid, embedded=embedded, rejected=rejected)


def chunked(uids, chunks: int):
    """`uids` cut into `chunks` parts by a hash of the uid (stable across re-runs)."""
    from pyspark.sql import functions as F

    if chunks == 1:
        yield uids
        return
    part = F.pmod(F.xxhash64("uid"), F.lit(chunks))
    for i in range(chunks):
        yield uids.filter(part == i)


def embed_chunk(spark, ctx: JobContext, rows, n: int, spec: ClipSpec, mid: str) -> tuple[int, int]:
    """Embed the `n` pairs of `rows` and commit them (embeddings, then rejects): a run
    killed later keeps them. Returns (embedded, rejected)."""
    out = compute(spark, rows, n, spec)
    try:
        bad = out.filter(out.reject_reason.isNotNull()).count()  # runs the model, once
        rows = embedding_rows(out, mid, ctx.run_id)
        v, embedded = ctx.lake.append_new(rows, "embeddings", ctx.commit, model_id=mid)
        ctx.wrote("embeddings", v)
        rejected = 0
        if bad:
            v, rejected = ctx.lake.append_new(reject_rows(out, ctx.run_id), "rejects", ctx.commit)
            ctx.wrote("rejects", v)
            log.warning("embed: %d images failed to decode; see `rejects` (stage embed)", bad)
    finally:
        out.unpersist()
    return embedded, rejected


build_parser, main = jobkit.entry_points(__name__)


if __name__ == "__main__":
    sys.exit(main())
