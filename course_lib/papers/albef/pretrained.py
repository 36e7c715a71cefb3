"""Notebook 01's pre-trainings in the course zoo (``course_lib.zoo``): every Table 1 row of the
profile (clean and noisy pairs) at every paired seed, trained through the notebook's own
:func:`~course_lib.papers.albef.runs.pretrain_variant`, so the notebook only fine-tunes and tests."""
from __future__ import annotations

from typing import Any, Callable

from course_lib import config

from .experiment import config_from_params, grid, load_data, seed_list
from .runs import evaluate, pretrain_variant


def build_pretrained(P: config.Params, log: Callable[[str], Any] = print) -> dict[str, float]:
    cfg = config_from_params(P)
    device = P.torch_device
    data, n = {}, 0
    zero_shot = {}
    for setting, noise, v in grid(P):
        d = data.setdefault(noise, load_data(P, noise))
        for seed in seed_list(P):
            log(f"  albef_pretrained: [{setting}] {v} seed {seed}")
            model, _ = pretrain_variant(v, d, cfg, seed, device, P.retrain, log=None)
            n += 1
            if setting == "clean" and seed == P.seed:
                zero_shot[v] = evaluate(model, d.test, P.k_test, device)["itc_r_mean"]
    test = data[0.0].test.num_images
    out = {"pretrainings": float(n), "chance": 100.0 * (1 + 5 + 10) / 3 / test}
    out.update({f"zero_shot_itc_{v}": float(x) for v, x in zero_shot.items()})
    return out
