"""Training a detector: the recipe (:class:`DetTrainConfig`), the loop (:func:`train_detector`),
its records (:class:`DetHistory`) and the model cache (:func:`cached_detector`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn as nn

from course_lib.train import History, TrainConfig

from .models import PIPELINE_VERSION


# ----------------------------------------------------------------------------------------------
# training


@dataclass
class DetTrainConfig:
    """The detection recipe. ``lr`` is the peak of a linear warm-up (``warmup_iters`` steps)
    followed by a cosine decay to ``min_lr`` (``schedule="cosine"``) or a flat line
    (``"constant"``). ``optimizer``: ``adamw`` or ``sgd`` (momentum). No weight decay on
    1-D parameters (norms, biases). ``amp``: ``auto`` (bf16 on CUDA, off on CPU), ``bf16`` (CPU
    too), ``fp16`` (CUDA, with a GradScaler) or ``off``. ``max_steps`` ends the run early
    (smoke). ``batch_size`` is informational (the loader decides)."""

    epochs: int = 6
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_iters: int = 50
    min_lr: float = 0.0
    amp: str = "auto"
    grad_clip: float | None = 10.0
    batch_size: int = 16
    log_every: int = 0
    max_steps: int | None = None
    seed: int | None = 0

    def __post_init__(self):
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer={self.optimizer!r}: allowed 'adamw', 'sgd'")
        if self.amp not in ("auto", "bf16", "fp16", "off", "none"):
            raise ValueError(f"amp={self.amp!r}: allowed auto, bf16, fp16, off")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule={self.schedule!r}: allowed cosine, constant")


LOSS_NAMES = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")


@dataclass
class DetHistory(History):
    """Per-epoch records (``epoch``, ``step``, ``loss`` and every term of the loss dict,
    ``lr``, ``time_s``, ``images_per_s``, ``peak_mem_mb``, ``skipped_steps``) and per-step
    ``steps`` (``step``, ``loss``, ``lr``). ``peak_mem_mb``: CUDA ``max_memory_allocated`` in
    the epoch; on the CPU the epoch's peak RSS above the RSS at its start (Linux, the peak is
    reset per epoch through ``/proc/self/clear_refs``; NaN elsewhere). ``as_dataframe``,
    ``last``, ``to_dict`` and ``from_dict`` come from :class:`course_lib.train.History`."""

    @property
    def train_seconds(self) -> float:
        return float(sum(r.get("time_s", 0.0) for r in self.epochs))

    @property
    def images_per_s(self) -> float:
        n = sum(r.get("images", 0) for r in self.epochs)
        return n / max(self.train_seconds, 1e-9)

    def plot(self, ax=None):
        """Loss per step (thin) and per epoch (dots) by term; returns the figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 3.4))
        fig = ax.figure
        s = self.steps
        if s["step"]:
            ax.plot(s["step"], s["loss"], lw=0.6, alpha=0.4, label="total (step)")
        x = [r["step"] for r in self.epochs]
        for name in ("loss", *LOSS_NAMES):
            if any(name in r for r in self.epochs):
                ax.plot(x, [r.get(name, float("nan")) for r in self.epochs], "o-", ms=3,
                        label=name.replace("loss_", "") if name != "loss" else "total (epoch)")
        ax.set(xlabel="step", ylabel="loss", title="detection training loss")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


def _proc_status_mb(key: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MiB (Linux), NaN where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (``VmHWM``) on Linux: ``echo 5 > /proc/self/clear_refs``."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _make_optimizer(params: list[torch.nn.Parameter], cfg: DetTrainConfig):
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def train_config(cfg: DetTrainConfig, steps_per_epoch: int) -> TrainConfig:
    """The :class:`course_lib.train.TrainConfig` that :func:`fit` runs for a detection recipe:
    the same warm-up + cosine (or constant) schedule, stepped per iteration; non-finite losses
    skipped; progress shown by :func:`train_detector`'s own bar."""
    return TrainConfig(
        epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, optimizer=cfg.optimizer,
        momentum=cfg.momentum, schedule=cfg.schedule,
        warmup_epochs=cfg.warmup_iters / max(1, steps_per_epoch), min_lr=cfg.min_lr,
        amp="none" if cfg.amp == "off" else cfg.amp, grad_clip=cfg.grad_clip,
        max_steps=cfg.max_steps, seed=cfg.seed, progress=False, live_plot=0,
        skip_nonfinite=True)


def detection_step(model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`fit`'s step for a torchvision detector on ``(list of images, list of targets)``:
    the loss is the sum of the model's loss dict, whose terms are logged."""
    images, targets = batch
    loss_dict = {k: v.float() for k, v in model(images, targets).items()}
    return sum(loss_dict.values()), loss_dict


def train_detector(model: nn.Module, loader: Iterable, cfg: DetTrainConfig | None = None,
                   device=None, params: Iterable[torch.nn.Parameter] | None = None,
                   progress: bool = True, callback: Callable[[dict], None] | None = None,
                   desc: str | None = None) -> DetHistory:
    """Train a torchvision detector in place on batches ``(list of images, list of targets)``.

    The course's one loop, :func:`course_lib.train.fit`, does the work with
    :func:`detection_step` (the loss is the sum of the model's loss dict: RPN objectness + box,
    RoI classifier + box, mask) and the recipe as :func:`train_config` translates it. Only
    ``params`` (default: the parameters with ``requires_grad``) are optimised.
    AMP through ``course_lib.train.amp_settings`` (``amp="bf16"`` runs bf16 autocast on CPU).
    A step whose loss is not finite is skipped (counted in ``skipped_steps``).
    ``callback(record)`` is called after every epoch with the epoch's record.
    ``progress``: one tqdm bar for the whole run (``desc`` names it; epoch, loss and lr in its
    postfix) and one summary line at the end; ``cfg.log_every`` adds a line every that many
    steps.
    """
    from course_lib.config import pick_device
    from course_lib.train import finish_bar, fit
    from course_lib.train import progress_bar as tqdm

    cfg = cfg or DetTrainConfig()
    device = torch.device(device) if device is not None else pick_device("auto")
    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters")
    steps_per_epoch = len(loader)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    records: list[dict] = []
    bar = tqdm(total=total, desc=desc or "detector", unit="step", disable=not progress,
               leave=False)
    memory: dict[str, float] = {}

    def watch(event: str, state) -> None:
        if event == "epoch_start":  # the epoch's peak memory is measured from here
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            memory.update(rss0=_proc_status_mb("VmRSS"),
                          can_peak=device.type != "cuda" and _reset_peak_rss())
        elif event == "step_end":
            lr = state.history.steps["lr"][-1]
            bar.update(1)
            if progress:
                bar.set_postfix(epoch=f"{state.epoch}/{cfg.epochs}", loss=f"{state.loss:.4f}",
                                lr=f"{lr:.2e}", refresh=False)
                if cfg.log_every and state.step % cfg.log_every == 0:
                    bar.write(f"step {state.step}/{total} loss {state.loss:.4f} lr {lr:.2e}")
        elif event == "epoch_end":
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            r = state.history.epochs[-1]
            rec = {"epoch": r["epoch"], "step": r["step"]}
            rec.update({k[len("train_"):]: v for k, v in r.items() if k.startswith("train_")})
            rec.update(lr=r["lr"], time_s=r["time_s"], images=r["images"],
                       images_per_s=r["images_per_s"], skipped_steps=r["skipped_steps"])
            if device.type == "cuda":
                rec["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            else:  # the epoch's peak RSS above the RSS at its start (NaN where not measurable)
                rec["peak_mem_mb"] = (max(0.0, _proc_status_mb("VmHWM") - memory["rss0"])
                                      if memory["can_peak"] else float("nan"))
            records.append(rec)
            if callback is not None:
                callback(rec)

    t_run = time.perf_counter()
    history = fit(model, loader, train_config(cfg, steps_per_epoch), device=device,
                  step=detection_step, optimizer=lambda net: _make_optimizer(params, cfg),
                  callbacks=[watch])
    finish_bar(bar)  # n == total, so a finished run never ends red in Jupyter
    hist = DetHistory(epochs=records, steps=history.steps)
    if progress and hist.epochs:
        rec, seconds = hist.epochs[-1], time.perf_counter() - t_run
        images = sum(r["images"] for r in hist.epochs)
        print(f"{desc or 'detector'}: {history.steps['step'][-1] if history.steps['step'] else 0}"
              f" steps, {len(hist.epochs)} epochs | last epoch loss "
              f"{rec.get('loss', float('nan')):.4f} | {images / max(seconds, 1e-9):.1f} img/s | "
              f"{seconds:.1f} s")
    return hist


def cached_detector(name: str, config: dict, build: Callable[[], nn.Module],
                    train: Callable[[nn.Module], DetHistory], force: bool = False,
                    cache_dir=None):
    """Train a detector once and reuse it: ``(model, history, CacheInfo)``.

    ``course_lib.train.cached_model`` does the work (file ``<cache_dir>/<name>-<key>.pt``, the
    key a hash of ``name``, ``config``, :data:`PIPELINE_VERSION` and the course_lib version);
    the :class:`DetHistory` is kept in the file's metadata and restored on a cache hit. ``force=True`` retrains.
    """
    from course_lib.train import cached_model

    def _train(model):
        result = train(model)
        hist = result if isinstance(result, DetHistory) else None
        return {"det_history": hist.to_dict() if hist is not None else None,
                "other": None if hist is not None else result}

    config = {**config, "pipeline": PIPELINE_VERSION}
    model, info = cached_model(name, config, build, _train, force=force, cache_dir=cache_dir)
    res = info.result or {}
    hist = DetHistory.from_dict(res["det_history"]) if res.get("det_history") else None
    return model, hist, info
