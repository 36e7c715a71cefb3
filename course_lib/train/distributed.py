"""Running :func:`fit` under ``torchrun``: joining and leaving the process group, rank 0, barriers.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.distributed as dist

from course_lib.config import pick_device
from course_lib.data import dist_info

# ---------------------------------------------------------------------------------------------
# distributed


def setup_distributed(device: torch.device | str | None = None) -> torch.device:
    """Join the process group when started by ``torchrun``; return this process's device.

    Outside torchrun (``WORLD_SIZE`` unset or 1) nothing is initialised and the device is
    ``device`` or ``pick_device("auto")``. Under torchrun the backend is nccl for CUDA and gloo
    otherwise, and a CUDA process uses ``cuda:$LOCAL_RANK``. Calling it twice is harmless.
    """
    wanted = torch.device(device) if device is not None else None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and dist.is_available() and not dist.is_initialized():
        on_cuda = wanted.type == "cuda" if wanted is not None else torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if on_cuda else "gloo")
    if dist.is_available() and dist.is_initialized():
        on_cuda = wanted.type == "cuda" if wanted is not None else torch.cuda.is_available()
        if on_cuda:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local_rank)
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    return wanted if wanted is not None else pick_device("auto")


def cleanup_distributed() -> None:
    """Leave the process group (end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    return dist_info()[0] == 0


def _all_reduce_sum(values: Sequence[float], device: torch.device) -> list[float]:
    if dist_info()[1] == 1:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _barrier() -> None:
    if dist_info()[1] > 1:
        dist.barrier()
