"""versions list/show/diff/tag/retire, through the CLI entry point with --json."""

from __future__ import annotations

import json

import pytest
from test_publish_support import copy_lake, curated_template, verdict

from lakecurate.catalog import versions


@pytest.fixture
def tpl(spark, tmp_path_factory, sample_set):
    return curated_template(spark, tmp_path_factory, sample_set)


def _run(capsys, lake_path: str, *argv: str) -> dict:
    rc = versions.main([*argv, "--lake", lake_path, "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


def test_list_and_show(spark, tpl, capsys):
    doc = _run(capsys, tpl["path"], "list")
    rows = doc["datasets"]
    assert [(r["name"], r["version"], r["status"]) for r in rows] == [
        ("demo", 1, "published"),
        ("demo", 2, "published"),
    ]
    assert [r["num_samples"] for r in rows] == [len(tpl["kept"][0]), len(tpl["kept"][1])]
    assert all(r["created_at"] for r in rows)
    show = _run(capsys, tpl["path"], "show", "demo@1")
    assert show["dataset"]["version"] == 1
    man = show["manifest"]
    assert man["pinned_versions"] == show["dataset"]["pinned"]
    assert man["funnel"]["kept"] == len(tpl["kept"][0])
    assert man["funnel"]["dropped"]["caption_words<3"] > 0
    latest = _run(capsys, tpl["path"], "show", "demo")
    assert latest["dataset"]["version"] == 2


def test_diff_counts_samples_and_reasons(spark, tpl, capsys):
    doc = _run(capsys, tpl["path"], "diff", "demo@1", "demo@2", "--sample", "5")
    k1, k2 = set(tpl["kept"][0]), set(tpl["kept"][1])
    assert doc["added"]["count"] == len(k2 - k1) > 0
    assert doc["removed"]["count"] == len(k1 - k2) > 0
    # every removed uid left because of the new near-duplicate verdict at B
    assert doc["removed"]["by_reason"] == {"duplicate:phash": len(k1 - k2)}
    # every added uid had been dropped at A by the caption rule that B relaxed
    assert doc["added"]["by_reason"] == {"caption_words<3": len(k2 - k1)}
    removed = doc["removed"]["sample"]
    assert len(removed) == 5 and {r["uid"] for r in removed} <= k1 - k2
    assert all(r["reason_at_b"] == "duplicate:phash" and r["new_reason"] for r in removed)
    assert all(verdict(r["uid"], 1) == (False, "duplicate:phash") for r in removed)
    added = doc["added"]["sample"]
    assert all(r["reason_at_a"] == "caption_words<3" for r in added)
    every = _run(capsys, tpl["path"], "diff", "demo@1", "demo@2", "--all")
    assert {r["uid"] for r in every["removed"]["sample"]} == k1 - k2
    assert {r["uid"] for r in every["added"]["sample"]} == k2 - k1
    same = _run(capsys, tpl["path"], "diff", "demo@2", "demo@2")
    assert same["added"]["count"] == same["removed"]["count"] == 0


def test_tag_moves_and_retire_keeps_history(spark, tpl, tmp_path, capsys):
    lake, cfg = copy_lake(tpl, tmp_path)
    path = cfg.lake.path
    before = lake.version("datasets")
    doc = _run(capsys, path, "tag", "demo@1", "prod")
    assert doc["dataset"]["tags"] == ["prod"]
    _run(capsys, path, "tag", "demo@2", "candidate")
    doc = _run(capsys, path, "tag", "demo@2", "prod")  # moves prod from 1 to 2
    assert doc["dataset"]["tags"] == ["candidate", "prod"]
    rows = {r["version"]: r for r in _run(capsys, path, "list")["datasets"]}
    assert rows[1]["tags"] == [] and rows[2]["tags"] == ["candidate", "prod"]
    assert _run(capsys, path, "show", "demo@prod")["dataset"]["version"] == 2
    _run(capsys, path, "tag", "demo@2", "candidate", "--remove")
    assert _run(capsys, path, "show", "demo@2")["dataset"]["tags"] == ["prod"]
    doc = _run(capsys, path, "retire", "demo@1")
    assert doc["dataset"]["status"] == "retired"
    rows = {r["version"]: r for r in _run(capsys, path, "list")["datasets"]}
    assert rows[1]["status"] == "retired" and rows[2]["status"] == "published"
    # each change is its own commit; the history still has the old rows
    assert lake.version("datasets") == before + 5
    old = lake.read(spark, "datasets", before).collect()
    assert {r["status"] for r in old} == {"published"} and all(not r["tags"] for r in old)
    jobs = [h.get("action") for h in lake.history("datasets")[:5]]
    assert jobs.count("tag") == 4 and jobs.count("retire") == 1


def test_bad_references_exit_2_with_a_message(spark, tpl, capsys):
    for argv, msg in (
        (["show", "demo@9"], "no version 9"),
        (["show", "nope"], "no dataset named"),
        (["show", "demo@nosuchtag"], "no tag"),
        (["tag", "demo", "prod"], "say which version"),
        (["tag", "demo@1", "1bad"], "is not a tag"),
        (["diff", "demo@1", "demo"], "both sides"),
    ):
        rc = versions.main([*argv, "--lake", tpl["path"]])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err, (argv, err)
