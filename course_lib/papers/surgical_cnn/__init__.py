"""The surgical-skill CNN: "Deep learning with convolutional neural network for objective skill
evaluation in robot-assisted surgery" (Ziheng Wang, Ann Majewicz Fey; IJCARS 2018, arXiv
1806.05796): notebook 12.

The problem: surgical skill is judged by experts watching a whole procedure (checklists, global
rating scales), which is slow and subjective. The idea: a 1-D CNN reads short windows of the
robot's kinematics and classifies the surgeon's skill (novice, intermediate, expert) from a few
seconds of motion, with no hand-made features; the data is JIGSAWS.

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

Where things live in this package:

``jigsaws.py``
    the JIGSAWS release: its layout, a reader (and writer) of its kinematics and meta files,
    :class:`~jigsaws.Trial`, and per-trial motion statistics.
``simulator.py``
    an offline simulator that writes a JIGSAWS-format copy (users, trials, tasks) from one
    documented generative model of skill for every task (speed, smoothness, tremor, pauses).
``method.py``
    steps 1-4: z-normalisation, sliding windows, :class:`SkillCNN`, the loss of eq. 1.
``experiment.py``
    the notebook's parameters (``PARAMS``), the paper's Tables 2 and 3, the data, the windows of
    the trials, the LOSO and hold-out splits, the tables and the "paper vs. ours" record.
``features.py``
    the classical baseline of ``surgical_cnn_beats_features``: hand-crafted motion features of a
    window (path length, speed, jerk, idle time, rotation, gripper) and a random forest on them.
``runs.py``
    training, prediction, timing and metrics per split, the baseline on the same splits, Table
    3's grid (:func:`run_experiments`) and the headline claim's scaling probe.
``figures.py``
    confusion matrices (Fig. 4) and one trial's windows.
"""
from __future__ import annotations

from . import jigsaws, simulator
from .experiment import (NOTEBOOK, PAPER_TABLE2, PAPER_TABLE3, PAPER_URL, PARAMS, SCHEME_LABELS, SCHEMES,
                         TAKEAWAYS, TASK_SHORT, TITLE, WindowSet, holdout_split, load_data, loso_folds, make_windows,
                         names, record_results, recorder, table2, table3)
from .figures import SKILL_COLORS, TRACE_CHANNELS, plot_confusions, plot_trial
from .method import (SkillCNN, count_parameters, count_windows, cross_entropy_eq1, layer_shapes,
                     sliding_windows, window_starts, znorm_stats, znormalize)
from .features import BASELINES, FEATURE_NAMES, fit_features_classifier, motion_features
from .runs import (PROBES, SplitResult, aggregate_trials, predict_proba, run_experiments, run_features_split,
                   run_split, scaling_probe, time_per_window, train_cnn, window_metrics)

__all__ = [
    "TITLE", "PAPER_URL", "PAPER_TABLE3", "PAPER_TABLE2", "SCHEMES", "znorm_stats", "znormalize",
    "window_starts", "sliding_windows", "count_windows", "SkillCNN", "cross_entropy_eq1",
    "loso_folds", "holdout_split", "WindowSet", "make_windows", "train_cnn", "predict_proba",
    "time_per_window", "window_metrics", "aggregate_trials", "run_split", "run_experiments",
    "table3", "table2", "load_data", "recorder", "record_results", "TAKEAWAYS", "plot_confusions",
    "plot_trial", "names", "count_parameters", "layer_shapes",
    "NOTEBOOK", "PARAMS", "SCHEME_LABELS", "TASK_SHORT", "SplitResult", "TRACE_CHANNELS", "SKILL_COLORS",
    "jigsaws", "simulator", "BASELINES", "FEATURE_NAMES", "fit_features_classifier", "motion_features",
    "run_features_split", "PROBES", "scaling_probe",
]
