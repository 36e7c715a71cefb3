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


def _window(p: np.ndarray, grip: np.ndarray | None = None) -> np.ndarray:
    """A (1, 76, W) window whose four manipulators follow positions ``p`` (W, 3), with the
    recorded velocity the gradient of ``p`` at 30 Hz."""
    W = len(p)
    x = np.zeros((1, 76, W))
    for m in J.MANIPULATORS:
        x[0, [J.column_index(m, v) for v in "xyz"]] = p.T
        x[0, [J.column_index(m, v) for v in ("vx", "vy", "vz")]] = np.gradient(p, axis=0).T * J.FPS
        if grip is not None:
            x[0, J.column_index(m, "gripper")] = grip
    return x


def test_motion_features_measure_path_speed_idle_and_jerk():
    from course_lib.papers.surgical_cnn.features import FEATURES_PER_MANIPULATOR as F

    W = 60
    t = np.arange(W) / J.FPS
    line = np.stack([0.03 * t, 0 * t, 0 * t], 1)           # 3 cm/s, straight and smooth
    x = _window(line, grip=np.linspace(0.1, 0.5, W))
    f = S.motion_features(x).reshape(4, len(F))            # the four manipulators are the same
    assert S.motion_features(x).shape == (1, len(S.FEATURE_NAMES)) == (1, 32)
    row = dict(zip(F, f[0]))
    assert row["path_length"] == pytest.approx(0.03 * t[-1], rel=1e-6)
    assert row["speed_mean"] == pytest.approx(0.03, rel=1e-6) and row["speed_std"] == pytest.approx(0, abs=1e-9)
    assert row["idle_share"] == 0 and row["grip_range"] == pytest.approx(0.4)
    # half the window still: idle share 1/2; a shaky path has far more jerk than the straight one
    stop = line.copy()
    stop[W // 2:] = stop[W // 2]
    assert dict(zip(F, S.motion_features(_window(stop))[0]))["idle_share"] == pytest.approx(0.5, abs=0.05)
    shaky = line + 0.001 * np.sin(2 * np.pi * 9 * t)[:, None]
    assert dict(zip(F, S.motion_features(_window(shaky))[0]))["log_jerk"] > row["log_jerk"] + 5


def test_features_baseline_is_seeded_and_validated():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 32))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 1)
    a = S.fit_features_classifier(X, y, "forest", seed=3).predict(X)
    b = S.fit_features_classifier(X, y, "forest", seed=3).predict(X)
    assert (a == b).all() and (a == y).mean() > 0.95
    assert (S.fit_features_classifier(X, y, "logreg").predict(X) == y).mean() > 0.8
    with pytest.raises(ValueError, match="forest, logreg"):
        S.fit_features_classifier(X, y, "svm")
    with pytest.raises(config.ParameterError):
        config.resolve("12_surgical_cnn", profile="smoke", baseline="svm")


def test_simulator_has_one_skill_model_for_every_task():
    from course_lib.papers.surgical_cnn import simulator as sim

    cfg = sim.SimConfig(difficulty=0.0)  # no user or trial noise: the latent skill is the class level
    for task in J.TASKS:
        assert set(sim.TASK_SIM[task]) == {"gestures", "reach"}  # only what the task is
        for user, skill in J.USER_SKILL.items():
            assert sim._latent_skill(cfg, task, user, 1) == sim.SKILL_LEVEL[skill]
    assert sim.SKILL_LEVEL == {"N": 0.0, "I": 0.5, "E": 1.0}


def test_headline_claim_pairs_cnn_and_features_per_fold(tmp_path, monkeypatch):
    # the CNN and the baseline run on the same windows and folds; the record pairs them fold by
    # fold (a fold's seed), one value per fold = the mean over the tasks
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path))
    P = config.resolve("12_surgical_cnn", profile="smoke", device="cpu", tasks="Suturing,Knot_Tying",
                       windows="30,60", schemes="loso", folds=3, epochs=1, seed=5)
    data = {t: [J.Trial(t, tr.user, tr.trial, tr.kinematics, tr.skill, tr.grs) for tr in _trials(4, 5, 200)]
            for t in ("Suturing", "Knot_Tying")}
    res = S.run_experiments(P, data, log=None)
    assert set(res["feature_acc"]) == set(res["fold_acc"])
    assert res["fold_seeds"][("Suturing", "loso", 60)] == [5, 22, 39]
    rec = S.record_results(P, res, S.recorder(P))
    c = {x.id: x for x in rec.claims}
    h = c["surgical_cnn_beats_features"]
    assert h.headline and h.kind == "claim" and h.seeds == [5, 22, 39]
    expect = [100 * np.mean([res["fold_acc"][(t, "loso", 60)][i] for t in ("Suturing", "Knot_Tying")])
              for i in range(3)]
    np.testing.assert_allclose(h.runs, expect)
    assert c["features_loso_w60"].seeds == h.seeds and c["features_loso_w60"].kind == "check"


def test_paper_profile_end_to_end_on_a_slice_of_the_release(tmp_path, monkeypatch):
    """The paper profile on a small slice of JIGSAWS' on-disk layout (the simulator writes the
    release's files: `<Task>/kinematics/AllGestures/<Task>_<User><Trial>.txt` and the meta file,
    with a gap like the release's Suturing_H002), through the same reader, driver and recorder;
    only the budget knobs are overridden."""
    from course_lib.papers.surgical_cnn import simulator as sim

    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path / "results"))
    root = tmp_path / "data" / "JIGSAWS"
    sim.write_simulation(sim.SimConfig(tasks=("Suturing",), trials=5, duration_scale=0.3), root)
    (root / "Suturing" / "kinematics" / "AllGestures" / "Suturing_H002.txt").unlink()
    P = config.resolve("12_surgical_cnn", profile="paper", device="cpu", data_root=str(tmp_path / "data"),
                       tasks="Suturing", windows="30,60", folds=3, epochs=1, schemes="loso,holdout")
    assert P.dataset == "jigsaws" and S.names(P.filters) == (38, 76, 152)
    data = S.load_data(P)
    assert len(data["Suturing"]) == 39  # 8 users x 5 trials, one missing
    res = S.run_experiments(P, data, log=None)
    assert len(res["frame"]) == 4 and res["fold_acc"][("Suturing", "loso", 60)]
    rec = S.record_results(P, res, S.recorder(P))
    assert (tmp_path / "results" / "12_surgical_cnn" / "paper.json").is_file()
    assert {"suturing_loso_w60", "surgical_cnn_beats_features"} <= {c.id for c in rec.claims}
