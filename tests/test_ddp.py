"""Two-process DDP (torchrun, gloo, CPU) ends with the same weights as one process."""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")
REPO = WORKER.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_worker():
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path, monkeypatch):
    out, ckpt = tmp_path / "ddp.pt", tmp_path / "ckpt"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}",
           str(WORKER), str(out), str(ckpt)]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)
    assert ddp["world"] == 2

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    single, single_history = load_worker().run(None)
    assert not torch.distributed.is_initialized()

    for name, p in single.state_dict().items():
        torch.testing.assert_close(ddp["state_dict"][name], p, atol=1e-5, rtol=1e-5, msg=name)
    # the weights moved, so the comparison means something
    initial = load_worker().model().state_dict()["0.weight"]
    assert not torch.allclose(single.state_dict()["0.weight"], initial)
    # same schedule, same (all-reduced) losses, same evaluation over the sharded eval set
    assert ddp["history"]["steps"]["lr"] == pytest.approx(single_history["steps"]["lr"])
    for d, s in zip(ddp["history"]["epochs"], single_history["epochs"]):
        assert d["train_loss"] == pytest.approx(s["train_loss"], rel=1e-5)
        assert d["eval_top1"] == pytest.approx(s["eval_top1"])
        assert d["eval_loss"] == pytest.approx(s["eval_loss"], rel=1e-5)

    # only rank 0 wrote the checkpoint; it holds both ranks' random state
    assert [p.name for p in ckpt.iterdir()] == ["last.pt"]
    state = torch.load(ckpt / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and len(state["rng"]) == 2
