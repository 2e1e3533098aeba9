"""What changed since the parent version: the uids whose published sample can differ.

A sample of a version is a function of its uid's rows at the version's pinned table
versions: whether `selection` keeps it under the recipe, its `pairs` columns, and its
`clip_score` in `embeddings` under the model. So between the parent's pins and the new
ones, only the uids whose rows of those tables changed can be added, removed or
changed; every other member of the parent is the same sample, still kept or still
deleted. The Delta log says which files each table gained and lost between the two
versions (`keyed.changed_keys`); those rows are all that is read.

The layout (`layout.lay_out`) then compares only the parent shards that hold a changed
uid, plus the highest one (its last `pos` numbers the tail), and takes the other
shards' figures from the parent's manifest. The result is the layout a comparison of
every parent index gives; `changed_since_parent` returns instead why that comparison is
needed: another recipe or model than the parent's, a table whose history cannot be
diffed, `publish.shard_bytes` (a small-shard test needs every shard's kept bytes, which
the manifest does not record), or too many changes to broadcast.
"""

from __future__ import annotations

import logging

from lakecurate.curation.publish.files import Parent
from lakecurate.deltaio.keyed import BROADCAST_UIDS, changed_keys
from lakecurate.deltaio.lake import Lake, read_parquet_files
from lakecurate.runtime.config import Config
from lakecurate.udfs import shards as shardlib

log = logging.getLogger(__name__)

# the columns of each table a published sample is made of (besides uid)
SAMPLE_SOURCES = {
    "selection": ["recipe_id", "kept"],
    "pairs": ["caption", "url", "width", "height", "image_format"],
    "embeddings": ["model_id", "clip_score"],
}


def changed_since_parent(spark, lake: Lake, cfg: Config, parent: Parent, plan: dict):
    """(the uids whose sample can differ from the parent's, persisted; "") or (None,
    why every parent index must be compared)."""
    from pyspark.sql import functions as F

    man = parent.manifest
    then, now = man.get("pinned_versions") or {}, plan["pinned_versions"]
    if cfg.publish.shard_bytes:
        return None, "publish.shard_bytes is set"
    if (man.get("recipe_id"), man.get("model_id")) != (plan["recipe_id"], plan["model_id"]):
        return None, "the parent has another recipe or model"
    where = {
        "selection": F.col("recipe_id") == plan["recipe_id"],
        "pairs": None,
        "embeddings": F.col("model_id") == plan["model_id"],
    }
    parts = []
    for table, cols in SAMPLE_SOURCES.items():
        if (table in then) != (table in now):
            return None, f"{table} is pinned by only one of the two versions"
        if table not in now or then[table] == now[table]:
            continue
        found = changed_keys(spark, lake, table, then[table], cols, where[table], now[table])
        if found is None:
            return None, f"{table}@v{then[table]} cannot be diffed with v{now[table]}"
        parts.append(found[1])
    if not parts:
        return spark.createDataFrame([], "uid string").persist(), ""
    union = parts[0]
    for p in parts[1:]:
        union = union.unionByName(p)
    uids = union.distinct().persist()
    n = uids.count()
    if n > BROADCAST_UIDS:
        uids.unpersist()
        return None, f"{n} uids changed since the parent"
    log.info("publish: %d uids changed since version %d", n, parent.version)
    return uids, ""


def shards_holding(spark, parent: Parent, uids) -> set[int]:
    """The numbers of the parent shards whose index lists any of `uids` (deleted
    members included), from a scan of the indexes' uid column."""
    from pyspark.sql import functions as F

    files = [f"{parent.uri}/{s['index']}" for s in parent.shards]
    idx = read_parquet_files(spark, files, shardlib.INDEX_SCHEMA, file_column="_index_file")
    hits = idx.select("uid", "_index_file").join(F.broadcast(uids), "uid", "left_semi")
    shard_no = F.regexp_extract(F.col("_index_file"), r"shard-(\d+)\.parquet$", 1)
    return {int(r["s"]) for r in hits.select(shard_no.alias("s")).distinct().collect()}
