"""MinHash signature throughput: our Spark UDF vs datasketch `MinHash.bulk`.

Both sides start from the same 100k caption strings and produce 128-permutation
signatures with the same shingling (character 5-grams of the normalized caption),
seed and hash; the script checks that a sample of signatures is identical. The
baseline runs in this one Python process; ours runs as a `mapInArrow` over Spark
local[N] (N = cores), and its rate is divided by N for the per-core ratio.

    .venv/bin/python benchmarks/minhash.py [--n 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from captions import captions  # noqa: E402


def spark_session(cores: int):
    from pyspark.sql import SparkSession

    from lakecurate.runtime.config import SparkConfig
    from lakecurate.runtime.session import configure_builder, configure_environment

    configure_environment()
    cfg = SparkConfig(
        master=f"local[{cores}]",
        shuffle_partitions=cores,
        arrow_batch_rows=4096,
        conf={"spark.driver.memory": "6g"},  # local mode: the driver JVM holds every task
    )
    spark = configure_builder(SparkSession.builder, cfg).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def run_ours(spark, texts: list[str], params, cores: int) -> tuple[float, dict]:
    from lakecurate.udfs import minhash as mh

    rows = [(f"{i:08d}", t) for i, t in enumerate(texts)]
    df = spark.createDataFrame(rows, "uid string, caption string").repartition(cores).cache()
    df.count()
    out = df.mapInArrow(
        partial(mh.signature_batches, params=params), "uid string, signature binary"
    )
    out.write.format("noop").mode("overwrite").save()  # warm the Python workers
    t0 = time.perf_counter()
    out.write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - t0
    sample = {r["uid"]: r["signature"] for r in out.filter("uid < '00000200'").collect()}
    return seconds, sample


def run_baseline(texts: list[str], params) -> tuple[float, list]:
    from datasketch import MinHash

    from lakecurate.udfs.minhash import shingles

    t0 = time.perf_counter()
    grams = [[s.encode("utf-8") for s in shingles(t, params.shingle, params.ngram)] for t in texts]
    sketches = MinHash.bulk(grams, num_perm=params.num_perm, seed=params.seed)
    return time.perf_counter() - t0, sketches


def main() -> None:
    from lakecurate.udfs.minhash import MinHashParams

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    texts = captions(args.n, seed=3)
    params = MinHashParams()
    base_s, sketches = run_baseline(texts, params)
    spark = spark_session(args.cores)
    ours_s, sample = run_ours(spark, texts, params, args.cores)
    for uid, sig in sample.items():
        assert np.array_equal(np.frombuffer(sig, "<u4"), sketches[int(uid)].hashvalues)
    ours = args.n / ours_s / args.cores
    baseline = args.n / base_s
    print(f"datasketch MinHash.bulk (1 process): {base_s:.1f} s, {baseline:,.0f} captions/s")
    print(f"ours, Spark local[{args.cores}]: {ours_s:.1f} s, {ours:,.0f} captions/s per core")
    print(f"identical signatures on {len(sample)} sampled captions")
    print(
        json.dumps(
            {
                "metric": "minhash_signatures_per_core",
                "ours": round(ours, 1),
                "baseline": round(baseline, 1),
                "ratio": round(ours / baseline, 3),
                "n": args.n,
                "unit": "captions/s/core",
                "cores": args.cores,
            }
        )
    )


if __name__ == "__main__":
    main()
