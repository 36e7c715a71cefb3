"""Calibrate notebook 06 (DINO): world, ViT size, multi-crop and epochs for the study budget.

One run = DINO pretraining on the world's train split, then the frozen-feature evaluation of the
DINO teacher and of the same ViT randomly initialised (and optionally trained with labels):
weighted k-NN / linear probe top-1 and the Jaccard of the 60%-mass class-token attention
against the objects' masks. Prints one JSON line per run (append with ``--out``)::

    OMP_NUM_THREADS=1 python benchmarks/calibrate_dino.py --epochs 10 --objects 1 2
    OMP_NUM_THREADS=1 python benchmarks/calibrate_dino.py --epochs 4 --ablation no_momentum

The numbers and the choices they led to are in docs/calibration.md (section "DINO").
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from course_lib import selfsup
from course_lib.papers import dino

ABLATIONS = {
    "none": {},
    "no_momentum": {"momentum_teacher_on": False},
    "no_multicrop": {"multi_crop": False},
    "mse": {"loss": "mse"},
    "no_centering": {"centering": False},
    "no_sharpening": {"sharpening": False},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--eval_images", type=int, default=1000)
    ap.add_argument("--image_size", type=int, default=32)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--objects", type=int, nargs=2, default=(1, 2))
    ap.add_argument("--scale", type=float, nargs=2, default=(0.35, 0.6))
    ap.add_argument("--clutter", type=int, default=0)
    ap.add_argument("--bg_contrast", type=float, default=0.6)
    ap.add_argument("--arch", default="course")
    ap.add_argument("--dim", type=int, default=None)
    ap.add_argument("--depth", type=int, default=None)
    ap.add_argument("--heads", type=int, default=None)
    ap.add_argument("--mlp_ratio", type=float, default=None)
    ap.add_argument("--patch", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--local_crops", type=int, default=6)
    ap.add_argument("--local_size", type=int, default=16)
    ap.add_argument("--local_scale", type=float, nargs=2, default=(0.1, 0.4))
    ap.add_argument("--global_scale", type=float, nargs=2, default=(0.4, 1.0))
    ap.add_argument("--out_dim", type=int, default=1024)
    ap.add_argument("--teacher_temp", type=float, default=0.04)
    ap.add_argument("--warmup_teacher_temp", type=float, default=None)
    ap.add_argument("--warmup_teacher_temp_epochs", type=int, default=0)
    ap.add_argument("--momentum", type=float, default=0.996)
    ap.add_argument("--color_jitter", type=float, default=1.0)
    ap.add_argument("--hue_jitter", type=float, default=0.1, help="largest hue turn (0.5: any hue)")
    ap.add_argument("--no_blur", action="store_true")
    ap.add_argument("--drop_path", type=float, default=0.1)
    ap.add_argument("--ablation", default="none", choices=tuple(ABLATIONS))
    ap.add_argument("--supervised", type=int, default=0, help="also train a supervised ViT for N epochs")
    ap.add_argument("--eval_every", type=int, default=0, help="k-NN / Jaccard of the teacher every N epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="append the JSON line to this file")
    a = ap.parse_args()

    wcfg = selfsup.world_config("study", num_images=a.images, eval_images=a.eval_images, image_size=a.image_size,
                             num_classes=a.classes, objects=tuple(a.objects), scale=tuple(a.scale),
                             clutter=a.clutter, bg_contrast=a.bg_contrast)
    arch = dict(selfsup.ARCHS[a.arch])
    for k, v in (("embed_dim", a.dim), ("depth", a.depth), ("num_heads", a.heads), ("mlp_ratio", a.mlp_ratio),
                 ("patch_size", a.patch)):
        if v is not None:
            arch[k] = v
    cfg = selfsup.DINOConfig(model=arch, image_size=a.image_size, local_crops=a.local_crops, local_size=a.local_size,
                          local_scale=tuple(a.local_scale), global_scale=tuple(a.global_scale), out_dim=a.out_dim,
                          epochs=a.epochs, batch_size=a.batch, lr=a.lr, teacher_temp=a.teacher_temp,
                          warmup_teacher_temp=a.warmup_teacher_temp or a.teacher_temp,
                          warmup_teacher_temp_epochs=a.warmup_teacher_temp_epochs, momentum_teacher=a.momentum,
                          color_jitter=a.color_jitter, hue_jitter=a.hue_jitter, blur=not a.no_blur, drop_path=a.drop_path,
                          **ABLATIONS[a.ablation])
    d = dino.world_data(wcfg)
    tr = d.splits["train"]
    fg = float(d.seg_fg.float().mean())
    t0 = time.perf_counter()
    curve = []

    def cb(rec, teacher):
        if a.eval_every and rec["epoch"] % a.eval_every == 0:
            was = teacher.training
            teacher.pretrained_cfg = {"mean": cfg.mean, "std": cfg.std}
            e = dino.evaluate_backbone(teacher, d, linear=False)
            teacher.train(was)
            curve.append((rec["epoch"], round(e["knn"], 1), round(e["jaccard_mean"], 1),
                          round(rec["teacher_entropy"], 2), round(rec["images_per_s"], 1)))
            print("epoch", curve[-1], flush=True)

    model, hist = selfsup.train_dino(tr.images, cfg, device="cpu", seed=a.seed, log=None, callback=cb)
    train_s = time.perf_counter() - t0
    ev = dino.evaluate_backbone(model, d)
    rnd = dino.evaluate_backbone(dino.random_backbone(cfg, a.seed), d)
    row = {
        "args": vars(a), "threads": torch.get_num_threads(), "loadavg": os.getloadavg()[0],
        "fg_fraction": round(100 * fg, 1), "train_s": round(train_s, 1),
        "img_per_s": round(hist.epochs[-1]["images_per_s"], 1),
        "entropy_last": round(hist.epochs[-1]["teacher_entropy"], 3),
        "entropy_curve": [round(r["teacher_entropy"], 2) for r in hist.epochs],
        "marginal_last": round(hist.epochs[-1]["marginal_entropy"], 3),
        "curve": curve, "knn": round(ev["knn"], 1), "linear": round(ev["linear"], 1),
        "jac_mean": round(ev["jaccard_mean"], 1), "jac_best": round(ev["jaccard_best_head"], 1),
        "jac_heads": [round(x, 1) for x in ev["jaccard_per_head"]],
        "rnd_knn": round(rnd["knn"], 1), "rnd_linear": round(rnd["linear"], 1),
        "rnd_jac_mean": round(rnd["jaccard_mean"], 1), "rnd_jac_best": round(rnd["jaccard_best_head"], 1),
    }
    if a.supervised:
        t1 = time.perf_counter()
        sup, info = dino.train_supervised(d, cfg, a.supervised, seed=a.seed, device="cpu", force=True)
        sv = dino.evaluate_backbone(sup, d)
        row.update(sup_s=round(time.perf_counter() - t1, 1), sup_knn=round(sv["knn"], 1),
                   sup_linear=round(sv["linear"], 1), sup_jac_mean=round(sv["jaccard_mean"], 1),
                   sup_jac_best=round(sv["jaccard_best_head"], 1),
                   sup_top1=round(info.history.last("eval_top1"), 1))
    line = json.dumps(row)
    print(line)
    if a.out:
        with open(a.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
