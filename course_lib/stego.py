"""STEGO: unsupervised semantic segmentation by distilling feature correspondences.

Hamilton, Zhang, Hariharan, Snavely, Freeman — ICLR 2022, https://arxiv.org/abs/2203.08414
(official code: ``mhamilton723/STEGO``; the facts we follow are in the course notes).

A *frozen* self-supervised ViT (DINO) gives a feature vector per patch. STEGO trains only a
small segmentation head ``S`` on top of it, so that the correlations of the head's low-dimensional
codes reproduce the correlations of the backbone's features:

* feature correspondence (eq. 3), for images ``x``, ``y`` with feature maps ``f``, ``g``
  and patches ``(h, w)``, ``(i, j)``::

      F_hwij = <f_hw, g_ij> / (|f_hw| |g_ij|)          (cosine similarity)

* the same for the codes ``s = S(f)``, ``t = S(g)``: ``S_hwij`` (code correspondence);
* the correspondence distillation loss (eq. 4, with the zero-clamp of Sec. 3.2)::

      L_corr(x, y, b) = - sum_hwij (F^SC_hwij - b) max(S_hwij, 0)

  ``F^SC`` is F after the "pointwise" spatial centring (subtract, for each patch of ``x``, its
  mean over the patches of ``y``, then add the global mean back); ``b`` shifts the target so
  that weak correspondences push codes apart. Only ``S`` gets gradients; ``F`` is a constant.
* the full loss (eq. 5) sums three kinds of image pairs::

      L = l_self L_corr(x, x, b_self) + l_knn L_corr(x, x_knn, b_knn) + l_rand L_corr(x, x_rand, b_rand)

  with ``x_knn`` one of the image's nearest neighbours in pooled backbone features (attractive
  signal) and ``x_rand`` a random other image (repulsive signal).

Evaluation as the paper: a *cluster probe* (cosine to learnable centres, minimising
``-sum onehot * cos``) and a *linear probe* (1x1 convolution, trained with labels) on detached
codes, Hungarian matching of clusters to classes over the whole split, unsupervised accuracy /
mIoU, and a dense CRF (mean field, gaussian + bilateral kernels) as refinement.

Everything here works on cached backbone features ``(N, D, h, w)``: the backbone is frozen,
so computing its features once is exactly what the official training computes every step.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from . import config
from .config import Param

PAPER_URL = "https://arxiv.org/abs/2203.08414"
NOTEBOOK = "11_stego"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Paper numbers (CocoStuff-27 validation). Table 1: the "DINO" row is the probes on raw DINO
# ViT-B/8 features; STEGO with ViT-B. Table 2: ViT-S ablations (0-Clamp, 5-Crop, SC, CRF).
PAPER = {
    "table1": {
        "raw_dino": {"unsup_acc": 30.5, "unsup_miou": 9.6, "linear_acc": 66.8, "linear_miou": 29.4},
        "stego": {"unsup_acc": 56.9, "unsup_miou": 28.2, "linear_acc": 76.1, "linear_miou": 41.0},
    },
    "table2_vit_s": {
        "no_clamp": {"unsup_acc": 34.2, "unsup_miou": 7.3, "linear_acc": 54.9, "linear_miou": 15.6},
        "clamp": {"unsup_acc": 44.3, "unsup_miou": 21.3, "linear_acc": 70.9, "linear_miou": 36.8},
        "clamp_5crop": {"unsup_acc": 47.6, "unsup_miou": 23.4, "linear_acc": 72.2, "linear_miou": 36.8},
        "clamp_5crop_sc": {"unsup_acc": 47.7, "unsup_miou": 24.0, "linear_acc": 72.9, "linear_miou": 38.4},
        "full_crf": {"unsup_acc": 48.3, "unsup_miou": 24.5, "linear_acc": 74.4, "linear_miou": 38.3},
    },
}
METRICS = ("unsup_acc", "unsup_miou", "linear_acc", "linear_miou")

# Official values of eq. 5 (lambda: weight, b: shift of each pair kind): the ACTIVE block of the
# official src/configs/train_config.yml (ViT-S; that config trains cocostuff27 by default). Its
# header reads "IAROA vit small 1/31/22"; the commented-out blocks "Cocostuff27 vit small" (b
# 0.08 / 0.02 / 0.66) and "Potsdam vit small" (0.08 / 0.02 / 0.46) share these lambdas.
OFFICIAL_LOSS = dict(lambda_self=0.67, lambda_knn=0.25, lambda_rand=0.63,
                     b_self=0.18, b_knn=0.12, b_rand=0.46)
# Our shifts b (self, knn, rand) for notebook 06's DINO ViT on the world (calibrate_stego.py)
STUDY_B = (0.55, 0.6, 0.65)
# Official CRF: 10 mean-field iterations, gaussian (sxy 1, compat 3), bilateral (sxy 67, srgb 3, compat 4)
OFFICIAL_CRF = dict(iters=10, gauss_sxy=1.0, gauss_w=3.0, bi_sxy=67.0, bi_srgb=3.0, bi_w=4.0)


# ---------------------------------------------------------------------------------------------
# parameters of notebook 11
# ---------------------------------------------------------------------------------------------
def _p(smoke, study, paper):
    return {"smoke": smoke, "study": study, "paper": paper}


config.register(NOTEBOOK, {
    "dataset": Param(_p("world", "world", "voc2012"), "world (the DINO backbone's offline world) or voc2012",
                     choices=("world", "voc2012")),
    "dino_weights": Param(None, "path of real DINO weights (timm or official layout); None: the "
                          "notebook-06 DINO backbone trained on the world", type=(str, type(None))),
    "image_size": Param(_p(None, None, 224), "side of the real dataset's images (world: the backbone's)",
                        type=(int, type(None)), low=32, high=512),
    "train_images": Param(_p(192, 1000, 1464), "training images (before 5-crop)", type=int, low=8),
    "eval_images": Param(_p(96, 300, 1449), "evaluation images", type=int, low=8),
    "code_dim": Param(70, "dimension of STEGO's code (official 70)", type=int, low=2, high=512),
    "steps": Param(_p(60, 500, 7000), "training steps of the head (and probes)", type=int, low=1),
    "batch_size": Param(32, "images per step (official 32)", type=int, low=2),
    "lr": Param(5e-4, "Adam learning rate of the head (official 5e-4)", low=1e-6, high=1.0),
    "probe_lr": Param(5e-3, "Adam learning rate of the probes (official 5e-3)", low=1e-6, high=1.0),
    "lambda_self": Param(OFFICIAL_LOSS["lambda_self"], "eq. 5 weight of self pairs", low=0.0),
    "lambda_knn": Param(OFFICIAL_LOSS["lambda_knn"], "eq. 5 weight of KNN pairs", low=0.0),
    "lambda_rand": Param(OFFICIAL_LOSS["lambda_rand"], "eq. 5 weight of random pairs", low=0.0),
    # shifts: official values (train_config.yml) in the paper profile; calibrated for our DINO ViT
    # (benchmarks/calibrate_stego.py, docs/calibration.md) in smoke/study
    "b_self": Param(_p(*STUDY_B[:1] * 2, OFFICIAL_LOSS["b_self"]), "eq. 4 shift b of self pairs", low=-1.0, high=1.0),
    "b_knn": Param(_p(*STUDY_B[1:2] * 2, OFFICIAL_LOSS["b_knn"]), "eq. 4 shift b of KNN pairs", low=-1.0, high=1.0),
    "b_rand": Param(_p(*STUDY_B[2:] * 2, OFFICIAL_LOSS["b_rand"]), "eq. 4 shift b of random pairs", low=-1.0, high=1.0),
    "knn_k": Param(7, "a KNN partner is drawn from the top knn_k neighbours (official 7)", type=int, low=1),
    "num_points": Param(_p(5, 7, 11), "sample points per side (num_points^2 per image); official 11 on "
                        "a 28x28 or 40x40 patch grid, ours 7 on the 8x8 grid", type=int, low=2, high=64),
    "neg_samples": Param(5, "random-pair permutations per step (official 5)", type=int, low=0, high=32),
    "zero_clamp": Param(True, "clamp code correlations at 0 (Sec. 3.2)"),
    "pointwise": Param(True, "spatially centre the feature correlations (official 'pointwise')"),
    "five_crop": Param(True, "train on 5 crops per image (torchvision FiveCrop)"),
    "crop_ratio": Param(0.5, "side of a 5-crop crop / image side (official 0.5)", low=0.2, high=0.95),
    "crf": Param(True, "dense-CRF refinement at evaluation"),
    "crf_bi_sxy": Param(_p(6.7, 6.7, 67.0), "CRF bilateral spatial std in pixels (official 67 at 320 px; "
                        "scaled to our image side)", low=0.1),
    "crf_bi_srgb": Param(3.0, "CRF bilateral colour std, 0-255 units (official 3)", low=0.1),
    "crf_max_side": Param(96, "the dense CRF runs at most at this side (then upsampled)", type=int, low=16, high=256),
    "flip_eval": Param(True, "average the features of an image and its mirror at evaluation (official)"),
    "seeds": Param(_p(1, 3, 1), "seeds of the STEGO head (and the probes)", type=int, low=1, high=10),
    "ablations": Param(_p(True, True, True), "train the Table 2 ablations (no clamp, no 5-crop, no SC)"),
})


# ---------------------------------------------------------------------------------------------
# data: images and per-pixel labels
# ---------------------------------------------------------------------------------------------
@dataclass
class SegData:
    """Images uint8 (N, 3, S, S) and per-pixel labels int64 (N, S, S); -1 = ignore."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, idx) -> "SegData":
        return SegData(self.images[idx], self.labels[idx], self.class_names)


def world_semantic(data) -> torch.Tensor:
    """All images' per-pixel labels of a ``WorldData`` at once (the same as its
    ``semantic(i)``: stuff kind k -> k, object of class c -> number of stuff kinds + c)."""
    from .world import STUFF_NAMES

    sem = data.stuff.long().clone()
    inst = data.instance_map.long()
    n = len(sem)
    slot = (inst - 1).clamp(min=0).view(n, -1)
    cls = data.obj_labels.gather(1, slot).view_as(inst)
    fg = inst > 0
    sem[fg] = len(STUFF_NAMES) + cls[fg]
    return sem


def world_segdata(cfg, split: str, root=None) -> SegData:
    """One split of the offline world as a segmentation set (stuff kinds, then shape classes)."""
    from .world import STUFF_NAMES, load_world

    data = load_world(cfg, split, root)
    return SegData(data.images, world_semantic(data), tuple(STUFF_NAMES) + tuple(cfg.class_names))


VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")


def voc_segdata(folder: str | Path, split: str = "train", size: int = 224,
                limit: int | None = None) -> SegData:
    """PASCAL VOC 2012 segmentation (``VOCdevkit/VOC2012``): the images of
    ``ImageSets/Segmentation/<split>.txt`` resized (shorter side) and centre-cropped to ``size``,
    labels with nearest neighbour; 255 (object borders) becomes -1 (ignored)."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    folder = Path(folder)
    names = (folder / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    if limit is not None:
        names = names[:limit]
    images, labels = [], []
    for n in names:
        img = torch.from_numpy(np.array(Image.open(folder / "JPEGImages" / f"{n}.jpg").convert("RGB"))).permute(2, 0, 1)
        lab = torch.from_numpy(np.array(Image.open(folder / "SegmentationClass" / f"{n}.png"))).long()[None]
        img = TF.center_crop(TF.resize(img, size, antialias=True), size)
        lab = TF.center_crop(TF.resize(lab, size, interpolation=TF.InterpolationMode.NEAREST), size)[0]
        lab[lab == 255] = -1
        images.append(img)
        labels.append(lab)
    return SegData(torch.stack(images), torch.stack(labels), VOC_CLASSES)


def five_crop(data: SegData, ratio: float = 0.5) -> SegData:
    """The "5-crop" training set: torchvision's ``FiveCrop`` (4 corners + centre) of side
    ``ratio * S`` of every image, resized back to ``S`` (labels: nearest neighbour).
    Crop ``5i + k`` is crop k of image i."""
    from torchvision.transforms.v2 import functional as TF

    S = data.images.shape[-1]
    c = max(2, int(round(ratio * S)))
    crops_img = TF.five_crop(data.images, c)                     # 5 x (N, 3, c, c)
    crops_lab = TF.five_crop(data.labels[:, None], c)            # 5 x (N, 1, c, c)
    img = torch.stack([TF.resize(x, [S, S], antialias=True) for x in crops_img], 1)
    lab = torch.stack([TF.resize(x, [S, S], interpolation=TF.InterpolationMode.NEAREST) for x in crops_lab], 1)
    return SegData(img.flatten(0, 1), lab.flatten(0, 1)[:, 0], data.class_names)


# ---------------------------------------------------------------------------------------------
# the frozen backbone: features, pooled features, nearest neighbours
# ---------------------------------------------------------------------------------------------
@dataclass
class Backbone:
    """A frozen ViT with the normalisation its training used."""

    vit: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str = "dino"

    @property
    def image_size(self) -> int:
        return int(self.vit.img_size[0])

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.vit.grid_size)

    @property
    def dim(self) -> int:
        return int(self.vit.embed_dim)


@torch.no_grad()
def extract_features(backbone: Backbone, images: torch.Tensor, batch_size: int = 256,
                     flip: bool = False, device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Last-layer patch tokens of the frozen backbone as maps (N, D, h, w), stored on the CPU
    (``dtype``, half precision by default: the head converts a batch to float32).
    ``flip``: average with the features of the mirrored image (mirrored back), as the official
    evaluation does."""
    vit = backbone.vit.eval()
    device = torch.device(device) if device is not None else next(vit.parameters()).device
    mean = torch.tensor(backbone.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std, device=device).view(1, 3, 1, 1)
    h, w = backbone.grid
    out = torch.empty(len(images), backbone.dim, h, w, dtype=dtype)
    for s in range(0, len(images), batch_size):
        x = (images[s:s + batch_size].to(device).float() / 255 - mean) / std
        f = _tokens(vit, x, h, w)
        if flip:
            f = (f + _tokens(vit, x.flip(-1), h, w).flip(-1)) / 2
        out[s:s + batch_size] = f.to("cpu", dtype)
    return out


def _tokens(vit: nn.Module, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    tok = vit.forward_features(x)[:, vit.num_prefix_tokens:]          # (B, h*w, D)
    return tok.transpose(1, 2).reshape(len(x), -1, h, w).float()


def pooled(feats: torch.Tensor) -> torch.Tensor:
    """Global image feature: mean of the patch features, L2-normalised (N, D)."""
    return F.normalize(feats.float().mean((2, 3)), dim=1)


def knn_indices(feats: torch.Tensor, k: int = 30, chunk: int = 2048) -> torch.Tensor:
    """Each image's ``k`` nearest neighbours (cosine of pooled features), itself excluded,
    most similar first: (N, k) int64."""
    g = pooled(feats)
    k = min(k, len(g) - 1)
    out = []
    for s in range(0, len(g), chunk):
        sim = g[s:s + chunk] @ g.T
        sim[torch.arange(len(sim)), torch.arange(s, s + len(sim))] = -float("inf")  # not itself
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# the segmentation head and the correspondence loss (eq. 3-5)
# ---------------------------------------------------------------------------------------------
class SegmentationHead(nn.Module):
    """STEGO's head S: a linear 1x1 convolution plus a nonlinear 1x1-ReLU-1x1 branch, summed.
    Dropout2d(0.1) on the frozen features (each use draws its own channel mask, as the official
    code). ``forward`` returns ``(features used for F, code)``."""

    def __init__(self, dim: int, code_dim: int = 70, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.linear = nn.Conv2d(dim, code_dim, 1)
        self.nonlinear = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.ReLU(), nn.Conv2d(dim, code_dim, 1))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.linear(self.dropout(feats)) + self.nonlinear(self.dropout(feats))
        return self.dropout(feats), code


def sample(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Values of maps x (B, C, h, w) at points ``coords`` (B, p, p, 2) in [-1, 1] (bilinear), as
    the official sampler: ``align_corners=True`` (-1 and 1 are the centres of the corner patches,
    so every point lies inside the patch grid) and ``padding_mode="border"``. (The official code
    also transposes the p x p point grid first; that only relabels the random points.)"""
    return F.grid_sample(x, coords, mode="bilinear", padding_mode="border", align_corners=True)


def correlation(a: torch.Tensor, b: torch.Tensor, normalized: bool = False) -> torch.Tensor:
    """Eq. 3: cosine similarity of every point of ``a`` (B, C, h, w) with every point of
    ``b`` (B, C, i, j): (B, h, w, i, j). ``normalized``: the inputs are already unit vectors
    along C."""
    if not normalized:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return torch.einsum("bchw,bcij->bhwij", a, b)


def pointwise_centre(fd: torch.Tensor) -> torch.Tensor:
    """Spatial centring of a correlation tensor (B, h, w, i, j): subtract each point's mean over
    the second image's points, then add the global mean back (official "pointwise")."""
    return fd - fd.mean((3, 4), keepdim=True) + fd.mean()


def correspondence_loss(f1: torch.Tensor, f2: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor,
                        b: float, zero_clamp: bool = True, pointwise: bool = True,
                        normalized: bool = False) -> torch.Tensor:
    """Eq. 4 for one batch of image pairs, averaged over pairs and point pairs:
    ``-(F - b) * max(S, 0)`` with F the (centred) feature correlation, a constant, and S the
    code correlation. Without ``zero_clamp`` S enters unclamped (Table 2's first ViT-S row).
    ``normalized``: features and codes are already unit vectors along the channels."""
    with torch.no_grad():
        fd = correlation(f1, f2, normalized)
        if pointwise:
            fd = pointwise_centre(fd)
    cd = correlation(c1, c2, normalized)
    if zero_clamp:
        cd = cd.clamp(min=0)
    return -(cd * (fd - b)).mean()


def derangement(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random permutation of range(n) without fixed points (n >= 2): a random cyclic shift
    of a random order, so image i is never paired with itself."""
    if n < 2:
        raise ValueError("a derangement needs n >= 2")
    order = torch.randperm(n, generator=generator)
    shift = int(torch.randint(1, n, (1,), generator=generator))
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = order.roll(-shift)
    return perm


@dataclass
class LossConfig:
    """Eq. 5's weights and shifts (official values, :data:`OFFICIAL_LOSS`) and the sampling knobs."""

    lambda_self: float = OFFICIAL_LOSS["lambda_self"]
    lambda_knn: float = OFFICIAL_LOSS["lambda_knn"]
    lambda_rand: float = OFFICIAL_LOSS["lambda_rand"]
    b_self: float = OFFICIAL_LOSS["b_self"]
    b_knn: float = OFFICIAL_LOSS["b_knn"]
    b_rand: float = OFFICIAL_LOSS["b_rand"]
    num_points: int = 11
    neg_samples: int = 5
    zero_clamp: bool = True
    pointwise: bool = True


def stego_loss(f: torch.Tensor, f_knn: torch.Tensor, c: torch.Tensor, c_knn: torch.Tensor,
               cfg: LossConfig, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Eq. 5 on a batch: features/codes of the images (f, c) and of one KNN partner each
    (f_knn, c_knn), all (B, ., h, w). Points: ``num_points^2`` random positions per image, one
    set for the images themselves (also used for the self pairs) and one for the partners.
    Random partners: the batch's own maps read at the partner points, shuffled by a permutation
    without fixed points (the official code reads the shuffled maps at the partner points: the
    same distribution of point pairs, with 2 grid samples instead of 2 per permutation).
    Returns (loss, parts)."""
    B = len(f)
    p = cfg.num_points
    coords1 = torch.rand(B, p, p, 2, generator=generator).to(f.device) * 2 - 1
    coords2 = torch.rand(B, p, p, 2, generator=generator).to(f.device) * 2 - 1
    unit = lambda x: F.normalize(x, dim=1)  # noqa: E731  (eq. 3's norms, taken once per map)
    with torch.no_grad():
        fs, fk, fr = unit(sample(f, coords1)), unit(sample(f_knn, coords2)), unit(sample(f, coords2))
    cs, ck, cr = unit(sample(c, coords1)), unit(sample(c_knn, coords2)), unit(sample(c, coords2))
    kw = dict(zero_clamp=cfg.zero_clamp, pointwise=cfg.pointwise, normalized=True)
    l_self = correspondence_loss(fs, fs, cs, cs, cfg.b_self, **kw)
    l_knn = correspondence_loss(fs, fk, cs, ck, cfg.b_knn, **kw)
    l_rand = f.new_zeros(())
    for _ in range(cfg.neg_samples):
        perm = derangement(B, generator).to(f.device)
        l_rand = l_rand + correspondence_loss(fs, fr[perm], cs, cr[perm], cfg.b_rand, **kw) / cfg.neg_samples
    total = cfg.lambda_self * l_self + cfg.lambda_knn * l_knn + cfg.lambda_rand * l_rand
    return total, {"self": float(l_self.detach()), "knn": float(l_knn.detach()), "rand": float(l_rand.detach())}


# ---------------------------------------------------------------------------------------------
# probes
# ---------------------------------------------------------------------------------------------
class ClusterProbe(nn.Module):
    """Cosine similarity to ``k`` learnable centres; trained without labels by
    ``-(onehot(argmax) * cos).sum(class).mean()`` (a minibatch spherical k-means)."""

    def __init__(self, dim: int, k: int):
        super().__init__()
        self.centres = nn.Parameter(torch.randn(k, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,kc->bkhw", F.normalize(x, dim=1), F.normalize(self.centres, dim=1))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        cos = self(x)
        onehot = F.one_hot(cos.argmax(1), cos.shape[1]).permute(0, 3, 1, 2).to(cos.dtype)
        return -(onehot * cos).sum(1).mean()


def linear_probe_loss(probe: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a 1x1 probe's logits, upsampled to the labels' size; -1 is ignored."""
    logits = F.interpolate(probe(x), labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, labels, ignore_index=-1)


# ---------------------------------------------------------------------------------------------
# training: head + probes on cached features
# ---------------------------------------------------------------------------------------------
@dataclass
class RunConfig:
    """One training run: STEGO head (``train_head=False``: probes on the raw features)."""

    loss: LossConfig = field(default_factory=LossConfig)
    train_head: bool = True
    code_dim: int = 70
    steps: int = 1500
    batch_size: int = 32
    lr: float = 5e-4
    probe_lr: float = 5e-3
    knn_k: int = 7
    seed: int = 0


@dataclass
class Run:
    """A trained head (``None``: raw features) with its two probes."""

    head: SegmentationHead | None
    cluster: ClusterProbe
    linear: nn.Conv2d
    history: pd.DataFrame
    seconds: float
    cfg: RunConfig

    @property
    def device(self) -> torch.device:
        """Where the probes (and the head) live: the device they were trained on."""
        return self.cluster.centres.device

    def code(self, feats: torch.Tensor) -> torch.Tensor:
        """Eval-mode code of features (the raw features when there is no head), on the
        features' device."""
        if self.head is None:
            return feats
        self.head.eval()
        return self.head(feats.to(self.device))[1].to(feats.device)


def train_run(feats: torch.Tensor, labels: torch.Tensor, knn: torch.Tensor | None, num_classes: int,
              cfg: RunConfig, device: torch.device | str = "cpu", log_every: int = 50) -> Run:
    """Train the STEGO head with eq. 5 and, alongside, the cluster and linear probes on its
    detached codes (as the official code: the probes never shape the head). ``feats`` (N, D, h, w)
    are the frozen backbone's, ``labels`` (N, S, S) only train the linear probe, ``knn`` (N, >=k)
    the neighbours of every image."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    D = feats.shape[1]
    head = SegmentationHead(D, cfg.code_dim).to(device) if cfg.train_head else None
    dim = cfg.code_dim if cfg.train_head else D
    cluster = ClusterProbe(dim, num_classes).to(device)
    linear = nn.Conv2d(dim, num_classes, 1).to(device)
    opt_probe = torch.optim.Adam([*cluster.parameters(), *linear.parameters()], lr=cfg.probe_lr)
    opt_head = torch.optim.Adam(head.parameters(), lr=cfg.lr) if head is not None else None
    rows = []
    t0 = time.perf_counter()
    N = len(feats)
    for step in range(cfg.steps):
        idx = torch.randint(0, N, (min(cfg.batch_size, N),), generator=gen)
        f = feats[idx].to(device, torch.float32)
        y = labels[idx].to(device)
        row = {"step": step}
        if head is not None:
            head.train()
            pick = torch.randint(0, min(cfg.knn_k, knn.shape[1]), (len(idx),), generator=gen)
            f_knn = feats[knn[idx, pick]].to(device, torch.float32)
            fd, code = head(f)
            fd_knn, code_knn = head(f_knn)
            loss, parts = stego_loss(fd, fd_knn, code, code_knn, cfg.loss, gen)
            opt_head.zero_grad(set_to_none=True)
            loss.backward()
            opt_head.step()
            row.update(loss=float(loss.detach()), **{f"L_{k}": v for k, v in parts.items()})
            z = code.detach()
        else:
            z = f
        l_cluster = cluster.loss(z)
        l_linear = linear_probe_loss(linear, z, y)
        opt_probe.zero_grad(set_to_none=True)
        (l_cluster + l_linear).backward()
        opt_probe.step()
        row.update(cluster=float(l_cluster.detach()), linear=float(l_linear.detach()))
        if step % log_every == 0 or step == cfg.steps - 1:
            rows.append(row)
    seconds = time.perf_counter() - t0
    return Run(head, cluster.eval(), linear.eval(), pd.DataFrame(rows).set_index("step"), seconds, cfg)


# ---------------------------------------------------------------------------------------------
# evaluation: Hungarian matching, accuracy, mIoU, dense CRF
# ---------------------------------------------------------------------------------------------
def confusion(pred: torch.Tensor, target: torch.Tensor, k_pred: int, k_true: int) -> np.ndarray:
    """Counts (k_pred, k_true): row = predicted cluster/class, column = true class; -1 ignored."""
    keep = target >= 0
    idx = pred[keep].long() * k_true + target[keep].long()
    return torch.bincount(idx, minlength=k_pred * k_true).view(k_pred, k_true).numpy()


def hungarian(conf: np.ndarray) -> np.ndarray:
    """Cluster -> class assignment maximising the matched pixels over the whole split
    (``linear_sum_assignment(maximize=True)``); unmatched clusters map to -1."""
    rows, cols = linear_sum_assignment(conf, maximize=True)
    assign = np.full(conf.shape[0], -1)
    assign[rows] = cols
    return assign


def scores(conf: np.ndarray) -> dict[str, Any]:
    """Pixel accuracy sum(tp)/total and mIoU (mean over classes present in prediction or truth
    of tp/(tp+fp+fn)) of a square confusion (pred, true), in %."""
    tp = np.diag(conf).astype(float)
    fp = conf.sum(1) - tp
    fn = conf.sum(0) - tp
    denom = tp + fp + fn
    iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
    return {"acc": 100 * tp.sum() / max(conf.sum(), 1), "miou": 100 * float(np.nanmean(iou)), "iou": 100 * iou}


def matched_confusion(conf: np.ndarray) -> np.ndarray:
    """A cluster confusion (clusters, classes) reordered by the Hungarian assignment into a
    square (class, class) confusion."""
    assign = hungarian(conf)
    k = conf.shape[1]
    out = np.zeros((k, k), dtype=conf.dtype)
    for c, cls in enumerate(assign):
        if cls >= 0:
            out[cls] += conf[c]
    return out


CRF_KERNEL_ELEMENTS = 4e7  # kernel entries built at once by dense_crf (160 MB in float32)


def dense_crf(images: torch.Tensor, logits: torch.Tensor | Sequence[torch.Tensor], iters: int = 10,
              gauss_sxy: float = 1.0, gauss_w: float = 3.0, bi_sxy: float = 67.0, bi_srgb: float = 3.0,
              bi_w: float = 4.0, max_side: int = 96) -> torch.Tensor | list[torch.Tensor]:
    """Mean-field inference of a fully connected CRF (Krähenbühl & Koltun 2011), as STEGO's
    refinement: unary = -log softmax(logits), Potts pairwise terms with a gaussian kernel
    exp(-|p_i - p_j|^2 / 2 gauss_sxy^2) and a bilateral kernel
    exp(-|p_i - p_j|^2 / 2 bi_sxy^2 - |I_i - I_j|^2 / 2 bi_srgb^2) (pixels; colours 0-255),
    symmetrically normalised as in densecrf; each iteration
    ``Q <- softmax(log p + gauss_w K_g Q + bi_w K_b Q)``. Dense N x N kernels, so images larger
    than ``max_side`` are processed at that side. ``images`` uint8 (B, 3, H, W); ``logits``
    (B, C, h, w) at any size, or a list of such (several label sets refined with one kernel
    build). Returns probabilities (B, C, H, W) at the image's size (a list for a list)."""
    many = isinstance(logits, (list, tuple))
    logits = list(logits) if many else [logits]
    B, _, H, W = images.shape
    scale = min(1.0, max_side / max(H, W))
    h, w = max(1, round(H * scale)), max(1, round(W * scale))
    chunk = max(1, int(CRF_KERNEL_ELEMENTS // (h * w) ** 2))  # images per kernel build
    if B > chunk:
        kw = dict(iters=iters, gauss_sxy=gauss_sxy, gauss_w=gauss_w, bi_sxy=bi_sxy, bi_srgb=bi_srgb,
                  bi_w=bi_w, max_side=max_side)
        parts = [dense_crf(images[s:s + chunk], [lg[s:s + chunk] for lg in logits], **kw)
                 for s in range(0, B, chunk)]
        out = [torch.cat([p[j] for p in parts]) for j in range(len(logits))]
        return out if many else out[0]
    dev = logits[0].device
    img = images.to(dev).float()
    if (h, w) != (H, W):
        img = F.interpolate(img, (h, w), mode="bilinear", align_corners=False, antialias=True)
    # bilateral kernel, dense (B, n, n): positions in original pixels, colours 0-255
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=dev),
                            torch.arange(w, dtype=torch.float32, device=dev), indexing="ij")
    pos = torch.stack([yy, xx], -1).view(-1, 2) / scale
    rgb = img.flatten(2).transpose(1, 2)                                  # (B, n, 3)
    k_bi = torch.cdist(rgb, rgb).square_().mul_(-0.5 / bi_srgb ** 2)
    k_bi = k_bi.add_(torch.cdist(pos, pos).square_().mul_(-0.5 / bi_sxy ** 2)).exp_()
    d_bi = k_bi.sum(-1).rsqrt().unsqueeze(1)                              # (B, 1, n)
    # gaussian kernel (a local blur): a depthwise convolution, truncated at 4 sigma
    sig = gauss_sxy * scale
    r = max(1, min(int(math.ceil(4 * sig)), max(h, w) - 1))
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=dev)
    g1 = torch.exp(-0.5 * (t / sig) ** 2)
    g2 = (g1[:, None] * g1[None, :])[None, None]                          # (1, 1, 2r+1, 2r+1)

    def blur(x):  # (B, C, h, w) -> the gaussian kernel applied per channel (zero padding)
        C = x.shape[1]
        return F.conv2d(x, g2.expand(C, 1, -1, -1), padding=r, groups=C)

    d_g = blur(torch.ones(1, 1, h, w, device=dev)).rsqrt()                # (1, 1, h, w)
    out = []
    for lg in logits:
        lg = F.interpolate(lg.float(), (h, w), mode="bilinear", align_corners=False)
        unary = F.log_softmax(lg, 1)                                      # (B, C, h, w) = -U
        q = unary.softmax(1)
        for _ in range(iters):
            # D^-1/2 K D^-1/2 Q for each kernel (densecrf's NORMALIZE_SYMMETRIC); Potts compat
            m_g = d_g * blur(d_g * q)
            m_b = (d_bi * torch.bmm((d_bi * q.flatten(2)), k_bi)).view_as(q)
            q = (unary + gauss_w * m_g + bi_w * m_b).softmax(1)
        if (h, w) != (H, W):
            q = F.interpolate(q, (H, W), mode="bilinear", align_corners=False)
        out.append(q)
    return out if many else out[0]


@torch.no_grad()
def predict(run: Run, feats: torch.Tensor, images: torch.Tensor, crf: dict | None = None,
            batch_size: int = 32, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel cluster ids and linear-probe classes (N, S, S) of images with features
    ``feats``. As the official evaluation: the code is upsampled to the image's size, then the
    probes run; with ``crf`` (keyword arguments of :func:`dense_crf`) the probabilities
    (cluster: softmax(2 cos), linear: softmax(logits)) are refined first. ``device``: default
    the run's own (where it was trained)."""
    S = images.shape[-2:]
    device = run.device if device is None else device
    clusters, classes = [], []
    for s in range(0, len(feats), batch_size):
        f = feats[s:s + batch_size].to(device, torch.float32)
        code = F.interpolate(run.code(f), S, mode="bilinear", align_corners=False)
        c_logits, l_logits = 2 * run.cluster(code), run.linear(code)
        if crf is not None:
            c_logits, l_logits = dense_crf(images[s:s + batch_size], [c_logits, l_logits], **crf)
        clusters.append(c_logits.argmax(1).cpu())
        classes.append(l_logits.argmax(1).cpu())
    return torch.cat(clusters), torch.cat(classes)


def evaluate(run: Run, feats: torch.Tensor, data: SegData, crf: dict | None = None,
             device: torch.device | str | None = None) -> dict[str, Any]:
    """Table 1's four numbers (%): unsupervised (cluster probe, Hungarian-matched over the
    whole split) accuracy and mIoU, linear-probe accuracy and mIoU; plus the matched confusion."""
    clusters, classes = predict(run, feats, data.images, crf, device=device)
    K = data.num_classes
    cconf = confusion(clusters, data.labels, run.cluster.centres.shape[0], K)
    mconf = matched_confusion(cconf)
    u = scores(mconf)
    lin = scores(confusion(classes, data.labels, K, K))
    return {"unsup_acc": u["acc"], "unsup_miou": u["miou"], "linear_acc": lin["acc"],
            "linear_miou": lin["miou"], "confusion": mconf, "iou": u["iou"]}


def kmeans_baseline(feats_train: torch.Tensor, feats_eval: torch.Tensor, data: SegData,
                    max_points: int = 60000, seed: int = 0) -> dict[str, Any]:
    """scikit-learn k-means (k = number of classes) on L2-normalised raw patch features of the
    training split; evaluation features upsampled (bilinear) to the image, each pixel given its
    nearest centre (cosine), Hungarian-matched over the whole split."""
    from sklearn.cluster import KMeans

    D = feats_train.shape[1]
    x = F.normalize(feats_train.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, D)
    g = torch.Generator().manual_seed(seed)
    if len(x) > max_points:
        x = x[torch.randperm(len(x), generator=g)[:max_points]]
    km = KMeans(n_clusters=data.num_classes, n_init=1, random_state=seed).fit(x.numpy())
    centres = F.normalize(torch.from_numpy(km.cluster_centers_).float(), dim=1)
    preds = []
    for s in range(0, len(feats_eval), 64):
        f = F.normalize(feats_eval[s:s + 64].float(), dim=1)
        f = F.interpolate(f, data.images.shape[-2:], mode="bilinear", align_corners=False)
        preds.append(torch.einsum("bchw,kc->bkhw", f, centres).argmax(1))
    conf = matched_confusion(confusion(torch.cat(preds), data.labels, data.num_classes, data.num_classes))
    u = scores(conf)
    return {"unsup_acc": u["acc"], "unsup_miou": u["miou"], "confusion": conf}


# ---------------------------------------------------------------------------------------------
# the notebook's experiment
# ---------------------------------------------------------------------------------------------
def load_backbone(P: config.Params) -> tuple[Backbone, Any]:
    """The frozen backbone: real DINO weights (``dino_weights``, architecture read from the file,
    built for ``image_size``) or notebook 06's DINO ViT trained on the offline world
    (``dino.study_backbone``, which also returns its WorldConfig)."""
    from . import dino

    device = P.torch_device
    if P.dino_weights:
        vit = dino.load_dino_weights(P.dino_weights, img_size=P.image_size or 224)
        name = f"DINO weights {Path(P.dino_weights).name}"
        wcfg = None
    else:
        vit, wcfg = dino.study_backbone(P.backbone_profile, device=device)
        name = f"our DINO ViT (notebook 06, profile {P.backbone_profile})"
    mean, std = _norm_of(vit)
    return Backbone(vit.to(device).eval().requires_grad_(False), mean, std, name), wcfg


def _norm_of(vit: nn.Module):
    from .world import WORLD_MEAN, WORLD_STD

    cfg = getattr(vit, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", WORLD_MEAN)), tuple(cfg.get("std", WORLD_STD))


def derive(P: config.Params) -> config.Params:
    """Settings computed from the parameters (after the parameters cell)."""
    if P.dataset != "world" and not P.dino_weights:
        raise config.ParameterError(
            f"dataset {P.dataset!r} needs real DINO weights: set dino_weights to a timm or official "
            "DINO checkpoint (e.g. dino_deitsmall8_pretrain.pth); the world backbone only knows 32 px scenes")
    P["backbone_profile"] = "smoke" if P.profile == "smoke" else "study"
    return P


@dataclass
class Setup:
    backbone: Backbone
    world: Any
    train: SegData            # what the head trains on (the 5 crops when five_crop)
    train_full: SegData       # the training images themselves
    eval: SegData
    feats_train: torch.Tensor
    feats_train_full: torch.Tensor | None
    feats_eval: torch.Tensor
    knn: torch.Tensor
    seconds: dict[str, float]
    alt: tuple | None = None  # (data, features, knn) of the other training set (5-crop ablation)


def load_data(P: config.Params, backbone: Backbone, world_cfg=None) -> tuple[SegData, SegData]:
    """Training and evaluation segmentation sets of the chosen dataset."""
    if P.dataset == "world":
        if world_cfg is None:
            raise ValueError("dataset 'world' needs the DINO backbone's WorldConfig")
        cfg = world_cfg.replace(num_images=P.train_images, eval_images=P.eval_images)
        return world_segdata(cfg, "train", P.data_root), world_segdata(cfg, "val", P.data_root)
    from .fetch import dataset_path

    folder = dataset_path("voc2012", P.data_root)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is missing: run `python data_scripts/fetch.py voc2012` first")
    size = backbone.image_size
    return (voc_segdata(folder, "train", size, P.train_images), voc_segdata(folder, "val", size, P.eval_images))


def prepare(P: config.Params) -> Setup:
    """Backbone, data, cached features (train: plain and 5-crop; eval: flip-averaged) and KNNs."""
    t = {}
    t0 = time.perf_counter()
    backbone, wcfg = load_backbone(P)
    t["backbone"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_full, ev = load_data(P, backbone, wcfg)
    t["data"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dev = P.torch_device
    feats_full = extract_features(backbone, train_full.images, device=dev)
    feats_eval = extract_features(backbone, ev.images, flip=P.flip_eval, device=dev)
    if P.five_crop or P.ablations:
        crops = five_crop(train_full, P.crop_ratio)
        feats_crops = extract_features(backbone, crops.images, device=dev)
    t["features"] = time.perf_counter() - t0
    if P.five_crop:
        train, feats_train = crops, feats_crops
    else:
        train, feats_train = train_full, feats_full
    setup = Setup(backbone, wcfg, train, train_full, ev, feats_train, feats_full, feats_eval,
                  knn_indices(feats_train), t)
    if P.ablations:  # the other training set for the 5-crop ablation
        setup.alt = (train_full, feats_full, knn_indices(feats_full)) if P.five_crop else \
            (crops, feats_crops, knn_indices(feats_crops))
    return setup


def run_config(P: config.Params, seed: int, **changes) -> RunConfig:
    loss = LossConfig(**{k: P[k] for k in OFFICIAL_LOSS}, num_points=P.num_points,
                      neg_samples=P.neg_samples, zero_clamp=P.zero_clamp, pointwise=P.pointwise)
    cfg = RunConfig(loss=loss, code_dim=P.code_dim, steps=P.steps, batch_size=P.batch_size,
                    lr=P.lr, probe_lr=P.probe_lr, knn_k=P.knn_k, seed=seed)
    loss_changes = {k: v for k, v in changes.items() if hasattr(loss, k)}
    other = {k: v for k, v in changes.items() if not hasattr(loss, k)}
    return replace(cfg, loss=replace(loss, **loss_changes), **other)


def crf_kwargs(P: config.Params) -> dict:
    return {**OFFICIAL_CRF, "bi_sxy": P.crf_bi_sxy, "bi_srgb": P.crf_bi_srgb, "max_side": P.crf_max_side}


def run_experiments(P: config.Params, setup: Setup, verbose: bool = True) -> dict[str, Any]:
    """Table 1 (raw-feature probes and k-means vs. STEGO, with and without CRF) with ``P.seeds``
    seeds, and Table 2's ablations (the first seed only, evaluated without CRF: they are compared
    with STEGO without CRF; the CRF's own effect is STEGO with vs. without it)."""
    t_start = time.perf_counter()
    dev = P.torch_device
    K = setup.eval.num_classes
    crf = crf_kwargs(P) if P.crf else None
    out: dict[str, Any] = {"rows": {}, "runs": {}, "setup": setup}

    def log(msg):
        if verbose:
            print(msg, flush=True)

    def add(name, metrics):
        out["rows"].setdefault(name, []).append({k: metrics[k] for k in METRICS if k in metrics})

    t0 = time.perf_counter()
    km = kmeans_baseline(setup.feats_train_full, setup.feats_eval, setup.eval, seed=P.seed)
    add("kmeans_raw", km)
    out["kmeans"] = km
    log(f"k-means on raw features: acc {km['unsup_acc']:.1f} mIoU {km['unsup_miou']:.1f} ({time.perf_counter() - t0:.0f}s)")
    for i in range(P.seeds):
        seed = P.seed + i
        raw = train_run(setup.feats_train_full, setup.train_full.labels, None, K,
                        run_config(P, seed, train_head=False), dev)
        add("raw", evaluate(raw, setup.feats_eval, setup.eval, None, dev))
        run = train_run(setup.feats_train, setup.train.labels, setup.knn, K, run_config(P, seed), dev)
        m = evaluate(run, setup.feats_eval, setup.eval, None, dev)
        add("stego_nocrf", m)
        if crf is not None:
            mc = evaluate(run, setup.feats_eval, setup.eval, crf, dev)
            add("stego", mc)
        else:
            mc = m
        out["runs"].setdefault("raw", []).append(raw)
        out["runs"].setdefault("stego", []).append(run)
        out.setdefault("stego_confusion", mc["confusion"])
        out.setdefault("stego_iou", mc["iou"])
        log(f"seed {seed}: raw probes {_fmt_row(out['rows']['raw'][-1])} | STEGO {_fmt_row(m)}"
            + (f" | + CRF {_fmt_row(mc)}" if crf is not None else "") + f" (head {run.seconds:.0f}s)")
    if P.ablations:
        alt_train, alt_feats, alt_knn = setup.alt
        variants = {"no_clamp": dict(zero_clamp=not P.zero_clamp), "no_sc": dict(lambda_self=0.0)}
        if any(P[k] != v for k, v in OFFICIAL_LOSS.items()):  # our shifts vs. the official ones
            variants["official_b"] = dict(OFFICIAL_LOSS)
        for name, change in variants.items():
            r = train_run(setup.feats_train, setup.train.labels, setup.knn, K, run_config(P, P.seed, **change), dev)
            add(name, evaluate(r, setup.feats_eval, setup.eval, None, dev))
            log(f"ablation {name}: {_fmt_row(out['rows'][name][-1])}")
        r = train_run(alt_feats, alt_train.labels, alt_knn, K, run_config(P, P.seed), dev)
        name = "no_5crop" if P.five_crop else "with_5crop"
        add(name, evaluate(r, setup.feats_eval, setup.eval, None, dev))
        log(f"ablation {name}: {_fmt_row(out['rows'][name][-1])}")
    out["seconds"] = time.perf_counter() - t_start
    return out


def _fmt_row(m: dict) -> str:
    return " ".join(f"{k}={m[k]:.1f}" for k in METRICS if k in m)


def summary(rows: dict[str, list[dict]]) -> pd.DataFrame:
    """Mean (and std over seeds) of every configuration's metrics."""
    recs = {}
    for name, lst in rows.items():
        df = pd.DataFrame(lst)
        recs[name] = {**df.mean().to_dict(), **{f"{k}_std": v for k, v in df.std(ddof=1).to_dict().items()},
                      "n": len(df)}
    return pd.DataFrame(recs).T


def tables(res: dict[str, Any], P: config.Params) -> dict[str, pd.DataFrame]:
    """Table 1 and Table 2 analogs: paper numbers beside ours."""
    s = summary(res["rows"])
    t1p, t2p = PAPER["table1"], PAPER["table2_vit_s"]
    crf_name = "stego" if "stego" in s.index else "stego_nocrf"
    rows1 = [
        ("k-means, raw features", "kmeans_raw", None),
        ("probes on raw features (paper: DINO)", "raw", t1p["raw_dino"]),
        ("STEGO (no CRF)", "stego_nocrf", None),
        ("STEGO" + (" + CRF" if crf_name == "stego" else ""), crf_name, t1p["stego"]),
    ]
    t1 = []
    for label, key, paper in rows1:
        r = {"model": label}
        for m in METRICS:
            r[f"paper {m}"] = paper[m] if paper else np.nan
            r[f"ours {m}"] = s.loc[key, m] if key in s.index and m in s.columns else np.nan
        t1.append(r)
    t1 = pd.DataFrame(t1).set_index("model")
    t2 = []
    abl = [("full STEGO, no CRF", "stego_nocrf", t2p["clamp_5crop_sc"]),
           ("− zero-clamp", "no_clamp", t2p["no_clamp"]),
           ("− self-correspondence (SC)", "no_sc", t2p["clamp_5crop"]),
           ("− 5-crop" if P.five_crop else "+ 5-crop", "no_5crop" if P.five_crop else "with_5crop",
            t2p["clamp"] if P.five_crop else t2p["clamp_5crop"]),
           ("official λ and b (train_config.yml)", "official_b", t2p["clamp_5crop_sc"]),
           ("full STEGO + CRF", "stego", t2p["full_crf"])]
    for label, key, paper in abl:
        if key not in s.index:
            continue
        r = {"model": label}
        for m in METRICS:
            r[f"paper {m}"] = paper[m]
            r[f"ours {m}"] = s.loc[key, m]
        t2.append(r)
    return {"table1": t1, "table2": pd.DataFrame(t2).set_index("model") if t2 else pd.DataFrame(), "summary": s}


def recorder(P: config.Params):
    """The results recorder; make it first, so its clock times the whole notebook."""
    from .results import Results

    return Results(notebook=NOTEBOOK, title="STEGO", paper_url=PAPER_URL, params=P)


def record_results(P: config.Params, res: dict[str, Any], rec=None):
    """The paper-vs-ours claims, judged by rules (not by hand), saved to the results folder."""
    from .results import AtLeast, Better

    rec = rec or recorder(P)
    rows = res["rows"]
    vals = lambda name, m: [r[m] for r in rows[name]]  # noqa: E731
    K = res["setup"].eval.num_classes
    chance = 100.0 / K                 # accuracy of a uniformly random label
    chance_iou = 100.0 / (2 * K - 1)   # IoU of a uniformly random label on balanced classes
    full = "stego" if "stego" in rows else "stego_nocrf"
    p1, p2 = PAPER["table1"], PAPER["table2_vit_s"]
    rec.add("raw_unsup_miou", "cluster probe on raw DINO features: unsupervised mIoU (Table 1, DINO row)",
            paper=p1["raw_dino"]["unsup_miou"], ours=vals("raw", "unsup_miou"), rule=AtLeast(chance_iou),
            note="rule: above the IoU of uniformly random labels; the baseline of the comparisons below")
    rec.add("kmeans_unsup_miou", "k-means on raw features: unsupervised mIoU", paper=None,
            ours=vals("kmeans_raw", "unsup_miou"), rule=AtLeast(chance_iou))
    rec.add("stego_unsup_miou", "STEGO beats clustering of the raw features: unsupervised mIoU",
            paper=p1["stego"]["unsup_miou"], ours=vals(full, "unsup_miou"), rule=Better("raw_unsup_miou"),
            note="paper: 28.2 vs 9.6 (ViT-B/8 on CocoStuff-27)")
    rec.add("stego_vs_kmeans", "STEGO beats k-means on raw features: unsupervised mIoU", paper=p1["stego"]["unsup_miou"],
            ours=vals(full, "unsup_miou"), rule=Better("kmeans_unsup_miou"))
    rec.add("raw_unsup_acc", "cluster probe on raw features: unsupervised accuracy", paper=p1["raw_dino"]["unsup_acc"],
            ours=vals("raw", "unsup_acc"), rule=AtLeast(chance))
    rec.add("stego_unsup_acc", "STEGO beats raw features: unsupervised accuracy", paper=p1["stego"]["unsup_acc"],
            ours=vals(full, "unsup_acc"), rule=Better("raw_unsup_acc"))
    rec.add("raw_linear_miou", "linear probe on raw features: mIoU", paper=p1["raw_dino"]["linear_miou"],
            ours=vals("raw", "linear_miou"), rule=AtLeast(chance_iou))
    rec.add("stego_linear_miou", "STEGO's code improves the linear probe: mIoU", paper=p1["stego"]["linear_miou"],
            ours=vals(full, "linear_miou"), rule=Better("raw_linear_miou"),
            note="paper: 41.0 vs 29.4; the code has 70 dims vs the backbone's width")
    if "stego" in rows:
        rec.add("nocrf_unsup_miou", "STEGO without CRF: unsupervised mIoU", paper=p2["clamp_5crop_sc"]["unsup_miou"],
                ours=vals("stego_nocrf", "unsup_miou"), rule=AtLeast(chance_iou))
        gain = [a["unsup_miou"] - b["unsup_miou"] for a, b in zip(rows["stego"], rows["stego_nocrf"])]
        rec.add("crf_helps", "the CRF improves unsupervised mIoU (Table 2; per-seed gain, same head)",
                paper=p2["full_crf"]["unsup_miou"] - p2["clamp_5crop_sc"]["unsup_miou"], ours=gain, unit="pp",
                rule=Better(0.0), note="paper: 24.0 -> 24.5; paired: the CRF refines each seed's own predictions")
    base = [rows["stego_nocrf"][0]["unsup_miou"]]  # seed 0 of STEGO without CRF (as the ablations)
    abl = (("no_clamp", "clamp_helps", "the zero-clamp", p2["no_clamp"], p2["clamp"], "7.3 -> 21.3"),
           ("no_sc", "sc_helps", "the self-correspondence term", p2["clamp_5crop"], p2["clamp_5crop_sc"], "23.4 -> 24.0"),
           ("no_5crop", "five_crop_helps", "5-crop training", p2["clamp"], p2["clamp_5crop"], "21.3 -> 23.4"))
    for key, cid, what, p_without, p_with, txt in abl:
        if key not in rows:
            continue
        rec.add(f"{key}_unsup_miou", f"STEGO without {what}: unsupervised mIoU (Table 2, no CRF)",
                paper=p_without["unsup_miou"], ours=vals(key, "unsup_miou"), rule=AtLeast(chance_iou))
        rec.add(cid, f"{what} improves unsupervised mIoU (Table 2, no CRF)", paper=p_with["unsup_miou"],
                ours=base, rule=Better(f"{key}_unsup_miou"), note=f"paper (ViT-S): {txt}; ours: seed 0 of both")
    if "official_b" in rows:
        rec.add("official_b_unsup_miou", "STEGO with the official lambda and b beats raw features: "
                "unsupervised mIoU (no CRF)", paper=p2["clamp_5crop_sc"]["unsup_miou"],
                ours=vals("official_b", "unsup_miou"), rule=Better("raw_unsup_miou"),
                note="the study profile's shifts b are calibrated for our backbone (docs/calibration.md)")
    rec.save()
    return rec


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def correspondence_maps(feats: torch.Tensor, index: int, point: tuple[int, int],
                        targets: Sequence[int]) -> torch.Tensor:
    """Figure 2: cosine similarity of the feature at patch ``point`` (row, col) of image
    ``index`` with every patch of each target image: (len(targets), h, w)."""
    q = F.normalize(feats[index, :, point[0], point[1]].float(), dim=0)
    t = F.normalize(feats[list(targets)].float(), dim=1)
    return torch.einsum("c,nchw->nhw", q, t)


def colorize(labels: torch.Tensor, num_classes: int):
    """Label maps (.., H, W) as RGB floats with a fixed palette (ignore: black)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"].resampled(max(num_classes, 2))
    pal = torch.tensor([cmap(i)[:3] for i in range(max(num_classes, 2))] + [(0.0, 0.0, 0.0)])
    lab = labels.clone()
    lab[lab < 0] = len(pal) - 1
    return pal[lab]


def cluster_to_class(run: Run, feats_eval: torch.Tensor, data: SegData, device=None) -> np.ndarray:
    """Hungarian assignment of ``run``'s clusters to classes on the evaluation split."""
    clusters, _ = predict(run, feats_eval, data.images, None, device=device)
    return hungarian(confusion(clusters, data.labels, run.cluster.centres.shape[0], data.num_classes))


def plot_correspondences(images: torch.Tensor, feats: torch.Tensor, knn: torch.Tensor, index: int,
                         point: tuple[int, int], k: int = 3, codes: torch.Tensor | None = None,
                         title: str = ""):
    """Figure 2 of the paper: a query patch (white cross) in an image, and the cosine similarity
    of its feature to every patch of the same image and of its ``k`` nearest neighbours (first
    row: backbone features; second row, when ``codes`` are given: STEGO's codes)."""
    import matplotlib.pyplot as plt

    targets = [index] + knn[index, :k].tolist()
    rows = [("backbone features", feats)] + ([("STEGO code", codes)] if codes is not None else [])
    S = images.shape[-1]
    h, w = feats.shape[-2:]
    fig, axes = plt.subplots(len(rows), len(targets) + 1, figsize=(2.1 * (len(targets) + 1), 2.2 * len(rows)),
                             squeeze=False)
    for r, (name, x) in enumerate(rows):
        sims = correspondence_maps(x, index, point, targets)
        ax = axes[r, 0]
        ax.imshow(images[index].permute(1, 2, 0))
        ax.plot((point[1] + 0.5) * S / w - 0.5, (point[0] + 0.5) * S / h - 0.5, "w+", ms=12, mew=2.5)
        ax.set_title("query" if r == 0 else "", fontsize=9)
        ax.set_ylabel(name, fontsize=9)
        for j, (t, sim) in enumerate(zip(targets, sims)):
            ax = axes[r, j + 1]
            ax.imshow(images[t].permute(1, 2, 0))
            up = F.interpolate(sim[None, None], (S, S), mode="bilinear", align_corners=False)[0, 0]
            ax.imshow(up.clamp(min=0), cmap="inferno", alpha=0.65, vmin=0, vmax=1)
            ax.set_title(("same image" if j == 0 else f"neighbour {j}") if r == 0 else "", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_segmentations(data: SegData, preds: dict[str, torch.Tensor], indices: Sequence[int]):
    """Images, ground truth and predicted label maps (predictions already mapped to classes)."""
    import matplotlib.pyplot as plt

    cols = 2 + len(preds)
    fig, axes = plt.subplots(len(indices), cols, figsize=(1.9 * cols, 1.9 * len(indices)), squeeze=False)
    K = data.num_classes
    for r, i in enumerate(indices):
        panels = [("image", data.images[i].permute(1, 2, 0)), ("ground truth", colorize(data.labels[i], K))]
        panels += [(name, colorize(p[i], K)) for name, p in preds.items()]
        for c, (name, im) in enumerate(panels):
            axes[r, c].imshow(im)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(name, fontsize=9)
    fig.tight_layout()
    return fig


def class_predictions(run: Run, feats: torch.Tensor, data: SegData, crf: dict | None = None,
                      assign: np.ndarray | None = None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(cluster probe mapped to classes by the Hungarian assignment, linear probe) label maps."""
    clusters, classes = predict(run, feats, data.images, crf, device=device)
    if assign is None:
        assign = hungarian(confusion(clusters, data.labels, run.cluster.centres.shape[0], data.num_classes))
    return torch.from_numpy(assign)[clusters], classes
