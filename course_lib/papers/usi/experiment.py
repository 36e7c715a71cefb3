"""USI (notebook 02): the experiment. Parameters (``PARAMS``), the paper's numbers, the
students of four families and the CNN teacher, USI's view of the world, the runs of Tables 2,
4, 6 and 7 at small scale (cached), their tables, and the "paper vs. ours" recorder."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from torch import nn

from course_lib import classification, config, train
from course_lib.classification import (
    ClassificationData,
    accuracy,
    head_logits,
    targets_of,
   
)
from course_lib.config import Param
from course_lib.models import count_params, create_vit, small_resnet
from course_lib.results.takeaways import Point

from .method import USILoss, recipe

PAPER_URL = "https://arxiv.org/abs/2204.03475"
TITLE = "USI: Solving ImageNet: a Unified Scheme for Training any Backbone to Top Results"
NOTEBOOK = "02_usi"

# bump when a change of this module changes what a cached model would be
CODE_VERSION = 3

FAMILIES = ("cnn", "vit", "mlp", "mobile")
FAMILY_NAMES = {"cnn": "CNN (ResNet)", "vit": "Transformer (ViT)", "mlp": "MLP-only (ResMLP)",
                "mobile": "Mobile (MobileNetV3)"}

# The paper's numbers (ImageNet top-1, %), from the study group's notes (seed 000 / 001).
PAPER = {
    # Table 2: USI vs. the best previously published recipe of each model
    "table2": {"cnn": ("ResNet50", 81.0, 80.2), "vit": ("ViT-S", 81.8, 79.8),
               "mlp": ("ResMLP-S12", 78.8, 77.8), "mobile": ("MobileNetV3", 77.3, 75.2)},
    # Table 6: LeViT-384, KD relative weight α_kd (inf: no CE term)
    "table6": {0.0: 76.2, 1.0: 80.8, 5.0: 82.7, 10.0: 82.6, 20.0: 82.7, math.inf: 82.7},
    # Table 7: LeViT-384, KD temperature τ
    "table7": {0.1: 79.3, 1.0: 82.7, 2.0: 82.7, 5.0: 81.7, 10.0: 81.4},
    # Table 4: student, teacher -> top-1
    "table4": {("ResNet50", "TResNet-L (CNN)"): 81.0, ("ResNet50", "Volo-d1 (transformer)"): 80.9,
               ("LeViT-384", "TResNet-L (CNN)"): 82.7, ("LeViT-384", "Volo-d1 (transformer)"): 82.7},
}

PARAMS = {
    "dataset": Param({"smoke": "world", "study": "world", "paper": "imagenette"},
                     "world (offline) or a real dataset", choices=("world", "cifar100", "imagenette")),
    "image_size": Param({"smoke": 32, "study": 32, "paper": 128},
                        "input side in pixels (real datasets are resized)", type=int, low=32, high=224,
                        check=lambda s: s % 16 == 0, check_help="and a multiple of 16"),
    "num_classes": Param({"smoke": 6, "study": 6, "paper": 10},
                         "world: shape classes (2-12); real datasets: ignored", type=int, low=2, high=1000),
    "train_images": Param({"smoke": 384, "study": 4500, "paper": 0}, "world train images",
                          type=int, low=0),
    "eval_images": Param({"smoke": 256, "study": 1000, "paper": 0}, "world val/test images",
                         type=int, low=0),
    "max_objects": Param(1, "world: objects per image are drawn from 1..max_objects; the label is "
                         "the largest visible one, as an ImageNet label names one object of a scene",
                         type=int, low=1, high=4),
    "patch_size": Param({"smoke": 8, "study": 8, "paper": 16},
                        "patch of the ViT and MLP students (pixels; the image side must be a multiple)",
                        type=int, low=2, high=64),
    "label_noise": Param({"smoke": 0.25, "study": 0.25, "paper": 0.0},
                         "world: fraction of train labels replaced at random", low=0.0, high=1.0),
    "teacher_arch": Param({"smoke": "small_resnet", "study": "small_resnet", "paper": "resnet26d"},
                          "CNN teacher (small_resnet or a timm convnet name, e.g. resnet18)"),
    "teacher_epochs": Param({"smoke": 1, "study": 8, "paper": 100}, type=int, low=1),
    "epochs": Param({"smoke": 1, "study": 5, "paper": 300}, "student epochs (the same for every student)",
                    type=int, low=1),
    "batch_size": Param({"smoke": 64, "study": 128, "paper": 256}, type=int, low=2),
    "lr": Param(2e-3, "AdamW learning rate (USI Table 1: 2e-3, unscaled)", low=1e-6, high=1.0),
    "weight_decay": Param(2e-2, "AdamW weight decay (USI Table 1: 2e-2)", low=0.0, high=1.0),
    "mixup": Param(0.8, "mixup alpha (USI Table 1: 0.8; 0 turns it off)", low=0.0, high=10.0),
    "cutmix": Param(1.0, "cutmix alpha (USI Table 1: 1.0; 0 turns it off)", low=0.0, high=10.0),
    "alpha_kd": Param(5.0, "KD relative weight α_kd (USI: 5)", low=0.0, high=1000.0),
    "tau": Param(1.0, "KD temperature τ (USI: 1)", low=0.01, high=100.0),
    "families": Param({"smoke": "cnn,vit,mlp,mobile", "study": "cnn,vit,mlp,mobile",
                       "paper": "cnn,vit,mlp,mobile"},
                      "comma-separated student families of Table 2",
                      type=str, check=lambda s: bool(s) and all(f in FAMILIES for f in s.split(",")),
                      check_help=f"a comma-separated subset of {', '.join(FAMILIES)}"),
    "ablation_family": Param("cnn", "student of the α_kd / τ / teacher ablations (Tables 4, 6, 7)",
                             choices=FAMILIES),
    "alphas": Param("1,inf", "α_kd values of Table 6 besides 0 and the default (inf: KD only)",
                    type=str, check=lambda s: all(_parse_alpha(a) >= 0 for a in s.split(",") if a),
                    check_help="comma-separated numbers >= 0 or 'inf'"),
    "taus": Param("0.1,5", "τ values of Table 7 besides the default", type=str,
                  check=lambda s: all(float(t) > 0 for t in s.split(",") if t),
                  check_help="comma-separated numbers > 0"),
    "seeds": Param({"smoke": 1, "study": 3, "paper": 3}, "paired seeds of the Table 2 students and of "
                   "the α_kd = 1 run (every arm runs every seed)", type=int, low=1, high=10),
    "ablation_seeds": Param({"smoke": 1, "study": 1, "paper": 1}, "seeds of the other ablations (Tables 4, "
                            "6 and 7): the first ones of `seeds`", type=int, low=0, high=10),
    "max_steps": Param({"smoke": 4, "study": 0, "paper": 0}, "cap on steps per run (0: none)",
                       type=int, low=0),
    "retrain": Param(False, "ignore cached teachers/students and train again"),
}


def _parse_alpha(a: str) -> float:
    a = a.strip().lower()
    if a in ("inf", "∞", "kd_only"):
        return math.inf
    try:
        return float(a)
    except ValueError:
        return -1.0


def parse_list(text: str, parse=float) -> list:
    return [parse(t) for t in str(text).split(",") if t.strip()]


# ----------------------------------------------------------------------------------------------
# Students, teacher, data


def build_student(family: str, num_classes: int, image_size: int = 32, patch_size: int = 0) -> nn.Module:
    """One student per family of Table 2, sized for ``image_size`` px (about 0.5-1.5M params at
    32 px; throughput on 2 CPU cores in docs/calibration.md). ``patch_size`` is the ViT and MLP
    students' patch (0: ``image_size // 8``)."""
    from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock

    patch = patch_size or max(4, image_size // 8)
    if family == "cnn":  # half the teacher's width
        return small_resnet(num_classes, width=16)
    if family == "vit":
        return create_vit("course_tiny", num_classes=num_classes, img_size=image_size, patch_size=patch)
    if family == "mlp":  # ResMLP (Touvron et al. 2021): affine norms, a linear token mixer
        return MlpMixer(num_classes=num_classes, img_size=image_size, patch_size=patch, num_blocks=4,
                        embed_dim=128, mlp_ratio=4, block_layer=ResBlock, norm_layer=Affine)
    if family == "mobile":
        import timm

        m = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=num_classes)
        # made for 224 px, it ends on a 1x1 map at 32 px (and stays near chance in a short run);
        # as CIFAR ports do, its last stride-2 convs become stride 1 until the last map is >= 4x4
        # (at 32 px: two undone; about 1.2x the time of the 1x1 original: docs/calibration.md)
        strided = [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.stride == (2, 2)]
        side, undo = image_size // 32, 0
        while side < 4 and undo < len(strided):
            side, undo = side * 2, undo + 1
        for c in strided[len(strided) - undo:]:
            c.stride = (1, 1)
        return m
    raise ValueError(f"family={family!r}: allowed {', '.join(FAMILIES)}")


def build_teacher(arch: str, num_classes: int) -> nn.Module:
    if arch == "small_resnet":  # twice as wide as the CNN student (4x its parameters)
        return small_resnet(num_classes, width=32)
    from course_lib.models.convnets import create_convnet

    return create_convnet(arch, num_classes)


def world_config(P: config.Params):
    """USI's view of the world: 1..``max_objects`` objects per image (uniformly), the label
    names the largest visible object, as an ImageNet label names one object of a scene
    (paper, Figure 2). A teacher's soft prediction can then say "mostly a star, also a heart";
    the hard label cannot. ``label_noise`` replaces that fraction of training labels at random."""
    from course_lib.world import SHAPE_NAMES, WorldConfig

    if P.num_classes > len(SHAPE_NAMES):
        raise config.ParameterError(f"parameter 'num_classes' = {P.num_classes}: the world has "
                                    f"{len(SHAPE_NAMES)} shape classes; allowed: 2..{len(SHAPE_NAMES)}")
    return WorldConfig(num_images=P.train_images, eval_images=P.eval_images, image_size=P.image_size,
                       num_classes=P.num_classes, objects=(1, P.max_objects), occlusion=0.3,
                       scale=(0.5, 0.85), bg_contrast=0.3, label_noise=P.label_noise, seed=0)


def load_data(P: config.Params) -> ClassificationData:
    """The world (offline), CIFAR-100 or Imagenette (``data_scripts/fetch.py``), through
    ``classification.load_data``: light augmentation on the world, RandAugment and random
    erasing on real images."""
    if P.image_size % P.patch_size:
        raise config.ParameterError(f"parameter 'patch_size' = {P.patch_size}: the image side "
                                    f"(image_size = {P.image_size}) must be a multiple of it")
    return classification.load_data(P.dataset, P.data_root, P.image_size, strong=False, real_strong=True,
                                    world=world_config(P) if P.dataset == "world" else None)


# ----------------------------------------------------------------------------------------------
# Training




def train_teacher(P: config.Params, d: ClassificationData):
    """The CNN teacher: trained once with plain CE (and the same augmentation), then cached."""
    # the teacher is a given (USI takes a pretrained TResNet-L): it is trained here without
    # mixup/cutmix, which slow a few-epoch run far more than they regularise it
    cfg = recipe(P, d.num_classes, seed=0, epochs=P.teacher_epochs, lr=3e-3, mixup=False)
    cfg.label_smoothing = 0.1

    return classification.train_cached(
        f"usi-teacher-{P.teacher_arch}", d, cfg, lambda: build_teacher(P.teacher_arch, d.num_classes),
        batch_size=P.batch_size, device=P.torch_device, loss={"kind": "cross_entropy"},
        code=CODE_VERSION, force=P.retrain)


def train_student(P: config.Params, d: ClassificationData, family: str, teacher: nn.Module | None, seed: int,
                  alpha_kd: float, tau: float = 1.0, teacher_name: str = "cnn"):
    """One student of ``family`` with the USI recipe; ``alpha_kd = 0`` is the no-KD baseline.
    Cached by its whole configuration."""
    criterion = USILoss(teacher if alpha_kd > 0 else None, alpha_kd, tau, kd_only_weight=P.alpha_kd)
    cfg = recipe(P, d.num_classes, seed)
    loss = {"alpha_kd": alpha_kd}
    if alpha_kd > 0:  # the teacher (its very weights) and how it is used
        loss.update(tau=tau, teacher=train.weights_digest(teacher))
    if math.isinf(alpha_kd):  # KD only: the official code still scales the KL by the default α_kd
        loss.update(kd_only_weight=P.alpha_kd)
    a = "inf" if math.isinf(alpha_kd) else f"{alpha_kd:g}"
    return classification.train_cached(
        f"usi-{family}-a{a}-t{tau:g}-{teacher_name}", d, cfg,
        lambda: build_student(family, d.num_classes, P.image_size, P.patch_size), batch_size=P.batch_size,
        device=P.torch_device, seed=seed, criterion=criterion, loss=loss, code=CODE_VERSION,
        force=P.retrain)


@dataclass
class Run:
    label: str
    family: str
    seed: int
    alpha_kd: float
    tau: float
    teacher: str
    top1: float
    seconds: float
    from_cache: bool
    params: int
    history: Any = None


def run_experiments(P: config.Params, d: ClassificationData | None = None, log=print) -> dict[str, Any]:
    """Teacher, then the students of Table 2 (every family, KD off / on), Table 6 (α_kd),
    Table 7 (τ) and Table 4 (CNN vs. transformer teacher). Returns what the notebook shows."""
    d = d or load_data(P)
    dev = P.torch_device
    y = targets_of(d.test)
    t0 = time.perf_counter()
    teacher, tinfo = train_teacher(P, d)
    t_logits = head_logits(teacher, d.test, dev)["cls"]
    runs: list[Run] = [Run("teacher", "cnn", 0, 0.0, 1.0, "-", accuracy(t_logits, y), tinfo.train_seconds,
                           tinfo.from_cache, count_params(teacher), tinfo.history)]
    log(f"CNN teacher ({P.teacher_arch}): top-1 {runs[0].top1:.1f}% "
        f"({'cache' if tinfo.from_cache else f'{tinfo.train_seconds:.0f}s'})")
    models: dict[tuple, nn.Module] = {}

    def student(label, family, seed, alpha_kd, tau=None, teach=teacher, teacher_name="cnn"):
        tau = P.tau if tau is None else tau
        model, info = train_student(P, d, family, teach, seed, alpha_kd, tau, teacher_name)
        acc = accuracy(head_logits(model, d.test, dev)["cls"], y)
        run = Run(label, family, seed, alpha_kd, tau, teacher_name if alpha_kd > 0 else "-", acc,
                  info.train_seconds, info.from_cache, count_params(model), info.history)
        runs.append(run)
        models[(label, family, seed)] = model
        log(f"{label:>14s} {family:>6s} seed {seed}: top-1 {acc:.1f}% "
            f"({'cache' if info.from_cache else f'{info.train_seconds:.0f}s'})")
        return model

    seeds = [P.seed + i for i in range(P.seeds)]
    fams = parse_list(P.families, str)
    for fam in fams:  # Table 2: same recipe, with and without KD, every seed (paired)
        for s in seeds:
            student("no_kd", fam, s, 0.0)
            student("usi", fam, s, P.alpha_kd)
    abl = P.ablation_family
    if abl not in fams:
        for s in seeds:
            student("no_kd", abl, s, 0.0)
            student("usi", abl, s, P.alpha_kd)
    # the ablations of Tables 6, 7 and 4 on the first `ablation_seeds` seeds; α_kd = 1 (the
    # headline comparison with USI's α_kd = 5) on every seed
    abl_seeds = seeds[:P.ablation_seeds]
    for a in parse_list(P.alphas, _parse_alpha):  # Table 6
        if a not in (0.0, P.alpha_kd):
            for s in (seeds if a == 1.0 else abl_seeds):
                student("alpha", abl, s, a)
    for tau in parse_list(P.taus):  # Table 7
        if tau != P.tau:
            for s in abl_seeds:
                student("tau", abl, s, P.alpha_kd, tau=tau)
    # Table 4: a transformer teacher, the ViT trained with USI at the same seed (with the other
    # families it is the only transformer at hand; training a stronger one would not fit the budget)
    if "vit" in fams and abl != "vit":
        for s in abl_seeds:
            student("vit_teacher", abl, s, P.alpha_kd, teach=models[("usi", "vit", s)], teacher_name="vit")
    return {"runs": runs, "targets": y, "teacher": teacher, "teacher_logits": t_logits, "models": models,
            "data": d, "seconds": time.perf_counter() - t0}



# Scaling probes (course_lib.results.scaling; benchmarks/scaling_probe.py, committed under
# results/02_usi/): a Table 2 family with and without KD at 1x, 2x, 4x ... the student epochs.
PROBES = {f"usi_kd_{fam}": fam for fam in FAMILIES}


def scaling_probe(P: config.Params, claim: str, factors=(1, 2, 4), log=print) -> dict[str, Any]:
    """Train the family of ``claim`` with (α_kd = ``P.alpha_kd``) and without KD on ``P.seeds``
    paired seeds at each budget factor (epochs x factor, the one recipe otherwise unchanged; the
    teacher is the notebook's). Returns the keyword arguments of
    :func:`course_lib.results.scaling.save_probe`."""
    if claim not in PROBES:
        raise ValueError(f"claim={claim!r}: a probe exists for {', '.join(PROBES)}")
    from course_lib.results.scaling import sweep

    fam = PROBES[claim]
    d = load_data(P)
    y = targets_of(d.test)
    teacher, _ = train_teacher(P, d)

    def arm(alpha_kd):
        def run(Pf, seed):
            model, info = train_student(Pf, d, fam, teacher, seed, alpha_kd, P.tau)
            return accuracy(head_logits(model, d.test, P.torch_device)["cls"], y), info.train_seconds
        return (f"{fam} α_kd={alpha_kd:g}", run)

    rows = sweep(P, factors, "epochs", {"ours": arm(P.alpha_kd), "baseline": arm(0.0)}, log)
    return {"rows": rows, "budget": "student epochs", "unit": "%", "higher_is_better": True,
            "arms": {"ours": f"{FAMILY_NAMES[fam]}, USI (α_kd = {P.alpha_kd:g})",
                     "baseline": f"{FAMILY_NAMES[fam]}, no KD"}}


def select(runs: list[Run], label: str, family: str | None = None, **where) -> list[Run]:
    out = [r for r in runs if r.label == label and (family is None or r.family == family)]
    return [r for r in out if all(getattr(r, k) == v for k, v in where.items())]


def table2(res: dict[str, Any]):
    """Table 2 at our scale: each family's top-1 without and with KD (mean over seeds)."""
    import pandas as pd

    rows = []
    for fam in dict.fromkeys(r.family for r in res["runs"] if r.label in ("no_kd", "usi")):
        no = [r.top1 for r in select(res["runs"], "no_kd", fam)]
        kd = [r.top1 for r in select(res["runs"], "usi", fam)]
        name, p_usi, p_prev = PAPER["table2"][fam]
        rows.append({"family": FAMILY_NAMES[fam], "params (M)": select(res["runs"], "usi", fam)[0].params / 1e6,
                     "ours: no KD": sum(no) / len(no), "ours: USI (KD)": sum(kd) / len(kd),
                     "ours: gain": sum(kd) / len(kd) - sum(no) / len(no),
                     "paper model": name, "paper: previous recipe": p_prev, "paper: USI": p_usi})
    return pd.DataFrame(rows).set_index("family")


def ablation_table(res: dict[str, Any], which: str):
    """Table 6 (``which="alpha"``) or Table 7 (``"tau"``) on the ablation student."""
    import pandas as pd

    runs, rows = res["runs"], []
    fam = next(r.family for r in runs if r.label in ("alpha", "tau")) if any(
        r.label in ("alpha", "tau") for r in runs) else None
    if fam is None:
        return pd.DataFrame()
    base = [r for r in runs if r.family == fam and r.seed == runs[1].seed]
    if which == "alpha":
        pts = [r for r in base if r.label in ("no_kd", "usi", "alpha")]
        for r in sorted(pts, key=lambda r: r.alpha_kd):
            rows.append({"α_kd": "∞ (KD only)" if math.isinf(r.alpha_kd) else f"{r.alpha_kd:g}",
                         "ours": r.top1, "paper (LeViT-384)": PAPER["table6"].get(r.alpha_kd)})
        return pd.DataFrame(rows).set_index("α_kd")
    pts = [r for r in base if r.label in ("usi", "tau")]
    for r in sorted(pts, key=lambda r: r.tau):
        rows.append({"τ": f"{r.tau:g}", "ours": r.top1, "paper (LeViT-384)": PAPER["table7"].get(r.tau)})
    return pd.DataFrame(rows).set_index("τ")


# ----------------------------------------------------------------------------------------------
# Paper vs. ours


def recorder(P: config.Params):
    """The notebook's results recorder; make it first, so its clock times the whole run."""
    from course_lib.results import Results

    return Results(NOTEBOOK, TITLE, PAPER_URL, P)


def _arm(runs, label, family, **where) -> dict[str, list]:
    """``ours`` and ``seeds`` of one arm (its per-seed top-1, in seed order) for ``Results.add``."""
    rs = sorted(select(runs, label, family, **where), key=lambda r: r.seed)
    return {"ours": [r.top1 for r in rs], "seeds": [r.seed for r in rs]}


def record_results(P: config.Params, res: dict[str, Any], rec=None):
    """The "paper vs. ours" claims, judged by rules (course_lib.results) on paired seeds, and
    saved. The headline ids (``usi_kd_<family>``, ``usi_alpha5_beats_alpha1``) are fixed."""
    from course_lib.results import AtLeast, Better

    runs, K = res["runs"], res["data"].num_classes
    chance = 100.0 / K
    rec = rec if rec is not None else recorder(P)
    rec.add("teacher", "the CNN teacher is trained and strong", paper=None,
            ours=[runs[0].top1], rule=AtLeast(chance), note=f"{P.teacher_arch}; chance {chance:.1f}%")
    fams = list(dict.fromkeys(r.family for r in runs if r.label == "usi"))
    for fam in fams:
        name, p_usi, p_prev = PAPER["table2"][fam]
        rec.add(f"{fam}_no_kd", f"{FAMILY_NAMES[fam]}, same recipe without KD (α_kd = 0) learns",
                paper=p_prev, rule=AtLeast(chance), note=f"paper: {name} with its previous best recipe",
                **_arm(runs, "no_kd", fam))
        rec.add(f"usi_kd_{fam}", f"{FAMILY_NAMES[fam]}: the same USI recipe with KD beats it without "
                f"[Table 2, {name} {p_usi} vs {p_prev}]", paper=p_usi, rule=Better(f"{fam}_no_kd"),
                kind="claim", headline=True, **_arm(runs, "usi", fam))
    abl = P.ablation_family
    t6 = PAPER["table6"]
    base_id = f"{abl}_no_kd"  # α_kd = 0 is the Table 2 run of the same student without KD
    for r_a in sorted({r.alpha_kd for r in select(runs, "alpha", abl)}):
        a = "inf" if math.isinf(r_a) else f"{r_a:g}"
        text = "KD only (no CE)" if a == "inf" else f"α_kd = {a}"
        rec.add(f"{abl}_a{a}", f"{text} beats no KD [Table 6, {t6.get(r_a)} vs {t6[0.0]}]",
                paper=t6.get(r_a), rule=Better(base_id), **_arm(runs, "alpha", abl, alpha_kd=r_a))
    if select(runs, "alpha", abl, alpha_kd=1.0):
        rec.add("usi_alpha5_beats_alpha1", f"α_kd = {P.alpha_kd:g} (USI default) beats α_kd = 1, "
                f"{FAMILY_NAMES[abl]} student [Table 6, LeViT-384 {t6[5.0]} vs {t6[1.0]}]",
                paper=t6.get(P.alpha_kd), rule=Better(f"{abl}_a1"), kind="claim", headline=True,
                **_arm(runs, "usi", abl))
    t7 = PAPER["table7"]
    default_id = f"usi_kd_{abl}"
    for tau in sorted({r.tau for r in select(runs, "tau", abl)}):
        arm = _arm(runs, "tau", abl, tau=tau)
        rec.add(f"{abl}_tau{tau:g}", f"the default τ = {P.tau:g} beats τ = {tau:g} (this row: the τ = {tau:g} "
                f"runs, lower is the paper's side) [Table 7: {t7[1.0]} vs {t7.get(tau)}]", paper=t7.get(tau), rule=Better(default_id, higher_is_better=False),
                kind="claim", **arm)
    vt = select(runs, "vit_teacher", abl)
    if vt:
        t4 = PAPER["table4"][("ResNet50", "Volo-d1 (transformer)")]
        vit_acc = _arm(runs, "usi", "vit")["ours"]
        rec.add(f"{abl}_vit_teacher", "KD from a transformer teacher also beats no KD [Table 4, ResNet50: "
                "80.9 with Volo-d1 vs 81.0 with TResNet-L]", paper=t4, rule=Better(base_id),
                note=f"the ViT teachers themselves (the USI ViT students): "
                f"{', '.join(f'{v:.1f}' for v in vit_acc)}%; CNN teacher {runs[0].top1:.1f}%",
                **_arm(runs, "vit_teacher", abl))
    rec.save()
    return rec


# The "What to take away" cell, written from the record (course_lib.results.takeaways): what each
# verdict means for the paper's story; the numbers are this run's. A claim with fewer than 3 seeds
# per arm stays inconclusive, so those sentences say what the single runs illustrate. The ablation
# ids are those of the default `ablation_family` ("cnn"); another family records other ids.
_NOISE = "n = {n} per arm, not separated from seed noise: an illustration, not a verdict"


def _family_point(fam: str) -> Point:
    name = FAMILY_NAMES[fam]
    model, p_usi, p_prev = PAPER["table2"][fam]
    paper = f"paper: {model} {p_usi} with USI vs. {p_prev} with its previous best recipe"
    return Point(f"usi_kd_{fam}",
                 reproduced=f"{name}: the one recipe with KD beats the same recipe without it ({{diff}} top-1, "
                            f"n = {{n}}; {paper}).",
                 not_reproduced=f"{name}: KD did not lift this family with the one recipe ({{diff}} top-1, "
                                f"n = {{n}}; {paper}).",
                 inconclusive=f"{name}: with vs. without KD, same recipe: {{diff}} top-1 ({paper}); " + _NOISE + ".",
                 missing=f"This run did not train the {name} family (`families`).")


_T6, _T7 = PAPER["table6"], PAPER["table7"]
_T4 = (f'paper: ResNet50 {PAPER["table4"][("ResNet50", "Volo-d1 (transformer)")]} with Volo-d1, '
       f'{PAPER["table4"][("ResNet50", "TResNet-L (CNN)")]} with TResNet-L')
_T4_NOTE = ("Our transformer teacher is the ViT student trained with USI, usually weaker than the CNN teacher (the "
            "row's note gives both), so this also varies the teacher's accuracy; the paper's two teachers are about "
            "equally strong.")
TAKEAWAYS = [
    *(_family_point(f) for f in FAMILIES),
    Point("cnn_a1",
          reproduced=f"Table 6: even a small KD weight (α_kd = 1) beats no KD ({{diff}} top-1, n = {{n}}; paper "
                     f"{_T6[1.0]} vs. {_T6[0.0]}).",
          not_reproduced=f"Table 6: α_kd = 1 did not beat no KD ({{diff}} top-1, n = {{n}}; paper {_T6[1.0]} vs. "
                         f"{_T6[0.0]}).",
          inconclusive=f"Table 6: α_kd = 1 vs. no KD, {{diff}} top-1 (paper {_T6[1.0]} vs. {_T6[0.0]}); " + _NOISE + ".",
          missing="This run did not try α_kd = 1 (`alphas`)."),
    Point("usi_alpha5_beats_alpha1",
          reproduced=f"Table 6: USI's α_kd = 5 beats α_kd = 1 ({{diff}} top-1, n = {{n}}; paper {_T6[5.0]} vs. "
                     f"{_T6[1.0]}): KD should dominate the loss.",
          not_reproduced=f"Table 6: α_kd = 5 did not beat α_kd = 1 ({{diff}} top-1, n = {{n}}; paper {_T6[5.0]} vs. "
                         f"{_T6[1.0]}).",
          inconclusive=f"Table 6: α_kd = 5 vs. 1, {{diff}} top-1 (paper {_T6[5.0]} vs. {_T6[1.0]}); " + _NOISE + "."),
    Point("cnn_ainf",
          reproduced=f"Table 6: KD alone, without the CE term, also beats no KD ({{diff}} top-1, n = {{n}}; paper "
                     f"{_T6[math.inf]} vs. {_T6[0.0]}): the teacher's labels alone are enough to learn from.",
          not_reproduced=f"Table 6: KD alone (no CE) did not beat no KD ({{diff}} top-1, n = {{n}}; paper "
                         f"{_T6[math.inf]} vs. {_T6[0.0]}).",
          inconclusive=f"Table 6: KD alone (no CE) vs. no KD, {{diff}} top-1 (paper {_T6[math.inf]} vs. {_T6[0.0]}); "
                       + _NOISE + ".",
          missing="This run did not try KD only (`alphas` without `inf`)."),
    Point("cnn_tau0.1",
          reproduced=f"Table 7: τ = 1 beats a sharp τ = 0.1 ({{diff}} top-1, n = {{n}}; paper {_T7[1.0]} vs. "
                     f"{_T7[0.1]}): a near-hard teacher label throws away what the soft one knows.",
          not_reproduced=f"Table 7: τ = 1 did not beat τ = 0.1 ({{diff}} top-1, n = {{n}}; paper {_T7[1.0]} vs. "
                         f"{_T7[0.1]}).",
          inconclusive=f"Table 7: τ = 1 vs. τ = 0.1, {{diff}} top-1 (paper {_T7[1.0]} vs. {_T7[0.1]}); " + _NOISE + ".",
          missing="This run did not try τ = 0.1 (`taus`)."),
    Point("cnn_tau5",
          reproduced=f"Table 7: τ = 1 beats a flat τ = 5 ({{diff}} top-1, n = {{n}}; paper {_T7[1.0]} vs. {_T7[5.0]}).",
          not_reproduced=f"Table 7: τ = 1 did not beat τ = 5 ({{diff}} top-1, n = {{n}}; paper {_T7[1.0]} vs. "
                         f"{_T7[5.0]}).",
          inconclusive=f"Table 7: τ = 1 vs. τ = 5, {{diff}} top-1 (paper {_T7[1.0]} vs. {_T7[5.0]}); " + _NOISE + ".",
          missing="This run did not try τ = 5 (`taus`)."),
    Point("cnn_vit_teacher",
          reproduced="Table 4: KD from a transformer teacher also beats no KD ({diff} top-1, n = {n}; " + _T4 + "). "
                     + _T4_NOTE,
          not_reproduced="Table 4: KD from our transformer teacher did not beat no KD ({diff} top-1, n = {n}; " + _T4
                         + "). " + _T4_NOTE,
          inconclusive="Table 4: KD from a transformer teacher vs. no KD, {diff} top-1 (" + _T4 + "); " + _NOISE + ". "
                       + _T4_NOTE,
          missing="This run did not distil from a transformer teacher."),
    Point("teacher",
          reproduced="The CNN teacher learned the world ({ours} top-1, above chance): the premise of distillation.",
          not_reproduced="The CNN teacher did not get above chance ({ours}): nothing above can be read as "
                         "distillation.",
          inconclusive="The CNN teacher's accuracy ({ours}) is not clearly above chance."),
]
