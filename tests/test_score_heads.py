"""Score heads (aesthetic, unsafe) in LAION's predictor format: trained here on synthetic
labels, saved as LAION saves them, loaded by lakecurate, run inside `embed`, and read
by the rules `min_aesthetic` and `max_unsafe`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lakecurate.curation.models import model_id
from lakecurate.jobs import embed
from lakecurate.jobs import selection as select_job
from lakecurate.runtime.config import load_config, replace
from lakecurate.runtime.errors import ConfigError, JobError
from lakecurate.udfs.heads import HeadError, load_head

DIM = 64  # lakecurate-tiny's embedding size


class LaionMLP(nn.Module):
    """The layout of LAION's improved aesthetic predictor (no activations)."""

    def __init__(self, d: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(d, 32), nn.Dropout(0.2), nn.Linear(32, 8), nn.Dropout(0.1), nn.Linear(8, 1)
        )

    def forward(self, x):
        return self.layers(x)


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _train(model: nn.Module, x: np.ndarray, y: np.ndarray, logistic: bool) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).float()
    loss_fn = nn.BCEWithLogitsLoss() if logistic else nn.MSELoss()
    model.train()
    for _ in range(500):
        opt.zero_grad()
        loss_fn(model(xt)[:, 0], yt).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    """An aesthetic MLP regressing a synthetic score and an unsafe logistic probe of a
    synthetic label, both trained on unit vectors, saved as state dicts."""
    d = tmp_path_factory.mktemp("heads")
    x = _unit(2000, DIM, 1)
    aesthetic = _train(LaionMLP(DIM), x, 5 + 3 * x[:, 0] - 2 * x[:, 1], logistic=False)
    unsafe = _train(nn.Linear(DIM, 1), x, (x[:, 2] > 0).astype(np.float32), logistic=True)
    paths = {"aesthetic": str(d / "aesthetic.pth"), "unsafe": str(d / "unsafe.pth")}
    torch.save(aesthetic.state_dict(), paths["aesthetic"])
    torch.save(unsafe.state_dict(), paths["unsafe"])
    return paths, aesthetic, unsafe


def test_heads_load_from_laion_layouts_and_score_as_torch_does(heads):
    paths, aesthetic, unsafe = heads
    x = _unit(300, DIM, 2)
    with torch.no_grad():
        want_a = aesthetic(torch.from_numpy(x))[:, 0].numpy()
        want_u = torch.sigmoid(unsafe(torch.from_numpy(x)))[:, 0].numpy()
    a, u = load_head("aesthetic", paths["aesthetic"]), load_head("unsafe", paths["unsafe"])
    assert a.input_size == DIM and len(a.layers) == 3 and len(u.layers) == 1
    np.testing.assert_allclose(a.score(x), want_a, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(u.score(x), want_u, rtol=1e-4, atol=1e-5)
    # the heads learned their synthetic labels (the check is not vacuous)
    assert np.corrcoef(a.score(x), 5 + 3 * x[:, 0] - 2 * x[:, 1])[0, 1] > 0.95
    assert ((u.score(x) > 0.5) == (x[:, 2] > 0)).mean() > 0.9
    assert 0.0 <= u.score(x).min() and u.score(x).max() <= 1.0


def test_bad_head_files_are_clear_errors(heads, tmp_path):
    paths, _, _ = heads
    with pytest.raises(HeadError, match="does not exist"):
        load_head("aesthetic", str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(HeadError, match="not a PyTorch state dict"):
        load_head("aesthetic", str(tmp_path / "junk.pth"))
    torch.save({"fc.weight": torch.zeros(1, DIM)}, tmp_path / "keys.pth")
    with pytest.raises(HeadError, match="unexpected key 'fc.weight'"):
        load_head("aesthetic", str(tmp_path / "keys.pth"))
    torch.save(nn.Linear(DIM, 3).state_dict(), tmp_path / "three.pth")
    with pytest.raises(HeadError, match="gives 3 outputs"):
        load_head("unsafe", str(tmp_path / "three.pth"))
    with pytest.raises(HeadError, match="unknown head"):
        load_head("beauty", paths["aesthetic"])
    # on the driver, before any Spark work: the model's embedding size is checked too
    torch.save(nn.Linear(512, 1).state_dict(), tmp_path / "wide.pth")
    with pytest.raises(ConfigError, match="size 512, but lakecurate-tiny makes 64"):
        embed.check_heads({"aesthetic": str(tmp_path / "wide.pth")}, "lakecurate-tiny")
    with pytest.raises(ConfigError, match="embed.heads"):
        load_config(None, {"embed.heads": {"beauty": "x.pth"}})


def test_embed_scores_with_the_heads_and_rules_select_on_them(
    spark, pairs_lake, cfg, heads, tmp_path
):
    paths, _, _ = heads
    # a recipe reading a head score before any embedding has one
    recipe = tmp_path / "heads.yaml"
    recipe.write_text("rules:\n  - min_aesthetic: {min: 5.0}\n")
    plain = replace(cfg, model={"precision": "fp32"})
    embed.run(spark, plain)
    with pytest.raises(JobError, match="--aesthetic-head"):
        select_job.run(spark, replace(plain, select={"recipe": str(recipe)}))

    # a second model (its own rows) embedded with both heads, given on the command line
    args = embed.build_parser().parse_args(
        ["--aesthetic-head", paths["aesthetic"], "--unsafe-head", paths["unsafe"]]
    )
    scored = embed.apply_args(replace(cfg, model={"precision": "bf16"}), args)
    assert set(scored.embed.heads) == {"aesthetic", "unsafe"}
    embed.run(spark, scored)
    mid = model_id(scored.model)
    got = pairs_lake.read(spark, "embeddings").filter(f"model_id = '{mid}'").toPandas()
    assert len(got) == pairs_lake.count("pairs") and got.aesthetic_score.notna().all()
    img = np.stack(got.image_emb).astype(np.float32)
    a, u = load_head("aesthetic", paths["aesthetic"]), load_head("unsafe", paths["unsafe"])
    np.testing.assert_allclose(got.aesthetic_score, a.score(img), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.unsafe_score, u.score(img), rtol=1e-4, atol=1e-5)
    old = pairs_lake.read(spark, "embeddings").filter(f"model_id != '{mid}'").toPandas()
    assert old.aesthetic_score.isna().all()  # the first model's rows had no head

    # thresholds at the medians, so that each rule drops some rows
    ta, tu = float(np.median(got.aesthetic_score)), float(np.median(got.unsafe_score))
    recipe.write_text(f"rules:\n  - min_aesthetic: {{min: {ta}}}\n  - max_unsafe: {{max: {tu}}}\n")
    select_job.run(spark, replace(scored, select={"recipe": str(recipe)}))
    sel = pairs_lake.read(spark, "selection").toPandas().set_index("uid")
    want = got.set_index("uid")
    keep = (want.aesthetic_score >= ta) & (want.unsafe_score <= tu)
    assert 0 < keep.sum() < len(keep)
    assert sel.loc[want.index, "kept"].tolist() == keep.tolist()
    reasons = set(sel.loc[want.index[~keep.values], "reason"])
    assert reasons == {"min_aesthetic", "max_unsafe"}
