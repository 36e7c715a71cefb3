"""The data of notebook 05: the CLEAR-like stream on the course's offline world (concepts that
drift from an old to a new shape variant, on top of the world's global drift) and the real
CLEAR-10 folders (``paper`` profile)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course_lib import config

from .method import Bucket, Stream

# bump when a change of this package changes what a cached artifact would be
CODE_VERSION = 1

# The concepts of our stream: name -> (old shape, new shape, bucket of the change, width of the
# change in buckets). The share of the new variant in bucket t is sigmoid((t - centre) / width).
# Names are CLEAR-10 classes; "soccer" keeps its shape (only the global drift moves it).
CONCEPTS: dict[str, tuple[str, str, float, float]] = {
    "laptop": ("square", "diamond", 3.0, 0.7),
    "camera": ("hexagon", "ring", 5.0, 0.7),
    "bus": ("cross", "arrow", 6.5, 1.2),
    "cosplay": ("star", "heart", 8.0, 0.7),
    "soccer": ("circle", "circle", 0.0, 1.0),
}
BACKGROUND = "BACKGROUND"


def variant_share(concept: str, t: float, drift: float = 1.0) -> float:
    """Share of the *new* shape variant of ``concept`` in bucket ``t``:
    ``drift * sigmoid((t - centre) / width)`` (0 for a concept without a new variant)."""
    old, new, centre, width = CONCEPTS[concept]
    if old == new:
        return 0.0
    return float(drift / (1.0 + math.exp(-(t - centre) / width)))


def _world_cfg(P_like: Mapping[str, Any], t: int, n: int, seed: int, **kw):
    from course_lib.world import WorldConfig

    return WorldConfig(num_images=n, eval_images=1, image_size=int(P_like["image_size"]),
                       num_classes=12, objects=(1, 1), color_cue=float(P_like["color_cue"]),
                       bg_contrast=float(P_like["bg_contrast"]), time=float(t * P_like["time_scale"]),
                       seed=seed, **kw)


def make_world_stream(images_per_class: int = 50, unlabeled_images: int = 1500, *,
                      image_size: int = 32, time_scale: float = 1.0, concept_drift: float = 1.0,
                      color_cue: float = 0.5, bg_contrast: float = 0.6, num_buckets: int = 11,
                      seed: int = 0, root=None, cache: bool = True) -> Stream:
    """The CLEAR-like stream on the offline world.

    Bucket ``t`` (0..num_buckets-1) renders a pool of world images of all 12 shapes at
    ``WorldConfig.time = t * time_scale`` and keeps, for every concept, ``images_per_class``
    images split between its old and new shape by :func:`variant_share`; BACKGROUND images are
    rendered with ``objects=(0, 0)``. Bucket 0 holds ``unlabeled_images`` images drawn the same
    way (class-balanced). Rendering goes through the world's disk cache.
    """
    from course_lib.world import SHAPE_NAMES, load_world, render

    knobs = {"image_size": image_size, "time_scale": time_scale, "color_cue": color_cue,
             "bg_contrast": bg_contrast}
    class_names = (BACKGROUND, *CONCEPTS)
    C = len(class_names)
    buckets = []
    for t in range(num_buckets):
        n_cls = images_per_class if t > 0 else max(1, math.ceil(unlabeled_images / C))
        need: dict[int, int] = {}
        plan = []  # (label, shape id, variant, count)
        for c, concept in enumerate(CONCEPTS, start=1):
            old, new, _, _ = CONCEPTS[concept]
            n_new = round(n_cls * variant_share(concept, t, concept_drift))
            for shape, var, k in ((old, 0, n_cls - n_new), (new, 1, n_new)):
                if k:
                    sid = SHAPE_NAMES.index(shape)
                    plan.append((c, sid, var, k))
                    need[sid] = need.get(sid, 0) + k
        # pool of single-object images; grow it (new seeds) until every shape has enough
        pools, have = [], np.zeros(len(SHAPE_NAMES), int)
        attempt = 0
        while any(have[s] < k for s, k in need.items()):
            missing = max(k - have[s] for s, k in need.items())
            n_pool = int(1.3 * len(SHAPE_NAMES) * missing) + 24
            cfg = _world_cfg(knobs, t, n_pool, seed=10_000 * seed + 100 * t + attempt)
            wd = load_world(cfg, "train", root) if cache else render(cfg, "train")
            pools.append(wd)
            have += np.bincount(wd.clean_labels.clamp(min=0).numpy(), minlength=len(SHAPE_NAMES))
            attempt += 1
        images = torch.cat([p.images for p in pools])
        shapes = torch.cat([p.clean_labels for p in pools])
        taken = {s: 0 for s in need}
        xs, ys, vs = [], [], []
        for c, sid, var, k in plan:
            idx = (shapes == sid).nonzero().squeeze(1)[taken[sid]:taken[sid] + k]
            taken[sid] += k
            xs.append(images[idx])
            ys.append(torch.full((k,), c))
            vs.append(torch.full((k,), var))
        bg_cfg = _world_cfg(knobs, t, n_cls, seed=10_000 * seed + 100 * t + 99).replace(objects=(0, 0))
        bg = load_world(bg_cfg, "train", root) if cache else render(bg_cfg, "train")
        xs.append(bg.images)
        ys.append(torch.zeros(n_cls, dtype=torch.long))
        vs.append(torch.full((n_cls,), -1))
        x, y, v = torch.cat(xs), torch.cat(ys).long(), torch.cat(vs).to(torch.int8)
        perm = torch.from_numpy(np.random.default_rng([seed, t, 5]).permutation(len(y)))
        buckets.append(Bucket(t, x[perm].contiguous(), y[perm], v[perm]))
    key = {"world": dict(knobs, images_per_class=images_per_class, unlabeled=unlabeled_images,
                         concept_drift=concept_drift, buckets=num_buckets, seed=seed,
                         concepts={k: list(v) for k, v in CONCEPTS.items()}, v=CODE_VERSION)}
    return Stream(buckets, class_names, "world", key)


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _read_images(files: Sequence[Path], size: int) -> torch.Tensor:
    """JPEG/PNG files -> uint8 (N, 3, size, size): shorter side resized to ``size``, centre crop."""
    from PIL import Image

    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    for i, f in enumerate(files):
        with Image.open(f) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = size / min(w, h)
            im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
            out[i] = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
    return out


def load_clear_folder(root: str | Path, image_size: int = 224, *, max_per_class: int | None = None,
                      unlabeled: str | Path | None = None, max_unlabeled: int | None = None,
                      seed: int = 0) -> Stream:
    """The real CLEAR-10 (or CLEAR-100) stream from its folders.

    ``root`` is the extracted ``train_image_only`` (or ``test``) folder of the official release:
    ``root/labeled_images/<bucket 1..10>/<class>/*.jpg`` and ``root/class_names.txt`` (one class a
    line; without it, the sorted class folder names). Bucket 0 (unlabeled) comes from
    ``unlabeled`` (default ``root/unlabeled_images/0``, any depth of sub-folders); it exists only
    in the larger ``clear10-train.zip`` release (catalog entry ``clear10_unlabeled``). Images are
    resized (shorter side) and centre-cropped to ``image_size``.
    """
    root = Path(root)
    lab = root / "labeled_images"
    if not lab.is_dir():
        raise FileNotFoundError(f"{lab} not found: fetch CLEAR-10 with `python data_scripts/fetch.py "
                                "clear10` (or point data_root at the extracted folder)")
    names_file = root / "class_names.txt"
    bucket_dirs = sorted((d for d in lab.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    if names_file.exists():
        names = tuple(n.strip() for n in names_file.read_text().splitlines() if n.strip())
    else:
        names = tuple(sorted({c.name for d in bucket_dirs for c in d.iterdir() if c.is_dir()}))
    rng = np.random.default_rng(seed)
    buckets = []
    ul = Path(unlabeled) if unlabeled is not None else root / "unlabeled_images" / "0"
    if ul.is_dir():
        files = sorted(p for p in ul.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        if max_unlabeled is not None and len(files) > max_unlabeled:
            files = [files[i] for i in sorted(rng.choice(len(files), max_unlabeled, replace=False))]
        x0 = _read_images(files, image_size)
    else:
        x0 = torch.empty(0, 3, image_size, image_size, dtype=torch.uint8)
    buckets.append(Bucket(0, x0, torch.full((len(x0),), -1, dtype=torch.long),
                          torch.full((len(x0),), -1, dtype=torch.int8)))
    for d in bucket_dirs:
        files, labels = [], []
        for c, name in enumerate(names):
            fs = sorted(p for p in (d / name).glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES) \
                if (d / name).is_dir() else []
            if max_per_class is not None:
                fs = fs[:max_per_class]
            files += fs
            labels += [c] * len(fs)
        x = _read_images(files, image_size)
        buckets.append(Bucket(int(d.name), x, torch.tensor(labels, dtype=torch.long),
                              torch.full((len(labels),), -1, dtype=torch.int8)))
    return Stream(buckets, names, "clear_folder", {"folder": str(root), "size": image_size,
                                                   "max_per_class": max_per_class})


def load_stream(P: config.Params) -> Stream:
    """The stream of the notebook's parameters: the world, or CLEAR-10 under ``data_root``."""
    if P.dataset == "world":
        return make_world_stream(P.images_per_class, P.unlabeled_images, image_size=P.image_size,
                                 time_scale=P.time_scale, concept_drift=P.concept_drift,
                                 color_cue=P.color_cue, bg_contrast=P.bg_contrast, seed=P.seed,
                                 root=P.data_root)
    from course_lib import fetch

    base = fetch.dataset_path("clear10", P.data_root)
    return load_clear_folder(base, P.image_size, max_per_class=P.images_per_class,
                             unlabeled=base.parent / "unlabeled_images" / "0",
                             max_unlabeled=P.unlabeled_images or None, seed=P.seed)
