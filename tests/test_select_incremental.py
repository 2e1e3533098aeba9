"""select after a refresh labels only what can have moved, and gets what a full run gets.

The sample set's late copies (exact, near-image and near-caption duplicates of earlier
pairs) arrive in a second batch; dedup makes some of them keepers of old groups. One
lake then selects incrementally, a copy of it selects every pair (`select --full`):
the selections, funnels, duplicate drops and churn must be the same.
"""

from __future__ import annotations

import shutil

import pytest
from test_dedup import _write

from lakecurate.deltaio.lake import Lake
from lakecurate.jobs import dedup
from lakecurate.jobs import selection as select_job
from lakecurate.runtime.config import replace

# every cross-row rule, tight enough to bite on 300 pairs, and a fitted (frozen) rule
CROSS_ROW = """
name: cross-row
rules:
  - caption_words: {min: 2}
  - not_duplicate: {methods: [exact, exact_caption, phash]}
  - caption_repeat_cap: {max: 1}
  - sample: {fraction: 0.9, seed: 3}
"""


def _selection(spark, lake: Lake, rid: str) -> dict[str, tuple]:
    rows = lake.read(spark, "selection").filter(f"recipe_id = '{rid}'").collect()
    return {r["uid"]: (r["kept"], r["reason"]) for r in rows}


@pytest.mark.parametrize("recipe", ["default", "cross-row"])
def test_incremental_select_equals_a_full_run(spark, lake, cfg, sample_set, tmp_path, recipe):
    if recipe == "cross-row":
        path = tmp_path / "cross-row.yaml"
        path.write_text(CROSS_ROW)
        recipe = str(path)
    # the late batch is more than select.refit_growth's 10%: keep the fit frozen
    cfg = replace(cfg, select={"recipe": recipe, "refit_growth": 1.0})
    rows, labels = sample_set.pair_rows(), sample_set.labels
    late = {b for _, b in labels["near_caption"]} | {b for _, b, _ in labels["near_image"]}
    late |= {b for _, b in labels["exact"]}
    _write(spark, lake, "pairs", [r for r in rows if r["source_key"] not in late])
    dedup.run(spark, cfg)
    first = select_job.run(spark, cfg)
    assert "relabelled" not in first.counts  # a first run labels every pair
    rid = first.counts["recipe_id"]
    _write(spark, lake, "pairs", [r for r in rows if r["source_key"] in late])
    dedup.run(spark, cfg)
    shutil.copytree(lake.root, tmp_path / "full")

    inc = select_job.run(spark, cfg).counts
    whole = Lake(str(tmp_path / "full"))
    full = select_job.run(spark, replace(cfg, lake={"path": whole.root}, select={"full": True}))
    full = full.counts
    assert "relabelled" not in full
    # only the new pairs, the pairs linked to them and their links were labelled again
    assert len(late) <= inc["relabelled"] < len(rows)
    assert _selection(spark, lake, rid) == _selection(spark, whole, rid)
    for key in ("rows", "kept", "dropped", "funnel", "duplicate_drops", "churn"):
        assert inc[key] == full[key], key
    # the late copies were dropped as duplicates of the old pairs they copy
    dropped = [
        sum(d["dropped_by_method"].values())
        for r in (first.counts, inc)
        for d in r["duplicate_drops"]
    ]
    assert dropped[1] > dropped[0]
    assert inc["changed"] and full["changed"]

    # the next run after that: nothing new, no Spark job; a full run then changes nothing
    assert "nothing new" in select_job.run(spark, cfg).message
    again = select_job.run(spark, replace(cfg, select={"full": True})).counts
    assert again["changed"] is False and again["funnel"] == inc["funnel"]
