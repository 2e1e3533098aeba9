"""The lake on object storage: a real S3 server process (moto's), configured the
standard way (AWS_* variables), with no Hadoop S3 connector in the JVM.

Sources are read from s3://, every table lives on s3://, shards are published to
s3://, and the result equals the same refresh on local disk: the same pairs, the
same published uids. Then the version is read back, `versions`, `vacuum` and
`status` run against the bucket, and no lease or staging file is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

import lakecurate.dataset as lcd
from lakecurate.demo.sample import generate
from lakecurate.udfs.storage import url_to_fs

pytestmark = pytest.mark.slow

CONFIG = {
    "spark": {"master": "local[2]", "shuffle_partitions": 2, "arrow_batch_rows": 256},
    "model": {"name": "lakecurate-tiny", "pretrained": "none", "batch_size": 32},
    "publish": {"name": "nightly", "shard_size": 40},
}


def _cli(*args: str) -> dict:
    """Run `lakecurate ARGS --json` in a new process (its JVM and Python workers get
    this process's AWS_* environment); return its JSON document."""
    proc = subprocess.run(
        [sys.executable, "-m", "lakecurate.cli", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    said = [ln for ln in proc.stderr.splitlines() if not ln.lstrip().startswith("at ")]
    assert proc.returncode == 0, "\n".join(said[-60:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _published_uids(shard_dir: str) -> list[str]:
    """The keys of a version, read through `lakecurate.dataset` (deletion lists applied)."""
    return [x["__key__"] for x in lcd.ShardDataset(shard_dir)]


def _upload(local_dir, uri: str) -> None:
    fs, root = url_to_fs(uri)
    for f in sorted(local_dir.iterdir()):
        fs.put_file(str(f), f"{root}/{f.name}")


def test_a_refresh_on_s3_equals_one_on_local_disk(s3_bucket, tmp_path, wds_dir):
    config = tmp_path / "lakecurate.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    _upload(wds_dir, f"{s3_bucket}/sources")
    lake = f"{s3_bucket}/lake"

    remote = _cli("refresh", f"{s3_bucket}/sources", "--lake", lake, "--config", str(config))
    local = _cli("refresh", str(wds_dir), "--lake", str(tmp_path / "lake"), "--config", str(config))
    stages = {s["stage"]: s for s in remote["counts"]["stages"]}
    # the default recipe reads no concepts, so that stage is skipped
    assert {s["stage"]: s["status"] for s in remote["counts"]["stages"]} == {
        **dict.fromkeys(("ingest", "embed", "dedup", "select", "publish"), "ok"),
        "concepts": "skipped",
    }, remote["counts"]
    assert stages["ingest"]["rows_out"] > 0 and remote["counts"]["dataset_version"] == 1
    assert [s["rows_out"] for s in remote["counts"]["stages"]] == [
        s["rows_out"] for s in local["counts"]["stages"]
    ]
    shown = _cli("versions", "show", "nightly@1", "--lake", lake)["dataset"]
    assert shown["shard_uri"].startswith(f"{s3_bucket}/lake/_published/")
    there = _cli("versions", "show", "nightly@1", "--lake", str(tmp_path / "lake"))["dataset"]
    uids = _published_uids(shown["shard_uri"])
    assert len(uids) == len(set(uids)) == shown["num_samples"] > 0
    assert sorted(uids) == sorted(_published_uids(there["shard_uri"]))

    # the next night's pairs: an incremental dedup rewrites only the files it touches
    night2 = tmp_path / "night2"
    generate(n=40, seed=8, prefix="n2").write_webdataset(night2, shard_size=40)
    _upload(night2, f"{s3_bucket}/sources")
    second = _cli("refresh", f"{s3_bucket}/sources", "--lake", lake, "--config", str(config))
    st = {s["stage"]: s for s in second["counts"]["stages"]}
    assert 0 < st["ingest"]["rows_out"] <= 40 and second["counts"]["dataset_version"] == 2
    shown2 = _cli("versions", "show", "nightly@2", "--lake", lake)["dataset"]
    assert len(set(_published_uids(shown2["shard_uri"]))) == shown2["num_samples"]

    # a refresh with nothing new changes nothing
    again = _cli("refresh", f"{s3_bucket}/sources", "--lake", lake, "--config", str(config))
    assert again["counts"]["published"] is False
    assert {s["stage"]: s["rows_out"] for s in again["counts"]["stages"]}["ingest"] == 0
    swept = _cli("vacuum", "--retention-hours", "0", "--lake", lake)
    assert {t["table"] for t in swept["tables"]} >= {"pairs", "embeddings", "datasets"}
    assert sum(t["deleted"] for t in swept["tables"]) > 0  # unpinned files, in the bucket
    # what both versions pin survived: their diff is rebuilt from the pinned tables
    diff = _cli("versions", "diff", "nightly@1", "nightly@2", "--lake", lake)
    grown = diff["added"]["count"] - diff["removed"]["count"]
    assert diff["added"]["count"] > 0 and grown == shown2["num_samples"] - shown["num_samples"]
    status = _cli("status", "--lake", lake)
    assert status["lease"]["held"] is False  # released
    fs, root = url_to_fs(lake)
    assert not [p for p in fs.find(root) if "staging" in p]


def test_storage_options_in_the_config_reach_every_reader_and_writer(
    s3_bucket, tmp_path, monkeypatch
):
    """No AWS_* variable in the environment: lake.storage_options alone connects the
    driver (delta-rs, pyarrow, fsspec) and Spark's Python workers to the server."""
    from conftest import S3_CREDENTIALS

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    for k in ["AWS_ENDPOINT_URL", *S3_CREDENTIALS]:
        monkeypatch.delenv(k)
    src = tmp_path / "src"
    generate(n=30, seed=3, prefix="so").write_webdataset(src, shard_size=15)
    config = tmp_path / "lakecurate.yaml"
    options = {"AWS_ENDPOINT_URL": endpoint, **S3_CREDENTIALS}
    config.write_text(yaml.safe_dump({**CONFIG, "lake": {"storage_options": options}}))
    with monkeypatch.context() as m:  # only to upload the sources
        for k, v in options.items():
            m.setenv(k, v)
        _upload(src, f"{s3_bucket}/src")
    lake = f"{s3_bucket}/lake"
    doc = _cli("ingest", f"{s3_bucket}/src", "--lake", lake, "--config", str(config))
    assert doc["counts"]["pairs_added"] > 0
    tables = {
        t["table"]: t for t in _cli("tables", "--lake", lake, "--config", str(config))["tables"]
    }
    assert tables["pairs"]["rows"] == doc["counts"]["pairs_added"] > 0
    proc = subprocess.run(  # without them, the same command cannot reach the bucket
        [sys.executable, "-m", "lakecurate.cli", "tables", "--lake", lake, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 or "pairs" not in proc.stdout


def test_storage_options_are_checked_redacted_and_stay_out_of_the_config_hash(monkeypatch):
    import re

    from lakecurate.runtime.config import ConfigError, config_hash, load_config
    from lakecurate.runtime.session import storage_environment

    options = {"AZURE_STORAGE_ACCOUNT_KEY": "k", "AWS_ALLOW_HTTP": True}
    for k in options:  # so that monkeypatch restores the environment after the test
        monkeypatch.setenv(k, "before")
    conf = storage_environment(options)
    assert os.environ["AZURE_STORAGE_ACCOUNT_KEY"] == "k"
    assert conf["spark.executorEnv.AWS_ALLOW_HTTP"] == "true"
    assert re.search(conf["spark.redaction.regex"], "spark.executorEnv.AZURE_STORAGE_ACCOUNT_KEY")

    with pytest.raises(ConfigError, match="lake.storage_options.endpoint"):
        load_config(None, {"lake.storage_options": {"endpoint": "http://x"}})
    a = load_config(None, {"lake.storage_options": {"AWS_ACCESS_KEY_ID": "one"}})
    b = load_config(None, {"lake.storage_options": {"AWS_ACCESS_KEY_ID": "two"}})
    assert config_hash(a) == config_hash(b)
