"""Notebook 06's models in the course zoo (``course_lib.zoo``): the DINO ViT (also notebook 11's
frozen backbone) and the supervised ViT baseline. Each builder trains through the notebook's own
calls, so the notebook then finds the same cached artifact, and returns the model card's figures."""
from __future__ import annotations

from typing import Any, Callable

from course_lib import config, selfsup

from .experiment import config_from_params, evaluate_backbone, load_data
from .method import random_backbone, train_supervised


def _figures(model, d, P, suffix: str = "") -> dict[str, float]:
    e = evaluate_backbone(model, d, P.threshold, linear=False)
    return {f"knn_top1{suffix}": e["knn"], f"jaccard_best_head{suffix}": e["jaccard_best_head"],
            f"jaccard_mean{suffix}": e["jaccard_mean"]}


def build_dino_vit(P: config.Params, log: Callable[[str], Any] = print) -> dict[str, float]:
    """The DINO ViT of the profile (seed ``P.seed``), and its k-NN and attention Jaccard next to a
    random ViT of the same architecture (the entry earns its place only if it beats it)."""
    d = load_data(P)
    cfg = config_from_params(P)
    model, _ = selfsup.train_backbone(d.world, cfg, seed=P.seed, device=P.torch_device, force=P.retrain,
                                      data=d, log=None)
    rnd = random_backbone(cfg, P.seed, device=P.torch_device)
    return {**_figures(model, d, P), **_figures(rnd, d, P, "_random")}


def build_dino_supervised(P: config.Params, log: Callable[[str], Any] = print) -> dict[str, float]:
    """The supervised ViT baseline (the notebook's call: smoke caps it at 6 steps)."""
    d = load_data(P)
    cfg = config_from_params(P)
    sup, info = train_supervised(d, cfg, P.supervised_epochs, seed=P.seed, device=P.torch_device,
                                 force=P.retrain, max_steps=6 if P.profile == "smoke" else None)
    return {**_figures(sup, d, P), "own_head_top1": info.history.last("eval_top1"),
            "chance": 100.0 / d.num_classes}
