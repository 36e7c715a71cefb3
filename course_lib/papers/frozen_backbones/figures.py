"""Frozen backbones, the figures of notebook 08. The notebook draws its plots inline (with
``matplotlib``, ``course_lib.detection.draw_sample`` and ``course_lib.viz``); this room holds the
long per-class frame behind the "AP by class frequency" plot (Table 5's view) and the widget,
and the "What to take away" sentences (``TAKEAWAYS``, rendered from the record).
"""
from __future__ import annotations

from typing import Any

from course_lib.papers.frozen_backbones.experiment import MATCH_TOLERANCE, _mean
from course_lib.results.takeaways import Point

__all__ = ["per_class_frame", "TAKEAWAYS"]


def per_class_frame(res: dict[str, Any], iou: str = "bbox"):
    """Long DataFrame: one row per (strategy, capacity, class) with AP, the class's training
    instances and its tier; for the plot of AP by class frequency and the widget."""
    import pandas as pd

    data = res["data"]
    counts = data.train.instance_counts()
    rows = []
    for (s, c), rs in res["runs"].items():
        for k, name in enumerate(data.class_names):
            rows.append({"strategy": s, "capacity": c, "class": name, "instances": int(counts[k]),
                         "tier": data.tiers[k], "AP": _mean(rs, lambda r: r.metrics.per_class[iou][name])})
    return pd.DataFrame(rows)


# The "What to take away" cell, written from the record (course_lib.results.takeaways): what each
# verdict means for the paper's story; the numbers are this run's ({diff}: the paired difference in
# the paper's direction, in box AP points unless said otherwise; {ci} its 95% interval).
_NOT_A_VERDICT = "95% CI {ci}, n = {n} paired seed(s): not a verdict (fewer than 3 seeds, or within their noise)"
TAKEAWAYS = [
    Point("frozen_high_beats_finetune",
          reproduced="The paper's main result holds at our scale: with high-capacity components after it, the "
                     "frozen backbone matches or beats fine-tuning (frozen − fine-tuned {diff}, 95% CI {ci} "
                     f"above the tolerance of −{MATCH_TOLERANCE:g} AP; n = {{n}} paired seeds).",
          not_reproduced="With high capacity after the backbone, fine-tuning still beats the frozen backbone by more "
                         "than the tolerance (frozen − fine-tuned {diff}, 95% CI {ci}): the detection data "
                         "still teach the backbone more than the upstream task did.",
          inconclusive="Frozen − fine-tuned at high capacity: {diff}, 95% CI {ci}, n = {n} paired seed(s): "
                       f"\"matches or beats\" needs the interval above −{MATCH_TOLERANCE:g} AP and 3 seeds."),
    Point("frozen_capacity_helps",
          reproduced="With the backbone frozen, capacity after it pays, as in Tables 1 and 3: high beats low "
                     "capacity by {diff} (95% CI {ci}, n = {n} paired seeds).",
          not_reproduced="With the backbone frozen, high capacity after it does not beat low capacity here ({diff}, "
                         "95% CI {ci}).",
          inconclusive="Frozen backbone, high vs. low capacity after it: {diff}, " + _NOT_A_VERDICT + "."),
    Point("frozen_low",
          reproduced="With a thin FPN, freezing hurts, as in Table 1: it costs {diff} against "
                     "fine-tuning (paper: 42.1 vs. 48.6).",
          not_reproduced="With a thin FPN, freezing did not hurt here ({diff} in the paper's direction).",
          inconclusive="With a thin FPN, freezing costs {diff} against fine-tuning (paper: 6.5 mAP), "
                       + _NOT_A_VERDICT + "."),
    Point("capacity_gain",
          reproduced="More capacity after the backbone shrinks the penalty of freezing, Table 3's trend: the "
                     "frozen − fine-tuned gap moves by {diff} from low to high capacity (at high capacity {ours}; "
                     "paper {paper}).",
          not_reproduced="More capacity after the backbone does not shrink the penalty of freezing here (the "
                         "frozen − fine-tuned gap moves by {diff}; at high capacity {ours}).",
          inconclusive="From low to high capacity the frozen − fine-tuned gap moves by {diff} (at high capacity "
                       "{ours}; paper {paper}), " + _NOT_A_VERDICT + "."),
    Point("finetune_high",
          reproduced="Classification pre-training helps: fine-tuned beats training from scratch ({diff}).",
          not_reproduced="Classification pre-training did not beat training from scratch here ({diff}).",
          inconclusive="Fine-tuned vs. from scratch (high capacity): {diff}, " + _NOT_A_VERDICT + "."),
    Point("frozen_helps_rare_most",
          reproduced="Table 5's ordering holds: freezing serves the rare classes best (the frozen − fine-tuned gain "
                     "on rare classes is {diff} above that on frequent classes, 95% CI {ci}, n = {n}; paper "
                     "+2.9 rare vs. +0.1 frequent).",
          not_reproduced="Freezing does not favour the rare classes here (rare minus frequent gain {diff}, 95% CI "
                         "{ci}).",
          inconclusive="Freezing and class frequency (Table 5): the frozen − fine-tuned gain on rare classes is "
                       "{ours}, {diff} relative to the frequent classes (paper: +2.9 rare vs. +0.1 frequent), "
                       + _NOT_A_VERDICT + "."),
    Point("frozen_adapters_help",
          reproduced="Residual adapters improve the frozen backbone ({diff}, 95% CI {ci}, n = {n}), as in "
                     "Table 7.",
          not_reproduced="Residual adapters do not improve the frozen backbone here ({diff}, 95% CI {ci}).",
          inconclusive="Residual adapters on the frozen backbone: {diff}, " + _NOT_A_VERDICT + "."),
    Point("frozen_high_mask",
          reproduced="On mask AP too the frozen backbone matches or beats fine-tuning at high capacity ({diff}, "
                     "within the stated tolerance).",
          not_reproduced="On mask AP fine-tuning stays ahead at high capacity by more than the tolerance ({diff}).",
          inconclusive="The same comparison on mask AP: {diff} in the paper's direction, " + _NOT_A_VERDICT + "."),
    Point("trained_low",
          reproduced="Exact count: a frozen backbone leaves {ours} of the low-capacity detector to train (the "
                     "paper's FPN: {paper}).",
          not_reproduced="A frozen backbone leaves {ours} of the low-capacity detector to train, further from "
                         "the paper's FPN ({paper}) than the tolerance.",
          inconclusive="A frozen backbone leaves {ours} of the low-capacity detector to train (paper's FPN: "
                       "{paper})."),
    Point("trained_high",
          reproduced="Exact count: with the high-capacity components a frozen backbone leaves {ours} of the "
                     "detector to train, beyond NAS-FPN's 39.9% (paper's NAS-FPN + Cascade: {paper}).",
          not_reproduced="With the high-capacity components a frozen backbone leaves only {ours} of the detector "
                         "to train, less than NAS-FPN's 39.9%.",
          inconclusive="With the high-capacity components a frozen backbone leaves {ours} of the detector to "
                       "train (paper's NAS-FPN + Cascade: {paper})."),
    Point("memory_frozen",
          reproduced="Freezing needs less training memory: frozen {ours} per batch, {diff} less than "
                     "fine-tuned (counted: activations, gradients, AdamW moments).",
          not_reproduced="Counted training memory of one batch: frozen {ours}, not 10% below fine-tuned.",
          inconclusive="Counted training memory of one batch (activations, gradients, AdamW moments): frozen "
                       "{ours}, {diff} less than fine-tuned. A count, not a measurement; the rule still asks "
                       "for 3 seeds before it says reproduced."),
    Point("speed_frozen",
          reproduced="Freezing trains faster: {ours} vs. the fine-tuned detector ({diff} more).",
          not_reproduced="Freezing did not train faster here ({ours}; {diff} vs. fine-tuned).",
          inconclusive="Training speed (wall clock on a shared machine): frozen {ours}, {diff} vs. fine-tuned, "
                       + _NOT_A_VERDICT + "."),
]
