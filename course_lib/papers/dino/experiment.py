"""Notebook 06's experiment: its parameters (``PARAMS``), the paper's numbers, the data (the
offline world, or Imagenette + PASCAL VOC12), the evaluation of a backbone, the ablation runs,
the photos, and the "paper vs. ours" record."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from course_lib import config
from course_lib.config import Param
from course_lib.models.vit import VisionTransformer
from course_lib.papers.dino.method import (
    ABLATIONS, foreground_masks, knn_classifier, linear_probe, random_backbone, segmentation_scores,
    train_supervised,
)
from course_lib.results.takeaways import Point
from course_lib.selfsup import ARCHS, DINOConfig, dino_config, extract_features, train_backbone, world_config

__all__ = ["NOTEBOOK", "TITLE", "PAPER_URL", "PAPER", "PARAMS", "NOTEBOOK_RECIPE", "NOTEBOOK_WORLD",
           "notebook_config", "config_from_params", "load_data", "DINOData", "world_data", "imagenette_voc_data",
           "evaluate_backbone", "run_ablations", "SEED_ARMS", "arm_model", "run_seeds", "seed_table", "PROBES",
           "scaling_probe", "PHOTOS", "photos", "recorder", "record_results", "TAKEAWAYS"]

NOTEBOOK = "06_dino"
PAPER_URL = "https://arxiv.org/abs/2104.14294"
TITLE = "DINO: Emerging Properties in Self-Supervised Vision Transformers"

# The paper's numbers, from the study group's notes (seed 003).
PAPER = {
    # Table 2 (ImageNet linear / k-NN top-1, ViT-S/16, 300 epochs)
    "table2_vit_s": {"dino_linear": 77.0, "dino_knn": 74.5, "supervised": 79.8},
    # Table "Segmentation from supervised versus DINO" (Jaccard %, PASCAL VOC12 val, 60% mass)
    "jaccard_vit_s16": {"random": 22.0, "supervised": 27.3, "dino": 45.9},
    "jaccard_vit_s8": {"random": 21.8, "supervised": 23.7, "dino": 44.7},
    # Table 7 (ablations, ViT-S/16, 300 epochs, ImageNet k-NN / linear)
    "table7_knn": {"dino": 72.8, "no_momentum": 0.1, "no_multicrop": 67.9, "mse": 52.6},
    "table7_linear": {"dino": 76.1, "no_momentum": 0.1, "no_multicrop": 72.5, "mse": 62.4},
}


# ----------------------------------------------------------------------------------------------
# Notebook parameters


# Notebook 06's recipe per profile: the course's DINO recipe (``selfsup.dino_config``, also
# notebook 11's frozen backbone) with 8 px patches at study scale: on 32 px images a 4x4 token
# grid makes an epoch ~10x cheaper, so every seed trains its own DINO, baselines and Table 7
# ablations at 10 epochs (docs/calibration.md, "Issue 17, first probes: patch 8").
NOTEBOOK_RECIPE: dict[str, dict[str, Any]] = {
    "smoke": dict(patch=8),
    "study": dict(patch=8, epochs=10),
    "paper": dict(),
}


# Notebook 06's world: the course's DINO world (``selfsup.world_config``, notebook 11's) with one
# object per image, the world the patch-8 recipe was calibrated on (docs/calibration.md, 06 DINO).
NOTEBOOK_WORLD: dict[str, dict[str, Any]] = {"smoke": dict(objects=(1, 1)), "study": dict(objects=(1, 1)),
                                             "paper": dict()}


def notebook_config(profile: str = "study", **overrides) -> DINOConfig:
    """Notebook 06's DINO recipe for ``profile``: :func:`dino_config` changed by
    :data:`NOTEBOOK_RECIPE` (``patch``: the ViT's patch size), then by ``overrides``."""
    changes = {**NOTEBOOK_RECIPE[profile], **overrides}
    patch = changes.pop("patch", None)
    cfg = dino_config(profile, **changes)
    if patch is not None and patch != cfg.arch()["patch_size"]:
        model = dict(ARCHS[cfg.model]) if isinstance(cfg.model, str) else dict(cfg.model)
        cfg = cfg.replace(model={**model, "patch_size": patch})
    return cfg


def _by_profile(field: str) -> dict[str, Any]:
    return config.per_profile(notebook_config, field)


def _patch_by_profile() -> dict[str, int]:
    return {p: notebook_config(p).arch()["patch_size"] for p in config.PROFILES}


PARAMS: dict[str, Param] = {
    "dataset": Param({"smoke": "world", "study": "world", "paper": "imagenette"},
                     "world (offline) or imagenette (+ PASCAL VOC12 for the Jaccard; GPU)",
                     choices=("world", "imagenette")),
    "epochs": Param(_by_profile("epochs"), "DINO pretraining epochs", type=int, low=1),
    "local_crops": Param(_by_profile("local_crops"), "local views per image (multi-crop)", type=int, low=0, high=12),
    "teacher_temp": Param(_by_profile("teacher_temp"), "teacher temperature τ_t (after its warm-up)",
                          low=0.005, high=1.0),
    "momentum_teacher": Param(_by_profile("momentum_teacher"), "start of the teacher momentum λ (cosine to 1)",
                              low=0.0, high=1.0),
    "out_dim": Param(_by_profile("out_dim"), "K, the head's output dimension", type=int, low=8),
    "patch_size": Param(_patch_by_profile(), "the ViT's patch size (px); study: 8 on 32 px images, a 4x4 grid",
                        type=int, low=2, high=32),
    "seeds": Param({"smoke": 1, "study": 3, "paper": 1},
                   "paired seeds: each trains DINO, the supervised baseline and the Table 7 ablations "
                   "(no momentum, no multi-crop) at full budget; the figures show the first", type=int,
                   low=1, high=10),
    "supervised_epochs": Param({"smoke": 1, "study": 10, "paper": 100},
                               "epochs of the supervised ViT baseline", type=int, low=1),
    "ablation_epochs": Param({"smoke": 1, "study": 1, "paper": 30},
                             "epochs of the short collapse runs (Fig. 7: MSE, no centering, no sharpening)",
                             type=int, low=1),
    "threshold": Param(0.6, "attention mass kept for the masks (paper: 0.6)", low=0.05, high=1.0),
    "dino_weights": Param(None, "path to official or timm DINO weights (ViT-S/16 or /8) for the real "
                          "photos; None: our small model only", type=(str, type(None))),
    "retrain": Param(False, "ignore cached models and train again"),
}


def config_from_params(P: config.Params) -> DINOConfig:
    """The notebook's DINO recipe: the profile's :func:`notebook_config` with the notebook's knobs."""
    return notebook_config(P.profile, patch=P.patch_size, epochs=P.epochs, local_crops=P.local_crops,
                           teacher_temp=P.teacher_temp, momentum_teacher=P.momentum_teacher, out_dim=P.out_dim)


def load_data(P: config.Params) -> DINOData:
    """The world of :func:`world_config` changed by :data:`NOTEBOOK_WORLD` (offline), or Imagenette +
    PASCAL VOC12 (paper profile)."""
    if P.dataset == "world":
        return world_data(world_config(P.profile, **NOTEBOOK_WORLD[P.profile]), P.data_root)
    return imagenette_voc_data(notebook_config(P.profile).image_size, P.data_root)


# ----------------------------------------------------------------------------------------------
# Data: the world (offline) or Imagenette + PASCAL VOC 2012 (paper profile)


@dataclass
class DINOData:
    """Everything the experiments need, as uint8 image tensors (N, 3, S, S).

    ``train_*``: pretraining images (labels only for the k-NN / linear evaluation and the
    supervised baseline); ``test_*``: k-NN / linear test set; ``seg_images``/``seg_fg``: images
    with foreground masks for the Jaccard (the world's test split, or PASCAL VOC12 val);
    ``val_images``/``val_fg``: where the best single head is chosen.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    seg_images: torch.Tensor
    seg_fg: torch.Tensor
    val_images: torch.Tensor
    val_fg: torch.Tensor
    num_classes: int
    class_names: list[str]
    world: Any = None                      # the WorldConfig, for the world
    splits: dict = field(default_factory=dict, repr=False)  # the WorldData splits, for the world
    key: dict = field(default_factory=dict)


def world_data(wcfg, data_root=None) -> DINOData:
    """The world's train / val / test splits as :class:`DINOData` (labels: the class of the
    largest object; foreground: every object pixel)."""
    from course_lib.world import load_world

    tr, va, te = (load_world(wcfg, s, data_root) for s in ("train", "val", "test"))
    return DINOData("world", tr.images, tr.clean_labels.clamp_min(0), te.images, te.clean_labels.clamp_min(0),
                    te.images, foreground_masks(te), va.images, foreground_masks(va), wcfg.num_classes,
                    list(wcfg.class_names), world=wcfg, splits={"train": tr, "val": va, "test": te},
                    key={"world": wcfg.key("train")})


def _resize_center(img: torch.Tensor, size: int, nearest: bool = False) -> torch.Tensor:
    from torchvision.transforms import v2

    mode = v2.InterpolationMode.NEAREST if nearest else v2.InterpolationMode.BILINEAR
    img = v2.functional.resize(img, size, interpolation=mode, antialias=not nearest)
    return v2.functional.center_crop(img, [size, size])


def imagenette_voc_data(image_size: int = 224, data_root=None, max_train: int | None = None,
                        voc_images: int = 1449) -> DINOData:
    """The paper profile: Imagenette (160 px release, upsampled and center-cropped to
    ``image_size``) for pretraining and k-NN / linear evaluation, PASCAL VOC 2012 val for the
    Jaccard (foreground = any of the 20 object classes; boundary pixels 255 count as
    background). Missing datasets raise ``FileNotFoundError`` naming the fetch command."""
    from torchvision import datasets
    from torchvision.io import ImageReadMode, decode_image

    from course_lib import data as data_mod, paths

    root = paths.data_root(data_root)
    out = {}
    for split in ("train", "test"):
        ds = data_mod.get_dataset("imagenette", split, data_root)
        samples = ds._samples[:max_train] if (split == "train" and max_train) else ds._samples
        imgs = [_resize_center(decode_image(str(p), mode=ImageReadMode.RGB), image_size) for p, _ in samples]
        out[split] = (torch.stack(imgs), torch.tensor([y for _, y in samples]))
        names = [c[0] if isinstance(c, (tuple, list)) else str(c) for c in ds.classes]
    if not (root / "VOCdevkit" / "VOC2012").is_dir():
        raise FileNotFoundError(f"PASCAL VOC 2012 is not in {root / 'VOCdevkit/VOC2012'}; fetch it with\n"
                                f"    {data_mod.fetch_command('voc2012', data_root)}")
    voc = datasets.VOCSegmentation(str(root), year="2012", image_set="val", download=False)
    vi, vm = [], []
    for i in range(min(voc_images, len(voc))):
        img = decode_image(voc.images[i], mode=ImageReadMode.RGB)
        mask = torch.from_numpy(np.array(__import__("PIL.Image").Image.open(voc.masks[i])))[None]
        vi.append(_resize_center(img, image_size))
        m = _resize_center(mask, image_size, nearest=True)[0]
        vm.append((m > 0) & (m != 255))
    vi, vm = torch.stack(vi), torch.stack(vm)
    half = len(vi) // 2
    return DINOData("imagenette+voc2012", out["train"][0], out["train"][1], out["test"][0], out["test"][1],
                    vi[half:], vm[half:], vi[:half], vm[:half], len(names), names,
                    key={"dataset": "imagenette-160", "size": image_size, "max_train": max_train})


# ----------------------------------------------------------------------------------------------
# The evaluation of a backbone


def evaluate_backbone(model: VisionTransformer, d: DINOData, threshold: float = 0.6, linear: bool = True,
                      k: int = 20, T: float = 0.07) -> dict[str, Any]:
    """Frozen-feature evaluation: weighted k-NN and linear-probe top-1 (%) on the class token,
    and the attention Jaccard (%) on ``d.seg_*``: of the mean-of-heads map, and of the best single
    head, chosen on ``d.val_*`` (the paper does not say which head its table uses)."""
    ftr = extract_features(model, d.train_images)
    fte = extract_features(model, d.test_images)
    out: dict[str, Any] = {"knn": knn_classifier(ftr, d.train_labels, fte, d.test_labels, k=k, T=T,
                                                 num_classes=d.num_classes)}
    if linear:
        out["linear"] = linear_probe(ftr, d.train_labels, fte, d.test_labels)
    val = segmentation_scores(model, d.val_images, d.val_fg, threshold)
    test = segmentation_scores(model, d.seg_images, d.seg_fg, threshold)
    best = int(np.argmax(val["per_head"]))
    out.update(jaccard_mean=test["mean_heads"], jaccard_best_head=test["per_head"][best], best_head=best,
               jaccard_per_head=test["per_head"], jaccard_per_image=test["per_image"])
    return out


# ----------------------------------------------------------------------------------------------
# Ablation runs (paper Table 7 and Fig. 7; the variants are method.ABLATIONS)


def run_ablations(d: DINOData, cfg: DINOConfig, epochs: int, seed: int = 0, device=None, force: bool = False,
                  names: Sequence[str] | None = None, log: Callable[[str], Any] | None = print,
                  evaluate: bool = True, threshold: float = 0.6,
                  batch_size: int | None = None) -> dict[str, dict[str, Any]]:
    """Short DINO runs with one component switched off (``ABLATIONS``), each cached. Returns per
    name ``{"model", "history", "eval", "seconds", "from_cache"}``; the collapse shows in
    ``history`` (teacher entropy per step: ``log K`` = uniform collapse, 0 = one dimension).
    ``batch_size`` (default: the main run's) gives short runs more steps; the warm-up is cut to
    30% of the run."""
    out = {}
    bs = batch_size or cfg.batch_size
    for name in names or ABLATIONS:
        label, changes, _ = ABLATIONS[name]
        c = cfg.replace(epochs=epochs, batch_size=bs, warmup_epochs=min(cfg.warmup_epochs, 0.3 * epochs), **changes)
        model, info = train_backbone(d.world, c, seed=seed, device=device, force=force,
                                     name=f"dino-ablation-{name}", log=None, data=d)
        ev = evaluate_backbone(model, d, threshold, linear=False) if evaluate else {}
        out[name] = {"model": model, "history": info.history, "eval": ev, "seconds": info.train_seconds,
                     "from_cache": info.from_cache, "label": label}
        if log is not None:
            h = info.history.epochs[-1]
            log(f"{name:>14s}: k-NN {ev.get('knn', float('nan')):5.1f}% | Jaccard {ev.get('jaccard_mean', float('nan')):5.1f}"
                f" | final H(P_t) {h['teacher_entropy']:.2f} (log K = {math.log(c.out_dim):.2f}) | "
                f"{'cache' if info.from_cache else f'{info.train_seconds:.0f}s'}")
    return out


# ----------------------------------------------------------------------------------------------
# Paired seeds: every arm of the headline claims, once per seed

SEED_ARMS = ("dino", "random", "supervised", "no_momentum", "no_multicrop")


def arm_model(P: config.Params, d: DINOData, cfg: DINOConfig, arm: str, seed: int,
              supervised_epochs: int | None = None) -> tuple[VisionTransformer, Any]:
    """One arm of the claims (:data:`SEED_ARMS`) for ``seed``: ``(model, CacheInfo or None)``,
    trained now or loaded from the cache. The Table 7 ablations train at DINO's full budget;
    the supervised ViT for ``supervised_epochs`` (default ``P.supervised_epochs``)."""
    dev = P.torch_device
    if arm == "dino":
        return train_backbone(d.world, cfg, seed=seed, device=dev, force=P.retrain, data=d, log=None)
    if arm == "random":
        return random_backbone(cfg, seed, device=dev), None
    if arm == "supervised":
        return train_supervised(d, cfg, supervised_epochs or P.supervised_epochs, seed=seed, device=dev,
                                force=P.retrain, max_steps=6 if P.profile == "smoke" else None)
    r = run_ablations(d, cfg, cfg.epochs, seed=seed, device=dev, force=P.retrain, names=(arm,), log=None,
                      evaluate=False)[arm]
    return r["model"], None


def run_seeds(P: config.Params, d: DINOData, cfg: DINOConfig | None = None,
              log: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """For each of ``P.seeds`` seeds (``P.seed``, ``P.seed + 1``, ...): DINO, the random ViT,
    the supervised ViT and the two Table 7 ablations that are headline claims (no momentum
    teacher, no multi-crop) at DINO's full budget, all with that seed, each evaluated frozen
    (:func:`evaluate_backbone`; the ablations without the linear probe). Every trained model is
    cached. Returns ``{"seeds", "evals": {arm: [eval per seed]}, "models": {"random",
    "supervised", "DINO"} of the first seed, "history": its DINO history, "supervised_top1":
    [per seed], "seconds"}``."""
    cfg = cfg or config_from_params(P)
    t0 = time.perf_counter()
    seeds = [P.seed + i for i in range(P.seeds)]
    out: dict[str, Any] = {"seeds": seeds, "evals": {a: [] for a in SEED_ARMS}, "supervised_top1": []}
    for seed in seeds:
        t1 = time.perf_counter()
        models = {arm: arm_model(P, d, cfg, arm, seed) for arm in SEED_ARMS}
        (model, info), (rnd, _), (sup, sinfo) = models["dino"], models["random"], models["supervised"]
        for arm, (m, _) in models.items():  # the ablations without the linear probe
            linear = arm in ("dino", "random", "supervised")
            out["evals"][arm].append(evaluate_backbone(m, d, P.threshold, linear=linear))
        out["supervised_top1"].append(sinfo.history.last("eval_top1"))
        if seed == seeds[0]:
            out["models"] = {"random": rnd, "supervised": sup, "DINO": model}
            out["history"] = info.history
        if log is not None:
            e = {a: out["evals"][a][-1] for a in SEED_ARMS}
            log(f"seed {seed}: k-NN " + " / ".join(f"{a} {e[a]['knn']:.1f}" for a in SEED_ARMS)
                + f" | Jaccard best head DINO {e['dino']['jaccard_best_head']:.1f}, random "
                f"{e['random']['jaccard_best_head']:.1f}, supervised {e['supervised']['jaccard_best_head']:.1f}"
                f" ({time.perf_counter() - t1:.0f}s)")
    out["seconds"] = time.perf_counter() - t0
    return out


# Scaling probes (benchmarks/scaling_probe.py) of the headline claims: claim -> (our arm, the
# baseline arm, the metric); the probe scales DINO's epochs (and the supervised ViT's with them).
PROBES: dict[str, tuple[str, str, str]] = {
    "dino_knn_beats_random": ("dino", "random", "knn"),
    "dino_jaccard_beats_random": ("dino", "random", "jaccard_best_head"),
    "dino_jaccard_beats_supervised": ("dino", "supervised", "jaccard_best_head"),
    "dino_momentum_needed": ("dino", "no_momentum", "knn"),
    "dino_multicrop_helps": ("dino", "no_multicrop", "knn"),
}


def scaling_probe(P: config.Params, claim: str, factors=(1, 2, 4), log=print) -> dict[str, Any]:
    """The two arms of ``claim`` (:data:`PROBES`) on ``P.seeds`` paired seeds at each budget factor
    (DINO epochs x factor, the ablations with them, the supervised ViT's epochs x the same factor;
    the random ViT does not train). Returns the keyword arguments of
    :func:`course_lib.results.scaling.save_probe`."""
    if claim not in PROBES:
        raise ValueError(f"claim={claim!r}: a probe exists for {', '.join(PROBES)}")
    from course_lib.results.scaling import sweep

    ours, base, metric = PROBES[claim]
    d = load_data(P)

    def arm(name):
        def run(Pf, seed):
            t0 = time.perf_counter()
            epochs = max(1, round(P.supervised_epochs * Pf.epochs / P.epochs))
            model, _ = arm_model(Pf, d, config_from_params(Pf), name, seed, supervised_epochs=epochs)
            return evaluate_backbone(model, d, P.threshold, linear=False)[metric], time.perf_counter() - t0
        return run

    rows = sweep(P, factors, "epochs", {"ours": (ours, arm(ours)), "baseline": (base, arm(base))}, log)
    label = {"dino": "DINO", "random": "random ViT", "supervised": "supervised ViT",
             "no_momentum": "DINO without the momentum teacher", "no_multicrop": "DINO without multi-crop"}
    what = "k-NN top-1" if metric == "knn" else "Jaccard, best head"
    return {"rows": rows, "budget": "DINO epochs", "unit": "%", "higher_is_better": True,
            "arms": {"ours": f"{label[ours]} ({what})", "baseline": f"{label[base]} ({what})"}}


def seed_table(res: Mapping[str, Any]):
    """Mean ± standard deviation over the seeds of every arm's k-NN, linear and Jaccard."""
    import pandas as pd

    cols = {"k-NN top-1": "knn", "linear top-1": "linear", "Jaccard (best head)": "jaccard_best_head",
            "Jaccard (mean of heads)": "jaccard_mean"}
    rows = {}
    for arm, evs in res["evals"].items():
        row = {}
        for col, key in cols.items():
            v = [e[key] for e in evs if key in e]
            row[col] = (f"{np.mean(v):.1f} ± {np.std(v, ddof=1):.1f}" if len(v) > 1 else f"{v[0]:.1f}") if v else "—"
        rows[arm] = row
    return pd.DataFrame(rows).T.rename_axis(f"mean ± sd over {len(res['seeds'])} seed(s)")


# ----------------------------------------------------------------------------------------------
# Real photos


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry", "coins")


def photos(size: int = 224, names: Sequence[str] = ("astronaut", "chelsea", "coffee", "rocket")) -> torch.Tensor:
    """scikit-image's sample photos as uint8 (N, 3, size, size): shorter side resized, centre crop."""
    import skimage.data as skd

    out = []
    for n in names:
        a = getattr(skd, n)()
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        t = torch.from_numpy(np.ascontiguousarray(a[..., :3])).permute(2, 0, 1)
        out.append(_resize_center(t, size))
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------
# Paper vs. ours


def recorder(P: config.Params):
    """The notebook's results recorder; make it first, so its clock times the whole run."""
    from course_lib.results import Results

    return Results(NOTEBOOK, TITLE, PAPER_URL, P)


def record_results(P: config.Params, res: Mapping[str, Any], collapse: Mapping[str, Any] | None,
                   num_classes: int, rec=None):
    """The "paper vs. ours" claims, judged by rules (course_lib.results) and saved.

    ``res``: :func:`run_seeds` (every arm once per seed: the claims pair them seed by seed, the
    headline ids of issue 17); ``collapse``: :func:`run_ablations` of the short Fig. 7 runs
    (``dino`` at the same short budget, ``mse``, ``no_centering``, ``no_sharpening``; one seed).
    """
    from course_lib.results import AtMost, Better, Reference

    rec = rec if rec is not None else recorder(P)
    J, T2, T7 = PAPER["jaccard_vit_s16"], PAPER["table2_vit_s"], PAPER["table7_knn"]
    chance = 100.0 / num_classes
    seeds, ev = list(res["seeds"]), res["evals"]

    def v(arm: str, key: str) -> list[float]:
        return [float(e[key]) for e in ev[arm]]

    def add(id_, claim, **kw):
        return rec.add(id_, claim, seeds=seeds, **kw)

    # classification of the frozen class token (Sec. 4.1, Table 2)
    add("knn_random", "a random ViT's k-NN (reference row)", paper=None, ours=v("random", "knn"),
        rule=Reference(), note=f"chance {chance:.1f}%")
    add("dino_knn_beats_random", "k-NN on DINO's frozen features beats k-NN on a random ViT of the same size "
        "[Sec. 4, Table 2: ViT-S 74.5 k-NN]", paper=T2["dino_knn"], ours=v("dino", "knn"),
        rule=Better("knn_random"), headline=True)
    add("linear_random", "a random ViT's linear probe (reference row)", paper=None, ours=v("random", "linear"),
        rule=Reference())
    add("linear_dino", "DINO's linear probe beats a random ViT's [Table 2: ViT-S 77.0 linear]",
        paper=T2["dino_linear"], ours=v("dino", "linear"), rule=Better("linear_random"))
    add("knn_supervised", "the supervised ViT's k-NN beats DINO's (labels help; paper: supervised 79.8 > DINO "
        "77.0 linear)", paper=T2["supervised"], ours=v("supervised", "knn"), rule=Better("dino_knn_beats_random"))
    # segmentation by the last layer's class-token attention (Sec. 4.2, Fig. 4 and its table)
    add("jaccard_random", "Jaccard of a random ViT's best head, 60%-mass mask [Fig. 4 table: random 22.0]",
        paper=J["random"], ours=v("random", "jaccard_best_head"), rule=Reference())
    add("jaccard_supervised", "Jaccard of the supervised ViT's best head [supervised 27.3]",
        paper=J["supervised"], ours=v("supervised", "jaccard_best_head"), rule=Reference())
    add("dino_jaccard_beats_random", "DINO's thresholded class-token attention (60% mass, best head chosen on "
        "val) overlaps the objects more than a random ViT's [Fig. 4 table: 45.9 vs 22.0]", paper=J["dino"],
        ours=v("dino", "jaccard_best_head"), rule=Better("jaccard_random"), headline=True)
    add("dino_jaccard_beats_supervised", "... and more than a supervised ViT's [45.9 vs 27.3]", paper=J["dino"],
        ours=v("dino", "jaccard_best_head"), rule=Better("jaccard_supervised"), headline=True)
    add("jaccard_mean_random", "Jaccard of a random ViT's mean-of-heads map (reference row)", paper=None,
        ours=v("random", "jaccard_mean"), rule=Reference())
    add("jaccard_mean_supervised", "Jaccard of the supervised ViT's mean-of-heads map (reference row)", paper=None,
        ours=v("supervised", "jaccard_mean"), rule=Reference())
    add("jaccard_mean_dino_vs_random", "stricter than the paper: the mean of DINO's heads beats the mean of a "
        "random ViT's heads", paper=None, ours=v("dino", "jaccard_mean"), rule=Better("jaccard_mean_random"))
    add("jaccard_mean_dino_vs_supervised", "stricter than the paper: the mean of DINO's heads beats the mean of "
        "the supervised ViT's heads", paper=None, ours=v("dino", "jaccard_mean"),
        rule=Better("jaccard_mean_supervised"))
    # Table 7 at DINO's full budget, every seed
    add("knn_no_momentum", "DINO without the momentum teacher (teacher = student), same budget: k-NN "
        "[Table 7 row 2: 0.1]", paper=T7["no_momentum"], ours=v("no_momentum", "knn"), rule=Reference())
    add("dino_momentum_needed", "without the momentum teacher the run collapses: DINO's k-NN beats the same "
        "run without it [Table 7: 72.8 vs 0.1]", paper=T7["dino"], ours=v("dino", "knn"),
        rule=Better("knn_no_momentum"), headline=True)
    add("knn_no_multicrop", "DINO with the two global views only, same budget: k-NN [Table 7 row 4: 67.9]",
        paper=T7["no_multicrop"], ours=v("no_multicrop", "knn"), rule=Reference())
    add("dino_multicrop_helps", "multi-crop beats two global crops only: k-NN [Table 7: 72.8 vs 67.9]",
        paper=T7["dino"], ours=v("dino", "knn"), rule=Better("knn_no_multicrop"), headline=True)
    # Fig. 7: short runs that show what collapse looks like (one seed)
    a = dict(collapse or {})
    if "dino" in a:
        rec.add("abl_dino", "DINO at the collapse runs' short budget (reference) [Table 7 row 1: 72.8 k-NN]",
                paper=T7["dino"], ours=a["dino"]["eval"]["knn"], rule=Reference())
    if "mse" in a and "dino" in a:
        rec.add("abl_mse", "MSE instead of cross-entropy is worse [Table 7 row 5: 52.6 vs 72.8]",
                paper=T7["mse"], ours=a["mse"]["eval"]["knn"], rule=Better("abl_dino", higher_is_better=False))
    for name, what in (("no_centering", "one dimension dominates: entropy -> 0"),
                       ("no_sharpening", "uniform output: entropy -> log K")):
        if name in a:
            h = a[name]["history"].epochs[-1]
            ref = a["dino"]["history"].epochs[-1]["kl"] if "dino" in a else None
            rec.add(f"abl_{name}_kl", f"{ABLATIONS[name][0]} collapses ({what}): KL(P_t||P_s) -> 0 "
                    "[Fig. 7]", paper=0.0, ours=h["kl"], unit="nats",
                    rule=AtMost(0.1 * ref if ref else 0.05),
                    note=f"final H(P_t) {h['teacher_entropy']:.2f} nats; DINO's final KL {ref:.2f}" if ref else "")
    rec.save()
    return rec


# The "What to take away" cell, written from the record (course_lib.results.takeaways): what each
# verdict means for the paper's story; the numbers are this run's. {diff} is in the paper's
# direction (positive = the way the paper says).
_NOT_A_VERDICT = "not separated from seed noise ({n} paired seed(s), 95% CI {ci})"
_NEIGHBOURS = ("In calibration (docs/calibration.md, \"what DINO's neighbours share\") DINO's nearest neighbours "
               "share the object's colour and the kind of background far more often than a random ViT's, and the "
               "shape no more often: on our world those are what two views of an image share, and they are drawn "
               "independently of the shape, while on ImageNet they go with the class.")
_PROBE = "The scaling probes above show how the gap moves with 2x and 4x the epochs."
TAKEAWAYS = [
    Point("dino_jaccard_beats_random",
          reproduced="The class token's attention finds the objects without labels: DINO's best head beats a "
                     "random ViT's best head by {diff} Jaccard over {n} paired seeds (95% CI {ci}; DINO {ours}; "
                     "paper's ViT-S/16 {paper} on VOC12).",
          not_reproduced="DINO's best head does not match the objects better than a random ViT's ({diff} Jaccard, "
                         "n = {n}): at this budget the attention has not specialised on the objects.",
          inconclusive="DINO's best head vs. a random ViT's best head: {diff} Jaccard (DINO {ours}; paper "
                       "{paper}), " + _NOT_A_VERDICT + ". " + _PROBE),
    Point("dino_jaccard_beats_supervised",
          reproduced="DINO's best head even beats the supervised ViT's best head ({diff} Jaccard, n = {n}), the "
                     "paper's Fig. 4 result.",
          not_reproduced="The supervised ViT's best head covers the objects better than DINO's ({diff} Jaccard in "
                         "the paper's direction, n = {n}): its labels are about the objects.",
          inconclusive="DINO's best head vs. the supervised ViT's: {diff} Jaccard, " + _NOT_A_VERDICT + ". Compare "
                       "the attention maps above."),
    Point("jaccard_mean_dino_vs_random",
          reproduced="The stricter check holds too: the mean of DINO's heads beats the mean of a random ViT's "
                     "heads ({diff} Jaccard).",
          not_reproduced="The stricter check fails: the mean of DINO's heads does not beat a random ViT's "
                         "({diff} Jaccard), so the object-covering head is one head, not all of them.",
          inconclusive="The stricter check, the mean of DINO's heads vs. a random ViT's: {diff} Jaccard, "
                       + _NOT_A_VERDICT + "; the per-head bars above show whether one head or all of them "
                       "cover the objects."),
    Point("dino_knn_beats_random",
          reproduced="DINO's frozen features are better k-NN features than a random ViT's ({diff} top-1, n = {n}; "
                     "DINO {ours}, paper's ViT-S/16 on ImageNet {paper}).",
          not_reproduced="DINO's frozen features do not beat a random ViT's in k-NN ({diff} top-1, n = {n}). "
                         + _NEIGHBOURS + " " + _PROBE,
          inconclusive="k-NN on the frozen class token, DINO vs. a random ViT: {diff} top-1 (DINO {ours}; paper "
                       "{paper} on ImageNet), " + _NOT_A_VERDICT + ". " + _NEIGHBOURS + " " + _PROBE),
    Point("linear_dino",
          reproduced="The shape is in DINO's features, though not in their nearest neighbours: a linear probe on "
                     "them beats the random ViT's by {diff} top-1 (n = {n}).",
          not_reproduced="The linear probe on DINO's features does not beat the random ViT's ({diff} top-1).",
          inconclusive="Linear probe, DINO vs. a random ViT: {diff} top-1 (DINO {ours}), " + _NOT_A_VERDICT + "."),
    Point("knn_supervised",
          reproduced="Labels still help, as in the paper's Table 2: the supervised ViT's k-NN beats DINO's "
                     "({diff} top-1, n = {n}).",
          not_reproduced="DINO's k-NN beats the supervised ViT's here ({diff} top-1 in the paper's direction), "
                         "unlike the paper's Table 2.",
          inconclusive="Supervised vs. DINO in k-NN: {diff} top-1 for the supervised ViT, " + _NOT_A_VERDICT + "."),
    Point("dino_momentum_needed",
          reproduced="Without the momentum teacher the run falls apart: DINO's k-NN beats the same run with "
                     "teacher = student by {diff} (n = {n}; in the paper's Table 7 that run collapses to "
                     f"{PAPER['table7_knn']['no_momentum']} k-NN against DINO's {{paper}}).",
          not_reproduced="Without the momentum teacher k-NN did not drop here ({diff} in the paper's direction, "
                         "n = {n}): with DINO's own k-NN at a random ViT's level there is little to lose.",
          inconclusive="The momentum-teacher ablation: {diff} k-NN in the paper's direction (a drop is positive), "
                       + _NOT_A_VERDICT + ". With DINO's own k-NN near a random ViT's there is little to lose; "
                       "the scaling probe above shows the two arms at 2x and 4x the epochs.",
          missing="This run skipped the ablations."),
    Point("dino_multicrop_helps",
          reproduced="Multi-crop helps: without the local views k-NN drops by {diff} (n = {n}).",
          not_reproduced="Without multi-crop k-NN did not drop here ({diff} in the paper's direction, n = {n}).",
          inconclusive="The multi-crop ablation: {diff} k-NN in the paper's direction, " + _NOT_A_VERDICT
                       + "; the scaling probe above shows the two arms at 2x and 4x the epochs."),
    Point("abl_mse",
          reproduced="The cross-entropy matters: MSE between the distributions gives {diff} less k-NN.",
          not_reproduced="MSE instead of cross-entropy did not hurt here ({diff} in the paper's direction).",
          inconclusive="The MSE ablation (one short run per arm): {diff} k-NN in the paper's direction, "
                       "an illustration, not a verdict."),
    Point("abl_no_centering_kl",
          reproduced="Without centering the teacher collapses as in Fig. 7: the final KL(P_t‖P_s) is {ours}, "
                     "below a tenth of DINO's (one dimension takes over).",
          not_reproduced="Without centering the final KL(P_t‖P_s) is {ours}, not below a tenth of DINO's: no "
                         "collapse by our strict rule within this short run; the entropy curves above show "
                         "whether one dimension is taking over (low per-image and batch-mean entropy).",
          inconclusive="Without centering the final KL(P_t‖P_s) is {ours}, too close to a tenth of DINO's to "
                       "call a collapse; see the entropy curves above."),
    Point("abl_no_sharpening_kl",
          reproduced="Without sharpening the teacher collapses to the uniform output as in Fig. 7: final "
                     "KL(P_t‖P_s) {ours}, below a tenth of DINO's.",
          not_reproduced="Without sharpening the final KL(P_t‖P_s) is {ours}, not below a tenth of DINO's: no "
                         "collapse by our strict rule within this short run; the curves above show whether the "
                         "teacher's entropy is heading for log K.",
          inconclusive="Without sharpening the final KL(P_t‖P_s) is {ours}, too close to a tenth of DINO's to "
                       "call a collapse; see the entropy curves above."),
]
