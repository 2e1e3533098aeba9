"""Incremental dedup cost: dedup of +1% new pairs against a lake vs a full dedup of it all.

    .venv/bin/python benchmarks/dedup_incremental.py [--n 3000] [--new-fraction 0.01]
        [--methods exact,phash,minhash,semantic] [--keep DIR] [--from LAKE]

Makes an input lake whose `pairs` and `embeddings` hold N generated pairs at version
0 and N + 1% at their latest version (tiny model; embeddings only when semantic is
among the methods; `--from LAKE` reuses the input lake `DIR/inputs` of an earlier
`--keep DIR` run). Then, in one local[2] Spark session:

* a lake with version 0 of both tables is deduped (not timed; it also warms up);
* full: `dedup.run` on a lake holding the latest versions, timed;
* incremental: the rest is appended to the first lake and `dedup.run` is timed (the
  new pairs against the lake).

It checks that both give the same `duplicates` rows for exact, exact_caption and
phash (run ids aside; keepers are ranked as a full run ranks them,
`dedup.stable_keepers: false`, so that the rows are comparable), reports the share of minhash duplicates on which they agree, and prints, as its LAST line, one JSON object with
ratio = full seconds / incremental seconds (higher is better).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from summary import per_hour  # noqa: E402 (benchmarks/ is on sys.path)

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger("benchmarks.dedup_incremental")
SAME = ("exact", "exact_caption", "phash")  # must match a full run exactly
# minhash links a new caption in a large bucket to the leader and its neighbours only
# (jobs/dedup.py), so its verdicts are compared as the share of duplicate uids the
# two runs agree on (same keeper)


def make_config(lake: Path, sources: list[Path], methods: list[str]):
    from lakecurate.runtime.config import load_config

    return load_config(
        None,
        {
            "lake.path": str(lake),
            "spark.master": "local[2]",
            "spark.shuffle_partitions": 4,
            "model.name": "lakecurate-tiny",
            "model.pretrained": "none",
            "model.batch_size": 64,
            "dedup.methods": methods,
            "dedup.stable_keepers": False,  # comparable with a full run
            "sources": [{"uri": str(s), "format": "webdataset"} for s in sources],
        },
    )


def write_pairs(spark, lake: Path, rows: list[dict]) -> None:
    """Pairs straight into the lake (ingest is not what this measures)."""
    import pyarrow as pa

    from lakecurate.deltaio.lake import Commit, Lake
    from lakecurate.schemas import TABLES

    spec = TABLES["pairs"]
    table = pa.Table.from_pylist(rows, schema=spec.schema)
    df = spark.createDataFrame(table.to_pandas(), spec.spark_schema())
    Lake(str(lake)).append_new(df, "pairs", Commit("benchmark", "benchmark-run"))


def prepare(spark, root: Path, n: int, n_new: int, methods: list[str]) -> Path:
    """An input lake: N pairs embedded (version 0), then N + n_new (latest)."""
    from lakecurate.demo.sample import generate
    from lakecurate.jobs import embed

    lake = root / "inputs"
    cfg = make_config(lake, [], methods)
    for rows in (
        generate(n=n, seed=1, prefix="a").pair_rows(),
        generate(n=n_new, seed=2, prefix="b").pair_rows(),
    ):
        write_pairs(spark, lake, rows)
        if "semantic" in methods:
            embed.run(spark, cfg)
    return lake


def copy_inputs(spark, src: Path, dst: Path, version: int | None, since: int | None) -> None:
    """pairs and embeddings of `src` at `version`, or the rows added after `since`."""
    from lakecurate.deltaio.lake import Commit, Lake

    a, b = Lake(str(src)), Lake(str(dst))
    for table in ("pairs", "embeddings"):
        if not a.exists(table):
            continue
        rows = a.read(spark, table, version)
        if since is not None:
            rows = rows.join(a.read(spark, table, since), list(a.spec(table).key), "left_anti")
        b.write(rows, table, Commit("benchmark", "benchmark-run"))


def timed_dedup(spark, lake: Path, methods: list[str]) -> tuple[float, dict]:
    from lakecurate.jobs import dedup

    t0 = time.perf_counter()
    result = dedup.run(spark, make_config(lake, [], methods))
    seconds = time.perf_counter() - t0
    log.info("dedup of %s in %.1f s: %s", lake.name, seconds, result.message)
    return seconds, dict(result.counts)


def duplicates(spark, lake: Path) -> tuple[set[tuple], dict[str, str]]:
    """(the rows of the SAME methods, minhash duplicate uid -> keeper)."""
    from lakecurate.deltaio.lake import Lake

    cols = ["uid", "method", "group_id", "keeper_uid", "similarity", "config_slug"]
    rows = Lake(str(lake)).read(spark, "duplicates").select(*cols).collect()
    same = {tuple(r) for r in rows if r["method"] in SAME}
    mh = {r["uid"]: r["keeper_uid"] for r in rows if r["method"] == "minhash"}
    return same, {u: k for u, k in mh.items() if u != k}


def agreement(a: dict[str, str], b: dict[str, str]) -> float:
    both = set(a) | set(b)
    return sum(a.get(u) == b.get(u) for u in both) / len(both) if both else 1.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3000, help="pairs in the lake before the refresh")
    p.add_argument("--new-fraction", type=float, default=0.01)
    p.add_argument("--methods", default="exact,phash,minhash,semantic")
    p.add_argument("--keep", help="keep the generated data and lakes in this directory")
    p.add_argument(
        "--from", dest="source", help="reuse the input lake (DIR/inputs) of a --keep run"
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("lakecurate").setLevel(logging.WARNING)
    logging.getLogger("lakecurate.jobs.dedup").setLevel(logging.INFO)  # seconds per method
    methods = [m for m in args.methods.split(",") if m]

    from pyspark.sql import SparkSession

    from lakecurate.runtime.session import (
        configure_builder,
        configure_environment,
        register_sources,
    )

    root = Path(args.keep or tempfile.mkdtemp(prefix="lakecurate-bench-dedup-"))
    root.mkdir(parents=True, exist_ok=True)
    n_new = max(1, int(args.n * args.new_fraction))
    configure_environment()
    cfg = make_config(root / "lake", [], methods)
    spark = configure_builder(SparkSession.builder, cfg.spark).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    register_sources(spark)
    try:
        inputs = Path(args.source) if args.source else prepare(spark, root, args.n, n_new, methods)
        incr, full = root / "incremental", root / "full"
        for d in (incr, full):
            shutil.rmtree(d, ignore_errors=True)
        copy_inputs(spark, inputs, incr, 0, None)
        timed_dedup(spark, incr, methods)  # the lake before the increment; warms the JVM up
        copy_inputs(spark, inputs, full, None, None)
        full_s, full_counts = timed_dedup(spark, full, methods)
        copy_inputs(spark, inputs, incr, None, 0)
        incr_s, incr_counts = timed_dedup(spark, incr, methods)
        (same_i, mh_i), (same_f, mh_f) = duplicates(spark, incr), duplicates(spark, full)
        same, minhash_agreement = same_i == same_f, agreement(mh_i, mh_f)
    finally:
        spark.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"incremental dedup: {incr_s:7.1f} s  {incr_counts}")
    print(f"full dedup:        {full_s:7.1f} s  {full_counts}")
    print(
        per_hour(
            "dedup of +1% new pairs vs full dedup, runs per hour",
            incr_s,
            full_s,
            "runs/hour",
            n=incr_counts.get("rows"),
            n_new=incr_counts.get("new_rows"),
            incremental_seconds=round(incr_s, 1),
            full_seconds=round(full_s, 1),
            methods=methods,
            same_duplicates=same,
            minhash_agreement=round(minhash_agreement, 4),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
