"""Top-k accuracy, confusion matrix, disagreement, mean/std."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib.metrics import (
    confusion_matrix,
    disagreement,
    disagreement_matrix,
    mean_std,
    topk_accuracy,
)

LOGITS = torch.tensor(
    [
        [0.1, 0.9, 0.0, 0.0],  # ranking 1, 0, 2/3
        [0.8, 0.1, 0.05, 0.05],  # ranking 0, 1, ...
        [0.2, 0.3, 0.4, 0.1],  # ranking 2, 1, 0, 3
        [0.1, 0.2, 0.3, 0.4],  # ranking 3, 2, 1, 0
    ]
)
TARGETS = torch.tensor([1, 1, 0, 0])


def test_topk_known_values():
    top1, top2, top3 = topk_accuracy(LOGITS, TARGETS, topk=(1, 2, 3))
    assert top1 == pytest.approx(25.0)  # only sample 0
    assert top2 == pytest.approx(50.0)  # + sample 1
    assert top3 == pytest.approx(75.0)  # + sample 2
    assert isinstance(top1, float)


def test_topk_k_larger_than_classes_is_clamped():
    assert topk_accuracy(LOGITS, TARGETS, topk=(1, 5)) == pytest.approx([25.0, 100.0])
    assert topk_accuracy(LOGITS[:, :2], torch.tensor([1, 0, 1, 1]), topk=(1, 5))[1] == 100.0


def test_topk_soft_targets_and_errors():
    soft = torch.nn.functional.one_hot(TARGETS, 4).float() * 0.9 + 0.025
    assert topk_accuracy(LOGITS, soft, topk=(1,)) == pytest.approx([25.0])
    with pytest.raises(ValueError):
        topk_accuracy(LOGITS, TARGETS[:3])
    with pytest.raises(ValueError):
        topk_accuracy(LOGITS, TARGETS, topk=(0,))
    with pytest.raises(ValueError):
        topk_accuracy(LOGITS[0], TARGETS[:1])


def test_confusion_matrix():
    cm = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), num_classes=4)
    expected = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)  # rows: true class, columns: predicted
    # logits are reduced with argmax
    np.testing.assert_array_equal(confusion_matrix(LOGITS, TARGETS, 4).sum(), 4)
    assert confusion_matrix(LOGITS, TARGETS, 4)[0, 2] == 1


def test_disagreement():
    a, b = [0, 1, 2, 3], np.array([0, 1, 0, 0])
    assert disagreement(a, b) == 0.5
    assert disagreement(LOGITS, [1, 0, 2, 3]) == 0.0
    with pytest.raises(ValueError):
        disagreement([0, 1], [0])


def test_disagreement_matrix():
    df = disagreement_matrix({"a": [0, 0, 0, 0], "b": [0, 0, 1, 1], "c": [1, 1, 1, 1]}, percent=True)
    assert list(df.index) == list(df.columns) == ["a", "b", "c"]
    np.testing.assert_allclose(df.values, [[0, 50, 100], [50, 0, 50], [100, 50, 0]])
    assert disagreement_matrix({"a": [0, 1], "b": [1, 1]}).loc["a", "b"] == 0.5


def test_mean_std():
    m, s = mean_std([1.0, 2.0, 3.0])
    assert (m, s) == (2.0, 1.0)
    m, s = mean_std(np.array([5.0]))
    assert m == 5.0 and math.isnan(s)
    with pytest.raises(ValueError):
        mean_std([])
