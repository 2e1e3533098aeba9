"""rows_for_uids: the rows of a few uids, read from only the files that hold them."""

from __future__ import annotations

import pyarrow as pa

from lakecurate.deltaio import keyed
from lakecurate.deltaio.lake import Commit
from lakecurate.jobs import embed
from lakecurate.schemas import TABLES


def _append_pairs(spark, lake, rows: list[dict]) -> None:
    spec = TABLES["pairs"]
    t = pa.Table.from_pylist(rows, schema=spec.schema)
    lake.write(spark.createDataFrame(t.to_pandas(), spec.spark_schema()), "pairs", Commit("t", "r"))


def test_new_uids_are_read_from_the_new_files_only_and_embed_embeds_just_them(
    spark, pairs_lake, cfg
):
    from lakecurate.demo.sample import generate

    lake = pairs_lake
    assert embed.run(spark, cfg).counts["embedded"] == lake.count("pairs")
    old_files = set(lake.delta("pairs").file_uris())
    new_rows = generate(n=12, seed=99, prefix="n").pair_rows()
    _append_pairs(spark, lake, new_rows)
    v = lake.version("pairs")
    new_files = {keyed.basename(u) for u in lake.delta("pairs").file_uris()} - {
        keyed.basename(u) for u in old_files
    }
    uids = spark.createDataFrame([(r["uid"],) for r in new_rows], "uid string")
    files = keyed.files_holding(spark, lake, "pairs", v, uids)
    assert files and {keyed.basename(f) for f in files} <= new_files
    got = keyed.rows_for_uids(spark, lake, "pairs", v, uids, len(new_rows), ["uid", "image"])
    plain = lake.read(spark, "pairs", v).join(uids, "uid", "left_semi").select("uid", "image")
    assert sorted(map(tuple, got.collect())) == sorted(map(tuple, plain.collect()))
    assert len(got.collect()) == len(new_rows)
    # the same rows when there are too many uids for the pruned read
    many = keyed.rows_for_uids(spark, lake, "pairs", v, uids, keyed.BROADCAST_UIDS + 1, ["uid"])
    assert sorted(r["uid"] for r in many.collect()) == sorted(r["uid"] for r in new_rows)
    # embed on the refreshed lake: exactly the new uids
    second = embed.run(spark, cfg)
    assert second.counts["embedded"] == len(new_rows)
    mid = second.counts["model_id"]
    emb = lake.read(spark, "embeddings").filter(f"model_id = '{mid}'").select("uid")
    assert emb.count() == lake.count("pairs")
    assert embed.run(spark, cfg).counts["embedded"] == 0
