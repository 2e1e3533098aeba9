"""`lakecurate dedup` on the generated sample lake: what it finds, keepers, re-runs."""

from __future__ import annotations

import pytest
from lakecurate.jobs import dedup


def _rows(spark, lake, table):
    return [r.asDict() for r in lake.read(spark, table).collect()]


def _groups(rows, method):
    """method -> {frozenset of source keys} given duplicates rows mapped to keys."""
    out: dict[str, set] = {}
    for r in rows:
        if r["method"] == method:
            out.setdefault(r["group_id"], set()).add(r["key"])
    return {frozenset(g) for g in out.values()}


@pytest.fixture
def keyed(spark, pairs_lake):
    """uid -> source_key of the sample pairs."""
    return {r["uid"]: r["source_key"] for r in pairs_lake.read(spark, "pairs").collect()}


def test_dedup_finds_injected_duplicates(spark, pairs_lake, cfg, sample_set, keyed):
    result = dedup.run(spark, cfg)
    assert result.counts["new_rows"] == len(keyed)
    rows = _rows(spark, pairs_lake, "duplicates")
    for r in rows:
        r["key"] = keyed[r["uid"]]
    exact = _groups(rows, "exact")
    for orig, dup in sample_set.labels["exact"]:
        assert any({orig, dup} <= g for g in exact), (orig, dup)
    phash = _groups(rows, "phash")
    found = sum(any({o, d} <= g for g in phash) for o, d, _ in sample_set.labels["near_image"])
    assert found >= 0.9 * len(sample_set.labels["near_image"])
    minhash = _groups(rows, "minhash")
    found = sum(any({o, d} <= g for g in minhash) for o, d in sample_set.labels["near_caption"])
    assert found >= 0.8 * len(sample_set.labels["near_caption"])
    # every group has exactly one keeper, which is a member with keeper_uid == uid
    by_group: dict[tuple, list] = {}
    for r in rows:
        by_group.setdefault((r["method"], r["group_id"]), []).append(r)
    for members in by_group.values():
        assert len(members) >= 2
        keepers = {r["keeper_uid"] for r in members}
        assert len(keepers) == 1
        (keeper,) = keepers
        assert any(r["uid"] == keeper and r["similarity"] == 1.0 for r in members)
        assert all(0.0 <= r["similarity"] <= 1.0 for r in members)
    signals = _rows(spark, pairs_lake, "signals")
    assert len(signals) == len(keyed)
    assert all(s["phash"] is not None and s["resolution"] > 0 for s in signals)
