"""A readable Vision Transformer (ViT, DeiT) whose parameter names match timm.

The model follows Dosovitskiy et al., "An Image is Worth 16x16 Words" (ViT, 2021) and
Touvron et al., "Training data-efficient image transformers & distillation through attention"
(DeiT, 2021):

    tokens  = [class, (distillation,) patch_1 ... patch_N] + position embeddings
    block   : x = x + Attention(LayerNorm(x));  x = x + MLP(LayerNorm(x))     (pre-norm)
    output  : LayerNorm, then a linear head on the class token (and ``head_dist`` on the
              distillation token for DeiT-distilled models)

Every parameter carries exactly timm's name (``patch_embed.proj``, ``cls_token``, ``dist_token``,
``pos_embed``, ``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``, ``head``,
``head_dist``), so a timm ``vit_*`` / ``deit_*`` state dict, an official DeiT checkpoint or a
DINO checkpoint loads with :func:`load_timm_state_dict` / :func:`load_pretrained`.

Attention has two paths that compute the same numbers:

* the fast path, ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels on CPU and
  GPU, never materialises the N x N attention matrix), used by ``forward``;
* the explicit path ``softmax(q @ k^T * scale) @ v``, used when attention maps are requested
  (``forward_features(x, return_attention=True)`` / ``get_attention(x)``); it returns the
  post-softmax maps, shape (B, heads, N, N), one per block.

Input size is fixed at construction (no dynamic image size): an image of another size raises a
``ValueError``. To use a checkpoint trained at another resolution, build the model with the new
``img_size``; :func:`load_timm_state_dict` resamples ``pos_embed`` to the new patch grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from timm.layers import DropPath, resample_abs_pos_embed, trunc_normal_
from torch import nn

__all__ = [
    "PRESETS",
    "TIMM_EQUIVALENT",
    "VisionTransformer",
    "CheckpointMismatchError",
    "LoadResult",
    "vit_config",
    "create_vit",
    "unwrap_checkpoint",
    "load_timm_state_dict",
    "load_pretrained",
]


def _pair(x: int | tuple[int, int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """Split the image into non-overlapping patches and embed each one linearly.

    A Conv2d with kernel = stride = patch size is exactly "flatten each patch, multiply by a
    matrix". Output: (B, N, D) with N = (H / p) * (W / p), patches in row-major order.
    """

    def __init__(self, img_size: int | tuple[int, int], patch_size: int | tuple[int, int],
                 in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
        if self.img_size[0] % self.patch_size[0] or self.img_size[1] % self.patch_size[1]:
            raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f"input images are {tuple(x.shape[-2:])} but this ViT was built for {self.img_size}; "
                "resize the images, build the model with img_size=... (pretrained position "
                "embeddings are resampled when the checkpoint is loaded), or call "
                "forward_features(x, any_size=True)")
        x = self.proj(x)                     # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    """Multi-head self-attention with a fused fast path and an explicit path that returns maps."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, return_attention: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, N, D = x.shape
        # one matmul for q, k and v; (B, N, 3*D) -> 3 x (B, heads, N, head_dim)
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)

        if return_attention:
            attn = (q @ k.transpose(-2, -1)) * self.scale  # (B, heads, N, N)
            attn = attn.softmax(dim=-1)                     # each row sums to 1
            x = self.attn_drop(attn) @ v
        else:
            attn = None
            x = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)

        x = x.transpose(1, 2).reshape(B, N, D)  # concatenate the heads
        x = self.proj_drop(self.proj(x))
        return x, attn


class Mlp(nn.Module):
    """Two linear layers with a GELU in between (hidden size = mlp_ratio * dim)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block with stochastic depth (DropPath) on both residual branches."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, return_attention: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, attn = self.attn(self.norm1(x), return_attention)
        x = x + self.drop_path1(y)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x, attn


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
class VisionTransformer(nn.Module):
    """ViT / DeiT classifier with timm parameter names.

    Args:
        img_size, patch_size, in_chans: input geometry; the image must be ``img_size`` exactly.
        num_classes: size of ``head`` (and ``head_dist``); 0 gives identity heads (features).
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: transformer size.
        drop_rate: dropout after the attention projection and after each MLP layer
            (the "dropout" of the ViT paper).
        attn_drop_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth, rising linearly from 0 to this value over the blocks.
        distilled: add DeiT's distillation token and ``head_dist`` (token order: class,
            distillation, patches). ``train()`` mode returns ``(cls_logits, dist_logits)``,
            ``eval()`` mode returns their mean, as in the official DeiT code.
        class_token: prepend a class token (``num_prefix_tokens`` = 0 without it).
        global_pool: ``"token"`` (class token) or ``"avg"`` (mean of patch tokens; as in timm,
            the final norm is then applied after pooling as ``fc_norm`` and ``norm`` is identity).
        norm_eps: LayerNorm epsilon (1e-6 as in timm / DeiT).
        pos_drop: dropout right after adding the position embeddings.
    """

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: int | tuple[int, int] = 16,
                 in_chans: int = 3, num_classes: int = 1000, embed_dim: int = 192, depth: int = 12,
                 num_heads: int = 3, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 distilled: bool = False, class_token: bool = True, global_pool: str = "token",
                 norm_eps: float = 1e-6, pos_drop: float = 0.0) -> None:
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True")
        if distilled and (not class_token or global_pool != "token"):
            raise ValueError("a distilled model reads the class and distillation tokens: "
                             "it needs class_token=True and global_pool='token'")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.global_pool = global_pool
        self.distilled = distilled

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if distilled else None
        num_tokens = self.patch_embed.num_patches + self.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
        self.pos_drop = nn.Dropout(pos_drop)

        # stochastic depth: linear from 0 (first block) to drop_path_rate (last block)
        drop_path_rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                  drop_path=drop_path_rates[i], norm_eps=norm_eps)
            for i in range(depth)])

        use_fc_norm = global_pool == "avg"
        self.norm = nn.Identity() if use_fc_norm else nn.LayerNorm(embed_dim, eps=norm_eps)
        self.fc_norm = nn.LayerNorm(embed_dim, eps=norm_eps) if use_fc_norm else nn.Identity()
        self.head = self._make_head(num_classes)
        self.head_dist = self._make_head(num_classes) if distilled else None
        self.init_weights()

    # ---- construction helpers ------------------------------------------------------------
    def _make_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    @torch.no_grad()
    def init_weights(self) -> None:
        """timm's default ViT init: truncated normal (std 0.02) for linear layers and position
        embeddings, zero biases, a near-zero class token; the patch conv keeps PyTorch's init."""
        trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.dist_token is not None:
            trunc_normal_(self.dist_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``head`` (and ``head_dist``) by fresh heads with ``num_classes`` outputs."""
        self.num_classes = num_classes
        self.head = self._make_head(num_classes).to(self.pos_embed)  # same device and dtype
        if self.head_dist is not None:
            self.head_dist = self._make_head(num_classes).to(self.pos_embed)
        for head in (self.head, self.head_dist):
            if isinstance(head, nn.Linear):
                trunc_normal_(head.weight, std=0.02)
                nn.init.zeros_(head.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters that timm's optimizer factory exempts from weight decay."""
        return {"pos_embed", "cls_token", "dist_token"}

    # ---- properties ------------------------------------------------------------------------
    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: 1 (class), 2 (class + distillation) or 0 (no class token)."""
        return int(self.cls_token is not None) + int(self.dist_token is not None)

    @property
    def grid_size(self) -> tuple[int, int]:
        """(rows, columns) of the patch grid."""
        return self.patch_embed.grid_size

    @property
    def img_size(self) -> tuple[int, int]:
        return self.patch_embed.img_size

    @property
    def patch_size(self) -> tuple[int, int]:
        return self.patch_embed.patch_size

    # ---- forward -------------------------------------------------------------------------
    def pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """The position embeddings (1, prefix + rows*cols, D) for a patch grid: the model's own,
        or resampled to ``grid`` (bicubic, :func:`resample_pos_embed`; as DINO's official
        ``interpolate_pos_encoding``)."""
        if tuple(grid) == tuple(self.grid_size):
            return self.pos_embed
        return resample_pos_embed(self.pos_embed, grid, self.grid_size, self.num_prefix_tokens)

    def _add_prefix_and_pos(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Prepend [class, distillation] tokens, then add the position embeddings (of ``grid``)."""
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.dist_token) if t is not None]
        if prefix:
            x = torch.cat(prefix + [x], dim=1)
        pos = self.pos_embed if grid is None else self.pos_embed_for(grid)
        return self.pos_drop(x + pos)

    def forward_features(self, x: torch.Tensor, return_attention: bool = False, any_size: bool = False
                         ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Images (B, C, H, W) -> tokens after the final norm (B, N + prefix, D).

        With ``return_attention=True`` the explicit attention path is used and the result is
        ``(tokens, [attention of block 0, ...])``, each map (B, heads, N + prefix, N + prefix).
        ``any_size=True``: images of any size that is a multiple of the patch size, the position
        embeddings resampled to their patch grid (:meth:`pos_embed_for`), so a backbone built
        for 32 px global crops also embeds 16 px local crops (DINO's multi-crop) and one built
        for 224 px draws the attention maps of a 480 px photo. Without it a size other than
        ``img_size`` is an error.
        """
        H, W = x.shape[-2:]
        p = self.patch_size
        if not any_size or (H, W) == tuple(self.img_size):
            x = self._add_prefix_and_pos(self.patch_embed(x))
        elif H % p[0] or W % p[1]:
            raise ValueError(f"image size {(H, W)} is not a multiple of the patch size {p}")
        else:
            x = self._add_prefix_and_pos(self.patch_embed.proj(x).flatten(2).transpose(1, 2),
                                         (H // p[0], W // p[1]))
        attentions = []
        for block in self.blocks:
            x, attn = block(x, return_attention)
            if return_attention:
                attentions.append(attn)
        x = self.norm(x)
        return (x, attentions) if return_attention else x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False
                     ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Tokens -> logits. Distilled models: a tuple in train mode, the mean in eval mode.

        ``pre_logits=True`` returns the pooled feature instead (for a distilled model, the mean
        of the class and distillation tokens).
        """
        if self.dist_token is not None:
            x_cls, x_dist = x[:, 0], x[:, 1]
            if pre_logits:
                return (x_cls + x_dist) / 2
            cls_logits, dist_logits = self.head(x_cls), self.head_dist(x_dist)
            if self.training:
                return cls_logits, dist_logits
            return (cls_logits + dist_logits) / 2
        if self.global_pool == "token":
            x = x[:, 0]
        else:
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        x = self.fc_norm(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.forward_head(self.forward_features(x))

    def get_attention(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Post-softmax attention of every block, each (B, heads, N + prefix, N + prefix).

        Runs in the current mode with autograd as usual: wrap in ``torch.no_grad()`` and call
        ``model.eval()`` first for plain visualisation.
        """
        return self.forward_features(x, return_attention=True)[1]

    def extra_repr(self) -> str:
        return (f"img_size={self.img_size}, patch_size={self.patch_size}, grid={self.grid_size}, "
                f"prefix_tokens={self.num_prefix_tokens}, global_pool={self.global_pool!r}")


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------
_DEIT = dict(img_size=224, patch_size=16, in_chans=3, num_classes=1000, mlp_ratio=4.0, qkv_bias=True)

PRESETS: dict[str, dict[str, Any]] = {
    # DeiT (Touvron et al. 2021, Table 1): the same ViT shapes, trained on ImageNet-1k only
    "deit_tiny": {**_DEIT, "embed_dim": 192, "depth": 12, "num_heads": 3},
    "deit_small": {**_DEIT, "embed_dim": 384, "depth": 12, "num_heads": 6},
    "deit_base": {**_DEIT, "embed_dim": 768, "depth": 12, "num_heads": 12},
    "deit_tiny_distilled": {**_DEIT, "embed_dim": 192, "depth": 12, "num_heads": 3, "distilled": True},
    "deit_small_distilled": {**_DEIT, "embed_dim": 384, "depth": 12, "num_heads": 6, "distilled": True},
    "deit_base_distilled": {**_DEIT, "embed_dim": 768, "depth": 12, "num_heads": 12, "distilled": True},
    # Course sizes. course_tiny: the DeiT study student for 32 px images (64 tokens of 4x4
    # pixels), calibrated in benchmarks/calibrate_deit.py (docs/calibration.md).
    # cifar_tiny: DeiT-Ti's width and depth on 32 px CIFAR (the DeiT paper profile).
    "course_tiny": dict(img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=2,
                        mlp_ratio=2.0, num_classes=6),
    "course_tiny_distilled": dict(img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=2,
                                  mlp_ratio=2.0, num_classes=6, distilled=True),
    "cifar_tiny": dict(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3,
                       mlp_ratio=4.0, num_classes=100),
    "cifar_tiny_distilled": dict(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3,
                                 mlp_ratio=4.0, num_classes=100, distilled=True),
}

# preset -> the timm model whose checkpoints load into it (for reference and tests)
TIMM_EQUIVALENT: dict[str, str] = {
    "deit_tiny": "deit_tiny_patch16_224",
    "deit_small": "deit_small_patch16_224",
    "deit_base": "deit_base_patch16_224",
    "deit_tiny_distilled": "deit_tiny_distilled_patch16_224",
    "deit_small_distilled": "deit_small_distilled_patch16_224",
    "deit_base_distilled": "deit_base_distilled_patch16_224",
}


def vit_config(name: str) -> dict[str, Any]:
    """A copy of the constructor arguments of preset ``name`` (see ``PRESETS``)."""
    if name not in PRESETS:
        raise KeyError(f"unknown ViT preset {name!r}; available: {sorted(PRESETS)}")
    return dict(PRESETS[name])


def create_vit(name: str, **overrides: Any) -> VisionTransformer:
    """Build preset ``name``; keyword arguments override the preset (e.g. ``num_classes=10``)."""
    return VisionTransformer(**{**vit_config(name), **overrides})


# --------------------------------------------------------------------------------------------
# Checkpoint loading
# --------------------------------------------------------------------------------------------
class CheckpointMismatchError(RuntimeError):
    """The checkpoint does not fit the model (missing / unexpected keys or wrong shapes)."""


@dataclass
class LoadResult:
    """What :func:`load_timm_state_dict` did."""
    missing_keys: list[str] = field(default_factory=list)      # left as initialised
    unexpected_keys: list[str] = field(default_factory=list)   # in the checkpoint, ignored
    mismatched_keys: list[str] = field(default_factory=list)   # wrong shape, ignored (strict=False)
    notes: list[str] = field(default_factory=list)             # resampling, head handling, ...

    def __str__(self) -> str:
        parts = [*self.notes]
        for label, keys in (("missing", self.missing_keys), ("unexpected", self.unexpected_keys),
                            ("shape mismatch", self.mismatched_keys)):
            if keys:
                parts.append(f"{label}: {_short_list(keys)}")
        return "; ".join(parts) or "all keys loaded"


def _short_list(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _is_head_key(key: str) -> bool:
    return key.startswith(("head.", "head_dist."))


def unwrap_checkpoint(checkpoint: Mapping[str, Any], notes: list[str] | None = None
                      ) -> dict[str, torch.Tensor]:
    """Reduce a checkpoint to a plain timm-style state dict.

    Accepts a plain state dict, ``{"model": sd}`` (official DeiT), ``{"state_dict": sd}`` and
    DINO's ``{"teacher": sd}`` with ``module.`` / ``backbone.`` prefixes (the DINO projection
    head, stored outside ``backbone.``, is dropped).
    """
    notes = [] if notes is None else notes
    sd: Mapping[str, Any] = checkpoint
    for wrapper in ("model", "state_dict", "teacher"):
        if isinstance(sd.get(wrapper), Mapping):
            notes.append(f"read checkpoint[{wrapper!r}]")
            sd = sd[wrapper]
            break
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if any(k.startswith("backbone.") for k in sd):       # DINO: backbone + projection head
        dropped = [k for k in sd if not k.startswith("backbone.")]
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
        if dropped:
            notes.append(f"dropped {len(dropped)} non-backbone (DINO head) keys")
    return dict(sd)


def _square_side(n_patches: int, error=ValueError) -> int:
    side = math.isqrt(n_patches)
    if side * side != n_patches:
        raise error(f"cannot resample pos_embed: it has {n_patches} patch positions, not a square grid")
    return side


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int],
                       old_grid: tuple[int, int] | None = None, num_prefix_tokens: int = 1,
                       antialias: bool = True) -> torch.Tensor:
    """Absolute position embeddings (1, prefix + h*w, D) resampled to another patch grid:
    (1, prefix + H*W, D), the prefix entries kept, the grid interpolated bicubically (timm's
    ``resample_abs_pos_embed``). ``old_grid``: default square. ``antialias`` matters when the
    grid shrinks (ViTDet's ``F.interpolate`` uses none). The one place the course resamples
    position embeddings: the any-size forward, checkpoint loading and ViTDet's backbone."""
    if old_grid is None:
        old_grid = (_square_side(pos_embed.shape[1] - num_prefix_tokens),) * 2
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    return resample_abs_pos_embed(pos_embed, new_size=list(new_grid), old_size=list(old_grid),
                                  num_prefix_tokens=num_prefix_tokens, antialias=antialias)


def _resample_pos_embed(model: VisionTransformer, sd: dict[str, torch.Tensor], notes: list[str]) -> None:
    """Resample the checkpoint's pos_embed to the model's patch grid (prefix tokens kept as is)."""
    pos = sd.get("pos_embed")
    if pos is None or pos.shape == model.pos_embed.shape or pos.ndim != 3:
        return
    ckpt_prefix = int("cls_token" in sd) + int("dist_token" in sd)
    if ckpt_prefix != model.num_prefix_tokens or pos.shape[-1] != model.embed_dim:
        return  # not a resolution change; reported as a shape mismatch
    side = _square_side(pos.shape[1] - ckpt_prefix, CheckpointMismatchError)
    sd["pos_embed"] = resample_pos_embed(pos, model.grid_size, (side, side), ckpt_prefix)
    notes.append(f"resampled pos_embed from a {side}x{side} to a "
                 f"{model.grid_size[0]}x{model.grid_size[1]} patch grid")


def load_timm_state_dict(model: VisionTransformer, state_dict: Mapping[str, Any], strict: bool = True,
                         drop_head: bool = False) -> LoadResult:
    """Load a timm / official DeiT / DINO checkpoint (already in memory) into ``model``.

    * wrappers and prefixes are handled by :func:`unwrap_checkpoint`;
    * ``pos_embed`` is resampled (bicubic, timm's ``resample_abs_pos_embed``) when the
      checkpoint's patch grid differs from the model's;
    * ``drop_head=True`` ignores the checkpoint's ``head`` / ``head_dist`` and keeps the
      model's own (randomly initialised) head, e.g. for another number of classes;
    * a backbone-only checkpoint (no head keys at all: DINO, timm ``num_classes=0``) keeps the
      model's own head as well.

    With ``strict=True`` any other missing, unexpected or wrongly shaped key raises
    :class:`CheckpointMismatchError` listing them; with ``strict=False`` the fitting tensors are
    loaded and the rest reported in the returned :class:`LoadResult`.
    """
    result = LoadResult()
    sd = unwrap_checkpoint(state_dict, result.notes)
    _resample_pos_embed(model, sd, result.notes)

    ckpt_has_head = any(_is_head_key(k) for k in sd)
    if drop_head:
        sd = {k: v for k, v in sd.items() if not _is_head_key(k)}
        result.notes.append("kept the model's own head (drop_head=True)")
    elif not ckpt_has_head:
        result.notes.append("kept the model's own head (the checkpoint has none)")
    keep_own_head = drop_head or not ckpt_has_head

    own = model.state_dict()
    result.missing_keys = [k for k in own if k not in sd and not (keep_own_head and _is_head_key(k))]
    result.unexpected_keys = [k for k in sd if k not in own]
    result.mismatched_keys = [
        f"{k} (checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)})"
        for k in sd if k in own and sd[k].shape != own[k].shape]

    if strict and (result.missing_keys or result.unexpected_keys or result.mismatched_keys):
        hint = ""
        if any(_is_head_key(k.split(" ")[0]) for k in result.mismatched_keys):
            hint = " (a head for another number of classes? pass drop_head=True to keep the model's head)"
        raise CheckpointMismatchError(f"checkpoint does not fit the model{hint}: {result}")

    loadable = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(loadable, strict=False)
    return result


def load_pretrained(model: VisionTransformer, path: str | PathLike, strict: bool = True,
                    drop_head: bool = False, weights_only: bool = True) -> LoadResult:
    """Load a ``.safetensors`` or ``.pth`` / ``.pt`` checkpoint file into ``model``.

    ``weights_only=True`` (the default) refuses pickled Python objects; full DINO training
    checkpoints store their ``args`` that way: pass ``weights_only=False`` only for files you
    trust. See :func:`load_timm_state_dict` for the other arguments.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        checkpoint = load_file(str(path), device="cpu")
    else:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only)
        except Exception as err:  # pickle.UnpicklingError for args, optimizer state, ...
            if not weights_only:
                raise
            raise RuntimeError(
                f"{path} holds more than tensors; if you trust the file, call "
                "load_pretrained(..., weights_only=False)") from err
    return load_timm_state_dict(model, checkpoint, strict=strict, drop_head=drop_head)
