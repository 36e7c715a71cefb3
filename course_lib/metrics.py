"""Classification metrics used across the notebooks.

``topk_accuracy``    top-k accuracy in percent (k larger than the number of classes is clamped)
``confusion_matrix`` rows are true classes, columns predicted classes (scikit-learn)
``disagreement``     fraction of samples on which two classifiers predict different classes
``disagreement_matrix`` pairwise disagreement of several classifiers (DeiT, Table 4)
``mean_std``         mean and sample standard deviation over seeds

Predictions may be given as class indices ``(B,)`` or as logits/scores ``(B, C)``; the latter
are reduced with ``argmax``. Torch tensors, numpy arrays and lists are accepted.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix as _sk_confusion_matrix
from timm.utils import accuracy as _timm_accuracy

__all__ = [
    "topk_accuracy",
    "confusion_matrix",
    "disagreement",
    "disagreement_matrix",
    "mean_std",
    "as_labels",
]


def as_labels(x) -> np.ndarray:
    """Class indices as a 1-D int64 numpy array; logits ``(B, C)`` are reduced with argmax."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.argmax(dim=1) if x.ndim == 2 else x
        return x.reshape(-1).to(torch.int64).numpy()
    a = np.asarray(x)
    if a.ndim == 2:
        a = a.argmax(axis=1)
    return a.reshape(-1).astype(np.int64)


def topk_accuracy(
    logits: torch.Tensor, targets: torch.Tensor, topk: Sequence[int] = (1, 5)
) -> list[float]:
    """Top-k accuracies in percent, one per ``k`` in ``topk`` (in that order).

    ``logits`` is ``(B, C)``; ``targets`` holds class indices ``(B,)`` or soft/one-hot targets
    ``(B, C)`` (reduced with argmax, e.g. after mixup). A ``k`` larger than ``C`` counts every
    class as predicted, so its accuracy is 100%.
    """
    logits = torch.as_tensor(logits).detach()
    targets = torch.as_tensor(targets).detach()
    if logits.ndim != 2:
        raise ValueError(f"logits must be (batch, classes), got shape {tuple(logits.shape)}")
    if targets.ndim == 2:
        targets = targets.argmax(dim=1)
    targets = targets.reshape(-1).to(device=logits.device, dtype=torch.long)
    if logits.shape[0] != targets.shape[0]:
        raise ValueError(f"{logits.shape[0]} logits rows but {targets.shape[0]} targets")
    if logits.shape[0] == 0:
        raise ValueError("topk_accuracy of an empty batch is undefined")
    if any(int(k) < 1 for k in topk):
        raise ValueError(f"every k must be >= 1, got {tuple(topk)}")
    # timm clamps k to the number of classes
    accs = _timm_accuracy(logits.float(), targets, topk=tuple(int(k) for k in topk))
    return [float(a) for a in accs]


def confusion_matrix(preds, targets, num_classes: int) -> np.ndarray:
    """``(num_classes, num_classes)`` counts: entry ``[t, p]`` = samples of class t predicted p."""
    p, t = as_labels(preds), as_labels(targets)
    if p.shape != t.shape:
        raise ValueError(f"{p.size} predictions but {t.size} targets")
    return _sk_confusion_matrix(t, p, labels=np.arange(num_classes))


def disagreement(a, b) -> float:
    """Fraction (0..1) of samples on which the predictions ``a`` and ``b`` differ."""
    la, lb = as_labels(a), as_labels(b)
    if la.shape != lb.shape:
        raise ValueError(f"cannot compare {la.size} predictions with {lb.size}")
    if la.size == 0:
        raise ValueError("disagreement of empty predictions is undefined")
    return float(np.mean(la != lb))


def disagreement_matrix(preds: Mapping[str, object], percent: bool = False) -> pd.DataFrame:
    """Pairwise disagreement of several classifiers on the same samples.

    Mirrors Table 4 of DeiT (which reports it in percent: pass ``percent=True``). The result is
    symmetric with a zero diagonal; rows and columns follow the order of ``preds``.
    """
    names = list(preds)
    labels = {n: as_labels(preds[n]) for n in names}
    scale = 100.0 if percent else 1.0
    m = np.zeros((len(names), len(names)))
    for i, ni in enumerate(names):
        for j in range(i + 1, len(names)):
            m[i, j] = m[j, i] = scale * disagreement(labels[ni], labels[names[j]])
    return pd.DataFrame(m, index=names, columns=names)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of per-seed values.

    With a single value the standard deviation is undefined and returned as ``nan``
    (``Results.add`` records that as an unknown spread).
    """
    v = [float(x) for x in values]
    if not v:
        raise ValueError("mean_std of no values")
    mean = math.fsum(v) / len(v)
    if len(v) < 2:
        return mean, float("nan")
    var = math.fsum((x - mean) ** 2 for x in v) / (len(v) - 1)
    return mean, math.sqrt(var)
