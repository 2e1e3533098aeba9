"""Incremental dedup: old then new gives what one run over both gives; semantic assignment."""

from __future__ import annotations

import pytest
from test_dedup import _embeddings, _groups, _rows, _together, _write

from lakecurate.curation.dedup import near as dedup_near
from lakecurate.curation.models import model_id
from lakecurate.deltaio.lake import Lake
from lakecurate.jobs import dedup
from lakecurate.runtime.config import replace
from lakecurate.runtime.jobkit import JobContext

VERDICT = ("uid", "method", "group_id", "keeper_uid", "similarity", "config_slug")


def _verdicts(spark, lake, methods) -> set[tuple]:
    rows = _rows(spark, lake, "duplicates")
    return {tuple(r[c] for c in VERDICT) for r in rows if r["method"] in methods}


@pytest.mark.parametrize("broadcast_keys", [2_000_000, 0], ids=["broadcast", "shuffled"])
def test_old_then_new_equals_one_full_run(
    spark, lake, cfg, sample_set, tmp_path, monkeypatch, broadcast_keys
):
    # the new MinHash band keys are broadcast when few, joined by a shuffle otherwise;
    # new pHashes probe the lake from an index when few, else take the band join
    monkeypatch.setattr(dedup_near, "BROADCAST_KEYS", broadcast_keys)
    monkeypatch.setattr(dedup_near, "PROBE_NEW_LIMIT", 20_000 if broadcast_keys else 0)
    methods = ("exact", "exact_caption", "phash", "minhash")
    # every MinHash bucket pairs all its members (no leader/neighbour links, which an
    # incremental run makes only for new members), so minhash must match exactly too
    # and keepers are ranked as a full run ranks them (not earlier members first)
    dedup_cfg = {
        "methods": ["exact", "phash", "minhash"],
        "bucket_limit": 10_000,
        "stable_keepers": False,
    }
    cfg = replace(cfg, dedup=dedup_cfg)
    rows = sample_set.pair_rows()
    labels = sample_set.labels
    late = {b for _, b in labels["near_caption"]} | {b for _, b, _ in labels["near_image"]}
    late |= {b for _, b in labels["exact"]}
    old = [r for r in rows if r["source_key"] not in late]
    new = [r for r in rows if r["source_key"] in late]
    _write(spark, lake, "pairs", old)
    dedup.run(spark, cfg)
    before = _verdicts(spark, lake, methods)
    _write(spark, lake, "pairs", new)
    versions = {t: lake.version(t) for t in ("duplicates", "dedup_index")}
    second = dedup.run(spark, cfg)
    assert second.counts["new_rows"] == len(new)
    # every method's changes in one duplicates commit, then one index append
    assert {t: lake.version(t) - v for t, v in versions.items()} == {
        "duplicates": 1,
        "dedup_index": 1,
    }
    incremental = _verdicts(spark, lake, methods)

    whole = Lake(str(tmp_path / "whole"))
    whole_cfg = replace(cfg, lake={"path": whole.root})
    _write(spark, whole, "pairs", rows)
    full = dedup.run(spark, whole_cfg)
    assert full.counts["new_rows"] == len(rows)
    assert incremental == _verdicts(spark, whole, methods)
    for m in methods:  # the counts of the incremental run cover the whole lake
        assert second.counts[f"{m}_groups"] == full.counts[f"{m}_groups"]
        assert second.counts[f"{m}_duplicates"] == full.counts[f"{m}_duplicates"]
    # the increment did change groups: new rows joined groups of old rows
    new_uids = {r["uid"] for r in new}
    old_groups = {(v[1], v[2]) for v in before}
    assert any((v[1], v[2]) in old_groups and v[0] in new_uids for v in incremental)
    # rows of groups no new row joined were not rewritten
    by_key = {(r["uid"], r["method"]): r["run_id"] for r in _rows(spark, lake, "duplicates")}
    touched = {(v[1], v[2]) for v in incremental if v[0] in new_uids}
    kept = [v for v in incremental if (v[1], v[2]) not in touched]
    assert kept and all(by_key[(v[0], v[1])] != second.run_id for v in kept)


def test_semantic_assigns_new_copies_to_their_originals_then_refits(
    spark, pairs_lake, cfg, tmp_path
):
    cfg = replace(
        cfg,
        dedup={"methods": ["semantic"], "semantic_clusters": 3, "semantic_refit_growth": 0.25},
    )
    uids = sorted(r["uid"] for r in _rows(spark, pairs_lake, "pairs"))
    old, fresh, later = uids[:160], uids[160:200], uids[200:]
    dup_of = {uids[i]: uids[i + 1] for i in range(0, 40, 4)}  # old pairs
    dup_of |= {u: old[3 * i + 2] for i, u in enumerate(fresh[:20])}  # new copies of old
    emb = {r["uid"]: r for r in _embeddings(uids, dup_of, {"__model__": model_id(cfg.model)})}
    _write(spark, pairs_lake, "embeddings", [emb[u] for u in old])
    first = dedup.run(spark, cfg)
    assert first.counts["semantic_refit"] == 1 and first.counts["semantic_assigned"] == 160
    fit_version = pairs_lake.version("semantic_centroids")
    before = _groups(_rows(spark, pairs_lake, "duplicates"), "semantic")

    _write(spark, pairs_lake, "embeddings", [emb[u] for u in fresh])  # +25%: assign
    second = dedup.run(spark, cfg)
    assert second.counts["semantic_refit"] == 0
    assert second.counts["semantic_assigned"] == len(fresh)
    assert pairs_lake.version("semantic_centroids") == fit_version
    groups = _groups(_rows(spark, pairs_lake, "duplicates"), "semantic")
    assert all(_together(groups, u, v) for u, v in dup_of.items())
    assert all(any(g <= h for h in groups) for g in before)  # old groups only grow
    signals = {r["uid"]: r for r in _rows(spark, pairs_lake, "signals")}
    for u in fresh[:20]:
        assert signals[u]["semantic_cluster"] == signals[dup_of[u]]["semantic_cluster"]
    assert all(signals[u]["semantic_cluster"] is not None for u in old + fresh)
    assert all(signals[u]["semantic_cluster"] is None for u in later)

    again = dedup.run(spark, cfg)  # nothing new: nothing written
    assert again.counts["semantic_assigned"] == 0 and not again.written_versions

    _write(spark, pairs_lake, "embeddings", [emb[u] for u in later])  # beyond +25%: refit
    third = dedup.run(spark, cfg)
    assert third.counts["semantic_refit"] == 1
    assert third.counts["semantic_assigned"] == len(uids)
    assert pairs_lake.version("semantic_centroids") > fit_version
    fits = _rows(spark, pairs_lake, "semantic_centroids")
    assert len(fits) == 3 and {f["fitted_rows"] for f in fits} == {len(uids)}
    groups = _groups(_rows(spark, pairs_lake, "duplicates"), "semantic")
    assert all(_together(groups, u, v) for u, v in dup_of.items())


# A ~ B ~ C ~ D by estimated Jaccard (0.60, 0.51, 0.50 with the default char-5 shingles and
# threshold 0.45), while A-C is 0.27, A-D 0.14 and B-D 0.34: one component, two keepers.
CHAIN = (
    "a small red boat tied to the wooden pier at sunrise on a calm lake",
    "a small red boat tied to the wooden pier at sunset on a quiet river",
    "a small blue boat tied to the wooden dock at sunset on a quiet river",
    "a small blue boat moored by the stone dock at sunset on a quiet river",
)


def test_chained_captions_are_duplicates_only_of_a_keeper_they_resemble(
    spark, lake, cfg, sample_set, tmp_path
):
    cfg = replace(cfg, dedup={"methods": ["minhash"]})
    template = sample_set.pair_rows()[0]
    rows = [{**template, "uid": f"u{i}", "caption": c} for i, c in enumerate(CHAIN)]

    def verdicts(lk):
        return {r["uid"]: (r["group_id"], r["keeper_uid"]) for r in _rows(spark, lk, "duplicates")}

    # one group (components chain), but C is not alike the keeper A: C keeps itself
    _write(spark, lake, "pairs", rows[:3])
    dedup.run(spark, cfg)
    assert verdicts(lake) == {f"u{i}": ("minhash:u0", k) for i, k in enumerate(["u0", "u0", "u2"])}
    # D resembles only C, a keeper of the group: D is C's duplicate
    _write(spark, lake, "pairs", rows[3:])
    dedup.run(spark, cfg)
    expected = {f"u{i}": ("minhash:u0", k) for i, k in enumerate(["u0", "u0", "u2", "u2"])}
    assert verdicts(lake) == expected
    sim = {r["uid"]: r["similarity"] for r in _rows(spark, lake, "duplicates")}
    assert sim["u0"] == 1.0 and min(sim["u1"], sim["u3"]) >= 0.45 > sim["u2"]

    whole = Lake(str(tmp_path / "whole"))
    _write(spark, whole, "pairs", rows)
    dedup.run(spark, replace(cfg, lake={"path": whole.root}))
    assert _verdicts(spark, lake, ("minhash",)) == _verdicts(spark, whole, ("minhash",))


@pytest.mark.parametrize("stable", [True, False], ids=["stable", "best"])
def test_a_better_ranked_copy_arriving_later_displaces_the_keeper_only_without_stable_keepers(
    spark, lake, cfg, sample_set, tmp_path, stable
):
    methods = ("exact", "exact_caption", "phash", "minhash")
    cfg = replace(cfg, dedup={"methods": ["exact", "phash", "minhash"], "stable_keepers": stable})
    template = sample_set.pair_rows()[0]
    # the same image and caption; "u0" outranks "u9" (equal clip scores and sizes: uid)
    earlier, later = {**template, "uid": "u9"}, {**template, "uid": "u0"}
    other = {**sample_set.pair_rows()[1], "uid": "u5"}
    _write(spark, lake, "pairs", [earlier, other])
    dedup.run(spark, cfg)
    _write(spark, lake, "pairs", [later])
    dedup.run(spark, cfg)
    keeper = "u9" if stable else "u0"
    got = {(v[0], v[1]): v[3] for v in _verdicts(spark, lake, methods)}
    assert got == {(u, m): keeper for u in ("u0", "u9") for m in methods}

    whole = Lake(str(tmp_path / "whole"))  # a full run ranks every member alike
    _write(spark, whole, "pairs", [earlier, other, later])
    dedup.run(spark, replace(cfg, lake={"path": whole.root}))
    full = {(v[0], v[1]): v[3] for v in _verdicts(spark, whole, methods)}
    assert full == {(u, m): "u0" for u in ("u0", "u9") for m in methods}


def test_a_run_with_nothing_new_reads_nothing_and_changes_nothing(spark, lake, cfg, sample_set):
    cfg = replace(cfg, dedup={"methods": ["exact", "phash"]})
    rows = sample_set.pair_rows()
    _write(spark, lake, "pairs", rows[:-20])
    first = dedup.run(spark, cfg)
    versions = lake.versions()
    sc = spark.sparkContext
    sc.setJobGroup("dedup-nothing-new", "the second run", False)
    try:
        again = dedup.run(spark, cfg)
    finally:
        sc.setJobGroup(None, None, False)
    assert sc.statusTracker().getJobIdsForGroup("dedup-nothing-new") == []  # no Spark job
    assert lake.versions() == versions  # nothing written
    assert "nothing new" in again.message and again.counts["new_rows"] == 0
    assert again.counts["duplicates"] == first.counts["duplicates"]
    # new pairs, or other settings: a real run again
    _write(spark, lake, "pairs", rows[-20:])
    # only the pairs added since the complete run can be unmatched: those are looked up
    ctx = JobContext("dedup", cfg)
    got = dedup.arrivals(spark, ctx, cfg)
    assert sorted(r.uid for r in got.collect()) == sorted(r["uid"] for r in rows[-20:])
    stricter = replace(cfg, dedup={"phash_max_distance": 4})
    assert dedup.arrivals(spark, ctx, stricter) is None  # other settings: the whole lake
    third = dedup.run(spark, cfg)
    assert third.counts["new_rows"] == 20 and "nothing new" not in third.message
    assert dedup.arrivals(spark, ctx, cfg).count() == 0
    assert "nothing new" not in dedup.run(spark, stricter).message
