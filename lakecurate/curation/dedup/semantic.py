"""Semantic dedup (SemDeDup): a k-means fit, or new embeddings assigned to the last fit.

* **refit** (first run, clustering configuration or model changed, eps or keep policy
  changed, the lake grew by more than `dedup.semantic_refit_growth` of the embeddings
  at the last fit, or an interrupted refit): k-means on a sample, every embedding
  assigned, all pairs within each cluster compared, all semantic rows of `duplicates`,
  the cluster columns of every `signals` row and the semantic `dedup_index` replaced.
  The centroids are stored in `semantic_centroids` first.
* **assign** (otherwise): only uids without a semantic `dedup_index` row of the current
  fit are assigned to the nearest stored centroid and compared with the members (old
  and new) of their cluster; their edges grow the existing groups (`dedup_groups`),
  only their `signals` rows get cluster columns, and they are appended to the index.

The index, written last, is the completion marker; its slug names the fit
(`..._f<fit_id>`), so rows assigned to another fit (e.g. a refit cut short) make the
next run refit. Between refits the clusters do not move: an increment is judged
against the clusters of the last fit, which the same fit on the same lake would give.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakecurate.curation.dedup import near
from lakecurate.curation.dedup.groups import (
    DedupRun,
    Keeping,
    index_frame,
    index_rows,
    record_index,
    write_groups,
)
from lakecurate.curation.models import model_id
from lakecurate.deltaio.keyed import replace_rows
from lakecurate.deltaio.lake import fingerprint
from lakecurate.runtime.errors import JobError
from lakecurate.schemas import TABLES

METHOD = "semantic"
CENTROIDS = "semantic_centroids"
CLUSTER_COLUMNS = ("semantic_cluster", "centroid_sim")

_POLICY: dict[str, Callable[[int], Column]] = {
    "hard": lambda seed: F.col("centroid_sim").asc_nulls_last(),
    "easy": lambda seed: F.col("centroid_sim").desc_nulls_last(),
    "random": lambda seed: F.xxhash64("uid", F.lit(seed)).asc(),
}


log = logging.getLogger(__name__)


def fit_slug(dcfg, mid: str) -> str:
    """The clustering configuration: what a fit depends on besides the lake."""
    k = dcfg.semantic_clusters or "auto"
    return f"k{k}_n{dcfg.semantic_sample}_i{dcfg.semantic_iterations}_s{dcfg.seed}_{mid}"


def verdict_slug(dcfg, mid: str, k: int, fit_id: str) -> str:
    """`duplicates`/`dedup_index` slug: fit, eps and keep policy (select reads `_eps`)."""
    return f"k{k}_eps{dcfg.semantic_eps:g}_{dcfg.semantic_keep}_s{dcfg.seed}_{mid}_f{fit_id}"


def fit_id(centroids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(centroids, np.float32).tobytes()).hexdigest()[:12]


def stored_fit(run: DedupRun, slug: str, mid: str) -> tuple[np.ndarray, str, int] | None:
    """(centroids, fit_id, fitted_rows) of the stored fit of this configuration, if any."""
    rows = (
        run.ctx.lake.read(run.spark, CENTROIDS)
        .filter((F.col("config_slug") == slug) & (F.col("model_id") == mid))
        .orderBy("cluster")
        .collect()
    )
    if not rows or len({r["fit_id"] for r in rows}) != 1:
        return None
    centroids = np.asarray([r["centroid"] for r in rows], dtype=np.float32)
    return centroids, rows[0]["fit_id"], int(rows[0]["fitted_rows"])


def write_centroids(run: DedupRun, slug: str, mid: str, centroids: np.ndarray, n: int) -> str:
    """Make this fit's centroids the model's rows of the table; return its fit id."""
    fid = fit_id(centroids)
    spec = TABLES[CENTROIDS]
    table = pa.Table.from_pylist(
        [
            {"config_slug": slug, "model_id": mid, "cluster": i, "fit_id": fid,
             "centroid": c.tolist(), "fitted_rows": n, "run_id": run.ctx.run_id}
            for i, c in enumerate(centroids)
        ],
        schema=spec.schema,
    )  # fmt: skip
    df = run.spark.createDataFrame(table.to_pandas(), spec.spark_schema())
    # one fit per model: another model's centroids stay (alternating models refit nothing)
    version, changed = run.ctx.lake.replace_where(df, CENTROIDS, "model_id", mid, run.ctx.commit)
    if changed:
        run.ctx.wrote(CENTROIDS, version)
    return fid


def semantic(run: DedupRun) -> dict[str, int]:
    d = run.cfg.dedup
    mid = model_id(run.cfg.model)
    if run.cfg.model.pretrained.lower() == "none":
        log.warning(
            "semantic dedup with model %s has RANDOM weights (--pretrained none): its "
            "clusters and similarities carry no meaning and its verdicts are not "
            "duplicates of anything; use a pretrained model before any recipe drops by it",
            mid,
        )
    emb = (
        run.ctx.read(run.spark, "embeddings")
        .filter((F.col("model_id") == mid) & F.col("image_emb").isNotNull())
        .select("uid", "image_emb")
    )
    n = emb.count()
    if n == 0:
        raise JobError(f"no image embeddings of model {mid}: run `lakecurate embed` first")
    fit = stored_fit(run, fit_slug(d, mid), mid)
    if fit is not None and n <= fit[2] * (1 + d.semantic_refit_growth):
        centroids, fid, _ = fit
        slug = verdict_slug(d, mid, len(centroids), fid)
        idx, full = index_rows(run, METHOD, slug)
        if not full:
            return assign(run, emb, centroids, slug, idx)
    return refit(run, emb, n)


def _keeping(run: DedupRun, sims: DataFrame, emb: DataFrame) -> Keeping:
    d = run.cfg.dedup
    return Keeping(
        (sims.select("uid", "centroid_sim"),),
        (_POLICY[d.semantic_keep](d.seed),),
        vectors=emb.select("uid", F.col("image_emb").alias("vector")),
        kernel="cosine",
        min_similarity=1.0 - d.semantic_eps,
    )


def refit(run: DedupRun, emb: DataFrame, n: int) -> dict[str, int]:
    """Fit k-means on the lake, compare all pairs within clusters, replace every verdict."""
    d = run.cfg.dedup
    mid = model_id(run.cfg.model)
    assigned, centroids = near.semantic_clusters(emb, n, d)
    assigned = assigned.persist()
    try:
        fid = write_centroids(run, fit_slug(d, mid), mid, centroids, n)
        slug = verdict_slug(d, mid, len(centroids), fid)
        edges = near.semantic_edges(assigned, d)
        keeping = _keeping(run, assigned, assigned)
        write_groups(run, METHOD, slug, edges, True, keeping)
        write_all_signals(run, assigned)
        record_index(run, METHOD, index_frame(run, assigned, METHOD, slug), True)
        return {"semantic_clusters": len(centroids), "semantic_refit": 1,
                "semantic_assigned": n}  # fmt: skip
    finally:
        assigned.unpersist()


def assign(run: DedupRun, emb, centroids: np.ndarray, slug: str, idx) -> dict[str, int]:
    """Assign the uids missing from the index to the stored fit and grow the groups."""
    d = run.cfg.dedup
    known = idx.select("uid")
    fresh = near.assign_clusters(emb.join(known, "uid", "left_anti"), centroids)
    fresh = run.cache(fresh.withColumn("is_new", F.lit(True)))
    clusters = fresh.select("semantic_cluster").distinct()
    old = (
        run.signals.select("uid", *CLUSTER_COLUMNS)
        .join(known, "uid", "left_semi")
        .filter(F.col("semantic_cluster").isNotNull())
    )
    peers = old.join(clusters, "semantic_cluster", "left_semi").join(emb, "uid")
    members = fresh.unionByName(
        peers.select("uid", "image_emb", *CLUSTER_COLUMNS, F.lit(False).alias("is_new"))
    )
    edges = near.semantic_new_edges(members, d)
    sims = old.select("uid", "centroid_sim").unionByName(fresh.select("uid", "centroid_sim"))
    write_groups(run, METHOD, slug, edges, False, _keeping(run, sims, emb))
    added = write_new_signals(run, fresh)
    record_index(run, METHOD, index_frame(run, fresh, METHOD, slug), False)
    return {"semantic_clusters": len(centroids), "semantic_refit": 0,
            "semantic_assigned": added}  # fmt: skip


def _with_clusters(rows: DataFrame, assigned: DataFrame) -> DataFrame:
    spec = TABLES["signals"]
    cols = assigned.select("uid", *CLUSTER_COLUMNS)
    return rows.drop(*CLUSTER_COLUMNS).join(cols, "uid", "left").select(*spec.columns)


def write_all_signals(run: DedupRun, assigned: DataFrame) -> None:
    """Rewrite every signals row with this fit's cluster columns (one commit if changed)."""
    spec = TABLES["signals"]
    lake = run.ctx.lake
    current = lake.read(run.spark, "signals")
    fresh = _with_clusters(current, assigned).persist()
    try:
        if fingerprint(fresh, spec) == fingerprint(current, spec):
            return
        run.ctx.wrote("signals", lake.write(fresh, "signals", run.ctx.commit, mode="overwrite"))
    finally:
        fresh.unpersist()


def write_new_signals(run: DedupRun, fresh: DataFrame) -> int:
    """Set the cluster columns of the newly assigned uids' signals rows; return how many."""
    rows = _with_clusters(run.signals.join(fresh, "uid", "left_semi"), fresh).persist()
    try:
        n = rows.count()
        if n:
            run.ctx.wrote(
                "signals",
                replace_rows(
                    run.spark, run.ctx.lake, run.ctx.commit, "signals", rows, rows.select("uid")
                ),
            )
        return n
    finally:
        rows.unpersist()
