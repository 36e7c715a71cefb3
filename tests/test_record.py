"""The maintainers' record tool (``make record``) and where a user's runs write their results."""
from __future__ import annotations

import base64
import importlib.util
import io
import subprocess
from pathlib import Path

import nbformat
import pytest

from course_lib import paths

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("record", REPO / "tools" / "record.py")
record = importlib.util.module_from_spec(spec)
spec.loader.exec_module(record)


def test_a_users_results_go_to_an_untracked_folder(monkeypatch):
    """``make run`` once wrote results/03_deit/study.json, which the tests check."""
    monkeypatch.delenv("COURSE_RESULTS_DIR", raising=False)
    target = paths.results_dir() / "03_deit" / "study.json"
    assert paths.RECORDED_DIR not in target.parents
    ignored = subprocess.run(["git", "check-ignore", "-q", str(target)], cwd=REPO)
    assert ignored.returncode == 0, f"{target} is not ignored by git"


def _png(width: int, height: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def test_tidy_strips_widgets_and_shrinks_figures():
    from PIL import Image

    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"state": {}}
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"image/png": _png(2000, 1000),
                                                     "text/plain": "<Figure>"}),
        nbformat.v4.new_output("display_data", data={record.WIDGET_VIEW: {"model_id": "a"}}),
        nbformat.v4.new_output("display_data", data={record.WIDGET_VIEW: {"model_id": "b"},
                                                     "text/plain": "interactive(...)"}),
    ]
    nb.cells = [cell]
    done = record.tidy(nb, max_width=500)
    assert done == {"figures": 1, "widget_views": 2} and "widgets" not in nb.metadata
    assert len(cell.outputs) == 2  # the widget view without any other data is gone
    png = Image.open(io.BytesIO(base64.b64decode(cell.outputs[0]["data"]["image/png"])))
    assert png.size == (500, 250)  # a flat colour stays PNG
    nbformat.validate(nb)


def test_noisy_figures_become_jpeg():
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (400, 600, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    mime, data = record.shrink_png(base64.b64encode(buf.getvalue()).decode(), max_width=300)
    assert mime == "image/jpeg" and Image.open(io.BytesIO(base64.b64decode(data))).size == (300, 200)


def test_record_refuses_a_tree_with_changes(monkeypatch):
    monkeypatch.setattr(record, "git_changes", lambda: [" M course_lib/deit.py"])
    with pytest.raises(SystemExit, match="(?s)refusing to record.*course_lib/deit.py"):
        record.record("03_deit", "study", {}, 900, dirty=False)
