"""Calibrate the DeiT study profile: world difficulty x model x recipe on this machine.

Trains one model on one view of the world with the course's ``fit`` loop and prints the
validation accuracy after every epoch, the wall time and a JSON line to paste into
``docs/calibration.md``. Run one configuration at a time (2 cores: never two at once), e.g.::

    python benchmarks/calibrate_deit.py --model small_resnet --epochs 8
    python benchmarks/calibrate_deit.py --model course_tiny --epochs 3 --num-classes 10
    python benchmarks/calibrate_deit.py --model course_tiny --epochs 3 --bg-contrast 1.0

The chosen study setting must leave the convnet teacher clearly good (> 80%) and the ViT
student learning but far from perfect (40-70%), so that distillation has room to help.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from course_lib import config, data, train  # noqa: E402
from course_lib.classification import train_transform  # noqa: E402
from course_lib.models import create_vit, small_resnet  # noqa: E402
from course_lib.models.convnets import create_convnet  # noqa: E402
from course_lib.world import WorldClassification, WorldConfig  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="course_tiny", help="course_tiny | small_resnet | any timm name")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-images", type=int, default=8000)
    p.add_argument("--num-classes", type=int, default=6)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--bg-contrast", type=float, default=0.3)
    p.add_argument("--scale", type=float, nargs=2, default=(0.5, 0.85))
    p.add_argument("--objects", type=int, nargs=2, default=(1, 1))
    p.add_argument("--clutter", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    config.seed_everything(0)
    wcfg = WorldConfig(num_images=a.train_images, eval_images=1500, image_size=a.image_size,
                       num_classes=a.num_classes, objects=tuple(a.objects), scale=tuple(a.scale),
                       bg_contrast=a.bg_contrast, clutter=a.clutter)
    t0 = time.perf_counter()
    tr = WorldClassification(wcfg, "train", transform=train_transform(a.image_size, False))
    va = WorldClassification(wcfg, "val")
    world_s = time.perf_counter() - t0
    if a.model == "small_resnet":
        model = small_resnet(a.num_classes)
    elif a.model.startswith(("course_", "deit_", "cifar_")):
        model = create_vit(a.model, num_classes=a.num_classes, img_size=a.image_size)
    else:
        model = create_convnet(a.model, a.num_classes)
    cfg = train.TrainConfig(epochs=a.epochs, lr=a.lr, weight_decay=0.05, warmup_epochs=0.3 * a.epochs,
                            min_lr=1e-5, label_smoothing=0.1, num_classes=a.num_classes, progress=False)
    hist = train.fit(model, data.make_loader(tr, a.batch_size, train=True), cfg,
                     eval_loader=data.make_loader(va, 512, train=False))
    df = hist.as_dataframe()
    print(df.to_string())
    out = {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(a).items()},
           "val_top1": float(df["eval_top1"].iloc[-1]), "train_s": round(float(df["time_s"].sum()), 1),
           "world_s": round(world_s, 1), "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
           "threads": torch.get_num_threads()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
