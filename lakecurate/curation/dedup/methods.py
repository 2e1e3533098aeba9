"""The methods of `dedup`: each turns the lake's rows into `duplicates` rows.

`METHODS` maps a `duplicates` method name to a function `(DedupRun) -> counts` (extra
counts only: every method's group and duplicate counts come from `method_counts`). Every
method is incremental through `dedup_index` (see `jobs/dedup.py`): a run matches the
uids missing from the index, rebuilds only the groups they touch
(`lakecurate/curation/dedup/groups.py`) and then records them in the index. Semantic dedup lives in
`lakecurate/curation/dedup/semantic.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakecurate.curation.dedup import near
from lakecurate.curation.dedup import semantic as dedup_semantic
from lakecurate.curation.dedup.components import cut_lineage
from lakecurate.curation.dedup.groups import (
    DedupRun,
    Keeping,
    index_frame,
    index_rows,
    merge_groups,
    record_index,
    write_groups,
    write_mode,
)
from lakecurate.curation.dedup.near import EDGE_SCHEMA
from lakecurate.deltaio.keyed import BROADCAST_UIDS
from lakecurate.runtime.config import Config
from lakecurate.udfs import keepers as kp
from lakecurate.udfs import minhash as mh
from lakecurate.udfs import phash as ph
from lakecurate.udfs import registration as reg

# --- exact ------------------------------------------------------------------------------


def _hash_groups(rows: DataFrame, column: str, method: str) -> DataFrame:
    """(uid, group_id) for rows sharing a non-null `column` value with another row."""
    rows = rows.filter(F.col(column).isNotNull())
    shared = rows.groupBy(column).count().filter(F.col("count") > 1).select(column)
    return rows.join(shared, column).select(
        "uid", F.concat(F.lit(f"{method}:"), F.substring(column, 1, 32)).alias("group_id")
    )


def _exact(run: DedupRun, method: str, slug: str, rows: DataFrame, column: str):
    """Groups of rows sharing `column`; incrementally only the values of new rows."""
    idx, full = index_rows(run, method, slug)
    new = run.cache(run.unmatched(rows, idx, full))
    if full:
        members = _hash_groups(rows, column, method)
    else:  # only groups holding a new row can change
        values = new.select(column).filter(F.col(column).isNotNull()).distinct()
        if new.count() <= BROADCAST_UIDS:  # a refresh: the lake's column is scanned in place
            values = F.broadcast(values)
        members = _hash_groups(rows.join(values, column, "left_semi"), column, method)
        members = cut_lineage(members)  # used twice below
    touched = members.select("group_id").distinct()
    write_mode(run, method, slug, members, touched, full)
    record_index(run, method, index_frame(run, new, method, slug), full)
    return {}


def exact_images(run: DedupRun) -> dict[str, int]:
    rows = run.pairs.select("uid", "image_sha256")
    return _exact(run, "exact", "sha256", rows, "image_sha256")


def exact_captions(run: DedupRun) -> dict[str, int]:
    rows = run.signals.select("uid", "caption_sha256")
    return _exact(run, "exact_caption", "normalized_sha256", rows, "caption_sha256")


# --- near-duplicate methods -----------------------------------------------------------------


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
    """Signature identity, banding (`xxh`: bands hashed with Spark's xxhash64) and threshold."""
    b, r = p.band_rows
    return f"{p.slug}_b{b}r{r}xxh_t{p.threshold:g}"


def caption_minhash(run: DedupRun) -> dict[str, int]:
    params = minhash_params(run.cfg)
    slug = minhash_slug(params)
    idx, full = index_rows(run, "minhash", slug)
    known = idx.select("uid", "signature")
    todo = run.unmatched(run.pairs.select("uid", "caption"), known, full)
    fresh = run.cache(
        todo.mapInArrow(
            partial(mh.signature_batches, params=params), "uid string, signature binary"
        )
    )
    # a caption with no text has the empty signature: it is nobody's near-duplicate
    empty = F.lit(bytes(b"\xff" * 4 * params.num_perm))
    items = (
        known.withColumn("is_new", F.lit(False))
        .unionByName(fresh.withColumn("is_new", F.lit(True)))
        .filter(F.col("signature") != empty)
    )
    vectors = items.select("uid", F.col("signature").alias("vector"))
    keeping = Keeping(vectors=vectors, kernel="minhash", min_similarity=params.threshold)
    if full:
        edges = near.minhash_edges(items, params, run.cfg.dedup.bucket_limit)
        write_groups(run, "minhash", slug, edges, True, keeping)
    else:
        members, touched = minhash_regroup(run, items, params)
        write_mode(run, "minhash", slug, members, touched, False, keeping)
    record_index(run, "minhash", index_frame(run, fresh, "minhash", slug, F.col("signature")), full)
    return {}


def minhash_regroup(run: DedupRun, items: DataFrame, params) -> tuple[DataFrame, DataFrame]:
    """(members, replaced group ids) of the groups new captions build or grow."""
    existing = run.existing("minhash")
    if items.filter("is_new").isEmpty():  # nothing new: no bucket changed
        return existing.select("uid", "group_id").limit(0), existing.select("group_id").limit(0)
    edges = near.minhash_edges(items, params, run.cfg.dedup.bucket_limit, full=False)
    return merge_groups("minhash", edges, existing)


def phash_vector(crops: bool) -> Column:
    """The `phash_verified` vector of a signals row: the pHash as 8 big-endian bytes, then
    the verification blob (`signals.thumb`; absent or older in rows made before this
    verification, which are never a duplicate), then, with `crops`, the window hashes
    (`signals.phash_windows`, where present and current)."""
    as_bytes = F.unhex(F.lpad(F.hex("phash"), 16, "0"))
    blob = F.when(F.length("thumb") == ph.VERIFY_BYTES, F.col("thumb")).otherwise(F.lit(b""))
    parts = [as_bytes, F.coalesce(blob, F.lit(b""))]
    if crops:
        windows = F.when(F.length("phash_windows") == ph.WINDOW_BYTES, F.col("phash_windows"))
        parts.append(F.when(F.length(blob) > 0, F.coalesce(windows, F.lit(b""))).otherwise(b""))
    return F.concat(*parts)


def phash_slug(cfg: Config) -> str:
    """The phash method's configuration slug: its distance and its verification (with
    crops: the windows and the registration)."""
    slug = f"phash64_d{cfg.dedup.phash_max_distance}_{ph.VERIFY_SLUG}"
    return f"{slug}_crops{len(ph.WINDOWS)}{reg.SLUG}" if cfg.dedup.phash_crops else slug


def perceptual(run: DedupRun) -> dict[str, int]:
    """pHash candidates within `phash_max_distance` bits (whole frames, and with
    `phash_crops` window against whole frame), each verified against its keeper with
    the colour thumbnails and grey detail images (`udfs/phash.py`; crops registered
    first, `udfs/registration.py`): distinct pictures that share a grey hash (flags,
    colour variants, skin tones, faces that differ by their mouth) are never duplicates."""
    d, crops = run.cfg.dedup.phash_max_distance, run.cfg.dedup.phash_crops
    slug = phash_slug(run.cfg)
    idx, full = index_rows(run, "phash", slug)
    signals = run.signals.filter(F.col("phash").isNotNull())
    windows = F.col("phash_windows") if crops else F.lit(None).cast("binary")
    hashes = signals.select("uid", "phash", windows.alias("phash_windows"))
    if full:
        new = hashes.select("uid")
        edges = near.phash_edges(hashes.withColumn("is_new", F.lit(True)), d, crops)
    else:
        new, edges = _new_phash_edges(run, hashes, idx, d, crops)
    keeping = Keeping(
        vectors=signals.select("uid", phash_vector(crops).alias("vector")),
        kernel="phash_verified",
        min_similarity=1 - d / 64,
    )
    if not full:  # one scan of the lake's blobs serves verification and keepers
        edges = cut_lineage(edges.select("a", "b"))
        keeping = replace(keeping, vectors=run.cache(vectors_near(run, "phash", edges, keeping)))
    edges = verified_edges(edges, keeping, few=not full)
    write_groups(run, "phash", slug, edges, full, keeping)
    record_index(run, "phash", index_frame(run, new, "phash", slug), full)
    return {}


def vectors_near(run: DedupRun, method: str, edges: DataFrame, keeping: Keeping) -> DataFrame:
    """The vectors (uid, vector) of the candidate edges' uids and of the other members
    of the method's groups they touch: all that verifying the edges and choosing the
    keepers of a refresh's groups read, picked from the lake's in one scan."""
    ends = edges.select(F.col("a").alias("uid")).union(edges.select(F.col("b").alias("uid")))
    ends = F.broadcast(ends.distinct())
    existing = run.existing(method).select("uid", "group_id")
    groups = existing.join(ends, "uid", "left_semi").select("group_id").distinct()
    members = existing.join(F.broadcast(groups), "group_id", "left_semi").select("uid")
    uids = F.broadcast(members.unionByName(ends).distinct())
    return keeping.vectors.select("uid", "vector").join(uids, "uid", "left_semi")


def verified_edges(edges: DataFrame, keeping: Keeping, few: bool) -> DataFrame:
    """The candidate edges whose pair `keeping`'s kernel verifies (`keepers.
    verify_edge_batches`), before they form groups: candidates chained by shared hashes
    alone grew a 200k generated pool's phash groups into one giant component, whose
    greedy keepers never finished. `few` (a refresh): the vectors of the edges' uids are
    picked by a broadcast of those uids, so the lake's blobs are scanned, not shuffled."""
    vectors = keeping.vectors.select("uid", "vector")
    if few:
        edges = cut_lineage(edges.select("a", "b"))
        uids = edges.select(F.col("a").alias("uid")).union(edges.select(F.col("b").alias("uid")))
        vectors = vectors.join(F.broadcast(uids.distinct()), "uid", "left_semi")
    pairs = (
        edges.select("a", "b")
        .join(vectors.toDF("a", "vector_a"), "a")
        .join(vectors.toDF("b", "vector_b"), "b")
    )
    fn = partial(
        kp.verify_edge_batches, kernel=keeping.kernel, min_similarity=keeping.min_similarity
    )
    return pairs.select("a", "b", "vector_a", "vector_b").mapInArrow(fn, EDGE_SCHEMA)


def _new_phash_edges(
    run: DedupRun, hashes: DataFrame, idx: DataFrame, d: int, crops: bool
) -> tuple[DataFrame, DataFrame]:
    """(uids not matched yet, their edges): a refresh's few new images probe the lake
    without shuffling it (`near.phash_new_edges`); a bulk load takes the band join."""
    new = run.cache(run.unmatched(hashes.select("uid"), idx, False))
    n = new.count()
    if n == 0:
        return new, run.spark.createDataFrame([], EDGE_SCHEMA)
    if n <= near.PROBE_NEW_LIMIT:
        rows = hashes.join(F.broadcast(new), "uid", "left_semi").collect()
        return new, near.phash_new_edges(hashes, rows, d)
    items = hashes.join(new.withColumn("is_new", F.lit(True)), "uid", "left")
    return new, near.phash_edges(items.fillna(False, ["is_new"]), d, crops)


METHODS: dict[str, Callable[[DedupRun], dict[str, int]]] = {
    "exact": exact_images,
    "exact_caption": exact_captions,
    "phash": perceptual,
    "minhash": caption_minhash,
    "semantic": dedup_semantic.semantic,
}
