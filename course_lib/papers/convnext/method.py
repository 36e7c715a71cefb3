"""ConvNeXt's contribution, part 1: one residual network whose every design decision is a
field of :class:`LadderConfig`, so that it can be ResNet-50, ConvNeXt-T or any step between
(paper, Sec. 2, Fig. 3 and 4). The steps themselves, with the paper's numbers, are in
:mod:`.ladder`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from timm.layers import DropPath, trunc_normal_
from torch import nn

from course_lib.models.convnext import ConvNeXt, LayerNorm2d


# ----------------------------------------------------------------------------------------------
# The configuration of one step of the ladder

STEMS = ("resnet", "patchify")
BLOCKS = ("bottleneck", "inverted")
ACTS = {"relu": nn.ReLU, "gelu": nn.GELU}
NORMS = ("batch", "layer")
DOWNSAMPLING = ("in_block", "separate")


@dataclass(frozen=True)
class LadderConfig:
    """Every design decision the ladder changes, with ResNet-50's choices as defaults.

    Stage ``i`` has ``depths[i]`` blocks and width ``widths[i]`` (the paper's C: ResNet-50's
    (64, 128, 256, 512), ConvNeXt-T's (96, 192, 384, 768)); the stem outputs ``widths[0]``.

    * ``stem``: ``"resnet"`` (conv 7x7 with stride ``stem_stride / 2``, norm, activation,
      max-pool 3x3 stride 2) or ``"patchify"`` (conv with kernel = stride = ``stem_stride``,
      then a norm, as Swin's patch embedding).
    * ``block``: where the 4x (``expansion``) goes. ``"bottleneck"`` (ResNet): the residual
      stream carries ``4C`` channels, the block narrows to ``C`` inside (wide-narrow-wide).
      ``"inverted"`` (MobileNetV2, transformer MLP): the stream carries ``C``, the hidden layer
      ``4C`` (narrow-wide-narrow).
    * ``depthwise``: the spatial conv is depthwise (groups = channels) instead of dense.
    * ``spatial_first``: the spatial conv comes before the two 1x1 convs (and works on the
      stream's width) instead of between them (on the hidden width).
    * ``kernel_size``: side of the spatial conv.
    * ``act``: ``"relu"`` or ``"gelu"``. ``acts_per_block``: 3 (after the first two convs and
      after the residual sum, as ResNet) or 1 (only between the two 1x1 convs; needs
      ``spatial_first``).
    * ``norm``: ``"batch"`` or ``"layer"`` (LayerNorm over channels, eps 1e-6).
      ``norms_per_block``: 3 (after every conv) or 1 (after the spatial conv only, i.e. before
      the 1x1 convs; needs ``spatial_first``).
    * ``downsampling``: ``"in_block"`` (ResNet: the first block of stages 2-4 has stride 2 in its
      spatial conv and a 1x1 stride-2 projection shortcut with a norm) or ``"separate"``
      (norm + 2x2 stride-2 conv between stages; blocks keep the resolution).
    * ``head_norm``: a norm after global pooling, before the classifier.
    * ``layer_scale``: initial value of a learned per-channel scale of the residual branch
      (CaiT's layer scale, 1e-6 in ConvNeXt), ``None`` for none.

    A conv has a bias exactly when no BatchNorm follows it (BN's shift makes it redundant;
    LayerNorm normalises over channels, so a per-channel bias before it is not redundant, and
    the official ConvNeXt keeps it).
    """

    stem: str = "resnet"
    stem_stride: int = 4
    depths: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    block: str = "bottleneck"
    expansion: int = 4
    depthwise: bool = False
    spatial_first: bool = False
    kernel_size: int = 3
    act: str = "relu"
    acts_per_block: int = 3
    norm: str = "batch"
    norms_per_block: int = 3
    downsampling: str = "in_block"
    head_norm: bool = False
    layer_scale: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        problems = []
        for name, allowed in (("stem", STEMS), ("block", BLOCKS), ("act", tuple(ACTS)),
                              ("norm", NORMS), ("downsampling", DOWNSAMPLING)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name}={getattr(self, name)!r} (allowed: {', '.join(allowed)})")
        if len(self.depths) != len(self.widths) or not self.depths:
            problems.append(f"depths {self.depths} and widths {self.widths} must have the same length")
        if any(d < 1 for d in self.depths) or any(w < 1 for w in self.widths):
            problems.append("depths and widths must be >= 1")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            problems.append(f"kernel_size={self.kernel_size} (an odd number keeps the resolution)")
        if self.stem == "resnet" and (self.stem_stride < 2 or self.stem_stride % 2):
            problems.append(f"stem_stride={self.stem_stride}: the ResNet stem ends with a stride-2 "
                            "max-pool, so the stride must be even")
        if self.stem_stride < 1:
            problems.append(f"stem_stride={self.stem_stride} must be >= 1")
        for name in ("acts_per_block", "norms_per_block"):
            value = getattr(self, name)
            if value not in (1, 3):
                problems.append(f"{name}={value} (allowed: 3 or 1)")
            elif value == 1 and not self.spatial_first:
                problems.append(f"{name}=1 keeps the one layer next to the 1x1 convs, which needs "
                                "spatial_first=True (Sec. 2.6 comes after Sec. 2.5)")
        if problems:
            raise ValueError("invalid LadderConfig: " + "; ".join(problems))

    def replace(self, **changes: Any) -> LadderConfig:
        return dataclasses.replace(self, **changes)

    @property
    def stream_widths(self) -> tuple[int, ...]:
        """Channels of the residual stream per stage (ResNet-50: 256 ... 2048)."""
        k = self.expansion if self.block == "bottleneck" else 1
        return tuple(w * k for w in self.widths)

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        """Channels inside the block (between the 1x1 convs) per stage."""
        k = self.expansion if self.block == "inverted" else 1
        return tuple(w * k for w in self.widths)

    def is_convnext(self) -> bool:
        """True when this configuration is the ConvNeXt design (then :func:`build_model` returns
        a :class:`course_lib.models.convnext.ConvNeXt`)."""
        return (self.stem == "patchify" and self.block == "inverted" and self.depthwise
                and self.spatial_first and self.act == "gelu" and self.acts_per_block == 1
                and self.norm == "layer" and self.norms_per_block == 1
                and self.downsampling == "separate" and self.head_norm)


# ----------------------------------------------------------------------------------------------
# The network


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else LayerNorm2d(channels, eps=1e-6)


class LadderBlock(nn.Module):
    """One residual block of any step of the ladder (Fig. 3 and Fig. 4).

    ``conv1 -> norm1 -> act1 -> conv2 -> norm2 -> act2 -> conv3 -> norm3 -> (gamma) -> drop path
    -> + shortcut(x) -> act3``; a norm or activation the configuration leaves out is an identity.

    * spatial conv in the middle: ``conv1`` 1x1 in -> hidden, ``conv2`` kxk on hidden (stride),
      ``conv3`` 1x1 hidden -> out (ResNet's bottleneck; with ``block="inverted"`` Fig. 3b);
    * spatial conv first (Fig. 3c): ``conv1`` kxk on the input (stride), ``conv2`` 1x1
      in -> hidden, ``conv3`` 1x1 hidden -> out.

    The shortcut is a 1x1 conv (with that stride) and a norm when the shape changes, else the
    identity. The module order equals torchvision's ``Bottleneck`` (``conv1, bn1, ..., bn3,
    downsample``), so a ResNet-50 state dict maps onto the first step one to one.
    """

    def __init__(self, cfg: LadderConfig, in_ch: int, out_ch: int, hidden: int, stride: int = 1,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        k, pad = cfg.kernel_size, cfg.kernel_size // 2
        if cfg.spatial_first:
            groups = in_ch if cfg.depthwise else 1
            convs = [(in_ch, in_ch, k, stride, pad, groups), (in_ch, hidden, 1, 1, 0, 1),
                     (hidden, out_ch, 1, 1, 0, 1)]
        else:
            groups = hidden if cfg.depthwise else 1
            convs = [(in_ch, hidden, 1, 1, 0, 1), (hidden, hidden, k, stride, pad, groups),
                     (hidden, out_ch, 1, 1, 0, 1)]
        # norms after every conv (3) or only after the spatial conv, the first one (1)
        has_norm = [True, True, True] if cfg.norms_per_block == 3 else [True, False, False]
        # activations after conv1, conv2 and the sum (3) or only between the 1x1 convs (1)
        has_act = [True, True, True] if cfg.acts_per_block == 3 else [False, True, False]
        act = ACTS[cfg.act]
        for i, ((cin, cout, ks, st, p, g), n) in enumerate(zip(convs, has_norm, strict=True), start=1):
            bias = not (n and cfg.norm == "batch")
            self.add_module(f"conv{i}", nn.Conv2d(cin, cout, ks, stride=st, padding=p, groups=g, bias=bias))
            self.add_module(f"norm{i}", _norm(cfg.norm, cout) if n else nn.Identity())
            if i < 3:
                self.add_module(f"act{i}", act() if has_act[i - 1] else nn.Identity())
        self.gamma = (nn.Parameter(torch.full((out_ch,), cfg.layer_scale))
                      if cfg.layer_scale is not None else None)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if in_ch != out_ch or stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=cfg.norm != "batch"),
                _norm(cfg.norm, out_ch))
        else:
            self.shortcut = nn.Identity()
        self.act3 = act() if has_act[2] else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.norm1(self.conv1(x)))
        y = self.act2(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return self.act3(self.shortcut(x) + self.drop_path(y))


class LadderStage(nn.Module):
    """A separate downsampling layer (norm -> 2x2 stride-2 conv) when configured, then blocks."""

    def __init__(self, cfg: LadderConfig, index: int, in_ch: int, drop_path_rates: Sequence[float]) -> None:
        super().__init__()
        out_ch, hidden = cfg.stream_widths[index], cfg.hidden_widths[index]
        stride = 1
        if index > 0 and cfg.downsampling == "separate":
            self.downsample = nn.Sequential(_norm(cfg.norm, in_ch), nn.Conv2d(in_ch, out_ch, 2, stride=2))
            in_ch = out_ch
        else:
            self.downsample = nn.Identity()
            stride = 2 if index > 0 else 1
        blocks = []
        for j, rate in enumerate(drop_path_rates):
            blocks.append(LadderBlock(cfg, in_ch, out_ch, hidden, stride if j == 0 else 1, rate))
            in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class LadderNet(nn.Module):
    """The network of any step of the ladder: stem, stages, head (pool, optional norm, fc).

    Weights start from a truncated normal (std 0.02) with zero biases and unit norms, the
    ConvNeXt init, at every step, so that only the architecture changes along the ladder.
    """

    def __init__(self, cfg: LadderConfig, num_classes: int = 1000, in_chans: int = 3,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.config = cfg
        self.num_classes = num_classes
        c0 = cfg.widths[0]
        if cfg.stem == "resnet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, c0, 7, stride=cfg.stem_stride // 2, padding=3, bias=cfg.norm != "batch"),
                _norm(cfg.norm, c0), ACTS[cfg.act](), nn.MaxPool2d(3, stride=2, padding=1))
        else:
            s = cfg.stem_stride
            self.stem = nn.Sequential(nn.Conv2d(in_chans, c0, s, stride=s, bias=cfg.norm != "batch"),
                                      _norm(cfg.norm, c0))
        rates = torch.linspace(0, drop_path_rate, sum(cfg.depths), device="cpu").tolist()
        stages, start, in_ch = [], 0, c0
        for i, depth in enumerate(cfg.depths):
            stages.append(LadderStage(cfg, i, in_ch, rates[start:start + depth]))
            start += depth
            in_ch = cfg.stream_widths[i]
        self.stages = nn.Sequential(*stages)
        self.num_features = in_ch
        self.head = nn.Module()
        if cfg.head_norm:
            self.head.norm = nn.LayerNorm(in_ch, eps=1e-6) if cfg.norm == "layer" else nn.BatchNorm1d(in_ch)
        else:
            self.head.norm = nn.Identity()
        self.head.fc = nn.Linear(in_ch, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not m.weight.is_meta:  # meta: shapes only
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean(dim=(-2, -1))  # global average pooling
        return self.head.fc(self.head.norm(x))


INITS = ("trunc_normal", "fan_in")


def build_model(cfg: LadderConfig, num_classes: int = 1000, drop_path_rate: float = 0.0,
                in_chans: int = 3, init: str = "trunc_normal") -> nn.Module:
    """The network for ``cfg``: a :class:`ConvNeXt` (timm names) when ``cfg`` is the ConvNeXt
    design (:meth:`LadderConfig.is_convnext`), else a :class:`LadderNet`.

    ``init``: ``"trunc_normal"`` is the official ConvNeXt init (std 0.02, zero biases) at every
    step; ``"fan_in"`` is PyTorch's default for every conv and linear layer (weights uniform with
    variance 1 / (3 fan_in), biases uniform in +-1/sqrt(fan_in)), whose residual branches start
    loud enough to learn in a few epochs (see :func:`reinit_fan_in`)."""
    if init not in INITS:
        raise ValueError(f"init={init!r}; allowed: {', '.join(INITS)}")
    if cfg.is_convnext():
        model: nn.Module = ConvNeXt(in_chans=in_chans, num_classes=num_classes, depths=cfg.depths,
                                    dims=cfg.widths, kernel_size=cfg.kernel_size, patch_size=cfg.stem_stride,
                                    mlp_ratio=cfg.expansion, ls_init_value=cfg.layer_scale,
                                    drop_path_rate=drop_path_rate)
    else:
        model = LadderNet(cfg, num_classes=num_classes, in_chans=in_chans, drop_path_rate=drop_path_rate)
    if init == "fan_in":
        reinit_fan_in(model)
    return model


@torch.no_grad()
def reinit_fan_in(model: nn.Module) -> nn.Module:
    """Re-initialise every conv and linear layer with PyTorch's default (fan-in) init.

    Why the course needs it: with the official std-0.02 init, a block's output before any norm
    is tiny at the course's widths (C = 24: a 1x1 conv scales by about sqrt(24) * 0.02 = 0.1, two
    of them by 0.01). A block that ends in a BatchNorm (steps 0-9) is rescaled to unit variance
    and learns at once; a block with one norm, before its 1x1 convs (steps 10-12), adds a branch
    about 1% of the residual stream and stays near its start for the first epochs. Over 300
    ImageNet epochs that does not matter; in 3 epochs of 5,000 images it decided the result
    (measured, docs/calibration.md: step 10 reached 45% with std 0.02 and 74% with fan-in init,
    ConvNeXt 29% vs. 37%, with layer scale 1 55%; step 0 78% vs. 80%)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not m.weight.is_meta:
            m.reset_parameters()
    return model

