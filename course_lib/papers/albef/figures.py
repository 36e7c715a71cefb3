"""ALBEF's plots and the retrieval widget."""
from __future__ import annotations

import math
import textwrap
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data import PairData
from .experiment import table1_frame
from .method import ALBEF, VARIANTS
from .runs import _embed_all, gradcam, pseudo_targets

# ==============================================================================================
# Plots and the widget
# ==============================================================================================
def wrap_text(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` characters at spaces (never inside a word;
    a single word longer than ``width`` keeps its own line). Existing line breaks are kept."""
    return "\n".join(textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False) or line
                     for line in str(text).splitlines() or [""])


def _fit(text: str, width: int) -> str:
    """``text`` unchanged when it has at most ``width`` characters, else cut at a word boundary
    with " ..." (one line of a list that must not run off the figure)."""
    return text if len(text) <= width else textwrap.shorten(text, width, placeholder=" ...")


def _chars_per_line(width_in: float, fontsize: float) -> int:
    """About how many characters of a ``fontsize`` pt proportional font fit in ``width_in`` inches."""
    return max(12, int(width_in * 72 / (0.55 * fontsize)))


def show_pairs(data: PairData, indices: Sequence[int], ncols: int = 4, size: float = 3.5, fontsize: float = 7):
    """Training pairs: each image with its given caption, and for a corrupted pair (red) the true
    caption too; captions wrapped at word boundaries to the panel's width."""
    import matplotlib.pyplot as plt

    indices = [int(i) for i in indices]
    ncols = max(1, min(ncols, len(indices)))
    nrows = max(1, math.ceil(len(indices) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, 1.15 * size * nrows), squeeze=False)
    width = _chars_per_line(size * 0.95, fontsize)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, indices):
        ax.imshow(data.load_images([int(data.image_of[i])])[0].permute(1, 2, 0).numpy())
        bad = data.noise is not None and data.noise[i] > 0
        title = wrap_text(f"given: {data.captions[i]}", width)
        if bad and data.clean is not None:
            title += "\n" + wrap_text(f"true: {data.clean[i]}", width)
        ax.set_title(title, fontsize=fontsize, color="red" if bad else "black")
    fig.tight_layout()
    return fig


def plot_histories(res: Mapping[str, Any], setting: str = "noisy"):
    """Pre-training losses per variant (ITC, ITM, MLM) of one setting."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    for (s, v), r in res["runs"].items():
        if s != setting:
            continue
        h = r["pre_info"].history
        if h is None or not h.epochs:
            continue
        ep = [e["epoch"] for e in h.epochs]
        for ax, key in zip(axes, ("train_itc", "train_itm", "train_mlm", "train_itm_acc")):
            ax.plot(ep, [e.get(key, float("nan")) for e in h.epochs], "o-", label=VARIANTS[v]["label"])
    for ax, t in zip(axes, ("ITC loss", "ITM loss", "MLM loss", "ITM accuracy (1 pos : 2 neg)")):
        ax.set(title=t, xlabel="epoch")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"pre-training, {setting} pairs")
    fig.tight_layout()
    return fig


def plot_table1(res: Mapping[str, Any]):
    """Bars of TR and IR per variant, clean vs noisy."""
    import matplotlib.pyplot as plt

    df = table1_frame(res)
    se = {}  # the seeds' standard error of TR and IR per (setting, variant label)
    for (setting, v), r in res["runs"].items():
        ms = r.get("seed_metrics") or [r["metrics"]]
        for col, key in (("TR", "txt_r_mean"), ("IR", "img_r_mean")):
            x = np.array([m[key] for m in ms])
            se[(col, setting, VARIANTS[v]["label"])] = x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else 0.0
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.6), sharey=True)
    for ax, col in zip(axes, ("TR", "IR")):
        t = df[col].unstack(0)
        t = t.reindex([VARIANTS[v]["label"] for v in VARIANTS if VARIANTS[v]["label"] in t.index])
        err = t.copy()
        for setting in err.columns:
            err[setting] = [se.get((col, setting, label), np.nan) for label in err.index]
        t.plot.barh(ax=ax, xerr=err, capsize=3)
        n = max(len(r.get("seed_metrics") or [1]) for r in res["runs"].values())
        ax.set(xlabel=f"{col}: mean of R@1/5/10 (%)" + (f", mean ± SE over {n} seeds" if n > 1 else ""),
               ylabel="")
        lo = np.nanmin(t.values)
        ax.set_xlim(max(0, lo - 10), min(100, np.nanmax(t.values) + 5))
    fig.tight_layout()
    return fig


def show_pseudo_targets(model: ALBEF, data: PairData, indices: Sequence[int], pool: int = 255, k: int = 5,
                        seed: int = 0):
    """Figure 11 analog: for training images, the given (possibly corrupted) caption, the true
    caption and the momentum model's top-``k`` texts from a pool (the given caption, the true one
    and random other captions) with their pseudo-target probabilities."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(indices), 2, figsize=(12, 1.9 * len(indices)),
                             gridspec_kw={"width_ratios": [1, 6]})
    axes = np.atleast_2d(axes)
    for row, i in zip(axes, indices):
        others = [data.clean[int(j)] for j in rng.permutation(len(data))[:pool]
                  if data.clean[int(j)] not in (data.clean[i], data.captions[i])][: pool - 2]
        caps = [data.captions[i], data.clean[i]] + others
        p, top = pseudo_targets(model, data.load_images([int(data.image_of[i])]), caps, k)
        row[0].imshow(data.load_images([int(data.image_of[i])])[0].permute(1, 2, 0).numpy())
        row[0].set_axis_off()
        status = {0: "clean pair", 1: "corrupted: swapped", 2: "corrupted: wrong words"}[int(data.noise[i])]
        lines = [(f"given ({status}): {data.captions[i]}", "red" if data.noise[i] else "black")]
        if data.noise[i]:
            lines.append((f"true: {data.clean[i]}", "green"))
        for r, (pp, j) in enumerate(zip(p[0], top[0])):
            tag = " <- given" if j == 0 else (" <- true" if j == 1 else "")
            lines.append((f"{r + 1}. q={pp:.2f}  {caps[int(j)]}{tag}", "tab:blue"))
        row[1].set_axis_off()
        for n, (text, color) in enumerate(lines):
            text = _fit(text, int(fig.get_figwidth() * 6 / 7 * 72 / (0.6 * 8)))  # monospace 8 pt
            row[1].text(0, 1 - n / max(len(lines), 7), text, color=color, fontsize=8, va="top",
                        transform=row[1].transAxes, family="monospace")
    fig.suptitle("momentum model's top texts (pseudo-targets of eq. 6) for training images")
    fig.tight_layout()
    return fig


def show_gradcam(model: ALBEF, image_u8: torch.Tensor, caption: str, layer: int = 0, words: int = 8):
    """One row: the image, then the Grad-CAM of each word (cross-attention x gradient)."""
    import matplotlib.pyplot as plt

    from course_lib.viz import overlay

    tokens, cam, _, prob = gradcam(model, image_u8, caption, layer)
    keep = [i for i, t in enumerate(tokens) if t not in ("[CLS]", "[SEP]", ",")][:words]
    fig, axes = plt.subplots(1, 1 + len(keep), figsize=(1.7 * (1 + len(keep)), 2.1))
    img = image_u8.float() / 255
    overlay(axes[0], img, title=f"ITM p={prob:.2f}")
    for ax, i in zip(axes[1:], keep):
        overlay(ax, img, cam[i], 0.6, title=tokens[i])
    fig.suptitle(wrap_text(caption, _chars_per_line(fig.get_figwidth() * 0.95, 9)), fontsize=9)
    fig.tight_layout()
    return fig


def retrieval_figure(model: ALBEF, data: PairData, direction: str, index: int, text: str = "", k: int = 5,
                     k_test: int = 16, cache: dict | None = None):
    """The widget's picture. ``"caption -> images"``: the caption ``index`` of the test set (or a
    typed ``text``) and its top-``k`` images; ``"image -> captions"``: the image ``index`` and its
    top-``k`` captions. Ranking: ITC shortlist of ``k_test``, ITM rerank."""
    import matplotlib.pyplot as plt

    device = next(model.parameters()).device
    cache = cache if cache is not None else {}
    if "emb" not in cache:
        cache["emb"] = _embed_all(model, data, device)
    img_emb, img_feat, txt_h, txt_feat, mask = cache["emb"]
    with torch.no_grad():
        if direction.startswith("caption"):
            query = text.strip() or data.captions[index % len(data)]
            ids, m = model.tok.encode([query])
            h, f = model.encode_text(ids.to(device), m.to(device))
            sims = (f @ img_feat.T)[0]
            top = sims.topk(min(k_test, len(sims))).indices
            sc = model.itm_logits(h.repeat(len(top), 1, 1), m.to(device).repeat(len(top), 1), img_emb[top])
            order = top[F.softmax(sc.float(), 1)[:, 1].argsort(descending=True)][:k]
            probs = F.softmax(sc.float(), 1)[:, 1].sort(descending=True).values[:k]
            fig, axes = plt.subplots(1, k, figsize=(2.0 * k, 2.5))
            truth = [] if text.strip() else [int(data.image_of[index % len(data)])]
            for ax, j, p in zip(np.atleast_1d(axes), order.tolist(), probs.tolist()):
                ax.imshow(data.load_images([j])[0].permute(1, 2, 0).numpy())
                ax.set_title(f"p={p:.2f}" + (" ✓" if j in truth else ""), fontsize=9,
                             color="green" if j in truth else "black")
                ax.set_axis_off()
            fig.suptitle(wrap_text(f"query: {query}", _chars_per_line(fig.get_figwidth() * 0.95, 9)), fontsize=9)
        else:
            i = index % data.num_images
            sims = (img_feat[i:i + 1] @ txt_feat.T)[0]
            top = sims.topk(min(k_test, len(sims))).indices
            sc = model.itm_logits(txt_h[top], mask[top], img_emb[i:i + 1].repeat(len(top), 1, 1))
            p = F.softmax(sc.float(), 1)[:, 1]
            srt = p.argsort(descending=True)[:k]
            fig, axes = plt.subplots(1, 2, figsize=(11, 2.4), gridspec_kw={"width_ratios": [1, 5]})
            axes[0].imshow(data.load_images([i])[0].permute(1, 2, 0).numpy())
            axes[0].set_axis_off()
            axes[1].set_axis_off()
            truth = set(data.img2txt()[i])
            for r, s in enumerate(srt.tolist()):
                j = int(top[s])
                line = _fit(f"{r + 1}. p={float(p[s]):.2f}  {data.captions[j]}", _chars_per_line(8.8, 9))
                axes[1].text(0, 1 - r / k, line + ("  ✓" if j in truth else ""),
                             transform=axes[1].transAxes, va="top", fontsize=9,
                             color="green" if j in truth else "black")
            axes[0].set_title("query image", fontsize=9)
        fig.tight_layout()
    return fig
