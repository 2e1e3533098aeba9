"""`lakecurate embed` on the sample pairs with the tiny model, in local Spark."""

from __future__ import annotations

import numpy as np
import pytest

from lakecurate.curation.models import model_id
from lakecurate.deltaio.lake import Commit
from lakecurate.jobs import embed
from lakecurate.runtime.config import replace
from lakecurate.schemas import TABLES
from lakecurate.udfs import clip as C


def _embeddings(spark, lake, mid: str | None = None):
    df = lake.read(spark, "embeddings")
    if mid is not None:
        df = df.filter(df.model_id == mid)
    return df.toPandas().set_index("uid")


def _append_truncated_pair(spark, lake, sample_set) -> dict:
    """A pair whose JPEG header is fine (ingest let it in) but whose body is cut short."""
    import pyarrow as pa

    from lakecurate.udfs.text import make_uid, sha256_hex

    row = dict(sample_set.pair_rows()[0])
    row["image"] = row["image"][: len(row["image"]) // 3]
    row["image_sha256"] = sha256_hex(row["image"])
    row["uid"] = make_uid(row["image_sha256"], row["caption"])
    row["source_uri"], row["source_key"] = "generated-broken", "broken0001"
    spec = TABLES["pairs"]
    df = spark.createDataFrame(
        pa.Table.from_pylist([row], schema=spec.schema).to_pandas(), spec.spark_schema()
    )
    lake.write(df, "pairs", Commit("fixture", "broken"))
    return row


def test_embed_writes_unit_vectors_whose_cosine_is_the_score_and_matches_plain_functions(
    spark, pairs_lake, cfg, capsys
):
    import json

    lake = ["--lake", cfg.lake.path, "--master", "local[2]"]
    tiny = ["--model", "lakecurate-tiny", "--pretrained", "none", "--batch-size", "16"]
    assert embed.main([*lake, *tiny, "--precision", "fp32", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    mid = model_id(cfg.model)
    n_pairs = pairs_lake.count("pairs")
    assert mid == "lakecurate-tiny/none/fp32"
    assert result["counts"] == {"model_id": mid, "embedded": n_pairs, "rejected": 0}
    assert result["read_versions"]["pairs"] == 0 and "embeddings" in result["written_versions"]

    got = _embeddings(spark, pairs_lake)
    assert len(got) == n_pairs and set(got.model_id) == {mid}
    assert set(got.index) == {r["uid"] for r in pairs_lake.read(spark, "pairs").collect()}
    img, txt = np.stack(got.image_emb), np.stack(got.text_emb)
    assert img.shape == txt.shape == (n_pairs, 64)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got.clip_score, (img.astype(np.float64) * txt).sum(1), atol=1e-5)
    assert got.run_id.eq(result["run_id"]).all() and got.embedded_at.notna().all()

    # the same images through the plain functions, no Spark
    pairs = pairs_lake.read(spark, "pairs").select("uid", "image", "caption").limit(25).collect()
    tiny = C.load_model(C.ClipSpec("lakecurate-tiny", "none", "fp32", "cpu"))
    images = [C.decode_image(bytes(p["image"]), tiny.image_size) for p in pairs]
    want_img = C.embed_images(images, tiny.model, tiny.preprocess)
    want_txt = C.embed_texts([p["caption"] for p in pairs], tiny.model, tiny.tokenizer)
    uids = [p["uid"] for p in pairs]
    np.testing.assert_allclose(np.stack(got.loc[uids, "image_emb"]), want_img, atol=1e-5)
    np.testing.assert_allclose(np.stack(got.loc[uids, "text_emb"]), want_txt, atol=1e-5)

    # a re-run finds nothing to do and commits nothing
    version = pairs_lake.version("embeddings")
    again = embed.run(spark, cfg)
    assert again.counts["embedded"] == 0
    assert pairs_lake.version("embeddings") == version
    assert pairs_lake.count("embeddings") == n_pairs


def test_second_model_adds_its_own_rows_and_a_broken_image_becomes_a_reject(
    spark, pairs_lake, cfg, sample_set
):
    broken = _append_truncated_pair(spark, pairs_lake, sample_set)
    n_pairs = pairs_lake.count("pairs")
    first = embed.run(spark, cfg)
    assert first.counts["embedded"] == n_pairs - 1 and first.counts["rejected"] == 1

    rejects = pairs_lake.read(spark, "rejects").toPandas()
    assert len(rejects) == 1
    r = rejects.iloc[0]
    assert (r.stage, r.uid, r.reason) == ("embed", broken["uid"], C.REASON_DECODE)
    assert (r.source_uri, r.source_key) == ("generated-broken", "broken0001")
    assert "truncated" in r.detail or "Error" in r.detail
    assert broken["uid"] not in _embeddings(spark, pairs_lake).index

    bf16 = replace(cfg, model={"precision": "bf16"})
    mid1, mid2 = model_id(cfg.model), model_id(bf16.model)
    assert mid2 == "lakecurate-tiny/none/bf16"
    before = _embeddings(spark, pairs_lake, mid1)
    second = embed.run(spark, bf16)
    assert second.counts == {"model_id": mid2, "embedded": n_pairs - 1, "rejected": 0}
    after = _embeddings(spark, pairs_lake)
    assert (after.model_id == mid1).sum() == (after.model_id == mid2).sum() == n_pairs - 1
    # the first model's rows are untouched
    kept = after[after.model_id == mid1]
    np.testing.assert_array_equal(
        np.stack(kept.loc[before.index, "image_emb"]), np.stack(before.image_emb)
    )
    # bf16 vectors are still unit vectors close to the fp32 ones
    b = after[after.model_id == mid2].loc[before.index]
    sims = (np.stack(b.image_emb) * np.stack(before.image_emb)).sum(1)
    assert sims.min() > 0.95

    # re-runs: no new embeddings for either model, the broken image is not retried
    assert embed.run(spark, cfg).counts["embedded"] == 0
    assert embed.run(spark, bf16).counts["embedded"] == 0
    assert pairs_lake.count("rejects") == 1


def test_cli_rejects_unusable_weights_before_any_spark_work(spark, lake, cfg, capsys):
    args = ["--lake", cfg.lake.path, "--master", "local[2]", "--model", "ViT-B-32"]
    # offline (conftest sets HF_HUB_OFFLINE=1): a pretrained tag is a config error, exit 2
    assert embed.main([*args, "--pretrained", "laion2b_s34b_b79k"]) == 2
    assert "--pretrained /path/to/open_clip_model.safetensors" in capsys.readouterr().err
    assert embed.main([*args, "--pretrained", "/no/such.pt"]) == 2
    assert "checkpoint file not found: /no/such.pt" in capsys.readouterr().err
    assert embed.main([*args, "--pretrained", "none", "--batch-size", "0"]) == 2
    assert not lake.exists("embeddings")


def test_embed_without_pairs_is_a_job_error(spark, lake, cfg, capsys):
    assert embed.main(["--lake", cfg.lake.path, "--model", "lakecurate-tiny",
                       "--pretrained", "none"]) == 1  # fmt: skip
    assert "run `lakecurate ingest` first" in capsys.readouterr().err


@pytest.mark.gpu
def test_embed_on_gpu_uses_fp16_model_id(spark, pairs_lake, cfg):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    gpu = replace(cfg, model={"device": "cuda", "precision": "auto"})
    result = embed.run(spark, gpu)
    assert result.counts["model_id"] == "lakecurate-tiny/none/fp16"
    assert result.counts["embedded"] == pairs_lake.count("pairs")


def _append_recaptioned(spark, lake, sample_set, tag: str, n: int) -> set[str]:
    """Append `n` pairs of the sample set's images under new captions (new uids) in one
    commit, as an ingest would; return their uids."""
    import pyarrow as pa

    from lakecurate.udfs.text import make_uid

    rows = []
    for i, row in enumerate(sample_set.pair_rows()[:n]):
        row = dict(row, caption=f"{row['caption']} ({tag} {i})")
        row["uid"] = make_uid(row["image_sha256"], row["caption"])
        row["source_uri"], row["source_key"] = f"generated-{tag}", f"{tag}{i:04d}"
        rows.append(row)
    spec = TABLES["pairs"]
    table = pa.Table.from_pylist(rows, schema=spec.schema)
    lake.write(
        spark.createDataFrame(table.to_pandas(), spec.spark_schema()), "pairs", Commit("t", tag)
    )
    return {r["uid"] for r in rows}


def test_after_a_complete_run_only_the_files_added_since_are_read(
    spark, pairs_lake, cfg, sample_set
):
    from lakecurate.runtime.jobkit import JobContext

    mid = model_id(cfg.model)
    n0 = pairs_lake.count("pairs")
    assert embed.run(spark, cfg).counts["embedded"] == n0

    old_files = set(pairs_lake.delta("pairs").file_uris())
    new = _append_recaptioned(spark, pairs_lake, sample_set, "night1", 7)
    todo = embed.pending_uids(JobContext("embed", cfg), spark, mid)
    assert set(todo.files) == set(pairs_lake.delta("pairs").file_uris()) - old_files
    assert {r["uid"] for r in todo.uids.collect()} == new
    assert embed.run(spark, cfg).counts == {"model_id": mid, "embedded": 7, "rejected": 0}
    assert set(_embeddings(spark, pairs_lake, mid).index) >= new

    # a run killed after committing a chunk (no completion record): the next run embeds
    # the rest only, from the embeddings rows added since the last complete run
    more = _append_recaptioned(spark, pairs_lake, sample_set, "night2", 9)
    ctx = JobContext("embed", cfg)
    todo = embed.pending_uids(ctx, spark, mid)
    first = sorted(more)[:4]
    part = todo.uids.filter(todo.uids.uid.isin(first))
    _, spec = embed.plan(spark, cfg.model)
    rows = embed.pending(ctx, spark, todo, part, 4)
    assert embed.embed_chunk(spark, ctx, rows, 4, spec, mid) == (4, 0)
    assert embed.run(spark, cfg).counts["embedded"] == 5
    got = _embeddings(spark, pairs_lake, mid)
    assert len(got) == n0 + 16 and got.index.is_unique

    # a table rewritten since the last complete run is read whole: still nothing twice
    emb = pairs_lake.read(spark, "embeddings").persist()
    pairs_lake.write(emb, "embeddings", Commit("t", "rewrite"), mode="overwrite")
    emb.unpersist()
    assert pairs_lake.added_since("embeddings", pairs_lake.version("embeddings") - 1)[1] is None
    assert embed.pending_uids(JobContext("embed", cfg), spark, mid).files is not None
    assert embed.run(spark, cfg).counts["embedded"] == 0
    assert pairs_lake.count("embeddings") == n0 + 16

    # `pairs` rewritten (as `lakecurate compact` does) while `embeddings` only grew: every
    # pair is looked at, and every embedding covers it (the lake is not embedded again)
    pairs = pairs_lake.read(spark, "pairs").persist()
    pairs_lake.write(pairs, "pairs", Commit("t", "rewrite"), mode="overwrite")
    pairs.unpersist()
    last = _append_recaptioned(spark, pairs_lake, sample_set, "night3", 3)
    todo = embed.pending_uids(JobContext("embed", cfg), spark, mid)
    assert todo.files is None and {r["uid"] for r in todo.uids.collect()} == last
    assert embed.run(spark, cfg).counts["embedded"] == 3
