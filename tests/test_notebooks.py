"""The course notebooks: their structure (fast, reads the JSON) and a smoke-profile run of each.

Every ``notebooks/*.ipynb`` is found and tested, so a new notebook is covered without editing
this file. ``COURSE_NOTEBOOKS_DIR`` points the tests at another folder (used to try the
machinery on throwaway notebooks).

Execution tests (marker ``notebook``; skip them with ``-m "not notebook"``) run each notebook
once per test session under nbval in a subprocess, in the smoke profile, with results and
trained artifacts in temporary folders; then they check the results JSON the notebook wrote.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from course_lib.results.rules import verdicts_of

REPO = Path(__file__).resolve().parent.parent
NB_DIR = Path(os.environ.get("COURSE_NOTEBOOKS_DIR", REPO / "notebooks"))
NOTEBOOKS = sorted(p for p in NB_DIR.glob("*.ipynb") if not p.name.startswith("."))
SHARED_CHECKER = REPO.parent / "shared" / "tools" / "check_notebooks.py"
SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")
FIGURE_CHECK = Path(__file__).with_name("figure_check.py")
# seconds one notebook may take under nbval before its run is killed (smoke aims at ~60 s)
NB_TIMEOUT = int(os.environ.get("COURSE_NB_TIMEOUT", "840"))
notebook_timeout = pytest.mark.timeout(NB_TIMEOUT + 120)

PAPER_NB = re.compile(r"^(0[1-9]|1[0-2])_")
NAME = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")
HANGUL = re.compile(r"[\uac00-\ud7a3]")
PAPER_VS_OURS = re.compile(r"^\s*#{1,6}\s.*paper\s+vs\.?\s+ours", re.I | re.M)
WIDGETS = re.compile(r"ipywidgets|widget|interact|_explorer\(")
PARAMETERS = ("profile", "seed", "device", "data_root")


def _load_tool(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


nbclean = _load_tool("nbclean", REPO / "tools" / "nbclean.py")


def _params():
    if not NOTEBOOKS:
        return [pytest.param(None, id="no-notebooks",
                             marks=pytest.mark.skip(reason=f"no notebooks in {NB_DIR} yet"))]
    return [pytest.param(p, id=p.stem) for p in NOTEBOOKS]


each_notebook = pytest.mark.parametrize("path", _params())


def is_paper(path: Path) -> bool:
    return bool(PAPER_NB.match(path.name))


def source(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def read(path: Path):
    return nbformat.read(path, as_version=4)


# ---------------------------------------------------------------- structure (fast)


@each_notebook
def test_format_and_name(path):
    assert NAME.match(path.name), f"{path.name}: want NN_name.ipynb (lower case, underscores)"
    nb = read(path)
    assert nb.nbformat == 4
    nbformat.validate(nb)


@each_notebook
def test_parameters_cell(path):
    cells = read(path).cells
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{len(tagged)} cells tagged 'parameters' (want exactly 1)"
    cell = tagged[0]
    assert cell.cell_type == "code"
    missing = [n for n in PARAMETERS
               if not re.search(rf"^\s*{n}\s*(:[^=]*)?=", source(cell), re.M)]
    assert not missing, f"parameters cell does not set {missing}"
    assert not any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in cells), \
        "a papermill 'injected-parameters' cell was committed"
    # papermill reads each line as `name = value  # help`; a second "=" (say in the help text)
    # makes it skip the line with "Unable to parse line" and lose the parameter's type and help
    crowded = [ln for ln in source(cell).splitlines() if not ln.strip().startswith("#") and ln.count("=") > 1]
    assert not crowded, f"parameters cell lines with more than one '=' (papermill skips them): {crowded}"


@each_notebook
def test_kernelspec(path):
    ks = read(path).metadata.get("kernelspec", {})
    assert ks.get("name") == "python3", f"kernelspec name {ks.get('name')!r}; want 'python3'"


@each_notebook
def test_paper_notebook_content(path):
    if not is_paper(path):
        pytest.skip("not a paper notebook (01-12)")
    cells = read(path).cells
    md = "\n".join(source(c) for c in cells if c.cell_type == "markdown")
    code = "\n".join(source(c) for c in cells if c.cell_type == "code")
    assert HANGUL.search(md), "no Korean summary in the markdown"
    assert "$" in md, "no LaTeX equations in the markdown"
    assert PAPER_VS_OURS.search(md), "no markdown heading with 'paper vs. ours'"
    assert WIDGETS.search(code), "no ipywidgets control"


@each_notebook
def test_committed_outputs(path):
    nb = read(path)
    assert "widgets" not in nb.metadata, "widget state in metadata (run tools/nbclean.py)"
    assert "papermill" not in nb.metadata, "papermill metadata committed (run tools/nbclean.py)"
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if nbclean.is_checked(cell):
            if not cell.outputs:
                problems.append(f"cell {i}: checked cell without stored output")
            elif cell.execution_count is None:
                problems.append(f"cell {i}: checked cell with outputs but no execution count")
            kinds = {o.output_type if o.output_type != "stream" else f"stream:{o.name}"
                     for o in cell.outputs}
            extra = kinds - {"stream:stdout", "execute_result"}
            if extra:
                problems.append(f"cell {i}: checked cell stores {sorted(extra)} (nbval mismatch)")
        else:
            if cell.outputs:
                problems.append(f"cell {i}: unchecked cell keeps outputs")
            if cell.execution_count is not None:
                problems.append(f"cell {i}: unchecked cell keeps an execution count")
    assert not problems, "; ".join(problems) + " - run: python tools/nbclean.py " + str(path)


@each_notebook
def test_notebook_standard(path):
    """The shared notebook standard checker (``../shared/tools/check_notebooks.py``)."""
    if not SHARED_CHECKER.is_file():
        pytest.skip(f"{SHARED_CHECKER} not present")
    checker = _load_tool("check_notebooks", SHARED_CHECKER)
    assert checker.check(path) == []


# ---------------------------------------------------------------- execution (slow)


@dataclass
class Run:
    rc: int
    seconds: float
    output: str
    results: Path
    figures: Path  # JSON lines of tests/figure_check.py: the figures each cell drew


_RUNS: dict[Path, Run] = {}


@pytest.fixture(scope="session")
def smoke_dirs(tmp_path_factory):
    """Results folder and artifact cache shared by all notebook runs of this session."""
    return tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("cache")


def run_notebook(path: Path, smoke_dirs) -> Run:
    """Execute ``path`` once per session under nbval (smoke profile) and remember the outcome."""
    if path in _RUNS:
        return _RUNS[path]
    results, cache = smoke_dirs
    figcheck = results / f"{path.stem}.figcheck.jsonl"
    ipython_dir = results / f"{path.stem}.ipython"
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "50-course-figure-check.py").write_text(FIGURE_CHECK.read_text())
    figcheck.unlink(missing_ok=True)
    env = {**os.environ, **nbclean.smoke_env(results, cache),
           "IPYTHONDIR": str(ipython_dir), "COURSE_FIGCHECK_LOG": str(figcheck)}
    cmd = [sys.executable, "-m", "pytest", str(path), "--nbval-lax", "--nbval-current-env",
           "-p", "no:cacheprovider", "-q", "--color=no", "--nbval-kernel-startup-timeout", "180",
           "--timeout", str(NB_TIMEOUT)]
    if SANITIZE.is_file():
        cmd += ["--nbval-sanitize-with", str(SANITIZE)]
    t0 = time.perf_counter()
    # own process group, so a timeout also ends the kernel nbval started
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=NB_TIMEOUT + 60)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        rc = -9
        output = (output or "") + f"\n[killed after {NB_TIMEOUT + 60} s]"
    run = Run(rc, time.perf_counter() - t0, output, results / path.stem / "smoke.json", figcheck)
    _RUNS[path] = run
    return run


@pytest.mark.notebook
@notebook_timeout
@each_notebook
def test_notebook_runs(path, smoke_dirs, record_property):
    run = run_notebook(path, smoke_dirs)
    record_property("notebook_seconds", round(run.seconds, 1))
    print(f"{path.name}: {run.seconds:.1f} s in the smoke profile")
    if run.rc != 0:
        pytest.fail(f"nbval failed (rc {run.rc}) for {path.name}:\n{run.output[-6000:]}", pytrace=False)


@pytest.mark.notebook
@notebook_timeout
@each_notebook
def test_notebook_figures(path, smoke_dirs):
    """Every image panel of every figure the notebook drew shows something (not blank, NaN,
    transparent or clipped to white): see ``tests/figure_check.py``."""
    run = run_notebook(path, smoke_dirs)
    if run.rc != 0:
        pytest.skip("the notebook did not run (see test_notebook_runs)")
    assert run.figures.is_file(), f"the figure check did not start in the kernel ({run.figures})"
    entries = [json.loads(line) for line in run.figures.read_text().splitlines()]
    assert entries and entries[0].get("installed"), "the figure check did not start in the kernel"
    cells = [e for e in entries if "cell" in e]
    bad = [f"cell [{e['cell']}] `{e['first_line']}`: {p}" for e in cells for p in e["problems"]]
    panels = sum(e["panels"] for e in cells)
    print(f"{path.name}: {sum(e['figures'] for e in cells)} figures, {panels} image panels checked")
    assert not bad, f"{len(bad)} blank or clipped image panel(s) in {path.name}:\n" + "\n".join(bad)


@pytest.mark.notebook
@notebook_timeout
@each_notebook
def test_notebook_results(path, smoke_dirs):
    run = run_notebook(path, smoke_dirs)
    if run.rc != 0:
        pytest.skip("the notebook did not run (see test_notebook_runs)")
    if not run.results.is_file():
        if is_paper(path):
            pytest.fail(f"{path.name} wrote no results JSON at <results>/{path.stem}/smoke.json")
        pytest.skip("no results recorded (allowed outside the paper notebooks)")
    data = json.loads(run.results.read_text(encoding="utf-8"))
    for key in ("notebook", "profile", "meta", "claims"):
        assert key in data, f"results JSON lacks {key!r}"
    assert data["notebook"] == path.stem
    assert data["profile"] == "smoke"
    assert isinstance(data["meta"], dict)
    claims = data["claims"]
    items = list(claims.items()) if isinstance(claims, dict) else list(enumerate(claims))
    if is_paper(path):
        assert items, "a paper notebook recorded no claims"
    for name, claim in items:
        ours = claim.get("ours")
        assert isinstance(ours, (int, float)) and not isinstance(ours, bool), \
            f"claim {name}: 'ours' = {ours!r} is not a number"
        assert math.isfinite(ours), f"claim {name}: 'ours' = {ours!r} is not finite"
        allowed = verdicts_of(claim.get("kind"))
        assert claim.get("verdict") in allowed, \
            f"claim {name}: verdict {claim.get('verdict')!r} of a {claim.get('kind')} row not in {allowed}"


@pytest.mark.notebook
@pytest.mark.slow
def test_papermill_parameter_names_are_checked(tmp_path):
    """``papermill -p student_epohcs 3`` ran 03_deit to the end with the defaults; now the
    notebook stops at its resolve cell, naming the close match."""
    path = NB_DIR / "03_deit.ipynb"
    if not path.is_file():
        pytest.skip("no 03_deit notebook")
    env = {**os.environ, **nbclean.smoke_env(tmp_path / "r", tmp_path / "c")}
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", str(path), str(tmp_path / "out.ipynb"), "--cwd",
         str(NB_DIR), "-k", "python3", "-p", "student_epohcs", "3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "did you mean student_epochs" in proc.stdout + proc.stderr


# ---------------------------------------------------------------- the cleaning tool


def _toy_notebook():
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "course-lib", "display_name": "x", "language": "python"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    plain = nbformat.v4.new_code_cell("print('hi')")
    plain.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    plain.execution_count = 3
    checked = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint('a'); print('b'); 1")
    checked.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="a\n"),
        nbformat.v4.new_output("stream", name="stderr", text="warn\n"),
        nbformat.v4.new_output("stream", name="stdout", text="b\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "1"}, execution_count=4),
    ]
    checked.execution_count = 4
    checked.metadata["ExecuteTime"] = {"start": "x"}
    nb.cells = [nbformat.v4.new_markdown_cell("# toy"), plain, checked]
    return nb


def test_smoke_env_is_headless(monkeypatch):
    """CI and the notebook tests run headless: widgets show their static figure, no live plot."""
    env = nbclean.smoke_env("r", "c")
    assert env["COURSE_HEADLESS"] == "1" and env["MPLBACKEND"] == "Agg"
    from course_lib import viz

    monkeypatch.setattr(viz, "_ipython", lambda: type("Kernel", (), {"kernel": object()})())
    monkeypatch.setattr(viz.plt, "get_backend", lambda: "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("COURSE_HEADLESS", env["COURSE_HEADLESS"])
    assert viz.headless()  # even in a kernel with the inline backend


def test_nbclean_keeps_only_checked_outputs():
    nb = _toy_notebook()
    warnings = nbclean.clean(nb, name="toy")
    plain, checked = nb.cells[1], nb.cells[2]
    assert plain.outputs == [] and plain.execution_count is None
    assert checked.execution_count == 2  # its position among code cells
    assert [(o.output_type, o.get("name")) for o in checked.outputs] == [
        ("stream", "stdout"), ("execute_result", None)]
    assert checked.outputs[0].text == "a\nb\n"
    assert checked.outputs[1].execution_count == 2
    assert checked.metadata.get("keep_output") is True and "ExecuteTime" not in checked.metadata
    assert "widgets" not in nb.metadata and nb.metadata.kernelspec["name"] == "python3"
    assert any("stderr" in w for w in warnings)
    nbformat.validate(nb)
    again = nbformat.from_dict(json.loads(nbformat.writes(nb)))
    assert nbclean.clean(again, name="toy") == []  # idempotent, nothing left to warn about
    assert nbformat.writes(again) == nbformat.writes(nb)


@pytest.mark.slow
@pytest.mark.notebook
def test_nbclean_execute_output_passes_nbval(tmp_path):
    """End to end: papermill run -> clean -> nbval accepts the stored checked outputs."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(nbclean.KERNELSPEC)
    params = nbformat.v4.new_code_cell('profile = "study"\nseed = 0')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell(
            "import os, sys, warnings\nprint('to stderr', file=sys.stderr)\n"
            "warnings.warn('noise')\nimport matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()"),
        nbformat.v4.new_code_cell(
            "# NBVAL_CHECK_OUTPUT\nprint('profile', os.environ['COURSE_PROFILE'])\n"
            "sys.stdout.flush()\nfor i in range(3):\n    print(i, i * i)\n{'seed': seed}"),
    ]
    path = tmp_path / "99_toy.ipynb"
    nbformat.write(nb, path)
    assert nbclean.main(["--execute", str(path)]) == 0
    stored = read(path).cells[2]
    assert stored.execution_count == 3
    assert stored.outputs[0].text == "profile smoke\n0 0\n1 1\n2 4\n"
    assert read(path).cells[1].outputs == []
    env = {**os.environ, **nbclean.smoke_env(tmp_path / "r", tmp_path / "c")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(path), "--nbval-lax", "--nbval-current-env",
         "-p", "no:cacheprovider", "-q", "--color=no"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
