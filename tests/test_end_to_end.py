"""The walking skeleton: every stage through run(spark, cfg), then again (idempotent)."""

import glob
import json
import os

import pytest
import webdataset as wds

from lakecurate.jobs.demo import stages
from lakecurate.runtime.config import replace
from lakecurate.schemas import TABLES


@pytest.fixture(scope="module")
def curated(spark, tmp_path_factory):
    from lakecurate.deltaio.lake import Lake
    from lakecurate.demo.sample import generate
    from lakecurate.runtime.config import load_config

    root = tmp_path_factory.mktemp("e2e")
    samples = generate(n=240, seed=3)
    cut = 200
    folder = type(samples)(samples.records[cut:], {})
    samples.records = samples.records[:cut]
    samples.write_webdataset(root / "wds", shard_size=80)
    folder.write_folder(root / "folder")
    cfg = load_config(None, {"lake.path": str(root / "lake")})
    cfg = replace(
        cfg,
        sources=[
            {"uri": str(root / "wds"), "format": "webdataset"},
            {"uri": str(root / "folder"), "format": "folder"},
        ],
        model={"name": "lakecurate-tiny", "pretrained": "none", "batch_size": 32},
        dedup={"methods": ["exact", "phash", "minhash", "semantic"]},
        publish={"name": "e2e", "shard_size": 50},
    )
    first = {name: job.run(spark, cfg) for name, job in stages()}
    lake = Lake(cfg.lake.path)
    counts_after_first = {t: lake.count(t) for t in TABLES if lake.exists(t)}
    second = {name: job.run(spark, cfg) for name, job in stages()}
    return cfg, lake, first, second, counts_after_first


def test_every_stage_wrote_its_tables(curated):
    cfg, lake, first, _, counts = curated
    for table in (
        "sources",
        "pairs",
        "rejects",
        "embeddings",
        "signals",
        "duplicates",
        "selection",
        "datasets",
    ):
        assert lake.exists(table), table
    assert counts["sources"] == 3 + 1  # three tars and one folder
    assert 200 < counts["pairs"] + counts["rejects"] <= 240
    assert counts["rejects"] >= 1  # the corrupt record, the empty caption, the tiny image
    assert counts["embeddings"] == counts["pairs"]
    assert counts["duplicates"] > 0


def test_each_commit_names_its_job_and_run(curated):
    _, lake, first, _, _ = curated
    for table in TABLES:
        if not lake.exists(table):
            continue
        for h in lake.history(table):
            assert h.get("job"), (table, h)
            assert h.get("run_id"), (table, h)


def test_shards_load_with_webdataset_and_match_manifest_and_datasets_row(curated, spark):
    cfg, lake, first, _, _ = curated
    pub = first["publish"]
    shard_dir = pub.counts["shard_dir"]
    manifest = json.load(open(os.path.join(shard_dir, "manifest.json")))
    tars = sorted(glob.glob(os.path.join(shard_dir, "*.tar")))
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode("pil"))
    assert len(samples) == manifest["counts"]["num_samples"] == pub.counts["num_samples"] > 0
    row = lake.read(spark, "datasets").filter("name = 'e2e'").first()
    assert row["num_samples"] == len(samples)
    assert {"jpg", "txt", "json"} <= set(samples[0])


def test_running_again_adds_no_rows(curated):
    _, lake, first, second, counts = curated
    assert {t: lake.count(t) for t in TABLES if lake.exists(t)} == counts
    assert second["publish"].counts["published"] is False
    assert second["publish"].counts["version"] == first["publish"].counts["version"]
