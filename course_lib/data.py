"""Datasets and DataLoaders.

``get_dataset(name, split, root, ...)`` is the one entry point for the offline world and the
real datasets (through torchvision). ``make_loader`` builds a DataLoader with workers, pinned
memory and, when ``torch.distributed`` is initialised (torchrun), a ``DistributedSampler``.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import paths


def dist_info() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside DDP."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def default_workers() -> int:
    """Loader workers: ``$COURSE_WORKERS`` or a small number that fits a laptop."""
    env = os.environ.get("COURSE_WORKERS")
    if env is not None:
        return int(env)
    return min(4, max(0, (os.cpu_count() or 1) - 2))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    num_workers: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    drop_last: bool | None = None,
    collate_fn: Callable | None = None,
) -> DataLoader:
    """A DataLoader that does the right thing on a laptop, a GPU box and under torchrun.

    ``batch_size`` is per process. Under DDP the sampler shards the data (shuffled with
    ``seed``; call ``loader.sampler.set_epoch(e)`` each epoch, as ``train.fit`` does).
    Memory is pinned only when the batches go to a CUDA device.
    """
    rank, world = dist_info()
    workers = default_workers() if num_workers is None else num_workers
    dev = torch.device(device) if device is not None else torch.device("cpu")
    sampler = None
    shuffle = train
    if world > 1:
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=train, seed=seed)
        shuffle = False
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
        drop_last=train if drop_last is None else drop_last,
        persistent_workers=workers > 0,
        generator=generator,
        collate_fn=collate_fn,
    )


# ---------------------------------------------------------------------------------------------
# get_dataset


def _torchvision_cifar(name: str, split: str, root, transform, download_hint: str):
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    folder = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    r = paths.data_root(root)
    if not (r / folder).is_dir():
        raise FileNotFoundError(
            f"dataset {name!r} is not in {r / folder}. Fetch it on a machine with internet:\n"
            f"    {download_hint}\n"
            f"then copy the folder {r} here (or pass data_root=...)."
        )
    return cls(str(r), train=(split == "train"), transform=transform, download=False)


def _torchvision_imagenette(split: str, root, transform, download_hint: str):
    from torchvision import datasets

    r = paths.data_root(root)
    if not (r / "imagenette2-160").is_dir():
        raise FileNotFoundError(
            f"dataset 'imagenette' is not in {r / 'imagenette2-160'}. Fetch it on a machine with "
            f"internet:\n    {download_hint}\nthen copy the folder {r} here (or pass data_root=...)."
        )
    return datasets.Imagenette(str(r), split=split, size="160px", transform=transform)


def fetch_command(name: str, root=None) -> str:
    """The exact shell command that downloads a catalog dataset into ``root``."""
    r = paths.data_root(root)
    return f"python data_scripts/fetch.py {name} --root {r}"


SPLITS = ("train", "val", "test")


def get_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    transform: Callable | None = None,
    **kwargs: Any,
) -> Dataset:
    """One entry point for every dataset of the course.

    ``name``: ``"world"`` (the offline scene world; ``kwargs`` go to ``world.WorldConfig``,
    e.g. ``num_images=..., image_size=...``), ``"cifar10"``, ``"cifar100"``, ``"imagenette"``
    (160 px, 10 ImageNet classes).
    ``split``: ``train``, ``val`` or ``test`` (CIFAR and Imagenette have no separate val split:
    ``val`` means ``test``).
    A missing real dataset raises ``FileNotFoundError`` naming the command that fetches it.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    if name == "world":
        from .world import WorldClassification, WorldConfig

        return WorldClassification(WorldConfig(**kwargs), split=split, root=root, transform=transform)
    if name in ("cifar10", "cifar100"):
        return _torchvision_cifar(name, "train" if split == "train" else "test", root, transform,
                                  fetch_command(name, root))
    if name == "imagenette":
        return _torchvision_imagenette("train" if split == "train" else "val", root, transform,
                                       fetch_command(name, root))
    raise ValueError(f"unknown dataset {name!r}; known: world, cifar10, cifar100, imagenette")
