"""A readable ConvNeXt whose parameter names match timm.

The model follows Liu et al., "A ConvNet for the 2020s" (CVPR 2022, arXiv 2201.03545), as
released in facebookresearch/ConvNeXt ``models/convnext.py``:

    stem      Conv 4x4 stride 4 ("patchify", Sec. 2.2) -> LayerNorm
    stage i   (i > 0: LayerNorm -> Conv 2x2 stride 2, the separate downsampling layer, Sec. 2.6)
              then ``depths[i]`` blocks of width ``dims[i]``
    block     x + DropPath(gamma * Linear(4d -> d)(GELU(Linear(d -> 4d)(LN(dwconv7x7(x))))))
              (Fig. 4 right; the 1x1 convs are Linear layers on channels-last tensors)
    head      global average pool -> LayerNorm -> Linear

Every LayerNorm has eps 1e-6; the channels-first ones (stem, downsampling) normalise over the
channel axis with the biased variance, as the official ``LayerNorm(data_format="channels_first")``.
Layer scale ``gamma`` starts at 1e-6 (Appendix A.1, after CaiT). Weights start from a truncated
normal with std 0.02 and zero biases; the classifier is then multiplied by ``head_init_scale``.

Parameter names are exactly timm's (``stem.0``, ``stem.1``, ``stages.i.downsample.{0,1}`` for
i > 0, ``stages.i.blocks.j.{conv_dw,norm,mlp.fc1,mlp.fc2,gamma}``, ``head.norm``, ``head.fc``),
so a timm ``convnext_*`` state dict loads with :func:`load_timm_state_dict`. timm's small
variants (``convnext_atto/femto/pico/nano``) are built with ``conv_mlp=True``: their MLP layers
are 1x1 ``Conv2d`` (weights ``[out, in, 1, 1]``) and their block norm a channels-first
LayerNorm2d. Those are the same functions, so the loader reshapes the weights to ``Linear``
ones. Checkpoints of the official repository (``downsample_layers``, ``dwconv``, ``pwconv1``,
...) are renamed to timm's names on the way in.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import nn

from .vit import CheckpointMismatchError, LoadResult, unwrap_checkpoint

__all__ = [
    "PRESETS",
    "TIMM_EQUIVALENT",
    "CheckpointMismatchError",
    "ConvNeXt",
    "ConvNeXtBlock",
    "ConvNeXtStage",
    "LayerNorm2d",
    "LoadResult",
    "convnext_config",
    "create_convnext",
    "from_official_names",
    "load_pretrained",
    "load_timm_state_dict",
]


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) tensor ("channels_first").

    The official code writes it out: ``u = x.mean(1); s = (x - u).pow(2).mean(1)`` (the biased
    variance), ``x = (x - u) / sqrt(s + eps)``, then a per-channel affine map. Moving the
    channels last and calling ``F.layer_norm`` computes the same numbers, faster.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (N, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Mlp(nn.Module):
    """The inverted bottleneck's two "1x1 convs" as Linear layers: d -> 4d -> GELU -> d."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvNeXtBlock(nn.Module):
    """The ConvNeXt block (paper Fig. 4, right; Sec. 2.3-2.6).

    ``dwconv kxk -> (to NHWC) LayerNorm -> Linear(d, 4d) -> GELU -> Linear(4d, d) -> gamma
    -> (to NCHW) -> drop path -> + x``. One norm and one activation per block, the depthwise
    conv first ("moving up the depthwise conv layer", Sec. 2.5).
    """

    def __init__(self, dim: int, kernel_size: int = 7, mlp_ratio: float = 4.0,
                 ls_init_value: float | None = 1e-6, drop_path: float = 0.0,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))
        self.gamma = nn.Parameter(torch.full((dim,), ls_init_value)) if ls_init_value is not None else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x)
        x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C): LayerNorm and Linear act on C
        x = self.mlp(self.norm(x))
        if self.gamma is not None:
            x = x * self.gamma
        x = x.permute(0, 3, 1, 2)
        return shortcut + self.drop_path(x)


class ConvNeXtStage(nn.Module):
    """Optional downsampling layer (LayerNorm -> Conv 2x2 stride 2), then the blocks."""

    def __init__(self, in_dim: int, dim: int, depth: int, downsample: bool, kernel_size: int = 7,
                 mlp_ratio: float = 4.0, ls_init_value: float | None = 1e-6,
                 drop_path_rates: Sequence[float] | None = None, norm_eps: float = 1e-6) -> None:
        super().__init__()
        if downsample:
            self.downsample = nn.Sequential(LayerNorm2d(in_dim, eps=norm_eps),
                                            nn.Conv2d(in_dim, dim, kernel_size=2, stride=2))
        elif in_dim != dim:
            raise ValueError(f"a stage without downsampling keeps its width: {in_dim} != {dim}")
        else:
            self.downsample = nn.Identity()
        rates = list(drop_path_rates) if drop_path_rates is not None else [0.0] * depth
        self.blocks = nn.Sequential(*[
            ConvNeXtBlock(dim, kernel_size, mlp_ratio, ls_init_value, rates[j], norm_eps)
            for j in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ClassifierHead(nn.Module):
    """Global average pooling -> LayerNorm -> dropout -> Linear (``head.norm``, ``head.fc``)."""

    def __init__(self, dim: int, num_classes: int, drop_rate: float = 0.0, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x.mean(dim=(-2, -1)))  # (N, C, H, W) -> (N, C)
        return x if pre_logits else self.fc(self.drop(x))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
class ConvNeXt(nn.Module):
    """ConvNeXt classifier with timm parameter names.

    Args:
        in_chans: input channels.
        num_classes: size of ``head.fc``; 0 gives an identity classifier (pooled features).
        depths, dims: blocks and width of each of the (usually four) stages.
        kernel_size: side of the depthwise conv (7 in the paper, Sec. 2.5).
        patch_size: side and stride of the patchify stem (4 for ImageNet; 2 suits 32 px images).
        mlp_ratio: hidden width of the inverted bottleneck, as a multiple of the stage width.
        ls_init_value: initial layer scale ``gamma``; ``None`` leaves it out.
        head_init_scale: the classifier's initial weights and bias are multiplied by this.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly from 0 (first block) to this value
            (last block), as in the official code.
        norm_eps: epsilon of every LayerNorm.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000,
                 depths: Sequence[int] = (3, 3, 9, 3), dims: Sequence[int] = (96, 192, 384, 768),
                 kernel_size: int = 7, patch_size: int = 4, mlp_ratio: float = 4.0,
                 ls_init_value: float | None = 1e-6, head_init_scale: float = 1.0,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, norm_eps: float = 1e-6) -> None:
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError(f"depths {tuple(depths)} and dims {tuple(dims)} differ in length")
        self.depths, self.dims = tuple(int(d) for d in depths), tuple(int(d) for d in dims)
        self.num_classes = num_classes
        self.num_features = self.dims[-1]
        self.drop_rate = drop_rate
        self.norm_eps = norm_eps

        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, self.dims[0], kernel_size=patch_size, stride=patch_size),
            LayerNorm2d(self.dims[0], eps=norm_eps))
        # stochastic depth: linear from 0 to drop_path_rate over all blocks of all stages
        rates = torch.linspace(0, drop_path_rate, sum(self.depths), device="cpu").tolist()
        stages, start, in_dim = [], 0, self.dims[0]
        for i, (depth, dim) in enumerate(zip(self.depths, self.dims, strict=True)):
            stages.append(ConvNeXtStage(in_dim, dim, depth, downsample=i > 0, kernel_size=kernel_size,
                                        mlp_ratio=mlp_ratio, ls_init_value=ls_init_value,
                                        drop_path_rates=rates[start:start + depth], norm_eps=norm_eps))
            start += depth
            in_dim = dim
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate, norm_eps)
        self.init_weights(head_init_scale)

    @torch.no_grad()
    def init_weights(self, head_init_scale: float = 1.0) -> None:
        """The official init: truncated normal (std 0.02) for every conv and linear weight, zero
        biases, LayerNorms at (1, 0); the classifier is then scaled by ``head_init_scale``."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not m.weight.is_meta:  # meta: shapes only
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if isinstance(self.head.fc, nn.Linear) and not self.head.fc.weight.is_meta:
            self.head.fc.weight.mul_(head_init_scale)
            self.head.fc.bias.mul_(head_init_scale)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``head.fc`` by a fresh classifier with ``num_classes`` outputs."""
        self.num_classes = num_classes
        ref = self.head.norm.weight
        if num_classes > 0:
            fc = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            trunc_normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)
            self.head.fc = fc
        else:
            self.head.fc = nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) -> the last stage's feature map (N, dims[-1], H/32, W/32)."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------
PRESETS: dict[str, dict[str, Any]] = {
    # the paper's models (Sec. 3, "Configurations"; Table 1: 28.6M / 50M / 89M / 198M parameters
    # and 4.5 / 8.7 / 15.4 / 34.4 GFLOPs at 224 px)
    "convnext_tiny": {"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768)},
    "convnext_small": {"depths": (3, 3, 27, 3), "dims": (96, 192, 384, 768)},
    "convnext_base": {"depths": (3, 3, 27, 3), "dims": (128, 256, 512, 1024)},
    "convnext_large": {"depths": (3, 3, 27, 3), "dims": (192, 384, 768, 1536)},
    # timm's own small variants (their checkpoints use 1x1 convs; the loader converts them)
    "convnext_atto": {"depths": (2, 2, 6, 2), "dims": (40, 80, 160, 320)},
    "convnext_femto": {"depths": (2, 2, 6, 2), "dims": (48, 96, 192, 384)},
    "convnext_pico": {"depths": (2, 2, 6, 2), "dims": (64, 128, 256, 512)},
    "convnext_nano": {"depths": (2, 2, 8, 2), "dims": (80, 160, 320, 640)},
    # Course sizes: ConvNeXt-T's stage ratio 1:1:3:1 at a quarter of its width. For 32 px
    # images the stem patch is 2 (stage resolutions 16, 8, 4, 2), for 64 px it is 4, as in
    # ImageNet (16, 8, 4, 2 again). This is the last step of the course-scale ladder
    # (course_lib.papers.convnext.ladder_config(..., scale="course")).
    "convnext_course": {"depths": (1, 1, 3, 1), "dims": (24, 48, 96, 192), "patch_size": 2, "num_classes": 10},
    "convnext_course64": {"depths": (1, 1, 3, 1), "dims": (24, 48, 96, 192), "patch_size": 4, "num_classes": 10},
}

# preset -> the timm model whose state dicts load into it (for reference and tests)
TIMM_EQUIVALENT: dict[str, str] = {
    name: name for name in ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
                            "convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano")
}


def convnext_config(name: str) -> dict[str, Any]:
    """A copy of the constructor arguments of preset ``name`` (see ``PRESETS``)."""
    if name not in PRESETS:
        raise KeyError(f"unknown ConvNeXt preset {name!r}; available: {sorted(PRESETS)}")
    return dict(PRESETS[name])


def create_convnext(name: str, **overrides: Any) -> ConvNeXt:
    """Build preset ``name``; keyword arguments override the preset (e.g. ``num_classes=10``)."""
    return ConvNeXt(**{**convnext_config(name), **overrides})


# --------------------------------------------------------------------------------------------
# Checkpoint loading
# --------------------------------------------------------------------------------------------
def _is_classifier_key(key: str) -> bool:
    return key.startswith("head.fc.")


def from_official_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a facebookresearch/ConvNeXt state dict to timm's names (no-op for timm ones).

    ``downsample_layers.0`` -> ``stem``, ``downsample_layers.i`` -> ``stages.i.downsample``,
    ``stages.i.j`` -> ``stages.i.blocks.j``, ``dwconv`` -> ``conv_dw``, ``pwconv1/2`` ->
    ``mlp.fc1/2``, the final ``norm`` -> ``head.norm`` and ``head`` -> ``head.fc``.
    """
    if not any(k.startswith("downsample_layers.") for k in state_dict):
        return dict(state_dict)
    out = {}
    for k, v in state_dict.items():
        k = k.replace("downsample_layers.0.", "stem.")
        k = re.sub(r"^downsample_layers\.(\d+)\.", r"stages.\1.downsample.", k)
        k = re.sub(r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", k)
        k = k.replace(".dwconv.", ".conv_dw.").replace(".pwconv", ".mlp.fc")
        if k.startswith("norm."):
            k = "head." + k
        elif k.startswith("head."):
            k = "head.fc." + k[len("head."):]
        out[k] = v
    return out


def _conv_mlp_to_linear(sd: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor],
                        notes: list[str]) -> None:
    """timm's conv_mlp variants store ``mlp.fc*.weight`` as 1x1 convs [out, in, 1, 1]."""
    n = 0
    for k, v in list(sd.items()):
        is_conv_mlp = ".mlp.fc" in k and k.endswith(".weight") and v.ndim == 4 and v.shape[-2:] == (1, 1)
        if is_conv_mlp and k in own and own[k].ndim == 2:
            sd[k] = v.reshape(v.shape[0], v.shape[1])
            n += 1
    if n:
        notes.append(f"reshaped {n} 1x1-conv MLP weights (timm conv_mlp) to Linear weights")


def load_timm_state_dict(model: ConvNeXt, state_dict: Mapping[str, Any], strict: bool = True,
                         drop_head: bool = False) -> LoadResult:
    """Load a timm (or official) ConvNeXt checkpoint, already in memory, into ``model``.

    * wrappers (``{"model": sd}``, ``{"state_dict": sd}``, ``module.`` prefixes) are removed by
      :func:`course_lib.models.vit.unwrap_checkpoint`; official names are renamed by
      :func:`from_official_names`;
    * timm ``conv_mlp`` variants (atto, femto, pico, nano): ``mlp.fc*.weight`` of shape
      ``[out, in, 1, 1]`` become Linear weights ``[out, in]``;
    * ``drop_head=True`` ignores the checkpoint's classifier ``head.fc`` (e.g. another number of
      classes) and keeps the model's own; ``head.norm`` is loaded all the same. A checkpoint
      without ``head.fc`` (timm ``num_classes=0``) keeps the model's classifier too.

    With ``strict=True`` any other missing, unexpected or wrongly shaped key raises
    :class:`CheckpointMismatchError` listing them; with ``strict=False`` the fitting tensors are
    loaded and the rest reported in the returned :class:`LoadResult`.
    """
    result = LoadResult()
    sd = from_official_names(unwrap_checkpoint(state_dict, result.notes))
    own = model.state_dict()
    _conv_mlp_to_linear(sd, own, result.notes)

    ckpt_has_fc = any(_is_classifier_key(k) for k in sd)
    if drop_head:
        sd = {k: v for k, v in sd.items() if not _is_classifier_key(k)}
        result.notes.append("kept the model's own classifier head.fc (drop_head=True)")
    elif not ckpt_has_fc:
        result.notes.append("kept the model's own classifier head.fc (the checkpoint has none)")
    keep_own_fc = drop_head or not ckpt_has_fc

    result.missing_keys = [k for k in own if k not in sd and not (keep_own_fc and _is_classifier_key(k))]
    result.unexpected_keys = [k for k in sd if k not in own]
    result.mismatched_keys = [
        f"{k} (checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)})"
        for k in sd if k in own and sd[k].shape != own[k].shape]

    if strict and (result.missing_keys or result.unexpected_keys or result.mismatched_keys):
        hint = ""
        if any(_is_classifier_key(k) for k in result.mismatched_keys):
            hint = " (a classifier for another number of classes? pass drop_head=True to keep the model's head)"
        elif any(".gamma" in k for k in result.missing_keys):
            hint = " (a model with layer scale and a checkpoint without it? check ls_init_value)"
        raise CheckpointMismatchError(f"checkpoint does not fit the model{hint}: {result}")

    loadable = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(loadable, strict=False)
    return result


def load_pretrained(model: ConvNeXt, path: str | PathLike, strict: bool = True,
                    drop_head: bool = False) -> LoadResult:
    """Load a local ``.safetensors`` or ``.pth`` / ``.pt`` / ``.bin`` checkpoint file into ``model``.

    Only tensors are read (``torch.load(weights_only=True)``); a file that wraps the state dict
    in ``{"model": ...}`` (official ConvNeXt) or ``{"state_dict": ...}`` is unwrapped. See
    :func:`load_timm_state_dict` for ``strict`` and ``drop_head``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        checkpoint = load_file(str(path), device="cpu")
    else:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle.UnpicklingError for optimizer state, args, ...
            raise RuntimeError(f"{path} holds more than tensors and plain containers; extract "
                               "the state dict in a trusted session and save it alone") from err
    return load_timm_state_dict(model, checkpoint, strict=strict, drop_head=drop_head)
