"""`lakecurate export-embeddings`: clip-retrieval's layout, loadable with numpy and pandas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lakecurate.deltaio.lake import Commit
from lakecurate.jobs import export_embeddings as ex
from lakecurate.runtime.errors import ConfigError
from lakecurate.schemas import TABLES

MODEL_A = "lakecurate-tiny/none/fp32"
MODEL_B = "other/none/bf16"
DIM = 8


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def embedded(spark, pairs_lake):
    """Known vectors for every pair under MODEL_A and for ten pairs under MODEL_B."""
    pairs = pairs_lake.read(spark, "pairs").select("uid", "caption").toPandas()
    rng = np.random.default_rng(0)
    frames = []
    for mid, uids in ((MODEL_A, pairs.uid), (MODEL_B, pairs.uid[:10])):
        img, txt = _unit(rng, len(uids)), _unit(rng, len(uids))
        frames.append(
            pd.DataFrame(
                {
                    "uid": list(uids),
                    "model_id": mid,
                    "image_emb": list(img),
                    "text_emb": list(txt),
                    "clip_score": (img * txt).sum(1),
                    "run_id": "test",
                    "embedded_at": pd.Timestamp.now(tz="UTC"),
                }
            )
        )
    rows = pd.concat(frames, ignore_index=True)
    spec = TABLES["embeddings"]
    table = rows.reindex(columns=spec.schema.names)  # head scores: null
    pairs_lake.write(
        spark.createDataFrame(table, spec.spark_schema()), "embeddings", Commit("t", "t")
    )
    want = rows[rows.model_id == MODEL_A].set_index("uid")
    return want, pairs.set_index("uid").caption


def _load_npy(out: Path, kind: str) -> np.ndarray:
    files = sorted((out / kind).glob(f"{kind}_*.npy"))
    return np.concatenate([np.load(f) for f in files])


def _load_meta(out: Path) -> pd.DataFrame:
    files = sorted((out / "metadata").glob("metadata_*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def test_npy_export_has_aligned_files_in_clip_retrieval_layout(spark, cfg, embedded, tmp_path):
    want, captions = embedded
    out = tmp_path / "export"
    opts = ex.ExportOptions(str(out), "npy", MODEL_A, rows_per_file=100)
    manifest = ex.export(spark, cfg, opts)
    n = len(want)
    n_files = -(-n // 100)
    assert manifest["rows"] == n and manifest["files"] == n_files and manifest["dim"] == DIM
    assert json.loads((out / "export.json").read_text())["model_id"] == MODEL_A
    for kind in ("img_emb", "text_emb"):
        names = sorted(p.name for p in (out / kind).iterdir())
        assert names == [f"{kind}_{i}.npy" for i in range(n_files)]
    assert sorted(p.name for p in out.iterdir()) == [
        "export.json",
        "img_emb",
        "metadata",
        "text_emb",
    ]

    img, txt, meta = _load_npy(out, "img_emb"), _load_npy(out, "text_emb"), _load_meta(out)
    assert img.dtype == np.float32 and img.shape == txt.shape == (n, DIM)
    assert list(meta.columns) == ["uid", "caption", "url"]
    assert meta.uid.is_monotonic_increasing and meta.uid.is_unique and len(meta) == n
    np.testing.assert_array_equal(img, np.stack(want.loc[meta.uid, "image_emb"]))
    np.testing.assert_array_equal(txt, np.stack(want.loc[meta.uid, "text_emb"]))
    assert (meta.caption.values == captions.loc[meta.uid].values).all()


def test_parquet_export_and_float16_and_reexport_rules(spark, cfg, embedded, tmp_path):
    want, _ = embedded
    out = tmp_path / "pq"
    ex.export(spark, cfg, ex.ExportOptions(str(out), "parquet", MODEL_B))
    df = pd.read_parquet(out / "img_emb" / "img_emb_0.parquet")
    assert list(df.columns) == ["uid", "caption", "url", "embedding"] and len(df) == 10
    assert np.stack(df.embedding).shape == (10, DIM)
    assert len(pd.read_parquet(out / "text_emb" / "text_emb_0.parquet")) == 10

    with pytest.raises(ConfigError, match="not empty; pass --overwrite"):
        ex.export(spark, cfg, ex.ExportOptions(str(out), "npy", MODEL_A))
    ex.export(
        spark, cfg, ex.ExportOptions(str(out), "npy", MODEL_A, dtype="float16", overwrite=True)
    )
    img = _load_npy(out, "img_emb")
    assert img.dtype == np.float16 and len(img) == len(want)
    assert not list((out / "img_emb").glob("*.parquet"))  # the old export is gone

    with pytest.raises(ConfigError, match=f"model_ids in the lake: {MODEL_A}, {MODEL_B}"):
        ex.export(spark, cfg, ex.ExportOptions(str(tmp_path / "x"), "npy", "nope/none/fp32"))


def test_cli_export_uses_the_model_flags_to_pick_rows(spark, cfg, embedded, tmp_path, capsys):
    want, _ = embedded
    out = tmp_path / "cli"
    argv = ["--lake", cfg.lake.path, str(out), "--model", "lakecurate-tiny", "--pretrained"]
    assert ex.main([*argv, "none", "--precision", "fp32", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model_id"] == MODEL_A and summary["rows"] == len(want)
    assert ex.main(["--lake", cfg.lake.path, str(tmp_path / "y"), "--rows-per-file", "0"]) == 2
