"""The one training loop of the course: ``fit``, ``evaluate``, ``predict`` and ``cached_model``.

Every notebook trains through :func:`fit`::

    cfg = TrainConfig(epochs=P.epochs, lr=5e-4, warmup_epochs=1, mixup=0.8, cutmix=1.0,
                      num_classes=10, ema_decay=0.999, checkpoint_dir=cache_dir() / "deit")
    history = fit(model, train_loader, cfg, eval_loader=val_loader, device=P.torch_device)
    history.as_dataframe(); history.plot()

What one step does (the order matters and is the same for every notebook):

1. batch to the device (``non_blocking``; ``channels_last`` when asked);
2. Mixup/CutMix (``timm.data.Mixup``) turn the labels into soft targets;
3. under autocast (bf16 on CPU/CUDA, fp16 on CUDA only): ``outputs = model(inputs)`` and
   ``loss = criterion(inputs, outputs, targets)`` -- the criterion sees the *mixed* inputs,
   so a distillation loss can run its teacher on exactly what the student saw (DeiT);
4. ``backward(loss / accum_steps)``; every ``accum_steps`` micro-batches one optimizer step:
   unscale (fp16), clip the gradient norm, step, advance the per-iteration lr schedule,
   update the EMA weights.

The plumbing comes from timm and torch: ``create_optimizer_v2`` (no weight decay on biases and
other 1-D parameters), ``CosineLRScheduler`` (warm-up + cosine) or ``OneCycleLR``,
``ModelEmaV3``, ``SoftTargetCrossEntropy``, ``DistributedDataParallel``.

Under ``torchrun`` (``WORLD_SIZE`` > 1) :func:`fit` joins the process group (gloo on CPU, nccl on
CUDA), wraps the model in ``DistributedDataParallel`` and lets only rank 0 show progress and
write checkpoints. Build the loaders with ``data.make_loader`` *after* calling
:func:`setup_distributed`, so that they get a ``DistributedSampler``.

Accuracies (``top1``, ``top5``) are percentages, as in the papers.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
import random
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import OneCycleLR
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm as tqdm_std

from . import __version__, paths
from .config import pick_device, seed_everything
from .data import dist_info
from .metrics import topk_accuracy

__all__ = [
    "TrainConfig", "History", "TrainState", "StopTraining", "fit", "evaluate", "predict",
    "default_criterion", "ClassificationLoss", "make_scheduler", "amp_settings",
    "setup_distributed", "cleanup_distributed", "is_main_process", "cached_model", "CacheInfo",
    "config_key", "LivePlot", "live_plot_every", "finish_bar", "load_cached_artifact",
    "DamagedFileError",
]

SCHEDULES = ("cosine", "onecycle", "constant")
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
    (linear warm-up, then ``lr``).
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
# history


@dataclass
class History:
    """What happened during :func:`fit`.

    ``epochs``: one dict per epoch with ``epoch``, ``train_loss``, ``lr`` (at the end of the
    epoch), ``time_s``, ``images_per_s`` (all processes together), ``eval_top1``/``eval_top5``/
    ``eval_loss`` when evaluated, ``ema_top1``/... for the EMA weights, and ``train_<name>`` for
    every extra scalar the criterion reported.
    ``steps``: columns ``step``, ``loss``, ``lr`` with one entry per optimizer step.
    ``ema_model``: the EMA copy of the model (when ``ema_decay`` was set), not saved.
    """

    epochs: list[dict[str, float]] = field(default_factory=list)
    steps: dict[str, list[float]] = field(
        default_factory=lambda: {"step": [], "loss": [], "lr": []}
    )
    ema_model: nn.Module | None = field(default=None, repr=False, compare=False)

    def as_dataframe(self):
        """The per-epoch records as a pandas DataFrame indexed by epoch."""
        import pandas as pd

        df = pd.DataFrame(self.epochs)
        return df.set_index("epoch") if "epoch" in df else df

    def last(self, key: str, default: float = float("nan")) -> float:
        """The most recent value of a per-epoch quantity (e.g. ``"eval_top1"``)."""
        for rec in reversed(self.epochs):
            if key in rec and rec[key] == rec[key]:  # skip NaN
                return rec[key]
        return default

    def to_dict(self) -> dict:
        return {"epochs": [dict(r) for r in self.epochs],
                "steps": {k: list(v) for k, v in self.steps.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(epochs=[dict(r) for r in d["epochs"]],
                   steps={k: list(v) for k, v in d["steps"].items()})

    def plot(self, axes=None):
        """Loss per step and per epoch, top-1 per epoch and the lr schedule; returns the figure."""
        import matplotlib.pyplot as plt

        if axes is None:
            fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
        else:
            fig = axes[0].figure
        ax_loss, ax_acc, ax_lr = axes
        s = self.steps
        if s["step"]:
            ax_loss.plot(s["step"], s["loss"], lw=0.6, alpha=0.4, label="train (step)")
        spe = _steps_at_epoch_end(self)
        ep_loss = [r.get("train_loss", float("nan")) for r in self.epochs]
        ax_loss.plot(spe, ep_loss, "o-", label="train (epoch)")
        if any("eval_loss" in r for r in self.epochs):
            ax_loss.plot(spe, [r.get("eval_loss", float("nan")) for r in self.epochs], "s-",
                         label="eval")
        ax_loss.set(xlabel="step", ylabel="loss", title="loss")
        ax_loss.legend(fontsize=8)
        epochs = [r["epoch"] for r in self.epochs]
        for key, label in (("eval_top1", "model"), ("ema_top1", "EMA")):
            if any(key in r for r in self.epochs):
                ax_acc.plot(epochs, [r.get(key, float("nan")) for r in self.epochs], "o-",
                            label=label)
        ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="eval accuracy")
        if ax_acc.lines:
            ax_acc.legend(fontsize=8)
        ax_lr.plot(s["step"], s["lr"])
        ax_lr.set(xlabel="step", ylabel="lr", title="learning rate")
        fig.tight_layout()
        return fig


def _steps_at_epoch_end(history: History) -> list[float]:
    return [r.get("step", float("nan")) for r in history.epochs]


@dataclass
class TrainState:
    """What a callback sees: ``callback(event, state)``, event ``"step_end"`` or ``"epoch_end"``.

    ``epoch`` counts from 1 (the epoch in progress or just finished); ``step`` is the number of
    optimizer steps done so far.
    """

    epoch: int
    step: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    history: History
    ema: ModelEmaV3 | None = None
    loss: float = float("nan")


class StopTraining(Exception):
    """Raise from a callback to end training cleanly (e.g. early stopping)."""


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
    # 'constant' is a cosine from lr to lr: the same warm-up, then a flat line
    lr_min = cfg.min_lr if cfg.schedule == "cosine" else cfg.lr
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total_steps - warmup_steps),
        lr_min=lr_min,
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


# ---------------------------------------------------------------------------------------------
# distributed


def setup_distributed(device: torch.device | str | None = None) -> torch.device:
    """Join the process group when started by ``torchrun``; return this process's device.

    Outside torchrun (``WORLD_SIZE`` unset or 1) nothing is initialised and the device is
    ``device`` or ``pick_device("auto")``. Under torchrun the backend is nccl for CUDA and gloo
    otherwise, and a CUDA process uses ``cuda:$LOCAL_RANK``. Calling it twice is harmless.
    """
    wanted = torch.device(device) if device is not None else None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and dist.is_available() and not dist.is_initialized():
        on_cuda = wanted.type == "cuda" if wanted is not None else torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if on_cuda else "gloo")
    if dist.is_available() and dist.is_initialized():
        on_cuda = wanted.type == "cuda" if wanted is not None else torch.cuda.is_available()
        if on_cuda:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local_rank)
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    return wanted if wanted is not None else pick_device("auto")


def cleanup_distributed() -> None:
    """Leave the process group (end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    return dist_info()[0] == 0


def _all_reduce_sum(values: Sequence[float], device: torch.device) -> list[float]:
    if dist_info()[1] == 1:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _barrier() -> None:
    if dist_info()[1] > 1:
        dist.barrier()


# ---------------------------------------------------------------------------------------------
# evaluation


def _mean_logits(outputs) -> torch.Tensor:
    """A tuple of logits (e.g. class + distillation head) is averaged, as DeiT does at test time."""
    if isinstance(outputs, (tuple, list)):
        return torch.stack([o.float() for o in outputs]).mean(0)
    return outputs.float()


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, device: torch.device | str | None = None,
            amp: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, targets)`` over the whole loader, on the CPU, in loader order.

    The model runs in eval mode (its training mode is restored afterwards); tuple outputs are
    averaged. Under DDP each process returns its own shard.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    dtype, _ = amp_settings(amp, device)
    was_training = model.training
    model.eval()
    all_logits, all_targets = [], []
    try:
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            with _autocast(device, dtype):
                logits = _mean_logits(model(images))
            all_logits.append(logits.float().cpu())
            all_targets.append(targets.cpu())
    finally:
        model.train(was_training)
    return torch.cat(all_logits), torch.cat(all_targets)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str | None = None,
             amp: str = "auto") -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean cross-entropy of ``model`` on ``loader``.

    Returns ``dict(top1=..., top5=..., loss=..., n=...)``. Tuple outputs are averaged. Under DDP,
    with a loader whose sampler is a ``DistributedSampler``, the numbers are summed over all
    processes (the sampler may repeat a few samples to make the shards equal).
    """
    device = torch.device(device) if device is not None else _model_device(model)
    dtype, _ = amp_settings(amp, device)
    was_training = model.training
    model.eval()
    correct1 = correct5 = loss_sum = n = 0.0
    try:
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            with _autocast(device, dtype):
                logits = _mean_logits(model(images))
            top1, top5 = topk_accuracy(logits, targets, topk=(1, 5))
            b = targets.shape[0]
            correct1 += top1 * b / 100
            correct5 += top5 * b / 100
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
            n += b
    finally:
        model.train(was_training)
    if isinstance(getattr(loader, "sampler", None), DistributedSampler):
        correct1, correct5, loss_sum, n = _all_reduce_sum([correct1, correct5, loss_sum, n], device)
    n = max(n, 1e-12)
    return {"top1": 100 * correct1 / n, "top5": 100 * correct5 / n, "loss": loss_sum / n,
            "n": int(round(n))}


# ---------------------------------------------------------------------------------------------
# checkpoints and random state


def _loader_generators(loader) -> list[torch.Generator]:
    """The torch generators that decide a loader's shuffling (to save them with a checkpoint)."""
    found = []
    for g in (getattr(loader, "generator", None),
              getattr(getattr(loader, "sampler", None), "generator", None)):
        if isinstance(g, torch.Generator) and all(g is not h for h in found):
            found.append(g)
    return found


def _rng_state(loader) -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": [g.get_state() for g in _loader_generators(loader)],
    }


def _set_rng_state(state: dict, loader) -> None:
    # generator states must be CPU ByteTensors; a checkpoint loaded with map_location=cuda has
    # moved them to the GPU
    random.setstate(_as_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    for g, s in zip(_loader_generators(loader), state["loader"]):
        g.set_state(s.cpu())


def _as_tuples(x):
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def _atomic_save(obj: Any, path: Path) -> None:
    """Write to a temporary file next to ``path`` and rename it: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load(path: Path, map_location="cpu") -> dict:
    # our files hold only tensors and plain python values, so the safe loader reads them
    return torch.load(path, map_location=map_location, weights_only=True)


class DamagedFileError(RuntimeError):
    """A checkpoint or cached artifact that exists but cannot be used: ``path`` and ``reason``."""

    def __init__(self, path: Path, reason: str, message: str | None = None):
        self.path, self.reason = Path(path), reason
        super().__init__(message or f"{path} is damaged: {reason}")


# what torch.load raises on a damaged file: a truncated zip ("PytorchStreamReader failed reading
# zip archive"), an empty file (EOFError), garbage (UnpicklingError), a broken record, ...
_LOAD_ERRORS = (RuntimeError, OSError, EOFError, ValueError, KeyError, TypeError, IndexError,
                AttributeError, pickle.UnpicklingError, zipfile.BadZipFile)


def _state_digest(state: dict) -> str:
    """sha256 of a state dict's names, dtypes, shapes and bytes (torch.load does not notice a
    flipped byte inside tensor data; this does)."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k]
        if torch.is_tensor(v):
            h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        else:
            h.update(f"{k}|{v!r}|".encode())
    return h.hexdigest()


def _load_checked(path: Path, map_location="cpu", required: Sequence[str] = ()) -> dict:
    """:func:`_load`, raising :class:`DamagedFileError` (naming ``path``) when the file cannot be
    read, is not a dict with the ``required`` keys, or fails its ``sha256`` (of ``state_dict``).
    A missing file, a permission error or running out of memory are raised as they are."""
    try:
        blob = _load(path, map_location)
    except (FileNotFoundError, PermissionError, torch.OutOfMemoryError):
        raise
    except _LOAD_ERRORS as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
        raise DamagedFileError(path, f"{type(e).__name__}: {first}") from e
    if not isinstance(blob, dict):
        raise DamagedFileError(path, f"holds a {type(blob).__name__}, not a dict")
    missing = [k for k in required if k not in blob]
    if missing:
        raise DamagedFileError(path, f"keys missing: {', '.join(missing)}")
    digest = blob.get("sha256")
    if digest is not None and digest != _state_digest(blob.get("state_dict") or {}):
        raise DamagedFileError(path, "checksum mismatch (the weights changed after saving)")
    return blob


def load_cached_artifact(path: str | os.PathLike, *, required: Sequence[str] = (),
                         map_location="cpu") -> dict | None:
    """Read a file of the artifact cache (``paths.cache_dir()``); ``None`` when it must be built.

    A missing file gives ``None``. A damaged one (torch cannot read it, e.g. truncated: "failed
    reading zip archive"; ``required`` keys missing; ``sha256`` of its ``state_dict`` wrong) is
    reported with a ``RuntimeWarning`` naming it, moved aside to ``<name>.corrupt`` (kept for a
    post-mortem, replaced by the next one) and ``None`` is returned, so the caller rebuilds it.
    The one place :func:`cached_model` (and so ``detection.cached_detector``) reads the cache.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        return _load_checked(path, map_location, required)
    except FileNotFoundError:  # another process moved it aside meanwhile
        return None
    except DamagedFileError as e:
        aside = path.with_name(path.name + ".corrupt")
        if is_main_process():
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, aside)
            warnings.warn(f"cached artifact {path} is damaged ({e.reason}); moved it to "
                          f"{aside.name} and rebuilding it", RuntimeWarning, stacklevel=2)
        return None


# ---------------------------------------------------------------------------------------------
# live plot


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


AUTO_LIVE_PLOT_DRAWS = 40  # live_plot="auto": about this many redraws per run


def live_plot_every(live_plot: int | str, total_steps: int, progress: bool = True) -> int:
    """The redraw interval (steps) ``fit`` uses for ``TrainConfig.live_plot``; 0 = no plot.

    A number is kept. ``"auto"``: 0 where ``viz.headless()`` (``COURSE_HEADLESS=1``, Agg, no
    kernel) or without ``progress``; else about :data:`AUTO_LIVE_PLOT_DRAWS` redraws per run,
    at least 10 steps apart.
    """
    if live_plot != "auto":
        return max(0, int(live_plot))
    from . import viz

    if not progress or viz.headless():
        return 0
    return max(10, math.ceil(total_steps / AUTO_LIVE_PLOT_DRAWS))


HEADLESS_BAR_SECONDS = 15.0  # a headless run prints its progress line at most this often


class _TextBar(tqdm_std):
    """A text bar whose postfix (loss, lr) waits for the next timed refresh, so a log gets one
    line per ``mininterval`` instead of one per step."""

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        super().set_postfix(ordered_dict, refresh=False, **kwargs)


def progress_bar(*args, **kwargs):
    """A tqdm progress bar: the notebook widget in a live notebook (``tqdm.auto``); plain text
    lines, at most one every :data:`HEADLESS_BAR_SECONDS`, where nobody sees widgets
    (``viz.headless()``: ``make run``, whose log shows a run's cell outputs, CI, scripts)."""
    from . import viz

    if viz.headless():
        kwargs.setdefault("mininterval", HEADLESS_BAR_SECONDS)
        kwargs.setdefault("ascii", True)
        return _TextBar(*args, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(*args, **kwargs)


def finish_bar(bar) -> None:
    """Close a tqdm bar whose loop ended normally, also early (``max_steps``, a callback's stop).

    ``tqdm.notebook`` paints a bar closed with ``n < total`` red (its sign of an error or an
    interrupt) and keeps it even with ``leave=False``; a run that stops early on purpose is no
    error, so the bar's total becomes what ran. Call ``bar.close()`` (or nothing: the bar's
    ``__del__``) on an exception, so a failed run stays red.
    """
    if not getattr(bar, "disable", False) and bar.total and bar.n < bar.total:
        bar.total = bar.n
        container = getattr(bar, "container", None)  # tqdm.notebook: the widget's maximum too
        if container is not None and bar.n > 0:
            try:
                container.children[1].max = bar.n
            except Exception:  # pragma: no cover - another widget layout
                pass
        bar.refresh()
    bar.close()


class LivePlot:
    """A loss plot that redraws in place in a notebook every ``every`` steps (and at most once
    per ``min_seconds``, except the forced redraw at the end of an epoch).

    Outside a Jupyter kernel (scripts, tests, CI without a kernel) it does nothing.
    """

    def __init__(self, every: int, enabled: bool | None = None, min_seconds: float = 0.0):
        self.every = every
        self.min_seconds = min_seconds
        self.enabled = every > 0 and (_in_notebook() if enabled is None else enabled)
        self.fig = self.ax = self._handle = None
        self._last = -math.inf

    def draw(self, history: History):
        """Draw the current losses on this plot's figure (made on first use) and return it."""
        if self.fig is None:
            import matplotlib.pyplot as plt

            self.fig, self.ax = plt.subplots(figsize=(6.5, 3))
            plt.close(self.fig)  # shown through the display handle, not by the backend
        ax = self.ax
        ax.clear()
        s = history.steps
        ax.plot(s["step"], s["loss"], lw=0.7, alpha=0.5, label="train (step)")
        if len(s["loss"]) >= 10:
            k = max(2, len(s["loss"]) // 20)
            smooth = np.convolve(s["loss"], np.ones(k) / k, mode="valid")
            ax.plot(s["step"][k - 1:], smooth, label=f"train (mean of {k})")
        if any("eval_loss" in r for r in history.epochs):
            ax.plot(_steps_at_epoch_end(history),
                    [r.get("eval_loss", float("nan")) for r in history.epochs], "s-", label="eval")
        ax.set(xlabel="step", ylabel="loss")
        ax.legend(fontsize=8, loc="upper right")
        self.fig.tight_layout()
        return self.fig

    def update(self, history: History, force: bool = False) -> None:
        if not self.enabled or not history.steps["step"]:
            return
        if not force and history.steps["step"][-1] % self.every:
            return
        now = time.perf_counter()
        if not force and now - self._last < self.min_seconds:
            return
        self._last = now
        fig = self.draw(history)
        from IPython.display import display

        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)


# ---------------------------------------------------------------------------------------------
# fit


_CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "ema", "epoch", "step",
                    "history", "rng")

# TrainConfig fields that do not change what a run computes, so a resumed run may differ from the
# saved one in them: display (progress, live_plot), evaluation frequency (eval_every), where and
# whether to checkpoint (checkpoint_dir, resume) and speed switches (compile, channels_last).
# Every other field counts, epochs and max_steps too: they set the length of the lr schedule.
RESUME_IGNORES = frozenset({"progress", "live_plot", "eval_every", "checkpoint_dir", "resume",
                            "compile", "channels_last"})


def _config_dict(cfg: TrainConfig) -> dict:
    """The TrainConfig as plain values (paths as strings), as checkpoints store it."""
    return {k: str(v) if isinstance(v, os.PathLike) else v for k, v in asdict(cfg).items()}


def _resume_differences(ckpt: dict, cfg: TrainConfig, net: nn.Module,
                        batches_per_epoch: int) -> list[str]:
    """How the run that wrote ``ckpt`` differs from this one (empty: same run)."""
    diffs = []
    saved, now = ckpt.get("config") or {}, _config_dict(cfg)
    for k in sorted((saved.keys() & now.keys()) - RESUME_IGNORES):
        if saved[k] != now[k]:
            diffs.append(f"{k}: {saved[k]!r} in the checkpoint, {now[k]!r} now")
    saved_n = ckpt.get("batches_per_epoch")
    if saved_n is not None and saved_n != batches_per_epoch:
        diffs.append(f"batches per epoch (len(train_loader)): {saved_n} in the checkpoint, "
                     f"{batches_per_epoch} now")
    theirs = {k: tuple(v.shape) for k, v in ckpt["model"].items() if torch.is_tensor(v)}
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items() if torch.is_tensor(v)}
    if theirs != ours:
        parts = [f"{k} {theirs[k]} in the checkpoint, {ours[k]} now"
                 for k in sorted(theirs.keys() & ours.keys()) if theirs[k] != ours[k]]
        parts += [f"{k} only in the checkpoint" for k in sorted(theirs.keys() - ours.keys())]
        parts += [f"{k} only in the model" for k in sorted(ours.keys() - theirs.keys())]
        more = f" (+{len(parts) - 4} more)" if len(parts) > 4 else ""
        diffs.append("model: " + "; ".join(parts[:4]) + more)
    return diffs


@dataclass
class _Run:
    """Everything a checkpoint saves and a resumed run restores."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    ema: ModelEmaV3 | None
    history: History
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed

    def save(self, path: Path, cfg: TrainConfig, loader) -> None:
        """Rank 0 writes ``path``; every process contributes its random state."""
        rngs = [_rng_state(loader)]
        world = dist_info()[1]
        if world > 1:
            mine, rngs = rngs[0], [None] * world
            dist.all_gather_object(rngs, mine)
        if is_main_process():
            _atomic_save({
                "model": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "ema": self.ema.module.state_dict() if self.ema is not None else None,
                "epoch": self.epoch,
                "step": self.step,
                "history": self.history.to_dict(),
                "rng": rngs,
                "config": _config_dict(cfg),
                "batches_per_epoch": len(loader),
            }, path)
        _barrier()

    def restore(self, path: Path, cfg: TrainConfig, loader, device: torch.device) -> None:
        """Load ``path`` into this run; refuse (``ValueError``) a checkpoint of another run and
        name the file (``DamagedFileError``) when it cannot be read."""
        try:
            ckpt = _load_checked(path, device, required=_CHECKPOINT_KEYS)
        except DamagedFileError as e:
            raise DamagedFileError(path, e.reason, (
                f"cannot resume from checkpoint {path}: it is damaged ({e.reason}). Delete it "
                f"(or its folder) to start this run from scratch, or pass resume=False.")) from e
        diffs = _resume_differences(ckpt, cfg, self.net, len(loader))
        if diffs:
            raise ValueError(
                f"cannot resume from checkpoint {path}: it was written by a different run\n  "
                + "\n  ".join(diffs)
                + f"\nResuming would continue that run, not this one. Delete {path.parent} (or "
                f"use another checkpoint_dir) to start afresh, or pass resume=False to overwrite "
                f"it; to continue the old run, use its settings.")
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
        self.history = History.from_dict(ckpt["history"])
        self.history.ema_model = self.ema.module if self.ema is not None else None
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        rank, world = dist_info()
        rngs = ckpt["rng"]
        _set_rng_state(rngs[rank] if len(rngs) == world else rngs[0], loader)


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    cfg: TrainConfig,
    *,
    criterion: Callable | None = None,
    eval_loader: Iterable | None = None,
    device: torch.device | str | None = None,
    callbacks: Sequence[Callable[[str, TrainState], None]] = (),
) -> History:
    """Train ``model`` in place on ``train_loader`` (batches of ``(images, labels)``).

    ``criterion(inputs, outputs, targets)`` returns the loss, or ``(loss, {name: scalar})`` to log
    extra terms; ``inputs`` are the (mixed) images the model saw and ``targets`` are soft when
    Mixup/CutMix are on. Default: :func:`default_criterion`. A criterion that is an
    ``nn.Module`` (e.g. one holding a teacher) is moved to the device.
    ``callbacks`` are called as ``callback(event, state)`` after every optimizer step
    (``"step_end"``) and every epoch (``"epoch_end"``); one may raise :class:`StopTraining`.
    Returns the :class:`History`; the EMA model, if any, is ``history.ema_model``.
    ``cfg.resume`` continues from ``checkpoint_dir/last.pt`` only when that file was written by
    the same run (config, ``len(train_loader)``, parameter shapes; see :class:`TrainConfig`), else
    it raises ``ValueError`` naming the file and the differences.
    """
    tqdm = progress_bar

    device = setup_distributed(device)
    rank, world = dist_info()
    main = rank == 0
    if cfg.seed is not None:
        seed_everything(cfg.seed + rank)  # ranks draw different mixup/dropout randomness

    net = model.to(device)  # the plain module: its weights are what we save and evaluate
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    ddp = None
    runner: nn.Module = net  # what the training step calls
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        runner = ddp = DistributedDataParallel(net, device_ids=ids)
    if cfg.compile:
        runner = torch.compile(runner)

    amp_dtype, use_scaler = amp_settings(cfg.amp, device)
    criterion = criterion if criterion is not None else default_criterion(cfg)
    if isinstance(criterion, nn.Module):
        criterion.to(device)
    mixup = _make_mixup(cfg)

    k = cfg.accum_steps
    batches_per_epoch = len(train_loader)
    steps_per_epoch = math.ceil(batches_per_epoch / k)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    optimizer = _make_optimizer(net, cfg)
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    ema = None
    if cfg.ema_decay is not None:
        ema = ModelEmaV3(net, decay=cfg.ema_decay, use_warmup=cfg.ema_warmup)
    run = _Run(net, optimizer, make_scheduler(optimizer, cfg, total_steps, warmup_steps),
               torch.amp.GradScaler("cuda", enabled=use_scaler), ema,
               History(ema_model=ema.module if ema is not None else None))
    scaler = run.scaler

    ckpt_path = Path(cfg.checkpoint_dir) / "last.pt" if cfg.checkpoint_dir is not None else None
    if cfg.resume and ckpt_path.exists():
        run.restore(ckpt_path, cfg, train_loader, device)
        if main and cfg.progress:
            print(f"resumed from {ckpt_path} after epoch {run.epoch} (step {run.step})")
    history = run.history

    show = main and cfg.progress
    every = live_plot_every(cfg.live_plot, total_steps, cfg.progress) if main else 0
    live = LivePlot(every, min_seconds=1.0 if cfg.live_plot == "auto" else 0.0)

    def tell(event: str, loss: float) -> bool:
        """Run the callbacks; True when one asks to stop."""
        state = TrainState(epoch=epoch + 1, step=run.step, model=net, optimizer=optimizer,
                           history=history, ema=ema, loss=loss)
        try:
            for cb in callbacks:
                cb(event, state)
        except StopTraining:
            return True
        return False

    stop = cfg.max_steps is not None and run.step >= cfg.max_steps
    for epoch in range(run.epoch, cfg.epochs):
        if stop:
            break
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        runner.train()
        sums: dict[str, float] = {}  # loss (and extra terms) summed over images
        n_images = 0
        group_loss = 0.0
        t0 = time.perf_counter()
        bar = tqdm(total=batches_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not show, leave=False)
        for i, (images, targets) in enumerate(train_loader):
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if cfg.channels_last and images.ndim == 4:
                images = images.contiguous(memory_format=torch.channels_last)
            if mixup is not None:
                if images.shape[0] % 2:
                    raise ValueError("mixup/cutmix need an even batch size (use drop_last=True)")
                images, targets = mixup(images, targets)

            # micro-batch i belongs to an accumulation group; the last group may be shorter
            group_start = i - i % k
            group_size = min(k, batches_per_epoch - group_start)
            last_in_group = i - group_start == group_size - 1
            sync = contextlib.nullcontext() if ddp is None or last_in_group else ddp.no_sync()
            with sync:
                with _autocast(device, amp_dtype):
                    outputs = runner(images)
                    loss, extras = _split_loss(criterion(images, outputs, targets))
                scaler.scale(loss / group_size).backward()

            b = images.shape[0]
            n_images += b
            for name, value in {"loss": loss, **extras}.items():
                sums[name] = sums.get(name, 0.0) + _as_float(value) * b
            group_loss += _as_float(loss) / group_size
            bar.update(1)
            if not last_in_group:
                continue

            # one optimizer step
            if cfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            run.step += 1
            _advance_scheduler(run.scheduler, run.step)
            if ema is not None:
                ema.update(net, step=run.step if cfg.ema_warmup else None)
            for key, value in (("step", run.step), ("loss", group_loss), ("lr", lr)):
                history.steps[key].append(value)
            bar.set_postfix(loss=f"{group_loss:.4f}", lr=f"{lr:.2e}")
            live.update(history)
            stop = tell("step_end", group_loss)
            group_loss = 0.0
            if stop or (cfg.max_steps is not None and run.step >= cfg.max_steps):
                stop = True
                break
        finish_bar(bar)  # max_steps or a callback may end the epoch early: not red in Jupyter

        record = _epoch_record(epoch + 1, run.step, sums, n_images, time.perf_counter() - t0,
                               history, device)
        if eval_loader is not None and ((epoch + 1) % cfg.eval_every == 0
                                        or epoch + 1 == cfg.epochs or stop):
            for prefix, m in (("eval", net), ("ema", ema.module if ema is not None else None)):
                if m is not None:
                    metrics = evaluate(m, eval_loader, device=device, amp=cfg.amp)
                    for key in ("top1", "top5", "loss"):
                        record[f"{prefix}_{key}"] = metrics[key]
        history.epochs.append(record)
        run.epoch = epoch + 1
        if show:
            print(_summary(record, cfg.epochs))
        live.update(history, force=True)
        if ckpt_path is not None:
            run.save(ckpt_path, cfg, train_loader)
        stop = tell("epoch_end", record.get("train_loss", float("nan"))) or stop
    return history


def _epoch_record(epoch: int, step: int, sums: dict[str, float], n_images: int, seconds: float,
                  history: History, device: torch.device) -> dict[str, float]:
    """One epoch's training numbers, averaged over the images of all processes."""
    names = sorted(sums)
    totals = _all_reduce_sum([sums[n] for n in names] + [n_images], device)
    n_all = max(totals[-1], 1)
    record: dict[str, float] = {"epoch": epoch, "step": step}
    for name, total in zip(names, totals[:-1]):
        record["train_loss" if name == "loss" else f"train_{name}"] = total / n_all
    record["lr"] = history.steps["lr"][-1] if history.steps["lr"] else float("nan")  # last used
    record["time_s"] = seconds
    record["images_per_s"] = n_all / max(seconds, 1e-9)
    return record


def _summary(record: dict, epochs: int) -> str:
    loss = record.get("train_loss", float("nan"))
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {loss:.4f}"]
    if "eval_top1" in record:
        parts.append(f"eval top1 {record['eval_top1']:.2f}% loss {record['eval_loss']:.4f}")
    if "ema_top1" in record:
        parts.append(f"EMA top1 {record['ema_top1']:.2f}%")
    parts.append(f"lr {record['lr']:.2e}")
    parts.append(f"{record['images_per_s']:.0f} img/s")
    return " | ".join(parts)


# ---------------------------------------------------------------------------------------------
# artifact cache


@dataclass
class CacheInfo:
    """Where a cached model came from. ``history`` is set when ``train`` returned a History."""

    from_cache: bool
    path: Path
    key: str
    train_seconds: float
    history: History | None = None
    result: Any = None
    meta: dict = field(default_factory=dict, repr=False)


def config_key(name: str, config: dict) -> str:
    """A short hash of ``name``, ``config`` (json, sorted keys) and the course_lib version."""
    blob = json.dumps({"name": name, "config": config, "course_lib": __version__},
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _plain(x: Any) -> Any:
    """Numbers, strings, lists, dicts and CPU tensors only, so the safe loader can read it back."""
    if isinstance(x, History):
        return x.to_dict()
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, np.generic):
        return x.item()
    if torch.is_tensor(x):
        return x.detach().cpu()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, os.PathLike):
        return str(x)
    return repr(x)


def cached_model(
    name: str,
    config: dict,
    build: Callable[[], nn.Module],
    train: Callable[[nn.Module], Any],
    *,
    force: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[nn.Module, CacheInfo]:
    """Train a model once and reuse it in later runs (e.g. a DeiT teacher).

    The file is ``cache_dir/<name>-<config_key>.pt`` (default ``paths.cache_dir()``). When it
    exists and ``force`` is false, ``build()`` makes the model and the saved weights are loaded:
    no training. Otherwise ``train(model)`` runs and the weights are saved (atomically) with
    metadata: its return value (a History, or plain numbers/strings/tensors), the config and
    the training time, plus a sha256 of the weights. A damaged file (truncated, checksum wrong) is
    reported, moved aside to ``<file>.corrupt`` and rebuilt (:func:`load_cached_artifact`).
    A notebook's ``retrain=True`` parameter maps to ``force``.
    ``train`` should leave the weights to keep in ``model`` (copy EMA weights in if wanted).
    """
    key = config_key(name, config)
    folder = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    path = folder / f"{name}-{key}.pt"
    model = build()
    # read on the CPU: load_state_dict copies to the model's device (and a GPU out of memory is
    # never mistaken for a damaged file)
    blob = None if force else load_cached_artifact(path, required=("state_dict", "meta"))
    if blob is not None:
        model.load_state_dict(blob["state_dict"])
        meta = blob["meta"]
        history = History.from_dict(meta["history"]) if meta.get("history") else None
        return model, CacheInfo(True, path, key, meta["train_seconds"], history,
                                meta.get("result"), meta)

    t0 = time.perf_counter()
    result = train(model)
    seconds = time.perf_counter() - t0
    history = result if isinstance(result, History) else None
    meta = {
        "name": name,
        "key": key,
        "config": _plain(json.loads(json.dumps(config, default=str))),
        "course_lib_version": __version__,
        "train_seconds": seconds,
        "created": time.time(),
        "history": history.to_dict() if history is not None else None,
        "result": None if history is not None else _plain(result),
    }
    if is_main_process():
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        _atomic_save({"state_dict": state, "meta": meta, "sha256": _state_digest(state)}, path)
    _barrier()
    return model, CacheInfo(False, path, key, seconds, history, meta["result"], meta)
