"""Incremental layout: a new dataset version laid out from its parent version's shards.

The parent (`publish_files.find_parent`) is the newest live version of the same name
whose manifest verifies. Without one, or with `publish.incremental: false`
(`publish --full`), publish lays every shard out afresh (`publish.assign_shards`).

Given the parent, each sample of the new version is compared with the parent's
Parquet indexes (uid, caption, url, width, height, clip_score, image member; the image
bytes are fixed by the uid) and every parent shard gets one action (`decide`):

  reuse    its tar and index are hard linked (same local filesystem) or copied, never
           re-encoded. Members that are no longer selected go into the shard's
           deletion list (`shard-NNNNNN.deleted.parquet`, like Delta's deletion
           vectors); a member deleted in the parent that is selected again leaves it;
  rewrite  compaction: its deleted fraction (members of the tar the new version leaves
           out) passes `publish.compact_fraction`, or a member changed: rewritten under
           its own name from its remaining members, in their old order and with their
           old `pos`, with no deletion list;
  drop     none of its members is selected any more;
  merge    small-shard rule: a shard is small when it holds fewer than half of
           `shard_size` selected samples (and, with `shard_bytes`, fewer than half of
           those bytes). Once `max_small_shards` of the parent's surviving shards are
           small, all of them are merged into the tail, so no version holds more than
           `max_small_shards` small shards (the tail's last shard included).

The tail (merged members in their old order, then the added samples in the seeded
`sha256(seed:uid)` order) is packed into new shards numbered after the parent's
highest shard, with `pos` continuing after the parent's highest `pos`. So `pos` is
unique and increasing in shard order, a sample keeps its `pos` while its shard stays,
and the layout is a function of the pinned table versions and the parent manifest.
Images of rewritten and merged members are read back from the parent's tars (checked
against `pairs.image_sha256`); those of added samples from only the `pairs` files
that hold them (`lakecurate.deltaio.keyed.rows_for_uids`).

Positions are numbered without a global sort: the order is range partitioned, each
range is numbered in its own task, and each range's offset (rows and bytes of the
ranges before it) is added (`pack`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lakecurate.curation.publish import changes
from lakecurate.curation.publish.files import Parent, link_or_copy, open_fs
from lakecurate.deltaio.keyed import rows_for_uids
from lakecurate.deltaio.lake import Lake, read_parquet_files
from lakecurate.runtime.config import Config
from lakecurate.runtime.errors import JobError
from lakecurate.udfs import shards as shardlib

log = logging.getLogger(__name__)

REUSE, REWRITE, DROP, MERGE = "reuse", "rewrite", "drop", "merge"


# --- deciding what happens to each parent shard ---------------------------------------------


@dataclass(frozen=True)
class ShardStat:
    """A parent shard against the new selection."""

    shard: int
    old: int  # samples in the parent shard
    same: int  # still selected and unchanged
    kept: int  # still selected (unchanged or changed)
    kept_bytes: int  # estimated bytes of the kept samples (as `assign_shards` counts them)
    deleted_before: int = 0  # members in the parent's deletion list of this shard
    flips: int = 0  # members whose deletion differs between the parent and the new version
    removed: int = 0  # samples of the parent version that the new one leaves out

    @property
    def deleted(self) -> int:
        """Members of the tar the new version leaves out (reused as it is)."""
        return self.old - self.same


def is_small(kept: int, kept_bytes: int, shard_size: int, shard_bytes: int) -> bool:
    if 2 * kept >= shard_size:
        return False
    return not shard_bytes or 2 * kept_bytes < shard_bytes


def decide(
    stats: list[ShardStat],
    shard_size: int,
    shard_bytes: int,
    max_small: int,
    compact_fraction: float = 0.0,
) -> dict[int, str]:
    """shard -> reuse | rewrite | drop | merge (see the module docstring)."""
    actions = {}
    for s in stats:
        if s.kept == 0:
            actions[s.shard] = DROP
        elif s.kept > s.same or s.deleted > compact_fraction * s.old:
            actions[s.shard] = REWRITE  # a member changed, or compaction
        else:
            actions[s.shard] = REUSE
    small = [
        s.shard for s in stats if s.kept and is_small(s.kept, s.kept_bytes, shard_size, shard_bytes)
    ]
    if len(small) >= max_small:
        actions.update(dict.fromkeys(small, MERGE))
    return actions


# --- the layout in Spark --------------------------------------------------------------------


def _member_name():
    """`{uid}.{ext}` of a sample's image member, as `shardlib.sample_members` names it."""
    from pyspark.sql import functions as F

    fmt = F.lower(F.coalesce(F.col("image_format"), F.lit("jpeg")))
    ext = fmt
    for name, e in shardlib.IMAGE_EXTENSIONS.items():
        ext = F.when(fmt == name, F.lit(e)).otherwise(ext)
    return F.concat(F.col("uid"), F.lit("."), ext)


SAME_FIELDS = ("caption", "url", "width", "height", "clip_score")


def compare(spark, parent: Parent, current):
    """Every uid of the parent or the new selection: its parent shard/pos/member/bytes
    (null if added), the current columns (null if removed), and `status`."""
    from pyspark.sql import functions as F

    files = [f"{parent.uri}/{s['index']}" for s in parent.shards]
    old = read_parquet_files(spark, files, shardlib.INDEX_SCHEMA, file_column="_index_file")
    shard_no = F.regexp_extract(F.col("_index_file"), r"shard-(\d+)\.parquet$", 1)
    old = old.select(
        "uid",
        shard_no.cast("int").alias("shard"),
        F.col("pos").alias("old_pos"),
        F.col("image_member").alias("old_member"),
        F.col("image_bytes").alias("old_bytes"),
        *[F.col(c).alias(f"old_{c}") for c in SAME_FIELDS],
    )
    old = _mark_deleted(spark, parent, old)
    cur = current.withColumn("_cur", F.lit(True))
    same = F.col("old_member") == _member_name()
    for c in SAME_FIELDS:
        same = same & F.col(f"old_{c}").eqNullSafe(F.col(c))
    status = (
        F.when(F.col("shard").isNull(), F.lit("added"))
        .when(F.col("_cur").isNull(), F.lit("removed"))
        .when(same, F.lit("same"))
        .otherwise(F.lit("changed"))
    )
    return old.join(cur, "uid", "full_outer").withColumn("status", status)


def _mark_deleted(spark, parent: Parent, old):
    """`was_deleted`: whether the member is in the parent's deletion list of its shard."""
    from pyspark.sql import functions as F

    files = [f"{parent.uri}/{s['deletions']}" for s in parent.shards if s.get("deletions")]
    if not files:
        return old.withColumn("was_deleted", F.lit(False))
    dels = read_parquet_files(spark, files, shardlib.DELETIONS_SCHEMA, file_column="_file")
    shard_no = F.regexp_extract(F.col("_file"), r"shard-(\d+)\.deleted\.parquet$", 1)
    dels = dels.select(
        F.col("key").alias("uid"),
        shard_no.cast("int").alias("shard"),
        F.lit(True).alias("was_deleted"),
    )
    marked = old.join(dels, ["uid", "shard"], "left")
    return marked.withColumn("was_deleted", F.coalesce("was_deleted", F.lit(False)))


def shard_stats(members) -> tuple[list[ShardStat], int, int, int]:
    """(per parent shard stats, added samples, highest parent shard, highest parent pos)."""
    from pyspark.sql import functions as F

    kept = F.col("_cur").isNotNull()
    size = est_bytes(F.col("old_bytes"))
    was = F.coalesce(F.col("was_deleted"), F.lit(False))
    rows = (
        members.groupBy("shard")
        .agg(
            F.count("*").alias("old"),
            F.count_if(F.col("status") == "same").alias("same"),
            F.count_if(kept).alias("kept"),
            F.sum(F.when(kept, size)).alias("kept_bytes"),
            F.max("old_pos").alias("max_pos"),
            F.count_if(was).alias("deleted_before"),
            F.count_if(was != (F.col("status") != "same")).alias("flips"),
            F.count_if(~was & ~kept).alias("removed"),
        )
        .collect()
    )
    added = sum(int(r["old"]) for r in rows if r["shard"] is None)
    stats = [
        ShardStat(
            r["shard"],
            r["old"],
            r["same"],
            r["kept"],
            int(r["kept_bytes"] or 0),
            r["deleted_before"],
            r["flips"],
            r["removed"],
        )
        for r in rows
        if r["shard"] is not None
    ]
    top_shard = max((s.shard for s in stats), default=-1)
    top_pos = max((int(r["max_pos"]) for r in rows if r["shard"] is not None), default=-1)
    return sorted(stats, key=lambda s: s.shard), added, top_shard, top_pos


def check_stats(parent: Parent, stats: list[ShardStat]) -> None:
    """The indexes read must be the manifest's shards (those of `parent`) with its counts."""
    listed = {n: (s["num_samples"], s.get("deleted") or 0) for n, s in parent.by_number().items()}
    got = {s.shard: (s.old - s.deleted_before, s.deleted_before) for s in stats}
    if listed != got:
        raise JobError(
            f"the indexes of parent version {parent.version} ({parent.uri}) do not match its "
            "manifest; publish with --full"
        )


def source_columns(parent: Parent):
    """src_uri/src_member of a parent member: where its image bytes are."""
    from pyspark.sql import functions as F

    root = parent.uri.rstrip("/").replace("%", "%%")
    tar = F.format_string(f"{root}/shard-%06d.tar", F.col("shard"))
    return [tar.alias("src_uri"), F.col("old_member").alias("src_member")]


# --- packing samples into shards -----------------------------------------------------------


HEADER_ESTIMATE = 3 * 512 + 256  # tar headers + json sidecar per sample, for shard_bytes


def pack(narrow, order: list, shard_size: int, shard_bytes: int, first_shard=0, first_pos=0):
    """uid, pos, shard of `narrow` (uid, nbytes) in `order`: a new shard starts after
    `shard_size` samples, or at the first sample that starts past `shard_bytes`
    (estimated) bytes; numbering starts at `first_shard` and `first_pos`. No step
    sorts every row in one task (`number_ranged`)."""
    from pyspark.sql import functions as F

    numbered = number_ranged(narrow, order)  # uid, pos (0-based), before (bytes of earlier rows)
    by_count = F.floor(F.col("pos") / shard_size)
    if shard_bytes:  # a shard per distinct (count bucket, byte bucket), both non-decreasing
        keyed = numbered.select(
            "uid",
            "pos",
            by_count.alias("by_count"),
            F.floor(F.col("before") / shard_bytes).alias("by_bytes"),
        )
        buckets = sorted(
            (r["by_count"], r["by_bytes"])
            for r in keyed.select("by_count", "by_bytes").distinct().collect()
        )
        index = narrow.sparkSession.createDataFrame(
            [(c, b, i) for i, (c, b) in enumerate(buckets)],
            "by_count long, by_bytes long, shard long",
        )
        numbered = keyed.join(F.broadcast(index), ["by_count", "by_bytes"])
    else:
        numbered = numbered.withColumn("shard", by_count)
    return numbered.select(
        "uid",
        (F.col("pos") + F.lit(first_pos)).alias("pos"),
        (F.col("shard") + F.lit(first_shard)).cast("int").alias("shard"),
    )


def number_ranged(narrow, order: list, parts: int = 0):
    """uid, pos (0-based) and before (bytes of the rows before) of `narrow` in `order`,
    numbered across tasks: range-partition by `order` into `parts` ranges (default: the
    cluster's parallelism), number each range in its task, then add each range's offset
    (rows and bytes of the ranges before it)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from lakecurate.curation.dedup.components import cut_lineage

    spark = narrow.sparkSession
    parts = parts or max(spark.sparkContext.defaultParallelism, 1)
    # materialized: range bounds come from a sample, so a recomputation could move rows
    ranged = cut_lineage(
        narrow.repartitionByRange(parts, *order).withColumn("_range", F.spark_partition_id())
    )
    sizes = ranged.groupBy("_range").agg(F.count("*").alias("n"), F.sum("nbytes").alias("b"))
    offsets, pos0, bytes0 = [], 0, 0
    for r in sorted(sizes.collect(), key=lambda r: r["_range"]):
        offsets.append((r["_range"], pos0, bytes0))
        pos0, bytes0 = pos0 + r["n"], bytes0 + (r["b"] or 0)
    offsets_df = spark.createDataFrame(offsets, "_range int, _pos0 long, _bytes0 long")
    w = Window.partitionBy("_range").orderBy(*order)
    before = F.sum("nbytes").over(w.rowsBetween(Window.unboundedPreceding, -1))
    local = ranged.select(
        "uid",
        "_range",
        (F.row_number().over(w) - 1).alias("_i"),
        F.coalesce(before, F.lit(0)).alias("_b"),
    )
    return local.join(F.broadcast(offsets_df), "_range").select(
        "uid",
        (F.col("_i") + F.col("_pos0")).alias("pos"),
        (F.col("_b") + F.col("_bytes0")).alias("before"),
    )


def seeded_order(seed: int):
    """The sort key of the seeded shuffle by uid."""
    from pyspark.sql import functions as F

    return F.sha2(F.concat(F.lit(f"{seed}:"), F.col("uid")), 256)


def est_bytes(image_bytes):
    from pyspark.sql import functions as F

    caption = F.coalesce(F.octet_length("caption"), F.lit(0))
    return (image_bytes + caption + HEADER_ESTIMATE).cast("long")


# --- the incremental layout ----------------------------------------------------------------


CURRENT = ("uid", "image_format", "caption", "url", "width", "height", "clip_score")
IMAGE = ("uid", "image")


@dataclass(frozen=True)
class Layout:
    """What an incremental publish does with the parent's shards and the added samples."""

    parent: Parent
    actions: dict[int, str]
    added: int
    top_shard: int
    top_pos: int
    stats: tuple[ShardStat, ...] = ()

    @property
    def reusable(self) -> int:
        """Samples of the new version in shards reused as they are."""
        return sum(s.same for s in self.stats if self.actions[s.shard] == REUSE)

    @property
    def samples(self) -> int:
        """Samples of the new version."""
        return self.added + sum(s.kept for s in self.stats)

    def worth_it(self, min_reuse: float) -> bool:
        """Whether reusing beats writing every shard afresh (`publish.min_reuse`)."""
        return self.reusable >= min_reuse * self.samples

    def shards_with(self, action: str) -> list[int]:
        return sorted(s for s, a in self.actions.items() if a == action)

    def with_deletions(self) -> list[ShardStat]:
        """The reused shards whose deletion list is not empty."""
        return [s for s in self.stats if self.actions[s.shard] == REUSE and s.deleted]

    def summary(self) -> dict:
        counts = {a: len(self.shards_with(a)) for a in (REUSE, REWRITE, DROP, MERGE)}
        return {
            "mode": "incremental",
            "parent_version": self.parent.version,
            "added": self.added,
            "removed": sum(s.removed for s in self.stats),
            **{f"{a}_shards": n for a, n in counts.items()},
            "shards_with_deletions": len(self.with_deletions()),
            "deleted": sum(s.deleted for s in self.with_deletions()),
        }


def unchanged_stat(shard: int, record: dict) -> ShardStat:
    """A parent shard none of whose members changed (`changes`): its manifest figures.
    (kept_bytes is not recorded; only `publish.shard_bytes` needs it.)"""
    live, deleted = record["num_samples"], record.get("deleted") or 0
    return ShardStat(shard, live + deleted, live, live, 0, deleted)


def plan_layout(spark, parent: Parent, members, cfg: Config, compared: Parent | None = None):
    """Compare, check and decide: the Layout of the new version over `parent`. `members`
    compares the shards of `compared` (default: all of the parent's; the others are
    unchanged, and the highest shard is among those compared)."""
    stats, added, top_shard, top_pos = shard_stats(members)
    check_stats(compared or parent, stats)
    if compared is not None:
        seen = {s.shard for s in stats}
        rest = [unchanged_stat(n, r) for n, r in parent.by_number().items() if n not in seen]
        stats = sorted(stats + rest, key=lambda s: s.shard)
    p = cfg.publish
    actions = decide(stats, p.shard_size, p.shard_bytes, p.max_small_shards, p.compact_fraction)
    return Layout(parent, actions, added, top_shard, top_pos, tuple(stats))


def rows_to_write(spark, lake: Lake, pairs_version: int, layout: Layout, members, cfg: Config):
    """The samples of every shard to (re)write, with SAMPLE_COLUMNS + SOURCE_COLUMNS
    (image null where it is read back from the parent); None when nothing is written."""
    from pyspark.sql import functions as F

    kept = members.filter(F.col("_cur").isNotNull())
    src = source_columns(layout.parent)
    rewrite = kept.filter(F.col("shard").isin(layout.shards_with(REWRITE)))
    from_parent = [rewrite.select("shard", F.col("old_pos").alias("pos"), *CURRENT, *src)]
    fresh = []
    merged = kept.filter(F.col("shard").isin(layout.shards_with(MERGE)))
    added = members.filter(F.col("status") == "added").select(*CURRENT)
    images = None
    if layout.added:
        uids = added.select("uid")
        images = rows_for_uids(spark, lake, "pairs", pairs_version, uids, layout.added, IMAGE)
    if layout.shards_with(MERGE) or layout.added:
        tail = _pack_tail(merged, added, images, cfg, layout)
        from_parent.append(merged.select(*CURRENT, *src).join(tail, "uid"))
        if images is not None:
            fresh.append(added.join(images, "uid").join(tail, "uid"))
    elif not layout.shards_with(REWRITE):
        return None
    sha = lake.read(spark, "pairs", pairs_version).select("uid", "image_sha256")
    no_image = F.lit(None).cast("binary").alias("image")
    out = [df.join(sha, "uid").select("*", no_image) for df in from_parent]
    no_src = [F.lit(None).cast("string").alias(c) for c in shardlib.SOURCE_COLUMNS]
    out += [df.select("*", *no_src) for df in fresh]
    cols = [*shardlib.SAMPLE_COLUMNS, *shardlib.SOURCE_COLUMNS]
    frame = out[0].select(*cols)
    for df in out[1:]:
        frame = frame.unionByName(df.select(*cols))
    return frame


def _pack_tail(merged, added, images, cfg: Config, layout: Layout):
    """uid, pos, shard of the tail: merged members in their old order, then added samples
    in the seeded order, numbered after the parent's highest shard and pos."""
    from pyspark.sql import functions as F

    m = merged.select(
        "uid",
        F.lit(0).alias("tier"),
        F.col("old_pos").cast("long").alias("k1"),
        F.lit("").alias("k2"),
        est_bytes(F.col("old_bytes")).alias("nbytes"),
    )
    narrow = m
    if images is not None:
        a = added.join(images, "uid").select(
            "uid",
            F.lit(1).alias("tier"),
            F.lit(0).cast("long").alias("k1"),
            seeded_order(cfg.publish.seed).alias("k2"),
            est_bytes(F.length("image")).alias("nbytes"),
        )
        narrow = m.unionByName(a)
    p = cfg.publish
    order = ["tier", "k1", "k2", "uid"]
    first = (layout.top_shard + 1, layout.top_pos + 1)
    return pack(narrow, order, p.shard_size, p.shard_bytes, *first)


def reuse_shards(layout: Layout, staging: str, deletions: dict[int, dict]) -> list[dict]:
    """Link (or copy) every reused shard and its index into `staging`; their records,
    with each one's deletion list (`deletions`, by shard; none where absent)."""
    fs, root = open_fs(staging)
    fs.makedirs(root, exist_ok=True)
    by_shard = layout.parent.by_number()
    stats = {s.shard: s for s in layout.stats}
    out, how = [], {"link": 0, "copy": 0}
    for shard in layout.shards_with(REUSE):
        s = by_shard[shard]
        for name in (s["name"], s["index"]):
            how[link_or_copy(f"{layout.parent.uri}/{name}", f"{staging}/{name}")] += 1
        if fs.size(f"{root}/{s['name']}") != s["num_bytes"]:
            raise JobError(f"reused shard {s['name']} of {layout.parent.uri} changed size")
        dels = deletions.get(shard) or NO_DELETIONS
        live = stats[shard].same
        out.append({**s, **dels, "num_samples": live, "shard": shard, "reused": True})
    log.info("publish: reused %d shards of version %d (%s)", len(out), layout.parent.version, how)
    return out


NO_DELETIONS = {"deleted": 0, "deletions": None, "deletions_sha256": None}


def deletion_lists(layout: Layout, members, staging: str) -> dict[int, dict]:
    """The deletion list of every reused shard that has one, by shard: the parent's file
    (linked) where the shard's deleted members are the parent's, else a new file written
    by Spark tasks (one per shard). Each: deleted, deletions (file name), deletions_sha256."""
    from pyspark.sql import functions as F

    by_shard = layout.parent.by_number()
    fs, root = open_fs(staging)
    fs.makedirs(root, exist_ok=True)
    out, new = {}, []
    for s in layout.with_deletions():
        old = by_shard[s.shard]
        if s.flips == 0 and old.get("deletions"):  # the same members as in the parent
            link_or_copy(f"{layout.parent.uri}/{old['deletions']}", f"{staging}/{old['deletions']}")
            out[s.shard] = {k: old[k] for k in NO_DELETIONS}
        else:
            new.append(s.shard)
    if new:
        gone = members.filter(F.col("shard").isin(new) & (F.col("status") != "same"))
        rows = (
            gone.select("shard", "uid")
            .repartition(min(len(new), 10_000), "shard")
            .groupBy("shard")
            .applyInPandas(shardlib.deletions_writer(staging), shardlib.DELETIONS_RESULT_SCHEMA)
            .collect()
        )
        for r in rows:
            out[r["shard"]] = {k: r[k] for k in NO_DELETIONS}
    want = {s.shard: s.deleted for s in layout.with_deletions()}
    got = {shard: d["deleted"] for shard, d in out.items()}
    if got != want:
        raise JobError(f"deletion lists written {got} are not the ones planned {want}")
    return out


def changed_shards(spark, lake: Lake, cfg: Config, parent: Parent, plan: dict):
    """(the uids changed since `parent`, persisted; the parent shards holding any of
    them plus its highest shard), or (None, None) when every shard must be compared
    (`changes`; the reason is logged)."""
    changed, why = changes.changed_since_parent(spark, lake, cfg, parent, plan)
    if changed is not None:
        by_number = parent.by_number()
        touched = changes.shards_holding(spark, parent, changed) | {max(by_number)}
        held = sum(by_number[n]["num_samples"] + (by_number[n].get("deleted") or 0)
                   for n in touched)  # fmt: skip
        if held <= changes.BROADCAST_UIDS:
            log.info("publish: comparing %d of %d shards", len(touched), len(by_number))
            return changed, touched
        changed.unpersist()
        why = f"the {len(touched)} parent shards holding changed uids are too large"
    log.info("publish: comparing every shard of version %d (%s)", parent.version, why)
    return None, None


def compare_shards(spark, parent: Parent, current, touched: set[int] | None, changed):
    """(`compare` over the parent shards `touched` (None: all) and the current samples
    they list or that `changed` names, persisted; the parent those shards make)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    sub = parent if touched is None else parent.restricted(touched)
    if touched is not None:
        keys = index_uids(spark, sub).unionByName(changed).distinct()
        current = current.join(F.broadcast(keys), "uid", "left_semi")
    return compare(spark, sub, current).persist(StorageLevel.MEMORY_AND_DISK), sub


def index_uids(spark, parent: Parent):
    """Every uid listed by the indexes of `parent`'s shards."""
    files = [f"{parent.uri}/{s['index']}" for s in parent.shards]
    return read_parquet_files(spark, files, shardlib.INDEX_SCHEMA).select("uid")


def lay_out(
    spark, lake: Lake, cfg: Config, parent: Parent, samples, plan: dict, staging: str, write
) -> tuple[list[dict], dict] | str:
    """Write the shards that change into `staging` (`write(frame, n_shards)`), link the
    reused ones next to them with their deletion lists; return every shard's record (by
    number) and a summary. Returns instead the reason to write every shard afresh when
    too little of the parent is reusable (`publish.min_reuse`): nothing is written then."""
    current = samples.select(*CURRENT)
    pairs_version = plan["pinned_versions"]["pairs"]
    changed, touched = changed_shards(spark, lake, cfg, parent, plan)
    members, compared = compare_shards(spark, parent, current, touched, changed)
    try:
        layout = plan_layout(spark, parent, members, cfg, compared if touched else None)
        work = set(layout.shards_with(REWRITE) + layout.shards_with(MERGE))
        if touched is not None and not work <= touched:
            # an unchanged shard is rewritten or merged: its members are needed too
            members.unpersist()
            touched |= work
            members, compared = compare_shards(spark, parent, current, touched, changed)
            layout = plan_layout(spark, parent, members, cfg, compared)
        log.info("publish: layout over version %d: %s", parent.version, layout.summary())
        if not layout.worth_it(cfg.publish.min_reuse):
            return (
                f"only {layout.reusable} of {layout.samples} samples are in shards of "
                f"version {parent.version} that could be reused (publish.min_reuse "
                f"{cfg.publish.min_reuse:g})"
            )
        frame = rows_to_write(spark, lake, pairs_version, layout, members, cfg)
        expected = len(layout.shards_with(REWRITE)) + -(-layout.added // cfg.publish.shard_size)
        written = [] if frame is None else _write(write, frame, expected + 1)
        deletions = deletion_lists(layout, members, staging)
    finally:
        members.unpersist()
        if changed is not None:
            changed.unpersist()
    shards = [{**s, **NO_DELETIONS, "reused": False} for s in written]
    shards += reuse_shards(layout, staging, deletions)
    return sorted(shards, key=lambda s: s["shard"]), layout.summary()


def _write(write, frame, n: int) -> list[dict]:
    try:
        return write(frame, n)
    except Exception as e:  # a Spark task's error arrives wrapped; say what to do
        if shardlib.PARENT_DAMAGED not in str(e):
            raise
        detail = str(e).split(shardlib.PARENT_DAMAGED, 1)[1].splitlines()[0]
        raise JobError(
            f"{shardlib.PARENT_DAMAGED}{detail}; publish with --full to write every shard afresh"
        ) from None
