"""Does a nightly refresh cost what is new, or what is stored? Two lakes, one refresh.

    .venv/bin/python benchmarks/refresh_scaling.py [--n1 25000] [--n2 200000] [--new 1000]
                                                   [--compact]

One generated pair set of N2 pairs (tiny model, random weights, local[2]); the lake of
N1 pairs ingests its first N1 (whole source tars), the lake of N2 all of it. Each lake
gets a full run, then a refresh of the same `--new` pairs, then a refresh with nothing
new, all in one Spark session (its start is not counted). Prints per-stage seconds and
the Spark job count of every run. Last line, JSON:

* `exponent` = log(t_refresh(N2) / t_refresh(N1)) / log(N2 / N1): how the refresh grows
  with the lake (0: not at all; 1: linearly). Target <= 0.10.
* `ratio` = full(N2) / refresh(N2). Target >= 20.
* `stage_exponents`: the same exponent per stage, and the nothing-new refresh's
  seconds and job count (target: within 10 s of the session's start).

With `--compact`, each lake is compacted after its full run (`lakecurate compact`, as
an operator would schedule it: the full run's ingest leaves one `pairs` file per source
tar), and a warm-up refresh of `--new` other pairs reads the rewritten tables once
before the measured refresh.

`benchmarks/refresh.py` keeps the single-lake +1% figure.

Recorded (stop 30, local[2], alone on the machine), the defaults (25k / 200k / 1,000):
refresh 29.5 s (217 jobs) at 25k, 66.8 s (207 jobs) at 200k: exponent 0.393 (target
0.10; dedup 0.45, select 0.36, publish 0.37, embed 0.25, ingest 0.12); full run at 200k
390.3 s, so ratio 5.84 (target 20); nothing new: 12.7 s / 38.8 s, of which dedup 7.0 /
25.6 s (it still reads the lake when nothing is new). Smaller, `--n1 5000 --n2 40000`:
refresh 24.4 s (201 Spark jobs) at 5k, 28.4 s (220 jobs) at 40k: exponent 0.073 (dedup
0.11, select 0.13, embed 0.09); full run at 40k 92.2 s, so ratio 3.25; nothing new:
9.3 s / 13.1 s (110 / 122 jobs). Dedup is the largest stage of a refresh (10.9 / 13.7 s),
mostly a fixed cost of its many small jobs. The same run beside a full test suite gave
102 s / 89 s: run it alone.

Stop 34 (`--n1 5000 --n2 40000`, alone), with dedup's nothing-new watermark and the
crop route of phash (#19): nothing new 4.1 s / 5.3 s (55 / 58 jobs; dedup 0.0 s: no
Spark job); +1,000 refresh 23.8 s / 30.8 s (dedup 12.3 / 18.0 s), exponent 0.124
(dedup 0.18, select 0.15); full run at 40k 140.1 s (dedup 85.8 s: the window hashes,
their band join and registration of crop candidates), ratio 4.55.

Stop 35 (defaults, alone, at 37f3af4): at 25k the full run took 111.3 s (157 jobs;
dedup 55.4 s), the +1,000 refresh 27.8 s (217 jobs: ingest 0.9, embed 2.2, dedup 15.4,
select 3.4, publish 5.1 s; churn 0), nothing new 0.9 s (10 jobs: select's watermark
too). The 200k full run then died in dedup: Java heap space in the pHash band join,
whose probes flipped every window hash (1.75 billion probe rows at 200k). c68e036 flips
windows only for new items against old whole frames: the full edge search over the 40k
lake's signals went from 51-52 s to 9.7 s with the same edges. The 200k run was not
repeated in that stop. A +1,000 refresh of a 40k lake (same commit, profiled on its
own): 35.0 s, 218 jobs (dedup 19.6 s, 111 jobs: signals 2.4, exact 1.4, exact_caption
0.9, phash 7.7, writing the changes 6.1 s; select 4.3 s; publish 6.1 s, 49 jobs).
`--n1 5000 --n2 40000` at 05c09f6 (alone): full run at 40k 97.6 s (dedup 41.8 s, was
85.8 s), +1,000 refresh 28.2 s / 34.9 s (216 / 226 jobs; dedup 15.2 / 21.6 s), exponent
0.103 (dedup 0.169, select 0.119, publish 0.009), ratio 2.8 (the full run got faster),
nothing new 1.1 s / 1.1 s (10 / 11 jobs).

Stop 36 (defaults, alone, at c07bf0d; the first complete defaults run since stop 30):
a +1,000 refresh takes 31.6 s (215 jobs) at 25k and 63.3 s (229 jobs) at 200k:
exponent 0.334 (target 0.10; embed 0.58, select 0.54, publish 0.35, dedup 0.21); the
200k full run 586.9 s, so ratio 9.27 (target 20); nothing new 1.0 s / 3.4 s. Per stage
at 200k: ingest 1.4, embed 10.0, dedup 23.4, select 13.1, publish 13.3 s. Before it
completed: the refresh's pHash probe from a per-worker index of the new hashes (no
shuffle of the lake's hashes; 20k lake: 27 jobs / 11.6 s -> 12 jobs / 1.0 s), no
lake-wide image shuffle for new signals (303 MB at 60k), and candidate edges verified
before they form groups (unverified, they chained the 200k pool into one component
whose keepers never finished). Verification costs the 25k refresh about 3 s (dedup
12.0 -> 15.1 s at b26883d -> c07bf0d). What still grows with the lake: select (the
whole selection is recomputed), publish (every parent index is read), embed's and
dedup's uid anti-joins, and the keepers of touched groups.

Stop 38 (at bcda618, alone; the stop-36 lakes kept, each given a warm-up +1,000 refresh
before the measured one, then nothing new): as built, 30.7 s at 25k and 49.4 s at 200k
(exponent 0.23; ingest 1.1/1.4, embed 2.5/2.7, dedup 13.7/23.1, select 6.7/9.7,
publish 5.3/10.6 s), nothing new 1.2 / 1.7 s (9 jobs). With `lakecurate compact` first
(`pairs` 199 -> 9 files, `dedup_index` 32 -> 1, `duplicates` 14 -> 1 at 200k): 25.8 s
and 38.2 s, exponent 0.19 (ingest 0.06, embed -0.05, dedup 0.18, select 0.11, publish
0.38), ratio against the stop-36 full run (586.9 s) 15.4. Publish grows most: it still
compares the whole selection with every parent index.

Stop 40 (`--compact`, alone, at c32d975): publish compares only the parent shards that
hold a uid changed since the parent's pins and carries the additive selection hash
forward; compaction writes ~16 MiB row groups; embed no longer re-embeds the lake after
`pairs` is compacted (the stop-38 warm-up had spent 189 s doing so); one scan of the
verification blobs serves phash's verification and keepers. Refresh 29.2 s at 25k
(266 jobs: ingest 1.0, embed 2.4, dedup 13.2, select 5.8, publish 5.4) and 34.8 s at
200k (269 jobs: ingest 1.0, embed 2.1, dedup 18.8, select 6.6, publish 5.2): exponent
0.084 (target 0.10 met; dedup 0.17, select 0.06, publish -0.02, embed -0.06); full run
at 200k 522.4 s, so ratio 15.0 (target 20 not met); nothing new 1.1 s / 0.7 s (6 / 7
jobs). Warm-up refresh after compaction: 34.3 s / 46.6 s.

Stop 42 (where the time of a +1,000 refresh goes; the kept stop-40 lakes copied, a
warm-up and a measured refresh, per-process CPU from /proc): the refresh is CPU-bound
in the driver JVM, not waiting. At 25k the JVM used 50-59 CPU-s, Python workers about
10 and the Python driver about 3, over 34-41 s of wall on 2 cores (machine busy 0.88-
0.91 of the time); the driver spends ~29 s of that waiting on Py4J. 277 Spark jobs made
547 Janino compilations (~6.5 s of compile time). A JFR recording at the default 1 GiB
heap showed 29 concurrent G1 cycles started by humongous allocations, yet a 4 GiB heap
gave the same wall time (A/B, two runs each: 36.3 / 34.6 s at 1 GiB, 33.4 / 36.7 s at
4 GiB). Running the dedup methods of a refresh side by side in threads (and select's
figures jobs) was no faster on 2 cores (A/B: 40.7 / 39.8 s against 39.2 / 38.1 s), nor
was `spark.sql.codegen.wholeStage=false` at 200k (48.0 s against 48.2 s): neither was
kept. The same commit ran 29.2 s at 25k at stop 40 and 38-39 s here: compare only
figures taken side by side in one sitting.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from refresh import make_config, start_session  # noqa: E402 (benchmarks/ is on sys.path)

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger("benchmarks.refresh_scaling")
STAGES = ("ingest", "embed", "dedup", "concepts", "select", "publish")


def generate(root: Path, n2: int, n_new: int, shard_size: int) -> tuple[Path, Path, Path]:
    """(the N2 pairs, the refresh's new pairs, other new pairs for a warm-up refresh)."""
    from lakecurate.demo.sample import generate as sample

    t0 = time.time()
    base, new, warm = root / "base", root / "new", root / "warm"
    done = root / f"generated-{n2}-{n_new}-{shard_size}-warm"
    if done.exists():  # a --keep directory from an earlier run: the same pairs
        log.info("reusing the pairs generated in %s", root)
        return base, new, warm
    sample(n=n2, seed=1, prefix="a").write_webdataset(base, shard_size=shard_size)
    sample(n=n_new, seed=2, prefix="b").write_webdataset(new, shard_size=shard_size)
    sample(n=n_new, seed=3, prefix="w").write_webdataset(warm, shard_size=shard_size)
    done.touch()
    log.info("generated %d + 2 x %d pairs in %.0f s", n2, n_new, time.time() - t0)
    return base, new, warm


def compact(cfg) -> dict:
    """`lakecurate compact` with its defaults, timed."""
    from lakecurate.deltaio import compaction
    from lakecurate.schemas import TABLES

    t0 = time.time()
    doc = compaction.compact(cfg, compaction.TARGET_MB, compaction.MIN_FILES, False, list(TABLES))
    packed = {t["table"]: [t["files"], t["files_after"]] for t in doc["tables"] if t["compacted"]}
    return {"seconds": round(time.time() - t0, 1), "files": packed}


def subset(base: Path, out: Path, n_tars: int) -> Path:
    """The first `n_tars` source tars of `base`, linked into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for tar in sorted(base.glob("*.tar"))[:n_tars]:
        os.link(tar, out / tar.name)
    return out


def job_mark(spark) -> int:
    """The id of a new, trivial job: ids are consecutive, so the difference of two marks
    minus one is how many jobs ran in between."""
    sc = spark.sparkContext
    group = f"bench-mark-{time.time_ns()}"
    sc.setJobGroup(group, "benchmark job counter", False)
    sc.parallelize([0], 1).count()
    return max(sc.statusTracker().getJobIdsForGroup(group))


def timed(spark, cfg) -> dict:
    from lakecurate.jobs import refresh

    before = job_mark(spark)
    t0 = time.time()
    result = refresh.run(spark, cfg)
    seconds = time.time() - t0
    jobs = job_mark(spark) - before - 1
    st = {s["stage"]: s for s in result.counts["stages"]}
    out = {
        "seconds": round(seconds, 1),
        "spark_jobs": jobs,
        "stages": {k: round(st[k]["seconds"], 1) for k in STAGES if k in st},
        "new_pairs": st["ingest"]["rows_out"],
        "message": result.message,
        # samples of the previous selection / version this refresh left out, by cause
        "churn": {
            **{
                k: v
                for k, v in (st.get("select", {}).get("counts") or {}).items()
                if k.startswith("churn_") or k == "refitted"
            },
            "publish_removed": (st.get("publish", {}).get("counts") or {}).get(
                "removed_from_parent"
            ),
        },
    }
    log.info("%s", out)
    return out


def exponent(t1: float, t2: float, n1: int, n2: int) -> float | None:
    if t1 <= 0 or t2 <= 0:
        return None
    return round(math.log(t2 / t1) / math.log(n2 / n1), 3)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n1", type=int, default=25_000)
    p.add_argument("--n2", type=int, default=200_000)
    p.add_argument("--new", type=int, default=1_000, help="pairs the refresh adds")
    p.add_argument("--shard-size", type=int, default=1000, help="records per source tar")
    p.add_argument(
        "--compact",
        action="store_true",
        help="after each full run, `lakecurate compact` the lake, then a warm-up refresh of "
        "other new pairs (it reads the rewritten tables once) before the measured one",
    )
    p.add_argument(
        "--keep",
        help="keep the generated data and lakes in this directory (a later run with the "
        "same sizes reuses the data)",
    )
    args = p.parse_args()
    if not 0 < args.n1 < args.n2 or args.n1 % args.shard_size or args.n2 % args.shard_size:
        p.error("need 0 < n1 < n2, both multiples of --shard-size")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("lakecurate").setLevel(logging.WARNING)

    root = Path(args.keep or tempfile.mkdtemp(prefix="lakecurate-bench-scaling-"))
    base, new, warm = generate(root, args.n2, args.new, args.shard_size)
    for old in [root / "small", *root.glob("lake-*")]:  # lakes of an earlier --keep run
        shutil.rmtree(old, ignore_errors=True)
    small = subset(base, root / "small", args.n1 // args.shard_size)
    model = "lakecurate-tiny"
    spark = start_session(make_config(root / "lake-n1", [small], model))
    runs: dict[int, dict[str, dict]] = {}
    compacted: dict[int, dict] = {}
    try:
        for n, src in ((args.n1, small), (args.n2, base)):
            lake = root / f"lake-{n}"
            runs[n] = {"full": timed(spark, make_config(lake, [src], model))}
            srcs = [src]
            if args.compact:
                compacted[n] = compact(make_config(lake, srcs, model))
                srcs.append(warm)
                runs[n]["warm_up"] = timed(spark, make_config(lake, srcs, model))
            runs[n]["refresh"] = timed(spark, make_config(lake, [*srcs, new], model))
            runs[n]["nothing_new"] = timed(spark, make_config(lake, [*srcs, new], model))
    finally:
        spark.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    for n, r in runs.items():
        for kind, v in r.items():
            stages = "  ".join(f"{k} {s:6.1f}" for k, s in v["stages"].items())
            print(f"N={n:>7} {kind:<12} {v['seconds']:7.1f} s  {v['spark_jobs']:4d} jobs  {stages}")
    r1, r2 = runs[args.n1]["refresh"], runs[args.n2]["refresh"]
    doc = {
        "metric": "refresh_scaling",
        "n1": args.n1,
        "n2": args.n2,
        "new": args.new,
        "exponent": exponent(r1["seconds"], r2["seconds"], args.n1, args.n2),
        "exponent_target": 0.10,
        "ratio": round(runs[args.n2]["full"]["seconds"] / r2["seconds"], 2),
        "ratio_target": 20,
        "stage_exponents": {
            k: exponent(r1["stages"].get(k, 0), r2["stages"].get(k, 0), args.n1, args.n2)
            for k in STAGES
        },
        "refresh_seconds": {args.n1: r1["seconds"], args.n2: r2["seconds"]},
        "refresh_jobs": {args.n1: r1["spark_jobs"], args.n2: r2["spark_jobs"]},
        "nothing_new_seconds": {n: r["nothing_new"]["seconds"] for n, r in runs.items()},
        "nothing_new_jobs": {n: r["nothing_new"]["spark_jobs"] for n, r in runs.items()},
        "full_seconds": {n: r["full"]["seconds"] for n, r in runs.items()},
        "refresh_churn": {n: r["refresh"]["churn"] for n, r in runs.items()},
        "compacted": compacted or None,
    }
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
