"""The house rules of architecture v2 (docs/design.md), checked on the source."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from course_lib.papers import NOTEBOOKS

LIB = Path(__file__).resolve().parents[1] / "course_lib"
PAPERS = sorted(p for p in (LIB / "papers").iterdir() if p.is_dir() and (p / "__init__.py").exists())


def test_every_paper_package_has_the_four_rooms():
    assert len(PAPERS) == 13  # twelve papers and the offline-world intro
    for pkg in PAPERS:
        for room in ("__init__.py", "method.py", "experiment.py", "figures.py"):
            if pkg.name == "start_here" and room in ("method.py", "figures.py"):
                continue  # the tour of the world: its parameters, drawn by viz
            assert (pkg / room).exists(), f"{pkg.name}/{room}"
    assert {Path(m.__file__).parent.name for m in _experiments()} == {p.name for p in PAPERS}


def _experiments():
    from course_lib.papers import experiment

    return [experiment(nb) for nb in NOTEBOOKS]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = path.relative_to(LIB.parent).with_suffix("").parts[:-node.level]
                out.add(".".join(base + ((node.module,) if node.module else ())))
            elif node.module:
                out.add(node.module)
                out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


@pytest.mark.parametrize("pkg", PAPERS, ids=lambda p: p.name)
def test_no_paper_package_imports_another(pkg):
    for path in pkg.rglob("*.py"):
        for name in _imports(path):
            m = re.match(r"course_lib\.papers\.(\w+)", name)
            assert m is None or m.group(1) == pkg.name, f"{path.relative_to(LIB)} imports {name}"


def test_shared_layers_import_no_paper_package():
    for path in LIB.rglob("*.py"):
        if "papers" in path.relative_to(LIB).parts:
            continue
        for name in _imports(path):
            assert not name.startswith("course_lib.papers."), f"{path.relative_to(LIB)} imports {name}"


def test_no_file_over_about_700_lines():
    long = {str(p.relative_to(LIB)): n for p in LIB.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 700}
    assert not long


def test_optimizer_steps_only_in_fit_and_dinos_own_loop():
    """One training loop: ``.step()`` of an optimizer is called in ``train/loop.py`` and in DINO's
    teacher-student loop, whose docstring says why it is its own."""
    where = set()
    for path in LIB.rglob("*.py"):
        text = path.read_text()
        if re.search(r"\b(opt\w*|optimizer)\.step\(|scaler\.step\(", text):
            where.add(str(path.relative_to(LIB)))
    assert where == {"train/loop.py", "selfsup/training.py"}
    from course_lib.selfsup import train_dino

    assert "Why its own loop and not ``train.fit``" in train_dino.__doc__
