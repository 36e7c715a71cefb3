"""Simple Copy-Paste: "Simple Copy-Paste is a Strong Data Augmentation Method for Instance
Segmentation" (Ghiasi, Cui, Srinivas, Qian, Lin, Cubuk, Le, Zoph; CVPR 2021, arXiv 2012.07177).
Everything notebook 10 needs.

The paper's contribution, implemented here from scratch (Sec. 3 and Fig. 2 of the paper):

1. *Two images, jittered independently.* Each training image gets its own random scale jitter
   (a resize by a factor drawn from a range, then a fixed-size crop that pads when the image got
   smaller, and a horizontal flip). Sec. 3, "Large Scale Jittering", Fig. 3:

   - standard scale jittering, SSJ: factor in [0.8, 1.25] (:data:`SSJ_RANGE`);
   - large scale jittering, LSJ: factor in [0.1, 2.0] (:data:`LSJ_RANGE`); smaller images are
     padded "with gray pixel values".

   :func:`scale_jitter` builds it from ``torchvision.transforms.v2`` (``ScaleJitter``,
   ``RandomCrop(pad_if_needed=True)``, ``RandomHorizontalFlip``, ``SanitizeBoundingBoxes``) plus
   :class:`RefreshFromMasks`. Used per sample by the dataset, it jitters the two images of a pair
   independently (Appendix, Table 11: LSJ on both is best).
2. *A random subset of objects of one image is pasted onto the other* at the same position
   (the randomness of the placement comes from the jitter). :func:`select_objects`: ``"random"``
   (the paper's default), ``"one"`` or ``"all"`` (the ablation of Table 10).
3. *Blending* (Sec. 3, "Blending Pasted Objects"): with the binary mask :math:`\\alpha` of the
   pasted objects (union of their masks), the new image is

   .. math::  I = I_1 \\, \\alpha + I_2 \\, (1 - \\alpha)

   (:math:`I_1` the pasted image, :math:`I_2` the main image), where :math:`\\alpha` may be
   smoothed by a Gaussian filter (:func:`blend_alpha`, knob ``sigma``). Table 10: blending does
   not matter (50.0 box AP with or without).
4. *Annotations are updated*: the pasted alpha is subtracted from the masks of the main image's
   objects (:math:`m_k \\leftarrow m_k \\wedge \\neg\\alpha`), fully occluded objects are removed,
   and the boxes of all objects are recomputed from their masks (:func:`masks_to_boxes`).

:class:`SimpleCopyPaste` does 2-4 on a whole batch (``batch_transform(images, targets)``, the
hook of ``detection.make_loader``): every image of the batch is a main image and takes its
objects from another image of the same batch.

Where we follow / differ from the public implementations (``/work/shared/notes/
official-implementations.md``; we read them, never copied them):

* *Pairing.* torchvision's reference (``references/detection/transforms.py``) pairs image ``i``
  with image ``i - 1`` of the batch; with a shuffled loader that is a random pair, and every image
  serves once as main and once as source. ``pairing="shift"`` (default) does the same,
  ``pairing="random"`` draws a random other image for each. Sources are always the images
  *before* pasting (no chains of pastes).
* *Subset.* torchvision draws ``n`` random indices and keeps the unique ones (a biased subset
  size); conradry/copy-paste-aug pastes ``round(pct * n)`` objects, which with its default
  ``pct = 0.1`` pastes *nothing* for images with fewer than 10 objects (a trap). Our ``"random"``
  draws the subset size uniformly in ``1..n``, then that many distinct objects; with
  ``fraction=f`` it pastes ``max(1, round(f * n))`` objects instead (never zero).
* *Hard masks, soft image.* Blending changes the image only; the pasted masks and the occlusion
  are computed from the hard (binary) alpha, so masks stay binary (conradry does the same;
  torchvision's blur of a boolean alpha acts as a small dilation of the occluder).
* *Boxes* use the course's pixel-edge convention: a mask covering columns ``x0..x1`` has box
  ``x0, x1 + 1`` (``torchvision.ops.masks_to_boxes`` gives ``x1``); the world's boxes agree.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "AUGMENTATIONS", "LSJ_RANGE", "PAD_GRAY", "PAPER", "PAPER_URL", "PASTE_MODES", "SINGLE_RUN_MARGIN",
    "SSJ_RANGE", "TITLE", "CPData", "RefreshFromMasks", "Run", "RunSpec", "SimpleCopyPaste",
    "augmentation", "augmented_batch", "blend_alpha", "draw_gallery", "draw_paste_demo", "from_rectangles",
    "jittered_pair", "load_data", "masks_to_boxes", "paste", "paste_demo", "plan", "record_results",
    "recorder", "refresh_target", "run_experiments", "scale_jitter", "select_objects", "tables",
    "train_run",
]

PAPER_URL = "https://arxiv.org/abs/2012.07177"
TITLE = "Simple Copy-Paste is a Strong Data Augmentation Method for Instance Segmentation"
# bump when a change of this module changes what a cached model would be
CODE_VERSION = 1

SSJ_RANGE = (0.8, 1.25)   # standard scale jittering (Sec. 3, Fig. 3a)
LSJ_RANGE = (0.1, 2.0)    # large scale jittering (Sec. 3, Fig. 3b)
PAD_GRAY = 0.5            # "padded with gray pixel values" (Fig. 3 caption), images in [0, 1]
PASTE_MODES = ("random", "one", "all")
PAIRINGS = ("shift", "random")

# The paper's numbers, from the study group's notes (seed 003). COCO box / mask AP.
PAPER = {
    # Figure 1 (Mask R-CNN EfficientNet-B7 FPN, 640 px): gains of Strong Aug. (LSJ) + Copy-Paste
    # over Standard Aug. (SSJ), read from the caption (the curves' values are not in the notes).
    "fig1_gain_box": {0.1: 10.0, 1.0: 5.0},
    "fig1_data_efficiency": 2.0,   # "up to 2x more data-efficient"
    # Table 1 / Fig. 5 right: Copy-Paste on top of LSJ, 100% of COCO, Eff-B7 FPN (640)
    "table1_effb7_640": {"lsj": (48.5, 42.7), "lsj_cp": (50.0, 43.7)},
    "table1_r50_1024": {"lsj": (47.2, 41.8), "lsj_cp": (48.2, 42.4)},
    # Table 10 (Eff-B7 FPN 640, 100% of COCO): (box AP, mask AP)
    "table10": {"none": (48.5, 42.7), "one": (49.1, 43.1), "all": (49.7, 43.3),
                "no_blend": (50.0, 43.7), "random": (50.0, 43.7)},
    # Table 11: jitter of the main / pasted image
    "table11": {("ssj", "ssj"): (48.1, 42.1), ("ssj", "lsj"): (47.7, 41.8),
                ("lsj", "ssj"): (49.7, 43.5), ("lsj", "lsj"): (50.0, 43.7)},
}


# ---------------------------------------------------------------------------------------------
# annotations from masks
# ---------------------------------------------------------------------------------------------
def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """XYXY boxes (n, 4) float32 of binary masks (n, H, W), pixel-edge convention: a mask
    covering columns ``x0..x1`` and rows ``y0..y1`` has box ``(x0, y0, x1 + 1, y1 + 1)``
    (``torchvision.ops.masks_to_boxes`` gives ``x1, y1``); an empty mask gives zeros."""
    m = _plain(masks).bool()
    n, h, w = m.shape[0], m.shape[-2], m.shape[-1]
    if n == 0:
        return torch.zeros(0, 4)
    cols, rows = m.any(1), m.any(2)                      # (n, W), (n, H)
    xs, ys = torch.arange(w), torch.arange(h)
    boxes = torch.stack([torch.where(cols, xs, w).amin(1), torch.where(rows, ys, h).amin(1),
                         torch.where(cols, xs, -1).amax(1) + 1, torch.where(rows, ys, -1).amax(1) + 1],
                        1).to(torch.float32)
    boxes[~cols.any(1)] = 0
    return boxes


def _plain(t) -> torch.Tensor:
    """A plain tensor view (no tv_tensors dispatch overhead inside the hot loops)."""
    return t.as_subclass(torch.Tensor) if isinstance(t, torch.Tensor) else torch.as_tensor(t)


def refresh_target(target: Mapping[str, Any], min_area: int = 1) -> dict[str, Any]:
    """Boxes and areas recomputed from the masks; objects whose mask has fewer than ``min_area``
    pixels (fully occluded, cropped away, or lost by a down-scale) are dropped together with
    their label, area and iscrowd entries (Sec. 3: "remove fully occluded objects and update the
    masks and bounding boxes of partially occluded objects")."""
    return _refresh(target, min_area)[0]


def _refresh(target: Mapping[str, Any], min_area: int = 1) -> tuple[dict[str, Any], torch.Tensor]:
    """:func:`refresh_target` and the boolean keep-vector over the input objects."""
    out = dict(target)
    masks = _plain(target["masks"])
    h, w = masks.shape[-2:]
    area = masks.flatten(1).sum(1) if masks.shape[0] else torch.zeros(0, dtype=torch.int64)
    keep = area >= max(int(min_area), 1)
    kept = masks[keep]
    out["masks"] = tv_tensors.Mask(kept.to(torch.uint8))
    out["boxes"] = tv_tensors.BoundingBoxes(masks_to_boxes(kept), format="XYXY", canvas_size=(h, w))
    out["area"] = area[keep].to(torch.float32)
    for key in ("labels", "iscrowd"):
        if key in target:
            out[key] = _plain(target[key])[keep]
    if "iscrowd" not in out:
        out["iscrowd"] = torch.zeros(int(keep.sum()), dtype=torch.int64)
    return out, keep


def from_rectangles(rects: Sequence[tuple[int, int, int, int]], labels: Sequence[int], size: int,
                    image_id: int = 0) -> dict[str, Any]:
    """A hand-made target with rectangular masks ``(x0, y0, x1, y1)`` (pixel edges: columns
    ``x0..x1-1``, rows ``y0..y1-1``) on a ``size`` x ``size`` canvas, in the detection format."""
    masks = torch.zeros(len(rects), size, size, dtype=torch.uint8)
    for k, (x0, y0, x1, y1) in enumerate(rects):
        masks[k, y0:y1, x0:x1] = 1
    return refresh_target({"masks": tv_tensors.Mask(masks), "labels": torch.as_tensor(list(labels), dtype=torch.int64),
                           "image_id": image_id})


class RefreshFromMasks(torch.nn.Module):
    """A ``(image, target) -> (image, target)`` step: :func:`refresh_target`. Ends the jitter
    pipeline so that boxes always agree with the (resized, cropped) masks."""

    def __init__(self, min_area: int = 1):
        super().__init__()
        self.min_area = int(min_area)

    def forward(self, image, target):
        return image, refresh_target(target, self.min_area)


def _sanitize_getter(inputs):
    """What ``v2.SanitizeBoundingBoxes`` filters with the boxes (masks are found by type)."""
    target = inputs[1]
    return tuple(target[k] for k in ("labels", "area", "iscrowd") if k in target)


def scale_jitter(size: int | tuple[int, int], scale_range: tuple[float, float] = LSJ_RANGE,
                 flip: bool = True, pad_fill: float = PAD_GRAY, min_area: int = 1) -> v2.Compose:
    """Scale jittering of Sec. 3 / Fig. 3 as a per-sample ``(image, target)`` transform.

    Resize by a factor in ``scale_range`` *relative to the output canvas* (``v2.ScaleJitter``),
    crop a ``size`` window at a random position, padding with gray (``pad_fill``) when the image
    got smaller (``v2.RandomCrop(pad_if_needed=True)``), flip horizontally with probability 1/2,
    drop degenerate boxes (``v2.SanitizeBoundingBoxes``) and recompute boxes from the masks
    (:class:`RefreshFromMasks`). ``scale_range = SSJ_RANGE`` is standard, ``LSJ_RANGE`` large
    scale jittering; ``(1, 1)`` with ``flip=False`` is the identity."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    lo, hi = scale_range
    if not 0 < lo <= hi:
        raise ValueError(f"scale_range={scale_range}: want 0 < low <= high")
    steps: list[Callable] = [
        v2.ScaleJitter(target_size=hw, scale_range=(float(lo), float(hi)), antialias=True),
        v2.RandomCrop(hw, pad_if_needed=True,
                      fill={tv_tensors.Image: float(pad_fill), tv_tensors.Mask: 0, "others": 0}),
    ]
    if flip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    steps += [v2.SanitizeBoundingBoxes(labels_getter=_sanitize_getter), RefreshFromMasks(min_area)]
    return v2.Compose(steps)


# ---------------------------------------------------------------------------------------------
# copy-paste of one pair
# ---------------------------------------------------------------------------------------------
def select_objects(n: int, mode: str = "random", fraction: float | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of the source objects to paste (Sec. 3; Table 10's ablation).

    ``"random"``: a random subset; its size is uniform in ``1..n`` (``fraction=None``) or
    ``max(1, round(fraction * n))``; ``"one"``: one random object; ``"all"``: every object.
    Returns a sorted int64 tensor (empty when ``n == 0``)."""
    if mode not in PASTE_MODES:
        raise ValueError(f"mode={mode!r}: allowed {PASTE_MODES}")
    if n <= 0:
        return torch.zeros(0, dtype=torch.int64)
    if mode == "all":
        return torch.arange(n)
    if mode == "one":
        k = 1
    elif fraction is None:
        k = int(torch.randint(1, n + 1, (1,), generator=generator))
    else:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction={fraction}: allowed [0, 1]")
        k = max(1, round(fraction * n))
    return torch.randperm(n, generator=generator)[:k].sort().values


def gaussian_kernel_size(sigma: float) -> int:
    """Odd kernel side covering +-3 sigma."""
    return 2 * math.ceil(3.0 * sigma) + 1


def blend_alpha(alpha: torch.Tensor, sigma: float) -> torch.Tensor:
    """The blending weight of Sec. 3: the binary alpha (H, W) of the pasted objects smoothed by a
    Gaussian filter of standard deviation ``sigma`` pixels (``sigma = 0``: no blending)."""
    a = alpha.to(torch.float32)
    if sigma <= 0:
        return a
    k = gaussian_kernel_size(sigma)
    return TF.gaussian_blur(a[None, None], [k, k], [float(sigma), float(sigma)])[0, 0]


def paste(main_image: torch.Tensor, main_target: Mapping[str, Any], src_image: torch.Tensor,
          src_target: Mapping[str, Any], indices: torch.Tensor, sigma: float = 0.0,
          min_area: int = 1, _keep: list | None = None) -> tuple[tv_tensors.Image, dict[str, Any]]:
    """Paste the source objects ``indices`` onto the main image (Sec. 3, steps 3-4).

    ``I = I_src * a + I_main * (1 - a)`` with ``a = blend_alpha(alpha, sigma)`` and ``alpha`` the
    union of the pasted masks; the main objects' masks lose the pasted ``alpha``
    (``m & ~alpha``), objects left with fewer than ``min_area`` pixels are dropped, the pasted
    objects are appended (after the main ones) and every box is recomputed from its mask.
    The ``image_id`` of the main image is kept."""
    if main_image.shape != src_image.shape:
        raise ValueError(f"copy-paste needs images of one size; got {tuple(main_image.shape)} and "
                         f"{tuple(src_image.shape)} (jitter and crop them to a fixed size first)")
    src_masks = _plain(src_target["masks"])[indices].bool()
    if src_masks.shape[0] == 0:  # nothing to paste: the main image unchanged (boxes refreshed)
        out, keep = _refresh(main_target, min_area)
        if _keep is not None:
            _keep.append(keep)
        return tv_tensors.Image(main_image.clone()), out
    alpha = src_masks.any(0)                                        # hard alpha (H, W)
    a = blend_alpha(alpha, sigma).to(main_image.dtype)
    image = _plain(src_image) * a + _plain(main_image) * (1 - a)    # I1 * alpha + I2 * (1 - alpha)
    main_masks = _plain(main_target["masks"]).bool() & ~alpha       # occlusion by the pasted objects

    def field(t, key, n, default):
        return _plain(t[key]) if key in t else default(n)

    n_main = main_masks.shape[0]
    zeros = lambda n: torch.zeros(n, dtype=torch.int64)  # noqa: E731
    combined = {k: v for k, v in main_target.items()}
    combined["masks"] = tv_tensors.Mask(torch.cat([main_masks, src_masks]).to(torch.uint8))
    combined["labels"] = torch.cat([field(main_target, "labels", n_main, zeros),
                                    field(src_target, "labels", len(src_target["masks"]), zeros)[indices]])
    combined["iscrowd"] = torch.cat([field(main_target, "iscrowd", n_main, zeros),
                                     field(src_target, "iscrowd", len(src_target["masks"]), zeros)[indices]])
    out, keep = _refresh(combined, min_area)
    if _keep is not None:  # which objects survived (main ones first), for the statistics
        _keep.append(keep)
    return tv_tensors.Image(image), out


# ---------------------------------------------------------------------------------------------
# the batch transform
# ---------------------------------------------------------------------------------------------
class SimpleCopyPaste:
    """Batch-level Simple Copy-Paste (Sec. 3): ``(images, targets) -> (images, targets)``.

    Every image of the batch is a *main* image; with probability ``p`` it receives a subset
    (:func:`select_objects` with ``mode``, ``fraction``) of the objects of a *source* image of the
    same batch (``pairing``: ``"shift"`` = image ``i - 1`` as in torchvision's reference, or
    ``"random"``), pasted with :func:`paste` (Gaussian blending with ``sigma`` pixels when
    ``blend``). Images must share one size: jitter and crop them per sample first
    (:func:`scale_jitter`), which makes the two jitters independent.

    Randomness comes from an own ``torch.Generator`` (``seed``) or the one passed in, so a run is
    reproducible whatever else draws random numbers. ``stats`` counts images, pasted objects and
    main objects dropped as fully occluded since creation (or :meth:`reset_stats`).
    Works on lists (as collated by ``detection.collate``) or tuples; returns lists.
    """

    def __init__(self, mode: str = "random", fraction: float | None = None, blend: bool = True,
                 sigma: float = 1.0, p: float = 1.0, pairing: str = "shift", min_area: int = 1,
                 seed: int | None = 0, generator: torch.Generator | None = None):
        if mode not in PASTE_MODES:
            raise ValueError(f"mode={mode!r}: allowed {PASTE_MODES}")
        if pairing not in PAIRINGS:
            raise ValueError(f"pairing={pairing!r}: allowed {PAIRINGS}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p={p}: allowed [0, 1]")
        if sigma < 0:
            raise ValueError(f"sigma={sigma}: must be >= 0")
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction={fraction}: allowed [0, 1] or None")
        self.mode, self.fraction, self.blend, self.sigma = mode, fraction, bool(blend), float(sigma)
        self.p, self.pairing, self.min_area = float(p), pairing, int(min_area)
        if generator is None:
            generator = torch.Generator()
            generator.manual_seed(0 if seed is None else int(seed))
        self.generator = generator
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats = {"images": 0, "pasted_into": 0, "pasted_objects": 0, "occluded_dropped": 0}

    def __repr__(self) -> str:
        return (f"SimpleCopyPaste(mode={self.mode!r}, fraction={self.fraction}, blend={self.blend}, "
                f"sigma={self.sigma:g}, p={self.p:g}, pairing={self.pairing!r})")

    def sources(self, batch_size: int) -> list[int]:
        """Index of the source image of each main image (``-1``: none, a batch of one)."""
        if batch_size < 2:
            return [-1] * batch_size
        if self.pairing == "shift":
            return [(i - 1) % batch_size for i in range(batch_size)]
        off = torch.randint(1, batch_size, (batch_size,), generator=self.generator)
        return [(i + int(o)) % batch_size for i, o in enumerate(off)]

    def __call__(self, images: Sequence[torch.Tensor], targets: Sequence[Mapping[str, Any]]):
        images, targets = list(images), list(targets)
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        src = self.sources(len(images))
        out_images, out_targets = [], []
        sigma = self.sigma if self.blend else 0.0
        for i, (img, tgt) in enumerate(zip(images, targets)):
            self.stats["images"] += 1
            apply = bool(torch.rand((), generator=self.generator) < self.p) if self.p < 1 else True
            j = src[i]
            if j < 0 or not apply:
                out_images.append(img)
                out_targets.append(tgt)
                continue
            idx = select_objects(len(targets[j]["masks"]), self.mode, self.fraction, self.generator)
            keep: list[torch.Tensor] = []
            new_img, new_tgt = paste(img, tgt, images[j], targets[j], idx, sigma, self.min_area, keep)
            n_main = len(tgt["masks"])
            n_kept_main = int(keep[0][:n_main].sum())
            self.stats["pasted_into"] += int(len(idx) > 0)
            self.stats["pasted_objects"] += len(idx)
            self.stats["occluded_dropped"] += n_main - n_kept_main
            out_images.append(new_img)
            out_targets.append(new_tgt)
        return out_images, out_targets


# ---------------------------------------------------------------------------------------------
# notebook parameters
# ---------------------------------------------------------------------------------------------
from dataclasses import dataclass, field  # noqa: E402

from . import config  # noqa: E402
from .config import Param  # noqa: E402

DATASETS = ("world", "pennfudan", "coco")
AUGMENTATIONS = ("ssj", "lsj", "lsj_cp")


def _range_ok(v) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            and 0 < v[0] <= v[1] <= 4)


def _fractions_ok(v) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) >= 1
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 1 for x in v))


def _opt_fraction_ok(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1)


config.register("10_copy_paste", {
    "dataset": Param({"smoke": "world", "study": "world", "paper": "coco"},
                     "world (offline), pennfudan or coco (real data; python data_scripts/fetch.py "
                     "pennfudan / coco2017)", choices=DATASETS),
    "image_size": Param({"smoke": 64, "study": 64, "paper": 512}, "training canvas side in pixels",
                        type=int, low=32, high=1024),
    "train_images": Param({"smoke": 48, "study": 600, "paper": 0},
                          "images of the 100% training set (a seeded subset of the train split; "
                          "0: the whole split)", type=int, low=0),
    "eval_images": Param({"smoke": 16, "study": 200, "paper": 0},
                         "test images (0: the whole split)", type=int, low=0),
    "detections": Param({"smoke": 20, "study": 20, "paper": 100},
                        "detections kept per test image (torchvision's box_detections_per_img; the "
                        "world has at most 5 objects per image and the mask head dominates test time)",
                        type=int, low=1, high=1000),
    "fractions": Param({"smoke": (0.25, 1.0), "study": (0.1, 0.5, 1.0), "paper": (0.1, 0.5, 1.0)},
                       "fractions of the training set (Figure 1)", type=(list, tuple),
                       check=_fractions_ok, check_help="fractions in (0, 1]"),
    "steps": Param({"smoke": 2, "study": 128, "paper": 20000},
                   "optimizer steps of every run (the same compute at every data fraction)",
                   type=int, low=1),
    "batch_size": Param({"smoke": 8, "study": 8, "paper": 16}, type=int, low=2),
    "lr": Param({"smoke": 3e-3, "study": 3e-3, "paper": 1e-3}, "AdamW peak learning rate",
                low=1e-6, high=1.0),
    "heads": Param({"smoke": "slim", "study": "slim", "paper": "default"},
                   "R-CNN head sizes (detection.build_detector)", choices=("slim", "default")),
    "ssj_range": Param(SSJ_RANGE, "standard scale jittering range (paper: 0.8-1.25)",
                       type=(list, tuple), check=_range_ok, check_help="(low, high), 0 < low <= high <= 4"),
    "lsj_range": Param(LSJ_RANGE, "large scale jittering range (paper: 0.1-2.0)",
                       type=(list, tuple), check=_range_ok, check_help="(low, high), 0 < low <= high <= 4"),
    "paste_mode": Param("random", "which source objects are pasted (Table 10)", choices=PASTE_MODES),
    "paste_fraction": Param(None, "None: subset size uniform in 1..n (paper); f: round(f * n) objects",
                            type=object, check=_opt_fraction_ok, check_help="None or a number in (0, 1]"),
    "blend": Param(True, "Gaussian blending of the pasted objects' edges (Sec. 3)"),
    "sigma": Param({"smoke": 1.0, "study": 1.0, "paper": 2.0},
                   "blending Gaussian sigma in pixels", low=0.0, high=20.0),
    "pairing": Param("shift", "source of image i: shift = image i-1 of the batch (torchvision), "
                     "random = a random other image", choices=PAIRINGS),
    "table10": Param(True, "train the Table 10 ablations (one object, all objects, no blending)"),
    "table10_fraction": Param({"smoke": 1.0, "study": 1.0, "paper": 1.0},
                              "data fraction of the Table 10 runs (must be one of fractions)",
                              low=0.0, high=1.0),
    "seeds": Param(1, "seeds per configuration", type=int, low=1, high=10),
    "retrain": Param(False, "ignore cached detectors and train again"),
})


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
@dataclass
class CPData:
    """The 100% training set (no transform), the test set and what the tables need."""

    train: Any
    test: Any
    num_classes: int
    class_names: tuple[str, ...]
    tiers: list[str]
    image_size: int
    key: dict


def load_data(P: config.Params) -> CPData:
    """The training set (``P.train_images`` of the train split, a seeded subset; 0 = all) and the
    test set. ``world`` uses the calibrated detection world of ``detection.world_config`` (the
    one notebooks 07 and 08 use, so its disk cache is shared); ``pennfudan`` / ``coco`` read the
    real datasets with the readers of ``detection`` and fail with the fetch command when they
    are missing."""
    from . import detection as det

    if P.dataset == "world":
        wprof = "smoke" if P.profile == "smoke" else "study"
        over: dict[str, Any] = {"image_size": P.image_size}
        if P.profile == "smoke":  # the smoke world is tiny; the study world is shared with 07/08
            over.update(num_images=max(P.train_images, 8), eval_images=max(P.eval_images, 4))
        wcfg = det.world_config(wprof, **over)
        train = det.DetectionDataset(wcfg, "train", P.data_root)
        test = det.DetectionDataset(wcfg, "test", P.data_root)
        key = {"world": wcfg.key("train")}
    else:
        try:
            if P.dataset == "pennfudan":
                train = det.PennFudanDataset(P.data_root, "train")
                test = det.PennFudanDataset(P.data_root, "val")
            else:
                train = det.CocoDetectionDataset(P.data_root, "train")
                test = det.CocoDetectionDataset(P.data_root, "val")
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"notebook 10 (profile {P.profile!r}) needs the {P.dataset!r} dataset: {e}") from e
        key = {"dataset": P.dataset, "n": len(train)}
    if P.train_images and P.train_images < len(train):
        train = train.subset(P.train_images / len(train), seed=P.seed)
    if P.eval_images and P.eval_images < len(test):
        test = test.subset(P.eval_images / len(test), seed=0)
    key.update(train=len(train), test=len(test))
    return CPData(train, test, train.num_classes, tuple(train.class_names), train.tiers(),
                  P.image_size, key)


# ---------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """One training configuration: jitter (``ssj``/``lsj``), Copy-Paste on or off and how,
    and the data fraction."""

    jitter: str
    copy_paste: bool
    fraction: float
    mode: str = "random"
    blend: bool = True

    @property
    def aug(self) -> str:
        return self.jitter + ("_cp" if self.copy_paste else "")

    @property
    def name(self) -> str:
        s = f"{self.aug}@{self.fraction:g}"
        if self.copy_paste and (self.mode != "random" or not self.blend):
            s += f"[{self.mode}{'' if self.blend else ',no-blend'}]"
        return s


@dataclass
class Run:
    spec: RunSpec
    seed: int
    metrics: dict[str, float]          # DetMetrics.as_row(): box_AP, box_AP50, ..., mask_AP, ...
    train_seconds: float
    images_per_s: float
    from_cache: bool
    train_size: int
    history: Any = None
    cp_stats: dict = field(default_factory=dict)


def augmentation(P: config.Params, spec: RunSpec) -> tuple[Callable, SimpleCopyPaste | None]:
    """(per-sample jitter, batch Copy-Paste or ``None``) of a run."""
    rng = P.ssj_range if spec.jitter == "ssj" else P.lsj_range
    jitter = scale_jitter(P.image_size, tuple(rng))
    if not spec.copy_paste:
        return jitter, None
    cp = SimpleCopyPaste(mode=spec.mode, fraction=P.paste_fraction, blend=spec.blend, sigma=P.sigma,
                         pairing=P.pairing, seed=P.seed)
    return jitter, cp


def train_run(P: config.Params, d: CPData, spec: RunSpec, seed: int | None = None,
              log: Callable[[str], Any] | None = print) -> tuple[Run, torch.nn.Module]:
    """Train (or load from the cache) and evaluate one Mask R-CNN of the grid.

    Every run takes ``P.steps`` optimizer steps of ``P.batch_size`` images, whatever its data
    fraction (so a 10% run sees each image about 10x more often than the 100% run); AdamW with a
    linear warm-up over the first tenth of the steps and a cosine decay (``detection``)."""
    from . import detection as det

    seed = P.seed if seed is None else seed
    train = d.train.subset(spec.fraction, seed=P.seed) if spec.fraction < 1 else d.train
    jitter, cp = augmentation(P, spec)
    cfg_key = {"code": CODE_VERSION, "data": d.key, "spec": spec.__dict__, "seed": seed,
               "steps": P.steps, "batch": P.batch_size, "lr": P.lr, "heads": P.heads,
               "size": P.image_size, "ranges": [list(P.ssj_range), list(P.lsj_range)],
               "cp": None if cp is None else [P.paste_fraction, P.sigma, P.pairing]}

    def build():
        torch.manual_seed(seed)
        return det.build_detector(det.ConvBackbone(), d.num_classes, masks=True,
                                  image_size=P.image_size, heads=P.heads,
                                  box_detections_per_img=P.detections)

    def fit(model):
        ds = copy.copy(train)  # the run's own view (its transform), sharing the data
        ds.transform = jitter
        bs = min(P.batch_size, len(ds))
        loader = det.make_loader(ds, bs, shuffle=True, seed=seed, batch_transform=cp,
                                 drop_last=len(ds) >= 2 * bs)
        epochs = max(1, math.ceil(P.steps / max(1, len(loader))))
        cfg = det.DetTrainConfig(epochs=epochs, lr=P.lr, warmup_iters=max(1, P.steps // 10),
                                 max_steps=P.steps, batch_size=bs, seed=seed)
        hist = det.train_detector(model, loader, cfg, device=P.torch_device,
                                  desc=f"{spec.name}, seed {seed}")
        if cp is not None and hist.epochs:  # kept with the cached model
            hist.epochs[-1].update({f"cp_{k}": float(v) for k, v in cp.stats.items()})
        return hist

    model, hist, info = det.cached_detector("copy_paste_maskrcnn", cfg_key, build, fit, force=P.retrain)
    metrics = det.evaluate(model, d.test, device=P.torch_device, tiers=d.tiers)
    last = hist.epochs[-1] if hist is not None and hist.epochs else {}
    stats = {k[3:]: v for k, v in last.items() if k.startswith("cp_")}
    run = Run(spec, seed, metrics.as_row(), info.train_seconds,
              hist.images_per_s if hist is not None else float("nan"), info.from_cache, len(train),
              hist, stats)
    if log is not None:
        m = run.metrics
        src = "cache" if info.from_cache else f"{info.train_seconds:.0f}s, {run.images_per_s:.0f} img/s"
        log(f"{spec.name:28s} seed {seed}: box AP {m['box_AP']:5.1f}  mask AP {m['mask_AP']:5.1f}  "
            f"({len(train)} images; {src})")
    return run, model


def plan(P: config.Params) -> list[RunSpec]:
    """The configurations of the notebook: the Figure 1 grid (SSJ, LSJ, LSJ + Copy-Paste at every
    fraction) and, when ``P.table10``, the Table 10 ablations at ``P.table10_fraction`` (its
    "random subset + blending" row is the grid's LSJ + Copy-Paste run)."""
    fr = [float(f) for f in P.fractions]
    specs = []
    for f in fr:
        specs += [RunSpec("ssj", False, f), RunSpec("lsj", False, f),
                  RunSpec("lsj", True, f, P.paste_mode, P.blend)]
    if P.table10:
        f = float(P.table10_fraction)
        if f not in fr:
            raise config.ParameterError(f"table10_fraction={f} is not one of fractions={tuple(fr)}")
        for mode, blend in (("one", True), ("all", True), ("random", False), ("random", True)):
            s = RunSpec("lsj", True, f, mode, blend)
            if s not in specs:
                specs.append(s)
    return specs


def run_experiments(P: config.Params, d: CPData | None = None,
                    log: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """Every run of :func:`plan` for ``P.seeds`` seeds. Returns ``{"runs": {spec: [Run, ...]},
    "models": {spec: first seed's model}, "data", "seconds"}``."""
    import time

    d = d or load_data(P)
    t0 = time.perf_counter()
    runs: dict[RunSpec, list[Run]] = {}
    models: dict[RunSpec, torch.nn.Module] = {}
    for spec in plan(P):
        for s in range(P.seeds):
            run, model = train_run(P, d, spec, P.seed + s, log)
            runs.setdefault(spec, []).append(run)
            if s == 0:
                models[spec] = model.cpu().eval()
    return {"runs": runs, "models": models, "data": d, "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------
# tables and the "paper vs. ours" record
# ---------------------------------------------------------------------------------------------
# AP points a single-run comparison must win by to count as reproduced: about one standard
# deviation of a run's AP across training seeds at the study budget (benchmarks/
# calibrate_copy_paste.py, docs/calibration.md). A smaller gap is inconclusive.
SINGLE_RUN_MARGIN = 1.5
# a detector that learned something: box AP of the SSJ baseline on all the data (an untrained
# Mask R-CNN scores about 0)
LEARNED_AP = 3.0

AUG_LABELS = {"ssj": "SSJ", "lsj": "LSJ", "lsj_cp": "LSJ + Copy-Paste"}
TABLE10_ROWS = (("none", "LSJ, no Copy-Paste"), ("one", "Copy-Paste: one object"),
                ("all", "Copy-Paste: all objects"), ("no_blend", "Copy-Paste: random subset, no blending"),
                ("random", "Copy-Paste: random subset + blending"))


def _values(runs: Mapping[RunSpec, list[Run]], spec: RunSpec, key: str) -> list[float]:
    return [r.metrics[key] for r in runs[spec]]


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs))


def _grid_specs(P) -> dict[tuple[str, float], RunSpec]:
    return {(a, float(f)): RunSpec(a.replace("_cp", ""), a.endswith("_cp"), float(f), P.paste_mode, P.blend)
            for a in AUGMENTATIONS for f in P.fractions}


def _table10_specs(P) -> dict[str, RunSpec]:
    f = float(P.table10_fraction)
    return {"none": RunSpec("lsj", False, f), "one": RunSpec("lsj", True, f, "one", True),
            "all": RunSpec("lsj", True, f, "all", True), "no_blend": RunSpec("lsj", True, f, "random", False),
            "random": RunSpec("lsj", True, f, "random", True)}


def tables(P: config.Params, res: Mapping[str, Any]) -> dict[str, Any]:
    """``figure1``: box / mask AP per data fraction and augmentation, with the gain of LSJ +
    Copy-Paste over SSJ and the paper's stated gain; ``table10``: the ablation rows with the
    paper's numbers (when run)."""
    import pandas as pd

    runs, g = res["runs"], _grid_specs(P)
    rows = []
    for f in sorted({float(x) for x in P.fractions}):
        row: dict[str, Any] = {"data": f"{f:.0%}", "train images": runs[g[("ssj", f)]][0].train_size}
        for kind, short in (("box_AP", "box"), ("mask_AP", "mask")):
            for a in AUGMENTATIONS:
                row[f"{short} {AUG_LABELS[a]}"] = _mean(_values(runs, g[(a, f)], kind))
            row[f"{short} gain (CP - SSJ)"] = row[f"{short} LSJ + Copy-Paste"] - row[f"{short} SSJ"]
        row["paper box gain"] = PAPER["fig1_gain_box"].get(f, float("nan"))
        rows.append(row)
    out = {"figure1": pd.DataFrame(rows).set_index("data")}
    if P.table10:
        t = _table10_specs(P)
        out["table10"] = pd.DataFrame([
            {"setup": label, "box AP": _mean(_values(runs, t[k], "box_AP")),
             "mask AP": _mean(_values(runs, t[k], "mask_AP")),
             "paper box AP": PAPER["table10"][k][0], "paper mask AP": PAPER["table10"][k][1]}
            for k, label in TABLE10_ROWS]).set_index("setup")
    return out


def recorder(P: config.Params):
    """The notebook's results recorder; make it first, so its clock times the whole run."""
    from .results import Results

    return Results("10_copy_paste", TITLE, PAPER_URL, P)


def record_results(P: config.Params, res: Mapping[str, Any], rec=None, save: bool = True):
    """The "paper vs. ours" claims, judged by rules (results.py) and saved.

    Gains are differences of AP points between runs of the same seed (a list over seeds when
    ``P.seeds > 1``, so the rules see their spread). With one seed a gain must exceed
    :data:`SINGLE_RUN_MARGIN` to count as reproduced; a smaller one is inconclusive, a negative
    one not reproduced."""
    from .results import AtLeast, Better, Within

    runs, g = res["runs"], _grid_specs(P)
    m = SINGLE_RUN_MARGIN if P.seeds < 2 else 0.0
    fr = sorted({float(x) for x in P.fractions})
    lo, hi = fr[0], fr[-1]

    def gain(a: RunSpec, b: RunSpec, key: str = "box_AP") -> list[float]:
        return [x - y for x, y in zip(_values(runs, a, key), _values(runs, b, key))]

    def pct(f):
        return f"{f:.0%}"

    rec = rec if rec is not None else recorder(P)
    rec.add("learns", f"the SSJ baseline Mask R-CNN learns on {pct(hi)} of the data (box AP above "
            f"{LEARNED_AP:g})", paper=None, ours=_values(runs, g[("ssj", hi)], "box_AP"), unit="AP",
            rule=AtLeast(LEARNED_AP), note=f"mask AP {_mean(_values(runs, g[('ssj', hi)], 'mask_AP')):.1f}")
    rec.add("cp_gain_high", f"LSJ + Copy-Paste beats SSJ with {pct(hi)} of the data [Fig. 1: +5 box AP "
            "at 100% of COCO]", paper=PAPER["fig1_gain_box"][1.0] if hi == 1.0 else None,
            ours=gain(g[("lsj_cp", hi)], g[("ssj", hi)]), unit="AP", rule=Better(0.0, min_effect=m))
    rec.add("cp_gain_low", f"LSJ + Copy-Paste beats SSJ with {pct(lo)} of the data [Fig. 1: +10 box AP "
            "at 10% of COCO]", paper=PAPER["fig1_gain_box"].get(lo), ours=gain(g[("lsj_cp", lo)], g[("ssj", lo)]),
            unit="AP", rule=Better(0.0, min_effect=m))
    if lo != hi:
        low_minus_high = [a - b for a, b in zip(gain(g[("lsj_cp", lo)], g[("ssj", lo)]),
                                                gain(g[("lsj_cp", hi)], g[("ssj", hi)]))]
        rec.add("gain_largest_low_data", f"the gain is larger with {pct(lo)} than with {pct(hi)} of the "
                "data [Fig. 1: +10 vs. +5 box AP]", paper=5.0 if (lo, hi) == (0.1, 1.0) else None,
                ours=low_minus_high, unit="AP", rule=Better(0.0, min_effect=m))
    rec.add("lsj_over_ssj", f"large scale jittering beats standard scale jittering ({pct(hi)} of the data) "
            "[Fig. 1: Strong Aug. above Standard Aug.]", paper=None,
            ours=gain(g[("lsj", hi)], g[("ssj", hi)]), unit="AP", rule=Better(0.0, min_effect=m))
    t1 = PAPER["table1_effb7_640"]
    for key, k, short in (("box_AP", 0, "box"), ("mask_AP", 1, "mask")):
        rec.add(f"cp_over_lsj_{short}", f"Copy-Paste adds to LSJ ({pct(hi)} of the data, {short} AP) "
                f"[Table 1, Eff-B7 FPN 640: +{t1['lsj_cp'][k] - t1['lsj'][k]:.1f}]",
                paper=round(t1["lsj_cp"][k] - t1["lsj"][k], 2) if hi == 1.0 else None,
                ours=gain(g[("lsj_cp", hi)], g[("lsj", hi)], key), unit="AP", rule=Better(0.0, min_effect=m))
    if 0.5 in fr and hi == 1.0:
        rec.add("data_efficiency", "LSJ + Copy-Paste on 50% of the data matches SSJ on 100% [Fig. 1: "
                "'up to 2x more data-efficient']", paper=None,
                ours=gain(g[("lsj_cp", 0.5)], g[("ssj", 1.0)]), unit="AP", rule=AtLeast(0.0),
                note="ours = box AP(LSJ+CP, 50%) - box AP(SSJ, 100%)")
    if P.table10:
        t, p10 = _table10_specs(P), PAPER["table10"]
        for other in ("one", "all"):
            for key, k, short in (("box_AP", 0, "box"), ("mask_AP", 1, "mask")):
                rec.add(f"t10_random_vs_{other}_{short}", f"pasting a random subset beats pasting {other} "
                        f"object{'s' if other == 'all' else ''} ({short} AP) [Table 10: "
                        f"{p10['random'][k]} vs. {p10[other][k]}]",
                        paper=round(p10["random"][k] - p10[other][k], 2),
                        ours=gain(t["random"], t[other], key), unit="AP", rule=Better(0.0, min_effect=m))
        rec.add("t10_blending", "blending does not matter: |AP(blend) - AP(no blend)| within the margin "
                "[Table 10: 50.0 vs. 50.0 box AP]", paper=0.0,
                ours=gain(t["random"], t["no_blend"]), unit="AP",
                rule=Within(0.0, abs_tol=max(m, SINGLE_RUN_MARGIN)))
    if save:
        rec.save()
    return rec


# ---------------------------------------------------------------------------------------------
# pictures
# ---------------------------------------------------------------------------------------------
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

    from . import detection as det

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

    from . import detection as det

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
