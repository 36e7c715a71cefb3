"""Notebook 07's pretrained plain-ViT backbones in the course zoo (``course_lib.zoo``): MAE and
supervised, trained through the notebook's own ``train_mae`` / ``train_supervised``."""
from __future__ import annotations

from typing import Any, Callable

from course_lib import config

from .experiment import load_data, train_mae, train_supervised


def _losses(info) -> dict[str, float]:
    h = info.history
    if h is None or not h.epochs:
        return {}
    return {"first_loss": float(h.epochs[0]["train_loss"]), "final_loss": float(h.epochs[-1]["train_loss"])}


def build_mae(P: config.Params, log: Callable[[str], Any] = print) -> dict[str, float]:
    _, _, info = train_mae(P, load_data(P))
    return _losses(info)


def build_supervised(P: config.Params, log: Callable[[str], Any] = print) -> dict[str, float]:
    _, info = train_supervised(P, load_data(P))
    return _losses(info)
