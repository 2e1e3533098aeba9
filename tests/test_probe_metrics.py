"""Probe metrics on hand-built embeddings whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from lakecurate.probe import metrics


def _unit(*rows) -> np.ndarray:
    return metrics.normalise(np.asarray(rows, dtype=np.float32))


def test_zero_shot_top1_and_top5_count_the_rank_of_the_true_class():
    # 6 classes on the axes of R^6; each image points at one class, a little toward another
    classes = np.eye(6, dtype=np.float32)
    images = _unit(
        [1, 0.5, 0, 0, 0, 0],  # nearest class 0, then 1
        [0.5, 1, 0, 0, 0, 0],  # nearest 1, then 0
        [0, 0, 0.2, 1, 0, 0],  # nearest 3, then 2
        [0.1, 0.2, 0.3, 0.4, -0.5, 1],  # class 4 last of 6
    )
    labels = [0, 0, 2, 4]  # right, second, second, sixth
    got = metrics.zero_shot(images, classes, labels)
    assert got["zeroshot_top1"] == pytest.approx(1 / 4)
    assert got["zeroshot_top5"] == pytest.approx(3 / 4)
    assert metrics.topk_accuracy(images, classes, labels, 2) == pytest.approx(3 / 4)
    # a tie goes the image's way: rank counts the classes scoring strictly higher
    assert metrics.topk_accuracy(_unit([1, 1, 0]), np.eye(3), [1], 1) == 1.0


def test_zero_shot_without_five_classes_reports_top1_only():
    got = metrics.zero_shot(_unit([1, 0], [0, 1]), np.eye(2), [0, 0])
    assert got == {"zeroshot_top1": 0.5}


def test_class_embedding_is_the_normalised_mean_of_its_templates():
    per = np.asarray([[[2, 0], [0, 2]], [[1, 0], [1, 0]]], dtype=np.float32)
    got = metrics.class_embeddings(per)
    assert np.allclose(got, [[2**-0.5, 2**-0.5], [1, 0]], atol=1e-6)


def test_retrieval_recall_both_ways_with_two_captions_for_one_image():
    images = _unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    # texts 0, 1 belong to image 0; text 2 to image 1; text 3 to image 2
    texts = _unit(
        [1, 0.1, 0],  # -> image 0 first: right
        [0, 1, 0.2],  # -> image 1 first, image 0 last: wrong at 1 and at 2
        [0.9, 1, 0],  # -> image 1 first: right
        [1, 0, 0.5],  # -> image 0 first, image 2 second: wrong at 1, right at 2
    )
    got = metrics.retrieval(images, texts, [0, 0, 1, 2], ks=(1, 2))
    assert got["t2i_r1"] == pytest.approx(2 / 4)
    assert got["t2i_r2"] == pytest.approx(3 / 4)
    # image 0: nearest texts 0 (own) -> hit at 1; image 1: nearest text 1 (not its own,
    # 1/1.02 > 1/1.35), then text 2 (own) -> hit at 2; image 2: its text 3 scores 0.447,
    # below text 1 (0.196)? no: 0.447 > 0.196, so text 3 is nearest -> hit at 1
    assert got["i2t_r1"] == pytest.approx(2 / 3)
    assert got["i2t_r2"] == pytest.approx(3 / 3)


def test_perfect_embeddings_score_one():
    x = metrics.normalise(np.random.default_rng(0).normal(size=(20, 8)))
    got = metrics.retrieval(x, x, list(range(20)))
    assert got == {"t2i_r1": 1.0, "i2t_r1": 1.0, "t2i_r5": 1.0, "i2t_r5": 1.0}
    assert metrics.zero_shot(x, x, list(range(20)))["zeroshot_top1"] == 1.0


def test_roc_auc_counts_ordered_pairs_and_half_ties():
    assert metrics.roc_auc([3, 4], [1, 2]) == 1.0
    assert metrics.roc_auc([1, 2], [3, 4]) == 0.0
    # pairs (pos, neg): (2,1) above, (2,2) tie, (2,3) below, (5, *) above x3 -> 4.5 / 6
    assert metrics.roc_auc([2, 5], [1, 2, 3]) == 4.5 / 6
    with pytest.raises(ValueError):
        metrics.roc_auc([], [1])
