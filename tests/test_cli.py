"""The command line as users call it: the console script and spark-submit of a job file."""

import json
import os
import subprocess
import sys
from pathlib import Path

from deltalake import DeltaTable

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(args, **kw):
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, **kw)


def test_help_lists_every_command():
    out = run([BIN / "lakecurate", "--help"])
    assert out.returncode == 0
    for cmd in (
        "ingest",
        "embed",
        "dedup",
        "select",
        "publish",
        "refresh",
        "versions",
        "tables",
        "history",
        "demo",
    ):
        assert cmd in out.stdout, cmd


def test_tables_json_on_an_empty_lake(tmp_path):
    out = run([BIN / "lakecurate", "--lake", str(tmp_path / "lake"), "tables", "--json"])
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert {t["table"] for t in doc["tables"]} >= {"pairs", "datasets"}
    assert all(t["version"] is None for t in doc["tables"])


def test_bad_config_exits_2_and_names_the_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model: {precision: fp7}\n")
    out = run([BIN / "lakecurate", "--config", str(cfg), "tables"])
    assert out.returncode == 2
    assert "model.precision" in out.stderr and "fp16" in out.stderr


def test_unknown_history_table_exits_2(tmp_path):
    out = run([BIN / "lakecurate", "--lake", str(tmp_path), "history", "nope"])
    assert out.returncode == 2
    assert "unknown table 'nope'" in out.stderr


def test_spark_submit_runs_the_same_job(tmp_path, sample_set):
    sample_set.write_webdataset(tmp_path / "wds", shard_size=150)
    lake = tmp_path / "lake"
    out = run(
        [
            BIN / "spark-submit",
            "--master",
            "local[2]",
            str(ROOT / "jobs" / "ingest.py"),
            "--lake",
            str(lake),
            "--json",
            str(tmp_path / "wds"),
        ]
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["job"] == "ingest"
    pairs = DeltaTable(str(lake / "pairs"))
    meta = pairs.history()[0]
    assert meta["lakecurate.job"] == "ingest"
    assert meta["lakecurate.run_id"] == result["run_id"]
