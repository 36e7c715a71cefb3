"""ALBEF (notebook 01): tokenizer, masking, hard negatives, queues, momentum, losses, retrieval."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import config
from course_lib.papers import albef
from course_lib.world import COLOR_NAMES, SHAPE_NAMES

CAPTIONS = [
    "a large red circle to the left of a small blue square on grass",
    "On the moon, a medium orange triangle to the right of a small orange star",
    "there is a small green ring above a large purple cross in space",
    "a picture of a medium yellow square on paper",
    "In space, a large purple ring",
    "a medium cyan star below a small pink triangle on brick",
    "a large blue cross on gravel",
    "On a photo, a small red circle",
]


def tiny_cfg(**kw) -> albef.ALBEFConfig:
    base = dict(image_size=16, patch_size=8, embed_dim=16, num_heads=2, mlp_ratio=2.0, vision_depth=1,
                text_layers=1, fusion_layers=1, proj_dim=8, max_len=20, queue_size=8, batch_size=4,
                momentum=0.9, epochs=1, finetune_epochs=1)
    base.update(kw)
    return albef.ALBEFConfig(**base)


@pytest.fixture(scope="module")
def tok():
    return albef.CaptionTokenizer.train(CAPTIONS, vocab_size=200, max_len=20)


def batch(tok, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 16, 16, generator=g)
    ids, mask = tok.encode(CAPTIONS[:n])
    return images, ids, mask


# ---------------------------------------------------------------- tokenizer
@pytest.mark.parametrize("backend", ["wordlevel", "wordpiece", "words"])
def test_tokenizer_round_trip_and_layout(backend):
    if backend != "words":
        pytest.importorskip("tokenizers")
    t = albef.CaptionTokenizer.train(CAPTIONS, vocab_size=200, max_len=20, backend=backend)
    assert t.backend == backend
    assert t.vocab[:5] == list(albef.SPECIAL_TOKENS)
    ids, mask = t.encode(CAPTIONS)
    assert ids.shape[1] == max(len(t.tokenize(c)) for c in CAPTIONS) + 2
    for row, m, c in zip(ids, mask, CAPTIONS):
        n = int(m.sum())
        assert row[0] == t.cls_id and row[n - 1] == t.sep_id
        assert (row[n:] == t.pad_id).all() and not m[n:].any()
        assert t.unk_id not in row.tolist()
        assert t.decode(row) == c.lower()
    # truncation keeps [CLS] ... [SEP] within max_len
    short = albef.CaptionTokenizer.train(CAPTIONS, vocab_size=200, max_len=6, backend=backend)
    ids, _ = short.encode(CAPTIONS[0])
    assert ids.shape == (1, 6) and ids[0, -1] == short.sep_id
    # an unknown word becomes [UNK] for the word-level vocabulary
    if backend != "wordpiece":
        assert t.unk_id in t.encode("a zebra")[0][0].tolist()
        assert t.tokenize("On grass, a circle") == ["on", "grass", ",", "a", "circle"]


def test_tokenizer_is_deterministic():
    a = albef.CaptionTokenizer.train(CAPTIONS * 3, vocab_size=200)
    b = albef.CaptionTokenizer.train(list(reversed(CAPTIONS)) * 3, vocab_size=200)
    assert a.backend in ("wordlevel", "words") and a.vocab == b.vocab and a.fingerprint() == b.fingerprint()
    # frequent words first (ties alphabetical)
    assert a.vocab[5] == "a" and a.vocab.index("circle") < a.vocab.index("cyan")


# ---------------------------------------------------------------- MLM masking
def test_mask_tokens_statistics_and_specials(tok):
    n, L = 4000, 20
    g = torch.Generator().manual_seed(0)
    ordinary = tok.ordinary_ids()
    ids = ordinary[torch.randint(len(ordinary), (n, L), generator=g)]
    lengths = torch.randint(4, L + 1, (n,), generator=g)
    pos = torch.arange(L)[None]
    ids[pos >= lengths[:, None]] = tok.pad_id
    ids[:, 0] = tok.cls_id
    ids[torch.arange(n), lengths - 1] = tok.sep_id
    special = (ids == tok.pad_id) | (ids == tok.cls_id) | (ids == tok.sep_id)

    inputs, labels = albef.mask_tokens(ids, tok, 0.15, torch.Generator().manual_seed(1))
    chosen = labels != -100
    assert not (chosen & special).any()                       # special tokens never masked
    assert torch.equal(inputs[special], ids[special])         # and never changed
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    frac = chosen.sum().item() / (~special).sum().item()
    assert abs(frac - 0.15) < 0.01
    c = chosen.sum().item()
    to_mask = (inputs == tok.mask_id) & chosen
    same = (inputs == ids) & chosen
    other = chosen & ~to_mask & ~same
    assert abs(to_mask.sum().item() / c - 0.8) < 0.02
    # 10% random words (a random word equals the original with probability 1/|ordinary|)
    assert abs(other.sum().item() / c - 0.1 * (1 - 1 / len(ordinary))) < 0.015
    assert abs(same.sum().item() / c - 0.1 - 0.1 / len(ordinary)) < 0.015
    assert not any(int(i) in tok.special_ids for i in inputs[other])  # replacements are ordinary words


# ---------------------------------------------------------------- hard negatives
def test_hard_negatives_never_pick_the_positive():
    g = torch.Generator().manual_seed(0)
    B = 6
    sim = torch.randn(B, B, generator=g) * 3
    sim.fill_diagonal_(50.0)  # the positive is by far the most similar: still never drawn
    for _ in range(300):
        neg = albef.sample_negatives(sim, B, g)
        assert (neg != torch.arange(B)).all()
    # the draws follow softmax(sim) off the diagonal: a dominant off-diagonal entry wins
    peaked = torch.zeros(B, B)
    peaked[torch.arange(B), (torch.arange(B) + 1) % B] = 8.0
    draws = torch.stack([albef.sample_negatives(peaked, B, g) for _ in range(300)])
    hit = (draws == (torch.arange(B) + 1) % B).float().mean().item()
    expected = math.exp(8) / (math.exp(8) + B - 2)
    assert abs(hit - expected) < 0.02
    # random negatives: uniform over the others, never the positive
    draws = torch.stack([albef.sample_negatives(None, B, g) for _ in range(600)])
    assert (draws != torch.arange(B)).all()
    counts = torch.bincount(draws[:, 0], minlength=B).float() / 600
    assert counts[0] == 0 and (counts[1:] - 1 / (B - 1)).abs().max() < 0.06
    # extra positives (two captions of one image) are excluded too
    pos = torch.eye(B, dtype=torch.bool)
    pos[0, 1] = pos[1, 0] = True
    draws = torch.stack([albef.sample_negatives(sim, B, g, pos) for _ in range(200)])
    assert (draws[:, 0] != 1).all() and (draws[:, 1] != 0).all()


# ---------------------------------------------------------------- queue and momentum
def test_queue_enqueue_dequeue(tok):
    m = albef.build_model(tiny_cfg(queue_size=8), tok)
    a, b = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    old = m.image_queue.clone()
    m.dequeue_and_enqueue(a, b, torch.arange(4))
    assert int(m.queue_ptr) == 4
    assert torch.equal(m.image_queue[:, :4], a.T) and torch.equal(m.text_queue[:, :4], b.T)
    assert torch.equal(m.image_queue[:, 4:], old[:, 4:])
    assert m.idx_queue[:4].tolist() == [0, 1, 2, 3] and (m.idx_queue[4:] == -100).all()
    m.dequeue_and_enqueue(b, a)
    assert int(m.queue_ptr) == 0                       # wrapped around
    m.dequeue_and_enqueue(-a, -b)                      # overwrites the oldest entries
    assert torch.equal(m.image_queue[:, :4], -a.T) and torch.equal(m.image_queue[:, 4:], b.T)
    with pytest.raises(ValueError, match="multiple"):
        m.dequeue_and_enqueue(a[:3], b[:3])


def test_momentum_update_happens_before_the_momentum_forward(tok):
    m = albef.build_model(tiny_cfg(momentum=0.0, mod_mlm=False), tok).eval()
    with torch.no_grad():  # the online model moves away from its momentum copy
        for p in m.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    images, ids, mask = batch(tok)
    out = m(images, ids, mask, alpha=0.4, generator=torch.Generator().manual_seed(0))
    # momentum 0: the update copies the online weights; had it run after the momentum
    # forward, the momentum features would come from the old weights
    assert torch.allclose(out["image_feat_m"], out["image_feat"], atol=1e-5)
    assert torch.allclose(out["text_feat_m"], out["text_feat"], atol=1e-5)


def test_momentum_update_rule(tok):
    m = albef.build_model(tiny_cfg(momentum=0.75), tok)
    with torch.no_grad():
        for p in m.trainable_parameters():
            p.add_(torch.randn_like(p))
    before = {n: p.clone() for n, p in m.visual_encoder_m.named_parameters()}
    online = dict(m.visual_encoder.named_parameters())
    albef.momentum_update(m.momentum_pairs(), 0.75)
    for n, p in m.visual_encoder_m.named_parameters():
        assert torch.allclose(p, 0.75 * before[n] + 0.25 * online[n])
        assert not p.requires_grad


def test_variant_without_itc_leaves_the_momentum_model_alone(tok):
    m = albef.build_model(tiny_cfg().variant("mlm_itm"), tok)
    before = [p.clone() for p in m.text_encoder_m.parameters()]
    q = m.text_queue.clone()
    out = m(*batch(tok), alpha=0.4, generator=torch.Generator().manual_seed(0))
    assert out["itc"].item() == 0 and out["mlm"].item() > 0 and out["itm"].item() > 0
    assert all(torch.equal(a, b) for a, b in zip(before, m.text_encoder_m.parameters()))
    assert torch.equal(q, m.text_queue)


# ---------------------------------------------------------------- losses
def test_itc_loss_by_hand():
    # 2 images, 2 texts, no queue, temperature folded into the similarities
    s_i2t = torch.tensor([[2.0, 0.5], [1.0, 3.0]])
    s_t2i = torch.tensor([[1.5, 0.0], [0.2, 0.7]])
    y = torch.eye(2)
    lse = lambda a, b: math.log(math.exp(a) + math.exp(b))  # noqa: E731
    i2t = ((lse(2.0, 0.5) - 2.0) + (lse(1.0, 3.0) - 3.0)) / 2
    t2i = ((lse(1.5, 0.0) - 1.5) + (lse(0.2, 0.7) - 0.7)) / 2
    assert albef.itc_loss(s_i2t, s_t2i, y, y).item() == pytest.approx((i2t + t2i) / 2, abs=1e-6)
    # momentum distillation (eq. 6): soft targets q, alpha 0.4
    sm = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    t = albef.itc_targets(sm, 0.4)
    q0 = [1 / (1 + math.e), math.e / (1 + math.e)]
    assert t[0].tolist() == pytest.approx([0.4 * q0[0] + 0.6, 0.4 * q0[1]], abs=1e-6)
    assert t[1].tolist() == pytest.approx([0.4 * 0.5, 0.4 * 0.5 + 0.6], abs=1e-6)
    assert torch.allclose(t.sum(1), torch.ones(2))
    # = (1 - alpha) * H(y, p) + alpha * H(q, p) for the i2t direction
    logp = F.log_softmax(s_i2t, 1)
    q = F.softmax(sm, 1)
    want = (0.6 * -(logp * y).sum(1) + 0.4 * -(logp * q).sum(1)).mean()
    got = -(logp * t).sum(1).mean()
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
    # positives: two captions of image 0 share the target mass
    pos = torch.tensor([[True, True, False], [False, False, True]])
    assert albef.itc_targets(torch.zeros(2, 3), 0.0, pos).tolist() == [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]


def test_mlm_loss_distillation():
    logits = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[0, -100]])
    soft = torch.tensor([[[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]])
    logp = F.log_softmax(logits[0, 0], 0)
    ce = -logp[0].item()
    distill = -(soft[0, 0] * logp).sum().item()
    assert albef.mlm_loss(logits, labels).item() == pytest.approx(ce, abs=1e-6)
    assert albef.mlm_loss(logits, labels, soft, 0.4).item() == pytest.approx(0.6 * ce + 0.4 * distill, abs=1e-6)


def test_alpha_warm_up():
    assert albef.alpha_at(0, 0, 10, 0.4) == 0.0
    assert albef.alpha_at(0, 5, 10, 0.4) == pytest.approx(0.2)
    assert albef.alpha_at(0, 10, 10, 0.4) == pytest.approx(0.4)
    assert albef.alpha_at(1, 0, 10, 0.4) == pytest.approx(0.4)
    assert albef.alpha_at(3, 7, 10, 0.4) == pytest.approx(0.4)


def test_forward_every_variant_and_temperature_clamp(tok):
    for v in albef.VARIANTS:
        m = albef.build_model(tiny_cfg().variant(v), tok)
        with torch.no_grad():
            m.temp.fill_(0.9)
        out = m(*batch(tok), alpha=0.4, generator=torch.Generator().manual_seed(0))
        assert m.temp.item() == pytest.approx(0.5)
        assert torch.isfinite(out["loss"]) and out["loss"] > 0
        assert out["loss"].item() == pytest.approx((out["itc"] + out["itm"] + out["mlm"]).item(), rel=1e-6)
        assert (out["itc"].item() > 0) == albef.VARIANTS[v]["itc"]
        out["loss"].backward()
        assert all(p.grad is None for p in m.visual_encoder_m.parameters())
        assert m.itm_head.weight.grad is not None and m.visual_encoder.patch_embed.proj.weight.grad is not None


def test_hard_negative_mining_uses_the_batch_similarity(tok):
    m = albef.build_model(tiny_cfg(), tok)
    out = m(*batch(tok), alpha=0.0, generator=torch.Generator().manual_seed(0))
    assert (out["neg_text"] != torch.arange(4)).all() and (out["neg_image"] != torch.arange(4)).all()


# ---------------------------------------------------------------- retrieval
def test_retrieval_metrics_hand_made():
    # 3 images, 4 texts; image 0 owns texts 0 and 1, image 1 text 2, image 2 text 3
    i2t = np.array([[0.1, 0.9, 0.5, 0.0],    # best own text (1) at rank 0
                    [0.9, 0.8, 0.7, 0.6],    # own text 2 at rank 2
                    [0.9, 0.8, 0.7, 0.1]])   # own text 3 at rank 3
    t2i = np.array([[0.2, 0.9, 0.1],         # text 0 -> image 0 at rank 1
                    [0.9, 0.1, 0.0],         # text 1 -> rank 0
                    [0.5, 0.4, 0.3],         # text 2 -> image 1 at rank 1
                    [0.9, 0.5, 0.1]])        # text 3 -> image 2 at rank 2
    m = albef.retrieval_metrics(i2t, t2i, [[0, 1], [2], [3]], [0, 0, 1, 2])
    assert m["txt_r1"] == pytest.approx(100 / 3) and m["txt_r5"] == 100 and m["txt_r10"] == 100
    assert m["img_r1"] == pytest.approx(25.0) and m["img_r5"] == 100
    assert m["txt_r_mean"] == pytest.approx((100 / 3 + 200) / 3)
    assert m["r_mean"] == pytest.approx((m["txt_r_mean"] + m["img_r_mean"]) / 2)
    # 12 images, ranks 0..11 for image i: R@1/5/10 = 1/12, 5/12, 10/12
    n = 12
    s = np.zeros((n, n))
    for i in range(n):
        order = [j for j in range(n) if j != i]
        order.insert(i, i)
        s[i, order] = np.arange(n, 0, -1)
    m = albef.retrieval_metrics(s, s, [[i] for i in range(n)], list(range(n)))
    assert [m["txt_r1"], m["txt_r5"], m["txt_r10"]] == pytest.approx([100 / 12, 500 / 12, 1000 / 12])


def test_retrieval_scores_shortlist(tok):
    m = albef.build_model(tiny_cfg(), tok).eval()
    g = torch.Generator().manual_seed(0)
    data = albef.PairData((torch.rand(6, 3, 16, 16, generator=g) * 255).to(torch.uint8), CAPTIONS[:6],
                          np.arange(6), image_size=16)
    sc = albef.retrieval_scores(m, data, k_test=3, device="cpu")
    assert sc["sims"].shape == (6, 6) and sc["i2t"].shape == (6, 6) and sc["t2i"].shape == (6, 6)
    assert ((sc["i2t"] > -100).sum(1) == 3).all() and ((sc["t2i"] > -100).sum(1) == 3).all()
    top = sc["sims"].topk(3, dim=1).indices
    assert ((sc["i2t"].gather(1, top)) > -100).all()      # the shortlist is the ITC top-k
    met = albef.evaluate(m, data, k_test=3, device="cpu")
    assert 0 <= met["r_mean"] <= 100 and "itc_r_mean" in met


def test_gradcam_shapes(tok):
    m = albef.build_model(tiny_cfg(), tok).eval()
    img = (torch.rand(3, 16, 16) * 255).to(torch.uint8)
    tokens, cam, plain, p = albef.gradcam(m, img, CAPTIONS[0])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert cam.shape == (len(tokens), 2, 2) and plain.shape == cam.shape
    assert (cam >= 0).all() and 0 <= p <= 1
    total = plain.sum((1, 2))  # each word's attention over 1 + N image tokens sums to 1; [CLS] dropped
    assert (total > 0).all() and (total < 1).all()
    assert m.text_encoder.fusion[0].cross_attn.keep_maps is False


# ---------------------------------------------------------------- data
def test_corrupt_captions():
    caps = [c.replace("On", "on") for c in CAPTIONS] * 25
    noisy, code = albef.corrupt_captions(caps, 0.4, seed=3)
    assert abs((code > 0).mean() - 0.4) < 0.01
    assert (code == 0).sum() == 120 and set(np.unique(code)) == {0, 1, 2}
    for c, n, k in zip(caps, noisy, code):
        if k == 0:
            assert c == n
        elif k == 1:
            assert n != c and n in caps
        else:
            a, b = c.split(" "), n.split(" ")
            diff = [(x, y) for x, y in zip(a, b) if x != y]
            assert len(a) == len(b) and diff
            for x, y in diff:
                assert {x.strip(","), y.strip(",")} <= set(COLOR_NAMES) | set(SHAPE_NAMES)
    again, code2 = albef.corrupt_captions(caps, 0.4, seed=3)
    assert again == noisy and (code2 == code).all()
    assert albef.corrupt_captions(caps, 0.0)[0] == caps


def test_real_data_missing_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="coco_train.json"):
        albef.real_data(data_root=tmp_path)


def test_official_json_reader(tmp_path):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for name, color in (("a.png", (255, 0, 0)), ("b.png", (0, 0, 255))):
        Image.new("RGB", (40, 30), color).save(tmp_path / "imgs" / name)
    ann = [{"image": "imgs/a.png", "caption": ["A red image.", "Red, red!"]},
           {"image": "imgs/b.png", "caption": "A blue-ish picture"}]
    (tmp_path / "test.json").write_text(json.dumps(ann))
    d = albef.data._read_json_pairs(tmp_path / "test.json", tmp_path, image_size=16)
    assert d.captions == ["a red image", "red red", "a blue ish picture"]
    assert d.image_of.tolist() == [0, 0, 1] and d.img2txt() == [[0, 1], [2]]
    img = d.load_images([0, 1])
    assert img.shape == (2, 3, 16, 16) and img.dtype == torch.uint8
    assert img[0, 0].float().mean() > 250 and img[1, 2].float().mean() > 250


def test_parameters_resolve():
    P = config.resolve("01_albef", profile="smoke")
    assert tuple(P.variants) == albef.HEADLINE_VARIANTS and P.noise == 0.4 and P.seeds == 1
    S = config.resolve("01_albef", profile="study")
    assert S.seeds == 3 and tuple(S.noisy_variants) == ("itc_mlm_itm_hard", "full")
    assert albef.grid(S) == [("clean", 0.0, v) for v in albef.HEADLINE_VARIANTS] + [
        ("noisy", 0.4, "itc_mlm_itm_hard"), ("noisy", 0.4, "full")]
    assert albef.seed_list(config.resolve("01_albef", profile="study", seed=7)) == [7, 8, 9]
    assert list(config.resolve("01_albef", profile="paper").variants) == list(albef.VARIANTS)
    cfg = albef.config_from_params(P)
    assert cfg.queue_size % cfg.batch_size == 0
    assert albef.albef_config("study").queue_size % albef.albef_config("study").batch_size == 0
    with pytest.raises(config.ParameterError):
        config.resolve("01_albef", profile="smoke", variants=["mlm_itm", "nope"])
    with pytest.raises(config.ParameterError):
        config.resolve("01_albef", profile="smoke", noise=1.5)


def test_tiny_training_run_reduces_the_loss(tok):
    """A few pre-training steps on 32 pairs: the loss goes down, the alpha warm-up is logged."""
    g = torch.Generator().manual_seed(0)
    caps = CAPTIONS * 4
    imgs = (torch.rand(len(caps), 3, 16, 16, generator=g) * 255).to(torch.uint8)
    data = albef.PairData(imgs, caps, np.arange(len(caps)), image_size=16)
    cfg = tiny_cfg(epochs=6, batch_size=8, queue_size=16, lr=3e-3)
    m = albef.build_model(cfg, tok)
    h = albef.pretrain(m, data, cfg, device="cpu", log=None)
    assert len(h.epochs) == 6
    assert h.epochs[0]["alpha"] == pytest.approx(0.4 * 3 / 4)   # last step of epoch 0: i = 3 of 4
    assert h.epochs[-1]["train_loss"] < h.epochs[0]["train_loss"]
    hf = albef.finetune(m, data, cfg, device="cpu", log=None)
    assert hf.epochs[0]["train_mlm"] == 0 and hf.epochs[0]["alpha"] == 0


def test_noisy_pair_diagnosis(tok):
    caps = CAPTIONS * 4
    noisy, code = albef.corrupt_captions(caps, 0.5, seed=0)
    g = torch.Generator().manual_seed(0)
    imgs = (torch.rand(len(caps), 3, 16, 16, generator=g) * 255).to(torch.uint8)
    data = albef.PairData(imgs, noisy, np.arange(len(caps)), clean=caps, noise=code, image_size=16)
    m = albef.build_model(tiny_cfg(), tok).eval()
    d = albef.noisy_pair_diagnosis(m, data, n=10, pool=8)
    assert d["n"] == 10 and d["pool"] == 10
    assert 0 <= d["true_beats_given"] <= 100 and 0 < d["mass_true"] < 1 and 0 < d["mass_given"] < 1
    p, i = albef.pseudo_targets(m, imgs[:2], caps[:6], k=3)
    assert p.shape == (2, 3) and (p[:, :-1] >= p[:, 1:]).all() and (p.sum(1) <= 1 + 1e-6).all()
    clean = albef.PairData(imgs, caps, np.arange(len(caps)), clean=caps, noise=np.zeros(len(caps), int))
    assert albef.noisy_pair_diagnosis(m, clean)["n"] == 0


def test_itm_plateau_probe_runs(tok):
    caps = CAPTIONS * 4
    g = torch.Generator().manual_seed(0)
    imgs = (torch.rand(len(caps), 3, 16, 16, generator=g) * 255).to(torch.uint8)
    data = albef.PairData(imgs, caps, np.arange(len(caps)), image_size=16)
    curves = albef.itm_plateau_probe(data, tok, tiny_cfg(batch_size=8, queue_size=16), steps=4, pool=16, every=2)
    assert list(curves) == list(albef.ITM_PROBES) and all(len(c) == 2 for c in curves.values())
    assert all(0 < x < 5 for c in curves.values() for x in c)


def _whole_words(lines, text):
    """Every word of every wrapped line is a word of ``text`` (no word was cut in two)."""
    words = set(text.split())
    return all(w in words for line in lines for w in line.split())


def test_wrap_text_breaks_only_between_words():
    text = "a medium cyan star below a small pink triangle on brick, next to a supercalifragilistic ring"
    for width in (8, 12, 20, 44):
        lines = albef.wrap_text(text, width).split("\n")
        assert " ".join(lines) == text and _whole_words(lines, text)
        assert all(len(line) <= width or " " not in line for line in lines)
    assert albef.wrap_text("given: a\ntrue: b", 40) == "given: a\ntrue: b"  # line breaks kept


def test_figure_captions_are_wrapped_at_word_boundaries(tok):
    import matplotlib.pyplot as plt

    caps = [c + " with some more words so that the caption needs several lines in a panel" for c in CAPTIONS]
    g = torch.Generator().manual_seed(0)
    imgs = (torch.rand(len(caps), 3, 16, 16, generator=g) * 255).to(torch.uint8)
    noise = np.array([1, 0, 2, 0, 0, 0, 0, 0])
    data = albef.PairData(imgs, [("wrong " + c) if n else c for c, n in zip(caps, noise)], np.arange(len(caps)),
                          clean=caps, noise=noise, image_size=16)
    fig = albef.show_pairs(data, range(len(caps)), ncols=4)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert len(titles) == len(caps)
    for i, t in enumerate(titles):
        lines = t.split("\n")
        assert len(lines) > 1
        given = "given: " + data.captions[i]
        true = "true: " + caps[i]
        assert _whole_words(lines, given + " " + true)
        assert " ".join(lines) == (given + (" " + true if noise[i] else ""))
    plt.close(fig)
    model = albef.build_model(tiny_cfg(image_size=16), tok, 0)
    fig = albef.show_gradcam(model, imgs[0], caps[1], words=3)
    sup = fig._suptitle.get_text().split("\n")
    assert len(sup) > 1 and " ".join(sup) == caps[1] and _whole_words(sup, caps[1])
    plt.close(fig)


def test_headline_claims_pair_rows_seed_by_seed(tmp_path, monkeypatch):
    """The four headline ids are recorded on the official ranking, one value per seed, each paired
    with its baseline row seed by seed; the ITC-ranking copies keep their own ids."""
    from types import SimpleNamespace

    from course_lib.results.rules import REPRODUCED

    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path))
    P = config.resolve("01_albef", profile="study", seed=3)
    seeds = albef.seed_list(P)
    base = {"mlm_itm": 5.0, "itc_mlm_itm": 30.0, "itc_mlm_itm_hard": 25.0, "full": 35.0}

    def metrics(v, setting, i):
        x = base[v] - (15.0 if setting == "noisy" and v == "full" else 0.0) + 0.5 * i
        return {"r_mean": x, "itc_r_mean": x + 1, "txt_r_mean": x, "img_r_mean": x,
                "itc_txt_r_mean": x + 1, "itc_img_r_mean": x + 1}

    runs = {}
    for setting, _, v in albef.grid(P):
        ms = [metrics(v, setting, i) for i in range(len(seeds))]
        runs[(setting, v)] = {"metrics": ms[0], "seed_metrics": ms,
                              "ft_info": SimpleNamespace(history=None)}
    res = {"runs": runs, "seeds": seeds, "settings": {"clean": 0.0, "noisy": 0.4},
           "data": {"clean": SimpleNamespace(test=SimpleNamespace(num_images=500))}}
    rec = albef.record_results(P, res, rec=albef.recorder(P))
    c = {x.id: x for x in rec.claims}
    for id_, setting, new, old, _ in albef.HEADLINE:
        h = c[id_]
        assert h.headline and h.kind == "claim" and h.seeds == seeds == [3, 4, 5]
        assert h.runs == [m["r_mean"] for m in runs[(setting, new)]["seed_metrics"]]
    assert c["albef_itc_helps"].verdict == REPRODUCED             # +25 on every seed
    assert c["albef_hard_negatives_help"].verdict != REPRODUCED   # -5 on every seed
    assert c["albef_mod_helps_noisy"].verdict != REPRODUCED       # -5 on every seed
    assert "clean_itcrank_gain_full_over_hard" in c and not c["clean_itcrank_gain_full_over_hard"].headline
    assert sum(x.headline for x in rec.claims) == 4


def test_scaling_probe_trains_both_rows_at_each_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    P = config.resolve("01_albef", profile="smoke", device="cpu", seeds=1, n_test=16)
    assert set(albef.PROBES) == {h[0] for h in albef.HEADLINE}
    out = albef.scaling_probe(P, "albef_mod_helps_noisy", factors=(1, 2), log=None)
    assert [(r["factor"], r["budget"], r["arm"]) for r in out["rows"]] == [
        (1, P.epochs, "ours"), (1, P.epochs, "baseline"), (2, 2 * P.epochs, "ours"), (2, 2 * P.epochs, "baseline")]
    assert all(0 <= r["value"] <= 100 for r in out["rows"]) and "noisy" in out["arms"]["ours"]
    with pytest.raises(ValueError, match="albef_hard_negatives_help"):
        albef.scaling_probe(P, "albef_itm_helps")


@pytest.mark.slow  # a ViT-S/16 at 224 px with 6 + 6 text layers: about a minute on 2 CPU cores
def test_paper_profile_end_to_end_on_a_slice_of_the_official_files(tmp_path, monkeypatch):
    """The paper profile (ViT-S/16 at 224 px, 6 + 6 text layers, wordpiece) on a few images in the
    official layout: ALBEF's json files (coco_train / flickr30k_train / flickr30k_test) and the
    COCO 2014 / Flickr30k image folders, through the notebook's driver and recorder; only the
    budget knobs are overridden."""
    from PIL import Image

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path / "results"))
    root = tmp_path / "data"
    for d in ("albef_data", "coco/train2014", "coco/val2014", "flickr30k/flickr30k-images"):
        (root / d).mkdir(parents=True)
    colors = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "yellow": (230, 220, 20)}
    coco, f_train, f_test = [], [], []
    for i, (name, rgb) in enumerate(colors.items()):
        Image.new("RGB", (64, 48), rgb).save(root / f"coco/train2014/COCO_train2014_{i:012d}.jpg")
        Image.new("RGB", (50, 60), rgb).save(root / f"flickr30k/flickr30k-images/{1000 + i}.jpg")
        coco.append({"image": f"train2014/COCO_train2014_{i:012d}.jpg", "caption": f"A {name} picture.", "image_id": i})
        f_train.append({"image": f"flickr30k-images/{1000 + i}.jpg", "caption": f"a photo that is {name}",
                        "image_id": i})
        f_test.append({"image": f"flickr30k-images/{1000 + i}.jpg",
                       "caption": [f"a {name} photo", f"all {name}"]})
    for fname, ann in (("coco_train.json", coco), ("flickr30k_train.json", f_train), ("flickr30k_test.json", f_test)):
        (root / "albef_data" / fname).write_text(json.dumps(ann))
    # the budget: one step of 4 pairs per stage (the paper's batch of 64 would need 64 images per split)
    monkeypatch.setitem(albef.experiment.ALBEF_PROFILES["paper"], "batch_size", 4)
    P = config.resolve("01_albef", profile="paper", device="cpu", data_root=str(root), variants=["itc_mlm_itm"],
                       noisy_variants=[], noise=0.0, epochs=1, finetune_epochs=1, k_test=2, n_test=10)
    assert P.dataset == "coco_flickr30k" and albef.config_from_params(P).image_size == 224
    res = albef.run_table1(P, log=None)
    r = res["runs"][("clean", "itc_mlm_itm")]
    assert res["data"]["clean"].test.num_images == 4 and 0 <= r["metrics"]["r_mean"] <= 100
    rec = albef.record_results(P, res, rec=albef.recorder(P))
    assert (tmp_path / "results" / "01_albef" / "paper.json").is_file()
    assert "clean_itc_mlm_itm" in {c.id for c in rec.claims}
