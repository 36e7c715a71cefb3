"""DINO: "Emerging Properties in Self-Supervised Vision Transformers"
(Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin; ICCV 2021, arXiv 2104.14294).
Everything notebook 06 needs, and the frozen backbone of notebook 11 (STEGO).

DINO is *self-distillation with no labels*: a student network ``g_s`` is trained to predict the
output of a teacher network ``g_t`` of the same architecture on another view of the same image;
the teacher is an exponential moving average of the student. Implemented here from scratch:

* **Softmax outputs with temperatures** (eq. 1): ``P_s(x) = softmax(g_s(x) / τ_s)``,
  ``τ_s = 0.1``; the teacher is *sharpened* with a lower ``τ_t`` (0.04, optionally warmed up
  from a lower value: the official README recipe goes 0.04 -> 0.07) and *centred*:
  ``P_t(x) = softmax((g_t(x) - c) / τ_t)``.
* **The loss** (eq. 2, and eq. 3 with multi-crop): the cross-entropy ``H(P_t, P_s) = -Σ P_t log P_s``
  summed over every (teacher view, student view) pair except identical views, averaged over
  the pairs (:class:`DINOLoss`; Algorithm 1 of the paper is the two-view case).
* **Centering** (Sec. 3.1, eq. 4): ``c <- m c + (1 - m) mean_batch g_t(x)`` with ``m = 0.9``,
  updated *after* the loss of the step. Centering prevents one dimension from dominating,
  sharpening prevents the uniform output; each alone collapses (paper Fig. 7).
* **The momentum teacher** (Sec. 3.1): ``θ_t <- λ θ_t + (1 - λ) θ_s`` after every student step,
  ``λ`` following a cosine from 0.996 to 1 over the iterations. Without it (``λ = 0``: the
  teacher is the current student) DINO collapses (paper Table 7, row 2).
* **Multi-crop** (Sec. 3.1): two global views and several small local views per image; only the
  global views go through the teacher, the student sees all of them (:class:`MultiCropAugment`).
  The backbone runs once per group of same-resolution crops; position embeddings are
  interpolated for the local crops (:func:`forward_tokens`).
* **The projection head** (Sec. 3.1, "Network architecture"): a 3-layer MLP (GELU) to a
  bottleneck, L2 normalisation, then a weight-normalised linear layer without bias to ``K``
  outputs whose norm ``g`` is fixed at 1 (:class:`DINOHead`).
* **The recipe** (Sec. 3.2 and Appendix): AdamW, lr ``0.0005 * batch / 256`` with linear warm-up and
  a cosine decay, weight decay cosine 0.04 -> 0.4 (none on biases and norms), gradient clipping
  to norm 3 *per parameter*, the last layer of the head frozen during the first epoch.

Evaluation (Sec. 4): weighted k-NN (:func:`knn_classifier`, 20 neighbours, votes ``exp(sim /
0.07)``) and a linear probe (:func:`linear_probe`) on the frozen class-token features; the
last-layer class-token attention (:func:`cls_attention`), thresholded to keep 60% of its mass
(:func:`attention_masks`) and compared to ground-truth object masks with the Jaccard index
(:func:`jaccard`; paper Table "Segmentation from supervised versus DINO": random 22.0,
supervised 27.3, DINO 45.9 for ViT-S/16 on PASCAL VOC12 val).

Where we differ from the official code (facebookresearch/dino), and why:

* Augmentations run batched on tensors with *per-image* random parameters (torchvision's v2
  transforms draw one set of parameters per call, i.e. the same crop for a whole batch): random
  resized crops through ``torchvision.ops.roi_align``, flips, colour jitter, grayscale, Gaussian
  blur and solarisation written as tensor ops. The blur's sigma scales with the crop size
  (official 0.1-2.0 px at 224 px).
* The colour jitter is applied in a fixed order (brightness, contrast, saturation, hue; torchvision
  shuffles the order per image).
* Our ViT keeps the course's ``models/vit.py`` (timm parameter names), so official DINO and timm
  DINO weights load into it (:func:`load_dino_weights`).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import config, train
from .config import Param
from .models.vit import VisionTransformer, load_timm_state_dict, unwrap_checkpoint

__all__ = [
    "PAPER", "PAPER_URL", "TITLE", "ARCHS", "DINOConfig", "DINOHead", "DINOLoss", "MultiCropAugment",
    "MultiCropNet", "cosine_schedule", "ema_update", "clip_gradients", "train_dino", "world_config", "dino_config", "train_backbone",
    "study_backbone", "load_dino_weights", "build_backbone", "forward_tokens", "extract_features",
    "knn_classifier", "linear_probe", "cls_attention", "attention_masks", "jaccard",
    "foreground_masks", "normalize", "IMAGENET_MEAN", "IMAGENET_STD", "photos", "plot_jaccard",
    "plot_photo_attention",
]

PAPER_URL = "https://arxiv.org/abs/2104.14294"
TITLE = "DINO: Emerging Properties in Self-Supervised Vision Transformers"
# bump when a change of this module changes what a cached model would be
CODE_VERSION = 1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The paper's numbers, from the study group's notes (seed 003).
PAPER = {
    # Table 2 (ImageNet linear / k-NN top-1, ViT-S/16, 300 epochs)
    "table2_vit_s": {"dino_linear": 77.0, "dino_knn": 74.5, "supervised": 79.8},
    # Table "Segmentation from supervised versus DINO" (Jaccard %, PASCAL VOC12 val, 60% mass)
    "jaccard_vit_s16": {"random": 22.0, "supervised": 27.3, "dino": 45.9},
    "jaccard_vit_s8": {"random": 21.8, "supervised": 23.7, "dino": 44.7},
    # Table 7 (ablations, ViT-S/16, 300 epochs, ImageNet k-NN / linear)
    "table7_knn": {"dino": 72.8, "no_momentum": 0.1, "no_multicrop": 67.9, "mse": 52.6},
    "table7_linear": {"dino": 76.1, "no_momentum": 0.1, "no_multicrop": 72.5, "mse": 62.4},
}

# Backbones. "course": the study profile's ViT (32 px, 4 px patches -> an 8x8 grid; 16 px local
# crops -> 4x4), calibrated in benchmarks/calibrate_dino.py (docs/calibration.md).
# "vit_small_patch16"/"vit_small_patch8": DINO's ViT-S/16 and ViT-S/8 (timm vit_small_*_224.dino).
ARCHS: dict[str, dict[str, Any]] = {
    "course": dict(img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=4, mlp_ratio=2.0),
    "course_small": dict(img_size=32, patch_size=4, embed_dim=96, depth=4, num_heads=3, mlp_ratio=2.0),
    "course_d96h4": dict(img_size=32, patch_size=4, embed_dim=96, depth=4, num_heads=4, mlp_ratio=2.0),
    "vit_small_patch16": dict(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
    "vit_small_patch8": dict(img_size=224, patch_size=8, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
}

LOSSES = ("ce", "mse")


# ----------------------------------------------------------------------------------------------
# Configuration


@dataclass
class DINOConfig:
    """Everything :func:`train_dino` needs. Defaults follow the official code where they fit a
    small budget; the course's calibrated values are in :func:`dino_config`.

    Architecture: ``model`` is a key of :data:`ARCHS` or a dict of ``VisionTransformer`` kwargs;
    ``image_size`` (global crops) overrides its ``img_size``.
    Multi-crop: ``global_scale``/``local_scale`` are the area fractions of
    ``RandomResizedCrop``; ``local_crops`` local views of ``local_size`` px.
    Head: ``out_dim`` = K, ``hidden_dim``, ``bottleneck``; ``norm_last_layer`` fixes g = 1.
    Ablation switches: ``momentum_teacher_on`` (False: the teacher is the current student),
    ``multi_crop`` (False: two global views only), ``loss`` ("ce" or "mse"), ``centering``,
    ``sharpening`` (False: the teacher uses the student's temperature).
    """

    model: str | dict = "course"
    image_size: int = 32
    local_crops: int = 6
    local_size: int = 16
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.1, 0.4)
    out_dim: int = 1024
    hidden_dim: int = 512
    bottleneck: int = 128
    norm_last_layer: bool = True
    drop_path: float = 0.1
    epochs: int = 20
    batch_size: int = 128
    lr: float = 5e-4                 # at batch 256; scaled by batch_size / 256
    min_lr: float = 1e-6
    warmup_epochs: float = 2.0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    momentum_teacher: float = 0.996
    center_momentum: float = 0.9
    clip_grad: float = 3.0
    freeze_last_layer: int = 1
    # augmentation strengths (1.0 = the official BYOL-style values)
    color_jitter: float = 1.0
    blur: bool = True
    solarize: bool = True
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)   # the world's normalisation
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    # ablation switches (paper Table 7, Fig. 7)
    momentum_teacher_on: bool = True
    multi_crop: bool = True
    loss: str = "ce"
    centering: bool = True
    sharpening: bool = True
    amp: str = "auto"
    max_steps: int | None = None     # stop after that many steps (smoke runs); schedules span them

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r}; allowed: {LOSSES}")
        if isinstance(self.model, str) and self.model not in ARCHS:
            raise ValueError(f"model={self.model!r}; allowed: {sorted(ARCHS)} or a dict of ViT kwargs")
        if self.local_crops < 0 or self.batch_size < 2 or self.epochs < 1:
            raise ValueError("local_crops >= 0, batch_size >= 2 and epochs >= 1 are needed")
        self.global_scale = tuple(self.global_scale)
        self.local_scale = tuple(self.local_scale)
        self.mean, self.std = tuple(self.mean), tuple(self.std)

    @property
    def n_local(self) -> int:
        return self.local_crops if self.multi_crop else 0

    def arch(self) -> dict[str, Any]:
        """The backbone's ``VisionTransformer`` kwargs (no classifier head)."""
        a = dict(ARCHS[self.model]) if isinstance(self.model, str) else dict(self.model)
        a.update(img_size=self.image_size, num_classes=0)
        return a

    def replace(self, **changes) -> "DINOConfig":
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------------------------
# Multi-crop augmentation, batched with per-image random parameters


def _luma(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 grey (as torchvision's rgb_to_grayscale), (B, 1, H, W)."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _hue_shift(x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of (B, 3, H, W) images by ``turn`` (fractions of a full turn) in YIQ space."""
    ang = 2 * math.pi * turn
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                       device=x.device, dtype=x.dtype)
    inv = torch.linalg.inv(yiq)
    rot = torch.zeros(len(ang), 3, 3, device=x.device, dtype=x.dtype)
    rot[:, 0, 0] = 1
    c, s = torch.cos(ang), torch.sin(ang)
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    m = inv @ rot @ yiq
    return torch.einsum("bij,bjhw->bihw", m, x)


class MultiCropAugment:
    """DINO's data augmentation (official ``DataAugmentationDINO``) on a batch of images.

    ``__call__(images)`` takes float images (B, 3, H, W) in [0, 1] and returns the list
    ``[global_1, global_2, local_1, ..., local_n]`` of normalised crops (B, 3, S, S): global views
    ``RandomResizedCrop(size, scale=global_scale)``, local views ``(local_size, local_scale)``;
    each with a horizontal flip (p 0.5), colour jitter (p 0.8; brightness 0.4, contrast 0.4,
    saturation 0.2, hue 0.1 at strength 1), grayscale (p 0.2); Gaussian blur with probability
    1.0 / 0.1 / 0.5 (global 1 / global 2 / locals) and solarisation (p 0.2) on global 2 only.
    Every image draws its own parameters (``generator`` makes it reproducible).
    """

    def __init__(self, cfg: DINOConfig, generator: torch.Generator | None = None):
        self.cfg = cfg
        self.gen = generator

    # -- random numbers on the CPU generator, moved to the images' device ---------------------
    def _rand(self, *shape, device) -> torch.Tensor:
        return torch.rand(*shape, generator=self.gen).to(device)

    def crop(self, x: torch.Tensor, size: int, scale: tuple[float, float]) -> torch.Tensor:
        """Per-image ``RandomResizedCrop``: area fraction in ``scale``, aspect ratio in [3/4, 4/3]
        (log-uniform), up to 10 tries then the whole image (as torchvision); the crop is resampled
        to ``size`` x ``size`` by ``roi_align`` (bilinear, averaging several samples per output
        pixel when the crop is larger than the output)."""
        from torchvision.ops import roi_align

        B, _, H, W = x.shape
        tries = 10
        area = H * W * (scale[0] + (scale[1] - scale[0]) * self._rand(B, tries, device="cpu"))
        logr = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * self._rand(B, tries, device="cpu")
        ratio = torch.exp(logr)
        w, h = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
        ok = (w <= W) & (h <= H)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.zeros(B, dtype=torch.long))
        w = torch.where(ok.any(1), w[torch.arange(B), first], torch.full((B,), float(W)))
        h = torch.where(ok.any(1), h[torch.arange(B), first], torch.full((B,), float(H)))
        x0 = (W - w) * self._rand(B, device="cpu")
        y0 = (H - h) * self._rand(B, device="cpu")
        boxes = torch.stack([torch.arange(B, dtype=torch.float32), x0, y0, x0 + w, y0 + h], 1)
        return roi_align(x, boxes.to(x.device, x.dtype), output_size=(size, size), spatial_scale=1.0,
                         sampling_ratio=-1, aligned=True)

    def flip(self, x: torch.Tensor) -> torch.Tensor:
        f = self._rand(len(x), device=x.device) < 0.5
        return torch.where(f.view(-1, 1, 1, 1), x.flip(-1), x)

    def color(self, x: torch.Tensor) -> torch.Tensor:
        """ColorJitter(0.4, 0.4, 0.2, 0.1) with probability 0.8, then grayscale with p 0.2."""
        B, dev, s = len(x), x.device, self.cfg.color_jitter
        if s > 0:
            on = (self._rand(B, device=dev) < 0.8).view(-1, 1, 1, 1)
            u = self._rand(B, 4, device=dev) * 2 - 1  # in [-1, 1]
            b, c, sat = 1 + 0.4 * s * u[:, 0], 1 + 0.4 * s * u[:, 1], 1 + 0.2 * s * u[:, 2]
            hue = 0.1 * s * u[:, 3]
            y = (x * b.view(-1, 1, 1, 1)).clamp(0, 1)
            m = _luma(y).mean((2, 3), keepdim=True)
            y = ((y - m) * c.view(-1, 1, 1, 1) + m).clamp(0, 1)
            g = _luma(y)
            y = ((y - g) * sat.view(-1, 1, 1, 1) + g).clamp(0, 1)
            y = _hue_shift(y, hue).clamp(0, 1)
            x = torch.where(on, y, x)
        gray = (self._rand(B, device=dev) < 0.2).view(-1, 1, 1, 1)
        return torch.where(gray, _luma(x).expand_as(x), x)

    def blur(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """Gaussian blur with probability ``p``, sigma uniform in [0.1, 2.0] * size / 224."""
        if not self.cfg.blur or p <= 0:
            return x
        B, C, S, _ = x.shape
        on = self._rand(B, device=x.device) < p
        sigma = (0.1 + 1.9 * self._rand(B, device=x.device)) * S / 224
        radius = max(1, math.ceil(3 * 2.0 * S / 224))
        t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        k = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
        k = k / k.sum(1, keepdim=True)                                  # (B, K)
        k = k.repeat_interleave(C, 0)                                   # (B*C, K)
        y = x.reshape(1, B * C, S, S)
        y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
        y = F.conv2d(y, k.view(B * C, 1, 1, -1), groups=B * C)
        y = F.conv2d(y, k.view(B * C, 1, -1, 1), groups=B * C)
        return torch.where(on.view(-1, 1, 1, 1), y.view(B, C, S, S), x)

    def solarize(self, x: torch.Tensor, p: float) -> torch.Tensor:
        if not self.cfg.solarize or p <= 0:
            return x
        on = (self._rand(len(x), device=x.device) < p).view(-1, 1, 1, 1)
        return torch.where(on & (x >= 0.5), 1 - x, x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(self.cfg.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        s = torch.tensor(self.cfg.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - m) / s

    def view(self, x: torch.Tensor, size: int, scale, blur_p: float, solarize_p: float) -> torch.Tensor:
        v = self.color(self.flip(self.crop(x, size, scale)))
        return self.normalize(self.solarize(self.blur(v, blur_p), solarize_p))

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        cfg = self.cfg
        crops = [self.view(x, cfg.image_size, cfg.global_scale, 1.0, 0.0),
                 self.view(x, cfg.image_size, cfg.global_scale, 0.1, 0.2)]
        crops += [self.view(x, cfg.local_size, cfg.local_scale, 0.5, 0.0) for _ in range(cfg.n_local)]
        return crops


# ----------------------------------------------------------------------------------------------
# Backbone at any resolution, the head, the multi-crop network


def forward_tokens(model: VisionTransformer, x: torch.Tensor, return_attention: bool = False):
    """``model.forward_features`` for images of any size (a multiple of the patch size).

    The position embeddings are interpolated (bicubic, timm's ``resample_abs_pos_embed``, as the
    official ``interpolate_pos_encoding``) when the patch grid differs from the model's, so a
    backbone built for 32 px global crops also embeds 16 px local crops, and one built for 224 px
    draws attention maps of a 480 px photo. Returns tokens (B, prefix + N, D), and with
    ``return_attention`` also the list of per-block attention maps (B, heads, T, T).
    """
    from timm.layers import resample_abs_pos_embed

    p = model.patch_size
    H, W = x.shape[-2:]
    if H % p[0] or W % p[1]:
        raise ValueError(f"image size {(H, W)} is not a multiple of the patch size {p}")
    if (H, W) == tuple(model.img_size):
        return model.forward_features(x, return_attention=return_attention)
    t = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    pos = resample_abs_pos_embed(model.pos_embed, new_size=[H // p[0], W // p[1]],
                                 old_size=list(model.grid_size), num_prefix_tokens=model.num_prefix_tokens)
    prefix = [tok.expand(t.shape[0], -1, -1) for tok in (model.cls_token, model.dist_token) if tok is not None]
    t = model.pos_drop(torch.cat(prefix + [t], 1) + pos)
    attns = []
    for block in model.blocks:
        t, a = block(t, return_attention)
        if return_attention:
            attns.append(a)
    t = model.norm(t)
    return (t, attns) if return_attention else t


class DINOHead(nn.Module):
    """The projection head (Sec. 3.1): MLP ``in -> hidden -> hidden -> bottleneck`` with GELU,
    L2 normalisation, then a weight-normalised linear layer without bias,
    ``W = g * V / ||V||`` per output row, with ``g`` fixed at 1 when ``norm_last_layer``
    (the official default: the last layer's rows are unit vectors, so the logits are cosines)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck: int = 256,
                 norm_last_layer: bool = True) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, bottleneck))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        v = torch.empty(out_dim, bottleneck)
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))  # nn.Linear's default init, as official
        self.last_layer_v = nn.Parameter(v)
        self.last_layer_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not norm_last_layer)

    def last_layer_weight(self) -> torch.Tensor:
        return self.last_layer_g * F.normalize(self.last_layer_v, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x), dim=-1, p=2)
        return z @ self.last_layer_weight().t()


class MultiCropNet(nn.Module):
    """Backbone + head applied to a list of crops (official ``MultiCropWrapper``): consecutive crops
    of the same resolution are concatenated and go through the backbone in ONE call; the class
    tokens of all crops then go through the head in one call. Output: (n_crops * B, K), ordered
    crop-major (all images of crop 0, then crop 1, ...)."""

    def __init__(self, backbone: VisionTransformer, head: DINOHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        feats, start = [], 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-1] == crops[start].shape[-1]:
                end += 1
            feats.append(forward_tokens(self.backbone, torch.cat(list(crops[start:end])))[:, 0])
            start = end
        return self.head(torch.cat(feats))


# ----------------------------------------------------------------------------------------------
# The loss


class DINOLoss(nn.Module):
    """Eq. 2-3 with centering and sharpening (Algorithm 1, multi-crop).

    ``forward(student_out, teacher_out, epoch)``: ``student_out`` (n_crops * B, K) and
    ``teacher_out`` (2 * B, K), both crop-major. For every teacher view ``q`` (the 2 global crops)
    and every student view ``v != q``::

        P_t = softmax((g_t - c) / τ_t)           (centred and sharpened, no gradient)
        P_s = softmax(g_s / τ_s)                  (eq. 1)
        H(P_t, P_s) = -Σ_k P_t log P_s            (eq. 2), averaged over the batch

    averaged over the ``2 * n_crops - 2`` pairs. ``loss="mse"`` replaces H by
    ``||P_t - P_s||²`` (the "MSE" row of Table 7; the paper does not say on what the MSE is taken:
    we keep centering and sharpening and compare the two distributions). After the loss the
    centre is updated, ``c <- m c + (1 - m) mean(g_t)`` (eq. 4), unless ``centering=False``.
    ``teacher_temp`` is the schedule of τ_t per epoch (warm-up, then constant).
    Also returns diagnostics: ``entropy`` = mean H(P_t) (per sample), ``kl`` = mean KL(P_t||P_s),
    ``marginal_entropy`` = H(mean over the batch of P_t).
    """

    def __init__(self, out_dim: int, n_crops: int, teacher_temp: Sequence[float], student_temp: float = 0.1,
                 center_momentum: float = 0.9, loss: str = "ce", centering: bool = True) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r}; allowed: {LOSSES}")
        self.n_crops, self.student_temp, self.center_momentum = n_crops, student_temp, center_momentum
        self.teacher_temp = list(teacher_temp)
        self.loss, self.centering = loss, centering
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor, epoch: int):
        tt = self.teacher_temp[min(epoch, len(self.teacher_temp) - 1)]
        s_logp = F.log_softmax(student_out.float() / self.student_temp, dim=-1).chunk(self.n_crops)
        t_logits = teacher_out.detach().float()
        t_p = F.softmax((t_logits - self.center) / tt, dim=-1)
        t_chunks = t_p.chunk(2)
        total, kl, n_terms = 0.0, 0.0, 0
        for iq, q in enumerate(t_chunks):
            for v in range(self.n_crops):
                if v == iq:
                    continue  # the same view for teacher and student: skipped
                ce = torch.sum(-q * s_logp[v], dim=-1).mean()
                if self.loss == "ce":
                    total = total + ce
                else:
                    total = total + ((q - s_logp[v].exp()) ** 2).sum(-1).mean()
                kl = kl + ce.detach()
                n_terms += 1
        total = total / n_terms
        with torch.no_grad():
            ent = -(t_p * torch.log(t_p.clamp_min(1e-12))).sum(-1).mean()
            mean_p = t_p.mean(0)
            marg = -(mean_p * torch.log(mean_p.clamp_min(1e-12))).sum()
            stats = {"entropy": ent, "kl": kl / n_terms - ent, "marginal_entropy": marg, "teacher_temp": tt}
        self.update_center(t_logits)
        return total, stats

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """Eq. 4, after the loss: an EMA of the batch mean of the teacher's outputs (all-reduced
        across processes under DDP, as the official code does)."""
        if not self.centering:
            return
        batch_center = teacher_out.sum(0, keepdim=True)
        n = torch.tensor(float(len(teacher_out)), device=teacher_out.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch_center)
            torch.distributed.all_reduce(n)
        batch_center = batch_center / n
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))


# ----------------------------------------------------------------------------------------------
# Schedules and optimisation helpers


def cosine_schedule(base: float, final: float, epochs: int, niter_per_ep: int, warmup_epochs: float = 0,
                    start_warmup_value: float = 0.0) -> np.ndarray:
    """One value per iteration: linear warm-up from ``start_warmup_value`` to ``base`` over
    ``warmup_epochs``, then a cosine from ``base`` to ``final`` (official ``cosine_scheduler``)."""
    total = epochs * niter_per_ep
    warm = min(int(round(warmup_epochs * niter_per_ep)), total)
    warmup = np.linspace(start_warmup_value, base, warm) if warm > 0 else np.array([])
    iters = np.arange(total - warm)
    rest = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / max(len(iters), 1)))
    return np.concatenate([warmup, rest])


def param_groups(model: nn.Module) -> list[dict]:
    """Weight decay on weight matrices only: none on biases and 1-D parameters (norms), as the
    official ``get_params_groups``. The first group is the one whose decay follows the schedule."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith(".bias") or p.ndim == 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def clip_gradients(model: nn.Module, clip: float) -> list[float]:
    """Clip every parameter's gradient to norm ``clip`` separately (official ``clip_gradients``;
    not one global norm). Returns the norms before clipping."""
    norms = []
    for p in model.parameters():
        if p.grad is not None:
            n = p.grad.detach().norm(2)
            norms.append(float(n))
            coef = clip / (n + 1e-6)
            if coef < 1:
                p.grad.mul_(coef)
    return norms


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """The momentum teacher: ``θ_t <- λ θ_t + (1 - λ) θ_s`` for every parameter (``λ = 0``: copy)."""
    for ps, pt in zip(student.parameters(), teacher.parameters()):
        pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)


def cancel_last_layer_gradients(head: DINOHead, epoch: int, freeze_last_layer: int) -> None:
    """During the first ``freeze_last_layer`` epochs the last layer of the head is not updated
    (official ``cancel_gradients_last_layer``): it helps the optimisation at the start."""
    if epoch >= freeze_last_layer:
        return
    for p in (head.last_layer_v, head.last_layer_g):
        p.grad = None


# ----------------------------------------------------------------------------------------------
# Training


def build_backbone(cfg: DINOConfig, drop_path: float = 0.0) -> VisionTransformer:
    """The ViT backbone of ``cfg`` without classifier head (``model(x)`` = class-token feature)."""
    return VisionTransformer(**cfg.arch(), drop_path_rate=drop_path)


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=gen)
    return [perm[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def train_dino(images: torch.Tensor, cfg: DINOConfig, device: torch.device | str | None = None,
               seed: int = 0, log: Callable[[str], Any] | None = print,
               callback: Callable[[dict, VisionTransformer], Any] | None = None
               ) -> tuple[VisionTransformer, train.History]:
    """Self-supervised DINO training on ``images`` (uint8 (N, 3, H, W), no labels).

    Returns the TEACHER backbone (what the official code evaluates) in eval mode, on ``device``,
    and a :class:`train.History`: per epoch ``train_loss``, ``teacher_entropy`` (mean H(P_t)),
    ``kl`` (KL(P_t || P_s)), ``marginal_entropy``, ``lr``, ``wd``, ``momentum``, ``teacher_temp``,
    ``time_s``, ``images_per_s``; per step ``loss``, ``lr``, ``teacher_entropy``, ``kl``.
    ``callback(record, teacher_backbone)`` is called after every epoch (e.g. to evaluate).
    """
    device = torch.device(device) if device is not None else config.pick_device("auto")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    if len(images) < cfg.batch_size:
        raise ValueError(f"{len(images)} images are fewer than one batch of {cfg.batch_size}")
    config.seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)

    student = MultiCropNet(build_backbone(cfg, cfg.drop_path),
                           DINOHead(cfg.arch()["embed_dim"], cfg.out_dim, cfg.hidden_dim, cfg.bottleneck,
                                    cfg.norm_last_layer)).to(device)
    teacher = MultiCropNet(build_backbone(cfg, 0.0),
                           DINOHead(cfg.arch()["embed_dim"], cfg.out_dim, cfg.hidden_dim, cfg.bottleneck,
                                    cfg.norm_last_layer)).to(device)
    teacher.load_state_dict(student.state_dict())  # same start (Algorithm 1: gt.params = gs.params)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    n_crops = 2 + cfg.n_local
    niter = len(images) // cfg.batch_size
    total = cfg.epochs * niter if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * niter)
    epochs = math.ceil(total / niter)
    lr = cfg.lr * cfg.batch_size / 256
    lr_s = cosine_schedule(lr, cfg.min_lr, epochs, niter, cfg.warmup_epochs)[:total]
    wd_s = cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, epochs, niter)[:total]
    mom_s = cosine_schedule(cfg.momentum_teacher, 1.0, epochs, niter)[:total]
    if cfg.sharpening:
        warm = np.linspace(cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.warmup_teacher_temp_epochs)
        temps = np.concatenate([warm, np.full(max(epochs - cfg.warmup_teacher_temp_epochs, 1), cfg.teacher_temp)])
    else:
        temps = np.full(epochs, cfg.student_temp)
    loss_fn = DINOLoss(cfg.out_dim, n_crops, temps.tolist(), cfg.student_temp, cfg.center_momentum,
                       cfg.loss, cfg.centering).to(device)
    opt = torch.optim.AdamW(param_groups(student), lr=lr)
    aug = MultiCropAugment(cfg, gen)
    amp_dtype, _ = train.amp_settings(cfg.amp if cfg.amp != "fp16" else "bf16", device)
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                else torch.autocast(device.type, enabled=False))

    hist = train.History()
    for k in ("teacher_entropy", "kl", "marginal_entropy"):
        hist.steps[k] = []
    step = 0
    for epoch in range(epochs):
        student.train()
        t0, sums, seen = time.perf_counter(), {}, 0
        for idx in _batches(len(images), cfg.batch_size, gen):
            if step >= total:
                break
            for i, g in enumerate(opt.param_groups):
                g["lr"] = lr_s[step]
                if i == 0:
                    g["weight_decay"] = wd_s[step]
            x = images[idx].to(device, non_blocking=True).float().div_(255)
            with torch.no_grad():
                crops = aug(x)
            with autocast:
                with torch.no_grad():
                    t_out = teacher(crops[:2])           # only the 2 global views
                s_out = student(crops)                  # all views
            loss, st = loss_fn(s_out, t_out, epoch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"DINO loss is {loss.item()} at step {step}; stopping")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad:
                clip_gradients(student, cfg.clip_grad)
            cancel_last_layer_gradients(student.head, epoch, cfg.freeze_last_layer)
            opt.step()
            # EMA teacher; without momentum the teacher is the current student
            ema_update(teacher, student, float(mom_s[step]) if cfg.momentum_teacher_on else 0.0)
            step += 1
            b = len(idx)
            seen += b
            vals = {"loss": float(loss.detach()), "teacher_entropy": float(st["entropy"]), "kl": float(st["kl"]),
                    "marginal_entropy": float(st["marginal_entropy"])}
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v * b
            hist.steps["step"].append(step)
            hist.steps["lr"].append(float(lr_s[step - 1]))
            for k in ("loss", "teacher_entropy", "kl", "marginal_entropy"):
                hist.steps[k].append(vals[k])
        dt = time.perf_counter() - t0
        rec = {"epoch": epoch + 1, "step": step, "train_loss": sums["loss"] / seen,
               "teacher_entropy": sums["teacher_entropy"] / seen, "kl": sums["kl"] / seen,
               "marginal_entropy": sums["marginal_entropy"] / seen, "lr": float(lr_s[step - 1]),
               "wd": float(wd_s[step - 1]), "momentum": float(mom_s[step - 1]) if cfg.momentum_teacher_on else 0.0,
               "teacher_temp": float(temps[min(epoch, len(temps) - 1)]), "time_s": dt,
               "images_per_s": seen / max(dt, 1e-9)}
        hist.epochs.append(rec)
        if log is not None:
            log(f"DINO epoch {epoch + 1}/{epochs}: loss {rec['train_loss']:.3f} | H(P_t) "
                f"{rec['teacher_entropy']:.2f} | KL {rec['kl']:.3f} | lr {rec['lr']:.1e} | "
                f"{rec['images_per_s']:.0f} img/s")
        if callback is not None:
            callback(rec, teacher.backbone)
    backbone = teacher.backbone.eval()
    backbone.pretrained_cfg = {"mean": cfg.mean, "std": cfg.std}
    return backbone, hist


# ----------------------------------------------------------------------------------------------
# Profiles: the world and the recipe of notebook 06 (and notebook 11's backbone)


def world_config(profile: str = "study", **overrides):
    """The world notebook 06 pretrains on: several objects of ``num_classes`` shapes over two kinds
    of "stuff" (real textures), so that images have objects to find and STEGO (notebook 11) has
    semantic classes (``WorldData.semantic``). Calibrated in ``benchmarks/calibrate_dino.py``."""
    from .world import for_profile

    study = dict(num_images=4000, eval_images=1000, image_size=32, num_classes=6, objects=(1, 2),
                 scale=(0.5, 0.8), occlusion=0.0, clutter=0, bg_contrast=0.1, split_bg=0.5, seed=0)
    return for_profile(profile, study, {"smoke": dict(num_images=512, eval_images=256)}, **overrides)


def dino_config(profile: str = "study", **overrides) -> DINOConfig:
    """DINO's recipe per profile: ``study`` (calibrated for about 4-5 minutes on 2 CPU cores),
    ``smoke`` (a few steps), ``paper`` (ViT-S/16 at 224 px, the official recipe for a GPU)."""
    if profile == "paper":
        base = dict(model="vit_small_patch16", image_size=224, local_crops=10, local_size=96,
                    global_scale=(0.25, 1.0), local_scale=(0.05, 0.25), out_dim=65536, hidden_dim=2048,
                    bottleneck=256, epochs=100, batch_size=256, lr=5e-4, warmup_epochs=10,
                    teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=30,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, norm_last_layer=False)
    elif profile == "smoke":
        base = dict(epochs=1, batch_size=32, local_crops=2, out_dim=256, hidden_dim=256, bottleneck=64,
                    max_steps=4, warmup_epochs=0.1)
    elif profile == "study":
        # momentum 0.98 (not 0.996): with ~370 steps an EMA of time constant 250 steps leaves the
        # teacher near its random init; K = 256 and 6 local crops (docs/calibration.md, 06 DINO).
        base = dict(model="course_small", local_crops=6, epochs=6, batch_size=64, lr=2e-3, warmup_epochs=1.0,
                    momentum_teacher=0.98, out_dim=256)
    else:
        raise config.ParameterError(f"profile {profile!r}; allowed: smoke, study, paper")
    base.update(overrides)
    return DINOConfig(**base)


def train_backbone(world_cfg, cfg: DINOConfig, seed: int = 0, device=None, force: bool = False,
                   data_root=None, name: str = "dino", log: Callable[[str], Any] | None = print,
                   data: "DINOData | None" = None):
    """Pretrain DINO on the train split of ``world_cfg`` (or on ``data.train_images``) once and
    cache the teacher backbone (``train.cached_model``; the key is the data, the recipe and the
    seed). Returns ``(backbone in eval mode, CacheInfo)``; ``info.history`` is the DINO history."""
    device = torch.device(device) if device is not None else config.pick_device("auto")
    data_key = data.key if data is not None else {"world": world_cfg.key("train")}
    key = {**data_key, "dino": asdict(cfg), "seed": seed, "code": CODE_VERSION}

    def build():
        return build_backbone(cfg).to(device)

    def fit(model):
        if data is not None:
            images = data.train_images
        else:
            from .world import load_world
            images = load_world(world_cfg, "train", data_root).images
        teacher, hist = train_dino(images, cfg, device=device, seed=seed, log=log)
        model.load_state_dict(teacher.state_dict())
        return hist

    model, info = train.cached_model(name, key, build, fit, force=force)
    model.eval()
    model.pretrained_cfg = {"mean": cfg.mean, "std": cfg.std}
    return model, info


def study_backbone(profile: str = "study", device=None):
    """Notebook 06's DINO ViT for ``profile`` (trained on that profile's world and cached; trained
    now if missing) and its :class:`~course_lib.world.WorldConfig`. Notebook 11 (STEGO) uses it as
    its frozen backbone. ``model(x)`` gives class-token features, ``forward_tokens(model, x)``
    every token; inputs are normalised with ``model.pretrained_cfg`` (:func:`normalize`)."""
    if profile == "paper":
        raise ValueError("the paper profile uses official DINO weights: load_dino_weights(path)")
    wcfg, cfg = world_config(profile), dino_config(profile)
    model, _ = train_backbone(wcfg, cfg, seed=0, device=device, log=None)
    return model, wcfg


def normalize(images: torch.Tensor, mean=None, std=None, model: nn.Module | None = None) -> torch.Tensor:
    """uint8 (or [0, 1] float) images -> normalised float, with ``model.pretrained_cfg`` when given."""
    if model is not None and hasattr(model, "pretrained_cfg"):
        mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    mean = mean if mean is not None else (0.5, 0.5, 0.5)
    std = std if std is not None else (0.25, 0.25, 0.25)
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


# ----------------------------------------------------------------------------------------------
# Real DINO weights


def _vit_kwargs_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Infer a ViT's shape from its weights; heads = width / 64 (every DINO and timm ViT)."""
    w = sd["patch_embed.proj.weight"]
    dim, patch = w.shape[0], w.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    n_pos = sd["pos_embed"].shape[1] - 1
    side = math.isqrt(n_pos)
    mlp = sd["blocks.0.mlp.fc1.weight"].shape[0] / dim
    return dict(img_size=side * patch, patch_size=patch, embed_dim=dim, depth=depth,
                num_heads=max(1, dim // 64), mlp_ratio=mlp, num_classes=0,
                qkv_bias="blocks.0.attn.qkv.bias" in sd)


def load_dino_weights(path: str | PathLike, model: VisionTransformer | None = None,
                      img_size: int | None = None) -> VisionTransformer:
    """Real DINO weights from disk into our ViT.

    Accepts timm's ``vit_small_patch8_224.dino`` / ``vit_small_patch16_224.dino`` state dicts
    (``.safetensors`` or ``.pth``), the official backbone files (``dino_deitsmall16_pretrain.pth``)
    and the official full training checkpoints (``{"teacher": {"backbone.…", "head.…"}, "args":
    …}``; ``module.``/``backbone.`` prefixes stripped, the DINO head dropped). Without ``model`` the
    architecture is read from the weights (heads = width / 64); ``img_size`` builds it for another
    input size (position embeddings resampled). Returns the model in eval mode, with
    ``pretrained_cfg`` = ImageNet mean/std.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        ckpt: Mapping[str, Any] = load_file(str(path), device="cpu")
    else:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # the official full checkpoint pickles its argparse ``args``
            with torch.serialization.safe_globals([argparse.Namespace]):
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = unwrap_checkpoint(ckpt)
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}  # a DINO head stored unprefixed
    if model is None:
        kw = _vit_kwargs_from_state_dict(sd)
        if img_size is not None:
            kw["img_size"] = img_size
        model = VisionTransformer(**kw)
    load_timm_state_dict(model, sd, strict=True)
    model.eval()
    model.pretrained_cfg = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    return model


# ----------------------------------------------------------------------------------------------
# Evaluation: features, k-NN, linear probe


@torch.no_grad()
def extract_features(model: VisionTransformer, images: torch.Tensor, batch_size: int = 256, device=None,
                     mean=None, std=None) -> torch.Tensor:
    """Class-token features (after the final norm) of uint8 images, (N, D) float on the CPU.
    Normalisation: ``mean``/``std``, else ``model.pretrained_cfg``, else the world's."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device)
        x = normalize(x, mean, std, model if mean is None else None)
        out.append(forward_tokens(model, x)[:, 0].float().cpu())
    model.train(was)
    return torch.cat(out)


@torch.no_grad()
def knn_classifier(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                   test_labels: torch.Tensor, k: int = 20, T: float = 0.07, num_classes: int | None = None,
                   batch_size: int = 1024) -> float:
    """Weighted k-NN top-1 (%) as DINO's ``eval_knn.py``: L2-normalised features, the ``k`` most
    similar training images by cosine similarity vote with weight ``exp(sim / T)``."""
    num_classes = int(num_classes if num_classes is not None else int(train_labels.max()) + 1)
    tr = F.normalize(train_feats.float(), dim=1)
    te = F.normalize(test_feats.float(), dim=1)
    k = min(k, len(tr))
    correct = 0
    for i in range(0, len(te), batch_size):
        sim = te[i:i + batch_size] @ tr.t()
        d, idx = sim.topk(k, dim=1)
        cand = train_labels[idx]                                          # (b, k)
        votes = torch.zeros(len(cand), num_classes).scatter_add_(1, cand, (d / T).exp())
        correct += int((votes.argmax(1) == test_labels[i:i + batch_size]).sum())
    return 100.0 * correct / len(te)


def linear_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, C: float = 1.0, max_iter: int = 1000) -> float:
    """Top-1 (%) of a multinomial logistic regression (scikit-learn) on standardised frozen
    features: the linear evaluation of Sec. 4.1 without augmentation, fast on a CPU."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(train_feats.numpy())
    clf = LogisticRegression(C=C, max_iter=max_iter)
    clf.fit(sc.transform(train_feats.numpy()), train_labels.numpy())
    pred = clf.predict(sc.transform(test_feats.numpy()))
    return 100.0 * float((torch.from_numpy(pred) == test_labels).float().mean())


# ----------------------------------------------------------------------------------------------
# Attention maps and segmentation


@torch.no_grad()
def cls_attention(model: VisionTransformer, images: torch.Tensor, layer: int = -1, batch_size: int = 256,
                  normalized: bool = False) -> torch.Tensor:
    """Class-token-to-patch attention of one layer (default the last), every head:
    ``(B, heads, h, w)`` float on the CPU (official ``visualize_attention``: ``attn[:, :, 0, 1:]``).
    ``images``: uint8 (normalised with ``model.pretrained_cfg`` / the world's) or already
    normalised float images of any size that is a multiple of the patch size."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    out = []
    p = model.patch_size
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device)
        if x.dtype == torch.uint8:
            x = normalize(x, model=model)
        _, attns = forward_tokens(model, x.float(), return_attention=True)
        a = attns[layer][:, :, 0, model.num_prefix_tokens:].float().cpu()
        out.append(a.reshape(len(x), a.shape[1], x.shape[-2] // p[0], x.shape[-1] // p[1]))
    model.train(was)
    return torch.cat(out)


def attention_masks(maps: torch.Tensor, threshold: float = 0.6, head: int | str | None = "mean") -> torch.Tensor:
    """Binary masks keeping the patches that hold ``threshold`` of the attention mass (the official
    threshold, ``viz.mass_threshold``). ``maps`` (B, heads, h, w); ``head="mean"``: one mask of the
    mean over heads (B, h, w); an int: that head; ``None``: one mask per head (B, heads, h, w)."""
    from .viz import mass_threshold

    if head == "mean":
        m = maps.mean(1)
    elif head is None:
        m = maps
    else:
        m = maps[:, int(head)]
    return mass_threshold(m, threshold)


def jaccard(masks_pred: torch.Tensor, masks_gt: torch.Tensor) -> torch.Tensor:
    """Jaccard index |P ∩ G| / |P ∪ G| per image (B,) of boolean masks (B, ..., H, W). A patch-level
    prediction is upsampled (nearest) to the ground truth's resolution first. Two empty masks
    count as 1."""
    p, g = masks_pred.bool(), masks_gt.bool()
    if p.shape[-2:] != g.shape[-2:]:
        p = F.interpolate(p.float().flatten(0, -3).unsqueeze(1), size=g.shape[-2:], mode="nearest")
        p = p.squeeze(1).reshape(*masks_pred.shape[:-2], *g.shape[-2:]).bool()
    inter = (p & g).flatten(-2).sum(-1).float()
    union = (p | g).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def foreground_masks(data, indices: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
    """The world's object (foreground) masks (B, H, W) bool: every pixel of an object instance."""
    inst = data.instance_map if indices is None else data.instance_map[torch.as_tensor(indices)]
    return inst > 0


# ----------------------------------------------------------------------------------------------
# Notebook parameters


def _by_profile(field: str) -> dict[str, Any]:
    return config.per_profile(dino_config, field)


config.register("06_dino", {
    "dataset": Param({"smoke": "world", "study": "world", "paper": "imagenette"},
                     "world (offline) or imagenette (+ PASCAL VOC12 for the Jaccard; GPU)",
                     choices=("world", "imagenette")),
    "epochs": Param(_by_profile("epochs"), "DINO pretraining epochs", type=int, low=1),
    "local_crops": Param(_by_profile("local_crops"), "local views per image (multi-crop)", type=int, low=0, high=12),
    "teacher_temp": Param(_by_profile("teacher_temp"), "teacher temperature τ_t (after its warm-up)",
                          low=0.005, high=1.0),
    "momentum_teacher": Param(_by_profile("momentum_teacher"), "start of the teacher momentum λ (cosine to 1)",
                              low=0.0, high=1.0),
    "out_dim": Param(_by_profile("out_dim"), "K, the head's output dimension", type=int, low=8),
    "supervised_epochs": Param({"smoke": 1, "study": 6, "paper": 100},
                               "epochs of the supervised ViT baseline", type=int, low=1),
    "ablation_epochs": Param({"smoke": 1, "study": 1, "paper": 30},
                             "epochs of each ablation run (Table 7, Fig. 7)", type=int, low=1),
    "threshold": Param(0.6, "attention mass kept for the masks (paper: 0.6)", low=0.05, high=1.0),
    "dino_weights": Param(None, "path to official or timm DINO weights (ViT-S/16 or /8) for the real "
                          "photos; None: our small model only", type=(str, type(None))),
    "retrain": Param(False, "ignore cached models and train again"),
})


def config_from_params(P: config.Params) -> DINOConfig:
    """The notebook's DINO recipe: the profile's :func:`dino_config` with the notebook's knobs.
    With the default knobs it is exactly ``dino_config(profile)``, so notebook 06 and
    :func:`study_backbone` share one cached model."""
    return dino_config(P.profile, epochs=P.epochs, local_crops=P.local_crops, teacher_temp=P.teacher_temp,
                       momentum_teacher=P.momentum_teacher, out_dim=P.out_dim)


def load_data(P: config.Params) -> DINOData:
    """The world of :func:`world_config` (offline), or Imagenette + PASCAL VOC12 (paper profile)."""
    if P.dataset == "world":
        return world_data(world_config(P.profile), P.data_root)
    return imagenette_voc_data(dino_config(P.profile).image_size, P.data_root)




# ----------------------------------------------------------------------------------------------
# Data: the world (offline) or Imagenette + PASCAL VOC 2012 (paper profile)


@dataclass
class DINOData:
    """Everything the experiments need, as uint8 image tensors (N, 3, S, S).

    ``train_*``: pretraining images (labels only for the k-NN / linear evaluation and the
    supervised baseline); ``test_*``: k-NN / linear test set; ``seg_images``/``seg_fg``: images
    with foreground masks for the Jaccard (the world's test split, or PASCAL VOC12 val);
    ``val_images``/``val_fg``: where the best single head is chosen.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    seg_images: torch.Tensor
    seg_fg: torch.Tensor
    val_images: torch.Tensor
    val_fg: torch.Tensor
    num_classes: int
    class_names: list[str]
    world: Any = None                      # the WorldConfig, for the world
    splits: dict = field(default_factory=dict, repr=False)  # the WorldData splits, for the world
    key: dict = field(default_factory=dict)


def world_data(wcfg, data_root=None) -> DINOData:
    """The world's train / val / test splits as :class:`DINOData` (labels: the class of the
    largest object; foreground: every object pixel)."""
    from .world import load_world

    tr, va, te = (load_world(wcfg, s, data_root) for s in ("train", "val", "test"))
    return DINOData("world", tr.images, tr.clean_labels.clamp_min(0), te.images, te.clean_labels.clamp_min(0),
                    te.images, foreground_masks(te), va.images, foreground_masks(va), wcfg.num_classes,
                    list(wcfg.class_names), world=wcfg, splits={"train": tr, "val": va, "test": te},
                    key={"world": wcfg.key("train")})


def _resize_center(img: torch.Tensor, size: int, nearest: bool = False) -> torch.Tensor:
    from torchvision.transforms import v2

    mode = v2.InterpolationMode.NEAREST if nearest else v2.InterpolationMode.BILINEAR
    img = v2.functional.resize(img, size, interpolation=mode, antialias=not nearest)
    return v2.functional.center_crop(img, [size, size])


def imagenette_voc_data(image_size: int = 224, data_root=None, max_train: int | None = None,
                        voc_images: int = 1449) -> DINOData:
    """The paper profile: Imagenette (160 px release, upsampled and center-cropped to
    ``image_size``) for pretraining and k-NN / linear evaluation, PASCAL VOC 2012 val for the
    Jaccard (foreground = any of the 20 object classes; boundary pixels 255 count as
    background). Missing datasets raise ``FileNotFoundError`` naming the fetch command."""
    from torchvision import datasets
    from torchvision.io import ImageReadMode, decode_image

    from . import data as data_mod, paths

    root = paths.data_root(data_root)
    out = {}
    for split in ("train", "test"):
        ds = data_mod.get_dataset("imagenette", split, data_root)
        samples = ds._samples[:max_train] if (split == "train" and max_train) else ds._samples
        imgs = [_resize_center(decode_image(str(p), mode=ImageReadMode.RGB), image_size) for p, _ in samples]
        out[split] = (torch.stack(imgs), torch.tensor([y for _, y in samples]))
        names = [c[0] if isinstance(c, (tuple, list)) else str(c) for c in ds.classes]
    if not (root / "VOCdevkit" / "VOC2012").is_dir():
        raise FileNotFoundError(f"PASCAL VOC 2012 is not in {root / 'VOCdevkit/VOC2012'}; fetch it with\n"
                                f"    {data_mod.fetch_command('voc2012', data_root)}")
    voc = datasets.VOCSegmentation(str(root), year="2012", image_set="val", download=False)
    vi, vm = [], []
    for i in range(min(voc_images, len(voc))):
        img = decode_image(voc.images[i], mode=ImageReadMode.RGB)
        mask = torch.from_numpy(np.array(__import__("PIL.Image").Image.open(voc.masks[i])))[None]
        vi.append(_resize_center(img, image_size))
        m = _resize_center(mask, image_size, nearest=True)[0]
        vm.append((m > 0) & (m != 255))
    vi, vm = torch.stack(vi), torch.stack(vm)
    half = len(vi) // 2
    return DINOData("imagenette+voc2012", out["train"][0], out["train"][1], out["test"][0], out["test"][1],
                    vi[half:], vm[half:], vi[:half], vm[:half], len(names), names,
                    key={"dataset": "imagenette-160", "size": image_size, "max_train": max_train})


# ----------------------------------------------------------------------------------------------
# Baselines and the evaluation of a backbone


def random_backbone(cfg: DINOConfig, seed: int = 0, device=None) -> VisionTransformer:
    """The "random" rows: the same ViT, randomly initialised (timm's init), never trained."""
    config.seed_everything(seed)
    m = build_backbone(cfg).eval()
    m.pretrained_cfg = {"mean": cfg.mean, "std": cfg.std}
    return m.to(device) if device is not None else m


class _TensorImages(torch.utils.data.Dataset):
    """uint8 images + labels with a per-sample transform (for ``train.fit``)."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), int(self.labels[i])


def train_supervised(d: DINOData, cfg: DINOConfig, epochs: int, seed: int = 0, device=None, lr: float = 1e-3,
                     batch_size: int = 128, force: bool = False, max_steps: int | None = None):
    """The "supervised" rows: the same ViT trained with the image labels through ``train.fit``
    (AdamW, cosine, crop + flip, label smoothing 0.1), cached. Returns ``(model, CacheInfo)``;
    the model keeps its classifier head, its features are the class token."""
    from torchvision.transforms import v2

    from . import data as data_mod

    device = torch.device(device) if device is not None else config.pick_device("auto")
    arch = {**cfg.arch(), "num_classes": d.num_classes}
    key = {**d.key, "arch": arch, "epochs": epochs, "lr": lr, "bs": batch_size, "seed": seed,
           "max_steps": max_steps, "mean": cfg.mean, "code": CODE_VERSION}
    S = cfg.image_size
    train_tf = v2.Compose([v2.RandomResizedCrop(S, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                           v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)])
    test_tf = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)])

    def build():
        config.seed_everything(seed)
        return VisionTransformer(**arch).to(device)

    def fit(model):
        tr = _TensorImages(d.train_images, d.train_labels, train_tf)
        te = _TensorImages(d.test_images, d.test_labels, test_tf)
        tcfg = train.TrainConfig(epochs=epochs, lr=lr, weight_decay=0.05, warmup_epochs=min(1.0, 0.2 * epochs),
                                 min_lr=1e-5, label_smoothing=0.1, grad_clip=1.0, seed=seed, progress=False,
                                 max_steps=max_steps)
        return train.fit(model, data_mod.make_loader(tr, batch_size, train=True, seed=seed, device=device,
                                                     num_workers=0),
                         tcfg, eval_loader=data_mod.make_loader(te, 512, train=False, device=device, num_workers=0),
                         device=device)

    model, info = train.cached_model("dino-supervised", key, build, fit, force=force)
    model.eval()
    model.pretrained_cfg = {"mean": cfg.mean, "std": cfg.std}
    return model, info


def segmentation_scores(model: VisionTransformer, images: torch.Tensor, fg: torch.Tensor,
                        threshold: float = 0.6) -> dict[str, Any]:
    """Jaccard (%) of the thresholded last-layer class-token attention against the foreground
    masks ``fg`` (B, H, W): for the mean over heads, and for every head. Returns
    ``{"mean_heads": float, "per_head": [float, ...], "per_image": tensor (B,)}``."""
    maps = cls_attention(model, images)
    j_mean = jaccard(attention_masks(maps, threshold, "mean"), fg)
    per_head = jaccard(attention_masks(maps, threshold, None), fg.unsqueeze(1).expand(-1, maps.shape[1], -1, -1))
    return {"mean_heads": 100 * float(j_mean.mean()), "per_head": (100 * per_head.mean(0)).tolist(),
            "per_image": j_mean}


def evaluate_backbone(model: VisionTransformer, d: DINOData, threshold: float = 0.6, linear: bool = True,
                      k: int = 20, T: float = 0.07) -> dict[str, Any]:
    """Frozen-feature evaluation: weighted k-NN and linear-probe top-1 (%) on the class token,
    and the attention Jaccard (%) on ``d.seg_*``: of the mean-of-heads map, and of the best single
    head, chosen on ``d.val_*`` (the paper does not say which head its table uses)."""
    ftr = extract_features(model, d.train_images)
    fte = extract_features(model, d.test_images)
    out: dict[str, Any] = {"knn": knn_classifier(ftr, d.train_labels, fte, d.test_labels, k=k, T=T,
                                                 num_classes=d.num_classes)}
    if linear:
        out["linear"] = linear_probe(ftr, d.train_labels, fte, d.test_labels)
    val = segmentation_scores(model, d.val_images, d.val_fg, threshold)
    test = segmentation_scores(model, d.seg_images, d.seg_fg, threshold)
    best = int(np.argmax(val["per_head"]))
    out.update(jaccard_mean=test["mean_heads"], jaccard_best_head=test["per_head"][best], best_head=best,
               jaccard_per_head=test["per_head"], jaccard_per_image=test["per_image"])
    return out


# ----------------------------------------------------------------------------------------------
# Ablations (paper Table 7 and Fig. 7)

# name -> (label, DINOConfig changes, paper Table 7 k-NN (None: not in Table 7))
ABLATIONS: dict[str, tuple[str, dict, float | None]] = {
    "dino": ("DINO (same short budget)", {}, 72.8),
    "no_momentum": ("no momentum teacher (teacher = student)", {"momentum_teacher_on": False}, 0.1),
    "no_multicrop": ("no multi-crop (2 global views)", {"multi_crop": False}, 67.9),
    "mse": ("MSE instead of cross-entropy", {"loss": "mse"}, 52.6),
    "no_centering": ("no centering (sharpening only)", {"centering": False}, None),
    "no_sharpening": ("no sharpening (centering only)", {"sharpening": False}, None),
}


def run_ablations(d: DINOData, cfg: DINOConfig, epochs: int, seed: int = 0, device=None, force: bool = False,
                  names: Sequence[str] | None = None, log: Callable[[str], Any] | None = print,
                  evaluate: bool = True, threshold: float = 0.6,
                  batch_size: int | None = None) -> dict[str, dict[str, Any]]:
    """Short DINO runs with one component switched off (``ABLATIONS``), each cached. Returns per
    name ``{"model", "history", "eval", "seconds", "from_cache"}``; the collapse shows in
    ``history`` (teacher entropy per step: ``log K`` = uniform collapse, 0 = one dimension).
    ``batch_size`` (default: the main run's) gives short runs more steps; the warm-up is cut to
    30% of the run."""
    out = {}
    bs = batch_size or cfg.batch_size
    for name in names or ABLATIONS:
        label, changes, _ = ABLATIONS[name]
        c = cfg.replace(epochs=epochs, batch_size=bs, warmup_epochs=min(cfg.warmup_epochs, 0.3 * epochs), **changes)
        model, info = train_backbone(d.world, c, seed=seed, device=device, force=force,
                                     name=f"dino-ablation-{name}", log=None, data=d)
        ev = evaluate_backbone(model, d, threshold, linear=False) if evaluate else {}
        out[name] = {"model": model, "history": info.history, "eval": ev, "seconds": info.train_seconds,
                     "from_cache": info.from_cache, "label": label}
        if log is not None:
            h = info.history.epochs[-1]
            log(f"{name:>14s}: k-NN {ev.get('knn', float('nan')):5.1f}% | Jaccard {ev.get('jaccard_mean', float('nan')):5.1f}"
                f" | final H(P_t) {h['teacher_entropy']:.2f} (log K = {math.log(c.out_dim):.2f}) | "
                f"{'cache' if info.from_cache else f'{info.train_seconds:.0f}s'}")
    return out


# ----------------------------------------------------------------------------------------------
# Real photos


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry", "coins")


def photos(size: int = 224, names: Sequence[str] = ("astronaut", "chelsea", "coffee", "rocket")) -> torch.Tensor:
    """scikit-image's sample photos as uint8 (N, 3, size, size): shorter side resized, centre crop."""
    import skimage.data as skd

    out = []
    for n in names:
        a = getattr(skd, n)()
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        t = torch.from_numpy(np.ascontiguousarray(a[..., :3])).permute(2, 0, 1)
        out.append(_resize_center(t, size))
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------
# Figures


def plot_training(history: train.History, log_k: float | None = None):
    """DINO's loss, the teacher's entropy H(P_t) and KL(P_t || P_s) per step, and the lr."""
    import matplotlib.pyplot as plt

    s = history.steps
    fig, ax = plt.subplots(1, 4, figsize=(15, 3.2))
    ax[0].plot(s["step"], s["loss"], lw=0.8)
    ax[0].set(title="loss H(P_t, P_s)", xlabel="step")
    ax[1].plot(s["step"], s["teacher_entropy"], lw=0.8, label="per image H(P_t)")
    ax[1].plot(s["step"], s["marginal_entropy"], lw=0.8, label="of the batch mean")
    if log_k:
        ax[1].axhline(log_k, color="k", ls=":", lw=1, label="log K (uniform)")
    ax[1].set(title="teacher entropy (nats)", xlabel="step")
    ax[1].legend(fontsize=7)
    ax[2].plot(s["step"], s["kl"], lw=0.8)
    ax[2].set(title="KL(P_t || P_s)", xlabel="step")
    ax[3].plot(s["step"], s["lr"])
    ax[3].set(title="learning rate", xlabel="step")
    fig.tight_layout()
    return fig


def plot_collapse(runs: Mapping[str, Mapping[str, Any]], log_k: float):
    """Paper Fig. 7 at our scale: the teacher's entropy and KL(P_t || P_s) per step for every
    ablation. Collapse: KL -> 0 with H(P_t) -> log K (uniform) or -> 0 (one dimension)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 3.6))
    for name, r in runs.items():
        s = r["history"].steps
        k = max(1, len(s["step"]) // 40)
        sm = lambda v: np.convolve(v, np.ones(k) / k, mode="valid")  # noqa: E731
        st = s["step"][k - 1:]
        ax[0].plot(st, sm(s["teacher_entropy"]), label=name)
        ax[1].plot(st, sm(s["marginal_entropy"]), label=name)
        ax[2].plot(st, sm(s["kl"]), label=name)
    for a in ax[:2]:
        a.axhline(log_k, color="k", ls=":", lw=1)
    ax[0].set(title="H(P_t) per image (log K dotted)", xlabel="step", ylabel="nats")
    ax[1].set(title="H(mean P_t): how many dims are used", xlabel="step")
    ax[2].set(title="KL(P_t || P_s)", xlabel="step")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _show(ax, img, title=None):
    from .viz import to_image

    ax.imshow(to_image(img))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)


def plot_heads(models: Mapping[str, VisionTransformer], images: torch.Tensor, fg: torch.Tensor | None = None,
               threshold: float = 0.6, alpha: float = 0.6, size: float = 1.5):
    """One row per (image, model): the image, every head's last-layer class-token attention, the
    mean over heads and its ``threshold``-mass mask (cyan: the ground-truth object outline)."""
    import matplotlib.pyplot as plt

    from .viz import overlay

    maps = {n: cls_attention(m, images) for n, m in models.items()}
    heads = max(v.shape[1] for v in maps.values())
    rows = len(images) * len(models)
    fig, axes = plt.subplots(rows, heads + 3, figsize=(size * (heads + 3), size * rows), squeeze=False)
    r = 0
    for i in range(len(images)):
        for n, mp in maps.items():
            ax = axes[r]
            _show(ax[0], images[i], f"{n}" if r else f"{n}")
            ax[0].set_ylabel(n)
            for h in range(heads):
                if h < mp.shape[1]:
                    overlay(ax[1 + h], images[i], mp[i, h], alpha, title=f"head {h}" if r == 0 else None)
                else:
                    ax[1 + h].set_axis_off()
            mean = mp[i].mean(0)
            overlay(ax[heads + 1], images[i], mean, alpha, title="mean of heads" if r == 0 else None)
            mask = attention_masks(mp[i:i + 1], threshold, "mean")[0]
            gt = fg[i] if fg is not None else None
            j = f" J={100 * float(jaccard(mask[None], gt[None])[0]):.0f}" if gt is not None else ""
            overlay(ax[heads + 2], images[i], mean * mask, alpha, mask=mask,
                    title=(f"{threshold:.0%} mass{j}"))
            if gt is not None:
                from .viz import upsample
                g = upsample(gt.float(), tuple(images.shape[-2:])).numpy()
                if 0 < g.sum() < g.size:
                    ax[0].contour(g, levels=[0.5], colors="cyan", linewidths=0.8)
            ax[0].set_title(n, fontsize=8)
            r += 1
    fig.tight_layout()
    return fig


def plot_masks(models: Mapping[str, VisionTransformer], images: torch.Tensor, fg: torch.Tensor,
               threshold: float = 0.6, size: float = 1.6):
    """Columns: images with their object outline, then per model the thresholded mean-of-heads
    mask (white) against the ground truth (cyan outline), with the Jaccard of each image."""
    import matplotlib.pyplot as plt

    from .viz import to_image, upsample

    fig, axes = plt.subplots(len(models) + 1, len(images), figsize=(size * len(images), size * (len(models) + 1)),
                             squeeze=False)
    H, W = images.shape[-2:]
    for i in range(len(images)):
        _show(axes[0, i], images[i])
        g = fg[i].float().numpy()
        axes[0, i].contour(g, levels=[0.5], colors="cyan", linewidths=0.8)
        for r, (n, m) in enumerate(models.items(), start=1):
            mp = cls_attention(m, images[i:i + 1])
            mask = attention_masks(mp, threshold, "mean")
            j = 100 * float(jaccard(mask, fg[i:i + 1])[0])
            mk = upsample(mask[0], (H, W)).numpy()
            img = to_image(images[i]) * 0.35
            img[mk] = img[mk] / 0.35 * 0.6 + 0.4
            axes[r, i].imshow(img)
            axes[r, i].contour(g, levels=[0.5], colors="cyan", linewidths=0.8)
            axes[r, i].set_axis_off()
            axes[r, i].set_title(f"J = {j:.0f}", fontsize=8)
            if i == 0:
                axes[r, i].text(-0.1, 0.5, n, transform=axes[r, i].transAxes, rotation=90, va="center",
                                ha="right", fontsize=9)
    axes[0, 0].text(-0.1, 0.5, "image + objects", transform=axes[0, 0].transAxes, rotation=90, va="center",
                    ha="right", fontsize=9)
    fig.tight_layout()
    return fig


def plot_jaccard(evals: Mapping[str, Mapping[str, Any]], threshold: float = 0.6):
    """Left: histogram of the per-image Jaccard of the ``threshold``-mass mask (mean of heads) per
    model; right: the Jaccard of every head per model (outlined: the head chosen on val). Heads
    are whole numbers on the x axis, one tick per head."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(1, 2, figsize=(12, 3.4))
    bins = np.linspace(0, 1, 21)
    for n, e in evals.items():
        ax[0].hist(np.asarray(e["jaccard_per_image"]), bins=bins, alpha=0.5,
                   label=f"{n} (mean {e['jaccard_mean']:.1f})")
    ax[0].set(xlabel=f"Jaccard of the {threshold:.0%}-mass mask (mean of heads)", ylabel="images")
    ax[0].yaxis.set_major_locator(MaxNLocator(integer=True))
    ax[0].legend(fontsize=8)
    w = 0.8 / max(1, len(evals))
    n_heads = max(len(e["jaccard_per_head"]) for e in evals.values())
    for k, (n, e) in enumerate(evals.items()):
        hs = np.arange(len(e["jaccard_per_head"]))
        bars = ax[1].bar(hs + (k - (len(evals) - 1) / 2) * w, e["jaccard_per_head"], w, label=n)
        best = e.get("best_head")
        if best is not None:
            bars[int(best)].set_edgecolor("k")
            bars[int(best)].set_linewidth(1.5)
    ax[1].set_xticks(np.arange(n_heads), [str(h) for h in range(n_heads)])
    ax[1].set(xlabel="head", ylabel="Jaccard (%)", title="per head (outlined: chosen on val)")
    ax[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # off the bars
    fig.tight_layout()
    return fig


def plot_photo_attention(model: VisionTransformer, names: Sequence[str] = ("astronaut", "chelsea", "coffee", "rocket"),
                         size: int | None = None, display: int = 448, threshold: float = 0.6, alpha: float = 0.55,
                         heads: bool = True, panel: float = 2.3, title: str | None = None):
    """The last layer's class-token attention on scikit-image photos. One row per photo, labelled
    with its name: the photo at ``display`` px (what a person sees), the mean of the heads, its
    ``threshold``-mass mask and (``heads``) every head, each map upsampled (bilinear) onto the photo.
    The model sees the same centre crop at ``size`` px (default: its training size, at least 64)."""
    import matplotlib.pyplot as plt

    from .viz import overlay

    size = int(size or max(64, int(model.img_size[0])))
    p = int(model.patch_size[0])
    size = max(p, size // p * p)
    small = photos(size, names)
    big = photos(display, names).float() / 255  # float in [0, 1] for the drawing
    maps = cls_attention(model, small)  # (n, heads, h, w)
    n_heads = maps.shape[1] if heads else 0
    cols = 3 + n_heads
    fig, axes = plt.subplots(len(names), cols, figsize=(panel * cols, panel * len(names) + 0.4), squeeze=False)
    for i, name in enumerate(names):
        ax = axes[i]
        overlay(ax[0], big[i])
        ax[0].set_title(name, fontsize=10, fontweight="bold")
        mean = maps[i].mean(0)
        overlay(ax[1], big[i], mean, alpha, title="mean of heads" if i == 0 else None)
        mask = attention_masks(maps[i:i + 1], threshold, "mean")[0]
        overlay(ax[2], big[i], mean * mask, alpha, mask=mask, title=f"{threshold:.0%} of the mass" if i == 0 else None)
        for h in range(n_heads):
            overlay(ax[3 + h], big[i], maps[i, h], alpha, title=f"head {h}" if i == 0 else None)
    gh, gw = maps.shape[-2:]
    fig.suptitle(title or f"last-layer [CLS] attention: the model sees {size} px ({gh}x{gw} patches of {p} px); "
                 f"maps upsampled onto the {display} px photo", fontsize=10)
    fig.tight_layout()
    return fig


def explorer_figure(models: Mapping[str, VisionTransformer], images: torch.Tensor, fg: torch.Tensor | None,
                    image: int = 0, model: str | None = None, layer: int = -1, head: int | str = "mean",
                    threshold: float = 0.6, opacity: float = 0.6):
    """The widget's figure: one image, one model, one layer, one head (or their mean / all of
    them), the raw map and the ``threshold``-mass mask; compare with every model on the right."""
    import matplotlib.pyplot as plt

    from .viz import overlay

    model = model or next(iter(models))
    x = images[image:image + 1]
    mp = cls_attention(models[model], x, layer=layer)[0]  # (heads, h, w)
    gt = fg[image] if fg is not None else None
    if head == "all":
        n = mp.shape[0]
        fig, axes = plt.subplots(2, n, figsize=(2.1 * n, 4.4), squeeze=False)
        for h in range(n):
            overlay(axes[0, h], x[0], mp[h], opacity, title=f"{model}: head {h}")
            mask = attention_masks(mp[None], threshold, h)[0] if threshold else None
            heat = mp[h] * mask if mask is not None else mp[h]
            jt = f" J={100 * float(jaccard(mask[None], gt[None])[0]):.0f}" if (gt is not None and mask is not None) else ""
            overlay(axes[1, h], x[0], heat, opacity, mask=mask, title=f"{threshold:.0%} mass{jt}" if threshold else "")
        fig.tight_layout()
        return fig
    heat = mp.mean(0) if head == "mean" else mp[int(head)]
    others = list(models)
    fig, axes = plt.subplots(1, 2 + len(others), figsize=(2.4 * (2 + len(others)), 2.8))
    _show(axes[0], x[0], f"image {image}")
    if gt is not None:
        axes[0].contour(gt.float().numpy(), levels=[0.5], colors="cyan", linewidths=0.8)
    mask = mass_mask = None
    if threshold:
        from .viz import mass_threshold
        mass_mask = mass_threshold(heat, threshold)
    jt = f", J={100 * float(jaccard(mass_mask[None], gt[None])[0]):.0f}" if (gt is not None and mass_mask is not None) else ""
    overlay(axes[1], x[0], heat * mass_mask if mass_mask is not None else heat, opacity, mask=mass_mask,
            title=f"{model}, layer {layer}, {'mean' if head == 'mean' else f'head {head}'}{jt}")
    for ax, name in zip(axes[2:], others):
        m2 = cls_attention(models[name], x, layer=layer)[0]
        h2 = m2.mean(0) if head == "mean" or int(head) >= m2.shape[0] else m2[int(head)]
        overlay(ax, x[0], h2, opacity, title=name)
    del mask
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Paper vs. ours


def recorder(P: config.Params):
    """The notebook's results recorder; make it first, so its clock times the whole run."""
    from .results import Results

    return Results("06_dino", TITLE, PAPER_URL, P)


def record_results(P: config.Params, evals: Mapping[str, Mapping[str, Any]], ablations: Mapping[str, Any] | None,
                   num_classes: int, rec=None, margin: float = 2.0):
    """The "paper vs. ours" claims, judged by rules (results.py) and saved.

    ``evals``: :func:`evaluate_backbone` of ``"dino"``, ``"random"``, ``"supervised"``; ``ablations``:
    :func:`run_ablations`. Single runs have no noise estimate: a comparison must win by ``margin``
    points to count as reproduced (a smaller gap is inconclusive).
    """
    from .results import AtLeast, AtMost, Better

    rec = rec if rec is not None else recorder(P)
    J, T2, T7 = PAPER["jaccard_vit_s16"], PAPER["table2_vit_s"], PAPER["table7_knn"]
    chance = 100.0 / num_classes
    e = evals
    rec.add("knn_random", "a random ViT's k-NN (reference row)", paper=None, ours=e["random"]["knn"],
            rule=AtLeast(0.0), note=f"chance {chance:.1f}%")
    rec.add("knn_dino", "DINO's frozen features beat a random ViT's in weighted k-NN [Table 2: ViT-S 74.5 k-NN]",
            paper=T2["dino_knn"], ours=e["dino"]["knn"], rule=Better("knn_random", min_effect=margin))
    rec.add("linear_random", "a random ViT's linear probe (reference row)", paper=None, ours=e["random"]["linear"],
            rule=AtLeast(0.0))
    rec.add("linear_dino", "DINO's linear probe beats a random ViT's [Table 2: ViT-S 77.0 linear]",
            paper=T2["dino_linear"], ours=e["dino"]["linear"], rule=Better("linear_random", min_effect=margin))
    rec.add("knn_supervised", "the supervised ViT's k-NN (labels help; paper: supervised 79.8 > DINO 77.0 linear)",
            paper=T2["supervised"], ours=e["supervised"]["knn"], rule=Better("knn_dino", min_effect=0.0))
    rec.add("jaccard_random", "Jaccard of a random ViT's 60%-mass attention, mean of heads [Fig. 4 table: random 22.0]",
            paper=J["random"], ours=e["random"]["jaccard_mean"], rule=AtLeast(0.0))
    rec.add("jaccard_supervised", "Jaccard of the supervised ViT's attention, mean of heads [supervised 27.3]",
            paper=J["supervised"], ours=e["supervised"]["jaccard_mean"], rule=AtLeast(0.0))
    rec.add("jaccard_dino_vs_random", "DINO's best head (chosen on val) matches the objects better than a random "
            "ViT's best head [Fig. 4 table: 45.9 vs 22.0, best head of each model]", paper=J["dino"],
            ours=e["dino"]["jaccard_best_head"], rule=Better(e["random"]["jaccard_best_head"], min_effect=margin),
            note=f"random best head {e['random']['jaccard_best_head']:.1f}")
    rec.add("jaccard_dino_vs_supervised", "DINO's best head matches the objects better than the supervised ViT's "
            "best head [45.9 vs 27.3]", paper=J["dino"], ours=e["dino"]["jaccard_best_head"],
            rule=Better(e["supervised"]["jaccard_best_head"], min_effect=margin),
            note=f"supervised best head {e['supervised']['jaccard_best_head']:.1f}")
    rec.add("jaccard_mean_dino_vs_random", "stricter than the paper: the mean of DINO's heads beats the mean of a "
            "random ViT's heads", paper=None, ours=e["dino"]["jaccard_mean"],
            rule=Better("jaccard_random", min_effect=margin))
    rec.add("jaccard_mean_dino_vs_supervised", "stricter than the paper: the mean of DINO's heads beats the mean of "
            "the supervised ViT's heads", paper=None, ours=e["dino"]["jaccard_mean"],
            rule=Better("jaccard_supervised", min_effect=margin))
    if ablations:
        a = {n: r for n, r in ablations.items()}
        if "dino" in a:
            rec.add("abl_dino", "DINO at the ablations' short budget (reference) [Table 7 row 1: 72.8 k-NN]",
                    paper=T7["dino"], ours=a["dino"]["eval"]["knn"], rule=AtLeast(0.0))
        if "no_momentum" in a:
            rec.add("abl_no_momentum", "without the momentum teacher DINO collapses [Table 7 row 2: 0.1 k-NN]",
                    paper=T7["no_momentum"], ours=a["no_momentum"]["eval"]["knn"],
                    rule=Better("abl_dino", higher_is_better=False, min_effect=margin))
        if "no_multicrop" in a:
            rec.add("abl_no_multicrop", "without multi-crop k-NN drops [Table 7 row 4: 67.9 vs 72.8]",
                    paper=T7["no_multicrop"], ours=a["no_multicrop"]["eval"]["knn"],
                    rule=Better("abl_dino", higher_is_better=False, min_effect=margin))
        if "mse" in a:
            rec.add("abl_mse", "MSE instead of cross-entropy is worse [Table 7 row 5: 52.6 vs 72.8]",
                    paper=T7["mse"], ours=a["mse"]["eval"]["knn"],
                    rule=Better("abl_dino", higher_is_better=False, min_effect=margin))
        for name, what in (("no_centering", "one dimension dominates: entropy -> 0"),
                           ("no_sharpening", "uniform output: entropy -> log K")):
            if name in a:
                h = a[name]["history"].epochs[-1]
                ref = a["dino"]["history"].epochs[-1]["kl"] if "dino" in a else None
                rec.add(f"abl_{name}_kl", f"{ABLATIONS[name][0]} collapses ({what}): KL(P_t||P_s) -> 0 "
                        "[Fig. 7]", paper=0.0, ours=h["kl"], unit="nats",
                        rule=AtMost(0.1 * ref if ref else 0.05),
                        note=f"final H(P_t) {h['teacher_entropy']:.2f} nats; DINO's final KL {ref:.2f}" if ref else "")
    rec.save()
    return rec
