"""publish: materialise a selection as dataset version N+1 of NAME (WebDataset shards).

Reads (each at ONE pinned Delta version): `selection` (kept uids of the recipe),
`pairs` (image bytes, caption, size, url), `embeddings` (clip_score of the configured
model; optional), and records the versions of `signals` and `duplicates` too, since
`open_dataset` and `report` query them. Writes: shards + Parquet indexes + `manifest.json`
under the version's directory, then one row in `datasets` (LAST).

Order of writes, so that a crash never leaves a version that looks complete:
1. Spark tasks write shards in parallel into `.<dir>.staging-<run_id>` next to the target;
2. the staging directory is moved into place;
3. `manifest.json` is written (to a temp name, then moved);
4. the `datasets` row is appended. Only a version with a row exists for readers.
A re-run reuses a finished manifest whose inputs match and whose shards verify by sha256
(finishing the crashed publish), and otherwise replaces the leftovers.

Layout: with a parent (the newest live version of the name whose manifest verifies),
the new version reuses the parent's shards (hard links or copies) with a deletion list
per shard of the members it leaves out, rewrites (compacts) the ones whose deleted
fraction passes `publish.compact_fraction` or whose members changed, and appends the
added samples in new shards (`lakecurate/curation/publish/layout.py`), so a refresh
costs what changed. The manifest says whether the version is `exact` (its shards hold
exactly its samples); `lakecurate.dataset` readers apply the deletion lists and
`lakecurate versions materialize` writes an exact copy. Without a parent, with
`--full` (`publish.incremental: false`), or when the reusable shards would hold less
than `publish.min_reuse` of the samples (small changes scattered over every shard),
samples are ordered by sha256(seed:uid) and shard boundaries come from that order.
The manifest records the parent (`parent`, null without one), the `layout` (its
`mode`, with the `reason` when a parent was not used) and, per shard, `reused`.

Determinism: tar headers are fixed (`udfs/shards.py`) and the layout is a function of
the pinned table versions and the parent's manifest, so the same pins, parent and
publish settings give byte-identical shards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from datetime import UTC, datetime

from lakecurate.catalog.dataset import (
    PUBLISHED,
    check_name,
    samples_frame,
    selection_hash_of,
    selection_hash_since,
)
from lakecurate.curation.models import model_id
from lakecurate.curation.publish import layout as layouts
from lakecurate.curation.publish.files import (
    FORMAT,
    MANIFEST,
    clear_leftovers,
    find_parent,
    move_dir,
    open_fs,
    reusable_manifest,
)
from lakecurate.deltaio.conflicts import ReadScope
from lakecurate.deltaio.lake import Lake
from lakecurate.runtime import jobkit
from lakecurate.runtime.config import Config, replace
from lakecurate.runtime.errors import ConfigError, JobError
from lakecurate.runtime.jobkit import JobContext, JobResult
from lakecurate.udfs import shards as shardlib

NAME = "publish"
WRITES = True
HELP = "write the current selection as the next version of a dataset (WebDataset shards)"
log = logging.getLogger(__name__)

REQUIRED = ("selection", "pairs")
PINNED = (
    "selection", "pairs", "embeddings", "signals", "duplicates", "concepts", "concept_counts"
)  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="dataset name (letters, digits, '_', '.', '-')")
    p.add_argument("--out", help="shard directory (path or fsspec URI; {name}/{version} allowed)")
    p.add_argument("--shard-size", type=int, help="samples per shard (default 1000)")
    p.add_argument("--shard-bytes", type=int, help="approximate bytes per shard (0: no limit)")
    p.add_argument("--seed", type=int, help="seed of the shuffle by uid (default 0)")
    p.add_argument(
        "--force",
        action="store_true",
        default=None,
        help="publish a new version even if the latest one has the same selection",
    )
    p.add_argument(
        "--full",
        action="store_true",
        default=None,
        help="write every shard afresh instead of reusing the previous version's shards",
    )


def apply_args(cfg: Config, args: argparse.Namespace) -> Config:
    flags = {
        "name": args.name,
        "out": args.out,
        "shard_size": args.shard_size,
        "shard_bytes": args.shard_bytes,
        "seed": args.seed,
        "force": args.force,
        "incremental": False if args.full else None,
    }
    return replace(cfg, publish={k: v for k, v in flags.items() if v is not None})


# --- what is published ------------------------------------------------------------------------


def pin_versions(lake: Lake) -> dict[str, int]:
    """The current version of every table publish depends on (required ones must exist)."""
    pins = {t: v for t in PINNED if (v := lake.version(t)) is not None}
    missing = [t for t in REQUIRED if t not in pins]
    if missing:
        raise JobError(
            f"lake {lake.root} has no {', '.join(missing)} table yet: run "
            "`lakecurate ingest` and `lakecurate select` before publishing"
        )
    return pins


def resolve_recipe_id(spark, lake: Lake, cfg: Config, selection_version: int) -> str:
    """The configured recipe's id; `_plan` checks that the selection has its rows."""
    from lakecurate.curation.selection.recipes import recipe_id_for

    return recipe_id_for(cfg)


def published_model_id(lake: Lake, cfg: Config, recipe_id: str, pins: dict[str, int]) -> str:
    """The model whose embeddings the pinned selection of `recipe_id` used (its commit
    records it). A selection that used none: the named model, else the lake's only
    model (the shards' clip_score comes from it), else ""."""
    for h in sorted(lake.history("selection"), key=lambda h: -h["version"]):
        if h["version"] <= pins["selection"] and h.get("recipe_id") == recipe_id:
            if h.get("model_id"):
                return h["model_id"]
            break
    if "embeddings" not in pins:
        return ""
    if cfg.model.name:
        return model_id(cfg.model)
    held = lake.distinct_values("embeddings", "model_id")
    return held[0] if len(held) == 1 else ""


def latest_row(spark, lake: Lake, name: str):
    """The `datasets` row of the newest version of `name`, or None."""
    from pyspark.sql import functions as F

    if not lake.exists("datasets"):
        return None
    rows = (
        lake.read(spark, "datasets")
        .filter(F.col("name") == name)
        .orderBy(F.col("version").desc())
        .limit(1)
        .collect()
    )
    return rows[0] if rows else None


def current_hash(spark, lake: Lake, recipe_id: str, selection_version: int, latest) -> str:
    """`selection_hash` of the recipe at `selection_version`: from the latest version's
    hash and the files `selection` changed since its pin when it has the same recipe
    (the cost follows the change), else over every kept uid."""
    if latest is not None and latest["recipe_id"] == recipe_id:
        then = json.loads(latest["pinned_versions"] or "{}").get("selection")
        if then is not None and then <= selection_version:
            found = selection_hash_since(
                spark, lake, recipe_id, latest["selection_hash"], then, selection_version
            )
            if found is not None:
                return found
    return selection_hash_of(spark, lake, recipe_id, selection_version)


def up_to_date(latest, recipe_id: str, mid: str, sel_hash: str):
    """`latest` (the newest `datasets` row of the dataset) if it is live and holds exactly
    the current selection: the same recipe, model and kept uids (by `selection_hash`)
    make the same samples, so publishing again would only add an identical version.
    None otherwise."""
    if latest is None or latest["status"] == "retired":
        return None
    if (latest["recipe_id"], latest["model_id"], latest["selection_hash"]) != (
        recipe_id,
        mid,
        sel_hash,
    ):
        return None
    return latest


def next_version(spark, lake: Lake, name: str, at: int | None = None) -> int:
    """The version a new publish of `name` gets (reading `datasets` at version `at`)."""
    from pyspark.sql import functions as F

    if not lake.exists("datasets"):
        return 1
    df = lake.read(spark, "datasets", at).filter(F.col("name") == name)
    top = df.agg(F.max("version").alias("v")).first()["v"]
    return 1 if top is None else int(top) + 1


def out_dir(cfg: Config, version: int) -> str:
    name = cfg.publish.name
    template = cfg.publish.out or f"{cfg.lake.path.rstrip('/')}/_published/{{name}}/v{{version}}"
    try:
        path = template.format(name=name, version=version).rstrip("/")
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError("publish.out", f"bad placeholder in {template!r}: {e}") from None
    return path if "://" in path else os.path.abspath(path)


def inputs_hash(plan: dict) -> str:
    """What determines the shards' bytes: equal hash -> the same shards."""
    keys = ("pinned_versions", "recipe_id", "model_id", "shard_size", "shard_bytes", "seed")
    keys += ("parent", "max_small_shards", "min_reuse", "compact_fraction")
    blob = json.dumps({k: plan[k] for k in keys}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# --- shards ------------------------------------------------------------------------------------


def assign_shards(samples, shard_size: int, shard_bytes: int, seed: int):
    """Add `pos` (seeded shuffle by uid) and `shard`: a new shard starts after `shard_size`
    samples, or at the first sample that starts past `shard_bytes` (estimated) bytes
    (numbered without a global sort, see `layout.pack`)."""
    from pyspark.sql import functions as F

    narrow = samples.select(
        "uid",
        layouts.seeded_order(seed).alias("order_key"),
        layouts.est_bytes(F.length("image")).alias("nbytes"),
    )
    assigned = layouts.pack(narrow, ["order_key", "uid"], shard_size, shard_bytes)
    return samples.join(assigned, "uid")


def write_shards(spark, samples, staging: str, shards: int) -> list[dict]:
    """Spark tasks write one shard per group into `staging`; returns shard records by index.

    An explicit repartition by shard (which adaptive execution does not coalesce) keeps
    the (about `shards`) shards spread over that many tasks, so they are written in
    parallel. Rows may carry `shardlib.SOURCE_COLUMNS` (images read from a parent shard).
    """
    partitions = max(spark.sparkContext.defaultParallelism, min(shards, 10_000))
    extra = [c for c in shardlib.SOURCE_COLUMNS if c in samples.columns]
    cols = [*shardlib.SAMPLE_COLUMNS, *extra]
    rows = (
        samples.select(*cols)
        .repartition(partitions, "shard")
        .groupBy("shard")
        .applyInPandas(shardlib.shard_writer(staging), shardlib.SHARD_RESULT_SCHEMA)
        .collect()
    )
    out = sorted((r.asDict() for r in rows), key=lambda r: r["shard"])
    for r in out:
        r["index"] = r["name"][: -len(".tar")] + ".parquet"
    return out


# --- the publish protocol ----------------------------------------------------------------------


def funnel(spark, lake: Lake, selection_version: int, recipe_id: str) -> dict:
    """Selection counts of the recipe: total, kept, dropped per reason."""
    from pyspark.sql import functions as F

    commit = _select_commit(lake, selection_version, recipe_id)
    recorded = json.loads(commit["funnel"]) if commit and commit.get("funnel") else None
    if recorded:  # the select run that wrote these rows counted them
        kept = int(recorded[-1]["out"])
        dropped = {s["rule"]: int(s["dropped"]) for s in recorded if s["dropped"]}
    else:  # rows written before select recorded its funnel
        sel = lake.read(spark, "selection", selection_version)
        rows = sel.filter(F.col("recipe_id") == recipe_id).groupBy("kept", "reason").count()
        rows = rows.collect()
        dropped = {r["reason"] or "unknown": int(r["count"]) for r in rows if not r["kept"]}
        kept = sum(int(r["count"]) for r in rows if r["kept"])
    out = {
        "total": kept + sum(dropped.values()),
        "kept": kept,
        "dropped": dict(sorted(dropped.items())),
    }
    raw = commit.get("duplicate_drops") if commit else None
    if raw:
        out["duplicate_drops"] = json.loads(raw)
    return out


def _select_commit(lake: Lake, selection_version: int, recipe_id: str) -> dict | None:
    """The `selection` commit of the select run that last wrote the recipe's rows at or
    before `selection_version` (its metadata: funnel, duplicate drops, thresholds)."""
    runs = [
        h
        for h in lake.history("selection")
        if h.get("recipe_id") == recipe_id and (h.get("version") or 0) <= selection_version
    ]
    return max(runs, key=lambda h: h["version"]) if runs else None


def full_layout(spark, cfg: Config, plan: dict, samples, staging: str) -> list[dict]:
    """Every shard written afresh in the seeded order (no parent, or `--full`)."""
    p = cfg.publish
    kept = plan["funnel"]["kept"]
    assigned = assign_shards(samples, p.shard_size, p.shard_bytes, p.seed)
    expected = -(-kept // p.shard_size)
    shards = write_shards(spark, assigned, staging, expected)
    return [{**s, **layouts.NO_DELETIONS, "reused": False} for s in shards]


# what the manifest records per shard: its tar and index, the samples of this version in
# it, and the deletion list of the tar's members this version leaves out (or none)
SHARD_KEYS = ("name", "index", "sha256", "num_samples", "num_bytes", "reused")
SHARD_KEYS += ("deleted", "deletions", "deletions_sha256")


def materialise(
    spark, cfg: Config, plan: dict, samples, path: str, run_id: str, parent=None
) -> dict:
    """Write shards to staging (laid out over `parent` if given), move them into place,
    then write the manifest; return it."""
    fs, fspath = open_fs(path)
    staging = path.rsplit("/", 1)[0] + f"/.{path.rsplit('/', 1)[1]}.staging-{run_id}"
    if parent is None:
        shards, layout = full_layout(spark, cfg, plan, samples, staging), {"mode": "full"}
    else:
        lake = Lake(cfg.lake.path, cfg.lake.engine)

        def write(frame, n: int) -> list[dict]:
            return write_shards(spark, frame, staging, n)

        laid = layouts.lay_out(spark, lake, cfg, parent, samples, plan, staging, write)
        if isinstance(laid, str):
            log.info("publish: writing every shard afresh: %s", laid)
            shards = full_layout(spark, cfg, plan, samples, staging)
            layout = {"mode": "full", "reason": laid}
        else:
            shards, layout = laid
    written = sum(s["num_samples"] for s in shards)  # samples of the version (not deleted)
    sfs, spath = open_fs(staging)
    if written == 0:
        if sfs.exists(spath):
            sfs.rm(spath, recursive=True)
        raise JobError(
            f"recipe {plan['recipe_id']!r} keeps no samples that have a pairs row; "
            "nothing to publish (check `lakecurate versions` and the select step)"
        )
    lost = plan["funnel"]["kept"] - written
    if lost:
        log.warning("publish: %d kept uids have no pairs row; they are left out", lost)
    for stray in sfs.glob(f"{spath}/.*.tmp"):  # from task attempts that died
        sfs.rm(stray)
    move_dir(sfs, spath, fspath)
    for s in shards:  # what was moved is what the tasks reported
        if fs.size(f"{fspath}/{s['name']}") != s["num_bytes"]:
            raise JobError(f"{path}/{s['name']} changed size after writing; not registered")
    manifest = dict(plan, created_at=datetime.now(UTC).isoformat(timespec="seconds"))
    manifest["shards"] = [{k: s[k] for k in SHARD_KEYS} for s in shards]
    manifest["layout"] = layout
    deleted = sum(s["deleted"] for s in shards)
    manifest["exact"] = deleted == 0
    manifest["counts"] = {
        "num_samples": written,
        "num_shards": len(shards),
        "num_bytes": sum(s["num_bytes"] for s in shards),
        "num_deleted": deleted,
        "kept_without_pairs": lost,
    }
    with fs.open(f"{fspath}/{MANIFEST}.tmp", "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    fs.mv(f"{fspath}/{MANIFEST}.tmp", f"{fspath}/{MANIFEST}")
    return manifest


def register(spark, ctx: JobContext, manifest: dict, path: str) -> int:
    """Append the `datasets` row: the version exists for readers from this commit on."""
    read = ctx.lake.version("datasets")
    if next_version(spark, ctx.lake, manifest["name"], read) != manifest["version"]:
        # one publish per dataset name at a time (refresh holds a lease); never two rows
        raise JobError(
            f"{manifest['name']}@{manifest['version']} was registered by another publish "
            "while this one ran; re-run publish to make the next version"
        )
    spec = ctx.lake.spec("datasets")
    row = {
        "name": manifest["name"],
        "version": manifest["version"],
        "status": PUBLISHED,
        "recipe_id": manifest["recipe_id"],
        "config_hash": manifest["config_hash"],
        "num_samples": manifest["counts"]["num_samples"],
        "num_shards": manifest["counts"]["num_shards"],
        "shard_uri": path,
        "manifest_uri": f"{path}/{MANIFEST}",
        "pinned_versions": json.dumps(manifest["pinned_versions"], sort_keys=True),
        "selection_hash": manifest["selection_hash"],
        "model_id": manifest["model_id"],
        "tags": [],
        "run_id": ctx.run_id,
        "created_at": datetime.fromisoformat(manifest["created_at"]),
    }
    df = spark.createDataFrame([tuple(row[c] for c in spec.columns)], spec.spark_schema())
    # a concurrent commit of a row of this name since `read` fails the write
    # (ConflictError): never two rows of one version
    return ctx.lake.write(
        df,
        "datasets",
        ctx.commit,
        read_version=-1 if read is None else read,
        scope=ReadScope.rows_where("name", row["name"]),
        dataset=f"{row['name']}@{row['version']}",
    )


def run(spark, cfg: Config) -> JobResult:
    ctx = JobContext(NAME, cfg)
    name = check_name(cfg.publish.name, "publish.name")
    pins = pin_versions(ctx.lake)
    for t, v in pins.items():
        ctx.result.read_versions[t] = v
    recipe_id = resolve_recipe_id(spark, ctx.lake, cfg, pins["selection"])
    mid = published_model_id(ctx.lake, cfg, recipe_id, pins)
    latest = latest_row(spark, ctx.lake, name)
    sel_hash = current_hash(spark, ctx.lake, recipe_id, pins["selection"], latest)
    same = None if cfg.publish.force else up_to_date(latest, recipe_id, mid, sel_hash)
    if same is not None:
        return ctx.done(
            f"{name}@{same['version']} already holds this selection; nothing published "
            "(--force publishes a new version anyway)",
            published=False,
            version=same["version"],
            num_samples=same["num_samples"],
            num_shards=same["num_shards"],
            shard_dir=same["shard_uri"],
            selection_hash=same["selection_hash"],
        )
    needed = {t: v for t, v in pins.items() if t in ("selection", "pairs", "embeddings")}
    samples = samples_frame(spark, ctx.lake, needed, recipe_id, mid).select(
        "uid", "image", "image_format", "caption", "url", "width", "height", "clip_score"
    )
    version = next_version(spark, ctx.lake, name)
    path = out_dir(cfg, version)
    parent = find_parent(spark, ctx.lake, cfg, name, path)
    plan = _plan(spark, ctx, name, version, pins, recipe_id, mid, parent, sel_hash)
    fs, fspath = open_fs(path)
    manifest = reusable_manifest(fs, fspath, plan, spark, path)
    if manifest is not None:
        log.info("publish: finishing %s@%d from its verified manifest", name, version)
    else:
        clear_leftovers(fs, fspath)
        manifest = materialise(spark, cfg, plan, samples, path, ctx.run_id, parent)
    ctx.wrote("datasets", register(spark, ctx, manifest, path))
    c = manifest["counts"]
    reused = sum(1 for s in manifest["shards"] if s.get("reused"))
    parent_v = (manifest.get("parent") or {}).get("version")
    origin = f" ({reused} reused from {name}@{parent_v})" if parent_v is not None else ""
    return ctx.done(
        f"published {name}@{version}: {c['num_samples']} samples in {c['num_shards']} shards"
        + origin,
        published=True,
        layout=(manifest.get("layout") or {}).get("mode", "full"),
        reused_shards=reused,
        removed_from_parent=(manifest.get("layout") or {}).get("removed"),
        deleted=manifest["counts"].get("num_deleted", 0),
        exact=manifest.get("exact", True),
        version=version,
        num_samples=c["num_samples"],
        num_shards=c["num_shards"],
        shard_dir=path,
        selection_hash=manifest["selection_hash"],
    )


def _plan(spark, ctx, name, version, pins, recipe_id, mid, parent=None, sel_hash=None) -> dict:
    """Everything the manifest says except the shards, the layout and the time."""
    cfg = ctx.cfg
    fun = funnel(spark, ctx.lake, pins["selection"], recipe_id)
    if fun["total"] == 0:
        raise JobError(
            f"selection@v{pins['selection']} has no rows for recipe {recipe_id!r} "
            f"(select.recipe={cfg.select.recipe!r}): run `lakecurate select` first"
        )
    if fun["kept"] == 0:
        raise JobError(
            f"recipe {recipe_id!r} keeps no samples in selection@v{pins['selection']}; "
            "nothing to publish"
        )
    plan = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "pinned_versions": dict(sorted(pins.items())),
        "recipe_id": recipe_id,
        "model_id": mid,
        "config_hash": ctx.commit.config_hash,
        "shard_size": cfg.publish.shard_size,
        "shard_bytes": cfg.publish.shard_bytes,
        "seed": cfg.publish.seed,
        "selection_hash": sel_hash
        or selection_hash_of(spark, ctx.lake, recipe_id, pins["selection"]),
        "parent": None if parent is None else parent.describe(),
        "max_small_shards": cfg.publish.max_small_shards,
        "min_reuse": cfg.publish.min_reuse,
        "compact_fraction": cfg.publish.compact_fraction,
        "funnel": fun,
        "run_id": ctx.run_id,
    }
    plan["inputs_hash"] = inputs_hash(plan)
    return plan


build_parser, main = jobkit.entry_points(__name__)


if __name__ == "__main__":
    sys.exit(main())
