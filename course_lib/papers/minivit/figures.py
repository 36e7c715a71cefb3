"""Class-token attention of teacher and students for notebook 09: the maps, how much they agree
and a figure of them side by side.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from course_lib.models.vit import VisionTransformer

from .distillation import layer_pairs

# ----------------------------------------------------------------------------------------------
# Attention for visualisation


@torch.no_grad()
def cls_attention(model: VisionTransformer, images: torch.Tensor, head: str | None = "mean") -> torch.Tensor:
    """Class-token-to-patch attention of every layer, in eval mode.

    Returns ``(layers, B, gh, gw)`` (``head="mean"``: averaged over heads) or
    ``(layers, B, heads, gh, gw)`` (``head=None``). For a :class:`MiniViT` the maps are taken
    after the post-softmax head transform (what multiplies V), so with transforms a row need not
    sum to 1 and may hold negative values.
    """
    if head not in ("mean", None):
        raise ValueError(f"head={head!r}; allowed: 'mean' or None")
    if model.cls_token is None:
        raise ValueError("the model has no class token")
    was_training = model.training
    model.eval()
    try:
        attns = model.get_attention(images.to(next(model.parameters()).device))
    finally:
        model.train(was_training)
    a = torch.stack([x.float().cpu() for x in attns])  # (L, B, H, N, N)
    L, B, H = a.shape[:3]
    gh, gw = model.grid_size
    maps = a[:, :, :, 0, model.num_prefix_tokens:].reshape(L, B, H, gh, gw)
    return maps.mean(2) if head == "mean" else maps


def compare_attention(models: Mapping[str, VisionTransformer], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`cls_attention` (head mean) of several models on the same images, e.g.
    ``{"teacher": ..., "shared": ..., "shared + transform": ...}``."""
    return {name: cls_attention(m, images) for name, m in models.items()}


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of flattened maps ``(B, gh, gw)`` -> ``(B,)``."""
    return F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1).float()


def attention_agreement(maps: Mapping[str, torch.Tensor], reference: str = "teacher"):
    """How much each model's class-token attention looks like the reference model's, per layer.

    ``maps``: the output of :func:`compare_attention`. For student layer ``l`` the reference
    layer is the one :func:`layer_pairs` (``"uniform"``) assigns; the number is the cosine
    similarity of the two maps, averaged over the images (1 = the same map up to scale).
    Returns a DataFrame: one row per model, one column per student layer.
    """
    import pandas as pd

    ref = maps[reference]
    rows = {}
    for name, m in maps.items():
        if name == reference:
            continue
        pairs = layer_pairs(m.shape[0], ref.shape[0], "uniform")
        rows[name] = {f"layer {s}": float(_cosine(m[s], ref[t]).mean()) for s, t in pairs}
    return pd.DataFrame.from_dict(rows, orient="index")


def layer_similarity(maps: Mapping[str, torch.Tensor]):
    """Mean cosine similarity of the class-token attention of consecutive layers, per model
    (averaged over images and layer pairs): high when the layers attend alike, as weight-shared
    layers without transformations tend to. Returns a pandas Series."""
    import pandas as pd

    return pd.Series({name: float(torch.stack([_cosine(m[i], m[i + 1]) for i in range(m.shape[0] - 1)]).mean())
                      for name, m in maps.items() if m.shape[0] > 1}, name="consecutive-layer similarity")


def plot_attention_comparison(maps: Mapping[str, torch.Tensor], image: torch.Tensor | None = None,
                              index: int = 0, size: float = 1.6):
    """One row per model, one column per layer: the class-token attention of image ``index``.

    ``maps``: the output of :func:`compare_attention`; ``image``: an optional (3, H, W) image shown
    in the first column. Each map is scaled to its own range. Returns the figure.
    """
    import matplotlib.pyplot as plt

    from course_lib.viz import to_image

    cols = max(m.shape[0] for m in maps.values()) + (image is not None)
    fig, axes = plt.subplots(len(maps), cols, figsize=(size * cols, size * len(maps)), squeeze=False)
    for r, (name, m) in enumerate(maps.items()):
        c0 = 0
        if image is not None:
            axes[r, 0].imshow(to_image(image))
            c0 = 1
        for layer in range(m.shape[0]):
            axes[r, c0 + layer].imshow(m[layer, index].numpy(), cmap="inferno")
            if r == 0:
                axes[r, c0 + layer].set_title(f"layer {layer}", fontsize=8)
        axes[r, 0].set_ylabel(name, fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[r, c0 + m.shape[0]:]:
            ax.axis("off")
    fig.tight_layout()
    return fig

