"""The surgical-skill CNN's plots: confusion matrices (Fig. 4) and one trial's windows."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from . import jigsaws
from .experiment import SCHEME_LABELS

# ----------------------------------------------------------------------------------------------
# plots


def plot_confusions(res: Mapping[str, Any], window: int = 60, schemes: Sequence[str] | None = None):
    """Fig. 4 analog: row-normalised confusion matrices, one per task (columns) and scheme (rows)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from course_lib.viz import heatmap

    schemes = list(schemes or res["schemes"])
    tasks = list(res["tasks"])
    fig, axes = plt.subplots(len(schemes), len(tasks), figsize=(3.6 * len(tasks), 3.2 * len(schemes)),
                             squeeze=False)
    short = [s[:5] + "." if len(s) > 6 else s for s in jigsaws.SKILL_NAMES]
    for i, scheme in enumerate(schemes):
        for j, task in enumerate(tasks):
            cm = res["confusion"].get((task, scheme, window))
            if cm is None:
                axes[i, j].axis("off")
                continue
            heatmap(pd.DataFrame(cm, index=short, columns=short), ax=axes[i, j], vmin=0, vmax=1,
                    cmap="Blues", cbar=False, title=f"{task} · {SCHEME_LABELS[scheme]} · W={window}",
                    xlabel="predicted", ylabel="self-proclaimed")
    fig.tight_layout()
    return fig


TRACE_CHANNELS = (("slave_right", "x"), ("slave_right", "y"), ("slave_right", "z"),
                  ("slave_left", "x"), ("slave_right", "gripper"), ("slave_left", "gripper"))
SKILL_COLORS = ("tab:red", "tab:orange", "tab:green")


def plot_trial(res: Mapping[str, Any], data: Mapping[str, Sequence[jigsaws.Trial]], task: str,
               window: int, trial: str):
    """Kinematic traces of one trial with each window's predicted skill (its LOSO fold's model)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    tr = next(t for t in data[task] if t.name == trial)
    k = tr.kinematics
    t = np.arange(len(k)) / jigsaws.FPS
    fig, axes = plt.subplots(4, 1, figsize=(11, 7), sharex=True,
                             gridspec_kw={"height_ratios": [2, 1.3, 1, 0.9]})
    for m, v in TRACE_CHANNELS[:4]:
        i = jigsaws.column_index(m, v)
        axes[0].plot(t, 1000 * (k[:, i] - k[:, i].mean()), lw=0.8, label=f"{m}.{v}")
    axes[0].set_ylabel("position (mm,\ncentred)")
    axes[0].legend(fontsize=7, ncol=4, loc="upper right")
    for side in ("slave_right", "slave_left"):
        j = jigsaws.column_index(side, "vx")
        axes[1].plot(t, 1000 * np.linalg.norm(k[:, j:j + 3], axis=1), lw=0.7, label=f"{side} speed")
    axes[1].set_ylabel("speed (mm/s)")
    axes[1].legend(fontsize=7, loc="upper right")
    for m, v in TRACE_CHANNELS[4:]:
        axes[2].plot(t, k[:, jigsaws.column_index(m, v)], lw=0.8, label=f"{m}.{v}")
    axes[2].set_ylabel("gripper")
    axes[2].legend(fontsize=7, loc="upper right")
    ax = axes[3]
    starts, probs = res["trial_windows"].get((task, window), {}).get(trial, (np.zeros(0), None))
    for s, p in zip(starts, probs if probs is not None else []):
        c = int(p.argmax())
        ax.add_patch(plt.Rectangle((s / jigsaws.FPS, c - 0.4), window / jigsaws.FPS, 0.8,
                                   color=SKILL_COLORS[c], alpha=0.35 + 0.5 * float(p[c] - 1 / 3) * 1.5))
    ax.axhline(tr.label, color="k", ls="--", lw=1)
    ax.set_yticks([0, 1, 2], jigsaws.SKILL_NAMES)
    ax.set_ylim(-0.6, 2.6)
    ax.set_xlabel("time (s)")
    n = len(starts)
    acc = float((probs.argmax(1) == tr.label).mean()) if n else float("nan")
    ax.set_title(f"windows (W={window}, step {res.get('step', 30)}): predicted skill; dashed = "
                 f"self-proclaimed; {acc:.0%} of {n} windows right", fontsize=9)
    axes[0].set_title(f"{trial} · self-proclaimed {jigsaws.SKILL_NAMES[tr.label]} · GRS {tr.grs} · "
                      f"{tr.seconds:.0f} s", fontsize=10)
    ax.legend(handles=[Patch(color=c, alpha=0.6, label=n_) for c, n_ in
                       zip(SKILL_COLORS, jigsaws.SKILL_NAMES)], fontsize=7, ncol=3, loc="upper right")
    fig.tight_layout()
    return fig
