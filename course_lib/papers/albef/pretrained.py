"""Notebook 01's pre-trainings in the course zoo (``course_lib.zoo``): every Table 1 row of the
profile (clean and noisy pairs) at every paired seed, trained through the notebook's own
:func:`~course_lib.papers.albef.runs.pretrain_variant`, so the notebook only fine-tunes and tests.

Three entries share the work (each under the zoo's per-entry budget): the clean rows without hard
negatives (``albef_clean_itc``: MLM + ITM, ITC + MLM + ITM), the other clean rows
(``albef_clean_hard``: ITM_hard, MoD) and the noisy rows (``albef_noisy``)."""
from __future__ import annotations

from typing import Any, Callable

from course_lib import config

from .experiment import config_from_params, grid, load_data, seed_list
from .runs import evaluate, pretrain_variant

PARTS = {
    "clean_itc": lambda setting, v: setting == "clean" and v in ("mlm_itm", "itc_mlm_itm"),
    "clean_hard": lambda setting, v: setting == "clean" and v not in ("mlm_itm", "itc_mlm_itm"),
    "noisy": lambda setting, v: setting == "noisy",
}


def _build(P: config.Params, part: str, log: Callable[[str], Any]) -> dict[str, float]:
    cfg = config_from_params(P)
    device = P.torch_device
    runs = [(s, noise, v) for s, noise, v in grid(P) if PARTS[part](s, v)]
    data, n, zero_shot = {}, 0, {}
    for setting, noise, v in runs:
        d = data.setdefault(noise, load_data(P, noise))
        for seed in seed_list(P):
            log(f"  albef_{part}: [{setting}] {v} seed {seed}")
            model, _ = pretrain_variant(v, d, cfg, seed, device, P.retrain, log=None)
            n += 1
            if seed == P.seed:
                zero_shot[v] = evaluate(model, d.test, P.k_test, device)["itc_r_mean"]
    test = load_data(P, 0.0).test.num_images if not data else next(iter(data.values())).test.num_images
    out = {"pretrainings": float(n), "chance": 100.0 * (1 + 5 + 10) / 3 / test,
           "zero_shot_itc_best": max(zero_shot.values(), default=float("nan"))}
    out.update({f"zero_shot_itc_{v}": float(x) for v, x in zero_shot.items()})
    return out


def build_clean_itc(P: config.Params, log: Callable[[str], Any] = print) -> dict[str, float]:
    return _build(P, "clean_itc", log)


def build_clean_hard(P: config.Params, log: Callable[[str], Any] = print) -> dict[str, float]:
    return _build(P, "clean_hard", log)


def build_noisy(P: config.Params, log: Callable[[str], Any] = print) -> dict[str, float]:
    return _build(P, "noisy", log)
