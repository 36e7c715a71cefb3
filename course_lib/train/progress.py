"""What a run shows while it trains: tqdm progress bars (widget or headless text) and the live
loss plot in a notebook.
"""
from __future__ import annotations

import math
import time

import numpy as np
from tqdm import tqdm as tqdm_std

from course_lib.train.history import History, _steps_at_epoch_end

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
    from course_lib import viz

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
    from course_lib import viz

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
