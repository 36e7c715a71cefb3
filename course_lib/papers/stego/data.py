"""Notebook 11's data: segmentation sets (the offline world's stuff and shapes, PASCAL VOC 2012),
the 5-crop training set, and the frozen backbone's cached patch features."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from course_lib.features import IMAGENET_MEAN, IMAGENET_STD, extract_features  # noqa: F401 (re-exported)



# ---------------------------------------------------------------------------------------------
# data: images and per-pixel labels
# ---------------------------------------------------------------------------------------------
@dataclass
class SegData:
    """Images uint8 (N, 3, S, S) and per-pixel labels int64 (N, S, S); -1 = ignore."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, idx) -> "SegData":
        return SegData(self.images[idx], self.labels[idx], self.class_names)


def world_semantic(data) -> torch.Tensor:
    """All images' per-pixel labels of a ``WorldData`` at once (the same as its
    ``semantic(i)``: stuff kind k -> k, object of class c -> number of stuff kinds + c)."""
    from course_lib.world import STUFF_NAMES

    sem = data.stuff.long().clone()
    inst = data.instance_map.long()
    n = len(sem)
    slot = (inst - 1).clamp(min=0).view(n, -1)
    cls = data.obj_labels.gather(1, slot).view_as(inst)
    fg = inst > 0
    sem[fg] = len(STUFF_NAMES) + cls[fg]
    return sem


def world_segdata(cfg, split: str, root=None) -> SegData:
    """One split of the offline world as a segmentation set (stuff kinds, then shape classes)."""
    from course_lib.world import STUFF_NAMES, load_world

    data = load_world(cfg, split, root)
    return SegData(data.images, world_semantic(data), tuple(STUFF_NAMES) + tuple(cfg.class_names))


VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")


def voc_segdata(folder: str | Path, split: str = "train", size: int = 224,
                limit: int | None = None) -> SegData:
    """PASCAL VOC 2012 segmentation (``VOCdevkit/VOC2012``): the images of
    ``ImageSets/Segmentation/<split>.txt`` resized (shorter side) and centre-cropped to ``size``,
    labels with nearest neighbour; 255 (object borders) becomes -1 (ignored)."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    folder = Path(folder)
    names = (folder / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    if limit is not None:
        names = names[:limit]
    images, labels = [], []
    for n in names:
        img = torch.from_numpy(np.array(Image.open(folder / "JPEGImages" / f"{n}.jpg").convert("RGB"))).permute(2, 0, 1)
        lab = torch.from_numpy(np.array(Image.open(folder / "SegmentationClass" / f"{n}.png"))).long()[None]
        img = TF.center_crop(TF.resize(img, size, antialias=True), size)
        lab = TF.center_crop(TF.resize(lab, size, interpolation=TF.InterpolationMode.NEAREST), size)[0]
        lab[lab == 255] = -1
        images.append(img)
        labels.append(lab)
    return SegData(torch.stack(images), torch.stack(labels), VOC_CLASSES)


def five_crop(data: SegData, ratio: float = 0.5) -> SegData:
    """The "5-crop" training set: torchvision's ``FiveCrop`` (4 corners + centre) of side
    ``ratio * S`` of every image, resized back to ``S`` (labels: nearest neighbour).
    Crop ``5i + k`` is crop k of image i."""
    from torchvision.transforms.v2 import functional as TF

    S = data.images.shape[-1]
    c = max(2, int(round(ratio * S)))
    crops_img = TF.five_crop(data.images, c)                     # 5 x (N, 3, c, c)
    crops_lab = TF.five_crop(data.labels[:, None], c)            # 5 x (N, 1, c, c)
    img = torch.stack([TF.resize(x, [S, S], antialias=True) for x in crops_img], 1)
    lab = torch.stack([TF.resize(x, [S, S], interpolation=TF.InterpolationMode.NEAREST) for x in crops_lab], 1)
    return SegData(img.flatten(0, 1), lab.flatten(0, 1)[:, 0], data.class_names)


# ---------------------------------------------------------------------------------------------
# the frozen backbone: its patch features (pooled features and nearest neighbours: method.py)
# ---------------------------------------------------------------------------------------------
@dataclass
class Backbone:
    """A frozen ViT with the normalisation its training used."""

    vit: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str = "dino"

    @property
    def image_size(self) -> int:
        return int(self.vit.img_size[0])

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.vit.grid_size)

    @property
    def dim(self) -> int:
        return int(self.vit.embed_dim)

    def features(self, images: torch.Tensor, batch_size: int = 256, flip: bool = False,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float16) -> torch.Tensor:
        """Last-layer patch tokens of the frozen backbone as maps (N, D, h, w), stored on the CPU
        (``dtype``, half precision by default: the head converts a batch to float32), through
        the course's one extractor (``course_lib.features.extract_features``) with this
        backbone's normalisation. ``flip``: average with the features of the mirrored image
        (mirrored back), as the official evaluation does."""
        return extract_features(self.vit, images, tokens="patches", batch_size=batch_size,
                                device=device, mean=self.mean, std=self.std, flip=flip, dtype=dtype)
