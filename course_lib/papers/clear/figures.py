"""Notebook 05's figures: the drift itself, the concept schedule, the accuracy matrices,
in-domain vs. next-domain accuracy and what the replay buffers hold."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .experiment import METHOD_LABELS
from .method import Stream
from .stream import CONCEPTS, variant_share


# ----------------------------------------------------------------------------------------------
# Figures


def plot_heatmaps(res: dict[str, Any], family: str, protocol: str, methods: Sequence[str] | None = None,
                  ncols: int = 3):
    """R of every method (seed 0) as seaborn heatmaps, one panel per method."""
    import matplotlib.pyplot as plt

    from course_lib import viz

    methods = [m for m in (methods or res["methods"]) if (family, protocol, m) in res["runs"]]
    nrows = math.ceil(len(methods) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.7 * nrows), squeeze=False)
    for ax, m in zip(axes.flat, methods):
        r = res["runs"][(family, protocol, m)][0]
        T = r.R.shape[0]
        labels = [str(k + 1) for k in range(T)]
        import pandas as pd

        viz.heatmap(pd.DataFrame(r.R, index=labels, columns=labels), ax=ax, annot=True, fmt=".0f",
                    vmin=0, vmax=100, cbar=False, annot_kws={"fontsize": 6},
                    title=f"{METHOD_LABELS[m]}\nin {r.metrics['in_domain']:.1f} / next {r.metrics['next_domain']:.1f}",
                    xlabel="test bucket j", ylabel="trained through bucket i")
        ax.title.set_fontsize(9)
    for ax in list(axes.flat)[len(methods):]:
        ax.set_axis_off()
    fig.suptitle(f"R[i, j], {family}, {protocol} protocol", y=1.0)
    fig.tight_layout()
    return fig


def plot_drift(stream: Stream, per_class: int = 1, seed: int = 0):
    """The drift itself: for every class (rows) one image of every bucket (columns)."""
    from course_lib import viz

    rng = np.random.default_rng(seed)
    imgs, titles = [], []
    for c, name in enumerate(stream.class_names):
        for b in stream.buckets:
            idx = (b.labels == c).nonzero().squeeze(1)
            for k in range(per_class):
                if len(idx):
                    i = int(idx[rng.integers(len(idx))])
                    imgs.append(b.images[i].float() / 255)
                else:
                    imgs.append(torch.ones(3, *b.images.shape[-2:]))
                titles.append(f"{name} · b{b.index}" if b.index in (0, len(stream.buckets) - 1) else f"b{b.index}")
    return viz.show_grid(imgs, titles=titles, ncols=len(stream.buckets) * per_class, size=1.15,
                         suptitle="one image per class (rows) and bucket (columns); bucket 0 is unlabeled")


def schedule_frame(drift: float = 1.0, num_buckets: int = 11):
    """The concept schedule: share (%) of every concept's new variant per bucket."""
    import pandas as pd

    rows = {f"{c} ({o} -> {n})" if o != n else f"{c} ({o})":
            [round(100 * variant_share(c, t, drift)) for t in range(num_buckets)]
            for c, (o, n, _, _) in CONCEPTS.items()}
    return pd.DataFrame(rows, index=[f"b{t}" for t in range(num_buckets)]).T


def plot_in_vs_next(res: dict[str, Any], family: str, protocol: str = "iid",
                    methods: Sequence[str] | None = None, ax=None):
    """In-domain R[i, i] (solid) and next-domain R[i, i+1] (dashed) per bucket, per method (seed
    0): where the stream drifts, the next bucket is harder than the current one."""
    import matplotlib.pyplot as plt

    methods = [m for m in (methods or res["methods"]) if (family, protocol, m) in res["runs"]]
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 3.6))
    for k, m in enumerate(methods):
        R = res["runs"][(family, protocol, m)][0].R
        T = len(R)
        color = f"C{k}"
        ax.plot(range(1, T + 1), np.diag(R), "-o", color=color, ms=3, label=f"{m}: R[i, i]")
        ax.plot(range(1, T), np.diag(R, 1), "--x", color=color, ms=4)
    ax.set_xlabel("bucket i (trained through)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{family}, {protocol}: in-domain R[i,i] (solid) vs next-domain R[i,i+1] (dashed)",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return ax.figure


def plot_buffers(res: dict[str, Any], family: str = "resnet", protocol: str = "iid"):
    """What the reservoir and biased-reservoir buffers hold after each bucket (stacked shares)."""
    import matplotlib.pyplot as plt

    methods = [m for m in ("reservoir", "biased_reservoir", "er") if (family, protocol, m) in res["runs"]]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.2), squeeze=False)
    for ax, m in zip(axes[0], methods):
        comp = np.stack(res["runs"][(family, protocol, m)][0].buffer)  # (after bucket t, from bucket b)
        T = comp.shape[0]
        bottom = np.zeros(T)
        cmap = plt.get_cmap("viridis", T)
        for b in range(T):
            ax.bar(range(1, T + 1), comp[:, b], bottom=bottom, color=cmap(b), width=0.8)
            bottom += comp[:, b]
        ax.set_title(METHOD_LABELS[m], fontsize=9)
        ax.set_xlabel("after bucket")
        ax.set_ylabel("share of the buffer")
    fig.suptitle("buffer composition (colour = bucket of origin, dark = old)", fontsize=10)
    fig.tight_layout()
    return fig
