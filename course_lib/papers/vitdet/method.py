"""ViTDet's contribution: a plain ViT adapted to detection at fine-tuning time only.

* window attention with padding (:func:`window_partition`, :func:`window_unpartition`,
  :class:`WindowAttention`) and the propagation blocks spread evenly
  (:func:`evenly_spaced_blocks`): global attention, or a residual conv block
  (:class:`ConvPropagation`), Sec. 3 "Backbone adaptation", Table 2;
* the pretrained absolute position embedding resized to the detection grid
  (:func:`resize_pos_embed`) and the optional decomposed relative position bias of MViTv2
  (:func:`add_decomposed_rel_pos`);
* the backbone itself (:class:`ViTDetBlock`, :class:`ViTDetBackbone`: timm parameter names, so a
  pretrained ViT loads as is);
* the simple feature pyramid (Sec. 3, Fig. 2c) and the designs it is compared with in Table 1
  (:class:`SimpleFeaturePyramid`, :class:`FPNPyramid`, :class:`SingleScale`,
  :func:`build_backbone`).

The MAE pretraining of the plain backbone (Table 4) is in ``pretraining.py``.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from torch import nn

from course_lib.models.vit import Mlp, PatchEmbed, VisionTransformer, resample_pos_embed

PYRAMIDS = ("sfp", "fpn_lastmap", "fpn_4stage", "none")


# --------------------------------------------------------------------------------------------
# Windows (Sec. 3 "Backbone adaptation")
# --------------------------------------------------------------------------------------------
def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nW, window, window, C) non-overlapping windows, row-major.

    The map is zero-padded at the bottom/right to a multiple of ``window`` first (ViTDet pads
    instead of resizing); returns the padded size (Hp, Wp) for :func:`window_unpartition`.
    """
    B, H, W, C = x.shape
    ph, pw = (-H) % window, (-W) % window
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    Hp, Wp = H + ph, W + pw
    x = x.view(B, Hp // window, window, Wp // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, C), (Hp, Wp)


def window_unpartition(windows: torch.Tensor, window: int, padded: tuple[int, int],
                       size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, window, window, C) -> (B, H, W, C)."""
    Hp, Wp = padded
    H, W = size
    C = windows.shape[-1]
    B = windows.shape[0] // ((Hp // window) * (Wp // window))
    x = windows.view(B, Hp // window, Wp // window, window, window, C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
    return x[:, :H, :W].contiguous()


def evenly_spaced_blocks(depth: int, count: int) -> tuple[int, ...]:
    """Indices of ``count`` propagation blocks spread evenly: the last block of each of ``count``
    equal subsets (ViT-B, depth 12, count 4 -> 2, 5, 8, 11, as in the paper)."""
    if not 0 <= count <= depth:
        raise ValueError(f"count={count} propagation blocks for depth {depth}")
    return tuple(round((i + 1) * depth / count) - 1 for i in range(count))


# --------------------------------------------------------------------------------------------
# Position embeddings
# --------------------------------------------------------------------------------------------
def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 1
                     ) -> torch.Tensor:
    """The pretrained absolute position embedding (1, prefix + h*w, D) resized to ``grid``:
    drop the class-token entry, bicubic interpolation of the square pretraining grid to the
    detection grid (``models.vit.resample_pos_embed``, without antialiasing as ViTDet's
    ``F.interpolate``). Returns (1, H, W, D). An unchanged grid returns the same values."""
    pos = resample_pos_embed(pos_embed, grid, num_prefix_tokens=num_prefix_tokens, antialias=False)
    return pos[:, num_prefix_tokens:].reshape(1, *grid, -1)


def _rel_pos_table(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
    """Embeddings R[i - j] for query and key positions i, j < size: (size, size, head_dim).
    The table holds the 2 * size - 1 offsets; it is interpolated (linearly) when it was learnt
    for another size."""
    n = 2 * size - 1
    if rel_pos.shape[0] != n:
        rel_pos = F.interpolate(rel_pos.t().unsqueeze(0), size=n, mode="linear").squeeze(0).t()
    pos = torch.arange(size, device=rel_pos.device)
    return rel_pos[pos[:, None] - pos[None, :] + size - 1]


def add_decomposed_rel_pos(attn: torch.Tensor, q: torch.Tensor, rel_pos_h: torch.Tensor,
                           rel_pos_w: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Decomposed relative position bias (MViTv2, used by ViTDet as an option):

        logits[(i, j), (k, l)] += q_(i,j) . R^h[i - k] + q_(i,j) . R^w[j - l]

    attn: (B, N, N) logits with N = H * W, q: (B, N, head_dim). Two small tables of 2H-1 and
    2W-1 vectors instead of a (2H-1)(2W-1) one."""
    H, W = size
    B, _, d = q.shape
    Rh = _rel_pos_table(rel_pos_h, H)               # (H, H, d)
    Rw = _rel_pos_table(rel_pos_w, W)               # (W, W, d)
    r_q = q.reshape(B, H, W, d)
    bias_h = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)   # (B, H, W, H)
    bias_w = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)   # (B, H, W, W)
    attn = attn.view(B, H, W, H, W) + bias_h[..., :, None] + bias_w[..., None, :]
    return attn.view(B, H * W, H * W)


# --------------------------------------------------------------------------------------------
# The backbone
# --------------------------------------------------------------------------------------------
class WindowAttention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) map, inside windows or globally.

    ``window=0`` is global attention; otherwise the map is split into ``window x window`` windows
    (padded), attention runs inside each window, and the windows are put back. Parameter names are
    timm's (``qkv``, ``proj``), so a pretrained ViT block's attention loads as is; the relative
    position tables (``rel_pos_h``, ``rel_pos_w``) are new and start at zero.
    """

    def __init__(self, dim: int, num_heads: int, window: int = 0, qkv_bias: bool = True,
                 rel_pos: bool = False, grid: tuple[int, int] = (8, 8)) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.window = window
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos = rel_pos
        self.fused = True  # SDPA; False: explicit matmuls (what the FLOP counter can see on CPU)
        if rel_pos:
            size = (window, window) if window else grid
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * size[0] - 1, self.head_dim))  # zero init
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * size[1] - 1, self.head_dim))

    def _attend(self, x: torch.Tensor, return_attention: bool):
        """Global attention on (B', h, w, C); returns ((B', h, w, C), maps (B', heads, hw, hw) or None)."""
        B, h, w, C = x.shape
        qkv = self.qkv(x).reshape(B, h * w, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)                                    # (B, heads, N, d)
        bias = None
        if self.rel_pos:
            zeros = q.new_zeros(B * self.num_heads, h * w, h * w)
            bias = add_decomposed_rel_pos(zeros, q.reshape(B * self.num_heads, h * w, -1) * self.scale,
                                          self.rel_pos_h, self.rel_pos_w, (h, w))
            bias = bias.view(B, self.num_heads, h * w, h * w)
        if return_attention or not self.fused:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if bias is not None:
                attn = attn + bias
            attn = attn.softmax(-1)
            out = attn @ v
            attn = attn if return_attention else None
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.transpose(1, 2).reshape(B, h, w, C)
        return self.proj(out), attn

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        B, H, W, C = x.shape
        if not self.window:
            return self._attend(x, return_attention)
        win, padded = window_partition(x, self.window)
        out, attn = self._attend(win, return_attention)
        out = window_unpartition(out, self.window, padded, (H, W))
        if attn is not None:
            attn = _windows_to_global(attn, self.window, padded, (H, W), B)
        return out, attn


def _windows_to_global(attn: torch.Tensor, window: int, padded: tuple[int, int],
                       size: tuple[int, int], batch: int) -> torch.Tensor:
    """Window attention maps (B * nW, heads, w*w, w*w) as one (B, heads, H*W, H*W) matrix over the
    whole grid (zero outside a query's window; padding tokens dropped), for visualisation."""
    Hp, Wp = padded
    H, W = size
    heads = attn.shape[1]
    # token index (in the padded grid) of every position of every window
    idx = torch.arange(Hp * Wp, device=attn.device).view(1, Hp, Wp, 1)
    idx, _ = window_partition(idx.expand(1, Hp, Wp, 1), window)   # (nW, w, w, 1)
    idx = idx.reshape(-1, window * window)                          # (nW, w*w)
    nW = idx.shape[0]
    full = attn.new_zeros(batch, heads, Hp * Wp, Hp * Wp)
    a = attn.view(batch, nW, heads, window * window, window * window)
    for wi in range(nW):
        rows = idx[wi]
        full[:, :, rows[:, None], rows[None, :]] = a[:, wi]
    keep = torch.arange(Hp * Wp, device=attn.device).view(Hp, Wp)[:H, :W].reshape(-1)
    return full[:, :, keep][:, :, :, keep]


class ConvPropagation(nn.Module):
    """Residual convolutional propagation block (Table 2a "conv", the "basic" type of Table 2b):
    x + LN(conv3x3(GELU(LN(conv3x3(x))))), the last norm zero-initialised so that a pretrained
    backbone is unchanged at the start of fine-tuning. Works on (B, H, W, C) maps."""

    def __init__(self, dim: int, kind: str = "basic") -> None:
        super().__init__()
        if kind == "basic":
            self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
            self.norm1 = LayerNorm2d(dim)
            self.act = nn.GELU()
            self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        elif kind == "naive":
            self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
            self.norm1, self.act, self.conv2 = nn.Identity(), nn.Identity(), nn.Identity()
        else:
            raise ValueError(f"kind={kind!r}: 'basic' or 'naive'")
        self.norm2 = LayerNorm2d(dim)
        nn.init.zeros_(self.norm2.weight)
        nn.init.zeros_(self.norm2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.permute(0, 3, 1, 2)
        y = self.norm2(self.conv2(self.act(self.norm1(self.conv1(y)))))
        return x + y.permute(0, 2, 3, 1)


class ViTDetBlock(nn.Module):
    """A pre-norm ViT block on a (B, H, W, C) map with window or global attention (same
    parameter names as ``models.vit.Block``), optionally followed by a conv propagation block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 window: int = 0, rel_pos: bool = False, grid: tuple[int, int] = (8, 8),
                 drop_path: float = 0.0, conv_propagation: str | None = None, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = WindowAttention(dim, num_heads, window, qkv_bias, rel_pos, grid)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.propagation = ConvPropagation(dim, conv_propagation) if conv_propagation else None

    @property
    def window(self) -> int:
        return self.attn.window

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        y, attn = self.attn(self.norm1(x), return_attention)
        x = x + self.drop_path1(y)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        if self.propagation is not None:
            x = self.propagation(x)
        return x, attn


class ViTDetBackbone(nn.Module):
    """The plain ViT as a detection backbone (Sec. 3): patch embedding, the pretrained absolute
    position embedding resized to the detection grid, blocks with window attention except the
    propagation blocks, and **no** final norm or class token. Output: the single last map
    (B, C, H/p, W/p) (``forward``), or the maps after chosen blocks (``forward_stages``).

    Args:
        img_size: detection input side; ``pretrain_img_size``: the side the position embedding
            was learnt at (its grid is resized at every forward, detectron2-style).
        window: window side in tokens (0: global attention everywhere).
        propagation: ``"global"`` (the propagation blocks use global attention), ``"conv"``
            (all blocks windowed, a residual conv block after each propagation block) or
            ``"none"`` (windows only).
        num_propagation: how many propagation blocks (spread by :func:`evenly_spaced_blocks`), or
            ``propagation_blocks`` to name them.
    Parameter names follow timm, so ``load_vit`` takes a pretrained :class:`VisionTransformer`.
    """

    def __init__(self, img_size: int = 64, patch_size: int = 8, embed_dim: int = 128, depth: int = 4,
                 num_heads: int = 4, mlp_ratio: float = 2.0, qkv_bias: bool = True,
                 pretrain_img_size: int = 32, window: int = 4, propagation: str = "global",
                 num_propagation: int = 2, propagation_blocks: Sequence[int] | None = None,
                 rel_pos: bool = False, drop_path_rate: float = 0.0, conv_kind: str = "basic",
                 class_token: bool = True) -> None:
        super().__init__()
        if propagation not in ("global", "conv", "none"):
            raise ValueError(f"propagation={propagation!r}: 'global', 'conv' or 'none'")
        self.img_size, self.patch_size, self.embed_dim, self.depth = img_size, patch_size, embed_dim, depth
        self.num_heads = num_heads
        self.pretrain_img_size = pretrain_img_size
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        self.grid = self.patch_embed.grid_size
        self.num_prefix_tokens = int(class_token)
        pre_grid = pretrain_img_size // patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + pre_grid ** 2, embed_dim))
        trunc_normal_(self.pos_embed, std=0.02)
        if propagation == "none":
            blocks_p: tuple[int, ...] = ()
        elif propagation_blocks is not None:
            blocks_p = tuple(int(i) for i in propagation_blocks)
        else:
            blocks_p = evenly_spaced_blocks(depth, num_propagation)
        self.propagation = propagation
        self.propagation_blocks = blocks_p
        self.window = window
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList([
            ViTDetBlock(embed_dim, num_heads, mlp_ratio, qkv_bias,
                        window=0 if (propagation == "global" and i in blocks_p) else window,
                        rel_pos=rel_pos, grid=self.grid, drop_path=dpr[i],
                        conv_propagation=conv_kind if (propagation == "conv" and i in blocks_p) else None)
            for i in range(depth)])
        self.out_channels = embed_dim
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # ---- pretrained weights --------------------------------------------------------------
    def load_vit(self, vit: VisionTransformer | Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
        """Copy a pretrained ViT's weights (patch embedding, position embedding, blocks; the
        class token, final norm and head are not used by a detection backbone). Returns the keys
        left at their initialisation (relative position tables, conv propagation blocks) and the
        checkpoint keys not used."""
        sd = vit.state_dict() if isinstance(vit, nn.Module) else dict(vit)
        own = self.state_dict()
        used = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
        bad = [k for k, v in sd.items() if k in own and v.shape != own[k].shape]
        if bad:
            raise ValueError(f"pretrained ViT does not fit the backbone: {bad}")
        self.load_state_dict(used, strict=False)
        return {"new": sorted(k for k in own if k not in used), "unused": sorted(k for k in sd if k not in own)}

    # ---- forward -------------------------------------------------------------------------
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> patch tokens + resized position embedding, (B, H/p, W/p, C).

        Any size works (torchvision's detection transform pads batches of real photos to a
        multiple of 32; a side that is not a multiple of p is zero-padded): the position
        embedding is resized to the actual grid, global blocks interpolate their relative
        position tables."""
        p = self.patch_size
        ph, pw = (-x.shape[-2]) % p, (-x.shape[-1]) % p
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        x = self.patch_embed.proj(x).permute(0, 2, 3, 1)  # (B, H/p, W/p, C); no fixed-size check
        return x + resize_pos_embed(self.pos_embed, tuple(x.shape[1:3]), self.num_prefix_tokens)

    def forward_stages(self, x: torch.Tensor, stage_ends: Sequence[int]) -> list[torch.Tensor]:
        """Maps (B, C, H, W) after each block in ``stage_ends`` (FPN-like design (a))."""
        x = self.tokens(x)
        outs = []
        for i, blk in enumerate(self.blocks):
            x, _ = blk(x)
            if i in stage_ends:
                outs.append(x.permute(0, 3, 1, 2).contiguous())
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x, (self.depth - 1,))[0]

    @torch.no_grad()
    def attention(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Post-softmax attention of every block as (B, heads, H*W, H*W) over the whole grid
        (window blocks: zero outside the query's window), via the explicit attention path."""
        x = self.tokens(x)
        maps = []
        for blk in self.blocks:
            x, attn = blk(x, return_attention=True)
            maps.append(attn)
        return maps

    def extra_repr(self) -> str:
        kinds = ["G" if b.window == 0 else "W" for b in self.blocks]
        if self.propagation == "conv":
            kinds = [k + ("+conv" if b.propagation is not None else "") for k, b in zip(kinds, self.blocks)]
        return f"grid={self.grid}, window={self.window}, blocks={' '.join(kinds)}"


# --------------------------------------------------------------------------------------------
# Pyramids (Sec. 3 "Simple feature pyramid", Fig. 2, Table 1)
# --------------------------------------------------------------------------------------------
def _conv_ln(cin: int, cout: int, k: int) -> nn.Sequential:
    """Conv (no bias) + channel LayerNorm, as ViTDet's pyramid convs."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), LayerNorm2d(cout))


def _rescale(dim: int, scale: float, pool: bool = True) -> tuple[nn.Module, int]:
    """The op that brings a stride-s map to stride s / scale, and its output channels:
    4: deconv(2) - LN - GELU - deconv(2) (C -> C/2 -> C/4); 2: deconv(2) (C -> C/2); 1: identity;
    0.5: max-pool(2) (SFP) or a stride-2 conv (FPN variants)."""
    if scale == 4.0:
        return nn.Sequential(nn.ConvTranspose2d(dim, dim // 2, 2, 2), LayerNorm2d(dim // 2), nn.GELU(),
                             nn.ConvTranspose2d(dim // 2, dim // 4, 2, 2)), dim // 4
    if scale == 2.0:
        return nn.ConvTranspose2d(dim, dim // 2, 2, 2), dim // 2
    if scale == 1.0:
        return nn.Identity(), dim
    if scale == 0.5:
        return (nn.MaxPool2d(2, 2) if pool else nn.Conv2d(dim, dim, 2, 2)), dim
    raise ValueError(f"scale {scale}")


class SimpleFeaturePyramid(nn.Module):
    """Fig. 2(c): from the last map only, in parallel, scales 4, 2, 1, 1/2, each followed by a
    1x1 conv + LN and a 3x3 conv + LN to ``out_channels``. No top-down path, no lateral sums.
    Returns ``OrderedDict`` "0".."3" (strides p/4, p/2, p, 2p for patch size p)."""

    def __init__(self, backbone: ViTDetBackbone, out_channels: int = 64,
                 scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5)) -> None:
        super().__init__()
        self.backbone = backbone
        self.out_channels = out_channels
        self.scales = tuple(scales)
        self.branches = nn.ModuleList()
        for s in self.scales:
            op, c = _rescale(backbone.embed_dim, s)
            self.branches.append(nn.Sequential(op, _conv_ln(c, out_channels, 1),
                                               _conv_ln(out_channels, out_channels, 3)))

    def strides(self) -> list[float]:
        return [self.backbone.patch_size / s for s in self.scales]

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.backbone(images)
        return OrderedDict((str(i), b(x)) for i, b in enumerate(self.branches))


class FPNPyramid(nn.Module):
    """The FPN-like designs of Fig. 2: maps at scales 4, 2, 1, 1/2 (deconvs / a strided conv), then
    FPN (lateral 1x1 convs, top-down nearest upsampling and sums, a 3x3 output conv per level;
    with LN like the other pyramids).

    ``"fpn_4stage"`` (a): the ViT is cut into 4 equal stages and stage k's output gives the map of
    scale 4, 2, 1, 1/2 for k = 1..4, imitating a hierarchical backbone.
    ``"fpn_lastmap"`` (b): all four maps come from the last block's output.
    """

    def __init__(self, backbone: ViTDetBackbone, out_channels: int = 64, kind: str = "fpn_lastmap") -> None:
        super().__init__()
        if kind not in ("fpn_4stage", "fpn_lastmap"):
            raise ValueError(f"kind={kind!r}")
        if kind == "fpn_4stage" and backbone.depth % 4:
            raise ValueError(f"fpn_4stage needs a depth divisible by 4, got {backbone.depth}")
        self.backbone, self.kind, self.out_channels = backbone, kind, out_channels
        self.scales = (4.0, 2.0, 1.0, 0.5)
        d = backbone.depth
        self.stage_ends = tuple((k + 1) * d // 4 - 1 for k in range(4)) if kind == "fpn_4stage" else (d - 1,)
        self.rescale = nn.ModuleList()
        self.lateral = nn.ModuleList()
        self.output = nn.ModuleList()
        for s in self.scales:
            op, c = _rescale(backbone.embed_dim, s, pool=False)
            self.rescale.append(op)
            self.lateral.append(_conv_ln(c, out_channels, 1))
            self.output.append(_conv_ln(out_channels, out_channels, 3))

    def strides(self) -> list[float]:
        return [self.backbone.patch_size / s for s in self.scales]

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.backbone.forward_stages(images, self.stage_ends)
        if len(maps) == 1:
            maps = maps * 4
        lat = [l(r(m)) for m, r, l in zip(maps, self.rescale, self.lateral)]
        out = [None] * 4
        top = lat[3]
        out[3] = self.output[3](top)
        for i in (2, 1, 0):  # top-down: coarse to fine
            top = lat[i] + F.interpolate(top, size=lat[i].shape[-2:], mode="nearest")
            out[i] = self.output[i](top)
        return OrderedDict((str(i), o) for i, o in enumerate(out))


class SingleScale(nn.Module):
    """No feature pyramid (Table 1 baseline): RPN and RoI heads on the last map only (stride p),
    after a 1x1 and a 3x3 conv with LN."""

    def __init__(self, backbone: ViTDetBackbone, out_channels: int = 64) -> None:
        super().__init__()
        self.backbone, self.out_channels = backbone, out_channels
        self.scales = (1.0,)
        self.head = nn.Sequential(_conv_ln(backbone.embed_dim, out_channels, 1),
                                  _conv_ln(out_channels, out_channels, 3))

    def strides(self) -> list[float]:
        return [float(self.backbone.patch_size)]

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict([("0", self.head(self.backbone(images)))])


def build_backbone(pyramid: str = "sfp", out_channels: int = 64, **vit_kwargs: Any) -> nn.Module:
    """A ViTDet backbone (:class:`ViTDetBackbone` with ``vit_kwargs``) inside one of the pyramids of
    Table 1: ``"sfp"``, ``"fpn_lastmap"``, ``"fpn_4stage"`` or ``"none"``."""
    body = ViTDetBackbone(**vit_kwargs)
    if pyramid == "sfp":
        return SimpleFeaturePyramid(body, out_channels)
    if pyramid in ("fpn_lastmap", "fpn_4stage"):
        return FPNPyramid(body, out_channels, pyramid)
    if pyramid == "none":
        return SingleScale(body, out_channels)
    raise ValueError(f"pyramid={pyramid!r}; allowed: {', '.join(PYRAMIDS)}")

