"""Image classification, the shared layer: the data bundle, the transforms, the calibrated
classification view of the offline world, and the evaluation helpers (per-head test logits,
test targets, top-1 accuracy).

It came out of the DeiT notebook's module and is used by the classification notebooks:
02 USI, 03 DeiT, 04 ConvNeXt and 09 MiniViT (``course_lib.papers.usi``, ``.deit``,
``.convnext``, ``.minivit``). Like every shared layer, it imports no paper package.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from . import config, data
from .metrics import topk_accuracy
from .models.vit import VisionTransformer

__all__ = ["ClassificationData", "load_data", "train_cached", "train_transform", "eval_transform", "world_config",
           "head_logits", "targets_of", "accuracy"]


@dataclass
class ClassificationData:
    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    test: torch.utils.data.Dataset
    num_classes: int
    class_names: list[str]
    key: dict = field(default_factory=dict)  # what identifies the data, for the model cache

    def cache_key(self) -> dict:
        """What identifies the data in a model's cache key: ``key`` (the world's configuration
        key or the dataset's name) and the training transform as printed (every augmentation and
        its settings), so a change of either trains anew."""
        return {**self.key, "num_classes": self.num_classes,
                "train_transform": repr(getattr(self.train, "transform", None))}


def train_transform(image_size: int, strong: bool):
    """Light augmentation for a short budget (crop + flip); the DeiT recipe adds RandAugment
    (rand-m9-mstd0.5) and random erasing 0.25 when ``strong``."""
    from torchvision.transforms import v2

    from .world import WORLD_MEAN, WORLD_STD

    ops = [v2.RandomCrop(image_size, padding=image_size // 8, padding_mode="reflect"),
           v2.RandomHorizontalFlip()]
    if strong:
        ops.append(v2.RandAugment(num_ops=2, magnitude=9))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(WORLD_MEAN, WORLD_STD)]
    if strong:
        ops.append(v2.RandomErasing(p=0.25))
    return v2.Compose(ops)


def load_data(dataset: str, data_root, image_size: int, *, world=None, strong: bool = False,
              real_strong: bool | None = None, center_crop: bool = True) -> ClassificationData:
    """The classification notebooks' data (03 DeiT, 02 USI, 09 MiniViT, 04 ConvNeXt).

    ``dataset="world"``: the offline world of ``world`` (a ``WorldConfig``), its train split
    augmented with :func:`train_transform` (``strong``), its val and test splits as they are.
    A real dataset (``cifar10``, ``cifar100``, ``imagenette``; ``data_scripts/fetch.py``) through
    ``data.get_dataset``: resized to ``image_size`` (and center-cropped), augmented with
    ``real_strong`` (default ``strong``); its val split is its test split. A dataset that is not
    on disk raises ``FileNotFoundError`` naming the command that fetches it.
    """
    from torchvision.transforms import v2

    if dataset == "world":
        from .world import WorldClassification

        tr = WorldClassification(world, "train", data_root, transform=train_transform(image_size, strong))
        va = WorldClassification(world, "val", data_root)
        te = WorldClassification(world, "test", data_root)
        return ClassificationData(tr, va, te, world.num_classes, list(world.class_names),
                                  key={"world": world.key("train")})
    size = [v2.ToImage(), v2.Resize(image_size, antialias=True)]
    if center_crop:
        size.append(v2.CenterCrop(image_size))
    strong = strong if real_strong is None else real_strong
    tr = data.get_dataset(dataset, "train", data_root,
                          transform=v2.Compose(size + [train_transform(image_size, strong)]))
    te = data.get_dataset(dataset, "test", data_root, transform=v2.Compose(size + [eval_transform()]))
    # torchvision's Imagenette classes are tuples of WordNet names
    names = [c[0] if isinstance(c, (tuple, list)) else str(c) for c in tr.classes]
    return ClassificationData(tr, te, te, len(names), names, key={"dataset": dataset})


def train_cached(name: str, d: ClassificationData, cfg, build, *, batch_size: int, device,
                 seed: int | None = None, loader_seed: int | None = None, criterion=None,
                 make_criterion=None, model: dict | None = None, loss: dict | None = None, code: int | None = None,
                 force: bool = False):
    """Train a classifier on ``d`` with ``train.fit`` once and reuse it (``train.cached_model``):
    the loop every classification notebook runs for its teachers, students and ladder steps.

    The cache key is the data (:meth:`ClassificationData.cache_key`), the loader (batch size,
    shuffling seed), ``model`` (the builder's arguments), the whole recipe ``cfg``, ``loss``
    (what the criterion does, a teacher by its ``weights_digest``) and the paper's ``code``
    version; ``train.cached_model`` adds the built model's architecture. ``seed``: seed every
    generator before building and before training (students); ``None`` keeps the caller's random
    state for the initialisation (the teachers, as they always were). ``loader_seed`` (default
    ``seed`` or 0) shuffles the training batches. ``make_criterion(model)`` builds a criterion
    that needs the model (hooks on its layers); one with a ``close`` method is closed after
    training. Returns ``(model, train.CacheInfo)``.
    """
    from . import train

    loader_seed = loader_seed if loader_seed is not None else (seed if seed is not None else 0)
    key = {"data": d.cache_key(), "loader": {"batch_size": batch_size, "seed": loader_seed},
           "model": model, "recipe": cfg, "loss": loss, "code": code}

    def built():
        if seed is not None:
            config.seed_everything(seed)
        return build().to(device)

    def fit(net):
        if seed is not None:
            config.seed_everything(seed)
        tl = data.make_loader(d.train, batch_size, train=True, seed=loader_seed, device=device)
        vl = data.make_loader(d.val, 512, train=False, device=device)
        crit = make_criterion(net) if make_criterion is not None else criterion
        try:
            return train.fit(net, tl, cfg, criterion=crit, eval_loader=vl, device=device)
        finally:
            if hasattr(crit, "close"):
                crit.close()

    return train.cached_model(name, key, built, fit, force=force)


def eval_transform():
    from torchvision.transforms import v2

    from .world import WORLD_MEAN, WORLD_STD

    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(WORLD_MEAN, WORLD_STD)])


def world_config(P: config.Params):
    """The calibrated DeiT view of the world (see docs/calibration.md): single objects of
    ``num_classes`` shapes over low-contrast real textures, with ``label_noise`` of the
    training labels replaced by a random class (which may be the right one: for 6 classes about
    21% of the training labels end up wrong; test labels are clean). Without label noise a 98%
    teacher's hard labels are nearly the ground truth and hard distillation has nothing to add
    (measured: 39.1% vs. 38.1% without distillation); real datasets carry such noise and
    ambiguity, which is where the teacher's hard decisions help (paper, Sec. 4)."""
    from .world import SHAPE_NAMES, WorldConfig

    if P.num_classes > len(SHAPE_NAMES):
        raise config.ParameterError(f"parameter 'num_classes' = {P.num_classes}: the world has "
                                    f"{len(SHAPE_NAMES)} shape classes; allowed: 2..{len(SHAPE_NAMES)}")
    return WorldConfig(num_images=P.train_images, eval_images=P.eval_images, image_size=P.image_size,
                       num_classes=P.num_classes, objects=(1, 1), scale=(0.5, 0.85),
                       bg_contrast=0.3, label_noise=P.label_noise, seed=0)


@torch.no_grad()
def head_logits(model: nn.Module, dataset, device, batch_size: int = 512) -> dict[str, torch.Tensor]:
    """Test logits of every head: ``cls`` (and ``dist``, ``both`` for a distillation-token ViT).

    ``both`` averages the two heads' logits, as the official eval forward does."""
    model.eval()
    loader = data.make_loader(dataset, batch_size, train=False, num_workers=0, device=device)
    outs: dict[str, list[torch.Tensor]] = {}
    for x, _ in loader:
        x = x.to(device, non_blocking=True)
        if isinstance(model, VisionTransformer) and model.distilled:
            tokens = model.forward_features(x)
            cls, dist = model.head(tokens[:, 0]), model.head_dist(tokens[:, 1])
            parts = {"cls": cls, "dist": dist, "both": (cls + dist) / 2}
        else:
            parts = {"cls": model(x)}
        for k, v in parts.items():
            outs.setdefault(k, []).append(v.float().cpu())
    return {k: torch.cat(v) for k, v in outs.items()}


def targets_of(dataset) -> torch.Tensor:
    t = getattr(dataset, "targets", None)
    return torch.as_tensor(t) if t is not None else torch.tensor([y for _, y in dataset])


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float(topk_accuracy(logits, targets, topk=(1,))[0])
