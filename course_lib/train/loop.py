"""The training loop: ``fit`` (with checkpoint/resume through ``_Run``), ``evaluate`` and
``predict``.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from course_lib.config import seed_everything
from course_lib.data import dist_info
from course_lib.metrics import topk_accuracy
from course_lib.train import progress
from course_lib.train.cache import DamagedFileError, _atomic_save, _load_checked
from course_lib.train.config import (RESUME_IGNORES, TrainConfig, _advance_scheduler, _as_float, _autocast,
                                     _make_mixup, _make_optimizer, _split_loss, amp_settings,
                                     default_criterion, make_scheduler)
from course_lib.train.distributed import (_all_reduce_sum, _barrier, is_main_process,
                                          setup_distributed)
from course_lib.train.history import History, StopTraining, TrainState

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
# the step and the batch


def move_to(batch, device: torch.device):
    """``batch`` with every tensor in it (nested tuples, lists, dicts) on ``device``."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [move_to(v, device) for v in batch]
        return type(batch)(moved) if isinstance(batch, list) else tuple(moved)
    return batch


def _batch_len(batch) -> int:
    """How many samples a batch holds: the length of its first element (or of itself)."""
    first = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
    if torch.is_tensor(first):
        return int(first.shape[0]) if first.ndim else 1
    return len(first)


def _classification_step(criterion: Callable, mixup, channels_last: bool):
    """The default step: ``(images, labels)`` -> Mixup/CutMix -> model -> criterion."""

    def step(model: nn.Module, batch):
        images, targets = batch
        if channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        if mixup is not None:
            if images.shape[0] % 2:
                raise ValueError("mixup/cutmix need an even batch size (use drop_last=True)")
            images, targets = mixup(images, targets)
        return criterion(images, model(images), targets)

    return step


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


# ---------------------------------------------------------------------------------------------
# fit


_CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "ema", "epoch", "step",
                    "history", "rng")



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
    step: Callable[[nn.Module, Any], Any] | None = None,
    to_device: Callable[[Any, torch.device], Any] | None = None,
    optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
) -> History:
    """Train ``model`` in place on ``train_loader``.

    The default step is classification on batches of ``(images, labels)``:
    ``criterion(inputs, outputs, targets)`` returns the loss, or ``(loss, {name: scalar})`` to log
    extra terms; ``inputs`` are the (mixed) images the model saw and ``targets`` are soft when
    Mixup/CutMix are on. Default: :func:`default_criterion`. A criterion that is an
    ``nn.Module`` (e.g. one holding a teacher) is moved to the device.

    Any other task plugs in a **step hook** ``step(model, batch)`` that returns the loss or
    ``(loss, {name: scalar})`` (detection: the sum of the loss dict; STEGO: head and probe losses;
    CLEAR: cross-entropy plus a continual-learning penalty). ``model`` is what to call: the
    DDP/compiled wrapper where those are on, so put everything that trains inside ``model``.
    The hook runs under autocast; Mixup and the criterion are the default step's and do not
    apply. ``to_device(batch, device)`` moves a batch (default: every tensor in nested
    tuples/lists/dicts, ``non_blocking``); a batch's size (for the per-image averages) is the
    length of its first element. ``optimizer(model)`` builds the optimizer (e.g. parameter
    groups with their own lrs or a subset of the parameters); default: ``cfg.optimizer`` through
    timm's ``create_optimizer_v2``. Schedules, clipping, accumulation, AMP, EMA, progress,
    history, checkpoint/resume and DDP are the same for every step.

    ``callbacks`` are called as ``callback(event, state)`` before every epoch (``"epoch_start"``),
    after every optimizer step (``"step_end"``) and every epoch (``"epoch_end"``, the epoch's
    record is ``state.history.epochs[-1]`` and may be added to); one may raise
    :class:`StopTraining`.
    Returns the :class:`History`; the EMA model, if any, is ``history.ema_model``.
    ``cfg.resume`` continues from ``checkpoint_dir/last.pt`` only when that file was written by
    the same run (config, ``len(train_loader)``, parameter shapes; see :class:`TrainConfig`), else
    it raises ``ValueError`` naming the file and the differences.
    """
    tqdm = progress.progress_bar  # looked up per call: tests patch course_lib.train.progress

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
    if step is None:
        criterion = criterion if criterion is not None else default_criterion(cfg)
        if isinstance(criterion, nn.Module):
            criterion.to(device)
        step = _classification_step(criterion, _make_mixup(cfg), cfg.channels_last)
    elif criterion is not None or cfg.uses_mixup:
        raise ValueError("a step hook computes its own loss: criterion and mixup/cutmix belong "
                         "to the default classification step")
    to_device = to_device if to_device is not None else move_to

    k = cfg.accum_steps
    batches_per_epoch = len(train_loader)
    steps_per_epoch = math.ceil(batches_per_epoch / k)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    optimizer = optimizer(net) if optimizer is not None else _make_optimizer(net, cfg)
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
    every = progress.live_plot_every(cfg.live_plot, total_steps, cfg.progress) if main else 0
    live = progress.LivePlot(every, min_seconds=1.0 if cfg.live_plot == "auto" else 0.0)

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
        n_images = skipped = group_skipped = 0
        group_loss = 0.0
        t0 = time.perf_counter()
        stop = tell("epoch_start", float("nan")) or stop
        bar = tqdm(total=batches_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not show, leave=False)
        for i, batch in enumerate(train_loader):
            if stop:
                break
            batch = to_device(batch, device)

            # micro-batch i belongs to an accumulation group; the last group may be shorter
            group_start = i - i % k
            group_size = min(k, batches_per_epoch - group_start)
            last_in_group = i - group_start == group_size - 1
            sync = contextlib.nullcontext() if ddp is None or last_in_group else ddp.no_sync()
            with sync:
                with _autocast(device, amp_dtype):
                    loss, extras = _split_loss(step(runner, batch))
                finite = not cfg.skip_nonfinite or bool(torch.isfinite(loss.detach()).all())
                if finite:
                    scaler.scale(loss / group_size).backward()
            bar.update(1)
            if not finite:
                skipped += 1
                group_skipped += 1
            else:
                b = _batch_len(batch)
                n_images += b
                for name, value in {"loss": loss, **extras}.items():
                    sums[name] = sums.get(name, 0.0) + _as_float(value) * b
            group_loss += _as_float(loss) / group_size
            if not last_in_group:
                continue

            # one optimizer step (none when every micro-batch of the group was skipped)
            if cfg.grad_clip is not None and group_skipped < group_size:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            if group_skipped < group_size:
                scaler.step(optimizer)
                scaler.update()
            optimizer.zero_grad(set_to_none=True)
            group_skipped = 0
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
        progress.finish_bar(bar)  # an early end (max_steps, a callback) is not red in Jupyter

        record = _epoch_record(epoch + 1, run.step, sums, n_images, time.perf_counter() - t0,
                               history, device)
        if cfg.skip_nonfinite:
            record["skipped_steps"] = skipped
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
    n_all = totals[-1]
    record: dict[str, float] = {"epoch": epoch, "step": step}
    for name, total in zip(names, totals[:-1]):
        record["train_loss" if name == "loss" else f"train_{name}"] = total / max(n_all, 1)
    record["lr"] = history.steps["lr"][-1] if history.steps["lr"] else float("nan")  # last used
    record["time_s"] = seconds
    record["images"] = int(n_all)
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
