import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import config
from course_lib.papers import clear


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is fastest on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------
# metrics and protocols


def test_metrics_are_averages_of_the_right_entries():
    R = np.arange(16, dtype=float).reshape(4, 4)  # R[i, j] = 4 i + j
    m = clear.clear_metrics(R)
    assert m["in_domain"] == (0 + 5 + 10 + 15) / 4
    assert m["next_domain"] == (1 + 6 + 11) / 3
    assert m["accuracy"] == np.mean([0, 4, 5, 8, 9, 10, 12, 13, 14, 15])
    assert m["backward"] == np.mean([4, 8, 9, 12, 13, 14])
    assert m["forward"] == np.mean([1, 2, 3, 6, 7, 11])
    # a model that never forgets and never generalises ahead: forward transfer is chance
    R2 = np.tril(np.full((3, 3), 90.0)) + np.triu(np.full((3, 3), 10.0), 1)
    m2 = clear.clear_metrics(R2)
    assert m2["backward"] == m2["accuracy"] == m2["in_domain"] == 90.0
    assert m2["forward"] == m2["next_domain"] == 10.0
    with pytest.raises(ValueError):
        clear.clear_metrics(np.zeros((2, 3)))


def test_iid_split_is_seeded_stratified_70_30():
    y = torch.arange(6).repeat_interleave(20)
    tr, te = clear.iid_split(y, 0.7, seed=3)
    tr2, te2 = clear.iid_split(y, 0.7, seed=3)
    assert torch.equal(tr, tr2) and torch.equal(te, te2)
    assert len(tr) == 84 and len(te) == 36
    assert set(tr.tolist()).isdisjoint(te.tolist()) and len(set(tr.tolist()) | set(te.tolist())) == 120
    assert torch.bincount(y[tr]).tolist() == [14] * 6
    assert not torch.equal(clear.iid_split(y, 0.7, seed=4)[0], tr)


def _toy_stream(T=4, n=30, C=3, D=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    buckets = []
    for t in range(T + 1):
        y = torch.arange(C).repeat(n // C)
        x = torch.randint(0, 256, (len(y), 3, 8, 8), generator=g, dtype=torch.uint8)
        buckets.append(clear.Bucket(t, x, y, torch.zeros(len(y), dtype=torch.int8)))
    return clear.Stream(buckets, tuple("abc"[:C]), "toy")


def test_streaming_protocol_trains_and_tests_on_whole_buckets():
    s = _toy_stream()
    st = clear.protocol_splits(s, "streaming")
    assert len(st) == 4 and all(len(tr) == len(te) == 30 for tr, te in st)
    iid = clear.protocol_splits(s, "iid", seed=0)
    assert all(len(tr) == 21 and len(te) == 9 for tr, te in iid)
    with pytest.raises(ValueError):
        clear.protocol_splits(s, "online")


# ---------------------------------------------------------------------------------------------
# buffers and losses


def test_reservoir_is_uniform_over_buckets_and_biased_prefers_recent():
    cap, T = 200, 5
    res, bia = clear.ReservoirBuffer(cap, seed=0), clear.ReservoirBuffer(cap, seed=0)
    for t in range(T):
        items = [(t, i) for i in range(cap)]
        res.add_reservoir(items)
        bia.add_biased(items, p=0.5)
    assert len(res) == len(bia) == cap
    c_res, c_bia = res.composition(T), bia.composition(T)
    assert np.allclose(c_res, 1 / T, atol=0.07)           # about 1/t from every bucket
    # a full buffer keeps exp(-p) of its items per bucket of `cap` offers: 0.61^4 = 0.14 of bucket 1
    assert c_bia[-1] > 0.3 and 0.08 < c_bia[0] < 0.2
    assert np.all(np.diff(c_bia[1:]) > 0)  # bucket 1 filled the empty buffer: it keeps more


def test_lwf_loss_is_zero_for_the_same_outputs_and_matches_kl():
    z = torch.randn(4, 6)
    assert clear.lwf_loss(z, z.clone(), T=2.0).abs() < 1e-6
    z_old = torch.randn(4, 6)
    T = 3.0
    p = F.softmax(z_old / T, 1)
    kl = (p * (p.log() - F.log_softmax(z / T, 1))).sum(1).mean() * T * T
    assert torch.allclose(clear.lwf_loss(z, z_old, T), kl, atol=1e-5)


def test_fisher_matches_per_sample_loop_and_penalty():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = torch.randn(7, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    f = clear.fisher_diagonal(model, x, batch_size=3, y=y)
    ref = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for k, p in model.named_parameters():
            ref[k] += p.grad ** 2 / len(x)
    for k, v in ref.items():
        assert torch.allclose(f[k], v, atol=1e-6)
    # the true Fisher (sampled labels) is deterministic given the seed
    a, b = clear.fisher_diagonal(model, x, seed=1), clear.fisher_diagonal(model, x, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    anchor = {k: p.detach().clone() for k, p in model.named_parameters()}
    assert clear.ewc_penalty(model, f, anchor) == 0
    with torch.no_grad():
        model[0].bias += 1.0
    assert torch.isclose(clear.ewc_penalty(model, f, anchor), f["0.bias"].sum())


def test_augment_batch_shifts_and_flips_per_image():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    out = clear.augment_batch(x.repeat(8, 1, 1, 1), pad=2, generator=g)
    assert out.shape == (16, 1, 6, 6)
    assert len({tuple(o.flatten().tolist()) for o in out[0::2]}) > 1  # different per image
    # pad 0 and no flip is the identity; a flip is a flip
    same = clear.augment_batch(x, pad=0, generator=torch.Generator().manual_seed(1))
    for i in range(2):
        assert torch.equal(same[i], x[i]) or torch.equal(same[i], x[i].flip(2))


# ---------------------------------------------------------------------------------------------
# the learner


def _separable(T=4, n=60, D=6, C=3, drift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(C, D, generator=g) * 3
    xs, ys = [], []
    for t in range(T):
        y = torch.arange(C).repeat(n // C)
        xs.append(means[y] + drift * t + 0.5 * torch.randn(len(y), D, generator=g))
        ys.append(y)
    return xs, ys


@pytest.mark.parametrize("method", clear.METHODS)
def test_every_method_learns_a_separable_stream(method):
    xs, ys = _separable()
    splits = [clear.iid_split(y, 0.7, seed=t) for t, y in enumerate(ys)]
    cfg = clear.LearnConfig(method=method, epochs=15, lr=0.05, batch_size=16, seed=0)
    torch.manual_seed(0)
    run = clear.run_protocol(lambda: nn.Linear(6, 3), xs, ys, splits, cfg)
    assert run.R.shape == (4, 4)
    assert run.metrics["in_domain"] > 90 and run.metrics["accuracy"] > 90
    if method in ("reservoir", "biased_reservoir", "er"):
        assert np.isclose(run.buffer[-1].sum(), 1.0)
        assert run.buffer[0][0] == 1.0  # after bucket 1 the buffer is bucket 1
    # deterministic (the learner seeds the model's initialisation itself)
    run2 = clear.run_protocol(lambda: nn.Linear(6, 3), xs, ys, splits, cfg)
    assert np.array_equal(run.R, run2.R)


def test_run_protocol_is_deterministic_and_finetuning_forgets_a_flip():
    # bucket 2 swaps the meaning of two clusters: finetuning then fails on bucket 1 (backward),
    # while a model trained only on a buffer dominated by bucket 1 still knows it
    xs, ys = _separable(T=2, n=90, seed=1)
    xs = [xs[0], xs[0].clone()]
    ys = [ys[0], torch.where(ys[0] == 0, 1, torch.where(ys[0] == 1, 0, ys[0]))]
    splits = [clear.iid_split(y, 0.7, seed=t) for t, y in enumerate(ys)]
    cfg = clear.LearnConfig(method="finetune", epochs=30, lr=0.05, batch_size=16, seed=0)
    make = lambda: nn.Linear(6, 3)
    torch.manual_seed(0)
    a = clear.run_protocol(make, xs, ys, splits, cfg)
    torch.manual_seed(0)
    b = clear.run_protocol(make, xs, ys, splits, cfg)
    assert np.array_equal(a.R, b.R)
    assert a.R[0, 0] > 95 and a.R[1, 1] > 95 and a.R[1, 0] < 50


def test_lwf_and_ewc_remember_more_than_finetuning():
    xs, ys = _separable(T=2, n=90, seed=2)
    xs = [xs[0], xs[0].clone()]
    ys = [ys[0], torch.where(ys[0] == 0, 1, torch.where(ys[0] == 1, 0, ys[0]))]
    splits = [clear.iid_split(y, 0.7, seed=t) for t, y in enumerate(ys)]
    make = lambda: nn.Linear(6, 3)
    out = {}
    for m, kw in (("finetune", {}), ("lwf", {"lwf_lambda": 5.0}), ("ewc", {"ewc_lambda": 1e6})):
        torch.manual_seed(0)
        cfg = clear.LearnConfig(method=m, epochs=10, lr=0.05, batch_size=16, seed=0, **kw)
        out[m] = clear.run_protocol(make, xs, ys, splits, cfg).R[1, 0]
    assert out["lwf"] > out["finetune"] + 10
    assert out["ewc"] > out["finetune"] + 10  # (a confident model has a tiny Fisher: lambda is large)


# ---------------------------------------------------------------------------------------------
# the stream


def test_variant_share_schedule():
    assert clear.variant_share("soccer", 10) == 0.0
    centre = clear.CONCEPTS["camera"][2]
    assert math.isclose(clear.variant_share("camera", centre), 0.5)
    shares = [clear.variant_share("camera", t) for t in range(11)]
    assert shares[0] < 0.01 and shares[-1] > 0.99 and all(np.diff(shares) > 0)
    assert clear.variant_share("camera", 10, drift=0.0) == 0.0


def test_world_stream_small(tmp_path):
    s = clear.make_world_stream(images_per_class=6, unlabeled_images=24, image_size=32, num_buckets=4,
                                seed=0, root=tmp_path)
    assert len(s.buckets) == 4 and s.class_names[0] == clear.BACKGROUND
    C = s.num_classes
    for b in s.labeled:
        assert b.images.dtype == torch.uint8 and b.images.shape[1:] == (3, 32, 32)
        assert torch.bincount(b.labels, minlength=C).tolist() == [6] * C
        assert (b.variant[b.labels == 0] == -1).all() and (b.variant[b.labels > 0] >= 0).all()
    assert len(s.buckets[0]) >= 24
    b = s.buckets[3]
    # the laptop concept at bucket 3 is half old, half new (sigmoid centre at 3)
    lap = list(clear.CONCEPTS).index("laptop") + 1
    assert b.variant[b.labels == lap].float().mean() == 0.5
    # deterministic, and cached renders give the same stream
    s2 = clear.make_world_stream(images_per_class=6, unlabeled_images=24, image_size=32, num_buckets=4,
                                 seed=0, root=tmp_path)
    assert all(torch.equal(a.images, c.images) and torch.equal(a.labels, c.labels)
               for a, c in zip(s.buckets, s2.buckets))


def test_load_clear_folder(tmp_path):
    from PIL import Image

    root = tmp_path / "train_image_only"
    names = ["BACKGROUND", "bus", "camera"]
    (root).mkdir()
    (root / "class_names.txt").write_text("\n".join(names) + "\n")
    rng = np.random.default_rng(0)
    for b in (1, 2, 10):
        for c, name in enumerate(names):
            d = root / "labeled_images" / str(b) / name
            d.mkdir(parents=True)
            for k in range(2 + c):
                arr = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{k}.jpg")
    ul = root / "unlabeled_images" / "0" / "x"
    ul.mkdir(parents=True)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(ul / f"{k}.png")
    s = clear.load_clear_folder(root, image_size=16)
    assert [b.index for b in s.buckets] == [0, 1, 2, 10]
    assert s.class_names == tuple(names)
    assert s.buckets[0].images.shape == (3, 3, 16, 16)
    assert s.buckets[1].labels.tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert s.buckets[3].images.dtype == torch.uint8 and s.buckets[3].images.shape == (9, 3, 16, 16)
    s2 = clear.load_clear_folder(root, image_size=16, max_per_class=1)
    assert len(s2.buckets[1]) == 3
    with pytest.raises(FileNotFoundError):
        clear.load_clear_folder(tmp_path / "nowhere")


def test_catalog_has_clear10_with_checksums():
    from course_lib import fetch

    cat = fetch.load_catalog()
    e = cat["clear10"]
    specs = fetch.file_specs(e)
    assert {s["filename"] for s in specs} == {"clear10-train-image-only.zip", "clear10-test.zip"}
    assert all(s["checksum"].startswith("md5:") for s in specs)
    assert "manual" in cat["clear10_unlabeled"]


def test_params_registered_and_validated():
    P = config.resolve("05_clear", profile="smoke")
    assert P.dataset == "world" and set(P.methods) == set(clear.METHODS)
    with pytest.raises(config.ParameterError):
        config.resolve("05_clear", profile="smoke", methods=("finetune", "gem"))
    with pytest.raises(config.ParameterError):
        config.resolve("05_clear", profile="smoke", bias_mode="beta")


def test_extract_features_uses_the_class_token():
    from course_lib.models.vit import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=4, embed_dim=24, depth=1, num_heads=2, num_classes=0)
    imgs = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    f = clear.extract_features(vit, imgs, batch_size=2)
    x = (imgs.float() / 255 - 0.5) / 0.25  # the world's statistics
    assert f.shape == (5, 24)
    assert torch.allclose(f, vit.eval().forward_features(x)[:, 0], atol=1e-5)


def test_headline_claims_pair_seeds_over_the_method_means():
    """Issue 17's ids: one value per seed (the mean over the methods), paired by seed, so n is
    the number of seeds, not methods x seeds."""
    from types import SimpleNamespace as NS

    from course_lib import config
    from course_lib.papers import clear

    P = config.resolve("05_clear", "smoke", resnet_seeds=3, linear_seeds=3)
    methods = ["finetune", "er"]
    rng = np.random.default_rng(0)
    runs = {}
    for family, shift in (("resnet", 0.0), ("linear", -4.0)):
        for protocol in ("iid", "streaming"):
            for m in methods:
                runs[(family, protocol, m)] = [
                    NS(metrics={"in_domain": 60 + shift + 5 + rng.normal(0, 0.3),
                                "next_domain": 50 + shift + (3 if protocol == "streaming" else 0)
                                + rng.normal(0, 0.3) + s})
                    for s in range(3)]
    res = {"runs": runs, "methods": methods, "families": ["resnet", "linear"], "stream": NS(num_classes=10)}
    rec = clear.recorder(P)
    rec.save = lambda *a, **k: None
    clear.experiment._record_headline(P, rec, res, methods)
    c = {x.id: x for x in rec.claims}
    for id_, verdict in (("clear_iid_overestimates", "reproduced"), ("clear_streaming_closes_gap", "reproduced"),
                         ("clear_pretrained_linear_wins", "not reproduced")):
        assert c[id_].headline and c[id_].n == 3 and c[id_].verdict == verdict, (id_, c[id_].evidence)
    assert c["resnet_iid_next_mean"].kind == "check"


def test_scaling_probe_moves_only_the_linear_arm(tmp_path, monkeypatch):
    """The probe of clear_pretrained_linear_wins: the ResNet does not use the DINO, so it trains
    once and its value repeats at every budget; the linear arm follows ssl_epochs."""
    from course_lib import config

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    P = config.resolve("05_clear", "smoke", resnet_seeds=1, methods=["finetune"])
    out = clear.scaling_probe(P, "clear_pretrained_linear_wins", factors=(1, 2), log=lambda *a: None)
    rows = out["rows"]
    assert [(r["factor"], r["budget"], r["arm"]) for r in rows] == [
        (1, 1, "ours"), (1, 1, "baseline"), (2, 2, "ours"), (2, 2, "baseline")]
    assert rows[1]["value"] == rows[3]["value"]
    with pytest.raises(ValueError, match="clear_pretrained_linear_wins"):
        clear.scaling_probe(P, "clear_iid_overestimates")
