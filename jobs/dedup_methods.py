"""The methods of `dedup`: each turns the lake's rows into `duplicates` rows.

`METHODS` maps a `duplicates` method name to a function `(DedupRun) -> counts`. The
exact methods group by a hash column over the whole lake (linear). pHash and MinHash
are incremental through `dedup_index` (see `jobs/dedup.py`); semantic re-clusters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from lakecurate.jobs import dedup_near as near
from lakecurate.schemas import TABLES
from lakecurate.udfs import minhash as mh
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from lakecurate.components import connected_components
from lakecurate.config import Config
from lakecurate.errors import JobError
from lakecurate.jobkit import JobContext
from lakecurate.lake import fingerprint
from lakecurate.models import model_id


@dataclass
class DedupRun:
    """What every method reads: the session, the job context and the lake's rows."""

    spark: object
    ctx: JobContext
    cfg: Config
    pairs: DataFrame  # uid, image_sha256, caption
    signals: DataFrame  # every uid's signals row
    ranks: DataFrame  # uid, resolution, clip_score

    def existing(self, method: str) -> DataFrame:
        """The method's current `duplicates` rows."""
        return self.ctx.lake.read(self.spark, "duplicates").filter(F.col("method") == method)


_ORDER: dict[str, Callable[[], Column]] = {
    "clip_score": lambda: F.col("clip_score").desc_nulls_last(),
    "resolution": lambda: F.col("resolution").desc_nulls_last(),
    "uid": lambda: F.col("uid").asc(),
}


def keeper_order(cfg: Config, first: tuple[Column, ...] = ()) -> list[Column]:
    """The configured keeper ranking; uid last so that every group has one keeper."""
    return [*first, *(_ORDER[k]() for k in cfg.dedup.keeper), F.col("uid").asc()]


def finalize(
    run: DedupRun,
    method: str,
    slug: str,
    members: DataFrame,
    similarity: Callable[[DataFrame], DataFrame],
    ranks: DataFrame | None = None,
    first: tuple[Column, ...] = (),
) -> DataFrame:
    """members (uid, group_id) -> `duplicates` rows with keeper and similarity to it."""
    w = Window.partitionBy("group_id").orderBy(*keeper_order(run.cfg, first))
    ranked = members.join(ranks if ranks is not None else run.ranks, "uid", "left")
    keyed = ranked.select("uid", "group_id", F.first("uid").over(w).alias("keeper_uid"))
    sims = similarity(keyed.select("uid", "keeper_uid"))
    return keyed.join(sims, "uid", "left").select(
        "uid",
        F.lit(method).alias("method"),
        "group_id",
        "keeper_uid",
        F.when(F.col("uid") == F.col("keeper_uid"), F.lit(1.0))
        .otherwise(F.col("similarity"))
        .cast("float")
        .alias("similarity"),
        F.lit(slug).alias("config_slug"),
        F.lit(run.ctx.run_id).alias("run_id"),
    )


def write_method(run: DedupRun, method: str, rows: DataFrame) -> dict[str, int]:
    """Replace the method's `duplicates` rows; return its group and duplicate counts."""
    rows = rows.persist()
    try:
        version, changed = run.ctx.lake.replace_where(
            rows, "duplicates", "method", method, run.ctx.commit
        )
        if changed:
            run.ctx.wrote("duplicates", version)
        c = rows.agg(
            F.countDistinct("group_id").alias("groups"),
            F.sum((F.col("uid") != F.col("keeper_uid")).cast("int")).alias("dups"),
        ).first()
        return {f"{method}_groups": int(c["groups"]), f"{method}_duplicates": int(c["dups"] or 0)}
    finally:
        rows.unpersist()


# --- exact ------------------------------------------------------------------------------


def _hash_groups(rows: DataFrame, column: str, method: str) -> DataFrame:
    """(uid, group_id) for rows sharing a non-null `column` value with another row."""
    rows = rows.filter(F.col(column).isNotNull())
    shared = rows.groupBy(column).count().filter(F.col("count") > 1).select(column)
    return rows.join(shared, column).select(
        "uid", F.concat(F.lit(f"{method}:"), F.substring(column, 1, 32)).alias("group_id")
    )


def _identical(members: DataFrame) -> DataFrame:
    return members.select("uid", F.lit(1.0).cast("float").alias("similarity"))


def exact_images(run: DedupRun) -> dict[str, int]:
    members = _hash_groups(run.pairs.select("uid", "image_sha256"), "image_sha256", "exact")
    rows = finalize(run, "exact", "sha256", members, _identical)
    return write_method(run, "exact", rows)


def exact_captions(run: DedupRun) -> dict[str, int]:
    sig = run.signals.select("uid", "caption_sha256")
    members = _hash_groups(sig, "caption_sha256", "exact_caption")
    rows = finalize(run, "exact_caption", "normalized_sha256", members, _identical)
    return write_method(run, "exact_caption", rows)


# --- incremental near-duplicate methods ---------------------------------------------------


def index_rows(run: DedupRun, method: str, slug: str) -> tuple[DataFrame, bool]:
    """(rows of uids already matched under `slug`, whether everything must be re-matched)."""
    idx = run.ctx.lake.read(run.spark, "dedup_index").filter(F.col("method") == method)
    other = F.col("config_slug") != slug
    stale = (
        idx.select("config_slug")
        .filter(other)
        .unionByName(run.existing(method).select("config_slug").filter(other))
    )
    if not stale.isEmpty():
        return idx.limit(0), True
    return idx, False


def grouped(run: DedupRun, method: str, edges: DataFrame, full: bool) -> DataFrame:
    """Connected components of the new edges plus the existing groups' edges."""
    pairs = edges.select("a", "b")
    if not full:
        old = run.existing(method).filter(F.col("uid") != F.col("keeper_uid"))
        pairs = pairs.unionByName(
            old.select(F.col("keeper_uid").alias("a"), F.col("uid").alias("b"))
        )
    comps = connected_components(pairs, "a", "b")
    return comps.select(
        F.col("node").alias("uid"), F.concat(F.lit(f"{method}:"), F.col("root")).alias("group_id")
    )


def record_index(run: DedupRun, method: str, rows: DataFrame, full: bool) -> None:
    """Mark uids as matched (after their duplicates are written)."""
    lake, commit = run.ctx.lake, run.ctx.commit
    if full:
        version, changed = lake.replace_where(rows, "dedup_index", "method", method, commit)
    else:
        version, changed = lake.append_new(rows, "dedup_index", commit)
    if changed:
        run.ctx.wrote("dedup_index", version)


def _index_frame(run: DedupRun, df: DataFrame, method: str, slug: str, sig=None) -> DataFrame:
    return df.select(
        "uid",
        F.lit(method).alias("method"),
        F.lit(slug).alias("config_slug"),
        (sig if sig is not None else F.lit(None).cast("binary")).alias("signature"),
        F.lit(run.ctx.run_id).alias("run_id"),
    )


def minhash_params(cfg: Config) -> mh.MinHashParams:
    d = cfg.dedup
    return mh.MinHashParams(
        num_perm=d.minhash_num_perm,
        seed=d.minhash_seed,
        shingle=d.minhash_shingle,
        ngram=d.minhash_ngram,
        bands=d.minhash_bands,
        rows=d.minhash_rows,
        threshold=d.minhash_threshold,
        fn_weight=d.minhash_fn_weight,
    )


def minhash_slug(p: mh.MinHashParams) -> str:
    b, r = p.band_rows
    return f"{p.slug}_b{b}r{r}_t{p.threshold:g}"


def caption_minhash(run: DedupRun) -> dict[str, int]:
    params = minhash_params(run.cfg)
    slug = minhash_slug(params)
    idx, full = index_rows(run, "minhash", slug)
    known = idx.select("uid", "signature")
    todo = run.pairs.select("uid", "caption").join(known, "uid", "left_anti")
    fresh = todo.mapInArrow(
        partial(mh.signature_batches, params=params), "uid string, signature binary"
    ).persist()
    try:
        # a caption with no text has the empty signature: it is nobody's near-duplicate
        empty = F.lit(bytes(b"\xff" * 4 * params.num_perm))
        items = (
            known.withColumn("is_new", F.lit(False))
            .unionByName(fresh.withColumn("is_new", F.lit(True)))
            .filter(F.col("signature") != empty)
        )
        counts = _near_method(
            run,
            "minhash",
            slug,
            items,
            full,
            lambda it: near.minhash_edges(it, params, run.cfg.dedup.bucket_limit),
            lambda m: near.minhash_similarity(m, items.select("uid", "signature"), params),
        )
        record_index(
            run,
            "minhash",
            _index_frame(run, fresh, "minhash", slug, F.col("signature")),
            full,
        )
        return counts
    finally:
        fresh.unpersist()


def perceptual(run: DedupRun) -> dict[str, int]:
    d = run.cfg.dedup.phash_max_distance
    slug = f"phash64_d{d}"
    idx, full = index_rows(run, "phash", slug)
    hashes = run.signals.filter(F.col("phash").isNotNull()).select("uid", "phash")
    known = idx.select("uid", F.lit(False).alias("is_new"))
    items = hashes.join(known, "uid", "left").fillna(True, ["is_new"])
    counts = _near_method(
        run,
        "phash",
        slug,
        items,
        full,
        lambda it: near.phash_edges(it, d),
        lambda m: near.phash_similarity(m, hashes),
    )
    record_index(run, "phash", _index_frame(run, items.filter("is_new"), "phash", slug), full)
    return counts


def _near_method(run, method, slug, items, full, edges_fn, similarity) -> dict[str, int]:
    """Match new items against all, merge with existing groups, write duplicates."""
    if items.filter("is_new").isEmpty() and not full:
        # nothing new: keep the groups, but re-rank keepers (clip scores may have arrived)
        members = run.existing(method).select("uid", "group_id")
    else:
        members = grouped(run, method, edges_fn(items), full)
    rows = finalize(run, method, slug, members, similarity)
    return write_method(run, method, rows)


def write_semantic_signals(run: DedupRun, assigned: DataFrame) -> None:
    """Rewrite every signals row with this run's cluster columns (one commit if changed)."""
    spec = TABLES["signals"]
    lake = run.ctx.lake
    current = lake.read(run.spark, "signals")
    cols = ("semantic_cluster", "centroid_sim")
    fresh = (
        current.drop(*cols)
        .join(assigned.select("uid", *cols), "uid", "left")
        .select(*spec.columns)
        .persist()
    )
    try:
        if fingerprint(fresh, spec) == fingerprint(current, spec):
            return
        run.ctx.wrote("signals", lake.write(fresh, "signals", run.ctx.commit, mode="overwrite"))
    finally:
        fresh.unpersist()


# --- semantic ---------------------------------------------------------------------------

_POLICY: dict[str, Callable[[int], Column]] = {
    "hard": lambda seed: F.col("centroid_sim").asc_nulls_last(),
    "easy": lambda seed: F.col("centroid_sim").desc_nulls_last(),
    "random": lambda seed: F.xxhash64("uid", F.lit(seed)).asc(),
}


def semantic(run: DedupRun) -> dict[str, int]:
    d = run.cfg.dedup
    mid = model_id(run.cfg.model)
    emb = (
        run.ctx.read(run.spark, "embeddings")
        .filter((F.col("model_id") == mid) & F.col("image_emb").isNotNull())
        .select("uid", "image_emb")
    )
    n = emb.count()
    if n == 0:
        raise JobError(f"no image embeddings of model {mid}: run `lakecurate embed` first")
    assigned, k = near.semantic_clusters(emb, n, d)
    assigned = assigned.persist()
    try:
        slug = f"k{k}_eps{d.semantic_eps:g}_{d.semantic_keep}_s{d.seed}_{mid}"
        members = grouped(run, "semantic", near.semantic_edges(assigned, d), full=True)
        ranks = run.ranks.join(assigned.select("uid", "centroid_sim"), "uid", "left")
        rows = finalize(
            run,
            "semantic",
            slug,
            members,
            lambda m: near.cosine_similarity(m, assigned),
            ranks,
            (_POLICY[d.semantic_keep](d.seed),),
        )
        counts = write_method(run, "semantic", rows)
        write_semantic_signals(run, assigned)
        return {**counts, "semantic_clusters": k}
    finally:
        assigned.unpersist()


METHODS: dict[str, Callable[[DedupRun], dict[str, int]]] = {
    "exact": exact_images,
    "exact_caption": exact_captions,
    "phash": perceptual,
    "minhash": caption_minhash,
    "semantic": semantic,
}
