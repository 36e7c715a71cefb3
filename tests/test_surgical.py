"""The surgical-skill CNN pipeline: z-normalisation, windows, the CNN, eq. 1, folds, aggregation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import config
from course_lib.papers import surgical_cnn as S
from course_lib.papers.surgical_cnn import jigsaws as J


def _trials(n_users=3, trials=5, frames=200, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for u, user in enumerate(J.USERS[:n_users]):
        for k in range(1, trials + 1):
            K = rng.normal(loc=u, size=(frames + 10 * k, 76)).astype(np.float32)
            out.append(J.Trial("Suturing", user, k, K, J.USER_SKILL[user], 20))
    return out


def test_znorm_uses_only_the_arrays_given():
    train = [np.array([[0.0, 5.0], [2.0, 5.0]]), np.array([[4.0, 5.0]])]
    test = np.array([[100.0, 7.0]])
    mu, sd = S.znorm_stats(train)
    np.testing.assert_allclose(mu, [2.0, 5.0])
    np.testing.assert_allclose(sd, [np.sqrt(8 / 3), 1.0])  # the constant channel gets sigma 1
    z = S.znormalize(test, mu, sd)
    np.testing.assert_allclose(z, [[98 / np.sqrt(8 / 3), 2.0]], rtol=1e-6)
    mu2, _ = S.znorm_stats(train + [test])
    assert mu2[0] != mu[0]  # the test trial would have moved the mean


@pytest.mark.parametrize("T,W,L,n", [(90, 30, 30, 3), (91, 30, 30, 3), (119, 90, 30, 1),
                                     (120, 90, 30, 2), (29, 30, 30, 0), (100, 60, 10, 5)])
def test_window_counts(T, W, L, n):
    assert len(S.window_starts(T, W, L)) == n == S.count_windows(T, W, L)
    x = np.arange(T * 2, dtype=np.float32).reshape(T, 2)
    w = S.sliding_windows(x, W, L)
    assert w.shape == (n, 2, W)
    if n:
        np.testing.assert_array_equal(w[-1, :, -1], x[(n - 1) * L + W - 1])  # the last window ends in bounds
        np.testing.assert_array_equal(w[1 if n > 1 else 0, 0], x[(L if n > 1 else 0):(L if n > 1 else 0) + W, 0])


def test_make_windows_labels_and_trials():
    trials = _trials(n_users=2, trials=2, frames=100)
    ws = S.make_windows(trials, 60, 30)
    expect = [S.count_windows(len(t.kinematics), 60, 30) for t in trials]
    assert len(ws) == sum(expect)
    assert np.bincount(ws.trial).tolist() == expect
    assert (ws.y == np.array([trials[t].label for t in ws.trial])).all()


def test_cnn_output_shape_and_layers():
    for W in (30, 60, 90):
        m = S.SkillCNN(76, W, (8, 16, 32), 3, 16)
        assert m(torch.zeros(5, 76, W)).shape == (5, 3)
    m = S.SkillCNN(76, 60, (38, 76, 152), 3, 128)
    shapes = dict((k, v) for k, v in S.layer_shapes(m)[::-1])  # last occurrence of each name
    assert S.layer_shapes(m)[1] == ("Conv1d", (1, 38, 60))
    assert shapes["MaxPool1d"] == (1, 38, 30)  # the first pooling (reversed dict keeps the first)
    assert S.layer_shapes(m)[-2] == ("Linear", (1, 3))
    n = 76 * 38 * 3 + 38 + 38 * 76 * 3 + 76 + 76 * 152 * 3 + 152 + 152 * 7 * 128 + 128 + 128 * 3 + 3
    assert S.count_parameters(m) == n
    drops = [l.p for l in m.modules() if isinstance(l, torch.nn.Dropout)]
    assert drops == [0.2, 0.2, 0.2, 0.5]
    with pytest.raises(ValueError):
        S.SkillCNN(76, 6, (4, 4, 4))


def test_eq1_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3], [0.0, 0.0, 5.0]])
    y = torch.tensor([0, 2, 1])
    assert torch.allclose(S.cross_entropy_eq1(logits, y), F.cross_entropy(logits, y))
    assert torch.allclose(S.cross_entropy_eq1(logits, y, "sum"), 3 * F.cross_entropy(logits, y))
    assert S.cross_entropy_eq1(torch.tensor([[50.0, 0, 0]]), torch.tensor([0])).item() < 1e-6


def test_loso_folds_hold_out_one_trial_per_user_and_never_leak():
    trials = _trials(n_users=4, trials=5)
    trials = [t for t in trials if not (t.user == "C" and t.trial == 2)]  # a gap, as in the release
    folds = S.loso_folds(trials, 5)
    assert len(folds) == 5
    seen = []
    for k, (train, test) in enumerate(folds, 1):
        assert set(train).isdisjoint(test)
        assert len(train) + len(test) == len(trials)
        assert {trials[i].trial for i in test} == {k}
        users = [trials[i].user for i in test]
        assert len(users) == len(set(users))  # at most one trial per user
        assert sorted(users) == sorted(u for u in "BCDE" if not (u == "C" and k == 2))
        assert all(trials[i].trial != k for i in train)
        seen += list(test)
    assert sorted(seen) == list(range(len(trials)))  # every trial tested exactly once


def test_holdout_split_is_a_stratified_partition():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    a, b = S.holdout_split(y, 0.3, seed=1)
    assert set(a).isdisjoint(b) and len(a) + len(b) == 100
    assert np.bincount(y[b]).tolist() == [15, 9, 6]
    a2, b2 = S.holdout_split(y, 0.3, seed=1)
    assert (b == b2).all() and not (b == S.holdout_split(y, 0.3, seed=2)[1]).all()


def test_aggregate_trials():
    probs = np.array([[0.6, 0.3, 0.1], [0.1, 0.5, 0.4], [0.1, 0.45, 0.45],   # trial 0
                      [0.2, 0.2, 0.6], [0.9, 0.05, 0.05]])                 # trial 7
    trial = np.array([0, 0, 0, 7, 7])
    assert S.aggregate_trials(probs, trial, "mean_prob") == {0: 1, 7: 0}
    assert S.aggregate_trials(probs, trial, "majority") == {0: 1, 7: 0}  # tie 2 vs 0 -> lower index
    probs2 = np.array([[0.34, 0.33, 0.33], [0.34, 0.33, 0.33], [0.0, 0.0, 1.0]])
    assert S.aggregate_trials(probs2, np.zeros(3, int), "majority") == {0: 0}
    assert S.aggregate_trials(probs2, np.zeros(3, int), "mean_prob") == {0: 2}
    with pytest.raises(ValueError):
        S.aggregate_trials(probs, trial, "median")


def test_run_split_normalises_with_training_windows_and_learns():
    # two classes whose windows differ in level: a tiny CNN must separate them
    P = config.resolve("12_surgical_cnn", profile="smoke", device="cpu", epochs=10, lr=3e-3,
                       batch_size=8)
    rng = np.random.default_rng(0)
    trials = []
    for u, user in enumerate("BD"):  # B novice, D expert
        for k in range(1, 4):
            K = rng.normal(size=(300, 76)).astype(np.float32)
            K[:, :20] += 3.0 * u
            trials.append(J.Trial("Suturing", user, k, K, J.USER_SKILL[user], 10))
    ws = S.make_windows(trials, 30, 30)
    folds = S.loso_folds(trials, 3)
    tr = np.flatnonzero(np.isin(ws.trial, folds[0][0]))
    te = np.flatnonzero(np.isin(ws.trial, folds[0][1]))
    r = S.run_split(P, ws, tr, te, seed=0)
    assert r.probs.shape == (len(te), 3) and np.allclose(r.probs.sum(1), 1, atol=1e-5)
    assert (r.probs.argmax(1) == ws.y[te]).mean() >= 0.9
    assert r.n_train == len(tr) and r.ms_per_window > 0 and r.latency_ms > 0


def test_window_metrics_and_parameters():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    m = S.window_metrics(y, pred)
    assert m["accuracy"] == pytest.approx(4 / 6)
    np.testing.assert_allclose(m["recall"], [0.5, 1.0, 0.5])
    np.testing.assert_allclose(m["confusion"].sum(1), 1)
    assert m["f1"][1] == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    with pytest.raises(config.ParameterError):
        config.resolve("12_surgical_cnn", profile="smoke", windows=(30, 4))
    with pytest.raises(config.ParameterError):
        config.resolve("12_surgical_cnn", profile="smoke", tasks="Suturing,Cooking")
    P = config.resolve("12_surgical_cnn", profile="smoke", windows="30,60")
    assert S.names(P.windows) == (30, 60)


def test_paper_profile_without_data_fails_clearly(tmp_path):
    P = config.resolve("12_surgical_cnn", profile="paper", device="cpu", data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="jigsaws"):
        S.load_data(P)
