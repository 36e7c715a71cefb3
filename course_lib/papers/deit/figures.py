"""DeiT (notebook 03): figures. Table 3 as bars, ours beside the paper's DeiT-Ti."""
from __future__ import annotations


def plot_table3(table3, teacher_top1: float | None = None):
    """Table 3 as bars: ours (top-1 with the std over seeds as error bars, the convnet teacher as a
    dashed line) beside the paper's DeiT-Ti. ``table3``: a DataFrame indexed by method with the
    columns "ours top-1", "ours std" and "paper DeiT-Ti (ImageNet)". The legend sits above the
    axes, so it covers no bar."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(1, 2, figsize=(12, 3.8))
    ours = table3["ours top-1"].astype(float)
    std = table3["ours std"].astype(float).fillna(0) if "ours std" in table3 else ours * 0
    ours.plot.barh(ax=ax[0], xerr=std, color="tab:blue", label="_nolegend_")
    vals = np.r_[(ours - std).to_numpy(), (ours + std).to_numpy()]
    hi = np.nanmax(vals) if np.isfinite(vals).any() else 100.0
    lo = np.nanmin(vals) if np.isfinite(vals).any() else 0.0
    if teacher_top1 is not None:
        ax[0].axvline(teacher_top1, color="k", ls="--", label=f"convnet teacher ({teacher_top1:.1f})")
        hi, lo = max(hi, teacher_top1), min(lo, teacher_top1)
        ax[0].legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8, borderaxespad=0.2)
    ax[0].set_xlim(max(0.0, np.floor(lo - 5)), min(100.0, hi + 2))
    ax[0].set_xlabel("top-1 (%) on the test split")
    ax[0].set_ylabel("")
    ax[0].set_title("Ours", loc="left")
    table3["paper DeiT-Ti (ImageNet)"].plot.barh(ax=ax[1], color="tab:gray")
    ax[1].set_xlim(70, 75.5)
    ax[1].set_xlabel("top-1 (%) on ImageNet")
    ax[1].set_ylabel("")
    ax[1].set_yticklabels([])
    ax[1].set_title("Paper (Table 3, DeiT-Ti)", loc="left")
    fig.tight_layout()
    return fig
