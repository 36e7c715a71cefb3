"""Convnet teachers, built with timm.

DeiT distils a ViT from a convnet teacher (the paper uses RegNetY-16GF). At the course's scale the
teachers are small timm convnets trained from scratch by the notebooks:

* :func:`create_convnet` - any timm convnet by name (``resnet18``, ``resnet26d``, ``regnety_008``,
  ``convnext_atto``, ...), random weights (``pretrained=False``);
* :func:`small_resnet` - a light ResNet for 32-64 px images that trains fast on a laptop CPU.
"""
from __future__ import annotations

from typing import Any, Sequence

import timm
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

__all__ = ["TEACHERS", "create_convnet", "small_resnet"]

# suggested teachers, smallest first (any timm model name works in create_convnet)
TEACHERS: tuple[str, ...] = (
    "resnet10t", "resnet18", "resnet26d", "regnetx_002", "regnety_004", "regnety_008",
    "convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano", "convnext_tiny",
)


def create_convnet(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)``.

    Weights start random; the notebooks train the teacher (or load it from the artifact cache).
    ``name="small_resnet"`` builds :func:`small_resnet` instead.
    """
    if name == "small_resnet":
        return small_resnet(num_classes, **kwargs)
    if kwargs.pop("pretrained", False):
        raise ValueError("create_convnet builds random weights; load checkpoints explicitly")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)


def small_resnet(num_classes: int, width: int = 32, layers: Sequence[int] = (1, 1, 1, 1),
                 stem_stride: int = 2, in_chans: int = 3, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> ResNet:
    """A timm ResNet (BasicBlock) with a light stem for 32-64 px images.

    The ImageNet stem (7x7 stride-2 conv + max-pool, /4) leaves a 32 px image only 8x8 pixels
    before the first stage; a stride-1 3x3 stem keeps all 32x32 but is slow on a CPU. This
    preset uses a single 3x3 conv with ``stem_stride`` (default 2, no max-pool), so a 32 px
    image enters stage 1 at 16x16; stage widths are ``width * (1, 2, 4, 8)``.

    Measured train throughput (forward + backward + SGD step, 10 classes, 32 px, batch 128,
    torch 2.14 / timm 1.0.31, one thread of the shared 2-core CPU while another job used the
    other core; interleaved repeats, median):

    ======================================  ========  ======  ============
    model                                   params    img/s   vs resnet18
    ======================================  ========  ======  ============
    timm ``resnet18`` (ImageNet stem, /4)   11.2 M     111    1.0x
    timm ``resnet10t``                       4.9 M     186    1.7x
    ``small_resnet()`` (this default)        1.2 M     354    3.2x
    ``small_resnet(layers=(2, 2, 2, 2))``    2.8 M     197    1.8x
    ``small_resnet(stem_stride=1)``          1.2 M     109    1.0x
    ======================================  ========  ======  ============

    (With two threads on that loaded machine every model ran 3-5x slower than with one: when
    another job holds a core, ``torch.set_num_threads(1)`` is faster.)
    """
    if width % 2:
        raise ValueError("width must be even")
    channels = tuple(width * 2 ** i for i in range(len(layers)))
    # stem_type="deep" makes timm size stage 1's input as 2 * stem_width (= width); the deep
    # 3-conv stem itself is then replaced by one 3x3 conv and the max-pool removed.
    model = ResNet(block=BasicBlock, layers=tuple(layers), channels=channels, num_classes=num_classes,
                   in_chans=in_chans, stem_type="deep", stem_width=width // 2,
                   drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    model.conv1 = nn.Conv2d(in_chans, width, kernel_size=3, stride=stem_stride, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model
