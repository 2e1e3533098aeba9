"""Finding and reading a refresh's not-yet-embedded pairs: the whole-table join (the old
`embed.pending`) vs uid-only anti-joins plus `lakecurate.deltaio.keyed.rows_for_uids`.

    .venv/bin/python benchmarks/embed_pending.py LAKE [--repeat 3] [--all] [--generate N]

LAKE is a lake after a refresh (or, with `--generate N`, one built here without the
model: N pairs with stand-in embeddings, then 1% more) (`benchmarks/refresh.py --keep DIR` leaves one at
DIR/lake): `embeddings` at its first version lacks the uids the refresh added, so both
ways find exactly those and read their images. Each way does what `embed.run` does
before the model runs: count the pending pairs, then read their columns (here: sum the
image bytes). Same session, alternating, best of `--repeat`. Last line: one JSON object,
ratio = old seconds / new seconds (higher is better). `--all` measures a first run
(nothing embedded yet) instead, where the new way must not be slower.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from summary import per_hour  # noqa: E402 (benchmarks/ is on sys.path)

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

COLS = ("uid", "caption", "image", "source_uri", "source_key")


def old_way(spark, lake, pv: int, done, rejected) -> tuple[int, int]:
    from pyspark.sql import functions as F

    todo = lake.read(spark, "pairs", pv).select(*COLS)
    todo = todo.join(done, "uid", "left_anti").join(rejected.distinct(), "uid", "left_anti")
    n = todo.count()
    return n, int(todo.agg(F.sum(F.length("image"))).first()[0] or 0)


def new_way(spark, lake, pv: int, done, rejected) -> tuple[int, int]:
    from pyspark.sql import functions as F

    from lakecurate.deltaio.keyed import rows_for_uids

    uids = lake.read(spark, "pairs", pv).select("uid")
    uids = uids.join(done, "uid", "left_anti").join(rejected.distinct(), "uid", "left_anti")
    uids = uids.persist()
    try:
        n = uids.count()
        todo = rows_for_uids(spark, lake, "pairs", pv, uids, n, COLS)
        return n, int(todo.agg(F.sum(F.length("image"))).first()[0] or 0)
    finally:
        uids.unpersist()


def build(spark, lake, n: int) -> None:
    """pairs of N generated records with stand-in embeddings (version 0), then 1% new
    pairs in new files: the state a refresh's embed starts from (no model needed)."""
    from publish_incremental import write_rows

    from lakecurate.demo.sample import generate

    old = generate(n=n, seed=1, prefix="a").pair_rows()
    write_rows(spark, lake, "pairs", old)
    emb = [
        {
            "uid": r["uid"],
            "model_id": "m",
            "image_emb": [0.0],
            "text_emb": [0.0],
            "clip_score": 0.0,
            "run_id": "b",
            "embedded_at": None,
        }
        for r in old
    ]
    write_rows(spark, lake, "embeddings", emb)
    write_rows(spark, lake, "rejects", [])
    write_rows(spark, lake, "pairs", generate(n=n // 100, seed=2, prefix="b").pair_rows())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("lake", help="a kept refresh lake, or an empty directory with --generate")
    p.add_argument(
        "--no-auto-broadcast",
        action="store_true",
        help="as on a lake whose uid lists exceed spark.sql.autoBroadcastJoinThreshold",
    )
    p.add_argument("--generate", type=int, help="build LAKE: N pairs embedded, then 1%% more")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--all", action="store_true", help="as on a first run: nothing embedded yet")
    args = p.parse_args()
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from lakecurate.deltaio.lake import Lake
    from lakecurate.runtime.config import SparkConfig
    from lakecurate.runtime.session import (
        configure_builder,
        configure_environment,
        register_sources,
    )

    configure_environment()
    cfg = SparkConfig(master="local[2]", shuffle_partitions=4)
    spark = configure_builder(SparkSession.builder, cfg).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    register_sources(spark)
    if args.no_auto_broadcast:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
    lake = Lake(args.lake)
    if args.generate:
        build(spark, lake, args.generate)
    pv = lake.version("pairs")
    done = lake.read(spark, "embeddings", 0).select("uid")
    if args.all:
        done = done.limit(0)
    rejected = lake.read(spark, "rejects").filter(F.col("stage") == "embed").select("uid")
    times: dict[str, list[float]] = {"old": [], "new": []}
    results = {}
    try:
        for _ in range(args.repeat):
            for name, way in (("old", old_way), ("new", new_way)):
                t0 = time.time()
                results[name] = way(spark, lake, pv, done, rejected)
                times[name].append(time.time() - t0)
    finally:
        spark.stop()
    assert results["old"] == results["new"], results
    old, new = min(times["old"]), min(times["new"])
    print(f"whole-table join:    {old:6.2f} s  (all: {[round(t, 2) for t in times['old']]})")
    print(f"uids, then pruned:   {new:6.2f} s  (all: {[round(t, 2) for t in times['new']]})")
    print(
        per_hour(
            "embed: find and read the pairs not yet embedded, per hour",
            new,
            old,
            "runs/hour",
            n=lake.count("pairs"),
            pending=results["new"][0],
            pending_image_bytes=results["new"][1],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
