"""Notebook 06's experiment: its parameters (``PARAMS``), the paper's numbers, the data (the
offline world, or Imagenette + PASCAL VOC12), the evaluation of a backbone, the ablation runs,
the photos, and the "paper vs. ours" record."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from course_lib import config
from course_lib.config import Param
from course_lib.models.vit import VisionTransformer
from course_lib.papers.dino.method import (
    ABLATIONS, foreground_masks, knn_classifier, linear_probe, segmentation_scores,
)
from course_lib.results.takeaways import Point
from course_lib.selfsup import DINOConfig, dino_config, extract_features, train_backbone, world_config

__all__ = ["NOTEBOOK", "TITLE", "PAPER_URL", "PAPER", "PARAMS", "config_from_params", "load_data", "DINOData",
           "world_data", "imagenette_voc_data", "evaluate_backbone", "run_ablations", "PHOTOS", "photos",
           "recorder", "record_results", "TAKEAWAYS"]

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


def _by_profile(field: str) -> dict[str, Any]:
    return config.per_profile(dino_config, field)


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
    "supervised_epochs": Param({"smoke": 1, "study": 6, "paper": 100},
                               "epochs of the supervised ViT baseline", type=int, low=1),
    "ablation_epochs": Param({"smoke": 1, "study": 1, "paper": 30},
                             "epochs of each ablation run (Table 7, Fig. 7)", type=int, low=1),
    "threshold": Param(0.6, "attention mass kept for the masks (paper: 0.6)", low=0.05, high=1.0),
    "dino_weights": Param(None, "path to official or timm DINO weights (ViT-S/16 or /8) for the real "
                          "photos; None: our small model only", type=(str, type(None))),
    "retrain": Param(False, "ignore cached models and train again"),
}


def config_from_params(P: config.Params) -> DINOConfig:
    """The notebook's DINO recipe: the profile's :func:`dino_config` with the notebook's knobs.
    With the default knobs it is exactly ``dino_config(profile)``, so notebook 06 and
    :func:`study_backbone` share one cached model."""
    return dino_config(P.profile, epochs=P.epochs, local_crops=P.local_crops, teacher_temp=P.teacher_temp,
                       momentum_teacher=P.momentum_teacher, out_dim=P.out_dim)


def load_data(P: config.Params) -> DINOData:
    """The world of :func:`world_config` (offline), or Imagenette + PASCAL VOC12 (paper profile)."""
    if P.dataset == "world":
        return world_data(world_config(P.profile), P.data_root)
    return imagenette_voc_data(dino_config(P.profile).image_size, P.data_root)


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


def record_results(P: config.Params, evals: Mapping[str, Mapping[str, Any]], ablations: Mapping[str, Any] | None,
                   num_classes: int, rec=None, margin: float = 2.0):
    """The "paper vs. ours" claims, judged by rules (course_lib.results) and saved.

    ``evals``: :func:`evaluate_backbone` of ``"dino"``, ``"random"``, ``"supervised"``; ``ablations``:
    :func:`run_ablations`. Single runs have no noise estimate: a comparison must win by ``margin``
    points to count as reproduced (a smaller gap is inconclusive).
    """
    from course_lib.results import AtLeast, AtMost, Better

    rec = rec if rec is not None else recorder(P)
    J, T2, T7 = PAPER["jaccard_vit_s16"], PAPER["table2_vit_s"], PAPER["table7_knn"]
    chance = 100.0 / num_classes
    e = evals
    rec.add("knn_random", "a random ViT's k-NN (reference row)", paper=None, ours=e["random"]["knn"],
            rule=AtLeast(0.0), note=f"chance {chance:.1f}%")
    rec.add("knn_dino", "DINO's frozen features beat a random ViT's in weighted k-NN [Table 2: ViT-S 74.5 k-NN]",
            paper=T2["dino_knn"], ours=e["dino"]["knn"], rule=Better("knn_random", min_effect=margin))
    rec.add("linear_random", "a random ViT's linear probe (reference row)", paper=None, ours=e["random"]["linear"],
            rule=AtLeast(0.0))
    rec.add("linear_dino", "DINO's linear probe beats a random ViT's [Table 2: ViT-S 77.0 linear]",
            paper=T2["dino_linear"], ours=e["dino"]["linear"], rule=Better("linear_random", min_effect=margin))
    rec.add("knn_supervised", "the supervised ViT's k-NN (labels help; paper: supervised 79.8 > DINO 77.0 linear)",
            paper=T2["supervised"], ours=e["supervised"]["knn"], rule=Better("knn_dino", min_effect=0.0))
    rec.add("jaccard_random", "Jaccard of a random ViT's 60%-mass attention, mean of heads [Fig. 4 table: random 22.0]",
            paper=J["random"], ours=e["random"]["jaccard_mean"], rule=AtLeast(0.0))
    rec.add("jaccard_supervised", "Jaccard of the supervised ViT's attention, mean of heads [supervised 27.3]",
            paper=J["supervised"], ours=e["supervised"]["jaccard_mean"], rule=AtLeast(0.0))
    rec.add("jaccard_dino_vs_random", "DINO's best head (chosen on val) matches the objects better than a random "
            "ViT's best head [Fig. 4 table: 45.9 vs 22.0, best head of each model]", paper=J["dino"],
            ours=e["dino"]["jaccard_best_head"], rule=Better(e["random"]["jaccard_best_head"], min_effect=margin),
            note=f"random best head {e['random']['jaccard_best_head']:.1f}")
    rec.add("jaccard_dino_vs_supervised", "DINO's best head matches the objects better than the supervised ViT's "
            "best head [45.9 vs 27.3]", paper=J["dino"], ours=e["dino"]["jaccard_best_head"],
            rule=Better(e["supervised"]["jaccard_best_head"], min_effect=margin),
            note=f"supervised best head {e['supervised']['jaccard_best_head']:.1f}")
    rec.add("jaccard_mean_dino_vs_random", "stricter than the paper: the mean of DINO's heads beats the mean of a "
            "random ViT's heads", paper=None, ours=e["dino"]["jaccard_mean"],
            rule=Better("jaccard_random", min_effect=margin))
    rec.add("jaccard_mean_dino_vs_supervised", "stricter than the paper: the mean of DINO's heads beats the mean of "
            "the supervised ViT's heads", paper=None, ours=e["dino"]["jaccard_mean"],
            rule=Better("jaccard_supervised", min_effect=margin))
    if ablations:
        a = {n: r for n, r in ablations.items()}
        if "dino" in a:
            rec.add("abl_dino", "DINO at the ablations' short budget (reference) [Table 7 row 1: 72.8 k-NN]",
                    paper=T7["dino"], ours=a["dino"]["eval"]["knn"], rule=AtLeast(0.0))
        if "no_momentum" in a:
            rec.add("abl_no_momentum", "without the momentum teacher DINO collapses [Table 7 row 2: 0.1 k-NN]",
                    paper=T7["no_momentum"], ours=a["no_momentum"]["eval"]["knn"],
                    rule=Better("abl_dino", higher_is_better=False, min_effect=margin))
        if "no_multicrop" in a:
            rec.add("abl_no_multicrop", "without multi-crop k-NN drops [Table 7 row 4: 67.9 vs 72.8]",
                    paper=T7["no_multicrop"], ours=a["no_multicrop"]["eval"]["knn"],
                    rule=Better("abl_dino", higher_is_better=False, min_effect=margin))
        if "mse" in a:
            rec.add("abl_mse", "MSE instead of cross-entropy is worse [Table 7 row 5: 52.6 vs 72.8]",
                    paper=T7["mse"], ours=a["mse"]["eval"]["knn"],
                    rule=Better("abl_dino", higher_is_better=False, min_effect=margin))
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
_NOT_A_VERDICT = "from {n} run(s) per arm: not a verdict (fewer than 3 seeds, or within their noise)"
TAKEAWAYS = [
    Point("jaccard_dino_vs_random",
          reproduced="The class token's attention finds the objects without labels: DINO's best head beats a "
                     "random ViT's best head by {diff} Jaccard (DINO {ours}; paper's ViT-S/16 {paper} on VOC12).",
          not_reproduced="DINO's best head does not match the objects better than a random ViT's ({diff} Jaccard): "
                         "at this budget the attention has not specialised on the objects.",
          inconclusive="DINO's best head vs. a random ViT's best head: {diff} Jaccard (DINO {ours}; paper "
                       "{paper}), " + _NOT_A_VERDICT + "."),
    Point("jaccard_dino_vs_supervised",
          reproduced="DINO's best head even beats the supervised ViT's best head ({diff} Jaccard), the paper's "
                     "Fig. 4 result.",
          not_reproduced="The supervised ViT's best head covers the objects better than DINO's ({diff} Jaccard in "
                         "the paper's direction): its labels are about objects, while on our world the one thing two "
                         "crops of an image always share is the background texture.",
          inconclusive="DINO's best head vs. the supervised ViT's: {diff} Jaccard, " + _NOT_A_VERDICT + ". Our "
                       "supervised ViT's labels are about objects, while the one thing two crops of our images "
                       "always share is the background texture: compare the attention maps above."),
    Point("jaccard_mean_dino_vs_random",
          reproduced="The stricter check holds too: the mean of DINO's heads beats the mean of a random ViT's "
                     "heads ({diff} Jaccard).",
          not_reproduced="The stricter check fails: the mean of DINO's heads does not beat a random ViT's "
                         "({diff} Jaccard), so the object-covering head is one head, not all of them.",
          inconclusive="The stricter check, the mean of DINO's heads vs. a random ViT's: {diff} Jaccard, "
                       + _NOT_A_VERDICT + "; the per-head bars above show whether one head or all of them "
                       "cover the objects."),
    Point("knn_dino",
          reproduced="DINO's frozen features are better k-NN features than a random ViT's ({diff} top-1; DINO "
                     "{ours}, paper's ViT-S/16 on ImageNet {paper}).",
          not_reproduced="DINO's frozen features do not beat a random ViT's in k-NN ({diff} top-1): the few "
                         "hundred optimizer steps of this budget have not taught the class token more than a "
                         "random patch projection already gives.",
          inconclusive="k-NN on the frozen class token, DINO vs. a random ViT: {diff} top-1 (DINO {ours}; paper "
                       "{paper} on ImageNet), " + _NOT_A_VERDICT + "."),
    Point("linear_dino",
          reproduced="DINO's features also give a better linear probe than a random ViT's ({diff} top-1).",
          not_reproduced="The linear probe on DINO's features does not beat the random ViT's ({diff} top-1).",
          inconclusive="Linear probe, DINO vs. a random ViT: {diff} top-1 (DINO {ours}), " + _NOT_A_VERDICT + "."),
    Point("knn_supervised",
          reproduced="Labels still help, as in the paper's Table 2: the supervised ViT's k-NN beats DINO's "
                     "({diff} top-1).",
          not_reproduced="DINO's k-NN beats the supervised ViT's here ({diff} top-1 in the paper's direction), "
                         "unlike the paper's Table 2.",
          inconclusive="Supervised vs. DINO in k-NN: {diff} top-1 for the supervised ViT, " + _NOT_A_VERDICT + "."),
    Point("abl_no_momentum",
          reproduced="Without the momentum teacher k-NN drops ({diff} in the paper's direction; the paper's run "
                     "collapses to {paper}).",
          not_reproduced="Without the momentum teacher k-NN did not drop here ({diff} in the paper's direction); "
                         "the collapse curves above show whether that run is on its way to a collapse.",
          inconclusive="The momentum-teacher ablation: {diff} k-NN in the paper's direction (a drop is positive; "
                       "paper: collapse to {paper}), " + _NOT_A_VERDICT + ".",
          missing="This profile skips the ablations (Table 7, Fig. 7)."),
    Point("abl_no_multicrop",
          reproduced="Multi-crop helps: without the local views k-NN drops by {diff}.",
          not_reproduced="Without multi-crop k-NN did not drop here ({diff} in the paper's direction).",
          inconclusive="The multi-crop ablation: {diff} k-NN in the paper's direction, " + _NOT_A_VERDICT + "."),
    Point("abl_mse",
          reproduced="The cross-entropy matters: MSE between the distributions gives {diff} less k-NN.",
          not_reproduced="MSE instead of cross-entropy did not hurt here ({diff} in the paper's direction).",
          inconclusive="The MSE ablation: {diff} k-NN in the paper's direction, " + _NOT_A_VERDICT + "."),
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
