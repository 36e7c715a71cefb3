"""Scaling probes of the frozen-backbone headline claims that compare two detectors
(``benchmarks/scaling_probe.py``): both cells on the notebook's paired seeds at 1x, 2x, 4x the
detection epochs, with the same pre-trained trunk. The notebook draws the saved probes beside
the verdicts."""
from __future__ import annotations

from typing import Any

from course_lib import config

from .experiment import detection_data, pretrain_body, train_cell

# claim id -> ((strategy, capacity) that is ours, the baseline cell)
ARMS = {"frozen_high_beats_finetune": (("frozen", "high"), ("finetune", "high")),
        "frozen_adapters_help": (("adapters", "high"), ("frozen", "high")),
        "frozen_capacity_helps": (("frozen", "high"), ("frozen", "low"))}
PROBES = {claim: f"detection epochs of both detectors ({a[0]} / {a[1]} vs. {b[0]} / {b[1]}); the same "
          "pre-trained trunk" for claim, (a, b) in ARMS.items()}


def scaling_probe(P: config.Params, claim: str, factors=(1, 2, 4), log=print) -> dict[str, Any]:
    """Train the claim's two cells on ``P.seeds`` paired seeds at ``factors`` x ``P.epochs`` and
    return the keyword arguments of :func:`course_lib.results.scaling.save_probe` (box AP)."""
    if claim not in PROBES:
        raise ValueError(f"claim={claim!r}: a probe exists for {', '.join(PROBES)}")
    from course_lib import detection as det
    from course_lib.results.scaling import sweep

    data = detection_data(P)
    body, up_info = pretrain_body(P, log=lambda *_: None)
    (s0, c0), (s1, c1) = ARMS[claim]

    def arm(s, c):
        def run(Pf, seed):
            model, _, info = train_cell(Pf, data, body, up_info, s, c, seed)
            return float(det.evaluate(model, data.val, device=Pf.torch_device).summary["bbox"]["AP"]), info.train_seconds
        return run

    label = {"ours": f"{s0} / {c0}", "baseline": f"{s1} / {c1}"}
    rows = sweep(P, factors, "epochs", {"ours": (label["ours"], arm(s0, c0)),
                                        "baseline": (label["baseline"], arm(s1, c1))}, log)
    return {"rows": rows, "budget": "detection epochs", "unit": "box AP", "higher_is_better": True,
            "arms": label}
