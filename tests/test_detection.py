"""course_lib.detection: sample format, COCO evaluation, detectors, training, cache, readers."""
from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from course_lib import detection as det
from course_lib.world import WorldConfig, frequency_tiers

matplotlib.use("Agg")

TINY = dict(num_images=12, eval_images=6, image_size=64, num_classes=4, objects=(2, 4),
            scale=(0.3, 0.5), occlusion=0.5, clutter=1, imbalance=1.5, seed=3)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("detdata")


@pytest.fixture(scope="module")
def tiny(root):
    cfg = WorldConfig(**TINY)
    return det.DetectionDataset(cfg, "train", root), det.DetectionDataset(cfg, "val", root)


def _plain(t):
    return t.as_subclass(torch.Tensor) if isinstance(t, torch.Tensor) else t


def _perfect(targets):
    return [{"boxes": _plain(t["boxes"]).clone(), "labels": t["labels"].clone(),
             "scores": torch.linspace(1.0, 0.5, len(t["labels"])),
             "masks": _plain(t["masks"]).clone()[:, None]} for t in targets]


# ---------------------------------------------------------------------------------------------
# data


def test_world_config_profiles():
    study, smoke = det.world_config("study"), det.world_config("smoke")
    assert study.objects[1] > 1 and study.imbalance > 0 and study.occlusion > 0
    assert smoke.num_images < study.num_images and smoke.image_size == study.image_size
    assert det.world_config("study", num_images=7).num_images == 7
    with pytest.raises(ValueError):
        det.world_config("nope")


def test_target_format(tiny):
    ds, _ = tiny
    assert ds.num_classes == 4 and ds.class_names == ("circle", "square", "triangle", "star")
    img, t = ds[1]
    assert isinstance(img, tv_tensors.Image) and img.dtype == torch.float32
    assert img.shape == (3, 64, 64) and 0 <= img.min() and img.max() <= 1
    n = len(t["labels"])
    assert n >= 1
    assert isinstance(t["boxes"], tv_tensors.BoundingBoxes) and t["boxes"].shape == (n, 4)
    assert t["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
    assert tuple(t["boxes"].canvas_size) == (64, 64)
    assert t["labels"].dtype == torch.int64 and t["labels"].min() >= 1 and t["labels"].max() <= 4
    assert isinstance(t["masks"], tv_tensors.Mask) and t["masks"].dtype == torch.uint8
    assert t["masks"].shape == (n, 64, 64)
    assert t["image_id"] == 1 and t["iscrowd"].tolist() == [0] * n
    assert t["area"].dtype == torch.float32


def test_masks_and_boxes_agree(tiny):
    ds, _ = tiny
    for i in range(len(ds)):
        _, t = ds[i]
        m = _plain(t["masks"]).bool()
        assert m.flatten(1).any(1).all()                     # no empty instance
        assert (m.sum(0) <= 1).all()                         # visible masks do not overlap
        torch.testing.assert_close(_plain(t["boxes"]), det.masks_to_boxes(m))
        torch.testing.assert_close(t["area"], m.flatten(1).sum(1).float())
        # the box is the mask's extent: x1/y1 one past the last pixel
        ys, xs = m[0].nonzero(as_tuple=True)
        assert _plain(t["boxes"])[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_v2_transform_moves_boxes_with_masks(tiny, root):
    ds, _ = tiny
    flipped = det.DetectionDataset(ds.config, "train", root, transform=v2.RandomHorizontalFlip(p=1.0))
    img0, t0 = ds[2]
    img1, t1 = flipped[2]
    torch.testing.assert_close(_plain(img1), _plain(img0).flip(-1))
    torch.testing.assert_close(_plain(t1["masks"]), _plain(t0["masks"]).flip(-1))
    torch.testing.assert_close(_plain(t1["boxes"]), det.masks_to_boxes(_plain(t1["masks"])))
    # a crop that removes objects: area/iscrowd follow the sanitized labels
    crop = v2.Compose([v2.RandomCrop(24), v2.SanitizeBoundingBoxes()])
    cropped = det.DetectionDataset(ds.config, "train", root, transform=crop)
    torch.manual_seed(0)
    _, t = cropped[2]
    n = len(t["labels"])
    assert t["boxes"].shape == (n, 4) and t["masks"].shape[0] == n == len(t["area"]) == len(t["iscrowd"])


def test_counts_tiers_subset(tiny):
    ds, val = tiny
    counts = ds.instance_counts()
    total = sum(len(ds[i][1]["labels"]) for i in range(len(ds)))
    assert counts.sum() == total and counts.shape == (4,)
    for c in range(4):
        assert counts[c] == sum(int((ds[i][1]["labels"] == c + 1).sum()) for i in range(len(ds)))
    assert ds.tiers() == frequency_tiers(counts)
    assert val.tiers() == ds.tiers()                      # evaluation uses the TRAIN counts
    half, tenth = ds.subset(0.5, seed=1), ds.subset(0.1, seed=1)
    assert len(half) == 6 and len(tenth) == 1
    assert set(tenth.indices) <= set(half.indices)        # nested subsets
    assert half.instance_counts().sum() == sum(len(half[i][1]["labels"]) for i in range(len(half)))
    assert half[0][1]["image_id"] == half.indices[0]
    with pytest.raises(ValueError):
        ds.subset(0)


def test_loader_and_batch_transform(tiny):
    ds, _ = tiny
    seen = []

    def bt(images, targets):
        seen.append(len(images))
        return images[::-1], targets[::-1]

    loader = det.make_loader(ds, 4, shuffle=False, batch_transform=bt)
    images, targets = next(iter(loader))
    assert seen == [4] and isinstance(images, list) and len(targets) == 4
    assert [t["image_id"] for t in targets] == [3, 2, 1, 0]
    a = [t["image_id"] for _, ts in det.make_loader(ds, 4, seed=5) for t in ts]
    b = [t["image_id"] for _, ts in det.make_loader(ds, 4, seed=5) for t in ts]
    assert a == b and sorted(a) != a and len(a) == 12


# ---------------------------------------------------------------------------------------------
# evaluation


def test_evaluate_perfect_and_shifted(tiny):
    _, val = tiny
    targets = [val[i][1] for i in range(len(val))]
    tiers = val.tiers()
    perfect = det.coco_metrics(_perfect(targets), targets, 4, val.class_names, tiers)
    for iou in ("bbox", "segm"):
        assert perfect["summary"][iou]["AP"] == pytest.approx(100.0)
        assert perfect["summary"][iou]["AP50"] == pytest.approx(100.0)
        present = [c for c in range(4) if any((t["labels"] == c + 1).any() for t in targets)]
        assert all(perfect["per_class"][iou][val.class_names[c]] == pytest.approx(100.0) for c in present)
        assert all(v == pytest.approx(100.0) for v in perfect["tiers"][iou].values() if v == v)
    shifted = _perfect(targets)
    for p in shifted:
        p["boxes"] = p["boxes"] + torch.tensor([3.0, 3.0, 3.0, 3.0])
    res = det.coco_metrics(shifted, targets, 4, val.class_names, tiers)
    assert res["summary"]["bbox"]["AP"] < 90 and res["summary"]["bbox"]["AP50"] > res["summary"]["bbox"]["AP"]
    assert res["summary"]["segm"]["AP"] == pytest.approx(100.0)   # the masks did not move
    # drop every prediction of one class: its AP is 0, the others stay 100
    c = int(targets[0]["labels"][0])
    dropped = _perfect(targets)
    for p in dropped:
        keep = p["labels"] != c
        for k in ("boxes", "labels", "scores", "masks"):
            p[k] = p[k][keep]
    res = det.coco_metrics(dropped, targets, 4, val.class_names, tiers, iou_types=("bbox",))
    assert res["per_class"]["bbox"][val.class_names[c - 1]] == 0.0
    assert 0 < res["summary"]["bbox"]["AP"] < 100
    tier = tiers[c - 1]
    same = [k for k in range(4) if tiers[k] == tier and k != c - 1
            and any((t["labels"] == k + 1).any() for t in targets)]
    assert res["tiers"]["bbox"][tier] == pytest.approx(100.0 * len(same) / (len(same) + 1))


def test_area_scale_moves_size_buckets(tiny):
    _, val = tiny
    targets = [val[i][1] for i in range(len(val))]
    coco = det.coco_metrics(_perfect(targets), targets, 4, iou_types=("bbox",))["summary"]["bbox"]
    assert np.isnan(coco["APl"])            # at 64 px nothing is "large" by COCO's limits
    scaled = det.coco_metrics(_perfect(targets), targets, 4, iou_types=("bbox",),
                              area_scale=0.25)["summary"]["bbox"]
    assert scaled["APm"] == pytest.approx(100.0)


# ---------------------------------------------------------------------------------------------
# models


class _OneLevel(nn.Module):
    """A plain single-map backbone (stride 16), like ViTDet's last ViT map."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 16, 16)
        self.out_channels = 32

    def forward(self, x):
        return {"feat": self.conv(x)}


def test_conv_backbone_levels_and_classifier():
    torch.manual_seed(0)
    bb = det.ConvBackbone(out_channels=48)
    x = torch.randn(2, 3, 64, 64)
    out = bb(x)
    assert list(out) == ["0", "1", "2"] and bb.out_channels == 48
    assert [tuple(v.shape) for v in out.values()] == [(2, 48, 16, 16), (2, 48, 8, 8), (2, 48, 4, 4)]
    assert det.backbone_levels(det.ConvBackbone(levels=4)) == [("0", 4), ("1", 8), ("2", 16), ("3", 32)]
    clf = bb.classifier(7)
    assert clf(x).shape == (2, 7)
    body_ids = {id(p) for p in bb.body.parameters()}
    assert body_ids <= {id(p) for p in clf.parameters()}     # shared, so pretraining trains bb
    assert all(id(p) not in body_ids for p in bb.fpn.parameters())
    plain = det.ConvBackbone(fpn=False, levels=1)
    assert list(plain(x)) == ["0"]


@pytest.mark.parametrize("kind", ["one_level", "four_levels"])
def test_build_detector_matches_levels(kind):
    torch.manual_seed(0)
    bb = _OneLevel() if kind == "one_level" else det.ConvBackbone(levels=4, widths=(16, 16, 32, 32),
                                                                 out_channels=32)
    model = det.build_detector(bb, 3, masks=True, image_size=64)
    n_levels = 1 if kind == "one_level" else 4
    assert len(model.levels) == n_levels
    assert len(model.rpn.anchor_generator.sizes) == n_levels
    assert model.roi_heads.box_roi_pool.featmap_names == [n for n, _ in model.levels]
    assert model.transform.min_size == (64,) and model.transform.max_size == 64
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    imgs = [torch.rand(3, 64, 64) for _ in range(2)]
    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 5:30, 8:40] = 1
    masks[1, 35:60, 30:50] = 1
    tgt = {"boxes": det.masks_to_boxes(masks), "labels": torch.tensor([1, 3]), "masks": masks}
    model.train()
    losses = model(imgs, [tgt, tgt])
    assert set(losses) == set(det.LOSS_NAMES)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model(imgs)
    assert len(out) == 2 and {"boxes", "labels", "scores", "masks"} <= set(out[0])


def test_heads_faster_rcnn_and_capacity():
    bb = det.ConvBackbone(widths=(16, 16, 32), out_channels=32)
    faster = det.build_detector(bb, 2, masks=False)
    assert not faster.roi_heads.has_mask()
    assert faster.rpn._pre_nms_top_n["training"] == 200 and faster.roi_heads.fg_bg_sampler.batch_size_per_image == 32
    big = det.build_detector(det.ConvBackbone(widths=(16, 16, 32), out_channels=32), 2,
                             heads=dict(box_convs=2, mask_convs=3, mask_dim=16, rpn_convs=2))
    assert len(big.roi_heads.mask_head) == 3
    assert det.trainable_parameters(big) > det.trainable_parameters(faster)
    with pytest.raises(ValueError):
        det.build_detector(bb, 2, heads=dict(wrong=1))
    default = det.build_detector(det.ConvBackbone(widths=(16, 16, 32), out_channels=32), 2, heads="default")
    assert default.roi_heads.box_head.fc6.out_features == 1024


# ---------------------------------------------------------------------------------------------
# training, cache, drawing


def _small_model(num_classes):
    torch.manual_seed(0)
    return det.build_detector(det.ConvBackbone(widths=(16, 16, 32), out_channels=32), num_classes)


def test_train_two_steps_and_frozen_params(tiny):
    ds, val = tiny
    model = _small_model(ds.num_classes)
    for p in model.backbone.body.parameters():
        p.requires_grad_(False)
    frozen = [p.clone() for p in model.backbone.body.parameters()]
    head = model.roi_heads.box_predictor.cls_score.weight.clone()
    loader = det.make_loader(ds, 4, shuffle=True)
    cfg = det.DetTrainConfig(epochs=3, max_steps=2, lr=1e-3, warmup_iters=1)
    hist = det.train_detector(model, loader, cfg, device="cpu", progress=False)
    assert hist.steps["step"] == [1, 2] and len(hist.epochs) == 1
    rec = hist.epochs[0]
    for k in ("loss", *det.LOSS_NAMES, "time_s", "images_per_s", "peak_mem_mb"):
        assert np.isfinite(rec[k]), k
    # on CPU: the epoch's peak RSS above its start, 0 when the allocator reuses memory that
    # earlier tests freed (seen in CI), so only its sign is certain
    assert rec["images"] == 8 and 0 < rec["loss"] < 20 and rec["peak_mem_mb"] >= 0
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.backbone.body.parameters()))
    assert not torch.equal(head, model.roi_heads.box_predictor.cls_score.weight)
    assert hist.steps["lr"][0] < hist.steps["lr"][1] == pytest.approx(1e-3)   # warm-up
    m = det.evaluate(model, val, device="cpu", batch_size=8)
    assert set(m.summary) == {"bbox", "segm"} and m.num_images == len(val)
    assert 0 <= m.summary["bbox"]["AP50"] <= 100 and m.images_per_s > 0
    row = m.as_row("x_")
    assert {"x_box_AP", "x_mask_AP50", "x_box_APr", "x_mask_APf"} <= set(row)
    assert m.class_tiers == ds.tiers()


def test_train_detector_shows_one_bar_per_run(tiny, monkeypatch, capsys):
    from course_lib import train as course_train

    closed = []

    class Bar:  # tqdm stand-in: records (desc, n, total) when the bar is closed
        def __init__(self, iterable=None, total=None, desc=None, disable=False, **kw):
            self.total, self.desc, self.disable, self.n = total, desc, disable, 0
            assert not disable  # progress is on by default

        def update(self, k=1):
            self.n += k

        def set_postfix(self, *a, **kw):
            pass

        def refresh(self):
            pass

        def close(self):
            closed.append((self.desc, self.n, self.total))

        @staticmethod
        def write(s, **kw):
            print(s)

    monkeypatch.setattr(course_train, "progress_bar", Bar)
    ds, _ = tiny
    loader = det.make_loader(ds, 4)
    steps = len(loader) + 1  # more than one epoch, ended by max_steps
    hist = det.train_detector(_small_model(ds.num_classes), loader,
                              det.DetTrainConfig(epochs=3, max_steps=steps, warmup_iters=1),
                              device="cpu", desc="tiny run")
    assert len(hist.epochs) == 2
    # one bar for the run, named; it ends full (tqdm.notebook paints n < total red)
    assert closed == [("tiny run", steps, steps)]
    out = capsys.readouterr().out
    assert out.count("tiny run:") == 1 and f"{steps} steps" in out


def test_detection_callers_show_progress():
    """The paper packages train their detectors with a named progress bar, not silently."""
    import importlib
    import inspect
    import pkgutil
    import re

    for name in ("vitdet", "frozen_backbones", "copy_paste"):
        pkg = importlib.import_module(f"course_lib.papers.{name}")
        source = "".join(inspect.getsource(importlib.import_module(f"{pkg.__name__}.{m.name}"))
                         for m in pkgutil.iter_modules(pkg.__path__))
        calls = re.findall(r"det\.train_detector\((.*?)\)\n", source, re.S)
        assert calls, pkg.__name__
        for call in calls:
            assert "progress=False" not in call and "desc=" in call, (pkg.__name__, call)


def test_bf16_autocast_on_cpu(tiny):
    ds, _ = tiny
    model = _small_model(ds.num_classes)
    hist = det.train_detector(model, det.make_loader(ds, 2), det.DetTrainConfig(max_steps=1, amp="bf16"),
                              device="cpu", progress=False)
    assert np.isfinite(hist.steps["loss"][0]) and hist.epochs[0]["peak_mem_mb"] >= 0


def test_peak_memory_is_per_epoch(tiny):
    """The CPU peak is the epoch's own: a 256 MiB buffer touched in epoch 1 only shows in epoch 1
    (a process-wide maximum would repeat it in epoch 2). 256 MiB is far above glibc's mmap
    threshold, so it comes from the OS and goes back to it whatever earlier tests freed."""
    ds, _ = tiny

    class Hog(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m, self.calls = m, 0

        def forward(self, images, targets=None):
            self.calls += 1
            if self.calls == 1:
                torch.ones(64 * 2**20).sum()  # 256 MiB of float32, written and freed
            return self.m(images, targets)

    loader = det.make_loader(torch.utils.data.Subset(ds, range(2)), 2)
    hist = det.train_detector(Hog(_small_model(ds.num_classes)), loader, det.DetTrainConfig(epochs=2),
                              device="cpu", progress=False)
    first, second = (e["peak_mem_mb"] for e in hist.epochs)
    if np.isnan(first):
        pytest.skip("no /proc/self/clear_refs here: the CPU peak is not measurable")
    assert first > 200 and second < 100, (first, second)


def test_cached_detector_hit(tiny, tmp_path):
    ds, _ = tiny
    calls = []

    def train(model):
        calls.append(1)
        return det.train_detector(model, det.make_loader(ds, 4), det.DetTrainConfig(max_steps=1),
                                  device="cpu", progress=False)

    build = lambda: _small_model(ds.num_classes)  # noqa: E731
    m1, h1, info1 = det.cached_detector("tiny", {"a": 1}, build, train, cache_dir=tmp_path)
    m2, h2, info2 = det.cached_detector("tiny", {"a": 1}, build, train, cache_dir=tmp_path)
    assert calls == [1] and not info1.from_cache and info2.from_cache and info1.path == info2.path
    assert h2.to_dict() == h1.to_dict()
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    _, _, info3 = det.cached_detector("tiny", {"a": 2}, build, train, cache_dir=tmp_path)
    assert not info3.from_cache and calls == [1, 1]


def test_cached_detector_rebuilds_a_truncated_file(tiny, tmp_path):
    ds, _ = tiny
    calls = []

    def train(model):
        calls.append(1)
        return det.train_detector(model, det.make_loader(ds, 4), det.DetTrainConfig(max_steps=1),
                                  device="cpu", progress=False)

    build = lambda: _small_model(ds.num_classes)  # noqa: E731
    _, _, info = det.cached_detector("tiny", {"a": 1}, build, train, cache_dir=tmp_path)
    data = info.path.read_bytes()
    info.path.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match=rf"{info.path.name}.*damaged.*rebuilding"):
        _, hist, again = det.cached_detector("tiny", {"a": 1}, build, train, cache_dir=tmp_path)
    assert not again.from_cache and calls == [1, 1] and hist is not None
    assert (tmp_path / f"{info.path.name}.corrupt").exists()


def test_drawing(tiny):
    _, val = tiny
    images = [val[i][0] for i in range(3)]
    targets = [val[i][1] for i in range(3)]
    preds = _perfect(targets)
    fig = det.draw_predictions(images, preds, targets, class_names=val.class_names, ncols=2)
    assert len([a for a in fig.axes if a.images]) == 6
    drawn = det.render_detections(images[0], targets[0], val.class_names, min_side=0)
    assert drawn.dtype == torch.uint8 and drawn.shape == (3, 64, 64)
    assert not torch.equal(drawn, det.drawing._uint8(images[0]))
    big = det.render_detections(images[0], targets[0], val.class_names)
    assert big.shape == (3, 256, 256)
    ax = det.draw_sample(images[0], targets[0], val.class_names)
    assert ax.images


def test_box_labels_are_readable_text_on_a_background(tiny):
    import matplotlib.pyplot as plt

    _, val = tiny
    image, target = val[0]
    n = len(target["labels"])
    assert n > 0
    fig, axes = plt.subplots(1, 8, figsize=(16, 2.3))  # the notebooks' smallest panels
    ax = det.draw_sample(image, target, val.class_names, ax=axes[0])
    assert len(ax.texts) == n
    names = {val.class_names[int(c) - 1] for c in target["labels"]}
    for t in ax.texts:
        assert t.get_fontsize() >= 8 and t.get_text() in names
        assert t.get_bbox_patch() is not None  # a filled box behind the text
    # predictions: only boxes over the threshold, with their scores
    pred = _perfect([target])[0]
    ax = det.draw_sample(image, pred, val.class_names, ax=axes[1], score_thresh=0.75)
    kept = int((pred["scores"] >= 0.75).sum())
    assert len(ax.texts) == kept and all(t.get_text().rsplit(" ", 1)[1].startswith(("0.", "1.")) for t in ax.texts)
    assert not det.draw_sample(image, target, val.class_names, ax=axes[2], label_size=0).texts
    # the image itself no longer carries torchvision's tiny bitmap labels
    plain = det.render_detections(image, target, val.class_names, labels=False)
    labelled = det.render_detections(image, target, val.class_names)
    assert plain.shape == labelled.shape and not torch.equal(plain, labelled)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# real-data readers on tiny files in the official layouts


def test_pennfudan_reader(tmp_path):
    from PIL import Image

    base = tmp_path / "PennFudanPed"
    (base / "PNGImages").mkdir(parents=True)
    (base / "PedMasks").mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(base / "PNGImages" / f"FudanPed0000{k}.png")
        mask = np.zeros((40, 50), np.uint8)
        mask[5:20, 3:10] = 1
        if k != 1:
            mask[22:38, 30:45] = 2
        Image.fromarray(mask).save(base / "PedMasks" / f"FudanPed0000{k}_mask.png")
    ds = det.PennFudanDataset(tmp_path, split="train", holdout=1)
    assert len(ds) == 2 and det.PennFudanDataset(tmp_path, split="val", holdout=1).indices.tolist() == [2]
    img, t = ds[0]
    assert img.shape == (3, 40, 50) and t["labels"].tolist() == [1, 1]
    assert _plain(t["boxes"]).tolist() == [[3, 5, 10, 20], [30, 22, 45, 38]]
    assert t["masks"].shape == (2, 40, 50) and t["area"].tolist() == [105.0, 240.0]
    assert ds.instance_counts().tolist() == [3] and ds.class_names == ("person",)
    with pytest.raises(FileNotFoundError, match="fetch.py pennfudan"):
        det.PennFudanDataset(tmp_path / "missing")


def test_coco_reader(tmp_path):
    from PIL import Image
    from pycocotools import mask as mask_utils

    base = tmp_path / "coco"
    (base / "val2017").mkdir(parents=True)
    (base / "annotations").mkdir()
    images, anns = [], []
    for k in range(3):
        Image.fromarray(np.full((30, 40, 3), 60 * k, np.uint8)).save(base / "val2017" / f"{k:012d}.jpg")
        images.append({"id": 10 + k, "file_name": f"{k:012d}.jpg", "height": 30, "width": 40})
    poly = [[4, 4, 20, 4, 20, 14, 4, 14]]
    rle = mask_utils.encode(np.asfortranarray(np.pad(np.ones((5, 6), np.uint8), ((20, 5), (30, 4)))))
    rle["counts"] = rle["counts"].decode()
    anns = [
        {"id": 1, "image_id": 10, "category_id": 18, "segmentation": poly, "area": 160, "bbox": [4, 4, 16, 10], "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 1, "segmentation": rle, "area": 30, "bbox": [30, 20, 6, 5], "iscrowd": 0},
        {"id": 3, "image_id": 11, "category_id": 1, "segmentation": rle, "area": 30, "bbox": [30, 20, 6, 5], "iscrowd": 1},
        {"id": 4, "image_id": 12, "category_id": 18, "segmentation": poly, "area": 160, "bbox": [4, 4, 16, 10], "iscrowd": 0},
    ]
    cats = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]
    (base / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    ds = det.CocoDetectionDataset(tmp_path, split="all")
    assert ds.class_names == ("person", "dog") and ds.num_classes == 2
    assert ds.image_ids == [10, 12]                       # image 11 has only a crowd annotation
    img, t = ds[0]
    assert img.shape == (3, 30, 40) and t["labels"].tolist() == [2, 1] and t["image_id"] == 10
    assert _plain(t["boxes"])[1].tolist() == [30, 20, 36, 25]
    assert t["area"][1] == 30 and t["masks"].shape == (2, 30, 40)
    torch.testing.assert_close(_plain(t["boxes"]), det.masks_to_boxes(_plain(t["masks"])))
    assert ds.instance_counts().tolist() == [1, 2]
    tr, va = det.CocoDetectionDataset(tmp_path, "train", holdout_every=2), det.CocoDetectionDataset(tmp_path, "val", holdout_every=2)
    assert tr.image_ids == [10] and va.image_ids == [12]


def test_catalog_entries_and_get_dataset(tmp_path, root):
    from course_lib import fetch

    cat = fetch.load_catalog()
    coco = cat["coco2017"]
    specs = fetch.file_specs(coco)
    assert [s["filename"] for s in specs] == ["val2017.zip", "annotations_trainval2017.zip"]
    assert all(s["checksum"].startswith("md5:") and s["unpack_into"] == "coco" for s in specs)
    assert coco["extract_to"] == "coco/val2017"
    assert fetch.file_specs(cat["pennfudan"]) == [] and "PennFudanPed.zip" in cat["pennfudan"]["manual"]
    ds = det.get_dataset("world", "val", root, profile="smoke", num_images=4, eval_images=3)
    assert len(ds) == 3 and ds.config.num_images == 4
    with pytest.raises(FileNotFoundError, match="fetch.py coco2017"):
        det.get_dataset("coco2017", root=tmp_path)
    with pytest.raises(ValueError):
        det.get_dataset("imagenet")


def test_paste_masks_inverts_the_mask_targets():
    from torchvision.models.detection.roi_heads import paste_masks_in_image, project_masks_on_boxes

    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    ours, ref = [], []
    for cx, cy, r in [(20.3, 30.1, 9), (40, 22, 6), (33, 40, 14), (12, 12, 4.5)]:
        gt = (((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2) <= r * r)[None]
        box = det.masks_to_boxes(gt)
        target = project_masks_on_boxes(gt.float(), box, torch.tensor([0]), 28)[:, None]
        for out, pasted in ((ours, det.paste_masks(target, box, (64, 64))),
                            (ref, paste_masks_in_image(target, box, (64, 64), padding=1))):
            p = pasted[0, 0] >= 0.5
            out.append(float((p & gt[0]).sum() / (p | gt[0]).sum()))
    assert min(ours) > 0.95 and sum(ours) > sum(ref)
    assert det.paste_masks(target[:0], box[:0], (64, 64)).shape == (0, 1, 64, 64)
