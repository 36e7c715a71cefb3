"""What is specific to the DINO paper's study of its backbone (the backbone, its loss and its
training are one floor down, in ``course_lib.selfsup``, because notebooks 05 and 11 use it too):

* the ablations of Table 7 and Fig. 7 (:data:`ABLATIONS`: switches of
  :class:`~course_lib.selfsup.DINOConfig`);
* the frozen-feature evaluation of Sec. 4.1: weighted k-NN (:func:`knn_classifier`, 20
  neighbours, votes ``exp(sim / 0.07)``) and a linear probe (:func:`linear_probe`);
* the segmentation of Sec. 4.2 / Fig. 4: the last-layer class-token attention thresholded to keep
  60% of its mass (:func:`attention_masks`) and compared to the objects with the Jaccard index
  (:func:`jaccard`, :func:`segmentation_scores`);
* the baselines of those tables: a random ViT (:func:`random_backbone`) and the same ViT trained
  with labels (:func:`train_supervised`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F

from course_lib import config, train
from course_lib.models.vit import VisionTransformer
from course_lib.selfsup import CODE_VERSION, DINOConfig, build_backbone, cls_attention

if TYPE_CHECKING:
    from course_lib.papers.dino.experiment import DINOData

__all__ = ["ABLATIONS", "knn_classifier", "linear_probe", "attention_masks", "jaccard", "foreground_masks",
           "random_backbone", "train_supervised", "segmentation_scores"]


# ----------------------------------------------------------------------------------------------
# Ablations (paper Table 7 and Fig. 7)

# name -> (label, DINOConfig changes, paper Table 7 k-NN (None: not in Table 7))
ABLATIONS: dict[str, tuple[str, dict, float | None]] = {
    "dino": ("DINO (same short budget)", {}, 72.8),
    "no_momentum": ("no momentum teacher (teacher = student)", {"momentum_teacher_on": False}, 0.1),
    "no_multicrop": ("no multi-crop (2 global views)", {"multi_crop": False}, 67.9),
    "mse": ("MSE instead of cross-entropy", {"loss": "mse"}, 52.6),
    "no_centering": ("no centering (sharpening only)", {"centering": False}, None),
    "no_sharpening": ("no sharpening (centering only)", {"sharpening": False}, None),
}


# ----------------------------------------------------------------------------------------------
# Evaluation of frozen features: k-NN, linear probe


@torch.no_grad()
def knn_classifier(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                   test_labels: torch.Tensor, k: int = 20, T: float = 0.07, num_classes: int | None = None,
                   batch_size: int = 1024) -> float:
    """Weighted k-NN top-1 (%) as DINO's ``eval_knn.py``: L2-normalised features, the ``k`` most
    similar training images by cosine similarity vote with weight ``exp(sim / T)``."""
    num_classes = int(num_classes if num_classes is not None else int(train_labels.max()) + 1)
    tr = F.normalize(train_feats.float(), dim=1)
    te = F.normalize(test_feats.float(), dim=1)
    k = min(k, len(tr))
    correct = 0
    for i in range(0, len(te), batch_size):
        sim = te[i:i + batch_size] @ tr.t()
        d, idx = sim.topk(k, dim=1)
        cand = train_labels[idx]                                          # (b, k)
        votes = torch.zeros(len(cand), num_classes).scatter_add_(1, cand, (d / T).exp())
        correct += int((votes.argmax(1) == test_labels[i:i + batch_size]).sum())
    return 100.0 * correct / len(te)


def linear_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, C: float = 1.0, max_iter: int = 1000) -> float:
    """Top-1 (%) of a multinomial logistic regression (scikit-learn) on standardised frozen
    features: the linear evaluation of Sec. 4.1 without augmentation, fast on a CPU."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(train_feats.numpy())
    clf = LogisticRegression(C=C, max_iter=max_iter)
    clf.fit(sc.transform(train_feats.numpy()), train_labels.numpy())
    pred = clf.predict(sc.transform(test_feats.numpy()))
    return 100.0 * float((torch.from_numpy(pred) == test_labels).float().mean())


# ----------------------------------------------------------------------------------------------
# Attention masks and segmentation


def attention_masks(maps: torch.Tensor, threshold: float = 0.6, head: int | str | None = "mean") -> torch.Tensor:
    """Binary masks keeping the patches that hold ``threshold`` of the attention mass (the official
    threshold, ``viz.mass_threshold``). ``maps`` (B, heads, h, w); ``head="mean"``: one mask of the
    mean over heads (B, h, w); an int: that head; ``None``: one mask per head (B, heads, h, w)."""
    from course_lib.viz import mass_threshold

    if head == "mean":
        m = maps.mean(1)
    elif head is None:
        m = maps
    else:
        m = maps[:, int(head)]
    return mass_threshold(m, threshold)


def jaccard(masks_pred: torch.Tensor, masks_gt: torch.Tensor) -> torch.Tensor:
    """Jaccard index |P ∩ G| / |P ∪ G| per image (B,) of boolean masks (B, ..., H, W). A patch-level
    prediction is upsampled (nearest) to the ground truth's resolution first. Two empty masks
    count as 1."""
    p, g = masks_pred.bool(), masks_gt.bool()
    if p.shape[-2:] != g.shape[-2:]:
        p = F.interpolate(p.float().flatten(0, -3).unsqueeze(1), size=g.shape[-2:], mode="nearest")
        p = p.squeeze(1).reshape(*masks_pred.shape[:-2], *g.shape[-2:]).bool()
    inter = (p & g).flatten(-2).sum(-1).float()
    union = (p | g).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def foreground_masks(data, indices: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
    """The world's object (foreground) masks (B, H, W) bool: every pixel of an object instance."""
    inst = data.instance_map if indices is None else data.instance_map[torch.as_tensor(indices)]
    return inst > 0


# ----------------------------------------------------------------------------------------------
# Baselines (the "random" and "supervised" rows) and the Jaccard of a backbone


def random_backbone(cfg: DINOConfig, seed: int = 0, device=None) -> VisionTransformer:
    """The "random" rows: the same ViT, randomly initialised (timm's init), never trained."""
    config.seed_everything(seed)
    m = build_backbone(cfg).eval()
    m.pretrained_cfg = {"mean": cfg.mean, "std": cfg.std}
    return m.to(device) if device is not None else m


class _TensorImages(torch.utils.data.Dataset):
    """uint8 images + labels with a per-sample transform (for ``train.fit``)."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), int(self.labels[i])


def train_supervised(d: DINOData, cfg: DINOConfig, epochs: int, seed: int = 0, device=None, lr: float = 1e-3,
                     batch_size: int = 128, force: bool = False, max_steps: int | None = None):
    """The "supervised" rows: the same ViT trained with the image labels through ``train.fit``
    (AdamW, cosine, crop + flip, label smoothing 0.1), cached. Returns ``(model, CacheInfo)``;
    the model keeps its classifier head, its features are the class token."""
    from torchvision.transforms import v2

    from course_lib import data as data_mod

    device = torch.device(device) if device is not None else config.pick_device("auto")
    arch = {**cfg.arch(), "num_classes": d.num_classes}
    S = cfg.image_size
    train_tf = v2.Compose([v2.RandomResizedCrop(S, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                           v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)])
    test_tf = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)])

    def build():
        config.seed_everything(seed)
        return VisionTransformer(**arch).to(device)

    tcfg = train.TrainConfig(epochs=epochs, lr=lr, weight_decay=0.05, warmup_epochs=min(1.0, 0.2 * epochs),
                             min_lr=1e-5, label_smoothing=0.1, grad_clip=1.0, seed=seed, progress=False,
                             max_steps=max_steps)
    # the data and its augmentation, the loader, the model, the whole recipe
    key = {"data": {**d.key, "train_transform": repr(train_tf), "test_transform": repr(test_tf)},
           "loader": {"batch_size": batch_size, "seed": seed}, "model": {**arch, "seed": seed},
           "recipe": tcfg, "code": CODE_VERSION}

    def fit(model):
        tr = _TensorImages(d.train_images, d.train_labels, train_tf)
        te = _TensorImages(d.test_images, d.test_labels, test_tf)
        return train.fit(model, data_mod.make_loader(tr, batch_size, train=True, seed=seed, device=device,
                                                     num_workers=0),
                         tcfg, eval_loader=data_mod.make_loader(te, 512, train=False, device=device, num_workers=0),
                         device=device)

    model, info = train.cached_model("dino-supervised", key, build, fit, force=force)
    model.eval()
    model.pretrained_cfg = {"mean": cfg.mean, "std": cfg.std}
    return model, info


def segmentation_scores(model: VisionTransformer, images: torch.Tensor, fg: torch.Tensor,
                        threshold: float = 0.6) -> dict[str, Any]:
    """Jaccard (%) of the thresholded last-layer class-token attention against the foreground
    masks ``fg`` (B, H, W): for the mean over heads, and for every head. Returns
    ``{"mean_heads": float, "per_head": [float, ...], "per_image": tensor (B,)}``."""
    maps = cls_attention(model, images)
    j_mean = jaccard(attention_masks(maps, threshold, "mean"), fg)
    per_head = jaccard(attention_masks(maps, threshold, None), fg.unsqueeze(1).expand(-1, maps.shape[1], -1, -1))
    return {"mean_heads": 100 * float(j_mean.mean()), "per_head": (100 * per_head.mean(0)).tolist(),
            "per_image": j_mean}
