"""Recipe loading and validation: built-ins, content-hash ids, bad recipes, user rules."""

from __future__ import annotations

import textwrap

import pytest

from lakecurate.curation.selection.recipes import (
    builtin_recipes,
    load_recipe,
    parse_recipe,
    recipe_id_for,
)
from lakecurate.curation.selection.rules import RULES
from lakecurate.runtime.config import replace
from lakecurate.runtime.errors import ConfigError


def write(tmp_path, text: str, name: str = "r.yaml") -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_builtin_recipes_load_with_distinct_ids_and_sources():
    assert builtin_recipes() == ["bunny", "datacomp-clip", "default", "metaclip"]
    recipes = [load_recipe(n) for n in builtin_recipes()]
    assert len({r.recipe_id for r in recipes}) == 4
    for r in recipes:
        assert r.source and r.description, f"{r.name} documents its source"
        assert len(r.recipe_id) == 16
    bunny = load_recipe("bunny")
    assert [x.name for x in bunny.rules] == [
        "not_duplicate",
        "similarity_band",
        "centroid_band",
        "sample",
    ]
    assert bunny.rules[0].semantic_eps == 0.14 and bunny.rules[0].methods == ("semantic",)
    assert (bunny.rules[1].lo, bunny.rules[1].hi) == (0.4, 0.6)
    assert (bunny.rules[2].lo, bunny.rules[2].hi) == (0.15, 0.35)
    assert bunny.tables() == {"pairs", "embeddings", "signals", "duplicates"}
    assert load_recipe("datacomp-clip").rules[-1].fraction == 0.3
    assert load_recipe("default").tables() == {"pairs", "duplicates", "signals"}


def test_recipe_id_is_a_content_hash(tmp_path):
    a = write(tmp_path, "rules:\n  - min_resolution: {min_side: 64}\n", "a.yaml")
    b = write(
        tmp_path,
        """\
        # a comment, a name and a description do not change the id
        name: other
        description: same rules
        rules:
          - min_resolution:
              min_side: 64
        """,
        "b.yaml",
    )
    c = write(tmp_path, "- min_resolution: {min_side: 65}\n", "c.yaml")
    assert load_recipe(a).recipe_id == load_recipe(b).recipe_id
    assert load_recipe(a).recipe_id != load_recipe(c).recipe_id
    # defaults filled in: writing a default explicitly is the same recipe
    implicit = parse_recipe([{"similarity_band": {"lo": 0.4, "hi": 0.6}}])
    explicit = parse_recipe([{"similarity_band": {"lo": 0.4, "hi": 0.6, "accuracy": 10000}}])
    assert implicit.recipe_id == explicit.recipe_id
    # order matters
    two = [{"caption_words": {"min": 2}}, {"caption_chars": {"min": 5}}]
    assert parse_recipe(two).recipe_id != parse_recipe(two[::-1]).recipe_id


def test_recipe_id_for_config(cfg, tmp_path):
    assert recipe_id_for(cfg) == load_recipe("default").recipe_id
    path = write(tmp_path, "- sample: {n: 10}\n")
    assert recipe_id_for(replace(cfg, select={"recipe": path})) == load_recipe(path).recipe_id


@pytest.mark.parametrize(
    "text,expect",
    [
        ("- min_resolution: {min_side: 64}\n- no_such_rule: {}\n", ["rule 2", "no_such_rule"]),
        ("- min_resolution: {min_side: 64, colour: red}\n", ["rule 1", "min_resolution", "colour"]),
        ("- caption_words: {min: two}\n", ["caption_words", "parameter min", "integer"]),
        ("- similarity_band: {lo: 0.7, hi: 0.6}\n", ["similarity_band", "parameter lo", "below"]),
        ("- centroid_band: {lo: 0.1, hi: 1.2}\n", ["centroid_band", "parameter hi", "<= 1"]),
        ("- sample: {n: 5, fraction: 0.5}\n", ["sample", "exactly one of n or fraction"]),
        ("- not_duplicate: {methods: [fuzzy]}\n", ["not_duplicate", "methods", "semantic"]),
        ("- not_duplicate: {methods: [exact], semantic_eps: 0.1}\n", ["semantic_eps"]),
        ("- caption_chars: {min: 9, max: 3}\n", ["caption_chars", "min", "above max"]),
        ("- max_aspect_ratio: {max: 0.5}\n", ["max_aspect_ratio", "parameter max", ">= 1"]),
        ("- clip_score_min\n", ["rule 1 (clip_score_min)", "parameter min", "required"]),
        ("- {a: 1, b: 2}\n", ["rule 1", "expected"]),
        ("- min_resolution: 64\n", ["min_resolution", "must be a mapping"]),
        ("rules: []\n", ["rules", "non-empty"]),
        ("steps: [sample]\n", ["steps", "unknown key"]),
        ("imports: [no_such_module_xyz]\nrules: [{sample: {n: 1}}]\n", ["imports", "no_such"]),
        ("- [unclosed\n", ["not valid YAML"]),
    ],
)
def test_bad_recipes_name_the_rule_and_parameter(tmp_path, text, expect):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    for part in expect:
        assert part in str(e.value), f"{part!r} not in: {e.value}"


def test_unknown_recipe_name_or_missing_file():
    with pytest.raises(ConfigError, match="neither a built-in recipe"):
        load_recipe("bunnny")
    with pytest.raises(ConfigError, match="datacomp-clip"):
        load_recipe("/nowhere/recipe.yaml")


def test_recipe_imports_register_user_rules(tmp_path, monkeypatch):
    (tmp_path / "my_select_rules.py").write_text(
        textwrap.dedent(
            """\
            from pyspark.sql import functions as F
            from lakecurate.curation.selection.rules import Param, register_rule

            @register_rule("test_caption_mentions", params={"word": Param("str")},
                           columns=("caption",))
            def mentions(df, word):
                return F.lower(F.col("caption")).contains(word)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write(
        tmp_path,
        """\
        imports: [my_select_rules]
        rules:
          - test_caption_mentions: {word: cat}
          - test_caption_mentions: {word: 3}
        """,
    )
    try:
        with pytest.raises(ConfigError, match=r"rule 2 \(test_caption_mentions\), parameter word"):
            load_recipe(path)
        path = write(
            tmp_path, "imports: [my_select_rules]\nrules: [{test_caption_mentions: {word: cat}}]\n"
        )
        recipe = load_recipe(path)
        assert recipe.columns() == {"caption"}
        assert recipe.imports == ("my_select_rules",)
    finally:
        RULES.pop("test_caption_mentions", None)
