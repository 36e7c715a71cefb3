"""Tests of the self-supervised backbone (course_lib.selfsup: DINO's loss, head, multi-crop,
schedules, teacher, loading of real DINO weights; random timm models, no downloads) and of
notebook 06's study of it (course_lib.papers.dino: evaluation, masks, Jaccard, figures)."""
from __future__ import annotations

import argparse
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from course_lib import selfsup, viz
from course_lib.papers import dino
from course_lib.models.vit import VisionTransformer


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = dict(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=0)


def _tiny_cfg(**kw) -> selfsup.DINOConfig:
    base = dict(model=dict(TINY), image_size=32, local_crops=2, local_size=16, out_dim=64, hidden_dim=32,
                bottleneck=16, epochs=1, batch_size=16, warmup_epochs=0)
    return selfsup.DINOConfig(**{**base, **kw})


# ----------------------------------------------------------------------------------------------
# loss


def _reference_loss(student, teacher, center, n_crops, tt, ts=0.1):
    """Eq. 2-3 written out pair by pair."""
    B = teacher.shape[0] // 2
    total, n = 0.0, 0
    for q in range(2):
        pt = F.softmax((teacher[q * B:(q + 1) * B] - center) / tt, dim=-1)
        for v in range(n_crops):
            if v == q:
                continue
            ls = F.log_softmax(student[v * B:(v + 1) * B] / ts, dim=-1)
            total += (-(pt * ls).sum(-1)).mean()
            n += 1
    return total / n


def test_dino_loss_matches_pairwise_definition_and_updates_center_after():
    g = torch.Generator().manual_seed(0)
    B, K, n_crops = 5, 12, 4
    s, t = torch.randn(n_crops * B, K, generator=g), torch.randn(2 * B, K, generator=g)
    loss_fn = selfsup.DINOLoss(K, n_crops, teacher_temp=[0.04], center_momentum=0.9)
    loss_fn.center.fill_(0.3)
    expected = _reference_loss(s, t, 0.3, n_crops, 0.04)
    loss, stats = loss_fn(s, t, epoch=0)
    torch.testing.assert_close(loss, expected)
    # the centre moved AFTER the loss was computed with the old one
    torch.testing.assert_close(loss_fn.center, 0.9 * 0.3 + 0.1 * t.mean(0, keepdim=True))
    # KL = CE - H(P_t) >= 0
    assert stats["kl"] >= 0 and stats["entropy"] > 0


def test_dino_loss_switches():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(3 * 4, 8, generator=g), torch.randn(2 * 4, 8, generator=g)
    off = selfsup.DINOLoss(8, 3, [0.04], centering=False)
    off(s, t, 0)
    assert torch.count_nonzero(off.center) == 0
    mse = selfsup.DINOLoss(8, 3, [0.04], loss="mse")
    lm, _ = mse(s, t, 0)
    B = 4
    pt = F.softmax(t / 0.04, -1)
    ps = F.softmax(s / 0.1, -1)
    ref = sum(((pt[q * B:(q + 1) * B] - ps[v * B:(v + 1) * B]) ** 2).sum(-1).mean()
              for q in range(2) for v in range(3) if v != q) / 4
    torch.testing.assert_close(lm, ref)
    with pytest.raises(ValueError):
        selfsup.DINOLoss(8, 3, [0.04], loss="l1")


def test_teacher_temperature_schedule_per_epoch():
    loss_fn = selfsup.DINOLoss(4, 2, teacher_temp=[0.02, 0.03, 0.04], centering=False)
    t = torch.tensor([[0.1, 0.0, 0.0, 0.0]] * 2)
    s = torch.zeros(2, 4)
    ent = [loss_fn(s, t, e)[1]["entropy"] for e in (0, 1, 2, 9)]
    assert ent[0] < ent[1] < ent[2] and ent[3] == pytest.approx(float(ent[2]), rel=1e-3)


# ----------------------------------------------------------------------------------------------
# head, multi-crop network, schedules, optimisation helpers


def test_head_last_layer_is_normalised_and_g_frozen():
    head = selfsup.DINOHead(16, 50, hidden_dim=32, bottleneck=8)
    w = head.last_layer_weight()
    torch.testing.assert_close(w.norm(dim=1), torch.ones(50))
    assert not head.last_layer_g.requires_grad
    out = head(torch.randn(3, 16))
    assert out.shape == (3, 50) and out.abs().max() <= 1 + 1e-5  # cosines
    assert selfsup.DINOHead(16, 50, norm_last_layer=False).last_layer_g.requires_grad


def test_any_size_forward_and_multicrop_grouping():
    torch.manual_seed(0)
    vit = VisionTransformer(**TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(vit.forward_features(x, any_size=True), vit.forward_features(x))
    small = torch.randn(2, 3, 16, 16)
    assert vit.forward_features(small, any_size=True).shape == (2, 1 + 16, 32)
    with pytest.raises(ValueError, match="any_size=True"):  # the plain forward names the option
        vit.forward_features(small)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        vit.forward_features(torch.randn(1, 3, 18, 18), any_size=True)
    net = selfsup.MultiCropNet(vit, selfsup.DINOHead(32, 10, 16, 8)).eval()
    crops = [x, x.flip(-1), small, small.flip(-2)]
    with torch.no_grad():
        out = net(crops)
        one_by_one = torch.cat([net.head(vit.forward_features(c, any_size=True)[:, 0]) for c in crops])
    assert out.shape == (8, 10)
    torch.testing.assert_close(out, one_by_one, atol=1e-5, rtol=1e-5)


def test_cosine_schedule():
    s = selfsup.cosine_schedule(1.0, 0.1, epochs=4, niter_per_ep=5, warmup_epochs=1)
    assert len(s) == 20
    assert s[0] == 0.0 and s[4] == pytest.approx(1.0)  # linear warm-up over 5 steps
    assert s[5] == pytest.approx(1.0) and s[-1] > 0.1 and s[-1] < 0.12
    assert all(a >= b for a, b in zip(s[5:], s[6:]))
    m = selfsup.cosine_schedule(0.996, 1.0, 2, 10)
    assert m[0] == pytest.approx(0.996) and m[-1] < 1 and m[-1] > 0.9999


def test_per_parameter_clipping_and_ema():
    a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    for p in a.parameters():
        p.grad = torch.full_like(p, 10.0)
    a.bias.grad = torch.full_like(a.bias, 0.01)
    selfsup.clip_gradients(a, 3.0)
    assert a.weight.grad.norm() == pytest.approx(3.0, rel=1e-4)   # clipped on its own
    assert a.bias.grad.norm() == pytest.approx(0.02, rel=1e-4)    # small: untouched
    tw = b.weight.detach().clone()
    selfsup.ema_update(b, a, 0.9)
    torch.testing.assert_close(b.weight, 0.9 * tw + 0.1 * a.weight)
    selfsup.ema_update(b, a, 0.0)
    torch.testing.assert_close(b.weight, a.weight)


def test_param_groups_exclude_biases_and_norms():
    vit = VisionTransformer(**TINY)
    decay, no_decay = selfsup.param_groups(vit)
    assert no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    assert id(vit.blocks[0].norm1.weight) in ids and id(vit.blocks[0].attn.qkv.bias) in ids
    assert id(vit.blocks[0].attn.qkv.weight) not in ids


# ----------------------------------------------------------------------------------------------
# augmentation


def test_multicrop_shapes_per_image_randomness_and_determinism():
    cfg = _tiny_cfg(local_crops=3)
    x = torch.rand(1, 3, 32, 32).expand(6, -1, -1, -1).contiguous()  # six copies of one image
    crops = selfsup.MultiCropAugment(cfg, torch.Generator().manual_seed(0))(x)
    assert [tuple(c.shape) for c in crops] == [(6, 3, 32, 32)] * 2 + [(6, 3, 16, 16)] * 3
    # each copy got its own crop / colours
    assert (crops[0][0] - crops[0][1]).abs().max() > 1e-3
    again = selfsup.MultiCropAugment(cfg, torch.Generator().manual_seed(0))(x)
    for a, b in zip(crops, again):
        torch.testing.assert_close(a, b)
    assert len(selfsup.MultiCropAugment(cfg.replace(multi_crop=False))(x)) == 2


def test_hue_jitter_sets_how_far_a_colour_can_turn():
    x = torch.tensor([0.8, 0.15, 0.1]).view(1, 3, 1, 1).expand(400, 3, 4, 4).contiguous()  # red

    def share_not_red(hue):
        aug = selfsup.MultiCropAugment(_tiny_cfg(hue_jitter=hue), torch.Generator().manual_seed(0))
        y = aug.color(x)[:, :, 0, 0]
        coloured = (y.max(1).values - y.min(1).values) > 0.05  # grayscale draws are left out
        return float((y[coloured].argmax(1) != 0).float().mean())

    assert share_not_red(0.0) == 0.0
    assert share_not_red(0.5) > 0.3  # every hue is reachable
    with pytest.raises(ValueError, match="hue_jitter"):
        _tiny_cfg(hue_jitter=0.6)
    # a knob added later keeps the cache keys of models trained before it, until it is moved
    assert "hue_jitter" not in _tiny_cfg().key() and _tiny_cfg(hue_jitter=0.5).key()["hue_jitter"] == 0.5


def test_crop_of_whole_image_is_identity():
    cfg = _tiny_cfg()
    aug = selfsup.MultiCropAugment(cfg, torch.Generator().manual_seed(0))
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(aug.crop(x, 32, (1.0, 1.0)), x, atol=0.08, rtol=0)  # aspect jitter only


# ----------------------------------------------------------------------------------------------
# training


def test_train_dino_returns_teacher_and_history():
    imgs = (torch.rand(32, 3, 32, 32) * 255).to(torch.uint8)
    cfg = _tiny_cfg(max_steps=2)
    model, hist = selfsup.train_dino(imgs, cfg, device="cpu", seed=0, log=None)
    assert isinstance(model, VisionTransformer) and not model.training
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 32)
    rec = hist.epochs[0]
    assert rec["step"] == 2 and 0 < rec["teacher_entropy"] <= math.log(64) + 1e-4
    assert len(hist.steps["teacher_entropy"]) == 2
    # momentum 1: the teacher never moves from the student's initial weights
    frozen, _ = selfsup.train_dino(imgs, cfg.replace(momentum_teacher=1.0), device="cpu", seed=0, log=None)
    torch.manual_seed(0)
    init = selfsup.build_backbone(cfg, cfg.drop_path)
    for (k, a), b in zip(frozen.state_dict().items(), init.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    # momentum 0.996: an EMA of the student, close to but not at the start
    assert not torch.equal(frozen.pos_embed, model.pos_embed)
    assert (frozen.pos_embed - model.pos_embed).abs().max() < 0.05
    with pytest.raises(ValueError):
        selfsup.train_dino(imgs.float(), cfg, device="cpu", log=None)


def test_profiles():
    assert selfsup.world_config("smoke").num_images < selfsup.world_config("study").num_images
    assert selfsup.world_config("study").objects[1] >= 2  # several objects for STEGO
    assert selfsup.dino_config("paper").model == "vit_small_patch16"
    with pytest.raises(ValueError):
        selfsup.dino_config("huge")


# ----------------------------------------------------------------------------------------------
# evaluation


def test_knn_matches_bruteforce():
    g = torch.Generator().manual_seed(0)
    tr, te = torch.randn(50, 8, generator=g), torch.randn(20, 8, generator=g)
    ytr, yte = torch.randint(0, 3, (50,), generator=g), torch.randint(0, 3, (20,), generator=g)
    acc = dino.knn_classifier(tr, ytr, te, yte, k=5, T=0.07, num_classes=3)
    trn, ten = F.normalize(tr, dim=1), F.normalize(te, dim=1)
    correct = 0
    for i in range(20):
        sim = trn @ ten[i]
        top = sim.argsort(descending=True)[:5]
        votes = torch.zeros(3)
        for j in top:
            votes[ytr[j]] += math.exp(sim[j] / 0.07)
        correct += int(votes.argmax() == yte[i])
    assert acc == pytest.approx(100 * correct / 20)
    # separable clusters: perfect
    cl = torch.cat([torch.randn(10, 4, generator=g) * 0.01 + torch.eye(4)[c] for c in range(3)])
    y = torch.arange(3).repeat_interleave(10)
    assert dino.knn_classifier(cl, y, cl, y, k=3) == 100.0
    assert dino.linear_probe(cl, y, cl, y) == 100.0


def test_cls_attention_masks_and_jaccard():
    torch.manual_seed(0)
    vit = VisionTransformer(**TINY).eval()
    x = torch.randn(3, 3, 32, 32)
    maps = selfsup.cls_attention(vit, x)
    assert maps.shape == (3, 2, 8, 8)
    ref = viz.token_attention(vit.get_attention(x), layer=-1, index=1)
    torch.testing.assert_close(maps[1], ref)
    # a map with all the mass on 4 patches keeps exactly those at any threshold < 1
    m = torch.full((1, 2, 8, 8), 1e-6)
    m[0, :, 2:4, 2:4] = 1.0
    mask = dino.attention_masks(m, 0.6)
    assert mask.shape == (1, 8, 8) and mask.sum() <= 4 and mask[0, 2:4, 2:4].any()
    gt = torch.zeros(1, 32, 32, dtype=torch.bool)
    gt[0, 8:16, 8:16] = True
    full = dino.attention_masks(m, 0.999)
    assert dino.jaccard(full, gt).item() == pytest.approx(1.0)  # upsampled 4x, exact match
    assert dino.jaccard(torch.zeros(1, 8, 8, dtype=torch.bool), gt).item() == 0.0
    assert dino.jaccard(torch.zeros(1, 4, 4, dtype=torch.bool), torch.zeros(1, 4, 4, dtype=torch.bool)).item() == 1.0
    half = torch.zeros(1, 32, 32, dtype=torch.bool)
    half[0, 8:16, 8:12] = True
    assert dino.jaccard(half, gt).item() == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------
# real DINO weights (random timm models in the official layouts)


@pytest.mark.parametrize("name,img", [("vit_small_patch16_224.dino", 224), ("vit_small_patch8_224.dino", 64)])
@pytest.mark.parametrize("layout", ["timm", "official_full", "official_ddp"])
def test_load_dino_weights_layouts(tmp_path, name, img, layout):
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, depth=2, img_size=img, num_classes=0).eval()
    sd = ref.state_dict()
    if layout == "timm":
        path = tmp_path / "w.safetensors"
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        pre = "backbone." if layout == "official_full" else "module.backbone."
        head = {"head.mlp.0.weight": torch.randn(8, 384), "head.last_layer.weight_g": torch.ones(16, 1),
                "head.last_layer.weight_v": torch.randn(16, 8)}
        if layout == "official_ddp":
            head = {"module." + k: v for k, v in head.items()}
        teacher = {**{pre + k: v for k, v in sd.items()}, **head}
        path = tmp_path / "checkpoint.pth"
        torch.save({"teacher": teacher, "student": teacher, "epoch": 3,
                    "args": argparse.Namespace(arch="vit_small", patch_size=16)}, path)
    model = selfsup.load_dino_weights(path)
    assert model.embed_dim == 384 and model.num_heads == 6 and model.depth == 2
    assert model.patch_size == ref.patch_embed.patch_size
    x = torch.randn(1, 3, img, img)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-4, rtol=1e-4)
    assert model.pretrained_cfg["mean"] == selfsup.IMAGENET_MEAN
    # another input size: position embeddings resampled, attention maps on the larger grid
    bigger = selfsup.load_dino_weights(path, img_size=2 * img)
    assert selfsup.cls_attention(bigger, torch.randn(1, 3, 2 * img, 2 * img)).shape[1] == 6


def test_notebook_recipe_is_the_shared_one_with_its_own_patches(monkeypatch):
    """Notebook 06 trains its own DINO runs (one per seed): the course's recipe with 8 px patches at
    study scale; notebook 11's backbone (``study_backbone``) keeps the shared recipe."""
    from course_lib import config

    for profile in ("smoke", "study", "paper"):
        P = config.resolve("06_dino", profile=profile)
        cfg = dino.config_from_params(P)
        assert cfg == dino.notebook_config(profile)
        shared = selfsup.dino_config(profile)
        assert cfg.replace(model=shared.model, epochs=shared.epochs) == shared
    study = dino.notebook_config("study")
    assert study.arch()["patch_size"] == 8 and study.epochs == 10
    assert dino.config_from_params(config.resolve("06_dino", "study", patch_size=4)).arch()["patch_size"] == 4
    assert config.resolve("06_dino", "study").seeds == 3
    # its world: notebook 11's, with one object per image (the world the recipe was calibrated on)
    seen = {}
    monkeypatch.setattr(dino.experiment, "world_data", lambda wcfg, root=None: seen.setdefault("world", wcfg))
    dino.load_data(config.resolve("06_dino", "study"))
    assert seen["world"] == selfsup.world_config("study", objects=(1, 1)) != selfsup.world_config("study")
    with pytest.raises(config.ParameterError):
        config.resolve("06_dino", profile="study", loss="l2")


def test_record_pairs_every_arm_by_seed():
    """Issue 17's five DINO ids, each on per-seed values paired by seed."""
    from course_lib import config

    P = config.resolve("06_dino", "smoke", seeds=3)
    ev = lambda knn, jb: {"knn": knn, "linear": knn + 5, "jaccard_best_head": jb, "jaccard_mean": jb - 3}  # noqa: E731
    res = {"seeds": [0, 1, 2], "evals": {
        "dino": [ev(23 + s, 26 + s) for s in range(3)], "random": [ev(23.5 + s, 15 + s) for s in range(3)],
        "supervised": [ev(45 + s, 24 + s) for s in range(3)], "no_momentum": [ev(18 + s, 10) for s in range(3)],
        "no_multicrop": [ev(23 + s + (-1) ** s, 20) for s in range(3)]}}
    rec = dino.recorder(P)
    rec.save = lambda *a, **k: None
    dino.record_results(P, res, None, 6, rec)
    c = {x.id: x for x in rec.claims}
    expect = {"dino_knn_beats_random": "not reproduced", "dino_jaccard_beats_random": "reproduced",
              "dino_jaccard_beats_supervised": "reproduced", "dino_momentum_needed": "reproduced",
              "dino_multicrop_helps": "inconclusive"}
    for id_, verdict in expect.items():
        assert c[id_].headline and c[id_].n == 3 and c[id_].verdict == verdict, (id_, c[id_].evidence)


# ----------------------------------------------------------------------------------------------
# figures


def test_plot_jaccard_heads_are_whole_numbers():
    import matplotlib.pyplot as plt

    evals = {n: {"jaccard_per_image": torch.rand(20), "jaccard_mean": 40.0, "jaccard_per_head": [30.0, 45.0, 20.0],
                 "best_head": 1} for n in ("DINO", "supervised", "random")}
    fig = dino.plot_jaccard(evals)
    fig.canvas.draw()
    ax_heads = fig.axes[1]
    assert list(ax_heads.get_xticks()) == [0, 1, 2]
    assert [t.get_text() for t in ax_heads.get_xticklabels()] == ["0", "1", "2"]
    counts = fig.axes[0].get_yticks()
    assert all(float(c).is_integer() for c in counts)
    plt.close(fig)


def test_plot_photo_attention_shows_the_photos_large_and_named():
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    model = VisionTransformer(**TINY)
    names = ("astronaut", "coffee")
    fig = dino.plot_photo_attention(model, names, size=32, display=128)
    rows = [ax for ax in fig.axes if ax.images]
    assert len(rows) == len(names) * (3 + TINY["num_heads"])
    photo_axes = [ax for ax in rows if ax.get_title() in names]
    assert [ax.get_title() for ax in photo_axes] == list(names)  # every row is labelled
    for ax in rows:  # photo and maps at the display resolution, not the 32 px model input
        assert ax.images[0].get_array().shape[:2] == (128, 128)
    assert not viz.panel_problems(fig)
    plt.close(fig)
