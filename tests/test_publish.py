"""publish: shards, manifest and `datasets` row agree; determinism; crash recovery."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import functions as F
from test_publish_support import copy_lake, curated_template, recipe_id, write_selection

from lakecurate.catalog.dataset import selection_hash
from lakecurate.curation.publish.files import open_fs, reusable_manifest
from lakecurate.curation.publish.layout import HEADER_ESTIMATE
from lakecurate.jobs import publish
from lakecurate.runtime.config import replace
from lakecurate.runtime.errors import ConfigError, JobError


def _cfg(cfg, **pub):
    return replace(cfg, publish={"name": "demo", "shard_size": 64, **pub})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _datasets(spark, lake):
    return {r["version"]: r.asDict() for r in lake.read(spark, "datasets").collect()}


@pytest.fixture
def tpl(spark, tmp_path_factory, sample_set):
    return curated_template(spark, tmp_path_factory, sample_set)


def _manifest(res) -> tuple[Path, dict]:
    out = Path(res.counts["shard_dir"])
    return out, json.loads((out / "manifest.json").read_text())


def test_publish_writes_shards_manifest_and_row_that_agree(spark, tpl):
    from lakecurate.deltaio.lake import Lake

    cfg, kept, res = tpl["cfg"], tpl["kept"][0], tpl["results"][1]
    out, man = _manifest(res)
    assert out == Path(cfg.lake.path) / "_published" / "demo" / "v1"
    row = _datasets(spark, Lake(cfg.lake.path))[1]
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
    assert row["selection_hash"] == selection_hash(kept) == man["selection_hash"]
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


def test_shards_load_with_webdataset_and_a_torch_dataloader(tpl):
    import torch
    import webdataset as wds
    from PIL import Image

    import lakecurate.dataset as lcd

    kept = tpl["kept"][1]
    out, man = _manifest(tpl["results"][2])
    urls = [str(out / s["name"]) for s in man["shards"]]
    ds = (
        lcd.webdataset(str(out), empty_check=False)  # applies the deletion lists, if any
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
    # per shard: every sample decodes to the size its sidecar says, and matches the index
    for shard, url in zip(man["shards"], urls, strict=True):
        idx = pd.read_parquet(out / shard["index"]).set_index("key")
        got = list(wds.WebDataset([url], shardshuffle=False, empty_check=False).decode("pil"))
        assert len(got) == shard["num_samples"] + shard["deleted"] == len(idx)
        assert [g["__key__"] for g in got] == list(idx.index)  # index in shard order
        for g in got:
            assert isinstance(g["jpg"], Image.Image)
            assert list(g["jpg"].size) == [g["json"]["width"], g["json"]["height"]]
            row = idx.loc[g["__key__"]]
            assert g["txt"] == row["caption"] == g["json"]["caption"]
            assert g["json"]["url"] == row["url"]
            assert g["json"]["clip_score"] == pytest.approx(float(row["clip_score"]), abs=1e-6)


def test_publish_of_an_unchanged_selection_adds_no_version(spark, tpl, tmp_path):
    lake, cfg = copy_lake(tpl, tmp_path)
    res = publish.run(spark, cfg)
    assert res.counts["published"] is False
    assert res.counts["version"] == 2
    assert res.counts["num_samples"] == tpl["results"][2].counts["num_samples"]
    assert sorted(_datasets(spark, lake)) == [1, 2]


def test_republish_from_same_pins_is_byte_identical(spark, tpl, tmp_path):
    lake, cfg = copy_lake(tpl, tmp_path)
    b = publish.run(spark, _cfg(cfg, force=True))
    assert b.counts["version"] == 3 and b.counts["published"] is True
    out_a, ma = _manifest(tpl["results"][2])
    out_b, mb = _manifest(b)
    assert ma["pinned_versions"] == mb["pinned_versions"]
    assert [s["sha256"] for s in ma["shards"]] == [s["sha256"] for s in mb["shards"]]
    for s in mb["shards"]:  # the bytes on disk, not just the manifest
        assert _sha(out_b / s["name"]) == s["sha256"]
        assert (out_a / s["index"]).read_bytes() == (out_b / s["index"]).read_bytes()
    # version 1 (an older selection) differs
    _, m1 = _manifest(tpl["results"][1])
    assert m1["selection_hash"] != mb["selection_hash"]


def test_shard_boundaries_by_count_and_by_bytes(spark):
    rows = [(f"{i:064x}", bytes(1000 + 10 * i)) for i in range(40)]
    df = spark.createDataFrame(rows, "uid string, image binary").withColumn("caption", F.lit("c"))
    df = df.repartition(3)  # several input partitions, as a real selection has

    def assign(shard_size, shard_bytes, seed=0):
        return publish.assign_shards(df, shard_size, shard_bytes, seed=seed)

    by_count = assign(7, 0).collect()
    sizes = Counter(r["shard"] for r in by_count)
    assert sorted(sizes) == list(range(6)) and max(sizes.values()) == 7
    assert sorted(r["pos"] for r in by_count) == list(range(40))
    by_bytes = assign(100, 8000).collect()
    per = {}
    for r in sorted(by_bytes, key=lambda r: r["pos"]):
        per.setdefault(r["shard"], []).append(len(r["image"]) + 1 + HEADER_ESTIMATE)
    assert sorted(per) == list(range(len(per))) and len(per) > 3
    for sizes in per.values():  # a shard closes at the first sample starting past the limit
        assert sum(sizes[:-1]) < 8000
    # the order is a seeded shuffle by uid: same seed same order, other seed other order
    order = [r["uid"] for r in sorted(by_count, key=lambda r: r["pos"])]
    again = assign(7, 0).collect()
    assert order == [r["uid"] for r in sorted(again, key=lambda r: r["pos"])]
    other = assign(7, 0, seed=1).collect()
    assert order != [r["uid"] for r in sorted(other, key=lambda r: r["pos"])]
    # no step puts every row in one partition (no global sort, no unpartitioned window)
    for frame in (assign(7, 0), assign(100, 8000)):
        plan = frame._jdf.queryExecution().executedPlan().toString()
        assert "SinglePartition" not in plan, plan
    # the numbering does not depend on how many ranges there are
    narrow = df.select("uid", F.length("image").alias("nbytes"))

    def number(parts: int) -> list[tuple]:
        got = publish.layouts.number_ranged(narrow, ["uid"], parts).collect()
        return sorted((r["uid"], r["pos"], r["before"]) for r in got)

    one = number(1)
    assert one == number(5)
    ordered = sorted(rows)
    assert one == [(u, i, sum(len(b) for _, b in ordered[:i])) for i, (u, _) in enumerate(ordered)]


def test_crash_leftovers_are_replaced_and_manifest_without_row_is_finished(spark, tpl, tmp_path):
    lake, c = copy_lake(tpl, tmp_path)
    c = _cfg(c, force=True)  # the same selection again: these versions are forced
    base = Path(c.lake.path) / "_published" / "demo"
    ctx = publish.JobContext("publish", c)
    pins = publish.pin_versions(lake)
    rid, mid = recipe_id(c), publish.model_id(c.model)
    samples = publish.samples_frame(spark, lake, pins, rid, mid)

    def parent(version: int):  # the parent the run will pick: the latest registered
        path = str(base / f"v{version}")
        return publish.find_parent(spark, lake, c, "demo", path)

    def plan(version: int) -> dict:
        return publish._plan(spark, ctx, "demo", version, pins, rid, mid, parent(version))

    def leftover(version: int, run: str) -> dict:
        path = str(base / f"v{version}")
        return publish.materialise(spark, c, plan(version), samples, path, run, parent(version))

    def damage(path: Path, data: bytes) -> None:
        path.unlink()  # a new file, as a crashed writer leaves: reused shards are hard links
        path.write_bytes(data)

    # crash 1: shards moved into place but no manifest, plus a stale staging dir
    leftover(3, "run-a")
    (base / "v3" / "manifest.json").unlink()
    damage(base / "v3" / "shard-000000.tar", b"partial")
    stale = base / ".v3.staging-old-run"
    stale.mkdir()
    (stale / "shard-000000.tar").write_bytes(b"partial")
    res = publish.run(spark, c)
    assert res.counts["version"] == 3 and not stale.exists()
    man = json.loads((base / "v3" / "manifest.json").read_text())
    assert all(_sha(base / "v3" / s["name"]) == s["sha256"] for s in man["shards"])
    # crash 2: shards + manifest of v4 written, `datasets` row never appended
    left = leftover(4, "run-b")
    assert sorted(_datasets(spark, lake)) == [1, 2, 3]  # not a version yet
    # a manifest is only trusted if every shard still has its sha256
    shard = base / "v4" / "shard-000000.tar"
    good = shard.read_bytes()
    damage(shard, b"corrupt")
    assert reusable_manifest(open_fs(str(base))[0], str(base / "v4"), plan(4)) is None
    # so are Spark's tasks, which hash the shards of a large version many at once
    assert len(man["shards"]) > 1
    v4 = str(base / "v4")
    assert reusable_manifest(open_fs(v4)[0], v4, plan(4), spark, v4) is None
    damage(shard, good)
    assert reusable_manifest(open_fs(v4)[0], v4, plan(4), spark, v4) is not None
    res2 = publish.run(spark, c)
    assert res2.counts["version"] == 4
    man4 = json.loads((base / "v4" / "manifest.json").read_text())
    assert man4["created_at"] == left["created_at"]  # finished, not rewritten
    assert [s["sha256"] for s in man4["shards"]] == [s["sha256"] for s in man["shards"]]
    assert sorted(_datasets(spark, lake)) == [1, 2, 3, 4]


def test_bad_inputs_get_clear_errors(spark, lake, pairs_lake, cfg, tmp_path):
    with pytest.raises(JobError, match="select"):
        publish.run(spark, _cfg(cfg))  # no selection table yet
    with pytest.raises(ConfigError, match="dataset name"):
        publish.run(spark, _cfg(cfg, name="bad name"))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    write_selection(spark, lake, cfg, [r["uid"] for r in lake.read(spark, "pairs").collect()])
    other = _cfg(cfg, name="x")
    other = replace(other, select={"recipe": "datacomp-clip"})
    with pytest.raises(JobError, match="run `lakecurate select` first"):
        publish.run(spark, other)  # the configured recipe has no selection rows
    with pytest.raises(ConfigError, match="did not write"):
        publish.run(spark, _cfg(cfg, out=str(foreign)))
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_cli_publish_json(spark, tpl, tmp_path, capsys):
    lake, cfg = copy_lake(tpl, tmp_path)
    rc = publish.main(
        [
            "demo",
            "--lake",
            cfg.lake.path,
            "--shard-size",
            "100",
            "--json",
            "--force",  # demo@2 holds this selection, with the lake's model
            "--out",
            "file://" + str(tmp_path / "out" / "{name}-v{version}"),
        ]
    )
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"]["version"] == 3
    assert doc["counts"]["shard_dir"].endswith("out/demo-v3")
    assert doc["read_versions"]["selection"] == tpl["results"][2].read_versions["selection"]
    assert doc["counts"]["shard_dir"].startswith("file://")
    out = Path(doc["counts"]["shard_dir"][len("file://") :])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_id"] == "lakecurate-tiny/none/fp32"  # no model named: the lake's
    man = json.loads((out / "manifest.json").read_text())
    assert all(_sha(out / s["name"]) == s["sha256"] for s in man["shards"])
    rows = _datasets(spark, lake)
    assert rows[3]["manifest_uri"] == doc["counts"]["shard_dir"] + "/manifest.json"


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
