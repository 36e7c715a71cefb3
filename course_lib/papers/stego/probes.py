"""STEGO's evaluation: the cluster probe and the linear probe on (detached) codes, Hungarian
matching of clusters to classes over the whole split, unsupervised accuracy / mIoU, prediction
(optionally refined by the dense CRF) and the k-means baseline."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from .crf import dense_crf
from .data import SegData

if TYPE_CHECKING:
    from .method import Run


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
# evaluation: Hungarian matching, accuracy, mIoU (the dense CRF: crf.py)
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
