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
    Equivalent,
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


def better(ours, base, rule=Better, **rule_kw) -> str:
    """The verdict of ``ours`` vs ``base`` (per-seed lists, seeds 0..n-1, paired)."""
    r = rec()
    seeds = list(range(len(base))) if isinstance(base, list) else None
    r.add("base", "baseline", paper=None, ours=base, seeds=seeds, rule=AtLeast(0))
    seeds = list(range(len(ours))) if isinstance(ours, list) else None
    return r.add("x", "x beats baseline", paper=None, ours=ours, seeds=seeds,
                 rule=rule("base", **rule_kw)).verdict


# ------------------------------------------------------------------------------ scoreboard v2
# Hand-made paired data: the same seed gives both arms the same luck (a shared offset), the
# method adds about +1 with a little per-seed noise.
SHARED = [3.0, -2.0, 5.0, -4.0, 1.0]  # per-seed luck, much larger than the effect
GAIN = [1.1, 0.8, 1.3, 0.9, 1.0]


def _arms(k: int) -> tuple[list[float], list[float]]:
    base = [70.0 + SHARED[i] for i in range(k)]
    return [b + GAIN[i] for i, b in enumerate(base)], base


def test_paired_reproduced_with_5_seeds_inconclusive_with_2():
    new, base = _arms(5)
    assert better(new, base) == REPRODUCED
    new2, base2 = _arms(2)
    assert better(new2, base2) == INCONCLUSIVE  # n < 3 is never decided
    iv = R.paired_interval(new, base)
    assert iv.paired and iv.n == 5 and abs(iv.mean - 1.02) < 1e-9 and iv.lo > 0.7 and iv.hi < 1.4


def test_pairing_cancels_shared_noise_where_unpaired_means_cannot():
    new, base = _arms(5)
    r = rec()
    r.add("base", "baseline", paper=None, ours=base, seeds=range(5), rule=AtLeast(0))
    paired = r.add("x", "x", paper=None, ours=new, seeds=range(5), rule=Better("base"))
    assert paired.verdict == REPRODUCED and "paired diff +1.02" in paired.evidence
    # the same numbers as two summaries (an older record without per-seed values): unpaired
    m_new, m_base = sum(new) / 5, sum(base) / 5
    sd = lambda xs, m: (sum((x - m) ** 2 for x in xs) / 4) ** 0.5
    r2 = rec()
    r2.add("base", "baseline", paper=None, ours=m_base, ours_std=sd(base, m_base), n=5, rule=AtLeast(0))
    c = r2.add("x", "x", paper=None, ours=m_new, ours_std=sd(new, m_new), n=5, rule=Better("base"))
    assert c.verdict == INCONCLUSIVE and "unpaired" in c.evidence


def test_seeds_must_match_to_pair():
    new, base = _arms(5)
    r = rec()
    r.add("base", "baseline", paper=None, ours=base, seeds=[0, 1, 2, 3, 4], rule=AtLeast(0))
    c = r.add("x", "x", paper=None, ours=new, seeds=[5, 6, 7, 8, 9], rule=Better("base"))
    assert "unpaired" in c.evidence


def test_better_clearly_wrong_side_is_not_reproduced():
    new, base = _arms(5)
    assert better(base, new) == NOT_REPRODUCED  # interval entirely on the other side
    assert better(new, base, higher_is_better=False) == NOT_REPRODUCED
    assert better(base, new, higher_is_better=False) == REPRODUCED


def test_better_no_effect_band_and_margin():
    base = [70.0 + x for x in SHARED]
    tiny = [b + g for b, g in zip(base, [0.05, -0.04, 0.02, -0.01, 0.03])]
    assert better(tiny, base) == INCONCLUSIVE  # straddles 0, no band stated
    assert better(tiny, base, no_effect=0.5) == NOT_REPRODUCED  # inside ±0.5: no effect
    new, base = _arms(5)
    assert better(new, base, min_effect=0.5) == REPRODUCED
    assert better(new, base, min_effect=2.0) == NOT_REPRODUCED  # real, but below the margin
    assert better(new, base, min_effect=1.0) == INCONCLUSIVE  # the interval holds the margin


def test_better_numeric_baseline_and_single_runs():
    r = rec()
    c = r.add("a", "above 50", paper=None, ours=[60.0, 61.0, 59.5], rule=Better(50.0))
    assert c.verdict == REPRODUCED and c.kind == "claim"
    assert r.add("b", "above 65", paper=None, ours=[60.0, 61.0, 59.5], rule=Better(65.0)).verdict == NOT_REPRODUCED
    # one run per arm is never a verdict, however large the difference
    assert better(90.0, 10.0) == INCONCLUSIVE
    assert better([90.0, 91.0], [10.0, 11.0]) == INCONCLUSIVE


def test_equivalent_matches_and_no_worse():
    base = [70.0 + x for x in SHARED]
    close = [b + g for b, g in zip(base, [0.2, -0.1, 0.1, 0.0, -0.2])]
    assert better(close, base, rule=Equivalent, tolerance=1.0) == REPRODUCED
    assert better(close, base, rule=Equivalent, tolerance=0.05) == INCONCLUSIVE
    new, base = _arms(5)
    assert better(new, base, rule=Equivalent, tolerance=0.5) == NOT_REPRODUCED  # clearly better
    assert better(new, base, rule=Equivalent, tolerance=0.5, one_sided=True) == REPRODUCED
    assert better(base, new, rule=Equivalent, tolerance=0.5, one_sided=True) == NOT_REPRODUCED
    assert better(close[:2], base[:2], rule=Equivalent, tolerance=1.0) == INCONCLUSIVE


def test_kinds_headline_duplicates_and_same_pair():
    r = rec()
    r.add("base", "baseline", paper=None, ours=[1.0, 2.0, 3.0], seeds=[0, 1, 2], rule=AtLeast(0))
    assert r["base"].kind == "check"
    c = r.add("x", "x beats base", paper=None, ours=[2.0, 3.0, 4.1], seeds=[0, 1, 2],
              rule=Better("base"), headline=True)
    assert c.kind == "claim" and c.headline
    with pytest.raises(ValueError, match="already added"):
        r.add("x", "again", paper=None, ours=[2.0, 3.0, 4.0], seeds=[0, 1, 2], rule=Better("base"))
    with pytest.raises(ValueError, match="same pair of runs as claim 'x'"):
        r.add("y", "same runs, other name", paper=None, ours=[2.0, 3.0, 4.1], seeds=[0, 1, 2],
              rule=Better("base"))
    with pytest.raises(ValueError, match="headline row must be a claim"):
        r.add("z", "z", paper=None, ours=1.0, rule=AtLeast(0), headline=True)
    with pytest.raises(ValueError, match="never assumed"):
        r.add("w", "w", paper=None, ours=1.0, ours_std=0.5, n=1, rule=AtLeast(0))
    with pytest.raises(ValueError, match="computed from the per-seed values"):
        r.add("v", "v", paper=None, ours=[1.0, 2.0], ours_std=0.5, rule=AtLeast(0))
    k = R.counts(r.claims)
    assert k["claims"] == {"reproduced": 1, "total": 1, NOT_REPRODUCED: 0, INCONCLUSIVE: 0}
    assert k["headline"]["total"] == 1 and k["checks"]["total"] == 1
    assert r.summary() == "paper claims reproduced: 1 of 1 (headline 1 of 1); checks passed: 1 of 1"


def test_reference_rows_are_reported_not_judged():
    """A baseline arm is shown with its per-seed values, paired with by id, and counted neither as
    a claim nor as a check (it cannot fail, so it must not pass)."""
    r = rec()
    base = r.add("base", "reference: baseline, per seed", paper=None, ours=[1.0, 2.0, 3.0], seeds=[0, 1, 2],
                 rule=R.Reference())
    assert (base.kind, base.verdict, base.evidence) == ("reference", "reported", "")
    c = r.add("x", "x beats base", paper=None, ours=[2.0, 3.0, 4.1], seeds=[0, 1, 2], rule=Better("base"))
    assert c.verdict == REPRODUCED and "paired" in c.evidence
    r.add("learns", "learns", paper=None, ours=5.0, rule=AtLeast(1.0))
    k = R.counts(r.claims)
    assert k["claims"]["total"] == 1 and k["checks"]["total"] == 1
    assert r.summary() == "paper claims reproduced: 1 of 1; checks passed: 1 of 1"
    with pytest.raises(ValueError, match="rule=Reference"):
        r.add("y", "y", paper=None, ours=1.0, rule=R.Reference(), kind="check")
    with pytest.raises(ValueError, match="rule=Reference"):
        r.add("z", "z", paper=None, ours=1.0, rule=AtLeast(0), kind="reference")
    with pytest.raises(ValueError, match="headline row must be a claim"):
        r.add("h", "h", paper=None, ours=1.0, rule=R.Reference(), headline=True)
    r._finish_meta()
    record = json.loads(json.dumps(r.to_dict()))
    R.check_record(record)
    record["claims"][0]["verdict"] = REPRODUCED
    with pytest.raises(ValueError, match="of a reference row"):
        R.check_record(record)
    record["claims"][0].update(kind="check")
    R.check_record(record)  # an older record: its baseline rows were checks
    record["claims"][1]["verdict"] = "reported"
    with pytest.raises(ValueError, match="of a claim row"):
        R.check_record(record)


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
    add = lambda rule, ours, std=None, n=1: rec().add("c", "c", paper=70.0, ours=ours, ours_std=std,
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
    assert str(Better("no_distill", min_effect=0.5)).startswith(
        "higher than [no_distill]: 95% CI of the paired difference above 0.5")
    assert str(Better(10, higher_is_better=False)).startswith("lower than 10")
    assert str(Equivalent("a", 1.0)).startswith("matches [a]: 95% CI of the paired difference inside ±1")
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
    c = r.add("b", "again", paper=1, ours=5.0, ours_std=float("nan"), rule=AtLeast(0))
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
    assert "| notebook | kind | claim | paper | ours ± std (n) | verdict | evidence | run date | commit |" in text
    assert ("| 03_deit | claim | hard distillation beats no distillation | 2.7% | 63 ± 1% (n=3) | "
            "reproduced | paired diff +3") in text
    assert "| 03_deit | check | parameter count | 5,717,416 | 5,000,000 | not reproduced |" in text
    assert "| 03_deit | — | 1 of 1 | 0 | 0 | 1 of 2 |" in text  # the per-notebook counts
    assert ("**Total:** paper claims reproduced: 1 of 1 (headline 0 of 0); checks passed: 1 of 2."
            in text)
    assert "01_albef" in text  # listed among the notebooks without results
    assert main(["report", "--results", str(results_dir)]) == 0
    assert "| 03_deit | check | no distillation |" in capsys.readouterr().out
    assert "No results recorded" in render_report({}, "paper")
    assert main(["report", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["notebooks"]["03_deit"]["claims"]["reproduced"] == 1
    assert data["overall"]["checks"] == {"reproduced": 1, "total": 2, "not reproduced": 1,
                                         "inconclusive": 0}
    assert [r["id"] for r in data["rows"]] == ["no_distill", "hard", "params"]


def test_report_of_one_notebook(results_dir, capsys):
    _three_claims(results_dir)
    assert main(["report", "--notebook", "03"]) == 0  # a unique prefix is enough
    text = capsys.readouterr().out
    assert "03_deit" in text.splitlines()[0] and "| 03_deit | check | parameter count |" in text
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
    assert "https://arxiv.org/abs/2012.12877" in deit and "| ready | — | — |" in deit
    assert "| planned |" in rows["12_surgical_cnn"] and "1806.05796" in rows["12_surgical_cnn"]
    assert main(args + ["--check"]) == 0

    _three_claims(results_dir)  # new results: the verdict column drifts
    assert main(args + ["--check"]) == 1
    assert main(args) == 0
    assert "| ready | 1 of 1 | 1 of 2 |" in readme.read_text(encoding="utf-8")
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


# ------------------------------------------------------------------------------ migration v1 -> v2
def _v1(claims):
    return {"notebook": "09_minivit", "title": "t", "paper_url": None, "profile": "study", "params": {},
            "meta": {k: None for k in R.META_KEYS}, "claims": [
                {"id": i, "claim": t, "paper": None, "ours": o, "ours_std": s, "n": n, "unit": "%",
                 "rule": rule, "verdict": v, "note": ""} for i, t, o, s, n, rule, v in claims]}


def test_migrate_v1_rejudges_claims_keeps_checks_and_drops_duplicates():
    from course_lib.results.migrate import migrate_v1

    v1 = _v1([
        ("original", "learns", 25.0, None, 1, "at least 16.67 (band ours ± 2·SE)", REPRODUCED),
        ("a0", "learns again", 25.0, None, 1, "at least 16.67 (band ours ± 2·SE)", REPRODUCED),
        ("mini", "beats original", 43.0, 4.7, 1,
         "higher than [original] by > max(2, 2·SE); a tie with ≥3 seeds per side is not reproduced", REPRODUCED),
        ("every2", "same pair again", 43.0, None, 1, "higher than [a0] by > max(2, 2·SE)", REPRODUCED),
        ("all", "worse than every2", 43.6, None, 1, "lower than [every2] by > max(2, 2·SE)", NOT_REPRODUCED),
        ("multi", "three seeds each", 30.0, 0.5, 3, "higher than 20 by > max(0, 2·SE)", REPRODUCED),
    ])
    v2 = migrate_v1(v1)
    R.check_record(v2)
    c = {x["id"]: x for x in v2["claims"]}
    assert list(c) == ["original", "mini", "all", "multi"]  # a0 and every2 were duplicates
    assert c["original"]["kind"] == "check" and c["original"]["verdict"] == REPRODUCED
    assert c["mini"]["kind"] == "claim" and c["mini"]["verdict"] == INCONCLUSIVE  # one run per arm
    assert c["mini"]["ours_std"] is None  # a spread with n = 1 was assumed: dropped
    assert c["all"]["rule"].startswith("lower than [mini]")  # references follow the kept id
    assert c["multi"]["verdict"] == REPRODUCED and "unpaired" in c["multi"]["evidence"]
    assert migrate_v1(v2) == v2  # idempotent


def test_migrate_renames_the_albef_collision():
    from course_lib.results.migrate import migrate_v1

    v1 = _v1([
        ("clean_mlm_itm", "[clean pairs, ITC shortlist + ITM re-rank (official)] MLM + ITM", 7.4, None, 1,
         "at least 1.07 (band ours ± 2·SE)", REPRODUCED),
        ("clean_itc_mlm_itm", "[clean pairs, ITC ranking only (our addition)] MLM + ITM", 6.5, None, 1,
         "at least 1.07 (band ours ± 2·SE)", REPRODUCED),
    ])
    v1["notebook"] = "01_albef"
    ids = [x["id"] for x in migrate_v1(v1)["claims"]]
    assert ids == ["clean_mlm_itm", "clean_itcrank_mlm_itm"]


# ------------------------------------------------------------------------------ take-aways
def test_takeaways_follow_the_verdicts():
    from course_lib.results import Point, takeaways

    pts = [Point("x", reproduced="X wins by {diff} (CI {ci}, n={n}).", not_reproduced="X loses ({diff}).",
                 inconclusive="Too close to call ({diff})."),
           Point("absent", "a", "b", "c", missing="This profile skips the ablation."),
           "A fixed sentence."]
    new, base = _arms(5)
    r = rec()
    r.add("base", "baseline", paper=None, ours=base, seeds=range(5), rule=AtLeast(0))
    r.add("x", "x beats base", paper=1.0, ours=new, seeds=range(5), rule=Better("base"), headline=True)
    md = takeaways(r, pts)
    assert "paper claims reproduced: 1 of 1 (headline 1 of 1)" in md
    assert "- *reproduced* (headline claim `x`): X wins by +1.02 ± 0.086% (CI [+0.781, +1.26], n=5)." in md
    assert "This profile skips the ablation." in md and "- A fixed sentence." in md
    assert md._repr_markdown_() == str(md)
    r2 = rec()
    r2.add("base", "baseline", paper=None, ours=new, seeds=range(5), rule=AtLeast(0))
    r2.add("x", "x beats base", paper=1.0, ours=base, seeds=range(5), rule=Better("base"))
    assert "X loses (−1.02 ± 0.086%)" in takeaways(r2.to_dict() | {"claims": [c.to_json() for c in r2.claims]}, pts)


def test_record_names_the_commit_it_started_from(monkeypatch, tmp_path):
    """A record's commit and dirty flag are those of the tree when the run started: editing the
    tree while a long run goes on must not relabel it."""
    from course_lib.results import record as rmod

    states = iter([("abc1234", False), ("def5678", True)])
    monkeypatch.setattr(rmod, "git_state", lambda: next(states))
    rec = Results("03_deit", "t", "u", {"profile": "smoke"})
    rec.add("x", "a check", paper=None, ours=50.0, rule=AtLeast(10.0))
    rec.save(tmp_path)
    meta = json.loads((tmp_path / "03_deit" / "smoke.json").read_text())["meta"]
    assert (meta["commit"], meta["dirty"]) == ("abc1234", False)
