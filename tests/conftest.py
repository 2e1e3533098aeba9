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
