"""CLEAR's method: the stream of time buckets, the two evaluation protocols (IID and
streaming, Sec. 4 and Fig. 4), the accuracy matrix ``R[i, j]`` with the paper's metrics, and
the continual-learning baselines of Table 1 (finetuning, reservoir and biased reservoir replay,
ER, LwF, EWC), all in :func:`run_protocol`."""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.train import TrainConfig, fit

METHODS = ("finetune", "reservoir", "biased_reservoir", "er", "lwf", "ewc")
PROTOCOLS = ("iid", "streaming")
METRICS = ("in_domain", "next_domain", "accuracy", "backward", "forward")


# ----------------------------------------------------------------------------------------------
# The stream


@dataclass
class Bucket:
    """One time bucket: uint8 images (N, 3, S, S), labels (N,) and, on the world, the variant of
    each image's concept (0 old, 1 new, -1 background / unknown)."""

    index: int
    images: torch.Tensor
    labels: torch.Tensor
    variant: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Stream:
    """Buckets 0..T: bucket 0 is unlabeled (its labels are kept only for analysis)."""

    buckets: list[Bucket]
    class_names: tuple[str, ...]
    source: str
    key: dict = field(default_factory=dict)

    @property
    def labeled(self) -> list[Bucket]:
        return self.buckets[1:]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ----------------------------------------------------------------------------------------------
# Protocols and metrics


def iid_split(labels: torch.Tensor, train_fraction: float = 0.7, seed: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The IID protocol's split of one bucket: per class, a seeded ``train_fraction`` of the
    images for training, the rest for testing (indices, sorted)."""
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    tr, te = [], []
    for c in np.unique(y):
        idx = np.nonzero(y == c)[0]
        idx = idx[rng.permutation(len(idx))]
        k = round(train_fraction * len(idx))
        tr.append(idx[:k])
        te.append(idx[k:])
    return torch.from_numpy(np.sort(np.concatenate(tr))), torch.from_numpy(np.sort(np.concatenate(te)))


def protocol_splits(stream: Stream, protocol: str, seed: int = 0, train_fraction: float = 0.7
                    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(train indices, test indices) of every labeled bucket.

    ``iid``: a seeded 70/30 split of each bucket (Fig. 4 left). ``streaming``: all of a bucket
    for training *and* all of it as the test set that the previous bucket's model is scored on
    (Fig. 4 right): R[i, i+1] then is "train on bucket i, test on bucket i+1".
    """
    out = []
    for b in stream.labeled:
        if protocol == "iid":
            out.append(iid_split(b.labels, train_fraction, seed=seed * 1000 + b.index))
        elif protocol == "streaming":
            every = torch.arange(len(b))
            out.append((every, every))
        else:
            raise ValueError(f"protocol {protocol!r}; allowed: {PROTOCOLS}")
    return out


def clear_metrics(R) -> dict[str, float]:
    """The paper's metrics of an accuracy matrix ``R`` (T x T; R[i, j] = accuracy on bucket j
    after training on bucket i), all plain averages of accuracies:

    * in-domain   = (1/T) sum_i R[i, i]                       (diagonal)
    * next-domain = (1/(T-1)) sum_{i<T} R[i, i+1]              (superdiagonal)
    * accuracy    = mean of R[i, j] over i >= j               (lower triangle with the diagonal)
    * backward    = mean of R[i, j] over i > j                (strictly lower: the past)
    * forward     = mean of R[i, j] over i < j                (strictly upper: the future)
    """
    R = np.asarray(R, dtype=float)
    T = R.shape[0]
    if R.shape != (T, T) or T < 2:
        raise ValueError(f"R must be square with T >= 2, got {R.shape}")
    i, j = np.indices(R.shape)
    return {
        "in_domain": float(np.mean(np.diag(R))),
        "next_domain": float(np.mean(np.diag(R, k=1))),
        "accuracy": float(R[i >= j].mean()),
        "backward": float(R[i > j].mean()),
        "forward": float(R[i < j].mean()),
    }


# ----------------------------------------------------------------------------------------------
# Buffers and losses of the baselines


class ReservoirBuffer:
    """A replay buffer of at most ``capacity`` items (any hashable: here (bucket, index) pairs).

    * :meth:`add_reservoir`: Vitter's algorithm R. The n-th item ever offered enters with
      probability capacity / n, replacing a uniformly chosen slot, so the buffer is a uniform
      sample of everything seen (after t equal buckets, about 1/t of it from each).
    * :meth:`add_biased`: a full buffer takes each new item with probability ``p`` (``alpha``, or
      ``alpha / t`` at the t-th bucket) into a random slot, so recent buckets dominate.
    """

    def __init__(self, capacity: int, seed: int = 0):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = int(capacity)
        self.items: list = []
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def add_reservoir(self, items: Sequence) -> None:
        for it in items:
            self.seen += 1
            if len(self.items) < self.capacity:
                self.items.append(it)
            else:
                j = int(self.rng.integers(self.seen))
                if j < self.capacity:
                    self.items[j] = it

    def add_biased(self, items: Sequence, p: float) -> None:
        for it in items:
            self.seen += 1
            if len(self.items) < self.capacity:
                self.items.append(it)
            elif self.rng.random() < p:
                self.items[int(self.rng.integers(self.capacity))] = it

    def composition(self, num_buckets: int) -> np.ndarray:
        """Share of the buffer from each bucket (items are (bucket, index) pairs)."""
        counts = np.bincount([b for b, _ in self.items], minlength=num_buckets).astype(float)
        return counts / max(1, len(self.items))


def lwf_loss(logits: torch.Tensor, old_logits: torch.Tensor, T: float = 2.0) -> torch.Tensor:
    """LwF's distillation term (Li & Hoiem 2016): the previous model's soft outputs as targets,

        L_distill = T^2 * KL( softmax(z_old / T) || softmax(z / T) ),

    averaged over the batch (T^2 keeps the gradient scale independent of T). The full LwF loss
    on a batch is ``CE(y, z) + lambda * L_distill``.
    """
    p_old = F.softmax(old_logits.float() / T, dim=1)
    return T * T * F.kl_div(F.log_softmax(logits.float() / T, dim=1), p_old, reduction="batchmean")


def ewc_penalty(model: nn.Module, fisher: Mapping[str, torch.Tensor],
                anchor: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """EWC's quadratic penalty (Kirkpatrick et al. 2017, eq. 3), without the lambda/2 factor:

        sum_k F_k (theta_k - theta*_k)^2,

    with ``F`` the diagonal Fisher information and ``theta*`` the weights after the previous
    bucket. The loss is ``CE + (lambda / 2) * penalty``.
    """
    total = None
    for name, p in model.named_parameters():
        if name in fisher:
            term = (fisher[name] * (p - anchor[name]) ** 2).sum()
            total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def fisher_diagonal(model: nn.Module, x: torch.Tensor, batch_size: int = 64, seed: int = 0,
                    y: torch.Tensor | None = None, transform: Callable | None = None
                    ) -> dict[str, torch.Tensor]:
    """Diagonal Fisher information F_k = E_x E_{y ~ p(y|x)} [ (d log p(y|x) / d theta_k)^2 ],
    from *per-sample* gradients (``torch.func.vmap``), the model in eval mode (BatchNorm uses
    its running statistics). Labels are sampled from the model (the true Fisher) unless ``y``
    is given (the empirical Fisher). ``transform`` is applied to each chunk of ``x`` first."""
    from torch.func import functional_call, grad, vmap

    was_training = model.training
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def nll(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_sample = vmap(grad(nll), in_dims=(None, 0, 0))
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    gen = torch.Generator(device=x.device).manual_seed(seed)
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size]
        if transform is not None:
            xb = transform(xb)
        if y is None:
            with torch.no_grad():
                probs = F.softmax(model(xb).float(), dim=1)
            yb = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        else:
            yb = y[s:s + batch_size]
        g = per_sample(params, xb, yb)
        for k in fisher:
            fisher[k] += g[k].pow(2).sum(0)
    model.train(was_training)
    return {k: v / max(1, len(x)) for k, v in fisher.items()}


def augment_batch(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """Random horizontal flip and random translation by up to ``pad`` pixels (reflect-padded
    crop), per image, as one tensor program."""
    B, C, H, W = x.shape
    dev = x.device
    flip = torch.rand(B, generator=generator, device="cpu").to(dev) < 0.5
    x = torch.where(flip.view(B, 1, 1, 1), x.flip(3), x)
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=generator).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=generator).to(dev)
    rows = (dy[:, None] + torch.arange(H, device=dev))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(W, device=dev))[:, None, None, :]
    b = torch.arange(B, device=dev)[:, None, None, None]
    c = torch.arange(C, device=dev)[None, :, None, None]
    return xp[b, c, rows, cols]


# ----------------------------------------------------------------------------------------------
# The continual learner


@dataclass(frozen=True)
class LearnConfig:
    """One baseline's recipe. ``buffer_size`` None: one bucket's training set (the paper's
    choice). ``max_steps`` caps the SGD steps per bucket (0: none)."""

    method: str = "finetune"
    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    buffer_size: int | None = None
    lwf_lambda: float = 1.0
    lwf_temperature: float = 2.0
    ewc_lambda: float = 100.0
    bias_mode: str = "alpha"
    bias_alpha: float = 0.5
    augment: bool = False
    max_steps: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r}; allowed: {METHODS}")
        if self.bias_mode not in ("alpha", "alpha/t"):
            raise ValueError("bias_mode must be 'alpha' or 'alpha/t'")


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512,
             transform: Callable | None = None) -> float:
    """Top-1 accuracy in % (eval mode); ``transform`` maps a chunk of ``x`` to model inputs."""
    was = model.training
    model.eval()
    correct = 0
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size]
        xb = transform(xb) if transform is not None else xb
        correct += int((model(xb).argmax(1) == y[s:s + batch_size]).sum())
    model.train(was)
    return 100.0 * correct / max(1, len(x))


@dataclass
class StreamRun:
    """The result of one method on one protocol: the accuracy matrix (%), its metrics, the
    buffer's bucket composition after every bucket (replay methods), and the seconds it took."""

    R: np.ndarray
    metrics: dict[str, float]
    buffer: list[np.ndarray]
    seconds: float
    images_trained: int
    model: nn.Module | None = None


class _BucketBatches:
    """One epoch of a bucket's training batches for :func:`course_lib.train.fit`: a shuffle
    (``rng``) in full batches only (BatchNorm), each batch concatenated with an equal-size random
    replay batch (ER), then ``transform`` and, with ``cfg.augment``, the augmentation (``gen``)."""

    def __init__(self, x, y, replay, cfg: LearnConfig, rng, gen, transform):
        self.x, self.y, self.replay, self.cfg = x, y, replay, cfg
        self.rng, self.gen, self.transform = rng, gen, transform
        self.bs = min(cfg.batch_size, len(y))

    def __len__(self) -> int:
        return len(self.y) // self.bs

    def __iter__(self):
        n, bs, device = len(self.y), self.bs, self.y.device
        perm = torch.from_numpy(self.rng.permutation(n)).to(device)
        for s in range(0, n - bs + 1, bs):
            idx = perm[s:s + bs]
            xb, yb = self.x[idx], self.y[idx]
            if self.replay is not None:
                j = torch.from_numpy(self.rng.integers(0, len(self.replay[1]), bs)).to(device)
                xb, yb = torch.cat([xb, self.replay[0][j]]), torch.cat([yb, self.replay[1][j]])
            if self.transform is not None:
                xb = self.transform(xb)
            if self.cfg.augment:
                xb = augment_batch(xb, generator=self.gen)
            yield xb, yb


def _step(net: nn.Module, batch, *, model: nn.Module, cfg: LearnConfig,
          old_model: nn.Module | None, fisher, anchor) -> torch.Tensor:
    """The loss of one batch: cross-entropy, plus LwF's distillation from the model after the
    previous bucket or EWC's penalty (eq. of :func:`ewc_penalty`) where the method has them."""
    xb, yb = batch
    logits = net(xb)
    loss = F.cross_entropy(logits, yb)
    if cfg.method == "lwf" and old_model is not None:
        with torch.no_grad():
            old = old_model(xb)
        loss = loss + cfg.lwf_lambda * lwf_loss(logits, old, cfg.lwf_temperature)
    if cfg.method == "ewc" and fisher is not None:
        loss = loss + 0.5 * cfg.ewc_lambda * ewc_penalty(model, fisher, anchor)
    return loss


def run_protocol(make_model: Callable[[], nn.Module], inputs: Sequence[torch.Tensor],
                 labels: Sequence[torch.Tensor], splits: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 cfg: LearnConfig, device: torch.device | str = "cpu", keep_model: bool = False,
                 transform: Callable | None = None) -> StreamRun:
    """Train one baseline through the labeled buckets and fill its accuracy matrix.

    ``inputs[t]`` / ``labels[t]``: all of bucket t (uint8 or float images, or features);
    ``splits[t]``: its (train, test) indices; ``transform`` maps a batch of inputs to model inputs
    on the device (e.g. uint8 -> normalised float; applied before augmentation). After training on bucket i the model is scored on the test part
    of every bucket j: ``R[i, j]``. The model is carried from bucket to bucket (warm start) and
    gets a fresh Adam optimizer per bucket; each bucket trains through the course's one loop,
    :func:`course_lib.train.fit`, with the method's loss as the step (:func:`_step`). What each method trains on at bucket t:

    * ``finetune``: the current bucket.
    * ``reservoir`` / ``biased_reservoir``: the buffer *only* (official CLEAR code), after the
      current bucket was offered to it (reservoir / biased reservoir sampling).
    * ``er``: the current bucket, every batch concatenated with an equal-size random batch from
      the buffer (reservoir-updated after the bucket).
    * ``lwf``: the current bucket with ``CE + lambda * T^2 KL(p_old^T || p^T)`` (:func:`lwf_loss`),
      p_old from a frozen copy of the model after the previous bucket.
    * ``ewc``: the current bucket with ``CE + (lambda/2) sum_k F_k (theta_k - theta*_k)^2``
      (:func:`ewc_penalty`), F summed over past buckets (:func:`fisher_diagonal`), theta* the
      weights after the previous bucket.
    """
    device = torch.device(device)
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = make_model().to(device)
    T = len(inputs)
    xs = [x.to(device) for x in inputs]
    ys = [y.to(device) for y in labels]
    tests = [(xs[j][te.to(device)], ys[j][te.to(device)]) for j, (_, te) in enumerate(splits)]
    capacity = cfg.buffer_size or len(splits[0][0])
    buffer = ReservoirBuffer(capacity, seed=cfg.seed + 17)
    R = np.zeros((T, T))
    comps: list[np.ndarray] = []
    fisher: dict[str, torch.Tensor] | None = None
    anchor: dict[str, torch.Tensor] | None = None
    old_model: nn.Module | None = None
    seen = 0
    for t in range(T):
        tr = splits[t][0]
        items = [(t, int(i)) for i in tr]
        if cfg.method == "reservoir":
            buffer.add_reservoir(items)
        elif cfg.method == "biased_reservoir":
            p = cfg.bias_alpha if cfg.bias_mode == "alpha" else min(1.0, cfg.bias_alpha / (t + 1))
            buffer.add_biased(items, p)
        if cfg.method in ("reservoir", "biased_reservoir"):
            bb = np.array([b for b, _ in buffer.items])
            bi = np.array([i for _, i in buffer.items])
            x_tr = torch.cat([xs[b][torch.from_numpy(bi[bb == b]).to(device)] for b in np.unique(bb)])
            y_tr = torch.cat([ys[b][torch.from_numpy(bi[bb == b]).to(device)] for b in np.unique(bb)])
        else:
            x_tr, y_tr = xs[t][tr.to(device)], ys[t][tr.to(device)]
        replay = None
        if cfg.method == "er" and len(buffer):
            bb = np.array([b for b, _ in buffer.items])
            bi = np.array([i for _, i in buffer.items])
            replay = (torch.cat([xs[b][torch.from_numpy(bi[bb == b]).to(device)] for b in np.unique(bb)]),
                      torch.cat([ys[b][torch.from_numpy(bi[bb == b]).to(device)] for b in np.unique(bb)]))
        penalties = dict(old_model=old_model, fisher=fisher, anchor=anchor)
        hist = fit(model, _BucketBatches(x_tr, y_tr, replay, cfg, rng, gen, transform),
                   TrainConfig(epochs=cfg.epochs, lr=cfg.lr, schedule="constant", amp="none",
                               seed=None, progress=False, live_plot=0,
                               max_steps=cfg.max_steps or None),
                   device=device, step=partial(_step, model=model, cfg=cfg, **penalties),
                   optimizer=lambda net: torch.optim.Adam(net.parameters(), lr=cfg.lr,
                                                          weight_decay=cfg.weight_decay))
        seen += sum(r["images"] for r in hist.epochs)
        # after the bucket
        if cfg.method == "er":
            buffer.add_reservoir(items)
        if cfg.method == "lwf":
            old_model = copy.deepcopy(model).eval()
            for p in old_model.parameters():
                p.requires_grad_(False)
        if cfg.method == "ewc":
            f_t = fisher_diagonal(model, x_tr, seed=cfg.seed * 100 + t, transform=transform)
            fisher = f_t if fisher is None else {k: fisher[k] + f_t[k] for k in fisher}
            anchor = {k: v.detach().clone() for k, v in model.named_parameters()}
        comps.append(buffer.composition(T) if len(buffer) else np.zeros(T))
        for j, (xt, yt) in enumerate(tests):
            R[t, j] = accuracy(model, xt, yt, transform=transform)
    return StreamRun(R, clear_metrics(R), comps, time.perf_counter() - t0, seen,
                     model if keep_model else None)
