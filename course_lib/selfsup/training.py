"""DINO's training (Caron et al. 2021, Sec. 3.1-3.2 and Appendix): the schedules, the
optimisation helpers of the official code, the momentum teacher and the loop
(:func:`train_dino`); the recipes per profile (:func:`dino_config`), the world it pretrains on
(:func:`world_config`) and the cached backbone (:func:`train_backbone`, :func:`study_backbone`).
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from course_lib import config, train
from course_lib.models.vit import VisionTransformer
from course_lib.selfsup.augment import MultiCropAugment
from course_lib.selfsup.backbone import IMAGENET_MEAN, IMAGENET_STD, build_backbone
from course_lib.selfsup.dino import DINOConfig, DINOHead, DINOLoss, MultiCropNet

__all__ = ["CODE_VERSION", "cosine_schedule", "param_groups", "clip_gradients", "ema_update",
           "cancel_last_layer_gradients", "train_dino", "world_config", "dino_config", "train_backbone",
           "study_backbone"]

# bump when a change of course_lib.selfsup (or of course_lib.papers.dino) changes what a cached
# model would be
CODE_VERSION = 1


# ----------------------------------------------------------------------------------------------
# Schedules and optimisation helpers


def cosine_schedule(base: float, final: float, epochs: int, niter_per_ep: int, warmup_epochs: float = 0,
                    start_warmup_value: float = 0.0) -> np.ndarray:
    """One value per iteration: linear warm-up from ``start_warmup_value`` to ``base`` over
    ``warmup_epochs``, then a cosine from ``base`` to ``final`` (official ``cosine_scheduler``).

    Why not ``train.fit``'s schedule (timm's ``CosineLRScheduler``, used by every other loop):
    DINO's own loop sets three quantities per iteration from such arrays, the lr, the weight
    decay (0.04 -> 0.4) and the teacher momentum (0.996 -> 1, part of the method), and its warm-up
    is the official ``linspace`` from 0."""
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

    Why its own loop and not ``train.fit``: the loop IS the paper's idea. Each step runs two
    networks on different views (the teacher only on the 2 global crops, the student on all),
    updates the centre after the loss (eq. 4), cancels the last layer's gradients in the first
    epoch, clips per parameter, and then moves the teacher towards the student
    (``θ_t <- λ θ_t + (1 - λ) θ_s``, :func:`ema_update`) with ``λ``, ``τ_t``, the lr and the
    weight decay all on their own schedules. ``train.fit`` trains one network on labelled
    batches; its EMA is an optional evaluation copy, not a teacher that produces the targets.
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
# Profiles: the course's DINO world and recipe (notebook 11's backbone; notebook 06 changes the patch size)


def world_config(profile: str = "study", **overrides):
    """The world the course's DINO pretrains on (notebooks 06 and 11): several objects of ``num_classes`` shapes over two kinds
    of "stuff" (real textures), so that images have objects to find and STEGO (notebook 11) has
    semantic classes (``WorldData.semantic``). Calibrated in ``benchmarks/calibrate_dino.py``."""
    from course_lib.world import for_profile

    study = dict(num_images=4000, eval_images=1000, image_size=32, num_classes=6, objects=(1, 2),
                 scale=(0.5, 0.8), occlusion=0.0, clutter=0, bg_contrast=0.1, split_bg=0.5, seed=0)
    return for_profile(profile, study, {"smoke": dict(num_images=512, eval_images=256)}, **overrides)


def dino_config(profile: str = "study", **overrides) -> DINOConfig:
    """DINO's recipe per profile: ``study`` (calibrated for about 4-5 minutes on 2 CPU cores),
    ``smoke`` (a few steps), ``paper`` (ViT-S/16 at 224 px, the official recipe for a GPU)."""
    return config.for_profile(profile, DINOConfig, DINO_PROFILES, **overrides)


# What each profile changes in DINOConfig's defaults (config.for_profile).
DINO_PROFILES = {
    "paper": dict(model="vit_small_patch16", image_size=224, local_crops=10, local_size=96,
                  global_scale=(0.25, 1.0), local_scale=(0.05, 0.25), out_dim=65536, hidden_dim=2048,
                  bottleneck=256, epochs=100, batch_size=256, lr=5e-4, warmup_epochs=10,
                  teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=30,
                  mean=IMAGENET_MEAN, std=IMAGENET_STD, norm_last_layer=False),
    "smoke": dict(epochs=1, batch_size=32, local_crops=2, out_dim=256, hidden_dim=256, bottleneck=64,
                  max_steps=4, warmup_epochs=0.1),
    # momentum 0.98 (not 0.996): with ~370 steps an EMA of time constant 250 steps leaves the
    # teacher near its random init; K = 256 and 6 local crops (docs/calibration.md, 06 DINO).
    "study": dict(model="course_small", local_crops=6, epochs=6, batch_size=64, lr=2e-3, warmup_epochs=1.0,
                  momentum_teacher=0.98, out_dim=256),
}


def train_backbone(world_cfg, cfg: DINOConfig, seed: int = 0, device=None, force: bool = False,
                   data_root=None, name: str = "dino", log: Callable[[str], Any] | None = print,
                   data: Any = None):
    """Pretrain DINO on the train split of ``world_cfg`` (or on ``data.train_images``) once and
    cache the teacher backbone (``train.cached_model``; the key is the data, the recipe and the
    seed). Returns ``(backbone in eval mode, CacheInfo)``; ``info.history`` is the DINO history.
    ``data``: anything with ``train_images`` (uint8) and a cache ``key`` dict, e.g. notebook 06's
    ``course_lib.papers.dino.DINOData``."""
    device = torch.device(device) if device is not None else config.pick_device("auto")
    data_key = data.key if data is not None else {"world": world_cfg.key("train")}
    key = {**data_key, "dino": cfg.key(), "seed": seed, "code": CODE_VERSION}

    def build():
        return build_backbone(cfg).to(device)

    def fit(model):
        if data is not None:
            images = data.train_images
        else:
            from course_lib.world import load_world
            images = load_world(world_cfg, "train", data_root).images
        teacher, hist = train_dino(images, cfg, device=device, seed=seed, log=log)
        model.load_state_dict(teacher.state_dict())
        return hist

    model, info = train.cached_model(name, key, build, fit, force=force)
    model.eval()
    model.pretrained_cfg = {"mean": cfg.mean, "std": cfg.std}
    return model, info


def study_backbone(profile: str = "study", device=None):
    """The course's DINO ViT for ``profile`` (the zoo's ``dino_vit``) (trained on that profile's world and cached; trained
    now if missing) and its :class:`~course_lib.world.WorldConfig`. Notebook 11 (STEGO) uses it as
    its frozen backbone. ``model(x)`` gives class-token features, ``model.forward_features(x, any_size=True)``
    every token; inputs are normalised with ``model.pretrained_cfg`` (:func:`normalize`)."""
    if profile == "paper":
        raise ValueError("the paper profile uses official DINO weights: load_dino_weights(path)")
    wcfg, cfg = world_config(profile), dino_config(profile)
    model, _ = train_backbone(wcfg, cfg, seed=0, device=device, log=None)
    return model, wcfg
