"""The course's one feature extractor (course_lib.features) and the any-size ViT forward."""
from __future__ import annotations

import pytest
import timm
import torch

from course_lib import features
from course_lib.models.vit import VisionTransformer, resample_pos_embed

TINY = dict(img_size=16, patch_size=4, embed_dim=24, depth=1, num_heads=2, num_classes=0)


@pytest.fixture
def vit():
    torch.manual_seed(0)
    m = VisionTransformer(**TINY)
    torch.nn.init.normal_(m.pos_embed)
    return m


def test_cls_and_patch_features_are_the_tokens(vit):
    imgs = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    x = (imgs.float() / 255 - 0.5) / 0.25  # the world's statistics by default
    with torch.no_grad():
        tok = vit.eval().forward_features(x)
    vit.train()
    f = features.extract_features(vit, imgs, batch_size=2)
    assert f.shape == (5, 24) and f.dtype == torch.float32 and torch.allclose(f, tok[:, 0], atol=1e-6)
    maps = features.extract_features(vit, imgs, tokens="patches", batch_size=3, dtype=torch.float16)
    assert maps.shape == (5, 24, 4, 4) and maps.dtype == torch.float16
    assert torch.allclose(maps[1].float().flatten(1).T, tok[1, 1:], atol=1e-2)
    assert vit.training  # the mode is restored
    with pytest.raises(ValueError, match="cls, patches"):
        features.extract_features(vit, imgs, tokens="mean")


def test_flip_averages_the_mirror_image(vit):
    imgs = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    f = features.extract_features(vit, imgs, flip=True)
    plain = features.extract_features(vit, imgs)
    mirrored = features.extract_features(vit, imgs.flip(-1))
    assert torch.allclose(f, (plain + mirrored) / 2, atol=1e-6)  # class token: no flip back
    maps = features.extract_features(vit, imgs, tokens="patches", flip=True)
    sym = features.extract_features(vit, imgs.flip(-1), tokens="patches", flip=True)
    assert torch.allclose(maps, sym.flip(-1), atol=1e-5)


def test_normalisation_from_the_arguments_or_the_pretrained_cfg(vit):
    imgs = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    a = features.extract_features(vit, imgs, mean=mean, std=std)
    vit.pretrained_cfg = {"mean": mean, "std": std}
    assert torch.equal(a, features.extract_features(vit, imgs))
    assert not torch.allclose(a, features.extract_features(vit, imgs, mean=(0.5,) * 3, std=(0.25,) * 3))


def test_any_size_images_and_timm_models(vit):
    big = torch.randint(0, 256, (2, 3, 24, 32), dtype=torch.uint8)
    assert features.extract_features(vit, big, tokens="patches").shape == (2, 24, 6, 8)
    tv = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8)
    imgs = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    f = features.extract_features(tv, imgs)
    with torch.no_grad():
        ref = tv.eval().forward_head(tv.forward_features(features.normalize(imgs, model=tv)), pre_logits=True)
    assert torch.allclose(f, ref, atol=1e-6)
    assert features.extract_features(tv, imgs, tokens="patches").shape == (2, 192, 4, 4)


def test_resample_pos_embed_is_timms_and_keeps_the_prefix():
    pos = torch.randn(1, 1 + 16, 8)
    assert resample_pos_embed(pos, (4, 4)) is pos
    up = resample_pos_embed(pos, (6, 8))
    assert up.shape == (1, 1 + 48, 8) and torch.equal(up[:, :1], pos[:, :1])
    ref = timm.layers.resample_abs_pos_embed(pos, new_size=[6, 8], old_size=[4, 4], num_prefix_tokens=1)
    assert torch.equal(up, ref)
    with pytest.raises(ValueError, match="square"):
        resample_pos_embed(torch.randn(1, 1 + 15, 8), (4, 4))
