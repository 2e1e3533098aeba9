"""`lakecurate select` end to end on generated lakes: every built-in recipe, the bunny
fractions, determinism, commit metadata, missing inputs and bad recipes on the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import benchmark_modules
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from lakecurate.curation.models import model_id
from lakecurate.curation.selection.recipes import load_recipe
from lakecurate.curation.selection.rules import DEFAULT_ACCURACY
from lakecurate.deltaio.lake import Lake
from lakecurate.jobs import selection as select_job
from lakecurate.runtime.config import load_config, replace
from lakecurate.runtime.errors import JobError
from lakecurate.schemas import TABLES

N = 3000
NO_EMBEDDING = 40  # pairs whose embedding row is missing


bench = benchmark_modules.load("select_bunny")  # its generator and reference checks


def make_cfg(lake_path: str):
    """The module's own config (the `cfg` fixture is per test; this lake is per module)."""
    tiny = {"model.name": "lakecurate-tiny", "model.pretrained": "none"}
    return load_config(None, {"lake.path": lake_path, **tiny})


@pytest.fixture(scope="module")
def synth(spark, tmp_path_factory):
    """A lake with generated pairs, embeddings, signals and duplicates (one per module)."""
    root = str(tmp_path_factory.mktemp("select") / "lake")
    cfg = make_cfg(root)
    tables = bench.make_tables(N, seed=1, mid=model_id(cfg.model))
    # semantic duplicates (dropped by bunny's first rule) that have no embedding row:
    # bunny's fractions stay exact while datacomp-clip meets pairs without a score
    d = tables["duplicates"].to_pandas()
    sem = d[(d["method"] == "semantic") & (d["uid"] != d["keeper_uid"])]
    no_emb = set(sem["uid"][:NO_EMBEDDING])
    emb = tables["embeddings"].to_pandas()
    written = dict(tables)
    written["embeddings"] = pa.Table.from_pandas(
        emb[~emb["uid"].isin(no_emb)], TABLES["embeddings"].schema, preserve_index=False
    )
    bench.write_lake(spark, Lake(root), written)
    return cfg, written, no_emb


def selection(spark, lake: Lake, recipe_id: str) -> pd.DataFrame:
    df = lake.read(spark, "selection").filter(f"recipe_id = '{recipe_id}'")
    return df.toPandas().set_index("uid")


def test_bunny_keeps_the_fractions_the_recipe_implies(spark, synth):
    cfg, tables, no_emb = synth
    cfg = replace(cfg, select={"recipe": "bunny"})
    lake = Lake(cfg.lake.path)
    result = select_job.run(spark, cfg)
    steps = result.counts["funnel"]
    ref = bench.reference_bunny(tables)
    expected_dups = N - ref["counts"][0]
    checks = bench.check_funnel(steps, expected_dups, DEFAULT_ACCURACY, 2_000_000)
    assert all(c["ok"] for c in checks), bench.format_checks(checks)
    assert [s["rule"] for s in steps] == [
        "not_duplicate",
        "similarity_band",
        "centroid_band",
        "sample",
    ]

    rid = load_recipe("bunny").recipe_id
    sel = selection(spark, lake, rid)
    assert len(sel) == N and sel.index.is_unique
    assert set(sel.index) == set(tables["pairs"].column("uid").to_pylist())
    assert int(sel["kept"].sum()) == steps[-1]["out"] == result.counts["kept"]
    assert sel.loc[sel["kept"], "reason"].isna().all()
    assert sel["reason"].value_counts().to_dict() == {
        s["rule"]: s["dropped"] for s in steps if s["dropped"]
    }
    # the approximate bands agree with numpy's exact quantiles up to boundary rows
    ref_kept = set(ref["uids"][ref["masks"][-1]])
    ours = set(sel.index[sel["kept"]])
    assert len(ours & ref_kept) / len(ours | ref_kept) > 0.97

    meta = lake.history("selection")[0]
    assert meta["recipe_id"] == rid and meta["recipe"] == "bunny"
    assert json.loads(meta["funnel"]) == steps
    assert meta["model_id"] == model_id(cfg.model)

    # deterministic: the same inputs and recipe change nothing and commit nothing
    version = lake.version("selection")
    again = select_job.run(spark, cfg)
    assert again.counts["changed"] is False and again.counts["funnel"] == steps
    assert lake.version("selection") == version


def _expected_datacomp_reason(pairs: pd.DataFrame) -> pd.Series:
    words = pairs["caption"].str.split().str.len()
    chars = pairs["caption"].str.split().str.join(" ").str.len()
    short = np.minimum(pairs["width"], pairs["height"])
    aspect = np.maximum(pairs["width"], pairs["height"]) / short
    reason = pd.Series(None, index=pairs.index, dtype=object)
    checks = [
        ("caption_words", words >= 2),
        ("caption_chars", chars >= 5),
        ("min_resolution", short >= 200),
        ("max_aspect_ratio", aspect <= 3.0),
    ]
    for name, ok in checks:
        reason[reason.isna() & ~ok] = name
    return reason


def test_datacomp_clip_end_to_end(spark, synth):
    cfg, tables, no_emb = synth
    cfg = replace(cfg, select={"recipe": "datacomp-clip"})
    result = select_job.run(spark, cfg)
    sel = selection(spark, Lake(cfg.lake.path), load_recipe("datacomp-clip").recipe_id)
    pairs = tables["pairs"].select(["uid", "caption", "width", "height"]).to_pandas()
    want = _expected_datacomp_reason(pairs.set_index("uid"))
    basic = want[want.isna()].index
    # every row the basic filter drops carries that filter's name
    pd.testing.assert_series_equal(
        sel.loc[want.dropna().index, "reason"], want.dropna(), check_names=False
    )
    top = result.counts["funnel"][-1]
    assert top["rule"] == "clip_score_top_fraction" and top["in"] == len(basic)
    no_emb = no_emb & set(basic)
    assert (sel.loc[list(no_emb), "reason"] == "clip_score_top_fraction").all()
    with_score = len(basic) - len(no_emb)  # the quantile is over rows that have a score
    assert abs(top["out"] - 0.3 * with_score) <= 2 + with_score * 2 / DEFAULT_ACCURACY
    kept_scores = (
        tables["embeddings"].to_pandas().set_index("uid").loc[sel.index[sel["kept"]], "clip_score"]
    )
    dropped = sel.index[(sel["reason"] == "clip_score_top_fraction")].difference(list(no_emb))
    dropped_scores = tables["embeddings"].to_pandas().set_index("uid").loc[dropped, "clip_score"]
    assert kept_scores.min() >= dropped_scores.max()


def test_default_recipe_through_the_cli(spark, synth, capsys):
    from lakecurate import cli

    cfg, tables, no_emb = synth
    code = cli.main(["--lake", cfg.lake.path, "--json", "select", "--recipe", "default"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["counts"]["recipe"] == "default"
    steps = out["counts"]["funnel"]
    lines = out["message"].splitlines()
    funnel_lines = lines[1 : 2 + len(steps)]  # the printed funnel: header + one per rule
    assert [line.split()[0] for line in funnel_lines] == ["rule"] + [s["rule"] for s in steps]
    # then what not_duplicate dropped per method, as printed and in the counts
    (drops,) = out["counts"]["duplicate_drops"]
    assert set(drops["dropped_by_method"]) == {"exact", "phash"}
    dup_step = next(s for s in steps if s["rule"] == "not_duplicate")
    assert max(drops["dropped_by_method"].values()) <= dup_step["dropped"]
    assert sum(drops["dropped_by_method"].values()) >= dup_step["dropped"]
    assert lines[2 + len(steps)].startswith("not_duplicate: dropped by method")
    rid = load_recipe("default").recipe_id
    sel = selection(spark, Lake(cfg.lake.path), rid)
    assert len(sel) == N
    dups = tables["duplicates"].to_pandas()
    dups = dups[dups["method"].isin(["exact", "phash"])]
    non_keepers = set(dups.loc[dups["uid"] != dups["keeper_uid"], "uid"])
    keepers = set(dups.loc[dups["uid"] == dups["keeper_uid"], "uid"])
    reasons = sel["reason"]
    assert non_keepers, "the generated lake has exact/phash duplicates"
    quality = ["min_resolution", "max_aspect_ratio", "caption_words", "caption_chars"]
    nk = dups[dups["uid"] != dups["keeper_uid"]]
    keeper_in_play = nk["keeper_uid"].map(lambda k: reasons[k] not in quality)
    # a non-keeper whose keeper reached not_duplicate is dropped (by it or earlier) ...
    assert reasons[list(nk["uid"][keeper_in_play])].isin([*quality, "not_duplicate"]).all()
    # ... and one whose every keeper left play earlier is never dropped as a duplicate
    lost = set(nk["uid"][~keeper_in_play]) - set(nk["uid"][keeper_in_play])
    assert not (reasons[list(lost)] == "not_duplicate").any()
    assert (reasons[list(non_keepers)] == "not_duplicate").any()
    assert not (reasons[list(keepers)] == "not_duplicate").any()
    # both recipes' rows live side by side under their own recipe_id
    ids = set(Lake(cfg.lake.path).read(spark, "selection").toPandas()["recipe_id"])
    assert rid in ids and len(ids) >= 2


def test_columns_derived_from_pairs(spark, lake, cfg):
    from lakecurate.runtime.jobkit import JobContext

    rows = {
        "uid": ["a", "b", "c", "d"],
        "image_sha256": ["x"] * 4,
        "caption": ["  two \t words ", "", None, "one"],
        "width": [640, 100, None, 300],
        "height": [160, 100, 50, 0],
    }
    bench.write_lake(spark, lake, {"pairs": bench._table(TABLES["pairs"].schema, rows, 4)})
    cols = ["aspect", "caption_chars", "caption_words", "resolution"]
    frame = select_job.build_frame(
        lambda t: JobContext("select", cfg).read(spark, t), cfg, {"pairs": cols}
    )
    got = frame.toPandas().set_index("uid").sort_index()
    assert got["caption_words"].tolist() == [2, 0, 0, 1]
    assert got["caption_chars"].tolist() == [9, 0, 0, 3]
    assert got["resolution"].tolist()[:2] == [160, 100] and got["resolution"].isna().tolist()[2]
    assert got["aspect"].tolist()[0] == 4.0 and got["aspect"].isna().tolist() == [
        False,
        False,
        True,
        True,
    ]


def test_missing_inputs_fail_before_spark_work_naming_the_command(spark, lake, cfg):
    with pytest.raises(JobError, match="lakecurate ingest"):
        select_job.run(spark, cfg)
    pairs = bench.make_tables(20, seed=0, mid=model_id(cfg.model))
    bench.write_lake(spark, lake, {"pairs": pairs["pairs"]})
    cases = {
        "bunny": "lakecurate dedup --methods semantic",
        "datacomp-clip": "lakecurate embed --model lakecurate-tiny --pretrained none",
        "default": "lakecurate dedup --methods exact,phash",
    }
    for recipe, command in cases.items():
        with pytest.raises(JobError, match=command):
            select_job.run(spark, replace(cfg, select={"recipe": recipe}))
    other = bench.make_tables(20, seed=0, mid="ViT-B-32/laion2b_s34b_b79k/bf16")
    bench.write_lake(spark, lake, {"embeddings": other["embeddings"]})
    with pytest.raises(JobError, match="it holds: ViT-B-32/laion2b_s34b_b79k/bf16"):
        select_job.run(spark, replace(cfg, select={"recipe": "datacomp-clip"}))
    # semantic duplicates and embeddings present, but no centroid similarities yet
    full = bench.make_tables(20, seed=0, mid=model_id(cfg.model))
    sig = full["signals"]
    i = sig.schema.get_field_index("centroid_sim")
    signals = sig.set_column(i, sig.schema.field(i), pa.nulls(20, pa.float32()))
    bench.write_lake(
        spark,
        lake,
        {"embeddings": full["embeddings"], "duplicates": full["duplicates"], "signals": signals},
    )
    with pytest.raises(
        JobError, match="no centroid_sim values.*lakecurate dedup --methods semantic"
    ):
        select_job.run(spark, replace(cfg, select={"recipe": "bunny"}))
    # all inputs there, but the semantic verdicts were made at dedup's default eps
    loose = full["duplicates"].to_pandas()
    loose["config_slug"] = loose["config_slug"].str.replace("eps0.14", "eps0.07")
    loose = pa.Table.from_pandas(loose, TABLES["duplicates"].schema, preserve_index=False)
    bench.write_lake(spark, lake, {"signals": full["signals"], "duplicates": loose})
    with pytest.raises(JobError, match=r"eps 0.07: set `dedup: \{semantic_eps: 0.14\}`"):
        select_job.run(spark, replace(cfg, select={"recipe": "bunny"}))
    assert not lake.exists("selection")


def test_bad_recipe_on_the_cli_exits_2_before_spark(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("- min_resolution: {min_side: 64}\n- similarity_band: {lo: 0.9, hi: 0.2}\n")
    code = select_job.main(["--lake", str(tmp_path / "lake"), "--recipe", str(recipe)])
    err = capsys.readouterr().err
    assert code == 2
    assert "rule 2 (similarity_band), parameter lo" in err
    assert select_job.main(["--lake", str(tmp_path / "lake"), "--recipe", "nope"]) == 2
    assert not (tmp_path / "lake").exists()


def test_missing_input_on_the_cli_exits_1(spark, tmp_path, capsys):
    assert select_job.main(["--lake", str(tmp_path / "lake"), "--recipe", "bunny"]) == 1
    assert "run `lakecurate ingest` first" in capsys.readouterr().err


def test_runs_as_a_script(tmp_path):
    """`spark-submit jobs/selection.py` puts jobs/ first on sys.path, and nothing there
    shadows the standard library (tests/test_layout.py guards the names)."""
    script = Path(select_job.__file__)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- sample: {n: 0}\n")
    args = [sys.executable, str(script), "--lake", str(tmp_path), "--recipe", str(bad)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "rule 1 (sample), parameter n" in proc.stderr
