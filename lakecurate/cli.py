"""`lakecurate [--lake PATH] [--config FILE] [--master URL] COMMAND ...`

One console script; each subcommand is a module with the job protocol of
`lakecurate.runtime.jobkit` (NAME, HELP, add_arguments, apply_args, run).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lakecurate.runtime.jobkit import add_global_arguments, execute

COMMANDS: dict[str, str] = {
    "ingest": "lakecurate.jobs.ingest",
    "embed": "lakecurate.jobs.embed",
    "export-embeddings": "lakecurate.jobs.export_embeddings",
    "dedup": "lakecurate.jobs.dedup",
    "metadata": "lakecurate.jobs.metadata",
    "concepts": "lakecurate.jobs.concepts",
    "select": "lakecurate.jobs.selection",
    "publish": "lakecurate.jobs.publish",
    "refresh": "lakecurate.jobs.refresh",
    "status": "lakecurate.catalog.status",
    "versions": "lakecurate.catalog.versions",
    "tables": "lakecurate.catalog.tables:Tables",
    "history": "lakecurate.catalog.tables:History",
    "sql": "lakecurate.catalog.sql",
    "report": "lakecurate.catalog.report",
    "vacuum": "lakecurate.deltaio.maintenance",
    "compact": "lakecurate.deltaio.compaction",
    "demo": "lakecurate.jobs.demo",
    "probe": "lakecurate.probe.command",
}


def _available() -> dict[str, object]:
    mods = {}
    for name, target in COMMANDS.items():
        path, _, attr = target.partition(":")
        try:
            mod = importlib.import_module(path)
        except ModuleNotFoundError as e:
            if e.name != path:  # a real missing dependency: say so
                raise
            continue
        mods[name] = getattr(mod, attr) if attr else mod
    return mods


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    p = argparse.ArgumentParser(
        prog="lakecurate",
        description="Distributed, versioned curation of image-text training data "
        "(Spark + Delta). Run `lakecurate demo` for a tour on generated data.",
    )
    add_global_arguments(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    mods = _available()
    for name, mod in mods.items():
        sp = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        add_global_arguments(sp, suppress=True)
        mod.add_arguments(sp)
    return p, mods


def main(argv: list[str] | None = None) -> int:
    parser, mods = build_parser()
    args = parser.parse_args(argv)
    return execute(mods[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
