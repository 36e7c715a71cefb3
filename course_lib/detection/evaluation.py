"""COCO evaluation (pycocotools ``COCOeval``): AP over IoU 0.50:0.95, AP50, AP75 and AP for
small / medium / large objects, for boxes and masks, in percent; per-class AP and, as LVIS
reports it, the mean AP of the rare / common / frequent classes (``world.frequency_tiers``).
"""
from __future__ import annotations

import contextlib
import io
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from course_lib.world import FREQUENCY_TIERS

from .samples import make_loader


# ----------------------------------------------------------------------------------------------
# evaluation


SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass
class DetMetrics:
    """COCO-style results, all in percent (NaN where undefined, e.g. APl without large
    objects). ``summary[iou_type]``: AP (IoU .50:.95), AP50, AP75, APs, APm, APl.
    ``per_class[iou_type][name]``: AP of each class (NaN for a class without ground truth).
    ``tiers[iou_type]``: mean per-class AP of the ``rare``/``common``/``frequent`` classes.
    ``images_per_s``: inference speed (model forward, no COCOeval)."""

    summary: dict[str, dict[str, float]]
    per_class: dict[str, dict[str, float]]
    tiers: dict[str, dict[str, float]]
    class_tiers: list[str]
    num_images: int
    images_per_s: float
    seconds: float

    def as_row(self, prefix: str = "") -> dict[str, float]:
        """Flat ``{prefix + "box_AP": ..., "box_AP50": ..., "box_APr": ..., "mask_AP": ...}``."""
        row: dict[str, float] = {}
        for iou, short in (("bbox", "box"), ("segm", "mask")):
            if iou not in self.summary:
                continue
            for k, v in self.summary[iou].items():
                row[f"{prefix}{short}_{k}"] = v
            for t, v in self.tiers.get(iou, {}).items():
                row[f"{prefix}{short}_AP{t[0]}"] = v
        return row

    def to_dict(self) -> dict:
        return asdict(self)


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def _coco_gt(targets: Sequence[dict], sizes: Sequence[tuple[int, int]], num_classes: int,
             class_names: Sequence[str]):
    from pycocotools.coco import COCO

    images, anns = [], []
    for img_id, (t, (H, W)) in enumerate(zip(targets, sizes)):
        images.append({"id": img_id, "height": H, "width": W})
        boxes = torch.as_tensor(t["boxes"]).float()
        masks = t.get("masks")
        for k in range(len(t["labels"])):
            x0, y0, x1, y1 = boxes[k].tolist()
            ann = {"id": len(anns) + 1, "image_id": img_id, "category_id": int(t["labels"][k]),
                   "bbox": [x0, y0, x1 - x0, y1 - y0],
                   "area": float(t["area"][k]) if "area" in t else (x1 - x0) * (y1 - y0),
                   "iscrowd": int(t["iscrowd"][k]) if "iscrowd" in t else 0}
            if masks is not None:
                ann["segmentation"] = _rle(np.asarray(masks[k]) > 0)
            anns.append(ann)
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": c + 1, "name": class_names[c]} for c in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _coco_dets(predictions: Sequence[dict], with_masks: bool) -> list[dict]:
    out = []
    for img_id, p in enumerate(predictions):
        boxes = p["boxes"].float()
        masks = p.get("masks") if with_masks else None
        for k in range(len(p["labels"])):
            x0, y0, x1, y1 = boxes[k].tolist()
            d = {"image_id": img_id, "category_id": int(p["labels"][k]),
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(p["scores"][k])}
            if masks is not None:
                m = masks[k]
                m = m[0] if m.ndim == 3 else m
                d["segmentation"] = _rle((m.float() >= 0.5).numpy() if m.is_floating_point()
                                         else m.numpy() > 0)
            out.append(d)
    return out


def coco_metrics(predictions: Sequence[dict], targets: Sequence[dict], num_classes: int,
                 class_names: Sequence[str] | None = None, tiers: Sequence[str] | None = None,
                 iou_types: Sequence[str] = ("bbox", "segm"), sizes=None,
                 area_scale: float = 1.0) -> dict:
    """COCOeval of ``predictions`` (torchvision outputs: boxes, scores, labels[, masks]) against
    ``targets`` (the dataset's targets, same order). Returns ``{"summary", "per_class",
    "tiers"}`` in percent. ``sizes``: (H, W) per image (default: the masks' or boxes' canvas).
    ``area_scale`` scales COCO's object-size limits (small < 32^2, large > 96^2 px) by its
    square, for images much smaller than COCO's."""
    from pycocotools.cocoeval import COCOeval

    class_names = list(class_names) if class_names is not None else [str(c + 1) for c in range(num_classes)]
    if sizes is None:
        sizes = []
        for t in targets:
            if t.get("masks") is not None:
                sizes.append(tuple(t["masks"].shape[-2:]))
            else:
                sizes.append(tuple(t["boxes"].canvas_size))
    gt = _coco_gt(targets, sizes, num_classes, class_names)
    summary, per_class, tier_ap = {}, {}, {}
    for iou in iou_types:
        dets = _coco_dets(predictions, iou == "segm")
        nan = float("nan")
        if not dets:
            summary[iou] = {k: 0.0 for k in SUMMARY_KEYS}
            pc = np.array([0.0 if len(gt.getAnnIds(catIds=[c + 1])) else nan for c in range(num_classes)])
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                dt = gt.loadRes(dets)
                ev = COCOeval(gt, dt, iou)
                a, b = (32 * area_scale) ** 2, (96 * area_scale) ** 2
                ev.params.areaRng = [[0, 1e10], [0, a], [a, b], [b, 1e10]]
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            summary[iou] = {k: (100 * float(v) if v >= 0 else nan) for k, v in zip(SUMMARY_KEYS, ev.stats[:6])}
            prec = ev.eval["precision"][:, :, :, 0, -1]            # (T, R, K) area all, maxDets 100
            pc = np.full(num_classes, nan)
            for k, cat in enumerate(ev.params.catIds):
                p = prec[:, :, k]
                p = p[p > -1]
                if p.size and len(gt.getAnnIds(catIds=[cat])):
                    pc[cat - 1] = 100 * float(p.mean())
        per_class[iou] = {class_names[c]: float(pc[c]) for c in range(num_classes)}
        if tiers is not None:
            tier_ap[iou] = {}
            for t in FREQUENCY_TIERS:
                vals = [pc[c] for c in range(num_classes) if tiers[c] == t and not np.isnan(pc[c])]
                tier_ap[iou][t] = float(np.mean(vals)) if vals else nan
    return {"summary": summary, "per_class": per_class, "tiers": tier_ap}


@torch.no_grad()
def predict(model: nn.Module, dataset, device=None, batch_size: int = 32, amp: str = "auto",
            keep_masks: bool = True) -> tuple[list[dict], list[dict], float]:
    """``(predictions, targets, seconds)`` over the whole dataset (CPU tensors, dataset order);
    ``seconds`` is the time spent in the model."""
    from course_lib.train import amp_settings

    p = next(iter(model.parameters()), None)
    device = torch.device(device) if device is not None else (p.device if p is not None else torch.device("cpu"))
    model.to(device)
    dtype, _ = amp_settings("none" if amp == "off" else amp, device)
    was = model.training
    model.eval()
    preds, targets, seconds = [], [], 0.0
    loader = make_loader(dataset, batch_size, shuffle=False, drop_last=False)
    try:
        for images, tgts in loader:
            t0 = time.perf_counter()
            with (torch.autocast(device.type, dtype=dtype) if dtype is not None
                  else contextlib.nullcontext()):
                out = model([im.to(device) for im in images])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds += time.perf_counter() - t0
            for o in out:
                o = {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
                     for k, v in o.items()}
                if "masks" in o and keep_masks:
                    o["masks"] = (o["masks"] >= 0.5).to(torch.uint8)
                preds.append(o)
            targets.extend(tgts)
    finally:
        model.train(was)
    return preds, targets, seconds


def evaluate(model: nn.Module, dataset, device=None, batch_size: int = 32,
             iou_types: Sequence[str] = ("bbox", "segm"), tiers: Sequence[str] | None = None,
             amp: str = "auto", area_scale: float | None = None) -> DetMetrics:
    """COCO evaluation of ``model`` on ``dataset`` (see :class:`DetMetrics`).

    ``tiers``: class tier per class; default ``dataset.tiers()`` (for a world val/test split the
    tiers of its train split). Pass ``train_ds.tiers()`` when training on a subset. ``segm``
    is skipped for a model without a mask head. ``area_scale`` (default
    ``dataset.area_scale``: 1 for real photos, image_size / 256 for the world) scales COCO's
    small / medium / large limits (32^2 and 96^2 px) by its square: at 64 px the limits are
    8^2 and 24^2 px.
    """
    preds, targets, seconds = predict(model, dataset, device, batch_size, amp)
    roi = getattr(model, "roi_heads", None)
    has_masks = roi.has_mask() if roi is not None else bool(preds) and "masks" in preds[0]
    iou_types = tuple(t for t in iou_types if t == "bbox" or has_masks)
    if tiers is None and hasattr(dataset, "tiers"):
        tiers = dataset.tiers()
    if area_scale is None:
        area_scale = getattr(dataset, "area_scale", 1.0)
    res = coco_metrics(preds, targets, dataset.num_classes, dataset.class_names, tiers, iou_types,
                       area_scale=area_scale)
    return DetMetrics(summary=res["summary"], per_class=res["per_class"], tiers=res["tiers"],
                      class_tiers=list(tiers) if tiers is not None else [],
                      num_images=len(preds), images_per_s=len(preds) / max(seconds, 1e-9),
                      seconds=seconds)
