"""Tests of course_lib/papers/vitdet (ViTDet: plain ViT backbones for detection)."""
import pytest
import torch

from course_lib.papers import vitdet as vd
from course_lib.models.vit import VisionTransformer

SMALL = dict(img_size=64, patch_size=8, embed_dim=32, depth=4, num_heads=2, mlp_ratio=2.0, pretrain_img_size=32)


def test_window_partition_round_trip_with_padding():
    x = torch.randn(2, 7, 5, 3)
    win, padded = vd.window_partition(x, 4)
    assert padded == (8, 8) and win.shape == (2 * 4, 4, 4, 3)
    # the first window holds the top-left 4x4 block, padding is zero
    assert torch.equal(win[0], x[0, :4, :4])
    assert torch.all(win[1][:, 1:] == 0)  # columns 5..7 of the padded map
    assert torch.equal(vd.window_unpartition(win, 4, padded, (7, 5)), x)


def test_evenly_spaced_blocks_matches_the_paper():
    assert vd.evenly_spaced_blocks(12, 4) == (2, 5, 8, 11)  # ViT-B
    assert vd.evenly_spaced_blocks(24, 4) == (5, 11, 17, 23)  # ViT-L
    assert vd.evenly_spaced_blocks(4, 2) == (1, 3)
    assert vd.evenly_spaced_blocks(4, 0) == ()


@pytest.mark.parametrize("rel_pos", [False, True])
def test_window_attention_equals_global_when_window_covers_grid(rel_pos):
    torch.manual_seed(0)
    glob = vd.WindowAttention(16, 2, window=0, rel_pos=rel_pos, grid=(8, 8))
    win = vd.WindowAttention(16, 2, window=8, rel_pos=rel_pos, grid=(8, 8))
    if rel_pos:  # non-zero tables so that the bias matters
        for p in (glob.rel_pos_h, glob.rel_pos_w):
            torch.nn.init.normal_(p)
    win.load_state_dict(glob.state_dict())
    x = torch.randn(2, 8, 8, 16)
    out_g, _ = glob(x)
    out_w, _ = win(x)
    assert torch.allclose(out_g, out_w, atol=1e-5)
    # the explicit path (maps) computes the same output as the fused path
    out_e, attn = glob(x, return_attention=True)
    assert torch.allclose(out_e, out_g, atol=1e-5) and attn.shape == (2, 2, 64, 64)


def test_smaller_windows_differ_and_maps_stay_inside_the_window():
    torch.manual_seed(0)
    glob = vd.WindowAttention(16, 2, window=0)
    win = vd.WindowAttention(16, 2, window=4)
    win.load_state_dict(glob.state_dict())
    x = torch.randn(1, 8, 8, 16)
    assert not torch.allclose(glob(x)[0], win(x)[0], atol=1e-4)
    _, attn = win(x, return_attention=True)      # (1, heads, 64, 64) over the whole grid
    assert torch.allclose(attn.sum(-1), torch.ones(1, 2, 64))
    q = 0  # token (0, 0): its window is rows 0-3, columns 0-3
    row = attn[0, 0, q].view(8, 8)
    assert torch.all(row[:4, :4] > 0) and row[4:].abs().sum() == 0 and row[:, 4:].abs().sum() == 0


def test_rel_pos_is_zero_initialised_and_changes_attention_when_learnt():
    torch.manual_seed(0)
    a = vd.WindowAttention(16, 2, window=4, rel_pos=True)
    b = vd.WindowAttention(16, 2, window=4, rel_pos=False)
    b.load_state_dict(a.state_dict(), strict=False)
    x = torch.randn(1, 8, 8, 16)
    assert a.rel_pos_h.abs().sum() == 0 and a.rel_pos_h.shape == (7, 8)
    assert torch.allclose(a(x)[0], b(x)[0], atol=1e-6)
    with torch.no_grad():
        a.rel_pos_h.normal_()
    assert not torch.allclose(a(x)[0], b(x)[0], atol=1e-4)


def test_pos_embed_resize():
    pos = torch.randn(1, 1 + 16, 8)  # class token + 4x4 grid
    same = vd.resize_pos_embed(pos, (4, 4))
    assert torch.equal(same.reshape(1, 16, 8), pos[:, 1:])  # unchanged grid: the same values
    big = vd.resize_pos_embed(pos, (8, 8))
    assert big.shape == (1, 8, 8, 8)
    const = torch.full((1, 17, 3), 0.7)  # bicubic keeps a constant field constant
    assert torch.allclose(vd.resize_pos_embed(const, (8, 8)), torch.full((1, 8, 8, 3), 0.7), atol=1e-5)
    with pytest.raises(ValueError):
        vd.resize_pos_embed(torch.randn(1, 1 + 15, 8), (4, 4))


@pytest.mark.parametrize("pyramid,strides", [("sfp", [2, 4, 8, 16]), ("fpn_lastmap", [2, 4, 8, 16]),
                                             ("fpn_4stage", [2, 4, 8, 16]), ("none", [8])])
def test_pyramids_strides_and_channels(pyramid, strides):
    m = vd.build_backbone(pyramid, out_channels=24, **SMALL)
    out = m(torch.randn(2, 3, 64, 64))
    assert list(out) == [str(i) for i in range(len(strides))]
    assert [64 // v.shape[-1] for v in out.values()] == strides == m.strides()
    assert all(v.shape[:2] == (2, 24) for v in out.values()) and m.out_channels == 24


def test_fpn_4stage_reads_four_stages():
    m = vd.build_backbone("fpn_4stage", **{**SMALL, "depth": 8})
    assert m.stage_ends == (1, 3, 5, 7)
    assert vd.build_backbone("fpn_lastmap", **{**SMALL, "depth": 8}).stage_ends == (7,)


def test_backbone_blocks_and_conv_propagation_start_as_identity():
    torch.manual_seed(0)
    glob = vd.ViTDetBackbone(**SMALL, propagation="global", num_propagation=2)
    assert [b.window for b in glob.blocks] == [4, 0, 4, 0]
    none = vd.ViTDetBackbone(**SMALL, propagation="none")
    conv = vd.ViTDetBackbone(**SMALL, propagation="conv", num_propagation=2)
    assert [b.window for b in conv.blocks] == [4, 4, 4, 4]
    assert [b.propagation is not None for b in conv.blocks] == [False, True, False, True]
    conv.load_state_dict(none.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(conv(x), none(x), atol=1e-6)  # zero-initialised last norm


def test_load_pretrained_vit_and_resize():
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, mlp_ratio=2.0,
                            num_classes=5)
    bb = vd.ViTDetBackbone(**SMALL, rel_pos=True)
    info = bb.load_vit(vit)
    assert torch.equal(bb.blocks[2].attn.qkv.weight, vit.blocks[2].attn.qkv.weight)
    assert torch.equal(bb.pos_embed, vit.pos_embed)
    assert set(info["unused"]) == {"cls_token", "norm.weight", "norm.bias", "head.weight", "head.bias"}
    assert all("rel_pos" in k for k in info["new"])
    tokens = bb.tokens(torch.randn(1, 3, 64, 64))
    assert tokens.shape == (1, 8, 8, 32)  # the 4x4 pretraining grid was resized to 8x8


def test_mae_masking_ratio_and_restore():
    g = torch.Generator().manual_seed(0)
    keep, mask, restore = vd.random_masking(3, 16, 0.75, generator=g)
    assert keep.shape == (3, 4) and torch.equal(mask.sum(1), torch.full((3,), 12.0))
    for b in range(3):  # the kept tokens are exactly the unmasked ones
        assert set(keep[b].tolist()) == set((mask[b] == 0).nonzero().flatten().tolist())
        assert sorted(restore[b].tolist()) == list(range(16))


def test_mae_loss_only_on_masked_patches():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 16, 16)
    target = vd.patchify(images, 8)  # (2, 4, 192)
    mask = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    pred = torch.randn_like(target)
    base = vd.mae_loss(pred, images, mask, 8)
    changed = pred.clone()
    changed[mask == 0] += 5.0  # visible patches do not count
    assert torch.allclose(vd.mae_loss(changed, images, mask, 8), base)
    changed[0, 0] += 1.0       # a masked one does
    assert not torch.allclose(vd.mae_loss(changed, images, mask, 8), base)
    # a perfect prediction of the per-patch normalised pixels has zero loss
    norm = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    assert vd.mae_loss(norm, images, mask, 8).item() < 1e-8


def test_mae_encoder_sees_only_visible_patches():
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    mae = vd.MaskedAutoencoder(vit, decoder_dim=16)
    keep, mask, restore = vd.random_masking(2, 16, 0.75)
    assert mae.encode(torch.randn(2, 3, 32, 32), keep).shape == (2, 1 + 4, 32)
    loss, pred, mask = mae(torch.randn(2, 3, 32, 32))
    assert pred.shape == (2, 16, 192) and mask.sum() == 24 and loss.item() > 0
    loss.backward()
    assert vit.patch_embed.proj.weight.grad is not None


def test_backbone_in_a_torchvision_detector():
    from course_lib import detection as det

    torch.manual_seed(0)
    bb = vd.build_backbone("sfp", out_channels=16, **SMALL)
    model = det.build_detector(bb, num_classes=3, masks=False, image_size=64, anchor_sizes=vd.anchor_sizes(bb))
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[20.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([3])}]
    model.train()
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert bb.backbone.blocks[0].attn.qkv.weight.grad is not None
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and set(out[0]) >= {"boxes", "labels", "scores"}


def test_complexity_counts_window_savings():
    glob = vd.ViTDetBackbone(img_size=128, patch_size=8, embed_dim=32, depth=2, num_heads=2, window=0,
                             propagation="none")
    win = vd.ViTDetBackbone(img_size=128, patch_size=8, embed_dim=32, depth=2, num_heads=2, window=4,
                            propagation="none")
    cg, cw = vd.complexity(glob, 128), vd.complexity(win, 128)
    assert cg["params_m"] == cw["params_m"] and cw["gflops"] < cg["gflops"]


def test_backbone_accepts_other_input_sizes():
    """Real photos arrive padded to a multiple of 32, not at img_size: the position embedding and
    the global blocks' relative position tables are resized to the actual grid."""
    torch.manual_seed(0)
    bb = vd.ViTDetBackbone(**SMALL, rel_pos=True)
    out = bb(torch.randn(1, 3, 64, 100))  # 100 is padded to 104 -> a 8x13 grid
    assert out.shape == (1, 32, 8, 13)
    sfp = vd.SimpleFeaturePyramid(bb, 16)
    sizes = [tuple(v.shape[-2:]) for v in sfp(torch.randn(1, 3, 96, 64)).values()]
    assert sizes == [(48, 32), (24, 16), (12, 8), (6, 4)]


def _fake_runs(box: dict[str, list[float]], masks: bool):
    from course_lib.papers.vitdet.experiment import Run, Variant

    out = {}
    for n, vals in box.items():
        per = [{"bbox_AP": b, **({"segm_AP": b + 1} if masks else {})} for b in vals]
        mean = {k: sum(p[k] for p in per) / len(per) for k in per[0]}
        out[n] = Run(n, Variant(), mean, 0.8, 0.1, 1.0, False, None, per, list(range(len(vals))))
    return out


def test_one_seed_claims_on_box_and_mask_ap_stay_undecided():
    from course_lib import config

    P = config.resolve("07_vitdet", "smoke")
    box = {"default": [6.0], "no_pyramid": [2.0], "fpn_lastmap": [3.0], "fpn_4stage": [3.5], "prop_none": [5.9],
           "prop_conv": [5.0], "pre_none": [4.0], "pre_supervised": [6.5]}
    for masks in (True, False):
        rec = vd.recorder(P)
        rec.save = lambda *a, **k: None
        vd.record_results(P, {"runs": _fake_runs(box, masks)}, rec)
        c = {x.id: x for x in rec.claims}
        assert set(vd.HEADLINE) <= set(c) and all(c[h].headline for h in vd.HEADLINE)
        h = c["vitdet_simple_pyramid_beats_none"]
        assert h.ours == 6.0 and h.paper == vd.PAPER["table1_vit_b"]["sfp"][0] and h.verdict == "inconclusive"
        assert ("vitdet_simple_pyramid_beats_none_mask" in c) == masks
        if masks:
            m = c["vitdet_simple_pyramid_beats_none_mask"]
            assert m.ours == 7.0 and m.paper == vd.PAPER["table1_vit_b"]["sfp"][1] and not m.headline
            # one run per arm: a claim, never decided (scoreboard v2 needs 3 paired seeds)
            assert m.kind == "claim" and m.verdict == "inconclusive"


def test_headline_claims_pair_the_rows_seed_by_seed():
    """Three paired seeds: each headline claim is judged on the per-seed differences with its
    reference row; "matches FPN" is a one-sided tolerance against the stronger FPN variant."""
    from course_lib import config

    P = config.resolve("07_vitdet", "study")
    assert P.seeds == 3 and set(P.rows) == set(vd.STUDY_ROWS) and not P.masks
    box = {"default": [6.0, 3.0, 5.0], "no_pyramid": [4.0, 1.1, 2.9],       # +2.0 / +1.9 / +2.1: reproduced
           "fpn_lastmap": [6.2, 3.1, 5.3], "fpn_4stage": [5.0, 2.0, 4.0],   # SFP - last-map -0.2 / -0.1 / -0.3
           "prop_none": [6.5, 1.0, 5.5],                                     # -0.5 / +2.0 / -0.5: undecided
           "pre_supervised": [7.0, 4.1, 5.9]}                                # -1.0 / -1.1 / -0.9: not reproduced
    rec = vd.recorder(P)
    rec.save = lambda *a, **k: None
    vd.record_results(P, {"runs": _fake_runs(box, masks=False)}, rec)
    c = {x.id: x for x in rec.claims}
    assert c["vitdet_simple_pyramid_beats_none"].verdict == "reproduced"
    assert "paired" in c["vitdet_simple_pyramid_beats_none"].evidence
    match = c["vitdet_simple_pyramid_matches_fpn"]
    assert "fpn_lastmap" in match.claim and match.verdict == "reproduced"
    assert c["vitdet_propagation_helps"].verdict == "inconclusive"
    assert c["vitdet_mae_beats_supervised"].verdict == "not reproduced"
    assert c["box_no_pyramid"].kind == "reference" and c["box_no_pyramid"].runs == box["no_pyramid"]
    assert not any(k.endswith("_mask") for k in c)
    from course_lib.results import takeaways

    text = str(takeaways(rec, vd.TAKEAWAYS))
    assert "vitdet_propagation_helps" in text and "AP box AP" not in text


def test_rows_parameter_names_the_allowed_rows():
    from course_lib import config

    with pytest.raises(config.ParameterError, match="fpn_lastmap"):
        config.resolve("07_vitdet", "smoke", rows=("default", "fpn"))
    P = config.resolve("07_vitdet", "smoke", rows=("default", "prop_none"))
    assert list(vd.variants(P)) == ["default", "prop_none"]


def test_detector_training_follows_the_notebook_seed(monkeypatch):
    """A detector's training randomness (dropout, drop-path) follows ``P.seed``, as its init and
    its loader do, so paired seeds are different runs (issue 18: it was fixed at seed 0)."""
    from types import SimpleNamespace as NS

    from course_lib import config, detection as det
    from course_lib.papers.vitdet import experiment as ex

    seen = {}

    def fake_cached(name, key, build, fit, force=False):
        seen[key["loader"]["seed"]] = key["recipe"].seed
        return None, None, None

    monkeypatch.setattr(det, "cached_detector", fake_cached)
    d = NS(train=list(range(8)), num_classes=3)
    for seed in (0, 3):
        P = config.resolve("07_vitdet", "smoke", seed=seed)
        ex.train_detector(P, d, ex.Variant(), None, None)
    assert seen == {0: 0, 3: 3}
