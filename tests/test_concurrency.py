"""Delta's guarantees with more than one writer: conflicts are detected from the
version a write read, a commit is applied once, committed files are never deleted,
and a second writing command is refused by the lake's writer lease.

The conflict tests interleave two writers deterministically in one process (the
second commit lands between the first's read and its commit); the lease test runs
two `lakecurate` processes on one lake.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from lakecurate.deltaio.conflicts import ConflictError, ReadScope
from lakecurate.deltaio.lake import Commit, commit_files, discard_files
from lakecurate.schemas import TABLES
from lakecurate.udfs.table_files import TableFileWriter


def _rows(n0: int, n: int, name: str = "demo") -> list[dict]:
    return [
        {"name": name, "version": v, "status": "published", "recipe_id": "r", "num_samples": v}
        for v in range(n0, n0 + n)
    ]


def _df(spark, rows: list[dict]):
    spec = TABLES["datasets"]
    t = pa.Table.from_pylist(rows, schema=spec.schema)
    return spark.createDataFrame(t.to_pandas(), spec.spark_schema())


def _versions(lake) -> list[tuple[str, int]]:
    t = lake.delta("datasets").to_pyarrow_table(columns=["name", "version"])
    return sorted(zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True))


def _orphans(lake, table: str) -> set[str]:
    """Parquet files in the table directory that no version of the log references."""
    root = f"{lake.root}/{table}"
    on_disk = {f for f in os.listdir(root) if f.endswith(".parquet")}
    ever = set()
    for v in range(lake.version(table) + 1):
        ever |= {a["path"] for a in lake.add_actions(table, v)}
    return on_disk - ever


def test_an_overwrite_after_a_concurrent_append_conflicts_and_loses_nothing(spark, lake):
    c = Commit("test", "run-a")
    lake.write(_df(spark, _rows(1, 2)), "datasets", c)
    read = lake.version("datasets")
    lake.write(_df(spark, _rows(3, 1)), "datasets", Commit("test", "run-b"))  # the other writer
    with pytest.raises(ConflictError, match="changed by another writer since version 0"):
        lake.write(_df(spark, _rows(9, 1)), "datasets", c, mode="overwrite", read_version=read)
    assert _versions(lake) == [("demo", 1), ("demo", 2), ("demo", 3)]
    assert _orphans(lake, "datasets") == set()  # the refused write's files are gone
    # read again, then the overwrite goes through
    lake.write(_df(spark, _rows(9, 1)), "datasets", c, mode="overwrite")
    assert _versions(lake) == [("demo", 9)]


def test_rows_where_conflicts_only_with_files_that_may_hold_those_rows(spark, lake):
    lake.write(_df(spark, _rows(1, 1, "a")), "datasets", Commit("test", "r0"))
    read = lake.version("datasets")
    lake.write(_df(spark, _rows(1, 1, "b")), "datasets", Commit("test", "r1"))  # other name
    mine = ReadScope.rows_where("name", "a")

    def publish_a(version: int, read: int, run: str) -> int:
        df = _df(spark, _rows(version, 1, "a"))
        return lake.write(df, "datasets", Commit("test", run), read_version=read, scope=mine)

    publish_a(2, read, "r2")  # only a file of name b landed since the read
    read = lake.version("datasets")
    lake.write(_df(spark, _rows(3, 1, "a")), "datasets", Commit("test", "r3"))  # same name
    with pytest.raises(ConflictError):
        publish_a(3, read, "r4")
    assert _versions(lake) == [("a", 1), ("a", 2), ("a", 3), ("b", 1)]  # never two a@3


def test_two_appends_of_the_same_keys_add_them_once(spark, lake):
    """append_new matched its keys at one version; another writer added the same keys
    since: the commit conflicts, and the re-run adds nothing twice."""
    rows = _rows(1, 3)
    lake.write(_df(spark, rows[:1]), "datasets", Commit("test", "r0"))
    read = lake.version("datasets")
    lake.append_new(_df(spark, rows), "datasets", Commit("test", "other"))
    with pytest.raises(ConflictError):
        lake.write(
            _df(spark, rows[1:]),
            "datasets",
            Commit("test", "mine"),
            read_version=read,
            scope=ReadScope.keys(),
        )
    assert lake.append_new(_df(spark, rows), "datasets", Commit("test", "mine"))[1] == 0
    assert _versions(lake) == [("demo", 1), ("demo", 2), ("demo", 3)]


def _file(lake, rows: list[dict]):
    spec = TABLES["datasets"]
    out = TableFileWriter(lake.uri("datasets"), spec.schema)
    out.write_batch(pa.RecordBatch.from_pylist(rows, schema=spec.schema))
    return out.close()


def test_a_retried_commit_is_applied_once_and_committed_files_are_kept(spark, lake):
    spec = TABLES["datasets"]
    lake.write(_df(spark, _rows(1, 1)), "datasets", Commit("test", "r0"))
    f = _file(lake, _rows(2, 1))
    txn = Commit("test", "run-x").next_txn("datasets")
    commit_files(lake.uri("datasets"), spec.schema, [f], txn=txn)
    v = lake.version("datasets")
    commit_files(lake.uri("datasets"), spec.schema, [f], txn=txn)  # a retry after a timeout
    assert lake.version("datasets") == v and _versions(lake) == [("demo", 1), ("demo", 2)]
    assert lake.delta("datasets").transaction_version(txn[0]) == txn[1]
    # cleanup after a failure whose outcome was unknown: the log says committed, so kept
    discard_files(lake.uri("datasets"), [f.path])
    assert os.path.exists(f"{lake.uri('datasets')}/{f.path}")
    stray = _file(lake, _rows(7, 1))
    discard_files(lake.uri("datasets"), [stray.path])  # never committed: deleted
    assert not os.path.exists(f"{lake.uri('datasets')}/{stray.path}")


def test_semantic_centroids_keep_one_fit_per_model(spark, lake):
    spec = TABLES["semantic_centroids"]

    def fit(mid: str, k: int):
        rows = [
            {"config_slug": "s", "model_id": mid, "cluster": i, "fit_id": f"{mid}-{k}",
             "centroid": [float(i)], "fitted_rows": 10, "run_id": "r"}
            for i in range(k)
        ]  # fmt: skip
        t = pa.Table.from_pylist(rows, schema=spec.schema)
        df = spark.createDataFrame(t.to_pandas(), spec.spark_schema())
        return lake.replace_where(df, "semantic_centroids", "model_id", mid, Commit("t", "r"))

    fit("m1", 3), fit("m2", 2), fit("m1", 4)
    t = lake.delta("semantic_centroids").to_pyarrow_table(columns=["model_id", "fit_id"])
    got = sorted(set(zip(*(c.to_pylist() for c in t.columns), strict=True)))
    assert got == [("m1", "m1-4"), ("m2", "m2-2")]


# --- two processes ---------------------------------------------------------------------


def _lakecurate(lake_path: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "lakecurate.cli",
        "--lake",
        lake_path,
        "--master",
        "local[1]",
        *args,
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_second_writer_is_refused_with_the_holder_named_and_nothing_is_lost(
    tmp_path, lake_path, lake
):
    from lakecurate.demo.sample import generate

    a, b = tmp_path / "a", tmp_path / "b"
    generate(n=60, seed=31, prefix="a").write_webdataset(a, shard_size=30)
    generate(n=30, seed=32, prefix="b").write_webdataset(b, shard_size=30)
    first = _lakecurate(lake_path, "ingest", str(a))
    lease = os.path.join(lake_path, "_lease.json")
    deadline = time.time() + 120
    while not os.path.exists(lease) and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    second = _lakecurate(lake_path, "ingest", str(b))
    out2, err2 = second.communicate(timeout=300)
    out1, err1 = first.communicate(timeout=600)
    assert first.returncode == 0, err1[-3000:]
    assert second.returncode == 1, err2[-3000:]
    assert "another writer holds this lake's lease" in err2 and "owner ingest:" in err2
    # the refused writer wrote nothing; run again, it adds its own pairs exactly once
    after_first = lake.count("pairs")
    again = _lakecurate(lake_path, "ingest", str(b))
    assert again.wait(timeout=600) == 0, again.stderr.read()[-3000:]
    uids = lake.delta("pairs").to_pyarrow_table(columns=["uid"]).column(0).to_pylist()
    assert len(uids) == len(set(uids)) > after_first > 0
