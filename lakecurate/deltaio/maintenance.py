"""`lakecurate vacuum`: delete files no table version still needs, except pinned ones.

Reads `datasets` to find every table version a non-retired dataset version pins, then
runs delta-rs `vacuum(full=True, keep_versions=<those versions>)` on each table: files
removed from the table longer ago than the retention, and orphans never committed (a
crashed task's output), are deleted; the files of every pinned version stay, so
`open_dataset` and `versions diff` keep working. Before deleting, the candidate list
is checked against the pinned files and the table is left alone if they overlap.
`versions retire NAME@V` releases a version's pins. Also removes publish staging
directories (`_published/<name>/.v<N>.staging-*`) older than the retention.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from lakecurate.catalog.dataset import RETIRED, DatasetVersion, dataset_rows
from lakecurate.deltaio.lake import Commit, Lake, new_run_id
from lakecurate.runtime import jobkit
from lakecurate.runtime.config import Config, config_hash
from lakecurate.runtime.errors import ConfigError, JobError
from lakecurate.schemas import TABLES

NAME = "vacuum"
HELP = "delete unreferenced table files older than the retention, never ones a dataset pins"
NEEDS_SPARK = True


def writes(args) -> bool:
    """`--dry-run` only lists."""
    return not getattr(args, "dry_run", False)


log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--retention-hours",
        type=float,
        default=168.0,
        help="keep removed files younger than this (default 168 = 7 days)",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    p.add_argument("--tables", help=f"comma-separated subset of: {', '.join(TABLES)}")


def pinned_versions(datasets: list[DatasetVersion]) -> dict[str, list[int]]:
    """table -> sorted versions pinned by the non-retired dataset versions."""
    pins: dict[str, set[int]] = {}
    for dv in datasets:
        if dv.status == RETIRED:
            continue
        for table, v in dv.pinned.items():
            pins.setdefault(table, set()).add(v)
    return {t: sorted(vs) for t, vs in pins.items()}


def _files_of(lake: Lake, table: str, versions: list[int]) -> set[str]:
    """Paths (relative to the table root) of the files of each of `versions`."""
    root = _root(lake, table)
    files: set[str] = set()
    for v in versions:
        files.update(_relative(u, root) for u in lake.delta(table, v).file_uris())
    return files


def _root(lake: Lake, table: str) -> str:
    uri = lake.uri(table)
    return uri if "://" in uri else os.path.abspath(uri)


def _relative(path: str, root: str) -> str:
    root = root.rstrip("/") + "/"
    for prefix in (root, "file://" + root):
        if path.startswith(prefix):
            return path[len(prefix) :]
    return path


def vacuum_table(lake: Lake, table: str, keep: list[int], hours: float, dry_run: bool, commit):
    """Vacuum one table keeping `keep`'s files; return a summary dict."""
    from deltalake import CommitProperties

    dt = lake.delta(table)
    opts = dict(
        retention_hours=int(hours) if float(hours).is_integer() else hours,
        enforce_retention_duration=False,
        full=True,
        keep_versions=keep or None,
    )
    candidates = [_relative(p, _root(lake, table)) for p in dt.vacuum(**opts)]
    clash = set(candidates) & _files_of(lake, table, keep)
    if clash:  # never happens with delta-rs' keep_versions; refuse rather than trust it
        raise JobError(f"{table}: vacuum would delete {len(clash)} pinned files; nothing deleted")
    deleted = []
    if candidates and not dry_run:
        props = CommitProperties(custom_metadata=commit.metadata(pinned=json.dumps(keep)))
        deleted = dt.vacuum(dry_run=False, commit_properties=props, **opts)
    return {
        "table": table,
        "pinned_versions": keep,
        "candidates": len(candidates),
        "deleted": len(deleted),
        "files": sorted(candidates)[:50],
    }


def sweep_staging(lake: Lake, hours: float, dry_run: bool) -> list[str]:
    """Publish staging directories left by crashed runs, older than the retention."""
    from lakecurate.udfs.storage import url_to_fs

    fs, root = url_to_fs(f"{lake.root}/_published")
    if not fs.exists(root):
        return []
    cutoff = time.time() - hours * 3600
    stale = []
    for d in fs.glob(f"{root}/*/.v*.staging-*"):
        mtime = fs.info(d).get("mtime") or fs.info(d).get("created") or 0
        if float(mtime) <= cutoff:
            stale.append(d)
            if not dry_run:
                fs.rm(d, recursive=True)
    return stale


def vacuum(spark, cfg: Config, hours: float, dry_run: bool, tables: list[str]) -> dict:
    lake = Lake(cfg.lake.path)
    pins = pinned_versions(dataset_rows(spark, lake))
    commit = Commit(NAME, new_run_id(NAME), config_hash(cfg))
    results = [
        vacuum_table(lake, t, pins.get(t, []), hours, dry_run, commit)
        for t in tables
        if lake.exists(t)
    ]
    staging = sweep_staging(lake, hours, dry_run)
    for r in results:
        log.info(
            "vacuum %s: %d candidates, %d deleted, pinned versions %s",
            r["table"],
            r["candidates"],
            r["deleted"],
            r["pinned_versions"],
        )
    return {"dry_run": dry_run, "retention_hours": hours, "tables": results, "staging": staging}


def table_list(value: str | None) -> list[str]:
    """`--tables a,b`: the named tables, checked (all of them when not given)."""
    if not value:
        return list(TABLES)
    tables = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ConfigError("--tables", f"unknown {unknown}; tables: {', '.join(TABLES)}")
    return tables


def command(spark, cfg: Config, args: argparse.Namespace) -> int:
    if args.retention_hours < 0:
        raise ConfigError("--retention-hours", "must be >= 0")
    tables = table_list(args.tables)
    doc = vacuum(spark, cfg, args.retention_hours, args.dry_run, tables)
    if getattr(args, "json", False):
        print(json.dumps(doc))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for r in doc["tables"]:
        n = r["candidates"] if args.dry_run else r["deleted"]
        print(f"{r['table']:<12} {verb} {n:>6} files   pinned versions: {r['pinned_versions']}")
    if doc["staging"]:
        print(f"staging dirs {verb}: {len(doc['staging'])}")
    return 0


build_parser, main = jobkit.entry_points(__name__)


if __name__ == "__main__":
    sys.exit(main())
