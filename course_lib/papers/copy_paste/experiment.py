"""Simple Copy-Paste, the experiment of notebook 10: parameters (:data:`PARAMS`), the paper's
numbers (:data:`PAPER`), the data, the runs of Figure 1 and Table 10 with their cache keys, the
tables and the "paper vs. ours" recorder.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from course_lib import config
from course_lib.config import Param
from course_lib.papers.copy_paste.method import (
    LSJ_RANGE, PAIRINGS, PASTE_MODES, SSJ_RANGE, SimpleCopyPaste, scale_jitter,
)
from course_lib.results.takeaways import Point

__all__ = [
    "AUGMENTATIONS", "AUG_LABELS", "CODE_VERSION", "NOTEBOOK", "PAPER", "PAPER_URL", "PARAMS",
    "SINGLE_RUN_MARGIN", "TITLE", "CPData", "Run", "RunSpec", "augmentation", "load_data", "plan",
    "record_results", "recorder", "run_experiments", "tables", "train_run", "TAKEAWAYS", "PROBES", "scaling_probe",
]

NOTEBOOK = "10_copy_paste"
PAPER_URL = "https://arxiv.org/abs/2012.07177"
TITLE = "Simple Copy-Paste is a Strong Data Augmentation Method for Instance Segmentation"
# bump when a change of this package changes what a cached model would be
CODE_VERSION = 1

# The paper's numbers, from the study group's notes (seed 003). COCO box / mask AP.
PAPER = {
    # Figure 1 (Mask R-CNN EfficientNet-B7 FPN, 640 px): gains of Strong Aug. (LSJ) + Copy-Paste
    # over Standard Aug. (SSJ), read from the caption (the curves' values are not in the notes).
    "fig1_gain_box": {0.1: 10.0, 1.0: 5.0},
    "fig1_data_efficiency": 2.0,   # "up to 2x more data-efficient"
    # Table 1 / Fig. 5 right: Copy-Paste on top of LSJ, 100% of COCO, Eff-B7 FPN (640)
    "table1_effb7_640": {"lsj": (48.5, 42.7), "lsj_cp": (50.0, 43.7)},
    "table1_r50_1024": {"lsj": (47.2, 41.8), "lsj_cp": (48.2, 42.4)},
    # Table 10 (Eff-B7 FPN 640, 100% of COCO): (box AP, mask AP)
    "table10": {"none": (48.5, 42.7), "one": (49.1, 43.1), "all": (49.7, 43.3),
                "no_blend": (50.0, 43.7), "random": (50.0, 43.7)},
    # Table 11: jitter of the main / pasted image
    "table11": {("ssj", "ssj"): (48.1, 42.1), ("ssj", "lsj"): (47.7, 41.8),
                ("lsj", "ssj"): (49.7, 43.5), ("lsj", "lsj"): (50.0, 43.7)},
}


# ---------------------------------------------------------------------------------------------
# notebook parameters
# ---------------------------------------------------------------------------------------------
DATASETS = ("world", "pennfudan", "coco")
AUGMENTATIONS = ("ssj", "lsj", "lsj_cp")


def _range_ok(v) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            and 0 < v[0] <= v[1] <= 4)


def _fractions_ok(v) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) >= 1
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 1 for x in v))


def _opt_fraction_ok(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1)


PARAMS: dict[str, Param] = {
    "dataset": Param({"smoke": "world", "study": "world", "paper": "coco"},
                     "world (offline), pennfudan or coco (real data; python data_scripts/fetch.py "
                     "pennfudan / coco2017)", choices=DATASETS),
    "image_size": Param({"smoke": 64, "study": 64, "paper": 512}, "training canvas side in pixels",
                        type=int, low=32, high=1024),
    "train_images": Param({"smoke": 48, "study": 600, "paper": 0},
                          "images of the 100% training set (a seeded subset of the train split; "
                          "0: the whole split)", type=int, low=0),
    "eval_images": Param({"smoke": 16, "study": 200, "paper": 0},
                         "test images (0: the whole split)", type=int, low=0),
    "detections": Param({"smoke": 20, "study": 20, "paper": 100},
                        "detections kept per test image (torchvision's box_detections_per_img; the "
                        "world has at most 5 objects per image and the mask head dominates test time)",
                        type=int, low=1, high=1000),
    "fractions": Param({"smoke": (0.25, 1.0), "study": (0.1, 1.0), "paper": (0.1, 0.5, 1.0)},
                       "fractions of the training set (Figure 1)", type=(list, tuple),
                       check=_fractions_ok, check_help="fractions in (0, 1]"),
    "steps": Param({"smoke": 2, "study": 128, "paper": 20000},
                   "optimizer steps of every run (the same compute at every data fraction)",
                   type=int, low=1),
    "batch_size": Param({"smoke": 8, "study": 8, "paper": 16}, type=int, low=2),
    "lr": Param({"smoke": 3e-3, "study": 3e-3, "paper": 1e-3}, "AdamW peak learning rate",
                low=1e-6, high=1.0),
    "heads": Param({"smoke": "slim", "study": "slim", "paper": "default"},
                   "R-CNN head sizes (detection.build_detector)", choices=("slim", "default")),
    "ssj_range": Param(SSJ_RANGE, "standard scale jittering range (paper: 0.8-1.25)",
                       type=(list, tuple), check=_range_ok, check_help="(low, high), 0 < low <= high <= 4"),
    "lsj_range": Param(LSJ_RANGE, "large scale jittering range (paper: 0.1-2.0)",
                       type=(list, tuple), check=_range_ok, check_help="(low, high), 0 < low <= high <= 4"),
    "paste_mode": Param("random", "which source objects are pasted (Table 10)", choices=PASTE_MODES),
    "paste_fraction": Param(None, "None: subset size uniform in 1..n (paper); f: round(f * n) objects",
                            type=object, check=_opt_fraction_ok, check_help="None or a number in (0, 1]"),
    "blend": Param(True, "Gaussian blending of the pasted objects' edges (Sec. 3)"),
    "sigma": Param({"smoke": 1.0, "study": 1.0, "paper": 2.0},
                   "blending Gaussian sigma in pixels", low=0.0, high=20.0),
    "pairing": Param("shift", "source of image i: shift = image i-1 of the batch (torchvision), "
                     "random = a random other image", choices=PAIRINGS),
    "table10": Param({"smoke": True, "study": False, "paper": True},
                     "train the Table 10 ablations (one object, all objects, no blending; the study profile "
                     "spends its budget on the headline claims' seeds instead)"),
    "table10_fraction": Param({"smoke": 1.0, "study": 1.0, "paper": 1.0},
                              "data fraction of the Table 10 runs (must be one of fractions)",
                              low=0.0, high=1.0),
    "seeds": Param({"smoke": 1, "study": 3, "paper": 1}, "paired seeds of every configuration (P.seed, "
                   "P.seed + 1, ...; the headline claims need 3)", type=int, low=1, high=10),
    "retrain": Param(False, "ignore cached detectors and train again"),
}


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
@dataclass
class CPData:
    """The 100% training set (no transform), the test set and what the tables need."""

    train: Any
    test: Any
    num_classes: int
    class_names: tuple[str, ...]
    tiers: list[str]
    image_size: int
    key: dict


def load_data(P: config.Params) -> CPData:
    """The training set (``P.train_images`` of the train split, a seeded subset; 0 = all) and the
    test set. ``world`` uses the calibrated detection world of ``detection.world_config`` (the
    one notebooks 07 and 08 use, so its disk cache is shared); ``pennfudan`` / ``coco`` read the
    real datasets with the readers of ``detection`` and fail with the fetch command when they
    are missing."""
    from course_lib import detection as det

    if P.dataset == "world":
        wprof = "smoke" if P.profile == "smoke" else "study"
        over: dict[str, Any] = {"image_size": P.image_size}
        if P.profile == "smoke":  # the smoke world is tiny; the study world is shared with 07/08
            over.update(num_images=max(P.train_images, 8), eval_images=max(P.eval_images, 4))
        wcfg = det.world_config(wprof, **over)
        train = det.DetectionDataset(wcfg, "train", P.data_root)
        test = det.DetectionDataset(wcfg, "test", P.data_root)
        key = {"world": wcfg.key("train")}
    else:
        try:
            if P.dataset == "pennfudan":
                train = det.PennFudanDataset(P.data_root, "train")
                test = det.PennFudanDataset(P.data_root, "val")
            else:
                train = det.CocoDetectionDataset(P.data_root, "train")
                test = det.CocoDetectionDataset(P.data_root, "val")
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"notebook 10 (profile {P.profile!r}) needs the {P.dataset!r} dataset: {e}") from e
        key = {"dataset": P.dataset, "n": len(train)}
    if P.train_images and P.train_images < len(train):
        train = train.subset(P.train_images / len(train), seed=P.seed)
    if P.eval_images and P.eval_images < len(test):
        test = test.subset(P.eval_images / len(test), seed=0)
    key.update(train=len(train), test=len(test))
    return CPData(train, test, train.num_classes, tuple(train.class_names), train.tiers(),
                  P.image_size, key)


# ---------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """One training configuration: jitter (``ssj``/``lsj``), Copy-Paste on or off and how,
    and the data fraction."""

    jitter: str
    copy_paste: bool
    fraction: float
    mode: str = "random"
    blend: bool = True

    @property
    def aug(self) -> str:
        return self.jitter + ("_cp" if self.copy_paste else "")

    @property
    def name(self) -> str:
        s = f"{self.aug}@{self.fraction:g}"
        if self.copy_paste and (self.mode != "random" or not self.blend):
            s += f"[{self.mode}{'' if self.blend else ',no-blend'}]"
        return s


@dataclass
class Run:
    spec: RunSpec
    seed: int
    metrics: dict[str, float]          # DetMetrics.as_row(): box_AP, box_AP50, ..., mask_AP, ...
    train_seconds: float
    images_per_s: float
    from_cache: bool
    train_size: int
    history: Any = None
    cp_stats: dict = field(default_factory=dict)


def augmentation(P: config.Params, spec: RunSpec) -> tuple[Callable, SimpleCopyPaste | None]:
    """(per-sample jitter, batch Copy-Paste or ``None``) of a run."""
    rng = P.ssj_range if spec.jitter == "ssj" else P.lsj_range
    jitter = scale_jitter(P.image_size, tuple(rng))
    if not spec.copy_paste:
        return jitter, None
    cp = SimpleCopyPaste(mode=spec.mode, fraction=P.paste_fraction, blend=spec.blend, sigma=P.sigma,
                         pairing=P.pairing, seed=P.seed)
    return jitter, cp


def train_run(P: config.Params, d: CPData, spec: RunSpec, seed: int | None = None,
              log: Callable[[str], Any] | None = print) -> tuple[Run, torch.nn.Module]:
    """Train (or load from the cache) and evaluate one Mask R-CNN of the grid.

    Every run takes ``P.steps`` optimizer steps of ``P.batch_size`` images, whatever its data
    fraction (so a 10% run sees each image about 10x more often than the 100% run); AdamW with a
    linear warm-up over the first tenth of the steps and a cosine decay (``detection``)."""
    from course_lib import detection as det

    seed = P.seed if seed is None else seed
    train = d.train.subset(spec.fraction, seed=P.seed) if spec.fraction < 1 else d.train
    jitter, cp = augmentation(P, spec)
    ds = copy.copy(train)  # the run's own view (its transform), sharing the data
    ds.transform = jitter
    bs = min(P.batch_size, len(ds))
    loader = det.make_loader(ds, bs, shuffle=True, seed=seed, batch_transform=cp,
                             drop_last=len(ds) >= 2 * bs)
    epochs = max(1, math.ceil(P.steps / max(1, len(loader))))
    cfg = det.DetTrainConfig(epochs=epochs, lr=P.lr, warmup_iters=max(1, P.steps // 10),
                             max_steps=P.steps, batch_size=bs, seed=seed)
    # the data, the augmentation as printed (every setting), the loader, the model's settings,
    # the whole recipe (cached_detector adds the architecture and the pipeline's version)
    cfg_key = {"data": {**d.key, "fraction": spec.fraction, "n": len(train)},
               "augmentation": {"jitter": repr(jitter), "copy_paste": repr(cp)},
               "loader": {"batch_size": bs, "seed": seed, "drop_last": len(ds) >= 2 * bs},
               "model": {"heads": P.heads, "image_size": P.image_size, "detections": P.detections,
                         "seed": seed},
               "recipe": cfg, "code": CODE_VERSION}

    def build():
        torch.manual_seed(seed)
        return det.build_detector(det.ConvBackbone(), d.num_classes, masks=True,
                                  image_size=P.image_size, heads=P.heads,
                                  box_detections_per_img=P.detections)

    def fit(model):
        hist = det.train_detector(model, loader, cfg, device=P.torch_device,
                                  desc=f"{spec.name}, seed {seed}")
        if cp is not None and hist.epochs:  # kept with the cached model
            hist.epochs[-1].update({f"cp_{k}": float(v) for k, v in cp.stats.items()})
        return hist

    model, hist, info = det.cached_detector("copy_paste_maskrcnn", cfg_key, build, fit, force=P.retrain)
    metrics = det.evaluate(model, d.test, device=P.torch_device, tiers=d.tiers)
    last = hist.epochs[-1] if hist is not None and hist.epochs else {}
    stats = {k[3:]: v for k, v in last.items() if k.startswith("cp_")}
    run = Run(spec, seed, metrics.as_row(), info.train_seconds,
              hist.images_per_s if hist is not None else float("nan"), info.from_cache, len(train),
              hist, stats)
    if log is not None:
        m = run.metrics
        src = "cache" if info.from_cache else f"{info.train_seconds:.0f}s, {run.images_per_s:.0f} img/s"
        log(f"{spec.name:28s} seed {seed}: box AP {m['box_AP']:5.1f}  mask AP {m['mask_AP']:5.1f}  "
            f"({len(train)} images; {src})")
    return run, model


def plan(P: config.Params) -> list[RunSpec]:
    """The configurations of the notebook: the Figure 1 grid (SSJ, LSJ, LSJ + Copy-Paste at every
    fraction) and, when ``P.table10``, the Table 10 ablations at ``P.table10_fraction`` (its
    "random subset + blending" row is the grid's LSJ + Copy-Paste run)."""
    fr = [float(f) for f in P.fractions]
    specs = []
    for f in fr:
        specs += [RunSpec("ssj", False, f), RunSpec("lsj", False, f),
                  RunSpec("lsj", True, f, P.paste_mode, P.blend)]
    if P.table10:
        f = float(P.table10_fraction)
        if f not in fr:
            raise config.ParameterError(f"table10_fraction={f} is not one of fractions={tuple(fr)}")
        for mode, blend in (("one", True), ("all", True), ("random", False), ("random", True)):
            s = RunSpec("lsj", True, f, mode, blend)
            if s not in specs:
                specs.append(s)
    return specs


def run_experiments(P: config.Params, d: CPData | None = None,
                    log: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """Every run of :func:`plan` for ``P.seeds`` seeds. Returns ``{"runs": {spec: [Run, ...]},
    "models": {spec: first seed's model}, "data", "seconds"}``."""
    import time

    d = d or load_data(P)
    t0 = time.perf_counter()
    runs: dict[RunSpec, list[Run]] = {}
    models: dict[RunSpec, torch.nn.Module] = {}
    for spec in plan(P):
        for s in range(P.seeds):
            run, model = train_run(P, d, spec, P.seed + s, log)
            runs.setdefault(spec, []).append(run)
            if s == 0:
                models[spec] = model.cpu().eval()
    return {"runs": runs, "models": models, "data": d, "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------
# tables and the "paper vs. ours" record
# ---------------------------------------------------------------------------------------------
# AP points a single-run comparison must win by to count as reproduced: about one standard
# deviation of a run's AP across training seeds at the study budget (benchmarks/
# calibrate_copy_paste.py, docs/calibration.md). A smaller gap is inconclusive.
SINGLE_RUN_MARGIN = 1.5
# a detector that learned something: box AP of the SSJ baseline on all the data (an untrained
# Mask R-CNN scores about 0)
LEARNED_AP = 3.0

AUG_LABELS = {"ssj": "SSJ", "lsj": "LSJ", "lsj_cp": "LSJ + Copy-Paste"}
TABLE10_ROWS = (("none", "LSJ, no Copy-Paste"), ("one", "Copy-Paste: one object"),
                ("all", "Copy-Paste: all objects"), ("no_blend", "Copy-Paste: random subset, no blending"),
                ("random", "Copy-Paste: random subset + blending"))


def _values(runs: Mapping[RunSpec, list[Run]], spec: RunSpec, key: str) -> list[float]:
    return [r.metrics[key] for r in runs[spec]]


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs))


def _grid_specs(P) -> dict[tuple[str, float], RunSpec]:
    return {(a, float(f)): RunSpec(a.replace("_cp", ""), a.endswith("_cp"), float(f), P.paste_mode, P.blend)
            for a in AUGMENTATIONS for f in P.fractions}


def _table10_specs(P) -> dict[str, RunSpec]:
    f = float(P.table10_fraction)
    return {"none": RunSpec("lsj", False, f), "one": RunSpec("lsj", True, f, "one", True),
            "all": RunSpec("lsj", True, f, "all", True), "no_blend": RunSpec("lsj", True, f, "random", False),
            "random": RunSpec("lsj", True, f, "random", True)}


def tables(P: config.Params, res: Mapping[str, Any]) -> dict[str, Any]:
    """``figure1``: box / mask AP per data fraction and augmentation, with the gain of LSJ +
    Copy-Paste over SSJ and the paper's stated gain; ``table10``: the ablation rows with the
    paper's numbers (when run)."""
    import pandas as pd

    runs, g = res["runs"], _grid_specs(P)
    rows = []
    for f in sorted({float(x) for x in P.fractions}):
        row: dict[str, Any] = {"data": f"{f:.0%}", "train images": runs[g[("ssj", f)]][0].train_size}
        for kind, short in (("box_AP", "box"), ("mask_AP", "mask")):
            for a in AUGMENTATIONS:
                row[f"{short} {AUG_LABELS[a]}"] = _mean(_values(runs, g[(a, f)], kind))
            row[f"{short} gain (CP - SSJ)"] = row[f"{short} LSJ + Copy-Paste"] - row[f"{short} SSJ"]
        row["paper box gain"] = PAPER["fig1_gain_box"].get(f, float("nan"))
        rows.append(row)
    out = {"figure1": pd.DataFrame(rows).set_index("data")}
    if P.table10:
        t = _table10_specs(P)
        out["table10"] = pd.DataFrame([
            {"setup": label, "box AP": _mean(_values(runs, t[k], "box_AP")),
             "mask AP": _mean(_values(runs, t[k], "mask_AP")),
             "paper box AP": PAPER["table10"][k][0], "paper mask AP": PAPER["table10"][k][1]}
            for k, label in TABLE10_ROWS]).set_index("setup")
    return out


def recorder(P: config.Params):
    """The notebook's results recorder; make it first, so its clock times the whole run."""
    from course_lib.results import Results

    return Results(NOTEBOOK, TITLE, PAPER_URL, P)


def record_results(P: config.Params, res: Mapping[str, Any], rec=None, save: bool = True):
    """The "paper vs. ours" claims, judged by rules (course_lib.results) and saved.

    Gains are differences of AP points between runs of the same seed (a list over seeds when
    ``P.seeds > 1``, so the rules see their spread). With one seed a gain must exceed
    :data:`SINGLE_RUN_MARGIN` to count as reproduced; a smaller one is inconclusive, a negative
    one not reproduced."""
    from course_lib.results import AtLeast, Better, Within, Reference

    runs, g = res["runs"], _grid_specs(P)
    m = SINGLE_RUN_MARGIN if P.seeds < 2 else 0.0
    fr = sorted({float(x) for x in P.fractions})
    lo, hi = fr[0], fr[-1]

    def gain(a: RunSpec, b: RunSpec, key: str = "box_AP") -> list[float]:
        return [x - y for x, y in zip(_values(runs, a, key), _values(runs, b, key))]

    def pct(f):
        return f"{f:.0%}"

    rec = rec if rec is not None else recorder(P)
    rec.add("learns", f"the SSJ baseline Mask R-CNN learns on {pct(hi)} of the data (box AP above "
            f"{LEARNED_AP:g})", paper=None, ours=_values(runs, g[("ssj", hi)], "box_AP"), unit="AP",
            rule=AtLeast(LEARNED_AP), note=f"mask AP {_mean(_values(runs, g[('ssj', hi)], 'mask_AP')):.1f}")
    rec.add("cp_gain_high", f"LSJ + Copy-Paste beats SSJ with {pct(hi)} of the data [Fig. 1: +5 box AP "
            "at 100% of COCO]", paper=PAPER["fig1_gain_box"][1.0] if hi == 1.0 else None,
            ours=gain(g[("lsj_cp", hi)], g[("ssj", hi)]), unit="AP", rule=Better(0.0, min_effect=m))
    rec.add("cp_gain_low", f"LSJ + Copy-Paste beats SSJ with {pct(lo)} of the data [Fig. 1: +10 box AP "
            "at 10% of COCO]", paper=PAPER["fig1_gain_box"].get(lo), ours=gain(g[("lsj_cp", lo)], g[("ssj", lo)]),
            unit="AP", rule=Better(0.0, min_effect=m))
    if lo != hi:
        low_minus_high = [a - b for a, b in zip(gain(g[("lsj_cp", lo)], g[("ssj", lo)]),
                                                gain(g[("lsj_cp", hi)], g[("ssj", hi)]))]
        rec.add("gain_largest_low_data", f"the gain is larger with {pct(lo)} than with {pct(hi)} of the "
                "data [Fig. 1: +10 vs. +5 box AP]", paper=5.0 if (lo, hi) == (0.1, 1.0) else None,
                ours=low_minus_high, unit="AP", rule=Better(0.0, min_effect=m))
    # the headline claims (issue 18's fixed ids), in box AP: each arm's per-seed values are a
    # reference row, and each claim pairs its two rows seed by seed (Better(<row id>))
    seeds = [P.seed + i for i in range(len(runs[g[("lsj", lo)]]))]

    def ref(id_: str, what: str, values: list[float]) -> str:
        rec.add(id_, f"reference: {what}, per seed", paper=None, ours=values, seeds=seeds, unit="AP",
                rule=Reference(), note="the baseline row of a headline claim")
        return id_

    box = {k: _values(runs, g[k], "box_AP") for k in (("lsj", lo), ("lsj_cp", lo), ("ssj", hi), ("lsj", hi))}
    rec.add("cp_helps_low_data", f"large scale jittering + Copy-Paste beats large scale jittering alone with "
            f"{pct(lo)} of the data (box AP, paired per seed) [Fig. 1]", paper=None, ours=box[("lsj_cp", lo)],
            seeds=seeds, unit="AP", headline=True, rule=Better(
                ref(f"box_lsj_{round(100 * lo)}", f"box AP of LSJ with {pct(lo)} of the data", box[("lsj", lo)]),
                min_effect=m))
    if lo != hi:
        cp_lo, cp_hi = gain(g[("lsj_cp", lo)], g[("lsj", lo)]), gain(g[("lsj_cp", hi)], g[("lsj", hi)])
        rec.add("cp_gain_largest_low_data", f"the Copy-Paste gain over LSJ alone is larger with {pct(lo)} than "
                f"with {pct(hi)} of the data (box AP, paired per seed) [Fig. 1]", paper=None, ours=cp_lo,
                seeds=seeds, unit="AP", headline=True, rule=Better(
                    ref(f"cp_gain_over_lsj_{round(100 * hi)}", f"box AP of LSJ + Copy-Paste minus LSJ with "
                        f"{pct(hi)} of the data", cp_hi), min_effect=m),
                note="the paper's Fig. 1 gains (+10 at 10%, +5 at 100%) are over SSJ: claim gain_largest_low_data")
    rec.add("cp_lsj_beats_ssj", f"large scale jittering beats standard scale jittering ({pct(hi)} of the data, "
            "box AP, paired per seed) [Fig. 1 / Fig. 4: Strong Aug. above Standard Aug.]", paper=None,
            ours=box[("lsj", hi)], seeds=seeds, unit="AP", headline=True, rule=Better(
                ref(f"box_ssj_{round(100 * hi)}", f"box AP of SSJ with {pct(hi)} of the data", box[("ssj", hi)]),
                min_effect=m))
    t1 = PAPER["table1_effb7_640"]
    for key, k, short in (("box_AP", 0, "box"), ("mask_AP", 1, "mask")):
        rec.add(f"cp_over_lsj_{short}", f"Copy-Paste adds to LSJ ({pct(hi)} of the data, {short} AP) "
                f"[Table 1, Eff-B7 FPN 640: +{t1['lsj_cp'][k] - t1['lsj'][k]:.1f}]",
                paper=round(t1["lsj_cp"][k] - t1["lsj"][k], 2) if hi == 1.0 else None,
                ours=gain(g[("lsj_cp", hi)], g[("lsj", hi)], key), unit="AP", rule=Better(0.0, min_effect=m))
    if 0.5 in fr and hi == 1.0:
        rec.add("data_efficiency", "LSJ + Copy-Paste on 50% of the data matches SSJ on 100% [Fig. 1: "
                "'up to 2x more data-efficient']", paper=None,
                ours=gain(g[("lsj_cp", 0.5)], g[("ssj", 1.0)]), unit="AP", rule=AtLeast(0.0),
                note="ours = box AP(LSJ+CP, 50%) - box AP(SSJ, 100%)")
    if P.table10:
        t, p10 = _table10_specs(P), PAPER["table10"]
        for other in ("one", "all"):
            for key, k, short in (("box_AP", 0, "box"), ("mask_AP", 1, "mask")):
                rec.add(f"t10_random_vs_{other}_{short}", f"pasting a random subset beats pasting {other} "
                        f"object{'s' if other == 'all' else ''} ({short} AP) [Table 10: "
                        f"{p10['random'][k]} vs. {p10[other][k]}]",
                        paper=round(p10["random"][k] - p10[other][k], 2),
                        ours=gain(t["random"], t[other], key), unit="AP", rule=Better(0.0, min_effect=m))
        rec.add("t10_blending", "blending does not matter: |AP(blend) - AP(no blend)| within the margin "
                "[Table 10: 50.0 vs. 50.0 box AP]", paper=0.0,
                ours=gain(t["random"], t["no_blend"]), unit="AP",
                rule=Within(0.0, abs_tol=max(m, SINGLE_RUN_MARGIN)))
    if save:
        rec.save()
    return rec



# The "What to take away" cell, written from the record (course_lib.results.takeaways): what each
# verdict means for the paper's story; the numbers are this run's ({diff}, {ours}: gains in AP
# points between runs of the same seed).
_NOT_A_VERDICT = "95% CI {ci}, n = {n} run(s) per arm: not a verdict (fewer than 3 seeds, or within their noise)"
TAKEAWAYS = [
    Point("cp_gain_low",
          reproduced="Figure 1's main point holds at our scale: with the smallest data fraction, LSJ + "
                     "Copy-Paste beats standard scale jittering (box AP {diff}; paper: +10 at 10% of COCO).",
          not_reproduced="With the smallest data fraction LSJ + Copy-Paste does not beat standard scale "
                         "jittering (box AP {diff}; paper: +10 at 10% of COCO).",
          inconclusive="LSJ + Copy-Paste minus SSJ with the smallest data fraction: box AP {diff} (paper: +10 "
                       "at 10% of COCO), " + _NOT_A_VERDICT + "."),
    Point("cp_helps_low_data",
          reproduced="Copy-Paste helps where data is scarce: with the smallest data fraction, LSJ + Copy-Paste "
                     "beats LSJ alone by {diff} box AP (95% CI {ci}, n = {n} paired seeds).",
          not_reproduced="Copy-Paste does not help with the smallest data fraction here: LSJ + Copy-Paste minus "
                         "LSJ alone is {diff} of box AP (95% CI {ci}, n = {n} paired seeds). At our budget the "
                         "small detector underfits even 60 images, so a harder augmentation costs more than "
                         "the extra object variety gives; the scaling probe above says whether more steps "
                         "change that.",
          inconclusive="LSJ + Copy-Paste minus LSJ alone with the smallest data fraction: {diff} of box AP (95% "
                       "CI {ci}, n = {n}), within the seed noise."),
    Point("cp_gain_largest_low_data",
          reproduced="The Copy-Paste gain is largest where data is scarce, as in Figure 1 ({diff} of box AP more "
                     "with the smallest fraction than with all the data; 95% CI {ci}, n = {n}).",
          not_reproduced="The Copy-Paste gain is not larger with less data here (smallest fraction minus all the "
                         "data: {diff} of box AP, 95% CI {ci}, n = {n}).",
          inconclusive="Copy-Paste gain with the smallest fraction minus its gain with all the data: {diff} of "
                       "box AP (95% CI {ci}, n = {n}), within the seed noise; the scaling probe above shows "
                       "whether 2x and 4x the steps separate the two gains."),
    Point("cp_gain_high",
          reproduced="With all the data LSJ + Copy-Paste beats SSJ too (box AP {diff}; paper +5).",
          not_reproduced="With all the data LSJ + Copy-Paste does not beat SSJ (box AP {diff}; paper +5).",
          inconclusive="LSJ + Copy-Paste minus SSJ with all the data: box AP {diff} (paper +5), " + _NOT_A_VERDICT
                       + "."),
    Point("gain_largest_low_data",
          reproduced="The gain is largest where data is scarce, as in Figure 1 (box AP {diff} more with the "
                     "smallest fraction than with all the data).",
          not_reproduced="The gain is not larger with less data here (smallest fraction minus all the data: box "
                         "AP {diff}).",
          inconclusive="Gain with the smallest fraction minus gain with all the data: box AP {diff}, "
                       + _NOT_A_VERDICT + "."),
    Point("data_efficiency",
          reproduced="\"Up to 2× more data-efficient\": LSJ + Copy-Paste on 50% of the data matches SSJ on "
                     "100% (difference {ours} of box AP).",
          not_reproduced="LSJ + Copy-Paste on 50% of the data does not reach SSJ on 100% (difference {ours} of "
                         "box AP): no 2× data efficiency at this budget.",
          inconclusive="LSJ + Copy-Paste on 50% minus SSJ on 100%: {ours} of box AP, at the edge of the rule.",
          missing="This profile does not train on 50% of the data, so the data-efficiency check is not made."),
    Point("cp_over_lsj_box",
          reproduced="Copy-Paste adds to LSJ, as in Table 1 (box AP {diff}; paper {paper}).",
          not_reproduced="Copy-Paste does not add to LSJ here (box AP {diff}; paper {paper}).",
          inconclusive="Copy-Paste on top of LSJ: box AP {diff} (paper {paper}), " + _NOT_A_VERDICT + "."),
    Point("cp_over_lsj_mask",
          reproduced="On mask AP too Copy-Paste adds to LSJ ({diff}; paper {paper}).",
          not_reproduced="On mask AP Copy-Paste does not add to LSJ here ({diff}; paper {paper}).",
          inconclusive="The same on mask AP: {diff} (paper {paper}), " + _NOT_A_VERDICT + "."),
    Point("cp_lsj_beats_ssj",
          reproduced="Large scale jittering beats standard scale jittering (box AP {diff} with all the data, "
                     "95% CI {ci}, n = {n} paired seeds).",
          not_reproduced="Large scale jittering is *below* standard scale jittering here (box AP {diff}, 95% CI "
                         "{ci}, n = {n}): at 64 px a scale of 0.1 shrinks objects below our smallest anchors, "
                         "and a short schedule cannot turn a harder augmentation into a gain.",
          inconclusive="LSJ minus SSJ with all the data: box AP {diff} (95% CI {ci}, n = {n}), within the seed "
                       "noise. Where Copy-Paste falls behind SSJ, compare this row: the jitter, not the pasting, "
                       "may carry the loss."),
    Point("t10_random_vs_one_box",
          reproduced="Table 10: pasting a random subset beats pasting one object (box AP {diff}).",
          not_reproduced="Pasting a random subset does not beat pasting one object here (box AP {diff}).",
          inconclusive="Table 10, random subset minus one object: box AP {diff} (paper {paper}), "
                       + _NOT_A_VERDICT + ".",
          missing="This profile skips Table 10 (`table10 = False`)."),
    Point("t10_random_vs_all_box",
          reproduced="Pasting a random subset beats pasting all objects (box AP {diff}).",
          not_reproduced="Pasting a random subset does not beat pasting all objects here (box AP {diff}).",
          inconclusive="Random subset minus all objects: box AP {diff} (paper {paper}), " + _NOT_A_VERDICT + "."),
    Point("t10_blending",
          reproduced="Blending does not matter, as in Table 10: with minus without blending is {ours} of box "
                     "AP, within the margin.",
          not_reproduced="Blending changes the result here: with minus without blending is {ours} of box AP, "
                         "beyond the margin.",
          inconclusive="With minus without blending: {ours} of box AP, at the edge of the margin."),
]


# ---------------------------------------------------------------------------------------------
# scaling probes (benchmarks/scaling_probe.py) of the two-arm headline claims
# ---------------------------------------------------------------------------------------------
PROBES = {"cp_helps_low_data": "optimizer steps of every run (LSJ + Copy-Paste vs. LSJ, smallest fraction)",
          "cp_gain_largest_low_data": "optimizer steps of every run (the Copy-Paste gain over LSJ with the "
                                      "smallest fraction vs. with all the data)",
          "cp_lsj_beats_ssj": "optimizer steps of every run (LSJ vs. SSJ, all the data)"}


def scaling_probe(P: config.Params, claim: str, factors=(1, 2, 4), log=print) -> dict[str, Any]:
    """Train the claim's two arms on ``P.seeds`` paired seeds at ``factors`` x ``P.steps`` and
    return the keyword arguments of :func:`course_lib.results.scaling.save_probe` (box AP).

    An arm is one run, or for ``cp_gain_largest_low_data`` a gain: the same seed's LSJ + Copy-Paste
    minus LSJ at one data fraction (two detectors; its training time is theirs together)."""
    if claim not in PROBES:
        raise ValueError(f"claim={claim!r}: a probe exists for {', '.join(PROBES)}")
    from course_lib.results.scaling import sweep

    log = log or (lambda *_: None)

    d = load_data(P)
    g = _grid_specs(P)
    fr = sorted({float(x) for x in P.fractions})
    lo, hi = fr[0], fr[-1]
    arms = {"cp_helps_low_data": ((("lsj_cp", lo),), (("lsj", lo),)),
            "cp_gain_largest_low_data": ((("lsj_cp", lo), ("lsj", lo)), (("lsj_cp", hi), ("lsj", hi))),
            "cp_lsj_beats_ssj": ((("lsj", hi),), (("ssj", hi),))}[claim]

    def arm(keys):
        def run(Pf, seed):
            done = [train_run(Pf, d, g[k], seed, log=None)[0] for k in keys]
            value = done[0].metrics["box_AP"] - (done[1].metrics["box_AP"] if len(done) > 1 else 0.0)
            return value, sum(r.train_seconds for r in done)
        return run

    def label(keys):
        if len(keys) == 1:
            return f"{AUG_LABELS[keys[0][0]]}, {keys[0][1]:.0%} of the data"
        return f"Copy-Paste gain over LSJ, {keys[0][1]:.0%} of the data"

    ours, base = (label(k) for k in arms)
    rows = sweep(P, factors, "steps", {"ours": (ours, arm(arms[0])), "baseline": (base, arm(arms[1]))}, log)
    return {"rows": rows, "budget": "optimizer steps", "unit": "box AP", "higher_is_better": True,
            "arms": {"ours": ours, "baseline": base}}
