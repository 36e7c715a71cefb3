"""The JIGSAWS reader (files in the release's exact format) and the offline simulator."""
from __future__ import annotations

import numpy as np
import pytest

from course_lib.papers.surgical_cnn import jigsaws as J, simulator as sim

META_LINES = (
    "Suturing_B001\t\tN\t13\t\t3\t2\t1\t2\t2\t3\n"
    "Suturing_C001\t\tI\t26\t\t4\t4\t4\t5\t4\t5\n"
    "\n"
    "Suturing_D001\t\tE\t14\t\t2\t2\t2\t3\t2\t3\n"
)


def _kin_text(rows: np.ndarray) -> str:
    # the release pads every number with several spaces; vary the padding on purpose
    return "".join("".join(f"{' ' * (4 + (i + j) % 3)}{v:.6f}" for j, v in enumerate(r)) + "\n"
                   for i, r in enumerate(rows))


def test_layout_constants():
    assert J.N_COLUMNS == 76 and len(J.COLUMNS) == 76 and len(set(J.COLUMNS)) == 76
    assert J.column_index("master_left", "x") == 0
    assert J.column_index("master_right", "x") == 19
    assert J.column_index("slave_left", "x") == 38
    assert J.column_index("slave_right", "gripper") == 75
    assert J.COLUMNS[J.column_index("slave_left", "R23")] == "slave_left.R23"
    assert [J.USER_SKILL[u] for u in J.USERS].count("N") == 4


def test_trial_names_round_trip():
    assert J.trial_name("Knot_Tying", "C", 4) == "Knot_Tying_C004"
    assert J.parse_trial_name("Knot_Tying_C004") == ("Knot_Tying", "C", 4)
    assert J.parse_trial_name("Needle_Passing_I005.txt") == ("Needle_Passing", "I", 5)
    with pytest.raises(ValueError):
        J.parse_trial_name("Suturing_b01")


def test_read_meta_release_format(tmp_path):
    p = tmp_path / "meta_file_Suturing.txt"
    p.write_text(META_LINES)
    m = J.read_meta(p)
    assert list(m) == ["Suturing_B001", "Suturing_C001", "Suturing_D001"]
    assert m["Suturing_C001"] == J.MetaRow("Suturing_C001", "I", 26, (4, 4, 4, 5, 4, 5))
    assert m["Suturing_B001"].grs == 13 and m["Suturing_D001"].skill == "E"
    bad = tmp_path / "bad.txt"
    bad.write_text("Suturing_B001\t\tX\t13\t\t3\t2\t1\t2\t2\t3\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        J.read_meta(bad)


def test_write_meta_is_the_release_layout(tmp_path):
    rows = list(J.read_meta(_write(tmp_path / "a.txt", META_LINES)).values())
    out = tmp_path / "b.txt"
    J.write_meta(out, rows)
    assert out.read_text().splitlines()[0] == "Suturing_B001\t\tN\t13\t\t3\t2\t1\t2\t2\t3"
    assert J.read_meta(out) == J.read_meta(tmp_path / "a.txt")


def _write(path, text):
    path.write_text(text)
    return path


def test_read_kinematics_76_columns(tmp_path):
    rows = np.random.default_rng(0).normal(size=(7, 76)).round(6)
    p = _write(tmp_path / "Suturing_B001.txt", _kin_text(rows))
    k = J.read_kinematics(p)
    assert k.shape == (7, 76) and k.dtype == np.float32
    np.testing.assert_allclose(k, rows, atol=1e-6)
    short = _write(tmp_path / "short.txt", _kin_text(rows[:, :75]))
    with pytest.raises(ValueError, match="75 columns"):
        J.read_kinematics(short)


def test_write_then_read_kinematics(tmp_path):
    rows = np.random.default_rng(1).normal(size=(5, 76)) * 100
    J.write_kinematics(tmp_path / "k.txt", rows)
    np.testing.assert_allclose(J.read_kinematics(tmp_path / "k.txt"), rows, atol=1e-5, rtol=1e-6)
    with pytest.raises(ValueError):
        J.write_kinematics(tmp_path / "x.txt", rows[:, :10])


def test_load_task_skips_missing_trials_and_finds_nested_folder(tmp_path):
    task_dir = tmp_path / "Suturing" / "Suturing"  # one extra level, as some unzip tools make
    task_dir.mkdir(parents=True)
    _write(task_dir.parent / "readme.txt", "x")
    _write(task_dir / "meta_file_Suturing.txt", META_LINES)
    kin = task_dir / "kinematics" / "AllGestures"
    kin.mkdir(parents=True)
    rng = np.random.default_rng(2)
    _write(kin / "Suturing_B001.txt", _kin_text(rng.normal(size=(40, 76))))
    _write(kin / "Suturing_D001.txt", _kin_text(rng.normal(size=(35, 76))))
    trials = J.load_task(tmp_path, "Suturing")  # C001 has no kinematics file: skipped
    assert [t.name for t in trials] == ["Suturing_B001", "Suturing_D001"]
    assert [t.label for t in trials] == [0, 2]
    assert trials[1].kinematics.shape == (35, 76) and trials[0].grs == 13
    with pytest.raises(FileNotFoundError):
        J.load_task(tmp_path, "Knot_Tying")


def test_simulator_deterministic_and_in_format(tmp_path):
    cfg = sim.SimConfig(tasks=("Knot_Tying",), users=("B", "D"), trials=2, duration_scale=0.4)
    a, row = sim.simulate_trial(cfg, "Knot_Tying", "D", 2)
    b, row2 = sim.simulate_trial(cfg, "Knot_Tying", "D", 2)
    np.testing.assert_array_equal(a, b)
    assert row == row2 and row.name == "Knot_Tying_D002" and row.skill == "E"
    assert a.shape[1] == 76 and np.isfinite(a).all() and len(a) > 90
    assert 6 <= row.grs <= 30 and row.grs == sum(row.items)
    other = sim.simulate_trial(sim.SimConfig(seed=1, duration_scale=0.4), "Knot_Tying", "D", 2)[0]
    assert other.shape != a.shape or not np.allclose(other, a)
    # rotation blocks are rotation matrices (before sensor noise they are exactly orthonormal)
    i = J.column_index("slave_right", "R11")
    R = a[:, i:i + 9].reshape(-1, 3, 3)
    assert np.abs(np.linalg.det(R) - 1).mean() < 0.1
    root = sim.write_simulation(cfg, tmp_path / "sim")
    trials = J.load_task(root, "Knot_Tying")
    assert [t.name for t in trials] == ["Knot_Tying_B001", "Knot_Tying_B002", "Knot_Tying_D001",
                                        "Knot_Tying_D002"]
    np.testing.assert_allclose(trials[3].kinematics, a, atol=2e-6)


def test_simulated_skill_statistics():
    """Experts are faster, shorter, less tremulous and score higher GRS than novices."""
    cfg = sim.SimConfig(duration_scale=0.5)
    trials = []
    for user in ("B", "G", "D", "E"):  # two novices, two experts
        for k in (1, 2, 3):
            K, row = sim.simulate_trial(cfg, "Suturing", user, k)
            trials.append(J.Trial("Suturing", user, k, K, row.skill, row.grs, row.items))
    s = J.motion_summary(trials).groupby("skill").mean(numeric_only=True)
    assert s.loc["E", "seconds"] < s.loc["N", "seconds"]
    assert s.loc["E", "tremor"] < s.loc["N", "tremor"]
    assert s.loc["E", "grs"] > s.loc["N", "grs"] + 5


def test_simulated_root_is_cached(tmp_path):
    cfg = sim.SimConfig(tasks=("Knot_Tying",), users=("C",), trials=2, duration_scale=0.3)
    root = sim.simulated_root(cfg, tmp_path)
    assert root.parent.name == "jigsaws_sim" and (root / "COMPLETE.json").is_file()
    f = root / "Knot_Tying" / "kinematics" / "AllGestures" / "Knot_Tying_C001.txt"
    mtime = f.stat().st_mtime_ns
    assert sim.simulated_root(cfg, tmp_path) == root and f.stat().st_mtime_ns == mtime
    assert sim.simulated_root(sim.SimConfig(tasks=("Knot_Tying",), users=("C",), trials=2,
                                        duration_scale=0.3, seed=5), tmp_path) != root
