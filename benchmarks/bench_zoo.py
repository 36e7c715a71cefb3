"""The course zoo's build time: every entry of a profile built into a fresh cache, one after the
other, with the per-entry and total wall times, their ratio to the entries' estimates and the
total's ratio to the budget (the study zoo: at most 90 minutes on 2 CPU cores).

    .venv/bin/python benchmarks/bench_zoo.py                   # study, all entries (~30 min)
    .venv/bin/python benchmarks/bench_zoo.py --profile smoke   # seconds
    .venv/bin/python benchmarks/bench_zoo.py --device cuda     # on a GPU box

Nothing else should run on the machine meanwhile (two trainings at once ruin both timings).
The model cards land in the fresh cache (``--cache``, default a temporary folder) and their
figures are printed, so the run doubles as the zoo's quality check.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = {"smoke": 60.0, "study": 90 * 60.0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="study", choices=("smoke", "study"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--cache", default=None, help="fresh cache folder (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the cards here")
    ap.add_argument("--fresh-data", action="store_true",
                    help="render the offline world anew too (a new machine's first build)")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args(argv)
    cache = Path(args.cache or tempfile.mkdtemp(prefix="zoo-bench-"))
    os.environ["COURSE_CACHE"] = str(cache)
    if args.fresh_data:
        os.environ["COURSE_DATA"] = str(cache / "data")
    from course_lib import zoo

    t0 = time.perf_counter()
    cards = zoo.build(args.names, args.profile, args.device, log=print)
    total = time.perf_counter() - t0
    print(f"\n== zoo build, profile {args.profile}, cache {cache}")
    print(f"{'entry':18s} {'seconds':>8s} {'estimate':>9s} {'ratio':>6s}  figures")
    for c in cards:
        est = c["estimate_seconds"]
        figs = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in c["figures"].items())
        print(f"{c['entry']:18s} {c['build_seconds']:8.1f} {est:9.0f} {c['build_seconds'] / est:6.2f}  {figs}")
    budget = BUDGET_S[args.profile]
    print(f"{'total':18s} {total:8.1f} {sum(c['estimate_seconds'] for c in cards):9.0f}  "
          f"budget {budget:.0f} s: ratio {total / budget:.2f} ({'within' if total <= budget else 'OVER'} budget)")
    if args.json:
        Path(args.json).write_text(json.dumps(cards, indent=2) + "\n")
    return 0 if total <= budget else 1


if __name__ == "__main__":
    sys.exit(main())
