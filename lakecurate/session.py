"""SparkSession building: reuse an active session, stop only the one we created."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from lakecurate.config import SparkConfig

log = logging.getLogger(__name__)


def configure_environment() -> None:
    """Point Spark's Python workers at this interpreter and keep Spark on loopback."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def configure_builder(builder, cfg: SparkConfig):
    """Apply lakecurate's settings to a SparkSession builder and return it."""
    conf = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.arrow_batch_rows),
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.python.worker.reuse": "true",
        "spark.driver.host": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
    }
    conf.update({k: str(v) for k, v in cfg.conf.items()})
    master = cfg.master or (None if launched_by_spark_submit() else "local[*]")
    if master:
        builder = builder.master(master)
    builder = builder.appName(cfg.app_name)
    for k, v in conf.items():
        builder = builder.config(k, v)
    return builder


def launched_by_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands the Python driver its gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def register_sources(spark) -> None:
    from lakecurate.lake import DeltaCommitDataSource

    spark.dataSource.register(DeltaCommitDataSource)


@contextlib.contextmanager
def spark_session(cfg: SparkConfig) -> Iterator:
    """Yield an active SparkSession (reused if one exists); stop it after only if we made it."""
    from pyspark.sql import SparkSession

    configure_environment()
    active = SparkSession.getActiveSession()
    owned = active is None
    spark = active or configure_builder(SparkSession.builder, cfg).getOrCreate()
    if owned:
        spark.sparkContext.setLogLevel("WARN")
        log.info("started Spark %s on %s", spark.version, spark.sparkContext.master)
    register_sources(spark)
    try:
        yield spark
    finally:
        if owned:
            spark.stop()
