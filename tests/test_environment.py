"""The ways to install and test the project agree with each other.

pyproject.toml is the one source of dependencies; environment.yml (conda) only provides Python
and pip and installs the project with pip; the Makefile installs the same extras; CI (.ci/run)
runs exactly the test command of the README's Quick start.
"""
from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
ENV = yaml.safe_load((REPO / "environment.yml").read_text(encoding="utf-8"))
LOWER_BOUND_OPS = {">=", ">", "==", "~=", "==="}
# conda package name -> PyPI name, where they differ
CONDA_TO_PYPI = {"pytorch": "torch", "py-opencv": "opencv-python", "pytables": "tables"}
PROJECT_INSTALL = re.compile(r"^(?:-e\s+|--editable[\s=]+)?\.(?:\[(?P<extras>[^\]]*)\])?$")


def pyproject_requirements() -> dict[str, list[Requirement]]:
    groups = {"dependencies": PROJECT.get("dependencies", [])}
    for extra, reqs in PROJECT.get("optional-dependencies", {}).items():
        groups[f"optional-dependencies.{extra}"] = reqs
    return {g: [Requirement(r) for r in reqs] for g, reqs in groups.items()}


def conda_deps() -> list[str]:
    return [d for d in ENV["dependencies"] if isinstance(d, str)]


def pip_deps() -> list[str]:
    sections = [d["pip"] for d in ENV["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) <= 1, "environment.yml has more than one pip section"
    return list(sections[0]) if sections else []


def conda_spec(dep: str) -> tuple[str, SpecifierSet]:
    """``numpy>=1.24`` / ``numpy=1.26`` (conda's prefix match) / ``numpy 1.26.*`` -> name, specifiers."""
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*$", dep.split("::")[-1])
    assert m, f"cannot parse conda dependency {dep!r}"
    name, spec = m.group(1), m.group(2).replace(" ", "")
    parts = []
    for part in filter(None, spec.split(",")):
        if re.match(r"^=[^=]", part):  # conda "=1.26" means "1.26.*"
            part = "=" + part.rstrip("*").rstrip(".") + ".*"
        elif re.match(r"^[0-9]", part):  # bare version
            part = "==" + part
        parts.append(part)
    return canonicalize_name(CONDA_TO_PYPI.get(name, name)), SpecifierSet(",".join(parts))


def _versions_in(spec: SpecifierSet) -> list[Version]:
    out = []
    for s in spec:
        try:
            out.append(Version(s.version.rstrip("*").rstrip(".")))
        except InvalidVersion:
            pass
    return out


def compatible(a: SpecifierSet, b: SpecifierSet) -> bool:
    """Whether some version satisfies both specifier sets (checked on the versions they name
    and their neighbours, which is enough for the usual bounds and pins)."""
    if not str(a) or not str(b):
        return True
    candidates = set()
    for v in _versions_in(a) + _versions_in(b):
        rel = list(v.release) + [0] * (3 - len(v.release))
        candidates.add(v)
        candidates.add(Version(".".join(map(str, rel[:3])) + ".post1"))
        candidates.add(Version(".".join(map(str, rel[:2] + [rel[2] + 1]))))
        candidates.add(Version(f"{rel[0]}.{rel[1] + 1}"))
        candidates.add(Version(f"{rel[0] + 1}"))
    return any(a.contains(c, prereleases=True) and b.contains(c, prereleases=True)
               for c in candidates)


# ---------------------------------------------------------------- pyproject


def test_every_dependency_has_a_lower_bound():
    missing = [f"{group}: {req}" for group, reqs in pyproject_requirements().items()
               for req in reqs if not any(s.operator in LOWER_BOUND_OPS for s in req.specifier)]
    assert not missing, "dependencies without a lower bound: " + ", ".join(missing)


def test_dependencies_are_listed_once():
    seen: dict[str, str] = {}
    for group, reqs in pyproject_requirements().items():
        for req in reqs:
            name = canonicalize_name(req.name)
            assert name not in seen, f"{req.name} is listed in {seen.get(name)} and {group}"
            seen[name] = group


# ---------------------------------------------------------------- environment.yml


def test_environment_yml_shape():
    assert ENV["name"] == "vision-papers"
    assert "conda-forge" in ENV["channels"]
    assert "defaults" not in ENV["channels"]
    names = [conda_spec(d)[0] for d in conda_deps()]
    assert "python" in names and "pip" in names


def test_environment_python_matches_requires_python():
    requires = SpecifierSet(PROJECT["requires-python"])
    lower = [s.version for s in requires if s.operator == ">="]
    assert len(lower) == 1, f"requires-python {requires} needs one '>=' bound"
    (spec,) = [s for n, s in map(conda_spec, conda_deps()) if n == "python"]
    env_lower = [s.version for s in spec if s.operator == ">="]
    assert env_lower == lower, f"environment.yml python {spec} vs requires-python {requires}"


def test_environment_installs_the_project_with_pyproject_extras():
    installs = [PROJECT_INSTALL.match(d.strip()) for d in pip_deps()]
    installs = [m for m in installs if m]
    assert len(installs) == 1, "environment.yml's pip section must install the project once (-e .[dev])"
    extras = {e.strip() for e in (installs[0].group("extras") or "").split(",") if e.strip()}
    declared = set(PROJECT.get("optional-dependencies", {}))
    assert extras <= declared, f"unknown extras {extras - declared}"
    assert extras == makefile_extras(), "environment.yml and the Makefile install different extras"


def test_environment_yml_does_not_contradict_pyproject():
    declared = {canonicalize_name(r.name): r for reqs in pyproject_requirements().values()
                for r in reqs}
    declared["python"] = Requirement("python" + PROJECT["requires-python"])
    listed = [conda_spec(d) for d in conda_deps()]
    for dep in pip_deps():
        if PROJECT_INSTALL.match(dep.strip()) or dep.strip().startswith("-"):
            continue
        req = Requirement(dep)
        listed.append((canonicalize_name(req.name), req.specifier))
    for name, spec in listed:
        if name in declared:
            assert compatible(spec, declared[name].specifier), (
                f"environment.yml wants {name}{spec} but pyproject.toml says {declared[name]}")


def test_compatibility_rule():
    assert compatible(SpecifierSet(">=1.24"), SpecifierSet("<2"))
    assert compatible(SpecifierSet(">=1.24"), SpecifierSet("==1.26.*"))
    assert compatible(SpecifierSet(">1.24"), SpecifierSet("<1.25"))
    assert not compatible(SpecifierSet(">=1.24"), SpecifierSet("<1.20"))
    assert not compatible(SpecifierSet(">=2.4"), SpecifierSet("==2.1.*"))
    assert conda_spec("numpy=1.26") == ("numpy", SpecifierSet("==1.26.*"))
    assert conda_spec("pytorch>=2.4")[0] == "torch"


# ---------------------------------------------------------------- Makefile, README, CI


def makefile_extras() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    m = re.search(r"pip install -e '?\.\[([^\]]*)\]'?", text)
    assert m, "the Makefile does not `pip install -e '.[...]'` the project"
    return {e.strip() for e in m.group(1).split(",") if e.strip()}


def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^#+\s*Quick start\s*$(.*?)(?=^#+\s)", readme + "\n# end", re.M | re.S | re.I)
    assert m, "README.md has no 'Quick start' section"
    block = re.search(r"```[a-z]*\n(.*?)```", m.group(1), re.S)
    assert block, "the Quick start section has no code block"
    lines = [ln.strip() for ln in block.group(1).splitlines()]
    lines = [ln.split(" #", 1)[0].strip() for ln in lines]  # inline comments
    return [ln.removeprefix("$ ") for ln in lines if ln and not ln.startswith("#")]


def readme_test_command() -> str:
    tests = [c for c in quick_start_commands() if "test" in shlex.split(c)]
    assert len(tests) == 1, f"want one test command in the Quick start, got {tests}"
    return tests[0]


def ci_commands() -> list[str]:
    lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_quick_start_has_three_commands():
    cmds = quick_start_commands()
    assert len(cmds) == 3, cmds
    assert cmds[0] == "make zoo", cmds  # the course zoo first: the notebooks reuse it
    assert cmds[1].startswith("make run NB="), cmds
    assert cmds[2] == readme_test_command()


def test_quick_start_notebook_exists():
    nb = shlex.split(quick_start_commands()[1])[2].split("=", 1)[1]
    if not list((REPO / "notebooks").glob("*.ipynb")):
        pytest.skip("no notebooks yet")
    assert (REPO / "notebooks" / f"{nb}.ipynb").is_file(), f"Quick start runs {nb}, which does not exist"


def test_ci_runs_the_readme_test_command():
    path = REPO / ".ci" / "run"
    assert os.access(path, os.X_OK), ".ci/run is not executable"
    assert path.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")
    cmds = ci_commands()
    assert "set -euo pipefail" in cmds
    body = [c for c in cmds if c != "set -euo pipefail" and not c.startswith("cd ")]
    # the Quick start's commands in a newcomer's order (zoo and run in the smoke profile), with
    # a check in between that the run changed no file of the repository
    zoo, run, test = quick_start_commands()
    assert body[0] == f"{zoo} PROFILE=smoke", f".ci/run starts with {body[0]!r}, not {zoo!r}"
    assert body[1] == f"{run} PROFILE=smoke", f".ci/run then runs {body[1]!r}, not {run!r}"
    assert body[-1] == test, f".ci/run ends with {body[-1]!r}, README says {test!r}"
    assert any("git status --porcelain" in c for c in body[1:-1]), \
        ".ci/run does not check that make run left the repository unchanged"


def test_make_targets_of_the_readme_exist():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(encoding="utf-8"), re.M))
    for cmd in quick_start_commands():
        words = shlex.split(cmd)
        if words[0] == "make":
            wanted = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
            assert set(wanted) <= targets, f"{cmd!r}: Makefile has no target {set(wanted) - targets}"


def test_readme_has_the_notebook_table_markers():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    begin, end = readme.find("<!-- notebooks:begin -->"), readme.find("<!-- notebooks:end -->")
    assert 0 <= begin < end


def test_every_library_course_lib_imports_is_a_declared_dependency():
    """``course_lib`` imported Pillow and safetensors without declaring them: a user's
    ``pip install .`` only worked because other packages happened to bring them."""
    import ast
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    declared = {canonicalize_name(r.name) for r in pyproject_requirements()["dependencies"]}
    missing = {}
    for path in sorted((REPO / "course_lib").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top in sys.stdlib_module_names or top in ("course_lib", "__future__"):
                    continue
                names = {canonicalize_name(d) for d in dists.get(top, [top])}
                if not names & declared:
                    missing.setdefault(top, path.relative_to(REPO).as_posix())
    assert not missing, f"imported but not in [project].dependencies: {missing}"
