"""Detection and instance segmentation, the shared layer: data, R-CNN models, training, COCO
evaluation, drawing.

Notebooks 07 (ViTDet), 08 (frozen backbones) and 10 (Copy-Paste) all detect and segment
objects the same way, so the plumbing lives here once::

    from course_lib import detection as det

    cfg = det.world_config("study")                      # the calibrated detection world
    train_ds = det.DetectionDataset(cfg, "train")
    val_ds = det.DetectionDataset(cfg, "val")
    loader = det.make_loader(train_ds, batch_size=16, shuffle=True)
    model = det.build_detector(det.ConvBackbone(), train_ds.num_classes, masks=True, image_size=64)
    hist = det.train_detector(model, loader, det.DetTrainConfig(epochs=6))
    metrics = det.evaluate(model, val_ds, tiers=train_ds.tiers())
    metrics.summary["segm"]["AP"], metrics.tiers["bbox"]["rare"]

Samples are ``(image, target)`` in the torchvision detection convention: ``image`` a
``tv_tensors.Image`` float32 (3, H, W) in [0, 1]; ``target`` a dict with ``boxes``
(``tv_tensors.BoundingBoxes``, XYXY pixels, box = the visible mask's extent with the right/bottom
edge one past the last pixel), ``labels`` (int64, 1..K; 0 is the background), ``masks``
(``tv_tensors.Mask`` uint8 (n, H, W)), ``image_id``, ``area`` (mask pixels) and ``iscrowd``.
torchvision ``transforms.v2`` work on these pairs directly.

The models are torchvision's Faster / Mask R-CNN (Ren et al. 2015; He et al. 2017) around any
backbone that returns an ``OrderedDict`` of feature maps and has ``out_channels``; the
anchors (one size tuple per level) and the RoI poolers are matched to the backbone's levels
and strides. ``heads="slim"`` is the CPU-sized head set measured in docs/calibration.md.

Evaluation is the COCO protocol (pycocotools ``COCOeval``): AP averaged over IoU 0.50:0.95,
AP50, AP75 and AP for small / medium / large objects, for boxes and masks, in percent; plus
per-class AP and, as LVIS reports it, the mean AP of the rare / common / frequent classes
(tiers from the training instance counts, ``world.frequency_tiers``).

Real data for the ``paper`` profiles: :class:`PennFudanDataset` (170 images, pedestrians,
instance masks) and :class:`CocoDetectionDataset` (COCO 2017 instances), same sample format.

This is a shared task layer, not a paper: notebooks 07 ViTDet, 08 frozen backbones and 10
Copy-Paste (``course_lib.papers.vitdet``, ``.frozen_backbones``, ``.copy_paste``) use it, and
like every shared layer it imports no paper package. The modules, named for what they are:

``samples``     the sample format (``masks_to_boxes``), the datasets' base class, ``make_loader``
``world``       detection views of the offline world: ``world_config``, :class:`DetectionDataset`
``readers``     real data: :class:`PennFudanDataset`, :class:`CocoDetectionDataset`, ``get_dataset``
``models``      torchvision R-CNNs on any backbone, the slim heads, :class:`ConvBackbone`,
                ``PIPELINE_VERSION`` (part of every cached detector's key)
``training``    ``DetTrainConfig``, ``train_detector``, ``DetHistory``, ``cached_detector``
``evaluation``  pycocotools AP, rare / common / frequent tiers: ``evaluate``, ``coco_metrics``
``drawing``     ``render_detections``, ``draw_sample``, ``draw_predictions`` (galleries)

Every public name is re-exported here, so ``det.anything`` works as it always has.
"""
from __future__ import annotations

from course_lib.train import History
from course_lib.world import (FREQUENCY_TIERS, WORLD_MEAN, WORLD_STD, WorldConfig, WorldData,
                              frequency_tiers, load_world)

from .drawing import draw_predictions, draw_sample, render_detections
from .evaluation import SUMMARY_KEYS, DetMetrics, coco_metrics, evaluate, predict
from .models import (DEFAULT_HEADS, PIPELINE_VERSION, SLIM_HEADS, ConvBackbone, ConvBody,
                     backbone_levels, build_detector, default_anchor_sizes, paste_masks,
                     trainable_parameters)
from .readers import DATASETS, CocoDetectionDataset, PennFudanDataset, get_dataset
from .samples import collate, make_loader, masks_to_boxes
from .training import LOSS_NAMES, DetHistory, DetTrainConfig, cached_detector, train_detector
from .world import DetectionDataset, world_config

__all__ = [
    # samples, world, readers
    "masks_to_boxes", "collate", "make_loader", "world_config", "DetectionDataset",
    "PennFudanDataset", "CocoDetectionDataset", "DATASETS", "get_dataset",
    # models
    "PIPELINE_VERSION", "SLIM_HEADS", "DEFAULT_HEADS", "ConvBody", "ConvBackbone", "backbone_levels",
    "default_anchor_sizes", "build_detector", "paste_masks", "trainable_parameters",
    # training
    "DetTrainConfig", "LOSS_NAMES", "DetHistory", "train_detector", "cached_detector",
    # evaluation
    "SUMMARY_KEYS", "DetMetrics", "coco_metrics", "predict", "evaluate",
    # drawing
    "render_detections", "draw_sample", "draw_predictions",
    # the world's and train's names detection.py imported, still reachable as det.WORLD_MEAN etc.
    "FREQUENCY_TIERS", "WORLD_MEAN", "WORLD_STD", "WorldConfig", "WorldData", "frequency_tiers",
    "load_world", "History",
]
