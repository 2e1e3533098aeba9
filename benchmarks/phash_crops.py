"""What finding crops and borders costs (`dedup.phash_crops`), side by side in one run.

Two parts, each timed with window hashes and without, on the same generated images:

* signals: decode + pHash + verification blob per image (`phash.phash_and_thumbs`),
  with the 15 window hashes and with none (the windows are resized from the same
  decoded 128 px draft, so no second decode);
* the candidate search of `dedup --methods phash` (`near.phash_edges`, Spark, local
  mode): a full run where every image is new, and a refresh where 1 % is new.

    .venv/bin/python benchmarks/phash_crops.py [--images 20000] [--cores 2]

The last line is JSON: seconds per part and the ratios with / without crops.

Recorded (session 34, `--images 5000`, local[2], the 2-core dev machine): signals 2.1 s
without windows, 4.9 s with (ratio 2.28; generated images are small, so decoding, which
windows do not repeat, is a small share; resizing the decoded image per window instead
of area-averaging the detail image gave 6.5); candidate search, full run 4.2 s -> 7.5 s
(1.79), refresh of 1 % 1.3 s -> 1.9 s (1.45); edges 521 -> 572 (the crops).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from minhash import spark_session  # noqa: E402


def signals(images: list[bytes], windows: bool) -> tuple[float, list]:
    from lakecurate.udfs import phash as ph

    saved = ph.WINDOWS
    if not windows:
        ph.WINDOWS = ()
    try:
        t = time.perf_counter()
        out = ph.phash_and_thumbs(images)
        return time.perf_counter() - t, out
    finally:
        ph.WINDOWS = saved


def search(spark, rows: list, new_every: int, crops: bool) -> tuple[float, int]:
    from pyspark.sql import functions as F

    from lakecurate.curation.dedup.near import phash_edges

    df = spark.createDataFrame(rows, "uid string, phash long, phash_windows binary, k int")
    items = df.select(
        "uid", "phash", "phash_windows", (F.col("k") % new_every == 0).alias("is_new")
    )
    items = items.cache()
    items.count()
    t = time.perf_counter()
    n = phash_edges(items, 6, crops).count()
    elapsed = time.perf_counter() - t
    items.unpersist()
    return elapsed, n


def main() -> None:
    from lakecurate.demo.sample import generate

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()

    images = [r.image for r in generate(n=args.images, seed=7).records if r.image]
    print(f"{len(images)} generated images", flush=True)
    t_plain, _ = signals(images, windows=False)
    t_windows, (hashes, _, windows) = signals(images, windows=True)
    print(f"signals: {t_plain:.1f} s whole frame only, {t_windows:.1f} s with windows")

    rows = [
        (f"u{i:08d}", h, w, i)
        for i, (h, w) in enumerate(zip(hashes, windows, strict=True))
        if h is not None
    ]
    spark = spark_session(args.cores)
    out: dict = {"images": len(rows), "signals_s": [round(t_plain, 2), round(t_windows, 2)]}
    for label, every in (("full", 1), ("refresh_1pct", 100)):
        plain, e0 = search(spark, rows, every, crops=False)
        crops, e1 = search(spark, rows, every, crops=True)
        print(f"search {label}: {plain:.1f} s ({e0} edges) without, {crops:.1f} s ({e1}) with")
        out[f"search_{label}_s"] = [round(plain, 2), round(crops, 2)]
        out[f"search_{label}_ratio"] = round(crops / plain, 2)
        out[f"search_{label}_edges"] = [e0, e1]
    out["signals_ratio"] = round(t_windows / t_plain, 2)
    spark.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
