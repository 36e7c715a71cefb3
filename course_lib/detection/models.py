"""The detectors: torchvision's Faster / Mask R-CNN (Ren et al. 2015; He et al. 2017) around any
backbone that returns an ``OrderedDict`` of feature maps and has ``out_channels``, the slim
CPU-sized heads (docs/calibration.md), and a small ResNet-style backbone with an FPN
(:class:`ConvBackbone`). :data:`PIPELINE_VERSION` is part of every cached detector's key.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.world import WORLD_MEAN, WORLD_STD
from course_lib.models import count_params


# ----------------------------------------------------------------------------------------------
# backbone


def _norm(kind: str, c: int) -> nn.Module:
    if kind == "gn":
        return nn.GroupNorm(min(8, c), c)
    if kind == "bn":
        return nn.BatchNorm2d(c)
    raise ValueError(f"norm={kind!r}: allowed 'gn', 'bn'")


class _Block(nn.Module):
    """ResNet basic block (He et al. 2016): two 3x3 convs and a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = _norm(norm, cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout))

    def forward(self, x):
        y = F.relu(self.n1(self.conv1(x)))
        y = self.n2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ConvBody(nn.Module):
    """The ResNet-style trunk: a stride-4 stem and one stage per level (stride 4, 8, 16, 32).

    ``forward`` returns an ``OrderedDict`` ``{"0": stride 4, "1": stride 8, ...}``;
    ``channels`` lists each level's channels.
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128), blocks: int | Sequence[int] = 1,
                 norm: str = "gn", in_channels: int = 3):
        super().__init__()
        widths = tuple(widths)
        blocks = (blocks,) * len(widths) if isinstance(blocks, int) else tuple(blocks)
        stem = widths[0] // 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, 3, 2, 1, bias=False), _norm(norm, stem), nn.ReLU(inplace=True),
            nn.Conv2d(stem, widths[0], 3, 2, 1, bias=False), _norm(norm, widths[0]), nn.ReLU(inplace=True),
        )
        stages, cin = [], widths[0]
        for k, (w, b) in enumerate(zip(widths, blocks)):
            layers = [_Block(cin, w, 1 if k == 0 else 2, norm)]
            layers += [_Block(w, w, 1, norm) for _ in range(b - 1)]
            stages.append(nn.Sequential(*layers))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.channels = list(widths)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x) -> "OrderedDict[str, torch.Tensor]":
        x = self.stem(x)
        out = OrderedDict()
        for k, stage in enumerate(self.stages):
            x = stage(x)
            out[str(k)] = x
        return out


class _Classifier(nn.Module):
    """``body`` + global average pool + linear: pretrain a backbone with ``train.fit``.
    The body is shared (not copied): training this trains the backbone."""

    def __init__(self, body: nn.Module, channels: int, num_classes: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        feats = self.body(x)
        last = next(reversed(feats.values()))
        return self.head(last.mean((2, 3)))


class ConvBackbone(nn.Module):
    """Small ResNet-style detection backbone: :class:`ConvBody` + an FPN (Lin et al. 2017).

    ``widths``: channels of the stages at strides 4, 8, 16 (, 32): three levels by default,
    ``levels=4`` adds a stride-32 stage. ``fpn=True`` merges the levels top-down
    (``torchvision.ops.FeaturePyramidNetwork``); ``fpn=False`` only projects each level to
    ``out_channels`` with a 1x1 conv. ``norm="gn"`` (GroupNorm, independent of the batch, so
    a frozen body behaves the same in train and eval mode) or ``"bn"``.
    ``forward(images)`` -> ``OrderedDict`` ``{"0": (B, C, H/4, W/4), "1": ..., ...}`` with
    ``C = out_channels``. ``.body`` is the trunk; ``.classifier(num_classes)`` wraps it for
    classification pre-training with ``course_lib.train.fit``.
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128), out_channels: int = 64,
                 levels: int | None = None, blocks: int | Sequence[int] = 1, fpn: bool = True,
                 norm: str = "gn", in_channels: int = 3):
        super().__init__()
        widths = tuple(widths)
        if levels is not None:
            base = (32, 64, 128, 256)
            widths = tuple(widths[k] if k < len(widths) else base[k] * widths[0] // 32
                           for k in range(levels))
        if not 1 <= len(widths) <= 4:
            raise ValueError(f"{len(widths)} levels: allowed 1..4")
        self.body = ConvBody(widths, blocks, norm, in_channels)
        self.out_channels = out_channels
        self.use_fpn = fpn
        if fpn:
            from torchvision.ops import FeaturePyramidNetwork

            self.fpn = FeaturePyramidNetwork(list(widths), out_channels)
        else:
            self.proj = nn.ModuleList(nn.Conv2d(w, out_channels, 1) for w in widths)

    def classifier(self, num_classes: int) -> nn.Module:
        """A classifier sharing this backbone's ``.body`` (GAP of the last level + linear)."""
        return _Classifier(self.body, self.body.channels[-1], num_classes)

    def forward(self, x) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body(x)
        if self.use_fpn:
            return self.fpn(feats)
        return OrderedDict((k, p(v)) for (k, v), p in zip(feats.items(), self.proj))


# ----------------------------------------------------------------------------------------------
# detector


# Bump when a change here (heads, transforms, losses) changes what a cached detector would be.
PIPELINE_VERSION = 2  # 2: slim Mask R-CNN heads pool 7x7 RoIs for masks (14x14 masks), not 14x14

SLIM_HEADS = dict(box_convs=0, box_fc=128, mask_convs=2, mask_dim=64, rpn_convs=1,
                  box_batch=32, rpn_pre_nms_top_n=200, rpn_post_nms_top_n=100, roi_size=7,
                  detections=32, mask_roi_size=7)
DEFAULT_HEADS = dict(box_convs=0, box_fc=1024, mask_convs=4, mask_dim=256, rpn_convs=1,
                     box_batch=512, rpn_pre_nms_top_n=None, rpn_post_nms_top_n=None, roi_size=7,
                     detections=100, mask_roi_size=14)


@torch.no_grad()
def backbone_levels(backbone: nn.Module, image_size: int = 64) -> list[tuple[str, int]]:
    """``[(name, stride), ...]`` of a backbone's output maps, found by one forward pass of a
    zero image (in eval mode; the training mode is restored)."""
    was = backbone.training
    backbone.eval()
    try:
        p = next(iter(backbone.parameters()), None)
        dev = p.device if p is not None else torch.device("cpu")
        feats = backbone(torch.zeros(1, 3, image_size, image_size, device=dev))
    finally:
        backbone.train(was)
    if not isinstance(feats, Mapping):
        raise TypeError("the backbone must return an OrderedDict of feature maps")
    return [(k, max(1, round(image_size / v.shape[-1]))) for k, v in feats.items()]


def default_anchor_sizes(strides: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """Two anchor sizes per level (2 and 4 x the stride); a single level gets three
    (1, 2 and 4 x the stride... times 2), so it still covers small to large objects."""
    if len(strides) == 1:
        s = strides[0]
        return ((s, 2 * s, 4 * s),)
    return tuple((2 * s, 4 * s) for s in strides)


def _heads(heads: str | Mapping) -> dict:
    if isinstance(heads, str):
        if heads == "slim":
            return dict(SLIM_HEADS)
        if heads == "default":
            return dict(DEFAULT_HEADS)
        raise ValueError(f"heads={heads!r}: allowed 'slim', 'default' or a dict")
    unknown = set(heads) - set(SLIM_HEADS)
    if unknown:
        raise ValueError(f"unknown head settings {sorted(unknown)}; allowed {sorted(SLIM_HEADS)}")
    return {**SLIM_HEADS, **heads}


def build_detector(backbone: nn.Module, num_classes: int, masks: bool = True,
                   image_size: int = 64, heads: str | Mapping = "slim",
                   anchor_sizes: Sequence[Sequence[int]] | None = None,
                   aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                   image_mean: Sequence[float] = WORLD_MEAN, image_std: Sequence[float] = WORLD_STD,
                   **rcnn_kwargs):
    """Faster R-CNN (``masks=False``) or Mask R-CNN around ``backbone``.

    ``backbone``: any module with ``out_channels`` whose forward returns an ``OrderedDict`` of
    maps; the levels and strides are probed once (:func:`backbone_levels`), anchors (one size
    tuple per level, ``aspect_ratios`` at every location) and ``MultiScaleRoIAlign`` are matched
    to them. ``num_classes`` excludes the background. ``image_size``: the transform's
    ``min_size = max_size`` (no resizing of the world's square images; real images are scaled
    so the longer side is ``image_size``). ``heads``: ``"slim"`` (TwoMLPHead 128-d, 32 sampled
    RoIs per image, RPN top-n 200 before / 100 after NMS, 2 x 64-ch mask convs on 7 x 7 RoIs, i.e.
    14 x 14 masks (an object of the 64 px world is 18-35 px wide, so a 14 x 14 mask is close to its own
    resolution; 28 x 28 masks cost 1.6x the training time and 1.5x the evaluation), at most 32
    detections per image: the world has <= 16 objects and Mask R-CNN pastes every detection's
    mask one by one on the CPU), ``"default"``
    (torchvision's) or a dict overriding slim keys: ``box_convs`` (conv layers before the box
    FC, the 4conv1fc head of Mask R-CNN when 4), ``box_fc``, ``mask_convs``, ``mask_dim``,
    ``rpn_convs``, ``box_batch``, ``rpn_pre_nms_top_n``, ``rpn_post_nms_top_n``, ``roi_size``,
    ``mask_roi_size`` (the mask head's RoIAlign output; masks are twice that),
    ``detections``.
    Other keyword arguments go to the torchvision constructor.
    """
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import (FastRCNNConvFCHead, FastRCNNPredictor,
                                                          TwoMLPHead)
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    if not hasattr(backbone, "out_channels"):
        raise TypeError("the backbone needs an `out_channels` attribute")
    h = _heads(heads)
    levels = backbone_levels(backbone, image_size)
    names = [n for n, _ in levels]
    strides = [s for _, s in levels]
    if anchor_sizes is None:
        anchor_sizes = default_anchor_sizes(strides)
    anchor_sizes = tuple(tuple(int(a) for a in sizes) for sizes in anchor_sizes)
    if len(anchor_sizes) != len(names):
        raise ValueError(f"{len(anchor_sizes)} anchor size tuples for {len(names)} levels")
    anchors = AnchorGenerator(anchor_sizes, (tuple(aspect_ratios),) * len(anchor_sizes))
    C = backbone.out_channels
    rpn_head = RPNHead(C, anchors.num_anchors_per_location()[0], conv_depth=h["rpn_convs"])
    r = h["roi_size"]
    box_pool = MultiScaleRoIAlign(names, output_size=r, sampling_ratio=2)
    if h["box_convs"] > 0:
        box_head = FastRCNNConvFCHead((C, r, r), [C] * h["box_convs"], [h["box_fc"]],
                                      norm_layer=partial(nn.GroupNorm, min(8, C)))
    else:
        box_head = TwoMLPHead(C * r * r, h["box_fc"])
    kw: dict[str, Any] = dict(
        min_size=image_size, max_size=image_size, image_mean=list(image_mean),
        image_std=list(image_std), rpn_anchor_generator=anchors, rpn_head=rpn_head,
        box_roi_pool=box_pool, box_head=box_head,
        box_predictor=FastRCNNPredictor(h["box_fc"], num_classes + 1),
        box_batch_size_per_image=h["box_batch"], box_detections_per_img=h["detections"],
    )
    if h["rpn_pre_nms_top_n"] is not None:
        kw.update(rpn_pre_nms_top_n_train=h["rpn_pre_nms_top_n"],
                  rpn_pre_nms_top_n_test=h["rpn_pre_nms_top_n"])
    if h["rpn_post_nms_top_n"] is not None:
        kw.update(rpn_post_nms_top_n_train=h["rpn_post_nms_top_n"],
                  rpn_post_nms_top_n_test=h["rpn_post_nms_top_n"])
    kw.update(rcnn_kwargs)
    if not masks:
        model = FasterRCNN(backbone, **kw)
    else:
        kw.setdefault("mask_roi_pool", MultiScaleRoIAlign(names, output_size=h["mask_roi_size"], sampling_ratio=2))
        kw.setdefault("mask_head", MaskRCNNHeads(C, [h["mask_dim"]] * h["mask_convs"], 1))
        kw.setdefault("mask_predictor", MaskRCNNPredictor(h["mask_dim"], h["mask_dim"], num_classes + 1))
        model = MaskRCNN(backbone, **kw)
    _fast_transform(model.transform)
    model.num_classes = num_classes
    model.levels = levels
    return model


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Paste per-box mask probabilities (N, 1, M, M) into (N, 1, H, W) image-sized maps in one
    ``grid_sample`` (zeros outside the box). Same role as torchvision's ``paste_masks_in_image``,
    which loops over the masks in Python (slow on the CPU) and rounds the boxes outwards; this one
    inverts the mask targets of training (``roi_align`` with ``aligned=False``) exactly, so a
    ground-truth mask survives the round trip target -> paste better (tests/test_detection.py)."""
    H, W = size
    n = len(masks)
    if n == 0:
        return masks.new_zeros(0, 1, H, W)
    boxes = boxes.to(masks.dtype)
    x0, y0, x1, y1 = boxes.unbind(1)
    # pixel i sits at coordinate i, as in the training targets (roi_align with aligned=False)
    xs = torch.arange(W, device=masks.device, dtype=masks.dtype)
    ys = torch.arange(H, device=masks.device, dtype=masks.dtype)
    gx = (xs[None] - x0[:, None]) / (x1 - x0).clamp(min=1e-2)[:, None] * 2 - 1      # (N, W)
    gy = (ys[None] - y0[:, None]) / (y1 - y0).clamp(min=1e-2)[:, None] * 2 - 1      # (N, H)
    grid = torch.stack([gx[:, None, :].expand(n, H, W), gy[:, :, None].expand(n, H, W)], -1)
    return F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _fast_transform(transform: nn.Module) -> nn.Module:
    """The model's GeneralizedRCNNTransform with :func:`paste_masks` in ``postprocess``."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

    class _Transform(GeneralizedRCNNTransform):
        def postprocess(self, result, image_shapes, original_image_sizes):
            if self.training:
                return result
            for i, (pred, im_s, o_im_s) in enumerate(zip(result, image_shapes, original_image_sizes)):
                boxes = resize_boxes(pred["boxes"], im_s, o_im_s)
                result[i]["boxes"] = boxes
                if "masks" in pred:
                    result[i]["masks"] = paste_masks(pred["masks"], boxes, o_im_s)
            return result

    transform.__class__ = _Transform
    return transform


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (``models.count_params``)."""
    return count_params(model, trainable=True)
