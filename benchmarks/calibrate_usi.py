"""Calibrate notebook 02 (USI) on the offline world: teacher and students with/without KD.

    python benchmarks/calibrate_usi.py [--families cnn,vit] [key=value ...]

Any ``key=value`` overrides a parameter of the study profile (e.g. ``epochs=3 label_noise=0``).
Models are cached under ``$COURSE_CACHE`` (use a scratch folder). Results: docs/calibration.md.
"""
from __future__ import annotations

import argparse
import ast
import time

import torch

from course_lib import config
from course_lib.classification import accuracy, head_logits, targets_of
from course_lib.papers import usi
from course_lib.results.rules import paired_interval


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default="cnn,vit")
    ap.add_argument("--alphas", default="0,5", help="α_kd values to train (inf: KD only)")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per arm (paired: the same seeds for every "
                    "α_kd); prints the paired KD gain per family with its 95%% interval")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    kw = {}
    for item in args.overrides:
        k, v = item.split("=", 1)
        kw[k] = ast.literal_eval(v) if v[:1].isdigit() or v[:1] in "-[(" or v in ("True", "False") else v
    P = config.resolve(usi.NOTEBOOK, "study", **kw)
    print(f"torch threads {torch.get_num_threads()}; params: " + ", ".join(f"{k}={P[k]}" for k in kw))
    t0 = time.perf_counter()
    d = usi.load_data(P)
    print(f"data {time.perf_counter() - t0:.1f}s: {len(d.train)} train / {len(d.test)} test")
    y = targets_of(d.test)
    teacher, info = usi.train_teacher(P, d)
    print(f"teacher {P.teacher_arch}: {accuracy(head_logits(teacher, d.test, P.torch_device)['cls'], y):.1f}% "
          f"({info.train_seconds:.0f}s)", flush=True)
    alphas = usi.parse_list(args.alphas, usi.experiment._parse_alpha)
    seeds = [P.seed + i for i in range(args.seeds)]
    for fam in args.families.split(","):
        accs: dict[float, list[float]] = {a: [] for a in alphas}
        for s in seeds:
            for a in alphas:
                model, info = usi.train_student(P, d, fam, teacher, s, a, P.tau)
                acc = accuracy(head_logits(model, d.test, P.torch_device)["cls"], y)
                accs[a].append(acc)
                print(f"{fam:>6s} seed {s} alpha_kd={a:g}: {acc:.1f}% ({info.train_seconds:.0f}s)", flush=True)
        for a in alphas[1:]:
            iv = paired_interval(accs[a], accs[alphas[0]])
            print(f"{fam:>6s} alpha_kd={a:g} - alpha_kd={alphas[0]:g}: {iv.text()}", flush=True)
    print(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
