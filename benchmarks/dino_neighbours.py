"""What do the nearest neighbours of DINO's class tokens share? (issue 17, notebook 06)

Trains DINO on the world (patch 8 on 32 px, one object per image; the recipe of the patch-8
probes in docs/calibration.md, section 06) and reports the weighted k-NN top-1 (k = 20, T = 0.07)
of the DINO teacher's and a random ViT's class tokens for five attributes of the images: the
object's shape (the label), its colour name, the dominant background kind, its size quartile and
its quadrant. An attribute whose k-NN is far above the random ViT's is what DINO learned to keep
invariant across views. ``--plain`` pastes the objects on a flat grey background (a one-off probe,
not a world setting); ``--cue`` is the world's ``color_cue``. One line per model::

    OMP_NUM_THREADS=2 python benchmarks/dino_neighbours.py --epochs 10 --hue 0.1
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from course_lib import selfsup
from course_lib.papers import dino
from course_lib.papers.dino.method import knn_classifier
from course_lib.selfsup import extract_features


def attributes(w, size: int) -> dict[str, torch.Tensor]:
    """Per-image labels of the largest object's shape, colour, size quartile and quadrant, and of
    the dominant background kind."""
    big = w.obj_scales.argmax(1)
    i = torch.arange(len(w))
    sc = w.obj_scales[i, big]
    b = w.boxes[i, big]
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    return {"shape": w.clean_labels.clamp_min(0), "color": w.obj_colors[i, big],
            "bg": torch.mode(w.stuff.flatten(1).long(), 1).values,
            "scale": torch.bucketize(sc, torch.quantile(sc, torch.tensor([0.25, 0.5, 0.75]))),
            "quadrant": (cx > size / 2).long() + 2 * (cy > size / 2).long()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--momentum", type=float, default=0.98)
    ap.add_argument("--hue", type=float, default=0.1)
    ap.add_argument("--cj", type=float, default=1.0)
    ap.add_argument("--bg", type=float, default=0.1)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--gscale", type=float, nargs=2, default=(0.4, 1.0))
    ap.add_argument("--out_dim", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plain", action="store_true")
    ap.add_argument("--local", type=int, default=6)
    ap.add_argument("--cue", type=float, default=0.0)
    ap.add_argument("--scale", type=float, nargs=2, default=(0.5, 0.8))
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--lsize", type=int, default=16)
    a = ap.parse_args()
    wcfg = selfsup.world_config("study", num_images=4000, eval_images=1000, image_size=a.size, num_classes=6,
                                objects=(1, 1), scale=tuple(a.scale), clutter=0, bg_contrast=a.bg,
                                color_cue=a.cue)
    arch = {**selfsup.ARCHS["course_small"], "patch_size": a.patch}
    cfg = selfsup.DINOConfig(model=arch, image_size=a.size, local_crops=a.local, local_size=a.lsize,
                             out_dim=a.out_dim, epochs=a.epochs, batch_size=64, lr=2e-3, teacher_temp=0.04, momentum_teacher=a.momentum,
                             color_jitter=a.cj, hue_jitter=a.hue, global_scale=tuple(a.gscale))
    d = dino.world_data(wcfg)
    tr, te = d.splits["train"], d.splits["test"]
    if a.plain:
        for w in (tr, te, d.splits["val"]):
            fg = (w.instance_map > 0).unsqueeze(1)
            w.images.copy_(torch.where(fg, w.images, torch.full_like(w.images, 110)))

    A_tr, A_te = attributes(tr, a.size), attributes(te, a.size)
    t0 = time.time()
    model, hist = selfsup.train_dino(tr.images, cfg, device="cpu", seed=a.seed, log=None)
    print("train_s", round(time.time() - t0), "H", round(hist.epochs[-1]["teacher_entropy"], 2))
    rnd = dino.random_backbone(cfg, a.seed)
    for name, m in (("dino", model), ("random", rnd)):
        m.pretrained_cfg = {"mean": cfg.mean, "std": cfg.std}
        ftr, fte = extract_features(m, tr.images), extract_features(m, te.images)
        res = {}
        for k in A_tr:
            nc = int(max(A_tr[k].max(), A_te[k].max())) + 1
            res[k] = round(knn_classifier(ftr, A_tr[k], fte, A_te[k], num_classes=nc), 1)
        print(name, json.dumps(res), flush=True)
    for k in A_te:  # chance: the most frequent value
        c = torch.bincount(A_te[k]).float()
        print("chance", k, round(100 * float(c.max() / c.sum()), 1))


if __name__ == "__main__":
    main()
