"""STEGO's contribution: the segmentation head S on frozen features, the feature and code
correspondences (eq. 3), the correspondence distillation loss with the zero clamp (eq. 4,
Sec. 3.2) summed over self, KNN and random pairs (eq. 5), and the training of the head with
the probes alongside on its detached codes."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .probes import ClusterProbe, linear_probe_loss

# Official values of eq. 5 (lambda: weight, b: shift of each pair kind): the ACTIVE block of the
# official src/configs/train_config.yml (ViT-S; that config trains cocostuff27 by default). Its
# header reads "IAROA vit small 1/31/22"; the commented-out blocks "Cocostuff27 vit small" (b
# 0.08 / 0.02 / 0.66) and "Potsdam vit small" (0.08 / 0.02 / 0.46) share these lambdas.
OFFICIAL_LOSS = dict(lambda_self=0.67, lambda_knn=0.25, lambda_rand=0.63,
                     b_self=0.18, b_knn=0.12, b_rand=0.46)


# ---------------------------------------------------------------------------------------------
# the KNN partners of eq. 5: nearest neighbours in pooled backbone features
# ---------------------------------------------------------------------------------------------
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


class StegoTrainer(nn.Module):
    """What one STEGO run trains, as one module for :func:`course_lib.train.fit`: the head
    (absent for probes on the raw features) and the cluster and linear probes on its *detached*
    codes (as the official code: the probes never shape the head). ``forward(batch)`` returns
    the summed loss (eq. 5 for the head, plus the two probe losses) and the terms to log;
    ``last`` keeps the latest terms for the run's history."""

    def __init__(self, dim_in: int, num_classes: int, cfg: RunConfig, generator: torch.Generator):
        super().__init__()
        self.cfg, self.generator = cfg, generator
        self.head = SegmentationHead(dim_in, cfg.code_dim) if cfg.train_head else None
        dim = cfg.code_dim if cfg.train_head else dim_in
        self.cluster = ClusterProbe(dim, num_classes)
        self.linear = nn.Conv2d(dim, num_classes, 1)
        self.last: dict[str, float] = {}

    def forward(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        f, y, f_knn = batch
        logs: dict[str, float] = {}
        loss = f.new_zeros(())
        if self.head is not None:
            fd, code = self.head(f)
            fd_knn, code_knn = self.head(f_knn)
            loss, parts = stego_loss(fd, fd_knn, code, code_knn, self.cfg.loss, self.generator)
            logs.update(loss=float(loss.detach()), **{f"L_{k}": v for k, v in parts.items()})
            z = code.detach()
        else:
            z = f
        l_cluster = self.cluster.loss(z)
        l_linear = linear_probe_loss(self.linear, z, y)
        logs.update(cluster=float(l_cluster.detach()), linear=float(l_linear.detach()))
        self.last = logs
        return loss + l_cluster + l_linear, {k: v for k, v in logs.items() if k != "loss"}


class _FeatureBatches:
    """``steps`` random batches ``(features, labels, features of a k-NN partner)`` drawn with
    ``generator`` (the partner only when a head trains)."""

    def __init__(self, feats, labels, knn, cfg: RunConfig, generator, device):
        self.feats, self.labels, self.knn, self.cfg = feats, labels, knn, cfg
        self.generator, self.device = generator, device

    def __len__(self) -> int:
        return self.cfg.steps

    def __iter__(self):
        N, cfg, gen = len(self.feats), self.cfg, self.generator
        for _ in range(cfg.steps):
            idx = torch.randint(0, N, (min(cfg.batch_size, N),), generator=gen)
            f = self.feats[idx].to(self.device, torch.float32)
            y = self.labels[idx].to(self.device)
            f_knn = None
            if cfg.train_head:
                pick = torch.randint(0, min(cfg.knn_k, self.knn.shape[1]), (len(idx),),
                                     generator=gen)
                f_knn = self.feats[self.knn[idx, pick]].to(self.device, torch.float32)
            yield f, y, f_knn


def train_run(feats: torch.Tensor, labels: torch.Tensor, knn: torch.Tensor | None, num_classes: int,
              cfg: RunConfig, device: torch.device | str = "cpu", log_every: int = 50) -> Run:
    """Train the STEGO head with eq. 5 and, alongside, the cluster and linear probes on its
    detached codes (:class:`StegoTrainer`, through the course's one loop,
    :func:`course_lib.train.fit`: one Adam with the head's lr and the probes' lr as two
    parameter groups). ``feats`` (N, D, h, w) are the frozen backbone's, ``labels`` (N, S, S)
    only train the linear probe, ``knn`` (N, >=k) the neighbours of every image. The history
    keeps every ``log_every``-th step and the last."""
    from course_lib.train import TrainConfig, fit

    device = torch.device(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    trainer = StegoTrainer(feats.shape[1], num_classes, cfg, gen)
    groups = [{"params": [*trainer.cluster.parameters(), *trainer.linear.parameters()],
               "lr": cfg.probe_lr}]
    if trainer.head is not None:
        groups.insert(0, {"params": list(trainer.head.parameters()), "lr": cfg.lr})
    rows = []

    def keep(event: str, state) -> None:
        step = state.step - 1
        if event == "step_end" and (step % log_every == 0 or step == cfg.steps - 1):
            rows.append({"step": step, **trainer.last})

    t0 = time.perf_counter()
    fit(trainer, _FeatureBatches(feats, labels, knn, cfg, gen, device),
        TrainConfig(epochs=1, lr=cfg.lr, schedule="constant", amp="none", seed=None,
                    progress=False, live_plot=0),
        device=device, step=lambda model, batch: model(batch),
        optimizer=lambda _: torch.optim.Adam(groups), callbacks=[keep])
    seconds = time.perf_counter() - t0
    return Run(trainer.head, trainer.cluster.eval(), trainer.linear.eval(),
               pd.DataFrame(rows).set_index("step"), seconds, cfg)
