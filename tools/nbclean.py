#!/usr/bin/env python3
"""Clean course notebooks before committing them, keeping the outputs nbval checks.

Usage::

    python tools/nbclean.py notebooks/*.ipynb              # clean in place
    python tools/nbclean.py --check notebooks/*.ipynb      # exit 1 if a notebook is not clean
    python tools/nbclean.py --execute notebooks/03_deit.ipynb
        # run it headless in the smoke profile (papermill), store fresh outputs of the
        # ``# NBVAL_CHECK_OUTPUT`` cells, then clean it

What "clean" means (the notebook standard; ``tests/test_notebooks.py`` enforces it):

* Cells marked ``# NBVAL_CHECK_OUTPUT`` (or tagged ``nbval-check-output``) keep their
  outputs and get an execution count (nbval ignores a reference cell without a count and
  fails one that has outputs but no count). Only their ``stdout`` text and
  ``execute_result`` outputs are kept, with stdout writes merged into one stream the way
  nbval merges what it sees when it re-runs the cell. So a checked cell must print
  deterministic text only: no stderr, no figures, no progress bars.
* Every other code cell loses its outputs and execution count (done by nbstripout, which
  keeps a cell whose metadata says ``keep_output: true``; we set that on checked cells).
* Widget state (``metadata.widgets``), papermill metadata and timing metadata are removed;
  the kernelspec is set to the standard ``python3``.

The smoke environment used by ``--execute`` is the one ``tests/test_notebooks.py`` uses
(:func:`smoke_env`), so the stored outputs are what CI computes.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbstripout import strip_output

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECK_MARKER = "NBVAL_CHECK_OUTPUT"
CHECK_TAG = "nbval-check-output"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
# what nbstripout's command line strips by default, plus papermill's bookkeeping
EXTRA_KEYS = [
    "metadata.signature",
    "metadata.widgets",
    "metadata.papermill",
    "cell.metadata.collapsed",
    "cell.metadata.ExecuteTime",
    "cell.metadata.execution",
    "cell.metadata.heading_collapsed",
    "cell.metadata.hidden",
    "cell.metadata.scrolled",
    "cell.metadata.papermill",
]


def smoke_env(results_dir: str | os.PathLike, cache_dir: str | os.PathLike) -> dict[str, str]:
    """Environment variables of a headless smoke-profile notebook run (CI and --execute)."""
    return {
        "COURSE_PROFILE": "smoke",
        "COURSE_RESULTS_DIR": str(results_dir),
        "COURSE_CACHE": str(cache_dir),
        "COURSE_WORKERS": "0",
        "MPLBACKEND": "Agg",
        "COURSE_HEADLESS": "1",  # viz.headless(): static figures for widgets, no live loss plot
        "PYTHONHASHSEED": "0",
        "JUPYTER_PREFER_ENV_PATH": "1",
    }


def _source(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def is_checked(cell) -> bool:
    """A code cell whose outputs nbval compares (``# NBVAL_CHECK_OUTPUT`` or its tag)."""
    return cell.get("cell_type") == "code" and (
        CHECK_MARKER in _source(cell) or CHECK_TAG in cell.get("metadata", {}).get("tags", [])
    )


def nbval_outputs(outputs) -> tuple[list, list[str]]:
    """The outputs of a checked cell as nbval will see them, and what had to be dropped.

    Keeps stdout streams (merged into one, ``\\r``/``\\b`` applied, by nbval's own
    ``coalesce_streams``) and ``execute_result`` outputs.
    """
    from nbval.plugin import coalesce_streams

    kept, dropped = [], []
    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream" and out.get("name") == "stdout":
            kept.append(nbformat.from_dict({"output_type": "stream", "name": "stdout",
                                            "text": _text(out.get("text", ""))}))
        elif kind == "execute_result":
            kept.append(nbformat.from_dict({
                "output_type": "execute_result",
                "data": copy.deepcopy(dict(out.get("data", {}))),
                "metadata": copy.deepcopy(dict(out.get("metadata", {}))),
                "execution_count": out.get("execution_count"),
            }))
        else:
            dropped.append(kind if kind != "stream" else f"stream:{out.get('name')}")
    return list(coalesce_streams(kept)), dropped


def _text(t) -> str:
    return "".join(t) if isinstance(t, list) else t


def clean(nb, executed=None, name: str = "notebook") -> list[str]:
    """Clean ``nb`` in place; with ``executed`` (a run of the same notebook) take the
    checked cells' outputs from it. Returns warnings (problems nbval would hit)."""
    warnings: list[str] = []
    if executed is not None:
        _take_outputs(nb, executed, name)
    code_index = 0
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        code_index += 1
        md = cell.setdefault("metadata", nbformat.NotebookNode())
        tags = md.get("tags", [])
        if "keep_output" in tags:
            md["tags"] = [t for t in tags if t != "keep_output"]
        if is_checked(cell):
            md["keep_output"] = True
            outs, dropped = nbval_outputs(cell.get("outputs", []))
            if dropped:
                warnings.append(
                    f"{name}: checked code cell {code_index} produced {', '.join(sorted(set(dropped)))}"
                    " (dropped); nbval will see it again and fail - print deterministic text only"
                )
            if not outs:
                warnings.append(f"{name}: checked code cell {code_index} has no stored output;"
                                " run `python tools/nbclean.py --execute` on it")
            cell["outputs"] = outs
            # a stable count: the cell's position among code cells
            cell["execution_count"] = code_index if outs else None
            for o in outs:
                if o.get("output_type") == "execute_result":
                    o["execution_count"] = cell["execution_count"]
        else:
            md.pop("keep_output", None)
    strip_output(nb, keep_output=False, keep_count=True, keep_id=True, extra_keys=EXTRA_KEYS)
    for cell in nb.cells:
        if cell.get("cell_type") == "code" and not is_checked(cell):
            cell["execution_count"] = None
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    return warnings


def _take_outputs(nb, executed, name: str) -> None:
    """Copy the outputs of checked cells from an executed copy (papermill's output)."""
    runs = [c for c in executed.cells
            if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    by_id = {c.get("id"): c for c in runs if c.get("id")}
    same_shape = len(runs) == len(nb.cells)
    for i, cell in enumerate(nb.cells):
        if not is_checked(cell):
            continue
        ran = by_id.get(cell.get("id")) if cell.get("id") else None
        if ran is None and same_shape:
            ran = runs[i]
        if ran is None or _source(ran) != _source(cell):
            raise SystemExit(f"{name}: cannot match checked cell {i} with the executed notebook")
        cell["outputs"] = copy.deepcopy(ran.get("outputs", []))


def execute(path: Path, timeout: int | None = None) -> nbformat.NotebookNode:
    """Run a notebook headless in the smoke profile (tmp results and cache); return the run."""
    import papermill

    with tempfile.TemporaryDirectory(prefix="nbclean-") as tmp:
        tmp = Path(tmp)
        env = smoke_env(tmp / "results", tmp / "cache")
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the kernel inherits this process's environment
        try:
            out = tmp / path.name
            papermill.execute_notebook(
                str(path), str(out), kernel_name="python3", cwd=str(path.parent),
                progress_bar=False, execution_timeout=timeout,
            )
            return nbformat.read(out, as_version=4)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def process(path: Path, do_execute: bool, check_only: bool, timeout: int | None) -> tuple[bool, list[str]]:
    """Clean one notebook. Returns (changed, warnings)."""
    raw = path.read_text(encoding="utf-8")
    nb = nbformat.reads(raw, as_version=4)
    executed = execute(path, timeout) if do_execute else None
    warnings = clean(nb, executed, path.name)
    nbformat.validate(nb)
    new = nbformat.writes(nb)
    if not new.endswith("\n"):
        new += "\n"
    changed = new != raw
    if changed and not check_only:
        path.write_text(new, encoding="utf-8")
    return changed, warnings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--execute", action="store_true",
                    help="run each notebook in the smoke profile first (papermill) to refresh checked outputs")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a notebook is not clean")
    ap.add_argument("--timeout", type=int, default=1800, help="per-cell timeout of --execute, seconds")
    args = ap.parse_args(argv)
    if args.execute and args.check:
        ap.error("--execute and --check exclude each other")
    status = 0
    for path in args.notebooks:
        if not path.is_file():
            print(f"{path}: no such notebook", file=sys.stderr)
            status = 1
            continue
        try:
            changed, warnings = process(path, args.execute, args.check, args.timeout)
        except Exception as e:  # papermill's execution error names the failing cell
            print(f"{path}: {type(e).__name__}: {e}", file=sys.stderr)
            status = 1
            continue
        for w in warnings:
            print("warning:", w, file=sys.stderr)
        if warnings and (args.execute or args.check):
            status = 1
        if args.check and changed:
            print(f"{path}: not clean (run: python tools/nbclean.py {path})")
            status = 1
        elif not args.check:
            print(f"{path}: {'cleaned' if changed else 'already clean'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
