"""`lakecurate tables` and `lakecurate history TABLE`: what the lake holds, read with delta-rs."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from lakecurate.deltaio.lake import Lake
from lakecurate.runtime.config import Config
from lakecurate.runtime.errors import ConfigError
from lakecurate.schemas import TABLES


def table_rows(lake: Lake) -> list[dict]:
    """Every table of the contract with its current version and row count (None if absent)."""
    rows = []
    for t in TABLES:
        v = lake.version(t)
        rows.append({"table": t, "version": v, "rows": lake.count(t) if v is not None else None})
    return rows


class Tables:
    NAME = "tables"
    HELP = "list the lake's tables with their current version and row count"
    NEEDS_SPARK = False

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        pass

    @staticmethod
    def command(spark, cfg: Config, args: argparse.Namespace) -> int:
        rows = table_rows(Lake(cfg.lake.path))
        if getattr(args, "json", False):
            print(json.dumps({"lake": cfg.lake.path, "tables": rows}))
            return 0
        print(f"lake: {cfg.lake.path}")
        w = max(len(t) for t in TABLES)
        print(f"{'table':<{w}} {'version':>8} {'rows':>10}")
        for r in rows:
            v = "-" if r["version"] is None else r["version"]
            n = "-" if r["rows"] is None else r["rows"]
            print(f"{r['table']:<{w}} {v:>8} {n:>10}")
        return 0


class History:
    NAME = "history"
    HELP = "a table's Delta history: version, time, operation, job and run id of each commit"
    NEEDS_SPARK = False

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("table", help=f"one of: {', '.join(TABLES)}")

    @staticmethod
    def command(spark, cfg: Config, args: argparse.Namespace) -> int:
        if args.table not in TABLES:
            raise ConfigError("TABLE", f"unknown table {args.table!r}; tables: {', '.join(TABLES)}")
        lake = Lake(cfg.lake.path)
        if not lake.exists(args.table):
            raise ConfigError("TABLE", f"{args.table!r} does not exist yet in {cfg.lake.path}")
        rows = lake.history(args.table)
        if getattr(args, "json", False):
            print(json.dumps({"table": args.table, "history": rows}, default=str))
            return 0
        print(f"{'version':>7}  {'time (UTC)':<19}  {'operation':<13} {'job':<8} run_id")
        for r in rows:
            ts = datetime.fromtimestamp(r["timestamp"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
            print(
                f"{r['version']:>7}  {ts:<19}  {r['operation'] or '':<13} "
                f"{r.get('job', ''):<8} {r.get('run_id', '')}"
            )
        return 0
