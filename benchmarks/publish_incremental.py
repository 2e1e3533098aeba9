"""Publishing a nightly version: incremental layout vs a full rewrite, side by side.

    .venv/bin/python benchmarks/publish_incremental.py LAKE [--name bench]

LAKE is a lake whose dataset NAME has at least two versions, the latest one published
after a small refresh (`benchmarks/refresh.py --keep DIR` leaves one at DIR/lake).
For each mode, the lake's tables are copied (shards stay where they are), the latest
version is retired there, and the same next version is published again over the one
before it: once with `--full` (every shard written afresh: the old behaviour), once
incrementally (untouched shards hard linked). Both runs share one local Spark session
(local[2]), so its start is not counted. Prints both times and, as its LAST line, a
JSON object: ours = incremental publishes per hour, baseline = full ones, ratio =
full seconds / incremental seconds (higher is better).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def prepare(lake: Path, name: str, dest: Path):
    """A copy of the lake's tables with the latest version of `name` retired."""
    from lakecurate import versions
    from lakecurate.config import load_config
    from lakecurate.dataset import dataset_rows
    from lakecurate.lake import Lake

    shutil.copytree(lake, dest, ignore=shutil.ignore_patterns("_published"))
    cfg = load_config(None, {"lake.path": str(dest)})
    rows = dataset_rows(SPARK, Lake(str(dest)), name)
    if len(rows) < 2:
        raise SystemExit(f"{name} needs two versions in {lake}; it has {len(rows)}")
    latest = rows[-1]
    versions.main(["retire", latest.ref, "--lake", str(dest)])
    return cfg, latest


def timed_publish(lake: Path, name: str, dest: Path, incremental: bool) -> tuple[float, dict]:
    from lakecurate.jobs import publish

    from lakecurate.config import replace

    cfg, latest = prepare(lake, name, dest)
    man = latest.manifest()
    cfg = replace(
        cfg,
        model={"name": "lakecurate-tiny", "pretrained": "none"},
        publish={
            "name": name,
            "shard_size": man["shard_size"],
            "shard_bytes": man["shard_bytes"],
            "seed": man["seed"],
            "incremental": incremental,
            "out": str(dest / "_published" / "{name}" / "v{version}"),
        },
    )
    t0 = time.time()
    res = publish.run(SPARK, cfg)
    seconds = time.time() - t0
    out = json.loads((Path(res.counts["shard_dir"]) / "manifest.json").read_text())
    assert out["selection_hash"] == man["selection_hash"], "not the same version's samples"
    info = {
        "num_samples": out["counts"]["num_samples"],
        "shards": out["counts"]["num_shards"],
        "reused": sum(1 for s in out["shards"] if s["reused"]),
        "layout": out["layout"],
    }
    logging.info("%s publish: %.1f s %s", "incremental" if incremental else "full", seconds, info)
    return seconds, info


SPARK = None


def main() -> int:
    global SPARK
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("lake", type=Path)
    p.add_argument("--name", default="bench")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("lakecurate").setLevel(logging.WARNING)
    from pyspark.sql import SparkSession

    from lakecurate.config import SparkConfig
    from lakecurate.session import configure_builder, configure_environment, register_sources

    configure_environment()
    cfg = SparkConfig(master="local[2]", shuffle_partitions=4)
    SPARK = configure_builder(SparkSession.builder, cfg).getOrCreate()
    SPARK.sparkContext.setLogLevel("ERROR")
    register_sources(SPARK)
    root = Path(tempfile.mkdtemp(prefix="lakecurate-bench-publish-"))
    try:
        full_s, full = timed_publish(args.lake, args.name, root / "full", incremental=False)
        incr_s, incr = timed_publish(args.lake, args.name, root / "incr", incremental=True)
    finally:
        SPARK.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert full["num_samples"] == incr["num_samples"]
    print(f"full publish:        {full_s:7.1f} s  {full}")
    print(f"incremental publish: {incr_s:7.1f} s  {incr}")
    print(
        json.dumps(
            {
                "metric": "publish of a refreshed version, incremental vs full, per hour",
                "ours": round(3600 / incr_s, 2),
                "baseline": round(3600 / full_s, 2),
                "ratio": round(full_s / incr_s, 2),
                "n": full["num_samples"],
                "unit": "publishes/hour",
                "full_seconds": round(full_s, 1),
                "incremental_seconds": round(incr_s, 1),
                "reused_shards": incr["reused"],
                "shards": incr["shards"],
                "cores": os.cpu_count(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
