"""Reading a table version: pyarrow in Python tasks (`lake.read_path: arrow`, the path
that needs no JVM filesystem connector, e.g. for S3 without hadoop-aws) vs Spark's
native Parquet reader, on local disk, in one Spark session.

A `pairs` table of N generated pairs (JPEG bytes and captions) is written once; each
path then runs two queries, best of 3: a full scan that touches every byte (count,
sum of image lengths) and a narrow one (distinct uids). The metric is seconds; the
ratio is arrow / spark (above 1: the arrow path is slower).

    .venv/bin/python benchmarks/read_paths.py [N] [--cores 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import pyarrow as pa

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def best_of(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("n", nargs="?", type=int, default=40_000)
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args()

    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from lakecurate.deltaio.lake import Commit, Lake
    from lakecurate.demo.sample import generate
    from lakecurate.runtime.config import SparkConfig
    from lakecurate.runtime.session import (
        configure_builder,
        configure_environment,
        register_sources,
    )
    from lakecurate.schemas import TABLES

    configure_environment()
    cfg = SparkConfig(master=f"local[{args.cores}]", shuffle_partitions=args.cores, ui=False)
    spark = configure_builder(SparkSession.builder, cfg).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    register_sources(spark)
    with tempfile.TemporaryDirectory() as tmp:
        root = f"{tmp}/lake"
        spec = TABLES["pairs"]
        rows = generate(n=args.n, seed=5, bad_rate=0).pair_rows()
        table = pa.Table.from_pylist(rows, schema=spec.schema)
        df = spark.createDataFrame(table.to_pandas(), spec.spark_schema()).repartition(16)
        Lake(root).write(df, "pairs", Commit("bench", "read-paths"))
        mb = sum(a["size_bytes"] for a in Lake(root).add_actions("pairs")) / 1e6

        def scan(lake):
            return lambda: (
                lake.read(spark, "pairs").agg(F.count("*"), F.sum(F.length("image"))).collect()
            )

        def narrow(lake):
            return lambda: lake.read(spark, "pairs", columns=["uid"]).distinct().count()

        spark_lake, arrow_lake = Lake(root, read_path="spark"), Lake(root, read_path="arrow")
        assert scan(spark_lake)() == scan(arrow_lake)()  # same answer first
        figures = {
            "full_scan": (best_of(scan(arrow_lake)), best_of(scan(spark_lake))),
            "uid_only": (best_of(narrow(arrow_lake)), best_of(narrow(spark_lake))),
        }
    spark.stop()
    for name, (ours, base) in figures.items():
        print(f"{name:10s} arrow {ours:6.2f} s   spark {base:6.2f} s   ratio {ours / base:5.2f}")
    ours, base = figures["full_scan"]
    print(
        json.dumps(
            {
                "metric": "seconds to read a pairs table version (full scan, best of 3)",
                "rows": len(rows),
                "table_mb": round(mb, 1),
                "ours": round(ours, 3),
                "baseline": round(base, 3),
                "ratio": round(ours / base, 3),
                "uid_only": {
                    k: round(v, 3)
                    for k, v in zip(("ours", "baseline"), figures["uid_only"], strict=True)
                },
            }
        )
    )


if __name__ == "__main__":
    main()
