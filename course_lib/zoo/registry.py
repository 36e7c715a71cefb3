"""The course zoo's registry: the pretrained models the notebooks reuse, by name.

An :class:`Entry` says what a model is, which notebooks use it, on what data and with what
recipe it is trained, how long it takes, and where its builder lives. The builder is a function
``build(P, log) -> figures`` in the paper package that owns the recipe
(``"course_lib.papers.dino.pretrained:build_dino_vit"``): it trains through the same code the
notebook runs (so the notebook finds the very artifact in the cache) and returns the entry's own
quality figures for its model card. The registry names builders by their import path, like a
plugin's entry point, so this shared layer imports no paper package; a builder is imported only
when its entry is built.

An entry is built for a profile's default parameters of its notebook (``config.resolve``); a
notebook run with other knobs trains its own model, as it always did.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Entry:
    """One pretrained model of the course.

    ``name``: the zoo's name; ``what``: one line; ``notebook``: the notebook whose parameters
    (per profile) define the recipe; ``used_by``: the notebooks that need it; ``data`` and
    ``recipe``: in words, for the model card; ``estimate_s``: build time per profile on 2 CPU
    cores, the world rendered anew (for messages and the ETA; the model card keeps the measured
    time; the study estimates are the first timed build's, benchmarks/bench_zoo.py); ``builder``:
    ``"module:function"``; ``code_version``: bump it when the builder changes what it trains or
    measures; ``figures``: what the model card's figures mean (name -> text).
    """

    name: str
    what: str
    notebook: str
    used_by: tuple[str, ...]
    data: str
    recipe: str
    estimate_s: Mapping[str, float]
    builder: str
    code_version: int = 1
    figures: Mapping[str, str] = field(default_factory=dict)
    profiles: tuple[str, ...] = ("smoke", "study")
    # what the entry must beat to earn its place: (figure, baseline figure name or a number,
    # margin); the model card says whether it does (smoke builds are too short to be judged)
    quality: tuple[tuple[str, str | float, float], ...] = ()

    def builder_fn(self) -> Callable[..., Mapping[str, Any]]:
        module, _, fn = self.builder.partition(":")
        return getattr(importlib.import_module(module), fn)

    def estimate(self, profile: str) -> float:
        return float(self.estimate_s.get(profile, float("nan")))


_F_DINO = {
    "knn_top1": "weighted k-NN top-1 (%) on class-token features, world test split",
    "knn_top1_random": "the same for a random ViT of the same architecture",
    "jaccard_best_head": "Jaccard (%) of the best head's 60%-mass attention vs object masks "
                         "(head chosen on val, scored on test)",
    "jaccard_best_head_random": "the same for the random ViT",
    "jaccard_mean": "Jaccard (%) of the mean-of-heads attention",
    "jaccard_mean_random": "the same for the random ViT",
}
_F_TEACHER = {"test_top1": "top-1 (%) on the world's test split", "chance": "chance level (%)"}

_F_ALBEF = {"pretrainings": "models pre-trained (rows x seeds)",
            "chance": "mean recall (%) of a random ranking of the test set",
            "zero_shot_itc_best": "the best row's zero-shot mean recall (%) before fine-tuning (seed of the "
                                  "profile, ITC ranking)"}
_ALBEF_RECIPE = "each row's losses (albef.VARIANTS), AdamW, warm-up + cosine; 16 epochs in the study profile"

ENTRIES: tuple[Entry, ...] = (
    Entry("dino_vit", "DINO ViT pretrained on the offline world: the frozen backbone of notebook 11",
          "11_stego", ("11_stego",),
          "the world's train split (unlabeled)", "DINO, the course's recipe (selfsup.DINO_PROFILES), seed 0",
          {"smoke": 5, "study": 900}, "course_lib.papers.dino.pretrained:build_dino_vit",
          figures=_F_DINO, quality=(("knn_top1", "knn_top1_random", 2.0),
                                    ("jaccard_best_head", "jaccard_best_head_random", 2.0))),
    Entry("usi_teacher", "USI's CNN teacher (KD source for every student family)", "02_usi", ("02_usi",),
          "notebook 02's world (with its label noise)", "cross-entropy, label smoothing 0.1",
          {"smoke": 2, "study": 420}, "course_lib.papers.usi.pretrained:build_teacher", figures=_F_TEACHER,
          quality=(("test_top1", "chance", 10.0),)),
    Entry("deit_teacher", "DeiT's convnet teacher", "03_deit", ("03_deit",), "notebook 03's world",
          "cross-entropy", {"smoke": 2, "study": 600}, "course_lib.papers.deit.pretrained:build_teacher",
          figures=_F_TEACHER, quality=(("test_top1", "chance", 10.0),)),
    Entry("minivit_teacher", "MiniViT's larger ViT teacher", "09_minivit", ("09_minivit",),
          "notebook 09's world", "cross-entropy", {"smoke": 2, "study": 120},
          "course_lib.papers.minivit.pretrained:build_teacher", figures=_F_TEACHER,
          quality=(("test_top1", "chance", 10.0),)),
    Entry("clear_dino", "DINO ViT pretrained on CLEAR's unlabeled bucket 0", "05_clear", ("05_clear",),
          "bucket 0 of notebook 05's drifting stream (unlabeled)", "DINO (notebook 05's recipe)",
          {"smoke": 5, "study": 480}, "course_lib.papers.clear.pretrained:build_dino",
          figures={"images": "unlabeled bucket-0 images it saw", "final_loss": "last epoch's DINO loss"}),
    Entry("vitdet_mae", "ViTDet's plain ViT backbone pretrained as a masked autoencoder", "07_vitdet",
          ("07_vitdet",), "notebook 07's pretraining view of the world", "MAE (mask ratio per profile)",
          {"smoke": 5, "study": 45}, "course_lib.papers.vitdet.pretrained:build_mae",
          figures={"final_loss": "last epoch's reconstruction loss (normalised pixels)",
                   "first_loss": "first epoch's"}, quality=(("first_loss", "final_loss", 0.0),)),
    Entry("vitdet_supervised", "ViTDet's plain ViT backbone pretrained with labels", "07_vitdet",
          ("07_vitdet",), "notebook 07's classification view of the world", "cross-entropy",
          {"smoke": 5, "study": 45}, "course_lib.papers.vitdet.pretrained:build_supervised",
          figures={"final_loss": "last epoch's training loss", "first_loss": "first epoch's"},
          quality=(("first_loss", "final_loss", 0.0),)),
    Entry("frozen_body", "the classification trunk notebook 08 freezes or fine-tunes", "08_frozen_backbones",
          ("08_frozen_backbones",), "the sibling classification world (balanced upstream task)",
          "cross-entropy, label smoothing 0.1", {"smoke": 5, "study": 300},
          "course_lib.papers.frozen_backbones.pretrained:build_body",
          figures={"val_top1": "top-1 (%) on the upstream val split", "chance": "chance level (%)"},
          quality=(("val_top1", "chance", 10.0),)),
    Entry("albef_clean_itc", "ALBEF's Table 1 pre-trainings without hard negatives (MLM + ITM, ITC + MLM + "
          "ITM), clean pairs, each paired seed", "01_albef", ("01_albef",),
          "notebook 01's world captions (train split)",
          _ALBEF_RECIPE, {"smoke": 5, "study": 600}, "course_lib.papers.albef.pretrained:build_clean_itc",
          figures=_F_ALBEF, quality=(("zero_shot_itc_best", "chance", 2.0),)),
    Entry("albef_clean_hard", "ALBEF's Table 1 pre-trainings with hard negatives (ITM_hard, MoD), clean pairs, "
          "each paired seed", "01_albef", ("01_albef",), "notebook 01's world captions (train split)",
          _ALBEF_RECIPE, {"smoke": 5, "study": 600}, "course_lib.papers.albef.pretrained:build_clean_hard",
          figures=_F_ALBEF, quality=(("zero_shot_itc_best", "chance", 2.0),)),
    Entry("albef_noisy", "ALBEF's Table 1 pre-trainings on 40% corrupted (web-like) pairs (ITM_hard, MoD), "
          "each paired seed", "01_albef", ("01_albef",), "notebook 01's world captions, 40% corrupted",
          _ALBEF_RECIPE, {"smoke": 5, "study": 600}, "course_lib.papers.albef.pretrained:build_noisy",
          figures=_F_ALBEF, quality=(("zero_shot_itc_best", "chance", 2.0),)),
)

_BY_NAME = {e.name: e for e in ENTRIES}


def entries() -> tuple[Entry, ...]:
    return ENTRIES


def get(name: str) -> Entry:
    if name not in _BY_NAME:
        raise KeyError(f"no zoo entry {name!r}; the zoo has: {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def resolve_names(names) -> list[Entry]:
    """Entries for ``names`` (all when empty), unknown names failing at once with the list."""
    if not names:
        return list(ENTRIES)
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown:
        raise KeyError(f"unknown zoo entr{'y' if len(unknown) == 1 else 'ies'} "
                       f"{', '.join(map(repr, unknown))}; the zoo has: {', '.join(_BY_NAME)}")
    return [_BY_NAME[n] for n in names]
