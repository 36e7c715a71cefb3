"""The papers of the course, one package each, and the tour of the offline world.

Every package ``course_lib/papers/<paper>/`` has the same four rooms:

``__init__.py``
    the paper's story (what problem, what idea, which equation lives where) and the public
    names its notebook uses;
``method.py``
    the paper's contribution only: model parts and losses, with the paper's equation numbers;
``experiment.py``
    the notebook's parameters (``PARAMS``, with their per-profile defaults), data, runs,
    tables and the "paper vs. ours" recorder;
``figures.py``
    plots and widgets.

A paper package imports the shared layers below it (models, world, data, classification,
detection, the self-supervised backbone, training, metrics, viz, results), never another
paper package.
"""
from __future__ import annotations

import importlib
from types import ModuleType

# notebook id -> package under course_lib.papers
NOTEBOOKS = {
    "00_start_here": "start_here",
    "01_albef": "albef",
    "02_usi": "usi",
    "03_deit": "deit",
    "04_convnext": "convnext",
    "05_clear": "clear",
    "06_dino": "dino",
    "07_vitdet": "vitdet",
    "08_frozen_backbones": "frozen_backbones",
    "09_minivit": "minivit",
    "10_copy_paste": "copy_paste",
    "11_stego": "stego",
    "12_surgical_cnn": "surgical_cnn",
}


def experiment(notebook: str) -> ModuleType:
    """The ``experiment`` module of a notebook's paper package (it declares ``PARAMS``)."""
    if notebook not in NOTEBOOKS:
        raise KeyError(f"unknown notebook {notebook!r}; known: {', '.join(NOTEBOOKS)}")
    return importlib.import_module(f"course_lib.papers.{NOTEBOOKS[notebook]}.experiment")
