"""Incremental publish: a new version reuses its parent's shards (hard links) with a
deletion list per shard of the members it leaves out, compacts the shards whose deleted
fraction passes `publish.compact_fraction`, and appends the added samples in new shards.
Readers (`lakecurate.dataset`, plain webdataset plus the lists, `versions materialize`)
give exactly the version's samples."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import webdataset as wds
from test_publish_support import (
    publish_config,
    recipe_id,
    selection_rows,
    verdict,
    write_rows,
)

import lakecurate.dataset as lcd
from lakecurate.catalog import versions
from lakecurate.catalog.dataset import (
    resolve,
    selection_hash,
    selection_hash_of,
    selection_hash_since,
)
from lakecurate.curation.models import model_id
from lakecurate.curation.publish import changes
from lakecurate.curation.publish.files import Parent
from lakecurate.curation.publish.layout import DROP, MERGE, REUSE, REWRITE, ShardStat, decide
from lakecurate.deltaio.lake import Lake
from lakecurate.jobs import publish
from lakecurate.runtime.config import load_config, replace
from lakecurate.runtime.errors import ConfigError

SHARD = 32
HELD_BACK = 12  # pairs ingested only before the second version


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(res) -> tuple[Path, dict]:
    out = Path(res.counts["shard_dir"])
    return out, json.loads((out / "manifest.json").read_text())


def _index_uids(out: Path, shard: dict) -> list[str]:
    return list(pd.read_parquet(out / shard["index"])["uid"])


def _embeddings(rows: list[dict], mid: str) -> list[dict]:
    return [
        {
            "uid": r["uid"],
            "model_id": mid,
            "image_emb": [0.1, 0.2],
            "text_emb": [0.3, 0.4],
            "clip_score": (int(r["uid"][:6], 16) % 1000) / 2500,
            "run_id": "r",
            "embedded_at": None,
        }
        for r in rows
    ]


def _select(spark, lake, cfg, uids: list[str], drop: frozenset = frozenset()) -> None:
    rows = selection_rows(uids, recipe_id(cfg))
    for r in rows:
        if r["uid"] in drop:
            r["kept"], r["reason"] = False, "duplicate:phash"
    write_rows(spark, lake, "selection", rows, mode="overwrite")


@pytest.fixture(scope="module")
def chain(spark, tmp_path_factory, sample_set):
    """v1 over most pairs; v2 after ingesting a few more; v3 after one uid is dropped.
    Also a copy of the lake taken before v3 (to publish v3 again from the same parent)."""
    root = tmp_path_factory.mktemp("incremental")
    path = str(root / "lake")
    cfg = publish_config(path, "inc", SHARD)
    lake = Lake(path)
    pairs = sample_set.pair_rows()
    first, later = pairs[:-HELD_BACK], pairs[-HELD_BACK:]
    write_rows(spark, lake, "pairs", first)
    write_rows(spark, lake, "embeddings", _embeddings(pairs, model_id(cfg.model)))
    _select(spark, lake, cfg, [r["uid"] for r in first])
    v1 = publish.run(spark, cfg)
    write_rows(spark, lake, "pairs", later)  # new pairs files, as a nightly ingest adds
    all_uids = [r["uid"] for r in pairs]
    _select(spark, lake, cfg, all_uids)
    v2 = publish.run(spark, cfg)
    _, m2 = _manifest(v2)
    victim_shard = m2["shards"][1]
    victim = _index_uids(Path(v2.counts["shard_dir"]), victim_shard)[3]
    _select(spark, lake, cfg, all_uids, drop=frozenset([victim]))
    shutil.copytree(path, root / "lake-copy", ignore=shutil.ignore_patterns("_published"))
    v3 = publish.run(spark, cfg)
    return {
        "cfg": cfg,
        "lake": lake,
        "root": root,
        "results": {1: v1, 2: v2, 3: v3},
        "added": {r["uid"] for r in later if verdict(r["uid"])[0]},
        "kept": {u for u in all_uids if verdict(u)[0]},
        "victim": victim,
        "victim_shard": victim_shard["name"],
    }


def test_adding_uids_reuses_every_shard_and_appends_new_ones(chain):
    out1, m1 = _manifest(chain["results"][1])
    out2, m2 = _manifest(chain["results"][2])
    assert m1["parent"] is None and m1["layout"]["mode"] == "full"
    assert m2["parent"]["version"] == 1 and m2["layout"]["mode"] == "incremental"
    assert chain["added"]  # the sample set keeps some of the held-back pairs
    old = {s["name"]: s for s in m1["shards"]}
    for s in m2["shards"]:
        if s["name"] in old:  # every v1 shard is in v2, as the same bytes (the same file)
            assert s["reused"] and s["sha256"] == old[s["name"]]["sha256"]
            assert _sha(out2 / s["name"]) == s["sha256"]
            for f in (s["name"], s["index"]):
                assert os.stat(out2 / f).st_ino == os.stat(out1 / f).st_ino
    assert {s["name"] for s in m2["shards"]} >= set(old)
    new = [s for s in m2["shards"] if s["name"] not in old]
    assert new and not any(s["reused"] for s in new)
    assert [s["name"] for s in m2["shards"]] == sorted(s["name"] for s in m2["shards"])
    new_uids = [u for s in new for u in _index_uids(out2, s)]
    assert sorted(new_uids) == sorted(chain["added"])
    assert all(_sha(out2 / s["name"]) == s["sha256"] for s in new)
    # pos continues after the parent's: unique and increasing in shard order
    pos = [p for s in m2["shards"] for p in pd.read_parquet(out2 / s["index"])["pos"]]
    assert pos == sorted(pos) and len(set(pos)) == len(pos)
    assert m2["counts"]["num_samples"] == len(chain["kept"])


def test_a_dropped_uid_goes_into_its_shards_deletion_list(chain):
    out2, m2 = _manifest(chain["results"][2])
    out3, m3 = _manifest(chain["results"][3])
    before = {s["name"]: s for s in m2["shards"]}
    lay = m3["layout"]
    assert m3["parent"]["version"] == 2 and lay["rewrite_shards"] == 0
    assert (lay["shards_with_deletions"], lay["deleted"], lay["removed"]) == (1, 1, 1)
    assert m2["exact"] is True and m3["exact"] is False
    assert m3["counts"]["num_deleted"] == 1
    assert {s["name"] for s in m3["shards"]} == set(before)
    for s in m3["shards"]:  # every shard is its parent's file, as the same bytes
        assert s["reused"] and s["sha256"] == before[s["name"]]["sha256"]
        assert os.stat(out3 / s["name"]).st_ino == os.stat(out2 / s["name"]).st_ino
        if s["name"] == chain["victim_shard"]:
            dels = pd.read_parquet(out3 / s["deletions"])["key"].tolist()
            assert dels == [chain["victim"]] and s["deleted"] == 1
            assert s["deletions_sha256"] == _sha(out3 / s["deletions"])
            assert s["num_samples"] == before[s["name"]]["num_samples"] - 1
        else:
            assert s["deleted"] == 0 and s["deletions"] is None


def test_versions_diff_and_show_of_incremental_versions(spark, chain, capsys):
    lake = chain["lake"]
    a, b = (resolve(spark, lake, "inc", v) for v in (2, 3))
    doc = versions.diff_versions(spark, lake, a, b, None)
    assert doc["added"]["count"] == 0
    assert [r["uid"] for r in doc["removed"]["sample"]] == [chain["victim"]]
    # the fixture writes selection rows without a recipe's rules: a cause it cannot name
    assert doc["churn"] == {"removed": 1, "by_cause": {"other": 1}, "thresholds_refitted": False}
    doc = versions.diff_versions(spark, lake, resolve(spark, lake, "inc", 1), a, None)
    assert {r["uid"] for r in doc["added"]["sample"]} == chain["added"]
    assert versions.main(["show", "inc@3", "--lake", lake.root]) == 0
    shown = capsys.readouterr().out
    assert "incremental over inc@2: " in shown
    assert "1 samples in the deletion lists of 1 shards" in shown and "exact:    no" in shown
    assert versions.main(["diff", "inc@2", "inc@3", "--lake", lake.root]) == 0
    assert "churn: 1 of inc@2 missing from inc@3 (other 1)" in capsys.readouterr().out


def _plain_read(out: Path, manifest: dict) -> list[dict]:
    """A plain webdataset reader plus the deletion lists, as a user without our loader."""
    urls = [str(out / s["name"]) for s in manifest["shards"]]
    deleted = {
        str(out / s["name"]): set(pd.read_parquet(out / s["deletions"])["key"])
        for s in manifest["shards"]
        if s["deletions"]
    }
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil")
    return [x for x in ds if x["__key__"] not in deleted.get(x["__url__"], ())]


def _keys(batch) -> list[str]:
    return list(batch["__key__"])


def test_loaders_give_exactly_the_selection(chain):
    out3, m3 = _manifest(chain["results"][3])
    expected = chain["kept"] - {chain["victim"]}
    assert chain["results"][3].counts["num_samples"] == len(expected)
    assert m3["counts"]["num_samples"] == len(expected)
    # the shards themselves still hold the victim: an unfiltered read sees it
    raw = wds.WebDataset([str(out3 / s["name"]) for s in m3["shards"]], shardshuffle=False)
    assert chain["victim"] in {x["__key__"] for x in raw}
    plain = _plain_read(out3, m3)
    assert sorted(x["__key__"] for x in plain) == sorted(expected)
    assert all(x["json"]["uid"] == x["__key__"] and x["jpg"].size for x in plain)
    ours = list(lcd.webdataset(str(out3), empty_check=False).decode("pil"))
    assert [x["__key__"] for x in ours] == [x["__key__"] for x in plain]
    # the torch IterableDataset through a two-worker DataLoader
    loader = torch.utils.data.DataLoader(
        lcd.ShardDataset(str(out3 / "manifest.json")), batch_size=None, num_workers=2
    )
    got = [x["__key__"] for x in loader]
    assert sorted(got) == sorted(expected) and len(got) == len(set(got))
    # two ranks split the shards between them, together exactly once
    ranks = [lcd.ShardDataset(str(out3), rank=r, world_size=2) for r in (0, 1)]
    split = [[x["__key__"] for x in ds] for ds in ranks]
    assert sorted(split[0] + split[1]) == sorted(expected) and all(split)
    # the WebDataset pipeline in DataLoader workers (the predicate travels to them)
    wl = torch.utils.data.DataLoader(
        lcd.webdataset(str(out3), empty_check=False).batched(8), batch_size=None, num_workers=2
    )
    assert sorted(k for b in wl for k in _keys(b)) == sorted(expected)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        lcd.open_version(str(chain["root"]))


def test_materialize_writes_an_exact_copy(spark, chain, tmp_path, capsys):
    lake = chain["lake"]
    out3, m3 = _manifest(chain["results"][3])
    dest = tmp_path / "exact"
    args = ["materialize", "inc@3", "--out", str(dest), "--lake", lake.root]
    assert versions.main(args) == 0
    assert "1 rewritten without their deleted samples" in capsys.readouterr().out
    copy = json.loads((dest / "manifest.json").read_text())
    assert copy["exact"] is True and copy["materialized_from"]["ref"] == "inc@3"
    assert not any(s["deletions"] for s in copy["shards"])
    expected = sorted(chain["kept"] - {chain["victim"]})
    urls = [str(dest / s["name"]) for s in copy["shards"]]
    plain = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert sorted(x["__key__"] for x in plain) == expected
    for s in copy["shards"]:
        assert _sha(dest / s["name"]) == s["sha256"]
        idx = pd.read_parquet(dest / s["index"])
        assert s["num_samples"] == len(idx)
        with open(dest / s["name"], "rb") as f:  # the index offsets point at each sample
            for key, offset in zip(idx["key"], idx["offset"], strict=True):
                f.seek(offset)
                assert f.read(100).split(b"\0", 1)[0].decode().startswith(key)
    victim = next(s for s in copy["shards"] if s["name"] == chain["victim_shard"])
    assert chain["victim"] not in set(_index_uids(dest, victim))
    # a re-run finds the finished copy; another version into it is refused
    assert versions.main(args) == 0
    assert "materialize" in versions.build_parser().format_help()
    other = ["materialize", "inc@2", "--out", str(dest), "--lake", lake.root]
    assert versions.main(other) == 2
    assert "already holds another version" in capsys.readouterr().err


def test_compaction_writes_the_bytes_of_the_exact_copy(spark, chain, tmp_path):
    """Past `compact_fraction` the shard is rewritten without its deleted members: the
    same bytes `versions materialize` writes for it, and no deletion list."""
    root = tmp_path
    shutil.copytree(chain["root"] / "lake-copy", root / "lake")
    cfg = replace(
        chain["cfg"],
        lake={"path": str(root / "lake")},
        publish={"out": str(root / "v{version}"), "compact_fraction": 0.01},
    )
    res = publish.run(spark, cfg)
    out, m = _manifest(res)
    assert m["exact"] is True and m["layout"]["rewrite_shards"] == 1
    shard = next(s for s in m["shards"] if s["name"] == chain["victim_shard"])
    assert not shard["reused"] and shard["deletions"] is None
    assert chain["victim"] not in _index_uids(out, shard)
    dest = tmp_path / "exact"
    assert (
        versions.main(["materialize", "inc@3", "--out", str(dest), "--lake", chain["lake"].root])
        == 0
    )
    copy = json.loads((dest / "manifest.json").read_text())
    twin = next(s for s in copy["shards"] if s["name"] == chain["victim_shard"])
    assert twin["sha256"] == shard["sha256"] == _sha(out / shard["name"])


def test_a_deleted_uid_selected_again_leaves_the_deletion_list(spark, chain, tmp_path):
    shutil.copytree(
        chain["cfg"].lake.path, tmp_path / "lake", ignore=shutil.ignore_patterns("_published")
    )
    cfg = replace(chain["cfg"], lake={"path": str(tmp_path / "lake")})
    lake = Lake(cfg.lake.path)
    out2, m2 = _manifest(chain["results"][2])
    out3, m3 = _manifest(chain["results"][3])
    uids = [u for s in m3["shards"] for u in _index_uids(out3, s)]
    _select(spark, lake, cfg, uids)  # the victim is back
    res = publish.run(spark, cfg)
    out4, m4 = _manifest(res)
    assert m4["exact"] is True and m4["layout"]["added"] == 0
    assert [(s["name"], s["sha256"]) for s in m4["shards"]] == [
        (s["name"], s["sha256"]) for s in m2["shards"]
    ]
    assert m4["counts"]["num_samples"] == m2["counts"]["num_samples"]
    assert not list(out4.glob("*.deleted.parquet"))
    # then two others go: a new deletion list (not the parent's) for the shard that had none
    shard = m2["shards"][0]
    gone = _index_uids(out2, shard)[:2]
    _select(spark, lake, cfg, uids, drop=frozenset(gone))
    out5, m5 = _manifest(publish.run(spark, cfg))
    rec = next(s for s in m5["shards"] if s["name"] == shard["name"])
    assert sorted(pd.read_parquet(out5 / rec["deletions"])["key"]) == sorted(gone)
    assert m5["layout"]["removed"] == 2 and m5["exact"] is False


def test_same_pins_and_parent_give_byte_identical_shards(spark, chain):
    path = str(chain["root"] / "lake-copy")
    cfg = replace(chain["cfg"], lake={"path": path})
    again = publish.run(spark, replace(cfg, publish={"out": str(chain["root"] / "again")}))
    out3, m3 = _manifest(chain["results"][3])
    out_b, mb = _manifest(again)
    assert mb["parent"] == m3["parent"] and mb["pinned_versions"] == m3["pinned_versions"]
    assert [(s["name"], s["sha256"], s["reused"]) for s in mb["shards"]] == [
        (s["name"], s["sha256"], s["reused"]) for s in m3["shards"]
    ]
    for s in mb["shards"]:
        assert _sha(out_b / s["name"]) == s["sha256"]
        assert (out_b / s["index"]).read_bytes() == (out3 / s["index"]).read_bytes()
    dels = [s["deletions"] for s in mb["shards"] if s["deletions"]]
    assert dels and dels == [s["deletions"] for s in m3["shards"] if s["deletions"]]
    for name in dels:
        assert (out_b / name).read_bytes() == (out3 / name).read_bytes()


def test_small_shard_merging_and_the_full_layout(spark, chain, tmp_path):
    shutil.copytree(
        chain["cfg"].lake.path, tmp_path / "lake", ignore=shutil.ignore_patterns("_published")
    )
    cfg = replace(chain["cfg"], lake={"path": str(tmp_path / "lake")})
    out3, m3 = _manifest(chain["results"][3])
    # v3 holds one small shard (v2's tail of added samples); with max_small_shards 1 it
    # is merged into a new tail shard, in its old order; the others are reused
    small = [s for s in m3["shards"] if 2 * s["num_samples"] < SHARD]
    assert len(small) == 1
    merged = publish.run(spark, replace(cfg, publish={"force": True, "max_small_shards": 1}))
    out_m, mm = _manifest(merged)
    assert mm["layout"]["merge_shards"] == 1
    assert mm["layout"]["reuse_shards"] == len(m3["shards"]) - 1
    tail = mm["shards"][-1]
    assert not tail["reused"] and tail["name"] > m3["shards"][-1]["name"]
    assert _index_uids(out_m, tail) == _index_uids(out3, small[0])
    assert small[0]["name"] not in {s["name"] for s in mm["shards"]}
    assert mm["counts"]["num_samples"] == m3["counts"]["num_samples"]
    # --full: a fresh seeded layout, nothing reused, no parent
    full = publish.run(spark, replace(cfg, publish={"force": True, "incremental": False}))
    _, mf = _manifest(full)
    assert mf["parent"] is None and mf["layout"] == {"mode": "full"}
    assert not any(s["reused"] for s in mf["shards"])
    assert mf["counts"]["num_samples"] == m3["counts"]["num_samples"]
    assert len(mf["shards"]) == -(-mf["counts"]["num_samples"] // SHARD)


def test_changes_in_most_shards_write_every_shard_afresh(spark, chain, tmp_path):
    shutil.copytree(
        chain["cfg"].lake.path, tmp_path / "lake", ignore=shutil.ignore_patterns("_published")
    )
    cfg = replace(chain["cfg"], lake={"path": str(tmp_path / "lake")})
    out3, m3 = _manifest(chain["results"][3])
    # one uid dropped from every shard: with deletion lists every shard is still reused
    drop = frozenset(_index_uids(out3, s)[0] for s in m3["shards"])
    uids = [u for s in m3["shards"] for u in _index_uids(out3, s)]
    _select(spark, Lake(cfg.lake.path), cfg, uids, drop=drop)
    listed = publish.run(spark, cfg)
    _, ml = _manifest(listed)
    assert ml["layout"]["mode"] == "incremental"
    assert (
        ml["layout"]["reuse_shards"] == len(m3["shards"]) == ml["layout"]["shards_with_deletions"]
    )
    assert ml["counts"]["num_samples"] == len(uids) - len(drop)  # v3's victim is back
    # with compact_fraction 0 (always exact) nothing is reusable, so rewriting every shard
    # from the parent's tars would cost more than a fresh layout
    exact = replace(cfg, publish={"force": True, "compact_fraction": 0.0})
    fresh = publish.run(spark, exact)
    _, mf = _manifest(fresh)
    assert mf["parent"]["version"] == 4 and mf["layout"]["mode"] == "full"
    assert mf["layout"]["reason"].startswith(f"only 0 of {len(uids) - len(drop)} samples")
    assert not any(s["reused"] for s in mf["shards"]) and mf["exact"] is True
    assert mf["counts"]["num_samples"] == len(uids) - len(drop)
    # the same change with min_reuse 0 rewrites (compacts) every shard over the parent
    again = publish.run(spark, replace(exact, publish={"min_reuse": 0.0, "incremental": True}))
    _, ma = _manifest(again)
    assert ma["layout"]["mode"] == "incremental" and ma["parent"]["version"] == 5
    assert ma["counts"]["num_samples"] == mf["counts"]["num_samples"]
    with pytest.raises(ConfigError, match="publish.min_reuse"):
        load_config(None, {"publish.min_reuse": 1.5})
    with pytest.raises(ConfigError, match="publish.compact_fraction"):
        load_config(None, {"publish.compact_fraction": 1.0})


def test_decide_actions_and_the_small_shard_rule():
    stats = [
        ShardStat(0, 10, 10, 10, 1000),  # untouched -> reuse
        ShardStat(1, 10, 9, 10, 1000),  # one member changed -> rewrite
        ShardStat(2, 10, 5, 5, 500),  # lost half -> rewrite
        ShardStat(3, 4, 0, 0, 0),  # every member gone -> drop
        ShardStat(4, 3, 3, 3, 300),  # small (3 < 10/2) -> reuse while few are small
    ]
    assert decide(stats, 10, 0, 3) == {0: REUSE, 1: REWRITE, 2: REWRITE, 3: DROP, 4: REUSE}
    assert decide(stats, 10, 0, 3, 0.5)[2] == REUSE  # half deleted: not past 0.5
    # two small survivors (5 is not small: 2*5 >= 10; 4 is) with max 1: merge them
    assert decide(stats, 10, 0, 1)[4] == MERGE
    assert decide(stats, 10, 0, 1)[2] == REWRITE
    # with a byte bound a shard is small only when it is also under half the bytes
    assert decide(stats, 10, 400, 1)[4] == REUSE
    assert decide(stats, 10, 700, 1)[4] == MERGE
    # deletions: reused with a deletion list up to compact_fraction, compacted past it
    lost = [ShardStat(0, 10, 8, 8, 800), ShardStat(1, 10, 7, 7, 700)]
    assert decide(lost, 10, 0, 3, 0.2) == {0: REUSE, 1: REWRITE}
    assert decide(lost, 10, 0, 3, 0.3) == {0: REUSE, 1: REUSE}
    assert decide(lost, 10, 0, 3, 0.0) == {0: REWRITE, 1: REWRITE}
    # a changed member is rewritten whatever the fraction
    assert decide([ShardStat(0, 10, 9, 10, 1000)], 10, 0, 3, 0.9) == {0: REWRITE}


def test_config_checks_the_incremental_keys(tmp_path):
    with pytest.raises(ConfigError, match="publish.max_small_shards"):
        load_config(None, {"publish.max_small_shards": 0})
    with pytest.raises(ConfigError, match="publish.incremental"):
        load_config(None, {"publish.incremental": "sometimes"})
    args = publish.build_parser().parse_args(["demo", "--full"])
    assert publish.apply_args(load_config(None, {}), args).publish.incremental is False


def test_images_are_read_back_from_the_parent_tar_and_checked(tmp_path):
    shardlib = publish.shardlib
    row = {"uid": "u1", "image": b"jpeg-bytes", "image_format": "jpeg", "caption": "c", "pos": 0}
    with open(tmp_path / "p.tar", "wb") as f:
        shardlib.write_tar([row], f)
    want = {"uid": "u1", "image": None, "src_uri": str(tmp_path / "p.tar"), "src_member": "u1.jpg"}
    good = hashlib.sha256(b"jpeg-bytes").hexdigest()
    assert shardlib.fill_images([{**want, "image_sha256": good}])[0]["image"] == b"jpeg-bytes"
    with pytest.raises(ValueError, match=shardlib.PARENT_DAMAGED):
        shardlib.fill_images([{**want, "image_sha256": "0" * 64}])


def test_only_the_parent_shards_holding_changed_uids_are_compared(
    spark, chain, tmp_path, monkeypatch
):
    out2, m2 = _manifest(chain["results"][2])
    out3, m3 = _manifest(chain["results"][3])
    parent = Parent(2, str(out2), m2)
    # v3's pins against v2's: the selection was overwritten whole, yet one uid changed
    uids, why = changes.changed_since_parent(spark, chain["lake"], chain["cfg"], parent, m3)
    assert why == "" and [r["uid"] for r in uids.collect()] == [chain["victim"]]
    victim_shard = int(chain["victim_shard"][len("shard-") : -len(".tar")])
    assert changes.shards_holding(spark, parent, uids) == {victim_shard}
    uids.unpersist()
    # another recipe or model than the parent's: every index is compared
    other = dict(m3, model_id="other")
    assert changes.changed_since_parent(spark, chain["lake"], chain["cfg"], parent, other) == (
        None,
        "the parent has another recipe or model",
    )
    # comparing every shard (as before) lays v3 out exactly as comparing the changed ones
    shutil.copytree(
        chain["root"] / "lake-copy", tmp_path / "lake", ignore=shutil.ignore_patterns("_published")
    )
    cfg = replace(chain["cfg"], lake={"path": str(tmp_path / "lake")})
    monkeypatch.setattr(changes, "changed_since_parent", lambda *a: (None, "forced by a test"))
    out_f, mf = _manifest(publish.run(spark, replace(cfg, publish={"out": str(tmp_path / "f")})))
    keys = ("name", "sha256", "reused", "num_samples", "deleted", "deletions_sha256")
    assert [{k: s[k] for k in keys} for s in mf["shards"]] == [
        {k: s[k] for k in keys} for s in m3["shards"]
    ]
    assert mf["layout"] == m3["layout"] and mf["selection_hash"] == m3["selection_hash"]


def test_the_selection_hash_follows_the_change_since_the_parent(spark, chain):
    _, m2 = _manifest(chain["results"][2])
    _, m3 = _manifest(chain["results"][3])
    lake, rid = chain["lake"], m3["recipe_id"]
    then, now = m2["pinned_versions"]["selection"], m3["pinned_versions"]["selection"]
    want = selection_hash(chain["kept"] - {chain["victim"]})
    assert m3["selection_hash"] == want == selection_hash_of(spark, lake, rid, now)
    assert selection_hash_since(spark, lake, rid, m2["selection_hash"], then, now) == want
    assert selection_hash_since(spark, lake, rid, want, now, now) == want  # nothing changed
    # a hash in the format before the additive one cannot be carried forward
    old_format = hashlib.sha256(b"x").hexdigest()
    assert selection_hash_since(spark, lake, rid, old_format, then, now) is None
