"""Calibrate notebook 05 (CLEAR): world stream, model sizes, recipes and their cost.

Usage (numbers go to docs/calibration.md, section "05 CLEAR")::

    OMP_NUM_THREADS=1 python benchmarks/calibrate_clear.py speed
        # stream rendering, ResNet train/eval throughput per width, linear cost
    OMP_NUM_THREADS=1 python benchmarks/calibrate_clear.py run --set resnet_width=16 resnet_epochs=3
        # the whole grid of the study profile with overrides; prints Table 1, the claims and timings
    OMP_NUM_THREADS=1 python benchmarks/calibrate_clear.py run --families resnet --methods finetune,er

``--threads`` sets torch's intra-op threads (default 1: the machine is shared). Every run prints
``/proc/loadavg`` so that timings can be read against the load.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from course_lib import config
from course_lib.papers import clear


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def parse_sets(items: list[str]) -> dict:
    out = {}
    for it in items:
        k, _, v = it.partition("=")
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def speed(args) -> None:
    P = config.resolve("05_clear", profile=args.profile, **parse_sets(args.set))
    t0 = time.perf_counter()
    stream = clear.load_stream(P)
    n = sum(len(b) for b in stream.buckets)
    print(f"stream: {n} images in {time.perf_counter() - t0:.1f}s (cached renders load at once); "
          f"bucket sizes {[len(b) for b in stream.buckets]}  load {loadavg()}")
    from course_lib.models.convnets import small_resnet

    x = clear.experiment._normalize(stream.buckets[1].images[:256])
    y = stream.buckets[1].labels[:256]
    for width in (8, 16, 32):
        m = small_resnet(stream.num_classes, width=width)
        opt = torch.optim.Adam(m.parameters(), 1e-3)
        m.train()
        bs = P.batch_size
        t = time.perf_counter()
        seen = 0
        while time.perf_counter() - t < 4:
            for s in range(0, 256 - bs + 1, bs):
                loss = F.cross_entropy(m(clear.augment_batch(x[s:s + bs])), y[s:s + bs])
                opt.zero_grad()
                loss.backward()
                opt.step()
                seen += bs
        tr = seen / (time.perf_counter() - t)
        t = time.perf_counter()
        k = 0
        while time.perf_counter() - t < 2:
            clear.accuracy(m, x, y)
            k += 1
        ev = k * len(x) / (time.perf_counter() - t)
        params = sum(p.numel() for p in m.parameters())
        t = time.perf_counter()
        clear.fisher_diagonal(m, x[:128])
        fi = 128 / (time.perf_counter() - t)
        print(f"small_resnet width {width:3d}: {params:,} params, train {tr:6.0f} img/s (batch {bs}), "
              f"eval {ev:6.0f} img/s, Fisher {fi:5.0f} img/s  load {loadavg()}")


def run(args) -> None:
    sets = parse_sets(args.set)
    if args.methods:
        sets["methods"] = tuple(args.methods.split(","))
    if args.families:
        sets["families"] = tuple(args.families.split(","))
    P = config.resolve("05_clear", profile=args.profile, **sets)
    print({k: P[k] for k in sorted(P) if k not in ("notebook",)})
    print(f"load before: {loadavg()}  threads {torch.get_num_threads()}")
    t0 = time.perf_counter()
    res = clear.run_experiments(P)
    print(f"timing: { {k: round(v, 1) for k, v in res['timing'].items()} }  load after: {loadavg()}")
    import pandas as pd

    pd.set_option("display.width", 200, "display.max_columns", 30)
    print(clear.table1(res).round(1).to_string())
    if args.record:
        rec = clear.record_results(P, res)
        print(rec.table()[["paper", "ours", "verdict"]].to_string())
    # per-variant accuracy of the finetuned ResNet / linear models on the next bucket
    print(f"total {time.perf_counter() - t0:.0f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("speed", "run"))
    ap.add_argument("--profile", default="study")
    ap.add_argument("--set", nargs="*", default=[], help="parameter overrides key=value")
    ap.add_argument("--methods", default="")
    ap.add_argument("--families", default="")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--record", action="store_true", help="judge the claims (results JSON is written "
                    "to COURSE_RESULTS_DIR)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("COURSE_RESULTS_DIR", "/tmp/clear_results")
    {"speed": speed, "run": run}[args.what](args)


if __name__ == "__main__":
    main()
