"""The surgical-skill CNN's method: the input pipeline of Fig. 1 (per-channel z-normalisation,
sliding windows) and the network of Fig. 2 (:class:`SkillCNN`) with the loss of eq. 1
(:func:`cross_entropy_eq1`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.models import count_params

# ----------------------------------------------------------------------------------------------
# data preparation


def znorm_stats(arrays: Sequence[np.ndarray], eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over all frames of ``arrays`` (each (T, C)).

    Pass the *training* trials (or training windows) only. A constant channel gets sigma = 1.
    """
    x = np.concatenate([np.asarray(a, dtype=np.float64) for a in arrays], axis=0)
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd > eps, sd, 1.0)
    return mu.astype(np.float32), sd.astype(np.float32)


def znormalize(x: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``z = (x - mu) / sigma`` per channel (the last axis)."""
    return ((np.asarray(x, dtype=np.float32) - mu) / sd).astype(np.float32)


def window_starts(n_frames: int, width: int, step: int) -> np.ndarray:
    """First frame of every full window: 0, L, 2L, ... while ``start + W <= T``.

    Their number is ``floor((T - W) / L) + 1`` when ``T >= W``, else 0.
    """
    if width < 1 or step < 1:
        raise ValueError("width and step must be >= 1")
    if n_frames < width:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_frames - width + 1, step, dtype=np.int64)


def count_windows(n_frames: int, width: int, step: int) -> int:
    return 0 if n_frames < width else (n_frames - width) // step + 1


def sliding_windows(x: np.ndarray, width: int, step: int) -> np.ndarray:
    """(T, C) -> (N, C, W): the windows as the CNN reads them (channels first)."""
    starts = window_starts(len(x), width, step)
    if len(starts) == 0:
        return np.zeros((0, x.shape[1], width), dtype=np.float32)
    idx = starts[:, None] + np.arange(width)[None, :]
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32)[idx].transpose(0, 2, 1))


# ----------------------------------------------------------------------------------------------
# the network and the loss


class SkillCNN(nn.Module):
    """The CNN of Fig. 2: input (B, 76, W) -> three [conv1d, ReLU, max-pool 2, dropout 0.2] stages
    -> flatten -> FC + ReLU + dropout 0.5 -> FC -> logits over 3 skill levels (softmax in the
    loss and in :func:`predict_proba`)."""

    def __init__(self, in_channels: int = 76, window: int = 60, filters: Sequence[int] = (38, 76, 152),
                 kernel: int = 3, hidden: int = 128, num_classes: int = 3,
                 p_pool: float = 0.2, p_fc: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, t = in_channels, window
        for c_out in filters:
            layers += [nn.Conv1d(c_in, int(c_out), kernel, padding="same"), nn.ReLU(),
                       nn.MaxPool1d(2), nn.Dropout(p_pool)]
            c_in, t = int(c_out), t // 2
        if t < 1:
            raise ValueError(f"window {window} is too short for three pooling stages")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c_in * t, hidden), nn.ReLU(),
                                        nn.Dropout(p_fc), nn.Linear(hidden, num_classes))
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters: ``models.count_params(model, trainable=True)``."""
    return count_params(model, trainable=True)


def layer_shapes(model: SkillCNN, batch: int = 1) -> list[tuple[str, tuple[int, ...]]]:
    """(layer name, output shape) for one forward pass of a zero input (B, C, W)."""
    c_in = model.features[0].in_channels
    x = torch.zeros(batch, c_in, model.window)
    out = [("input", tuple(x.shape))]
    model.eval()
    with torch.no_grad():
        for part in (model.features, model.classifier):
            for layer in part:
                x = layer(x)
                if not isinstance(layer, (nn.ReLU, nn.Dropout)):
                    out.append((type(layer).__name__, tuple(x.shape)))
    out.append(("Softmax", tuple(x.shape)))
    return out


def cross_entropy_eq1(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Eq. 1: ``J = - sum_i sum_k 1{y_i = k} log softmax(logits_i)_k`` ("sum"), or its mean."""
    logp = torch.log_softmax(logits.float(), dim=1)
    onehot = F.one_hot(y, logp.shape[1]).to(logp.dtype)
    j = -(onehot * logp).sum()
    return j / len(y) if reduction == "mean" else j


class _Eq1Loss(nn.Module):
    def forward(self, inputs, outputs, targets):
        return cross_entropy_eq1(outputs, targets)
