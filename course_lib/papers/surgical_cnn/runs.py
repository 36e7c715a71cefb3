"""The surgical-skill CNN's runs: training a fresh CNN per split (``course_lib.train.fit``),
predicting, timing, the window and per-trial metrics, the classical baseline on the same
windows and splits (:func:`run_features_split`), and Table 3's grid of every task x window x
validation scheme (:func:`run_experiments`)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from . import jigsaws
from .experiment import SCHEME_LABELS, WindowSet, holdout_split, loso_folds, make_windows, names
from .features import fit_features_classifier, motion_features
from .method import SkillCNN, _Eq1Loss, znorm_stats, znormalize

# ----------------------------------------------------------------------------------------------
# training and evaluation


def _build(P: Mapping[str, Any], window: int) -> SkillCNN:
    return SkillCNN(jigsaws.N_COLUMNS, window, tuple(int(f) for f in names(P["filters"])),
                    P["kernel"], P["hidden"])


def train_cnn(P: Mapping[str, Any], x: np.ndarray, y: np.ndarray, seed: int = 0,
              device: torch.device | str | None = None) -> tuple[SkillCNN, Any]:
    """A fresh :class:`SkillCNN` trained with ``train.fit`` on normalised windows (N, C, W)."""
    from torch.utils.data import DataLoader, TensorDataset

    from course_lib.train import TrainConfig, fit

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


def run_features_split(P: Mapping[str, Any], features: np.ndarray, y: np.ndarray, train_idx: np.ndarray,
                       test_idx: np.ndarray, seed: int) -> float:
    """The classical baseline on one split: fit on the training windows' motion features, return
    the test windows' accuracy. Same windows, same split and same seed as the CNN's run."""
    clf = fit_features_classifier(features[train_idx], y[train_idx], P["baseline"], seed=seed)
    return float((clf.predict(features[test_idx]) == y[test_idx]).mean())


def loso_window_splits(trials, win: WindowSet, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``n_folds`` LOSO folds (:func:`loso_folds`) as (train, test) indices of ``win``."""
    return [(np.flatnonzero(np.isin(win.trial, a)), np.flatnonzero(np.isin(win.trial, b)))
            for a, b in loso_folds(trials, 5)[:n_folds]]


def split_seeds(P: Mapping[str, Any], n: int) -> list[int]:
    """The training seed of each of ``n`` splits (fold ``i``: ``P.seed + 17 i``), shared by the CNN
    and the feature baseline."""
    return [P["seed"] + 17 * i for i in range(n)]


def run_experiments(P: Mapping[str, Any], data: Mapping[str, Sequence[jigsaws.Trial]],
                    log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Table 3: every task x window x scheme (LOSO folds pooled; one hold-out split). Each split
    also fits the classical baseline (``P["baseline"]`` on :func:`motion_features` of the same
    windows, the same seed) unless ``P["baseline"]`` is ``"none"``."""
    import pandas as pd

    device = P.get("device_resolved", "cpu")
    rows, confusion, per_trial, trial_windows, fold_acc, feature_acc = [], {}, {}, {}, {}, {}
    t_start = time.perf_counter()
    for task in names(P["tasks"]):
        trials = list(data[task])
        for W in names(P["windows"]):
            win = make_windows(trials, W, P["step"])
            feats = motion_features(win.x) if P["baseline"] != "none" else None
            for scheme in names(P["schemes"]):
                t0 = time.perf_counter()
                if scheme == "loso":
                    splits = loso_window_splits(trials, win, P["folds"])
                else:
                    splits = [holdout_split(win.y, P["holdout_fraction"], seed=P["seed"])]
                seeds = split_seeds(P, len(splits))
                results = [run_split(P, win, a, b, seed=s, device=device) for s, (a, b) in zip(seeds, splits)]
                if feats is not None:
                    feature_acc[(task, scheme, W)] = [run_features_split(P, feats, win.y, a, b, seed=s)
                                                      for s, (a, b) in zip(seeds, splits)]
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
                    features_accuracy=float(np.mean(feature_acc[(task, scheme, W)]))
                    if feats is not None else float("nan"),
                    ms_per_window=float(np.mean([r.ms_per_window for r in results])),
                    latency_ms=float(np.mean([r.latency_ms for r in results])),
                    train_s=float(sum(r.train_seconds for r in results)),
                    models=len(results)))
                if log:
                    r = rows[-1]
                    log(f"{task:15s} {SCHEME_LABELS[scheme]:8s} W={W:3d}: acc {r['accuracy']:.3f} "
                        f"(per trial {trial_acc:.3f}, majority {majority:.3f}) F1 N/I/E "
                        f"{r['f1_novice']:.2f}/{r['f1_intermediate']:.2f}/{r['f1_expert']:.2f} "
                        f"(features: {r['features_accuracy']:.3f}) "
                        f"| {len(results)} model(s) {time.perf_counter() - t0:.1f}s")
    frame = pd.DataFrame(rows).set_index(["task", "scheme", "W"])
    return {"frame": frame, "confusion": confusion, "per_trial": per_trial,
            "trial_windows": trial_windows, "fold_acc": fold_acc,
            "feature_acc": feature_acc, "fold_seeds": {k: split_seeds(P, len(v)) for k, v in fold_acc.items()},
            "seconds": time.perf_counter() - t_start, "tasks": names(P["tasks"]), "baseline": P["baseline"],
            "windows": names(P["windows"]), "schemes": names(P["schemes"])}


# ----------------------------------------------------------------------------------------------
# scaling probe (benchmarks/scaling_probe.py) of the headline claim that did not reproduce

PROBES = {"surgical_cnn_beats_features": "the CNN's training epochs (the feature baseline does not change)"}


def scaling_probe(P: Mapping[str, Any], claim: str, factors=(1, 2, 4), log=print) -> dict[str, Any]:
    """``surgical_cnn_beats_features`` at ``factors`` x the CNN's epochs: for each LOSO fold (its
    seed) at the claim's window, the CNN's and the feature baseline's accuracy, each the mean over
    the tasks, as in the record. Returns the keyword arguments of
    :func:`course_lib.results.scaling.save_probe`."""
    from course_lib import config

    if claim not in PROBES:
        raise ValueError(f"claim={claim!r}: a probe exists for {', '.join(PROBES)}")
    from .experiment import load_data

    data = load_data(P)
    wins = names(P["windows"])
    w = 60 if 60 in wins else wins[len(wins) // 2]
    device = P.get("device_resolved", "cpu")
    tasks = names(P["tasks"])
    splits, feats = {}, {}
    for task in tasks:
        trials = list(data[task])
        win = make_windows(trials, w, P["step"])
        splits[task] = (win, loso_window_splits(trials, win, P["folds"]))
        feats[task] = motion_features(win.x)
    seeds = split_seeds(P, P["folds"])
    baseline = []
    for i, s in enumerate(seeds):
        t0 = time.perf_counter()
        acc = [run_features_split(P, feats[t], splits[t][0].y, *splits[t][1][i], seed=s) for t in tasks]
        baseline.append((100 * float(np.mean(acc)), time.perf_counter() - t0))
    rows = []
    for f in factors:
        epochs = max(1, round(P["epochs"] * f))
        Pf = config.Params({**P, "epochs": epochs})
        for i, s in enumerate(seeds):
            t0 = time.perf_counter()
            acc = []
            for t in tasks:
                r = run_split(Pf, splits[t][0], *splits[t][1][i], seed=s, device=device)
                acc.append(float((r.probs.argmax(1) == r.test.y).mean()))
            value = 100 * float(np.mean(acc))
            rows.append({"factor": f, "budget": epochs, "seed": s, "arm": "ours", "value": value,
                         "train_s": time.perf_counter() - t0})
            rows.append({"factor": f, "budget": epochs, "seed": s, "arm": "baseline", "value": baseline[i][0],
                         "train_s": baseline[i][1]})
            log(f"{f:g}x (epochs {epochs}) fold seed {s}: CNN {value:.1f}, features {baseline[i][0]:.1f}")
    return {"rows": rows, "budget": "CNN epochs", "unit": "%", "higher_is_better": True,
            "arms": {"ours": f"1-D CNN on raw kinematics (LOSO, W={w}, mean over the tasks)",
                     "baseline": f"{P['baseline']} on motion features (same windows and folds)"}}
