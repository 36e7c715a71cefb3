"""Notebook 05's self-supervised backbone in the course zoo (``course_lib.zoo``): DINO on the
stream's unlabeled bucket 0, trained through the notebook's own ``pretrain_backbone``."""
from __future__ import annotations

from typing import Any, Callable

from course_lib import config

from .experiment import pretrain_backbone
from .stream import load_stream


def build_dino(P: config.Params, log: Callable[[str], Any] = print) -> dict[str, float]:
    stream = load_stream(P)
    _, info = pretrain_backbone(P, stream, log=None)
    last = info.history.epochs[-1] if info.history is not None and info.history.epochs else {}
    return {"images": float(len(stream.buckets[0].images)),
            "final_loss": float(last.get("train_loss", float("nan")))}
