"""Frozen backbones, the experiment of notebook 08: parameters (:data:`PARAMS`), the paper's
numbers (:data:`PAPER`), the upstream classification world and the pre-trained trunk, the
detection data, the grid of (strategy, capacity) runs with their cache keys, the counted
parameters and training memory, the tables and the "paper vs. ours" recorder.
"""
from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from course_lib import config, paths
from course_lib.config import Param
from course_lib.models import count_params
from course_lib.papers.frozen_backbones.method import (
    CAPACITIES, STRATEGIES, build_strategy_detector,
)

__all__ = [
    "NOTEBOOK", "TITLE", "PAPER_URL", "PARAMS", "PAPER", "SINGLE_SEED_MARGIN", "MATCH_TOLERANCE", "HEADLINE", "TimmResNetBody",
    "load_timm_body", "count_parameters", "parameter_table", "training_memory", "pretrain_worlds",
    "DetData", "detection_data", "pretrain_body", "Run", "grid", "train_cell", "run_experiments", "tables",
    "recorder", "record_results",
]

NOTEBOOK = "08_frozen_backbones"
TITLE = "Proper Reuse of Image Classification Features Improves Object Detection"
PAPER_URL = "https://arxiv.org/abs/2204.00484"

# A comparison of single runs has no noise estimate: it must win by this many AP points to count
# as reproduced (about the seed-to-seed spread of box AP in our calibration).
SINGLE_SEED_MARGIN = 1.0
# "a frozen backbone matches or beats fine-tuning" (Tables 1/3): the 95% interval of frozen minus
# fine-tuned (paired per seed) must stay above -1.0 box AP. Fixed before the paired runs: the paper's
# own high-capacity gaps are +0.1 (NAS-FPN) to +0.8 (NAS-FPN + Cascade).
MATCH_TOLERANCE = 1.0
# the headline claims of issue 18 (fixed ids), on box AP at high capacity unless said
HEADLINE = ("frozen_high_beats_finetune", "frozen_capacity_helps", "frozen_helps_rare_most", "frozen_adapters_help")
CODE_VERSION = 1  # part of the cache keys of the trained bodies and detectors

# The paper's numbers, from the study group's notes (seed 003). COCO mAP (box) unless said.
# Table 1: four detectors, each from scratch, from ImageNet (fine-tuned / frozen) and from JFT-300M
# (fine-tuned / frozen). AP50 of the frozen rows is lost in the notes.
PAPER = {
    "table1": {
        "R101 + FPN": {"scratch": 48.4, "finetune": 48.6, "frozen": 42.1,
                       "finetune_jft": 48.7, "frozen_jft": 43.1},
        "R101 + NAS-FPN": {"scratch": 47.2, "finetune": 49.0, "frozen": 49.1,
                           "finetune_jft": 49.1, "frozen_jft": 50.1},
        "R50 + NAS-FPN + Cascade": {"scratch": 50.0, "finetune": 50.3, "frozen": 51.0,
                                    "finetune_jft": 50.4, "frozen_jft": 52.1},
        "R101 + NAS-FPN + Cascade": {"scratch": 50.4, "finetune": 51.1, "frozen": 51.9,
                                     "finetune_jft": 51.1, "frozen_jft": 52.8},
    },
    # Table 3: ResNet-101 (ImageNet) detectors: parameters (M), trained when frozen, and the mAP
    # change from freezing (frozen - fine-tuned).
    "table3": {
        "FPN": {"params_m": 83.5, "trained_m": 21.9, "trained_pct": 26.1, "delta": -6.5},
        "NAS-FPN": {"params_m": 102.6, "trained_m": 40.9, "trained_pct": 39.9, "delta": +0.1},
        "Cascade + NAS-FPN": {"params_m": 132.9, "trained_m": 71.3, "trained_pct": 53.6, "delta": +0.7},
    },
    # Table 5: LVIS v1, EfficientNet-B7 + NAS-FPN with Copy-Paste, box mAP (first stage). The mask
    # columns are not in the notes.
    "table5": {"finetune": {"AP": 38.5, "rare": 19.3, "common": 37.3, "frequent": 48.2},
               "frozen": {"AP": 39.7, "rare": 22.2, "common": 38.8, "frequent": 48.3},
               "finetune_stage2": {"AP": 41.6, "rare": 31.5, "common": 39.8, "frequent": 48.0},
               "frozen_stage2": {"AP": 43.1, "rare": 33.2, "common": 41.9, "frequent": 48.7}},
    # Table 7: ResNet-101 + NAS-FPN + Cascade, (mAP, AP50).
    "table7": {"ImageNet": {"finetune": (51.1, 69.1), "frozen": (51.8, 69.9), "adapters": (53.0, 71.5)},
               "JFT-300M": {"finetune": (51.1, 69.0), "frozen": (52.8, 71.1), "adapters": (53.6, 72.0)}},
}


def _tuple_of(allowed: Sequence[str]) -> Callable[[Any], bool]:
    return lambda v: len(v) > 0 and all(x in allowed for x in v) and len(set(v)) == len(v)


PARAMS: dict[str, Param] = {
    "dataset": Param({"smoke": "world", "study": "world", "paper": "coco"},
                     "world (offline) or coco (COCO 2017 val split into train/val, catalog entry "
                     "'coco2017')", choices=("world", "coco")),
    "image_size": Param({"smoke": 64, "study": 64, "paper": 512}, "detector input side (px)",
                        type=int, low=32, high=1333),
    "train_images": Param({"smoke": 32, "study": 200, "paper": 0},
                          "detection training images (0: the whole train split). The study profile's "
                          "detection set is 100x smaller than its upstream set (ImageNet 1.3M vs COCO 118k "
                          "in the paper: 11x; LVIS rare classes have 1-10 images)", type=int, low=0),
    "eval_images": Param({"smoke": 16, "study": 300, "paper": 0},
                         "evaluation images (0: the whole val split)", type=int, low=0),
    "pretrain_images": Param({"smoke": 128, "study": 20000, "paper": 0},
                             "images of the upstream classification world", type=int, low=0),
    "pretrain_epochs": Param({"smoke": 1, "study": 6, "paper": 0}, type=int, low=0),
    "backbone": Param({"smoke": "course", "study": "course", "paper": "resnet50"},
                      "course: det.ConvBody pre-trained on the sibling world; resnet18/34/50: timm "
                      "layout ImageNet weights from `weights`", choices=("course", "resnet18", "resnet34", "resnet50")),
    "weights": Param("", "paper profile: path of a timm-layout checkpoint (default "
                     "<data_root>/weights/<backbone>.pth)", type=str),
    "widths": Param((32, 64, 128), "course body: channels of the stages at strides 4, 8, 16"),
    "blocks": Param(2, "course body: residual blocks per stage", type=int, low=1, high=4),
    "strategies": Param({"smoke": STRATEGIES, "study": ("finetune", "frozen", "adapters"), "paper": STRATEGIES},
                        "strategies of the grid (the study profile leaves out training from scratch and "
                        "spends its time on the paired seeds of the headline claims)", check=_tuple_of(STRATEGIES),
                        check_help=f"a non-empty subset of {STRATEGIES}"),
    "capacities": Param(("low", "high"), "capacities of the components after the backbone",
                        check=_tuple_of(tuple(CAPACITIES)), check_help="a subset of ('low', 'high')"),
    "adapter_capacities": Param(("high",), "capacities at which the adapters strategy runs "
                                "(Table 7 is a high-capacity result)", check=_tuple_of(tuple(CAPACITIES)),
                                check_help="a subset of ('low', 'high')"),
    "adapter_reduction": Param(4, "channel reduction of the adapters' bottleneck", type=int, low=1, high=64),
    "masks": Param({"smoke": True, "study": False, "paper": True},
                   "Mask R-CNN (True: box and mask AP) or Faster R-CNN (False: box AP only, what Tables 1, "
                   "3 and 7 report; about 1.2x faster on a CPU)"),
    "epochs": Param({"smoke": 1, "study": 12, "paper": 12}, "detection epochs", type=int, low=1),
    "batch_size": Param({"smoke": 8, "study": 16, "paper": 16}, type=int, low=1),
    "lr": Param({"smoke": 2e-3, "study": 2e-3, "paper": 1e-4}, "AdamW peak lr, the same for every "
                "strategy (as in the paper)", low=1e-6, high=1.0),
    "seeds": Param({"smoke": 1, "study": 3, "paper": 1}, "paired seeds of every grid cell (seed, seed + 1, "
                   "...; a claim needs 3); the pre-trained trunk is the same for every seed", type=int, low=1,
                   high=10),
    "max_steps": Param({"smoke": 2, "study": 0, "paper": 0}, "cap on steps per run (0: none)", type=int, low=0),
    "retrain": Param(False, "ignore cached backbones and detectors"),
}


# ----------------------------------------------------------------------------------------------
# the paper profile's ImageNet trunk


class TimmResNetBody(nn.Module):
    """A timm ResNet (``resnet18/34/50``) as a trunk with ``.stem``, ``.stages`` (layer1..4 at
    strides 4..32) and ``.channels``, for the ``paper`` profile's ImageNet backbone."""

    def __init__(self, name: str = "resnet50"):
        super().__init__()
        import timm

        m = timm.create_model(name, pretrained=False, num_classes=0)
        self.stem = nn.Sequential(m.conv1, m.bn1, m.act1, m.maxpool)
        self.stages = nn.ModuleList([m.layer1, m.layer2, m.layer3, m.layer4])
        self.channels = [m.feature_info[i]["num_chs"] for i in range(1, 5)]
        self._names = {"stem": ("conv1", "bn1", "act1", "maxpool"),
                       "stages": ("layer1", "layer2", "layer3", "layer4")}


def load_timm_body(name: str, path: str | Path) -> TimmResNetBody:
    """A :class:`TimmResNetBody` with a timm-layout ResNet checkpoint (``conv1.weight``,
    ``layer1.0.conv1.weight``, ..., ``fc.*`` ignored) loaded strictly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no {name} weights at {path}. The paper profile reuses an ImageNet classifier: save a "
            f"timm-layout state dict there (e.g. on a machine with internet: "
            f"`torch.save(timm.create_model('{name}', pretrained=True).state_dict(), '{path}')`) "
            f"or pass `weights=...`.")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:  # truncated, ...
        raise RuntimeError(
            f"cannot read the {name} weights {path}: the file is damaged or not a torch state dict "
            f"({type(e).__name__}: {str(e).strip()[:200]}). Save it again (e.g. `torch.save(timm."
            f"create_model('{name}', pretrained=True).state_dict(), '{path}')`) or pass "
            f"`weights=...`.") from e
    if isinstance(sd, Mapping) and "state_dict" in sd:
        sd = sd["state_dict"]
    body = TimmResNetBody(name)
    ours = {}
    for k, v in sd.items():
        k = k.removeprefix("module.")
        if k.startswith("fc."):
            continue
        head, _, rest = k.partition(".")
        if head in body._names["stem"]:
            ours[f"stem.{body._names['stem'].index(head)}.{rest}"] = v
        elif head in body._names["stages"]:
            ours[f"stages.{body._names['stages'].index(head)}.{rest}"] = v
        else:
            raise KeyError(f"unexpected key {k!r} in {path}")
    body.load_state_dict(ours, strict=True)
    return body


# ----------------------------------------------------------------------------------------------
# what is trained, and what it costs (Table 3; Sec. 1)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters of a strategy detector: ``total``, ``trained`` (``requires_grad``),
    ``backbone`` (the body), ``adapters``, ``after`` (neck + RPN + RoI heads)."""
    bb = model.backbone
    n = count_params
    total = n(model)
    return {"total": total, "trained": n(model, trainable=True),
            "backbone": n(bb.body), "adapters": n(bb.adapters), "after": total - n(bb.body) - n(bb.adapters)}


def parameter_table(body: nn.Module, num_classes: int, masks: bool = True, image_size: int = 64,
                    strategies: Sequence[str] = STRATEGIES, capacities: Sequence[str] = ("low", "high"),
                    adapter_reduction: int = 4):
    """Table 3 for our models: total and trained parameters per (capacity, strategy)."""
    import pandas as pd

    rows = []
    for cap in capacities:
        for s in strategies:
            m = build_strategy_detector(body, s, cap, num_classes, masks, image_size, adapter_reduction)
            c = count_parameters(m)
            rows.append({"capacity": cap, "strategy": s, "total": c["total"], "trained": c["trained"],
                         "trained %": round(100 * c["trained"] / c["total"], 1),
                         "after backbone": c["after"], "adapters": c["adapters"]})
    return pd.DataFrame(rows).set_index(["capacity", "strategy"])


def training_memory(model: nn.Module, images: list[torch.Tensor], targets: list[dict]) -> dict[str, float]:
    """Training memory of one step, in MiB, counted rather than sampled (deterministic, any device):
    ``activations`` = bytes autograd saves for the backward pass (``saved_tensors_hooks``),
    ``gradients`` = one gradient per trained parameter, ``optimizer`` = AdamW's two moments,
    ``weights`` = all parameters; ``total`` = their sum. A frozen backbone saves no activations
    for its own backward, has no gradients and no optimizer state."""
    seen: dict[int, int] = {}

    def pack(t):
        # count each storage once (views of one tensor share it)
        try:
            key = t.untyped_storage().data_ptr()
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except RuntimeError:
            pass
        return t

    was = model.training
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = model(images, targets)
    del losses
    model.train(was)
    mib = 2.0 ** 20
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    out = {"activations": sum(seen.values()) / mib, "gradients": trained / mib,
           "optimizer": 2 * trained / mib, "weights": weights / mib}
    out["total"] = sum(out.values())
    return out


# ----------------------------------------------------------------------------------------------
# data and pre-training


def pretrain_worlds(P: config.Params):
    """(upstream classification world, detection world) for the offline profiles.

    The detection world is ``det.world_config(profile)`` (Zipf imbalance 1.5: rare / common /
    frequent classes). Its *sibling* has the same shapes, sizes, clutter and backgrounds, but
    balanced classes (imbalance 0), a different seed and ``pretrain_images`` images: the role of
    ImageNet, larger and more diverse than the detection data, and like ImageNet object-centric:
    one object per image (at the detection objects' sizes, over clutter and textures), whose
    class is the image label."""
    from course_lib import detection as det

    prof = "smoke" if P.profile == "smoke" else "study"
    det_world = det.world_config(prof, image_size=P.image_size)
    up = det_world.replace(num_images=max(P.pretrain_images, 1), eval_images=min(1000, max(P.eval_images, 64)),
                           imbalance=0.0, objects=(1, 1), occlusion=0.0, seed=det_world.seed + 100)
    return up, det_world


@dataclass
class DetData:
    train: Any
    val: Any
    num_classes: int
    class_names: tuple
    tiers: list
    upstream: Any = None


def detection_data(P: config.Params) -> DetData:
    """The detection train / evaluation sets of a profile (world subsets, or COCO for ``paper``)."""
    from course_lib import detection as det

    if P.dataset == "coco":
        make = lambda split, **kw: det.CocoDetectionDataset(P.data_root, split, **kw)  # noqa: E731
        up = None
    else:
        up, world = pretrain_worlds(P)
        make = lambda split, **kw: det.DetectionDataset(world, split, P.data_root, **kw)  # noqa: E731
    train, val = make("train"), make("val")
    if P.train_images and P.train_images < len(train):
        train = train.subset(P.train_images / len(train), seed=0)
    if P.eval_images and P.eval_images < len(val):
        val = make("val", indices=np.arange(P.eval_images))  # the first images of the split
    tiers = train.tiers()
    return DetData(train, val, train.num_classes, tuple(train.class_names), tiers, up)


def pretrain_body(P: config.Params, log: Callable[[str], Any] = print):
    """The pre-trained trunk: ``(body, info)``. ``course``: ``det.ConvBackbone(...).classifier(K)``
    trained with ``train.fit`` on the sibling classification world (cached by config); a timm
    ResNet: ImageNet weights from ``P.weights``. ``info``: top-1 on the sibling's val split,
    seconds, whether it came from the cache."""
    from course_lib import detection as det
    from course_lib import train
    from course_lib.world import WorldClassification

    if P.backbone != "course":
        path = Path(P.weights) if P.weights else paths.data_root(P.data_root) / "weights" / f"{P.backbone}.pth"
        return load_timm_body(P.backbone, path), {"top1": float("nan"), "seconds": 0.0, "from_cache": True,
                                                  "key": str(path), "history": None}
    up, _ = pretrain_worlds(P)
    tr = WorldClassification(up, "train", P.data_root)
    va = WorldClassification(up, "val", P.data_root)
    K = up.num_classes
    cfg = train.TrainConfig(epochs=P.pretrain_epochs, lr=2e-3, weight_decay=0.05, warmup_epochs=0.3,
                            label_smoothing=0.1, num_classes=K, seed=P.seed,
                            max_steps=P.max_steps or None)

    def build():
        torch.manual_seed(P.seed)
        return det.ConvBackbone(widths=tuple(P.widths), blocks=P.blocks, norm="bn").classifier(K)

    def fit(model):
        loader = torch.utils.data.DataLoader(tr, batch_size=64, shuffle=True, drop_last=True,
                                             generator=torch.Generator().manual_seed(P.seed))
        return train.fit(model, loader, cfg, device=P.torch_device)

    # the whole world, loader, model and recipe (display settings leave the key alone;
    # train.cached_model adds the architecture)
    key = {"data": up, "loader": {"batch_size": 64, "seed": P.seed},
           "model": {"widths": list(P.widths), "blocks": P.blocks, "norm": "bn", "seed": P.seed},
           "recipe": cfg, "code": CODE_VERSION}
    clf, info = train.cached_model("frozen_backbones_body", key, build, fit, force=P.retrain)
    res = train.evaluate(clf, torch.utils.data.DataLoader(va, batch_size=256), device=P.torch_device)
    top1 = float(res["top1"])
    log(f"upstream classifier: top-1 {top1:.1f}% on {len(va)} balanced val images "
        f"({'cache' if info.from_cache else f'{info.train_seconds:.0f}s'})")
    return clf.body.cpu(), {"top1": top1, "seconds": info.train_seconds, "from_cache": info.from_cache,
                            "key": info.key, "history": info.history}


# ----------------------------------------------------------------------------------------------
# experiments


@dataclass
class Run:
    strategy: str
    capacity: str
    seed: int
    metrics: Any                    # det.DetMetrics
    params: dict[str, int]
    memory: dict[str, float]
    history: Any                    # det.DetHistory
    train_seconds: float
    images_per_s: float
    from_cache: bool
    model: nn.Module | None = field(default=None, repr=False)


def grid(P: config.Params) -> list[tuple[str, str]]:
    """The (strategy, capacity) cells to train: every strategy at every capacity, the adapters
    only at ``adapter_capacities``."""
    cells = []
    for cap in P.capacities:
        for s in P.strategies:
            if s == "adapters" and cap not in P.adapter_capacities:
                continue
            cells.append((s, cap))
    return cells


def train_cell(P: config.Params, data: DetData, body: nn.Module, up_info: Mapping[str, Any], strategy: str,
               capacity: str, seed: int):
    """Train (or load from the cache) the detector of one (strategy, capacity) cell at ``seed``:
    the same recipe for every strategy; returns ``(model, history, CacheInfo)``."""
    from course_lib import detection as det

    cfg = det.DetTrainConfig(epochs=P.epochs, lr=P.lr, batch_size=P.batch_size, warmup_iters=30,
                             max_steps=P.max_steps or None, seed=seed)

    def build():
        return build_strategy_detector(body, strategy, capacity, data.num_classes, P.masks, P.image_size,
                                       P.adapter_reduction, seed)

    def fit(model):
        loader = det.make_loader(data.train, P.batch_size, shuffle=True, seed=seed)
        return det.train_detector(model, loader, cfg, device=P.torch_device,
                                  desc=f"{strategy} / {capacity} capacity, seed {seed}")

    key = {"data": {"dataset": P.dataset, "n": len(data.train), "image_size": P.image_size},
           "loader": {"batch_size": P.batch_size, "seed": seed},
           "model": {"body": up_info["key"], "strategy": strategy, "capacity": capacity,
                     "masks": P.masks, "adapter_reduction": P.adapter_reduction, "seed": seed},
           "recipe": cfg, "code": CODE_VERSION}
    return det.cached_detector(f"frozen_{strategy}_{capacity}", key, build, fit, force=P.retrain)


def run_experiments(P: config.Params, data: DetData | None = None, log: Callable[[str], Any] = print):
    """Pre-train (or load) the backbone, then train and evaluate every cell of :func:`grid` at
    ``P.seeds`` paired seeds."""
    from course_lib import detection as det

    t0 = time.perf_counter()
    data = data or detection_data(P)
    body, up_info = pretrain_body(P, log)
    dev = P.torch_device
    probe = det.make_loader(data.train, min(P.batch_size, len(data.train)), shuffle=False)
    probe_images, probe_targets = next(iter(probe))
    runs: dict[tuple[str, str], list[Run]] = {}
    for strategy, cap in grid(P):
        for seed in range(P.seed, P.seed + P.seeds):
            model, hist, info = train_cell(P, data, body, up_info, strategy, cap, seed)
            model.to("cpu")
            mem = training_memory(model, probe_images, probe_targets)
            metrics = det.evaluate(model, data.val, device=dev, tiers=data.tiers)
            params = count_parameters(model)
            ips = hist.images_per_s if hist is not None else float("nan")
            run = Run(strategy, cap, seed, metrics, params, mem, hist, info.train_seconds, ips,
                      info.from_cache, model)
            runs.setdefault((strategy, cap), []).append(run)
            box = metrics.summary["bbox"]
            log(f"{strategy:>9s} / {cap:4s} seed {seed}: box AP {box['AP']:.1f} (AP50 {box['AP50']:.1f})"
                + (f", mask AP {metrics.summary['segm']['AP']:.1f}" if "segm" in metrics.summary else "")
                + f" | trained {params['trained'] / 1e6:.2f}M of {params['total'] / 1e6:.2f}M"
                f" | {ips:.0f} img/s, {mem['total']:.0f} MiB"
                f" ({'cache' if info.from_cache else f'{info.train_seconds:.0f}s'})")
    return {"runs": runs, "data": data, "body": body, "upstream": up_info,
            "seconds": time.perf_counter() - t0}


def _mean(runs: Sequence[Run], get: Callable[[Run], float]) -> float:
    vals = [get(r) for r in runs]
    return float(np.mean(vals)) if vals else float("nan")


def _ap(iou: str = "bbox", key: str = "AP") -> Callable[[Run], float]:
    return lambda r: r.metrics.summary.get(iou, {}).get(key, float("nan"))


def _tier(t: str, iou: str = "bbox") -> Callable[[Run], float]:
    return lambda r: r.metrics.tiers.get(iou, {}).get(t, float("nan"))


def tables(res: dict[str, Any]) -> dict[str, Any]:
    """The notebook's tables as DataFrames: ``table1`` (AP by strategy and capacity, paper beside),
    ``table3`` (trained parameters and the freezing delta), ``table5`` (AP by class-frequency
    tier), ``table7`` (adapters), ``cost`` (training speed, memory)."""
    import pandas as pd

    runs = res["runs"]
    caps = sorted({c for _, c in runs}, key=list(CAPACITIES).index)
    paper_row = {"low": "R101 + FPN", "high": "R101 + NAS-FPN + Cascade"}
    t1 = []
    for (s, c), rs in runs.items():
        row = {"capacity": c, "strategy": s, "box AP": _mean(rs, _ap()), "box AP50": _mean(rs, _ap("bbox", "AP50"))}
        if "segm" in rs[0].metrics.summary:
            row["mask AP"] = _mean(rs, _ap("segm"))
        pr = PAPER["table1"][paper_row[c]]
        row[f"paper mAP ({'FPN' if c == 'low' else 'NAS-FPN+Cascade'})"] = pr.get(s, float("nan")) if s != "adapters" \
            else PAPER["table7"]["ImageNet"]["adapters"][0]
        t1.append(row)
    table1 = pd.DataFrame(t1).set_index(["capacity", "strategy"])
    t3 = []
    paper3 = {"low": "FPN", "high": "Cascade + NAS-FPN"}
    for c in caps:
        if ("frozen", c) not in runs or ("finetune", c) not in runs:
            continue
        fz = runs[("frozen", c)][0]
        p = PAPER["table3"][paper3[c]]
        t3.append({"capacity": c, "params": fz.params["total"], "trained (frozen)": fz.params["trained"],
                   "trained %": round(100 * fz.params["trained"] / fz.params["total"], 1),
                   "Δ box AP frozen − finetune": _mean(runs[("frozen", c)], _ap()) - _mean(runs[("finetune", c)], _ap()),
                   f"paper ({paper3[c]}) trained %": p["trained_pct"], "paper Δ mAP": p["delta"]})
    table3 = pd.DataFrame(t3).set_index("capacity") if t3 else None
    t5 = []
    p5 = PAPER["table5"]
    for (s, c), rs in runs.items():
        row = {"capacity": c, "strategy": s}
        for iou, short in (("bbox", "box"), ("segm", "mask")):
            if iou in rs[0].metrics.tiers:
                for t in ("rare", "common", "frequent"):
                    row[f"{short} AP{t[0]}"] = _mean(rs, _tier(t, iou))
        if s in p5:
            row.update({f"paper box AP{t[0]}": p5[s][t] for t in ("rare", "common", "frequent")})
        t5.append(row)
    table5 = pd.DataFrame(t5).set_index(["capacity", "strategy"])
    t7 = []
    for c in caps:
        for s in ("finetune", "frozen", "adapters"):
            if (s, c) in runs:
                rs = runs[(s, c)]
                p = PAPER["table7"]["ImageNet"][s]
                t7.append({"capacity": c, "strategy": s, "box AP": _mean(rs, _ap()),
                           "box AP50": _mean(rs, _ap("bbox", "AP50")), "trained": rs[0].params["trained"],
                           "paper mAP": p[0], "paper AP50": p[1]})
    table7 = pd.DataFrame(t7).set_index(["capacity", "strategy"])
    cost = pd.DataFrame([{"capacity": c, "strategy": s, "train img/s": _mean(rs, lambda r: r.images_per_s),
                          "train s": _mean(rs, lambda r: r.train_seconds),
                          "activations MiB": rs[0].memory["activations"],
                          "grads + AdamW MiB": rs[0].memory["gradients"] + rs[0].memory["optimizer"],
                          "memory MiB": rs[0].memory["total"],
                          "peak mem MB (det)": _mean(rs, lambda r: r.history.last("peak_mem_mb") if r.history else float("nan"))}
                         for (s, c), rs in runs.items()]).set_index(["capacity", "strategy"])
    if not (cost["peak mem MB (det)"] > 0).all():  # CPU: an RSS high-water delta, not per run
        cost = cost.drop(columns="peak mem MB (det)")
    return {"table1": table1, "table3": table3, "table5": table5, "table7": table7, "cost": cost}


# ----------------------------------------------------------------------------------------------
# paper vs. ours


def recorder(P: config.Params):
    """The notebook's results recorder; make it first, so its clock times the whole run."""
    from course_lib.results import Results

    return Results(NOTEBOOK, TITLE, PAPER_URL, P)


def record_results(P: config.Params, res: dict[str, Any], rec=None):
    """The "paper vs. ours" claims, judged by rules (``course_lib.results``) and saved.

    Every comparison pairs two rows seed by seed (reference rows ``box_<strategy>_<capacity>``,
    ``delta_low``, ``gain_frequent_<capacity>``, ``memory_finetune``, ``speed_finetune`` and, with
    masks, ``scratch_high_mask`` hold a baseline's per-seed values, reported and not judged); the four
    headline claims (:data:`HEADLINE`, issue 18's ids) are on box AP. "Matches or beats" is a
    one-sided tolerance of :data:`MATCH_TOLERANCE`. With a single seed a comparison must also win
    by :data:`SINGLE_SEED_MARGIN` AP points and stays inconclusive (fewer than 3 seeds).
    """
    from course_lib.results import AtLeast, Better, Equivalent, Within, Reference

    runs = res["runs"]
    seeds = [r.seed for r in next(iter(runs.values()))]
    m = SINGLE_SEED_MARGIN if len(seeds) < 2 else 0.0
    rec = rec if rec is not None else recorder(P)
    box = lambda s, c: [_ap()(r) for r in runs[(s, c)]]  # noqa: E731
    has = lambda s, c: (s, c) in runs  # noqa: E731
    t1, fpn, top = PAPER["table1"], "R101 + FPN", "R101 + NAS-FPN + Cascade"
    learns = AtLeast(1.0)  # a detector that learnt anything has box AP well above 1

    def ref(s: str, c: str) -> str:  # a cell's per-seed box AP: the baseline row of a paired claim
        id_ = f"box_{s}_{c}"
        if id_ not in {x.id for x in rec.claims}:
            rec.add(id_, f"reference: box AP of {s} / {c} capacity, per seed", paper=None, ours=box(s, c),
                    seeds=seeds, unit="AP", rule=Reference(), note="the baseline row of a paired claim")
        return id_

    # Tables 1 and 3, low capacity: freezing hurts
    if has("finetune", "low"):
        rec.add("finetune_low", f"fine-tuned backbone, low capacity: the detector learns [Table 1, {fpn}]",
                paper=t1[fpn]["finetune"], ours=box("finetune", "low"), seeds=seeds, unit="AP", rule=learns)
        if has("frozen", "low"):
            rec.add("frozen_low", "with a low-capacity FPN, freezing the backbone hurts, paired per seed "
                    f"[Table 1/3, {fpn}: {t1[fpn]['frozen']} vs {t1[fpn]['finetune']}]",
                    paper=t1[fpn]["frozen"], ours=box("frozen", "low"), seeds=seeds, unit="AP",
                    rule=Better("finetune_low", higher_is_better=False, min_effect=m))
    # high capacity: pre-training helps, freezing matches or wins, adapters add more
    if has("scratch", "high"):
        rec.add("scratch_high", f"from scratch, high capacity: the detector learns [Table 1, {top}]",
                paper=t1[top]["scratch"], ours=box("scratch", "high"), seeds=seeds, unit="AP", rule=learns)
    if has("finetune", "high"):
        if has("scratch", "high"):  # the study profile trains no scratch cells
            rec.add("finetune_high", "classification pre-training + fine-tuning beats training from scratch "
                    f"[Table 1, {top}: {t1[top]['finetune']} vs {t1[top]['scratch']}]", paper=t1[top]["finetune"],
                    ours=box("finetune", "high"), seeds=seeds, unit="AP", rule=Better("scratch_high", min_effect=m))
        if has("frozen", "high"):
            rec.add("frozen_high_beats_finetune", "a frozen backbone with high-capacity components after it "
                    f"matches or beats fine-tuning with the same detector (tolerance {MATCH_TOLERANCE:g} AP), paired "
                    f"per seed [Tables 1/3, {top}: {t1[top]['frozen']} vs {t1[top]['finetune']}]",
                    paper=t1[top]["frozen"], ours=box("frozen", "high"), seeds=seeds, unit="AP", headline=True,
                    rule=Equivalent(ref("finetune", "high"), tolerance=MATCH_TOLERANCE, one_sided=True))
    if has("frozen", "high") and has("frozen", "low"):
        rec.add("frozen_capacity_helps", "with a frozen backbone, high capacity after it beats low capacity, "
                f"paired per seed [Table 3: {t1[top]['frozen']} ({top}) vs {t1[fpn]['frozen']} ({fpn}), frozen]",
                paper=t1[top]["frozen"], ours=box("frozen", "high"), seeds=seeds, unit="AP", headline=True,
                rule=Better(ref("frozen", "low"), min_effect=m))
    if all(has(s, c) for s in ("frozen", "finetune") for c in ("low", "high")):
        d = {c: [a - b for a, b in zip(box("frozen", c), box("finetune", c))] for c in ("low", "high")}
        rec.add("delta_low", "reference: frozen - fine-tuned box AP at low capacity, per seed", paper=None,
                ours=d["low"], seeds=seeds, unit="pp", rule=Reference(), note="the baseline row of capacity_gain")
        rec.add("capacity_gain", "the gain from freezing grows with the capacity after the backbone, paired per "
                "seed [Table 3: -6.5 (FPN) -> +0.1 (NAS-FPN) -> +0.7 (Cascade + NAS-FPN); Table 1: +0.8]",
                paper=PAPER["table3"]["Cascade + NAS-FPN"]["delta"], ours=d["high"], seeds=seeds, unit="pp",
                rule=Better("delta_low", min_effect=m),
                note=f"frozen - finetune box AP: low {np.mean(d['low']):+.2f}, high {np.mean(d['high']):+.2f}")
    # Table 5: where the gain of freezing goes, at the highest capacity trained with both
    c5 = next((c for c in ("high", "low") if has("frozen", c) and has("finetune", c)), None)
    if c5:
        gains = {t: [_tier(t)(a) - _tier(t)(b) for a, b in zip(runs[("frozen", c5)], runs[("finetune", c5)])]
                 for t in ("rare", "common", "frequent")}
        g = {t: float(np.nanmean(v)) for t, v in gains.items()}
        p5 = PAPER["table5"]
        if all(np.isfinite(x) for v in gains.values() for x in v):
            rec.add(f"gain_frequent_{c5}", f"reference: frozen - fine-tuned box AP on frequent classes ({c5} "
                    "capacity), per seed", paper=round(p5["frozen"]["frequent"] - p5["finetune"]["frequent"], 1),
                    ours=gains["frequent"], seeds=seeds, unit="pp", rule=Reference(),
                    note="the baseline row of frozen_helps_rare_most")
            rec.add("frozen_helps_rare_most", f"freezing helps rare classes more than frequent ones ({c5} capacity; "
                    "frozen - fine-tuned box AP per tier, paired per seed) [Table 5, LVIS box: rare +2.9, common "
                    "+1.5, frequent +0.1]", paper=round(p5["frozen"]["rare"] - p5["finetune"]["rare"], 1),
                    ours=gains["rare"], seeds=seeds, unit="pp", headline=c5 == "high",
                    rule=Better(f"gain_frequent_{c5}", min_effect=m),
                    note=f"frozen - finetune box AP: rare {g['rare']:+.2f}, common {g['common']:+.2f}, "
                         f"frequent {g['frequent']:+.2f}")
    # Table 7: residual adapters on the frozen backbone
    c7 = next((c for c in ("high", "low") if has("adapters", c) and has("frozen", c)), None)
    if c7:
        rec.add("frozen_adapters_help", f"residual adapters on the frozen backbone add to it ({c7} capacity, "
                "paired per seed) [Table 7, ImageNet: 53.0 vs 51.8]", paper=PAPER["table7"]["ImageNet"]["adapters"][0],
                ours=box("adapters", c7), seeds=seeds, unit="AP", headline=c7 == "high",
                rule=Better(ref("frozen", c7), min_effect=m))
    # Table 3 and cost: what freezing leaves to train, memory, speed
    for c, paper_row, rule in (("low", "FPN", Within(0.25)), ("high", "Cascade + NAS-FPN", AtLeast(39.9))):
        if has("frozen", c):
            fz = runs[("frozen", c)][0]
            rec.add(f"trained_{c}", f"share of parameters trained with a frozen backbone, {c} capacity "
                    f"[Table 3, {paper_row}]" + (" (at least NAS-FPN's 39.9%)" if c == "high" else ""),
                    paper=PAPER["table3"][paper_row]["trained_pct"], ours=100 * fz.params["trained"] / fz.params["total"],
                    unit="%", rule=rule, note=f"{fz.params['trained']:,} of {fz.params['total']:,} parameters")
    cc = next((c for c in ("low", "high") if has("frozen", c) and has("finetune", c)), None)
    if cc:
        fz, ft = runs[("frozen", cc)], runs[("finetune", cc)]
        # both cost rows pair the two strategies seed by seed (the memory is counted, the same at
        # every seed; the speed is wall clock)
        ft_mem = [r.memory["total"] for r in ft]
        ft_memory = float(np.mean(ft_mem))
        rec.add("memory_finetune", f"reference: training memory of the fine-tuned detector ({cc} capacity), "
                "per seed", paper=None, ours=ft_mem, seeds=seeds, unit="MiB",
                rule=Reference(), note="the baseline row of memory_frozen")
        rec.add("memory_frozen", f"freezing needs less training memory ({cc} capacity; counted: activations, "
                "gradients, AdamW; paired per seed) [Sec. 1: 'significantly reducing ... memory']", paper=None,
                ours=[r.memory["total"] for r in fz], seeds=seeds, unit="MiB",
                rule=Better("memory_finetune", higher_is_better=False, min_effect=0.1 * ft_memory),
                note=f"fine-tuned {ft_memory:.1f} MiB; at least 10% less needed")
        speeds, ft_speeds = [r.images_per_s for r in fz], [r.images_per_s for r in ft]
        if all(np.isfinite(speeds)) and all(np.isfinite(ft_speeds)):
            ft_speed = float(np.mean(ft_speeds))
            rec.add("speed_finetune", f"reference: training speed of the fine-tuned detector ({cc} capacity, "
                    "wall clock), per seed", paper=None, ours=ft_speeds, seeds=seeds, unit="img/s",
                    rule=Reference(), note="the baseline row of speed_frozen")
            rec.add("speed_frozen", f"freezing trains faster ({cc} capacity, wall clock, paired per seed) "
                    "[Sec. 1: '... and FLOPs']", paper=None, ours=speeds, seeds=seeds, unit="img/s",
                    rule=Better("speed_finetune", min_effect=0.05 * ft_speed),
                    note=f"fine-tuned {ft_speed:.1f} img/s; at least 5% faster needed")
    _record_mask_claims(rec, runs, m, seeds)
    rec.save()
    return rec


def _record_mask_claims(rec, runs: dict, m: float, seeds: list[int]) -> None:
    """The freezing comparisons again on mask AP (ids ``*_mask``), when the detectors are Mask
    R-CNNs. The paper reports box AP only for them, so these rows have no paper number; the
    rules, the pairing by seed and the margin are the box claims'."""
    from course_lib.results import AtLeast, Better, Equivalent, Reference

    if not runs or "segm" not in next(iter(runs.values()))[0].metrics.summary:
        return
    mask = lambda s, c: [_ap("segm")(r) for r in runs[(s, c)]]  # noqa: E731
    has = lambda s, c: (s, c) in runs  # noqa: E731
    if has("finetune", "low") and has("frozen", "low"):
        rec.add("finetune_low_mask", "fine-tuned backbone, low capacity: mask AP (the baseline of the next row)",
                paper=None, ours=mask("finetune", "low"), seeds=seeds, unit="AP", rule=AtLeast(1.0))
        rec.add("frozen_low_mask", "with a low-capacity FPN, freezing the backbone hurts, mask AP, paired per seed",
                paper=None, ours=mask("frozen", "low"), seeds=seeds, unit="AP",
                rule=Better("finetune_low_mask", higher_is_better=False, min_effect=m))
    if has("finetune", "high"):
        if has("scratch", "high"):
            rec.add("scratch_high_mask", "reference: mask AP of the detector trained from scratch, high capacity, "
                    "per seed", paper=None, ours=mask("scratch", "high"), seeds=seeds, unit="AP", rule=Reference(),
                    note="the baseline row of finetune_high_mask")
            rec.add("finetune_high_mask", "classification pre-training + fine-tuning beats training from scratch "
                    "(high capacity), mask AP, paired per seed", paper=None, ours=mask("finetune", "high"),
                    seeds=seeds, unit="AP", rule=Better("scratch_high_mask", min_effect=m))
        else:  # no scratch cell: only the baseline row of the next claim, as on box AP
            rec.add("finetune_high_mask", "reference: mask AP of the fine-tuned detector, high capacity, per seed",
                    paper=None, ours=mask("finetune", "high"), seeds=seeds, unit="AP", rule=Reference(),
                    note="the baseline row of frozen_high_mask")
        if has("frozen", "high"):
            rec.add("frozen_high_mask", "with high-capacity components after it, the frozen backbone matches or "
                    f"beats fine-tuning (tolerance {MATCH_TOLERANCE:g} AP), mask AP, paired per seed", paper=None,
                    ours=mask("frozen", "high"), seeds=seeds, unit="AP",
                    rule=Equivalent("finetune_high_mask", tolerance=MATCH_TOLERANCE, one_sided=True))
            if has("adapters", "high"):
                rec.add("adapters_high_mask", "residual adapters on the frozen backbone improve it, mask AP, paired "
                        "per seed", paper=None, ours=mask("adapters", "high"), seeds=seeds, unit="AP",
                        rule=Better("frozen_high_mask", min_effect=m))
