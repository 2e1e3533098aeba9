"""open_dataset by time travel, `lakecurate sql` views, and vacuum that keeps pinned files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from test_publish_support import COMMIT, copy_lake, curated_template

import lakecurate
from lakecurate.catalog import sql, versions
from lakecurate.deltaio import maintenance
from lakecurate.runtime.errors import ConfigError, JobError


@pytest.fixture
def tpl(spark, tmp_path_factory, sample_set):
    return curated_template(spark, tmp_path_factory, sample_set)


def test_open_dataset_rebuilds_each_version_by_time_travel(spark, tpl):
    df1 = lakecurate.open_dataset(spark, tpl["path"], "demo", 1)
    df2 = lakecurate.open_dataset(spark, tpl["path"], "demo", "latest")
    assert sorted(r["uid"] for r in df1.select("uid").collect()) == tpl["kept"][0]
    assert sorted(r["uid"] for r in df2.select("uid").collect()) == tpl["kept"][1]
    for col in ("caption", "image", "signals", "image_emb", "text_emb", "clip_score"):
        assert col in df1.columns
    row = df1.orderBy("uid").first()
    assert row["image"][:2] == b"\xff\xd8" and row["signals"]["resolution"] > 0
    assert row["clip_score"] is not None and len(row["image_emb"]) == 2
    # the uids in the shards are the uids open_dataset rebuilds
    man = json.loads((Path(tpl["results"][1].counts["shard_dir"]) / "manifest.json").read_text())
    import pandas as pd

    out = Path(tpl["results"][1].counts["shard_dir"])
    shard_uids = pd.concat(pd.read_parquet(out / s["index"]) for s in man["shards"])["uid"]
    assert sorted(shard_uids) == tpl["kept"][0]


def test_open_dataset_ignores_later_table_changes_and_resolves_tags(spark, tpl, tmp_path, capsys):
    lake, cfg = copy_lake(tpl, tmp_path)
    pairs = lake.read(spark, "pairs")
    lake.write(pairs.limit(10), "pairs", COMMIT, mode="overwrite")  # tables move on
    assert lake.read(spark, "pairs").count() == 10
    assert lakecurate.open_dataset(spark, lake, "demo", 1).count() == len(tpl["kept"][0])
    assert versions.main(["tag", "demo@1", "prod", "--lake", cfg.lake.path]) == 0
    assert lakecurate.open_dataset(spark, lake, "demo", "prod").count() == len(tpl["kept"][0])
    with pytest.raises(ConfigError, match="no tag"):
        lakecurate.open_dataset(spark, lake, "demo", "nosuch")
    with pytest.raises(ConfigError, match="no dataset named"):
        lakecurate.open_dataset(spark, lake, "other", 1)


def test_sql_over_tables_and_dataset_versions(spark, tpl, capsys):
    q = (
        "select count(*) as n, (select count(*) from demo_v2) as n2, "
        "(select count(*) from selection_v0) as sel0 from demo_v1"
    )
    rc = sql.main([q, "--lake", tpl["path"], "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    n = {"n": len(tpl["kept"][0]), "n2": len(tpl["kept"][1]), "sel0": len(tpl["uids"])}
    assert doc["rows"] == [n] and doc["columns"] == ["n", "n2", "sel0"]
    assert set(doc["views"]) == {"demo_v1", "demo_v2", "selection_v0"}
    rc = sql.main(
        ["select uid, image from demo order by uid limit 3", "--lake", tpl["path"], "--json"]
    )
    doc = json.loads(capsys.readouterr().out)
    assert [r["uid"] for r in doc["rows"]] == tpl["kept"][1][:3]
    assert all(r["image"].endswith("bytes>") for r in doc["rows"])
    rc = sql.main(
        ["select reason, count(*) c from selection group by reason", "--lake", tpl["path"]]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "duplicate:phash" in out and "rows)" in out
    rc = sql.main(["select * from nosuchview", "--lake", tpl["path"]])
    assert rc == 2 and "demo_v1" in capsys.readouterr().err


def test_vacuum_keeps_pinned_files_until_retired(spark, tpl, tmp_path, capsys):
    lake, cfg = copy_lake(tpl, tmp_path)
    pairs_dir = Path(cfg.lake.path) / "pairs"
    pinned = set(os.listdir(pairs_dir)) - {"_delta_log"}
    lake.write(lake.read(spark, "pairs").limit(20), "pairs", COMMIT, mode="overwrite")
    orphan = pairs_dir / "part-orphan-c000.zstd.parquet"  # a crashed task's file
    orphan.write_bytes(b"never committed")
    old = time.time() - 3600
    os.utime(orphan, (old, old))

    def vac(*extra) -> dict:
        rc = maintenance.main(["--lake", cfg.lake.path, "--retention-hours", "0", "--json", *extra])
        assert rc == 0
        return json.loads(capsys.readouterr().out)

    dry = vac("--dry-run")
    assert orphan.exists() and {t["table"]: t for t in dry["tables"]}["pairs"]["candidates"] == 1
    doc = vac()
    pairs = {t["table"]: t for t in doc["tables"]}["pairs"]
    assert pairs["deleted"] == 1 and not orphan.exists()
    assert pinned <= set(os.listdir(pairs_dir))  # pinned by demo@1 and demo@2: kept
    assert lakecurate.open_dataset(spark, lake, "demo", 1).count() == len(tpl["kept"][0])
    # retiring both versions releases the old pairs files
    for ref in ("demo@1", "demo@2"):
        assert versions.main(["retire", ref, "--lake", cfg.lake.path]) == 0
    capsys.readouterr()
    doc = vac()
    assert {t["table"]: t for t in doc["tables"]}["pairs"]["deleted"] == len(pinned)
    assert not pinned & set(os.listdir(pairs_dir))
    assert lake.read(spark, "pairs").count() == 20  # the current version is intact
    with pytest.raises(JobError, match="retired"):
        lakecurate.open_dataset(spark, lake, "demo", 1)
    assert maintenance.main(["--lake", cfg.lake.path, "--tables", "nope"]) == 2


def test_import_lakecurate_is_light():
    import subprocess
    import sys

    code = (
        "import sys, lakecurate; assert 'pyspark' not in sys.modules; "
        "assert 'deltalake' not in sys.modules; f = lakecurate.open_dataset; "
        "assert 'lakecurate.catalog.dataset' in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
