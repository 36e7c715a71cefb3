"""Simple Copy-Paste, the method (Ghiasi et al., CVPR 2021, Sec. 3, Fig. 2 and 3).

* scale jittering of each image on its own: :func:`scale_jitter` with :data:`SSJ_RANGE` (standard)
  or :data:`LSJ_RANGE` (large), gray padding (:data:`PAD_GRAY`), ending with
  :class:`RefreshFromMasks`;
* which source objects are pasted: :func:`select_objects` (:data:`PASTE_MODES`, Table 10);
* blending, ``I = I_1 alpha + I_2 (1 - alpha)`` with a Gaussian-smoothed alpha: :func:`blend_alpha`;
* pasting one pair with occlusion-aware annotations (``m_k <- m_k & ~alpha``, fully occluded
  objects dropped, boxes from masks): :func:`paste`, :func:`refresh_target`, :func:`masks_to_boxes`;
* the whole batch: :class:`SimpleCopyPaste`, the ``batch_transform`` hook of
  ``course_lib.detection.make_loader``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from course_lib.detection import masks_to_boxes

__all__ = [
    "LSJ_RANGE", "PAD_GRAY", "PAIRINGS", "PASTE_MODES", "SSJ_RANGE", "RefreshFromMasks", "SimpleCopyPaste",
    "blend_alpha", "from_rectangles", "gaussian_kernel_size", "masks_to_boxes", "paste", "refresh_target",
    "scale_jitter", "select_objects",
]

SSJ_RANGE = (0.8, 1.25)   # standard scale jittering (Sec. 3, Fig. 3a)
LSJ_RANGE = (0.1, 2.0)    # large scale jittering (Sec. 3, Fig. 3b)
PAD_GRAY = 0.5            # "padded with gray pixel values" (Fig. 3 caption), images in [0, 1]
PASTE_MODES = ("random", "one", "all")
PAIRINGS = ("shift", "random")


# ---------------------------------------------------------------------------------------------
# annotations from masks
# ---------------------------------------------------------------------------------------------
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
        self.seed = None if generator is not None else (0 if seed is None else int(seed))
        if generator is None:
            generator = torch.Generator()
            generator.manual_seed(0 if seed is None else int(seed))
        self.generator = generator
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats = {"images": 0, "pasted_into": 0, "pasted_objects": 0, "occluded_dropped": 0}

    def __repr__(self) -> str:
        return (f"SimpleCopyPaste(mode={self.mode!r}, fraction={self.fraction}, blend={self.blend}, "
                f"sigma={self.sigma:g}, p={self.p:g}, pairing={self.pairing!r}, "
                f"min_area={self.min_area}, seed={self.seed})")

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
