"""The surgical-skill CNN: "Deep learning with convolutional neural network for objective skill
evaluation in robot-assisted surgery" (Ziheng Wang, Ann Majewicz Fey; IJCARS 2018, arXiv
1806.05796). Everything notebook 12 needs; the data (reader and simulator) is ``jigsaws``.

The pipeline of the paper (Sec. "Methods", Fig. 1-2):

1. **Z-normalisation** per channel, ``z = (x - mu) / sigma`` for each of the 76 kinematic
   channels (:func:`znorm_stats`, :func:`znormalize`). We take mu and sigma from the *training*
   data of each split only, so no statistic of a test trial leaks into training.
2. **Sliding windows** of width W (30, 60, 90 frames = 1, 2, 3 s at 30 Hz) with step L = 30
   (the paper's "data augmentation": crops of every trial); every window inherits its trial's
   self-proclaimed skill (:func:`window_starts`, :func:`sliding_windows`).
3. **The CNN** (Fig. 2, :class:`SkillCNN`): three stages of 1-D convolution (over time, the 76
   channels as input features) + ReLU + max-pooling (2), each followed by dropout 0.2; flatten;
   two fully-connected layers (the first with ReLU and dropout 0.5); softmax over
   {novice, intermediate, expert}. The group's notes give no filter counts or kernel sizes; we
   double the filters per stage from half the input channels (38, 76, 152, kernel 3, 128 hidden
   units) in the ``paper`` profile and use a thinner copy (16, 32, 64; 64 hidden) for the CPU
   study -- our choices, not the paper's.
4. **Loss**: the multinomial cross-entropy of eq. 1,
   ``J(theta) = - sum_i sum_k 1{y_i = k} log p(y_i = k | x_i; theta)`` (:func:`cross_entropy_eq1`;
   we average over the batch instead of summing, which only rescales the learning rate), trained
   with Adam(W) through :func:`course_lib.train.fit`.
5. **Validation** (Sec. "Training and testing"):
   * *leave-one-supertrial-out* (LOSO, :func:`loso_folds`): fold k holds out trial k of every
     user (5 folds) and trains on the rest; the predictions of the five folds are pooled;
   * *hold-out* (:func:`holdout_split`): one random split of the windows ("randomly selected
     examples"; the fraction, 30 % test, is our choice -- the notes give none). Windows of one
     trial then land on both sides, and with W > L neighbouring windows *overlap*: hold-out
     tests on frames the network has seen. That is why hold-out can look better than LOSO, the
     more so the larger the window.
   Metrics: accuracy and per-class precision, recall and F1 (scikit-learn), row-normalised
   confusion matrices (Fig. 4), running time per window; and a per-trial decision from the
   windows of a trial (mean probability, or majority vote; :func:`aggregate_trials`).

Table 3 (three tasks x two schemes x three windows) and the CNN row of Table 2 are mirrored by
:func:`run_experiments`, :func:`table3` and :func:`table2`; :func:`record_results` writes the
"paper vs. ours" claims.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import config, jigsaws
from .config import Param

__all__ = [
    "TITLE", "PAPER_URL", "PAPER_TABLE3", "PAPER_TABLE2", "SCHEMES", "znorm_stats", "znormalize",
    "window_starts", "sliding_windows", "count_windows", "SkillCNN", "cross_entropy_eq1",
    "loso_folds", "holdout_split", "WindowSet", "make_windows", "train_cnn", "predict_proba",
    "time_per_window", "window_metrics", "aggregate_trials", "run_split", "run_experiments",
    "table3", "table2", "load_data", "recorder", "record_results", "plot_confusions",
    "plot_trial", "names", "count_parameters", "layer_shapes",
]

TITLE = ("Deep learning with convolutional neural network for objective skill evaluation in "
         "robot-assisted surgery")
PAPER_URL = "https://arxiv.org/abs/1806.05796"
SCHEMES = ("loso", "holdout")
SCHEME_LABELS = {"loso": "LOSO", "holdout": "Hold-out"}
TASK_SHORT = {"Suturing": "SU", "Needle_Passing": "NP", "Knot_Tying": "KT"}

# Table 3 of the paper: (task, scheme, W) -> (F1 novice, F1 intermediate, F1 expert, accuracy,
# running time in ms)
PAPER_TABLE3 = {
    ("Suturing", "loso", 30): (0.94, 0.83, 0.95, 0.930, 146.45),
    ("Suturing", "loso", 60): (0.94, 0.83, 0.97, 0.934, 185.40),
    ("Suturing", "loso", 90): (0.95, 0.86, 0.96, 0.941, 247.01),
    ("Suturing", "holdout", 30): (0.98, 0.92, 0.94, 0.961, 98.10),
    ("Suturing", "holdout", 60): (0.99, 0.94, 0.96, 0.972, 146.40),
    ("Suturing", "holdout", 90): (0.99, 0.98, 0.97, 0.983, 194.79),
    ("Needle_Passing", "loso", 30): (0.95, 0.73, 0.88, 0.889, 153.36),
    ("Needle_Passing", "loso", 60): (0.95, 0.75, 0.90, 0.898, 194.98),
    ("Needle_Passing", "loso", 90): (0.96, 0.76, 0.89, 0.903, 248.03),
    ("Needle_Passing", "holdout", 30): (0.97, 0.80, 0.91, 0.919, 113.49),
    ("Needle_Passing", "holdout", 60): (0.98, 0.81, 0.91, 0.925, 169.72),
    ("Needle_Passing", "holdout", 90): (0.98, 0.86, 0.94, 0.945, 207.12),
    ("Knot_Tying", "loso", 30): (0.90, 0.57, 0.90, 0.847, 101.83),
    ("Knot_Tying", "loso", 60): (0.90, 0.62, 0.92, 0.849, 138.25),
    ("Knot_Tying", "loso", 90): (0.92, 0.64, 0.91, 0.868, 147.38),
    ("Knot_Tying", "holdout", 30): (0.87, 0.42, 0.91, 0.803, 74.5),
    ("Knot_Tying", "holdout", 60): (0.88, 0.48, 0.92, 0.817, 113.55),
    ("Knot_Tying", "holdout", 90): (0.88, 0.47, 0.91, 0.816, 139.39),
}
# Table 2 (accuracy %, LOSO): the other methods are per-trial, the CNN per-window (W = 60)
PAPER_TABLE2 = {
    "S-HMM (Tao 2012), per trial": (97.4, 96.2, 94.4),
    "VSM (Forestier 2017), per trial": (89.7, 96.3, 61.1),
    "NN on entropy features (Zia 2018), per trial": (100.0, 99.9, 100.0),
    "CNN (current study), per window": (93.4, 89.8, 84.9),
}


def names(value) -> tuple:
    """A list parameter given as a list/tuple or as a comma-separated string (papermill ``-p``)."""
    if isinstance(value, str):
        out = [v.strip() for v in value.split(",") if v.strip()]
        return tuple(int(v) if v.isdigit() else v for v in out)
    return tuple(value)


def _subset_of(allowed):
    return lambda v: 0 < len(names(v)) and set(names(v)) <= set(allowed)


config.register("12_surgical_cnn", {
    "dataset": Param({"smoke": "sim", "study": "sim", "paper": "jigsaws"},
                     "sim (offline simulator writing JIGSAWS-format files) or jigsaws (the real "
                     "release placed under data_root/JIGSAWS, catalog entry 'jigsaws')",
                     choices=("sim", "jigsaws")),
    "tasks": Param(jigsaws.TASKS, "tasks to run (list or comma-separated)", type=(list, tuple, str),
                   check=_subset_of(jigsaws.TASKS), check_help=f"a non-empty subset of {jigsaws.TASKS}"),
    "windows": Param({"smoke": (30, 90), "study": (30, 60, 90), "paper": (30, 60, 90)},
                     "window widths W in frames (30 Hz)", type=(list, tuple, str),
                     check=lambda v: 0 < len(names(v)) and all(isinstance(w, int) and 8 <= w <= 300
                                                                for w in names(v)),
                     check_help="window widths between 8 and 300 frames"),
    "step": Param(30, "sliding-window step L in frames", type=int, low=1, high=300),
    "schemes": Param(SCHEMES, "validation schemes: loso, holdout", type=(list, tuple, str),
                     check=_subset_of(SCHEMES), check_help=f"a non-empty subset of {SCHEMES}"),
    "folds": Param({"smoke": 2, "study": 5, "paper": 5}, "LOSO folds to run (supertrials 1..folds)",
                   type=int, low=1, high=5),
    "holdout_fraction": Param(0.3, "hold-out: share of the windows held out for testing",
                              low=0.05, high=0.9),
    "filters": Param({"smoke": (8, 16, 32), "study": (16, 32, 64), "paper": (38, 76, 152)},
                     "filters of the three conv stages", type=(list, tuple, str),
                     check=lambda v: len(names(v)) == 3, check_help="three numbers"),
    "kernel": Param(3, "convolution kernel size (time steps)", type=int, low=1, high=15),
    "hidden": Param({"smoke": 32, "study": 64, "paper": 128}, "units of the first FC layer",
                    type=int, low=4),
    "epochs": Param({"smoke": 2, "study": 15, "paper": 40}, "training epochs per model", type=int, low=1),
    "batch_size": Param({"smoke": 64, "study": 64, "paper": 64}, type=int, low=2),
    "lr": Param(2e-3, "AdamW learning rate (cosine schedule)", low=1e-6, high=1.0),
    "weight_decay": Param(1e-4, "AdamW weight decay", low=0.0, high=1.0),
    "aggregate": Param("mean_prob", "per-trial decision from its windows",
                       choices=("mean_prob", "majority")),
    "sim_seed": Param(0, "simulator: which 'surgeons' (the dataset, not the training seed)",
                      type=int, low=0),
    "sim_trials": Param(5, "simulator: trials per user and task", type=int, low=2, high=5),
    "duration_scale": Param({"smoke": 0.5, "study": 1.0, "paper": 1.0},
                            "simulator: trial length factor (1: 15-80 s trials)", low=0.2, high=4.0),
    "difficulty": Param(1.0, "simulator: user/trial skill noise and sensor noise factor",
                        low=0.0, high=3.0),
})


# ----------------------------------------------------------------------------------------------
# data preparation


def znorm_stats(arrays: Sequence[np.ndarray], eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over all frames of ``arrays`` (each (T, C)).

    Pass the *training* trials (or training windows) only. A constant channel gets sigma = 1.
    """
    x = np.concatenate([np.asarray(a, dtype=np.float64) for a in arrays], axis=0)
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd > eps, sd, 1.0)
    return mu.astype(np.float32), sd.astype(np.float32)


def znormalize(x: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``z = (x - mu) / sigma`` per channel (the last axis)."""
    return ((np.asarray(x, dtype=np.float32) - mu) / sd).astype(np.float32)


def window_starts(n_frames: int, width: int, step: int) -> np.ndarray:
    """First frame of every full window: 0, L, 2L, ... while ``start + W <= T``.

    Their number is ``floor((T - W) / L) + 1`` when ``T >= W``, else 0.
    """
    if width < 1 or step < 1:
        raise ValueError("width and step must be >= 1")
    if n_frames < width:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_frames - width + 1, step, dtype=np.int64)


def count_windows(n_frames: int, width: int, step: int) -> int:
    return 0 if n_frames < width else (n_frames - width) // step + 1


def sliding_windows(x: np.ndarray, width: int, step: int) -> np.ndarray:
    """(T, C) -> (N, C, W): the windows as the CNN reads them (channels first)."""
    starts = window_starts(len(x), width, step)
    if len(starts) == 0:
        return np.zeros((0, x.shape[1], width), dtype=np.float32)
    idx = starts[:, None] + np.arange(width)[None, :]
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32)[idx].transpose(0, 2, 1))


@dataclass
class WindowSet:
    """Raw windows of a list of trials: ``x`` (N, 76, W), labels ``y`` (N,), the index of each
    window's trial ``trial`` (N,) and its first frame ``start`` (N,)."""

    x: np.ndarray
    y: np.ndarray
    trial: np.ndarray
    start: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx) -> "WindowSet":
        return WindowSet(self.x[idx], self.y[idx], self.trial[idx], self.start[idx])


def make_windows(trials: Sequence[jigsaws.Trial], width: int, step: int) -> WindowSet:
    """All windows of all trials (not yet normalised)."""
    xs, ys, ts, ss = [], [], [], []
    for i, tr in enumerate(trials):
        w = sliding_windows(tr.kinematics, width, step)
        xs.append(w)
        ys.append(np.full(len(w), tr.label, dtype=np.int64))
        ts.append(np.full(len(w), i, dtype=np.int64))
        ss.append(window_starts(len(tr.kinematics), width, step))
    c = trials[0].kinematics.shape[1] if trials else jigsaws.N_COLUMNS
    return WindowSet(np.concatenate(xs) if xs else np.zeros((0, c, width), np.float32),
                     np.concatenate(ys) if ys else np.zeros(0, np.int64),
                     np.concatenate(ts) if ts else np.zeros(0, np.int64),
                     np.concatenate(ss) if ss else np.zeros(0, np.int64))


def loso_folds(trials: Sequence[jigsaws.Trial], n_folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-supertrial-out: fold k (k = 1..n) tests on trial k of every user and trains on
    all other trials. Returns ``[(train_trial_indices, test_trial_indices), ...]``; a user who
    lacks trial k (the real release has gaps) simply has no test trial in that fold."""
    numbers = np.array([t.trial for t in trials])
    folds = []
    for k in range(1, n_folds + 1):
        test = np.flatnonzero(numbers == k)
        train = np.flatnonzero(numbers != k)
        folds.append((train, test))
    return folds


def holdout_split(labels: np.ndarray, test_fraction: float = 0.3, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One random split of the *windows* (stratified by class): ``(train_idx, test_idx)``."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(test_fraction * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# ----------------------------------------------------------------------------------------------
# the network and the loss


class SkillCNN(nn.Module):
    """The CNN of Fig. 2: input (B, 76, W) -> three [conv1d, ReLU, max-pool 2, dropout 0.2] stages
    -> flatten -> FC + ReLU + dropout 0.5 -> FC -> logits over 3 skill levels (softmax in the
    loss and in :func:`predict_proba`)."""

    def __init__(self, in_channels: int = 76, window: int = 60, filters: Sequence[int] = (38, 76, 152),
                 kernel: int = 3, hidden: int = 128, num_classes: int = 3,
                 p_pool: float = 0.2, p_fc: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, t = in_channels, window
        for c_out in filters:
            layers += [nn.Conv1d(c_in, int(c_out), kernel, padding="same"), nn.ReLU(),
                       nn.MaxPool1d(2), nn.Dropout(p_pool)]
            c_in, t = int(c_out), t // 2
        if t < 1:
            raise ValueError(f"window {window} is too short for three pooling stages")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c_in * t, hidden), nn.ReLU(),
                                        nn.Dropout(p_fc), nn.Linear(hidden, num_classes))
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def layer_shapes(model: SkillCNN, batch: int = 1) -> list[tuple[str, tuple[int, ...]]]:
    """(layer name, output shape) for one forward pass of a zero input (B, C, W)."""
    c_in = model.features[0].in_channels
    x = torch.zeros(batch, c_in, model.window)
    out = [("input", tuple(x.shape))]
    model.eval()
    with torch.no_grad():
        for part in (model.features, model.classifier):
            for layer in part:
                x = layer(x)
                if not isinstance(layer, (nn.ReLU, nn.Dropout)):
                    out.append((type(layer).__name__, tuple(x.shape)))
    out.append(("Softmax", tuple(x.shape)))
    return out


def cross_entropy_eq1(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Eq. 1: ``J = - sum_i sum_k 1{y_i = k} log softmax(logits_i)_k`` ("sum"), or its mean."""
    logp = torch.log_softmax(logits.float(), dim=1)
    onehot = F.one_hot(y, logp.shape[1]).to(logp.dtype)
    j = -(onehot * logp).sum()
    return j / len(y) if reduction == "mean" else j


class _Eq1Loss(nn.Module):
    def forward(self, inputs, outputs, targets):
        return cross_entropy_eq1(outputs, targets)


# ----------------------------------------------------------------------------------------------
# training and evaluation


def _build(P: Mapping[str, Any], window: int) -> SkillCNN:
    return SkillCNN(jigsaws.N_COLUMNS, window, tuple(int(f) for f in names(P["filters"])),
                    P["kernel"], P["hidden"])


def train_cnn(P: Mapping[str, Any], x: np.ndarray, y: np.ndarray, seed: int = 0,
              device: torch.device | str | None = None) -> tuple[SkillCNN, Any]:
    """A fresh :class:`SkillCNN` trained with ``train.fit`` on normalised windows (N, C, W)."""
    from torch.utils.data import DataLoader, TensorDataset

    from .train import TrainConfig, fit

    torch.manual_seed(seed)
    model = _build(P, x.shape[2])
    ds = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(ds, batch_size=P["batch_size"], shuffle=True, generator=g)
    cfg = TrainConfig(epochs=P["epochs"], lr=P["lr"], weight_decay=P["weight_decay"],
                      optimizer="adamw", schedule="cosine", warmup_epochs=0, progress=False,
                      seed=seed, num_classes=3)
    history = fit(model, loader, cfg, criterion=_Eq1Loss(), device=device)
    return model, history


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Softmax probabilities (N, 3) of normalised windows."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[i:i + batch_size]).to(dev)
        out.append(torch.softmax(model(xb).float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 3), np.float32)


@torch.no_grad()
def time_per_window(model: nn.Module, window: int, repeats: int = 20, batch: int = 1) -> float:
    """Median milliseconds to classify ``batch`` window(s) (B, 76, W), divided by B."""
    model.eval()
    dev = next(model.parameters()).device
    x = torch.zeros(batch, model.features[0].in_channels, window, device=dev)
    model(x)
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times)) / batch


def window_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1 (scikit-learn) and the row-normalised confusion."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = [0, 1, 2]
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    cm = confusion_matrix(y, pred, labels=labels).astype(float)
    cm_norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    return {"accuracy": float(accuracy_score(y, pred)), "precision": p, "recall": r, "f1": f,
            "support": s, "confusion": cm_norm, "counts": cm}


def aggregate_trials(probs: np.ndarray, trial: np.ndarray, how: str = "mean_prob") -> dict[int, int]:
    """Per-trial decision from its windows: argmax of the mean probability, or the majority vote
    of the window predictions (ties go to the lower class index)."""
    out = {}
    for t in np.unique(trial):
        p = probs[trial == t]
        if how == "mean_prob":
            out[int(t)] = int(p.mean(0).argmax())
        elif how == "majority":
            out[int(t)] = int(np.bincount(p.argmax(1), minlength=p.shape[1]).argmax())
        else:
            raise ValueError(f"how={how!r}; allowed: mean_prob, majority")
    return out


@dataclass
class SplitResult:
    """One trained model's test predictions."""

    probs: np.ndarray
    test: WindowSet
    train_seconds: float
    ms_per_window: float
    latency_ms: float
    n_train: int


def run_split(P: Mapping[str, Any], windows: WindowSet, train_idx: np.ndarray,
              test_idx: np.ndarray, seed: int, device=None) -> SplitResult:
    """Normalise with the training windows' statistics, train a CNN, predict the test windows."""
    tr, te = windows.subset(train_idx), windows.subset(test_idx)
    c = tr.x.shape[1]
    mu, sd = znorm_stats([tr.x.transpose(0, 2, 1).reshape(-1, c)])
    xtr = znormalize(tr.x.transpose(0, 2, 1), mu, sd).transpose(0, 2, 1).copy()
    xte = znormalize(te.x.transpose(0, 2, 1), mu, sd).transpose(0, 2, 1).copy()
    t0 = time.perf_counter()
    model, _ = train_cnn(P, xtr, tr.y, seed=seed, device=device)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs = predict_proba(model, xte)
    ms = 1000 * (time.perf_counter() - t0) / max(len(xte), 1)
    latency = time_per_window(model, xte.shape[2])
    return SplitResult(probs, te, seconds, ms, latency, len(tr))


def run_experiments(P: Mapping[str, Any], data: Mapping[str, Sequence[jigsaws.Trial]],
                    log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Table 3: every task x window x scheme (LOSO folds pooled; one hold-out split)."""
    import pandas as pd

    device = P.get("device_resolved", "cpu")
    rows, confusion, per_trial, trial_windows, fold_acc = [], {}, {}, {}, {}
    t_start = time.perf_counter()
    for task in names(P["tasks"]):
        trials = list(data[task])
        for W in names(P["windows"]):
            win = make_windows(trials, W, P["step"])
            for scheme in names(P["schemes"]):
                t0 = time.perf_counter()
                if scheme == "loso":
                    splits = []
                    for k, (tr_t, te_t) in enumerate(loso_folds(trials, 5)[:P["folds"]]):
                        splits.append((np.flatnonzero(np.isin(win.trial, tr_t)),
                                       np.flatnonzero(np.isin(win.trial, te_t))))
                else:
                    splits = [holdout_split(win.y, P["holdout_fraction"], seed=P["seed"])]
                results = [run_split(P, win, a, b, seed=P["seed"] + 17 * i, device=device)
                           for i, (a, b) in enumerate(splits)]
                probs = np.concatenate([r.probs for r in results])
                test = WindowSet(*(np.concatenate([getattr(r.test, f) for r in results])
                                   for f in ("x", "y", "trial", "start")))
                pred = probs.argmax(1)
                m = window_metrics(test.y, pred)
                fold_acc[(task, scheme, W)] = [float((r.probs.argmax(1) == r.test.y).mean())
                                               for r in results]
                agg = aggregate_trials(probs, test.trial, P["aggregate"])
                trial_acc = float(np.mean([agg[t] == trials[t].label for t in agg]))
                per_trial[(task, scheme, W)] = {trials[t].name: (trials[t].label, agg[t]) for t in agg}
                confusion[(task, scheme, W)] = m["confusion"]
                if scheme == "loso":
                    trial_windows[(task, W)] = {
                        trials[t].name: (test.start[test.trial == t], probs[test.trial == t])
                        for t in np.unique(test.trial)}
                majority = float(np.bincount(win.y, minlength=3).max() / len(win.y))
                rows.append(dict(
                    task=task, scheme=scheme, W=W, windows=len(win), test_windows=len(test),
                    f1_novice=m["f1"][0], f1_intermediate=m["f1"][1], f1_expert=m["f1"][2],
                    precision_novice=m["precision"][0], precision_intermediate=m["precision"][1],
                    precision_expert=m["precision"][2], recall_novice=m["recall"][0],
                    recall_intermediate=m["recall"][1], recall_expert=m["recall"][2],
                    accuracy=m["accuracy"], accuracy_fold_std=float(np.std(fold_acc[(task, scheme, W)], ddof=1))
                    if len(results) > 1 else float("nan"),
                    trial_accuracy=trial_acc, majority=majority,
                    ms_per_window=float(np.mean([r.ms_per_window for r in results])),
                    latency_ms=float(np.mean([r.latency_ms for r in results])),
                    train_s=float(sum(r.train_seconds for r in results)),
                    models=len(results)))
                if log:
                    r = rows[-1]
                    log(f"{task:15s} {SCHEME_LABELS[scheme]:8s} W={W:3d}: acc {r['accuracy']:.3f} "
                        f"(per trial {trial_acc:.3f}, majority {majority:.3f}) F1 N/I/E "
                        f"{r['f1_novice']:.2f}/{r['f1_intermediate']:.2f}/{r['f1_expert']:.2f} "
                        f"| {len(results)} model(s) {time.perf_counter() - t0:.1f}s")
    frame = pd.DataFrame(rows).set_index(["task", "scheme", "W"])
    return {"frame": frame, "confusion": confusion, "per_trial": per_trial,
            "trial_windows": trial_windows, "fold_acc": fold_acc,
            "seconds": time.perf_counter() - t_start, "tasks": names(P["tasks"]),
            "windows": names(P["windows"]), "schemes": names(P["schemes"])}


# ----------------------------------------------------------------------------------------------
# tables and claims


def table3(res: Mapping[str, Any]):
    """Table 3 with the paper's numbers beside ours (F1 per class, accuracy, ms per window)."""
    import pandas as pd

    f = res["frame"]
    rows = []
    for (task, scheme, W), r in f.iterrows():
        p = PAPER_TABLE3.get((task, scheme, W), (np.nan,) * 5)
        rows.append({
            ("", "task"): task, ("", "scheme"): SCHEME_LABELS[scheme], ("", "W"): W,
            ("F1 novice", "paper"): p[0], ("F1 novice", "ours"): r.f1_novice,
            ("F1 interm.", "paper"): p[1], ("F1 interm.", "ours"): r.f1_intermediate,
            ("F1 expert", "paper"): p[2], ("F1 expert", "ours"): r.f1_expert,
            ("accuracy", "paper"): p[3], ("accuracy", "ours"): r.accuracy,
            ("accuracy", "ours per trial"): r.trial_accuracy,
            ("accuracy", "majority class"): r.majority,
            ("time", "paper (ms)"): p[4], ("time", "ours (ms/window)"): r.ms_per_window,
        })
    out = pd.DataFrame(rows)
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    return out.set_index([("", "task"), ("", "scheme"), ("", "W")]).rename_axis(["task", "scheme", "W"])


def table2(res: Mapping[str, Any], window: int = 60):
    """Table 2's accuracy columns (LOSO, %): the paper's rows and ours (per window, per trial)."""
    import pandas as pd

    rows = {k: dict(zip(("SU", "NP", "KT"), v)) for k, v in PAPER_TABLE2.items()}
    f = res["frame"]
    for label, col in (("ours: CNN, per window", "accuracy"), ("ours: CNN, per trial", "trial_accuracy")):
        rows[label] = {TASK_SHORT[t]: 100 * f.loc[(t, "loso", window), col]
                       for t in res["tasks"] if (t, "loso", window) in f.index}
    return pd.DataFrame(rows).T[["SU", "NP", "KT"]]


def recorder(P: Mapping[str, Any]):
    """The notebook's results recorder; make it first, so its clock times the whole run."""
    from .results import Results

    return Results("12_surgical_cnn", "Surgical skill CNN (Wang & Majewicz Fey 2018)", PAPER_URL, P)


def _key(task: str) -> str:
    return task.lower()


def record_results(P: Mapping[str, Any], res: Mapping[str, Any], rec=None):
    """The "paper vs. ours" claims (rules in results.py), saved to results/12_surgical_cnn/."""
    from .results import AtLeast, Better

    rec = rec if rec is not None else recorder(P)
    f, folds = res["frame"], res["fold_acc"]
    wins = res["windows"]
    w_mid = 60 if 60 in wins else wins[len(wins) // 2]
    w_lo, w_hi = min(wins), max(wins)
    loso = "loso" in res["schemes"]
    hold = "holdout" in res["schemes"]
    if loso:
        for task in res["tasks"]:
            k = _key(task)
            acc = [100 * a for a in folds[(task, "loso", w_mid)]]
            maj = 100 * f.loc[(task, "loso", w_mid), "majority"]
            rec.add(f"{k}_loso_w{w_mid}", f"{task}: LOSO per-window accuracy, W={w_mid}, well above "
                    f"the majority-class rate ({maj:.1f}%) [Tables 2, 3]",
                    paper=round(100 * PAPER_TABLE3.get((task, "loso", w_mid), (0, 0, 0, np.nan))[3], 1),
                    ours=acc, rule=AtLeast(maj), note="mean ± std over LOSO folds")
            if w_hi > w_lo:
                gain = [100 * (b - a) for a, b in zip(folds[(task, "loso", w_lo)],
                                                      folds[(task, "loso", w_hi)])]
                pg = PAPER_TABLE3.get((task, "loso", 90), (np.nan,) * 4)[3] - \
                    PAPER_TABLE3.get((task, "loso", 30), (np.nan,) * 4)[3]
                rec.add(f"{k}_window_gain", f"{task}: a larger window helps: LOSO accuracy "
                        f"W={w_hi} minus W={w_lo} > 0 (paired per fold) [Table 3]",
                        paper=round(100 * pg, 2), ours=gain, unit="pp", rule=AtLeast(0.0))
        if len(res["tasks"]) == 3:
            accs = {t: 100 * f.loc[(t, "loso", w_mid), "accuracy"] for t in res["tasks"]}
            easier = min((t for t in res["tasks"] if t != "Knot_Tying"), key=accs.get)
            rec.add("knot_tying_hardest", f"knot tying is the hardest task: its LOSO accuracy "
                    f"(W={w_mid}) is below {easier}'s, the lower of the other two [Table 3, Fig. 4]",
                    paper=round(100 * PAPER_TABLE3.get(("Knot_Tying", "loso", w_mid), (0, 0, 0, np.nan))[3], 1),
                    ours=[100 * a for a in folds[("Knot_Tying", "loso", w_mid)]],
                    rule=Better(f"{_key(easier)}_loso_w{w_mid}", higher_is_better=False))
        gaps, pgaps = [], []
        for task in res["tasks"]:
            r = f.loc[(task, "loso", w_mid)]
            gaps.append(min(r.f1_novice, r.f1_expert) - r.f1_intermediate)
            p = PAPER_TABLE3.get((task, "loso", w_mid))
            if p:
                pgaps.append(min(p[0], p[2]) - p[1])
        rec.add("intermediate_most_confused", f"the intermediate class is the most confused: "
                f"min(F1 novice, F1 expert) − F1 intermediate > 0 (LOSO, W={w_mid}; one value per "
                f"task) [Table 3, Fig. 4]", paper=round(float(np.mean(pgaps)), 3) if pgaps else None,
                ours=gaps, unit="", rule=AtLeast(0.0))
    if loso and hold:
        for task in res["tasks"]:
            k = _key(task)
            p = PAPER_TABLE3.get((task, "holdout", w_mid), (np.nan,) * 4)[3]
            p_loso = PAPER_TABLE3.get((task, "loso", w_mid), (np.nan,) * 4)[3]
            higher = not (p < p_loso)
            rec.add(f"{k}_holdout_w{w_mid}", f"{task}: hold-out accuracy (W={w_mid}) "
                    f"{'above' if higher else 'below'} LOSO, as in the paper "
                    f"({100 * p:.1f} vs {100 * p_loso:.1f}) [Table 3]", paper=round(100 * p, 1),
                    ours=100 * f.loc[(task, "holdout", w_mid), "accuracy"],
                    rule=Better(f"{k}_loso_w{w_mid}", higher_is_better=higher),
                    note="one random split of the windows (overlapping windows on both sides)")
    rec.save()
    return rec


# ----------------------------------------------------------------------------------------------
# data for the notebook


def load_data(P: Mapping[str, Any]) -> dict[str, list[jigsaws.Trial]]:
    """The trials of every task: simulated (written once under data_root/jigsaws_sim/) or the
    real release under ``data_root/JIGSAWS`` (catalog entry ``jigsaws``; a clear error when absent)."""
    tasks = names(P["tasks"])
    if P["dataset"] == "sim":
        cfg = jigsaws.SimConfig(tasks=jigsaws.TASKS, trials=P["sim_trials"], seed=P["sim_seed"],
                                duration_scale=float(P["duration_scale"]),
                                difficulty=float(P["difficulty"]))
        root = jigsaws.simulated_root(cfg, P["data_root"])
    else:
        from . import fetch, paths

        try:
            root = fetch.dataset_path("jigsaws", P["data_root"])
            manual = fetch._entry("jigsaws").get("manual", "")
        except Exception:  # the catalog entry is not there (yet)
            root = paths.data_root(P["data_root"]) / "JIGSAWS"
            manual = ("register at https://cirl.lcsr.jhu.edu/research/hmm/datasets/jigsaws_release/, "
                      "download the task archives and unpack them so that <data_root>/JIGSAWS/"
                      "<Task>/kinematics/AllGestures/ and meta_file_<Task>.txt exist")
        missing = [t for t in tasks if not _has_task(root, t)]
        if missing:
            raise FileNotFoundError(
                f"dataset='jigsaws' needs the real JIGSAWS release (catalog entry 'jigsaws'); "
                f"{', '.join(missing)} not found below {root}. JIGSAWS needs a registration: "
                f"{manual}")
    return jigsaws.load_jigsaws(root, tasks)


def _has_task(root, task) -> bool:
    try:
        jigsaws.find_task_dir(root, task)
        return True
    except FileNotFoundError:
        return False


# ----------------------------------------------------------------------------------------------
# plots


def plot_confusions(res: Mapping[str, Any], window: int = 60, schemes: Sequence[str] | None = None):
    """Fig. 4 analog: row-normalised confusion matrices, one per task (columns) and scheme (rows)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from .viz import heatmap

    schemes = list(schemes or res["schemes"])
    tasks = list(res["tasks"])
    fig, axes = plt.subplots(len(schemes), len(tasks), figsize=(3.6 * len(tasks), 3.2 * len(schemes)),
                             squeeze=False)
    short = [s[:5] + "." if len(s) > 6 else s for s in jigsaws.SKILL_NAMES]
    for i, scheme in enumerate(schemes):
        for j, task in enumerate(tasks):
            cm = res["confusion"].get((task, scheme, window))
            if cm is None:
                axes[i, j].axis("off")
                continue
            heatmap(pd.DataFrame(cm, index=short, columns=short), ax=axes[i, j], vmin=0, vmax=1,
                    cmap="Blues", cbar=False, title=f"{task} · {SCHEME_LABELS[scheme]} · W={window}",
                    xlabel="predicted", ylabel="self-proclaimed")
    fig.tight_layout()
    return fig


TRACE_CHANNELS = (("slave_right", "x"), ("slave_right", "y"), ("slave_right", "z"),
                  ("slave_left", "x"), ("slave_right", "gripper"), ("slave_left", "gripper"))
SKILL_COLORS = ("tab:red", "tab:orange", "tab:green")


def plot_trial(res: Mapping[str, Any], data: Mapping[str, Sequence[jigsaws.Trial]], task: str,
               window: int, trial: str):
    """Kinematic traces of one trial with each window's predicted skill (its LOSO fold's model)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    tr = next(t for t in data[task] if t.name == trial)
    k = tr.kinematics
    t = np.arange(len(k)) / jigsaws.FPS
    fig, axes = plt.subplots(4, 1, figsize=(11, 7), sharex=True,
                             gridspec_kw={"height_ratios": [2, 1.3, 1, 0.9]})
    for m, v in TRACE_CHANNELS[:4]:
        i = jigsaws.column_index(m, v)
        axes[0].plot(t, 1000 * (k[:, i] - k[:, i].mean()), lw=0.8, label=f"{m}.{v}")
    axes[0].set_ylabel("position (mm,\ncentred)")
    axes[0].legend(fontsize=7, ncol=4, loc="upper right")
    for side in ("slave_right", "slave_left"):
        j = jigsaws.column_index(side, "vx")
        axes[1].plot(t, 1000 * np.linalg.norm(k[:, j:j + 3], axis=1), lw=0.7, label=f"{side} speed")
    axes[1].set_ylabel("speed (mm/s)")
    axes[1].legend(fontsize=7, loc="upper right")
    for m, v in TRACE_CHANNELS[4:]:
        axes[2].plot(t, k[:, jigsaws.column_index(m, v)], lw=0.8, label=f"{m}.{v}")
    axes[2].set_ylabel("gripper")
    axes[2].legend(fontsize=7, loc="upper right")
    ax = axes[3]
    starts, probs = res["trial_windows"].get((task, window), {}).get(trial, (np.zeros(0), None))
    for s, p in zip(starts, probs if probs is not None else []):
        c = int(p.argmax())
        ax.add_patch(plt.Rectangle((s / jigsaws.FPS, c - 0.4), window / jigsaws.FPS, 0.8,
                                   color=SKILL_COLORS[c], alpha=0.35 + 0.5 * float(p[c] - 1 / 3) * 1.5))
    ax.axhline(tr.label, color="k", ls="--", lw=1)
    ax.set_yticks([0, 1, 2], jigsaws.SKILL_NAMES)
    ax.set_ylim(-0.6, 2.6)
    ax.set_xlabel("time (s)")
    n = len(starts)
    acc = float((probs.argmax(1) == tr.label).mean()) if n else float("nan")
    ax.set_title(f"windows (W={window}, step {res.get('step', 30)}): predicted skill; dashed = "
                 f"self-proclaimed; {acc:.0%} of {n} windows right", fontsize=9)
    axes[0].set_title(f"{trial} · self-proclaimed {jigsaws.SKILL_NAMES[tr.label]} · GRS {tr.grs} · "
                      f"{tr.seconds:.0f} s", fontsize=10)
    ax.legend(handles=[Patch(color=c, alpha=0.6, label=n_) for c, n_ in
                       zip(SKILL_COLORS, jigsaws.SKILL_NAMES)], fontsize=7, ncol=3, loc="upper right")
    fig.tight_layout()
    return fig
