#!/usr/bin/env python3
"""Record a notebook's study run for the repository (maintainers: ``make record NB=03_deit``).

A user's ``make run`` writes under ``runs/`` (untracked) and never touches tracked files; the
committed scoreboard changes only through this script, which

1. refuses a working tree with changes (the record must name the commit it ran; ``--dirty``
   overrides it for a try-out, and the record then says ``dirty: true``);
2. runs the notebook with papermill in the ``study`` profile (or ``--profile``), headless, with
   its results written to ``results/<nb>/<profile>.json``;
3. stores the executed notebook as ``results/<nb>/<profile>.ipynb``: widget state and widget
   views stripped (they cannot render outside a live kernel), figures scaled to at most
   ``--max-width`` pixels (photos and textures as JPEG), so that anyone can read a real study run
   on the hosting site, a few MB at most;
4. refreshes the README's notebook table.

Then commit ``results/<nb>/`` and ``README.md``.
"""
from __future__ import annotations

import argparse
import base64
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
MAX_MB = 5.0


def git_changes() -> list[str]:
    """What differs from the commit, besides the records and the README table they update."""
    out = subprocess.run(["git", "status", "--porcelain", "--", ".", ":(exclude)results",
                          ":(exclude)README.md"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def shrink_png(data: str, max_width: int) -> tuple[str, str]:
    """A base64 PNG figure scaled down to ``max_width`` pixels (aspect kept), as
    ``(mime type, base64 data)``: JPEG (quality 85) where that is under half the PNG's size, as for
    the world's noisy textures and photos, else a re-compressed PNG (line plots stay sharp)."""
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(data)))
    if img.width > max_width:
        img = img.resize((max_width, round(img.height * max_width / img.width)), Image.LANCZOS)
    png, jpeg = io.BytesIO(), io.BytesIO()
    img.save(png, format="PNG", optimize=True)
    img.convert("RGB").save(jpeg, format="JPEG", quality=85, optimize=True)
    if jpeg.tell() < png.tell() / 2:
        return "image/jpeg", base64.b64encode(jpeg.getvalue()).decode("ascii")
    return "image/png", base64.b64encode(png.getvalue()).decode("ascii")


def tidy(nb, max_width: int) -> dict[str, int]:
    """Strip widget state and views, shrink figures; returns what was done."""
    nb.metadata.pop("widgets", None)
    done = {"figures": 0, "widget_views": 0}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW in data:
                del data[WIDGET_VIEW]
                done["widget_views"] += 1
            if "image/png" in data:
                mime, small = shrink_png(data.pop("image/png"), max_width)
                data[mime] = small
                done["figures"] += 1
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", [])
                            if o.get("output_type") not in ("display_data", "execute_result")
                            or o.get("data")]
    return done


def record(notebook: str, profile: str, params: dict, max_width: int, dirty: bool) -> Path:
    src = REPO / "notebooks" / f"{notebook}.ipynb"
    if not src.is_file():
        have = ", ".join(p.stem for p in sorted((REPO / "notebooks").glob("*.ipynb")))
        raise SystemExit(f"no notebook {src}; have: {have}")
    changes = git_changes()
    if changes and not dirty:
        raise SystemExit("refusing to record from a working tree with changes (commit first, or "
                         "--dirty for a try-out):\n  " + "\n  ".join(changes[:20]))
    import papermill as pm

    out_dir = REPO / "results" / notebook
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{profile}.ipynb"
    os.environ.update({"COURSE_RESULTS_DIR": str(REPO / "results"), "COURSE_HEADLESS": "1"})
    os.environ.pop("COURSE_PROFILE", None)  # the profile is the one asked for here
    t0 = time.perf_counter()
    pm.execute_notebook(str(src), str(target), parameters={"profile": profile, **params},
                        cwd=str(REPO / "notebooks"), kernel_name="python3", log_output=True,
                        progress_bar=False)
    nb = nbformat.read(target, as_version=4)
    done = tidy(nb, max_width)
    nbformat.write(nb, target)
    mb = target.stat().st_size / 2**20
    print(f"recorded {notebook} ({profile}) in {time.perf_counter() - t0:.0f} s: "
          f"{out_dir / f'{profile}.json'} and {target} ({mb:.1f} MB, {done['figures']} figures, "
          f"{done['widget_views']} widget views stripped)")
    if mb > MAX_MB:
        print(f"warning: {target} is {mb:.1f} MB (> {MAX_MB} MB): lower --max-width", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "course_lib", "readme"], cwd=REPO, check=True)
    print(f"now commit: git add results/{notebook} README.md")
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("notebook", help="notebook stem, e.g. 03_deit")
    ap.add_argument("--profile", default="study", choices=("smoke", "study", "paper"))
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="another notebook parameter (the value is read as YAML, as papermill does)")
    ap.add_argument("--max-width", type=int, default=900, help="figure width in pixels at most")
    ap.add_argument("--dirty", action="store_true", help="record from a tree with changes")
    args = ap.parse_args(argv)
    import yaml

    params = {k: yaml.safe_load(v) for k, v in args.p}
    record(args.notebook, args.profile, params, args.max_width, args.dirty)
    return 0


if __name__ == "__main__":
    sys.exit(main())
