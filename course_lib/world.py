"""The offline scene world: procedural images that every notebook of the course reuses.

An image is a background cut from the real photos and textures that scikit-image ships
(brick, grass, gravel, space, moon, paper, tissue, photo: the "stuff" kinds), with objects of
``num_classes`` shape classes on it (circle, square, triangle, ...) of varied colour, size,
rotation and position. For every image the world knows

* the image-level label (the class of the object with the largest visible area; in the train
  split optionally replaced by a random class with probability ``label_noise``, like the
  imperfect labels of real datasets; val and test labels stay clean),
* per-instance visible masks (an instance-id map), boxes and labels,
* a per-pixel "stuff" label (the background kind), and
* a templated caption with attributes and spatial relations.

Knobs: object count, scale, occlusion, clutter (small distractor shapes), label noise,
class-frequency imbalance (a Zipf exponent: rare / common / frequent classes), colour cue
(how much an object's hue tells its class), pixel noise, background contrast and a ``time``
index that drifts appearance (object hues, background tints and the mix of background kinds;
for continual learning).

Everything is rendered with batched torch ops (no per-pixel Python), deterministically from
the config and the split, and cached to disk as ``.npz``. ``benchmarks/bench_world.py``
reports images/s.
"""
from __future__ import annotations

import colorsys
import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from . import paths

# ----------------------------------------------------------------------------------------------
# Shapes. Each is a membership test in the object's own frame: (u, v) in units of the object
# radius, so every shape fits in the unit disk. Rotation and scale are applied before.

def _polar(u, v):
    return torch.sqrt(u * u + v * v), torch.atan2(v, u)


def _regular_polygon(u, v, n: int, r: float = 0.95):
    rho, th = _polar(u, v)
    sector = 2 * math.pi / n
    a = torch.remainder(th, sector) - sector / 2
    return rho * torch.cos(a) <= r * math.cos(math.pi / n)


def _heart(x, y):
    return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0


SHAPES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "circle": lambda u, v: u * u + v * v <= 0.9,
    "square": lambda u, v: torch.maximum(u.abs(), v.abs()) <= 0.72,
    "triangle": lambda u, v: _regular_polygon(u, v, 3, 1.0),
    "star": lambda u, v: _polar(u, v)[0] <= 0.5 + 0.45 * torch.cos(5 * _polar(u, v)[1]),
    "cross": lambda u, v: ((u.abs() <= 0.28) & (v.abs() <= 0.95)) | ((v.abs() <= 0.28) & (u.abs() <= 0.95)),
    "ring": lambda u, v: ((u * u + v * v) <= 0.95) & ((u * u + v * v) >= 0.3),
    "hexagon": lambda u, v: _regular_polygon(u, v, 6, 0.95),
    "diamond": lambda u, v: (u.abs() / 0.6 + v.abs()) <= 1.0,
    "heart": lambda u, v: _heart(1.15 * u, 0.15 - 1.15 * v),
    "crescent": lambda u, v: ((u * u + v * v) <= 0.9) & (((u - 0.5) ** 2 + v * v) >= 0.55),
    "arrow": lambda u, v: ((v.abs() <= 0.2) & (u >= -0.9) & (u <= 0.2)) | ((u >= 0.1) & (u <= 0.9) & (v.abs() <= 0.75 * (0.9 - u))),
    "ellipse": lambda u, v: (u / 0.95) ** 2 + (v / 0.45) ** 2 <= 1.0,
}
SHAPE_NAMES = tuple(SHAPES)

# Stuff (background kinds): scikit-image sources and the tint given to grey textures.
STUFF: dict[str, dict] = {
    "brick": {"sources": ["brick"], "tint": (0.80, 0.42, 0.30), "phrase": "on brick"},
    "grass": {"sources": ["grass"], "tint": (0.35, 0.72, 0.30), "phrase": "on grass"},
    "gravel": {"sources": ["gravel"], "tint": (0.72, 0.66, 0.55), "phrase": "on gravel"},
    "space": {"sources": ["hubble_deep_field"], "tint": None, "phrase": "in space"},
    "moon": {"sources": ["moon"], "tint": (0.62, 0.62, 0.70), "phrase": "on the moon"},
    "paper": {"sources": ["page", "text"], "tint": (0.95, 0.92, 0.80), "phrase": "on paper"},
    "tissue": {"sources": ["immunohistochemistry", "retina"], "tint": None, "phrase": "on tissue"},
    "photo": {"sources": ["astronaut", "coffee", "chelsea", "rocket"], "tint": None, "phrase": "on a photo"},
}
STUFF_NAMES = tuple(STUFF)

COLOR_NAMES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
SIZE_NAMES = ("small", "medium", "large")
FREQUENCY_TIERS = ("rare", "common", "frequent")


@dataclass(frozen=True)
class WorldConfig:
    """All knobs of the world. Same config and split, same images (bit for bit)."""

    num_images: int = 4000          # images in the train split
    eval_images: int = 1000         # images in the val and test splits each
    image_size: int = 32            # 32 to 128 px
    num_classes: int = 10           # K shape classes, the first K of SHAPE_NAMES
    objects: tuple[int, int] = (1, 1)        # min, max objects per image
    scale: tuple[float, float] = (0.45, 0.8)  # object diameter / image side
    occlusion: float = 0.0          # 0: objects apart; 1: free overlap
    clutter: int = 0                # small distractor shapes (any shape) under the objects
    clutter_scale: tuple[float, float] = (0.1, 0.22)
    label_noise: float = 0.0        # fraction of TRAIN image labels replaced by a random class
    imbalance: float = 0.0          # Zipf exponent of class frequencies (0 = balanced)
    color_cue: float = 0.0          # 0: hue random; 1: hue fixed by class
    noise: float = 0.03             # std of Gaussian pixel noise
    bg_contrast: float = 1.0        # 0: flat backgrounds; 1: full texture
    split_bg: float = 0.5           # probability of a two-kind background
    time: float = 0.0               # drift index (appearance changes smoothly with time)
    seed: int = 0

    def __post_init__(self):
        if not 16 <= self.image_size <= 256:
            raise ValueError(f"image_size={self.image_size}: allowed 16..256 (the course uses 32..128)")
        if not 1 <= self.num_classes <= len(SHAPES):
            raise ValueError(f"num_classes={self.num_classes}: allowed 1..{len(SHAPES)}")
        lo, hi = self.objects
        if not 0 <= lo <= hi <= 16:
            raise ValueError(f"objects={self.objects}: allowed 0 <= min <= max <= 16")
        for name in ("occlusion", "label_noise", "color_cue", "bg_contrast", "split_bg"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)}: allowed [0, 1]")
        if self.num_images < 1 or self.eval_images < 1:
            raise ValueError("num_images and eval_images must be >= 1")

    @property
    def class_names(self) -> tuple[str, ...]:
        return SHAPE_NAMES[: self.num_classes]

    def class_probs(self) -> np.ndarray:
        """Class frequencies: p_c proportional to (c + 1) ** -imbalance."""
        p = (np.arange(self.num_classes) + 1.0) ** -self.imbalance
        return p / p.sum()

    def key(self, split: str) -> str:
        blob = json.dumps({**dataclasses.asdict(self), "split": split, "v": WORLD_VERSION}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def replace(self, **changes) -> "WorldConfig":
        return dataclasses.replace(self, **changes)


WORLD_VERSION = 1
SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


def for_profile(profile: str, study: Mapping[str, Any], changes: Mapping[str, Mapping[str, Any]] | None = None,
                **overrides: Any) -> WorldConfig:
    """A notebook's world for a profile: the ``study`` world's fields, updated with
    ``changes[profile]`` (e.g. fewer images in ``smoke``), then with ``overrides``. An unknown
    profile is a ``ParameterError`` (a ``ValueError``) that names the allowed ones."""
    from .config import for_profile as _for_profile

    return _for_profile(profile, WorldConfig, changes or {}, base=study, **overrides)


def frequency_tiers(counts: Sequence[int]) -> list[str]:
    """Split classes into rare / common / frequent thirds by their training counts (as LVIS does
    with thresholds, here relative so it works at any world size)."""
    order = np.argsort(np.asarray(counts), kind="stable")
    tiers = [""] * len(order)
    for rank, c in enumerate(order):
        tiers[c] = FREQUENCY_TIERS[min(2, rank * 3 // len(order))]
    return tiers


# ----------------------------------------------------------------------------------------------
# Background sources


@lru_cache(maxsize=None)
def _stuff_sources(max_side: int = 256) -> dict[str, list[torch.Tensor]]:
    """Each stuff kind's source images as float RGB tensors (3, H, W) in [0, 1]."""
    import skimage.data as skd
    from skimage.transform import rescale

    out: dict[str, list[torch.Tensor]] = {}
    for kind, spec in STUFF.items():
        imgs = []
        for name in spec["sources"]:
            img = getattr(skd, name)()
            img = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else max(1.0, float(img.max())))
            if img.ndim == 3:
                img = img[..., :3]
            factor = max_side / max(img.shape[:2])
            if factor < 1:
                img = rescale(img, factor, channel_axis=2 if img.ndim == 3 else None, anti_aliasing=True)
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)
            if spec["tint"] is not None:
                tint = torch.tensor(spec["tint"]).view(3, 1, 1)
                t = t.mean(0, keepdim=True) * (0.35 + 0.65 * tint) * 1.1
            imgs.append(t.clamp(0, 1))
        out[kind] = imgs
    return out


def _hue_rotate(rgb: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate hue of (N, 3, H, W) images by ``angle`` radians per image (YIQ rotation)."""
    c, s = torch.cos(angle), torch.sin(angle)
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    inv = torch.linalg.inv(yiq)
    rot = torch.zeros(len(angle), 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    m = inv @ rot @ yiq                                   # (N, 3, 3)
    return torch.einsum("nij,njhw->nihw", m, rgb).clamp(0, 1)


def _render_backgrounds(kinds: np.ndarray, crop: np.ndarray, center: np.ndarray, flip: np.ndarray,
                        src_idx: np.ndarray, size: int) -> torch.Tensor:
    """Crop-and-resize every image's background from its source in one ``grid_sample`` per source."""
    sources = _stuff_sources()
    out = torch.empty(len(kinds), 3, size, size)
    for k, kind in enumerate(STUFF_NAMES):
        for s, src in enumerate(sources[kind]):
            sel = np.nonzero((kinds == k) & (src_idx % len(sources[kind]) == s))[0]
            if len(sel) == 0:
                continue
            theta = torch.zeros(len(sel), 2, 3)
            theta[:, 0, 0] = torch.from_numpy(crop[sel] * flip[sel])
            theta[:, 1, 1] = torch.from_numpy(crop[sel])
            theta[:, :, 2] = torch.from_numpy(center[sel])
            grid = F.affine_grid(theta, [len(sel), 3, size, size], align_corners=False)
            out[sel] = F.grid_sample(src.unsqueeze(0).expand(len(sel), -1, -1, -1), grid,
                                     mode="bilinear", padding_mode="reflection", align_corners=False)
    return out


# ----------------------------------------------------------------------------------------------
# Object rendering


def _render_shapes(cls: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, radius: torch.Tensor,
                   angle: torch.Tensor, size: int, ss: int) -> torch.Tensor:
    """Anti-aliased alpha masks (n, size, size) of n shapes, supersampled ``ss`` x ``ss``.

    Centres and radii are in normalised image coordinates ([-1, 1] spans the side). Each shape
    is evaluated only in a window around it; objects are grouped by class and radius so every
    chunk is one tensor program.
    """
    n = len(cls)
    out = torch.zeros(n, size, size)
    half = size / 2
    order = np.lexsort((radius.numpy(), cls.numpy()))
    cls_sorted = cls[order]
    for k in cls_sorted.unique().tolist():
        members = order[(cls_sorted == k).numpy()]
        # windows of similar size in one chunk
        w_all = np.ceil(radius[members].numpy() * size).astype(int) + 2
        start = 0
        while start < len(members):
            w = int(w_all[min(len(members) - 1, start)])
            chunk = max(1, (1 << 21) // ((w * ss) ** 2))
            stop = start
            while stop < len(members) and stop - start < chunk and w_all[stop] <= w + 2:
                stop += 1
            w = int(w_all[start:stop].max())
            idx = torch.from_numpy(members[start:stop])
            start = stop
            # window origin (pixels) and pixel-centre coordinates of the supersampled window
            px, py = (cx[idx] + 1) * half, (cy[idx] + 1) * half
            x0 = torch.floor(px - w / 2).long()
            y0 = torch.floor(py - w / 2).long()
            sub = (torch.arange(w * ss, dtype=torch.float32) + 0.5) / ss
            gx = (x0[:, None].float() + sub[None, :]) / half - 1          # (m, w*ss)
            gy = (y0[:, None].float() + sub[None, :]) / half - 1
            dx = (gx - cx[idx, None])[:, None, :]
            dy = (gy - cy[idx, None])[:, :, None]
            c, s = torch.cos(angle[idx])[:, None, None], torch.sin(angle[idx])[:, None, None]
            r = radius[idx, None, None]
            u = (dx * c + dy * s) / r
            v = (-dx * s + dy * c) / r
            alpha = F.avg_pool2d(SHAPES[SHAPE_NAMES[k]](u, v).float().unsqueeze(1), ss).squeeze(1)
            # paste the windows into a padded canvas, then crop
            canvas = torch.zeros(len(idx), size + 2 * w, size + 2 * w)
            ar = torch.arange(w)
            rows = (y0 + w)[:, None, None] + ar[None, :, None]
            cols = (x0 + w)[:, None, None] + ar[None, None, :]
            canvas[torch.arange(len(idx))[:, None, None], rows.clamp(0, size + 2 * w - 1),
                   cols.clamp(0, size + 2 * w - 1)] = alpha
            out[idx] = canvas[:, w : w + size, w : w + size]
    return out


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.array([colorsys.hsv_to_rgb(*x) for x in zip(h, s, v)], dtype=np.float32).reshape(-1, 3)


def _color_name(h: float) -> str:
    return COLOR_NAMES[int(((h + 1 / 16) % 1.0) * len(COLOR_NAMES)) % len(COLOR_NAMES)]


# ----------------------------------------------------------------------------------------------
# The world's data


@dataclass
class WorldData:
    """One split of the world. Tensors are CPU; images uint8 (N, 3, S, S)."""

    config: WorldConfig
    split: str
    images: torch.Tensor            # uint8 (N, 3, S, S)
    labels: torch.Tensor            # int64 (N,) image label after label noise
    clean_labels: torch.Tensor      # int64 (N,) class of the largest visible object (-1: none)
    instance_map: torch.Tensor      # uint8 (N, S, S): 0 background, m + 1 object slot m
    obj_labels: torch.Tensor        # int64 (N, M): class per slot, -1 for no object
    boxes: torch.Tensor             # float32 (N, M, 4) visible xyxy in pixels
    obj_colors: torch.Tensor        # int64 (N, M) index into COLOR_NAMES
    obj_scales: torch.Tensor        # float32 (N, M) diameter / side
    stuff: torch.Tensor             # uint8 (N, S, S) background kind per pixel
    captions: list[str]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    def masks(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Visible instance masks (n, S, S) bool, labels (n,), boxes (n, 4) of image ``i``
        (objects hidden completely by occlusion are dropped)."""
        slots = (self.obj_labels[i] >= 0).nonzero().squeeze(1)
        m = self.instance_map[i].unsqueeze(0) == (slots + 1).view(-1, 1, 1).to(torch.uint8)
        keep = m.flatten(1).any(1)
        return m[keep], self.obj_labels[i, slots][keep], self.boxes[i, slots][keep]

    def semantic(self, i: int) -> torch.Tensor:
        """Per-pixel labels: stuff kind k -> k, object of class c -> len(STUFF) + c."""
        sem = self.stuff[i].long().clone()
        inst = self.instance_map[i].long()
        fg = inst > 0
        cls = self.obj_labels[i][(inst - 1).clamp(min=0)]
        sem[fg] = len(STUFF_NAMES) + cls[fg]
        return sem

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels.numpy(), minlength=self.config.num_classes)

    # -- cache ---------------------------------------------------------------------------------
    _ARRAYS = ("images", "labels", "clean_labels", "instance_map", "obj_labels", "boxes",
               "obj_colors", "obj_scales", "stuff")

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
        arrays = {k: getattr(self, k).numpy() for k in self._ARRAYS}
        np.savez(tmp, captions=np.array(self.captions, dtype=object).astype(str), **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, config: WorldConfig, split: str) -> "WorldData":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: torch.from_numpy(z[k]) for k in cls._ARRAYS}
            captions = z["captions"].tolist()
        return cls(config=config, split=split, captions=captions, **arrays)


def render(cfg: WorldConfig, split: str = "train", n: int | None = None) -> WorldData:
    """Render one split of the world (no cache). Deterministic in (cfg, split)."""
    if split not in SPLIT_OFFSET:
        raise ValueError(f"split {split!r}: allowed {tuple(SPLIT_OFFSET)}")
    if n is None:
        n = cfg.num_images if split == "train" else cfg.eval_images
    rng = np.random.default_rng([cfg.seed, SPLIT_OFFSET[split], WORLD_VERSION])
    S, K, T = cfg.image_size, cfg.num_classes, cfg.time
    ss = max(2, 96 // S)  # supersampling for anti-aliased edges

    # --- backgrounds: kinds drift with time (a fixed random preference per kind) ---------------
    n_kinds = len(STUFF_NAMES)
    pref = np.random.default_rng(12345).normal(size=n_kinds)
    p_kind = np.exp(0.15 * T * pref)
    p_kind /= p_kind.sum()
    kind_a = rng.choice(n_kinds, size=n, p=p_kind)
    kind_b = rng.choice(n_kinds, size=n, p=p_kind)
    two = rng.random(n) < cfg.split_bg
    crops = rng.uniform(0.12, 0.45, size=(2, n)).astype(np.float32)
    centers = rng.uniform(-0.5, 0.5, size=(2, n, 2)).astype(np.float32)
    flips = rng.choice([-1.0, 1.0], size=(2, n)).astype(np.float32)
    srcs = rng.integers(0, 1 << 16, size=(2, n))
    bg = _render_backgrounds(kind_a, crops[0], centers[0], flips[0], srcs[0], S)
    bg_b = _render_backgrounds(kind_b, crops[1], centers[1], flips[1], srcs[1], S)
    # two-kind backgrounds: a random half-plane takes the second kind
    ang = rng.uniform(0, 2 * math.pi, n).astype(np.float32)
    off = rng.uniform(-0.5, 0.5, n).astype(np.float32)
    lin = (torch.arange(S, dtype=torch.float32) + 0.5) / S * 2 - 1
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    side = (gx * torch.from_numpy(np.cos(ang))[:, None, None] + gy * torch.from_numpy(np.sin(ang))[:, None, None]
            > torch.from_numpy(off)[:, None, None]) & torch.from_numpy(two)[:, None, None]
    img = torch.where(side.unsqueeze(1), bg_b, bg)
    stuff = torch.where(side, torch.from_numpy(kind_b)[:, None, None], torch.from_numpy(kind_a)[:, None, None]).to(torch.uint8)
    # drift: backgrounds' hue turns with time; contrast knob blends towards the image mean
    img = _hue_rotate(img, torch.full((n,), 0.08 * T) + torch.from_numpy(rng.normal(0, 0.1, n).astype(np.float32)))
    if cfg.bg_contrast < 1:
        mean = img.mean(dim=(2, 3), keepdim=True)
        img = mean + cfg.bg_contrast * (img - mean)

    # --- clutter: small distractor shapes of any class, under the objects ----------------------
    if cfg.clutter > 0:
        nc = n * cfg.clutter
        c_cls = torch.from_numpy(rng.integers(0, len(SHAPES), nc))
        c_r = torch.from_numpy(rng.uniform(*cfg.clutter_scale, nc).astype(np.float32))
        c_xy = torch.from_numpy(rng.uniform(-0.95, 0.95, (2, nc)).astype(np.float32))
        c_ang = torch.from_numpy(rng.uniform(0, 2 * math.pi, nc).astype(np.float32))
        c_col = torch.from_numpy(_hsv_to_rgb(rng.random(nc), rng.uniform(0.3, 1, nc), rng.uniform(0.3, 1, nc)))
        alpha = _render_shapes(c_cls, c_xy[0], c_xy[1], c_r, c_ang, S, ss)
        for j in range(cfg.clutter):
            sel = slice(j, nc, cfg.clutter)
            a = alpha[sel].unsqueeze(1)
            img = img * (1 - a) + c_col[sel].view(-1, 3, 1, 1) * a

    # --- objects -------------------------------------------------------------------------------
    lo, hi = cfg.objects
    M = max(hi, 1)
    count = rng.integers(lo, hi + 1, size=n)
    present = np.arange(M)[None, :] < count[:, None]                     # (n, M)
    probs = cfg.class_probs()
    obj_cls = rng.choice(K, size=(n, M), p=probs)
    # slot 0 is the main object; others are a bit smaller
    scale = rng.uniform(*cfg.scale, size=(n, M)).astype(np.float32)
    scale[:, 1:] *= rng.uniform(0.55, 0.9, size=(n, M - 1)).astype(np.float32)
    scale *= np.float32(1.0 / (1.0 + 0.02 * T))                          # drift: objects shrink
    radius = scale  # diameter/side == radius in [-1, 1] units
    xy = np.zeros((n, M, 2), np.float32)
    for m in range(M):
        margin = 1 - 0.8 * radius[:, m]
        best = rng.uniform(-1, 1, (n, 2)).astype(np.float32) * margin[:, None]
        for _ in range(24):  # rejection sampling, vectorised over images
            if m == 0:
                break
            d = np.linalg.norm(best[:, None, :] - xy[:, :m], axis=2)    # (n, m)
            need = (1 - cfg.occlusion) * (radius[:, m : m + 1] + radius[:, :m]) * 0.9
            bad = ((d < need) & present[:, :m]).any(1) & present[:, m]
            if not bad.any():
                break
            best[bad] = rng.uniform(-1, 1, (bad.sum(), 2)).astype(np.float32) * margin[bad, None]
        xy[:, m] = best
    angle = rng.uniform(0, 2 * math.pi, (n, M)).astype(np.float32)
    class_hue = (np.arange(len(SHAPES)) * 0.618034) % 1.0
    rand_hue = rng.random((n, M))
    hue = (1 - cfg.color_cue) * rand_hue + cfg.color_cue * (class_hue[obj_cls] + rng.normal(0, 0.04, (n, M)))
    hue = (hue + 0.05 * T) % 1.0                                          # drift: hues turn
    sat = rng.uniform(0.55, 1.0, (n, M))
    val = rng.uniform(0.55, 1.0, (n, M))
    rgb = torch.from_numpy(_hsv_to_rgb(hue.ravel(), sat.ravel(), val.ravel()).reshape(n, M, 3))
    shade = torch.from_numpy(rng.uniform(-0.25, 0.25, (n, M, 2)).astype(np.float32))

    inst = torch.zeros(n, S, S, dtype=torch.uint8)
    sel_all = np.nonzero(present.ravel())[0]
    if len(sel_all):
        ii, mm = np.divmod(sel_all, M)
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        alpha = _render_shapes(t(obj_cls[ii, mm]), t(xy[ii, mm, 0]), t(xy[ii, mm, 1]),
                               t(radius[ii, mm]), t(angle[ii, mm]), S, ss)
        for m in range(M):  # later slots are drawn on top (occlusion)
            which = np.nonzero(mm == m)[0]
            if len(which) == 0:
                continue
            imgs = torch.from_numpy(ii[which])
            a = alpha[which].unsqueeze(1)
            grad = (gx * shade[imgs, m, 0, None, None] + gy * shade[imgs, m, 1, None, None]).unsqueeze(1)
            color = rgb[imgs, m].view(-1, 3, 1, 1) * (1 + grad)
            img[imgs] = img[imgs] * (1 - a) + color.clamp(0, 1) * a
            inst[imgs] = torch.where(a.squeeze(1) > 0.5, torch.tensor(m + 1, dtype=torch.uint8), inst[imgs])

    if cfg.noise > 0:
        gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
        img = img + cfg.noise * torch.randn(img.shape, generator=gen)
    images = (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8)

    # --- annotations -----------------------------------------------------------------------------
    slot_ids = torch.arange(1, M + 1, dtype=torch.uint8).view(1, M, 1, 1)
    onehot = inst.unsqueeze(1) == slot_ids                                # (n, M, S, S)
    area = onehot.flatten(2).sum(2)                                       # (n, M)
    rows, cols = onehot.any(3), onehot.any(2)                             # (n, M, S)
    ar = torch.arange(S)
    y0 = torch.where(rows, ar, S).min(2).values
    y1 = torch.where(rows, ar, -1).max(2).values + 1
    x0 = torch.where(cols, ar, S).min(2).values
    x1 = torch.where(cols, ar, -1).max(2).values + 1
    boxes = torch.stack([x0, y0, x1, y1], 2).float()
    boxes[area == 0] = 0
    obj_labels = torch.from_numpy(np.where(present, obj_cls, -1)).long()
    largest = area.argmax(1)
    clean = torch.where(area.max(1).values > 0, obj_labels[torch.arange(n), largest], torch.tensor(-1))
    labels = clean.clone()
    noise_rate = cfg.label_noise if split == "train" else 0.0  # evaluation labels stay clean
    flip = torch.from_numpy(rng.random(n) < noise_rate) & (clean >= 0)
    labels[flip] = torch.from_numpy(rng.choice(K, size=n, p=probs))[flip]
    labels[labels < 0] = 0  # an image without objects gets class 0 (only when objects may be 0)

    color_idx = np.array([[COLOR_NAMES.index(_color_name(h)) for h in row] for row in hue])
    captions = [
        _caption(cfg, obj_labels[i].tolist(), color_idx[i], scale[i], xy[i], area[i].tolist(),
                 STUFF_NAMES[int(stuff[i].flatten().mode().values)], rng)
        for i in range(n)
    ]
    return WorldData(
        config=cfg, split=split, images=images, labels=labels.long(), clean_labels=clean.long(),
        instance_map=inst, obj_labels=obj_labels, boxes=boxes,
        obj_colors=torch.from_numpy(np.where(present, color_idx, -1)).long(),
        obj_scales=torch.from_numpy(np.where(present, scale, 0).astype(np.float32)),
        stuff=stuff, captions=captions,
    )


_TEMPLATES = (
    "a {a} {rel} a {b} {bg}",
    "there is a {a} {rel} a {b} {bg}",
    "{bg_cap}, a {a} {rel} a {b}",
)
_SINGLE = ("a {a} {bg}", "a picture of a {a} {bg}", "{bg_cap}, a {a}")


def _caption(cfg, labels, colors, scales, xy, areas, bg_kind, rng) -> str:
    """Template caption: size, colour, shape of the two largest visible objects, their spatial
    relation, and the dominant background kind."""
    vis = [m for m, l in enumerate(labels) if l >= 0 and areas[m] > 0]
    vis.sort(key=lambda m: -areas[m])
    bg = STUFF[bg_kind]["phrase"]

    def np_(m):
        size = SIZE_NAMES[min(2, int((scales[m] - 0.1) / 0.25))]
        return f"{size} {COLOR_NAMES[colors[m]]} {SHAPE_NAMES[labels[m]]}"

    if not vis:
        return f"an empty scene {bg}"
    if len(vis) == 1:
        t = _SINGLE[rng.integers(len(_SINGLE))]
        return t.format(a=np_(vis[0]), bg=bg, bg_cap=bg.capitalize())
    a, b = vis[0], vis[1]
    dx, dy = xy[a][0] - xy[b][0], xy[a][1] - xy[b][1]
    rel = ("to the left of" if dx < 0 else "to the right of") if abs(dx) >= abs(dy) else ("above" if dy < 0 else "below")
    t = _TEMPLATES[rng.integers(len(_TEMPLATES))]
    return t.format(a=np_(a), b=np_(b), rel=rel, bg=bg, bg_cap=bg.capitalize())


def load_world(cfg: WorldConfig, split: str = "train", root: str | os.PathLike | None = None,
               cache: bool = True) -> WorldData:
    """The split of the world for ``cfg``: from the disk cache when there, else rendered and cached
    under ``<data_root>/world/``."""
    if not cache:
        return render(cfg, split)
    path = paths.data_root(root) / "world" / f"{cfg.key(split)}.npz"
    if path.exists():
        try:
            return WorldData.load(path, cfg, split)
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a broken cache file is re-rendered
    data = render(cfg, split)
    data.save(path)
    return data


# ----------------------------------------------------------------------------------------------
# Datasets


WORLD_MEAN = (0.5, 0.5, 0.5)
WORLD_STD = (0.25, 0.25, 0.25)


class WorldClassification(Dataset):
    """Image-level classification view: ``(image, label)``.

    Without a ``transform`` the image is a float tensor normalised with ``WORLD_MEAN``/``WORLD_STD``.
    A ``transform`` receives the uint8 (3, S, S) tensor (torchvision v2 transforms work on it) and
    must return the final tensor.
    """

    def __init__(self, config: WorldConfig, split: str = "train", root=None,
                 transform: Callable | None = None, data: WorldData | None = None):
        self.config = config
        self.split = split
        self.data = data if data is not None else load_world(config, split, root)
        self.transform = transform
        self._mean = torch.tensor(WORLD_MEAN).view(3, 1, 1)
        self._std = torch.tensor(WORLD_STD).view(3, 1, 1)
        self.classes = list(config.class_names)
        self.targets = self.data.labels

    def __len__(self) -> int:
        return len(self.data)

    def normalize(self, img_uint8: torch.Tensor) -> torch.Tensor:
        return (img_uint8.float() / 255 - self._mean) / self._std

    def __getitem__(self, i: int):
        img = self.data.images[i]
        img = self.transform(img) if self.transform is not None else self.normalize(img)
        return img, int(self.data.labels[i])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images (normalised float) and labels at once, for fast evaluation."""
        return self.normalize(self.data.images), self.data.labels


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of the default normalisation, to [0, 1] for plotting."""
    mean = torch.tensor(WORLD_MEAN, device=x.device).view(-1, 1, 1)
    std = torch.tensor(WORLD_STD, device=x.device).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1)

