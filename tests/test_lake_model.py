"""The lake remembers its model: after `embed --model X`, the commands that read
embeddings use X when no model is named, and stop with a list when there are several."""

from __future__ import annotations

import json

import pytest

from lakecurate.curation.models import model_id, resolve_model, split_model_id
from lakecurate.jobs import embed, publish, selection
from lakecurate.runtime.config import replace
from lakecurate.runtime.errors import ConfigError

TINY_FP32 = "lakecurate-tiny/none/fp32"


def _unnamed(cfg):
    return replace(cfg, model={"name": ""})


def test_a_lake_without_embeddings_means_the_default_model(lake, cfg):
    assert resolve_model(lake, _unnamed(cfg)).model.name == "ViT-B-32"
    named = replace(cfg, model={"name": "ViT-L-14"})
    assert resolve_model(lake, named).model.name == "ViT-L-14"  # a named model wins


def test_model_ids_split_back_into_their_parts():
    assert split_model_id("hf-hub:org/model/ckpt.safetensors@0123456789ab/bf16") == (
        "hf-hub:org/model",
        "ckpt.safetensors@0123456789ab",
        "bf16",
    )


def test_select_and_publish_use_the_lake_model_and_several_models_need_a_name(
    spark, pairs_lake, cfg, capsys, tmp_path
):
    assert embed.run(spark, cfg).counts["model_id"] == TINY_FP32
    recipe = tmp_path / "clip-half.yaml"
    recipe.write_text("name: clip-half\nrules:\n  - clip_score_top_fraction: {fraction: 0.5}\n")
    lake_args = ["--lake", cfg.lake.path, "--master", "local[2]", "--recipe", str(recipe)]

    # no model named anywhere (the built-in config): the lake's only model is used
    resolved = resolve_model(pairs_lake, _unnamed(cfg))
    assert model_id(resolved.model) == TINY_FP32
    assert selection.main(lake_args) == 0
    assert "using the lake's model lakecurate-tiny/none/fp32" in capsys.readouterr().err
    (commit,) = [h for h in pairs_lake.history("selection") if h.get("recipe_id")]
    assert commit["model_id"] == TINY_FP32

    # publish's manifest names the model whose scores the selection used
    unnamed = replace(_unnamed(cfg), select={"recipe": str(recipe)}, publish={"name": "clipset"})
    pub = publish.run(spark, unnamed)
    manifest = json.loads(open(f"{pub.counts['shard_dir']}/manifest.json").read())
    assert manifest["model_id"] == TINY_FP32

    # a second model: a command without a model stops and lists both
    assert embed.run(spark, replace(cfg, model={"precision": "bf16"})).counts["embedded"] > 0
    with pytest.raises(ConfigError, match="2 models .*lakecurate-tiny/none/bf16.*fp32"):
        resolve_model(pairs_lake, _unnamed(cfg))
    assert selection.main(lake_args) == 2
    err = capsys.readouterr().err
    assert "lakecurate-tiny/none/bf16" in err and "--model NAME" in err
    # naming one is enough
    named = [*lake_args, "--model", "lakecurate-tiny"]
    assert selection.main([*named, "--pretrained", "none"]) == 0
