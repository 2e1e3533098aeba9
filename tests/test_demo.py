"""`lakecurate demo` end to end, with the model-data loop: a probe trained on the first
version scores the lake, `datacomp-clip` selects by its scores into a second version,
and the same probe is trained on that one."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from lakecurate.curation.models import model_id
from lakecurate.curation.selection.recipes import load_recipe
from lakecurate.jobs import demo
from lakecurate.probe.train import PROBE_MODEL
from lakecurate.runtime.config import replace
from lakecurate.runtime.errors import ConfigError


@pytest.mark.slow
def test_demo_closes_the_loop_from_a_probe_back_to_the_data(spark, lake, cfg, capsys):
    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    args = p.parse_args(["--pairs", "300", "--probe-samples", "256", "--name", "loop"])
    cfg = demo.apply_args(replace(cfg, model={"batch_size": 32}), args)
    assert demo.command(spark, cfg, args) == 0
    out = capsys.readouterr().out

    rows = {r["version"]: r for r in lake.read(spark, "datasets").collect()}
    assert sorted(rows) == [1, 2]
    made = Path(cfg.lake.path) / "_demo_sources" / "datacomp-clip-demo.yaml"
    assert rows[2]["recipe_id"] == load_recipe(str(made)).recipe_id != rows[1]["recipe_id"]
    # the second version was scored by the probe: its model and its embeddings
    probe_mid = rows[2]["model_id"]
    assert probe_mid.startswith(PROBE_MODEL) and probe_mid != model_id(cfg.model)
    held = {r["model_id"] for r in lake.read(spark, "embeddings").select("model_id").collect()}
    assert held == {model_id(cfg.model), probe_mid}
    trained = lake.read(spark, "probes").filter("event = 'train'").collect()
    assert sorted(r["dataset"] for r in trained) == ["loop@1", "loop@2"]
    assert all(json.loads(r["metrics"]) for r in trained)

    auc = re.search(r"ROC AUC (\d\.\d+) under the probe \(random-weight \S+: (\d\.\d+)\)", out)
    assert auc and 0.0 <= float(auc[1]) <= 1.0 and 0.0 <= float(auc[2]) <= 1.0
    assert "probe trained on loop@1, builtin eval" in out
    assert "probe trained on loop@2, builtin eval" in out


def test_a_negative_probe_budget_is_refused(cfg):
    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    with pytest.raises(ConfigError, match="--probe-samples"):
        demo.apply_args(cfg, p.parse_args(["--probe-samples", "-5"]))
