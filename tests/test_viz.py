"""Attention maps, rollout, mass threshold, figures and the explorer widget (headless)."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from course_lib import viz  # noqa: E402

L, B, H, GH, GW = 3, 2, 2, 3, 4
N1 = 1 + GH * GW


def random_attns(num_prefix: int = 1, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = num_prefix + GH * GW
    return [torch.randn(B, H, n, n, generator=g).softmax(-1) for _ in range(L)]


def renders(fig: Figure) -> bool:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.tell() > 1000


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------------------ maps
def test_token_attention_shapes_and_values():
    attns = random_attns()
    every = viz.token_attention(attns, layer=1, grid=(GH, GW))
    assert every.shape == (H, GH, GW)
    torch.testing.assert_close(every[1].flatten(), attns[1][0, 1, 0, 1:])
    one = viz.token_attention(attns, layer=-1, grid=(GH, GW), head=1, index=1)
    torch.testing.assert_close(one[0].flatten(), attns[2][1, 1, 0, 1:])
    mean = viz.token_attention(attns, layer=1, grid=(GH, GW), head="mean")
    assert mean.shape == (1, GH, GW)
    torch.testing.assert_close(mean[0], every.mean(0))
    # a single image without the batch dimension
    assert viz.token_attention([a[0] for a in attns], 0, grid=(GH, GW)).shape == (H, GH, GW)


def test_token_attention_distillation_token_and_grid_errors():
    attns = random_attns(num_prefix=2)
    dist = viz.token_attention(attns, 0, token=1, num_prefix=2, grid=(GH, GW), head=0)
    torch.testing.assert_close(dist[0].flatten(), attns[0][0, 0, 1, 2:])
    with pytest.raises(ValueError, match="grid"):
        viz.token_attention(attns, 0, num_prefix=2, grid=(4, 4))
    with pytest.raises(ValueError, match="square"):
        viz.token_attention(attns, 0, num_prefix=2)  # 12 patches: not square
    with pytest.raises(ValueError, match="prefix"):
        viz.token_attention(attns, 0, token=2, num_prefix=2, grid=(GH, GW))
    square = [torch.rand(1, 2, 17, 17).softmax(-1)]
    assert viz.token_attention(square, 0).shape == (2, 4, 4)  # 16 patches: 4x4 inferred


def test_rollout_of_identity_attention_is_identity():
    eye = [torch.eye(N1).expand(1, H, N1, N1) for _ in range(L)]
    torch.testing.assert_close(viz.rollout_matrix(eye), torch.eye(N1))
    assert viz.attention_rollout(eye, 1, (GH, GW)).abs().max() == 0  # no flow to the patches


def test_rollout_of_uniform_attention_is_uniform_over_patches():
    uni = [torch.full((1, H, N1, N1), 1.0 / N1) for _ in range(L)]
    m = viz.attention_rollout(uni, 1, (GH, GW))
    assert m.shape == (GH, GW)
    torch.testing.assert_close(m, torch.full_like(m, m[0, 0].item()))
    assert 0 < m.sum() < 1  # the rest stays on the class token


def test_rollout_matches_the_definition():
    attns = random_attns()
    eye = torch.eye(N1)
    a = [x[1].mean(0) for x in attns]
    expected = eye
    for x in a:
        expected = (0.5 * x + 0.5 * eye) @ expected  # rows of x sum to 1
    r = viz.rollout_matrix(attns, index=1)
    torch.testing.assert_close(r, expected)
    torch.testing.assert_close(r.sum(-1), torch.ones(N1))
    m = viz.attention_rollout(attns, 1, (GH, GW), index=1)
    torch.testing.assert_close(m.flatten(), expected[0, 1:])
    mx = viz.rollout_matrix(attns, head_fusion="max")
    torch.testing.assert_close(mx.sum(-1), torch.ones(N1))


def test_rollout_discard_ratio():
    attns = random_attns()
    r = viz.rollout_matrix(attns, discard_ratio=0.5)
    torch.testing.assert_close(r.sum(-1), torch.ones(N1))
    one = viz.rollout_matrix(attns[:1], discard_ratio=0.5)
    # half of the patch-column weights are gone (0 + identity), prefix column untouched
    off_diag_patch = one[:, 1:][~torch.eye(N1, dtype=torch.bool)[:, 1:]]
    assert (off_diag_patch == 0).float().mean() > 0.4
    assert (one[:, 0] > 0).all()
    with pytest.raises(ValueError):
        viz.rollout_matrix(attns, discard_ratio=1.0)


# ------------------------------------------------------------------------------ threshold, resize
def test_mass_threshold_known_case():
    m = torch.tensor([[0.1, 0.5], [0.3, 0.1]])
    assert viz.mass_threshold(m, 0.6).tolist() == [[False, True], [True, False]]
    assert viz.mass_threshold(m, 0.5).tolist() == [[False, True], [False, False]]
    assert viz.mass_threshold(m, 1.0).all()
    assert not viz.mass_threshold(m, 0.0).any()
    assert not viz.mass_threshold(torch.zeros(2, 2), 0.6).any()
    out = viz.mass_threshold(m.numpy(), 0.6)
    assert isinstance(out, np.ndarray) and out.dtype == bool


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_mass_threshold_keeps_the_fraction_with_fewest_patches(fraction):
    maps = torch.rand(5, GH, GW) ** 3
    masks = viz.mass_threshold(maps, fraction)
    assert masks.shape == maps.shape and masks.dtype == torch.bool
    for m, k in zip(maps, masks):
        kept = m[k]
        assert kept.sum() >= fraction * m.sum() - 1e-6
        # minimal: one patch fewer (drop the smallest kept one) is not enough
        assert kept.sum() - kept.min() < fraction * m.sum()
        # and the kept patches are the largest ones
        assert kept.min() >= m[~k].max() if (~k).any() else True


def test_upsample():
    m = torch.rand(GH, GW)
    assert viz.upsample(m, (30, 40)).shape == (30, 40)
    assert viz.upsample(torch.rand(H, GH, GW), 16).shape == (H, 16, 16)
    up = viz.upsample(m > 0.5, (GH * 2, GW * 2))
    assert up.dtype == torch.bool and torch.equal(up[::2, ::2], m > 0.5)
    assert isinstance(viz.upsample(m.numpy(), 8), np.ndarray)


def test_to_image_scales_uint8_of_torch_and_numpy_alike():
    """torch uint8 images (world renders, photos) were shown unscaled: all white (06_dino)."""
    hwc = np.random.default_rng(0).integers(0, 256, size=(8, 10, 3), dtype=np.uint8)
    chw = torch.from_numpy(hwc).permute(2, 0, 1).contiguous()
    expected = hwc.astype(np.float32) / 255.0
    np.testing.assert_allclose(viz.to_image(chw), expected)
    np.testing.assert_allclose(viz.to_image(hwc), expected)
    assert viz.to_image(chw).std() > 0.1  # not clipped to a constant white
    assert viz.to_image(torch.rand(3, 4, 4, dtype=torch.bfloat16)).dtype == np.float32


def test_to_image_formats():
    chw = torch.rand(3, 8, 10)
    np.testing.assert_allclose(viz.to_image(chw), chw.permute(1, 2, 0).numpy())
    hwc = (np.random.rand(8, 10, 3) * 255).astype(np.uint8)
    assert viz.to_image(hwc).shape == (8, 10, 3) and viz.to_image(hwc).max() <= 1
    assert viz.to_image(torch.rand(1, 8, 10)).shape == (8, 10)
    x = torch.rand(3, 4, 4)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)
    norm = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(viz.denormalize(norm, mean, std), x)


# ------------------------------------------------------------------------------ figures
def test_figures_render():
    imgs = torch.rand(5, 3, 24, 32)
    fig, ax = plt.subplots()
    assert viz.overlay(ax, imgs[0], torch.rand(GH, GW), mask=torch.rand(GH, GW) > 0.5) is ax
    assert len(ax.images) == 2 and renders(fig)

    fig = viz.show_grid(imgs, ncols=3, labels=[0, 1, 2, 0, 1], preds=[0, 2, 2, 0, 0],
                        class_names=["cat", "dog", "cow"])
    titled = [a for a in fig.axes if a.get_title()]
    assert len(titled) == 5 and titled[1].get_title() == "cow / dog"
    assert titled[1].title.get_color() == "red" and renders(fig)
    hwc = [(np.random.rand(16, 16, 3) * 255).astype(np.uint8) for _ in range(2)]
    assert renders(viz.show_grid(hwc, titles=["a", "b"]))

    maps = viz.token_attention(random_attns(), -1, grid=(GH, GW))
    fig = viz.plot_attention_heads(imgs[0], maps, threshold=0.6)
    assert sum(1 for a in fig.axes if a.images) == H + 1 and renders(fig)
    assert renders(viz.plot_attention_heads(imgs[0], maps[0]))

    df = pd.DataFrame([[0, 0.2], [0.2, 0]], index=["a", "b"], columns=["a", "b"])
    assert renders(viz.heatmap(df, title="disagreement"))


def test_interact_with_fallback_draws_a_static_figure():
    import ipywidgets

    calls = []

    def draw(x, label):
        calls.append((x, label))
        fig, ax = plt.subplots()
        ax.plot([0, x])
        ax.set_title(label)
        return fig

    before = plt.get_fignums()
    w = viz.interact_with_fallback(draw, x=(1, 9, 2), label=["first", "second"])
    assert isinstance(w, ipywidgets.interactive)
    assert isinstance(w.static_figure, Figure) and w.static_figure.axes[0].get_title() == "first"
    assert calls[-1] == (5, "first")  # the slider's default: the middle of (1, 9)
    assert plt.get_fignums() == before  # nothing left open headless
    w.children[0].value = 3  # moving a control calls draw again
    assert calls[-1] == (3, "first")
    assert w.snapshot().axes[0].get_title() == "first"


class _Kernel:
    """What ``get_ipython()`` returns inside a Jupyter kernel (only ``.kernel`` matters)."""

    kernel = object()


def test_headless(monkeypatch):
    monkeypatch.delenv("COURSE_HEADLESS", raising=False)
    assert viz.headless()  # Agg and no kernel (pytest)
    monkeypatch.setattr(viz, "_ipython", lambda: _Kernel())
    assert viz.headless()  # a kernel, but the Agg backend
    monkeypatch.setattr(viz.plt, "get_backend", lambda: "module://matplotlib_inline.backend_inline")
    assert not viz.headless()  # JupyterLab: kernel + inline backend
    monkeypatch.setenv("COURSE_HEADLESS", "0")
    assert not viz.headless()
    monkeypatch.setenv("COURSE_HEADLESS", "1")  # make run / CI / the notebook tests
    assert viz.headless()
    monkeypatch.delenv("COURSE_HEADLESS")
    monkeypatch.setattr(viz, "_ipython", lambda: None)
    assert viz.headless()  # a script or a terminal without a kernel


@pytest.mark.parametrize("headless", [False, True])
def test_static_figure_is_displayed_only_headless(monkeypatch, headless):
    import IPython.display
    import ipywidgets

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj))
    monkeypatch.setattr(viz, "_ipython", lambda: _Kernel())
    monkeypatch.setattr(viz, "headless", lambda: headless)

    def draw(x):
        fig, ax = plt.subplots()
        ax.set_title(f"x={x}")
        return fig

    w = viz.interact_with_fallback(draw, x=(0, 4, 1))
    assert isinstance(w.static_figure, Figure)  # built in any case (tests, headless renders)
    figures = [o for o in shown if isinstance(o, Figure)]
    assert figures == ([w.static_figure] if headless else [])  # JupyterLab: the widget alone
    assert [o for o in shown if isinstance(o, ipywidgets.interactive)] == [w]


def test_widgets_update_on_release_not_continuously():
    import ipywidgets as W

    w = viz.interact_with_fallback(
        lambda x, y, span, text, choice: plt.figure(),
        x=(1, 9, 2), y=W.FloatSlider(value=0.5, min=0, max=1),
        span=W.FloatRangeSlider(value=(0.2, 0.4), min=0, max=1),
        text=W.Text(value="", placeholder="caption"),  # ALBEF's caption box: runs on Enter
        choice=W.Dropdown(options=["a", "b"]))
    updating = {c._kwarg: c.continuous_update for c in w.kwargs_widgets
                if c.has_trait("continuous_update")}
    assert set(updating) == {"x", "y", "span", "text"}
    assert not any(updating.values()), updating

    attns = random_attns()
    e = viz.attention_explorer(torch.rand(1, 3, GH * 8, GW * 8), lambda i: (attns, 1, (GH, GW)))
    sliders = [c for c in e.kwargs_widgets if c.has_trait("continuous_update")]
    assert sliders and not any(c.continuous_update for c in sliders)


def test_attention_explorer_headless():
    import ipywidgets

    imgs = torch.rand(2, 3, GH * 8, GW * 8)
    all_attns = {0: random_attns(seed=0), 1: random_attns(seed=1)}
    asked = []

    def get_attentions(i):
        asked.append(i)
        return [a[:1] for a in all_attns[i]], 1, (GH, GW)

    w = viz.attention_explorer(imgs, get_attentions, thresholds=(0.0, 0.6), titles=["a", "b"])
    assert isinstance(w, ipywidgets.interactive)
    assert isinstance(w.static_figure, Figure) and len(w.static_figure.axes) == 2
    assert w.static_figure.axes[1].get_title() == f"layer {L - 1}, mean of heads"
    assert renders(w.static_figure)
    controls = {c.description: c for c in w.children if hasattr(c, "description")}
    assert {"image", "layer", "head", "threshold", "opacity"} <= set(controls)

    controls["image"].value = 1
    controls["threshold"].value = 0.6
    fig = w.snapshot()
    assert fig.axes[0].get_title() == "b" and "60% mass" in fig.axes[1].get_title()
    controls["head"].value = "all"
    assert sum(1 for a in w.snapshot().axes if a.images) == H + 1
    controls["layer"].value = "rollout"
    assert w.snapshot().axes[1].get_title().startswith("rollout")
    controls["head"].value = 0
    controls["layer"].value = 0
    assert w.snapshot().axes[1].get_title().startswith("layer 0, head 0")
    assert sorted(set(asked)) == [0, 1] and len(asked) == 2  # cached per image


def test_attention_explorer_distillation_token():
    attns = random_attns(num_prefix=2)
    w = viz.attention_explorer(torch.rand(1, 3, 24, 32), lambda i: (attns, 2, (GH, GW)),
                               tokens={"class": 0, "distillation": 1}, layers=[0, -1], heads=[1])
    controls = {c.description: c for c in w.children if hasattr(c, "description")}
    assert [v for _, v in controls["layer"].options] == [0, L - 1, "rollout"]
    controls["token"].value = 1
    assert isinstance(w.snapshot(), Figure)


def test_panel_problems_finds_blank_nan_and_clipped_panels():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    fig, axes = plt.subplots(1, 6)
    axes[0].imshow(photo)                                   # fine: uint8 RGB
    axes[1].imshow(photo.astype(np.float32), vmin=0, vmax=1)  # 0-255 floats: clipped to white
    axes[1].set_title("clipped")
    axes[2].imshow(np.full((8, 8), np.nan))                 # all NaN
    axes[3].imshow(np.ones((8, 8)))                         # constant
    axes[4].imshow(rng.random((8, 8)), cmap="inferno")      # fine: a heat map
    axes[5].imshow(rng.random((8, 8)) + 5, vmin=0, vmax=1)  # every value above vmax
    problems = viz.panel_problems(fig)
    plt.close(fig)
    assert [p.split(":")[0] for p in problems] == [
        "axes 1 ('clipped')", "axes 2", "axes 3", "axes 5"]
    assert "white" in problems[0] and "NaN" in problems[1]


def test_panel_problems_would_have_caught_white_torch_images():
    """06_dino drew torch uint8 images through to_image before it scaled them: all white."""
    import matplotlib.pyplot as plt

    img = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    fig = viz.show_grid([img, img], titles=["a", "b"])
    assert viz.panel_problems(fig) == []
    white = np.clip(img.permute(1, 2, 0).float().numpy(), 0, 1)  # what the old code drew
    fig.axes[0].images[0].set_data(white)
    assert len(viz.panel_problems(fig)) == 1
    plt.close(fig)


def _glyph_warnings(fig: Figure) -> list[str]:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()
    return [str(w.message) for w in caught if "Glyph" in str(w.message)]


def test_korean_title_without_a_cjk_font_falls_back_silently(monkeypatch):
    assert viz.has_hangul("학습 곡선") and viz.has_hangul("DINO 어텐션") and not viz.has_hangul("DINO attention")
    monkeypatch.setattr(viz, "korean_font", lambda: None)
    fig, ax = plt.subplots()
    viz.title_ko(ax, "학습 곡선", "learning curves", fontsize=9)
    viz.title_ko(fig, "DINO 어텐션", "DINO attention")
    s, kw = viz.korean_text("손실", "loss")
    ax.set_xlabel(s, **kw)
    assert ax.get_title() == "learning curves" and fig._suptitle.get_text() == "DINO attention"
    assert ax.title.get_fontsize() == 9 and ax.get_xlabel() == "loss"
    assert _glyph_warnings(fig) == []
    plt.close(fig)
    # the check has teeth: plain Hangul in the default font does warn
    fig, ax = plt.subplots()
    ax.set_title("학습 곡선")
    assert _glyph_warnings(fig)
    plt.close(fig)


def test_korean_title_uses_the_installed_cjk_font(monkeypatch):
    monkeypatch.setattr(viz, "korean_font", lambda: "Noto Sans CJK KR")
    s, kw = viz.korean_text("학습 곡선", "learning curves")
    assert s == "학습 곡선" and kw["fontfamily"][0] == "Noto Sans CJK KR"
    assert viz.korean_text("plain", "other") == ("plain", {})  # no Hangul: unchanged
    fig, ax = plt.subplots()
    t = viz.title_ko(ax, "학습 곡선", "learning curves")
    assert t.get_text() == "학습 곡선" and t.get_fontfamily()[0] == "Noto Sans CJK KR"
    plt.close(fig)


def test_korean_font_is_none_or_has_hangul():
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    name = viz.korean_font()
    if name is None:
        return
    path = font_manager.findfont(font_manager.FontProperties(family=name), fallback_to_default=False)
    assert 0xD55C in FT2Font(path).get_charmap()
    fig, ax = plt.subplots()
    viz.title_ko(ax, "학습 곡선", "learning curves")
    assert ax.get_title() == "학습 곡선" and _glyph_warnings(fig) == []
    plt.close(fig)
