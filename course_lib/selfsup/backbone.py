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

from course_lib.features import IMAGENET_MEAN, IMAGENET_STD, extract_features, normalize
from course_lib.models.vit import VisionTransformer, load_timm_state_dict, unwrap_checkpoint

if TYPE_CHECKING:
    from course_lib.selfsup.dino import DINOConfig

# the features (class token, patch maps) and their normalisation are the course's one extractor,
# course_lib.features, re-exported here
__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "build_backbone", "normalize",
           "load_dino_weights", "extract_features", "cls_attention"]


# ----------------------------------------------------------------------------------------------
# The backbone


def build_backbone(cfg: DINOConfig, drop_path: float = 0.0) -> VisionTransformer:
    """The ViT backbone of ``cfg`` without classifier head (``model(x)`` = class-token feature).
    ``model.forward_features(x, any_size=True)`` runs it at any resolution (multi-crop)."""
    return VisionTransformer(**cfg.arch(), drop_path_rate=drop_path)


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
        _, attns = model.forward_features(x.float(), return_attention=True, any_size=True)
        a = attns[layer][:, :, 0, model.num_prefix_tokens:].float().cpu()
        out.append(a.reshape(len(x), a.shape[1], x.shape[-2] // p[0], x.shape[-1] // p[1]))
    model.train(was)
    return torch.cat(out)
