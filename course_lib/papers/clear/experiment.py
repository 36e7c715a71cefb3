"""Notebook 05's experiment: its parameters (``PARAMS``), the paper's Table 1, the
self-supervised bucket-0 backbone and its features, every (family, protocol, method, seed) run,
the tables and the "paper vs. ours" record."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from course_lib import config
from course_lib.config import Param
from course_lib.features import extract_features
from course_lib.results.takeaways import Point

from .method import (
    METHODS, METRICS, PROTOCOLS, Bucket, LearnConfig, Stream, StreamRun, protocol_splits, run_protocol,
)
from .stream import CODE_VERSION, load_stream

NOTEBOOK = "05_clear"
PAPER_URL = "https://arxiv.org/abs/2201.06289"
TITLE = "The CLEAR Benchmark: Continual LEArning on Real-World Imagery"

FAMILIES = ("resnet", "linear")
METHOD_LABELS = {
    "finetune": "Finetuning (current bucket)",
    "reservoir": "Reservoir + Finetuning",
    "biased_reservoir": "Biased Reservoir + Finetuning",
    "er": "ER",
    "lwf": "LwF",
    "ewc": "EWC",
}

# Table 1 of the paper (CLEAR-10, %): IID protocol in-domain / next-domain / accuracy / backward /
# forward transfer, and the streaming protocol's next-domain accuracy. "resnet" = ResNet18 from
# scratch, "linear" = linear model on MoCo v2 features pre-trained on bucket 0 (YFCC-B0). Our
# "reservoir" / "biased_reservoir" are the paper's "Finetuning" rows with those sampling
# strategies; plain finetuning on the current bucket has no row in the paper.
PAPER: dict[str, dict[str, dict[str, float]]] = {
    "resnet": {
        "ewc": {"in_domain": 76.6, "next_domain": 74.3, "accuracy": 76.7, "backward": 76.5,
                "forward": 71.1, "stream_next": 77.1},
        "lwf": {"in_domain": 77.8, "next_domain": 75.7, "accuracy": 79.2, "backward": 79.6,
                "forward": 72.5, "stream_next": 78.8},
        "er": {"in_domain": 77.3, "next_domain": 75.6, "accuracy": 79.0, "backward": 79.3,
               "forward": 72.4, "stream_next": 78.1},
        "reservoir": {"in_domain": 69.5, "next_domain": 67.7, "accuracy": 70.0, "backward": 70.0,
                      "forward": 66.5, "stream_next": 71.6},
        "biased_reservoir": {"in_domain": 75.5, "next_domain": 72.7, "accuracy": 75.7,
                             "backward": 75.8, "forward": 70.2, "stream_next": 77.2},
    },
    "linear": {
        "ewc": {"in_domain": 91.6, "next_domain": 90.6, "accuracy": 91.7, "backward": 91.7,
                "forward": 88.6, "stream_next": 91.1},
        "lwf": {"in_domain": 91.6, "next_domain": 90.7, "accuracy": 92.2, "backward": 92.3,
                "forward": 88.7, "stream_next": 91.2},
        "er": {"in_domain": 91.7, "next_domain": 90.9, "accuracy": 92.2, "backward": 92.3,
               "forward": 88.9, "stream_next": 91.4},
        "reservoir": {"in_domain": 89.3, "next_domain": 88.7, "accuracy": 90.3, "backward": 90.6,
                      "forward": 87.2, "stream_next": 89.4},
        "biased_reservoir": {"in_domain": 91.6, "next_domain": 90.5, "accuracy": 91.7,
                             "backward": 91.7, "forward": 88.5, "stream_next": 91.1},
    },
}


def names(value) -> tuple[str, ...]:
    """A list parameter given as a list/tuple or as a comma-separated string (papermill ``-p``)."""
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


# The notebook's paper knobs and their per-profile defaults (config adds seed, device, data_root)
PARAMS: dict[str, Param] = {
    "dataset": Param({"smoke": "world", "study": "world", "paper": "clear10"},
                     "world (offline stream) or clear10 (real CLEAR-10 folders)",
                     choices=("world", "clear10")),
    "image_size": Param({"smoke": 32, "study": 32, "paper": 224}, "input side in pixels",
                        type=int, low=32, high=256),
    "images_per_class": Param({"smoke": 12, "study": 50, "paper": 300},
                              "world: labeled images per class and bucket (CLEAR-10: 300)",
                              type=int, low=4),
    "unlabeled_images": Param({"smoke": 256, "study": 1500, "paper": 0},
                              "world: images of the unlabeled bucket 0 (clear10: all there are)",
                              type=int, low=0),
    "time_scale": Param(1.0, "world: global drift (WorldConfig.time) per bucket", low=0.0, high=5.0),
    "concept_drift": Param(1.0, "world: 1 = the concept schedule of CONCEPTS, 0 = no shape change",
                           low=0.0, high=1.0),
    "color_cue": Param(0.5, "world: how much an object's hue tells its shape", low=0.0, high=1.0),
    "bg_contrast": Param(0.6, "world: background texture contrast", low=0.0, high=1.0),
    "methods": Param(METHODS, "the baselines to run (a list, or a comma-separated string)",
                     type=(list, tuple, str), check=lambda m: 0 < len(names(m)) and set(names(m)) <= set(METHODS),
                     check_help=f"a non-empty subset of {METHODS}"),
    "families": Param(FAMILIES, "model families: resnet (from scratch), linear (on bucket-0 "
                      "self-supervised features)", type=(list, tuple, str),
                      check=lambda m: 0 < len(names(m)) and set(names(m)) <= set(FAMILIES),
                      check_help=f"a non-empty subset of {FAMILIES}"),
    "resnet": Param({"smoke": "small_resnet", "study": "small_resnet", "paper": "resnet18"},
                    "the from-scratch network", choices=("small_resnet", "resnet18")),
    "resnet_width": Param({"smoke": 8, "study": 16, "paper": 64}, "small_resnet stage-1 width",
                          type=int, low=4, high=128),
    "resnet_epochs": Param({"smoke": 1, "study": 3, "paper": 30}, "epochs per bucket (ResNet)",
                           type=int, low=1),
    "resnet_lr": Param({"smoke": 2e-3, "study": 2e-3, "paper": 1e-3}, "Adam lr (ResNet)",
                       low=1e-6, high=1.0),
    "batch_size": Param({"smoke": 32, "study": 32, "paper": 128}, type=int, low=2),
    "linear_epochs": Param({"smoke": 10, "study": 25, "paper": 100},
                           "epochs per bucket (linear)", type=int, low=1),
    "linear_lr": Param(1e-2, "Adam lr (linear)", low=1e-6, high=1.0),
    "lwf_lambda": Param(1.0, "LwF: weight of the distillation term", low=0.0, high=100.0),
    "lwf_temperature": Param(2.0, "LwF: temperature T", low=0.1, high=20.0),
    "ewc_lambda": Param(100.0, "EWC (ResNet): weight lambda of the Fisher penalty", low=0.0, high=1e7),
    "linear_ewc_lambda": Param(1.0, "EWC (linear models): weight lambda of the Fisher penalty "
                               "(100 made linear EWC the worst baseline; docs/calibration.md)",
                               low=0.0, high=1e7),
    "bias_mode": Param("alpha", "biased reservoir: replace with probability alpha or alpha/t",
                       choices=("alpha", "alpha/t")),
    "bias_alpha": Param(0.5, "biased reservoir: alpha", low=0.0, high=10.0),
    "resnet_seeds": Param({"smoke": 1, "study": 5, "paper": 3}, "seeds of the ResNet runs (the headline "
                          "claims pair them with the linear runs of the same seeds)", type=int, low=1, high=10),
    "linear_seeds": Param({"smoke": 1, "study": 5, "paper": 3}, "seeds of the linear runs",
                          type=int, low=1, high=10),
    "ssl_epochs": Param({"smoke": 1, "study": 40, "paper": 100},
                        "self-supervised (DINO) epochs on bucket 0", type=int, low=1),
    "max_steps": Param({"smoke": 0, "study": 0, "paper": 0}, "cap on SGD steps per bucket "
                       "(0: none)", type=int, low=0),
    "retrain": Param(False, "ignore the cached self-supervised backbone and train it again"),
}


# ----------------------------------------------------------------------------------------------
# Self-supervised features (bucket 0) and the experiments


def stream_stats(stream: Stream) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (in [0, 1] units) for the from-scratch network: the world's fixed
    statistics on the world, bucket 1's on real photos (ImageNet's would do as well)."""
    if stream.source == "world":
        from course_lib.world import WORLD_MEAN, WORLD_STD

        return tuple(WORLD_MEAN), tuple(WORLD_STD)
    x = stream.labeled[0].images.float() / 255
    return tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).tolist())


class _Normalize:
    """uint8 (or float in [0, 255]) batch -> normalised float on ``device``."""

    def __init__(self, stats, device):
        self.mean = torch.tensor(stats[0], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(stats[1], device=device).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.mean.device).float() / 255 - self.mean) / self.std


def dino_recipe(P: config.Params):
    """The DINO recipe for bucket 0: notebook 06's recipe of the same profile
    (``selfsup.dino_config``) with our image size and ``ssl_epochs``."""
    from course_lib import selfsup

    over = {"epochs": P.ssl_epochs}
    if P.profile != "paper":
        over["image_size"] = P.image_size
    if P.profile == "study":  # pinned: what docs/calibration.md (05 CLEAR) measured
        over.update(model="course", local_crops=6, batch_size=128, lr=1e-3, momentum_teacher=0.996, out_dim=1024)
    return selfsup.dino_config(P.profile, **over)


def pretrain_backbone(P: config.Params, stream: Stream, log: Callable | None = print):
    """Self-supervised pre-training on the unlabeled bucket 0 with DINO (``course_lib.selfsup``,
    notebook 06's backbone; the paper pre-trains MoCo v2 on its bucket 0), cached with
    ``train.cached_model`` (key: the stream, the recipe and the seed). Returns (teacher ViT
    backbone in eval mode, CacheInfo)."""
    from course_lib import selfsup, train

    images = stream.buckets[0].images
    if len(images) == 0:
        raise FileNotFoundError("bucket 0 is empty: the linear family needs the unlabeled bucket 0 "
                                "(CLEAR-10: catalog entry clear10_unlabeled)")
    cfg = dino_recipe(P)
    device = P.torch_device
    key = {"stream": stream.key, "n": len(images), "dino": cfg.key(), "seed": P.seed,
           "dino_code": selfsup.CODE_VERSION, "v": CODE_VERSION}

    def build():
        return selfsup.build_backbone(cfg).to(device)

    def fit(model):
        teacher, hist = selfsup.train_dino(images, cfg, device=device, seed=P.seed, log=log)
        model.load_state_dict(teacher.state_dict())
        return hist

    model, info = train.cached_model("clear_dino_b0", key, build, fit, force=P.retrain)
    model.eval()
    model.pretrained_cfg = {"mean": cfg.mean, "std": cfg.std}
    if log is not None:
        log(f"DINO on bucket 0 ({len(images)} unlabeled images, {cfg.epochs} epochs): "
            f"{'from the cache' if info.from_cache else f'trained in {info.train_seconds:.0f}s'}")
    return model, info


def _make_resnet(P: config.Params, num_classes: int) -> Callable[[], nn.Module]:
    from course_lib.models.convnets import create_convnet, small_resnet

    if P.resnet == "small_resnet":
        return lambda: small_resnet(num_classes, width=P.resnet_width)
    return lambda: create_convnet(P.resnet, num_classes)


def _linear_factory(dim: int, num_classes: int) -> Callable[[], nn.Module]:
    return lambda: nn.Linear(dim, num_classes)


def _learn_cfg(P: config.Params, family: str, method: str, seed: int) -> LearnConfig:
    common = {"method": method, "batch_size": P.batch_size, "lwf_lambda": P.lwf_lambda,
              "lwf_temperature": P.lwf_temperature, "ewc_lambda": P.ewc_lambda,
              "bias_mode": P.bias_mode, "bias_alpha": P.bias_alpha, "max_steps": P.max_steps,
              "seed": seed}
    if family == "resnet":
        return LearnConfig(epochs=P.resnet_epochs, lr=P.resnet_lr, augment=True, **common)
    common["ewc_lambda"] = P.linear_ewc_lambda
    return LearnConfig(epochs=P.linear_epochs, lr=P.linear_lr, augment=False, **common)


def run_experiments(P: config.Params, stream: Stream | None = None, backbone: nn.Module | None = None,
                    log: Callable = print) -> dict[str, Any]:
    """Every (family, protocol, method, seed) of the notebook: a :class:`StreamRun` each.

    The ResNet sees normalised images (with flip + shift augmentation); the linear models see
    the backbone's frozen features of every bucket, standardised with bucket 0's statistics
    (unlabeled data, so no peeking at labels). Returns a dict with ``runs[(family, protocol,
    method)] = [StreamRun per seed]``, the stream, the backbone and timings.
    """
    t_all = time.perf_counter()
    stream = stream if stream is not None else load_stream(P)
    dev = P.torch_device
    labels = [b.labels for b in stream.labeled]
    C = stream.num_classes
    runs: dict[tuple[str, str, str], list[StreamRun]] = {}
    timing: dict[str, float] = {}
    info = None
    feats = None
    methods, families = names(P.methods), names(P.families)
    if "linear" in families:
        t0 = time.perf_counter()
        if backbone is None:
            backbone, info = pretrain_backbone(P, stream, log)
        timing["ssl"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        f0 = extract_features(backbone, stream.buckets[0].images, device=dev)
        mu, sd = f0.mean(0), f0.std(0) + 1e-6
        feats = [(extract_features(backbone, b.images, device=dev) - mu) / sd for b in stream.labeled]
        timing["features"] = time.perf_counter() - t0
    for family in FAMILIES:
        if family not in families:
            continue
        transform = None
        if family == "resnet":
            inputs = [b.images for b in stream.labeled]  # uint8, normalised per batch
            transform = _Normalize(stream_stats(stream), dev)
            make = _make_resnet(P, C)
            seeds = range(P.resnet_seeds)
        else:
            inputs = feats
            make = _linear_factory(feats[0].shape[1], C)
            seeds = range(P.linear_seeds)
        t0 = time.perf_counter()
        for protocol in PROTOCOLS:
            for seed in seeds:
                splits = protocol_splits(stream, protocol, seed=P.seed + seed)
                for method in methods:
                    cfg = _learn_cfg(P, family, method, seed=P.seed + seed)
                    r = run_protocol(make, inputs, labels, splits, cfg, dev, keep_model=(seed == 0),
                                     transform=transform)
                    runs.setdefault((family, protocol, method), []).append(r)
                    m = r.metrics
                    log(f"{family:6s} {protocol:9s} {method:16s} seed {seed}: in {m['in_domain']:5.1f} "
                        f"next {m['next_domain']:5.1f} acc {m['accuracy']:5.1f} bwt {m['backward']:5.1f} "
                        f"fwt {m['forward']:5.1f}  ({r.seconds:.1f}s)")
        timing[family] = time.perf_counter() - t0
    timing["total"] = time.perf_counter() - t_all
    return {"runs": runs, "stream": stream, "backbone": backbone, "ssl_info": info, "timing": timing,
            "features": feats, "methods": methods, "families": tuple(f for f in FAMILIES if f in families)}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else float("nan")


def metrics_frame(res: dict[str, Any]):
    """One row per (family, protocol, method): the five metrics (mean over seeds) and seeds."""
    import pandas as pd

    rows = []
    for (family, protocol, method), rs in res["runs"].items():
        row = {"family": family, "protocol": protocol, "method": method, "seeds": len(rs)}
        for k in METRICS:
            row[k] = _mean_std([r.metrics[k] for r in rs])[0]
        rows.append(row)
    return pd.DataFrame(rows).set_index(["family", "protocol", "method"])


def table1(res: dict[str, Any]):
    """Table 1 at our scale: per family and method the IID metrics and the streaming
    next-domain accuracy (ours, mean over seeds), the paper's numbers beside them."""
    import pandas as pd

    rows = []
    for family in res["families"]:
        for method in res["methods"]:
            iid = res["runs"].get((family, "iid", method))
            st = res["runs"].get((family, "streaming", method))
            if iid is None:
                continue
            pp = PAPER[family].get(method, {})
            row = {"network": "ResNet (scratch)" if family == "resnet" else "Linear (SSL on bucket 0)",
                   "method": METHOD_LABELS[method]}
            for k, short in zip(METRICS, ("in", "next", "acc", "bwt", "fwt")):
                row[f"{short}"] = _mean_std([r.metrics[k] for r in iid])[0]
                row[f"paper {short}"] = pp.get(k, float("nan"))
            row["stream next"] = _mean_std([r.metrics["next_domain"] for r in st])[0] if st else float("nan")
            row["paper stream next"] = pp.get("stream_next", float("nan"))
            rows.append(row)
    return pd.DataFrame(rows).set_index(["network", "method"])


# ----------------------------------------------------------------------------------------------
# What the models see, and accuracy per concept variant


def model_inputs(res: dict[str, Any], family: str, t: int) -> torch.Tensor:
    """What the models of ``family`` take for labeled bucket ``t`` (0-based), on the CPU:
    normalised images (ResNet) or standardised features (linear)."""
    stream = res["stream"]
    if family == "resnet":
        return _Normalize(stream_stats(stream), "cpu")(stream.labeled[t].images)
    return res["features"][t]


def variant_accuracy(model: nn.Module, bucket: Bucket, x: torch.Tensor) -> dict[str, float]:
    """Accuracy (%) of ``model`` on one bucket's images of each variant (old / new / background)."""
    with torch.no_grad():
        model.eval()
        pred = torch.cat([model(x[s:s + 512]).argmax(1) for s in range(0, len(x), 512)])
    out = {}
    for v, name in ((0, "old variant"), (1, "new variant"), (-1, "background")):
        sel = bucket.variant == v
        if sel.any():
            out[name] = 100.0 * float((pred[sel] == bucket.labels[sel]).float().mean())
    return out


# ----------------------------------------------------------------------------------------------
# Paper vs. ours

# Points a single-run comparison must win by to count as reproduced (no seed spread known):
# about the seed-to-seed standard deviation of an R-average at the study scale
# (docs/calibration.md).
SINGLE_SEED_MARGIN = 2.0


def recorder(P: config.Params):
    """The notebook's results recorder; make it first, so its clock times the whole run."""
    from course_lib.results import Results

    return Results("05_clear", TITLE, PAPER_URL, P)


def _paper_mean(family: str, key: str, methods: Sequence[str]) -> float | None:
    vals = [PAPER[family][m][key] for m in methods if m in PAPER[family]]
    return float(np.mean(vals)) if vals else None


def record_results(P: config.Params, res: dict[str, Any], rec=None):
    """The "paper vs. ours" claims, judged by rules (course_lib.results) and saved.

    The headline claims (issue 17: ``clear_iid_overestimates``, ``clear_streaming_closes_gap``,
    ``clear_pretrained_linear_wins``) hold "for every baseline" in the paper: each seed's value is
    the mean over the methods, and the two arms are paired by seed (:func:`_record_headline`).
    For the linear family the same two protocol statements are checks on the per-method paired
    differences (one value per method and seed), AtLeast(0) on their mean ± 2 SE.
    Single-method comparisons need :data:`SINGLE_SEED_MARGIN` points when only one seed was run.
    """
    from course_lib.results import AtLeast, Better

    rec = rec if rec is not None else recorder(P)
    runs = res["runs"]
    methods = res["methods"]
    paired = [m for m in methods if m in PAPER["resnet"]]

    def vals(family, protocol, method, key):
        return [r.metrics[key] for r in runs[(family, protocol, method)]]

    def gaps(family, a, b):
        # a, b: (protocol, metric); one paired difference per method and seed
        out = []
        for m in methods:
            va, vb = vals(family, a[0], m, a[1]), vals(family, b[0], m, b[1])
            out += [x - y for x, y in zip(va, vb)]
        return out

    _record_headline(P, rec, res, paired)  # the ResNet's two protocol claims and linear vs. ResNet
    for family in [f for f in res["families"] if f != "resnet"]:
        fam = "ResNet from scratch" if family == "resnet" else "linear on bucket-0 SSL features"
        g = gaps(family, ("iid", "in_domain"), ("iid", "next_domain"))
        pg = _paper_mean(family, "in_domain", paired) - _paper_mean(family, "next_domain", paired)
        rec.add(f"{family}_iid_in_gt_next", f"IID: in-domain > next-domain accuracy ({fam}; mean over "
                "methods of the paired gap) [Table 1]", paper=round(pg, 2), ours=g, unit="pp",
                rule=AtLeast(0.0), note=f"{len(methods)} methods x seeds")
        g = gaps(family, ("streaming", "next_domain"), ("iid", "next_domain"))
        pg = _paper_mean(family, "stream_next", paired) - _paper_mean(family, "next_domain", paired)
        rec.add(f"{family}_stream_gt_iid_next", f"streaming next-domain > IID next-domain ({fam}: "
                "today's test set becomes tomorrow's training set) [Table 1]", paper=round(pg, 2),
                ours=g, unit="pp", rule=AtLeast(0.0))
    if "resnet" in res["families"]:
        m = SINGLE_SEED_MARGIN if P.resnet_seeds < 2 else 0.0
        have = set(methods)
        if {"reservoir", "biased_reservoir"} <= have:
            rec.add("resnet_reservoir", "ResNet, IID: reservoir + finetuning (buffer only), next-domain "
                    "[Table 1, 67.7]", paper=PAPER["resnet"]["reservoir"]["next_domain"],
                    ours=vals("resnet", "iid", "reservoir", "next_domain"), rule=AtLeast(100.0 / res["stream"].num_classes),
                    note="rule: above chance")
            rec.add("resnet_biased_gt_reservoir", "ResNet, IID: biased reservoir beats reservoir "
                    "(next-domain) [Table 1, 72.7 vs 67.7]", paper=PAPER["resnet"]["biased_reservoir"]["next_domain"],
                    ours=vals("resnet", "iid", "biased_reservoir", "next_domain"),
                    rule=Better("resnet_reservoir", min_effect=m))
            for meth in ("er", "lwf", "ewc"):
                if meth in have:
                    rec.add(f"resnet_{meth}_gt_reservoir", f"ResNet, IID: {METHOD_LABELS[meth]} beats "
                            f"reservoir + finetuning (next-domain) [Table 1, "
                            f"{PAPER['resnet'][meth]['next_domain']} vs 67.7]",
                            paper=PAPER["resnet"][meth]["next_domain"],
                            ours=vals("resnet", "iid", meth, "next_domain"),
                            rule=Better("resnet_reservoir", min_effect=m))
    rec.save()
    return rec


# Scaling probes (benchmarks/scaling_probe.py) of the headline claims that did not reproduce at the
# study budget: claim -> what the probe scales.
PROBES = {"clear_pretrained_linear_wins": "epochs of the self-supervised DINO on bucket 0 (ssl_epochs)"}


def scaling_probe(P: config.Params, claim: str, factors=(1, 2, 4), log=print) -> dict[str, Any]:
    """Linear models on the features of a DINO trained on bucket 0 for ``ssl_epochs`` x factor,
    against the from-scratch ResNet (which does not use the DINO, so it trains once), on
    ``resnet_seeds`` paired seeds; each seed's value is the mean over the methods of the IID
    next-domain accuracy, as in the headline claim. Returns the keyword arguments of
    :func:`course_lib.results.scaling.save_probe`."""
    if claim not in PROBES:
        raise ValueError(f"claim={claim!r}: a probe exists for {', '.join(PROBES)}")
    from course_lib.results.scaling import sweep

    stream = load_stream(P)
    memo: dict[tuple, tuple[list[float], float]] = {}

    def arm(family):
        def run(Pf, seed):
            key = (family, Pf.ssl_epochs if family == "linear" else None)
            if key not in memo:
                t0 = time.perf_counter()
                Pr = config.Params({**Pf, "families": [family], "linear_seeds": P.resnet_seeds})
                runs = run_experiments(Pr, stream, log=lambda *a: None)["runs"]
                per_seed = [float(np.mean([runs[(family, "iid", m)][i].metrics["next_domain"]
                                           for m in names(P.methods)])) for i in range(P.resnet_seeds)]
                memo[key] = (per_seed, (time.perf_counter() - t0) / P.resnet_seeds)
            values, seconds = memo[key]
            return values[seed - P.seed], seconds
        return run

    Ps = config.Params({**P, "seeds": P.resnet_seeds})  # sweep's seeds: the ResNet's
    rows = sweep(Ps, factors, "ssl_epochs", {"ours": ("linear on DINO features", arm("linear")),
                                             "baseline": ("ResNet from scratch", arm("resnet"))}, log)
    return {"rows": rows, "budget": "DINO epochs on bucket 0", "unit": "%", "higher_is_better": True,
            "arms": {"ours": "linear models on bucket-0 DINO features (IID next-domain, mean over methods)",
                     "baseline": "ResNet from scratch (IID next-domain, mean over methods)"}}


def _record_headline(P: config.Params, rec, res: dict[str, Any], paired: Sequence[str]) -> None:
    """The three headline claims (issue 17's ids), each on per-seed values paired by seed: a
    seed's value is the mean over the methods (the paper's "for every baseline"), so n is the
    number of seeds. Both arms use the same seeds' runs (a run's splits and initialisation
    follow its seed); the linear arm is paired with the ResNet runs of the same seeds."""
    from course_lib.results import AtLeast, Better

    runs, methods, fams = res["runs"], res["methods"], res["families"]
    if "resnet" not in fams:
        return

    def per_seed(family, protocol, key, n=None):
        cols = [[r.metrics[key] for r in runs[(family, protocol, m)]] for m in methods]
        n = n or min(len(c) for c in cols)
        return [float(np.mean([c[i] for c in cols])) for i in range(n)]

    n = len(runs[("resnet", "iid", methods[0])])
    if "linear" in fams:
        n = min(n, len(runs[("linear", "iid", methods[0])]))
    seeds = [P.seed + i for i in range(n)]  # run_experiments: seed i of a family is P.seed + i
    base = "resnet_iid_next_mean"
    rec.add(base, "ResNet from scratch, IID protocol: next-domain accuracy, mean over the methods [Table 1]",
            paper=_paper_mean("resnet", "next_domain", paired), ours=per_seed("resnet", "iid", "next_domain", n),
            seeds=seeds, rule=AtLeast(100.0 / res["stream"].num_classes), note="rule: above chance")
    rec.add("clear_iid_overestimates", "under the IID protocol, in-domain accuracy exceeds next-domain "
            "accuracy (ResNet from scratch, mean over the methods, paired per seed) [Table 1]",
            paper=_paper_mean("resnet", "in_domain", paired), ours=per_seed("resnet", "iid", "in_domain", n),
            seeds=seeds, rule=Better(base), headline=True)
    rec.add("clear_streaming_closes_gap", "the streaming protocol's next-domain accuracy beats the IID "
            "protocol's (ResNet from scratch, mean over the methods, paired per seed) [Table 1 text]",
            paper=_paper_mean("resnet", "stream_next", paired),
            ours=per_seed("resnet", "streaming", "next_domain", n), seeds=seeds, rule=Better(base), headline=True)
    if "linear" in fams:
        rec.add("clear_pretrained_linear_wins", "linear models on self-supervised bucket-0 features beat the "
                "from-scratch ResNet (IID next-domain, mean over the methods, paired per seed) [Table 1]",
                paper=_paper_mean("linear", "next_domain", paired), ours=per_seed("linear", "iid", "next_domain", n),
                seeds=seeds, rule=Better(base), headline=True)


# The "What to take away" cell, written from the record (course_lib.results.takeaways): what each
# verdict means for the paper's story; the numbers are this run's. The "for every baseline" claims
# are checks on paired gaps (mean ± 2 SE over baselines and seeds); the single-baseline claims
# with fewer than 3 seeds stay inconclusive, so those sentences say what the runs illustrate.
_FAMILY_TEXT = {"resnet": "the ResNet from scratch", "linear": "the linear models on bucket-0 features"}


def _in_next_point(family: str) -> Point:
    who = _FAMILY_TEXT[family]
    return Point(f"{family}_iid_in_gt_next",
                 reproduced=f"Under the IID protocol in-domain accuracy overestimates next-domain accuracy, as in "
                            f"Table 1: for {who} the paired gap (in-domain − next-domain of the same matrix, per "
                            "baseline and seed) is {ours}; paper {paper} on average.",
                 not_reproduced=f"For {who}, in-domain accuracy does not exceed next-domain accuracy under the IID "
                                "protocol (paired gap {ours}; paper {paper}): at this drift, today's test set is as "
                                "hard as tomorrow's data.",
                 inconclusive=f"For {who}, in-domain − next-domain under the IID protocol is {{ours}}; paper "
                              "{paper}. Its band (± 2 SE over baselines and seeds) includes 0.",
                 missing=f"This run did not train {who} (`families`).")


def _stream_point(family: str) -> Point:
    who = _FAMILY_TEXT[family]
    return Point(f"{family}_stream_gt_iid_next",
                 reproduced=f"The streaming protocol pays off for {who}: its next-domain accuracy beats the IID "
                            "protocol's by {ours}, paired per baseline and seed (paper {paper}). It trains on whole "
                            "buckets, 1/0.7 ≈ 1.4× the IID training data for the same labels.",
                 not_reproduced=f"For {who} the streaming protocol's next-domain accuracy falls below the IID "
                                "protocol's (paired gap {ours}; paper {paper}), despite 1.4× the training data.",
                 inconclusive=f"For {who} the streaming protocol's gain over the IID next-domain accuracy is {{ours}}; "
                              "paper {paper}. Within noise: its ± 2 SE band includes 0.",
                 missing=f"This run did not train {who} (`families`).")


def _beats_reservoir(id_: str, method: str, label: str) -> Point:
    ref = PAPER["resnet"]["reservoir"]["next_domain"]
    pap = PAPER["resnet"][method]["next_domain"]
    return Point(id_,
                 reproduced=f"{label} follows the drift better than reservoir replay (IID next-domain, ResNet: "
                            f"{{diff}}, n = {{n}}; paper {pap} vs. {ref}).",
                 not_reproduced=f"{label} did not beat reservoir replay here (IID next-domain, ResNet: {{diff}}, "
                                f"n = {{n}}; paper {pap} vs. {ref}).",
                 inconclusive=f"{label} vs. reservoir replay (IID next-domain, ResNet): {{diff}} (paper {pap} vs. "
                              f"{ref}); n = {{n}}, not separated from seed noise: an illustration, not a verdict.")


TAKEAWAYS = [
    Point("clear_iid_overestimates",
          reproduced="Under the IID protocol in-domain accuracy overestimates next-domain accuracy, as in Table 1: "
                     "for the ResNet from scratch (mean over the methods, paired per seed) the gap is {diff}, "
                     "n = {n} (paper: {paper} in-domain on average).",
          not_reproduced="For the ResNet from scratch, in-domain accuracy does not exceed next-domain accuracy under "
                         "the IID protocol ({diff}, n = {n}): at this drift, today's test set is as hard as "
                         "tomorrow's data.",
          inconclusive="For the ResNet from scratch, in-domain − next-domain under the IID protocol is {diff} "
                       "(n = {n}); its 95% interval includes 0.",
          missing="This run did not train the ResNet (`families`)."),
    Point("clear_streaming_closes_gap",
          reproduced="The streaming protocol pays off: the ResNet's next-domain accuracy beats the IID protocol's by "
                     "{diff}, n = {n}, paired per seed (paper: {paper} on average). It trains on whole buckets, "
                     "1/0.7 ≈ 1.4× the IID training data for the same labels.",
          not_reproduced="The ResNet's next-domain accuracy under the streaming protocol falls below the IID "
                         "protocol's ({diff}, n = {n}), despite 1.4× the training data.",
          inconclusive="The ResNet's streaming gain over the IID next-domain accuracy is {diff} (n = {n}); its 95% "
                       "interval includes 0.",
          missing="This run did not train the ResNet (`families`)."),
    Point("clear_pretrained_linear_wins",
          reproduced="Linear models on bucket-0 self-supervised features beat the from-scratch ResNet, as in Table 1 "
                     "(IID next-domain, mean over the methods, paired per seed: {diff}, n = {n}).",
          not_reproduced="Not reproduced at our scale: linear models on the features our small DINO learned on "
                         "bucket 0 stay below the from-scratch ResNet (IID next-domain, paired per seed: {diff}, "
                         "n = {n}). The paper's linear models stand on MoCo v2 trained for days on 700K bucket-0 "
                         "images; our short DINO run on a small bucket 0 is the likely bottleneck, not the protocol: "
                         "the scaling probe above shows what 2x and 4x the DINO epochs change.",
          inconclusive="Linear models on bucket-0 features vs. the from-scratch ResNet (IID next-domain, paired per "
                       "seed): {diff}, n = {n}; its 95% interval includes 0.",
          missing="This run did not train both families (`families`)."),
    _in_next_point("linear"),
    _stream_point("linear"),
    _beats_reservoir("resnet_biased_gt_reservoir", "biased_reservoir", "The biased reservoir"),
    *(_beats_reservoir(f"resnet_{m}_gt_reservoir", m, METHOD_LABELS[m]) for m in ("er", "lwf", "ewc")),
]
