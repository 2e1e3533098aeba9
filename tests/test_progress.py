"""What an operator sees of a run: job groups and descriptions, progress as a bar or as
events, Spark's noise hidden, the UI's address, and the driver's address."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from lakecurate.runtime import progress
from lakecurate.runtime.config import SparkConfig
from lakecurate.runtime.logs import JsonLinesFormatter
from lakecurate.runtime.session import (
    LOOPBACK_HOSTS,
    QUIET_LOGGERS,
    configure_builder,
    driver_host,
    is_loopback_master,
    quiet_spark_logs,
)


@pytest.fixture
def mode():
    yield progress.configure
    progress.configure("auto")


def _work(spark, partitions: int = 4) -> int:
    return spark.sparkContext.parallelize(range(400), partitions).map(lambda x: x * 2).count()


def test_a_stage_runs_under_its_job_group_and_reports_events(spark, mode, caplog):
    mode("events")
    caplog.set_level(logging.INFO, logger="lakecurate.progress")
    tracker = spark.sparkContext.statusTracker()
    with progress.stage(spark, "embed") as st:
        progress.describe(spark, "400 pairs, lakecurate-tiny")
        assert _work(spark) == 400
        group = st.group
        assert st.description == "embed: 400 pairs, lakecurate-tiny"
    (job_id,) = tracker.getJobIdsForGroup(group)
    assert progress.snapshot(spark.sparkContext, group).tasks_done == 4
    final = [r for r in caplog.records if r.fields.get("final")]
    assert len(final) == 1
    f = final[0].fields
    assert (f["event"], f["stage"], f["tasks_done"], f["tasks_total"]) == (
        "progress",
        "embed",
        4,
        4,
    )
    assert f["description"] == "embed: 400 pairs, lakecurate-tiny" and f["spark_jobs"] == 1
    doc = json.loads(JsonLinesFormatter().format(final[0]))  # what --log-json prints
    assert doc["event"] == "progress" and doc["tasks_done"] == 4
    # jobs after the stage are not counted in it
    _work(spark, 2)
    assert tracker.getJobIdsForGroup(group) == [job_id]


def test_a_nested_stage_reports_as_the_outer_one(spark, mode):
    mode("off")
    with progress.stage(spark, "refresh") as outer:
        with progress.stage(spark, "embed") as inner:
            assert inner is outer
        _work(spark)
    assert progress.snapshot(spark.sparkContext, outer.group).jobs == 1


def test_the_bar_shows_tasks_on_a_terminal_and_nothing_otherwise(spark, mode, capsys):
    mode("bar")
    with progress.stage(spark, "dedup"):
        _work(spark, 3)
    err = capsys.readouterr().err
    assert "dedup" in err and "3/3" in err and "task" in err
    mode("auto")  # pytest's stderr is not a terminal
    assert progress.effective_mode() == "off"
    with progress.stage(spark, "select"):
        _work(spark, 3)
    assert capsys.readouterr().err == ""


def test_the_bar_is_drawn_on_a_real_pseudo_terminal_even_without_a_size(spark, mode, monkeypatch):
    """auto picks the bar on a terminal; a fresh pty reports 0 columns (as under
    `script` or a CI runner), where tqdm alone prints nothing."""
    import os

    master, slave = os.openpty()
    term = os.fdopen(slave, "w", buffering=1)
    try:
        assert os.get_terminal_size(slave).columns == 0
        monkeypatch.setattr(sys, "stderr", term)
        mode("auto")
        assert progress.effective_mode() == "bar"
        with progress.stage(spark, "embed"):
            _work(spark, 3)
        term.flush()
        out = b""
        while True:
            import select

            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                break
            out += os.read(master, 65536)
    finally:
        term.close()
        os.close(master)
    text = out.decode(errors="replace")
    assert "embed" in text and "3/3" in text and "task" in text


def test_spark_lines_nobody_can_act_on_are_hidden_unless_debug(spark):
    jvm = spark.sparkContext._jvm

    def level(name: str) -> str:
        return str(jvm.org.apache.logging.log4j.LogManager.getLogger(name).getLevel())

    quiet_spark_logs(spark, None)
    assert {level(n) for n in QUIET_LOGGERS} == {"ERROR"}
    quiet_spark_logs(spark, "DEBUG")
    assert level("org.apache.spark") == "INFO"
    spark.sparkContext.setLogLevel("ERROR")  # the suite's level


class _Builder:
    """Records what configure_builder asks of a SparkSession builder."""

    def __init__(self):
        self.conf: dict[str, str] = {}

    def master(self, m):
        self.conf["master"] = m
        return self

    def appName(self, n):
        return self

    def config(self, k, v):
        self.conf[k] = v
        return self


def test_the_driver_listens_on_loopback_only_for_local_and_loopback_masters(monkeypatch):
    monkeypatch.delenv("SPARK_LOCAL_IP", raising=False)
    assert is_loopback_master("local[4]") and is_loopback_master("spark://127.0.0.1:7077")
    assert not is_loopback_master("spark://10.0.0.5:7077")
    assert not is_loopback_master("k8s://https://api.cluster:6443")

    remote = configure_builder(_Builder(), SparkConfig(master="spark://10.0.0.5:7077")).conf
    # this host's address on the route to the master (never loopback), if it has one
    assert remote.get("spark.driver.host", "") == driver_host("spark://10.0.0.5:7077")
    assert driver_host("spark://10.0.0.5:7077") not in LOOPBACK_HOSTS
    assert driver_host("yarn") == "" and driver_host("local[2]") == "127.0.0.1"
    assert remote["spark.ui.enabled"] == "true"
    local = configure_builder(_Builder(), SparkConfig(master="local[2]", ui=False)).conf
    assert local["spark.driver.host"] == "127.0.0.1" and local["spark.ui.enabled"] == "false"
    assert "log4j2.properties" in local["spark.driver.extraJavaOptions"]
    debug = configure_builder(_Builder(), SparkConfig(master="local[2]"), quiet=False).conf
    assert "spark.driver.extraJavaOptions" not in debug
    monkeypatch.setenv("SPARK_LOCAL_IP", "10.0.0.9")  # the operator's choice wins
    remote = configure_builder(_Builder(), SparkConfig(master="spark://10.0.0.5:7077")).conf
    assert remote["spark.driver.host"] == "10.0.0.9"


def test_the_jvms_startup_noise_is_filtered_from_stderr_and_nothing_else(capfd):
    import subprocess

    from lakecurate.runtime.session import jvm_stderr_filtered

    noisy = 'echo "WARNING: Using incubator modules: jdk.incubator.vector" >&2; echo kept >&2'
    with jvm_stderr_filtered(True):
        child = subprocess.Popen(["sh", "-c", f"sleep 0.2; {noisy}"])  # outlives the block
    print("ours", file=sys.stderr)  # this process's stderr is its own again
    child.wait()
    import time

    time.sleep(0.3)  # the forwarder copies the child's lines
    err = capfd.readouterr().err
    assert "kept" in err and "ours" in err and "incubator" not in err
    with jvm_stderr_filtered(False):  # --log-level DEBUG: nothing is filtered
        subprocess.run(["sh", "-c", noisy], check=True)
    assert "incubator" in capfd.readouterr().err


def test_a_fresh_session_does_not_print_the_incubator_warning(tmp_path):
    """A real JVM start (a new process: the suite's session is already up)."""
    import subprocess

    script = tmp_path / "start.py"
    script.write_text(
        "import sys\n"
        "from lakecurate.runtime.config import SparkConfig\n"
        "from lakecurate.runtime.session import spark_session\n"
        "with spark_session(SparkConfig(master='local[1]', ui=False)) as spark:\n"
        "    print('rows', spark.range(3).count(), file=sys.stderr)\n"
    )
    got = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    assert "rows 3" in got.stderr and "incubator" not in got.stderr


def test_a_stage_counts_the_rows_its_executor_code_reports(spark, mode, caplog):
    mode("events")
    caplog.set_level(logging.INFO, logger="lakecurate.progress")
    with progress.stage(spark, "embed"):
        progress.describe(spark, "300 pairs", rows=300)
        counter = progress.row_counter()

        def body(batches):  # as the embed UDF and the signals pass count
            for b in batches:
                counter.add(b.num_rows)
                yield b

        assert spark.range(300).repartition(3).mapInArrow(body, "id long").count() == 300
    assert progress.row_counter() is None  # outside a stage: nothing counts
    (final,) = [r.fields for r in caplog.records if r.fields.get("final")]
    assert (final["rows_done"], final["rows_total"], final["eta_s"]) == (300, 300, None)
    assert final["rows_per_s"] > 0


def test_the_bar_shows_rows_when_a_stage_counts_them(spark, mode, monkeypatch):
    mode("bar")
    monkeypatch.setattr(progress, "BAR_INTERVAL_S", 3600)  # only the final report draws
    with progress.stage(spark, "embed") as st:
        progress.describe(spark, "40 pairs", rows=40)
        counter = progress.row_counter()
        spark.sparkContext.parallelize(range(40), 2).foreach(lambda _: counter.add(1))
        assert st.row_figures()["rows_done"] == 40
        st.report()
        assert "40/40 rows" in st._bar.postfix
