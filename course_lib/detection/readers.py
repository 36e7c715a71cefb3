"""Real detection data for the ``paper`` profiles, in the course's sample format:
:class:`PennFudanDataset` (170 images, pedestrians, instance masks) and
:class:`CocoDetectionDataset` (COCO 2017 instances); :func:`get_dataset` is the one entry point
for these and the world.
"""
from __future__ import annotations

import contextlib
import io
from typing import Callable

import numpy as np
import torch
from torchvision import tv_tensors

from course_lib import paths

from .samples import _DetectionBase, _target, masks_to_boxes
from .world import DetectionDataset, world_config


# ----------------------------------------------------------------------------------------------
# real data readers (paper profiles)


class PennFudanDataset(_DetectionBase):
    """Penn-Fudan pedestrians (Wang et al. 2007): 170 images with 345 instance masks, one class.

    Layout (the unpacked ``PennFudanPed.zip``): ``ROOT/PennFudanPed/PNGImages/<name>.png`` and
    ``ROOT/PennFudanPed/PedMasks/<name>_mask.png`` (0 background, 1..n one id per person).
    ``split``: ``train`` (the first ``len - holdout`` images in sorted order), ``val`` (the
    last ``holdout``) or ``all``.
    """

    def __init__(self, root=None, split: str = "train", indices=None,
                 transform: Callable | None = None, holdout: int = 50):
        base = paths.data_root(root) / "PennFudanPed"
        if not (base / "PNGImages").is_dir():
            raise FileNotFoundError(
                f"Penn-Fudan is not in {base}. Fetch it on a machine with internet:\n"
                f"    python data_scripts/fetch.py pennfudan --root {paths.data_root(root)}")
        self.base = base
        self.files = sorted(p.name for p in (base / "PNGImages").glob("*.png"))
        n = len(self.files)
        holdout = min(holdout, n - 1) if n > 1 else 0
        split_idx = {"train": np.arange(0, n - holdout), "val": np.arange(n - holdout, n),
                     "all": np.arange(n)}
        if split not in split_idx:
            raise ValueError(f"split {split!r}: allowed {tuple(split_idx)}")
        self.split = split
        self.indices = split_idx[split] if indices is None else np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.num_classes = 1
        self.class_names = ("person",)
        self._counts_cache = None

    def _read(self, j: int):
        from PIL import Image

        name = self.files[j]
        img = np.array(Image.open(self.base / "PNGImages" / name).convert("RGB"))
        mask = np.array(Image.open(self.base / "PedMasks" / name.replace(".png", "_mask.png")))
        if mask.ndim == 3:
            mask = mask[..., 0]
        ids = np.unique(mask)
        ids = ids[ids != 0]
        masks = torch.from_numpy(mask[None] == ids[:, None, None])
        return img, masks

    def _labels_of(self, j: int) -> np.ndarray:
        return np.ones(len(self._read(j)[1]), dtype=np.int64)

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        img, masks = self._read(j)
        image = tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1).float() / 255)
        H, W = img.shape[:2]
        target = _target(masks_to_boxes(masks), torch.ones(len(masks), dtype=torch.int64), masks,
                         j, (H, W))
        return self._finish(image, target, self.transform)


class CocoDetectionDataset(_DetectionBase):
    """COCO 2017 instances (Lin et al. 2014) in the course's sample format.

    Layout (the official archives unpacked into ROOT/coco): ``ROOT/coco/<image_set>/*.jpg`` and
    ``ROOT/coco/annotations/instances_<image_set>.json``. The 80 categories are mapped to
    labels 1..80 in category-id order. Crowd annotations are dropped (``iscrowd`` is 0), and so
    are images without instances. The course's ``paper`` profile uses ``val2017`` only, split
    by image id into ``train`` (all but every ``holdout_every``-th image) and ``val`` (every
    ``holdout_every``-th); ``split="all"`` keeps all images.
    """

    def __init__(self, root=None, split: str = "train", image_set: str = "val2017", indices=None,
                 transform: Callable | None = None, holdout_every: int = 5,
                 folder: str = "coco"):
        from pycocotools.coco import COCO

        base = paths.data_root(root) / folder
        ann = base / "annotations" / f"instances_{image_set}.json"
        if not ann.is_file():
            raise FileNotFoundError(
                f"COCO {image_set} is not in {base}. Fetch it on a machine with internet:\n"
                f"    python data_scripts/fetch.py coco2017 --root {paths.data_root(root)}")
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(str(ann))
        self.base, self.image_set = base, image_set
        cats = sorted(self.coco.getCatIds())
        self.cat_to_label = {c: i + 1 for i, c in enumerate(cats)}
        self.label_to_cat = {i + 1: c for i, c in enumerate(cats)}
        self.class_names = tuple(self.coco.cats[c]["name"] for c in cats)
        self.num_classes = len(cats)
        ids = sorted(i for i in self.coco.getImgIds()
                     if any(not a.get("iscrowd", 0) for a in self.coco.imgToAnns.get(i, [])))
        if split == "train":
            ids = [i for k, i in enumerate(ids) if k % holdout_every != holdout_every - 1]
        elif split == "val":
            ids = [i for k, i in enumerate(ids) if k % holdout_every == holdout_every - 1]
        elif split != "all":
            raise ValueError(f"split {split!r}: allowed train, val, all")
        self.split = split
        self.image_ids = ids
        self.indices = np.arange(len(ids)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self._counts_cache = None

    def _anns(self, j: int) -> list[dict]:
        return [a for a in self.coco.imgToAnns.get(self.image_ids[j], []) if not a.get("iscrowd", 0)]

    def _labels_of(self, j: int) -> np.ndarray:
        return np.array([self.cat_to_label[a["category_id"]] for a in self._anns(j)], dtype=np.int64)

    def __getitem__(self, i: int):
        from PIL import Image

        j = int(self.indices[i])
        info = self.coco.imgs[self.image_ids[j]]
        img = np.array(Image.open(self.base / self.image_set / info["file_name"]).convert("RGB"))
        H, W = img.shape[:2]
        anns = self._anns(j)
        masks = torch.from_numpy(np.stack([self.coco.annToMask(a) for a in anns])) if anns \
            else torch.zeros(0, H, W, dtype=torch.uint8)
        keep = masks.flatten(1).bool().any(1)
        labels = torch.tensor([self.cat_to_label[a["category_id"]] for a in anns], dtype=torch.int64)
        masks, labels = masks[keep], labels[keep]
        image = tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1).float() / 255)
        target = _target(masks_to_boxes(masks), labels, masks, self.image_ids[j], (H, W))
        return self._finish(image, target, self.transform)


DATASETS = ("world", "pennfudan", "coco2017")


def get_dataset(name: str = "world", split: str = "train", root=None, profile: str = "study",
                transform: Callable | None = None, **kwargs):
    """One entry point: ``"world"`` (:class:`DetectionDataset` on ``world_config(profile,
    **kwargs)``), ``"pennfudan"`` (:class:`PennFudanDataset`) or ``"coco2017"``
    (:class:`CocoDetectionDataset` on val2017). A missing real dataset raises
    ``FileNotFoundError`` naming the fetch command (``python data_scripts/fetch.py NAME``)."""
    if name == "world":
        return DetectionDataset(world_config(profile, **kwargs), split, root, transform=transform)
    if name == "pennfudan":
        return PennFudanDataset(root, split, transform=transform, **kwargs)
    if name == "coco2017":
        return CocoDetectionDataset(root, split, transform=transform, **kwargs)
    raise ValueError(f"unknown detection dataset {name!r}; known: {', '.join(DATASETS)}")

