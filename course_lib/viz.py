"""Drawing: attention overlays, image grids, heat maps, a check of what a figure shows, Korean
titles, and ipywidgets with a static fallback (the attention explorer).

The attention maps themselves (per layer and head, rollout, mass thresholds) are computed in
:mod:`course_lib.attention_maps` and re-exported here; its conventions hold (``attns``: one
``(B, heads, N, N)`` tensor per layer; ``num_prefix`` prefix tokens before the patches of a
``grid``). Only :func:`attention_explorer` calls back into the notebook, through
``get_attentions``.

Every figure function returns a :class:`matplotlib.figure.Figure`; widgets always also build one
static figure for their default values (``.static_figure``), and display it only where no front
end can show the widget (:func:`headless`: papermill/CI with ``COURSE_HEADLESS=1``, the Agg
backend, no kernel), so a headless run of a notebook still shows a picture and JupyterLab shows
the live widget alone.
"""
from __future__ import annotations

import copy
import math
import os
from typing import Any, Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = [
    "token_attention",
    "fuse_heads",
    "rollout_matrix",
    "attention_rollout",
    "mass_threshold",
    "upsample",
    "to_image",
    "denormalize",
    "overlay",
    "show_grid",
    "plot_attention_heads",
    "heatmap",
    "panel_problems",
    "headless",
    "KOREAN_FONTS",
    "has_hangul",
    "korean_font",
    "korean_text",
    "title_ko",
    "interact_with_fallback",
    "static_fallback",
    "attention_explorer",
]

from course_lib.attention_maps import (  # noqa: F401  (re-exported: viz.token_attention, ...)
    Grid,
    _grid,
    _layer,
    attention_rollout,
    fuse_heads,
    mass_threshold,
    rollout_matrix,
    token_attention,
    upsample,
)


# --------------------------------------------------------------------------------------------
# images and figures
# --------------------------------------------------------------------------------------------
def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo ``transforms.Normalize`` on a ``(C, H, W)`` or ``(B, C, H, W)`` tensor."""
    m = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    return image * s + m


def to_image(image) -> np.ndarray:
    """An image as a float numpy array in [0, 1], ``(H, W, 3)`` or ``(H, W)`` for grey.

    Accepts a torch ``(C, H, W)`` tensor or a numpy ``(H, W, C)`` array, each uint8 (0-255) or
    float in [0, 1], a channels-first numpy array, a ``(H, W)`` grey image or a PIL image.
    """
    if isinstance(image, torch.Tensor):
        # channels first, like torchvision; uint8 is scaled like numpy uint8 below
        image = image.detach().cpu()
        image = (image if image.dtype == torch.uint8 else image.float()).numpy()
        if image.ndim == 3:
            image = image.transpose(1, 2, 0)
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)
    a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim not in (2, 3):
        raise ValueError(f"cannot show an image of shape {a.shape}")
    return np.clip(a, 0.0, 1.0)


def _norm01(h: np.ndarray) -> np.ndarray:
    h = h.astype(np.float32)
    lo, hi = float(h.min()), float(h.max())
    return (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)


def overlay(
    ax,
    image,
    heat=None,
    alpha: float = 0.5,
    cmap: str = "inferno",
    *,
    mask=None,
    title: str | None = None,
    mode: str = "bilinear",
):
    """Draw ``image`` on ``ax`` with the map ``heat`` (any resolution; resized to the image and
    scaled to [0, 1]) on top with opacity ``alpha``. ``mask`` (bool, any resolution) adds its
    outline. Returns ``ax``."""
    img = to_image(image)
    h, w = img.shape[:2]
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    if heat is not None:
        hm = torch.as_tensor(np.asarray(heat) if not isinstance(heat, torch.Tensor) else heat)
        hm = hm.detach().float().cpu()
        hm = hm.reshape(hm.shape[-2:]) if hm.ndim > 2 else hm
        hm = upsample(hm, (h, w), mode=mode).numpy()
        ax.imshow(_norm01(hm), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    if mask is not None:
        mk = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        mk = mk.reshape(mk.shape[-2:]).bool()
        mk = upsample(mk, (h, w)).numpy().astype(float)
        if 0 < mk.sum() < mk.size:
            ax.contour(mk, levels=[0.5], colors="cyan", linewidths=1.0)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return ax


def _as_list(images) -> list:
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return list(images)


def _axes_grid(n: int, ncols: int, size: float) -> tuple[Figure, np.ndarray]:
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    return fig, axes


def show_grid(
    images,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    *,
    labels: Sequence[int] | None = None,
    preds: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    size: float = 1.8,
    suptitle: str | None = None,
) -> Figure:
    """A grid of images. Titles are ``titles``, else the class of ``labels``; with ``preds``
    each title reads ``pred / true`` in green when right and red when wrong."""
    imgs = _as_list(images)
    if not imgs:
        raise ValueError("show_grid needs at least one image")

    def name(k) -> str:
        k = int(k)
        return class_names[k] if class_names is not None else str(k)

    fig, axes = _axes_grid(len(imgs), ncols, size)
    for i, (ax, img) in enumerate(zip(axes.flat, imgs)):
        a = to_image(img)
        ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_axis_off()
        color = "black"
        if titles is not None:
            t = titles[i]
        elif preds is not None and labels is not None:
            t = f"{name(preds[i])} / {name(labels[i])}"
            color = "green" if int(preds[i]) == int(labels[i]) else "red"
        elif labels is not None:
            t = name(labels[i])
        elif preds is not None:
            t = name(preds[i])
        else:
            t = None
        if t:
            ax.set_title(t, fontsize=8, color=color)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_attention_heads(
    image,
    maps,
    *,
    threshold: float | None = None,
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    alpha: float = 0.6,
    cmap: str = "inferno",
    size: float = 2.2,
    suptitle: str | None = None,
) -> Figure:
    """The image followed by one panel per map (``(heads, gh, gw)`` or ``(gh, gw)``), each
    overlaid on the image. With ``threshold`` (a mass fraction, e.g. 0.6) each map keeps only
    the patches of :func:`mass_threshold`, outlined, as in DINO's figures."""
    m = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps)
    m = m.detach().float().cpu()
    m = m.unsqueeze(0) if m.ndim == 2 else m
    n = m.shape[0] + 1
    fig, axes = _axes_grid(n, ncols or min(n, 7), size)
    flat = list(axes.flat)
    overlay(flat[0], image, title="image")
    for i in range(m.shape[0]):
        t = titles[i] if titles is not None else (f"head {i}" if m.shape[0] > 1 else "attention")
        if threshold:
            mask = mass_threshold(m[i], threshold)
            overlay(flat[i + 1], image, m[i] * mask, alpha, cmap, mask=mask,
                    title=f"{t} ({threshold:.0%} mass)")
        else:
            overlay(flat[i + 1], image, m[i], alpha, cmap, title=t)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def heatmap(matrix, *, ax=None, annot: bool = True, fmt: str = ".2f", cmap: str = "viridis",
            title: str | None = None, xlabel: str = "", ylabel: str = "", **kw) -> Figure:
    """A matrix (pandas DataFrame keeps its labels; e.g. a confusion or disagreement matrix)
    drawn with seaborn. Returns the figure."""
    import seaborn as sns

    if ax is None:
        k = np.asarray(matrix).shape
        fig, ax = plt.subplots(figsize=(max(3.0, 0.6 * k[1] + 1.5), max(2.5, 0.5 * k[0] + 1.0)))
    else:
        fig = ax.figure
    sns.heatmap(matrix, ax=ax, annot=annot, fmt=fmt, cmap=cmap, square=False, **kw)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# a static check of what a figure shows
# --------------------------------------------------------------------------------------------
def _image_problem(im) -> str | None:
    """What is wrong with one ``AxesImage`` as a person would see it, or ``None``."""
    a = im.get_array()
    if a is None or np.size(a) == 0:
        return "no image data"
    data = np.ma.getdata(a).astype(np.float64)
    hidden = np.ma.getmaskarray(a) | ~np.isfinite(data)
    if data.ndim == 3:  # RGB(A): matplotlib clips floats to [0, 1] and integers to [0, 255]
        rgb, hidden = data[..., :3], hidden[..., :3]
        if np.issubdtype(np.asarray(np.ma.getdata(a)).dtype, np.integer):
            rgb = rgb / 255.0
        shown = rgb[~hidden]
        if shown.size == 0:
            return "all pixels are NaN or masked"
        outside = float(((shown < -1e-3) | (shown > 1 + 1e-3)).mean())
        if outside > 0.01:
            return (f"{outside:.0%} of the RGB values lie outside [0, 1] (range {shown.min():.3g}"
                    f"..{shown.max():.3g}): matplotlib clips them, e.g. to white")
        if data.shape[-1] == 4 and float(np.nanmax(data[..., 3])) <= 0:
            return "fully transparent"
        pixels = np.clip(rgb, 0, 1).reshape(-1, 3)
        white = float((pixels.min(axis=1) >= 0.999).mean())
        if white > 0.95:
            return f"{white:.0%} of the pixels are pure white (an image scaled as 0-255 and clipped?)"
        shown = np.clip(shown, 0, 1)
    else:
        values = np.ma.masked_array(data, hidden)
        if values.count() == 0:
            return "all pixels are NaN or masked"
        norm = copy.copy(im.norm)
        if not norm.scaled():
            norm.autoscale_None(values)
        shown = np.ma.compressed(np.clip(np.ma.asarray(norm(values)), 0, 1))
    if shown.size and float(shown.max() - shown.min()) < 1e-6:
        return f"a blank panel: every pixel shows the same value ({float(shown.flat[0]):.3g} of the colour range)"
    return None


def panel_problems(fig: Figure) -> list[str]:
    """The image panels (``imshow``) of ``fig`` that a person would see as blank: constant, all
    NaN, fully transparent, or clipped (e.g. float RGB in 0-255 shown as white). Returns one line
    per bad panel, naming its axes (and title); ``[]`` when every panel shows something. The
    notebook tests run this on every figure a notebook draws."""
    problems = []
    for i, ax in enumerate(fig.axes):
        for im in ax.get_images():
            problem = _image_problem(im)
            if problem:
                title = ax.get_title() or (fig._suptitle.get_text() if fig._suptitle else "")
                where = f"axes {i}" + (f" ({title!r})" if title else "")
                problems.append(f"{where}: {problem}")
    return problems


# --------------------------------------------------------------------------------------------
# Korean text in figures
# --------------------------------------------------------------------------------------------
# fonts with Hangul, most wanted first (Korean designs, then pan-CJK ones)
KOREAN_FONTS = (
    "Noto Sans CJK KR", "Noto Sans KR", "Noto Serif CJK KR", "NanumGothic", "Nanum Gothic",
    "NanumBarunGothic", "Malgun Gothic", "Apple SD Gothic Neo", "AppleGothic", "Source Han Sans KR",
    "Source Han Sans K", "UnDotum", "Baekmuk Gulim", "Noto Sans CJK JP", "Noto Sans CJK SC",
    "Noto Sans CJK TC", "Source Han Sans", "WenQuanYi Zen Hei", "Droid Sans Fallback",
)


def has_hangul(text: str) -> bool:
    """Whether ``text`` holds a Hangul syllable or jamo."""
    return any("\uac00" <= ch <= "\ud7af" or "\u1100" <= ch <= "\u11ff" or "\u3130" <= ch <= "\u318f"
               for ch in str(text))


_korean_font_cache: dict[str, str | None] = {}


def korean_font() -> str | None:
    """The family name of an installed font that has Hangul (``KOREAN_FONTS`` first, then any font
    whose character map covers "한"), or ``None``. Looked up once per session."""
    if "name" in _korean_font_cache:
        return _korean_font_cache["name"]
    from matplotlib import font_manager

    fonts = font_manager.fontManager.ttflist
    installed = {f.name: f.fname for f in fonts}

    def covers(path: str) -> bool:
        try:
            from matplotlib.ft2font import FT2Font

            return 0xD55C in FT2Font(path).get_charmap()
        except Exception:  # an unreadable font file
            return False

    found = next((n for n in KOREAN_FONTS if n in installed and covers(installed[n])), None)
    if found is None:  # any other font with Hangul; "Last Resort" maps every code point to a box
        found = next((f.name for f in fonts if not f.name.startswith(("STIX", "cm", "DejaVu", "Last Resort"))
                      and covers(f.fname)), None)
    _korean_font_cache["name"] = found
    return found


def korean_text(text: str, fallback: str) -> tuple[str, dict[str, Any]]:
    """``(text, font kwargs)`` to draw a Korean string: ``text`` with a Hangul font (and DejaVu
    Sans behind it for Latin letters and symbols) when one is installed, else the English
    ``fallback`` with no font change, so matplotlib never warns "Glyph ... missing from font".
    Use as ``s, kw = korean_text("학습 곡선", "learning curves"); ax.set_xlabel(s, **kw)``."""
    if not has_hangul(text):
        return text, {}
    font = korean_font()
    if font is None:
        return fallback, {}
    return text, {"fontfamily": [font, "DejaVu Sans"]}


def title_ko(target, text: str, fallback: str, **kw):
    """Set a Korean title on ``target``, an Axes (``set_title``) or a Figure (``suptitle``), when a
    Hangul font is installed, else the English ``fallback`` (see :func:`korean_text`). Returns
    the title's Text."""
    s, font = korean_text(text, fallback)
    kw = {**font, **kw}
    if isinstance(target, Figure):
        return target.suptitle(s, **kw)
    return target.set_title(s, **kw)


# --------------------------------------------------------------------------------------------
# widgets with a static fallback
# --------------------------------------------------------------------------------------------
def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return None
    return get_ipython()


_TRUE = ("1", "true", "yes", "on")
_NON_INTERACTIVE = ("agg", "cairo", "pdf", "pgf", "ps", "svg", "template")


def headless() -> bool:
    """True where no front end can show a live widget, so a static figure must stand in for it.

    That is: the environment variable ``COURSE_HEADLESS`` is set to a true value (``1``;
    ``make run``/``make record``, CI and the notebook tests set it, see ``tools/nbclean.py``
    ``smoke_env``), or matplotlib's backend is non-interactive and not inline (``Agg``, ``pdf``,
    ...; ``MPLBACKEND=Agg``), or there is no IPython kernel (a script, pytest, a terminal
    IPython). False in a JupyterLab/Notebook kernel with the inline (or another interactive)
    backend. Widgets (:func:`interact_with_fallback`) and ``train.fit``'s live loss plot ask it.
    """
    if os.environ.get("COURSE_HEADLESS", "").strip().lower() in _TRUE:
        return True
    backend = str(plt.get_backend()).lower()
    if "inline" not in backend and backend.removeprefix("module://") in _NON_INTERACTIVE:
        return True
    shell = _ipython()
    return shell is None or getattr(shell, "kernel", None) is None


def _no_continuous_update(widget) -> None:
    """Sliders and text boxes send their value on release / Enter / leaving the box, not on
    every pixel or keystroke (each value change redraws a figure, which may be expensive)."""
    if hasattr(widget, "has_trait") and widget.has_trait("continuous_update"):
        widget.continuous_update = False


def _headless_backend() -> bool:
    """A non-interactive backend outside a notebook (e.g. Agg in tests): figures that a widget
    draws would only pile up, so they are closed."""
    backend = plt.get_backend().lower()
    return "inline" not in backend and backend in ("agg", "pdf", "ps", "svg", "cairo", "template")


def _new_figures(before: set[int], result: Any) -> list[Figure]:
    figs = [plt.figure(k) for k in plt.get_fignums() if k not in before]
    if isinstance(result, Figure) and result not in figs:
        figs.append(result)
    return figs


def interact_with_fallback(fn: Callable[..., Any], /, *, display_widget: bool = True,
                           **controls: Any):
    """``ipywidgets.interactive(fn, **controls)`` plus one static figure for the defaults.

    ``fn`` draws a matplotlib figure (returning it or leaving it open). It is called once with
    the controls' default values; that figure is displayed as an ordinary output only when
    :func:`headless` (``COURSE_HEADLESS=1`` as in ``make run``/CI, the Agg backend, no kernel),
    so a headless run (papermill, nbval, a rendered notebook on GitHub) still shows a picture,
    while JupyterLab shows the live widget alone. Then the live widget is displayed. Sliders and
    text boxes get ``continuous_update=False``: ``fn`` runs when a slider is released or a text
    box gets Enter (or loses focus), not on every step or keystroke.
    Returns the widget; its ``static_figure`` attribute holds the static figure (``None`` if
    ``fn`` drew nothing; built in every case) and ``snapshot()`` calls ``fn`` with the current
    control values (to save the view someone chose).
    """
    import ipywidgets
    from IPython.display import display

    def live(**kw):
        before = set(plt.get_fignums())
        result = fn(**kw)
        if _headless_backend():
            for f in _new_figures(before, result):
                plt.close(f)
        # returning None: the inline backend shows the open figure once, inside the widget

    widget = ipywidgets.interactive(live, **controls)
    for c in widget.kwargs_widgets:  # also the ones interactive made from (min, max, step)
        _no_continuous_update(c)
    defaults = {
        c._kwarg: (c.get_interact_value() if hasattr(c, "get_interact_value") else c.value)
        for c in widget.kwargs_widgets
    }
    before = set(plt.get_fignums())
    figs = _new_figures(before, fn(**defaults))
    shell = _ipython()
    show_static = shell is not None and headless()  # a front end with widgets needs no copy
    for f in figs:
        if show_static:
            display(f)
        plt.close(f)  # shown once; the Figure object stays usable
    widget.static_figure = figs[0] if figs else None
    widget.static_figures = figs

    def snapshot():
        """``fn`` called with the controls' current values (e.g. to save that view)."""
        return fn(**{c._kwarg: (c.get_interact_value() if hasattr(c, "get_interact_value")
                                else c.value) for c in widget.kwargs_widgets})

    widget.snapshot = snapshot
    if display_widget and shell is not None:
        display(widget)
    return widget


static_fallback = interact_with_fallback


def attention_explorer(
    images,
    get_attentions: Callable[[int], tuple[Sequence[torch.Tensor], int, Grid | None]],
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    thresholds: Sequence[float] = (0.0, 0.6, 0.9),
    titles: Sequence[str] | None = None,
    tokens: Mapping[str, int] | None = None,
    alpha: float = 0.5,
    cmap: str = "inferno",
    display_widget: bool = True,
):
    """Browse attention maps: image / layer (or rollout) / head (one, mean, all) / mass
    threshold / opacity (and prefix token when ``tokens`` names several, e.g.
    ``{"class": 0, "distillation": 1}``).

    ``get_attentions(i)`` returns ``(attns, num_prefix, grid)`` for image ``i`` alone (per layer
    ``(1, heads, N, N)`` or ``(heads, N, N)``; ``grid`` may be ``None`` for a square grid), e.g.
    one forward pass of the model on that image; results are cached per image.
    ``layers``/``heads`` default to all of them. A threshold of 0 shows the raw map. One static
    figure is drawn for the default values (last layer, mean of heads, first threshold); the
    widget is displayed and returned (``.static_figure`` holds that figure).
    """
    import ipywidgets as W

    imgs = _as_list(images)
    if not imgs:
        raise ValueError("attention_explorer needs at least one image")
    cache: dict[int, tuple[list[torch.Tensor], int, Grid]] = {}

    def attentions(i: int) -> tuple[list[torch.Tensor], int, Grid]:
        if i not in cache:
            attns, num_prefix, grid = get_attentions(i)
            attns = [_layer(a, 0) for a in attns]
            cache[i] = (attns, int(num_prefix), _grid(attns[0].shape[-1], num_prefix, grid))
        return cache[i]

    attns0, _, _ = attentions(0)
    n_layers, n_heads = len(attns0), attns0[0].shape[0]
    layers = list(range(n_layers)) if layers is None else [int(x) % n_layers for x in layers]
    heads = list(range(n_heads)) if heads is None else [int(h) for h in heads]
    thresholds = list(thresholds) or [0.0]

    def draw(image: int, layer: Any, head: Any, threshold: float, opacity: float, token: int):
        attns, num_prefix, grid = attentions(image)
        img = imgs[image]
        if layer == "rollout":
            maps = attention_rollout(attns, num_prefix, grid, token=token)[None]
            where = "rollout"
        else:
            h = None if head == "all" else head
            maps = token_attention(attns, layer, token, num_prefix, grid, head=h)
            where = f"layer {layer}"
        label = {"mean": "mean of heads", "all": "all heads"}.get(head, f"head {head}")
        if layer != "rollout" and head == "all":
            return plot_attention_heads(img, maps, threshold=threshold or None, alpha=opacity,
                                        cmap=cmap, suptitle=where)
        heat = maps[0]
        desc = where if layer == "rollout" else f"{where}, {label}"
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(6.4, 3.4))
        overlay(ax0, img, title=titles[image] if titles else f"image {image}")
        if threshold:
            mask = mass_threshold(heat, threshold)
            overlay(ax1, img, heat * mask, opacity, cmap, mask=mask,
                    title=f"{desc} ({threshold:.0%} mass)")
        else:
            overlay(ax1, img, heat, opacity, cmap, title=desc)
        fig.tight_layout()
        return fig

    image_opts = [(titles[i] if titles else f"image {i}", i) for i in range(len(imgs))]
    layer_opts = [(f"layer {x}", x) for x in layers] + [("rollout", "rollout")]
    head_opts = [("mean of heads", "mean"), ("all heads", "all")]
    head_opts += [(f"head {h}", h) for h in heads]
    thr_opts = [("off" if not t else f"{t:.0%} of mass", float(t or 0.0)) for t in thresholds]
    controls: dict[str, Any] = {
        "image": W.Dropdown(options=image_opts, value=0, description="image"),
        "layer": W.Dropdown(options=layer_opts, value=layers[-1], description="layer"),
        "head": W.Dropdown(options=head_opts, value="mean", description="head"),
        "threshold": W.Dropdown(options=thr_opts, value=thr_opts[0][1], description="threshold"),
        "opacity": W.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05,
                                 description="opacity", continuous_update=False),
    }
    if tokens and len(tokens) > 1:
        controls["token"] = W.Dropdown(options=list(tokens.items()),
                                       value=next(iter(tokens.values())), description="token")
    else:
        controls["token"] = W.fixed(next(iter(tokens.values())) if tokens else 0)
    return interact_with_fallback(draw, display_widget=display_widget, **controls)
