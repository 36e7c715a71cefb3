"""ViTDet's figures: where one query token attends in each block, window or global."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from course_lib.papers.vitdet.method import ViTDetBackbone


def query_attention(backbone: ViTDetBackbone, image: torch.Tensor, query: tuple[int, int],
                    head: int | None = None) -> torch.Tensor:
    """Attention of one query token (row, col of the patch grid) over the image, for every block:
    (depth, H, W), mean over heads unless ``head`` is given. Window blocks are zero outside the
    query's window; global blocks cover the whole grid."""
    was = backbone.training
    backbone.eval()
    maps = backbone.attention(image[None] if image.ndim == 3 else image[:1])
    backbone.train(was)
    H, W = backbone.grid
    q = query[0] * W + query[1]
    rows = [(m[0].mean(0) if head is None else m[0, head])[q].view(H, W) for m in maps]
    return torch.stack(rows)


def plot_query_attention(backbone: ViTDetBackbone, image: torch.Tensor, query: tuple[int, int],
                         blocks: Sequence[int] | None = None, denorm: Callable | None = None, axes=None):
    """The image with the query patch marked, then the query's attention row in each block
    (title says window or global)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    maps = query_attention(backbone, image, query)
    blocks = list(range(len(maps))) if blocks is None else list(blocks)
    if axes is None:
        _, axes = plt.subplots(1, len(blocks) + 1, figsize=(2.4 * (len(blocks) + 1), 2.6))
    p = backbone.patch_size
    img = (denorm(image) if denorm is not None else image).permute(1, 2, 0).clamp(0, 1)
    axes[0].imshow(img)
    axes[0].add_patch(Rectangle((query[1] * p - 0.5, query[0] * p - 0.5), p, p, fill=False, color="cyan", lw=2))
    axes[0].set_title(f"query patch {tuple(query)}", fontsize=9)
    win = backbone.window
    for ax, b in zip(axes[1:], blocks):
        ax.imshow(maps[b], cmap="inferno", vmin=0)
        kind = "global" if backbone.blocks[b].window == 0 else f"window {win}x{win}"
        ax.set_title(f"block {b}: {kind}", fontsize=9)
        ax.plot(query[1], query[0], "c+", ms=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return axes[0].figure
