"""Frozen features of a backbone, the one extractor of the course.

Notebooks that study a frozen backbone read its features here: DINO's k-NN and linear probes
(class token), CLEAR's linear models on self-supervised bucket-0 features (class token) and
STEGO's segmentation head (the patch tokens as maps)::

    f = features.extract_features(vit, images_uint8)                       # (N, D)
    maps = features.extract_features(vit, images_uint8, tokens="patches")  # (N, D, h, w)

Images are uint8 (or float in [0, 1]) and normalised with ``mean``/``std`` when given, else the
model's ``pretrained_cfg`` (timm models, official weights), else the offline world's fixed
statistics. The course's own ViT (``course_lib.models.vit``) embeds images of any size that is
a multiple of its patch size (``forward_features(x, any_size=True)``); other models (timm's)
see the images as they are.
"""
from __future__ import annotations

import torch
from torch import nn

from course_lib.models.vit import VisionTransformer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOKENS = ("cls", "patches")

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalize", "tokens_of", "extract_features"]


def normalize(images: torch.Tensor, mean=None, std=None, model: nn.Module | None = None) -> torch.Tensor:
    """uint8 (or [0, 1] float) images -> normalised float, with ``model.pretrained_cfg`` when given."""
    from course_lib.world import WORLD_MEAN, WORLD_STD

    if model is not None and hasattr(model, "pretrained_cfg"):
        mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    mean = mean if mean is not None else WORLD_MEAN
    std = std if std is not None else WORLD_STD
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def tokens_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """All tokens after the final norm, (B, prefix + N, D): any image size for the course's ViT."""
    if isinstance(model, VisionTransformer):
        return model.forward_features(x, any_size=True)
    return model.forward_features(x)


def _pooled(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The image feature (B, D): ``forward_head(pre_logits=True)`` of a ViT (its class token, or
    the pooled tokens where the model pools), else ``model(x)``."""
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        return model.forward_head(tokens_of(model, x), pre_logits=True)
    return model(x)


def _patch_maps(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The patch tokens laid on their grid, (B, D, h, w)."""
    p = model.patch_embed.patch_size
    p = (p, p) if isinstance(p, int) else tuple(p)
    h, w = x.shape[-2] // p[0], x.shape[-1] // p[1]
    tok = tokens_of(model, x)[:, model.num_prefix_tokens:]
    return tok.transpose(1, 2).reshape(len(x), -1, h, w).float()


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, *, tokens: str = "cls",
                     batch_size: int = 256, device: torch.device | str | None = None,
                     mean=None, std=None, flip: bool = False,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Frozen features of ``images``, stored on the CPU as ``dtype``.

    ``tokens="cls"``: one vector per image, (N, D) (the class token after the final norm);
    ``"patches"``: the last layer's patch tokens as maps, (N, D, h, w).
    ``flip``: average with the features of the mirrored images (mirrored back; the official
    STEGO evaluation). ``device``: where to run (the model is moved there); default the model's.
    The model runs in eval mode; its training mode is restored afterwards.
    """
    if tokens not in TOKENS:
        raise ValueError(f"tokens={tokens!r}; allowed: {', '.join(TOKENS)}")
    if device is not None:
        model = model.to(device)
    device = next(model.parameters()).device
    forward = _pooled if tokens == "cls" else _patch_maps
    was = model.training
    model.eval()
    out = []
    try:
        for s in range(0, len(images), batch_size):
            x = normalize(images[s:s + batch_size].to(device), mean, std,
                          model if mean is None else None)
            f = forward(model, x).float()
            if flip:  # patch maps are mirrored back onto the image
                g = forward(model, x.flip(-1)).float()
                f = (f + (g.flip(-1) if tokens == "patches" else g)) / 2
            out.append(f.to("cpu", dtype))
    finally:
        model.train(was)
    return torch.cat(out)
