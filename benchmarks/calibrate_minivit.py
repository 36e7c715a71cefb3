"""Calibrate notebook 09 (MiniViT): training speed and accuracy of the models it trains.

Speed (default): for the teacher, the original student, the weight-shared students (every 2
layers, all layers), the shared students with weight transformations, and shared students trained
with each mix of the distillation losses (teacher forward included), it times a few training
steps (forward + loss + backward + AdamW step) on random 32 px images and prints images/s by wall
clock and by CPU time, best of ``--rounds`` interleaved rounds, plus one JSON line per model to
paste into ``docs/calibration.md``. Run it alone (2 cores: never two benchmarks at once)::

    python benchmarks/calibrate_minivit.py
    python benchmarks/calibrate_minivit.py --threads 1 --rounds 3 --teacher course_teacher_d6

Accuracy (``train``): trains the notebook's teacher and chosen students with the notebook's own
code (``minivit.train_teacher`` / ``train_student``, cached under ``$COURSE_CACHE``) and prints one
``RESULT {json}`` line per model (test top-1, training seconds, images/s, validation top-1 per
epoch, load average)::

    python benchmarks/calibrate_minivit.py train --students original,ws_wt_wd
    python benchmarks/calibrate_minivit.py train --set teacher_lr=0.002 --set teacher_stem='"conv"' \
        --world bg_contrast=0.15 --students none
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from course_lib.models.vit import VisionTransformer
from course_lib.papers import minivit as mv
from course_lib.papers.minivit import experiment as mvx  # its private helpers; the probes patch it


def images_per_s(model: nn.Module, criterion, batch: int, steps: int, warmup: int, size: int,
                 classes: int) -> tuple[float, float]:
    """Training throughput: ``warmup`` untimed steps, then ``steps`` timed ones. Returns images/s
    by wall-clock time and by this process's CPU time; with one thread on a shared machine the
    CPU-time rate is close to what a quiet machine gives (time spent waiting for a core is not
    counted)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, classes, (batch,))
    model.train()
    t0 = c0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            t0, c0 = time.perf_counter(), time.process_time()
        out = model(x)
        loss = criterion(x, out, y)
        loss = loss[0] if isinstance(loss, tuple) else loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    n = batch * steps
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="course_tiny", choices=mv.STUDENTS)
    p.add_argument("--teacher", default="course_teacher_d4", choices=mv.TEACHERS)
    p.add_argument("--teacher-stem", default="patch", choices=("patch", "conv"))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=3, help="timed steps per model and round")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1,
                   help="measure every model this many times (interleaved) and keep the best: on a "
                   "shared machine the best round is the closest to a quiet one")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=6)
    p.add_argument("--dwconv-kernel", type=int, default=3)
    p.add_argument("--only", default="", help="comma-separated row labels to run (default: all)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    K, size = a.num_classes, mv.preset_config(a.student)["img_size"]
    ce = nn.CrossEntropyLoss(label_smoothing=0.1)

    def plain(inputs, outputs, targets):
        return ce(outputs, targets)

    def student(share, transform):
        cfg = {**mv.preset_config(a.student), "num_classes": K}
        if share == "none" and not transform:
            return VisionTransformer(**cfg)
        return mv.MiniViT(share, attn_transform=transform, mlp_transform=transform, mlp_kernel=a.dwconv_kernel,
                          **cfg)

    teacher = VisionTransformer(**{**mv.preset_config(a.teacher), "num_classes": K})
    if a.teacher_stem == "conv":
        mv.with_conv_stem(teacher)
    def teacher_copy():
        t = copy.deepcopy(teacher)  # the distillation losses freeze (requires_grad=False) their teacher
        for q in t.parameters():
            q.requires_grad_(True)
        return t

    rows = [(f"teacher {a.teacher} {a.teacher_stem}", teacher_copy, None),
            ("original", lambda: student("none", False), None),
            ("shared every-2", lambda: student("every-2", False), None),
            ("shared all", lambda: student("all", False), None),
            ("shared every-2 + WT", lambda: student("every-2", True), None),
            ("shared all + WT", lambda: student("all", True), None)]
    losses = (("every-2 + WT + L_pred", "every-2", {"beta": 0.0, "gamma": 0.0}),
              ("every-2 + WT + L_pred + L_attn", "every-2", {"gamma": 0.0}),
              ("every-2 + WT + GT + L_attn + L_hddn", "every-2", {"pred": 0.0, "gt": 1.0}),
              ("every-2 + WT + WD, last layer", "every-2", {"layers": "last"}),
              ("all + WT + WD, last layer", "all", {"layers": "last"}),
              ("every-2 + WT + WD, uniform", "every-2", {"layers": "uniform"}))
    for label, share, kw in losses:
        rows.append((label, partial(student, share, True), kw))
    if a.only:
        keep = set(a.only.split(","))
        rows = [r for r in rows if r[0] in keep]

    print(f"{a.student} students, teacher {a.teacher} ({a.teacher_stem} stem), batch {a.batch_size}, "
          f"{size} px, {torch.get_num_threads()} threads, {a.steps} timed steps, best of {a.rounds} rounds")
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    params: dict[str, int] = {}
    for r in range(a.rounds):
        print(f"round {r + 1}: load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}", flush=True)
        for label, make, kw in rows:
            model = make()
            crit = plain if kw is None else mv.MiniViTDistillationLoss(teacher, model, **kw)
            ips, cpu_ips = images_per_s(model, crit, a.batch_size, a.steps, a.warmup, size, K)
            if kw is not None:
                crit.close()
            params[label] = mv.count_parameters(model)
            best[label] = max(best.get(label, 0.0), ips)
            best_cpu[label] = max(best_cpu.get(label, 0.0), cpu_ips)
            print(f"  {label:38s} {params[label]:>10,d} {ips:>8.1f} img/s (CPU time: {cpu_ips:.1f})", flush=True)
    print(f"load average at the end {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print(f"{'model':38s} {'params':>10s} {'best img/s':>11s} {'CPU-time img/s':>15s} {'CPU ms/img':>11s}")
    for label, *_ in rows:
        print(f"{label:38s} {params[label]:>10,d} {best[label]:>11.1f} {best_cpu[label]:>15.1f} "
              f"{1000 / best_cpu[label]:>11.2f}")
    for label, *_ in rows:
        print(json.dumps({"model": label, "params": params[label], "train_img_s": round(best[label], 1),
                          "cpu_time_img_s": round(best_cpu[label], 1), "batch": a.batch_size,
                          "threads": torch.get_num_threads(), "rounds": a.rounds}))
    return 0


# ----------------------------------------------------------------------------------------------
# "train": accuracy probes with the notebook's own training code


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _kd_teacher(P, d, convnet_epochs: int):
    """A ViT teacher trained with DeiT's hard distillation from a small convnet (probe only)."""
    from course_lib import classification, config, train
    from course_lib.papers import deit

    Q = config.Params({**P, "teacher_arch": "small_resnet", "teacher_epochs": convnet_epochs, "teacher_lr": 3e-3,
                       "strong_aug": False})
    conv, cinfo = deit.train_teacher(Q, d)
    y = mvx._targets(d.test)
    print(f"convnet small_resnet {convnet_epochs} ep: top-1 {mvx._top1(conv, d, y, P.torch_device):.1f}% "
          f"({cinfo.train_seconds:.0f}s)", flush=True)
    cfg = mvx._train_cfg(P, P.teacher_epochs, P.teacher_lr, d.num_classes, seed=0)
    crit = deit.DistillationLoss(nn.CrossEntropyLoss(label_smoothing=0.1), conv.eval(), "hard", 0.5)
    # cached as the plain teacher is, plus the convnet it distils from (by its weights); the
    # students key on their teacher's weights, so they never mix with the plain teacher's
    return classification.train_cached(
        f"minivit-teacher-kd-{P.teacher}", d, cfg, lambda: mv.build_teacher(P, d.num_classes),
        batch_size=P.batch_size, device=P.torch_device, seed=0, criterion=crit,
        model=mvx.teacher_spec(P),
        loss={"kind": "hard_distillation", "alpha": 0.5, "label_smoothing": 0.1,
              "teacher": train.weights_digest(conv)},
        code=mvx.CODE_VERSION, force=P.retrain)


def train_main(argv) -> int:
    from course_lib import config

    p = argparse.ArgumentParser(prog="calibrate_minivit.py train",
                                description="Train the notebook's teacher and chosen students and print "
                                "their test top-1 and training speed (one JSON line per model).")
    p.add_argument("--profile", default="study")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a notebook parameter (JSON value), e.g. --set teacher_epochs=8")
    p.add_argument("--world", action="append", default=[], metavar="NAME=VALUE",
                   help="override of the world config, e.g. --world bg_contrast=0.15")
    p.add_argument("--students", default="original",
                   help="comma-separated names of minivit.variants (or 'none')")
    p.add_argument("--kd-teacher", type=int, default=0, metavar="EPOCHS",
                   help="train the ViT teacher with DeiT hard distillation from small_resnet "
                   "trained for EPOCHS epochs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    overrides = {k: _value(v) for k, v in (s.split("=", 1) for s in a.set)}
    world = {k: _value(v) for k, v in (s.split("=", 1) for s in a.world)}
    for k in ("scale", "objects"):
        if k in world:
            world[k] = tuple(world[k])
    if world:
        base = mvx.world_config  # load_data looks it up there
        mvx.world_config = lambda P: base(P).replace(**world)
    P = config.resolve("09_minivit", profile=a.profile, **overrides)
    d = mv.load_data(P)
    y = mvx._targets(d.test)
    load0 = Path("/proc/loadavg").read_text().split()[:3]

    def report(name, model, info, extra=None):
        h = info.history
        eps = list(h.epochs) if h is not None else []
        row = {"tag": a.tag, "model": name, "top1": round(mvx._top1(model, d, y, P.torch_device), 2),
               "params": mv.count_parameters(model), "train_s": round(info.train_seconds, 1),
               "img_s": round(sum(r["images_per_s"] for r in eps) / max(len(eps), 1), 1),
               "val_by_epoch": [round(r.get("eval_top1", float("nan")), 1) for r in eps],
               "from_cache": info.from_cache, "threads": torch.get_num_threads(),
               "load": Path("/proc/loadavg").read_text().split()[:3], "load_start": load0,
               "set": overrides, "world": {k: list(v) if isinstance(v, tuple) else v for k, v in world.items()},
               **(extra or {})}
        print("RESULT " + json.dumps(row), flush=True)

    if a.kd_teacher:  # students are cached by their teacher's weights: no mix with the plain teacher's
        teacher, tinfo = _kd_teacher(P, d, a.kd_teacher)
    else:
        teacher, tinfo = mv.train_teacher(P, d)
    teacher.eval()
    report(f"teacher {P.teacher} {P.teacher_stem}" + (" kd" if a.kd_teacher else ""), teacher, tinfo)
    vs = mv.variants(config.Params({**P, "table3": True}))
    names = [] if a.students == "none" else a.students.split(",")
    for name in names:
        v = vs[name]
        model, info = mv.train_student(P, d, v, teacher if v.distilled else None, P.seed)
        report(name, model, info)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "train":
        sys.exit(train_main(sys.argv[2:]))
    sys.exit(main())
