"""MetaCLIP curation: metadata import/build, caption matching against the reference
rule, incremental counts, and balancing against the reference formula."""

from __future__ import annotations

import json
import math
import random

import benchmark_modules
import pyarrow as pa
import pytest

from lakecurate.curation.concepts import counts as cc
from lakecurate.curation.concepts import metadata as meta
from lakecurate.deltaio.lake import Commit, Lake
from lakecurate.jobs import concepts as concepts_job
from lakecurate.jobs import metadata as metadata_job
from lakecurate.jobs import selection as select_job
from lakecurate.runtime.config import replace
from lakecurate.runtime.errors import ConfigError, JobError
from lakecurate.runtime.runs import last_run
from lakecurate.schemas import TABLES
from lakecurate.udfs.concepts import Matcher

bench = benchmark_modules.load("select_bunny")  # _table, write_lake, _hex
texts = benchmark_modules.load("real_texts")  # KJV verses (public domain)


def reference_substr_matching(text: str, entries: list[str]) -> list[int]:
    """MetaCLIP's rule written out directly: pad, space the punctuation, and look for
    " entry " in the text, entry by entry."""
    spaced = f" {text} "
    for p in [",", ".", ";", ":", "?", "!", "`"]:
        spaced = spaced.replace(p, f" {p} ")
    for c in ["\t", "\n", "\r"]:
        spaced = spaced.replace(c, " ")
    return sorted(i for i, e in enumerate(entries) if f" {e} " in spaced)


def _verses(n: int) -> list[str]:
    by_key, _ = texts._edition("KJV")
    rng = random.Random(5)
    return rng.sample(sorted(by_key.values()), n)


def test_matching_equals_metaclip_substr_matching_on_real_text():
    captions = _verses(400)
    captions += ["LORD, the God of Israel;said:\tAmen", "", "a  b", "selah?", "`Lord`"]
    words = sorted({w.strip(",.;:?!`") for c in captions for w in c.split()} - {""})
    rng = random.Random(1)
    entries = rng.sample(words, 300)
    entries += ["the LORD", "God of Israel", "said unto", "Amen", "?", "Lord`", "a b"]
    m = Matcher(entries)
    for c in captions:
        assert m.match(c) == reference_substr_matching(c, entries), c
    matched = sum(bool(m.match(c)) for c in captions)
    assert matched > 300  # the check is not vacuous


def _pairs(uids: list[str], captions: list[str]) -> pa.Table:
    n = len(uids)
    cols = {
        "uid": uids,
        "image_sha256": [bench._hex("i", u) for u in uids],
        "caption": captions,
        "width": [256] * n,
        "height": [256] * n,
    }
    return bench._table(TABLES["pairs"].schema, cols, n)


def _entry_file(tmp_path, entries: list[str]) -> str:
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(entries))
    return str(path)


def _import(spark, cfg, path: str) -> int:
    args = metadata_job.build_parser().parse_args(["import", path])
    return metadata_job.do_import(spark, cfg, args)["version"]


def test_import_formats_and_bad_files(spark, cfg, tmp_path):
    text = tmp_path / "entries.txt"
    text.write_text("cat\n\ndog\ncat\n  red car  \n")
    got = meta.read_entry_file(str(text))
    assert (got.entries, got.ids) == (["cat", "dog", "red car"], [0, 1, 3])
    js = tmp_path / "metadata.json"
    js.write_text(json.dumps(["a", "b", "a", "c"]))
    assert meta.read_entry_file(str(js)).ids == [0, 1, 3]
    js.write_text(json.dumps(["a", 3]))
    with pytest.raises(ConfigError, match="item 1 is 3"):
        meta.read_entry_file(str(js))
    js.write_text("[not json")
    with pytest.raises(ConfigError, match="not"):
        meta.read_entry_file(str(js))
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ConfigError, match="no entries"):
        meta.read_entry_file(str(tmp_path / "empty.txt"))
    with pytest.raises(ConfigError, match="no such file"):
        meta.read_entry_file(str(tmp_path / "missing.json"))
    lake = Lake(cfg.lake.path)
    assert _import(spark, cfg, str(text)) == 1
    assert _import(spark, cfg, str(text)) == 2
    assert cc.latest_metadata_version(lake) == 2
    assert cc.entries(lake, 2) == {0: "cat", 1: "dog", 3: "red car"}
    with pytest.raises(JobError, match="metadata import"):
        cc.require_metadata_version(Lake(str(tmp_path / "other")))


def _pool(head: dict[str, int], tail: dict[str, int], prefix: str, start: int = 0):
    """Captions each matching exactly one entry: `count` pairs per entry."""
    uids, caps = [], []
    i = start
    for entry, n in {**head, **tail}.items():
        for _ in range(n):
            uids.append(bench._hex(prefix, i))
            caps.append(f"a photo of {entry} number {i}")
            i += 1
    return uids, caps


HEAD = {"heada": 1500, "headb": 900, "headc": 600}
TAIL = {f"tail{k}": 10 + k for k in range(30)}
T = 60


def _recipe(tmp_path) -> str:
    path = tmp_path / "balance.yaml"
    path.write_text(f"rules:\n  - has_concept\n  - balance: {{t: {T}, seed: 4}}\n")
    return str(path)


def test_balancing_keeps_about_t_per_head_entry_and_tails_whole(spark, cfg, tmp_path):
    lake = Lake(cfg.lake.path)
    uids, caps = _pool(HEAD, TAIL, "p")
    nomatch = [bench._hex("x", i) for i in range(40)]
    bench.write_lake(spark, lake, {"pairs": _pairs(uids + nomatch, caps + ["nothing here"] * 40)})
    entries = ["zebra crossing", *HEAD, *TAIL]  # the first matches nothing
    _import(spark, cfg, _entry_file(tmp_path, entries))
    res = concepts_job.run(spark, cfg).counts
    assert res["matched"] == len(uids) + 40 and res["counted"] == len(uids) + 40
    counts = cc.entry_counts(lake, 1)
    assert counts == {entries.index(e): n for e, n in {**HEAD, **TAIL}.items()}

    cfg = replace(cfg, select={"recipe": _recipe(tmp_path)})
    out = select_job.run(spark, cfg).counts
    sel = lake.read(spark, "selection").toPandas().set_index("uid")
    assert (sel.loc[nomatch, "reason"] == "no_concept").all()
    by_entry = {
        e: sel.loc[[u for u, c in zip(uids, caps, strict=True) if f" {e} " in f" {c} "]]
        for e in {**HEAD, **TAIL}
    }
    for e, n in HEAD.items():
        kept = int(by_entry[e].kept.sum())
        sd = math.sqrt(T * (1 - T / n))
        assert abs(kept - T) <= 4 * sd, (e, kept)
        assert (by_entry[e].reason.dropna() == "balance").all()
    for e in TAIL:
        assert by_entry[e].kept.all()
    funnel = {s["rule"]: s["dropped"] for s in out["funnel"]}
    assert funnel["no_concept"] == 40
    assert funnel["balance"] == sum(HEAD.values()) - int(sum(by_entry[e].kept.sum() for e in HEAD))
    head_kept = int(sum(by_entry[e].kept.sum() for e in HEAD))
    assert out["balance"] == {
        "t": T,
        "head_entries": len(HEAD),
        "tail_entries": len(TAIL),
        "head_pool": sum(HEAD.values()),
        "head_kept": head_kept,
        "tail_pool": sum(TAIL.values()),
        "tail_kept": sum(TAIL.values()),
    }


def test_counts_are_incremental_and_kept_head_rows_only_leave(spark, cfg, tmp_path, monkeypatch):
    lake = Lake(cfg.lake.path)
    entries = [*HEAD, *TAIL]
    old_uids, old_caps = _pool(HEAD, TAIL, "o")
    bench.write_lake(spark, lake, {"pairs": _pairs(old_uids, old_caps)})
    _import(spark, cfg, _entry_file(tmp_path, entries))
    concepts_job.run(spark, cfg)
    cfg = replace(cfg, select={"recipe": _recipe(tmp_path)})
    select_job.run(spark, cfg)
    kept_before = set(lake.read(spark, "selection").filter("kept").toPandas().uid)

    more = {e: n // 2 for e, n in HEAD.items()}  # the head grows by half
    new_uids, new_caps = _pool(more, {"tail0": 3}, "n", start=10_000)
    t = _pairs(new_uids, new_caps)
    bench.write_lake(spark, lake, {"pairs": t})
    # after a complete match only the pairs added since are looked at
    matched = last_run(lake.root, concepts_job.MATCHED)
    assert matched["metadata_version"] == 1 and matched["versions"]["pairs"] < lake.version("pairs")
    ctx = concepts_job.JobContext("concepts", cfg)
    assert concepts_job.pending_uids(spark, ctx, 1).count() == len(new_uids)
    # a run killed after matching, before counting: the next run counts what it left
    assert concepts_job.match_new(spark, ctx, 1) == len(new_uids)
    second = concepts_job.run(spark, cfg).counts
    assert second["matched"] == 0 and second["counted"] == len(new_uids)
    assert concepts_job.run(spark, cfg).counts["counted"] == 0  # nothing left to count
    # `pairs` rewritten (a compaction, say): every pair is looked at, and every concepts
    # row can cover one, so nothing is pending
    pairs = lake.read(spark, "pairs").persist()
    lake.write(pairs, "pairs", Commit("t", "rewrite"), mode="overwrite")
    pairs.unpersist()
    ctx = concepts_job.JobContext("concepts", cfg)
    assert concepts_job.pending_uids(spark, ctx, 1).count() == 0

    whole = Lake(str(tmp_path / "whole"))
    wcfg = replace(cfg, lake={"path": whole.root})
    bench.write_lake(spark, whole, {"pairs": _pairs(old_uids, old_caps)})
    bench.write_lake(spark, whole, {"pairs": t})
    _import(spark, wcfg, _entry_file(tmp_path, entries))
    concepts_job.run(spark, wcfg)
    assert cc.entry_counts(lake, 1) == cc.entry_counts(whole, 1)
    assert cc.entry_counts(lake, 1)[entries.index("heada")] == 1500 + 750

    # two counting runs appended rows; folding sums them into one row per entry with
    # the same counts and the same version counted through
    assert cc.counting_runs(lake, 1) == 2
    sums, through = cc.entry_counts(lake, 1), cc.counted_through(lake, 1)
    assert not concepts_job.fold_counts(spark, ctx, 1)  # below FOLD_RUNS: left alone
    monkeypatch.setattr(concepts_job, "FOLD_RUNS", 2)
    assert concepts_job.fold_counts(spark, ctx, 1)
    assert cc.entry_counts(lake, 1) == sums and cc.counted_through(lake, 1) == through
    assert cc.counting_runs(lake, 1) == 1
    assert lake.read(spark, "concept_counts").count() == len(sums) + 1  # and the marker

    select_job.run(spark, cfg)
    sel = lake.read(spark, "selection").toPandas().set_index("uid")
    kept_after = set(sel[sel.kept].index)
    old_head = {u for u, c in zip(old_uids, old_caps, strict=True) if "head" in c}
    # probabilities only fell: no old head row came back, some left
    assert (kept_after & old_head) < (kept_before & old_head)
    assert all(sel.loc[u, "kept"] for u, c in zip(old_uids, old_caps, strict=True) if "tail" in c)


def test_matching_tasks_hold_many_captions_not_one_pairs_file_each(spark, cfg, tmp_path):
    # a whole number of rounds of one task per core, each at most CAPTIONS_PER_TASK
    per = concepts_job.CAPTIONS_PER_TASK
    assert concepts_job.match_tasks(2, 3 * per) == 4
    assert concepts_job.match_tasks(2, 4 * per) == 4
    assert concepts_job.match_tasks(2, 4 * per + 1) == 6
    assert concepts_job.match_tasks(8, 10) == 8
    assert concepts_job.match_tasks(0, 10) == 1
    # a lake of many small `pairs` files (one per ingested tar) is matched in few tasks
    lake = Lake(cfg.lake.path)
    uids, caps = _pool({"heada": 30}, {"tail1": 12}, "f")
    for k in range(0, len(uids), 6):
        bench.write_lake(spark, lake, {"pairs": _pairs(uids[k : k + 6], caps[k : k + 6])})
    files = len(lake.add_actions("pairs"))
    _import(spark, cfg, _entry_file(tmp_path, ["heada", "tail1"]))
    ctx = concepts_job.JobContext("concepts", cfg)
    pending = concepts_job.pending_uids(spark, ctx, 1).persist()
    rows = concepts_job.captions_to_match(spark, ctx, pending, len(uids))
    want = concepts_job.match_tasks(spark.sparkContext.defaultParallelism, len(uids))
    assert files >= 7 and rows.rdd.getNumPartitions() == want < files
    assert sorted(r.uid for r in rows.collect()) == sorted(uids)
    pending.unpersist()


def test_build_mines_unigrams_and_pmi_bigrams_from_captions(spark, cfg, tmp_path):
    lake = Lake(cfg.lake.path)
    caps = ["red fox jumps"] * 8 + ["blue jay sings"] * 6 + ["red car", "a fox", "the jay"] * 3
    caps += [f"word{i} filler" for i in range(200)]
    uids = [bench._hex("b", i) for i in range(len(caps))]
    bench.write_lake(spark, lake, {"pairs": _pairs(uids, caps)})
    mined = meta.mine_captions(lake.read(spark, "pairs", columns=["caption"]), 6, 5.0)
    assert mined.min_count == 6 and mined.words == sum(len(c.split()) for c in caps)
    assert {"red", "fox", "jay", "blue", "filler"} <= set(mined.unigrams)
    assert "word1" not in mined.unigrams  # seen once
    # "red fox" is frequent and its words mostly go together; "word1 filler" is rare
    assert {"red fox", "blue jay", "fox jumps", "jay sings"} <= set(mined.bigrams)
    assert not any(b.endswith("filler") for b in mined.bigrams)
    assert meta.scaled_min_count(10_000) == meta.MIN_COUNT_FLOOR
    assert meta.scaled_min_count(6_000_000_000) == 200
    args = metadata_job.build_parser().parse_args(["build", "--min-count", "6", "--min-pmi", "5"])
    doc = metadata_job.do_build(spark, cfg, args)
    assert doc["version"] == 1 and doc["sources"]["bigram"] == len(mined.bigrams)
    assert doc["sources"]["words:english-words/web2"] > 200_000
    held = set(cc.entries(lake, 1).values())
    assert {"red fox", "fox", "zebra"} <= held


def test_refresh_with_the_metaclip_recipe_matches_only_new_captions(spark, cfg, tmp_path):
    from lakecurate.catalog import report
    from lakecurate.catalog.dataset import resolve
    from lakecurate.demo.sample import generate
    from lakecurate.jobs import refresh

    night1, night2 = generate(n=60, seed=21, prefix="a"), generate(n=20, seed=22, prefix="b")
    night1.write_webdataset(tmp_path / "n1", shard_size=30)
    night2.write_webdataset(tmp_path / "n2", shard_size=20)
    words = sorted({w for r in night1.pair_rows() for w in (r["caption"] or "").split()})
    cfg = replace(cfg, select={"recipe": "metaclip"}, publish={"name": "mc"})

    def nightly(*dirs):
        srcs = [{"uri": str(tmp_path / d), "format": "webdataset"} for d in dirs]
        return {
            s["stage"]: s for s in refresh.run(spark, replace(cfg, sources=srcs)).counts["stages"]
        }

    with pytest.raises(JobError, match="metadata import"):
        nightly("n1")  # no metadata yet: the concepts stage says what to run
    _import(spark, cfg, _entry_file(tmp_path, words))
    first = nightly("n1")
    assert first["concepts"]["status"] == "ok"
    # the failed night had ingested its pairs already: this one matches them all
    assert first["concepts"]["counts"]["matched"] == Lake(cfg.lake.path).count("pairs") > 0
    second = nightly("n1", "n2")
    assert second["concepts"]["counts"]["matched"] == second["ingest"]["rows_out"] > 0
    lake = Lake(cfg.lake.path)
    assert sum(cc.entry_counts(lake, 1).values()) == sum(
        len(r) for r in lake.read(spark, "concepts").toPandas().entry_ids
    )
    latest = max(lake.history("selection"), key=lambda h: h["version"])
    assert [s["rule"] for s in json.loads(latest["funnel"])][-2:] == ["no_concept", "balance"]
    page = report.build_report(spark, lake, resolve(spark, lake, "mc", "latest"))
    part = page.split('<section id="concepts">')[1].split("</section>")[0]
    assert part.count("<polyline") == 2 and "pool (" in part
