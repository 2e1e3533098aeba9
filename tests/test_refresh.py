"""`lakecurate refresh`: the incremental run, in the session's Spark (no subprocess)."""

from __future__ import annotations

import argparse
import os

import pytest

from lakecurate.demo.sample import generate
from lakecurate.jobs import refresh
from lakecurate.runtime.config import load_config
from lakecurate.runtime.errors import ConfigError
from lakecurate.runtime.lease import LEASE_FILE, Lease, LeaseHeldError


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    """Two batches of WebDataset shards: the first night's and a later one (new keys)."""
    root = tmp_path_factory.mktemp("refresh-src")
    generate(n=40, seed=11, prefix="a").write_webdataset(root / "night1", shard_size=20)
    generate(n=10, seed=12, prefix="b").write_webdataset(root / "night2", shard_size=10)
    return root


def test_refresh_publishes_then_says_unchanged_then_publishes_new_pairs(spark, cfg, batches):
    from deltalake import DeltaTable

    lake = cfg.lake.path
    first = refresh.run(spark, _with_sources(cfg, batches / "night1"))
    stages = {s["stage"]: s for s in first.counts["stages"]}
    statuses = [s["status"] for s in first.counts["stages"]]
    assert statuses == ["ok", "ok", "ok", "skipped", "ok", "ok"], first.counts
    assert "matches no concepts" in stages["concepts"]["message"]
    assert first.counts["published"] is True and first.counts["dataset_version"] == 1
    assert stages["ingest"]["rows_out"] > 0 and stages["publish"]["rows_out"] > 0
    assert stages["embed"]["rows_out"] == stages["ingest"]["rows_out"]  # every new pair embedded
    assert not os.path.exists(f"{lake}/{LEASE_FILE}")  # released

    again = refresh.run(spark, _with_sources(cfg, batches / "night1"))
    assert again.counts["published"] is False and again.counts["dataset_version"] == 1
    assert "unchanged" in again.message
    st = {s["stage"]: s for s in again.counts["stages"]}
    assert st["ingest"]["rows_out"] == 0 and st["embed"]["rows_out"] == 0
    assert st["publish"]["status"] == "skipped"
    assert "datasets" not in again.written_versions
    # every stage counts its Spark jobs; the summary says the total
    assert all(isinstance(s["spark_jobs"], int) for s in first.counts["stages"])
    assert stages["ingest"]["spark_jobs"] > 0
    assert st["dedup"]["spark_jobs"] == 0  # nothing new: no Spark job at all
    text = refresh.format_run(again.run_id, again.message, again.counts["stages"])
    total = sum(s["spark_jobs"] for s in again.counts["stages"])
    assert f"({total} Spark jobs)" in text and " jobs  " in text

    third = refresh.run(spark, _with_sources(cfg, batches / "night1", batches / "night2"))
    assert third.counts["published"] is True and third.counts["dataset_version"] == 2
    st = {s["stage"]: s for s in third.counts["stages"]}
    assert 0 < st["ingest"]["rows_out"] <= 10  # only night2's pairs are new
    # the outcome says how many of the previous selection's samples left it
    assert f"churn {st['select']['counts']['churn_removed']}" in third.message
    rows = _datasets(spark, lake)
    assert [r["version"] for r in rows] == [1, 2]
    assert rows[0]["selection_hash"] != rows[1]["selection_hash"]
    assert rows[1]["num_samples"] > rows[0]["num_samples"]
    assert DeltaTable(f"{lake}/sources").version() == 1  # one ledger commit per ingesting run


def test_refresh_without_sources_refreshes_what_the_lake_holds(spark, cfg):
    with pytest.raises(ConfigError, match="sources"):
        refresh.run(spark, cfg)  # nothing given and nothing in the lake


def test_a_second_refresh_is_refused_while_the_lease_is_held(spark, cfg, batches):
    cfg = _with_sources(cfg, batches / "night1")
    with Lease(cfg.lake.path, owner="nightly-1", timeout_s=600):
        with pytest.raises(LeaseHeldError, match="nightly-1"):
            refresh.run(spark, cfg)
    from lakecurate.deltaio.lake import Lake

    assert Lake(cfg.lake.path).versions() == {}  # the refused refresh wrote nothing


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    refresh.add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_set_sources_name_model_recipe_and_logging(tmp_path):
    args = _args(
        [
            "a.tar",
            "b/",
            "--format",
            "webdataset",
            "--name",
            "nightly",
            "--model",
            "lakecurate-tiny",
            "--pretrained",
            "none",
            "--recipe",
            "datacomp-clip",
            "--log-json",
            "--log-file",
            str(tmp_path / "r.jsonl"),
            "--lease-timeout",
            "120",
        ]
    )
    cfg = refresh.apply_args(load_config(), args)
    assert [(s.uri, s.format) for s in cfg.sources] == [
        ("a.tar", "webdataset"),
        ("b/", "webdataset"),
    ]
    assert cfg.publish.name == "nightly"
    assert (cfg.model.name, cfg.model.pretrained) == ("lakecurate-tiny", "none")
    assert cfg.select.recipe == "datacomp-clip"
    assert cfg.refresh.log_json and cfg.refresh.log_file.endswith("r.jsonl")
    assert cfg.refresh.lease_timeout_s == 120
    # without SOURCEs the config's sources stay
    base = load_config(None, {"sources": ["x/"]})
    assert refresh.apply_args(base, _args([])).sources == base.sources


def test_bad_flags_are_config_errors():
    with pytest.raises(ConfigError, match="--format"):
        refresh.apply_args(load_config(), _args(["--format", "jsonl"]))
    with pytest.raises(ConfigError, match="recipe"):
        refresh.apply_args(load_config(), _args(["--recipe", "no-such-recipe"]))
    with pytest.raises(ConfigError, match="lease_timeout_s"):
        refresh.apply_args(load_config(), _args(["--lease-timeout", "0"]))


def _with_sources(cfg, *dirs):
    from lakecurate.runtime.config import replace

    return replace(cfg, sources=[{"uri": str(d), "format": "webdataset"} for d in dirs])


def _datasets(spark, lake: str) -> list[dict]:
    from lakecurate.deltaio.lake import Lake

    rows = Lake(lake).read(spark, "datasets").orderBy("version").collect()
    return [{k: r[k] for k in ("version", "selection_hash", "num_samples")} for r in rows]
