"""Simple Copy-Paste, the figures of notebook 10: a jittered pair, one paste step by step, and
galleries of augmented batches as the training loader makes them.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from course_lib.papers.copy_paste.method import (
    LSJ_RANGE, SimpleCopyPaste, _plain, blend_alpha, paste, scale_jitter, select_objects,
)

__all__ = ["augmented_batch", "draw_gallery", "draw_paste_demo", "jittered_pair", "paste_demo"]


def jittered_pair(dataset, i: int, j: int, scale_range=LSJ_RANGE, seed: int = 0, size: int | None = None):
    """Images ``i`` (main) and ``j`` (source) of ``dataset``, each with its own scale jitter
    (seeded): ``((main_image, main_target), (src_image, src_target))``."""
    size = size or int(dataset[i][0].shape[-1])
    jitter = scale_jitter(size, tuple(scale_range))
    torch.manual_seed(seed)
    return jitter(*dataset[i]), jitter(*dataset[j])


def paste_demo(main, src, mode: str = "random", fraction: float | None = None, sigma: float = 1.0,
               seed: int = 0) -> dict[str, Any]:
    """One copy-paste, step by step: the chosen source objects, the hard and the blended alpha
    and the result (for the notebook's figures)."""
    g = torch.Generator().manual_seed(seed)
    idx = select_objects(len(src[1]["masks"]), mode, fraction, g)
    if len(idx):
        alpha = _plain(src[1]["masks"])[idx].bool().any(0)
    else:
        alpha = torch.zeros(main[0].shape[-2:], dtype=torch.bool)
    image, target = paste(main[0], main[1], src[0], src[1], idx, sigma)
    return {"main": main, "src": src, "indices": idx, "alpha": alpha, "soft_alpha": blend_alpha(alpha, sigma),
            "result": (image, target)}


def draw_paste_demo(demo: Mapping[str, Any], class_names: Sequence[str] | None = None):
    """Five panels: main image, source image (pasted objects only), blended alpha, result,
    result with its updated masks and boxes. Returns the figure."""
    import matplotlib.pyplot as plt

    from course_lib import detection as det

    src_img, src_t = demo["src"]
    idx = demo["indices"]
    chosen = {k: (_plain(v)[idx] if k in ("masks", "labels", "boxes") else v) for k, v in src_t.items()}
    fig, ax = plt.subplots(1, 5, figsize=(13, 2.9))
    n_main = len(demo["main"][1]["labels"])
    det.draw_sample(*demo["main"], class_names, ax=ax[0], title=f"main image I2 ({n_main} objects)")
    det.draw_sample(src_img, chosen, class_names, ax=ax[1],
                    title=f"source I1: {len(idx)} of {len(src_t['labels'])} objects chosen")
    ax[2].imshow(demo["soft_alpha"], cmap="gray", vmin=0, vmax=1)
    ax[2].set_axis_off()
    ax[2].set_title("alpha (blended)", fontsize=8)
    res_img, res_t = demo["result"]
    ax[3].imshow(_plain(res_img).permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    ax[3].set_axis_off()
    ax[3].set_title("I1·alpha + I2·(1 - alpha)", fontsize=8)
    det.draw_sample(res_img, res_t, class_names, ax=ax[4], title=f"new annotations ({len(res_t['labels'])} objects)")
    fig.tight_layout()
    return fig


def augmented_batch(dataset, n: int = 8, scale_range=LSJ_RANGE, copy_paste: SimpleCopyPaste | None = None,
                    seed: int = 0, size: int | None = None):
    """The first ``n`` images of ``dataset`` after per-sample scale jitter and (optionally) a
    batch Copy-Paste, as the training loader would produce them: ``(images, targets)``."""
    size = size or int(dataset[0][0].shape[-1])
    jitter = scale_jitter(size, tuple(scale_range))
    torch.manual_seed(seed)
    pairs = [jitter(*dataset[k]) for k in range(min(n, len(dataset)))]
    images, targets = [p[0] for p in pairs], [p[1] for p in pairs]
    if copy_paste is not None:
        images, targets = copy_paste(images, targets)
    return images, targets


def draw_gallery(images, targets, class_names: Sequence[str] | None = None, ncols: int = 4,
                 title: str | None = None, with_plain: bool = True):
    """Augmented samples with their masks and boxes (and, when ``with_plain``, the plain image
    above each). Returns the figure."""
    import matplotlib.pyplot as plt

    from course_lib import detection as det

    n = len(images)
    ncols = max(1, min(ncols, n))
    rows = math.ceil(n / ncols) * (2 if with_plain else 1)
    fig, axes = plt.subplots(rows, ncols, figsize=(2.3 * ncols, 2.35 * rows), squeeze=False)
    for a in axes.flat:
        a.set_axis_off()
    for k in range(n):
        r, c = divmod(k, ncols)
        if with_plain:
            axes[2 * r, c].imshow(_plain(images[k]).permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            axes[2 * r, c].set_title(f"image {k}", fontsize=8)
            r = 2 * r + 1
        det.draw_sample(images[k], targets[k], class_names, ax=axes[r, c],
                        title=f"{len(targets[k]['labels'])} objects")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
