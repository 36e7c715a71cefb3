"""Frozen backbones, the figures of notebook 08. The notebook draws its plots inline (with
``matplotlib``, ``course_lib.detection.draw_sample`` and ``course_lib.viz``); this room holds the
long per-class frame behind the "AP by class frequency" plot (Table 5's view) and the widget.
"""
from __future__ import annotations

from typing import Any

from course_lib.papers.frozen_backbones.experiment import _mean

__all__ = ["per_class_frame"]


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
