"""The JVM-free read path: a table version's files read by pyarrow in Python tasks
(`lake.read_path: arrow`) give exactly what Spark's own Parquet reader gives."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import functions as F

from lakecurate.deltaio.keyed import rows_for_uids
from lakecurate.deltaio.lake import Commit, Lake, commit_files
from lakecurate.schemas import TABLES
from lakecurate.udfs.table_files import FileWritten


def _rows(df) -> list[tuple]:
    return sorted(
        tuple(r)
        for r in df.select("uid", "caption", F.length("image").alias("n"), "width").collect()
    )


def test_arrow_tasks_read_what_spark_reads_at_every_version(spark, pairs_lake):
    arrow = Lake(pairs_lake.root, read_path="arrow")
    assert not pairs_lake.reads_with_arrow(spark)  # a local lake: Spark's reader
    assert arrow.reads_with_arrow(spark)
    v0 = pairs_lake.version("pairs")
    df = pairs_lake.read(spark, "pairs").limit(5)
    pairs_lake.write(df.withColumn("uid", F.concat("uid", F.lit("-x"))), "pairs", Commit("t", "r"))
    for version in (v0, None):
        native, ours = pairs_lake.read(spark, "pairs", version), arrow.read(spark, "pairs", version)
        types = [(f.name, f.dataType) for f in native.schema]
        assert [(f.name, f.dataType) for f in ours.schema] == types
        assert _rows(ours) == _rows(native)
    assert arrow.read(spark, "pairs").count() == pairs_lake.count("pairs")
    uids = arrow.read(spark, "pairs", columns=["uid", "width"])  # only these are read
    assert uids.columns == ["uid", "width"] and uids.count() == pairs_lake.count("pairs")
    # a refresh's reads of a few uids (only the files holding them) agree too
    few = pairs_lake.read(spark, "pairs", v0).select("uid").orderBy("uid").limit(7)
    got = {
        name: sorted(
            r["uid"] for r in rows_for_uids(spark, lk, "pairs", v0, few, 7, ["uid"]).collect()
        )
        for name, lk in (("arrow", arrow), ("spark", pairs_lake))
    }
    assert got["arrow"] == got["spark"] and len(got["arrow"]) == 7


def test_a_file_written_before_a_column_existed_reads_it_as_null(spark, lake):
    spec = TABLES["signals"]
    old = pa.schema([f for f in spec.schema if f.name != "thumb"])  # an older lakecurate
    table = pa.Table.from_pylist([{"uid": "u1", "phash": 7}], schema=old)
    root = lake.uri("signals")
    os.makedirs(root)
    pq.write_table(table, f"{root}/part-old.parquet")
    written = FileWritten("part-old.parquet", os.path.getsize(f"{root}/part-old.parquet"), 1, "")
    commit_files(root, spec.schema, [written])
    (row,) = Lake(lake.root, read_path="arrow").read(spark, "signals").collect()
    assert (row["uid"], row["phash"], row["thumb"]) == ("u1", 7, None)
