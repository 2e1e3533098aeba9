"""Frozen percentile thresholds: a small refresh reuses the last fit (no old row flips),
growth past `select.refit_growth` or `--refit` fits again, and the churn of each run is
counted by cause (better keeper, threshold refit) in select and in `versions diff`."""

from __future__ import annotations

import json
import shutil

import benchmark_modules
import pyarrow as pa
import pytest

from lakecurate.curation.models import model_id
from lakecurate.curation.selection.recipes import load_recipe
from lakecurate.curation.selection.thresholds import Fit, refit_reason
from lakecurate.deltaio.lake import Commit, Lake
from lakecurate.jobs import selection as select_job
from lakecurate.runtime import progress
from lakecurate.runtime.config import load_config, replace
from lakecurate.runtime.errors import ConfigError
from lakecurate.schemas import TABLES

N = 2000
NEW = 20  # +1%


bench = benchmark_modules.load("select_bunny")  # its generator and reference checks


def _renamed(tables: dict[str, pa.Table], prefix: str) -> dict[str, pa.Table]:
    """The generator's tables with every uid (and keeper uid) given a new prefix (not
    hex, so no new uid equals an old one)."""
    out = {}
    for name, t in tables.items():
        for col in ("uid", "keeper_uid"):
            if col in t.column_names:
                vals = [prefix + u[len(prefix) :] for u in t.column(col).to_pylist()]
                t = t.set_column(t.schema.get_field_index(col), col, pa.array(vals))
        out[name] = t
    return out


def _append(spark, lake: Lake, tables: dict[str, pa.Table]) -> None:
    for name, t in tables.items():
        if t.num_rows:
            df = spark.createDataFrame(t.to_pandas(), TABLES[name].spark_schema())
            lake.write(df, name, Commit("test-fixture", "test-fixture-run"))


def _new_rows(n: int, seed: int, mid: str, prefix: str, score: float | None = None):
    t = _renamed(bench.make_tables(n, seed=seed, mid=mid, dup_rate=0.0), prefix)
    t["duplicates"] = t["duplicates"].slice(0, 0)
    if score is not None:  # every new pair scores high: the band's quantiles move up
        emb = t["embeddings"]
        col = pa.array([score] * n, pa.float32())
        t["embeddings"] = emb.set_column(
            emb.schema.get_field_index("clip_score"), "clip_score", col
        )
    return t


def _kept(spark, lake: Lake, rid: str) -> set[str]:
    sel = lake.read(spark, "selection").filter(f"recipe_id = '{rid}' AND kept")
    return {r["uid"] for r in sel.select("uid").collect()}


@pytest.fixture(scope="module")
def grown(spark, tmp_path_factory):
    """A bunny selection over N pairs, then +1% new pairs (high scores) and one new
    duplicate that takes an old kept uid's place; a copy of the lake before the second
    select, to run it again with other settings."""
    root = tmp_path_factory.mktemp("thresholds")
    path = str(root / "lake")
    cfg = load_config(
        None,
        {
            "lake.path": path,
            "model.name": "lakecurate-tiny",
            "model.pretrained": "none",
            "select.recipe": "bunny",
        },
    )
    mid = model_id(cfg.model)
    lake = Lake(path)
    bench.write_lake(spark, lake, bench.make_tables(N, seed=1, mid=mid))
    first = select_job.run(spark, cfg)
    rid = first.counts["recipe_id"]
    kept1 = _kept(spark, lake, rid)
    new = _new_rows(NEW, seed=9, mid=mid, prefix="zz", score=0.45)
    # an old kept uid becomes a semantic duplicate of a new pair (its better keeper)
    victim, keeper = sorted(kept1)[0], new["pairs"].column("uid")[0].as_py()
    dup = {
        "uid": [victim, keeper],
        "method": ["semantic"] * 2,
        "group_id": [f"semantic-{keeper}"] * 2,
        "keeper_uid": [keeper, keeper],
        "similarity": [0.95, 1.0],
        "config_slug": [bench.SEMANTIC_SLUG] * 2,
    }
    new["duplicates"] = bench._table(TABLES["duplicates"].schema, dup, 2)
    _append(spark, lake, new)
    shutil.copytree(path, root / "before-second")
    second = select_job.run(spark, cfg)
    return {
        "cfg": cfg,
        "lake": lake,
        "root": root,
        "rid": rid,
        "mid": mid,
        "first": first,
        "second": second,
        "kept1": kept1,
        "victim": victim,
    }


def _history_fit(lake: Lake, rid: str) -> dict:
    runs = [h for h in lake.history("selection") if h.get("recipe_id") == rid]
    return json.loads(max(runs, key=lambda h: h["version"])["thresholds"])


def test_a_small_refresh_reuses_the_fit_and_only_better_keepers_churn(spark, grown):
    first, second = grown["first"].counts, grown["second"].counts
    assert first["refitted"] is True and first["churn"] is None
    assert second["refitted"] is False
    assert 0 < second["relabelled"] < N // 10  # the new pairs and what they link to
    assert second["churn"] == {
        "removed": 1,
        "by_cause": {"better_keeper": 1},
        "by_rule": {"not_duplicate": 1},
    }
    assert second["churn_removed"] == 1 and second["churn_better_keeper"] == 1
    kept2 = _kept(spark, grown["lake"], grown["rid"])
    assert grown["kept1"] - kept2 == {grown["victim"]}  # no other old row flipped
    fit = _history_fit(grown["lake"], grown["rid"])
    assert fit["rows"] == N and fit["model_id"] == grown["mid"]
    assert set(fit["values"]) == {"similarity_band", "centroid_band", "sample"}
    assert "thresholds: frozen" in grown["second"].message
    assert "churn: 1 of the previous selection's samples dropped" in grown["second"].message


def test_refitting_every_run_flips_old_rows_near_the_boundary(spark, grown, tmp_path):
    """The same +1% with refit_growth 0: the band moves and old rows leave it."""
    shutil.copytree(grown["root"] / "before-second", tmp_path / "lake")
    cfg = replace(grown["cfg"], lake={"path": str(tmp_path / "lake")}, select={"refit_growth": 0})
    res = select_job.run(spark, cfg).counts
    assert res["refitted"] is True
    assert res["churn"]["by_cause"]["threshold_refit"] > 0
    assert res["churn"]["by_cause"]["better_keeper"] == 1
    kept = _kept(spark, Lake(cfg.lake.path), grown["rid"])
    assert len(grown["kept1"] - kept) == res["churn"]["removed"] > 1


def test_growth_past_the_rule_and_refit_flag_fit_again(spark, grown, tmp_path):
    shutil.copytree(grown["cfg"].lake.path, tmp_path / "lake")
    cfg = replace(grown["cfg"], lake={"path": str(tmp_path / "lake")})
    lake = Lake(cfg.lake.path)
    with progress.stage(spark, "select-again"):  # nothing new: no Spark job at all
        same = select_job.run(spark, cfg)
        assert progress.spark_jobs(spark) == 0
    again = same.counts
    assert "nothing new since select run" in same.message
    assert again["refitted"] is False and again["churn_removed"] == 0
    assert again["kept"] == grown["second"].counts["kept"]
    _append(spark, lake, _new_rows(N // 8, seed=11, mid=grown["mid"], prefix="yy"))
    grew = select_job.run(spark, cfg)
    assert grew.counts["refitted"] is True
    assert "past select.refit_growth 0.1" in grew.message
    assert _history_fit(lake, grown["rid"])["rows"] == N + NEW + N // 8
    forced = select_job.run(spark, replace(cfg, select={"refit": True}))
    assert forced.counts["refitted"] is True and "--refit" in forced.message
    args = select_job.build_parser().parse_args(["--refit"])
    assert select_job.apply_args(cfg, args).select.refit is True


def test_refit_reason_rule():
    fit = Fit({"x": [1]}, rows=1000, model_id="m")
    assert refit_reason(fit, 1000, "m", 0.1) is None
    assert refit_reason(fit, 1100, "m", 0.1) is None
    assert "past select.refit_growth" in refit_reason(fit, 1101, "m", 0.1)
    assert "fewer" in refit_reason(fit, 999, "m", 0.1)
    assert "scores now come from n" in refit_reason(fit, 1000, "n", 0.1)
    assert refit_reason(None, 5, "m", 0.1) == "no earlier fit of this recipe"
    assert refit_reason(fit, 1000, "m", 0.1, force=True) == "asked for (--refit)"
    assert Fit.from_json(fit.to_json()) == fit
    with pytest.raises(ConfigError, match="select.refit_growth"):
        load_config(None, {"select.refit_growth": -1})


def test_frozen_thresholds_keep_the_same_rows_as_their_fit(spark):
    """keep_fitted(fit(df)) is keep(df), for every fitted rule of the built-in recipes."""
    from lakecurate.curation.selection.rules import FittedRule

    mid = "m"
    t = bench.make_tables(400, seed=3, mid=mid)
    df = spark.createDataFrame(t["pairs"].to_pandas()[["uid"]])
    df = df.join(spark.createDataFrame(t["embeddings"].to_pandas()[["uid", "clip_score"]]), "uid")
    sig = t["signals"].to_pandas()[["uid", "semantic_cluster", "centroid_sim"]]
    df = df.join(spark.createDataFrame(sig), "uid").cache()
    rules = [r for r in load_recipe("bunny").rules if isinstance(r, FittedRule)]
    rules += [r for r in load_recipe("datacomp-clip").rules if isinstance(r, FittedRule)]
    for rule in rules:
        fit = json.loads(json.dumps(rule.fit(df)))  # as stored in a commit
        a = {r["uid"] for r in df.filter(rule.keep(df)).collect()}
        b = {r["uid"] for r in df.filter(rule.keep_fitted(fit)).collect()}
        assert a == b and 0 < len(a) <= 400, rule
        if rule.name != "sample":  # bunny's sample n (2M) keeps all 400
            assert len(a) < 400, rule
