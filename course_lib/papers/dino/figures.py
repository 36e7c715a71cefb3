"""Notebook 06's figures and widget: DINO's training curves, the collapse of the ablations
(Fig. 7), the attention heads and their 60%-mass masks, the Jaccard per model and per head, the
attention on real photos, and the explorer's figure."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from course_lib import train
from course_lib.models.vit import VisionTransformer
from course_lib.papers.dino.experiment import photos
from course_lib.papers.dino.method import attention_masks, jaccard
from course_lib.selfsup import cls_attention

__all__ = ["plot_training", "plot_collapse", "plot_heads", "plot_masks", "plot_jaccard", "plot_photo_attention",
           "explorer_figure"]


def plot_training(history: train.History, log_k: float | None = None):
    """DINO's loss, the teacher's entropy H(P_t) and KL(P_t || P_s) per step, and the lr."""
    import matplotlib.pyplot as plt

    s = history.steps
    fig, ax = plt.subplots(1, 4, figsize=(15, 3.2))
    ax[0].plot(s["step"], s["loss"], lw=0.8)
    ax[0].set(title="loss H(P_t, P_s)", xlabel="step")
    ax[1].plot(s["step"], s["teacher_entropy"], lw=0.8, label="per image H(P_t)")
    ax[1].plot(s["step"], s["marginal_entropy"], lw=0.8, label="of the batch mean")
    if log_k:
        ax[1].axhline(log_k, color="k", ls=":", lw=1, label="log K (uniform)")
    ax[1].set(title="teacher entropy (nats)", xlabel="step")
    ax[1].legend(fontsize=7)
    ax[2].plot(s["step"], s["kl"], lw=0.8)
    ax[2].set(title="KL(P_t || P_s)", xlabel="step")
    ax[3].plot(s["step"], s["lr"])
    ax[3].set(title="learning rate", xlabel="step")
    fig.tight_layout()
    return fig


def plot_collapse(runs: Mapping[str, Mapping[str, Any]], log_k: float):
    """Paper Fig. 7 at our scale: the teacher's entropy and KL(P_t || P_s) per step for every
    ablation. Collapse: KL -> 0 with H(P_t) -> log K (uniform) or -> 0 (one dimension)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 3.6))
    for name, r in runs.items():
        s = r["history"].steps
        k = max(1, len(s["step"]) // 40)
        sm = lambda v: np.convolve(v, np.ones(k) / k, mode="valid")  # noqa: E731
        st = s["step"][k - 1:]
        ax[0].plot(st, sm(s["teacher_entropy"]), label=name)
        ax[1].plot(st, sm(s["marginal_entropy"]), label=name)
        ax[2].plot(st, sm(s["kl"]), label=name)
    for a in ax[:2]:
        a.axhline(log_k, color="k", ls=":", lw=1)
    ax[0].set(title="H(P_t) per image (log K dotted)", xlabel="step", ylabel="nats")
    ax[1].set(title="H(mean P_t): how many dims are used", xlabel="step")
    ax[2].set(title="KL(P_t || P_s)", xlabel="step")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _show(ax, img, title=None):
    from course_lib.viz import to_image

    ax.imshow(to_image(img))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)


def plot_heads(models: Mapping[str, VisionTransformer], images: torch.Tensor, fg: torch.Tensor | None = None,
               threshold: float = 0.6, alpha: float = 0.6, size: float = 1.5):
    """One row per (image, model): the image, every head's last-layer class-token attention, the
    mean over heads and its ``threshold``-mass mask (cyan: the ground-truth object outline)."""
    import matplotlib.pyplot as plt

    from course_lib.viz import overlay

    maps = {n: cls_attention(m, images) for n, m in models.items()}
    heads = max(v.shape[1] for v in maps.values())
    rows = len(images) * len(models)
    fig, axes = plt.subplots(rows, heads + 3, figsize=(size * (heads + 3), size * rows), squeeze=False)
    r = 0
    for i in range(len(images)):
        for n, mp in maps.items():
            ax = axes[r]
            _show(ax[0], images[i], f"{n}" if r else f"{n}")
            ax[0].set_ylabel(n)
            for h in range(heads):
                if h < mp.shape[1]:
                    overlay(ax[1 + h], images[i], mp[i, h], alpha, title=f"head {h}" if r == 0 else None)
                else:
                    ax[1 + h].set_axis_off()
            mean = mp[i].mean(0)
            overlay(ax[heads + 1], images[i], mean, alpha, title="mean of heads" if r == 0 else None)
            mask = attention_masks(mp[i:i + 1], threshold, "mean")[0]
            gt = fg[i] if fg is not None else None
            j = f" J={100 * float(jaccard(mask[None], gt[None])[0]):.0f}" if gt is not None else ""
            overlay(ax[heads + 2], images[i], mean * mask, alpha, mask=mask,
                    title=(f"{threshold:.0%} mass{j}"))
            if gt is not None:
                from course_lib.viz import upsample
                g = upsample(gt.float(), tuple(images.shape[-2:])).numpy()
                if 0 < g.sum() < g.size:
                    ax[0].contour(g, levels=[0.5], colors="cyan", linewidths=0.8)
            ax[0].set_title(n, fontsize=8)
            r += 1
    fig.tight_layout()
    return fig


def plot_masks(models: Mapping[str, VisionTransformer], images: torch.Tensor, fg: torch.Tensor,
               threshold: float = 0.6, size: float = 1.6):
    """Columns: images with their object outline, then per model the thresholded mean-of-heads
    mask (white) against the ground truth (cyan outline), with the Jaccard of each image."""
    import matplotlib.pyplot as plt

    from course_lib.viz import to_image, upsample

    fig, axes = plt.subplots(len(models) + 1, len(images), figsize=(size * len(images), size * (len(models) + 1)),
                             squeeze=False)
    H, W = images.shape[-2:]
    for i in range(len(images)):
        _show(axes[0, i], images[i])
        g = fg[i].float().numpy()
        axes[0, i].contour(g, levels=[0.5], colors="cyan", linewidths=0.8)
        for r, (n, m) in enumerate(models.items(), start=1):
            mp = cls_attention(m, images[i:i + 1])
            mask = attention_masks(mp, threshold, "mean")
            j = 100 * float(jaccard(mask, fg[i:i + 1])[0])
            mk = upsample(mask[0], (H, W)).numpy()
            img = to_image(images[i]) * 0.35
            img[mk] = img[mk] / 0.35 * 0.6 + 0.4
            axes[r, i].imshow(img)
            axes[r, i].contour(g, levels=[0.5], colors="cyan", linewidths=0.8)
            axes[r, i].set_axis_off()
            axes[r, i].set_title(f"J = {j:.0f}", fontsize=8)
            if i == 0:
                axes[r, i].text(-0.1, 0.5, n, transform=axes[r, i].transAxes, rotation=90, va="center",
                                ha="right", fontsize=9)
    axes[0, 0].text(-0.1, 0.5, "image + objects", transform=axes[0, 0].transAxes, rotation=90, va="center",
                    ha="right", fontsize=9)
    fig.tight_layout()
    return fig


def plot_jaccard(evals: Mapping[str, Mapping[str, Any]], threshold: float = 0.6):
    """Left: histogram of the per-image Jaccard of the ``threshold``-mass mask (mean of heads) per
    model; right: the Jaccard of every head per model (outlined: the head chosen on val). Heads
    are whole numbers on the x axis, one tick per head."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(1, 2, figsize=(12, 3.4))
    bins = np.linspace(0, 1, 21)
    for n, e in evals.items():
        ax[0].hist(np.asarray(e["jaccard_per_image"]), bins=bins, alpha=0.5,
                   label=f"{n} (mean {e['jaccard_mean']:.1f})")
    ax[0].set(xlabel=f"Jaccard of the {threshold:.0%}-mass mask (mean of heads)", ylabel="images")
    ax[0].yaxis.set_major_locator(MaxNLocator(integer=True))
    ax[0].legend(fontsize=8)
    w = 0.8 / max(1, len(evals))
    n_heads = max(len(e["jaccard_per_head"]) for e in evals.values())
    for k, (n, e) in enumerate(evals.items()):
        hs = np.arange(len(e["jaccard_per_head"]))
        bars = ax[1].bar(hs + (k - (len(evals) - 1) / 2) * w, e["jaccard_per_head"], w, label=n)
        best = e.get("best_head")
        if best is not None:
            bars[int(best)].set_edgecolor("k")
            bars[int(best)].set_linewidth(1.5)
    ax[1].set_xticks(np.arange(n_heads), [str(h) for h in range(n_heads)])
    ax[1].set(xlabel="head", ylabel="Jaccard (%)", title="per head (outlined: chosen on val)")
    ax[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # off the bars
    fig.tight_layout()
    return fig


def plot_photo_attention(model: VisionTransformer, names: Sequence[str] = ("astronaut", "chelsea", "coffee", "rocket"),
                         size: int | None = None, display: int = 448, threshold: float = 0.6, alpha: float = 0.55,
                         heads: bool = True, panel: float = 2.3, title: str | None = None):
    """The last layer's class-token attention on scikit-image photos. One row per photo, labelled
    with its name: the photo at ``display`` px (what a person sees), the mean of the heads, its
    ``threshold``-mass mask and (``heads``) every head, each map upsampled (bilinear) onto the photo.
    The model sees the same centre crop at ``size`` px (default: its training size, at least 64)."""
    import matplotlib.pyplot as plt

    from course_lib.viz import overlay

    size = int(size or max(64, int(model.img_size[0])))
    p = int(model.patch_size[0])
    size = max(p, size // p * p)
    small = photos(size, names)
    big = photos(display, names).float() / 255  # float in [0, 1] for the drawing
    maps = cls_attention(model, small)  # (n, heads, h, w)
    n_heads = maps.shape[1] if heads else 0
    cols = 3 + n_heads
    fig, axes = plt.subplots(len(names), cols, figsize=(panel * cols, panel * len(names) + 0.4), squeeze=False)
    for i, name in enumerate(names):
        ax = axes[i]
        overlay(ax[0], big[i])
        ax[0].set_title(name, fontsize=10, fontweight="bold")
        mean = maps[i].mean(0)
        overlay(ax[1], big[i], mean, alpha, title="mean of heads" if i == 0 else None)
        mask = attention_masks(maps[i:i + 1], threshold, "mean")[0]
        overlay(ax[2], big[i], mean * mask, alpha, mask=mask, title=f"{threshold:.0%} of the mass" if i == 0 else None)
        for h in range(n_heads):
            overlay(ax[3 + h], big[i], maps[i, h], alpha, title=f"head {h}" if i == 0 else None)
    gh, gw = maps.shape[-2:]
    fig.suptitle(title or f"last-layer [CLS] attention: the model sees {size} px ({gh}x{gw} patches of {p} px); "
                 f"maps upsampled onto the {display} px photo", fontsize=10)
    fig.tight_layout()
    return fig


def explorer_figure(models: Mapping[str, VisionTransformer], images: torch.Tensor, fg: torch.Tensor | None,
                    image: int = 0, model: str | None = None, layer: int = -1, head: int | str = "mean",
                    threshold: float = 0.6, opacity: float = 0.6):
    """The widget's figure: one image, one model, one layer, one head (or their mean / all of
    them), the raw map and the ``threshold``-mass mask; compare with every model on the right."""
    import matplotlib.pyplot as plt

    from course_lib.viz import overlay

    model = model or next(iter(models))
    x = images[image:image + 1]
    mp = cls_attention(models[model], x, layer=layer)[0]  # (heads, h, w)
    gt = fg[image] if fg is not None else None
    if head == "all":
        n = mp.shape[0]
        fig, axes = plt.subplots(2, n, figsize=(2.1 * n, 4.4), squeeze=False)
        for h in range(n):
            overlay(axes[0, h], x[0], mp[h], opacity, title=f"{model}: head {h}")
            mask = attention_masks(mp[None], threshold, h)[0] if threshold else None
            heat = mp[h] * mask if mask is not None else mp[h]
            jt = f" J={100 * float(jaccard(mask[None], gt[None])[0]):.0f}" if (gt is not None and mask is not None) else ""
            overlay(axes[1, h], x[0], heat, opacity, mask=mask, title=f"{threshold:.0%} mass{jt}" if threshold else "")
        fig.tight_layout()
        return fig
    heat = mp.mean(0) if head == "mean" else mp[int(head)]
    others = list(models)
    fig, axes = plt.subplots(1, 2 + len(others), figsize=(2.4 * (2 + len(others)), 2.8))
    _show(axes[0], x[0], f"image {image}")
    if gt is not None:
        axes[0].contour(gt.float().numpy(), levels=[0.5], colors="cyan", linewidths=0.8)
    mask = mass_mask = None
    if threshold:
        from course_lib.viz import mass_threshold
        mass_mask = mass_threshold(heat, threshold)
    jt = f", J={100 * float(jaccard(mass_mask[None], gt[None])[0]):.0f}" if (gt is not None and mass_mask is not None) else ""
    overlay(axes[1], x[0], heat * mass_mask if mass_mask is not None else heat, opacity, mask=mass_mask,
            title=f"{model}, layer {layer}, {'mean' if head == 'mean' else f'head {head}'}{jt}")
    for ax, name in zip(axes[2:], others):
        m2 = cls_attention(models[name], x, layer=layer)[0]
        h2 = m2.mean(0) if head == "mean" or int(head) >= m2.shape[0] else m2[int(head)]
        overlay(ax, x[0], h2, opacity, title=name)
    del mask
    fig.tight_layout()
    return fig
