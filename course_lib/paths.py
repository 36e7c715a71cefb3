"""Where things live: repository root, dataset root, artifact cache and results folder.

Environment variables override the defaults so CI and papermill runs can redirect them:
``COURSE_DATA`` (datasets and world cache), ``COURSE_CACHE`` (trained artifacts),
``COURSE_RESULTS_DIR`` (results JSON files of a run; the recorded study runs are in
``<repo>/results``, see :data:`RECORDED_DIR`).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


DEFAULT_DATA_ROOT = "data"  # the notebooks' ``data_root`` default


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Datasets folder (real datasets and the offline world's cache), in this order:

    1. ``root`` when it is given and is not the default ``"data"`` (a notebook's explicit
       ``data_root`` parameter, ``fetch.py --root``);
    2. ``$COURSE_DATA`` when set;
    3. ``<repo>/data``.

    Every notebook passes its ``data_root`` parameter, whose default is ``"data"``, so the default
    must not hide the environment variable. A relative path is taken from the repository root,
    so notebooks (which run in ``notebooks/``) and scripts agree on ``data_root="data"``.
    """
    if root and str(root) != DEFAULT_DATA_ROOT:
        p = Path(root)
    else:
        p = Path(os.environ.get("COURSE_DATA") or DEFAULT_DATA_ROOT)
    p = p.expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def cache_dir() -> Path:
    """Trained artifacts (teachers, checkpoints): ``$COURSE_CACHE`` or ``<repo>/.cache``."""
    p = Path(os.environ.get("COURSE_CACHE", REPO_ROOT / ".cache"))
    p.mkdir(parents=True, exist_ok=True)
    return p


# The study runs maintainers recorded from a clean commit (``make record``): tracked, read by
# the README table and the tests. Nothing a user runs writes here.
RECORDED_DIR = REPO_ROOT / "results"


def results_dir() -> Path:
    """Where a run writes its results JSON: ``$COURSE_RESULTS_DIR``, else ``<repo>/runs/results``
    (untracked). ``make run`` points it at ``runs/<time>/``, next to the executed notebooks;
    ``make record`` at :data:`RECORDED_DIR`."""
    p = Path(os.environ.get("COURSE_RESULTS_DIR") or REPO_ROOT / "runs" / "results")
    p.mkdir(parents=True, exist_ok=True)
    return p
