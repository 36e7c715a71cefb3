"""The course zoo's DINO ViT (``course_lib.zoo``): the course's DINO recipe
(``selfsup.dino_config`` on ``selfsup.world_config``, seed 0), notebook 11's frozen backbone.
The builder trains through ``selfsup.study_backbone``, the very call notebook 11 makes, so the
notebook then finds the same cached artifact; it returns the model card's figures. Notebook 06
trains its own, cheaper DINO runs (patch 8, one per seed: ``notebook_config``)."""
from __future__ import annotations

from typing import Any, Callable

from course_lib import config, selfsup

from .experiment import evaluate_backbone, world_data
from .method import random_backbone

THRESHOLD = 0.6  # the attention mass kept in the masks (paper)


def _figures(model, d, suffix: str = "") -> dict[str, float]:
    e = evaluate_backbone(model, d, THRESHOLD, linear=False)
    return {f"knn_top1{suffix}": e["knn"], f"jaccard_best_head{suffix}": e["jaccard_best_head"],
            f"jaccard_mean{suffix}": e["jaccard_mean"]}


def build_dino_vit(P: config.Params, log: Callable[[str], Any] = print) -> dict[str, float]:
    """The DINO ViT of the profile, and its k-NN and attention Jaccard next to a random ViT of the
    same architecture (the entry earns its place only if it beats it)."""
    model, wcfg = selfsup.study_backbone(P.profile, device=P.torch_device)
    d = world_data(wcfg, P.data_root)
    rnd = random_backbone(selfsup.dino_config(P.profile), 0, device=P.torch_device)
    return {**_figures(model, d), **_figures(rnd, d, "_random")}
