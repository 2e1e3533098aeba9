"""Structured logs for unattended runs: JSON lines, and a per-stage run summary.

`configure_logging(json_lines=True, log_file=...)` replaces the root logger's
handlers: one JSON object per line (`ts`, `level`, `logger`, `msg`, and any
fields passed as `extra={"fields": {...}}`) to stderr, and/or to a file.
`RunSummary` collects what each stage of a refresh read, wrote and counted, and
how long it took; its `to_dict()` is the final `summary` event.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record; `extra={"fields": {...}}` adds structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(
    json_lines: bool = False, log_file: str = "", level: str | None = None
) -> list[logging.Handler]:
    """Route the root logger to stderr (text or JSON lines) and optionally a file."""
    from lakecurate.runtime import progress

    progress.configure("events" if json_lines else "auto")
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    formatter = JsonLinesFormatter() if json_lines else logging.Formatter(TEXT_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        # the file is always JSON lines: it is read by machines (and by the crash tests)
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setFormatter(JsonLinesFormatter())
        handlers.append(fh)
    handlers[0].setFormatter(formatter)
    for h in handlers:
        root.addHandler(h)
    if level:
        root.setLevel(getattr(logging, level))
    elif root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    return handlers


def event(logger: logging.Logger, name: str, msg: str, **fields: Any) -> None:
    """Log `msg` at INFO with `event=name` and `fields` as structured fields."""
    logger.info(msg, extra={"fields": {"event": name, **fields}})


def read_events(path: str | Path) -> list[dict]:
    """The JSON-lines log at `path` as a list of dicts (lines that are not JSON skipped)."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a kill
    return out


@dataclass
class StageSummary:
    """One stage of a run: its outcome, rows in/out, versions read/written, time."""

    stage: str
    status: str = "pending"  # pending | ok | skipped | failed
    rows_in: int | None = None
    rows_out: int | None = None
    read_versions: dict[str, int] = field(default_factory=dict)
    written_versions: dict[str, int] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    seconds: float = 0.0
    spark_jobs: int | None = None  # Spark jobs the stage ran (None: not counted)


@dataclass
class RunSummary:
    """What a whole run did, stage by stage."""

    run_id: str
    stages: list[StageSummary] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    outcome: str = ""

    def stage(self, name: str) -> StageSummary:
        s = StageSummary(name)
        self.stages.append(s)
        return s

    def written(self) -> dict[str, int]:
        """The last version written of each table, over all stages."""
        out: dict[str, int] = {}
        for s in self.stages:
            out.update(s.written_versions)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "outcome": self.outcome,
            "seconds": round(time.time() - self.started, 3),
            "versions_written": self.written(),
            "spark_jobs": sum(s.spark_jobs or 0 for s in self.stages),
            "stages": [asdict(s) for s in self.stages],
        }

    def text(self) -> str:
        return format_run(self.run_id, self.outcome, [asdict(s) for s in self.stages])


def format_run(run_id: str, outcome: str, stages: list[dict]) -> str:
    """A few human lines: the outcome, then one line per stage."""
    jobs = [s["spark_jobs"] for s in stages if s.get("spark_jobs") is not None]
    lines = [f"refresh {run_id}: {outcome}" + (f" ({sum(jobs)} Spark jobs)" if jobs else "")]
    for s in stages:
        io = f"in={s['rows_in']} out={s['rows_out']}" if s["rows_in"] is not None else ""
        if not io and s["rows_out"] is not None:
            io = f"out={s['rows_out']}"
        wrote = ", ".join(f"{t}@v{v}" for t, v in s["written_versions"].items())
        jobs = s.get("spark_jobs")
        lines.append(
            f"  {s['stage']:<8} {s['status']:<8} {s['seconds']:7.1f} s"
            + (f" {jobs:4d} jobs" if jobs is not None else "")
            + f"  {io}"
            + (f"  wrote {wrote}" if wrote else "")
            + (f"  ({s['message']})" if s["message"] else "")
        )
    return "\n".join(lines)
