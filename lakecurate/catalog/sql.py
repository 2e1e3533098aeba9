"""`lakecurate sql "QUERY"`: Spark SQL over the lake's tables and dataset versions.

Views (registered only when the query names them, so a query costs what it reads):
  <table>             every table of the lake at its latest version (pairs, selection, ...)
  <table>_v<N>        a table at Delta version N (time travel)
  <name>_v<N>         the samples of dataset version NAME@N (`open_dataset`)
  <name>_<tag>        the version carrying that tag (e.g. demo_prod)
  <name>_latest       the newest version that is not retired (also plain <name> when that
                      is not a table name)
Dataset names are turned into identifiers by replacing anything but letters, digits
and '_' with '_'. Binary columns (image) print as their length.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from lakecurate.catalog.dataset import RETIRED, dataset_rows, samples_frame
from lakecurate.deltaio.lake import Lake
from lakecurate.runtime import jobkit
from lakecurate.runtime.config import Config
from lakecurate.runtime.errors import ConfigError
from lakecurate.schemas import TABLES

NAME = "sql"
HELP = "run a Spark SQL query over the lake's tables and dataset versions (as views)"
NEEDS_SPARK = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", help='e.g. "select count(*) from demo_v1"')
    p.add_argument("--limit", type=int, default=100, help="rows printed (default 100)")


def ident(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _words(query: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query)}


def _view_builders(spark, lake: Lake) -> dict[str, tuple[str, object]]:
    """view name -> (description, zero-argument function returning the DataFrame)."""
    views: dict[str, tuple[str, object]] = {}
    for dv in dataset_rows(spark, lake):
        base = ident(dv.name)

        def build(dv=dv):
            return samples_frame(spark, lake, dv.pinned, dv.recipe_id, dv.model_id or None)

        views[f"{base}_v{dv.version}"] = (f"dataset {dv.ref} ({dv.status})", build)
        for tag in dv.tags:
            views[f"{base}_{ident(tag)}"] = (f"dataset {dv.ref} (tag {tag})", build)
        if dv.status != RETIRED:  # rows are in version order: the last live one wins
            views[f"{base}_latest"] = (f"dataset {dv.ref} (latest)", build)
            if base not in TABLES:
                views[base] = (f"dataset {dv.ref} (latest)", build)
    for table in TABLES:
        if lake.exists(table):
            views[table] = (f"table {table} (latest)", lambda t=table: lake.read(spark, t))
    return views


def register_views(spark, lake: Lake, query: str) -> dict[str, str]:
    """Register the views `query` mentions; return {view: what it is}."""
    words = _words(query)
    views = _view_builders(spark, lake)
    used = {}
    for name, (desc, build) in views.items():
        if name.lower() in words:
            build().createOrReplaceTempView(name)
            used[name] = desc
    for word in sorted(words):  # <table>_v<N>: time travel by name
        m = re.fullmatch(r"([a-z]+)_v(\d+)", word)
        if m and m.group(1) in TABLES and word not in {v.lower() for v in used}:
            table, version = m.group(1), int(m.group(2))
            _check_version(lake, table, version)
            lake.read(spark, table, version).createOrReplaceTempView(word)
            used[word] = f"table {table}@v{version}"
    return used


def _check_version(lake: Lake, table: str, version: int) -> None:
    current = lake.version(table)
    if current is None or version > current:
        raise ConfigError("QUERY", f"{table} has no version {version} (latest: {current})")


def _jsonable(v):
    if isinstance(v, bytes | bytearray):
        return f"<{len(v)} bytes>"
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def run_query(spark, lake: Lake, query: str, limit: int) -> dict:
    """Run `query`; return {columns, rows (at most `limit`), truncated, views}."""
    from pyspark.errors import AnalysisException, ParseException

    if limit < 0:
        raise ConfigError("--limit", "must be >= 0")
    views = register_views(spark, lake, query)
    try:
        df = spark.sql(query)
        rows = df.limit(limit + 1).collect()
    except (AnalysisException, ParseException) as e:
        first = str(e).strip().splitlines()[0]
        known = ", ".join(sorted(_view_builders(spark, lake))) or "none"
        raise ConfigError(
            "QUERY", f"{first} (views: {known}; tables also as <table>_v<N>)"
        ) from None
    return {
        "query": query,
        "views": views,
        "columns": df.columns,
        "rows": [_jsonable(r.asDict(recursive=True)) for r in rows[:limit]],
        "truncated": len(rows) > limit,
    }


def _text(doc: dict) -> str:
    cols = doc["columns"]
    cells = [[_cell(r.get(c)) for c in cols] for r in doc["rows"]]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    more = " (more rows not shown: raise --limit)" if doc["truncated"] else ""
    lines.append(f"({len(cells)} rows{more})")
    return "\n".join(lines)


def _cell(v) -> str:
    s = json.dumps(v, default=str) if isinstance(v, dict | list) else str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def command(spark, cfg: Config, args: argparse.Namespace) -> int:
    doc = run_query(spark, Lake(cfg.lake.path), args.query, args.limit)
    print(json.dumps(doc, default=str) if getattr(args, "json", False) else _text(doc))
    return 0


build_parser, main = jobkit.entry_points(__name__)


if __name__ == "__main__":
    sys.exit(main())
