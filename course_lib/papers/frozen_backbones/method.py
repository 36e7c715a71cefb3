"""Frozen backbones, the method: freeze the classifier's trunk, put enough capacity after it,
optionally add residual adapters (Vasconcelos et al., CVPR 2022, Sec. 3, 4.4; Tables 1, 3, 7).

* :func:`freeze_` and :class:`DetectionBackbone` (``frozen=True``): no gradients for the body and
  its BatchNorm layers kept in inference mode whatever ``train()`` is called with (Sec. 3).
* :data:`CAPACITIES`, :class:`Neck` and :class:`PyramidCell`: the components after the backbone,
  a plain FPN (``low``) or a wider FPN + repeated fusion cells + heavier heads (``high``, the role
  of NAS-FPN + Cascade; Tables 1 and 3).
* :class:`ResidualAdapter`: ``x + W_up ReLU(GN(W_down x))`` after each frozen stage, identity at
  initialisation (Table 7).
* :data:`STRATEGIES`, :func:`build_backbone`, :func:`build_strategy_detector`: one detector per
  (strategy, capacity) cell of the grid, on ``course_lib.detection``'s Faster / Mask R-CNN.
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "STRATEGIES", "STRATEGY_HELP", "CAPACITIES", "ResidualAdapter", "PyramidCell", "Neck",
    "DetectionBackbone", "freeze_", "reinitialize_", "build_backbone", "build_strategy_detector",
]

STRATEGIES = ("scratch", "finetune", "frozen", "adapters")
STRATEGY_HELP = {
    "scratch": "same architecture, random init, everything trained",
    "finetune": "classifier init, everything trained",
    "frozen": "classifier init, backbone frozen (no gradients, BatchNorm in eval mode)",
    "adapters": "frozen backbone + trained residual adapters after each stage",
}

# The components after the backbone (Table 3's "capacity"): pyramid width and extra fusion cells
# (our NAS-FPN stand-in), and det.build_detector's head settings (RPN convs, box convs/FC).
CAPACITIES: dict[str, dict[str, Any]] = {
    "low": {"width": 32, "cells": 0, "heads": {"rpn_convs": 1, "box_convs": 0, "box_fc": 128,
                                               "mask_convs": 1, "mask_dim": 32}},
    "high": {"width": 64, "cells": 1, "heads": {"rpn_convs": 2, "box_convs": 0, "box_fc": 256,
                                                "mask_convs": 2, "mask_dim": 64}},
}


# ----------------------------------------------------------------------------------------------
# building blocks


class ResidualAdapter(nn.Module):
    """A residual adapter (Rebuffi et al. 2017; the paper's Sec. 4.4, Table 7) after a frozen stage:

    ``y = x + W_up ReLU(GN(W_down x))`` with 1x1 convolutions ``W_down: C -> C/r``, ``W_up: C/r -> C``.
    ``W_up`` starts at zero, so a fresh adapter is exactly the identity: the detector starts from
    the frozen classification features and the adapters learn only a residual correction.
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.down = nn.Conv2d(channels, hidden, 1, bias=False)
        self.norm = nn.GroupNorm(min(4, hidden), hidden)
        self.up = nn.Conv2d(hidden, channels, 1)
        nn.init.kaiming_normal_(self.down.weight, nonlinearity="relu")
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.relu(self.norm(self.down(x))))


def _conv_gn(c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.GroupNorm(min(8, c), c), nn.ReLU(inplace=True))


class PyramidCell(nn.Module):
    """One repeated fusion cell over the pyramid levels (the role of NAS-FPN's repeated cells):
    a top-down pass ``p_i <- conv(p_i + up(p_{i+1}))`` then a bottom-up pass
    ``p_i <- conv(p_i + down(p_{i-1}))`` (as PANet), with a residual around the whole cell."""

    def __init__(self, width: int, levels: int):
        super().__init__()
        self.td = nn.ModuleList(_conv_gn(width) for _ in range(levels - 1))
        self.bu = nn.ModuleList(_conv_gn(width) for _ in range(levels - 1))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        p = list(feats)
        for i in range(len(p) - 2, -1, -1):  # top-down
            p[i] = self.td[i](p[i] + F.interpolate(p[i + 1], size=p[i].shape[-2:], mode="nearest"))
        for i in range(1, len(p)):           # bottom-up
            p[i] = self.bu[i - 1](p[i] + F.adaptive_max_pool2d(p[i - 1], p[i].shape[-2:]))
        return [f + q for f, q in zip(feats, p)]


class Neck(nn.Module):
    """The pyramid after the backbone: torchvision's FPN (Lin et al. 2017) to ``width`` channels,
    then ``cells`` :class:`PyramidCell` s. ``cells=0`` is the plain FPN of Table 1's first rows."""

    def __init__(self, in_channels: Sequence[int], width: int, cells: int = 0):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.fpn = FeaturePyramidNetwork(list(in_channels), width)
        self.cells = nn.ModuleList(PyramidCell(width, len(in_channels)) for _ in range(cells))

    def forward(self, feats: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
        out = self.fpn(feats)
        if not len(self.cells):
            return out
        names, maps = list(out.keys()), list(out.values())
        for cell in self.cells:
            maps = cell(maps)
        return OrderedDict(zip(names, maps))


class DetectionBackbone(nn.Module):
    """``body`` (a trunk with ``.stem``, ``.stages``, ``.channels``) [+ a :class:`ResidualAdapter`
    after each stage] + :class:`Neck`; returns an ``OrderedDict`` of ``out_channels`` maps, as
    ``det.build_detector`` expects.

    ``frozen=True``: the body's parameters get ``requires_grad=False`` and ``train()`` keeps the
    body in ``eval()`` mode, so its BatchNorm layers use and keep their *running* statistics from
    pre-training (torchvision's detection training calls ``model.train()`` every epoch; without
    this override BatchNorm would normalise with batch statistics and overwrite the running ones).
    """

    def __init__(self, body: nn.Module, neck: Neck, adapters: nn.ModuleList | None = None,
                 frozen: bool = False):
        super().__init__()
        self.body, self.neck, self.adapters = body, neck, adapters
        self.out_channels = neck.fpn.layer_blocks[0][0].out_channels
        self.frozen = frozen
        if frozen:
            freeze_(self.body)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.body.eval()
        return self

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = OrderedDict()
        x = self.body.stem(x)
        for k, stage in enumerate(self.body.stages):
            x = stage(x)
            if self.adapters is not None:
                x = self.adapters[k](x)  # the adapted map feeds the next (frozen) stage
            feats[str(k)] = x
        return self.neck(feats)



def freeze_(module: nn.Module) -> nn.Module:
    """No gradients for ``module``'s parameters and BatchNorm in eval mode (in place)."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()
    return module


@torch.no_grad()
def reinitialize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Draw fresh weights for every layer (the ``scratch`` strategy): convolutions Kaiming-normal
    (as ``det.ConvBody``), linear layers and norms their PyTorch defaults, BatchNorm statistics
    reset."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.Linear)):
            m.reset_parameters()
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
    return module


def build_backbone(body: nn.Module, strategy: str, capacity: str | Mapping = "high",
                   adapter_reduction: int = 4, seed: int = 0) -> DetectionBackbone:
    """A :class:`DetectionBackbone` for one strategy from a (pre-trained) ``body``; the body is
    copied, so the pre-trained one stays untouched."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}; allowed: {', '.join(STRATEGIES)}")
    cap = CAPACITIES[capacity] if isinstance(capacity, str) else dict(capacity)
    body = copy.deepcopy(body)
    for p in body.parameters():
        p.requires_grad_(True)
    if strategy == "scratch":
        reinitialize_(body, seed)
    adapters = None
    if strategy == "adapters":
        adapters = nn.ModuleList(ResidualAdapter(c, adapter_reduction) for c in body.channels)
    neck = Neck(body.channels, cap["width"], cap["cells"])
    return DetectionBackbone(body, neck, adapters, frozen=strategy in ("frozen", "adapters"))


def build_strategy_detector(body: nn.Module, strategy: str, capacity: str, num_classes: int,
                            masks: bool = True, image_size: int = 64, adapter_reduction: int = 4,
                            seed: int = 0, **kwargs) -> nn.Module:
    """The torchvision Faster / Mask R-CNN of one (strategy, capacity) cell of the grid."""
    from course_lib import detection as det

    torch.manual_seed(seed)
    bb = build_backbone(body, strategy, capacity, adapter_reduction, seed)
    model = det.build_detector(bb, num_classes, masks=masks, image_size=image_size,
                               heads=CAPACITIES[capacity]["heads"], **kwargs)
    model.strategy, model.capacity = strategy, capacity
    return model
