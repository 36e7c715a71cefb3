"""Calibrate the detection world and the slim R-CNN recipe of course_lib.detection (notebooks
07, 08, 10): a slim Mask R-CNN (or Faster R-CNN) on a ConvBackbone trained from scratch on
``det.world_config(profile)``, with COCO box / mask AP, LVIS-style rare / common / frequent AP,
train and inference images/s and the load average.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/calibrate_detection.py \\
        --profile study --images 1000 --epochs 4 --set imbalance=2.0 --set objects=2,5

``--set key=value`` overrides a WorldConfig field (tuples as ``a,b``); several runs go in one
call with ``--grid 'epochs=2,4'``. Prints one markdown row per run for docs/calibration.md.
"""
from __future__ import annotations

import argparse
import ast
import time

import torch

from course_lib import detection as det

COLUMNS = ("run", "train img", "epochs", "box AP", "box AP50", "mask AP", "box APr/c/f",
           "mask APr/c/f", "train img/s", "eval img/s", "train s", "threads", "loadavg")


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_sets(items):
    out = {}
    for item in items:
        k, v = item.split("=", 1)
        out[k] = _value(v) if "," not in v else tuple(_value(x) for x in v.split(","))
    return out


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run_one(args, world_over: dict, epochs: int, label: str) -> dict:
    cfg = det.world_config(args.profile, **world_over)
    t0 = time.perf_counter()
    train = det.DetectionDataset(cfg, "train")
    val = det.DetectionDataset(cfg, "val")
    render_s = time.perf_counter() - t0
    counts = train.instance_counts()
    torch.manual_seed(args.seed)
    backbone = det.ConvBackbone(widths=args.widths, out_channels=args.channels)
    model = det.build_detector(backbone, train.num_classes, masks=not args.no_masks,
                               image_size=cfg.image_size, heads=args.heads)
    loader = det.make_loader(train, args.batch, shuffle=True, seed=args.seed)
    tcfg = det.DetTrainConfig(epochs=epochs, lr=args.lr, warmup_iters=args.warmup,
                              amp=args.amp, max_steps=args.max_steps)
    curve = []

    def every(rec):
        if args.eval_every and rec["epoch"] % args.eval_every == 0 and rec["epoch"] < epochs:
            mm = det.evaluate(model, val, device=args.device, tiers=train.tiers())
            curve.append((rec["epoch"], round(mm.summary["bbox"]["AP"], 1),
                          round(mm.summary["segm"]["AP"], 1) if "segm" in mm.summary else None))
            print(f"#   after epoch {rec['epoch']}: box AP {curve[-1][1]}, mask AP {curve[-1][2]}, "
                  f"loss {rec['loss']:.3f}, {rec['images_per_s']:.1f} img/s", flush=True)

    cpu0 = time.process_time()
    hist = det.train_detector(model, loader, tcfg, device=args.device, progress=False, callback=every)
    train_cpu = time.process_time() - cpu0
    cpu0 = time.process_time()
    m = det.evaluate(model, val, device=args.device, batch_size=32, tiers=train.tiers())
    eval_cpu = time.process_time() - cpu0
    s, t = m.summary, m.tiers
    segm = "segm" in s

    def tiers(iou):
        return "/".join(f"{t[iou][k]:.1f}" for k in ("rare", "common", "frequent"))

    row = {
        "run": label, "train img": len(train), "epochs": epochs,
        "box AP": f"{s['bbox']['AP']:.1f}", "box AP50": f"{s['bbox']['AP50']:.1f}",
        "mask AP": f"{s['segm']['AP']:.1f}" if segm else "-",
        "box APr/c/f": tiers("bbox"), "mask APr/c/f": tiers("segm") if segm else "-",
        # train img/s: training steps only (no evaluation); eval img/s: model forward only
        "train img/s": f"{hist.images_per_s:.1f}", "eval img/s": f"{m.images_per_s:.1f}",
        "train s": f"{hist.train_seconds:.0f}", "threads": torch.get_num_threads(),
        "loadavg": loadavg(),
    }
    print(f"# {label}: world {cfg}\n#   render {render_s:.1f}s, instances per class {counts.tolist()}, "
          f"tiers {train.tiers()}, losses {[round(r['loss'], 3) for r in hist.epochs]}, "
          f"APs/m/l box {s['bbox']['APs']:.1f}/{s['bbox']['APm']:.1f}/{s['bbox']['APl']:.1f}\n"
          f"#   CPU time: train {train_cpu:.0f} s (incl. intermediate evals) -> "
          f"{sum(r['images'] for r in hist.epochs) / max(train_cpu, 1e-9):.1f} img per CPU-s; eval "
          f"{len(val) / max(eval_cpu, 1e-9):.1f} img per CPU-s (with COCOeval)", flush=True)
    print("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |", flush=True)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="study", choices=("smoke", "study", "paper"))
    ap.add_argument("--images", type=int, default=None, help="train images (default: profile's)")
    ap.add_argument("--eval-images", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--amp", default="off")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--widths", type=lambda s: tuple(int(x) for x in s.split(",")), default=(32, 64, 128))
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--heads", default="slim")
    ap.add_argument("--no-masks", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=0, help="also evaluate every k epochs")
    ap.add_argument("--set", action="append", default=[], help="WorldConfig override key=value")
    ap.add_argument("--grid", default=None, help="one knob and values: 'epochs=2,4' or 'imbalance=1,2'")
    args = ap.parse_args()
    over = parse_sets(args.set)
    if args.images is not None:
        over["num_images"] = args.images
    if args.eval_images is not None:
        over["eval_images"] = args.eval_images
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    runs = [({}, args.epochs, "base")]
    if args.grid:
        k, vals = args.grid.split("=", 1)
        runs = []
        for v in vals.split(";" if ";" in vals else ","):
            if k == "epochs":
                runs.append(({}, int(v), f"epochs={v}"))
            else:
                val = tuple(_value(x) for x in v.split("/")) if "/" in v else _value(v)
                runs.append(({k: val}, args.epochs, f"{k}={v}"))
    for extra, epochs, label in runs:
        run_one(args, {**over, **extra}, epochs, label)


if __name__ == "__main__":
    main()
