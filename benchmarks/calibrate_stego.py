"""Calibrate notebook 11 (STEGO) on the DINO backbone of notebook 06: speed of each stage and
the quality of the head for a few settings (the shifts b of eq. 4-5, steps, 5-crop, CRF).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/calibrate_stego.py \\
        --backbone study --train-images 1500 --eval-images 500 --steps 1500 --sweep shifts

``--backbone smoke`` uses notebook 06's smoke backbone (6 DINO steps: nearly random features)
to try the pipeline fast. Prints a markdown table for docs/calibration.md.
"""
from __future__ import annotations

import argparse
import time

import torch

from course_lib import config
from course_lib.papers import stego as sg


def row(name, m, secs):
    return f"| {name} | " + " | ".join(f"{m[k]:.1f}" for k in sg.METRICS if k in m) + f" | {secs:.1f} |"


def feature_stats(setup, n=256):
    """Where do the (centred) feature correlations of same-class and different-class patch pairs
    lie, for self, KNN and random pairs? The shifts b of eq. 4 should separate them."""
    n = min(n, len(setup.train_full))
    f = setup.feats_train_full[:n].float()
    lab = setup.train_full.labels[:n]
    h, w = f.shape[-2:]
    S = lab.shape[-1]
    lab = lab[:, S // h // 2::S // h, S // w // 2::S // w]          # the label at each patch centre
    knn = sg.knn_indices(setup.feats_train_full[:n])[:, 0]
    g = torch.Generator().manual_seed(0)
    partners = {"self": torch.arange(n), "knn": knn, "rand": sg.derangement(n, g)}
    print("| pair | same-class F (q10/q50/q90) | different-class F (q10/q50/q90) | share same |")
    print("|---|---|---|---|")
    for name, idx in partners.items():
        f2 = setup.feats_train_full[idx].float()
        l2 = setup.train_full.labels[idx][:, S // h // 2::S // h, S // w // 2::S // w]
        fd = sg.pointwise_centre(sg.correlation(f, f2))
        same = lab[:, :, :, None, None] == l2[:, None, None, :, :]
        q = torch.tensor([0.1, 0.5, 0.9])
        a, b = fd[same].quantile(q) if same.any() else q * 0, fd[~same][:10**6].quantile(q)
        print(f"| {name} | {'/'.join(f'{x:.2f}' for x in a)} | {'/'.join(f'{x:.2f}' for x in b)} | {same.float().mean():.2f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="study", choices=("smoke", "study"))
    ap.add_argument("--train-images", type=int, default=1500)
    ap.add_argument("--eval-images", type=int, default=500)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--sweep", default="shifts", choices=("none", "shifts", "steps", "crf", "crop", "clamp"))
    ap.add_argument("--shifts", default="official,0.2/0.15/0.5,0.3/0.25/0.5,0.4/0.3/0.6",
                    help="b_self/b_knn/b_rand triples, comma separated ('official')")
    ap.add_argument("--no-five-crop", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    prof = "smoke" if args.backbone == "smoke" else "study"
    P = sg.derive(config.resolve("11_stego", profile="study", train_images=args.train_images,
                                 eval_images=args.eval_images, steps=args.steps, seeds=args.seeds,
                                 five_crop=not args.no_five_crop, ablations=False))
    P["backbone_profile"] = prof
    print(f"threads {torch.get_num_threads()}; backbone {prof}; load {open('/proc/loadavg').read().split()[:3]}")
    t0 = time.perf_counter()
    setup = sg.prepare(P)
    print(f"prepare {time.perf_counter() - t0:.1f}s: {setup.seconds}; backbone {setup.backbone.name}, "
          f"dim {setup.backbone.dim}, grid {setup.backbone.grid}, train {len(setup.train)} "
          f"(full {len(setup.train_full)}), eval {len(setup.eval)}, classes {setup.eval.num_classes}")
    n_feat = len(setup.train_full) + 2 * len(setup.eval) + (len(setup.train) if P.five_crop else 0)
    print(f"feature extraction: {n_feat / setup.seconds['features']:.0f} img/s (forward passes)")
    K = setup.eval.num_classes
    dev = P.torch_device
    feature_stats(setup)
    crf = sg.crf_kwargs(P)
    print("| run | unsup acc | unsup mIoU | linear acc | linear mIoU | s |")
    print("|---|---|---|---|---|---|")
    t = time.perf_counter()
    km = sg.kmeans_baseline(setup.feats_train_full, setup.feats_eval, setup.eval)
    print(row("k-means raw", km, time.perf_counter() - t))
    t = time.perf_counter()
    raw = sg.train_run(setup.feats_train_full, setup.train_full.labels, None, K, sg.run_config(P, 0, train_head=False), dev)
    print(row("probes raw", sg.evaluate(raw, setup.feats_eval, setup.eval, None, dev), time.perf_counter() - t))

    def one(name, **changes):
        for seed in range(args.seeds):
            t = time.perf_counter()
            run = sg.train_run(setup.feats_train, setup.train.labels, setup.knn, K, sg.run_config(P, seed, **changes), dev)
            tt = time.perf_counter() - t
            m = sg.evaluate(run, setup.feats_eval, setup.eval, None, dev)
            print(row(f"{name} s{seed} ({args.steps / tt:.0f} steps/s)", m, tt), flush=True)
            if args.sweep == "crf" and seed == 0:
                for srgb, sxy in ((3.0, 6.7), (8.0, 6.7), (15.0, 6.7)):
                    t = time.perf_counter()
                    mc = sg.evaluate(run, setup.feats_eval, setup.eval, {**crf, "bi_srgb": srgb, "bi_sxy": sxy}, dev)
                    print(row(f"  + CRF srgb {srgb} sxy {sxy}", mc, time.perf_counter() - t), flush=True)
        return run

    if args.sweep == "shifts":
        for spec in args.shifts.split(","):
            if spec == "official":
                one("official b", **{k: sg.OFFICIAL_LOSS[k] for k in ("b_self", "b_knn", "b_rand")})
            else:
                bs, bk, br = map(float, spec.split("/"))
                one(f"b {bs}/{bk}/{br}", b_self=bs, b_knn=bk, b_rand=br)
    elif args.sweep == "steps":
        for steps in (250, 500, 1000, 2000):
            one(f"{steps} steps", steps=steps)
    elif args.sweep == "clamp":
        one("clamp")
        one("no clamp", zero_clamp=False)
    else:
        one("default")


if __name__ == "__main__":
    main()
