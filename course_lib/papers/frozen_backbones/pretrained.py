"""Notebook 08's pretrained classification trunk in the course zoo (``course_lib.zoo``), trained
through the notebook's own ``pretrain_body``."""
from __future__ import annotations

from typing import Any, Callable

from course_lib import config

from .experiment import pretrain_body, pretrain_worlds


def build_body(P: config.Params, log: Callable[[str], Any] = print) -> dict[str, float]:
    _, info = pretrain_body(P, log=lambda *_: None)
    up, _ = pretrain_worlds(P)
    return {"val_top1": info["top1"], "chance": 100.0 / up.num_classes}
