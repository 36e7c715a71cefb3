"""Calibrate notebook 07 (ViTDet): throughput of the pretraining and detection runs, and the
box AP the study recipe reaches, so the study profile fits its budget.

    OMP_NUM_THREADS=1 python benchmarks/calibrate_vitdet.py throughput      # img/s per variant
    OMP_NUM_THREADS=1 python benchmarks/calibrate_vitdet.py pretrain        # MAE / supervised curves
    OMP_NUM_THREADS=1 python benchmarks/calibrate_vitdet.py study [k=v ...] # the study tables
    OMP_NUM_THREADS=1 python benchmarks/calibrate_vitdet.py noise           # seed noise of the default row

Report ``cut -d' ' -f1-3 /proc/loadavg`` beside the numbers; a 1-thread run on a quiet machine
takes about 1.7x the 2-thread time.
"""
from __future__ import annotations

import os
import sys
import time

import torch

from course_lib import config, detection as det
from course_lib.papers import vitdet as vd


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def throughput(P, d, steps: int = 6) -> None:
    """Training and inference images/s of each detector variant (random weights)."""
    loader = det.make_loader(d.train, P.batch_size, shuffle=True, seed=0)
    batches = [b for _, b in zip(range(steps + 1), loader)]
    for name, v in vd.variants(P).items():
        if v.pretrain != "mae" and name != "default":
            continue  # pretraining does not change the speed
        model = vd.build_detector(P, v, d.num_classes, None)
        opt = torch.optim.AdamW(model.parameters(), 1e-4)
        model.train()
        for i, (imgs, tg) in enumerate(batches):
            if i == 1:
                t0 = time.perf_counter()
            loss = sum(model(imgs, tg).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        tr = steps * P.batch_size / (time.perf_counter() - t0)
        m = det.evaluate(model, d.val, iou_types=("bbox",))
        cx = vd.complexity(model.backbone, P.image_size)
        print(f"{name:>12s}: train {tr:6.1f} img/s | eval {m.images_per_s:6.1f} img/s | "
              f"backbone {cx['params_m']:.3f}M params {cx['gflops'] * 1e3:.1f} MFLOPs | load {loadavg()}",
              flush=True)


def pretrain_speed(P, d) -> None:
    """MAE and supervised pretraining: images/s and the loss/accuracy after the profile's epochs."""
    t0 = time.perf_counter()
    enc, mae, info = vd.train_mae(P, d)
    first, last = (info.history.epochs[i].get("train_loss", float("nan")) for i in (0, -1))
    print(f"MAE {P.mae_epochs} ep x {len(d.pretrain)} img: {info.train_seconds:.0f}s "
          f"({P.mae_epochs * len(d.pretrain) / max(info.train_seconds, 1e-9):.0f} img/s), "
          f"loss {first:.3f} -> {last:.3f} | load {loadavg()}", flush=True)
    vit, info = vd.train_supervised(P, d)
    from course_lib.world import WorldClassification
    val = WorldClassification(vd.experiment._pretrain_world(P, d.train.config), "val", root=P.data_root)
    x, y = val.tensors()
    with torch.no_grad():
        acc = (vit.eval()(x).argmax(1) == y).float().mean().item() * 100
    print(f"supervised {P.sup_epochs} ep: {info.train_seconds:.0f}s "
          f"({P.sup_epochs * len(d.pretrain) / max(info.train_seconds, 1e-9):.0f} img/s), val top-1 {acc:.1f}% "
          f"| load {loadavg()}", flush=True)
    print(f"pretraining total {time.perf_counter() - t0:.0f}s")


def noise(P, seeds=(1, 2)) -> None:
    """Fine-tuning seed noise of the default row: the same MAE backbone (seed P.seed), detector
    initialisation and data order from other seeds."""
    d = vd.load_data(P)
    enc, _, info = vd.train_mae(P, d)
    aps = []
    for s in (P.seed, *seeds):
        Ps = config.Params({**P, "seed": s})
        model, hist, dinfo = vd.train_detector(Ps, d, vd.Variant(), enc, info)
        m = det.evaluate(model, d.val, iou_types=("bbox",))
        aps.append(m.summary["bbox"]["AP"])
        print(f"default, detector seed {s}: box AP {aps[-1]:.2f} AP50 {m.summary['bbox']['AP50']:.2f} "
              f"({'cache' if dinfo.from_cache else f'{dinfo.train_seconds:.0f}s'}) | load {loadavg()}", flush=True)
    t = torch.tensor(aps)
    print(f"box AP over {len(aps)} detector seeds: mean {t.mean():.2f}, std {t.std():.2f}")


def study(P) -> None:
    t0 = time.perf_counter()
    res = vd.run_experiments(P)
    for name, tab in vd.tables(res).items():
        print(name)
        print(tab.round(2).to_string())
    for n, r in res["runs"].items():
        h = r.history
        ips = h.images_per_s if h is not None and hasattr(h, "images_per_s") else float("nan")
        print(f"{n:>14s} AP {r.ap['bbox_AP']:.2f} AP50 {r.ap['bbox_AP50']:.2f} train {r.train_seconds:.0f}s "
              f"({ips:.1f} img/s)")
    print(f"study experiments {time.perf_counter() - t0:.0f}s | load {loadavg()}")


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "throughput"
    over = {}
    for kv in sys.argv[2:]:
        k, v = kv.split("=")
        over[k] = type(config.specs_for("07_vitdet")[k].default_for("study"))(v) if not v.startswith("(") else eval(v)
    P = config.resolve("07_vitdet", profile=os.environ.get("COURSE_PROFILE", "study"), **over)
    print(f"torch threads {torch.get_num_threads()} | load {loadavg()} | {dict(over)}")
    if what == "study":
        study(P)
        return
    if what == "noise":
        noise(P)
        return
    d = vd.load_data(P)
    if what == "throughput":
        throughput(P, d)
    elif what == "pretrain":
        pretrain_speed(P, d)


if __name__ == "__main__":
    main()
    t = os.times()
    print(f"CPU seconds: user {t.user + t.children_user:.0f}, system {t.system + t.children_system:.0f} "
          f"| load {loadavg()}")
