"""Notebook 02's teacher in the course zoo (``course_lib.zoo``): trained through the notebook's own
``train_teacher``, so the notebook then finds the same cached artifact; the model card gets its test
accuracy next to chance."""
from __future__ import annotations

from typing import Any, Callable

from course_lib import classification, config

from .experiment import load_data, train_teacher


def build_teacher(P: config.Params, log: Callable[[str], Any] = print) -> dict[str, float]:
    d = load_data(P)
    teacher, _ = train_teacher(P, d)
    logits = classification.head_logits(teacher, d.test, P.torch_device)["cls"]
    return {"test_top1": classification.accuracy(logits, classification.targets_of(d.test)),
            "chance": 100.0 / d.num_classes}
