import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import config
from course_lib.papers import stego as sg
from course_lib.models.vit import VisionTransformer

TINY_VIT = dict(img_size=16, patch_size=4, embed_dim=24, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=0)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- eq. 3-5


def test_correlation_is_cosine_similarity():
    a, b = _randn(2, 5, 3, 4, seed=1), _randn(2, 5, 2, 2, seed=2)
    c = sg.correlation(a, b)
    assert c.shape == (2, 3, 4, 2, 2)
    want = F.cosine_similarity(a[1, :, 2, 3], b[1, :, 0, 1], dim=0)
    assert torch.allclose(c[1, 2, 3, 0, 1], want, atol=1e-6)
    self_corr = sg.correlation(a, a)
    diag = self_corr.flatten(1, 2).flatten(2)[:, range(12), range(12)]
    assert torch.allclose(diag, torch.ones(2, 12), atol=1e-5)


def test_pointwise_centre_keeps_global_mean_and_centres_each_point():
    fd = _randn(2, 3, 3, 3, 3, seed=3) + 0.5
    c = sg.pointwise_centre(fd)
    assert torch.allclose(c.mean(), fd.mean(), atol=1e-6)
    row_means = c.mean((3, 4))
    assert torch.allclose(row_means, torch.full_like(row_means, float(fd.mean())), atol=1e-5)


def test_correspondence_loss_formula_gradients_and_clamp():
    f1, f2 = _randn(2, 6, 3, 3, seed=4), _randn(2, 6, 3, 3, seed=5)
    c1 = _randn(2, 4, 3, 3, seed=6).requires_grad_(True)
    c2 = _randn(2, 4, 3, 3, seed=7)
    f1.requires_grad_(True)
    loss = sg.correspondence_loss(f1, f2, c1, c2, b=0.2, zero_clamp=True, pointwise=False)
    want = -(sg.correlation(c1, c2).clamp(min=0) * (sg.correlation(f1, f2) - 0.2)).mean()
    assert torch.allclose(loss, want, atol=1e-6)
    loss.backward()
    assert f1.grad is None  # the feature correlation is a constant (no gradient to the backbone)
    assert c1.grad is not None and c1.grad.abs().sum() > 0
    # anti-correlated codes (one point each): the clamp removes every gradient, no clamp does not
    g1, g2, d2 = f1.detach()[..., :1, :1], f2[..., :1, :1], c2[..., :1, :1]
    neg = (-d2).clone().requires_grad_(True)
    sg.correspondence_loss(g1, g2, neg, d2, b=0.2, zero_clamp=True).backward()
    assert neg.grad.abs().max() == 0
    neg2 = (-d2 + 0.1 * _randn(*d2.shape, seed=20)).requires_grad_(True)
    sg.correspondence_loss(g1, g2, neg2, d2, b=0.2, zero_clamp=False).backward()
    assert neg2.grad.abs().max() > 0


def test_loss_pulls_together_where_features_agree():
    # one gradient step on the code raises the code correlation when F - b > 0, lowers it else
    f = _randn(1, 8, 1, 1, seed=8)
    c2 = torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)
    for f2, sign in ((f.clone(), 1), (-f, -1)):
        c1 = torch.tensor([0.3, 1.0, 0.4]).view(1, 3, 1, 1).requires_grad_(True)
        sg.correspondence_loss(f, f2, c1, c2, b=0.1, pointwise=False).backward()
        before = sg.correlation(c1, c2).item()
        after = sg.correlation(c1.detach() - 0.1 * c1.grad, c2).item()
        assert sign * (after - before) > 0


def test_derangement_has_no_fixed_points():
    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 5, 32):
        for _ in range(20):
            p = sg.derangement(n, g)
            assert sorted(p.tolist()) == list(range(n))
            assert (p != torch.arange(n)).all()
    with pytest.raises(ValueError):
        sg.derangement(1)


def test_stego_loss_parts_and_weights():
    f, fk = _randn(4, 6, 3, 3, seed=10), _randn(4, 6, 3, 3, seed=11)
    head = sg.SegmentationHead(6, 5, dropout=0.0)
    _, c = head(f)
    _, ck = head(fk)
    cfg = sg.LossConfig(num_points=4, neg_samples=2)
    total, parts = sg.stego_loss(f, fk, c, ck, cfg, torch.Generator().manual_seed(0))
    want = cfg.lambda_self * parts["self"] + cfg.lambda_knn * parts["knn"] + cfg.lambda_rand * parts["rand"]
    assert abs(float(total.detach()) - want) < 1e-5
    total.backward()
    assert all(p.grad is not None for p in head.parameters())
    # only the random pairs: lambda_self = lambda_knn = 0
    t2, p2 = sg.stego_loss(f, fk, c.detach(), ck.detach(),
                           sg.LossConfig(lambda_self=0, lambda_knn=0, num_points=4, neg_samples=2),
                           torch.Generator().manual_seed(0))
    assert abs(float(t2) - sg.OFFICIAL_LOSS["lambda_rand"] * p2["rand"]) < 1e-6


def test_official_loss_values_are_the_active_train_config_block():
    """The active block of the official src/configs/train_config.yml (not a commented-out one):
    lambda 0.67 / 0.25 / 0.63, b 0.18 / 0.12 / 0.46 (self / KNN / random); the paper profile and
    LossConfig's defaults use them; the study profile keeps its calibrated shifts."""
    want = dict(lambda_self=0.67, lambda_knn=0.25, lambda_rand=0.63, b_self=0.18, b_knn=0.12, b_rand=0.46)
    assert sg.OFFICIAL_LOSS == want
    cfg = sg.LossConfig()
    assert {k: getattr(cfg, k) for k in want} == want
    paper = config.resolve("11_stego", profile="paper")
    assert {k: paper[k] for k in want} == want
    study = config.resolve("11_stego", profile="study")
    assert (study.b_self, study.b_knn, study.b_rand) == sg.STUDY_B == (0.55, 0.6, 0.65)
    assert (study.lambda_self, study.lambda_knn, study.lambda_rand) == (0.67, 0.25, 0.63)


def test_sample_is_the_official_grid_sample():
    """Official sampler: grid_sample(padding_mode="border", align_corners=True): -1 / 1 are the
    centres of the corner patches, and points outside are clamped to the border."""
    x = torch.arange(12.0).view(1, 1, 3, 4)  # rows 0..2, columns 0..3
    corners = torch.tensor([[[[-1.0, -1.0], [1.0, -1.0]], [[-1.0, 1.0], [1.0, 1.0]]]])  # (x, y)
    assert torch.equal(sg.sample(x, corners)[0, 0], torch.tensor([[0.0, 3.0], [8.0, 11.0]]))
    centre = torch.zeros(1, 1, 1, 2)  # the middle of the grid: mean of rows 1, columns 1.5
    assert torch.allclose(sg.sample(x, centre), torch.tensor(5.5))
    outside = torch.tensor([[[[-3.0, -3.0], [5.0, 0.0]]]])  # border padding: no fade to zero
    assert torch.allclose(sg.sample(x, outside)[0, 0, 0], torch.tensor([0.0, 7.0]))
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 5, 6, 6, generator=g)
    c = torch.rand(2, 1, 3, 3, 2, generator=g)[:, 0] * 2 - 1
    ref = F.grid_sample(f, c, mode="bilinear", padding_mode="border", align_corners=True)
    assert torch.allclose(sg.sample(f, c), ref)


def test_head_is_linear_plus_nonlinear():
    head = sg.SegmentationHead(6, 4, dropout=0.0).eval()
    x = _randn(2, 6, 3, 3, seed=12)
    feats, code = head(x)
    assert torch.equal(feats, x) and code.shape == (2, 4, 3, 3)
    assert torch.allclose(code, head.linear(x) + head.nonlinear(x))
    assert isinstance(head.nonlinear[1], torch.nn.ReLU)


# ---------------------------------------------------------------- KNN, probes, metrics


def test_knn_excludes_self_and_finds_neighbours():
    base = _randn(3, 8, seed=13)
    feats = torch.stack([base[i // 4] + 0.05 * _randn(8, seed=100 + i) for i in range(12)])[:, :, None, None]
    feats = feats.expand(-1, -1, 2, 2)
    knn = sg.knn_indices(feats, k=3)
    assert knn.shape == (12, 3)
    for i in range(12):
        assert i not in knn[i].tolist()
        assert all(j // 4 == i // 4 for j in knn[i].tolist())


def test_cluster_probe_loss_is_minus_best_cosine():
    probe = sg.ClusterProbe(4, 3)
    x = _randn(2, 4, 2, 2, seed=14)
    cos = probe(x)
    assert cos.shape == (2, 3, 2, 2) and cos.abs().max() <= 1 + 1e-6
    assert torch.allclose(probe.loss(x), -cos.max(1).values.mean())


def test_hungarian_and_scores():
    target = torch.tensor([[0, 0, 1, 1, 2, 2]])
    pred = torch.tensor([[2, 2, 0, 0, 1, 1]])  # a relabelling: perfect after matching
    conf = sg.confusion(pred, target, 3, 3)
    m = sg.matched_confusion(conf)
    s = sg.scores(m)
    assert s["acc"] == pytest.approx(100) and s["miou"] == pytest.approx(100)
    assert list(sg.hungarian(conf)) == [1, 2, 0]
    # by hand: class 0 IoU 1/2 (tp 1, fn 1), class 1 IoU 2/3 (tp 2, fp 1); ignore -1
    conf2 = sg.confusion(torch.tensor([0, 1, 1, 1, 0]), torch.tensor([0, 0, 1, 1, -1]), 2, 2)
    s2 = sg.scores(conf2)
    assert s2["acc"] == pytest.approx(75) and s2["miou"] == pytest.approx(100 * (0.5 + 2 / 3) / 2)


def test_dense_crf_smooths_an_isolated_pixel():
    img = torch.full((1, 3, 12, 12), 120, dtype=torch.uint8)
    logits = torch.zeros(1, 2, 12, 12)
    logits[:, 0] = 2.0
    logits[0, :, 5, 5] = torch.tensor([0.0, 1.0])  # one pixel prefers class 1, weakly
    q = sg.dense_crf(img, logits, bi_sxy=3.0, bi_srgb=10.0)
    assert q.shape == (1, 2, 12, 12)
    assert torch.allclose(q.sum(1), torch.ones(1, 12, 12), atol=1e-5)
    assert logits.argmax(1)[0, 5, 5] == 1 and q.argmax(1)[0, 5, 5] == 0
    # an edge in the image keeps two regions apart (bilateral kernel)
    img2 = img.clone()
    img2[..., 6:] = 250
    lg = torch.zeros(1, 2, 12, 12)
    lg[:, 0, :, :6], lg[:, 1, :, 6:] = 1.0, 1.0
    q2 = sg.dense_crf(img2, lg, bi_sxy=3.0, bi_srgb=10.0, max_side=8)  # also at a reduced side
    assert q2.shape == (1, 2, 12, 12)
    assert (q2.argmax(1)[0, :, :5] == 0).all() and (q2.argmax(1)[0, :, 7:] == 1).all()


def test_dense_crf_in_chunks_and_lists(monkeypatch):
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (5, 3, 6, 6), generator=g, dtype=torch.uint8)
    a, b = torch.randn(5, 3, 3, 3, generator=g), torch.randn(5, 4, 6, 6, generator=g)
    whole = sg.dense_crf(img, [a, b], bi_sxy=2.0, bi_srgb=20.0)
    monkeypatch.setattr(sg, "CRF_KERNEL_ELEMENTS", 2 * 36 ** 2)  # two images per kernel build
    parts = sg.dense_crf(img, [a, b], bi_sxy=2.0, bi_srgb=20.0)
    single = sg.dense_crf(img, b, bi_sxy=2.0, bi_srgb=20.0)
    assert whole[0].shape == (5, 3, 6, 6) and whole[1].shape == (5, 4, 6, 6)
    for x, y in zip(whole, parts):
        assert torch.allclose(x, y, atol=1e-5)
    assert torch.allclose(single, whole[1], atol=1e-5)


# ---------------------------------------------------------------- data, features, training


def test_world_semantic_matches_worlddata():
    from course_lib.world import WorldConfig, render

    cfg = WorldConfig(num_images=6, eval_images=2, image_size=32, num_classes=4, objects=(1, 2))
    data = render(cfg, "train")
    sem = sg.world_semantic(data)
    for i in range(len(data)):
        assert torch.equal(sem[i], data.semantic(i))


def test_five_crop_shapes_and_centre():
    imgs = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8).to(torch.uint8)
    labels = torch.arange(2 * 8 * 8).view(2, 8, 8) % 5
    d = sg.five_crop(sg.SegData(imgs, labels, ("a",) * 5), ratio=0.5)
    assert d.images.shape == (10, 3, 8, 8) and d.labels.shape == (10, 8, 8)
    # crop 4 of image 1 is its centre 4x4 block, upsampled 2x (nearest for labels)
    assert torch.equal(d.labels[5 + 4, ::2, ::2], labels[1, 2:6, 2:6])
    assert torch.equal(d.labels[0, ::2, ::2], labels[0, :4, :4])  # top-left


def test_extract_features_matches_forward_features():
    torch.manual_seed(0)
    vit = VisionTransformer(**TINY_VIT).eval()
    bb = sg.Backbone(vit, (0.5,) * 3, (0.25,) * 3)
    imgs = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    f = bb.features(imgs, batch_size=2, dtype=torch.float32)
    assert f.shape == (3, 24, 4, 4)
    x = (imgs.float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        tok = vit.forward_features(x)[:, 1:]
    assert torch.allclose(f[2].flatten(1).T, tok[2], atol=1e-5)
    ff = bb.features(imgs, flip=True, dtype=torch.float32)
    sym = bb.features(imgs.flip(-1), flip=True, dtype=torch.float32)
    assert torch.allclose(ff, sym.flip(-1), atol=1e-5)  # flip averaging is mirror-equivariant


def _toy_features(n=48, seed=0):
    """Images of two halves, each half one of 3 'classes' whose features are 3 directions."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.eye(16)[:3] * 2 + 0.3 * torch.randn(3, 16, generator=g)  # nearly orthogonal classes
    lab = torch.randint(0, 3, (n, 2), generator=g)
    grid = torch.zeros(n, 4, 4, dtype=torch.long)
    grid[:, :, :2], grid[:, :, 2:] = lab[:, :1, None], lab[:, 1:, None]
    feats = dirs[grid].permute(0, 3, 1, 2) + 0.3 * torch.randn(n, 16, 4, 4, generator=g)
    labels = grid.repeat_interleave(2, 1).repeat_interleave(2, 2)  # 8x8 pixels
    images = (torch.rand(n, 3, 8, 8, generator=g) * 255).to(torch.uint8)
    return feats, sg.SegData(images, labels, ("a", "b", "c"))


def test_training_learns_toy_segments():
    feats, data = _toy_features()
    knn = sg.knn_indices(feats, k=5)
    cfg = sg.RunConfig(loss=sg.LossConfig(num_points=4, neg_samples=2), code_dim=8, steps=100, batch_size=16, lr=5e-3, seed=0)
    run = sg.train_run(feats, data.labels, knn, 3, cfg)
    torch.manual_seed(0)
    fresh = sg.SegmentationHead(16, 8).eval()  # the same initialisation as the run's head
    lab = data.labels[:, ::2, ::2]

    def class_cos(code):  # mean cosine between the mean codes of different classes
        x = F.normalize(code.detach(), dim=1).permute(0, 2, 3, 1)
        m = F.normalize(torch.stack([x[lab == k].mean(0) for k in range(3)]), dim=1)
        return float(((m @ m.T).sum() - 3) / 6)

    # distinct classes' codes are pushed apart (eq. 5: F - b < 0 between them)
    assert class_cos(run.code(feats)) < class_cos(fresh(feats)[1]) - 0.2
    m = sg.evaluate(run, feats, data)
    assert m["linear_acc"] > 90 and m["unsup_acc"] > 60
    assert m["confusion"].shape == (3, 3) and m["confusion"].sum() == data.labels.numel()
    raw = sg.train_run(feats, data.labels, None, 3, sg.RunConfig(train_head=False, steps=40, seed=0))
    assert raw.head is None and sg.evaluate(raw, feats, data)["linear_acc"] > 90
    km = sg.kmeans_baseline(feats, feats, data)
    assert km["unsup_acc"] > 90


def test_parameters_and_paper_profile_needs_weights():
    P = config.resolve("11_stego", profile="smoke")
    assert P.code_dim == 70 and P.lambda_self == sg.OFFICIAL_LOSS["lambda_self"]
    with pytest.raises(config.ParameterError):
        config.resolve("11_stego", profile="smoke", neg_samples=-1)
    with pytest.raises(config.ParameterError):
        sg.derive(config.resolve("11_stego", profile="paper"))
    cfg = sg.run_config(P, 3, zero_clamp=False, train_head=False)
    assert cfg.seed == 3 and not cfg.loss.zero_clamp and not cfg.train_head
    assert (cfg.loss.b_self, cfg.loss.b_knn, cfg.loss.b_rand) == sg.STUDY_B
    paper = config.resolve("11_stego", profile="paper")
    assert all(paper[k] == v for k, v in sg.OFFICIAL_LOSS.items())  # the official values there


def test_load_backbone_from_dino_weights(tmp_path):
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=4, embed_dim=64, depth=2, num_heads=1, num_classes=0)
    path = tmp_path / "dino.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in vit.state_dict().items()}}, path)
    P = sg.derive(config.resolve("11_stego", profile="paper", device="cpu", dino_weights=str(path), image_size=32))
    bb, wcfg = sg.load_backbone(P)
    assert wcfg is None and bb.image_size == 32 and bb.grid == (8, 8)
    assert bb.mean == sg.IMAGENET_MEAN
    assert torch.equal(bb.vit.blocks[1].mlp.fc2.weight, vit.blocks[1].mlp.fc2.weight)


def test_voc_reader(tmp_path):
    from PIL import Image

    root = tmp_path / "VOC2012"
    for d in ("ImageSets/Segmentation", "JPEGImages", "SegmentationClass"):
        (root / d).mkdir(parents=True)
    (root / "ImageSets/Segmentation/val.txt").write_text("a\nb\n")
    for n, w in (("a", 40), ("b", 30)):
        Image.fromarray(np.full((20, w, 3), 90, np.uint8)).save(root / "JPEGImages" / f"{n}.jpg")
        lab = np.zeros((20, w), np.uint8)
        lab[:, w // 2:] = 15
        lab[0, :] = 255
        Image.fromarray(lab).save(root / "SegmentationClass" / f"{n}.png")
    d = sg.voc_segdata(root, "val", size=16)
    assert d.images.shape == (2, 3, 16, 16) and d.labels.shape == (2, 16, 16)
    assert d.num_classes == 21 and set(d.labels.unique().tolist()) <= {-1, 0, 15}
    assert (d.labels == -1).any() and (d.labels == 15).any()


def test_headline_claims_pair_every_seed():
    """Issue 17's ids: STEGO vs. the raw probe, vs. k-means and vs. STEGO without the zero-clamp,
    each paired seed by seed (k-means and the zero-clamp ablation run every seed)."""
    from types import SimpleNamespace as NS

    P = config.resolve("11_stego", profile="smoke", seeds=3)
    row = lambda miou: {"unsup_miou": miou, "unsup_acc": miou + 20, "linear_miou": miou + 5}  # noqa: E731
    rows = {"raw": [row(15 + s) for s in range(3)], "kmeans_raw": [row(25 + s) for s in (0, 3, -3)],
            "stego_nocrf": [row(24 + s) for s in range(3)], "stego": [row(25 + s) for s in range(3)],
            "no_clamp": [row(16 + s) for s in range(3)], "no_sc": [row(24)]}
    rec = sg.recorder(P)
    rec.save = lambda *a, **k: None
    sg.record_results(P, {"rows": rows, "setup": NS(eval=NS(num_classes=14))}, rec)
    c = {x.id: x for x in rec.claims}
    for id_, verdict in (("stego_beats_raw_probe", "reproduced"), ("stego_beats_kmeans", "inconclusive"),
                         ("stego_zero_clamp_needed", "reproduced")):
        assert c[id_].headline and c[id_].n == 3 and c[id_].verdict == verdict, (id_, c[id_].evidence)
    assert c["sc_helps"].n == 1 and not c["sc_helps"].headline
