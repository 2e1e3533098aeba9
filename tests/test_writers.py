"""Two real writers at once, as separate processes on one lake.

Every writing command takes the lake's writer lease before it starts Spark, so a
second writer is refused at once, exits 1 and names the holder; the first finishes
and the second, run again, does its work. Afterwards nothing is lost or doubled:
checked by uid and by count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lakecurate.deltaio.lake import Lake
from lakecurate.demo.sample import generate
from lakecurate.runtime.lease import LEASE_FILE

pytestmark = pytest.mark.slow

CONFIG = {
    "spark": {"master": "local[2]", "shuffle_partitions": 2, "arrow_batch_rows": 256},
    "model": {"name": "lakecurate-tiny", "pretrained": "none", "batch_size": 32},
    "publish": {"name": "nightly", "shard_size": 50},
}


@pytest.fixture
def setup(tmp_path):
    config = tmp_path / "lakecurate.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        generate(n=240, seed=seed, prefix=name).write_webdataset(tmp_path / name, shard_size=60)
    return tmp_path, str(tmp_path / "lake"), str(config)


def _cmd(lake: str, config: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "lakecurate.cli", "--lake", lake, "--config", config, *args]


def _run(lake: str, config: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(_cmd(lake, config, *args), capture_output=True, text=True, timeout=600)
    said = [ln for ln in proc.stderr.splitlines() if not ln.lstrip().startswith("at ")]
    assert proc.returncode == 0, "\n".join(said[-40:])
    return proc


def _while_running(lake: str, config: str, first: list[str], second: list[str]):
    """Start `first`; once it holds the lease, run `second` to its end; then wait for
    `first`. Returns (first's result, second's result)."""
    proc = subprocess.Popen(
        _cmd(lake, config, *first), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lease = Path(lake) / LEASE_FILE
    deadline = time.time() + 120
    while not lease.exists():
        assert proc.poll() is None, f"{first} ended before it took the lease: {proc.stderr.read()}"
        assert time.time() < deadline, "the first writer never took the lease"
        time.sleep(0.05)
    other = subprocess.run(_cmd(lake, config, *second), capture_output=True, text=True, timeout=300)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return proc, other


def _refused(result: subprocess.CompletedProcess, holder: str) -> None:
    assert result.returncode == 1, result.stderr[-2000:]
    assert "holds this lake's lease" in result.stderr and holder in result.stderr


def _uids(lake: str, table: str) -> list[str]:
    from deltalake import DeltaTable

    return DeltaTable(Lake(lake).uri(table)).to_pyarrow_table(columns=["uid"]).column(0).to_pylist()


def test_two_ingests_of_different_sources(setup):
    root, lake, config = setup
    _, second = _while_running(
        lake, config, ["ingest", str(root / "a")], ["ingest", str(root / "b")]
    )
    _refused(second, "ingest:")
    first_uids = _uids(lake, "pairs")
    _run(lake, config, "ingest", str(root / "b"))  # run again once the first is done
    uids = _uids(lake, "pairs")
    assert len(uids) == len(set(uids)) > len(first_uids) > 0
    assert set(first_uids) < set(uids)
    _run(lake, config, "ingest", str(root / "a"), str(root / "b"))  # all known: adds nothing
    assert sorted(_uids(lake, "pairs")) == sorted(uids)


def test_ingest_while_embed_runs_then_both_complete(setup):
    root, lake, config = setup
    _run(lake, config, "ingest", str(root / "a"))
    _, second = _while_running(lake, config, ["embed"], ["ingest", str(root / "b")])
    _refused(second, "embed:")
    _run(lake, config, "ingest", str(root / "b"))
    _run(lake, config, "embed")
    pairs, embedded = _uids(lake, "pairs"), _uids(lake, "embeddings")
    assert len(embedded) == len(set(embedded)) and sorted(embedded) == sorted(pairs)


def test_a_second_publish_and_versions_tag_while_publish_runs(setup):
    root, lake, config = setup

    def curate(source: str) -> None:
        for args in (["ingest", str(root / source)], ["dedup"], ["select"]):
            _run(lake, config, *args)

    curate("a")
    _run(lake, config, "publish", "nightly")
    curate("b")
    _, again = _while_running(lake, config, ["publish", "nightly"], ["publish", "nightly"])
    _refused(again, "publish:")
    curate("c")
    tag = ["versions", "tag", "nightly@1", "prod"]
    _, tagged = _while_running(lake, config, ["publish", "nightly"], tag)
    _refused(tagged, "publish:")
    _run(lake, config, *tag)
    doc = json.loads(_run(lake, config, "versions", "list", "--json").stdout.splitlines()[-1])
    rows = {r["version"]: r for r in doc["datasets"]}
    assert sorted(rows) == [1, 2, 3] and len(doc["datasets"]) == 3  # each version once
    assert rows[1]["tags"] == ["prod"]
    assert rows[1]["num_samples"] < rows[2]["num_samples"] < rows[3]["num_samples"]
