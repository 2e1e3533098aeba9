"""Publishing a nightly version: incremental layout vs a full rewrite, side by side.

    .venv/bin/python benchmarks/publish_incremental.py [--n 20000] [--new-fraction 0.01]
        [--drop-fraction 0.001] [--shard-size 1000] [--repeat 2]

Builds a lake directly (generated pairs and an all-kept selection; no embed or dedup,
which this does not measure) and publishes version 1. Then the night's change: 1% new
pairs (in new `pairs` files, as ingest adds them) and 0.1% of the old uids dropped
from the selection. Version 2 is then published twice, each time on its own copy of
the tables (both over the same version 1): once with `--full` (every shard written
afresh: the old behaviour), once incrementally (untouched shards hard linked, shards
that lost a member rewritten, added samples in new shards), alternating `--repeat`
times (best of each, so both are equally warm). One local Spark session (local[2])
for everything, so its start is not counted. LAST line: one JSON object,
ours = incremental publishes per hour, baseline = full ones, ratio = full seconds /
incremental seconds (higher is better).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from summary import per_hour  # noqa: E402 (benchmarks/ is on sys.path)

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
log = logging.getLogger("benchmarks.publish_incremental")


def write_rows(spark, lake, table: str, rows: list[dict], mode: str = "append") -> None:
    import pyarrow as pa

    from lakecurate.deltaio.lake import Commit
    from lakecurate.schemas import TABLES

    spec = TABLES[table]
    df = spark.createDataFrame(
        pa.Table.from_pylist(rows, schema=spec.schema).to_pandas(), spec.spark_schema()
    )
    lake.write(df, table, Commit("bench", "bench"), mode=mode)


def select_all(spark, lake, rid: str, uids: list[str], dropped: set[str]) -> None:
    rows = [
        {"uid": u, "recipe_id": rid, "kept": u not in dropped, "reason": None, "run_id": "b"}
        for u in uids
    ]
    for r in rows:
        if not r["kept"]:
            r["reason"] = "duplicate:phash"
    write_rows(spark, lake, "selection", rows, mode="overwrite")


def timed_publish(spark, cfg) -> tuple[float, dict]:
    from lakecurate.jobs import publish

    t0 = time.time()
    res = publish.run(spark, cfg)
    seconds = time.time() - t0
    man = json.loads((Path(res.counts["shard_dir"]) / "manifest.json").read_text())
    return seconds, {
        "num_samples": man["counts"]["num_samples"],
        "shards": man["counts"]["num_shards"],
        "reused": sum(1 for s in man["shards"] if s["reused"]),
        "layout": man["layout"],
        "selection_hash": man["selection_hash"],
    }


def run(spark, root: Path, args) -> dict:
    from lakecurate.curation.selection.recipes import recipe_id_for
    from lakecurate.deltaio.lake import Lake
    from lakecurate.demo.sample import generate
    from lakecurate.runtime.config import load_config, replace

    t0 = time.time()
    old = generate(n=args.n, seed=1, prefix="a", dup_rate=0).pair_rows()
    new = generate(n=max(1, int(args.n * args.new_fraction)), seed=2, prefix="b").pair_rows()
    log.info("generated %d + %d pairs in %.0f s", len(old), len(new), time.time() - t0)
    base = root / "lake"
    cfg = load_config(
        None,
        {
            "lake.path": str(base),
            "publish.name": "bench",
            "publish.shard_size": args.shard_size,
        },
    )
    lake, rid = Lake(str(base)), recipe_id_for(cfg)
    write_rows(spark, lake, "pairs", old)
    select_all(spark, lake, rid, [r["uid"] for r in old], set())
    first_s, first = timed_publish(spark, cfg)
    log.info("version 1 (full): %.1f s, %s", first_s, first)
    write_rows(spark, lake, "pairs", new)
    uids = [r["uid"] for r in old + new]
    drop = random.Random(3).sample(
        [r["uid"] for r in old], max(1, int(len(old) * args.drop_fraction))
    )
    select_all(spark, lake, rid, uids, set(drop))
    out: dict = {}
    for i in range(args.repeat):  # alternating, best of: both modes equally warm
        for mode, incremental in (("full", False), ("incremental", True)):
            copy = root / f"lake-{mode}-{i}"
            shutil.copytree(base, copy, ignore=shutil.ignore_patterns("_published"))
            c = replace(cfg, lake={"path": str(copy)}, publish={"incremental": incremental})
            got = timed_publish(spark, c)
            log.info("version 2 (%s): %.1f s, %s", mode, *got)
            out[mode] = min(out.get(mode, got), got, key=lambda t: t[0])
    assert out["full"][1]["selection_hash"] == out["incremental"][1]["selection_hash"]
    assert out["full"][1]["num_samples"] == out["incremental"][1]["num_samples"]
    return {"first": (first_s, first), "dropped": len(drop), "added": len(new), **out}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000, help="pairs in version 1")
    p.add_argument("--new-fraction", type=float, default=0.01)
    p.add_argument("--drop-fraction", type=float, default=0.001)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=2, help="runs of each mode (best counts)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("lakecurate").setLevel(logging.WARNING)
    from pyspark.sql import SparkSession

    from lakecurate.runtime.config import SparkConfig
    from lakecurate.runtime.session import (
        configure_builder,
        configure_environment,
        register_sources,
    )

    configure_environment()
    conf = SparkConfig(master="local[2]", shuffle_partitions=4)
    spark = configure_builder(SparkSession.builder, conf).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    register_sources(spark)
    root = Path(tempfile.mkdtemp(prefix="lakecurate-bench-publish-"))
    try:
        res = run(spark, root, args)
    finally:
        spark.stop()
        shutil.rmtree(root, ignore_errors=True)
    (full_s, full), (incr_s, incr) = res["full"], res["incremental"]
    print(f"full publish:        {full_s:7.1f} s  {full['shards']} shards")
    print(f"incremental publish: {incr_s:7.1f} s  {incr['layout']}")
    print(
        per_hour(
            "publish of a nightly version (+1% pairs), incremental vs full, per hour",
            incr_s,
            full_s,
            "publishes/hour",
            n=full["num_samples"],
            full_seconds=round(full_s, 1),
            incremental_seconds=round(incr_s, 1),
            first_version_seconds=round(res["first"][0], 1),
            added=res["added"],
            dropped=res["dropped"],
            shards=incr["shards"],
            reused_shards=incr["reused"],
            layout=incr["layout"],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
