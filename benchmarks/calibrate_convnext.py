"""Calibrate notebook 04 (ConvNeXt): size, cost and training speed of every ladder step.

Default: for every step of ``course_lib.papers.convnext.LADDER`` at the course scale, print the
parameters, the multiply-adds for one image (GMACs, the paper's "FLOPs") and the measured
training throughput (forward + backward + AdamW step on random images, batch 64) with the
given number of torch threads, plus a JSON line to paste into ``docs/calibration.md``::

    python benchmarks/calibrate_convnext.py                       # course scale, 32 px, 2 threads
    python benchmarks/calibrate_convnext.py --threads 1 --steps 0 12
    python benchmarks/calibrate_convnext.py --image-size 64       # stem stride 4 at 64 px

``--train`` instead trains each selected step on the notebook's world with the notebook's own
code (``convnext.run_ladder``, study profile unless overridden) and prints its table; trained
models go to the artifact cache, so the notebook reuses them when the parameters agree::

    python benchmarks/calibrate_convnext.py --train                  # the study profile as is
    python benchmarks/calibrate_convnext.py --train --steps 0 12 --seeds 2 --lr 2e-3
    python benchmarks/calibrate_convnext.py --train --init trunc_normal --layer-scale 1e-6  # paper init
    python benchmarks/calibrate_convnext.py --train --num-classes 10 --world bg_contrast=0.5 'scale=[0.4,0.8]'
    python benchmarks/calibrate_convnext.py --train --bn-check 20 --out runs/cnx.jsonl --tag mine

``--world KEY=VALUE`` changes fields of the notebook's ``WorldConfig``; ``--bn-check N`` also
evaluates every BatchNorm step after recomputing its statistics on N training batches;
``--device cuda`` trains on a GPU (the calibration used one for learning curves only, never for
times); ``--out`` appends one JSON line per run. Use a scratch cache (``COURSE_CACHE=...``).

Run one measurement at a time: two jobs on 2 cores make both timings meaningless. On a machine
where another job holds a core, use ``--threads 1``: two threads fighting a busy core were 10x
slower than one.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2

try:
    from course_lib import config, train
    from course_lib.papers import convnext
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from course_lib import config, train
    from course_lib.papers import convnext


def train_throughput(model: torch.nn.Module, image_size: int, num_classes: int, batch_size: int,
                     warmup: int, iters: int) -> float:
    """Images per second of forward + backward + AdamW step, after ``warmup`` untimed steps."""
    model.train()
    opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
    x = torch.randn(batch_size, 3, image_size, image_size)
    y = torch.randint(0, num_classes, (batch_size,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return iters * batch_size / (time.perf_counter() - t0)


def measure(a: argparse.Namespace) -> list[dict]:
    """Size, MACs and training speed of every selected step. The speed is the median of
    ``--repeats`` rounds that visit the steps in turn, so that a change of the machine's load
    during the run spreads over all steps instead of landing on a few."""
    stride = convnext.default_stem_stride(a.image_size)
    print(f"scale {a.scale}, {a.image_size} px (stem stride {stride}), batch {a.batch_size}, "
          f"{torch.get_num_threads()} threads, median of {a.repeats} interleaved rounds")
    steps = [convnext.step_index(s) for s in a.steps]
    models, speeds = {}, {i: [] for i in steps}
    for i in steps:
        torch.manual_seed(0)
        models[i] = convnext.build_model(convnext.ladder_config(i, a.scale, stem_stride=stride), a.num_classes)
    for _ in range(a.repeats):
        for i in steps:
            speeds[i].append(train_throughput(models[i], a.image_size, a.num_classes, a.batch_size,
                                              a.warmup, a.iters))
    print(f"{'step':>4s} {'key':>22s} {'params':>9s} {'MMACs':>7s} {'train img/s':>12s}  (min-max)")
    rows = []
    for i in steps:
        cfg = convnext.ladder_config(i, a.scale, stem_stride=stride)
        params, gmacs = convnext.complexity(cfg, a.image_size, a.num_classes)
        ips = statistics.median(speeds[i])
        row = {"step": i, "key": convnext.STEP_KEYS[i], "params_m": round(params / 1e6, 3),
               "mmacs": round(gmacs * 1e3, 2), "train_img_s": round(ips, 1),
               "runs": [round(v, 1) for v in speeds[i]]}
        rows.append(row)
        print(f"{i:4d} {row['key']:>22s} {row['params_m']:8.3f}M {row['mmacs']:7.2f} {ips:12.0f}  "
              f"({min(speeds[i]):.0f}-{max(speeds[i]):.0f})")
    return rows


def _parse_world(items: list[str]) -> dict:
    """``KEY=VALUE`` overrides of the notebook's WorldConfig (values parsed as JSON: 0.3, [1, 2])."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            v = json.loads(value)
        except ValueError:
            v = value
        out[key] = tuple(v) if isinstance(v, list) else v
    return out


def train_ladder(a: argparse.Namespace) -> None:
    options = {"epochs": a.epochs, "train_images": a.train_images, "lr": a.lr, "seeds": a.seeds,
               "num_classes": a.num_classes, "image_size": a.image_size, "batch_size": a.batch_size,
               "scale": a.scale, "retrain": a.retrain, "drop_path": a.drop_path, "device": a.device,
               "data_root": a.data_root, "init": a.init, "layer_scale": a.layer_scale,
               "seed": a.seed}
    given = {k: v for k, v in options.items() if v is not None}
    world = _parse_world(a.world)
    if world:  # calibration of the world itself: the notebook's world with these fields changed
        notebook_world = convnext.experiment.world_config  # load_data looks it up there
        convnext.experiment.world_config = lambda P: notebook_world(P).replace(**world)
    P = config.resolve("04_convnext", profile=a.profile, steps=list(a.steps), **given)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    d = convnext.load_data(P)
    res = convnext.run_ladder(P, d)
    table = convnext.results_table(res)
    print(table.to_string(float_format=lambda x: f"{x:.2f}"))
    record = {"params": {k: P[k] for k in ("epochs", "train_images", "lr", "seeds", "num_classes",
                                           "image_size", "batch_size", "scale", "drop_path", "init",
                                           "layer_scale")},
              "world": {k: list(v) if isinstance(v, tuple) else v for k, v in world.items()},
              "top1": {k: [round(v, 2) for v in vs] for k, vs in res["top1"].items()},
              "train_s": {k: [round(v, 1) for v in vs] for k, vs in res["train_seconds"].items()},
              "wall_s": round(time.perf_counter() - t0, 1), "threads": torch.get_num_threads(),
              "load_avg_1min": load, "device": P.device_resolved}
    if a.bn_check:
        record["top1_bn_recomputed"] = bn_check(P, d, res, a.bn_check)
    if a.tag:
        record["tag"] = a.tag
    print(json.dumps(record))
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps(record) + "\n")


def bn_check(P, d, res, batches: int) -> dict:
    """Test top-1 of every BatchNorm step after its running statistics were recomputed on
    ``batches`` training batches (``torch.optim.swa_utils.update_bn``): how much the
    statistics trailing the weights costs a briefly trained BN network."""
    import itertools

    from torch.optim.swa_utils import update_bn

    from course_lib import data

    dev = P.torch_device
    test_loader = data.make_loader(d.test, 512, train=False, num_workers=0, device=dev)
    out = {}
    for key in res["steps"]:
        for seed in [P.seed + i for i in range(P.seeds)]:
            model, _ = convnext.train_step(P, d, key, seed)  # from the cache
            if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
                continue
            tl = data.make_loader(d.train, P.batch_size, train=True, seed=seed, device=dev)
            update_bn(((x.to(dev), y) for x, y in itertools.islice(tl, batches)), model)
            top1 = train.evaluate(model, test_loader, device=dev)["top1"]
            out.setdefault(key, []).append(round(top1, 2))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", nargs="+", default=list(convnext.STEP_KEYS),
                   help="ladder step keys or indices (default: all)")
    p.add_argument("--scale", default="course", choices=convnext.SCALES)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="torch threads (0: leave the default)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before measuring")
    p.add_argument("--iters", type=int, default=5, help="timed training steps per ladder step and round")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (the median is reported)")
    p.add_argument("--train", action="store_true", help="train each step on the world instead")
    p.add_argument("--profile", default="study", choices=config.PROFILES)
    p.add_argument("--epochs", type=int)
    p.add_argument("--train-images", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seeds", type=int)
    p.add_argument("--seed", type=int, help="first seed (default 0)")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--drop-path", type=float)
    p.add_argument("--init", choices=convnext.INITS)
    p.add_argument("--layer-scale", type=float)
    p.add_argument("--device", help="training device (default: the profile's, auto)")
    p.add_argument("--data-root", help="where the world's splits are cached (default: data)")
    p.add_argument("--world", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override WorldConfig fields, e.g. bg_contrast=0.3 'scale=[0.5,0.85]'")
    p.add_argument("--bn-check", type=int, default=0, metavar="BATCHES",
                   help="also evaluate BN steps after recomputing BN statistics on that many batches")
    p.add_argument("--tag", help="a label stored with the JSON record")
    p.add_argument("--out", help="append the JSON record to this file")
    a = p.parse_args(argv)
    a.steps = [int(s) if s.lstrip("-").isdigit() else s for s in a.steps]
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.train:
        train_ladder(a)
        return 0
    rows = measure(a)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(json.dumps({"scale": a.scale, "image_size": a.image_size, "batch_size": a.batch_size,
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "load_avg_1min": load, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
