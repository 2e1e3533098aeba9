"""What a long run shows its operator while it works.

Each stage (a job, or a step of `refresh`) runs its Spark work under one job group:
`with progress.stage(spark, "embed"):`. The group's description names the stage, and
a job adds what it is doing (`progress.describe(spark, "1.2M pairs, ViT-B-32")`), so
the Spark UI and the event log say what runs.

While the stage runs, a driver thread polls Spark's status tracker for the group's
jobs and reports their tasks (done of total, rate, ETA) in one of three modes:

* `bar`: a progress line on stderr (tqdm), when stderr is a terminal;
* `events`: a JSON `progress` event every `EVENT_INTERVAL_S` (under `--log-json`);
* `off`: nothing (stderr is a file or a pipe, and logs are text).

`configure(mode)` picks the mode for the process; `auto` (the default) is `bar` on a
terminal and `off` otherwise. Progress is counted in Spark tasks and, where a job
knows how many rows it will process (`describe(spark, "...", rows=n)`) and its
executor code counts them (`row_counter()`, a Spark accumulator the UDF adds each
batch's rows to; its value reaches the driver as each task ends), in rows: rows done
of the total, rows/s and the ETA from them.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger("lakecurate.progress")

MODES = ("auto", "bar", "events", "off")
BAR_INTERVAL_S = 0.5
EVENT_INTERVAL_S = 10.0

_mode = "auto"
_current: _Stage | None = None


def configure(mode: str) -> None:
    """Set how stages report progress for this process (one of MODES)."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"progress mode {mode!r}; one of {MODES}")
    _mode = mode


def effective_mode() -> str:
    if _mode != "auto":
        return _mode
    return "bar" if _isatty(sys.stderr) else "off"


def _fallback_size(stream) -> dict[str, int]:
    """A size for the bar where the terminal reports none (a pty whose size nobody set,
    as under `script`, ssh without a tty size, some CI runners): tqdm draws nothing in
    0 columns and hides a bar below row 0. Empty: let tqdm follow the terminal."""
    import os

    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return {"ncols": 100, "nrows": 24}
    return {} if size.columns > 0 and size.lines > 0 else {"ncols": 100, "nrows": 24}


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@dataclass
class Snapshot:
    """The tasks of a job group's Spark jobs so far."""

    jobs: int = 0
    tasks_done: int = 0
    tasks_total: int = 0
    tasks_active: int = 0
    tasks_failed: int = 0


def snapshot(sc, group: str) -> Snapshot:
    """Tasks of every Spark job in `group`. A finished job counts only the tasks it ran
    (its skipped stages ran none); a running job counts all tasks of its stages."""
    tracker = sc.statusTracker()
    snap = Snapshot()
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        if job is None:
            continue
        snap.jobs += 1
        finished = str(job.status) != "RUNNING"
        for stage_id in job.stageIds:
            st = tracker.getStageInfo(stage_id)
            if st is None:
                continue
            snap.tasks_done += st.numCompletedTasks
            snap.tasks_total += st.numCompletedTasks if finished else st.numTasks
            snap.tasks_active += st.numActiveTasks
            snap.tasks_failed += st.numFailedTasks
    return snap


class _Stage:
    def __init__(self, spark, name: str, mode: str):
        self.sc = spark.sparkContext
        self.name = name
        self.group = f"lakecurate-{name}-{time.time_ns()}"
        self.detail = ""
        self.mode = mode
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = None
        self.rows = self.sc.accumulator(0)  # rows executor code reports done
        self.rows_total: int | None = None
        self._rows_base = 0  # the counter's value when `rows_total` was set
        self._rows_t0 = self.t0

    @property
    def description(self) -> str:
        return f"{self.name}: {self.detail}" if self.detail else self.name

    def start(self) -> None:
        self.sc.setJobGroup(self.group, self.description, False)
        if self.mode == "off":
            return
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(
                total=0,
                desc=self.description,
                unit="task",
                file=sys.stderr,
                leave=True,
                **_fallback_size(sys.stderr),
            )
        self._thread = threading.Thread(target=self._poll, name="lakecurate-progress", daemon=True)
        self._thread.start()

    def rows_done(self) -> int:
        return self.rows.value - self._rows_base

    def row_figures(self, final: bool = False) -> dict:
        """Rows done (of the total, where a job said it), rows/s and the ETA; empty while
        nothing counts rows."""
        done, total = self.rows_done(), self.rows_total
        if total is None and done == 0:
            return {}
        elapsed = time.monotonic() - self._rows_t0
        rate = done / elapsed if elapsed > 0 else 0.0
        out = {"rows_done": done, "rows_per_s": round(rate, 1)}
        if total is not None:
            left = max(total - done, 0)
            out["rows_total"] = total
            out["eta_s"] = round(left / rate, 1) if rate > 0 and not final else None
        return out

    def describe(self, detail: str, rows: int | None = None) -> None:
        self.detail = detail
        if rows is not None:
            self.rows_total, self._rows_base = rows, self.rows.value
            self._rows_t0 = time.monotonic()
        self.sc.setJobDescription(self.description)
        if self._bar is not None:
            self._bar.set_description_str(self.description)

    def _poll(self) -> None:
        interval = BAR_INTERVAL_S if self.mode == "bar" else EVENT_INTERVAL_S
        while not self._stop.wait(interval):
            self.report()

    def report(self, final: bool = False) -> None:
        try:
            snap = snapshot(self.sc, self.group)
        except Exception:  # the context is stopping; progress is best effort
            return
        rows = self.row_figures(final)
        if self._bar is not None:
            self._bar.total = max(snap.tasks_total, snap.tasks_done)
            self._bar.n = snap.tasks_done
            said = f"{snap.jobs} Spark jobs"
            if rows:
                of = f"/{rows['rows_total']:,}" if "rows_total" in rows else ""
                eta = f", ETA {_clock(rows['eta_s'])}" if rows.get("eta_s") is not None else ""
                said = (
                    f"{rows['rows_done']:,}{of} rows, {rows['rows_per_s']:,.0f} rows/s{eta}; {said}"
                )
            self._bar.set_postfix_str(said, refresh=False)
            self._bar.refresh()
        elif self.mode == "events":
            elapsed = time.monotonic() - self.t0
            rate = snap.tasks_done / elapsed if elapsed > 0 else 0.0
            left = snap.tasks_total - snap.tasks_done
            eta = round(left / rate, 1) if rate > 0 and not final else None
            log.info(
                "%s: %d/%d tasks",
                self.description,
                snap.tasks_done,
                snap.tasks_total,
                extra={
                    "fields": {
                        "event": "progress",
                        "stage": self.name,
                        "description": self.description,
                        "final": final,
                        "spark_jobs": snap.jobs,
                        "tasks_done": snap.tasks_done,
                        "tasks_total": snap.tasks_total,
                        "tasks_active": snap.tasks_active,
                        "tasks_failed": snap.tasks_failed,
                        "elapsed_s": round(elapsed, 1),
                        "tasks_per_s": round(rate, 3),
                        "eta_s": eta,
                        **rows,  # rows_done, rows_total, rows_per_s and a row-based eta_s
                    }
                },
            )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self.report(final=True)
        if self._bar is not None:
            self._bar.close()
        self.sc.setJobGroup(None, None, False)  # later jobs of this thread are not ours


@contextlib.contextmanager
def stage(spark, name: str) -> Iterator[_Stage | None]:
    """Run a stage's Spark work under its own job group, reporting its progress.
    Without a SparkSession (a command that needs none) it does nothing. Nested
    stages (a job inside `refresh`) keep the outer stage's group and name."""
    global _current
    if spark is None or _current is not None:
        yield _current
        return
    st = _Stage(spark, name, effective_mode())
    _current = st
    st.start()
    try:
        yield st
    finally:
        _current = None
        st.stop()


def describe(spark, detail: str, rows: int | None = None) -> None:
    """Say what the current stage is doing (in the Spark UI, the event log, the bar);
    `rows`: how many rows the work that follows processes, counted by `row_counter()`."""
    if _current is not None:
        _current.describe(detail, rows)
    elif spark is not None:
        spark.sparkContext.setJobDescription(detail)


def spark_jobs(spark) -> int | None:
    """How many Spark jobs the current stage has run so far (None outside a stage)."""
    if _current is None or spark is None:
        return None
    return snapshot(_current.sc, _current.group).jobs


def row_counter():
    """The current stage's row accumulator, for executor code to `add` each batch's rows
    to (None outside a stage: count nothing)."""
    return _current.rows if _current is not None else None


def _clock(seconds: float) -> str:
    s = int(seconds)
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )
