"""SIGKILL the refresh during ingest, embed, dedup and publish, then run it again.

One lake is refreshed by `lakecurate refresh` subprocesses, each killed with SIGKILL
while a stage is writing (the test watches the JSON-lines log for the stage's start
and the table directory for the first new file). Each next run takes over the dead
run's lease at once (same host, pid gone) and resumes. A final run completes it; its
tables and published dataset version must equal an uninterrupted run's on the same
inputs, ignoring run ids, timestamps and paths.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lakecurate.deltaio.lake import VOLATILE_COLUMNS, Lake
from lakecurate.runtime.logs import read_events
from lakecurate.schemas import TABLES

pytestmark = pytest.mark.slow

# where the files of each stage's writes appear (relative to the lake)
KILL_POINTS = [
    ("ingest", ("pairs", "rejects", "sources")),
    ("embed", ("embeddings",)),
    ("dedup", ("duplicates", "signals")),
    ("publish", ("_published", "datasets")),
]
# columns that legitimately differ between two lakes holding the same data
PATHLIKE = {"datasets": ("shard_uri", "manifest_uri", "pinned_versions", "config_hash")}
CONFIG = {
    "spark": {"master": "local[2]", "shuffle_partitions": 2, "arrow_batch_rows": 256},
    "model": {"name": "lakecurate-tiny", "pretrained": "none", "batch_size": 32},
    "publish": {"name": "nightly", "shard_size": 25},
    "refresh": {"lease_timeout_s": 600, "heartbeat_s": 5},
}


def refresh_cmd(lake: Path, config: Path, sources: Path, log_file: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lakecurate.cli",
        *("--lake", str(lake), "--config", str(config)),
        "refresh",
        str(sources),
        *("--format", "webdataset", "--log-file", str(log_file)),
    ]


def _files(lake: Path, dirs: tuple[str, ...]) -> set[str]:
    out = set()
    for d in dirs:
        root = lake / d
        if root.exists():
            out |= {str(p) for p in root.rglob("*") if p.is_file()}
    return out


def kill_during(proc, log_file: Path, lake: Path, stage: str, dirs, timeout=600) -> str:
    """SIGKILL `proc` once `stage` has started and written its first file; say where."""
    deadline = time.time() + timeout
    before: set[str] | None = None
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"refresh exited ({proc.returncode}) before the kill in {stage}")
        events = read_events(log_file)
        names = [(e.get("event"), e.get("stage")) for e in events]
        if before is None and ("stage_start", stage) in names:
            before = _files(lake, dirs)
        if before is not None:
            done = ("stage_done", stage) in names
            if done or _files(lake, dirs) - before:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
                return f"{stage}: {'after' if done else 'during'}"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    raise AssertionError(f"{stage} never started within {timeout} s")


# --- comparing two lakes --------------------------------------------------------------------


def comparable(spark, lake: Lake, table: str):
    """The table's rows without run ids, timestamps and lake paths (None if absent)."""
    if not lake.exists(table):
        return None
    drop = set(VOLATILE_COLUMNS) | set(PATHLIKE.get(table, ()))
    df = lake.read(spark, table)
    return df.select(*[c for c in df.columns if c not in drop])


def table_differences(spark, a: Lake, b: Lake) -> dict[str, str]:
    """{table: what differs} over every table of the contract; empty when equal."""
    diffs = {}
    for t in TABLES:
        da, db = comparable(spark, a, t), comparable(spark, b, t)
        if da is None or db is None:
            if (da is None) != (db is None):
                diffs[t] = f"exists in only one lake ({a.root if da is not None else b.root})"
            continue
        only_a, only_b = da.exceptAll(db), db.exceptAll(da)
        na, nb = only_a.count(), only_b.count()
        if na or nb:
            diffs[t] = (
                f"{na} rows only in {a.root}, {nb} only in {b.root}; e.g. "
                f"{[r.asDict() for r in only_a.drop('image').limit(2).collect()]} vs "
                f"{[r.asDict() for r in only_b.drop('image').limit(2).collect()]}"
            )
    return diffs


def published(spark, lake: Lake, name: str) -> list[dict]:
    """Each published version of `name`: its number, counts, hash and shard sha256s."""
    rows = lake.read(spark, "datasets").filter(f"name = '{name}'").orderBy("version").collect()
    out = []
    for r in rows:
        manifest = json.loads(Path(r["manifest_uri"]).read_text())
        out.append(
            {
                "version": r["version"],
                "num_samples": r["num_samples"],
                "selection_hash": r["selection_hash"],
                "shards": [(s["name"], s["sha256"]) for s in manifest["shards"]],
            }
        )
    return out


# --- the test -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crash_inputs(tmp_path_factory):
    from lakecurate.demo.sample import generate

    root = tmp_path_factory.mktemp("crash")
    generate(n=40, seed=21, prefix="k").write_webdataset(root / "src", shard_size=20)
    (root / "lakecurate.yaml").write_text(yaml.safe_dump(CONFIG))
    return root


def kill_points(config) -> list[tuple[str, tuple[str, ...]]]:
    """All four points with `-m slow` (or LAKECURATE_SLOW_TESTS=1, `make cluster-test`);
    otherwise only publish, the last and most involved one: each point is a Spark start."""
    selected = "slow" in (config.getoption("markexpr") or "")
    if selected or os.environ.get("LAKECURATE_SLOW_TESTS") == "1":
        return KILL_POINTS
    return [p for p in KILL_POINTS if p[0] == "publish"]


def test_killed_refreshes_resume_to_the_uninterrupted_result(
    request, spark, crash_inputs, tmp_path
):
    from lakecurate.jobs import refresh
    from lakecurate.runtime.config import load_config

    config, src = crash_inputs / "lakecurate.yaml", crash_inputs / "src"
    killed_lake = tmp_path / "killed"
    landed = []
    for i, (stage, dirs) in enumerate(kill_points(request.config)):
        log_file = tmp_path / f"run{i}.jsonl"
        stderr = open(tmp_path / f"run{i}.err", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            refresh_cmd(killed_lake, config, src, log_file),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=dict(os.environ, HF_HUB_OFFLINE="1"),
        )
        try:
            landed.append(kill_during(proc, log_file, killed_lake, stage, dirs))
        except AssertionError as e:
            stderr.close()
            raise AssertionError(f"{e}\n{(tmp_path / f'run{i}.err').read_text()[-4000:]}") from None
        finally:
            stderr.close()
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        assert proc.returncode == -signal.SIGKILL
        # the dead run's lease is still there, and no summary was logged
        assert (killed_lake / "_lease.json").exists()
        assert "refresh_summary" not in [e.get("event") for e in read_events(log_file)]
    assert any(x.endswith("during") for x in landed), landed

    def cfg_for(lake: Path):
        return load_config(
            config, {"lake.path": str(lake), "sources": [{"uri": str(src), "format": "webdataset"}]}
        )

    final = refresh.run(spark, cfg_for(killed_lake))
    assert final.counts["dataset_version"] == 1, (landed, final.message)
    clean = refresh.run(spark, cfg_for(tmp_path / "clean"))
    assert clean.counts["published"] and clean.counts["dataset_version"] == 1

    a, b = Lake(str(killed_lake)), Lake(str(tmp_path / "clean"))
    assert table_differences(spark, a, b) == {}, landed
    assert published(spark, a, "nightly") == published(spark, b, "nightly"), landed
    # nothing half-written is left where readers look
    leftovers = [p.name for p in (killed_lake / "_published" / "nightly").iterdir()]
    assert leftovers == ["v1"], leftovers
