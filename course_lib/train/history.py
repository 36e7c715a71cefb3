"""What a training run reports: ``History`` (per epoch and per step), the ``TrainState`` a
callback sees, and ``StopTraining``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
from timm.utils import ModelEmaV3

# ---------------------------------------------------------------------------------------------
# history


@dataclass
class History:
    """What happened during :func:`fit`.

    ``epochs``: one dict per epoch with ``epoch``, ``train_loss``, ``lr`` (at the end of the
    epoch), ``time_s``, ``images`` and ``images_per_s`` (all processes together),
    ``skipped_steps`` (with ``skip_nonfinite``), ``eval_top1``/``eval_top5``/
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
