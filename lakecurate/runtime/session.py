"""SparkSession building: reuse an active session, stop only the one we created."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from importlib import resources
from urllib.parse import urlparse

from lakecurate.runtime.config import SparkConfig

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# what the Spark UI and event log hide: Spark's default plus any key, credential or SAS
REDACT = r"(?i)secret|password|token|access[.]?key|key|credential|sas"

# Spark WARN lines an operator cannot act on: hidden unless --log-level DEBUG.
QUIET_LOGGERS = (
    "org.apache.spark.sql.execution.window.WindowExec",  # "No Partition Defined ..."
    "org.apache.hadoop.util.NativeCodeLoader",  # "Unable to load native-hadoop library"
)


# Lines the JVM prints to stderr before any logging exists (Spark's launcher adds the
# incubating vector module): dropped unless --log-level DEBUG.
JVM_NOISE = (b"WARNING: Using incubator modules",)


def _forward(read_fd: int, out_fd: int) -> None:
    """Copy lines from a pipe to `out_fd` until the pipe closes, minus `JVM_NOISE`."""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe, os.fdopen(out_fd, "wb", 0) as out:
        for line in iter(pipe.readline, b""):
            if not line.startswith(JVM_NOISE):
                try:
                    out.write(line)
                except OSError:  # our stderr went away: keep draining the JVM's
                    pass


@contextlib.contextmanager
def jvm_stderr_filtered(active: bool = True) -> Iterator[None]:
    """While the JVM starts (it inherits this process's stderr), stderr is a pipe whose
    reader forwards every line but `JVM_NOISE` to the real stderr; the JVM (and the
    Python workers it starts) keep writing through it for their whole life, and this
    process's own stderr is restored as soon as the JVM is up."""
    if not active:
        yield
        return
    try:
        sys.stderr.flush()
        saved, (read_fd, write_fd) = os.dup(2), os.pipe()
    except (OSError, ValueError):  # no real stderr to filter
        yield
        return
    forward_to = os.dup(saved)  # the forwarder's own copy of the real stderr
    os.dup2(write_fd, 2)
    os.close(write_fd)
    threading.Thread(
        target=_forward, args=(read_fd, forward_to), name="lakecurate-jvm-stderr", daemon=True
    ).start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def is_loopback_master(master: str | None) -> bool:
    """True for local mode and for a cluster master on this host's loopback address:
    only then may the driver listen on 127.0.0.1 (executors elsewhere cannot reach it)."""
    if not master or master.startswith("local"):
        return True
    host = urlparse(master).hostname or ""
    return host in LOOPBACK_HOSTS


def driver_host(master: str | None) -> str:
    """The address the driver should listen on and advertise for `master`: loopback for
    local mode and loopback masters; for a `spark://HOST:PORT` master elsewhere, this
    machine's address on the route to HOST (what its workers can reach back); "" to
    leave it to Spark (YARN, Kubernetes, or no route known). SPARK_LOCAL_IP, when
    set, wins over all of this (callers check it first)."""
    if is_loopback_master(master):
        return "127.0.0.1"
    parsed = urlparse(master.split(",")[0])  # spark://h1:p1,h2:p2 (standby masters)
    if parsed.scheme != "spark" or not parsed.hostname:
        return ""
    import socket

    try:  # a UDP "connect" sends nothing: it only asks the kernel for the route
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((parsed.hostname, parsed.port or 7077))
            return s.getsockname()[0]
    except OSError:
        return ""


def configure_environment(master: str | None = "local") -> None:
    """Point Spark's Python workers at this interpreter; keep Spark on loopback only
    for local mode and loopback masters (SPARK_LOCAL_IP, when set, always wins)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if is_loopback_master(master):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def configure_builder(builder, cfg: SparkConfig, quiet: bool = True):
    """Apply lakecurate's settings to a SparkSession builder and return it."""
    master = cfg.master or (None if launched_by_spark_submit() else "local[*]")
    conf = {
        "spark.ui.enabled": str(cfg.ui).lower(),
        "spark.ui.showConsoleProgress": "false",  # lakecurate.runtime.progress reports
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.arrow_batch_rows),
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.python.worker.reuse": "true",
    }
    host = os.environ.get("SPARK_LOCAL_IP") or (driver_host(master) if master else "")
    if host:
        conf["spark.driver.host"] = host
    if quiet and master:  # the JVM starts with our log4j2 settings (not under spark-submit)
        conf["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile={_log4j2_file()}"
    conf.update({k: str(v) for k, v in cfg.conf.items()})
    if master:
        builder = builder.master(master)
    builder = builder.appName(cfg.app_name)
    for k, v in conf.items():
        builder = builder.config(k, v)
    return builder


def _log4j2_file() -> str:
    return str(resources.files(__package__) / "log4j2.properties")


def quiet_spark_logs(spark, level: str | None) -> None:
    """WARN for Spark, and nothing from the loggers whose lines nobody can act on;
    `--log-level DEBUG` keeps them all."""
    if (level or "").upper() == "DEBUG":
        spark.sparkContext.setLogLevel("INFO")
        return
    spark.sparkContext.setLogLevel("WARN")
    try:
        jvm = spark.sparkContext._jvm
        error = jvm.org.apache.logging.log4j.Level.ERROR
        for name in QUIET_LOGGERS:
            jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, error)
    except Exception as e:  # another logging backend on the cluster: leave it be
        log.debug("could not quiet Spark's loggers: %s", e)


def launched_by_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands the Python driver its gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def register_sources(spark) -> None:
    from lakecurate.deltaio.lake import DeltaCommitDataSource, TableFilesDataSource

    spark.dataSource.register(DeltaCommitDataSource)
    spark.dataSource.register(TableFilesDataSource)


def storage_environment(options: dict) -> dict[str, str]:
    """Put `lake.storage_options` into this process's environment (before the JVM and
    its Python workers start, so they inherit it); return the Spark conf that gives
    every executor the same (`spark.executorEnv.*`), with a redaction pattern that
    hides every key and credential in Spark's UI and event log."""
    env = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items()}
    os.environ.update(env)
    conf = {f"spark.executorEnv.{k}": v for k, v in env.items()}
    if conf:  # Spark's default pattern misses e.g. AZURE_STORAGE_ACCOUNT_KEY
        conf["spark.redaction.regex"] = REDACT
    return conf


@contextlib.contextmanager
def spark_session(
    cfg: SparkConfig, log_level: str | None = None, storage_options: dict | None = None
) -> Iterator:
    """Yield an active SparkSession (reused if one exists); stop it after only if we made it."""
    from pyspark.sql import SparkSession

    executor_env = storage_environment(storage_options or {})
    if executor_env:
        cfg = replace(cfg, conf={**executor_env, **cfg.conf})
    configure_environment(cfg.master or None)
    active = SparkSession.getActiveSession()
    owned = active is None
    quiet = (log_level or "").upper() != "DEBUG"
    if active is None:
        with jvm_stderr_filtered(quiet and not launched_by_spark_submit()):
            spark = configure_builder(SparkSession.builder, cfg, quiet).getOrCreate()
    else:
        spark = active
    if owned:
        quiet_spark_logs(spark, log_level)
        sc = spark.sparkContext
        log.info("started Spark %s on %s", spark.version, sc.master)
        if sc.uiWebUrl:
            log.info("Spark UI: %s", sc.uiWebUrl)
    register_sources(spark)
    try:
        yield spark
    finally:
        if owned:
            spark.stop()
