"""publish: shards, manifest and `datasets` row agree; determinism; crash recovery."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from test_publish_support import build_curated_lake, recipe_id, verdict

from lakecurate.config import replace
from lakecurate.errors import ConfigError, JobError
from lakecurate.jobs import publish


def _cfg(cfg, **pub):
    return replace(cfg, publish={"name": "demo", "shard_size": 64, **pub})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _datasets(spark, lake):
    return {r["version"]: r.asDict() for r in lake.read(spark, "datasets").collect()}


@pytest.fixture
def curated(spark, pairs_lake, cfg, sample_set):
    uids = build_curated_lake(spark, pairs_lake, cfg, sample_set)
    kept = sorted(u for u in uids if verdict(u)[0])
    return pairs_lake, kept


def test_publish_writes_shards_manifest_and_row_that_agree(spark, curated, cfg):
    lake, kept = curated
    res = publish.run(spark, _cfg(cfg))
    out = Path(res.counts["shard_dir"])
    assert out == Path(cfg.lake.path) / "_published" / "demo" / "v1"
    man = json.loads((out / "manifest.json").read_text())
    row = _datasets(spark, lake)[1]
    assert res.counts["version"] == 1 == man["version"]
    assert res.counts["num_samples"] == len(kept) == man["counts"]["num_samples"]
    assert row["num_samples"] == len(kept) and row["status"] == "published"
    assert json.loads(row["pinned_versions"]) == man["pinned_versions"]
    assert set(man["pinned_versions"]) == {
        "pairs",
        "selection",
        "embeddings",
        "signals",
        "duplicates",
    }
    assert man["recipe_id"] == recipe_id(cfg) == row["recipe_id"]
    assert row["selection_hash"] == publish.selection_hash(kept) == man["selection_hash"]
    assert man["funnel"]["kept"] == len(kept)
    assert sum(man["funnel"]["dropped"].values()) + len(kept) == man["funnel"]["total"]
    # every shard's sha256 and count are what is on disk
    assert len(man["shards"]) == row["num_shards"] == -(-len(kept) // 64)
    seen = []
    for s in man["shards"]:
        assert _sha(out / s["name"]) == s["sha256"]
        idx = pd.read_parquet(out / s["index"])
        assert len(idx) == s["num_samples"] <= 64
        with tarfile.open(out / s["name"]) as tar:
            members = tar.getmembers()
            assert {m.mtime for m in members} == {publish.shardlib.TAR_MTIME}
            assert {(m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {
                (0, 0, "", "", 0o644)
            }
            assert len(members) == 3 * len(idx)
            # the index's offset points at each sample's first header
            for off, key in zip(idx["offset"], idx["key"], strict=True):
                tar.fileobj.seek(off)
                assert tarfile.TarInfo.frombuf(
                    tar.fileobj.read(512), "utf-8", "strict"
                ).name.startswith(key)
        seen += list(idx["uid"])
    assert sorted(seen) == kept
    # the shuffle is by uid, not by uid order
    assert seen != sorted(seen)
    assert not list(out.parent.glob(".*staging*"))


def test_shards_load_with_webdataset_and_a_torch_dataloader(spark, curated, cfg):
    import torch
    import webdataset as wds
    from PIL import Image

    lake, kept = curated
    res = publish.run(spark, _cfg(cfg))
    out = Path(res.counts["shard_dir"])
    man = json.loads((out / "manifest.json").read_text())
    urls = [str(out / s["name"]) for s in man["shards"]]
    ds = (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False)
        .decode("pil")
        .to_tuple("__key__", "jpg", "txt", "json")
        .map(lambda s: (s[0], torch.tensor(list(s[1].size)), s[2], s[3]["uid"], s[3]["clip_score"]))
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=0)
    keys, n = [], 0
    for key, size, captions, uids, scores in loader:
        assert list(key) == list(uids)
        assert size.shape[1] == 2 and all(c for c in captions)
        assert all(0 <= float(s) <= 0.4 for s in scores)
        keys += list(key)
        n += len(key)
    assert n == man["counts"]["num_samples"] == len(kept)
    assert sorted(keys) == kept
    # sidecars carry the pairs' width/height, and the image decodes to that size
    first = next(
        iter(wds.WebDataset(urls[:1], shardshuffle=False, empty_check=False).decode("pil"))
    )
    assert Image.Image.__instancecheck__(first["jpg"])
    assert list(first["jpg"].size) == [first["json"]["width"], first["json"]["height"]]


def test_republish_from_same_pins_is_byte_identical(spark, curated, cfg):
    lake, _ = curated
    a = publish.run(spark, _cfg(cfg))
    b = publish.run(spark, _cfg(cfg))
    assert (a.counts["version"], b.counts["version"]) == (1, 2)
    ma = json.loads((Path(a.counts["shard_dir"]) / "manifest.json").read_text())
    mb = json.loads((Path(b.counts["shard_dir"]) / "manifest.json").read_text())
    assert [s["sha256"] for s in ma["shards"]] == [s["sha256"] for s in mb["shards"]]
    for s in mb["shards"]:  # the bytes on disk, not just the manifest
        assert _sha(Path(b.counts["shard_dir"]) / s["name"]) == s["sha256"]
        idx_a = (Path(a.counts["shard_dir"]) / s["index"]).read_bytes()
        assert idx_a == (Path(b.counts["shard_dir"]) / s["index"]).read_bytes()
    # a different seed reshuffles
    c = publish.run(spark, _cfg(cfg, seed=1))
    mc = json.loads((Path(c.counts["shard_dir"]) / "manifest.json").read_text())
    assert [s["sha256"] for s in mc["shards"]] != [s["sha256"] for s in ma["shards"]]


def test_shard_bytes_limit_splits_shards(spark, curated, cfg):
    lake, kept = curated
    res = publish.run(spark, _cfg(cfg, shard_size=1000, shard_bytes=60_000))
    man = json.loads((Path(res.counts["shard_dir"]) / "manifest.json").read_text())
    assert len(man["shards"]) > 1
    assert sum(s["num_samples"] for s in man["shards"]) == len(kept)
    biggest = max(os.path.getsize(p) for p in Path(res.counts["shard_dir"]).glob("*.tar"))
    assert all(s["num_bytes"] <= 60_000 + biggest for s in man["shards"])


def test_crash_leftovers_are_replaced_and_manifest_without_row_is_finished(spark, curated, cfg):
    lake, kept = curated
    c = _cfg(cfg)
    v1 = Path(cfg.lake.path) / "_published" / "demo" / "v1"
    # crash 1: a staging dir and a half-written version dir without manifest
    stale = v1.parent / ".v1.staging-old-run"
    stale.mkdir(parents=True)
    (stale / "shard-000000.tar").write_bytes(b"partial")
    v1.mkdir()
    (v1 / "shard-000000.tar").write_bytes(b"junk")
    res = publish.run(spark, c)
    assert res.counts["version"] == 1 and not stale.exists()
    man = json.loads((v1 / "manifest.json").read_text())
    assert all(_sha(v1 / s["name"]) == s["sha256"] for s in man["shards"])
    # crash 2: shards + manifest of v2 written, `datasets` row never appended
    ctx = publish.JobContext("publish", c)
    pins = publish.pin_versions(lake)
    samples = publish.samples_frame(spark, lake, pins, man["recipe_id"], man["model_id"])
    plan = publish._plan(spark, ctx, "demo", 2, pins, man["recipe_id"], man["model_id"], samples)
    v2 = v1.parent / "v2"
    left = publish.materialise(spark, c, plan, samples, str(v2), ctx.run_id)
    assert sorted(_datasets(spark, lake)) == [1]  # not a version yet
    res2 = publish.run(spark, c)
    assert res2.counts["version"] == 2
    man2 = json.loads((v2 / "manifest.json").read_text())
    assert man2["created_at"] == left["created_at"]  # finished, not rewritten
    assert sorted(_datasets(spark, lake)) == [1, 2]
    # crash 3: manifest whose shard was corrupted -> replaced, not trusted
    plan3 = dict(plan, version=3)
    plan3["inputs_hash"] = publish.inputs_hash(plan3)
    v3 = v1.parent / "v3"
    publish.materialise(spark, c, plan3, samples, str(v3), "run3")
    (v3 / "shard-000000.tar").write_bytes(b"corrupt")
    res3 = publish.run(spark, c)
    man3 = json.loads((v3 / "manifest.json").read_text())
    assert res3.counts["version"] == 3
    assert all(_sha(v3 / s["name"]) == s["sha256"] for s in man3["shards"])


def test_bad_inputs_get_clear_errors(spark, lake, pairs_lake, cfg, tmp_path):
    with pytest.raises(JobError, match="select"):
        publish.run(spark, _cfg(cfg))  # no selection table yet
    with pytest.raises(ConfigError, match="dataset name"):
        publish.run(spark, _cfg(cfg, name="bad name"))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    from test_publish_support import write_selection

    write_selection(spark, lake, cfg, [r["uid"] for r in lake.read(spark, "pairs").collect()])
    with pytest.raises(ConfigError, match="did not write"):
        publish.run(spark, _cfg(cfg, out=str(foreign)))
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_cli_publish_json(spark, curated, cfg, capsys):
    rc = publish.main(
        [
            "demo",
            "--lake",
            cfg.lake.path,
            "--shard-size",
            "100",
            "--json",
            "--out",
            cfg.lake.path + "/../out/{name}-v{version}",
        ]
    )
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"]["version"] == 1
    assert doc["counts"]["shard_dir"].endswith("out/demo-v1")
    assert (Path(doc["counts"]["shard_dir"]) / "manifest.json").exists()


def test_sample_members_are_sorted_and_formats_map_to_extensions():
    row = {
        "uid": "abc",
        "image": b"x",
        "image_format": "png",
        "caption": "c",
        "url": None,
        "width": 2,
        "height": 3,
        "clip_score": None,
        "pos": 0,
    }
    names = [n for n, _ in publish.shardlib.sample_members(row)]
    assert names == sorted(names) == ["abc.json", "abc.png", "abc.txt"]
    buf = io.BytesIO()
    sha, size, index = publish.shardlib.write_tar([row], buf)
    assert sha == hashlib.sha256(buf.getvalue()).hexdigest() and size == len(buf.getvalue())
    assert publish.shardlib.image_extension("jpeg") == "jpg"
