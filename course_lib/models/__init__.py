"""Models: a readable ViT/DeiT with timm parameter names, and convnet teachers from timm."""
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

__all__ = [
    "PRESETS", "TIMM_EQUIVALENT", "TEACHERS", "CheckpointMismatchError", "LoadResult",
    "VisionTransformer", "create_convnet", "create_vit", "load_pretrained", "load_timm_state_dict",
    "small_resnet", "unwrap_checkpoint", "vit_config",
]
