"""The shared detection pipeline: data, R-CNN models, training, COCO evaluation, drawing.

Notebooks 07 (ViTDet), 08 (frozen backbones) and 10 (Copy-Paste) all detect and segment
objects the same way, so the plumbing lives here once::

    from course_lib import detection as det

    cfg = det.world_config("study")                      # the calibrated detection world
    train_ds = det.DetectionDataset(cfg, "train")
    val_ds = det.DetectionDataset(cfg, "val")
    loader = det.make_loader(train_ds, batch_size=16, shuffle=True)
    model = det.build_detector(det.ConvBackbone(), train_ds.num_classes, masks=True, image_size=64)
    hist = det.train_detector(model, loader, det.DetTrainConfig(epochs=6))
    metrics = det.evaluate(model, val_ds, tiers=train_ds.tiers())
    metrics.summary["segm"]["AP"], metrics.tiers["bbox"]["rare"]

Samples are ``(image, target)`` in the torchvision detection convention: ``image`` a
``tv_tensors.Image`` float32 (3, H, W) in [0, 1]; ``target`` a dict with ``boxes``
(``tv_tensors.BoundingBoxes``, XYXY pixels, box = the visible mask's extent with the right/bottom
edge one past the last pixel), ``labels`` (int64, 1..K; 0 is the background), ``masks``
(``tv_tensors.Mask`` uint8 (n, H, W)), ``image_id``, ``area`` (mask pixels) and ``iscrowd``.
torchvision ``transforms.v2`` work on these pairs directly.

The models are torchvision's Faster / Mask R-CNN (Ren et al. 2015; He et al. 2017) around any
backbone that returns an ``OrderedDict`` of feature maps and has ``out_channels``; the
anchors (one size tuple per level) and the RoI poolers are matched to the backbone's levels
and strides. ``heads="slim"`` is the CPU-sized head set measured in docs/calibration.md.

Evaluation is the COCO protocol (pycocotools ``COCOeval``): AP averaged over IoU 0.50:0.95,
AP50, AP75 and AP for small / medium / large objects, for boxes and masks, in percent; plus
per-class AP and, as LVIS reports it, the mean AP of the rare / common / frequent classes
(tiers from the training instance counts, ``world.frequency_tiers``).

Real data for the ``paper`` profiles: :class:`PennFudanDataset` (170 images, pedestrians,
instance masks) and :class:`CocoDetectionDataset` (COCO 2017 instances), same sample format.
"""
from __future__ import annotations

import contextlib
import io
import math
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import tv_tensors

from . import paths
from .train import History
from .world import (FREQUENCY_TIERS, WORLD_MEAN, WORLD_STD, WorldConfig, WorldData,
                    frequency_tiers, load_world)

__all__ = [
    "world_config", "get_dataset", "DetectionDataset", "PennFudanDataset", "CocoDetectionDataset",
    "collate", "make_loader", "ConvBackbone", "build_detector", "trainable_parameters",
    "backbone_levels", "DetTrainConfig", "DetHistory", "train_detector", "cached_detector",
    "evaluate", "DetMetrics", "predict", "draw_predictions", "draw_sample",
]

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
    from .world import for_profile

    return for_profile(profile, _WORLD_PROFILES["study"], _WORLD_PROFILES, **overrides)


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
    """XYXY boxes (n, 4) of binary masks (n, H, W): ``[x_min, y_min, x_max + 1, y_max + 1]``
    (the convention of the world; an empty mask gives zeros)."""
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
    from .data import make_loader as _make_loader

    fn = collate if batch_transform is None else partial(_collate_then, batch_transform)
    return _make_loader(dataset, batch_size, train=shuffle, num_workers=num_workers, seed=seed,
                        device=device, drop_last=shuffle if drop_last is None else drop_last,
                        collate_fn=fn)


# ----------------------------------------------------------------------------------------------
# backbone


def _norm(kind: str, c: int) -> nn.Module:
    if kind == "gn":
        return nn.GroupNorm(min(8, c), c)
    if kind == "bn":
        return nn.BatchNorm2d(c)
    raise ValueError(f"norm={kind!r}: allowed 'gn', 'bn'")


class _Block(nn.Module):
    """ResNet basic block (He et al. 2016): two 3x3 convs and a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = _norm(norm, cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout))

    def forward(self, x):
        y = F.relu(self.n1(self.conv1(x)))
        y = self.n2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ConvBody(nn.Module):
    """The ResNet-style trunk: a stride-4 stem and one stage per level (stride 4, 8, 16, 32).

    ``forward`` returns an ``OrderedDict`` ``{"0": stride 4, "1": stride 8, ...}``;
    ``channels`` lists each level's channels.
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128), blocks: int | Sequence[int] = 1,
                 norm: str = "gn", in_channels: int = 3):
        super().__init__()
        widths = tuple(widths)
        blocks = (blocks,) * len(widths) if isinstance(blocks, int) else tuple(blocks)
        stem = widths[0] // 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, 3, 2, 1, bias=False), _norm(norm, stem), nn.ReLU(inplace=True),
            nn.Conv2d(stem, widths[0], 3, 2, 1, bias=False), _norm(norm, widths[0]), nn.ReLU(inplace=True),
        )
        stages, cin = [], widths[0]
        for k, (w, b) in enumerate(zip(widths, blocks)):
            layers = [_Block(cin, w, 1 if k == 0 else 2, norm)]
            layers += [_Block(w, w, 1, norm) for _ in range(b - 1)]
            stages.append(nn.Sequential(*layers))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.channels = list(widths)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x) -> "OrderedDict[str, torch.Tensor]":
        x = self.stem(x)
        out = OrderedDict()
        for k, stage in enumerate(self.stages):
            x = stage(x)
            out[str(k)] = x
        return out


class _Classifier(nn.Module):
    """``body`` + global average pool + linear: pretrain a backbone with ``train.fit``.
    The body is shared (not copied): training this trains the backbone."""

    def __init__(self, body: nn.Module, channels: int, num_classes: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        feats = self.body(x)
        last = next(reversed(feats.values()))
        return self.head(last.mean((2, 3)))


class ConvBackbone(nn.Module):
    """Small ResNet-style detection backbone: :class:`ConvBody` + an FPN (Lin et al. 2017).

    ``widths``: channels of the stages at strides 4, 8, 16 (, 32): three levels by default,
    ``levels=4`` adds a stride-32 stage. ``fpn=True`` merges the levels top-down
    (``torchvision.ops.FeaturePyramidNetwork``); ``fpn=False`` only projects each level to
    ``out_channels`` with a 1x1 conv. ``norm="gn"`` (GroupNorm, independent of the batch, so
    a frozen body behaves the same in train and eval mode) or ``"bn"``.
    ``forward(images)`` -> ``OrderedDict`` ``{"0": (B, C, H/4, W/4), "1": ..., ...}`` with
    ``C = out_channels``. ``.body`` is the trunk; ``.classifier(num_classes)`` wraps it for
    classification pre-training with ``course_lib.train.fit``.
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128), out_channels: int = 64,
                 levels: int | None = None, blocks: int | Sequence[int] = 1, fpn: bool = True,
                 norm: str = "gn", in_channels: int = 3):
        super().__init__()
        widths = tuple(widths)
        if levels is not None:
            base = (32, 64, 128, 256)
            widths = tuple(widths[k] if k < len(widths) else base[k] * widths[0] // 32
                           for k in range(levels))
        if not 1 <= len(widths) <= 4:
            raise ValueError(f"{len(widths)} levels: allowed 1..4")
        self.body = ConvBody(widths, blocks, norm, in_channels)
        self.out_channels = out_channels
        self.use_fpn = fpn
        if fpn:
            from torchvision.ops import FeaturePyramidNetwork

            self.fpn = FeaturePyramidNetwork(list(widths), out_channels)
        else:
            self.proj = nn.ModuleList(nn.Conv2d(w, out_channels, 1) for w in widths)

    def classifier(self, num_classes: int) -> nn.Module:
        """A classifier sharing this backbone's ``.body`` (GAP of the last level + linear)."""
        return _Classifier(self.body, self.body.channels[-1], num_classes)

    def forward(self, x) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body(x)
        if self.use_fpn:
            return self.fpn(feats)
        return OrderedDict((k, p(v)) for (k, v), p in zip(feats.items(), self.proj))


# ----------------------------------------------------------------------------------------------
# detector


# Bump when a change here (heads, transforms, losses) changes what a cached detector would be.
PIPELINE_VERSION = 2  # 2: slim Mask R-CNN heads pool 7x7 RoIs for masks (14x14 masks), not 14x14

SLIM_HEADS = dict(box_convs=0, box_fc=128, mask_convs=2, mask_dim=64, rpn_convs=1,
                  box_batch=32, rpn_pre_nms_top_n=200, rpn_post_nms_top_n=100, roi_size=7,
                  detections=32, mask_roi_size=7)
DEFAULT_HEADS = dict(box_convs=0, box_fc=1024, mask_convs=4, mask_dim=256, rpn_convs=1,
                     box_batch=512, rpn_pre_nms_top_n=None, rpn_post_nms_top_n=None, roi_size=7,
                     detections=100, mask_roi_size=14)


@torch.no_grad()
def backbone_levels(backbone: nn.Module, image_size: int = 64) -> list[tuple[str, int]]:
    """``[(name, stride), ...]`` of a backbone's output maps, found by one forward pass of a
    zero image (in eval mode; the training mode is restored)."""
    was = backbone.training
    backbone.eval()
    try:
        p = next(iter(backbone.parameters()), None)
        dev = p.device if p is not None else torch.device("cpu")
        feats = backbone(torch.zeros(1, 3, image_size, image_size, device=dev))
    finally:
        backbone.train(was)
    if not isinstance(feats, Mapping):
        raise TypeError("the backbone must return an OrderedDict of feature maps")
    return [(k, max(1, round(image_size / v.shape[-1]))) for k, v in feats.items()]


def default_anchor_sizes(strides: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """Two anchor sizes per level (2 and 4 x the stride); a single level gets three
    (1, 2 and 4 x the stride... times 2), so it still covers small to large objects."""
    if len(strides) == 1:
        s = strides[0]
        return ((s, 2 * s, 4 * s),)
    return tuple((2 * s, 4 * s) for s in strides)


def _heads(heads: str | Mapping) -> dict:
    if isinstance(heads, str):
        if heads == "slim":
            return dict(SLIM_HEADS)
        if heads == "default":
            return dict(DEFAULT_HEADS)
        raise ValueError(f"heads={heads!r}: allowed 'slim', 'default' or a dict")
    unknown = set(heads) - set(SLIM_HEADS)
    if unknown:
        raise ValueError(f"unknown head settings {sorted(unknown)}; allowed {sorted(SLIM_HEADS)}")
    return {**SLIM_HEADS, **heads}


def build_detector(backbone: nn.Module, num_classes: int, masks: bool = True,
                   image_size: int = 64, heads: str | Mapping = "slim",
                   anchor_sizes: Sequence[Sequence[int]] | None = None,
                   aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                   image_mean: Sequence[float] = WORLD_MEAN, image_std: Sequence[float] = WORLD_STD,
                   **rcnn_kwargs):
    """Faster R-CNN (``masks=False``) or Mask R-CNN around ``backbone``.

    ``backbone``: any module with ``out_channels`` whose forward returns an ``OrderedDict`` of
    maps; the levels and strides are probed once (:func:`backbone_levels`), anchors (one size
    tuple per level, ``aspect_ratios`` at every location) and ``MultiScaleRoIAlign`` are matched
    to them. ``num_classes`` excludes the background. ``image_size``: the transform's
    ``min_size = max_size`` (no resizing of the world's square images; real images are scaled
    so the longer side is ``image_size``). ``heads``: ``"slim"`` (TwoMLPHead 128-d, 32 sampled
    RoIs per image, RPN top-n 200 before / 100 after NMS, 2 x 64-ch mask convs on 7 x 7 RoIs, i.e.
    14 x 14 masks (an object of the 64 px world is 18-35 px wide, so a 14 x 14 mask is close to its own
    resolution; 28 x 28 masks cost 1.6x the training time and 1.5x the evaluation), at most 32
    detections per image: the world has <= 16 objects and Mask R-CNN pastes every detection's
    mask one by one on the CPU), ``"default"``
    (torchvision's) or a dict overriding slim keys: ``box_convs`` (conv layers before the box
    FC, the 4conv1fc head of Mask R-CNN when 4), ``box_fc``, ``mask_convs``, ``mask_dim``,
    ``rpn_convs``, ``box_batch``, ``rpn_pre_nms_top_n``, ``rpn_post_nms_top_n``, ``roi_size``,
    ``mask_roi_size`` (the mask head's RoIAlign output; masks are twice that),
    ``detections``.
    Other keyword arguments go to the torchvision constructor.
    """
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import (FastRCNNConvFCHead, FastRCNNPredictor,
                                                          TwoMLPHead)
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    if not hasattr(backbone, "out_channels"):
        raise TypeError("the backbone needs an `out_channels` attribute")
    h = _heads(heads)
    levels = backbone_levels(backbone, image_size)
    names = [n for n, _ in levels]
    strides = [s for _, s in levels]
    if anchor_sizes is None:
        anchor_sizes = default_anchor_sizes(strides)
    anchor_sizes = tuple(tuple(int(a) for a in sizes) for sizes in anchor_sizes)
    if len(anchor_sizes) != len(names):
        raise ValueError(f"{len(anchor_sizes)} anchor size tuples for {len(names)} levels")
    anchors = AnchorGenerator(anchor_sizes, (tuple(aspect_ratios),) * len(anchor_sizes))
    C = backbone.out_channels
    rpn_head = RPNHead(C, anchors.num_anchors_per_location()[0], conv_depth=h["rpn_convs"])
    r = h["roi_size"]
    box_pool = MultiScaleRoIAlign(names, output_size=r, sampling_ratio=2)
    if h["box_convs"] > 0:
        box_head = FastRCNNConvFCHead((C, r, r), [C] * h["box_convs"], [h["box_fc"]],
                                      norm_layer=partial(nn.GroupNorm, min(8, C)))
    else:
        box_head = TwoMLPHead(C * r * r, h["box_fc"])
    kw: dict[str, Any] = dict(
        min_size=image_size, max_size=image_size, image_mean=list(image_mean),
        image_std=list(image_std), rpn_anchor_generator=anchors, rpn_head=rpn_head,
        box_roi_pool=box_pool, box_head=box_head,
        box_predictor=FastRCNNPredictor(h["box_fc"], num_classes + 1),
        box_batch_size_per_image=h["box_batch"], box_detections_per_img=h["detections"],
    )
    if h["rpn_pre_nms_top_n"] is not None:
        kw.update(rpn_pre_nms_top_n_train=h["rpn_pre_nms_top_n"],
                  rpn_pre_nms_top_n_test=h["rpn_pre_nms_top_n"])
    if h["rpn_post_nms_top_n"] is not None:
        kw.update(rpn_post_nms_top_n_train=h["rpn_post_nms_top_n"],
                  rpn_post_nms_top_n_test=h["rpn_post_nms_top_n"])
    kw.update(rcnn_kwargs)
    if not masks:
        model = FasterRCNN(backbone, **kw)
    else:
        kw.setdefault("mask_roi_pool", MultiScaleRoIAlign(names, output_size=h["mask_roi_size"], sampling_ratio=2))
        kw.setdefault("mask_head", MaskRCNNHeads(C, [h["mask_dim"]] * h["mask_convs"], 1))
        kw.setdefault("mask_predictor", MaskRCNNPredictor(h["mask_dim"], h["mask_dim"], num_classes + 1))
        model = MaskRCNN(backbone, **kw)
    _fast_transform(model.transform)
    model.num_classes = num_classes
    model.levels = levels
    return model


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Paste per-box mask probabilities (N, 1, M, M) into (N, 1, H, W) image-sized maps in one
    ``grid_sample`` (zeros outside the box). Same role as torchvision's ``paste_masks_in_image``,
    which loops over the masks in Python (slow on the CPU) and rounds the boxes outwards; this one
    inverts the mask targets of training (``roi_align`` with ``aligned=False``) exactly, so a
    ground-truth mask survives the round trip target -> paste better (tests/test_detection.py)."""
    H, W = size
    n = len(masks)
    if n == 0:
        return masks.new_zeros(0, 1, H, W)
    boxes = boxes.to(masks.dtype)
    x0, y0, x1, y1 = boxes.unbind(1)
    # pixel i sits at coordinate i, as in the training targets (roi_align with aligned=False)
    xs = torch.arange(W, device=masks.device, dtype=masks.dtype)
    ys = torch.arange(H, device=masks.device, dtype=masks.dtype)
    gx = (xs[None] - x0[:, None]) / (x1 - x0).clamp(min=1e-2)[:, None] * 2 - 1      # (N, W)
    gy = (ys[None] - y0[:, None]) / (y1 - y0).clamp(min=1e-2)[:, None] * 2 - 1      # (N, H)
    grid = torch.stack([gx[:, None, :].expand(n, H, W), gy[:, :, None].expand(n, H, W)], -1)
    return F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _fast_transform(transform: nn.Module) -> nn.Module:
    """The model's GeneralizedRCNNTransform with :func:`paste_masks` in ``postprocess``."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

    class _Transform(GeneralizedRCNNTransform):
        def postprocess(self, result, image_shapes, original_image_sizes):
            if self.training:
                return result
            for i, (pred, im_s, o_im_s) in enumerate(zip(result, image_shapes, original_image_sizes)):
                boxes = resize_boxes(pred["boxes"], im_s, o_im_s)
                result[i]["boxes"] = boxes
                if "masks" in pred:
                    result[i]["masks"] = paste_masks(pred["masks"], boxes, o_im_s)
            return result

    transform.__class__ = _Transform
    return transform


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------
# training


@dataclass
class DetTrainConfig:
    """The detection recipe. ``lr`` is the peak of a linear warm-up (``warmup_iters`` steps)
    followed by a cosine decay to ``min_lr`` (``schedule="cosine"``) or a flat line
    (``"constant"``). ``optimizer``: ``adamw`` or ``sgd`` (momentum). No weight decay on
    1-D parameters (norms, biases). ``amp``: ``auto`` (bf16 on CUDA, off on CPU), ``bf16`` (CPU
    too), ``fp16`` (CUDA, with a GradScaler) or ``off``. ``max_steps`` ends the run early
    (smoke). ``batch_size`` is informational (the loader decides)."""

    epochs: int = 6
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_iters: int = 50
    min_lr: float = 0.0
    amp: str = "auto"
    grad_clip: float | None = 10.0
    batch_size: int = 16
    log_every: int = 0
    max_steps: int | None = None
    seed: int | None = 0

    def __post_init__(self):
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer={self.optimizer!r}: allowed 'adamw', 'sgd'")
        if self.amp not in ("auto", "bf16", "fp16", "off", "none"):
            raise ValueError(f"amp={self.amp!r}: allowed auto, bf16, fp16, off")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule={self.schedule!r}: allowed cosine, constant")


LOSS_NAMES = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")


@dataclass
class DetHistory(History):
    """Per-epoch records (``epoch``, ``step``, ``loss`` and every term of the loss dict,
    ``lr``, ``time_s``, ``images_per_s``, ``peak_mem_mb``, ``skipped_steps``) and per-step
    ``steps`` (``step``, ``loss``, ``lr``). ``peak_mem_mb``: CUDA ``max_memory_allocated`` in
    the epoch; on the CPU the epoch's peak RSS above the RSS at its start (Linux, the peak is
    reset per epoch through ``/proc/self/clear_refs``; NaN elsewhere). ``as_dataframe``,
    ``last``, ``to_dict`` and ``from_dict`` come from :class:`course_lib.train.History`."""

    @property
    def train_seconds(self) -> float:
        return float(sum(r.get("time_s", 0.0) for r in self.epochs))

    @property
    def images_per_s(self) -> float:
        n = sum(r.get("images", 0) for r in self.epochs)
        return n / max(self.train_seconds, 1e-9)

    def plot(self, ax=None):
        """Loss per step (thin) and per epoch (dots) by term; returns the figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 3.4))
        fig = ax.figure
        s = self.steps
        if s["step"]:
            ax.plot(s["step"], s["loss"], lw=0.6, alpha=0.4, label="total (step)")
        x = [r["step"] for r in self.epochs]
        for name in ("loss", *LOSS_NAMES):
            if any(name in r for r in self.epochs):
                ax.plot(x, [r.get(name, float("nan")) for r in self.epochs], "o-", ms=3,
                        label=name.replace("loss_", "") if name != "loss" else "total (epoch)")
        ax.set(xlabel="step", ylabel="loss", title="detection training loss")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


def _proc_status_mb(key: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MiB (Linux), NaN where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (``VmHWM``) on Linux: ``echo 5 > /proc/self/clear_refs``."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _to_device(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
            for t in targets]


def _make_optimizer(params: list[torch.nn.Parameter], cfg: DetTrainConfig):
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _lr_at(step: int, total: int, cfg: DetTrainConfig) -> float:
    """lr of optimizer step ``step`` (0-based): linear warm-up, then cosine (or constant)."""
    w = min(cfg.warmup_iters, max(0, total - 1))
    if step < w:
        return cfg.lr * (step + 1) / (w + 1)
    if cfg.schedule == "constant":
        return cfg.lr
    t = (step - w) / max(1, total - w)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def train_detector(model: nn.Module, loader: Iterable, cfg: DetTrainConfig | None = None,
                   device=None, params: Iterable[torch.nn.Parameter] | None = None,
                   progress: bool = True, callback: Callable[[dict], None] | None = None,
                   desc: str | None = None) -> DetHistory:
    """Train a torchvision detector in place on batches ``(list of images, list of targets)``.

    The loss is the sum of the model's loss dict (RPN objectness + box, RoI classifier + box,
    mask). Only ``params`` (default: the parameters with ``requires_grad``) are optimised.
    AMP through ``course_lib.train.amp_settings`` (``amp="bf16"`` runs bf16 autocast on CPU).
    A step whose loss is not finite is skipped (counted in ``skipped_steps``).
    ``callback(record)`` is called after every epoch with the epoch's record.
    ``progress``: one tqdm bar for the whole run (``desc`` names it; epoch, loss and lr in its
    postfix) and one summary line at the end; ``cfg.log_every`` adds a line every that many
    steps.
    """
    from .config import pick_device, seed_everything
    from .train import amp_settings, finish_bar
    from .train import progress_bar as tqdm

    cfg = cfg or DetTrainConfig()
    device = torch.device(device) if device is not None else pick_device("auto")
    if cfg.seed is not None:
        seed_everything(cfg.seed)
    model.to(device)
    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters")
    amp = "none" if cfg.amp == "off" else cfg.amp
    dtype, use_scaler = amp_settings(amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    opt = _make_optimizer(params, cfg)
    steps_per_epoch = len(loader)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    hist = DetHistory()
    step = 0
    bar = tqdm(total=total, desc=desc or "detector", unit="step", disable=not progress,
               leave=False)
    t_run = time.perf_counter()
    for epoch in range(cfg.epochs):
        if step >= total:
            break
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        model.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rss0 = _proc_status_mb("VmRSS")
        can_peak = device.type != "cuda" and _reset_peak_rss()
        sums: dict[str, float] = {}
        n_img, skipped = 0, 0
        t0 = time.perf_counter()
        for images, targets in loader:
            images = [im.to(device, non_blocking=True) for im in images]
            targets = _to_device(targets, device)
            lr = _lr_at(step, total, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            with (torch.autocast(device.type, dtype=dtype) if dtype is not None
                  else contextlib.nullcontext()):
                loss_dict = model(images, targets)
            loss_dict = {k: v.float() for k, v in loss_dict.items()}
            loss = sum(loss_dict.values())
            opt.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                skipped += 1
            else:
                scaler.scale(loss).backward()
                if cfg.grad_clip is not None:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                scaler.step(opt)
                scaler.update()
                b = len(images)
                n_img += b
                for k, v in {"loss": loss, **loss_dict}.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) * b
            step += 1
            hist.steps["step"].append(step)
            hist.steps["loss"].append(float(loss.detach()))
            hist.steps["lr"].append(lr)
            bar.update(1)
            if progress:
                bar.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}",
                                loss=f"{hist.steps['loss'][-1]:.4f}", lr=f"{lr:.2e}", refresh=False)
            if cfg.log_every and step % cfg.log_every == 0 and progress:
                bar.write(f"step {step}/{total} loss {hist.steps['loss'][-1]:.4f} lr {lr:.2e}")
            if step >= total:
                break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        rec: dict[str, float] = {"epoch": epoch + 1, "step": step}
        rec.update({k: v / max(n_img, 1) for k, v in sums.items()})
        rec.update(lr=hist.steps["lr"][-1] if hist.steps["lr"] else float("nan"), time_s=seconds,
                   images=n_img, images_per_s=n_img / max(seconds, 1e-9), skipped_steps=skipped)
        if device.type == "cuda":
            rec["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        else:  # the epoch's peak RSS above the RSS at its start (NaN where it cannot be measured)
            rec["peak_mem_mb"] = (max(0.0, _proc_status_mb("VmHWM") - rss0) if can_peak
                                  else float("nan"))
        hist.epochs.append(rec)
        if callback is not None:
            callback(rec)
    finish_bar(bar)  # n == total, so a finished run never ends red in Jupyter
    if progress and hist.epochs:
        rec, seconds = hist.epochs[-1], time.perf_counter() - t_run
        images = sum(r["images"] for r in hist.epochs)
        print(f"{desc or 'detector'}: {step} steps, {len(hist.epochs)} epochs | last epoch loss "
              f"{rec.get('loss', float('nan')):.4f} | {images / max(seconds, 1e-9):.1f} img/s | "
              f"{seconds:.1f} s")
    return hist


def cached_detector(name: str, config: dict, build: Callable[[], nn.Module],
                    train: Callable[[nn.Module], DetHistory], force: bool = False,
                    cache_dir=None):
    """Train a detector once and reuse it: ``(model, history, CacheInfo)``.

    ``course_lib.train.cached_model`` does the work (file ``<cache_dir>/<name>-<key>.pt``, the
    key a hash of ``name``, ``config``, :data:`PIPELINE_VERSION` and the course_lib version);
    the :class:`DetHistory` is kept in the file's metadata and restored on a cache hit. ``force=True`` retrains.
    """
    from .train import cached_model

    def _train(model):
        result = train(model)
        hist = result if isinstance(result, DetHistory) else None
        return {"det_history": hist.to_dict() if hist is not None else None,
                "other": None if hist is not None else result}

    config = {**config, "pipeline": PIPELINE_VERSION}
    model, info = cached_model(name, config, build, _train, force=force, cache_dir=cache_dir)
    res = info.result or {}
    hist = DetHistory.from_dict(res["det_history"]) if res.get("det_history") else None
    return model, hist, info


# ----------------------------------------------------------------------------------------------
# evaluation


SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass
class DetMetrics:
    """COCO-style results, all in percent (NaN where undefined, e.g. APl without large
    objects). ``summary[iou_type]``: AP (IoU .50:.95), AP50, AP75, APs, APm, APl.
    ``per_class[iou_type][name]``: AP of each class (NaN for a class without ground truth).
    ``tiers[iou_type]``: mean per-class AP of the ``rare``/``common``/``frequent`` classes.
    ``images_per_s``: inference speed (model forward, no COCOeval)."""

    summary: dict[str, dict[str, float]]
    per_class: dict[str, dict[str, float]]
    tiers: dict[str, dict[str, float]]
    class_tiers: list[str]
    num_images: int
    images_per_s: float
    seconds: float

    def as_row(self, prefix: str = "") -> dict[str, float]:
        """Flat ``{prefix + "box_AP": ..., "box_AP50": ..., "box_APr": ..., "mask_AP": ...}``."""
        row: dict[str, float] = {}
        for iou, short in (("bbox", "box"), ("segm", "mask")):
            if iou not in self.summary:
                continue
            for k, v in self.summary[iou].items():
                row[f"{prefix}{short}_{k}"] = v
            for t, v in self.tiers.get(iou, {}).items():
                row[f"{prefix}{short}_AP{t[0]}"] = v
        return row

    def to_dict(self) -> dict:
        return asdict(self)


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def _coco_gt(targets: Sequence[dict], sizes: Sequence[tuple[int, int]], num_classes: int,
             class_names: Sequence[str]):
    from pycocotools.coco import COCO

    images, anns = [], []
    for img_id, (t, (H, W)) in enumerate(zip(targets, sizes)):
        images.append({"id": img_id, "height": H, "width": W})
        boxes = torch.as_tensor(t["boxes"]).float()
        masks = t.get("masks")
        for k in range(len(t["labels"])):
            x0, y0, x1, y1 = boxes[k].tolist()
            ann = {"id": len(anns) + 1, "image_id": img_id, "category_id": int(t["labels"][k]),
                   "bbox": [x0, y0, x1 - x0, y1 - y0],
                   "area": float(t["area"][k]) if "area" in t else (x1 - x0) * (y1 - y0),
                   "iscrowd": int(t["iscrowd"][k]) if "iscrowd" in t else 0}
            if masks is not None:
                ann["segmentation"] = _rle(np.asarray(masks[k]) > 0)
            anns.append(ann)
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": c + 1, "name": class_names[c]} for c in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _coco_dets(predictions: Sequence[dict], with_masks: bool) -> list[dict]:
    out = []
    for img_id, p in enumerate(predictions):
        boxes = p["boxes"].float()
        masks = p.get("masks") if with_masks else None
        for k in range(len(p["labels"])):
            x0, y0, x1, y1 = boxes[k].tolist()
            d = {"image_id": img_id, "category_id": int(p["labels"][k]),
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(p["scores"][k])}
            if masks is not None:
                m = masks[k]
                m = m[0] if m.ndim == 3 else m
                d["segmentation"] = _rle((m.float() >= 0.5).numpy() if m.is_floating_point()
                                         else m.numpy() > 0)
            out.append(d)
    return out


def coco_metrics(predictions: Sequence[dict], targets: Sequence[dict], num_classes: int,
                 class_names: Sequence[str] | None = None, tiers: Sequence[str] | None = None,
                 iou_types: Sequence[str] = ("bbox", "segm"), sizes=None,
                 area_scale: float = 1.0) -> dict:
    """COCOeval of ``predictions`` (torchvision outputs: boxes, scores, labels[, masks]) against
    ``targets`` (the dataset's targets, same order). Returns ``{"summary", "per_class",
    "tiers"}`` in percent. ``sizes``: (H, W) per image (default: the masks' or boxes' canvas).
    ``area_scale`` scales COCO's object-size limits (small < 32^2, large > 96^2 px) by its
    square, for images much smaller than COCO's."""
    from pycocotools.cocoeval import COCOeval

    class_names = list(class_names) if class_names is not None else [str(c + 1) for c in range(num_classes)]
    if sizes is None:
        sizes = []
        for t in targets:
            if t.get("masks") is not None:
                sizes.append(tuple(t["masks"].shape[-2:]))
            else:
                sizes.append(tuple(t["boxes"].canvas_size))
    gt = _coco_gt(targets, sizes, num_classes, class_names)
    summary, per_class, tier_ap = {}, {}, {}
    for iou in iou_types:
        dets = _coco_dets(predictions, iou == "segm")
        nan = float("nan")
        if not dets:
            summary[iou] = {k: 0.0 for k in SUMMARY_KEYS}
            pc = np.array([0.0 if len(gt.getAnnIds(catIds=[c + 1])) else nan for c in range(num_classes)])
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                dt = gt.loadRes(dets)
                ev = COCOeval(gt, dt, iou)
                a, b = (32 * area_scale) ** 2, (96 * area_scale) ** 2
                ev.params.areaRng = [[0, 1e10], [0, a], [a, b], [b, 1e10]]
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            summary[iou] = {k: (100 * float(v) if v >= 0 else nan) for k, v in zip(SUMMARY_KEYS, ev.stats[:6])}
            prec = ev.eval["precision"][:, :, :, 0, -1]            # (T, R, K) area all, maxDets 100
            pc = np.full(num_classes, nan)
            for k, cat in enumerate(ev.params.catIds):
                p = prec[:, :, k]
                p = p[p > -1]
                if p.size and len(gt.getAnnIds(catIds=[cat])):
                    pc[cat - 1] = 100 * float(p.mean())
        per_class[iou] = {class_names[c]: float(pc[c]) for c in range(num_classes)}
        if tiers is not None:
            tier_ap[iou] = {}
            for t in FREQUENCY_TIERS:
                vals = [pc[c] for c in range(num_classes) if tiers[c] == t and not np.isnan(pc[c])]
                tier_ap[iou][t] = float(np.mean(vals)) if vals else nan
    return {"summary": summary, "per_class": per_class, "tiers": tier_ap}


@torch.no_grad()
def predict(model: nn.Module, dataset, device=None, batch_size: int = 32, amp: str = "auto",
            keep_masks: bool = True) -> tuple[list[dict], list[dict], float]:
    """``(predictions, targets, seconds)`` over the whole dataset (CPU tensors, dataset order);
    ``seconds`` is the time spent in the model."""
    from .train import amp_settings

    p = next(iter(model.parameters()), None)
    device = torch.device(device) if device is not None else (p.device if p is not None else torch.device("cpu"))
    model.to(device)
    dtype, _ = amp_settings("none" if amp == "off" else amp, device)
    was = model.training
    model.eval()
    preds, targets, seconds = [], [], 0.0
    loader = make_loader(dataset, batch_size, shuffle=False, drop_last=False)
    try:
        for images, tgts in loader:
            t0 = time.perf_counter()
            with (torch.autocast(device.type, dtype=dtype) if dtype is not None
                  else contextlib.nullcontext()):
                out = model([im.to(device) for im in images])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds += time.perf_counter() - t0
            for o in out:
                o = {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
                     for k, v in o.items()}
                if "masks" in o and keep_masks:
                    o["masks"] = (o["masks"] >= 0.5).to(torch.uint8)
                preds.append(o)
            targets.extend(tgts)
    finally:
        model.train(was)
    return preds, targets, seconds


def evaluate(model: nn.Module, dataset, device=None, batch_size: int = 32,
             iou_types: Sequence[str] = ("bbox", "segm"), tiers: Sequence[str] | None = None,
             amp: str = "auto", area_scale: float | None = None) -> DetMetrics:
    """COCO evaluation of ``model`` on ``dataset`` (see :class:`DetMetrics`).

    ``tiers``: class tier per class; default ``dataset.tiers()`` (for a world val/test split the
    tiers of its train split). Pass ``train_ds.tiers()`` when training on a subset. ``segm``
    is skipped for a model without a mask head. ``area_scale`` (default
    ``dataset.area_scale``: 1 for real photos, image_size / 256 for the world) scales COCO's
    small / medium / large limits (32^2 and 96^2 px) by its square: at 64 px the limits are
    8^2 and 24^2 px.
    """
    preds, targets, seconds = predict(model, dataset, device, batch_size, amp)
    roi = getattr(model, "roi_heads", None)
    has_masks = roi.has_mask() if roi is not None else bool(preds) and "masks" in preds[0]
    iou_types = tuple(t for t in iou_types if t == "bbox" or has_masks)
    if tiers is None and hasattr(dataset, "tiers"):
        tiers = dataset.tiers()
    if area_scale is None:
        area_scale = getattr(dataset, "area_scale", 1.0)
    res = coco_metrics(preds, targets, dataset.num_classes, dataset.class_names, tiers, iou_types,
                       area_scale=area_scale)
    return DetMetrics(summary=res["summary"], per_class=res["per_class"], tiers=res["tiers"],
                      class_tiers=list(tiers) if tiers is not None else [],
                      num_images=len(preds), images_per_s=len(preds) / max(seconds, 1e-9),
                      seconds=seconds)


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
