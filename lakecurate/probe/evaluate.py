"""Run a probe checkpoint over an eval set: zero-shot and retrieval figures."""

from __future__ import annotations

import io

import numpy as np

from lakecurate.probe import metrics
from lakecurate.probe.evalsets import EvalSet

BATCH = 256


def _embed_images(model, transform, images: list[bytes], device: str) -> np.ndarray:
    import torch
    from PIL import Image

    out = []
    with torch.no_grad():
        for i in range(0, len(images), BATCH):
            batch = [
                transform(Image.open(io.BytesIO(b)).convert("RGB")) for b in images[i : i + BATCH]
            ]
            feats = model.encode_image(torch.stack(batch).to(device))
            out.append(feats.float().cpu().numpy())
    return metrics.normalise(np.concatenate(out))


def _embed_texts(model, tokenizer, texts: list[str], device: str) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(texts), BATCH):
            feats = model.encode_text(tokenizer(texts[i : i + BATCH]).to(device))
            out.append(feats.float().cpu().numpy())
    return metrics.normalise(np.concatenate(out))


def evaluate(
    model, transform, tokenizer, evalset: EvalSet, device: str = "cpu"
) -> dict[str, float]:
    """The metrics of `model` on `evalset` (see `lakecurate.probe.metrics`)."""
    model.eval()
    img = _embed_images(model, transform, evalset.images, device)
    out: dict[str, float] = {"images": float(len(evalset.images))}
    if evalset.texts:
        txt = _embed_texts(model, tokenizer, evalset.texts, device)
        out |= metrics.retrieval(img, txt, evalset.text_image)
    if evalset.labels:
        names = evalset.classnames or []
        prompts = [t.format(c=c) for c in names for t in evalset.templates]
        per = _embed_texts(model, tokenizer, prompts, device)
        per = per.reshape(len(names), len(evalset.templates), -1)
        out |= metrics.zero_shot(img, metrics.class_embeddings(per), evalset.labels)
    return out
