"""The baseline the CNN is measured against: a classical classifier on hand-crafted motion
features of the same windows (issue 18's ``surgical_cnn_beats_features``).

The paper's Table 2 compares the CNN with methods built on engineered features (S-HMM, VSM, a
network on entropy features), each on whole trials. To compare *methods* rather than protocols,
we give a classical classifier the **same windows and the same splits** as the CNN, described
by the motion-economy metrics of the skill-assessment literature (path length, speed, jerk,
idle time, wrist rotation, gripper use), computed per window for each of the four manipulators
(:func:`motion_features`), and a random forest from scikit-learn on them
(:func:`fit_features_classifier`; a logistic regression is the other choice).

The baseline was fixed before it was run against the CNN (features, forest, its settings); it is
not tuned on the claim's result.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from . import jigsaws

__all__ = ["FEATURES_PER_MANIPULATOR", "FEATURE_NAMES", "BASELINES", "motion_features",
           "fit_features_classifier"]

FEATURES_PER_MANIPULATOR = ("path_length", "speed_mean", "speed_std", "log_jerk", "idle_share",
                            "rot_speed_mean", "grip_std", "grip_range")
FEATURE_NAMES = tuple(f"{m}.{f}" for m in jigsaws.MANIPULATORS for f in FEATURES_PER_MANIPULATOR)
BASELINES = ("forest", "logreg")


def _cols(manipulator: str, variables: Sequence[str]) -> list[int]:
    return [jigsaws.column_index(manipulator, v) for v in variables]


def motion_features(x: np.ndarray, fps: int = jigsaws.FPS) -> np.ndarray:
    """Hand-crafted features of raw windows ``x`` (N, 76, W) -> (N, 8 x 4 manipulators).

    Per manipulator: path length of the tool tip (sum of |dp|, m), mean and std of the recorded
    linear speed |v|, log of the mean squared jerk of the position (third difference, the usual
    smoothness metric), the share of idle frames (|v| below a fifth of the window's median
    speed, at least 1 mm/s), the mean rotational speed |w|, and the gripper angle's std and range.
    """
    x = np.asarray(x, dtype=np.float64)
    n, _, w = x.shape
    out = np.empty((n, len(FEATURE_NAMES)))
    dt = 1.0 / fps
    k = 0
    for m in jigsaws.MANIPULATORS:
        p = x[:, _cols(m, ("x", "y", "z")), :]
        v = np.linalg.norm(x[:, _cols(m, ("vx", "vy", "vz")), :], axis=1)
        rot = np.linalg.norm(x[:, _cols(m, ("wx", "wy", "wz")), :], axis=1)
        g = x[:, jigsaws.column_index(m, "gripper"), :]
        dp = np.linalg.norm(np.diff(p, axis=2), axis=1)
        jerk = np.diff(p, n=3, axis=2) / dt ** 3 if w > 3 else np.zeros((n, 3, 1))
        thresh = np.maximum(0.2 * np.median(v, axis=1, keepdims=True), 1e-3)
        feats = (dp.sum(1), v.mean(1), v.std(1), np.log((jerk ** 2).sum(1).mean(1) + 1e-12),
                 (v < thresh).mean(1), rot.mean(1), g.std(1), g.max(1) - g.min(1))
        for f in feats:
            out[:, k] = f
            k += 1
    return out


def fit_features_classifier(features: np.ndarray, y: np.ndarray, kind: str = "forest", seed: int = 0):
    """A scikit-learn classifier fitted on window features: ``"forest"`` (random forest, 300
    trees, scikit-learn's other defaults) or ``"logreg"`` (standardised features, multinomial
    logistic regression). ``seed`` is the run's seed (the forest's bootstrap and feature draws)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "forest":
        clf = RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=1)
    elif kind == "logreg":
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    else:
        raise ValueError(f"baseline={kind!r}; allowed: {', '.join(BASELINES)}")
    return clf.fit(features, y)
