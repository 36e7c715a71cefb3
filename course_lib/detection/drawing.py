"""Drawing detections: masks and boxes on an image (:func:`render_detections`), one labelled
sample on matplotlib axes (:func:`draw_sample`) and a gallery of predictions beside their ground
truth (:func:`draw_predictions`).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch


# ----------------------------------------------------------------------------------------------
# drawing


def _uint8(image: torch.Tensor) -> torch.Tensor:
    image = torch.as_tensor(image).detach().cpu()
    if image.is_floating_point():
        return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    return image.to(torch.uint8)


_PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0",
            "#f032e6", "#bcf60c", "#fabebe", "#008080", "#e6beff"]


def render_detections(image, target: Mapping, class_names: Sequence[str] | None = None,
                      score_thresh: float = 0.0, alpha: float = 0.45,
                      min_side: int = 256, labels: bool = True) -> torch.Tensor:
    """uint8 image with the masks and boxes (and, with ``labels``, class names and scores, in
    torchvision's small bitmap font) of ``target`` (a ground-truth target or a prediction) drawn
    on it. Images smaller than ``min_side`` are enlarged by an integer factor (nearest) first so
    the labels stay readable. :func:`draw_sample` draws the labels with matplotlib instead."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    img = _uint8(image)
    H, W = img.shape[-2:]
    up = max(1, min_side // max(H, W)) if min_side else 1   # small images: enlarge, so labels fit
    if up > 1:
        img = img.repeat_interleave(up, -2).repeat_interleave(up, -1)
    classes = torch.as_tensor(target["labels"]).cpu()
    keep = torch.ones(len(classes), dtype=torch.bool)
    scores = target.get("scores")
    if scores is not None:
        keep = torch.as_tensor(scores).cpu() >= score_thresh
    classes = classes[keep]
    colors = [_PALETTE[(int(c) - 1) % len(_PALETTE)] for c in classes]
    masks = target.get("masks")
    if masks is not None and len(classes):
        m = torch.as_tensor(masks).cpu()[keep]
        m = m[:, 0] if m.ndim == 4 else m
        m = m.float() >= 0.5 if m.is_floating_point() else m > 0
        if up > 1:
            m = m.repeat_interleave(up, -2).repeat_interleave(up, -1)
        img = draw_segmentation_masks(img, m, alpha=alpha, colors=colors)
    boxes = torch.as_tensor(target["boxes"]).cpu().float()[keep] * up
    if len(boxes):
        names = _box_names(target, class_names, keep) if labels else None
        img = draw_bounding_boxes(img, boxes, labels=names, colors=colors, width=max(1, up // 2))
    return img


def _box_names(target: Mapping, class_names: Sequence[str] | None, keep: torch.Tensor) -> list[str]:
    """The label of each kept box: its class name, followed by its score for a prediction."""
    classes = torch.as_tensor(target["labels"]).cpu()[keep]
    names = [class_names[int(c) - 1] if class_names is not None else str(int(c)) for c in classes]
    scores = target.get("scores")
    if scores is not None:
        names = [f"{n} {float(s):.2f}" for n, s in zip(names, torch.as_tensor(scores).cpu()[keep])]
    return names


def _label_boxes(ax, boxes: torch.Tensor, names: Sequence[str], colors: Sequence[str], width: int,
                 height: int, fontsize: float = 8) -> None:
    """Class names on ``ax`` (an image of ``width`` x ``height`` pixels) in points, so they stay
    readable whatever the image's resolution: on a box of the box's colour at the top-left corner
    of each box, above it when there is room, inside it at the image's top edge."""
    from matplotlib.colors import to_rgb

    for (x1, y1, x2, _), name, color in zip(boxes.tolist(), names, colors):
        r, g, b = to_rgb(color)
        text_color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"
        above = y1 > 0.12 * height
        right = x1 > 0.6 * width  # a label starting near the right edge runs leftwards
        ax.text(x2 if right else x1, y1, name, fontsize=fontsize, color=text_color,
                ha="right" if right else "left", va="bottom" if above else "top", clip_on=True,
                bbox=dict(boxstyle="square,pad=0.15", facecolor=color, edgecolor="none", alpha=0.85))


def draw_sample(image, target: Mapping, class_names: Sequence[str] | None = None, ax=None,
                score_thresh: float = 0.0, title: str | None = None, label_size: float = 8):
    """Show one image with its masks and boxes (ground truth or prediction), each box labelled
    with its class (and score) in ``label_size`` pt text on a box of its colour (0: no labels);
    returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    drawn = render_detections(image, target, class_names, score_thresh, labels=False)
    ax.imshow(drawn.permute(1, 2, 0).numpy(), interpolation="nearest")
    boxes = torch.as_tensor(target["boxes"]).cpu().float()
    if label_size and len(boxes):
        keep = torch.ones(len(boxes), dtype=torch.bool)
        if target.get("scores") is not None:
            keep = torch.as_tensor(target["scores"]).cpu() >= score_thresh
        up = drawn.shape[-1] / _uint8(image).shape[-1]
        classes = torch.as_tensor(target["labels"]).cpu()[keep]
        colors = [_PALETTE[(int(c) - 1) % len(_PALETTE)] for c in classes]
        _label_boxes(ax, boxes[keep] * up, _box_names(target, class_names, keep), colors,
                     drawn.shape[-1], drawn.shape[-2], label_size)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return ax


def draw_predictions(images, predictions, targets=None, class_names: Sequence[str] | None = None,
                     score_thresh: float = 0.5, ncols: int = 4, title: str | None = None):
    """A figure of predictions (score >= ``score_thresh``), each beside its ground truth when
    ``targets`` are given. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    n = len(images)
    per = 2 if targets is not None else 1
    cols = max(1, min(ncols, n)) * per
    rows = math.ceil(n / max(1, min(ncols, n)))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(n):
        r, c = divmod(i, max(1, min(ncols, n)))
        kept = int((torch.as_tensor(predictions[i]["scores"]) >= score_thresh).sum())
        draw_sample(images[i], predictions[i], class_names, ax=axes[r, c * per],
                    score_thresh=score_thresh, title=f"prediction ({kept})")
        if targets is not None:
            draw_sample(images[i], targets[i], class_names, ax=axes[r, c * per + 1],
                        title=f"ground truth ({len(targets[i]['labels'])})")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
