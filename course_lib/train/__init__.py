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

# The modules of this package, from the bottom up: ``history`` (History, TrainState,
# StopTraining), ``config`` (TrainConfig, criterion, Mixup, optimizer/schedule, AMP),
# ``distributed`` (torchrun), ``cache`` (cached_model and its checked files), ``progress`` (bars,
# live plot) and ``loop`` (fit, evaluate, predict, checkpoint/resume). Tests that replace the
# progress bar patch ``course_lib.train.progress.progress_bar``: ``fit`` looks it up there.
from timm.loss import SoftTargetCrossEntropy

from course_lib.train.cache import (_LOAD_ERRORS, CacheInfo, DamagedFileError, _atomic_save,
                                    _load, _load_checked, _plain, _state_digest,
                                    architecture_digest, cached_model, config_key, key_value,
                                    load_cached_artifact, watch_artifacts, weights_digest)
from course_lib.train.config import (AMP_MODES, SCHEDULES, ClassificationLoss, TrainConfig,
                                     _advance_scheduler, _as_float, _autocast, _make_mixup,
                                     _make_optimizer, _split_loss, amp_settings,
                                     default_criterion, make_scheduler)
from course_lib.train.distributed import (_all_reduce_sum, _barrier, cleanup_distributed,
                                          is_main_process, setup_distributed)
from course_lib.train.history import History, StopTraining, TrainState, _steps_at_epoch_end
from course_lib.train.loop import (_CHECKPOINT_KEYS, RESUME_IGNORES, _as_tuples, _config_dict,
                                   _epoch_record, _loader_generators, _mean_logits,
                                   _model_device, _resume_differences, _rng_state, _Run,
                                   _set_rng_state, _summary, evaluate, fit, predict)
from course_lib.train.progress import (AUTO_LIVE_PLOT_DRAWS, HEADLESS_BAR_SECONDS, LivePlot,
                                       _in_notebook, _TextBar, finish_bar, live_plot_every,
                                       progress_bar)

__all__ = [
    "TrainConfig", "History", "TrainState", "StopTraining", "fit", "evaluate", "predict",
    "default_criterion", "ClassificationLoss", "make_scheduler", "amp_settings",
    "setup_distributed", "cleanup_distributed", "is_main_process", "cached_model", "CacheInfo",
    "config_key", "key_value", "architecture_digest", "weights_digest", "LivePlot", "live_plot_every", "finish_bar", "load_cached_artifact",
    "DamagedFileError", "watch_artifacts",
]
