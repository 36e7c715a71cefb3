"""Calibrate notebook 12 (surgical-skill CNN): simulator difficulty, trial length, CNN width and
epochs together, against the study budget.

Runs the notebook's whole experiment (``surgical.run_experiments``) for one configuration and
prints Table 3 (ours), the claims' key numbers and the training throughput (windows/s).
Examples (1 thread, as the calibration in docs/calibration.md was measured)::

    OMP_NUM_THREADS=1 python benchmarks/calibrate_surgical.py --threads 1
    OMP_NUM_THREADS=1 python benchmarks/calibrate_surgical.py --epochs 12 --difficulty 1.5
    OMP_NUM_THREADS=1 python benchmarks/calibrate_surgical.py --tasks Knot_Tying --windows 30,90
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from course_lib import config
from course_lib.papers import surgical_cnn as surgical


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="study", choices=config.PROFILES)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    for name in ("tasks", "windows", "schemes", "filters"):
        ap.add_argument(f"--{name}", default=None, help="comma-separated")
    for name, typ in (("epochs", int), ("folds", int), ("hidden", int), ("kernel", int),
                      ("lr", float), ("batch_size", int), ("difficulty", float),
                      ("duration_scale", float), ("sim_seed", int), ("step", int)):
        ap.add_argument(f"--{name}", type=typ, default=None)
    ap.add_argument("--json", default=None, help="write the Table-3 frame and timings here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    given = {k: getattr(a, k) for k in ("tasks", "windows", "schemes", "filters", "epochs", "folds",
                                        "hidden", "kernel", "lr", "batch_size", "difficulty",
                                        "duration_scale", "sim_seed", "step")}
    P = config.resolve("12_surgical_cnn", profile=a.profile, seed=a.seed, device="cpu", **given)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    data = surgical.load_data(P)
    t_data = time.perf_counter() - t0
    res = surgical.run_experiments(P, data)
    f = res["frame"]
    n_models = int(f["models"].sum())
    train_s = float(f["train_s"].sum())
    # training windows seen = sum over models of (train windows x epochs)
    seen = 0.0
    for (task, scheme, W), r in f.iterrows():
        per_model_train = (r.windows - r.test_windows / r.models) if scheme == "loso" else r.windows - r.test_windows
        seen += per_model_train * r.models * P.epochs
    cols = ["windows", "accuracy", "accuracy_fold_std", "trial_accuracy", "majority", "f1_novice",
            "f1_intermediate", "f1_expert", "ms_per_window", "train_s"]
    with np.printoptions(precision=3):
        print(f.reset_index()[["task", "scheme", "W"] + cols].round(3).to_string())
    cpu = time.process_time() - cpu0
    print(f"\nthreads {a.threads} | data {t_data:.1f}s | experiments {res['seconds']:.1f}s wall | "
          f"process CPU {cpu:.1f}s | {n_models} models, train {train_s:.1f}s | "
          f"{seen / max(train_s, 1e-9):.0f} train windows/s (wall)")
    for task in res["tasks"]:
        if "loso" in res["schemes"] and len(res["windows"]) > 1:
            lo, hi = min(res["windows"]), max(res["windows"])
            g = [b - a for a, b in zip(res["fold_acc"][(task, "loso", lo)], res["fold_acc"][(task, "loso", hi)])]
            print(f"{task:15s} LOSO gain W{hi}-W{lo}: {100 * np.mean(g):+.1f} ± {100 * np.std(g, ddof=1) / np.sqrt(len(g)):.1f} pp (SE)")
    try:
        with open("/proc/loadavg") as fh:
            print("loadavg", " ".join(fh.read().split()[:3]))
    except OSError:
        pass
    if a.json:
        out = {"params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in P.items()},
               "frame": json.loads(f.reset_index().to_json(orient="records")),
               "data_s": t_data, "experiments_s": res["seconds"], "train_s": train_s, "cpu_s": cpu,
               "train_windows_per_s": seen / max(train_s, 1e-9)}
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
