"""Kill `lakecurate ingest` with SIGKILL at several moments, re-run, compare with a clean run.

One lake takes three kills in a row (while pairs files are being written, right
after the pairs commit, right after the rejects commit), then an in-process
re-run. It must end with exactly the rows of an uninterrupted run into another
lake, and no version of any table may reference a missing or partial file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from lakecurate.deltaio.lake import VOLATILE_COLUMNS
from lakecurate.jobs import ingest
from lakecurate.runtime.config import replace

TABLES = ("pairs", "rejects", "sources")


def _any_file(d: Path) -> bool:
    return d.is_dir() and any(p.is_file() for p in d.iterdir())


def _first_commit(d: Path) -> bool:
    return (d / "_delta_log" / "00000000000000000000.json").exists()


def _kill_when(cmd: list[str], ready, timeout_s: float = 600) -> bool:
    """Run `cmd`; SIGKILL its process group once `ready()`; True if it was still running."""
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
                return True
            time.sleep(0.005)
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)


def _rows(spark, lake, table: str) -> list[tuple]:
    df = lake.read(spark, table)
    cols = [c for c in df.columns if c not in VOLATILE_COLUMNS]
    return sorted(tuple(r) for r in df.select(*cols).collect())


def _assert_every_version_is_whole(root: Path) -> None:
    for table in TABLES:
        uri = str(root / table)
        if not DeltaTable.is_deltatable(uri):
            continue
        for v in range(DeltaTable(uri).version() + 1):
            dt = DeltaTable(uri, version=v)
            adds = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
            for a in adds:
                path = root / table / a["path"]
                assert not a["path"].endswith(".inprogress"), (table, v, a["path"])
                assert path.is_file() and path.stat().st_size == a["size_bytes"], (table, v, path)
                assert pq.read_metadata(path).num_rows == a["num_records"], (table, v, path)


@pytest.mark.slow
def test_killed_ingest_reruns_to_the_same_lake(spark, cfg, wds_dir, tmp_path):
    from lakecurate.deltaio.lake import Lake

    killed_root = tmp_path / "killed"
    cmd = [sys.executable, "-m", "lakecurate.cli", "--lake", str(killed_root)]
    cmd += ["--master", "local[2]", "ingest", str(wds_dir)]
    moments = {
        "pairs files being written": lambda: _any_file(killed_root / "pairs"),
        "pairs committed": lambda: _first_commit(killed_root / "pairs"),
        "rejects committed": lambda: _first_commit(killed_root / "rejects"),
    }
    hits = {name: _kill_when(cmd, ready) for name, ready in moments.items()}
    assert sum(hits.values()) >= 2, hits  # the kills landed while ingest was running
    # the ledger is written last: it never exists without pairs and rejects (the ledger
    # commit follows the rejects commit by milliseconds, so the last kill may miss it)
    if _first_commit(killed_root / "sources"):
        assert _first_commit(killed_root / "pairs") and _first_commit(killed_root / "rejects")

    killed = Lake(str(killed_root))
    ingest.run(spark, replace(cfg, lake={"path": str(killed_root)}, sources=[str(wds_dir)]))
    clean_root = tmp_path / "clean"
    clean = Lake(str(clean_root))
    ingest.run(spark, replace(cfg, lake={"path": str(clean_root)}, sources=[str(wds_dir)]))

    for table in TABLES:
        assert _rows(spark, killed, table) == _rows(spark, clean, table), table
    _assert_every_version_is_whole(killed_root)
