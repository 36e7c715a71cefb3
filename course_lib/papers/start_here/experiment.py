"""Notebook 00's parameters (the gallery of the world)."""
from __future__ import annotations

from course_lib.config import Param
from course_lib.world import SHAPES

NOTEBOOK = "00_start_here"
TITLE = "The offline world: a gallery of the procedural scenes"
PAPER_URL = None  # a tour of the course's world, not a paper

PARAMS: dict[str, Param] = {
    "image_size": Param(64, "side of the gallery images", type=int, low=32, high=128),
    "num_classes": Param(12, "shape classes", type=int, low=1, high=len(SHAPES)),
    "bench_images": Param({"smoke": 256, "study": 2000, "paper": 2000},
                          "images rendered for the speed measurement", type=int, low=16),
}
