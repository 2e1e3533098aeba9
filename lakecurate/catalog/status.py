"""`lakecurate status [--json]`: what each stage has pending, read in seconds.

Per stage, from the tables' Delta logs and file statistics (no Spark session):

* ingest: configured sources the ledger has never seen;
* embed: pairs without embeddings for the lake's model (and not rejected by embed);
* dedup: pairs without signals, i.e. not yet deduped;
* select: whether the selection is stale: an input table has a version newer than
  the one the last `select` read (from its run record, `<lake>/_runs/select.json`);
* publish: whether the current selection of the recipe is unpublished;
* refresh: the last refresh, with its result; and who holds the lease;
* files: the tables with enough small files for `lakecurate compact` to pack.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from lakecurate.deltaio.lake import Lake
from lakecurate.runtime.config import Config
from lakecurate.runtime.errors import ConfigError
from lakecurate.runtime.runs import last_run

NAME = "status"
HELP = (
    "what each stage has pending: pairs to embed, rows to dedup, a stale selection, an "
    "unpublished one, the last refresh and who holds the lease"
)
NEEDS_SPARK = False

SELECT_INPUTS = ("pairs", "signals", "duplicates", "embeddings")


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def _count_where(lake: Lake, table: str, column: str, value: str) -> int:
    import pyarrow.compute as pc

    if not lake.exists(table):
        return 0
    return lake.delta(table).to_pyarrow_dataset().count_rows(filter=pc.field(column) == value)


def ingest_status(lake: Lake, cfg: Config) -> dict[str, Any]:
    if not cfg.sources:
        return {"pending": None, "detail": "no sources configured (refresh takes SOURCE ...)"}
    seen: set[str] = set()
    if lake.exists("sources"):
        col = lake.delta("sources").to_pyarrow_dataset().to_table(columns=["source_uri"])
        seen = set(col.column(0).to_pylist())
    new = [s.uri for s in cfg.sources if not any(u.startswith(s.uri.rstrip("/")) for u in seen)]
    detail = f"{len(new)} of {len(cfg.sources)} configured sources never ingested"
    return {"pending": len(new), "sources": new, "detail": detail}


def embed_status(lake: Lake, cfg: Config) -> dict[str, Any]:
    from lakecurate.curation.models import model_id, resolve_model

    pairs = lake.count("pairs")
    try:
        mid = model_id(resolve_model(lake, cfg).model)
    except ConfigError as e:
        return {"pending": None, "detail": str(e)}
    done = _count_where(lake, "embeddings", "model_id", mid)
    rejected = _count_where(lake, "rejects", "stage", "embed")
    pending = max(0, pairs - done - rejected)
    detail = f"{pending} of {pairs} pairs without embeddings for {mid}"
    return {"pending": pending, "model_id": mid, "embedded": done, "detail": detail}


def dedup_status(lake: Lake) -> dict[str, Any]:
    pairs, signals = lake.count("pairs"), lake.count("signals")
    pending = max(0, pairs - signals)
    return {"pending": pending, "detail": f"{pending} of {pairs} pairs not yet deduped"}


def select_status(lake: Lake, versions: dict[str, int]) -> dict[str, Any]:
    run = last_run(lake.root, "select")
    if not lake.exists("selection"):
        return {"stale": True, "detail": "no selection yet"}
    if run is None:
        return {"stale": None, "detail": "no record of a select run (run select)"}
    if run["status"] != "ok":
        return {"stale": True, "detail": f"the last select failed: {run.get('error')}"}
    read = run.get("read_versions") or {}
    newer = {t: (read.get(t), versions[t]) for t in SELECT_INPUTS if t in versions}
    newer = {t: v for t, v in newer.items() if v[0] is not None and v[1] > v[0]}
    if not newer:
        return {"stale": False, "detail": f"up to date (select at {run['finished_at']})"}
    said = ", ".join(f"{t} v{new} > v{old}" for t, (old, new) in newer.items())
    return {"stale": True, "newer_inputs": newer, "detail": f"stale: {said}"}


def publish_status(lake: Lake, cfg: Config) -> dict[str, Any]:
    from lakecurate.curation.selection.recipes import recipe_id_for

    if not lake.exists("selection"):
        return {"unpublished": None, "detail": "nothing selected yet"}
    rid = recipe_id_for(cfg)
    commits = [h for h in lake.history("selection") if h.get("recipe_id") == rid]
    if not commits:
        return {"unpublished": None, "detail": f"no selection of recipe {rid} yet"}
    latest = max(h["version"] for h in commits)
    name = cfg.publish.name
    rows = []
    if lake.exists("datasets"):
        rows = lake.delta("datasets").to_pyarrow_table().to_pylist()
    mine = [r for r in rows if r["name"] == name and r["recipe_id"] == rid]
    if not mine:
        return {"unpublished": True, "detail": f"selection v{latest} never published as {name}"}
    last = max(mine, key=lambda r: r["version"])
    pinned = json.loads(last["pinned_versions"] or "{}").get("selection", -1)
    if latest > pinned:
        detail = f"selection v{latest} is newer than {name}@{last['version']} (v{pinned})"
        return {"unpublished": True, "dataset_version": last["version"], "detail": detail}
    detail = f"{name}@{last['version']} holds the current selection"
    return {"unpublished": False, "dataset_version": last["version"], "detail": detail}


def refresh_status(lake: Lake) -> dict[str, Any]:
    run = last_run(lake.root, "refresh")
    if run is None:
        return {"last": None, "detail": "never run"}
    detail = f"{run['status']} at {run['finished_at']}: {run.get('outcome', '')}"
    return {"last": run, "detail": detail}


def lease_status(cfg: Config) -> dict[str, Any]:
    from lakecurate.runtime.lease import open_lease

    lease = open_lease(cfg.lake.path, cfg.refresh.lease_dir, owner="status")
    info = lease.current()
    if info is None:
        return {"held": False, "detail": "free"}
    stale = lease.is_stale(info)
    said = "stale (the next refresh takes it over)" if stale else "held"
    return {
        "held": True,
        "stale": stale,
        "owner": info.owner,
        "detail": f"{said}: {info.describe()}",
    }


def files_status(lake: Lake, min_files: int | None = None) -> dict[str, Any]:
    """The tables `lakecurate compact` would pack: those with `min_files` (its default)
    files or more under half its target size."""
    from lakecurate.deltaio import compaction

    least = compaction.MIN_FILES if min_files is None else min_files
    target = compaction.TARGET_MB * 1024 * 1024
    due = {}
    for table in lake.versions():
        small = len(compaction.small_files(lake, table, target))
        if small >= least:
            due[table] = small
    if not due:
        return {"compact": {}, "detail": "no table needs compacting"}
    listed = ", ".join(f"{t} ({n} small files)" for t, n in due.items())
    return {"compact": due, "detail": f"{listed}: run `lakecurate compact`"}


def status(cfg: Config) -> dict[str, Any]:
    lake = Lake(cfg.lake.path, cfg.lake.engine)
    if not lake.exists("pairs"):
        raise ConfigError("--lake", f"{cfg.lake.path} holds no lake yet: run ingest (or demo)")
    versions = lake.versions()
    return {
        "lake": cfg.lake.path,
        "versions": versions,
        "stages": {
            "ingest": ingest_status(lake, cfg),
            "embed": embed_status(lake, cfg),
            "dedup": dedup_status(lake),
            "select": select_status(lake, versions),
            "publish": publish_status(lake, cfg),
            "refresh": refresh_status(lake),
        },
        "lease": lease_status(cfg),
        "files": files_status(lake),
    }


def command(spark, cfg: Config, args: argparse.Namespace) -> int:
    doc = status(cfg)
    if getattr(args, "json", False):
        print(json.dumps(doc, default=str))
        return 0
    print(f"lake: {doc['lake']}")
    for stage, s in doc["stages"].items():
        print(f"  {stage:<8} {s['detail']}")
    print(f"  {'lease':<8} {doc['lease']['detail']}")
    print(f"  {'files':<8} {doc['files']['detail']}")
    return 0
