"""Frozen backbones: "Proper Reuse of Image Classification Features Improves Object Detection"
(Vasconcelos, Birodkar, Dumoulin; CVPR 2022, arXiv 2204.00484). Everything notebook 08 needs.

The paper's question: a detector's backbone is usually initialised from an image classifier and
then *fine-tuned* on the detection data, or trained *from scratch* with a long schedule. What if
it is initialised from the classifier and then *frozen*?

* **Freezing** (Sec. 3): the backbone keeps its classification weights; only the components after
  it (FPN / NAS-FPN, RPN, box and mask heads, Cascade stages) are trained. "Frozen" means no
  gradient for the backbone's weights *and* its BatchNorm layers in inference mode (running
  statistics neither used from the batch nor updated): :class:`DetectionBackbone` with
  ``frozen=True`` keeps ``.body`` in ``eval()`` whatever ``train()`` is called with.
* **Capacity matters** (Tables 1 and 3): with an FPN (26% of the parameters trained when frozen)
  freezing costs 6.5 mAP on COCO; with NAS-FPN (40%) it is even (+0.1), with NAS-FPN + Cascade
  (54%) it gains (+0.7, +1.7 with JFT-300M pre-training). Our two capacities: ``low`` = an FPN
  (torchvision's ``FeaturePyramidNetwork``) with thin heads; ``high`` = a wider FPN followed by
  repeated top-down + bottom-up fusion cells (:class:`PyramidCell`, the role of NAS-FPN's
  repeated cells) and heavier RPN / box heads (``det.build_detector`` heads dict).
* **Rare classes gain most** (Table 5, LVIS): the frozen classifier features keep what the
  upstream task learnt about every class; fine-tuning on long-tailed detection data moves them
  towards the frequent classes. Measured by AP of the rare / common / frequent tiers.
* **Residual adapters** (Table 7; Rebuffi et al. 2017): small trained bottlenecks added residually
  after each frozen stage, ``x + W_up ReLU(W_down x)`` with ``W_up`` zero-initialised, so a fresh
  adapter is the identity and the detector starts from exactly the frozen features
  (:class:`ResidualAdapter`). +1.2 mAP over the frozen backbone in the paper.

What we build (all on the course's offline world, no downloads):

1. An **upstream classification task**: a *sibling* world of the detection world (same shapes,
   balanced classes, one object per image, more images; ImageNet's role) on which ``det.ConvBackbone(...).body`` is
   pre-trained as a classifier with ``course_lib.train.fit`` (cached with ``train.cached_model``).
2. The **detection task**: the calibrated detection world (``det.world_config``, Zipf-imbalanced,
   so rare / common / frequent classes exist), a smaller subset of it (COCO's / LVIS's role).
3. **Strategies** (:data:`STRATEGIES`): ``scratch`` (same architecture, re-initialised),
   ``finetune``, ``frozen``, ``adapters`` (frozen + residual adapters), at the capacities of
   :data:`CAPACITIES`, each trained with ``det.train_detector`` (same recipe for all, as in the
   paper: "frozen backbones hyper-parameters == non-frozen hyper-parameters").

Where we differ from the paper, and why: CPU scale (a 0.6M-parameter ResNet-style body at 64 px
instead of ResNet-101 / EfficientNet-B7 at 1024 px; a few epochs instead of 600); Faster / Mask
R-CNN with a "deeper pyramid + heavier heads" knob instead of NAS-FPN and Cascade R-CNN; training
memory on CPU is counted (bytes autograd keeps for the backward pass, gradients and AdamW
state: :func:`training_memory`) because process RSS is too coarse to compare runs.
"""
from __future__ import annotations

import copy
import math
import pickle
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import config, paths
from .config import Param

__all__ = [
    "TITLE", "PAPER_URL", "PAPER", "STRATEGIES", "CAPACITIES", "SINGLE_SEED_MARGIN",
    "ResidualAdapter", "PyramidCell", "Neck", "DetectionBackbone", "TimmResNetBody",
    "freeze_", "reinitialize_", "build_backbone", "build_strategy_detector", "count_parameters",
    "parameter_table", "training_memory", "pretrain_worlds", "detection_data", "pretrain_body",
    "load_timm_body", "grid", "Run", "DetData", "run_experiments", "tables", "per_class_frame", "recorder", "record_results",
]

TITLE = "Proper Reuse of Image Classification Features Improves Object Detection"
PAPER_URL = "https://arxiv.org/abs/2204.00484"

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

# A comparison of single runs has no noise estimate: it must win by this many AP points to count
# as reproduced (about the seed-to-seed spread of box AP in our calibration).
SINGLE_SEED_MARGIN = 1.0

# The paper's numbers, from the study group's notes (seed 003). COCO mAP (box) unless said.
# Table 1: four detectors, each from scratch, from ImageNet (fine-tuned / frozen) and from JFT-300M
# (fine-tuned / frozen). AP50 of the frozen rows is lost in the notes.
PAPER = {
    "table1": {
        "R101 + FPN": {"scratch": 48.4, "finetune": 48.6, "frozen": 42.1,
                       "finetune_jft": 48.7, "frozen_jft": 43.1},
        "R101 + NAS-FPN": {"scratch": 47.2, "finetune": 49.0, "frozen": 49.1,
                           "finetune_jft": 49.1, "frozen_jft": 50.1},
        "R50 + NAS-FPN + Cascade": {"scratch": 50.0, "finetune": 50.3, "frozen": 51.0,
                                    "finetune_jft": 50.4, "frozen_jft": 52.1},
        "R101 + NAS-FPN + Cascade": {"scratch": 50.4, "finetune": 51.1, "frozen": 51.9,
                                     "finetune_jft": 51.1, "frozen_jft": 52.8},
    },
    # Table 3: ResNet-101 (ImageNet) detectors: parameters (M), trained when frozen, and the mAP
    # change from freezing (frozen - fine-tuned).
    "table3": {
        "FPN": {"params_m": 83.5, "trained_m": 21.9, "trained_pct": 26.1, "delta": -6.5},
        "NAS-FPN": {"params_m": 102.6, "trained_m": 40.9, "trained_pct": 39.9, "delta": +0.1},
        "Cascade + NAS-FPN": {"params_m": 132.9, "trained_m": 71.3, "trained_pct": 53.6, "delta": +0.7},
    },
    # Table 5: LVIS v1, EfficientNet-B7 + NAS-FPN with Copy-Paste, box mAP (first stage). The mask
    # columns are not in the notes.
    "table5": {"finetune": {"AP": 38.5, "rare": 19.3, "common": 37.3, "frequent": 48.2},
               "frozen": {"AP": 39.7, "rare": 22.2, "common": 38.8, "frequent": 48.3},
               "finetune_stage2": {"AP": 41.6, "rare": 31.5, "common": 39.8, "frequent": 48.0},
               "frozen_stage2": {"AP": 43.1, "rare": 33.2, "common": 41.9, "frequent": 48.7}},
    # Table 7: ResNet-101 + NAS-FPN + Cascade, (mAP, AP50).
    "table7": {"ImageNet": {"finetune": (51.1, 69.1), "frozen": (51.8, 69.9), "adapters": (53.0, 71.5)},
               "JFT-300M": {"finetune": (51.1, 69.0), "frozen": (52.8, 71.1), "adapters": (53.6, 72.0)}},
}


def _tuple_of(allowed: Sequence[str]) -> Callable[[Any], bool]:
    return lambda v: len(v) > 0 and all(x in allowed for x in v) and len(set(v)) == len(v)


config.register("08_frozen_backbones", {
    "dataset": Param({"smoke": "world", "study": "world", "paper": "coco"},
                     "world (offline) or coco (COCO 2017 val split into train/val, catalog entry "
                     "'coco2017')", choices=("world", "coco")),
    "image_size": Param({"smoke": 64, "study": 64, "paper": 512}, "detector input side (px)",
                        type=int, low=32, high=1333),
    "train_images": Param({"smoke": 32, "study": 800, "paper": 0},
                          "detection training images (0: the whole train split)", type=int, low=0),
    "eval_images": Param({"smoke": 16, "study": 300, "paper": 0},
                         "evaluation images (0: the whole val split)", type=int, low=0),
    "pretrain_images": Param({"smoke": 128, "study": 6000, "paper": 0},
                             "images of the upstream classification world", type=int, low=0),
    "pretrain_epochs": Param({"smoke": 1, "study": 3, "paper": 0}, type=int, low=0),
    "backbone": Param({"smoke": "course", "study": "course", "paper": "resnet50"},
                      "course: det.ConvBody pre-trained on the sibling world; resnet18/34/50: timm "
                      "layout ImageNet weights from `weights`", choices=("course", "resnet18", "resnet34", "resnet50")),
    "weights": Param("", "paper profile: path of a timm-layout checkpoint (default "
                     "<data_root>/weights/<backbone>.pth)", type=str),
    "widths": Param((32, 64, 128), "course body: channels of the stages at strides 4, 8, 16"),
    "blocks": Param(2, "course body: residual blocks per stage", type=int, low=1, high=4),
    "strategies": Param(STRATEGIES, "strategies of the grid", check=_tuple_of(STRATEGIES),
                        check_help=f"a non-empty subset of {STRATEGIES}"),
    "capacities": Param(("low", "high"), "capacities of the components after the backbone",
                        check=_tuple_of(tuple(CAPACITIES)), check_help="a subset of ('low', 'high')"),
    "adapter_capacities": Param(("high",), "capacities at which the adapters strategy runs "
                                "(Table 7 is a high-capacity result)", check=_tuple_of(tuple(CAPACITIES)),
                                check_help="a subset of ('low', 'high')"),
    "adapter_reduction": Param(4, "channel reduction of the adapters' bottleneck", type=int, low=1, high=64),
    "masks": Param(True, "Mask R-CNN (True: box and mask AP) or Faster R-CNN (False: box AP only, "
                   "what Tables 1, 3 and 7 report; about 1.2x faster on a CPU)"),
    "epochs": Param({"smoke": 1, "study": 4, "paper": 12}, "detection epochs", type=int, low=1),
    "batch_size": Param({"smoke": 8, "study": 16, "paper": 16}, type=int, low=1),
    "lr": Param({"smoke": 2e-3, "study": 2e-3, "paper": 1e-4}, "AdamW peak lr, the same for every "
                "strategy (as in the paper)", low=1e-6, high=1.0),
    "seeds": Param(1, "seeds per grid cell", type=int, low=1, high=5),
    "max_steps": Param({"smoke": 2, "study": 0, "paper": 0}, "cap on steps per run (0: none)", type=int, low=0),
    "retrain": Param(False, "ignore cached backbones and detectors"),
})


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


class TimmResNetBody(nn.Module):
    """A timm ResNet (``resnet18/34/50``) as a trunk with ``.stem``, ``.stages`` (layer1..4 at
    strides 4..32) and ``.channels``, for the ``paper`` profile's ImageNet backbone."""

    def __init__(self, name: str = "resnet50"):
        super().__init__()
        import timm

        m = timm.create_model(name, pretrained=False, num_classes=0)
        self.stem = nn.Sequential(m.conv1, m.bn1, m.act1, m.maxpool)
        self.stages = nn.ModuleList([m.layer1, m.layer2, m.layer3, m.layer4])
        self.channels = [m.feature_info[i]["num_chs"] for i in range(1, 5)]
        self._names = {"stem": ("conv1", "bn1", "act1", "maxpool"),
                       "stages": ("layer1", "layer2", "layer3", "layer4")}


def load_timm_body(name: str, path: str | Path) -> TimmResNetBody:
    """A :class:`TimmResNetBody` with a timm-layout ResNet checkpoint (``conv1.weight``,
    ``layer1.0.conv1.weight``, ..., ``fc.*`` ignored) loaded strictly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no {name} weights at {path}. The paper profile reuses an ImageNet classifier: save a "
            f"timm-layout state dict there (e.g. on a machine with internet: "
            f"`torch.save(timm.create_model('{name}', pretrained=True).state_dict(), '{path}')`) "
            f"or pass `weights=...`.")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:  # truncated, ...
        raise RuntimeError(
            f"cannot read the {name} weights {path}: the file is damaged or not a torch state dict "
            f"({type(e).__name__}: {str(e).strip()[:200]}). Save it again (e.g. `torch.save(timm."
            f"create_model('{name}', pretrained=True).state_dict(), '{path}')`) or pass "
            f"`weights=...`.") from e
    if isinstance(sd, Mapping) and "state_dict" in sd:
        sd = sd["state_dict"]
    body = TimmResNetBody(name)
    ours = {}
    for k, v in sd.items():
        k = k.removeprefix("module.")
        if k.startswith("fc."):
            continue
        head, _, rest = k.partition(".")
        if head in body._names["stem"]:
            ours[f"stem.{body._names['stem'].index(head)}.{rest}"] = v
        elif head in body._names["stages"]:
            ours[f"stages.{body._names['stages'].index(head)}.{rest}"] = v
        else:
            raise KeyError(f"unexpected key {k!r} in {path}")
    body.load_state_dict(ours, strict=True)
    return body


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
    from . import detection as det

    torch.manual_seed(seed)
    bb = build_backbone(body, strategy, capacity, adapter_reduction, seed)
    model = det.build_detector(bb, num_classes, masks=masks, image_size=image_size,
                               heads=CAPACITIES[capacity]["heads"], **kwargs)
    model.strategy, model.capacity = strategy, capacity
    return model


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters of a strategy detector: ``total``, ``trained`` (``requires_grad``),
    ``backbone`` (the body), ``adapters``, ``after`` (neck + RPN + RoI heads)."""
    bb = model.backbone
    n = lambda mod: sum(p.numel() for p in mod.parameters()) if mod is not None else 0  # noqa: E731
    total = n(model)
    return {"total": total, "trained": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "backbone": n(bb.body), "adapters": n(bb.adapters), "after": total - n(bb.body) - n(bb.adapters)}


def parameter_table(body: nn.Module, num_classes: int, masks: bool = True, image_size: int = 64,
                    strategies: Sequence[str] = STRATEGIES, capacities: Sequence[str] = ("low", "high"),
                    adapter_reduction: int = 4):
    """Table 3 for our models: total and trained parameters per (capacity, strategy)."""
    import pandas as pd

    rows = []
    for cap in capacities:
        for s in strategies:
            m = build_strategy_detector(body, s, cap, num_classes, masks, image_size, adapter_reduction)
            c = count_parameters(m)
            rows.append({"capacity": cap, "strategy": s, "total": c["total"], "trained": c["trained"],
                         "trained %": round(100 * c["trained"] / c["total"], 1),
                         "after backbone": c["after"], "adapters": c["adapters"]})
    return pd.DataFrame(rows).set_index(["capacity", "strategy"])


def training_memory(model: nn.Module, images: list[torch.Tensor], targets: list[dict]) -> dict[str, float]:
    """Training memory of one step, in MiB, counted rather than sampled (deterministic, any device):
    ``activations`` = bytes autograd saves for the backward pass (``saved_tensors_hooks``),
    ``gradients`` = one gradient per trained parameter, ``optimizer`` = AdamW's two moments,
    ``weights`` = all parameters; ``total`` = their sum. A frozen backbone saves no activations
    for its own backward, has no gradients and no optimizer state."""
    seen: dict[int, int] = {}

    def pack(t):
        # count each storage once (views of one tensor share it)
        try:
            key = t.untyped_storage().data_ptr()
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except RuntimeError:
            pass
        return t

    was = model.training
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = model(images, targets)
    del losses
    model.train(was)
    mib = 2.0 ** 20
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    out = {"activations": sum(seen.values()) / mib, "gradients": trained / mib,
           "optimizer": 2 * trained / mib, "weights": weights / mib}
    out["total"] = sum(out.values())
    return out


# ----------------------------------------------------------------------------------------------
# data and pre-training


def pretrain_worlds(P: config.Params):
    """(upstream classification world, detection world) for the offline profiles.

    The detection world is ``det.world_config(profile)`` (Zipf imbalance 1.5: rare / common /
    frequent classes). Its *sibling* has the same shapes, sizes, clutter and backgrounds, but
    balanced classes (imbalance 0), a different seed and ``pretrain_images`` images: the role of
    ImageNet, larger and more diverse than the detection data, and like ImageNet object-centric:
    one object per image (at the detection objects' sizes, over clutter and textures), whose
    class is the image label."""
    from . import detection as det

    prof = "smoke" if P.profile == "smoke" else "study"
    det_world = det.world_config(prof, image_size=P.image_size)
    up = det_world.replace(num_images=max(P.pretrain_images, 1), eval_images=min(1000, max(P.eval_images, 64)),
                           imbalance=0.0, objects=(1, 1), occlusion=0.0, seed=det_world.seed + 100)
    return up, det_world


@dataclass
class DetData:
    train: Any
    val: Any
    num_classes: int
    class_names: tuple
    tiers: list
    upstream: Any = None


def detection_data(P: config.Params) -> DetData:
    """The detection train / evaluation sets of a profile (world subsets, or COCO for ``paper``)."""
    from . import detection as det

    if P.dataset == "coco":
        make = lambda split, **kw: det.CocoDetectionDataset(P.data_root, split, **kw)  # noqa: E731
        up = None
    else:
        up, world = pretrain_worlds(P)
        make = lambda split, **kw: det.DetectionDataset(world, split, P.data_root, **kw)  # noqa: E731
    train, val = make("train"), make("val")
    if P.train_images and P.train_images < len(train):
        train = train.subset(P.train_images / len(train), seed=0)
    if P.eval_images and P.eval_images < len(val):
        val = make("val", indices=np.arange(P.eval_images))  # the first images of the split
    tiers = train.tiers()
    return DetData(train, val, train.num_classes, tuple(train.class_names), tiers, up)


def pretrain_body(P: config.Params, log: Callable[[str], Any] = print):
    """The pre-trained trunk: ``(body, info)``. ``course``: ``det.ConvBackbone(...).classifier(K)``
    trained with ``train.fit`` on the sibling classification world (cached by config); a timm
    ResNet: ImageNet weights from ``P.weights``. ``info``: top-1 on the sibling's val split,
    seconds, whether it came from the cache."""
    from . import detection as det
    from . import train
    from .world import WorldClassification

    if P.backbone != "course":
        path = Path(P.weights) if P.weights else paths.data_root(P.data_root) / "weights" / f"{P.backbone}.pth"
        return load_timm_body(P.backbone, path), {"top1": float("nan"), "seconds": 0.0, "from_cache": True,
                                                  "key": str(path), "history": None}
    up, _ = pretrain_worlds(P)
    tr = WorldClassification(up, "train", P.data_root)
    va = WorldClassification(up, "val", P.data_root)
    K = up.num_classes
    cfg = train.TrainConfig(epochs=P.pretrain_epochs, lr=2e-3, weight_decay=0.05, warmup_epochs=0.3,
                            label_smoothing=0.1, num_classes=K, seed=P.seed,
                            max_steps=P.max_steps or None)

    def build():
        torch.manual_seed(P.seed)
        return det.ConvBackbone(widths=tuple(P.widths), blocks=P.blocks, norm="bn").classifier(K)

    def fit(model):
        loader = torch.utils.data.DataLoader(tr, batch_size=64, shuffle=True, drop_last=True,
                                             generator=torch.Generator().manual_seed(P.seed))
        return train.fit(model, loader, cfg, device=P.torch_device)

    # display settings (progress, live plot) do not change the weights: the key keeps the values
    # it was first written with, so cached bodies stay valid
    shown = replace(cfg, progress=False, live_plot=0)
    key = {"world": repr(up), "widths": list(P.widths), "blocks": P.blocks, "cfg": repr(shown), "seed": P.seed}
    clf, info = train.cached_model("frozen_backbones_body", key, build, fit, force=P.retrain)
    res = train.evaluate(clf, torch.utils.data.DataLoader(va, batch_size=256), device=P.torch_device)
    top1 = float(res["top1"])
    log(f"upstream classifier: top-1 {top1:.1f}% on {len(va)} balanced val images "
        f"({'cache' if info.from_cache else f'{info.train_seconds:.0f}s'})")
    return clf.body.cpu(), {"top1": top1, "seconds": info.train_seconds, "from_cache": info.from_cache,
                            "key": info.key, "history": info.history}


# ----------------------------------------------------------------------------------------------
# experiments


@dataclass
class Run:
    strategy: str
    capacity: str
    seed: int
    metrics: Any                    # det.DetMetrics
    params: dict[str, int]
    memory: dict[str, float]
    history: Any                    # det.DetHistory
    train_seconds: float
    images_per_s: float
    from_cache: bool
    model: nn.Module | None = field(default=None, repr=False)


def grid(P: config.Params) -> list[tuple[str, str]]:
    """The (strategy, capacity) cells to train: every strategy at every capacity, the adapters
    only at ``adapter_capacities``."""
    cells = []
    for cap in P.capacities:
        for s in P.strategies:
            if s == "adapters" and cap not in P.adapter_capacities:
                continue
            cells.append((s, cap))
    return cells


def run_experiments(P: config.Params, data: DetData | None = None, log: Callable[[str], Any] = print):
    """Pre-train (or load) the backbone, then train and evaluate every cell of :func:`grid`."""
    from . import detection as det

    t0 = time.perf_counter()
    data = data or detection_data(P)
    body, up_info = pretrain_body(P, log)
    dev = P.torch_device
    cfg = det.DetTrainConfig(epochs=P.epochs, lr=P.lr, batch_size=P.batch_size, warmup_iters=30,
                             max_steps=P.max_steps or None)
    probe = det.make_loader(data.train, min(P.batch_size, len(data.train)), shuffle=False)
    probe_images, probe_targets = next(iter(probe))
    runs: dict[tuple[str, str], list[Run]] = {}
    for strategy, cap in grid(P):
        for seed in range(P.seed, P.seed + P.seeds):
            def build(strategy=strategy, cap=cap, seed=seed):
                return build_strategy_detector(body, strategy, cap, data.num_classes, P.masks,
                                               P.image_size, P.adapter_reduction, seed)

            def fit(model, seed=seed, name=f"{strategy} / {cap} capacity, seed {seed}"):
                loader = det.make_loader(data.train, P.batch_size, shuffle=True, seed=seed)
                return det.train_detector(model, loader, cfg, device=dev, desc=name)

            key = {"body": up_info["key"],
                   "strategy": strategy, "capacity": cap, "seed": seed, "masks": P.masks,
                   "data": (P.dataset, len(data.train), P.image_size), "cfg": repr(cfg),
                   "reduction": P.adapter_reduction}
            model, hist, info = det.cached_detector(f"frozen_{strategy}_{cap}", key, build, fit,
                                                    force=P.retrain)
            model.to("cpu")
            mem = training_memory(model, probe_images, probe_targets)
            metrics = det.evaluate(model, data.val, device=dev, tiers=data.tiers)
            params = count_parameters(model)
            ips = hist.images_per_s if hist is not None else float("nan")
            run = Run(strategy, cap, seed, metrics, params, mem, hist, info.train_seconds, ips,
                      info.from_cache, model)
            runs.setdefault((strategy, cap), []).append(run)
            box = metrics.summary["bbox"]
            log(f"{strategy:>9s} / {cap:4s} seed {seed}: box AP {box['AP']:.1f} (AP50 {box['AP50']:.1f})"
                + (f", mask AP {metrics.summary['segm']['AP']:.1f}" if "segm" in metrics.summary else "")
                + f" | trained {params['trained'] / 1e6:.2f}M of {params['total'] / 1e6:.2f}M"
                f" | {ips:.0f} img/s, {mem['total']:.0f} MiB"
                f" ({'cache' if info.from_cache else f'{info.train_seconds:.0f}s'})")
    return {"runs": runs, "data": data, "body": body, "upstream": up_info,
            "seconds": time.perf_counter() - t0}


def _mean(runs: Sequence[Run], get: Callable[[Run], float]) -> float:
    vals = [get(r) for r in runs]
    return float(np.mean(vals)) if vals else float("nan")


def _ap(iou: str = "bbox", key: str = "AP") -> Callable[[Run], float]:
    return lambda r: r.metrics.summary.get(iou, {}).get(key, float("nan"))


def _tier(t: str, iou: str = "bbox") -> Callable[[Run], float]:
    return lambda r: r.metrics.tiers.get(iou, {}).get(t, float("nan"))


def tables(res: dict[str, Any]) -> dict[str, Any]:
    """The notebook's tables as DataFrames: ``table1`` (AP by strategy and capacity, paper beside),
    ``table3`` (trained parameters and the freezing delta), ``table5`` (AP by class-frequency
    tier), ``table7`` (adapters), ``cost`` (training speed, memory)."""
    import pandas as pd

    runs = res["runs"]
    caps = sorted({c for _, c in runs}, key=list(CAPACITIES).index)
    paper_row = {"low": "R101 + FPN", "high": "R101 + NAS-FPN + Cascade"}
    t1 = []
    for (s, c), rs in runs.items():
        row = {"capacity": c, "strategy": s, "box AP": _mean(rs, _ap()), "box AP50": _mean(rs, _ap("bbox", "AP50"))}
        if "segm" in rs[0].metrics.summary:
            row["mask AP"] = _mean(rs, _ap("segm"))
        pr = PAPER["table1"][paper_row[c]]
        row[f"paper mAP ({'FPN' if c == 'low' else 'NAS-FPN+Cascade'})"] = pr.get(s, float("nan")) if s != "adapters" \
            else PAPER["table7"]["ImageNet"]["adapters"][0]
        t1.append(row)
    table1 = pd.DataFrame(t1).set_index(["capacity", "strategy"])
    t3 = []
    paper3 = {"low": "FPN", "high": "Cascade + NAS-FPN"}
    for c in caps:
        if ("frozen", c) not in runs or ("finetune", c) not in runs:
            continue
        fz = runs[("frozen", c)][0]
        p = PAPER["table3"][paper3[c]]
        t3.append({"capacity": c, "params": fz.params["total"], "trained (frozen)": fz.params["trained"],
                   "trained %": round(100 * fz.params["trained"] / fz.params["total"], 1),
                   "Δ box AP frozen − finetune": _mean(runs[("frozen", c)], _ap()) - _mean(runs[("finetune", c)], _ap()),
                   f"paper ({paper3[c]}) trained %": p["trained_pct"], "paper Δ mAP": p["delta"]})
    table3 = pd.DataFrame(t3).set_index("capacity") if t3 else None
    t5 = []
    p5 = PAPER["table5"]
    for (s, c), rs in runs.items():
        row = {"capacity": c, "strategy": s}
        for iou, short in (("bbox", "box"), ("segm", "mask")):
            if iou in rs[0].metrics.tiers:
                for t in ("rare", "common", "frequent"):
                    row[f"{short} AP{t[0]}"] = _mean(rs, _tier(t, iou))
        if s in p5:
            row.update({f"paper box AP{t[0]}": p5[s][t] for t in ("rare", "common", "frequent")})
        t5.append(row)
    table5 = pd.DataFrame(t5).set_index(["capacity", "strategy"])
    t7 = []
    for c in caps:
        for s in ("finetune", "frozen", "adapters"):
            if (s, c) in runs:
                rs = runs[(s, c)]
                p = PAPER["table7"]["ImageNet"][s]
                t7.append({"capacity": c, "strategy": s, "box AP": _mean(rs, _ap()),
                           "box AP50": _mean(rs, _ap("bbox", "AP50")), "trained": rs[0].params["trained"],
                           "paper mAP": p[0], "paper AP50": p[1]})
    table7 = pd.DataFrame(t7).set_index(["capacity", "strategy"])
    cost = pd.DataFrame([{"capacity": c, "strategy": s, "train img/s": _mean(rs, lambda r: r.images_per_s),
                          "train s": _mean(rs, lambda r: r.train_seconds),
                          "activations MiB": rs[0].memory["activations"],
                          "grads + AdamW MiB": rs[0].memory["gradients"] + rs[0].memory["optimizer"],
                          "memory MiB": rs[0].memory["total"],
                          "peak mem MB (det)": _mean(rs, lambda r: r.history.last("peak_mem_mb") if r.history else float("nan"))}
                         for (s, c), rs in runs.items()]).set_index(["capacity", "strategy"])
    if not (cost["peak mem MB (det)"] > 0).all():  # CPU: an RSS high-water delta, not per run
        cost = cost.drop(columns="peak mem MB (det)")
    return {"table1": table1, "table3": table3, "table5": table5, "table7": table7, "cost": cost}


def per_class_frame(res: dict[str, Any], iou: str = "bbox"):
    """Long DataFrame: one row per (strategy, capacity, class) with AP, the class's training
    instances and its tier; for the plot of AP by class frequency and the widget."""
    import pandas as pd

    data = res["data"]
    counts = data.train.instance_counts()
    rows = []
    for (s, c), rs in res["runs"].items():
        for k, name in enumerate(data.class_names):
            rows.append({"strategy": s, "capacity": c, "class": name, "instances": int(counts[k]),
                         "tier": data.tiers[k], "AP": _mean(rs, lambda r: r.metrics.per_class[iou][name])})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# paper vs. ours


def recorder(P: config.Params):
    """The notebook's results recorder; make it first, so its clock times the whole run."""
    from .results import Results

    return Results("08_frozen_backbones", TITLE, PAPER_URL, P)


def record_results(P: config.Params, res: dict[str, Any], rec=None):
    """The "paper vs. ours" claims, judged by rules (``results.py``) and saved.

    Box AP comparisons of single runs must win by :data:`SINGLE_SEED_MARGIN` AP points (with
    ``seeds >= 2`` the seed spread is used as well). Claims compared with a derived number (the
    freezing gain at the other capacity or on frequent classes) use that number as the baseline.
    """
    from .results import AtLeast, Better, Within

    runs = res["runs"]
    m = SINGLE_SEED_MARGIN
    rec = rec if rec is not None else recorder(P)
    box = lambda s, c: [_ap()(r) for r in runs[(s, c)]]  # noqa: E731
    has = lambda s, c: (s, c) in runs  # noqa: E731
    mean_box = lambda s, c: float(np.mean(box(s, c)))  # noqa: E731
    t1, fpn, top = PAPER["table1"], "R101 + FPN", "R101 + NAS-FPN + Cascade"
    learns = AtLeast(1.0)  # a detector that learnt anything has box AP well above 1
    # Tables 1 and 3, low capacity: freezing hurts
    if has("finetune", "low"):
        rec.add("finetune_low", f"fine-tuned backbone, low capacity: the detector learns [Table 1, {fpn}]",
                paper=t1[fpn]["finetune"], ours=box("finetune", "low"), rule=learns)
        if has("frozen", "low"):
            rec.add("frozen_low", "with a low-capacity FPN, freezing the backbone hurts "
                    f"[Table 1/3, {fpn}: {t1[fpn]['frozen']} vs {t1[fpn]['finetune']}]",
                    paper=t1[fpn]["frozen"], ours=box("frozen", "low"),
                    rule=Better("finetune_low", higher_is_better=False, min_effect=m))
    # high capacity: pre-training helps, freezing wins, adapters add more
    if has("scratch", "high"):
        rec.add("scratch_high", f"from scratch, high capacity: the detector learns [Table 1, {top}]",
                paper=t1[top]["scratch"], ours=box("scratch", "high"), rule=learns)
    if has("finetune", "high"):
        rule = Better("scratch_high", min_effect=m) if has("scratch", "high") else learns
        rec.add("finetune_high", "classification pre-training + fine-tuning beats training from scratch "
                f"[Table 1, {top}: {t1[top]['finetune']} vs {t1[top]['scratch']}]",
                paper=t1[top]["finetune"], ours=box("finetune", "high"), rule=rule)
        if has("frozen", "high"):
            rec.add("frozen_high", "with high-capacity components after it, the frozen backbone beats "
                    f"fine-tuning [Table 1/3, {top}: {t1[top]['frozen']} vs {t1[top]['finetune']}]",
                    paper=t1[top]["frozen"], ours=box("frozen", "high"), rule=Better("finetune_high", min_effect=m))
    if all(has(s, c) for s in ("frozen", "finetune") for c in ("low", "high")):
        d = {c: mean_box("frozen", c) - mean_box("finetune", c) for c in ("low", "high")}
        rec.add("capacity_gain", "the gain from freezing grows with the capacity after the backbone "
                "[Table 3: -6.5 (FPN) -> +0.1 (NAS-FPN) -> +0.7 (Cascade + NAS-FPN); Table 1: +0.8]",
                paper=PAPER["table3"]["Cascade + NAS-FPN"]["delta"], ours=d["high"], unit="pp",
                rule=Better(d["low"], min_effect=m),
                note=f"frozen - finetune box AP: low {d['low']:+.2f}, high {d['high']:+.2f} (baseline: the low Δ)")
    # Table 5: where the gain of freezing goes, at the highest capacity trained with both
    c5 = next((c for c in ("high", "low") if has("frozen", c) and has("finetune", c)), None)
    if c5:
        gains = {t: [_tier(t)(a) - _tier(t)(b) for a, b in zip(runs[("frozen", c5)], runs[("finetune", c5)])]
                 for t in ("rare", "common", "frequent")}
        g = {t: float(np.nanmean(v)) for t, v in gains.items()}
        p5 = PAPER["table5"]
        if all(np.isfinite(list(g.values()))):
            rec.add("rare_gain", f"freezing helps rare classes more than frequent ones ({c5} capacity) "
                    "[Table 5, LVIS box: rare +2.9, common +1.5, frequent +0.1]",
                    paper=round(p5["frozen"]["rare"] - p5["finetune"]["rare"], 1), ours=gains["rare"], unit="pp",
                    rule=Better(g["frequent"], min_effect=m),
                    note=f"frozen - finetune box AP: rare {g['rare']:+.2f}, common {g['common']:+.2f}, "
                         f"frequent {g['frequent']:+.2f} (baseline: the frequent gain)")
    # Table 7: residual adapters on the frozen backbone
    c7 = next((c for c in ("high", "low") if has("adapters", c) and has("frozen", c)), None)
    if c7:
        base = f"frozen_{c7}"
        if base not in {x.id for x in rec.claims}:
            rec.add(base, f"frozen backbone, {c7} capacity: the detector learns", paper=None,
                    ours=box("frozen", c7), rule=learns)
        rec.add(f"adapters_{c7}", "residual adapters on the frozen backbone improve it "
                "[Table 7, ImageNet: 53.0 vs 51.8]", paper=PAPER["table7"]["ImageNet"]["adapters"][0],
                ours=box("adapters", c7), rule=Better(base, min_effect=m))
    # Table 3 and cost: what freezing leaves to train, memory, speed
    for c, paper_row, rule in (("low", "FPN", Within(0.25)), ("high", "Cascade + NAS-FPN", AtLeast(39.9))):
        if has("frozen", c):
            fz = runs[("frozen", c)][0]
            rec.add(f"trained_{c}", f"share of parameters trained with a frozen backbone, {c} capacity "
                    f"[Table 3, {paper_row}]" + (" (at least NAS-FPN's 39.9%)" if c == "high" else ""),
                    paper=PAPER["table3"][paper_row]["trained_pct"], ours=100 * fz.params["trained"] / fz.params["total"],
                    unit="%", rule=rule, note=f"{fz.params['trained']:,} of {fz.params['total']:,} parameters")
    cc = next((c for c in ("low", "high") if has("frozen", c) and has("finetune", c)), None)
    if cc:
        fz, ft = runs[("frozen", cc)], runs[("finetune", cc)]
        rec.add("memory_frozen", f"freezing needs less training memory ({cc} capacity; counted: activations, "
                "gradients, AdamW) [Sec. 1: 'significantly reducing ... memory']", paper=None,
                ours=fz[0].memory["total"], unit=" MiB",
                rule=Better(ft[0].memory["total"], higher_is_better=False, min_effect=0.1 * ft[0].memory["total"]),
                note=f"fine-tuned {ft[0].memory['total']:.1f} MiB; baseline - 10% needed")
        speeds = [r.images_per_s for r in fz]
        ft_speed = float(np.mean([r.images_per_s for r in ft]))
        if np.isfinite(ft_speed) and all(np.isfinite(speeds)):
            rec.add("speed_frozen", f"freezing trains faster ({cc} capacity, wall clock) [Sec. 1: '... and FLOPs']",
                    paper=None, ours=speeds, unit=" img/s",
                    rule=Better(ft_speed, min_effect=0.05 * ft_speed),
                    note=f"fine-tuned {ft_speed:.1f} img/s; baseline + 5% needed")
    _record_mask_claims(rec, runs, m)
    rec.save()
    return rec


def _record_mask_claims(rec, runs: dict, m: float) -> None:
    """The freezing comparisons again on mask AP (ids ``*_mask``), when the detectors are Mask
    R-CNNs. The paper reports box AP only for them, so these rows have no paper number; the
    rules and the margin are the box claims'."""
    from .results import AtLeast, Better

    if not runs or "segm" not in next(iter(runs.values()))[0].metrics.summary:
        return
    mask = lambda s, c: [_ap("segm")(r) for r in runs[(s, c)]]  # noqa: E731
    has = lambda s, c: (s, c) in runs  # noqa: E731
    if has("finetune", "low") and has("frozen", "low"):
        rec.add("finetune_low_mask", "fine-tuned backbone, low capacity: mask AP (the baseline of the next row)",
                paper=None, ours=mask("finetune", "low"), rule=AtLeast(1.0))
        rec.add("frozen_low_mask", "with a low-capacity FPN, freezing the backbone hurts, mask AP",
                paper=None, ours=mask("frozen", "low"),
                rule=Better("finetune_low_mask", higher_is_better=False, min_effect=m))
    if has("finetune", "high"):
        rec.add("finetune_high_mask", "classification pre-training + fine-tuning beats training from scratch "
                "(high capacity), mask AP", paper=None,
                ours=mask("finetune", "high"),
                rule=Better(float(np.mean(mask("scratch", "high"))), min_effect=m) if has("scratch", "high")
                else AtLeast(1.0),
                note=(f"scratch: mask AP {np.mean(mask('scratch', 'high')):.2f}" if has("scratch", "high") else ""))
        for s in ("frozen", "adapters"):
            if has(s, "high") and has("frozen", "high"):
                base = "finetune_high_mask" if s == "frozen" else "frozen_high_mask"
                text = ("with high-capacity components after it, the frozen backbone beats fine-tuning, mask AP"
                        if s == "frozen" else "residual adapters on the frozen backbone improve it, mask AP")
                rec.add(f"{s}_high_mask", text, paper=None, ours=mask(s, "high"), rule=Better(base, min_effect=m))
