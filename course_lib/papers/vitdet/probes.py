"""Scaling probes of ViTDet's two-arm headline claims (``benchmarks/scaling_probe.py``): the
claim's two detectors on the notebook's paired seeds at 1x, 2x, 4x the detection epochs, with the
pretrained backbones unchanged. The notebook draws the saved probes beside the verdicts."""
from __future__ import annotations

from typing import Any

from course_lib import config

from .experiment import load_data, train_detector, train_mae, train_supervised, variants

# claim id -> (the row that is ours, the baseline row). "Matches FPN" has no probe: its baseline is
# the FPN variant with the higher mean in the run, which a probe would have to re-decide per budget.
ARMS = {"vitdet_simple_pyramid_beats_none": ("default", "no_pyramid"),
        "vitdet_propagation_helps": ("default", "prop_none"),
        "vitdet_mae_beats_supervised": ("default", "pre_supervised")}
PROBES = {claim: f"detection epochs of both detectors ({a} vs. {b}); pretrained backbones unchanged"
          for claim, (a, b) in ARMS.items()}


def scaling_probe(P: config.Params, claim: str, factors=(1, 2, 4), log=print) -> dict[str, Any]:
    """Train the claim's two rows on ``P.seeds`` paired seeds at ``factors`` x ``P.det_epochs``
    and return the keyword arguments of :func:`course_lib.results.scaling.save_probe` (box AP)."""
    if claim not in PROBES:
        raise ValueError(f"claim={claim!r}: a probe exists for {', '.join(PROBES)}")
    from course_lib import detection as det
    from course_lib.results.scaling import sweep

    d = load_data(P)
    every = variants(config.Params({**P, "rows": ("default", *ARMS[claim][1:])}))
    pre: dict[str, tuple] = {"none": (None, None)}
    enc, _, info = train_mae(P, d)
    pre["mae"] = (enc, info)
    if any(v.pretrain == "supervised" for v in every.values()):
        vit, info = train_supervised(P, d)
        pre["supervised"] = (vit, info)
    iou = ("bbox",)

    def arm(name):
        v = every[name]

        def run(Pf, seed):
            model, _, info = train_detector(Pf, d, v, *pre[v.pretrain], seed=seed)
            ap = det.evaluate(model, d.val, device=Pf.torch_device, iou_types=iou).summary["bbox"]["AP"]
            return float(ap), info.train_seconds
        return run

    ours, base = ARMS[claim]
    rows = sweep(P, factors, "det_epochs", {"ours": (ours, arm(ours)), "baseline": (base, arm(base))}, log)
    return {"rows": rows, "budget": "detection epochs", "unit": "box AP", "higher_is_better": True,
            "arms": {"ours": ours, "baseline": base}}
