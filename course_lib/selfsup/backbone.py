"""The self-supervised ViT backbone as the notebooks use it: built from a recipe, run at any
resolution, its class-token features and class-token attention, and real DINO weights loaded.

Our ViT keeps the course's ``models/vit.py`` (timm parameter names), so official DINO and timm
DINO weights load into it (:func:`load_dino_weights`). Notebooks 05 (CLEAR), 06 (DINO) and 11
(STEGO) read features and attention maps through these helpers.
"""
from __future__ import annotations

import argparse
import math
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import nn

from course_lib.models.vit import VisionTransformer, load_timm_state_dict, unwrap_checkpoint

if TYPE_CHECKING:
    from course_lib.selfsup.dino import DINOConfig

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "build_backbone", "forward_tokens", "normalize",
           "load_dino_weights", "extract_features", "cls_attention"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------------
# The backbone, at any resolution


def build_backbone(cfg: DINOConfig, drop_path: float = 0.0) -> VisionTransformer:
    """The ViT backbone of ``cfg`` without classifier head (``model(x)`` = class-token feature)."""
    return VisionTransformer(**cfg.arch(), drop_path_rate=drop_path)


def forward_tokens(model: VisionTransformer, x: torch.Tensor, return_attention: bool = False):
    """``model.forward_features`` for images of any size (a multiple of the patch size).

    The position embeddings are interpolated (bicubic, timm's ``resample_abs_pos_embed``, as the
    official ``interpolate_pos_encoding``) when the patch grid differs from the model's, so a
    backbone built for 32 px global crops also embeds 16 px local crops, and one built for 224 px
    draws attention maps of a 480 px photo. Returns tokens (B, prefix + N, D), and with
    ``return_attention`` also the list of per-block attention maps (B, heads, T, T).
    """
    from timm.layers import resample_abs_pos_embed

    p = model.patch_size
    H, W = x.shape[-2:]
    if H % p[0] or W % p[1]:
        raise ValueError(f"image size {(H, W)} is not a multiple of the patch size {p}")
    if (H, W) == tuple(model.img_size):
        return model.forward_features(x, return_attention=return_attention)
    t = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    pos = resample_abs_pos_embed(model.pos_embed, new_size=[H // p[0], W // p[1]],
                                 old_size=list(model.grid_size), num_prefix_tokens=model.num_prefix_tokens)
    prefix = [tok.expand(t.shape[0], -1, -1) for tok in (model.cls_token, model.dist_token) if tok is not None]
    t = model.pos_drop(torch.cat(prefix + [t], 1) + pos)
    attns = []
    for block in model.blocks:
        t, a = block(t, return_attention)
        if return_attention:
            attns.append(a)
    t = model.norm(t)
    return (t, attns) if return_attention else t


def normalize(images: torch.Tensor, mean=None, std=None, model: nn.Module | None = None) -> torch.Tensor:
    """uint8 (or [0, 1] float) images -> normalised float, with ``model.pretrained_cfg`` when given."""
    if model is not None and hasattr(model, "pretrained_cfg"):
        mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    mean = mean if mean is not None else (0.5, 0.5, 0.5)
    std = std if std is not None else (0.25, 0.25, 0.25)
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


# ----------------------------------------------------------------------------------------------
# Real DINO weights


def _vit_kwargs_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Infer a ViT's shape from its weights; heads = width / 64 (every DINO and timm ViT)."""
    w = sd["patch_embed.proj.weight"]
    dim, patch = w.shape[0], w.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    n_pos = sd["pos_embed"].shape[1] - 1
    side = math.isqrt(n_pos)
    mlp = sd["blocks.0.mlp.fc1.weight"].shape[0] / dim
    return dict(img_size=side * patch, patch_size=patch, embed_dim=dim, depth=depth,
                num_heads=max(1, dim // 64), mlp_ratio=mlp, num_classes=0,
                qkv_bias="blocks.0.attn.qkv.bias" in sd)


def load_dino_weights(path: str | PathLike, model: VisionTransformer | None = None,
                      img_size: int | None = None) -> VisionTransformer:
    """Real DINO weights from disk into our ViT.

    Accepts timm's ``vit_small_patch8_224.dino`` / ``vit_small_patch16_224.dino`` state dicts
    (``.safetensors`` or ``.pth``), the official backbone files (``dino_deitsmall16_pretrain.pth``)
    and the official full training checkpoints (``{"teacher": {"backbone.…", "head.…"}, "args":
    …}``; ``module.``/``backbone.`` prefixes stripped, the DINO head dropped). Without ``model`` the
    architecture is read from the weights (heads = width / 64); ``img_size`` builds it for another
    input size (position embeddings resampled). Returns the model in eval mode, with
    ``pretrained_cfg`` = ImageNet mean/std.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        ckpt: Mapping[str, Any] = load_file(str(path), device="cpu")
    else:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # the official full checkpoint pickles its argparse ``args``
            with torch.serialization.safe_globals([argparse.Namespace]):
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = unwrap_checkpoint(ckpt)
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}  # a DINO head stored unprefixed
    if model is None:
        kw = _vit_kwargs_from_state_dict(sd)
        if img_size is not None:
            kw["img_size"] = img_size
        model = VisionTransformer(**kw)
    load_timm_state_dict(model, sd, strict=True)
    model.eval()
    model.pretrained_cfg = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    return model


# ----------------------------------------------------------------------------------------------
# Features and attention


@torch.no_grad()
def extract_features(model: VisionTransformer, images: torch.Tensor, batch_size: int = 256, device=None,
                     mean=None, std=None) -> torch.Tensor:
    """Class-token features (after the final norm) of uint8 images, (N, D) float on the CPU.
    Normalisation: ``mean``/``std``, else ``model.pretrained_cfg``, else the world's."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device)
        x = normalize(x, mean, std, model if mean is None else None)
        out.append(forward_tokens(model, x)[:, 0].float().cpu())
    model.train(was)
    return torch.cat(out)


@torch.no_grad()
def cls_attention(model: VisionTransformer, images: torch.Tensor, layer: int = -1, batch_size: int = 256,
                  normalized: bool = False) -> torch.Tensor:
    """Class-token-to-patch attention of one layer (default the last), every head:
    ``(B, heads, h, w)`` float on the CPU (official ``visualize_attention``: ``attn[:, :, 0, 1:]``).
    ``images``: uint8 (normalised with ``model.pretrained_cfg`` / the world's) or already
    normalised float images of any size that is a multiple of the patch size."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    out = []
    p = model.patch_size
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device)
        if x.dtype == torch.uint8:
            x = normalize(x, model=model)
        _, attns = forward_tokens(model, x.float(), return_attention=True)
        a = attns[layer][:, :, 0, model.num_prefix_tokens:].float().cpu()
        out.append(a.reshape(len(x), a.shape[1], x.shape[-2] // p[0], x.shape[-1] // p[1]))
    model.train(was)
    return torch.cat(out)
