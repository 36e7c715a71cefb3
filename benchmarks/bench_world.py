"""Images/s of the offline world's renderer (and of loading a cached split), at several sizes.

    python benchmarks/bench_world.py [--images 2000]

Generation must never be the bottleneck of training: compare with the training throughput
of the models (a few hundred images/s on 2 CPU cores, docs/calibration.md).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib.world import WorldConfig, _stuff_sources, load_world, render  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=2000)
    a = p.parse_args(argv)
    _stuff_sources()  # one-time load of the scikit-image sources, not counted
    rows = [("32 px, 1 object", dict(image_size=32)),
            ("32 px, 1-3 objects, clutter 2", dict(image_size=32, objects=(1, 3), clutter=2)),
            ("64 px, 1-3 objects, clutter 2", dict(image_size=64, objects=(1, 3), clutter=2)),
            ("128 px, 2-6 objects, occlusion 0.5", dict(image_size=128, objects=(2, 6), occlusion=0.5))]
    print(f"{'world':38s} {'render img/s':>13s} {'cached load img/s':>18s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in rows:
            n = a.images if kw["image_size"] < 128 else a.images // 4
            cfg = WorldConfig(num_images=n, num_classes=10, **kw)
            t0 = time.perf_counter()
            render(cfg, "train")
            r = n / (time.perf_counter() - t0)
            load_world(cfg, "train", root=tmp)  # renders and writes the cache
            t0 = time.perf_counter()
            load_world(cfg, "train", root=tmp)
            c = n / (time.perf_counter() - t0)
            print(f"{name:38s} {r:13.0f} {c:18.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
