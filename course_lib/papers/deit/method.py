"""DeiT's contribution: distillation through attention (Sec. 4), the losses of the paper.

* :func:`soft_distillation_loss`: the usual (soft) distillation term, ``τ² KL`` with the official
  reduction (÷ ``B * C``), Sec. 4 "Soft distillation";
* :func:`hard_distillation_loss`: ``CE(ψ(Z_s), y_t)`` with ``y_t = argmax_c Z_t(c)``, Sec. 4
  "Hard-label distillation";
* :class:`DistillationLoss`: the whole objective as a ``train.fit`` criterion, which routes the
  class head to the label and the distillation-token head to the teacher (Sec. 4
  "Distillation token"; the token itself is ``VisionTransformer(distilled=True)`` in
  ``course_lib/models/vit.py``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["soft_distillation_loss", "hard_distillation_loss", "DistillationLoss"]


# ----------------------------------------------------------------------------------------------
# The losses


def soft_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                           tau: float = 1.0) -> torch.Tensor:
    """``τ² KL(ψ(Z_t/τ) || ψ(Z_s/τ))`` with the official reduction: sum over batch and classes,
    divided by ``B * C``. (The paper writes KL(ψ(Z_s/τ), ψ(Z_t/τ)); the code and ours take the
    teacher distribution as the target.)"""
    log_s = F.log_softmax(student_logits.float() / tau, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / tau, dim=1)
    kl = F.kl_div(log_s, log_t, reduction="sum", log_target=True)
    return kl * (tau * tau) / student_logits.numel()


def hard_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``CE(ψ(Z_s), y_t)`` with the teacher's hard decision ``y_t = argmax_c Z_t(c)``."""
    return F.cross_entropy(student_logits, teacher_logits.argmax(dim=1))


class DistillationLoss(nn.Module):
    """The full DeiT objective as a ``train.fit`` criterion ``(inputs, outputs, targets)``.

    ``kind``: ``"none"`` (plain supervised), ``"soft"`` or ``"hard"``. With a distillation token
    the model returns ``(class_logits, dist_logits)``: the base loss goes to the class head and
    the distillation loss to the distillation head. Without one, both terms use the class head.

    ``total = (1 - alpha) * base(class_logits, y) + alpha * distill(dist_logits, teacher(inputs))``.
    """

    def __init__(self, base: nn.Module, teacher: nn.Module | None, kind: str = "hard",
                 alpha: float = 0.5, tau: float = 1.0):
        super().__init__()
        if kind not in ("none", "soft", "hard"):
            raise ValueError(f"kind={kind!r}: allowed 'none', 'soft', 'hard'")
        if kind != "none" and teacher is None:
            raise ValueError(f"kind={kind!r} needs a teacher")
        self.base, self.kind, self.alpha, self.tau = base, kind, alpha, tau
        self.teacher = teacher
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)

    def forward(self, inputs: torch.Tensor, outputs, targets: torch.Tensor):
        cls_out, dist_out = outputs if isinstance(outputs, (tuple, list)) else (outputs, outputs)
        base = self.base(cls_out, targets)
        if self.kind == "none":
            return base
        self.teacher.eval()  # the teacher is never trained and never in train mode
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        if self.kind == "soft":
            distill = soft_distillation_loss(dist_out, teacher_logits, self.tau)
        else:
            distill = hard_distillation_loss(dist_out, teacher_logits)
        loss = (1 - self.alpha) * base + self.alpha * distill
        return loss, {"base": base.detach(), "distill": distill.detach()}
