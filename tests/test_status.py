"""`lakecurate status --json`: what each stage has pending, before and after each stage."""

from __future__ import annotations

import json

import pytest

from lakecurate import cli
from lakecurate.catalog.status import files_status
from lakecurate.deltaio.lake import Lake
from lakecurate.demo.sample import generate
from lakecurate.runtime.lease import Lease


@pytest.fixture
def run_cli(tmp_path, lake_path, capsys):
    """`lakecurate ARGS` on the test lake with the tiny model; returns (rc, stdout)."""
    conf = tmp_path / "lakecurate.yaml"
    conf.write_text(
        "spark: {master: 'local[2]', shuffle_partitions: 2}\n"
        "model: {name: lakecurate-tiny, pretrained: none, batch_size: 32}\n"
        "publish: {name: st}\n"
    )

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        rc = cli.main(["--lake", lake_path, "--config", str(conf), *args])
        run.captured = capsys.readouterr()
        return rc, run.captured.out

    return run


def _status(run_cli) -> dict:
    rc, out = run_cli("status", "--json")
    assert rc == 0
    doc = json.loads(out)
    return {**doc["stages"], "lease": doc["lease"], "files": doc["files"]}


def test_status_says_what_each_stage_has_pending(spark, run_cli, tmp_path, lake_path):
    rc, _ = run_cli("status", "--json")
    assert rc == 2 and "holds no lake yet" in run_cli.captured.err

    night1, night2 = tmp_path / "night1", tmp_path / "night2"
    generate(n=40, seed=21, prefix="a").write_webdataset(night1, shard_size=20)
    generate(n=12, seed=22, prefix="b").write_webdataset(night2, shard_size=12)
    assert run_cli("ingest", str(night1))[0] == 0
    s = _status(run_cli)
    pairs = s["embed"]["embedded"] + s["embed"]["pending"]
    assert (
        s["embed"]["pending"] == pairs > 0 and s["embed"]["model_id"] == "lakecurate-tiny/none/fp32"
    )
    assert s["dedup"]["pending"] == pairs
    assert s["select"]["stale"] is True and s["publish"]["unpublished"] is None
    assert s["refresh"]["last"] is None and s["lease"]["held"] is False

    assert run_cli("embed")[0] == 0
    s = _status(run_cli)
    assert s["embed"]["pending"] == 0 and s["dedup"]["pending"] == pairs

    assert run_cli("dedup")[0] == 0
    assert _status(run_cli)["dedup"]["pending"] == 0

    assert run_cli("select")[0] == 0
    s = _status(run_cli)
    assert s["select"]["stale"] is False and s["publish"]["unpublished"] is True

    assert run_cli("publish", "st")[0] == 0
    s = _status(run_cli)
    assert s["publish"]["unpublished"] is False and s["publish"]["dataset_version"] == 1

    # new pairs: every stage after ingest has work again, and the selection is stale
    assert run_cli("ingest", str(night2))[0] == 0
    s = _status(run_cli)
    assert 0 < s["embed"]["pending"] <= 12 and s["dedup"]["pending"] == s["embed"]["pending"]
    assert s["select"]["stale"] is True and "pairs v" in s["select"]["detail"]

    with Lease(lake_path, owner="nightly@host"):
        held = _status(run_cli)["lease"]
        assert held["held"] is True and held["owner"] == "nightly@host" and not held["stale"]

    assert run_cli("refresh", str(night1), str(night2))[0] == 0
    s = _status(run_cli)
    assert s["embed"]["pending"] == s["dedup"]["pending"] == 0
    assert s["select"]["stale"] is False and s["publish"]["unpublished"] is False
    assert s["refresh"]["last"]["status"] == "ok" and "published st@2" in s["refresh"]["detail"]
    assert s["ingest"]["pending"] is None  # the config names no sources

    rc, out = run_cli("status")
    assert rc == 0 and "embed" in out and "published st@2" in out
    # small files: none reaches compact's threshold yet; at a lower one, the appends do
    assert s["files"]["compact"] == {} and "no table needs compacting" in out
    lake = Lake(lake_path)
    due = files_status(lake, min_files=2)["compact"]
    assert due["pairs"] == len(lake.add_actions("pairs")) >= 2


def test_a_run_record_that_cannot_be_written_does_not_fail_the_run(tmp_path, caplog):
    """Recording is best effort: the work is in the lake whatever happens to the record."""
    from lakecurate.runtime.runs import last_run, record_run

    blocker = tmp_path / "lake"
    blocker.write_text("a file where the lake's _runs folder would go")
    record_run(str(blocker), "select", "ok")  # must not raise
    assert "could not record the select run" in caplog.text
    record_run(str(tmp_path / "ok"), "select", "ok", read_versions={"pairs": 3})
    assert last_run(str(tmp_path / "ok"), "select")["read_versions"] == {"pairs": 3}
