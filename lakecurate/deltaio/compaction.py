"""`lakecurate compact`: rewrite a table's small files into fewer large ones.

Every ingest, embed and dedup run appends a file or a few per table, so a lake refreshed
nightly collects small files, and each scan of a table opens all of them: at 200k
generated pairs `pairs` held 199 files of 5 MB, and a refresh's narrow scans of it cost
more in file opens than in rows. This is Delta's OPTIMIZE (bin-packing, delta-rs
`optimize.compact`): the rows stay the same, files smaller than half of `--target-mb`
are packed into files of about that size, in one commit per table marked as no data
change. Earlier versions keep their files until `lakecurate vacuum`, so pinned dataset
versions still read.

A table is compacted only when it holds at least `--min-files` small files. The next
run of each incremental step sees the rewrite and reads that table once as a whole
(its log no longer shows plain appends since its last run), then goes back to reading
only what is added.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from lakecurate.deltaio.lake import Commit, Lake, new_run_id
from lakecurate.deltaio.maintenance import table_list
from lakecurate.runtime import jobkit
from lakecurate.runtime.config import Config, config_hash
from lakecurate.runtime.errors import ConfigError
from lakecurate.schemas import TABLES

NAME = "compact"
HELP = "pack each table's small files into large ones (Delta OPTIMIZE); rows are unchanged"
NEEDS_SPARK = False
TARGET_MB = 128  # a common Parquet/Delta file size: large reads, enough files to spread
MIN_FILES = 8
# Rows per Parquet row group are chosen so a group holds about this much: a Spark task
# reads a whole group's column chunks at once, and the default 1 GiB heap of a local
# session ran out on 135 MB groups of `pairs` images (23,000 rows in one group).
ROW_GROUP_MB = 16
MIN_GROUP_ROWS = 64

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target-mb",
        type=int,
        default=TARGET_MB,
        help=f"size of the files written, in MiB (default {TARGET_MB})",
    )
    p.add_argument(
        "--min-files",
        type=int,
        default=MIN_FILES,
        help="compact a table only when it has at least this many files smaller than half "
        f"the target (default {MIN_FILES})",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be compacted")
    p.add_argument("--tables", help=f"comma-separated subset of: {', '.join(TABLES)}")


def writes(args) -> bool:
    """`--dry-run` only lists."""
    return not getattr(args, "dry_run", False)


def small_files(lake: Lake, table: str, target_bytes: int) -> list[int]:
    """The sizes of `table`'s files smaller than half of `target_bytes`."""
    return [
        int(a["size_bytes"]) for a in lake.add_actions(table) if a["size_bytes"] < target_bytes / 2
    ]


def row_group_rows(actions: list[dict]) -> int:
    """Rows per row group for about ROW_GROUP_MB, from the files' bytes per row."""
    rows = sum(int(a.get("num_records") or 0) for a in actions)
    size = sum(int(a["size_bytes"]) for a in actions)
    per_row = max(size / rows, 1.0) if rows else 1.0
    return max(MIN_GROUP_ROWS, min(1 << 20, int(ROW_GROUP_MB * 2**20 / per_row)))


def compact_table(
    lake: Lake, table: str, target_bytes: int, min_files: int, dry_run: bool, commit: Commit
) -> dict:
    """Compact one table when it has `min_files` small files; return a summary."""
    from deltalake import CommitProperties, WriterProperties

    small = small_files(lake, table, target_bytes)
    out = {
        "table": table,
        "files": len(lake.add_actions(table)),
        "small_files": len(small),
        "small_bytes": sum(small),
        "compacted": False,
    }
    if len(small) < max(2, min_files) or dry_run:
        return out
    before = lake.version(table)
    props = CommitProperties(custom_metadata=commit.metadata())
    writer = WriterProperties(  # ZSTD as the lake's writers
        compression="ZSTD", max_row_group_size=row_group_rows(lake.add_actions(table))
    )
    metrics = lake.delta(table).optimize.compact(
        target_size=target_bytes, commit_properties=props, writer_properties=writer
    )
    out |= {
        "compacted": lake.version(table) != before,
        "version": lake.version(table),
        "files_removed": int(metrics.get("numFilesRemoved", 0)),
        "files_added": int(metrics.get("numFilesAdded", 0)),
        "files_after": len(lake.add_actions(table)),
    }
    return out


def compact(cfg: Config, target_mb: int, min_files: int, dry_run: bool, tables: list[str]):
    lake = Lake(cfg.lake.path)
    commit = Commit(NAME, new_run_id(NAME), config_hash(cfg))
    target = target_mb * 1024 * 1024
    results = []
    for t in tables:
        if not lake.exists(t):
            continue
        r = compact_table(lake, t, target, min_files, dry_run, commit)
        if r["compacted"]:
            log.info(
                "compact %s: %d files -> %d (v%d)", t, r["files"], r["files_after"], r["version"]
            )
        results.append(r)
    return {"dry_run": dry_run, "target_mb": target_mb, "tables": results}


def command(spark, cfg: Config, args: argparse.Namespace) -> int:
    if args.target_mb < 1:
        raise ConfigError("--target-mb", "must be at least 1")
    if args.min_files < 2:
        raise ConfigError("--min-files", "must be at least 2 (one file has nothing to pack)")
    tables = table_list(args.tables)
    doc = compact(cfg, args.target_mb, args.min_files, args.dry_run, tables)
    if getattr(args, "json", False):
        print(json.dumps(doc))
        return 0
    for r in doc["tables"]:
        if r["compacted"]:
            what = f"{r['files']} files -> {r['files_after']}"
        elif r["small_files"] >= max(2, args.min_files):
            what = f"would pack {r['small_files']} small files ({r['small_bytes'] / 2**20:.0f} MiB)"
        else:
            what = f"left alone ({r['small_files']} small files of {r['files']})"
        print(f"{r['table']:<18} {what}")
    return 0


build_parser, main = jobkit.entry_points(__name__)


if __name__ == "__main__":
    sys.exit(main())
