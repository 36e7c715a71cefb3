"""Scaling probe of a headline claim (course_lib.results.scaling): train its two arms on paired
seeds at 1x, 2x, 4x ... the notebook's training budget and commit the per-seed numbers as
``results/<notebook>/probe_<claim>.json``, which the notebook draws next to its verdict.

    python benchmarks/scaling_probe.py 04_convnext convnext_beats_resnet --factors 1,2,4
    python benchmarks/scaling_probe.py 04_convnext convnext_beats_resnet --set seeds=2

Uses ``$COURSE_CACHE`` (use a scratch folder: a probe must not fill the cache a timed study run
reads) and the notebook's study parameters with any ``--set NAME=VALUE`` override. The paper
package must define ``scaling_probe(P, claim, factors, log)`` and ``PROBES``.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib import config  # noqa: E402
from course_lib.results import scaling  # noqa: E402

PACKAGES = {"02_usi": "usi", "03_deit": "deit", "04_convnext": "convnext", "09_minivit": "minivit",
            "05_clear": "clear", "06_dino": "dino", "11_stego": "stego", "12_surgical_cnn": "surgical_cnn",
            "10_copy_paste": "copy_paste", "01_albef": "albef", "07_vitdet": "vitdet",
            "08_frozen_backbones": "frozen_backbones"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebook", choices=sorted(PACKAGES))
    ap.add_argument("claim")
    ap.add_argument("--factors", default="1,2,4", help="budget factors (comma-separated)")
    ap.add_argument("--profile", default="study")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    a = ap.parse_args(argv)
    pkg = importlib.import_module(f"course_lib.papers.{PACKAGES[a.notebook]}")
    if not hasattr(pkg, "scaling_probe") or a.claim not in pkg.PROBES:
        ap.error(f"no probe for {a.claim!r} in {a.notebook}; available: {', '.join(getattr(pkg, 'PROBES', {}))}")
    overrides = {}
    for item in a.set:
        k, v = item.split("=", 1)
        try:
            overrides[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            overrides[k] = v
    P = config.resolve(a.notebook, a.profile, **overrides)
    factors = [float(f) for f in a.factors.split(",")]
    t0 = time.perf_counter()
    git = scaling.git_state()  # the commit the probe starts from
    out = pkg.scaling_probe(P, a.claim, factors, log=lambda s: print(s, flush=True))
    path = scaling.save_probe(a.notebook, a.claim, out["rows"], budget=out["budget"], arms=out["arms"],
                              higher_is_better=out["higher_is_better"], unit=out["unit"], params=dict(P),
                              elapsed_s=round(time.perf_counter() - t0, 1), git=git)
    print(scaling.probe_table(scaling.load_probe(a.notebook, a.claim)).round(2).to_string())
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
