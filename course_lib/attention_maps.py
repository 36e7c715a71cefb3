"""Attention maps of a ViT as tensors: per layer and head, rollout, mass thresholds, resizing.

The functions receive attention tensors, not models. Conventions:

* ``attns`` is a list with one tensor per layer, ``(B, heads, N, N)`` (or ``(heads, N, N)``
  for one image), post-softmax: row ``i`` is how token ``i`` distributes its attention.
* the first ``num_prefix`` tokens are prefix tokens (class token, maybe a distillation token);
  the remaining ``N - num_prefix`` tokens are patches on a ``grid = (gh, gw)`` in row-major
  order. ``grid=None`` assumes a square grid.
* ``index`` picks the image of a batch (default 0).

:mod:`course_lib.viz` draws them (and re-exports these names).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Grid", "token_attention", "fuse_heads", "rollout_matrix", "attention_rollout",
           "mass_threshold", "upsample"]

Grid = tuple[int, int]


# --------------------------------------------------------------------------------------------
# attention maps
# --------------------------------------------------------------------------------------------
def _layer(a: torch.Tensor, index: int = 0) -> torch.Tensor:
    """One layer's attention of one image as a float CPU tensor ``(heads, N, N)``."""
    a = torch.as_tensor(a).detach()
    if a.ndim == 4:
        a = a[index]
    if a.ndim != 3 or a.shape[-1] != a.shape[-2]:
        raise ValueError(
            f"attention must be (B, heads, N, N) or (heads, N, N), got {tuple(a.shape)}"
        )
    return a.float().cpu()


def _grid(num_tokens: int, num_prefix: int, grid: Grid | None) -> Grid:
    n = num_tokens - num_prefix
    if grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"{n} patch tokens are not a square grid; pass grid=(gh, gw)")
        return side, side
    gh, gw = int(grid[0]), int(grid[1])
    if gh * gw != n:
        raise ValueError(
            f"grid {gh}x{gw} = {gh * gw} patches, but attention has {num_tokens} tokens with "
            f"{num_prefix} prefix token(s) = {n} patches"
        )
    return gh, gw


def token_attention(
    attns: Sequence[torch.Tensor],
    layer: int,
    token: int = 0,
    num_prefix: int = 1,
    grid: Grid | None = None,
    head: int | str | None = None,
    index: int = 0,
) -> torch.Tensor:
    """How prefix token ``token`` attends to the patches in one layer.

    Returns ``(heads, gh, gw)`` for ``head=None`` (every head), ``(1, gh, gw)`` for one head
    (an int) or for ``head='mean'`` (average over heads). ``layer`` may be negative.
    """
    a = _layer(attns[layer], index)
    gh, gw = _grid(a.shape[-1], num_prefix, grid)
    if not 0 <= token < num_prefix:
        raise ValueError(f"token {token} is not a prefix token (num_prefix={num_prefix})")
    m = a[:, token, num_prefix:]  # (heads, patches)
    if head == "mean":
        m = m.mean(0, keepdim=True)
    elif head is not None:
        if isinstance(head, str):
            raise ValueError(f"head must be None, an int or 'mean', got {head!r}")
        m = m[int(head)].unsqueeze(0)
    return m.reshape(-1, gh, gw)


def fuse_heads(a: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """``(heads, N, N)`` -> ``(N, N)`` by ``'mean'``, ``'max'`` or ``'min'`` over heads."""
    if how == "mean":
        return a.mean(0)
    if how == "max":
        return a.amax(0)
    if how == "min":
        return a.amin(0)
    raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {how!r}")


def rollout_matrix(
    attns: Sequence[torch.Tensor],
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    num_prefix: int = 1,
    index: int = 0,
) -> torch.Tensor:
    """The ``(N, N)`` attention rollout of Abnar & Zuidema (2020), "Quantifying Attention Flow".

    Per layer: fuse the heads, optionally zero the weakest ``discard_ratio`` fraction of the
    weights (attention *to* prefix tokens is never discarded), add the identity for the
    residual connection and renormalise the rows; then multiply the layers,
    ``R = Â_L ··· Â_1``. Row ``i`` of ``R`` says how much of token ``i``'s final representation
    flows from each input token.
    """
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    if len(attns) == 0:
        raise ValueError("rollout of zero layers")
    result: torch.Tensor | None = None
    for a in attns:
        m = fuse_heads(_layer(a, index), head_fusion)
        n = m.shape[-1]
        if discard_ratio > 0:
            cand = m.clone()
            cand[:, :num_prefix] = float("inf")  # keep attention to the prefix tokens
            k = int(discard_ratio * n * (n - num_prefix))
            if k > 0:
                drop = cand.flatten().topk(k, largest=False).indices
                m = m.flatten().clone()
                m[drop] = 0.0
                m = m.reshape(n, n)
        m = m + torch.eye(n)
        m = m / m.sum(-1, keepdim=True)
        result = m if result is None else m @ result
    assert result is not None
    return result


def attention_rollout(
    attns: Sequence[torch.Tensor],
    num_prefix: int = 1,
    grid: Grid | None = None,
    discard_ratio: float = 0.0,
    head_fusion: str = "mean",
    token: int = 0,
    index: int = 0,
) -> torch.Tensor:
    """Rollout of prefix token ``token`` onto the patches: a ``(gh, gw)`` map (see
    :func:`rollout_matrix`). Values are the raw rollout weights (they do not include the
    share that stays on prefix tokens, so they sum to at most 1)."""
    r = rollout_matrix(attns, head_fusion, discard_ratio, num_prefix, index)
    gh, gw = _grid(r.shape[-1], num_prefix, grid)
    if not 0 <= token < num_prefix:
        raise ValueError(f"token {token} is not a prefix token (num_prefix={num_prefix})")
    return r[token, num_prefix:].reshape(gh, gw)


def mass_threshold(attn_map, fraction: float = 0.6):
    """The smallest set of patches holding ``fraction`` of the attention mass (a bool mask).

    As in DINO's ``visualize_attention``: sort the weights, accumulate, keep the top ones until
    their share of the total reaches ``fraction``. Applied over the last two dimensions (a map
    ``(gh, gw)`` or a stack ``(..., gh, gw)``); a 1-D input is one set. Returns a torch bool
    tensor for a torch input, else a numpy bool array. A map without mass keeps nothing.
    """
    is_numpy = not isinstance(attn_map, torch.Tensor)
    t = torch.as_tensor(np.asarray(attn_map) if is_numpy else attn_map).detach().float().cpu()
    shape = t.shape
    flat = t.reshape(-1, shape[-1]) if t.ndim == 1 else t.reshape(-1, shape[-2] * shape[-1])
    flat = flat.reshape(-1, flat.shape[-1]).clamp_min(0)
    vals, idx = flat.sort(dim=-1, descending=True)
    total = vals.sum(-1, keepdim=True)
    share = vals / total.clamp_min(1e-12)
    before = share.cumsum(-1) - share  # mass of the larger patches before this one
    keep_sorted = (before < fraction - 1e-6) & (total > 0) & (vals > 0)
    mask = torch.zeros_like(keep_sorted).scatter(-1, idx, keep_sorted).reshape(shape)
    return mask.numpy() if is_numpy else mask


def upsample(attn_map, size: int | tuple[int, int], mode: str = "bilinear"):
    """Resize a map ``(gh, gw)`` / ``(C, gh, gw)`` / ``(B, C, gh, gw)`` to ``size = (H, W)``.

    Bool masks are resized with ``nearest``. Returns the input's type (torch or numpy).
    """
    is_numpy = not isinstance(attn_map, torch.Tensor)
    t = torch.as_tensor(np.asarray(attn_map) if is_numpy else attn_map).detach()
    is_bool = t.dtype == torch.bool
    size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    lead = t.shape[:-2]
    x = t.float().reshape(1, -1, *t.shape[-2:])
    mode = "nearest" if is_bool else mode
    kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    y = F.interpolate(x, size=size, mode=mode, **kw)
    y = y.reshape(*lead, *size)
    y = y > 0.5 if is_bool else y
    return y.cpu().numpy() if is_numpy else y
