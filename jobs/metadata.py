"""`lakecurate metadata import FILE | build | list`: the concept entries of MetaCLIP
curation, as versions of table `metadata`.

* `import FILE`: MetaCLIP's published `metadata.json` (a JSON list of strings, about
  500k entries) or a text file of one entry a line.
* `build`: an entry list made offline from an English word list package plus the
  unigrams and PMI bigrams of the lake's own captions
  (`lakecurate.curation.concepts.metadata`; thresholds `--min-count` and `--min-pmi`,
  MetaCLIP's scaled to the pool by default).
* `list`: the versions held, with their entry counts by source.

Each import or build adds a new version; matching and balancing use the newest, and
`lakecurate concepts` matches every caption against a new version once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import pyarrow as pa

from lakecurate.curation.concepts import metadata as meta
from lakecurate.curation.concepts.counts import latest_metadata_version
from lakecurate.deltaio.lake import Lake
from lakecurate.runtime import jobkit
from lakecurate.runtime.config import Config
from lakecurate.runtime.errors import ConfigError, JobError
from lakecurate.runtime.jobkit import JobContext
from lakecurate.schemas import TABLES

NAME = "metadata"
HELP = "import or build the concept entries MetaCLIP balancing matches captions against"
NEEDS_SPARK = True

log = logging.getLogger(__name__)


def writes(args: argparse.Namespace) -> bool:
    return getattr(args, "action", None) in ("import", "build")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["import", "build", "list"])
    p.add_argument("file", nargs="?", metavar="FILE", help="import: metadata.json or a text file")
    g = p.add_argument_group("build")
    g.add_argument(
        "--min-count",
        type=int,
        help="occurrences a caption unigram or bigram needs (default: MetaCLIP's 100 in "
        f"Wikipedia's 3e9 words scaled to the lake's caption words, at least "
        f"{meta.MIN_COUNT_FLOOR})",
    )
    g.add_argument(
        "--min-pmi",
        type=float,
        default=meta.METACLIP_MIN_PMI,
        help="a bigram's p(ab) / (p(a) p(b)) at least this (default MetaCLIP's 30)",
    )
    g.add_argument("--no-words", action="store_true", help="leave out the package word list")
    g.add_argument("--no-captions", action="store_true", help="mine nothing from the captions")


def _write(spark, ctx: JobContext, entries: meta.Entries) -> int:
    version = (latest_metadata_version(ctx.lake) or 0) + 1
    n = len(entries)
    table = pa.table(
        {
            "version": pa.array([version] * n, pa.int32()),
            "entry_id": pa.array(entries.ids, pa.int32()),
            "entry": pa.array(entries.entries, pa.string()),
            "source": pa.array(entries.sources, pa.string()),
            "run_id": pa.array([ctx.run_id] * n, pa.string()),
        },
        schema=TABLES["metadata"].schema,
    )
    df = spark.createDataFrame(table.to_pandas(), TABLES["metadata"].spark_schema())
    ctx.wrote("metadata", ctx.lake.write(df, "metadata", ctx.commit, entries=n, version=version))
    return version


def _sources(entries: meta.Entries) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in entries.sources:
        out[s] = out.get(s, 0) + 1
    return dict(sorted(out.items()))


def do_import(spark, cfg: Config, args) -> dict:
    if not args.file:
        raise ConfigError("FILE", "`metadata import` needs the entry file to import")
    entries = meta.read_entry_file(args.file)
    ctx = JobContext(NAME, cfg)
    version = _write(spark, ctx, entries)
    return {"version": version, "entries": len(entries), "sources": _sources(entries)}


def do_build(spark, cfg: Config, args) -> dict:
    lake = Lake(cfg.lake.path, cfg.lake.engine, cfg.lake.read_path)
    if args.no_words and args.no_captions:
        raise ConfigError("--no-words", "with --no-captions nothing is left to build from")
    mined = None
    if not args.no_captions:
        if not lake.exists("pairs"):
            raise JobError(
                f"lake {lake.root} has no `pairs` to mine captions from: ingest first, "
                "or pass --no-captions"
            )
        captions = lake.read(spark, "pairs", columns=["caption"])
        mined = meta.mine_captions(captions, args.min_count, args.min_pmi)
        log.info(
            "metadata build: %d unigrams and %d bigrams (>= %d occurrences, PMI >= %g) "
            "from %d caption words",
            len(mined.unigrams),
            len(mined.bigrams),
            mined.min_count,
            args.min_pmi,
            mined.words,
        )
    words = [] if args.no_words else meta.package_words()
    entries = meta.build_entries(mined, words)
    ctx = JobContext(NAME, cfg)
    version = _write(spark, ctx, entries)
    doc = {"version": version, "entries": len(entries), "sources": _sources(entries)}
    if mined is not None:
        doc |= {"caption_words": mined.words, "min_count": mined.min_count, "min_pmi": args.min_pmi}
    return doc


def do_list(spark, cfg: Config, args) -> dict:
    lake = Lake(cfg.lake.path, cfg.lake.engine, cfg.lake.read_path)
    if not lake.exists("metadata"):
        return {"versions": []}
    t = lake.delta("metadata").to_pyarrow_table(columns=["version", "source"])
    g = t.group_by(["version", "source"]).aggregate([("source", "count")]).to_pylist()
    versions: dict[int, dict[str, int]] = {}
    for r in g:
        versions.setdefault(r["version"], {})[r["source"]] = r["source_count"]
    return {
        "versions": [
            {"version": v, "entries": sum(s.values()), "sources": dict(sorted(s.items()))}
            for v, s in sorted(versions.items())
        ]
    }


ACTIONS = {"import": do_import, "build": do_build, "list": do_list}


def command(spark, cfg: Config, args: argparse.Namespace) -> int:
    doc = ACTIONS[args.action](spark, cfg, args)
    if getattr(args, "json", False):
        print(json.dumps(doc, sort_keys=True))
    elif args.action == "list":
        if not doc["versions"]:
            print("no metadata: run `lakecurate metadata import FILE` or `metadata build`")
        for v in doc["versions"]:
            by = ", ".join(f"{k} {n:,}" for k, n in v["sources"].items())
            print(f"v{v['version']}: {v['entries']:,} entries ({by})")
    else:
        by = ", ".join(f"{k} {n:,}" for k, n in doc["sources"].items())
        print(f"metadata v{doc['version']}: {doc['entries']:,} entries ({by})")
    return 0


build_parser, main = jobkit.entry_points(__name__)


if __name__ == "__main__":
    sys.exit(main())
