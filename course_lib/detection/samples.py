"""The sample format every detection dataset of the course shares, its base class, and loaders.

A sample is ``(image, target)`` in the torchvision detection convention (see the package
docstring): :func:`masks_to_boxes` and ``_target`` build the target, :class:`_DetectionBase`
gives every dataset its instance counts, frequency tiers and nested subsets, and
:func:`make_loader` batches samples as ``(list of images, list of targets)``.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from course_lib.world import frequency_tiers


# ----------------------------------------------------------------------------------------------
# datasets


def _target(boxes: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, image_id: int,
            size: tuple[int, int]) -> dict[str, Any]:
    masks = masks.to(torch.uint8)
    return {
        "boxes": tv_tensors.BoundingBoxes(boxes.float().reshape(-1, 4), format="XYXY",
                                          canvas_size=size),
        "labels": labels.long().reshape(-1),
        "masks": tv_tensors.Mask(masks),
        "image_id": int(image_id),
        "area": masks.flatten(1).sum(1).float() if len(masks) else torch.zeros(0),
        "iscrowd": torch.zeros(len(labels), dtype=torch.int64),
    }


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """XYXY boxes (n, 4) float32 of binary masks (n, H, W) in the pixel-edge convention of the
    world: a mask covering columns ``x0..x1`` and rows ``y0..y1`` has box
    ``(x0, y0, x1 + 1, y1 + 1)``; an empty mask gives zeros. (``torchvision.ops.masks_to_boxes``
    gives ``x1, y1`` and fails on empty masks, hence this one.) Accepts tv_tensors masks."""
    masks = masks.as_subclass(torch.Tensor) if isinstance(masks, torch.Tensor) else torch.as_tensor(masks)
    n = len(masks)
    out = torch.zeros(n, 4)
    if n == 0:
        return out
    m = masks.bool()
    rows, cols = m.any(2), m.any(1)
    H, W = m.shape[-2:]
    ar_y, ar_x = torch.arange(H), torch.arange(W)
    out[:, 0] = torch.where(cols, ar_x, W).min(1).values
    out[:, 1] = torch.where(rows, ar_y, H).min(1).values
    out[:, 2] = torch.where(cols, ar_x, -1).max(1).values + 1
    out[:, 3] = torch.where(rows, ar_y, -1).max(1).values + 1
    out[~m.flatten(1).any(1)] = 0
    return out


class _DetectionBase(Dataset):
    """What every detection dataset of the course offers besides ``__getitem__``."""

    num_classes: int
    class_names: tuple[str, ...]
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def _labels_of(self, j: int) -> np.ndarray:  # labels (1..K) of underlying item j
        raise NotImplementedError

    def instance_counts(self) -> np.ndarray:
        """Instances per class (K,) in this dataset (index 0 = class 1)."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for j in self.indices:
            lab = self._labels_of(int(j))
            if len(lab):
                counts += np.bincount(lab - 1, minlength=self.num_classes)
        return counts

    def tiers(self) -> list[str]:
        """``rare``/``common``/``frequent`` per class by this dataset's instance counts
        (``world.frequency_tiers``). Use the TRAINING set's tiers for evaluation."""
        return frequency_tiers(self.instance_counts())

    def subset(self, fraction: float, seed: int = 0):
        """The first ``round(fraction * len)`` items of a seeded permutation (nested: the 10 %
        subset is inside the 50 % one for the same seed)."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction={fraction}: allowed (0, 1]")
        perm = np.random.default_rng(seed).permutation(len(self.indices))
        k = max(1, int(round(fraction * len(self.indices))))
        return self._with_indices(self.indices[np.sort(perm[:k])])

    #: COCO's small/medium/large limits (32^2, 96^2 px) are multiplied by area_scale^2 in
    #: :func:`evaluate` (1 for real photos; image_size / 256 for the small world images).
    area_scale: float = 1.0

    def _with_indices(self, indices: np.ndarray):
        import copy

        new = copy.copy(self)
        new.indices = np.asarray(indices, dtype=np.int64)
        new._counts_cache = None
        return new

    def _finish(self, image: torch.Tensor, target: dict, transform) -> tuple:
        if transform is not None:
            image, target = transform(image, target)
            masks = target["masks"]
            target["area"] = masks.flatten(1).sum(1).float() if len(masks) else torch.zeros(0)
            target["iscrowd"] = torch.zeros(len(target["labels"]), dtype=torch.int64)
        return image, target


# ----------------------------------------------------------------------------------------------
# loaders


def collate(batch) -> tuple[list[torch.Tensor], list[dict]]:
    """``[(image, target), ...]`` -> ``(list of images, list of targets)`` (sizes may differ)."""
    images, targets = [], []
    for image, target in batch:
        images.append(image)
        targets.append(target)
    return images, targets


def _collate_then(batch_transform, batch):
    images, targets = collate(batch)
    return batch_transform(images, targets)


def make_loader(dataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                batch_transform: Callable | None = None, num_workers: int = 0,
                drop_last: bool | None = None, device=None):
    """A DataLoader of ``(list of images, list of targets)`` batches.

    ``batch_transform(images, targets) -> (images, targets)`` runs on every collated batch (in
    the worker, when ``num_workers`` > 0): the hook for batch-level augmentations such as
    Simple Copy-Paste. ``drop_last`` defaults to ``shuffle`` (training). Shuffling is seeded;
    under torchrun the loader gets a ``DistributedSampler`` (``data.make_loader``).
    """
    from course_lib.data import make_loader as _make_loader

    fn = collate if batch_transform is None else partial(_collate_then, batch_transform)
    return _make_loader(dataset, batch_size, train=shuffle, num_workers=num_workers, seed=seed,
                        device=device, drop_last=shuffle if drop_last is None else drop_last,
                        collate_fn=fn)
