"""Candidate pairs for the near-duplicate methods of `dedup`, as Spark DataFrames.

Every function takes the items of one method with an `is_new` flag and returns the
verified edges `(a, b, similarity)` that involve at least one new item; the caller
adds the edges of groups already in the lake and runs connected components. Nothing
here compares all pairs:

* identical sketches (same MinHash signature, same pHash) are collapsed first and
  linked to their smallest uid, so exact copies never reach the buckets;
* MinHash: one row per (band, band hash); buckets of at most `bucket_limit` members
  give all their pairs, larger buckets (stock phrases) link each member to the
  bucket's leader and to its neighbour in signature order, so the work stays linear
  (incrementally: each new member to the leader and its neighbours; the old links
  stay, so a large bucket may be linked a little differently from a full run's);
* pHash: 4 bands of 16 bits; each band value is also emitted with every flip of up to
  `distance // 4` bits, so by pigeonhole every pair within the distance meets in some
  band; candidates are verified with a popcount. With crops on, each image's window
  hashes take part too, each meeting only whole-frame hashes.
"""

from __future__ import annotations

import hashlib
from functools import partial

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from lakecurate.curation.dedup.components import cut_lineage
from lakecurate.udfs import minhash as mh
from lakecurate.udfs import phash as ph
from lakecurate.udfs import phash_probe as probe
from lakecurate.udfs import semantic as sem

EDGE_COLUMNS = ("a", "b", "similarity")
EDGE_SCHEMA = "a string, b string, similarity float"
BROADCAST_KEYS = 2_000_000  # new MinHash band keys up to which they are broadcast
PROBE_NEW_LIMIT = 20_000  # new pHash images up to which the lake streams past an index of them


def collapse_identical(items: DataFrame, *values: str) -> tuple[DataFrame, DataFrame]:
    """(representatives, edges): one item per distinct `values` (not null), the rest
    linked to it."""
    reps = items.groupBy(*values).agg(
        F.min("uid").alias("rep"), F.max(F.col("is_new").cast("int")).alias("any_new")
    )
    edges = (
        items.join(reps.filter(F.col("any_new") == 1), list(values))
        .filter(F.col("uid") != F.col("rep"))
        .select(F.col("rep").alias("a"), F.col("uid").alias("b"), F.lit(1.0).alias("similarity"))
    )
    rep_items = reps.select(
        F.col("rep").alias("uid"), *values, (F.col("any_new") == 1).alias("is_new")
    )
    return rep_items, edges


def bucket_pairs(rows: DataFrame, keys: list[str], order: str, limit: int) -> DataFrame:
    """Candidate (a, b) with a < b from rows sharing `keys`; linear for large buckets."""
    w = Window.partitionBy(*keys)
    rows = (
        rows.withColumn("size", F.count("*").over(w))
        .withColumn("bucket_new", F.max(F.col("is_new").cast("int")).over(w))
        .filter((F.col("size") > 1) & (F.col("bucket_new") == 1))
    )
    small = rows.filter(F.col("size") <= limit).select(*keys, "uid", "is_new")
    x, y = small.alias("x"), small.alias("y")
    pairs = (
        x.join(y, keys)
        .filter((F.col("x.uid") < F.col("y.uid")) & (F.col("x.is_new") | F.col("y.is_new")))
        .select(F.col("x.uid").alias("a"), F.col("y.uid").alias("b"))
    )
    large = rows.filter(F.col("size") > limit)
    ordered = Window.partitionBy(*keys).orderBy(order, "uid")
    large = (
        large.withColumn("leader", F.first("uid").over(ordered))
        .withColumn("leader_new", F.first("is_new").over(ordered))
        .withColumn("prev", F.lag("uid").over(ordered))
        .withColumn("prev_new", F.lag("is_new").over(ordered))
    )
    # only links that touch a new item: the old ones are in the groups already
    star = large.filter(
        (F.col("uid") != F.col("leader")) & (F.col("is_new") | F.col("leader_new"))
    ).select(F.col("leader").alias("x"), F.col("uid").alias("y"))
    chain = large.filter(F.col("prev").isNotNull() & (F.col("is_new") | F.col("prev_new"))).select(
        F.col("prev").alias("x"), F.col("uid").alias("y")
    )
    linear = star.unionByName(chain).select(
        F.least("x", "y").alias("a"), F.greatest("x", "y").alias("b")
    )
    return pairs.unionByName(linear).distinct()


# --- MinHash ----------------------------------------------------------------------------


def band_rows(reps: DataFrame, params: mh.MinHashParams) -> DataFrame:
    """reps (uid, signature, is_new) -> one row per (uid, band, bucket) with `order`.

    Computed in the JVM (no Python worker): the bucket is xxhash64 of the band's bytes
    of the little-endian signature, and `order` (its first two slots) sorts a large
    bucket so that neighbours tend to be similar without shuffling whole signatures.
    """
    b, r = params.band_rows
    width = 4 * r
    band = [
        F.struct(
            F.lit(i).alias("band"),
            F.xxhash64(F.substring("signature", 1 + i * width, width)).alias("bucket"),
        )
        for i in range(b)
    ]
    return reps.select(
        "uid",
        "is_new",
        F.substring("signature", 1, 8).alias("order"),
        F.explode(F.array(*band)).alias("bb"),
    ).select("uid", "bb.band", "bb.bucket", "order", "is_new")


def minhash_edges(
    items: DataFrame, params: mh.MinHashParams, limit: int, full: bool = True
) -> DataFrame:
    """items (uid, signature, is_new) -> verified edges with estimated Jaccard.

    Unless `full` (every item new), only the buckets that hold a new item are paired,
    and only pairs with a new item are made: in a large bucket, a new item is linked to
    the bucket's leader and to its neighbours in signature order. The new items' band
    keys are few, so they are broadcast and the lake's band rows filtered by them
    before any shuffle; the touched rows are materialized once (the pairing reads
    them three times).
    """
    reps, same = collapse_identical(items, "signature")
    keys = ["band", "bucket"]
    if full:
        bands = band_rows(reps, params)
    else:
        reps = cut_lineage(reps)
        bands = band_rows(reps, params)
        new_keys = cut_lineage(bands.filter("is_new").select(*keys).distinct())
        if new_keys.count() <= BROADCAST_KEYS:  # a nightly increment, not a bulk load
            new_keys = F.broadcast(new_keys)
        bands = cut_lineage(bands.join(new_keys, keys, "left_semi"))
    cand = bucket_pairs(bands, keys, "order", limit)
    sigs = reps.select("uid", "signature")
    joined = cand.join(sigs.toDF("a", "sig_a"), "a").join(sigs.toDF("b", "sig_b"), "b")
    scored = joined.select("a", "b", "sig_a", "sig_b").mapInArrow(
        partial(mh.jaccard_batches, params=params), EDGE_SCHEMA
    )
    verified = scored.filter(F.col("similarity") >= params.threshold)
    return same.unionByName(verified)


# --- pHash ------------------------------------------------------------------------------

PHASH_BANDS = probe.BANDS  # the bands and flips are those of the refresh's probe
PHASH_BAND_BITS = probe.BAND_BITS


def hash_rows(items: DataFrame, crops: bool) -> DataFrame:
    """items (uid, phash, is_new[, phash_windows]) -> (uid, kind, hash, is_new): kind 0
    the whole-frame pHash; with `crops`, kind k the k-th window hash (`phash.WINDOWS`) of
    rows whose windows are there."""
    whole = F.struct(F.lit(0).alias("kind"), F.col("phash").alias("hash"))
    hashes = F.array(whole)
    if crops:
        windows = [
            F.struct(
                F.lit(k + 1).alias("kind"),
                F.conv(F.hex(F.substring("phash_windows", 1 + 8 * k, 8)), 16, -10)
                .cast("long")
                .alias("hash"),
            )
            for k in range(len(ph.WINDOWS))
        ]
        hashes = F.when(
            F.length("phash_windows") == ph.WINDOW_BYTES, F.array(whole, *windows)
        ).otherwise(hashes)
    return items.select("uid", "is_new", F.explode(hashes).alias("h")).select(
        "uid", "h.kind", "h.hash", "is_new"
    )


def _band_values(df: DataFrame) -> DataFrame:
    bands = [
        F.struct(
            F.lit(k).alias("band"),
            F.shiftrightunsigned("hash", k * PHASH_BAND_BITS).bitwiseAND(0xFFFF).alias("value"),
        )
        for k in range(PHASH_BANDS)
    ]
    return df.select(
        "uid", "kind", "hash", "is_new", F.explode(F.array(*bands)).alias("bv")
    ).select("uid", "kind", "hash", "is_new", "bv.band", "bv.value")


def phash_edges(items: DataFrame, max_distance: int, crops: bool = False) -> DataFrame:
    """items (uid, phash, is_new[, phash_windows]) -> verified edges with similarity
    1 - distance / 64.

    The distance of a pair is that of their whole-frame pHashes or, with `crops`, the
    fewest bits between a window hash of one and the whole-frame hash of the other (a
    crop or a border: `phash.WINDOWS`). Only new items probe (old pairs are not looked
    at): a new whole frame meets every hash within the distance, a new window the old
    whole frames (the flips are symmetric).
    """
    if crops:  # identical when the whole frame and every window hash are: a representative
        # then stands for its class's windows too (collapsing by the whole frame alone
        # lost the windows of the others, and with them crops of those pictures)
        items = items.withColumn("phash_windows", F.coalesce("phash_windows", F.lit(b"")))
        reps, same = collapse_identical(items, "phash", "phash_windows")
    else:
        reps, same = collapse_identical(items, "phash")
    keys = _band_values(hash_rows(reps, crops))
    # A pair needs a whole-frame hash W on one side (a window against a window is no
    # match) and a new item on one side. Where W is new, W's flips probe every key of
    # any kind; where W is old, the new item's window flips probe the old whole-frame
    # keys. So window hashes are flipped only for new items and only meet old whole
    # frames: a full run flips whole frames alone, 1/16 of the probe rows that flipping
    # every hash made (at 200k pairs those ran a full run out of memory).
    new = keys.filter("is_new")
    candidates = _probe_join(keys, _flips(new.filter("kind = 0"), max_distance))
    candidates = candidates.unionByName(
        _probe_join(
            keys.filter("kind = 0 AND NOT is_new"),
            _flips(new.filter("kind > 0"), max_distance),
        )
    )
    dist = F.bit_count(F.col("x_hash").bitwiseXOR(F.col("y_hash")))
    verified = (
        candidates.filter((F.col("x_uid") != F.col("y_uid")) & (dist <= max_distance))
        .select(
            F.least("x_uid", "y_uid").alias("a"),
            F.greatest("x_uid", "y_uid").alias("b"),
            (1 - dist / 64.0).cast("float").alias("similarity"),
        )
        .groupBy("a", "b")
        .agg(F.max("similarity").alias("similarity"))
    )
    return same.unionByName(verified)


def phash_new_edges(hashes: DataFrame, new: list, max_distance: int) -> DataFrame:
    """hashes (uid, phash, phash_windows) of the lake, `new` rows of the same columns
    (at most `PROBE_NEW_LIMIT`) -> the verified edges `phash_edges` would give for them.

    No shuffle of the lake: each Python worker indexes the new hashes once and the
    lake's rows stream past it in their partitions (`udfs/phash_probe.py`); only the
    edges are shuffled, to drop the pairs of two new images found from both sides.
    """
    rows = [(r["uid"], r["phash"], r["phash_windows"]) for r in new]
    token = hashlib.sha256(repr(sorted(rows)).encode()).hexdigest()[:16]
    fn = partial(probe.probe_batches, rows=rows, max_distance=max_distance, token=token)
    edges = hashes.select("uid", "phash", "phash_windows").mapInArrow(fn, EDGE_SCHEMA)
    return edges.groupBy("a", "b").agg(F.max("similarity").alias("similarity"))


def _flips(keys: DataFrame, max_distance: int) -> DataFrame:
    """Every band value within `max_distance // PHASH_BANDS` bits of each key's: by the
    pigeonhole principle a hash within `max_distance` bits matches one band that close."""
    masks = F.array(*[F.lit(int(m)) for m in probe.flip_masks(max_distance // PHASH_BANDS)])
    return keys.select(
        "uid", "kind", "hash", "band", F.explode(masks).alias("mask"), "value"
    ).select("uid", "kind", "hash", "band", F.col("value").bitwiseXOR(F.col("mask")).alias("value"))


def _probe_join(keys: DataFrame, probes: DataFrame) -> DataFrame:
    """(x_uid, x_hash, y_uid, y_hash) of keys and probes sharing a band value."""
    # probes are up to (1 + 16 + 120) per band of every new hash: never broadcast them
    # (the planner's size estimate of an explode ignores the fan-out)
    x, y = keys.alias("x"), probes.hint("merge").alias("y")
    return x.join(y, ["band", "value"]).select(
        F.col("x.uid").alias("x_uid"),
        F.col("x.hash").alias("x_hash"),
        F.col("y.uid").alias("y_uid"),
        F.col("y.hash").alias("y_hash"),
    )


# --- semantic (SemDeDup) ------------------------------------------------------------------


def semantic_clusters(emb: DataFrame, n: int, dcfg) -> tuple[DataFrame, np.ndarray]:
    """emb (uid, image_emb) -> (uid, image_emb, semantic_cluster, centroid_sim), centroids.

    k-means is fitted on the driver over a seeded sample of at most `semantic_sample`
    embeddings and applied to every row in Spark.
    """
    k = dcfg.semantic_clusters or max(1, round((n / 2) ** 0.5))
    frac = min(1.0, 1.2 * dcfg.semantic_sample / max(n, 1))
    rows = (
        emb.sample(fraction=frac, seed=dcfg.seed).orderBy("uid").limit(dcfg.semantic_sample)
        if frac < 1.0
        else emb.orderBy("uid")
    ).collect()
    x = np.asarray([r["image_emb"] for r in rows], dtype=np.float32)
    centroids = sem.fit_kmeans(x, k, dcfg.semantic_iterations, dcfg.seed)
    return assign_clusters(emb, centroids), centroids


def assign_clusters(emb: DataFrame, centroids: np.ndarray) -> DataFrame:
    """emb (uid, image_emb) -> (uid, image_emb, semantic_cluster, centroid_sim)."""
    schema = "uid string, image_emb array<float>, semantic_cluster int, centroid_sim float"
    return emb.mapInArrow(partial(sem.assign_batches, centroids=centroids), schema)


def semantic_edges(assigned: DataFrame, dcfg) -> DataFrame:
    """Pairs with cosine >= 1 - eps inside each cluster, in blocks of `semantic_block`.

    A cluster of c members is cut into ceil(c / block) chunks by uid order and every
    pair of chunks is one task, so no task holds more than 2 * block embeddings.
    """
    block = dcfg.semantic_block
    w = Window.partitionBy("semantic_cluster")
    chunked = assigned.withColumn(
        "chunk", ((F.row_number().over(w.orderBy("uid")) - 1) / block).cast("int")
    ).withColumn("chunks", F.ceil(F.count("*").over(w) / block).cast("int"))
    other = F.explode(F.sequence(F.lit(0), F.col("chunks") - 1)).alias("other")
    spread = chunked.select("semantic_cluster", "chunk", "uid", "image_emb", other).select(
        "semantic_cluster",
        F.least("chunk", "other").alias("lo"),
        F.greatest("chunk", "other").alias("hi"),
        "chunk",
        "uid",
        "image_emb",
    )
    min_cos = 1.0 - dcfg.semantic_eps
    return spread.groupBy("semantic_cluster", "lo", "hi").applyInPandas(
        sem.block_pairs_fn(min_cos), EDGE_SCHEMA
    )


def semantic_new_edges(members: DataFrame, dcfg) -> DataFrame:
    """Pairs with cosine >= 1 - eps between new members and any member of their cluster.

    members (uid, image_emb, semantic_cluster, is_new) hold only the clusters of new
    uids. The new members of a cluster are cut into probe chunks and all its members
    into base chunks of `semantic_block`; each (probe chunk, base chunk) is one task,
    so the work is new x cluster size and no task holds more than 2 * block embeddings.
    """
    block = dcfg.semantic_block
    w = Window.partitionBy("semantic_cluster")
    chunk = lambda: ((F.row_number().over(w.orderBy("uid")) - 1) / block).cast("int")  # noqa: E731
    count = lambda: F.ceil(F.count("*").over(w) / block).cast("int")  # noqa: E731
    probe = members.filter("is_new").withColumn("pc", chunk()).withColumn("np", count())
    base = members.withColumn("bc", chunk()).withColumn("nb", count())
    sizes = probe.select("semantic_cluster", "np").distinct()
    nbs = base.select("semantic_cluster", "nb").distinct()
    cols = ("semantic_cluster", "pc", "bc", "uid", "image_emb", "is_new", "probe")
    every = lambda c: F.explode(F.sequence(F.lit(0), F.col(c) - 1))  # noqa: E731
    probes = probe.join(nbs, "semantic_cluster").select(
        *cols[:2], every("nb").alias("bc"), *cols[3:6], F.lit(True).alias("probe")
    )
    bases = base.join(sizes, "semantic_cluster").select(
        "semantic_cluster", every("np").alias("pc"), *cols[2:6], F.lit(False).alias("probe")
    )
    min_cos = 1.0 - dcfg.semantic_eps
    return (
        probes.unionByName(bases)
        .groupBy("semantic_cluster", "pc", "bc")
        .applyInPandas(sem.probe_pairs_fn(min_cos), EDGE_SCHEMA)
    )
