"""`lakecurate probe`: train a small CLIP on a published version, evaluate it, embed with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lakecurate.cli import main as cli
from lakecurate.runtime.config import replace


@pytest.fixture(scope="module")
def published(spark, tmp_path_factory, sample_set):
    """A lake with version probe@1 of the sample set (refresh: ingest to publish)."""
    from lakecurate.jobs import refresh
    from lakecurate.runtime.config import load_config

    root = tmp_path_factory.mktemp("probe")
    sample_set.write_webdataset(root / "wds", shard_size=100)
    cfg = load_config(
        None,
        {
            "lake.path": str(root / "lake"),
            "spark.master": "local[2]",
            "spark.shuffle_partitions": 2,
            "model.name": "lakecurate-tiny",
            "model.pretrained": "none",
            "model.batch_size": 32,
            "publish.name": "probe",
            "publish.shard_size": 100,
            "sources": [{"uri": str(root / "wds"), "format": "webdataset"}],
        },
    )
    refresh.run(spark, cfg)
    return cfg


def _probes(lake_path: str) -> list[dict]:
    from lakecurate.deltaio.lake import Lake

    return Lake(lake_path).delta("probes").to_pyarrow_table().to_pylist()


def test_train_writes_a_checkpoint_open_clip_loads_and_a_probes_row(
    spark, published, capsys, tmp_path
):
    import open_clip
    from safetensors.torch import load_file

    lake = published.lake.path
    args = ["--lake", lake, "probe", "train", "probe@1", "--samples", "2048"]
    args += ["--batch-size", "64", "--lr", "0.003", "--seed", "3", "--json"]
    assert cli(args) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {r["event"]: r for r in _probes(lake) if r["probe_id"] == doc["probe_id"]}
    assert set(rows) == {"train", "eval:builtin"}
    train = rows["train"]
    assert train["dataset"] == "probe@1" and train["model"] == "lakecurate-probe-s"
    assert json.loads(train["pinned_versions"])["pairs"] >= 0
    assert train["samples"] == 2048 and train["seed"] == 3
    assert json.loads(train["hparams"])["batch_size"] == 64
    # the loss drops from log(batch) at random init
    curve = json.loads(train["loss_curve"])
    assert curve[0][1] > curve[-1][1] + 0.2, curve
    assert train["final_loss"] == pytest.approx(curve[-1][1], abs=1e-4)
    metrics = json.loads(rows["eval:builtin"]["metrics"])
    assert {"t2i_r1", "i2t_r5", "zeroshot_top1", "zeroshot_top5"} <= set(metrics)
    assert json.loads(train["metrics"])["builtin/t2i_r1"] == metrics["t2i_r1"]

    # open_clip loads the checkpoint by its config name
    ckpt = train["checkpoint_uri"]
    from lakecurate.udfs.clip import register_model_configs

    register_model_configs()
    model, _, _ = open_clip.create_model_and_transforms("lakecurate-probe-s", pretrained=ckpt)
    saved = load_file(ckpt)
    for k, v in model.state_dict().items():
        assert np.array_equal(v.numpy(), saved[k].numpy()), k
    config = json.loads(Path(ckpt).with_name("open_clip_config.json").read_text())
    assert config["model_cfg"]["vision_cfg"]["image_size"] == 64

    # and it is an embed model
    from lakecurate.curation.models import model_id
    from lakecurate.deltaio.lake import Lake
    from lakecurate.jobs import embed

    cfg = replace(published, model={"name": "lakecurate-probe-s", "pretrained": ckpt})
    res = embed.run(spark, cfg)
    assert res.counts["embedded"] > 200
    mid = model_id(cfg.model)
    emb = Lake(lake).read(spark, "embeddings").filter(f"model_id = '{mid}'").count()
    assert emb == res.counts["embedded"]

    # eval of the probe by id adds a row; compare prints both
    assert cli(["--lake", lake, "probe", "eval", doc["probe_id"], "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["evals"][doc["probe_id"]]["builtin"] == pytest.approx(metrics)
    assert cli(["--lake", lake, "probe", "compare", doc["probe_id"]]) == 0
    out = capsys.readouterr().out
    assert "builtin zeroshot_top1" in out and "probe@1" in out

    # the version's HTML report shows the probe: its loss curve and figures
    from lakecurate.catalog.dataset import resolve
    from lakecurate.catalog.report import build_report

    page = build_report(spark, Lake(lake), resolve(spark, Lake(lake), "probe", 1), thumbs=0)
    assert "training loss" in page and doc["probe_id"] in page and "zeroshot_top1" in page


def test_training_is_reproducible_and_bad_inputs_are_refused(published, tmp_path, capsys):
    from safetensors.torch import load_file

    from lakecurate.catalog.dataset import dataset_rows
    from lakecurate.probe.train import ProbeConfig, train

    dv = dataset_rows(None, published.lake.path, "probe")[0]
    cfg = ProbeConfig(samples=256, batch_size=64, seed=5, log_every=1)
    a = train(dv.manifest_uri, cfg, tmp_path / "a")
    b = train(dv.manifest_uri, cfg, tmp_path / "b")
    assert a.loss_curve == b.loss_curve
    wa, wb = load_file(a.checkpoint), load_file(b.checkpoint)
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)

    lake = published.lake.path
    assert cli(["--lake", lake, "probe", "train", "nothere@1"]) == 2
    assert "no dataset named 'nothere'" in capsys.readouterr().err
    assert cli(["--lake", lake, "probe", "train", "probe@1", "--samples", "10"]) == 2
    assert "less than one batch" in capsys.readouterr().err
    assert cli(["--lake", lake, "probe", "eval", "no-such-probe"]) == 2
    assert "neither a probe id" in capsys.readouterr().err
    args = ["--lake", lake, "probe", "train", "probe@1", "--eval", str(tmp_path)]
    assert cli(args) == 2
    assert "no *.tar shards" in capsys.readouterr().err


def test_checkpoints_of_an_object_store_lake_are_written_locally():
    from lakecurate.deltaio.lake import Lake
    from lakecurate.probe.command import default_out

    assert default_out(Lake("/data/lake"), "p1") == Path("/data/lake/_probes/p1")
    assert default_out(Lake("file:///data/lake"), "p1") == Path("/data/lake/_probes/p1")
    remote = default_out(Lake("s3://bucket/lake"), "p1")
    assert remote == Path.home() / ".cache" / "lakecurate" / "probes" / "p1"
