"""Notebook 12's experiment: its parameters (``PARAMS``), the paper's numbers (Tables 2 and 3),
the data (simulated or the real release), the windows of the trials and the two validation
schemes (LOSO, hold-out), Table 2 and 3 and the "paper vs. ours" record."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from course_lib.config import Param
from course_lib.results.takeaways import Point

from . import jigsaws, simulator
from .method import sliding_windows, window_starts

NOTEBOOK = "12_surgical_cnn"
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


BASELINE_LABELS = {"forest": "random forest", "logreg": "logistic regression"}


def names(value) -> tuple:
    """A list parameter given as a list/tuple or as a comma-separated string (papermill ``-p``)."""
    if isinstance(value, str):
        out = [v.strip() for v in value.split(",") if v.strip()]
        return tuple(int(v) if v.isdigit() else v for v in out)
    return tuple(value)


def _subset_of(allowed):
    return lambda v: 0 < len(names(v)) and set(names(v)) <= set(allowed)


PARAMS: dict[str, Param] = {
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
    "baseline": Param("forest", "the classical baseline on hand-crafted motion features of the same windows "
                      "and splits (features.py): forest (random forest), logreg (logistic regression) "
                      "or none", choices=("forest", "logreg", "none")),
    "aggregate": Param("mean_prob", "per-trial decision from its windows",
                       choices=("mean_prob", "majority")),
    "sim_seed": Param(0, "simulator: which 'surgeons' (the dataset, not the training seed)",
                      type=int, low=0),
    "sim_trials": Param(5, "simulator: trials per user and task", type=int, low=2, high=5),
    "duration_scale": Param({"smoke": 0.5, "study": 1.0, "paper": 1.0},
                            "simulator: trial length factor (1: 15-80 s trials)", low=0.2, high=4.0),
    "difficulty": Param(1.0, "simulator: user/trial skill noise and sensor noise factor",
                        low=0.0, high=3.0),
}


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
# data for the notebook


def load_data(P: Mapping[str, Any]) -> dict[str, list[jigsaws.Trial]]:
    """The trials of every task: simulated (written once under data_root/jigsaws_sim/) or the
    real release under ``data_root/JIGSAWS`` (catalog entry ``jigsaws``; a clear error when absent)."""
    tasks = names(P["tasks"])
    if P["dataset"] == "sim":
        cfg = simulator.SimConfig(tasks=jigsaws.TASKS, trials=P["sim_trials"], seed=P["sim_seed"],
                                duration_scale=float(P["duration_scale"]),
                                difficulty=float(P["difficulty"]))
        root = simulator.simulated_root(cfg, P["data_root"])
    else:
        from course_lib import fetch, paths

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
            ("accuracy", "features baseline"): r.get("features_accuracy", np.nan),
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
    labels = [("ours: CNN, per window", "accuracy"), ("ours: CNN, per trial", "trial_accuracy")]
    if "features_accuracy" in f and f["features_accuracy"].notna().any():
        labels.append((f"ours: {BASELINE_LABELS.get(res.get('baseline'), 'classifier')} on motion "
                       "features, per window", "features_accuracy"))
    for label, col in labels:
        rows[label] = {TASK_SHORT[t]: 100 * f.loc[(t, "loso", window), col]
                       for t in res["tasks"] if (t, "loso", window) in f.index}
    return pd.DataFrame(rows).T[["SU", "NP", "KT"]]


def recorder(P: Mapping[str, Any]):
    """The notebook's results recorder; make it first, so its clock times the whole run."""
    from course_lib.results import Results

    return Results("12_surgical_cnn", "Surgical skill CNN (Wang & Majewicz Fey 2018)", PAPER_URL, P)


def _key(task: str) -> str:
    return task.lower()


def record_results(P: Mapping[str, Any], res: Mapping[str, Any], rec=None):
    """The "paper vs. ours" claims (rules in course_lib.results), saved to results/12_surgical_cnn/."""
    from course_lib.results import AtLeast, Better

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
            rec.add("knot_tying_hardest", f"knot tying comes out hardest: its LOSO accuracy (W={w_mid}) is below "
                    f"{easier}'s, the lower of the other two [Table 3, Fig. 4]; a check, not the paper's "
                    "ranking: the simulator's tasks share one skill model and differ only in their geometry",
                    paper=round(100 * PAPER_TABLE3.get(("Knot_Tying", "loso", w_mid), (0, 0, 0, np.nan))[3], 1),
                    ours=[100 * a for a in folds[("Knot_Tying", "loso", w_mid)]],
                    rule=Better(f"{_key(easier)}_loso_w{w_mid}", higher_is_better=False), kind="check")
        _record_headline(rec, res, w_mid)
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


def _record_headline(rec, res: Mapping[str, Any], w: int) -> None:
    """Issue 18's ``surgical_cnn_beats_features``: the CNN against the classical baseline on the
    same windows, LOSO folds and seeds; one value per fold (its seed): the mean over the tasks."""
    from course_lib.results import AtLeast, Better

    feature_acc = res.get("feature_acc") or {}
    tasks = [t for t in res["tasks"] if (t, "loso", w) in feature_acc]
    if not tasks:
        return
    n = min(len(feature_acc[(t, "loso", w)]) for t in tasks)
    seeds = res["fold_seeds"][(tasks[0], "loso", w)][:n]

    def per_fold(acc):
        return [100 * float(np.mean([acc[(t, "loso", w)][i] for t in tasks])) for i in range(n)]

    f = res["frame"]
    majority = 100 * float(np.mean([f.loc[(t, "loso", w), "majority"] for t in tasks]))
    label = BASELINE_LABELS.get(res.get("baseline"), "classifier")
    base = f"features_loso_w{w}"
    rec.add(base, f"the classical baseline: a {label} on hand-crafted motion features (features.py) of the "
            f"same windows and LOSO folds, W={w}, mean over the tasks, above the majority-class rate "
            f"({majority:.1f}%)", paper=None, ours=per_fold(feature_acc), seeds=seeds, rule=AtLeast(majority),
            note="one value per LOSO fold (its seed)")
    paper = [PAPER_TABLE3.get((t, "loso", w), (np.nan,) * 4)[3] for t in tasks]
    rec.add("surgical_cnn_beats_features", f"the 1-D CNN on raw kinematics beats a {label} on hand-crafted "
            f"motion features, on the same windows and splits (LOSO, W={w}, mean over the tasks, paired per "
            "fold and seed) [Tables 2-4]", paper=round(100 * float(np.mean(paper)), 1),
            ours=per_fold(res["fold_acc"]), seeds=seeds, rule=Better(base), headline=True,
            note="paper: the CNN's per-window accuracy; its feature-based rows in Table 2 are per trial")


# The "What to take away" cell, written from the record (course_lib.results.takeaways): what each
# verdict means for the paper's story; the numbers are this run's. The claims name the middle
# window W of the run (60 when it runs, as the paper's Table 2), so there is one set per W.
_TASKS = (("suturing", "Suturing"), ("needle_passing", "Needle passing"), ("knot_tying", "Knot tying"))


def _loso_point(k: str, label: str, w: int) -> Point:
    return Point(f"{k}_loso_w{w}",
                 reproduced=f"{label}: the CNN reads skill from raw kinematics, LOSO per-window accuracy "
                            f"{{ours}} at W = {w}, above the majority-class rate (paper, on JIGSAWS: {{paper}}).",
                 not_reproduced=f"{label}: LOSO per-window accuracy {{ours}} at W = {w} does not beat always "
                                "answering the majority class.",
                 inconclusive=f"{label}: LOSO per-window accuracy {{ours}} at W = {w} is within the fold-to-fold "
                              "noise of the majority-class rate.")


def _window_point(k: str, label: str) -> Point:
    return Point(f"{k}_window_gain",
                 reproduced=f"{label}: a larger window helps (largest minus smallest W, paired per fold: "
                            "{ours}; paper {paper}).",
                 not_reproduced=f"{label}: a larger window does not help here (largest minus smallest W: "
                                "{ours}; paper {paper}).",
                 inconclusive=f"{label}: largest minus smallest W = {{ours}} (paper {{paper}}), within the "
                              "fold-to-fold noise.")


def _holdout_point(k: str, label: str, w: int) -> Point:
    if k == "knot_tying":  # the paper's hold-out is below its LOSO for knot tying
        return Point(f"{k}_holdout_w{w}",
                     reproduced=f"{label}: hold-out (W = {w}) is below LOSO, as in the paper ({{diff}} in the "
                                "paper's direction).",
                     not_reproduced=f"{label}: the paper's hold-out is below its LOSO; ours is not ({{diff}} in "
                                    "the paper's direction): overlapping windows put frames the network trained "
                                    "on into the test set.",
                     inconclusive=f"{label}: the paper's hold-out is below its LOSO; ours differs from LOSO by "
                                  f"{{diff}} in the paper's direction (positive: hold-out below LOSO; hold-out "
                                  f"{{ours}}, W = {w}): one hold-out split against the LOSO folds, not a verdict.")
    return Point(f"{k}_holdout_w{w}",
                 reproduced=f"{label}: hold-out (W = {w}) beats LOSO, as in the paper ({{diff}}): randomly drawn "
                            "windows put frames the network trained on into the test set.",
                 not_reproduced=f"{label}: hold-out (W = {w}) does not beat LOSO here ({{diff}}).",
                 inconclusive=f"{label}: hold-out minus LOSO = {{diff}} (hold-out {{ours}}, W = {w}; paper "
                              "{paper}): one hold-out split against the LOSO folds, not a verdict.")


TAKEAWAYS = [
    *[_loso_point(k, label, w) for w in (60, 30, 90) for k, label in _TASKS],
    Point("surgical_cnn_beats_features",
          reproduced="The CNN on raw kinematics beats the classical baseline on hand-crafted motion features of "
                     "the same windows and folds by {diff} points (95% CI {ci}, n = {n} folds): it finds more "
                     "than the motion-economy metrics hold.",
          not_reproduced="The classical baseline wins: a classifier on a few hand-crafted motion features "
                         "(path length, speed, jerk, idle time, rotation, gripper) of the same windows and folds "
                         "beats the CNN (CNN minus baseline {diff} points, 95% CI {ci}, n = {n} folds). "
                         "The simulator's skill *is* speed, smoothness, tremor and pauses, which those features "
                         "measure directly, while the CNN must learn them from 76 channels of one surgeon's "
                         "habits; in the paper's own Table 2 S-HMM and the network on entropy features reach "
                         "94-100% per trial on JIGSAWS. The scaling probe above shows whether more CNN epochs "
                         "close the gap.",
          inconclusive="CNN vs. the classical baseline on motion features: {diff} points (95% CI {ci}, n = {n} "
                       "folds), within the fold-to-fold noise."),
    Point("knot_tying_hardest",
          reproduced="Knot tying comes out hardest here ({diff} below the lower of the other two tasks). The "
                     "simulator gives every task the same skill model, so this follows from knot tying's "
                     "shorter trials and smaller reaches, not from a setting made to match the paper.",
          not_reproduced="Knot tying does not come out hardest here ({diff} in the paper's direction): with one "
                         "skill model for every task, the simulator does not reproduce the paper's task ranking, "
                         "and we do not claim it.",
          inconclusive="Knot tying vs. the lower of the other two tasks: {diff} lower LOSO accuracy (95% CI "
                       "{ci}, n = {n} folds), within the fold-to-fold noise; the simulator gives every task the "
                       "same skill model, so no ranking is built in."),
    Point("intermediate_most_confused",
          reproduced="The intermediate class is the most confused, as in Fig. 4: min(F1 novice, F1 expert) − "
                     "F1 intermediate = {ours} over the tasks (paper {paper}).",
          not_reproduced="The intermediate class is not the most confused here (F1 gap {ours}; paper {paper}); "
                         "the confusion matrices above show which class is.",
          inconclusive="The intermediate class's F1 gap, min(F1 novice, F1 expert) − F1 intermediate, is {ours} "
                       "over the tasks (paper {paper}): not consistently the most confused; the confusion "
                       "matrices above show which class is, task by task."),
    *[_window_point(k, label) for k, label in _TASKS],
    *[_holdout_point(k, label, w) for w in (60, 30, 90) for k, label in _TASKS],
]
