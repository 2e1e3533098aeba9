"""Each selection rule on small frames; band arithmetic against numpy on the same values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from lakecurate.curation.selection.recipes import duplicate_drops, funnel, label_rows
from lakecurate.curation.selection.rules import (
    RULES,
    Param,
    Rule,
    RuleParamError,
    make_rule,
    register_rule,
)


def kept(df, rule) -> set[str]:
    """uids the rule keeps when `df` is all the rows in play."""
    rows = df.filter(F.coalesce(rule.keep(df), F.lit(False))).select("uid").collect()
    return {r["uid"] for r in rows}


def values_frame(spark, values: np.ndarray, column: str = "clip_score", **extra):
    pdf = pd.DataFrame({"uid": [f"u{i:05d}" for i in range(len(values))], column: values})
    for k, v in extra.items():
        pdf[k] = v
    return spark.createDataFrame(pdf)


def rank_of(sorted_values: np.ndarray, x: float) -> tuple[int, int]:
    """[first, last] 0-based rank that value x takes among the sorted values."""
    return int(np.searchsorted(sorted_values, x, "left")), int(
        np.searchsorted(sorted_values, x, "right")
    ) - 1


def test_quality_rules_on_a_small_frame(spark):
    pdf = pd.DataFrame(
        {
            "uid": ["a", "b", "c", "d", "e"],
            "resolution": [300, 199, 200, None, 500],
            "aspect": [1.0, 3.5, 3.0, 1.2, None],
            "caption_words": [1, 2, 10, 0, 3],
            "caption_chars": [4, 5, 60, 0, 300],
            "clip_score": [0.31, 0.29, None, 0.5, -0.1],
        }
    )
    df = spark.createDataFrame(pdf)
    assert kept(df, make_rule("min_resolution", {"min_side": 200})) == {"a", "c", "e"}
    assert kept(df, make_rule("max_aspect_ratio", {"max": 3})) == {"a", "c", "d"}
    assert kept(df, make_rule("caption_words", {"min": 2, "max": 10})) == {"b", "c", "e"}
    assert kept(df, make_rule("caption_words", {"min": 2})) == {"b", "c", "e"}
    assert kept(df, make_rule("caption_chars", {"min": 5, "max": 100})) == {"b", "c"}
    assert kept(df, make_rule("clip_score_min", {"min": 0.3})) == {"a", "d"}


def test_not_duplicate_counts_only_the_chosen_methods_and_similarity(spark):
    df = spark.createDataFrame(
        pd.DataFrame(
            {
                "uid": ["a", "b", "c", "d"],
                "dup_exact": [None, 1.0, None, None],
                "dup_semantic": [None, None, 0.9, 0.8],
            }
        )
    )
    assert kept(df, make_rule("not_duplicate", {"methods": ["exact"]})) == {"a", "c", "d"}
    both = make_rule("not_duplicate", {"methods": ["exact", "semantic"]})
    assert kept(df, both) == {"a"}
    loose = make_rule("not_duplicate", {"methods": ["semantic"], "min_similarity": 0.86})
    assert kept(df, loose) == {"a", "b", "d"}


def test_a_duplicate_whose_keeper_an_earlier_rule_dropped_is_kept(spark):
    # b and c are copies of a; a has a one-word caption, so the best remaining copy stays
    df = spark.createDataFrame(
        pd.DataFrame(
            {
                "uid": ["a", "b", "c", "d", "e"],
                "caption_words": [1, 3, 3, 3, 3],
                "dup_exact": [None, 1.0, 1.0, None, 1.0],
                "dupk_exact": [None, "a", "a", None, "d"],
            }
        )
    )
    rules = [
        make_rule("caption_words", {"min": 2}),
        make_rule("not_duplicate", {"methods": ["exact"]}),
    ]
    labeled = {r["uid"]: r["reason"] for r in label_rows(df, rules).collect()}
    assert labeled == {
        "a": "caption_words",
        "b": None,  # keeper a was dropped: b and c stay (dedup's greedy keepers decide
        "c": None,  # between copies; select does not re-rank them)
        "d": None,
        "e": "not_duplicate",  # its keeper d is in play
    }
    drops = duplicate_drops(label_rows(df, rules), rules)
    assert drops == [
        {
            "rule": "not_duplicate",
            "dropped_by_method": {"exact": 1},
            "duplicates_kept_keeper_dropped_earlier": 2,
        }
    ]


def test_caption_repeat_cap_keeps_the_best_few_of_each_caption_in_play(spark):
    df = spark.createDataFrame(
        pd.DataFrame(
            {
                "uid": ["a", "b", "c", "d", "e", "f"],
                "caption_sha256": ["x", "x", "x", "x", "y", None],
                "resolution": [100, 300, 200, 900, 50, 10],
                "caption_words": [2, 2, 2, 1, 2, 2],
            }
        )
    )
    rules = [
        make_rule("caption_words", {"min": 2}),
        make_rule("caption_repeat_cap", {"max": 2}),
    ]
    labeled = {r["uid"]: r["reason"] for r in label_rows(df, rules).collect()}
    # d (900 px) left play first, so the cap keeps b and c, the best two in play
    assert labeled == {
        "a": "caption_repeat_cap",
        "b": None,
        "c": None,
        "d": "caption_words",
        "e": None,
        "f": None,
    }


@pytest.mark.parametrize("accuracy", [0, 10_000])
def test_similarity_band_against_numpy(spark, accuracy):
    rng = np.random.default_rng(3)
    values = rng.normal(0.3, 0.05, 3000)
    df = values_frame(spark, values).cache()
    rule = make_rule("similarity_band", {"lo": 0.4, "hi": 0.6, "accuracy": accuracy})
    lo, hi = rule.fit(df)
    s = np.sort(values)
    if accuracy == 0:  # exact: numpy's linear interpolation
        np.testing.assert_allclose([lo, hi], np.quantile(values, [0.4, 0.6]), rtol=1e-12)
    else:  # percentile_approx: a data value within n / accuracy ranks of the target
        n, tol = len(values), len(values) / accuracy + 1
        for q, target in ((lo, 0.4), (hi, 0.6)):
            first, last = rank_of(s, q)
            assert first <= last, "percentile_approx returns one of the values"
            assert abs(first - target * n) <= tol
    want = {f"u{i:05d}" for i in np.flatnonzero((values >= lo) & (values <= hi))}
    got = kept(df, rule)
    assert got == want
    assert abs(len(got) / len(values) - 0.2) <= 2 / max(accuracy, len(values)) + 2 / len(values)


def test_top_fraction_keeps_the_top_of_the_rows_in_play(spark):
    values = np.random.default_rng(5).uniform(0, 1, 2000)
    df = values_frame(spark, values)
    rule = make_rule("clip_score_top_fraction", {"fraction": 0.3, "accuracy": 0})
    (q,) = rule.fit(df)
    assert q == pytest.approx(np.quantile(values, 0.7), rel=1e-12)
    assert len(kept(df, rule)) == int((values >= q).sum()) == 600


def test_centroid_band_per_cluster_against_numpy(spark):
    rng = np.random.default_rng(11)
    n = 1200
    clusters = rng.integers(0, 4, n)
    values = rng.beta(8, 2, n) + clusters * 0.01
    df = values_frame(spark, values, "centroid_sim", semantic_cluster=clusters.astype("int32"))
    params = {"lo": 0.15, "hi": 0.35, "accuracy": 0, "per_cluster": True}
    rule = make_rule("centroid_band", params)
    assert rule.columns() == ("centroid_sim", "semantic_cluster")
    want = set()
    for k in range(4):
        idx = np.flatnonzero(clusters == k)
        qlo, qhi = np.quantile(values[idx], [0.15, 0.35])
        want |= {f"u{i:05d}" for i in idx[(values[idx] >= qlo) & (values[idx] <= qhi)]}
    assert kept(df, rule) == want
    global_rule = make_rule("centroid_band", {**params, "per_cluster": False})
    assert kept(df, global_rule) != want  # the per-cluster bands differ from one global band


def test_sample_is_seeded_exact_and_deterministic(spark):
    df = values_frame(spark, np.arange(500, dtype=float))
    a = kept(df, make_rule("sample", {"n": 120, "seed": 1}))
    assert len(a) == 120
    assert kept(df.repartition(3), make_rule("sample", {"n": 120, "seed": 1})) == a
    assert kept(df, make_rule("sample", {"n": 120, "seed": 2})) != a
    assert len(kept(df, make_rule("sample", {"fraction": 0.1}))) == 50
    assert len(kept(df, make_rule("sample", {"n": 10_000}))) == 500  # more than in play: all


def test_label_rows_bands_are_over_rows_still_in_play(spark):
    rng = np.random.default_rng(2)
    n = 2000
    values = rng.normal(0.3, 0.05, n)
    res = rng.choice([100, 300], n)
    df = values_frame(spark, values, resolution=res).cache()
    rules = [
        make_rule("min_resolution", {"min_side": 200}),
        make_rule("similarity_band", {"lo": 0.4, "hi": 0.6, "accuracy": 0}),
        make_rule("similarity_band", {"lo": 0.0, "hi": 0.5, "accuracy": 0}),
    ]
    labeled = label_rows(df, rules)
    got = labeled.toPandas().set_index("uid")["reason"]
    in_play = res >= 200
    qlo, qhi = np.quantile(values[in_play], [0.4, 0.6])
    band = in_play & (values >= qlo) & (values <= qhi)
    q2 = np.quantile(values[band], [0.0, 0.5])
    final = band & (values >= q2[0]) & (values <= q2[1])
    uids = np.array([f"u{i:05d}" for i in range(n)])
    assert (got[uids[~in_play]] == "min_resolution").all()
    assert (got[uids[in_play & ~band]] == "similarity_band").all()
    assert (got[uids[band & ~final]] == "similarity_band#3").all()  # a repeated name: #position
    assert got[uids[final]].isna().all()
    steps = [s.as_dict() for s in funnel(labeled, rules)]
    first = {"rule": "min_resolution", "in": n, "dropped": int((~in_play).sum())}
    assert steps[0] == {**first, "out": int(in_play.sum())}
    assert [s["out"] for s in steps] == [int(in_play.sum()), int(band.sum()), int(final.sum())]


def test_empty_rows_in_play_keep_nothing_without_error(spark):
    df = values_frame(spark, np.array([0.1, 0.2]), resolution=[10, 20])
    rules = [
        make_rule("min_resolution", {"min_side": 100}),
        make_rule("similarity_band", {"lo": 0.4, "hi": 0.6}),
        make_rule("sample", {"fraction": 0.5}),
    ]
    labeled = label_rows(df, rules)
    assert [s.rows_out for s in funnel(labeled, rules)] == [0, 0, 0]


@pytest.mark.parametrize(
    "name,params,param",
    [
        ("min_resolution", {}, "min_side"),
        ("min_resolution", {"min_side": 0}, "min_side"),
        ("min_resolution", {"min_side": 1.5}, "min_side"),
        ("min_resolution", {"min_side": 10, "max": 3}, "max"),
        ("caption_words", {"min": 5, "max": 2}, "min"),
        ("similarity_band", {"lo": 0.6, "hi": 0.4}, "lo"),
        ("similarity_band", {"lo": 0.4, "hi": 1.5}, "hi"),
        ("similarity_band", {"lo": "low", "hi": 0.5}, "lo"),
        ("not_duplicate", {"methods": ["fuzzy"]}, "methods"),
        ("not_duplicate", {"methods": []}, "methods"),
        ("sample", {}, "n"),
        ("sample", {"n": 5, "fraction": 0.5}, "n"),
        ("clip_score_top_fraction", {"fraction": 0}, "fraction"),
        ("centroid_band", {"lo": 0.1, "hi": 0.2, "per_cluster": "yes"}, "per_cluster"),
    ],
)
def test_bad_parameters_name_the_parameter(name, params, param):
    with pytest.raises(RuleParamError) as e:
        make_rule(name, params)
    assert e.value.param == param


def test_user_rules_register_as_class_or_function(spark):
    @register_rule
    class EvenLengthRule(Rule):
        """Keep captions with an even number of characters."""

        name = "test_even_chars"
        params = {"offset": Param("int", 0)}
        needs = ("caption_chars",)

        def keep(self, df):
            return (F.col("caption_chars") + self.offset) % 2 == 0

    @register_rule("test_max_chars", params={"max": Param("int", lo=0)}, columns=("caption_chars",))
    def max_chars(df, max):
        return F.col("caption_chars") <= max

    try:
        df = spark.createDataFrame(
            pd.DataFrame({"uid": ["a", "b", "c"], "caption_chars": [2, 3, 8]})
        )
        assert kept(df, make_rule("test_even_chars", {})) == {"a", "c"}
        assert kept(df, make_rule("test_even_chars", {"offset": 1})) == {"b"}
        assert kept(df, make_rule("test_max_chars", {"max": 3})) == {"a", "b"}
        with pytest.raises(RuleParamError):
            make_rule("test_max_chars", {"max": -1})

        @register_rule("test_bad_column", columns=("no_such_column",))
        def bad(df):
            return F.lit(True)

        with pytest.raises(RuleParamError, match="unknown column"):
            make_rule("test_bad_column", {})
    finally:
        for n in ("test_even_chars", "test_max_chars", "test_bad_column"):
            RULES.pop(n, None)
