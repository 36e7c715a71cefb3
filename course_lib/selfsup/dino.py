"""DINO's self-distillation objective (Caron et al. 2021, "Emerging Properties in
Self-Supervised Vision Transformers", arXiv 2104.14294): the recipe (:class:`DINOConfig`), the
projection head (:class:`DINOHead`), backbone + head over a list of crops (:class:`MultiCropNet`)
and the loss with centering and sharpening (:class:`DINOLoss`, eq. 1-4).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.models.vit import VisionTransformer

__all__ = ["ARCHS", "LOSSES", "DINOConfig", "DINOHead", "MultiCropNet", "DINOLoss"]

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


# fields added after the course's models were cached, with the default that reproduces them
_LATER_FIELDS: dict[str, Any] = {"hue_jitter": 0.1}


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
    hue_jitter: float = 0.1          # the largest hue turn (fraction of the circle; 0.5 = any hue)
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
        if not 0 <= self.hue_jitter <= 0.5:
            raise ValueError(f"hue_jitter={self.hue_jitter}; allowed: 0 to 0.5 (a half turn reaches every hue)")
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

    def key(self) -> dict[str, Any]:
        """The recipe for a cache key: every field, except the ones added after models were
        cached (:data:`_LATER_FIELDS`) while they keep their default, so those models stay valid."""
        d = dataclasses.asdict(self)
        for name, default in _LATER_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d


# ----------------------------------------------------------------------------------------------
# The head and the multi-crop network


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
            feats.append(self.backbone.forward_features(torch.cat(list(crops[start:end])), any_size=True)[:, 0])
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
