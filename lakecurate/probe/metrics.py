"""Zero-shot classification and retrieval metrics over L2-normalised embeddings.

Plain numpy, as clip_benchmark defines them:

* zero-shot: each class's text embedding is the normalised mean of its templates'
  embeddings; an image's prediction is the class of highest cosine; top-k accuracy
  counts an image right when its label is among its k best classes (top-5 only where
  there are at least 5 classes); a tie goes the image's way (its rank is the number of
  classes scoring strictly higher), as it does for retrieval;
* retrieval: texts may be several per image (`text_image[t]` is text t's image).
  Text-to-image R@k: the share of texts whose image is among their k nearest images.
  Image-to-text R@k: the share of images with at least one of their texts among their
  k nearest texts.
"""

from __future__ import annotations

import numpy as np


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def class_embeddings(template_embeddings: np.ndarray) -> np.ndarray:
    """(classes, templates, dim) -> (classes, dim): the normalised mean per class."""
    return normalise(normalise(template_embeddings).mean(axis=1))


def topk_accuracy(image_emb: np.ndarray, class_emb: np.ndarray, labels, k: int) -> float:
    """Share of images whose label is among the k classes nearest to them."""
    scores = normalise(image_emb) @ normalise(class_emb).T
    labels = np.asarray(labels)
    k = min(k, scores.shape[1])
    # rank of the true class: how many classes score strictly higher
    true = scores[np.arange(len(labels)), labels]
    rank = (scores > true[:, None]).sum(axis=1)
    return float((rank < k).mean())


def zero_shot(image_emb: np.ndarray, class_emb: np.ndarray, labels) -> dict[str, float]:
    out = {"zeroshot_top1": topk_accuracy(image_emb, class_emb, labels, 1)}
    if class_emb.shape[0] >= 5:
        out["zeroshot_top5"] = topk_accuracy(image_emb, class_emb, labels, 5)
    return out


def retrieval(
    image_emb: np.ndarray, text_emb: np.ndarray, text_image, ks: tuple[int, ...] = (1, 5)
) -> dict[str, float]:
    """Recall@k both ways; `text_image[t]` is the index of text t's image."""
    sims = normalise(text_emb) @ normalise(image_emb).T  # (texts, images)
    text_image = np.asarray(text_image)
    n_txt, n_img = sims.shape
    own = sims[np.arange(n_txt), text_image]
    t2i_rank = (sims > own[:, None]).sum(axis=1)  # images strictly nearer than its own
    # image -> text: the best rank among the image's own texts
    by_image = sims.T  # (images, texts)
    i2t_rank = np.full(n_img, n_txt, dtype=np.int64)
    for t in range(n_txt):
        i = text_image[t]
        rank = int((by_image[i] > by_image[i, t]).sum())
        i2t_rank[i] = min(i2t_rank[i], rank)
    out = {}
    for k in ks:
        out[f"t2i_r{k}"] = float((t2i_rank < k).mean())
        out[f"i2t_r{k}"] = float((i2t_rank < k).mean())
    return out


def roc_auc(positive, negative) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random
    negative, ties counting half (the Mann-Whitney U statistic over both counts)."""
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    if not len(pos) or not len(neg):
        raise ValueError("roc_auc needs at least one positive and one negative score")
    order = np.sort(neg)
    below = np.searchsorted(order, pos, side="left")
    ties = np.searchsorted(order, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(pos) * len(neg)))
