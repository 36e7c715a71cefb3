"""Results recorder, verdict rules, JSON schema, report and README table."""
from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from course_lib import results as R
from course_lib.__main__ import BEGIN, END, main, render_report, update_readme
from course_lib.results import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    AtLeast,
    AtMost,
    Better,
    Results,
    Within,
)

PARAMS = {"notebook": "03_deit", "profile": "study", "seed": 0, "device_resolved": "cpu",
          "grid": (4, 4)}


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    d = tmp_path / "results"
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(d))
    return d


def rec(**kw) -> Results:
    return Results(notebook="03_deit", title="DeiT", paper_url="https://arxiv.org/abs/2012.12877",
                   params=kw.get("params", PARAMS))


def better(ours, base, **rule_kw) -> str:
    r = rec()
    r.add("base", "baseline", paper=None, ours=base, rule=AtLeast(0))
    return r.add("x", "x beats baseline", paper=None, ours=ours, rule=Better("base", **rule_kw)).verdict


# ------------------------------------------------------------------------------ Better
def test_better_reproduced_beyond_noise():
    assert better([80.0, 80.5, 79.5], [75.0, 75.5, 74.5]) == REPRODUCED


def test_better_clearly_wrong_side_is_not_reproduced():
    assert better([75.0, 75.5, 74.5], [80.0, 80.5, 79.5]) == NOT_REPRODUCED


def test_better_tie_depends_on_number_of_seeds():
    # diff -0.2 within a noise band of about 1.6: with 3 seeds each that is "not reproduced",
    # with 2 seeds each the spread is too uncertain to tell
    assert better([80.0, 81.0, 79.0], [80.2, 79.2, 81.2]) == NOT_REPRODUCED
    assert better([80.0, 81.0], [80.5, 80.0]) == INCONCLUSIVE
    assert better([80.0, 81.0, 79.0], [80.2, 79.2, 81.2], min_seeds=5) == INCONCLUSIVE


def test_better_positive_but_within_noise_is_not_a_win():
    # diff +0.5, 2·SE ≈ 1.6
    assert better([80.5, 81.5, 79.5], [80.0, 81.0, 79.0]) == NOT_REPRODUCED
    assert better([80.5, 81.5], [80.0, 81.0]) == INCONCLUSIVE


def test_better_min_effect():
    a, b = [81.0, 81.1, 80.9], [80.0, 80.1, 79.9]  # diff +1.0, 2·SE ≈ 0.16
    assert better(a, b) == REPRODUCED
    assert better(a, b, min_effect=0.5) == REPRODUCED
    assert better(a, b, min_effect=2.0) == NOT_REPRODUCED  # real, but too small to matter
    assert better(a[:2], b[:2], min_effect=2.0) == INCONCLUSIVE


def test_better_lower_is_better():
    err_new, err_old = [10.0, 10.2, 9.8], [14.0, 14.2, 13.8]
    assert better(err_new, err_old, higher_is_better=False) == REPRODUCED
    assert better(err_new, err_old, higher_is_better=True) == NOT_REPRODUCED


def test_better_numeric_baseline_and_single_runs():
    r = rec()
    assert r.add("a", "above chance", paper=None, ours=60.0, rule=Better(50.0)).verdict == REPRODUCED
    assert r.add("b", "above chance", paper=None, ours=40.0, rule=Better(50.0)).verdict == NOT_REPRODUCED
    assert r.add("c", "tie", paper=None, ours=50.0, rule=Better(50.0)).verdict == INCONCLUSIVE
    # single runs on both sides: point estimate, min_effect is the only margin
    assert better(80.3, 80.0) == REPRODUCED
    assert better(80.3, 80.0, min_effect=0.5) == INCONCLUSIVE
    assert better(79.9, 80.0, min_effect=0.5) == NOT_REPRODUCED


def test_better_borrows_spread_for_a_single_run():
    # baseline: 3 seeds with std 1; one run of the new method 0.5 better -> within noise
    r = rec()
    r.add("base", "baseline", paper=None, ours=80.0, ours_std=1.0, n=3, rule=AtLeast(0))
    c = r.add("x", "x beats baseline", paper=None, ours=80.5, rule=Better("base"))
    assert c.verdict == INCONCLUSIVE
    assert "2·SE" in c.evidence and "unknown" not in c.evidence


def test_better_unknown_baseline_id():
    with pytest.raises(KeyError, match="no_distill"):
        rec().add("x", "x", paper=None, ours=1.0, rule=Better("no_distill"))


# ------------------------------------------------------------------------------ Within / AtLeast / AtMost
def test_within():
    r = rec()
    ok = r.add("p1", "params", paper=5_717_416, ours=5.6e6, unit="", rule=Within(0.10))
    bad = r.add("p2", "params", paper=5_717_416, ours=4.0e6, unit="", rule=Within(0.10))
    edge = r.add("acc", "acc", paper=80.0, ours=87.0, ours_std=2.0, n=4, rule=Within(0.10))
    assert (ok.verdict, bad.verdict, edge.verdict) == (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
    with pytest.raises(ValueError, match="paper value"):
        r.add("q", "no paper", paper=None, ours=1.0, rule=Within(0.1))


def test_at_least_and_at_most():
    r = rec()
    add = lambda rule, ours, std=None, n=1: r.add("c", "c", paper=70.0, ours=ours, ours_std=std,
                                                  n=n, rule=rule).verdict
    assert add(AtLeast(), 70.0) == REPRODUCED  # threshold = the paper's number
    assert add(AtLeast(), 69.9) == NOT_REPRODUCED
    assert add(AtLeast(60), 65.0, std=1.0, n=4) == REPRODUCED
    assert add(AtLeast(60), 60.5, std=1.0, n=4) == INCONCLUSIVE
    assert add(AtLeast(60), 50.0, std=1.0, n=4) == NOT_REPRODUCED
    assert add(AtMost(60), 50.0, std=1.0, n=4) == REPRODUCED
    assert add(AtMost(60), 59.5, std=1.0, n=4) == INCONCLUSIVE
    assert add(AtMost(60), 65.0, std=1.0, n=4) == NOT_REPRODUCED
    assert add(AtMost(), 70.0) == REPRODUCED


def test_rules_serialise_readably():
    assert str(Better("no_distill", min_effect=0.5)).startswith("higher than [no_distill] by > max(0.5, 2·SE)")
    assert str(Better(10, higher_is_better=False)).startswith("lower than 10")
    assert str(Within(0.1)).startswith("within 10% of the paper")
    assert str(AtLeast(50)).startswith("at least 50")
    assert str(AtMost()).startswith("at most the paper")
    with pytest.raises(TypeError):
        rec().add("x", "x", paper=1, ours=1, rule="at least 1")


# ------------------------------------------------------------------------------ recording
def test_paper_values_and_per_seed_lists():
    assert R.parse_number("+2.7") == 2.7
    assert R.parse_number("−0.5 pp") == -0.5
    assert R.parse_number("5,717,416") == 5717416
    assert R.parse_number("83.4%") == 83.4
    assert R.parse_number(None) is None
    with pytest.raises(ValueError):
        R.parse_number("n/a")
    r = rec()
    c = r.add("a", "a", paper="+2.7", ours=[1.0, 2.0, 3.0], rule=AtLeast(0))
    assert (c.paper, c.ours, c.ours_std, c.n) == (2.7, 2.0, 1.0, 3)
    c = r.add("a", "again", paper=1, ours=5.0, ours_std=float("nan"), rule=AtLeast(0))
    assert [x.claim for x in r.claims] == ["again"]  # same id replaces
    assert c.ours_std is None  # nan (mean_std of one value) means unknown


def test_save_round_trip_and_schema(results_dir):
    r = rec()
    r.add("no_distill", "no distillation", paper=72.2, ours=[60.0, 61.0, 59.0], rule=AtLeast(10))
    r.add("hard", "hard distillation beats no distillation", paper="+2.7",
          ours=[63.0, 64.0, 62.0], rule=Better("no_distill"), note="study scale")
    path = r.save()
    assert path == results_dir / "03_deit" / "study.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert list(data) == list(R.TOP_KEYS)
    assert set(data["meta"]) == set(R.META_KEYS)
    assert all(list(c) == list(R.CLAIM_KEYS) for c in data["claims"])
    assert data["params"]["grid"] == [4, 4]
    assert data["profile"] == "study" and data["meta"]["device"] == "cpu"
    dt.datetime.fromisoformat(data["meta"]["date"])
    assert data["meta"]["elapsed_s"] >= 0 and isinstance(data["meta"]["dirty"], bool)
    assert {"platform", "cpu", "cpu_count"} <= set(data["meta"]["machine"])
    assert data["meta"]["commit"] is None or isinstance(data["meta"]["commit"], str)
    assert data == R.load(path) and data["claims"] == r.to_dict()["claims"]
    assert [c["verdict"] for c in data["claims"]] == [REPRODUCED, REPRODUCED]
    assert data["claims"][1]["rule"] == str(Better("no_distill"))
    assert R.load_all() == {"03_deit": data}
    assert R.load_all(profile="smoke") == {}
    table = r.table()
    assert list(table.index) == ["no_distill", "hard"]
    assert table.loc["hard", "verdict"] == REPRODUCED and table.loc["hard", "paper"] == 2.7
    assert "60 ± 1 (n=3)" == table.loc["no_distill", "ours"]


def test_profile_comes_from_params(results_dir):
    r = rec(params={**PARAMS, "profile": "smoke"})
    assert r.save().name == "smoke.json"


def test_check_record_names_the_problem(tmp_path):
    bad = {"notebook": "x", "claims": [{"id": "a", "verdict": "maybe"}]}
    with pytest.raises(ValueError, match="missing key 'meta'.*verdict 'maybe'"):
        R.check_record(bad)
    p = tmp_path / "x" / "study.json"
    p.parent.mkdir()
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        R.load_all(tmp_path)


# ------------------------------------------------------------------------------ report and README
def _three_claims(results_dir):
    r = rec()
    r.add("no_distill", "no distillation", paper=72.2, ours=[60.0, 61.0, 59.0], rule=AtLeast(10))
    r.add("hard", "hard distillation beats no distillation", paper="+2.7",
          ours=[63.0, 64.0, 62.0], rule=Better("no_distill"))
    r.add("params", "parameter count", paper=5_717_416, ours=5_000_000, unit="", rule=Within(0.1))
    r.save()
    return r


def test_report_renders_markdown(results_dir, tmp_path, capsys):
    _three_claims(results_dir)
    out = tmp_path / "scoreboard.md"
    assert main(["report", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "| notebook | claim | paper | ours ± std (n) | verdict | run date | commit |" in text
    assert "| 03_deit | hard distillation beats no distillation | 2.7% | 63 ± 1% (n=3) | reproduced |" in text
    assert "| 03_deit | parameter count | 5,717,416 | 5,000,000 | not reproduced |" in text
    assert "**Total:** 2/3 reproduced, 1 not reproduced." in text
    assert "01_albef" in text  # listed among the notebooks without results
    assert main(["report", "--results", str(results_dir)]) == 0
    assert "| 03_deit | no distillation |" in capsys.readouterr().out
    assert "No results recorded" in render_report({}, "paper")


def test_report_of_one_notebook(results_dir, capsys):
    _three_claims(results_dir)
    assert main(["report", "--notebook", "03"]) == 0  # a unique prefix is enough
    text = capsys.readouterr().out
    assert "03_deit" in text.splitlines()[0] and "| 03_deit | parameter count |" in text
    assert "01_albef" not in text
    assert main(["report", "--notebook", "notebooks/06_dino.ipynb"]) == 0
    assert "No results recorded" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="matches"):
        main(["report", "--notebook", "0"])  # ambiguous


README = f"""# Course

Intro text.

{BEGIN}
old table
{END}

Footer | with a pipe.
"""


def test_readme_regeneration_and_check(results_dir, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    (nbs / "03_deit.ipynb").write_text("{}")
    args = ["readme", "--readme", str(readme), "--notebooks", str(nbs), "--results", str(results_dir)]

    assert main(args + ["--check"]) == 1  # the old table is out of date
    assert main(args) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# Course\n\nIntro text.\n\n" + BEGIN + "\n| notebook |")
    assert text.endswith(END + "\n\nFooter | with a pipe.\n")
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert set(nb.id for nb in R.NOTEBOOKS) <= {k.split("]")[0].lstrip("[") for k in rows}
    deit = rows["[03_deit](notebooks/03_deit.ipynb)"]
    assert "https://arxiv.org/abs/2012.12877" in deit and "| ready | —" in deit
    assert "| planned |" in rows["12_surgical_cnn"] and "1806.05796" in rows["12_surgical_cnn"]
    assert main(args + ["--check"]) == 0

    _three_claims(results_dir)  # new results: the verdict column drifts
    assert main(args + ["--check"]) == 1
    assert main(args) == 0
    assert "| ready | 2/3 reproduced, 1 not reproduced |" in readme.read_text(encoding="utf-8")
    assert main(args + ["--check"]) == 0

    (nbs / "06_dino.ipynb").write_text("{}")  # a new notebook: status drifts
    assert main(args + ["--check"]) == 1


def test_readme_without_markers(tmp_path, results_dir):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert main(["readme", "--readme", str(readme), "--check"]) == 2
    assert main(["readme", "--readme", str(tmp_path / "missing.md")]) == 2
    with pytest.raises(ValueError, match="markers"):
        update_readme("text", "table")


def test_notebook_catalog():
    ids = [nb.id for nb in R.NOTEBOOKS]
    assert ids == sorted(ids) and len(ids) == 13 and ids[0] == "00_start_here"
    assert all(nb.url and math.isfinite(float(nb.arxiv)) for nb in R.NOTEBOOKS[1:])


def _save_many(args):
    folder, worker, times = args
    import os as _os
    _os.environ["COURSE_RESULTS_DIR"] = folder
    r = rec()
    r.add("no_distill", "a claim", paper=1.0, ours=float(worker), rule=AtLeast(0))
    for _ in range(times):
        r.save()
    return worker


def test_concurrent_saves_never_show_a_half_written_file(tmp_path):
    """Four processes saving the same results file while a reader reads it: once, 54 of 1,200
    saves crashed and 472 reads saw invalid JSON (one shared ``<profile>.json.tmp`` name)."""
    import multiprocessing as mp

    folder = str(tmp_path / "results")
    target = tmp_path / "results" / "03_deit" / "study.json"
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        job = pool.map_async(_save_many, [(folder, w, 60) for w in range(4)])
        reads = bad = 0
        while not job.ready():
            if target.exists():
                reads += 1
                try:
                    json.loads(target.read_text(encoding="utf-8"))
                except json.JSONDecodeError:
                    bad += 1
        assert sorted(job.get(timeout=120)) == [0, 1, 2, 3]  # no save raised
    assert bad == 0, f"{bad} of {reads} reads saw invalid JSON"
    assert R.load(target)["claims"][0]["ours"] in (0, 1, 2, 3)
    assert list(target.parent.glob("*.tmp")) == []


def test_claims_table_shows_long_text_whole(results_dir):
    r = rec()
    long_claim = "a claim whose text is far longer than fifty characters, " * 3 + "END"
    r.add("no_distill", long_claim, paper=1.0, ours=2.0, rule=AtLeast(0))
    table = r.table()
    assert "END" in repr(table)
    assert "END" in table._repr_html_() and "pre-wrap" in table._repr_html_()
    assert "END" in r._repr_html_()
