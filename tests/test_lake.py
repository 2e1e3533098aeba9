"""The table layer: one Delta commit per write, time travel, idempotent appends, no partial data."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from lakecurate.deltaio import lake as lakemod
from lakecurate.deltaio.lake import Commit, Lake

SEL = "uid string, recipe_id string, kept boolean, reason string, run_id string"


def selection_rows(spark, n, recipe="r1", start=0):
    rows = [
        (f"u{i:05d}", recipe, i % 3 != 0, None if i % 3 else "rule", "x")
        for i in range(start, start + n)
    ]
    return spark.createDataFrame(rows, SEL)


def test_write_commits_once_and_reads_back_every_version(spark, lake):
    c = Commit("test", "run-a", "cfg1")
    assert lake.write(selection_rows(spark, 50).repartition(3), "selection", c) == 0
    assert lake.write(selection_rows(spark, 20, start=50), "selection", c) == 1
    assert lake.read(spark, "selection", 0).count() == 50
    assert lake.read(spark, "selection").count() == 70
    assert lake.count("selection") == 70
    dt = DeltaTable(lake.uri("selection"))
    assert dt.version() == 1
    assert len(dt.file_uris()) >= 4  # three task files, then one
    for h in lake.history("selection"):
        assert h["job"] == "test" and h["run_id"] == "run-a" and h["config_hash"] == "cfg1"


def test_read_by_timestamp(spark, lake):
    c = Commit("test", "r")
    lake.write(selection_rows(spark, 5), "selection", c)
    time.sleep(0.05)
    ts = lake.delta("selection").history()[0]["timestamp"]
    time.sleep(0.05)
    lake.write(selection_rows(spark, 5, start=5), "selection", c)
    from datetime import UTC, datetime

    iso = datetime.fromtimestamp(ts / 1000 + 0.01, UTC).isoformat()
    assert lake.read(spark, "selection", iso).count() == 5


@pytest.mark.parametrize("small", [20_000, 0], ids=["from-driver", "by-spark"])
def test_append_new_is_idempotent(spark, lake, monkeypatch, small):
    monkeypatch.setattr(lakemod, "SMALL_APPEND", small)
    driver_read = Lake._keys

    def keys_not_by_uid(self, table, column=None, values=None, version=None):
        # present uids are found by Spark tasks: the driver never scans the uid column
        assert column != "uid", f"the driver read the uid column of {table}"
        return driver_read(self, table, column, values, version)

    monkeypatch.setattr(Lake, "_keys", keys_not_by_uid)
    c = Commit("test", "r")
    df = selection_rows(spark, 30)
    twice = df.unionByName(df.limit(5))  # a key twice in the input is appended once
    assert lake.append_new(twice, "selection", c) == (0, 30)
    assert lake.append_new(df, "selection", c) == (0, 0)  # nothing new: no commit
    v, n = lake.append_new(selection_rows(spark, 40), "selection", c)
    assert (v, n) == (1, 10)
    assert lake.read(spark, "selection").select("uid").distinct().count() == 40


def test_replace_where_swaps_one_value_and_skips_unchanged(spark, lake):
    c = Commit("test", "r")
    lake.write(
        selection_rows(spark, 10, "a").unionByName(selection_rows(spark, 10, "b")), "selection", c
    )
    v0 = lake.version("selection")
    # same content with a new run id: no commit
    same = selection_rows(spark, 10, "a").withColumn("run_id", F.lit("other"))
    assert lake.replace_where(same, "selection", "recipe_id", "a", c) == (v0, False)
    v, changed = lake.replace_where(selection_rows(spark, 4, "a"), "selection", "recipe_id", "a", c)
    assert changed and v == v0 + 1
    counts = {
        r["recipe_id"]: r["count"]
        for r in lake.read(spark, "selection").groupBy("recipe_id").count().collect()
    }
    assert counts == {"a": 4, "b": 10}
    assert lake.read(spark, "selection", v0).count() == 20  # the old version is intact


def test_empty_write_creates_the_table(spark, lake):
    v = lake.write(selection_rows(spark, 3).limit(0), "selection", Commit("test", "r"))
    assert v == 0
    assert lake.read(spark, "selection").count() == 0


def test_failing_task_commits_nothing_and_leaves_no_file(spark, lake):
    c = Commit("test", "r")
    lake.write(selection_rows(spark, 10), "selection", c)

    @F.udf("string")
    def boom(uid):
        if uid.endswith("7"):
            raise ValueError("task failure on purpose")
        return uid

    bad = selection_rows(spark, 40, start=10).repartition(4).withColumn("uid", boom("uid"))
    with pytest.raises(Exception, match="task failure on purpose"):
        lake.write(bad, "selection", c)
    assert lake.version("selection") == 0
    assert lake.read(spark, "selection").count() == 10
    referenced = {os.path.basename(u) for u in DeltaTable(lake.uri("selection")).file_uris()}
    on_disk = {f for f in os.listdir(lake.uri("selection")) if f.endswith(".parquet")}
    assert on_disk == referenced  # abort removed the finished tasks' files


def test_killed_mid_write_leaves_previous_version(spark, lake, tmp_path):
    """SIGKILL the driver while tasks are writing: readers still see the previous version."""
    c = Commit("test", "r")
    lake.write(selection_rows(spark, 10), "selection", c)
    script = tmp_path / "slow_write.py"
    script.write_text(
        textwrap.dedent(f"""
        import time
        from pyspark.sql import functions as F
        from lakecurate.runtime.config import SparkConfig
        from lakecurate.deltaio.lake import Commit, Lake
        from pyspark.sql.types import StringType
        from lakecurate.runtime.session import spark_session

        @F.udf(StringType())
        def slow(uid):
            time.sleep(0.01)
            return uid

        with spark_session(SparkConfig(master="local[2]")) as spark:
            rows = [(f"k{{i}}", "r1", True, None, "x") for i in range(2000)]
            df = spark.createDataFrame(rows, {SEL!r}).repartition(8).withColumn("uid", slow("uid"))
            Lake({lake.root!r}).write(df, "selection", Commit("slow", "killed"))
    """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stderr=open(tmp_path / "err.log", "w"))
    table_dir = lake.uri("selection")
    committed = {os.path.basename(u) for u in DeltaTable(table_dir).file_uris()}
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(f.endswith(".parquet") and f not in committed for f in os.listdir(table_dir)):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the writer finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(f.endswith(".parquet") and f not in committed for f in os.listdir(table_dir))
    assert lake.version("selection") == 0
    assert lake.read(spark, "selection").count() == 10
    assert all(h["run_id"] != "killed" for h in lake.history("selection"))


def test_stats_are_valid_delta_json(spark, lake):
    lake.write(selection_rows(spark, 12), "selection", Commit("test", "r"))
    log = os.path.join(lake.uri("selection"), "_delta_log", "00000000000000000000.json")
    adds = [json.loads(line)["add"] for line in open(log) if '"add"' in line]
    stats = json.loads(adds[0]["stats"])
    assert stats["numRecords"] > 0
    assert stats["minValues"]["recipe_id"] == "r1"


def test_unknown_engine_is_refused(tmp_path):
    from lakecurate.runtime.errors import JobError

    with pytest.raises(JobError, match="unknown lake engine"):
        Lake(str(tmp_path), engine="hudi")


def test_delta_spark_engine_behind_the_same_interface(spark, tmp_path):
    """Runs where Delta's jars are on the classpath; here (no Maven Central) it skips."""
    from lakecurate.deltaio.lake import delta_spark_available

    if not delta_spark_available(spark):
        pytest.skip("Delta Lake's Spark jars are not on the classpath (io.delta.tables.DeltaTable)")
    lake = Lake(str(tmp_path / "lake"), engine="delta-spark")
    c = Commit("test", "run-ds")
    lake.write(selection_rows(spark, 10), "selection", c)
    lake.replace_where(selection_rows(spark, 4), "selection", "recipe_id", "r1", c)
    assert lake.read(spark, "selection").count() == 4
    assert lake.read(spark, "selection", 0).count() == 10
    assert Lake(lake.root).read(spark, "selection").count() == 4  # delta-rs reads it too
    assert lake.history("selection")[0]["run_id"] == "run-ds"
