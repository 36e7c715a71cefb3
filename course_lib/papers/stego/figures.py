"""Notebook 11's figures: Figure 2's correspondences of a query patch, and label maps of the
cluster probe (Hungarian-matched to classes) and the linear probe."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data import SegData
from .method import Run
from .probes import confusion, hungarian, predict


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def correspondence_maps(feats: torch.Tensor, index: int, point: tuple[int, int],
                        targets: Sequence[int]) -> torch.Tensor:
    """Figure 2: cosine similarity of the feature at patch ``point`` (row, col) of image
    ``index`` with every patch of each target image: (len(targets), h, w)."""
    q = F.normalize(feats[index, :, point[0], point[1]].float(), dim=0)
    t = F.normalize(feats[list(targets)].float(), dim=1)
    return torch.einsum("c,nchw->nhw", q, t)


def colorize(labels: torch.Tensor, num_classes: int):
    """Label maps (.., H, W) as RGB floats with a fixed palette (ignore: black)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"].resampled(max(num_classes, 2))
    pal = torch.tensor([cmap(i)[:3] for i in range(max(num_classes, 2))] + [(0.0, 0.0, 0.0)])
    lab = labels.clone()
    lab[lab < 0] = len(pal) - 1
    return pal[lab]


def cluster_to_class(run: Run, feats_eval: torch.Tensor, data: SegData, device=None) -> np.ndarray:
    """Hungarian assignment of ``run``'s clusters to classes on the evaluation split."""
    clusters, _ = predict(run, feats_eval, data.images, None, device=device)
    return hungarian(confusion(clusters, data.labels, run.cluster.centres.shape[0], data.num_classes))


def plot_correspondences(images: torch.Tensor, feats: torch.Tensor, knn: torch.Tensor, index: int,
                         point: tuple[int, int], k: int = 3, codes: torch.Tensor | None = None,
                         title: str = ""):
    """Figure 2 of the paper: a query patch (white cross) in an image, and the cosine similarity
    of its feature to every patch of the same image and of its ``k`` nearest neighbours (first
    row: backbone features; second row, when ``codes`` are given: STEGO's codes)."""
    import matplotlib.pyplot as plt

    targets = [index] + knn[index, :k].tolist()
    rows = [("backbone features", feats)] + ([("STEGO code", codes)] if codes is not None else [])
    S = images.shape[-1]
    h, w = feats.shape[-2:]
    fig, axes = plt.subplots(len(rows), len(targets) + 1, figsize=(2.1 * (len(targets) + 1), 2.2 * len(rows)),
                             squeeze=False)
    for r, (name, x) in enumerate(rows):
        sims = correspondence_maps(x, index, point, targets)
        ax = axes[r, 0]
        ax.imshow(images[index].permute(1, 2, 0))
        ax.plot((point[1] + 0.5) * S / w - 0.5, (point[0] + 0.5) * S / h - 0.5, "w+", ms=12, mew=2.5)
        ax.set_title("query" if r == 0 else "", fontsize=9)
        ax.set_ylabel(name, fontsize=9)
        for j, (t, sim) in enumerate(zip(targets, sims)):
            ax = axes[r, j + 1]
            ax.imshow(images[t].permute(1, 2, 0))
            up = F.interpolate(sim[None, None], (S, S), mode="bilinear", align_corners=False)[0, 0]
            ax.imshow(up.clamp(min=0), cmap="inferno", alpha=0.65, vmin=0, vmax=1)
            ax.set_title(("same image" if j == 0 else f"neighbour {j}") if r == 0 else "", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_segmentations(data: SegData, preds: dict[str, torch.Tensor], indices: Sequence[int]):
    """Images, ground truth and predicted label maps (predictions already mapped to classes)."""
    import matplotlib.pyplot as plt

    cols = 2 + len(preds)
    fig, axes = plt.subplots(len(indices), cols, figsize=(1.9 * cols, 1.9 * len(indices)), squeeze=False)
    K = data.num_classes
    for r, i in enumerate(indices):
        panels = [("image", data.images[i].permute(1, 2, 0)), ("ground truth", colorize(data.labels[i], K))]
        panels += [(name, colorize(p[i], K)) for name, p in preds.items()]
        for c, (name, im) in enumerate(panels):
            axes[r, c].imshow(im)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(name, fontsize=9)
    fig.tight_layout()
    return fig


def class_predictions(run: Run, feats: torch.Tensor, data: SegData, crf: dict | None = None,
                      assign: np.ndarray | None = None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(cluster probe mapped to classes by the Hungarian assignment, linear probe) label maps."""
    clusters, classes = predict(run, feats, data.images, crf, device=device)
    if assign is None:
        assign = hungarian(confusion(clusters, data.labels, run.cluster.centres.shape[0], data.num_classes))
    return torch.from_numpy(assign)[clusters], classes
