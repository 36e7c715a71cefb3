"""What :func:`fit` is told to do: ``TrainConfig``, the default criterion and Mixup/CutMix, the
optimizer and lr-schedule factories and the AMP settings.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR

SCHEDULES = ("cosine", "onecycle", "constant")

# TrainConfig fields that do not change what a run computes, so a resumed run may differ from the
# saved one in them and a cache key leaves them out: display (progress, live_plot), evaluation
# frequency (eval_every), where and whether to checkpoint (checkpoint_dir, resume) and speed
# switches (compile, channels_last). Every other field counts, epochs and max_steps too: they
# set the length of the lr schedule.
RESUME_IGNORES = frozenset({"progress", "live_plot", "eval_every", "checkpoint_dir", "resume",
                            "compile", "channels_last"})
AMP_MODES = ("auto", "bf16", "fp16", "none")


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass
class TrainConfig:
    """Everything :func:`fit` needs to know; the defaults train a small model sensibly.

    ``optimizer`` is a timm name: ``adamw``, ``sgd`` (Nesterov momentum), ``momentum``
    (classical momentum SGD), ``lamb``, ... ``sgd`` with ``momentum=0`` is plain SGD.
    ``schedule`` is stepped per optimizer step: ``cosine`` (linear warm-up for ``warmup_epochs``,
    then cosine down to ``min_lr``), ``onecycle`` (torch ``OneCycleLR``, rising for
    ``warmup_epochs`` -- 30 % of the run when 0 -- then annealing to ``min_lr``) or ``constant``
    (linear warm-up, then the optimizer's own lr, per parameter group).
    ``amp``: ``auto`` = bf16 on CUDA when supported, fp16 + GradScaler on older CUDA, off on
    CPU/MPS; ``bf16`` also works on CPU; ``fp16`` needs CUDA.
    ``ema_decay``: keep an exponential moving average of the weights (``ModelEmaV3``);
    ``ema_warmup`` ramps the decay up over the first steps.
    ``mixup``/``cutmix`` are the Beta alphas of timm's ``Mixup`` (0 = off) and need
    ``num_classes`` and an even batch size.
    ``live_plot``: redraw a loss plot in the notebook every that many steps (0 = off);
    ``"auto"`` (default): on in an interactive notebook when ``progress`` is on, off where
    ``viz.headless()`` (``COURSE_HEADLESS=1``, the Agg backend, no kernel), redrawn every
    ``total_steps // 40`` steps (at least 10) and at most once per second (cheap).
    ``checkpoint_dir``: write ``last.pt`` there after every epoch; ``resume`` continues from it.
    ``last.pt`` stores this config and ``fit`` refuses (``ValueError`` naming the file and the
    differing fields) to resume a run whose config, ``len(train_loader)`` or parameter shapes
    differ; display, checkpoint and speed settings (``progress``, ``live_plot``, ``eval_every``,
    ``checkpoint_dir``, ``resume``, ``compile``, ``channels_last``: ``RESUME_IGNORES``) may change.
    ``epochs`` and ``max_steps`` count (they set the schedule's length): to train longer, start a
    new run. A damaged ``last.pt`` raises ``DamagedFileError`` naming it.
    ``max_steps``: stop after that many optimizer steps (smoke runs); the schedule spans them.
    ``skip_nonfinite``: a micro-batch whose loss is NaN or infinite is not back-propagated (it is
    counted in the epoch's ``skipped_steps``); a step whose whole group was skipped still counts
    and advances the schedule. Off by default: a NaN then propagates and shows.
    """

    epochs: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr: float = 1e-6
    amp: str = "auto"
    grad_clip: float | None = None
    accum_steps: int = 1
    ema_decay: float | None = None
    ema_warmup: bool = False
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    label_smoothing: float = 0.0
    num_classes: int | None = None
    channels_last: bool = False
    compile: bool = False
    progress: bool = True
    live_plot: int | str = "auto"
    eval_every: int = 1
    checkpoint_dir: str | os.PathLike | None = None
    resume: bool = False
    seed: int | None = 0
    max_steps: int | None = None
    skip_nonfinite: bool = False

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; allowed: {', '.join(SCHEDULES)}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp={self.amp!r}; allowed: {', '.join(AMP_MODES)}")
        if self.accum_steps < 1:
            raise ValueError(f"accum_steps={self.accum_steps}; must be >= 1")
        if isinstance(self.live_plot, str) and self.live_plot != "auto":
            raise ValueError(f"live_plot={self.live_plot!r}; allowed: 'auto' or a number of steps")
        if self.uses_mixup and not self.num_classes:
            raise ValueError("mixup/cutmix need num_classes")
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("resume=True needs a checkpoint_dir")

    @property
    def uses_mixup(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.mixup_prob > 0


# ---------------------------------------------------------------------------------------------
# losses


class ClassificationLoss(nn.Module):
    """Adapts a ``loss(logits, targets)`` to the course's ``criterion(inputs, outputs, targets)``.

    When the model returns a tuple (e.g. DeiT's class and distillation heads during training),
    the first element is the class prediction used here.
    """

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, inputs: torch.Tensor, outputs, targets: torch.Tensor) -> torch.Tensor:
        logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        return self.loss(logits, targets)


def default_criterion(cfg: TrainConfig) -> ClassificationLoss:
    """Soft-target cross-entropy when Mixup/CutMix make soft labels, else CE with smoothing."""
    if cfg.uses_mixup:
        return ClassificationLoss(SoftTargetCrossEntropy())  # smoothing is done by Mixup
    return ClassificationLoss(nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing))


def _make_mixup(cfg: TrainConfig) -> Mixup | None:
    if not cfg.uses_mixup:
        return None
    return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                 label_smoothing=cfg.label_smoothing, num_classes=cfg.num_classes)


def _split_loss(result) -> tuple[torch.Tensor, dict[str, Any]]:
    """A criterion returns ``loss`` or ``(loss, {name: scalar})``."""
    if isinstance(result, tuple):
        loss, extras = result
        return loss, dict(extras)
    return result, {}


def _as_float(x) -> float:
    return float(x.detach().float().item()) if torch.is_tensor(x) else float(x)


# ---------------------------------------------------------------------------------------------
# optimizer, schedule, precision


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    name = cfg.optimizer.lower()
    if name == "sgd" and cfg.momentum == 0:
        name = "momentum"  # timm's 'sgd' is Nesterov, which needs momentum > 0; this is plain SGD
    return create_optimizer_v2(model, opt=name, lr=cfg.lr, weight_decay=cfg.weight_decay,
                               momentum=cfg.momentum)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int,
                   warmup_steps: int):
    """The lr schedule over ``total_steps`` optimizer steps (``fit`` advances it after each)."""
    total_steps = max(1, total_steps)
    warmup_steps = min(max(0, warmup_steps), total_steps - 1)
    if cfg.schedule == "onecycle":
        pct_start = warmup_steps / total_steps if warmup_steps else 0.3
        start_lr = cfg.lr / 25
        final_div = start_lr / cfg.min_lr if cfg.min_lr > 0 else 1e4
        return OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=pct_start,
                          div_factor=25, final_div_factor=final_div, cycle_momentum=False)
    if cfg.schedule == "constant":
        # the same warm-up (step s uses lr*(s+1)/(W+1)), then each parameter group's own lr
        return LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup_steps + 1)))
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total_steps - warmup_steps),
        lr_min=cfg.min_lr,
        warmup_t=warmup_steps,
        warmup_lr_init=cfg.lr / (warmup_steps + 1),  # step s of the warm-up uses lr*(s+1)/(W+1)
        warmup_prefix=True,
        t_in_epochs=False,
    )


def _advance_scheduler(scheduler, step: int) -> None:
    """Set the lr for optimizer step number ``step`` (0-based) of the run."""
    if isinstance(scheduler, CosineLRScheduler):
        scheduler.step_update(num_updates=step)
    else:
        scheduler.step()


def amp_settings(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use GradScaler)`` for an ``amp`` mode on ``device``."""
    device = torch.device(device)
    if amp == "auto":
        if device.type != "cuda":
            return None, False
        return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)
    if amp == "bf16":
        return torch.bfloat16, False
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError("amp='fp16' needs CUDA; use amp='bf16' (works on CPU) or 'none'")
        return torch.float16, True
    if amp == "none":
        return None, False
    raise ValueError(f"amp={amp!r}; allowed: {', '.join(AMP_MODES)}")


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
