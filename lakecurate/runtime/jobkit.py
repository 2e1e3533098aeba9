"""What every job shares: its result, the common command-line options, and running it.

A job module defines `NAME`, `HELP`, `add_arguments(parser)`, `apply_args(cfg, args)`
and `run(spark, cfg) -> JobResult`; `build_parser()` and `main(argv)` come from here,
so `lakecurate <job> ...` and `spark-submit jobs/<job>.py ...` run the same code.

A command that is not a job (tables, history, versions, ...) defines `NAME`, `HELP`,
`NEEDS_SPARK`, `add_arguments(parser)` and `command(spark, cfg, args) -> int` instead,
and prints its own output (`--json`: one JSON document on stdout).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

from lakecurate.deltaio.lake import Commit, Lake, new_run_id
from lakecurate.runtime import progress
from lakecurate.runtime.config import Config, config_hash, load_config
from lakecurate.runtime.errors import LakecurateError
from lakecurate.runtime.runs import record_run

log = logging.getLogger("lakecurate")


@dataclass
class JobResult:
    """What a job did: the table versions it read and wrote, and its counts."""

    job: str
    run_id: str
    read_versions: dict[str, int] = field(default_factory=dict)
    written_versions: dict[str, int] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    def summary(self) -> str:
        parts = [f"{self.job}: {self.message}" if self.message else self.job]
        if self.counts:
            parts.append("  counts: " + ", ".join(f"{k}={v}" for k, v in self.counts.items()))
        if self.read_versions:
            parts.append("  read:    " + _versions(self.read_versions))
        if self.written_versions:
            parts.append("  wrote:   " + _versions(self.written_versions))
        parts.append(f"  run_id:  {self.run_id}  ({self.seconds:.1f} s)")
        return "\n".join(parts)


def _versions(v: dict[str, int]) -> str:
    return ", ".join(f"{t}@v{n}" for t, n in v.items())


class JobContext:
    """Per-run helpers a job uses: the lake, a run id and the commit identity."""

    def __init__(self, job: str, cfg: Config):
        self.job = job
        self.cfg = cfg
        self.lake = Lake(cfg.lake.path, cfg.lake.engine, cfg.lake.read_path)
        self.run_id = new_run_id(job)
        self.commit = Commit(job=job, run_id=self.run_id, config_hash=config_hash(cfg))
        self.result = JobResult(job=job, run_id=self.run_id)
        self._t0 = time.time()

    def read(self, spark, table: str, version: int | None = None):
        """Read a table (latest unless `version`) and record the version read."""
        v = self.lake.version(table) if version is None else version
        if v is not None:
            self.result.read_versions[table] = v
        return self.lake.read(spark, table, v)

    def read_added(self, spark, table: str, since: int | None, columns: list[str]):
        """(`columns` of the rows `table` gained since version `since`, or of all its
        rows when it is not append-only since then or `since` is None; the files read,
        None for all). The latest version is recorded as read."""
        from pyspark.sql.types import StructType

        version, files = self.lake.added_since(table, since)
        if version is not None:
            self.result.read_versions[table] = version
        if version is None or files == []:  # no such table yet, or nothing added
            schema = self.lake.spec(table).spark_schema()
            return spark.createDataFrame([], StructType([schema[c] for c in columns])), []
        if files is None:
            return self.lake.read(spark, table, version).select(*columns), None
        return self.lake.read_files(spark, table, files, columns), files

    def wrote(self, table: str, version: int) -> None:
        self.result.written_versions[table] = version
        log.info("%s: wrote %s@v%d", self.job, table, version)

    def done(self, message: str = "", **counts: Any) -> JobResult:
        self.result.counts.update(counts)
        self.result.message = message
        self.result.seconds = time.time() - self._t0
        return self.result


def add_global_arguments(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    """--lake/--config/--master/--json/--log-level; `suppress` keeps top-level values."""
    d = argparse.SUPPRESS if suppress else None
    p.add_argument("--lake", default=d, help="lake directory or URI (default: ./lake)")
    p.add_argument("--config", default=d, help="lakecurate.yaml (default: built-in defaults)")
    p.add_argument("--master", default=d, help="Spark master URL (default: local[*])")
    p.add_argument(
        "--json", action="store_true", default=d, help="print one JSON document on stdout"
    )
    p.add_argument("--log-level", default=d, choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def build_parser(job: ModuleType) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"lakecurate {job.NAME}", description=job.HELP)
    add_global_arguments(p)
    job.add_arguments(p)
    return p


def setup_logging(level: str | None) -> None:
    progress.configure("auto")
    logging.basicConfig(
        level=getattr(logging, level or "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,  # under spark-submit a handler on stdout may exist; --json owns stdout
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)


def load_from_args(args: argparse.Namespace) -> Config:
    overrides = {
        "lake.path": getattr(args, "lake", None),
        "spark.master": getattr(args, "master", None),
    }
    return load_config(getattr(args, "config", None), overrides)


def execute(job: ModuleType, args: argparse.Namespace) -> int:
    """Load config, apply the job's flags, run it in a session; map failures to exit codes."""
    setup_logging(getattr(args, "log_level", None))
    try:
        cfg = load_from_args(args)
        if hasattr(job, "apply_args"):
            cfg = job.apply_args(cfg, args)
        from lakecurate.runtime.session import spark_session, storage_environment

        storage_environment(cfg.lake.storage_options)  # the lease may live in the store
        with writer_lease(cfg, job, args):
            if getattr(job, "NEEDS_SPARK", True):
                with spark_session(
                    cfg.spark, getattr(args, "log_level", None), cfg.lake.storage_options
                ) as spark:
                    result = _call(job, spark, cfg, args)
            else:
                result = _call(job, None, cfg, args)
    except LakecurateError as e:
        print(f"lakecurate {job.NAME}: error: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # a job failure: full traceback in the log, short line at the end
        log.error("%s failed:\n%s", job.NAME, traceback.format_exc())
        print(f"lakecurate {job.NAME}: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if isinstance(result, JobResult):
        if getattr(args, "json", False):
            print(result.to_json())
        else:
            print(result.summary())
        return 0
    return int(result or 0)


def writes(job: ModuleType, args: argparse.Namespace) -> bool:
    """Whether this run of `job` writes the lake: its `writes(args)` where that depends
    on the arguments (`versions tag` writes, `versions list` does not), else `WRITES`."""
    if hasattr(job, "writes"):
        return bool(job.writes(args))
    return bool(getattr(job, "WRITES", False))


@contextlib.contextmanager
def writer_lease(cfg: Config, job: ModuleType, args: argparse.Namespace):
    """The lake's writer lease around a writing command (refresh takes its own): a
    second writer is refused with a message naming the holder, so two commands never
    write one lake at once (commits also detect conflicts, see deltaio/conflicts.py)."""
    if not writes(job, args):
        yield None
        return
    import getpass
    import socket

    from lakecurate.runtime.lease import open_lease

    owner = f"{job.NAME}:{getpass.getuser()}@{socket.gethostname()}"
    rc = cfg.refresh
    lease = open_lease(cfg.lake.path, rc.lease_dir, owner, rc.lease_timeout_s, rc.heartbeat_s)
    with lease:
        yield lease


def _call(job: ModuleType, spark, cfg: Config, args: argparse.Namespace):
    if hasattr(job, "command"):
        return job.command(spark, cfg, args)
    return run_job(job, spark, cfg)


def run_job(job: ModuleType, spark, cfg: Config) -> JobResult:
    """`job.run(spark, cfg)` as one stage: its Spark work under a job group named for
    it, with progress on a terminal (or as events under --log-json)."""
    with progress.stage(spark, job.NAME):
        try:
            result = job.run(spark, cfg)
        except BaseException as e:
            record_run(cfg.lake.path, job.NAME, "failed", error=f"{type(e).__name__}: {e}")
            raise
    record_run(
        cfg.lake.path, job.NAME, "ok", **{k: v for k, v in asdict(result).items() if k != "job"}
    )
    return result


def main(job: ModuleType, argv: list[str] | None = None) -> int:
    return execute(job, build_parser(job).parse_args(argv))


def entry_points(module_name: str):
    """`build_parser, main = jobkit.entry_points(__name__)`: a module's script entry points."""

    def module_build_parser() -> argparse.ArgumentParser:
        return build_parser(sys.modules[module_name])

    def module_main(argv: list[str] | None = None) -> int:
        return main(sys.modules[module_name], argv)

    return module_build_parser, module_main
