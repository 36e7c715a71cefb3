"""Tests of course_lib.models: the readable ViT against timm, checkpoint loading, convnets."""
from __future__ import annotations

import copy
import functools

import pytest
import timm
import torch
from timm.layers import DropPath, resample_abs_pos_embed
from timm.models.vision_transformer import checkpoint_filter_fn

from course_lib.models import (
    PRESETS,
    TIMM_EQUIVALENT,
    CheckpointMismatchError,
    VisionTransformer,
    create_convnet,
    create_vit,
    load_pretrained,
    load_timm_state_dict,
    small_resnet,
    vit_config,
)

# a tiny configuration shared by timm and our model: 32 px, 4 px patches (8x8 grid), 2 blocks
TINY = dict(img_size=32, patch_size=4, num_classes=10, depth=2)


@functools.lru_cache(maxsize=None)
def _timm_cached(name: str, kw: tuple) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **{**TINY, **dict(kw)}).eval()


def _timm(name: str = "vit_tiny_patch16_224", **kw) -> torch.nn.Module:
    """A timm reference model with random weights (built once, a fresh copy per call)."""
    return copy.deepcopy(_timm_cached(name, tuple(sorted(kw.items()))))


def _ours(**kw) -> VisionTransformer:
    torch.manual_seed(1)  # different init from timm, so a successful load is visible
    return VisionTransformer(**{**TINY, **kw}).eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one thread is as fast, and far faster when another job holds a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------------------------
# timm equivalence
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{}, {"class_token": False, "global_pool": "avg"}],
                         ids=["token", "avg-no-cls"])
def test_timm_vit_state_dict_loads_and_matches(kw, images):
    ref = _timm(**kw)
    model = _ours(**kw)
    assert sorted(model.state_dict()) == sorted(ref.state_dict())
    assert not torch.allclose(model.pos_embed, ref.pos_embed)
    result = load_timm_state_dict(model, ref.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(images), ref.forward_features(images),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(images), ref(images), atol=1e-5, rtol=1e-5)


def test_timm_distilled_deit_matches_in_eval_and_train(images):
    ref = _timm("deit_tiny_distilled_patch16_224")
    model = _ours(distilled=True)
    assert model.num_prefix_tokens == 2
    load_timm_state_dict(model, ref.state_dict())
    with torch.no_grad():
        # eval: both average the two heads
        out = model(images)
        assert isinstance(out, torch.Tensor) and out.shape == (3, 10)
        torch.testing.assert_close(out, ref(images), atol=1e-5, rtol=1e-5)
        # train (dropout rates are 0, so deterministic): ours always returns the two heads;
        # timm does so only after set_distilled_training(True)
        model.train()
        ref.train()
        ref.set_distilled_training(True)
        cls_logits, dist_logits = model(images)
        ref_cls, ref_dist = ref(images)
        torch.testing.assert_close(cls_logits, ref_cls, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(dist_logits, ref_dist, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close((cls_logits + dist_logits) / 2, model.eval()(images), atol=1e-6, rtol=0)


@pytest.mark.parametrize("preset,expected_m", [("deit_tiny", 5.7), ("deit_small", 22.1),
                                               ("deit_base", 86.6), ("deit_tiny_distilled", 5.9)])
def test_parameter_counts_match_timm(preset, expected_m):
    with torch.device("meta"):  # no memory, no init cost
        ours = create_vit(preset)
        ref = timm.create_model(TIMM_EQUIVALENT[preset], pretrained=False)
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_ours == sum(p.numel() for p in ref.parameters())
    assert round(n_ours / 1e6, 1) == expected_m
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in ref.state_dict().items()}


# --------------------------------------------------------------------------------------------
# checkpoint formats
# --------------------------------------------------------------------------------------------
def test_official_deit_checkpoint_wrapper(images):
    ref = _timm("deit_tiny_distilled_patch16_224")
    model = _ours(distilled=True)
    result = load_timm_state_dict(model, {"model": ref.state_dict()})
    assert "read checkpoint['model']" in result.notes
    with torch.no_grad():
        torch.testing.assert_close(model(images), ref(images), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prefix,wrapper", [("backbone.", "teacher"), ("module.backbone.", "teacher"),
                                            ("", None)], ids=["teacher", "ddp-prefix", "plain-backbone"])
def test_dino_checkpoint_round_trip(prefix, wrapper, images):
    backbone = _timm(num_classes=0)  # DINO backbones have no classifier
    sd = {prefix + k: v for k, v in backbone.state_dict().items()}
    if prefix:  # DINO's projection head sits next to the backbone: it must be dropped
        head_prefix = prefix.replace("backbone.", "head.")
        sd.update({head_prefix + "mlp.0.weight": torch.randn(32, 192),
                   head_prefix + "last_layer.weight_g": torch.ones(64, 1)})
    checkpoint = {wrapper: sd, "epoch": 100} if wrapper else sd

    model = _ours()
    head_before = model.head.weight.clone()
    result = load_timm_state_dict(model, checkpoint)
    assert any("kept the model's own head" in n for n in result.notes)
    if prefix:
        assert any("DINO head" in n for n in result.notes)
    torch.testing.assert_close(model.head.weight, head_before)  # our classifier is untouched
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(images), backbone.forward_features(images),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_load_pretrained_files(suffix, tmp_path, images):
    ref = _timm()
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(ref.state_dict(), str(path))
    else:
        torch.save({"model": ref.state_dict()}, path)
    model = _ours()
    load_pretrained(model, path)
    with torch.no_grad():
        torch.testing.assert_close(model(images), ref(images), atol=1e-5, rtol=1e-5)


def test_pos_embed_is_resampled_for_another_image_size():
    ref = _timm()                                 # 32 px -> 8x8 grid
    model = _ours(img_size=48)                    # 48 px -> 12x12 grid
    assert model.grid_size == (12, 12) and model.pos_embed.shape == (1, 145, 192)
    result = load_timm_state_dict(model, ref.state_dict())
    assert any("8x8 to a 12x12" in n for n in result.notes)
    expected = resample_abs_pos_embed(ref.pos_embed.detach(), new_size=[12, 12], num_prefix_tokens=1)
    torch.testing.assert_close(model.pos_embed.detach(), expected)
    torch.testing.assert_close(model.pos_embed[:, :1], ref.pos_embed[:, :1])  # class position kept

    # same result as timm's own checkpoint filter into a 48 px timm model
    ref48 = _timm(img_size=48)
    ref48.load_state_dict(checkpoint_filter_fn(ref.state_dict(), ref48))
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), ref48(x), atol=1e-5, rtol=1e-5)


def test_pos_embed_resampling_keeps_both_prefix_tokens():
    ref = _timm("deit_tiny_distilled_patch16_224")
    model = _ours(distilled=True, img_size=16)    # 4x4 grid
    load_timm_state_dict(model, ref.state_dict())
    assert model.pos_embed.shape == (1, 2 + 16, 192)
    torch.testing.assert_close(model.pos_embed[:, :2], ref.pos_embed[:, :2])


def test_other_head_size_needs_drop_head(images):
    ref = _timm(num_classes=7)
    model = _ours()
    with pytest.raises(CheckpointMismatchError, match="drop_head=True"):
        load_timm_state_dict(model, ref.state_dict())
    head_before = model.head.weight.clone()
    result = load_timm_state_dict(model, ref.state_dict(), drop_head=True)
    assert not result.missing_keys
    torch.testing.assert_close(model.head.weight, head_before)
    torch.testing.assert_close(model.blocks[1].mlp.fc2.weight, ref.blocks[1].mlp.fc2.weight)


def test_mismatch_error_lists_keys():
    sd = _timm().state_dict()
    del sd["blocks.1.attn.qkv.weight"]
    sd["blocks.2.norm1.weight"] = torch.ones(192)
    model = _ours()
    with pytest.raises(CheckpointMismatchError) as err:
        load_timm_state_dict(model, sd)
    assert "blocks.1.attn.qkv.weight" in str(err.value) and "blocks.2.norm1.weight" in str(err.value)
    # non-strict loads what fits and reports the rest
    result = load_timm_state_dict(model, sd, strict=False)
    assert result.missing_keys == ["blocks.1.attn.qkv.weight"]
    assert result.unexpected_keys == ["blocks.2.norm1.weight"]
    torch.testing.assert_close(model.pos_embed, sd["pos_embed"])


def test_wrong_input_size_is_a_clear_error():
    with pytest.raises(ValueError, match="built for"):
        _ours()(torch.randn(1, 3, 48, 48))


# --------------------------------------------------------------------------------------------
# attention paths
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distilled", [False, True])
def test_sdpa_and_explicit_paths_agree(distilled, images):
    model = _ours(distilled=distilled)
    with torch.no_grad():
        fast = model.forward_features(images)
        explicit, attentions = model.forward_features(images, return_attention=True)
    torch.testing.assert_close(fast, explicit, atol=1e-5, rtol=1e-5)
    n = 64 + model.num_prefix_tokens
    assert len(attentions) == 2
    for attn in attentions:
        assert attn.shape == (3, 3, n, n)
        assert (attn >= 0).all()
        torch.testing.assert_close(attn.sum(-1), torch.ones(3, 3, n), atol=1e-5, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(model.get_attention(images), attentions))


def test_fast_path_calls_sdpa_and_materialises_no_attention(monkeypatch, images):
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls.append(args[0].shape)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting_sdpa)
    model = _ours()
    model(images)
    assert calls == [(3, 3, 65, 64)] * 2  # q: (B, heads, N, head_dim), one call per block
    calls.clear()
    model.get_attention(images)
    assert calls == []


# --------------------------------------------------------------------------------------------
# shapes, training, presets
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,prefix", [({}, 1), ({"distilled": True}, 2),
                                       ({"class_token": False, "global_pool": "avg"}, 0)])
def test_shapes_and_properties(kw, prefix, images):
    model = _ours(**kw)
    assert model.num_prefix_tokens == prefix and model.grid_size == (8, 8)
    tokens = model.forward_features(images)
    assert tokens.shape == (3, 64 + prefix, 192)
    assert model.forward_head(tokens).shape == (3, 10)
    assert model.forward_head(tokens, pre_logits=True).shape == (3, 192)
    assert _ours(num_classes=0, **kw)(images).shape == (3, 192)


def test_gradients_reach_every_parameter(images):
    model = _ours(distilled=True, drop_path_rate=0.1, drop_rate=0.1, attn_drop_rate=0.1).train()
    assert isinstance(model.blocks[1].drop_path1, DropPath)
    cls_logits, dist_logits = model(images)
    (cls_logits.logsumexp(-1).sum() + dist_logits.logsumexp(-1).sum()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_bf16_autocast_on_cpu(images):
    model = _ours(distilled=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images)
        attentions = model.get_attention(images)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    torch.testing.assert_close(logits.float(), model(images), atol=0.1, rtol=0.1)
    assert len(attentions) == 2


def test_presets():
    assert vit_config("deit_small")["embed_dim"] == 384
    cfg = vit_config("deit_tiny")
    cfg["depth"] = 1
    assert PRESETS["deit_tiny"]["depth"] == 12  # vit_config returns a copy
    model = create_vit("deit_tiny_distilled", img_size=32, patch_size=4, depth=1, num_classes=5)
    assert model.distilled and model.head_dist.out_features == 5 and len(model.blocks) == 1
    with pytest.raises(KeyError, match="deit_tiny"):
        vit_config("deit_huge")


def test_reset_classifier():
    model = _ours(distilled=True)
    model.reset_classifier(3)
    assert model.head.out_features == 3 and model.head_dist.out_features == 3
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


# --------------------------------------------------------------------------------------------
# convnets
# --------------------------------------------------------------------------------------------
def test_small_resnet_and_create_convnet():
    x = torch.randn(2, 3, 32, 32)
    model = small_resnet(10)
    assert model(x).shape == (2, 10)
    assert model.conv1.stride == (2, 2) and isinstance(model.maxpool, torch.nn.Identity)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert small_resnet(4, width=16, layers=(2, 2, 2, 2))(x).shape == (2, 4)
    assert create_convnet("resnet10t", 10)(x).shape == (2, 10)
    assert isinstance(create_convnet("small_resnet", 10), type(model))


def test_full_training_checkpoint_needs_weights_only_false(tmp_path, images):
    import argparse
    backbone = _timm(num_classes=0)
    path = tmp_path / "checkpoint.pth"
    torch.save({"teacher": {"backbone." + k: v for k, v in backbone.state_dict().items()},
                "args": argparse.Namespace(arch="vit_tiny")}, path)
    model = _ours()
    with pytest.raises(RuntimeError, match="weights_only=False"):
        load_pretrained(model, path)
    load_pretrained(model, path, weights_only=False)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(images), backbone.forward_features(images),
                                   atol=1e-5, rtol=1e-5)
