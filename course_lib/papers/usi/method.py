"""USI's contribution: the one loss (eq. 2) and the one recipe (Table 1) for every backbone.

* :func:`kd_kl`: ``KL(p_t(τ) ‖ p_s(τ))``, ``reduction="batchmean"``, no ``τ²`` (Sec. 3.6.2);
* :func:`soft_cross_entropy`: CE against a mixup/cutmix probability target;
* :class:`USILoss`: eq. 2, ``CE + α_kd · KL`` (``α_kd = ∞``: KD only, Table 6), as a
  ``train.fit`` criterion;
* :func:`recipe`: Table 1 at our scale, the same for every student.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from course_lib import config, train

__all__ = ["kd_kl", "soft_cross_entropy", "USILoss", "recipe"]


# ----------------------------------------------------------------------------------------------
# The loss (eq. 2)


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """``KL(p_t(τ) ‖ p_s(τ))`` averaged over the batch (``reduction="batchmean"``), **no τ²**.

    ``p(τ) = softmax(z / τ)``. This is USI's KD term; DeiT's soft loss (``papers/deit/method.py``) differs in
    the reduction (÷ B·C) and the τ² factor."""
    log_s = F.log_softmax(student_logits.float() / tau, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / tau, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a (mixup) probability target; integer targets are one-hot."""
    if target.dim() == 1:
        return F.cross_entropy(logits.float(), target)
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


class USILoss(nn.Module):
    """Eq. 2 as a ``train.fit`` criterion ``(inputs, outputs, targets)``.

    ``loss = CE(p_s, y) + α_kd · KL(p_t(τ) ‖ p_s(τ))``; ``teacher=None`` or ``alpha_kd=0`` is
    plain training (Table 6, first row); ``alpha_kd=math.inf`` keeps only the KD term (Table 6,
    "∞ (no CE loss)"), scaled as the official ``--use_kd_only_loss``:
    ``loss = kd_only_weight · KL`` (``kd_only_weight`` = the default α_kd, 5). ``targets`` may be
    class indices or mixup/cutmix probabilities.
    """

    def __init__(self, teacher: nn.Module | None, alpha_kd: float = 5.0, tau: float = 1.0,
                 kd_only_weight: float = 5.0):
        super().__init__()
        if alpha_kd < 0:
            raise ValueError(f"alpha_kd={alpha_kd}: must be >= 0 (math.inf: KD only)")
        if alpha_kd > 0 and teacher is None:
            raise ValueError("alpha_kd > 0 needs a teacher")
        if math.isinf(alpha_kd) and not 0 < kd_only_weight < math.inf:
            raise ValueError(f"kd_only_weight={kd_only_weight}: KD only (alpha_kd=inf) needs a finite "
                             "weight > 0 (official: the default alpha_kd, 5)")
        self.alpha_kd, self.tau, self.kd_only_weight = float(alpha_kd), float(tau), float(kd_only_weight)
        self.use_ce = not math.isinf(self.alpha_kd)
        self.teacher = teacher if alpha_kd > 0 else None
        if self.teacher is not None:
            self.teacher.eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)

    def forward(self, inputs: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor):
        ce = soft_cross_entropy(outputs, targets)
        if self.teacher is None:
            return ce
        self.teacher.eval()  # never trained, never in train mode (BN/dropout off)
        with torch.no_grad():
            t_logits = self.teacher(inputs)
        kd = kd_kl(outputs, t_logits, self.tau)
        loss = ce + self.alpha_kd * kd if self.use_ce else self.kd_only_weight * kd
        return loss, {"ce": ce.detach(), "kd": kd.detach()}


# ----------------------------------------------------------------------------------------------
# Training


def recipe(P: config.Params, num_classes: int, seed: int, epochs: int | None = None,
           lr: float | None = None, mixup: bool = True) -> train.TrainConfig:
    """USI's one recipe (Table 1) at our scale: the same for every student."""
    e = epochs or P.epochs
    return train.TrainConfig(
        epochs=e, lr=lr or P.lr, weight_decay=P.weight_decay, schedule="cosine",
        warmup_epochs=min(5.0, 0.25 * e), min_lr=1e-5, label_smoothing=0.0, grad_clip=1.0,
        mixup=P.mixup if mixup else 0.0, cutmix=P.cutmix if mixup else 0.0, num_classes=num_classes,
        seed=seed, progress=True, max_steps=P.max_steps or None)
