"""Text views of the ladder for notebook 04's step explorer widget: a diagram of any step
(:func:`describe`, :func:`block_lines`) and what changes between two steps (:func:`compare`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .ladder import LADDER, SECTIONS, complexity, ladder_config, step_index
from .method import LadderConfig


# ----------------------------------------------------------------------------------------------
# Text views for the notebook (the step explorer widget)


def _layer_names(cfg: LadderConfig) -> tuple[str, str]:
    return {"batch": "BN", "layer": "LN"}[cfg.norm], {"relu": "ReLU", "gelu": "GELU"}[cfg.act]


def _conv_text(k: int, cin: int, cout: int, depthwise: bool, stride: int = 1) -> str:
    s = f" s{stride}" if stride > 1 else ""
    if k == 1:
        return f"conv 1x1{s}, {cin}→{cout}"
    if depthwise:
        return f"dwconv {k}x{k}{s}, {cin}"
    return f"conv {k}x{k}{s}, {cin}→{cout}"


def block_lines(cfg: LadderConfig, stage: int = 0) -> list[str]:
    """The layers of a (non-first) block of ``stage``, one line per conv with what follows it."""
    norm, act = _layer_names(cfg)
    r, h, k = cfg.stream_widths[stage], cfg.hidden_widths[stage], cfg.kernel_size
    if cfg.spatial_first:
        convs = [_conv_text(k, r, r, cfg.depthwise), _conv_text(1, r, h, False), _conv_text(1, h, r, False)]
    else:
        convs = [_conv_text(1, r, h, False), _conv_text(k, h, h, cfg.depthwise), _conv_text(1, h, r, False)]
    has_norm = [True] * 3 if cfg.norms_per_block == 3 else [True, False, False]
    has_act = [True, True] if cfg.acts_per_block == 3 else [False, True]
    lines = []
    for i, text in enumerate(convs):
        parts = [text] + ([norm] if has_norm[i] else []) + ([act] if i < 2 and has_act[i] else [])
        lines.append(" ─ ".join(parts))
    if cfg.layer_scale is not None:
        lines.append(f"layer scale γ (init {cfg.layer_scale:g})")
    lines.append("+ x" + (f" ─ {act}" if cfg.acts_per_block == 3 else ""))
    return lines


def describe(step: int | str | LadderConfig, scale: str = "imagenet", layer_scale: float | None = None) -> str:
    """A short text diagram of a step: stem, stages, one block, downsampling and head.

    ``layer_scale`` shows another initial layer scale than the paper's 1e-6 (as a notebook
    trains it, ``P.layer_scale``) for a step that has one."""
    if isinstance(step, LadderConfig):
        cfg, header = step, "custom configuration"
    else:
        i = step_index(step)
        s = LADDER[i]
        cfg = ladder_config(i, scale)
        gf = f", {s.paper_gflops:g} GFLOPs" if s.paper_gflops is not None else ""
        header = (f"step {i} '{s.key}': {s.title}  [{SECTIONS[s.key]}; paper: {s.paper_top1:g}% "
                  f"top-1{gf}]")
    if layer_scale is not None and cfg.layer_scale is not None:
        cfg = cfg.replace(layer_scale=float(layer_scale))
    norm, act = _layer_names(cfg)
    c0, st = cfg.widths[0], cfg.stem_stride
    if cfg.stem == "resnet":
        stem = f"conv 7x7 s{st // 2}, 3→{c0} ─ {norm} ─ {act} ─ maxpool 3x3 s2   (/{st})"
    else:
        stem = f"patchify conv {st}x{st} s{st}, 3→{c0} ─ {norm}   (/{st})"
    if cfg.downsampling == "in_block":
        where = "first" if cfg.spatial_first else "middle"
        down = (f"stride 2 in the spatial conv ({where}) of the first block of stages 2-{len(cfg.depths)}; "
                f"shortcut conv 1x1 s2 ─ {norm}")
    else:
        down = f"between stages: {norm} ─ conv 2x2 s2"
    head = "global average pool" + (f" ─ {norm}" if cfg.head_norm else "") + f" ─ fc {cfg.stream_widths[-1]}→classes"
    lines = [header,
             f"stem   : {stem}",
             f"stages : depths {cfg.depths}, residual widths {cfg.stream_widths}",
             f"block  : x ({cfg.stream_widths[0]} ch, stage 1)"]
    body = block_lines(cfg, 0)
    lines += [f"         ├─ {t}" for t in body[:-1]] + [f"         └─ {body[-1]}"]
    lines += [f"down   : {down}", f"head   : {head}"]
    return "\n".join(lines)


@dataclass
class Comparison:
    """What :func:`compare` found between two steps."""

    a: str
    b: str
    changes: dict[str, tuple[Any, Any]]
    params: tuple[int, int]
    gmacs: tuple[float, float]
    image_size: int
    paper_top1: tuple[float | None, float | None] = (None, None)
    paper_gflops: tuple[float | None, float | None] = (None, None)

    @property
    def params_diff(self) -> int:
        return self.params[1] - self.params[0]

    @property
    def gmacs_diff(self) -> float:
        return self.gmacs[1] - self.gmacs[0]

    def __str__(self) -> str:
        lines = [f"{self.a} → {self.b}"]
        lines += [f"  {k}: {v[0]} → {v[1]}" for k, v in self.changes.items()] or ["  (same configuration)"]
        p, g = self.params, self.gmacs
        lines.append(f"  params {p[0] / 1e6:.2f}M → {p[1] / 1e6:.2f}M ({self.params_diff / 1e6:+.2f}M), "
                     f"GMACs {g[0]:.3g} → {g[1]:.3g} ({self.gmacs_diff:+.3g}) at {self.image_size} px")
        t, f = self.paper_top1, self.paper_gflops
        if None not in t:
            paper = f"  paper: top-1 {t[0]:g} → {t[1]:g} ({t[1] - t[0]:+.1f})"
            if None not in f:
                paper += f", GFLOPs {f[0]:g} → {f[1]:g}"
            lines.append(paper)
        return "\n".join(lines)


def compare(step_a: int | str, step_b: int | str, image_size: int = 224, scale: str = "imagenet",
            num_classes: int = 1000) -> Comparison:
    """What changed from ``step_a`` to ``step_b``: configuration fields, parameters and GMACs."""
    ia, ib = step_index(step_a), step_index(step_b)
    ca, cb = ladder_config(ia, scale), ladder_config(ib, scale)
    changes = {f.name: (getattr(ca, f.name), getattr(cb, f.name)) for f in dataclasses.fields(LadderConfig)
               if getattr(ca, f.name) != getattr(cb, f.name)}
    pa, ga = complexity(ca, image_size, num_classes)
    pb, gb = complexity(cb, image_size, num_classes)
    sa, sb = LADDER[ia], LADDER[ib]
    return Comparison(sa.key, sb.key, changes, (pa, pb), (ga, gb), image_size,
                      (sa.paper_top1, sb.paper_top1), (sa.paper_gflops, sb.paper_gflops))

