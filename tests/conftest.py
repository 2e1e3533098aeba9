"""Shared fixtures: one local Spark session per test session, a fresh lake per test."""

from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    from lakecurate.runtime.config import SparkConfig
    from lakecurate.runtime.session import (
        configure_builder,
        configure_environment,
        register_sources,
    )

    configure_environment()
    cfg = SparkConfig(master="local[2]", shuffle_partitions=2, arrow_batch_rows=256, ui=False)
    session = configure_builder(SparkSession.builder, cfg).getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    register_sources(session)
    yield session
    session.stop()


@pytest.fixture
def lake_path(tmp_path) -> str:
    return str(tmp_path / "lake")


@pytest.fixture
def lake(lake_path):
    from lakecurate.deltaio.lake import Lake

    return Lake(lake_path)


@pytest.fixture
def cfg(lake_path):
    """A Config for tests: the tmp lake, local[2], the tiny model."""
    from lakecurate.runtime.config import load_config

    return load_config(
        None,
        {
            "lake.path": lake_path,
            "spark.master": "local[2]",
            "spark.shuffle_partitions": 2,
            "model.name": "lakecurate-tiny",
            "model.pretrained": "none",
            "model.batch_size": 32,
        },
    )


@pytest.fixture(scope="session")
def sample_set():
    """~300 generated records with injected duplicates and bad records (labels included)."""
    from lakecurate.demo.sample import generate

    return generate(n=300, seed=7)


@pytest.fixture
def wds_dir(tmp_path, sample_set):
    out = tmp_path / "wds"
    sample_set.write_webdataset(out, shard_size=100)
    return out


@pytest.fixture
def pairs_lake(spark, lake, sample_set):
    """A lake whose `pairs` table holds the sample set (written directly, not through ingest)."""
    import pyarrow as pa

    from lakecurate.deltaio.lake import Commit
    from lakecurate.schemas import TABLES

    table = pa.Table.from_pylist(sample_set.pair_rows(), schema=TABLES["pairs"].schema)
    df = spark.createDataFrame(table.to_pandas(), TABLES["pairs"].spark_schema())
    lake.write(df, "pairs", Commit("fixture", "fixture-run"))
    return lake


# --- an S3-compatible server (moto's standalone server, a real HTTP process) -------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """http://127.0.0.1:PORT of a moto S3 server process started for this test session."""
    import socket
    import subprocess
    import time

    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"moto S3 server did not start: {log.read_text()[-2000:]}"
                ) from None
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "lakecurate-test",
    "AWS_SECRET_ACCESS_KEY": "lakecurate-test",
    "AWS_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
}


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch, request) -> str:
    """A fresh bucket on the S3 server, with the standard AWS_* variables set for this
    test (delta-rs and pyarrow read them); returns "s3://<bucket>"."""
    import re
    import uuid

    import pyarrow.fs as pafs

    env = {"AWS_ENDPOINT_URL": s3_endpoint, **S3_CREDENTIALS}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    bucket = f"{name}-{uuid.uuid4().hex[:8]}"
    fs = pafs.S3FileSystem(
        access_key=env["AWS_ACCESS_KEY_ID"],
        secret_key=env["AWS_SECRET_ACCESS_KEY"],
        region=env["AWS_REGION"],
        endpoint_override=s3_endpoint,
        scheme="http",
        allow_bucket_creation=True,
    )
    fs.create_dir(bucket)
    return f"s3://{bucket}"
