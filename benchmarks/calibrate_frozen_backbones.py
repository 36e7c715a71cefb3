"""Calibrate notebook 08 (frozen backbones): speed of every (strategy, capacity) cell, and the grid.

Speed (default): for each strategy (scratch / finetune / frozen / adapters) at each capacity
(``frozen_backbones.CAPACITIES``) it times a few training steps (forward + losses + backward +
AdamW step) of the notebook's detector on batches of the detection world, by wall clock and by
CPU time (robust to other processes on a shared machine), best of ``--rounds`` interleaved
rounds, plus the classification pre-training step of the backbone; one JSON line per model::

    python benchmarks/calibrate_frozen_backbones.py --threads 1
    python benchmarks/calibrate_frozen_backbones.py --masks --threads 2

Grid (``grid``): runs the notebook's own ``frozen_backbones.run_experiments`` for a profile (cached
under ``$COURSE_CACHE``) with overrides, prints the tables, each cell's AP / speed / memory and the
total time, and one ``RESULT {json}`` line::

    python benchmarks/calibrate_frozen_backbones.py grid --profile study
    python benchmarks/calibrate_frozen_backbones.py grid --set epochs=6 --set train_images=1200
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def speed(args) -> None:
    from course_lib import detection as det
    from course_lib.papers import frozen_backbones as fb
    from course_lib.world import WorldClassification

    world = det.world_config("study", image_size=args.image_size)
    ds = det.DetectionDataset(world, "train", indices=range(16 * (args.steps + 2)))
    loader = det.make_loader(ds, 16, shuffle=False)
    batches = [b for b in loader]
    body = det.ConvBackbone(widths=tuple(args.widths), blocks=args.blocks, norm="bn").body
    models = {}
    for cap in args.capacities:
        for s in fb.STRATEGIES:
            m = fb.build_strategy_detector(body, s, cap, world.num_classes, masks=args.masks,
                                           image_size=args.image_size)
            params = [p for p in m.parameters() if p.requires_grad]
            models[(s, cap)] = (m, torch.optim.AdamW(params, 1e-3))
    best: dict = {}
    for _ in range(args.rounds):
        for key, (m, opt) in models.items():
            m.train()
            for i, (im, tg) in enumerate(batches):
                if i == 2:
                    w0, c0 = time.perf_counter(), time.process_time()
                loss = sum(m(list(im), tg).values())
                opt.zero_grad()
                loss.backward()
                opt.step()
            n = 16 * (len(batches) - 2)
            w, c = n / (time.perf_counter() - w0), n / (time.process_time() - c0)
            b = best.get(key, (0, 0))
            best[key] = (max(b[0], w), max(b[1], c))
    for (s, cap), (w, c) in best.items():
        cnt = fb.count_parameters(models[(s, cap)][0])
        print(json.dumps({"model": f"{s}/{cap}", "masks": args.masks, "threads": torch.get_num_threads(),
                          "img_s_wall": round(w, 1), "img_s_cpu": round(c, 1), "trained": cnt["trained"],
                          "total": cnt["total"], "load": load()}))
    up = world.replace(num_images=512, imbalance=0.0, seed=world.seed + 100)
    x, y = WorldClassification(up, "train").tensors()
    clf = det.ConvBackbone(widths=tuple(args.widths), blocks=args.blocks, norm="bn").classifier(world.num_classes)
    opt = torch.optim.AdamW(clf.parameters(), 1e-3)
    for i in range(8):
        if i == 2:
            w0, c0 = time.perf_counter(), time.process_time()
        loss = torch.nn.functional.cross_entropy(clf(x[i * 64:(i + 1) * 64]), y[i * 64:(i + 1) * 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(json.dumps({"model": "pretrain classifier (batch 64)", "img_s_wall": round(384 / (time.perf_counter() - w0), 1),
                      "img_s_cpu": round(384 / (time.process_time() - c0), 1), "load": load()}))


def grid(args) -> None:
    from course_lib import config
    from course_lib.papers import frozen_backbones as fb

    overrides = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        overrides[k] = ast.literal_eval(v)
    P = config.resolve("08_frozen_backbones", profile=args.profile, **overrides)
    t0 = time.perf_counter()
    res = fb.run_experiments(P)
    total = time.perf_counter() - t0
    import pandas as pd

    pd.set_option("display.width", 200)
    for name, t in fb.tables(res).items():
        if t is not None:
            print(f"\n## {name}\n{t.round(2).to_string()}")
    cells = {f"{s}/{c}": {"box_AP": round(r[0].metrics.summary["bbox"]["AP"], 2),
                          "box_AP50": round(r[0].metrics.summary["bbox"]["AP50"], 2),
                          "tiers": {k: round(v, 2) for k, v in r[0].metrics.tiers["bbox"].items()},
                          "img_s": round(r[0].images_per_s, 1), "train_s": round(r[0].train_seconds, 1),
                          "mem_mib": round(r[0].memory["total"], 1), "trained": r[0].params["trained"]}
             for (s, c), r in res["runs"].items()}
    print("RESULT " + json.dumps({"profile": P.profile, "overrides": overrides, "total_s": round(total, 1),
                                  "upstream_top1": round(res["upstream"]["top1"], 1),
                                  "upstream_s": round(res["upstream"]["seconds"], 1),
                                  "threads": torch.get_num_threads(), "load": load(), "cells": cells}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="speed", choices=("speed", "grid"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--masks", action="store_true")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--capacities", nargs="+", default=["low", "high"])
    ap.add_argument("--profile", default="study")
    ap.add_argument("--set", action="append", default=[], help="notebook parameter override k=v")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    (grid if args.mode == "grid" else speed)(args)


if __name__ == "__main__":
    main()
