"""`bunny` on a 100k-row generated lake: kept fractions per step, and speed vs numpy.

Builds pairs / embeddings / signals / duplicates tables directly (synthetic CLIP
scores and centroid similarities; no model), runs `lakecurate select --recipe bunny`
through `jobs.selection.run`, prints its funnel and checks each step against what the
recipe implies:

* not_duplicate (semantic, verdicts made at eps 0.14): drops exactly the generated
  semantic non-keepers;
* similarity_band 40-60% and centroid_band 15-35%: keep 20% of the rows in play,
  within the stated percentile_approx error (2 / accuracy + 2 / rows in play);
* sample n=2,000,000: keeps min(n, rows in play).

The baseline is the same recipe in numpy on the driver (exact quantiles) over the
same tables read with pyarrow; `ratio` = Spark rows/s / numpy rows/s (on one 2-core
machine numpy wins; Spark's side is the one that scales out). The last line is JSON.

    .venv/bin/python benchmarks/select_bunny.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

N_CLUSTERS = 64
SEMANTIC_SLUG = "k64_eps0.14_hard_s0"  # what dedup writes for semantic_eps 0.14
WORDS = "a photo of the red blue green cat dog car tree house on in at with small large".split()


def _hex(prefix: str, i: int) -> str:
    return hashlib.sha256(f"{prefix}{i}".encode()).hexdigest()[:32]


def make_tables(n: int, seed: int, mid: str, dup_rate: float = 0.3) -> dict[str, pa.Table]:
    """Arrow tables for pairs, embeddings, signals and duplicates of `n` synthetic pairs."""
    from lakecurate.schemas import TABLES

    rng = np.random.default_rng(seed)
    uids = [_hex("u", i) for i in range(n)]
    sizes = np.array([(256, 256), (320, 240), (640, 160), (48, 64), (1024, 768), (200, 200)])
    wh = sizes[rng.integers(0, len(sizes), n)]
    n_words = rng.integers(0, 14, n)
    captions = [" ".join(rng.choice(WORDS, k)) for k in n_words]
    pairs = {
        "uid": uids,
        "image_sha256": [_hex("i", i) for i in range(n)],
        "caption": captions,
        "width": wh[:, 0].astype(np.int32),
        "height": wh[:, 1].astype(np.int32),
    }
    emb = {
        "uid": uids,
        "model_id": [mid] * n,
        "clip_score": rng.normal(0.3, 0.05, n).astype(np.float32),
    }
    signals = {
        "uid": uids,
        # the caption group, as dedup's signals write it (here of the raw caption)
        "caption_sha256": [hashlib.sha256(c.encode()).hexdigest() if c else None for c in captions],
        "semantic_cluster": rng.integers(0, N_CLUSTERS, n).astype(np.int32),
        "centroid_sim": rng.beta(8, 2, n).astype(np.float32),
    }
    return {
        "pairs": _table(TABLES["pairs"].schema, pairs, n),
        "embeddings": _table(TABLES["embeddings"].schema, emb, n),
        "signals": _table(TABLES["signals"].schema, signals, n),
        "duplicates": _duplicates(uids, rng, dup_rate),
    }


def _duplicates(uids: list[str], rng: np.random.Generator, dup_rate: float) -> pa.Table:
    """Semantic groups (non-keepers at similarity 0.80-1.0) plus a few exact/phash ones."""
    from lakecurate.schemas import TABLES

    n = len(uids)
    idx = rng.permutation(n)
    n_dup = int(n * dup_rate)
    keepers = idx[n_dup : n_dup + max(1, n_dup // 3)]
    names = ("uid", "method", "group_id", "keeper_uid", "similarity", "config_slug")
    rows: dict[str, list] = {c: [] for c in names}

    def add(u: int, method: str, keeper: int, sim: float) -> None:
        rows["uid"].append(uids[u])
        rows["method"].append(method)
        rows["group_id"].append(f"{method}-{uids[keeper]}")
        rows["keeper_uid"].append(uids[keeper])
        rows["similarity"].append(sim)
        rows["config_slug"].append(SEMANTIC_SLUG if method == "semantic" else method)

    sims = rng.uniform(0.80, 1.0, n_dup)  # chain members may be < 0.86 from their keeper
    for j, u in enumerate(idx[:n_dup]):
        add(int(u), "semantic", int(keepers[j % len(keepers)]), float(sims[j]))
    for k in keepers:
        add(int(k), "semantic", int(k), 1.0)
    for j, u in enumerate(idx[n_dup : n_dup + n // 50]):  # exact/phash verdicts for `default`
        method = ("exact", "phash", "minhash")[j % 3]
        add(int(u), method, int(idx[-1 - j]), 0.95)
        add(int(idx[-1 - j]), method, int(idx[-1 - j]), 1.0)
    return _table(TABLES["duplicates"].schema, rows, len(rows["uid"]))


def _table(schema: pa.Schema, cols: dict, n: int) -> pa.Table:
    arrays = [
        pa.array(cols[f.name], f.type) if f.name in cols else pa.nulls(n, f.type) for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def write_lake(spark, lake, tables: dict[str, pa.Table]) -> None:
    """Write each table with the lake layer (one commit each)."""
    from lakecurate.deltaio.lake import Commit
    from lakecurate.schemas import TABLES

    for name, t in tables.items():
        df = spark.createDataFrame(t.to_pandas(), TABLES[name].spark_schema())
        lake.write(df, name, Commit("bench-fixture", "bench-fixture-run"))


def reference_bunny(tables: dict[str, pa.Table], bands=((0.4, 0.6), (0.15, 0.35))) -> dict:
    """The bunny recipe in numpy with exact (linear) quantiles: masks and counts per step."""
    uids = tables["pairs"].column("uid").to_numpy(zero_copy_only=False)
    pos = {u: i for i, u in enumerate(uids)}

    def by_uid(t: pa.Table, col: str) -> np.ndarray:
        out = np.full(len(uids), np.nan)
        idx = np.array([pos[u] for u in t.column("uid").to_pylist()], dtype=np.int64)
        out[idx] = t.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
        return out

    d = tables["duplicates"]
    sem = d.filter(pc.equal(d.column("method"), "semantic"))
    is_dup = np.zeros(len(uids), bool)
    members = sem.column("uid").to_pylist()
    for u, k in zip(members, sem.column("keeper_uid").to_pylist(), strict=True):
        if u != k:
            is_dup[pos[u]] = True
    clip, cent = (
        by_uid(tables["embeddings"], "clip_score"),
        by_uid(tables["signals"], "centroid_sim"),
    )
    masks = [~is_dup]
    for values, (lo, hi) in zip((clip, cent), bands, strict=True):
        cur = masks[-1] & ~np.isnan(values)  # a missing score fails the rule, like in Spark
        qlo, qhi = np.quantile(values[cur], [lo, hi])
        masks.append(cur & (values >= qlo) & (values <= qhi))
    return {"uids": uids, "masks": masks, "counts": [int(m.sum()) for m in masks]}


def read_tables(lake_root: str) -> dict[str, pa.Table]:
    """The four input tables read with pyarrow from their current Delta file lists."""
    from deltalake import DeltaTable

    cols = {
        "pairs": ["uid"],
        "embeddings": ["uid", "clip_score"],
        "signals": ["uid", "centroid_sim"],
        "duplicates": ["uid", "method", "keeper_uid", "similarity"],
    }
    out = {}
    for name, c in cols.items():
        files = DeltaTable(f"{lake_root}/{name}").file_uris()
        out[name] = pads.dataset(files, format="parquet").to_table(columns=c)
    return out


def check_funnel(steps: list[dict], expected_dups: int, accuracy: int, sample_n: int) -> list[dict]:
    """Each step's kept fraction against the recipe's, with the allowed error."""
    checks = []
    for i, s in enumerate(steps):
        rows_in = max(s["in"], 1)
        frac = s["out"] / rows_in
        if i == 0:  # deterministic: exactly the generated duplicates
            want, tol, ok = 1 - expected_dups / rows_in, 0.0, s["dropped"] == expected_dups
        elif i == 3:  # sample: min(n, rows in play)
            target = min(sample_n, s["in"])
            want, tol, ok = target / rows_in, 0.0, s["out"] == target
        else:  # a 20% quantile band: 2 / accuracy rank error, +-1 row at each end
            want, tol = 0.2, 2 / accuracy + 2 / rows_in
            ok = abs(frac - want) <= tol
        checks.append({**s, "kept_fraction": frac, "implied": want, "tolerance": tol, "ok": ok})
    return checks


def format_checks(checks: list[dict]) -> str:
    head = f"{'rule':<18}{'in':>9}{'dropped':>10}{'out':>10}{'kept':>9}{'implied':>9}  tol     ok"
    lines = [head]
    for c in checks:
        lines.append(
            f"{c['rule']:<18}{c['in']:>9}{c['dropped']:>10}{c['out']:>10}"
            f"{c['kept_fraction']:>9.4f}{c['implied']:>9.4f}  {c['tolerance']:.5f} {c['ok']}"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from lakecurate.curation.models import model_id
    from lakecurate.curation.selection.recipes import FunnelStep, format_funnel
    from lakecurate.curation.selection.rules import DEFAULT_ACCURACY
    from lakecurate.deltaio.lake import Lake
    from lakecurate.jobs import selection as select_job
    from lakecurate.runtime.config import load_config

    root = tempfile.mkdtemp(prefix="select-bunny-")
    overrides = {
        "lake.path": f"{root}/lake",
        "spark.master": "local[2]",
        "spark.shuffle_partitions": 4,
        "model.name": "lakecurate-tiny",
        "model.pretrained": "none",
        "select.recipe": "bunny",
    }
    cfg = load_config(None, overrides)
    from refresh import start_session  # benchmarks/ is on sys.path when run as a script

    spark = start_session(cfg)
    tables = make_tables(args.rows, args.seed, model_id(cfg.model))
    write_lake(spark, Lake(cfg.lake.path), tables)

    t0 = time.perf_counter()
    result = select_job.run(spark, cfg)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = reference_bunny(read_tables(cfg.lake.path))
    base_s = time.perf_counter() - t0

    sel = Lake(cfg.lake.path).read(spark, "selection").filter("kept").select("uid").toPandas()
    spark.stop()
    ours_kept, ref_kept = set(sel["uid"]), set(ref["uids"][ref["masks"][-1]])
    jaccard = len(ours_kept & ref_kept) / max(len(ours_kept | ref_kept), 1)
    steps = result.counts["funnel"]
    print(format_funnel([FunnelStep(s["rule"], s["in"], s["dropped"], s["out"]) for s in steps]))
    checks = check_funnel(steps, args.rows - ref["counts"][0], DEFAULT_ACCURACY, 2_000_000)
    print(format_checks(checks))
    print(f"select.run: {ours_s:.2f} s; numpy reference (read + recipe): {base_s:.2f} s")
    print(f"kept-set Jaccard vs the exact numpy recipe: {jaccard:.5f}")
    ok = all(c["ok"] for c in checks)
    ours, baseline = args.rows / ours_s, args.rows / base_s
    report = {
        "metric": "bunny_select_rows_per_s",
        "ours": round(ours, 1),
        "baseline": round(baseline, 1),
        "ratio": round(ours / baseline, 4),
        "n": args.rows,
        "unit": "rows/s",
        "fractions_within_error": ok,
        "jaccard_vs_exact": round(jaccard, 6),
        "funnel": [{k: c[k] for k in ("rule", "in", "dropped", "out")} for c in checks],
    }
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
