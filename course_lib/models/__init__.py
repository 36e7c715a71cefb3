"""Models: a readable ViT/DeiT with timm parameter names, and convnet teachers from timm; the
course's one parameter counter (:func:`count_params`)."""
from torch import nn

from .convnets import TEACHERS, create_convnet, small_resnet
from .vit import (
    PRESETS,
    TIMM_EQUIVALENT,
    CheckpointMismatchError,
    LoadResult,
    VisionTransformer,
    create_vit,
    load_pretrained,
    load_timm_state_dict,
    unwrap_checkpoint,
    vit_config,
)



def count_params(module: nn.Module | None, trainable: bool = False) -> int:
    """Parameters of ``module`` (0 for ``None``); a tensor shared by several layers counts once
    (``module.parameters()`` yields it once). ``trainable``: only those with ``requires_grad``."""
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


__all__ = [
    "count_params", "PRESETS", "TIMM_EQUIVALENT", "TEACHERS", "CheckpointMismatchError", "LoadResult",
    "VisionTransformer", "create_convnet", "create_vit", "load_pretrained", "load_timm_state_dict",
    "small_resnet", "unwrap_checkpoint", "vit_config",
]
