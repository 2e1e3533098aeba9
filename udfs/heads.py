"""Score heads over the image embedding: an aesthetic score and an unsafe-content score,
computed in the embed UDF on the vectors it has just made (no second pass).

A head file is a PyTorch state dict in one of LAION's predictor layouts (the user
supplies it: no model hub is reached):

* a linear probe, as LAION's first aesthetic predictor (`sa_0_4_vit_l_14_linear.pth`):
  keys `weight` (1, d) and `bias` (1,);
* an MLP as the improved aesthetic predictor (`sac+logos+ava1-l14-linearMSE.pth`):
  `layers.<i>.weight` / `layers.<i>.bias` of Linear layers applied in index order
  (its Dropout layers hold no weights and are the identity at inference; the
  predictor has no activations between its layers, so none are applied).

A checkpoint that wraps the dict in `state_dict` is unwrapped. The input is the
L2-normalised image embedding, as LAION's predictors expect; its size must equal the
head's input size. `aesthetic_score` is the head's output (LAION's scale is about
1-10); `unsafe_score` is the sigmoid of the head's output, a probability, so an
unsafe head is a logistic probe (a logit out).

Executor-side: heads load once per Python worker (cached by path, size and mtime).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass

import numpy as np

HEADS = ("aesthetic", "unsafe")
SCORE_COLUMNS = {name: f"{name}_score" for name in HEADS}
_LAYER = re.compile(r"^layers\.(\d+)\.(weight|bias)$")


class HeadError(ValueError):
    """A head file that cannot be used, with what is wrong and what to do."""


@dataclass(frozen=True)
class ScoreHead:
    """Linear layers (weight (out, in), bias (out,)) applied in order; `sigmoid` last."""

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    sigmoid: bool = False

    @property
    def input_size(self) -> int:
        return int(self.layers[0][0].shape[1])

    def score(self, image_emb: np.ndarray) -> np.ndarray:
        """(k, d) normalised image embeddings -> (k,) float32 scores."""
        x = np.asarray(image_emb, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise HeadError(f"embeddings of shape {x.shape}, the head takes {self.input_size}")
        for w, b in self.layers:
            x = x @ w.T + b
        out = x[:, 0]
        if self.sigmoid:
            out = 1.0 / (1.0 + np.exp(-out))
        return out.astype(np.float32)


def _tensors(path: str) -> dict:
    import torch

    if not os.path.isfile(path):
        raise HeadError(f"head file {path!r} does not exist: give the path of a .pth state dict")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise HeadError(
            f"head file {path!r} is not a PyTorch state dict ({type(e).__name__}: {e})"
        ) from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise HeadError(f"head file {path!r} holds {type(obj).__name__}, not a state dict")
    return {k: v.detach().float().numpy() for k, v in obj.items()}


def parse_head(tensors: dict, sigmoid: bool, where: str = "head") -> ScoreHead:
    """A state dict in one of LAION's layouts -> ScoreHead (checked shapes)."""
    keys = set(tensors)
    if keys == {"weight", "bias"}:
        pairs = [(tensors["weight"], tensors["bias"])]
    else:
        found: dict[int, dict[str, np.ndarray]] = {}
        for k, v in tensors.items():
            m = _LAYER.match(k)
            if m is None:
                raise HeadError(
                    f"{where}: unexpected key {k!r}; a head is `weight`/`bias` (a linear "
                    f"probe) or `layers.<i>.weight`/`layers.<i>.bias` (LAION's MLP); "
                    f"found {sorted(keys)[:8]}"
                )
            found.setdefault(int(m.group(1)), {})[m.group(2)] = v
        if not found or any(set(p) != {"weight", "bias"} for p in found.values()):
            raise HeadError(f"{where}: every layer needs a weight and a bias; found {sorted(keys)}")
        pairs = [(found[i]["weight"], found[i]["bias"]) for i in sorted(found)]
    layers = []
    size = None
    for i, (w, b) in enumerate(pairs):
        w, b = np.asarray(w, np.float32), np.asarray(b, np.float32).reshape(-1)
        if w.ndim != 2 or b.shape[0] != w.shape[0]:
            raise HeadError(f"{where}: layer {i} has weight {w.shape} and bias {b.shape}")
        if size is not None and w.shape[1] != size:
            raise HeadError(
                f"{where}: layer {i} takes {w.shape[1]} inputs, the one before gives {size}"
            )
        size = w.shape[0]
        layers.append((w, b))
    if size != 1:
        raise HeadError(f"{where}: the last layer gives {size} outputs; a score head gives 1")
    return ScoreHead(tuple(layers), sigmoid)


def load_head(name: str, path: str) -> ScoreHead:
    """The `name` head (aesthetic | unsafe) from its file."""
    if name not in HEADS:
        raise HeadError(f"unknown head {name!r}; heads: {', '.join(HEADS)}")
    return parse_head(_tensors(path), sigmoid=name == "unsafe", where=f"{name} head {path!r}")


_CACHE: dict[tuple, ScoreHead] = {}
_LOCK = threading.Lock()


def cached_head(name: str, path: str) -> ScoreHead:
    """`load_head`, once per worker while the file stays the same."""
    st = os.stat(path)
    key = (name, path, st.st_size, st.st_mtime_ns)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_head(name, path)
        return _CACHE[key]


def head_scores(heads: tuple[tuple[str, str], ...], image_emb: np.ndarray) -> dict[str, np.ndarray]:
    """{score column: (k,) scores} of the configured `(name, path)` heads."""
    return {SCORE_COLUMNS[n]: cached_head(n, p).score(image_emb) for n, p in heads}
