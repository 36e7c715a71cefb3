"""Calibrate notebook 10 (Simple Copy-Paste): throughput, and what the grid measures.

Runs configurations of the notebook's grid (``copy_paste.plan``) with overrides of the study
profile and prints one line per run: training images/s, seconds, box / mask AP on the test set.
Use one torch thread while other jobs share the machine; estimate the quiet 2-core time from
images/s (a 1-thread run takes about 1.7x the 2-thread time on a quiet machine).

    OMP_NUM_THREADS=1 python benchmarks/calibrate_copy_paste.py --runs ssj@0.1,lsj_cp@1 --steps 90
    OMP_NUM_THREADS=1 python benchmarks/calibrate_copy_paste.py --grid --seeds 2
    OMP_NUM_THREADS=1 python benchmarks/calibrate_copy_paste.py --speed      # img/s per augmentation

Run names: ``<jitter>[_cp]@<fraction>[:<mode>][:noblend]``, e.g. ``lsj_cp@1:one``.
Trained detectors are cached under ``COURSE_CACHE`` (default the course cache); ``--retrain``
ignores them. Numbers go to docs/calibration.md ("Copy-Paste (notebook 10)").
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from course_lib import config  # noqa: E402
from course_lib.papers import copy_paste as cp  # noqa: E402


def parse_spec(text: str, P) -> cp.RunSpec:
    head, *opts = text.split(":")
    aug, frac = head.split("@")
    jitter = aug.replace("_cp", "")
    mode = next((o for o in opts if o in cp.PASTE_MODES), P.paste_mode)
    return cp.RunSpec(jitter, aug.endswith("_cp"), float(frac), mode, "noblend" not in opts)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def speed(P, d, steps: int = 12) -> None:
    """Training img/s of SSJ, LSJ and LSJ + Copy-Paste (after one warm-up step), and the data
    pipeline alone (jitter + paste, no model), and inference img/s."""
    from course_lib import detection as det

    for spec in (cp.RunSpec("ssj", False, 1.0), cp.RunSpec("lsj", False, 1.0), cp.RunSpec("lsj", True, 1.0)):
        jitter, paste = cp.augmentation(P, spec)
        ds = d.train.subset(1.0)
        ds.transform = jitter
        loader = det.make_loader(ds, P.batch_size, shuffle=True, batch_transform=paste)
        t0, n = time.perf_counter(), 0
        for k, (images, targets) in enumerate(loader):
            n += len(images)
            if k >= 20:
                break
        pipe = n / (time.perf_counter() - t0)
        torch.manual_seed(0)
        model = det.build_detector(det.ConvBackbone(), d.num_classes, image_size=P.image_size, heads=P.heads,
                                   box_detections_per_img=P.detections)
        det.train_detector(model, loader, det.DetTrainConfig(epochs=1, max_steps=1), progress=False)
        h = det.train_detector(model, loader, det.DetTrainConfig(epochs=1, max_steps=steps, warmup_iters=1),
                               progress=False)
        objs = sum(len(t["labels"]) for _, t in [ds[i] for i in range(64)]) / 64
        print(f"{spec.aug:7s} train {h.images_per_s:6.1f} img/s | data pipeline alone {pipe:7.0f} img/s | "
              f"{objs:.1f} objects/image before pasting | load {loadavg()}", flush=True)
    m = det.evaluate(model, d.test)
    print(f"inference {m.images_per_s:.0f} img/s on {m.num_images} test images; evaluate() total "
          f"{m.seconds:.1f}s in the model", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="study")
    ap.add_argument("--runs", default="", help="comma-separated run names (see the module doc)")
    ap.add_argument("--grid", action="store_true", help="every run of the notebook's plan")
    ap.add_argument("--speed", action="store_true", help="img/s per augmentation")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--train-images", type=int)
    ap.add_argument("--eval-images", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--sigma", type=float)
    ap.add_argument("--lsj", type=float, nargs=2)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--retrain", action="store_true")
    a = ap.parse_args(argv)
    over = {k: v for k, v in dict(steps=a.steps, train_images=a.train_images, eval_images=a.eval_images,
                                  lr=a.lr, batch_size=a.batch_size, sigma=a.sigma,
                                  lsj_range=tuple(a.lsj) if a.lsj else None).items() if v is not None}
    P = config.resolve("10_copy_paste", profile=a.profile, seed=a.seed, retrain=a.retrain, **over)
    print(f"threads {torch.get_num_threads()} | load {loadavg()} | steps {P.steps} x batch {P.batch_size} | "
          f"train_images {P.train_images} | lr {P.lr} | lsj {P.lsj_range} | sigma {P.sigma}", flush=True)
    t0 = time.perf_counter()
    d = cp.load_data(P)
    print(f"data: {len(d.train)} train / {len(d.test)} test images, {d.num_classes} classes, tiers "
          f"{d.tiers} ({time.perf_counter() - t0:.1f}s)", flush=True)
    if a.speed:
        speed(P, d)
    specs = cp.plan(P) if a.grid else [parse_spec(s, P) for s in a.runs.split(",") if s]
    total = 0.0
    for spec in specs:
        for s in range(a.seeds):
            t1 = time.perf_counter()
            run, _ = cp.train_run(P, d, spec, P.seed + s, log=None)
            m = run.metrics
            total += time.perf_counter() - t1
            print(f"{spec.name:28s} seed {P.seed + s} | {run.train_size:4d} img | train {run.train_seconds:5.1f}s "
                  f"{run.images_per_s:5.1f} img/s{' (cache)' if run.from_cache else ''} | box AP {m['box_AP']:5.2f} "
                  f"AP50 {m['box_AP50']:5.2f} | mask AP {m['mask_AP']:5.2f} AP50 {m['mask_AP50']:5.2f} | "
                  f"run+eval {time.perf_counter() - t1:5.1f}s | load {loadavg()} | {run.cp_stats or ''}",
                  flush=True)
    if specs:
        print(f"total {total:.0f}s for {len(specs) * a.seeds} runs (threads {torch.get_num_threads()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
