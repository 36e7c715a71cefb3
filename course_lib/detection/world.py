"""Detection views of the offline world: the calibrated detection world of each profile
(:func:`world_config`) and :class:`DetectionDataset`, its instance detection / segmentation view.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torchvision import tv_tensors

from course_lib.world import WorldConfig, WorldData, frequency_tiers, load_world

from .samples import _DetectionBase, _target


# ----------------------------------------------------------------------------------------------
# the calibrated world

# Calibrated in benchmarks/calibrate_detection.py (numbers in docs/calibration.md).
_WORLD_PROFILES: dict[str, dict[str, Any]] = {
    "study": dict(num_images=2000, eval_images=300, image_size=64, num_classes=8,
                  objects=(2, 5), scale=(0.28, 0.55), occlusion=0.35, clutter=2,
                  imbalance=1.5, color_cue=0.0, bg_contrast=0.7, noise=0.03, seed=0),
    "smoke": dict(num_images=48, eval_images=16),
    "paper": dict(num_images=8000, eval_images=1000),
}


def world_config(profile: str = "study", **overrides) -> WorldConfig:
    """The detection world of a profile (``smoke``/``study``/``paper``), with ``overrides``.

    Several objects per image that may overlap (occlusion), small distractor shapes (clutter,
    unlabelled), textured backgrounds and Zipf class imbalance, so the class-frequency tiers
    rare / common / frequent exist. ``smoke`` and ``paper`` share the study world and change
    only the number of images.
    """
    from course_lib.world import for_profile

    return for_profile(profile, _WORLD_PROFILES["study"], _WORLD_PROFILES, **overrides)



class DetectionDataset(_DetectionBase):
    """Instance detection / segmentation view of the offline world.

    ``world``: a :class:`WorldConfig` (the split is loaded from the world cache under
    ``root``) or an already loaded :class:`WorldData`. ``indices`` selects images of the split.
    ``transform(image, target) -> (image, target)`` runs per sample (torchvision
    ``transforms.v2`` compatible); ``area`` and ``iscrowd`` are recomputed after it.
    Objects hidden completely by occlusion are not instances; clutter shapes are background.
    """

    def __init__(self, world: WorldConfig | WorldData, split: str = "train", root=None,
                 indices=None, transform: Callable | None = None):
        if isinstance(world, WorldData):
            self.data, self.config, self.split = world, world.config, world.split
        else:
            self.data, self.config, self.split = load_world(world, split, root), world, split
        self.root = root
        self.transform = transform
        self.area_scale = self.config.image_size / 256
        self.num_classes = self.config.num_classes
        self.class_names = tuple(self.config.class_names)
        n = len(self.data.images)
        self.indices = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        self._visible = self._visible_slots()
        self._counts_cache = None

    def _visible_slots(self) -> torch.Tensor:
        """(N, M) bool: slot m of image i is a visible instance."""
        d = self.data
        M = d.obj_labels.shape[1]
        vis = torch.zeros(d.obj_labels.shape, dtype=torch.bool)
        for m in range(M):
            vis[:, m] = (d.instance_map == m + 1).flatten(1).any(1)
        return vis & (d.obj_labels >= 0)

    def _labels_of(self, j: int) -> np.ndarray:
        return (self.data.obj_labels[j][self._visible[j]] + 1).numpy()

    def instance_counts(self) -> np.ndarray:
        if self._counts_cache is None:
            idx = torch.from_numpy(self.indices)
            lab = self.data.obj_labels[idx][self._visible[idx]]
            self._counts_cache = np.bincount(lab.numpy(), minlength=self.num_classes).astype(np.int64)
        return self._counts_cache

    def tiers(self) -> list[str]:
        """Tiers by the TRAINING instance counts: this dataset's own counts for the train split,
        the whole train split of the same world otherwise."""
        if self.split == "train":
            return frequency_tiers(self.instance_counts())
        if getattr(self, "_train_tiers", None) is None:
            train = DetectionDataset(self.config, "train", self.root)
            self._train_tiers = frequency_tiers(train.instance_counts())
        return list(self._train_tiers)

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        masks, labels, boxes = self.data.masks(j)
        S = self.config.image_size
        image = tv_tensors.Image(self.data.images[j].float() / 255)
        target = _target(boxes, labels + 1, masks, j, (S, S))
        return self._finish(image, target, self.transform)
