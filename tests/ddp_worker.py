"""Training run used by ``test_ddp.py``: under torchrun (2 processes) and in one process.

Both runs see the same global batches: with per-process batch B/2, an unshuffled
``DistributedSampler`` gives rank r the samples r, r+2, r+4, ..., so the two ranks together hold
samples 0..B-1 at step 0 -- exactly the single process's first batch of B in sequential order.
DDP averages the two ranks' gradients, which equals the gradient of the mean loss over all B.

Usage: ``python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py OUT.pt CKPT_DIR``
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from course_lib.data import dist_info, make_loader  # noqa: E402
from course_lib.train import TrainConfig, cleanup_distributed, fit, setup_distributed  # noqa: E402

GLOBAL_BATCH = 8
MICRO_STEPS = 2  # gradient accumulation, to exercise DDP's no_sync


def dataset(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return TensorDataset(x, y)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))  # no BatchNorm/dropout


def run(checkpoint_dir: str | None = None) -> tuple[nn.Module, dict]:
    torch.set_num_threads(1)
    device = setup_distributed("cpu")
    _, world = dist_info()
    ds = dataset()
    per_process = GLOBAL_BATCH // world // MICRO_STEPS
    train_loader = make_loader(ds, per_process, train=False, num_workers=0)  # sequential order
    eval_loader = make_loader(ds, 16, train=False, num_workers=0)
    net = model()
    cfg = TrainConfig(epochs=3, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=1e-3,
                      schedule="cosine", warmup_epochs=1, amp="none", progress=False,
                      accum_steps=MICRO_STEPS, checkpoint_dir=checkpoint_dir)
    history = fit(net, train_loader, cfg, eval_loader=eval_loader, device=device)
    return net, history.to_dict()


if __name__ == "__main__":
    out, ckpt = sys.argv[1], sys.argv[2]
    net, history = run(ckpt)
    rank, world = dist_info()
    if rank == 0:
        torch.save({"state_dict": net.state_dict(), "history": history, "world": world}, out)
    cleanup_distributed()
