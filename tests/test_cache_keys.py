"""Cache keys come from whole configuration objects: every field that changes what a run
computes changes the key, and nothing else does."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from course_lib import train
from course_lib.detection import DetTrainConfig
from course_lib.papers.albef import ALBEFConfig
from course_lib.selfsup import DINOConfig
from course_lib.train import RESUME_IGNORES, TrainConfig, config_key


def _changed(value):
    """Another valid value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.125
    if value is None:
        return 3
    if isinstance(value, tuple):
        return tuple(_changed(v) for v in value)
    raise TypeError(value)


_STRINGS = {"optimizer": "sgd", "schedule": "onecycle", "amp": "bf16"}


def _variants(cfg):
    """(field name, cfg with that one field changed) for every field of a config dataclass."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, str):
            new = _STRINGS.get(f.name)
            if new is None:
                continue
        elif isinstance(value, (dict, list)) or dataclasses.is_dataclass(value):
            continue
        else:
            new = _changed(value)
        try:
            yield f.name, dataclasses.replace(cfg, **{f.name: new})
        except (ValueError, TypeError):  # a combination the config refuses
            continue


def test_every_recipe_field_changes_the_key_and_display_fields_do_not():
    base = TrainConfig(epochs=3, lr=1e-3, num_classes=10, checkpoint_dir="/tmp/x")
    key = config_key("m", {"recipe": base})
    counted = 0
    for name, cfg in _variants(base):
        if name in RESUME_IGNORES:
            assert config_key("m", {"recipe": cfg}) == key, f"{name} is display-only"
        else:
            assert config_key("m", {"recipe": cfg}) != key, f"changing {name} kept the key"
            counted += 1
    # every field except the display ones was tried (strings through _STRINGS)
    assert counted == len(dataclasses.fields(TrainConfig)) - len(RESUME_IGNORES)


@pytest.mark.parametrize("cfg", [DetTrainConfig(), DINOConfig(), ALBEFConfig()],
                         ids=["detection", "dino", "albef"])
def test_every_field_of_other_recipes_changes_the_key(cfg):
    key = config_key("m", {"recipe": cfg})
    tried = 0
    for name, changed in _variants(cfg):
        assert config_key("m", {"recipe": changed}) != key, f"changing {name} kept the key"
        tried += 1
    assert tried >= len(dataclasses.fields(cfg)) // 2


def test_key_value_refuses_objects_without_a_configuration():
    class Opaque:
        pass

    with pytest.raises(TypeError, match="cache key"):
        train.key_value({"aug": Opaque()})
    assert train.key_value({"x": float("inf"), "p": (1, 2)}) == {"x": "inf", "p": [1, 2]}


def test_architecture_and_weights_enter_the_key():
    a = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1))
    b = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2))
    c = nn.Sequential(nn.Linear(4, 9), nn.Dropout(0.1))
    digests = {train.architecture_digest(m) for m in (a, b, c)}
    assert len(digests) == 3
    torch.manual_seed(0)
    t1, t2 = nn.Linear(3, 3), nn.Linear(3, 3)
    assert train.weights_digest(t1) != train.weights_digest(t2)


def test_cached_model_trains_again_when_one_recipe_field_changes(tmp_path):
    calls = []

    def fit(model):
        calls.append(1)
        return None

    build = lambda: nn.Linear(2, 2)  # noqa: E731
    for cfg in (TrainConfig(lr=1e-3), TrainConfig(lr=1e-3, progress=False), TrainConfig(lr=2e-3),
                TrainConfig(lr=1e-3, label_smoothing=0.1)):
        train.cached_model("m", {"recipe": cfg}, build, fit, cache_dir=tmp_path)
    assert len(calls) == 3  # the display change reused the first model
    _, info = train.cached_model("m", {"recipe": TrainConfig(lr=1e-3)}, lambda: nn.Linear(2, 3), fit,
                                 cache_dir=tmp_path)
    assert not info.from_cache  # another architecture, another file
