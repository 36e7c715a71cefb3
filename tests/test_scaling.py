"""Scaling probes (course_lib.results.scaling): saved, loaded, judged per budget on paired seeds."""
import json

import matplotlib
import pytest

from course_lib.results import scaling

matplotlib.use("Agg")


def _rows(gap_by_factor, seeds=(0, 1, 2)):
    rows = []
    for f, gap in gap_by_factor.items():
        for s in seeds:
            base = 70.0 + s  # seed noise shared by both arms: pairing removes it
            rows += [{"factor": f, "budget": int(3 * f), "seed": s, "arm": "baseline", "value": base},
                     {"factor": f, "budget": int(3 * f), "seed": s, "arm": "ours", "value": base + gap + 0.1 * s}]
    return rows


def test_probe_round_trip_and_paired_intervals(tmp_path):
    rows = _rows({1: -20.0, 2: -10.0, 4: 1.0})
    p = scaling.save_probe("04_convnext", "convnext_beats_resnet", rows, budget="epochs per step",
                           arms={"ours": "ConvNeXt", "baseline": "ResNet"}, params={"seeds": 3},
                           results_dir=tmp_path)
    assert p == tmp_path / "04_convnext" / "probe_convnext_beats_resnet.json"
    probe = scaling.load_probe("04_convnext", "convnext_beats_resnet", results_dir=tmp_path)
    assert probe["rows"] == json.loads(p.read_text())["rows"] and probe["meta"]["params"] == {"seeds": 3}
    ivs = scaling.probe_intervals(probe)
    assert [f for f, _, _ in ivs] == [1, 2, 4] and [b for _, b, _ in ivs] == [3, 6, 12]
    assert ivs[0][2].mean == pytest.approx(-19.9) and ivs[0][2].n == 3 and ivs[0][2].hi < 0
    assert ivs[2][2].lo > 0  # paired: the shared seed noise cancels
    table = scaling.probe_table(probe)
    assert list(table.index) == ["1x (3)", "2x (6)", "4x (12)"] and list(table["n"]) == [3, 3, 3]
    fig = scaling.plot_probe(probe)
    assert len(fig.axes) == 2
    # the ticks name the probe's own budgets: its 1x may not be the notebook's current one
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["1x (3)", "2x (6)", "4x (12)"]
    assert scaling.load_probe("04_convnext", "never_run", results_dir=tmp_path) is None


def test_lower_is_better_is_oriented_and_bad_rows_fail(tmp_path):
    probe = {"claim": "x", "budget": "steps", "higher_is_better": False, "arms": {"ours": "a", "baseline": "b"},
             "rows": _rows({1: -2.0})}
    assert scaling.probe_intervals(probe)[0][2].mean == pytest.approx(1.9)  # lower is the paper's side
    with pytest.raises(ValueError, match="arm"):
        scaling.save_probe("n", "c", [{"factor": 1, "budget": 1, "seed": 0, "arm": "other", "value": 1.0}],
                           budget="steps", arms={"ours": "a", "baseline": "b"}, results_dir=tmp_path)


def test_sweep_trains_each_arm_on_each_seed_at_each_budget():
    from course_lib import config

    P = config.Params({"seed": 5, "seeds": 2, "epochs": 3})
    calls = []

    def arm(gain):
        def run(Pf, seed):
            calls.append((Pf["epochs"], seed, gain))
            return 50.0 + gain * Pf["epochs"] + seed, 1.0
        return ("arm", run)

    rows = scaling.sweep(P, (1, 2, 0.5), "epochs", {"ours": arm(1.0), "baseline": arm(0.0)}, log=lambda s: None)
    assert [c[:2] for c in calls[:4]] == [(3, 5), (3, 5), (3, 6), (3, 6)] and {c[0] for c in calls} == {3, 6, 2}
    assert len(rows) == 3 * 2 * 2 and P["epochs"] == 3  # the caller's parameters are left alone
    ivs = scaling.probe_intervals({"rows": rows, "higher_is_better": True})
    assert [round(iv.mean, 6) for _, _, iv in ivs] == [2.0, 3.0, 6.0]  # 0.5x: 1.5 epochs round to 2
    with pytest.raises(ValueError, match="arms"):
        scaling.sweep(P, (1,), "epochs", {"ours": arm(1.0)})
