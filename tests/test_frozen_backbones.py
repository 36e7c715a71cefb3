"""Notebook 08 (frozen backbones): strategies, adapters, parameter counts, timm loading."""
from __future__ import annotations


import pytest
import torch
import torch.nn as nn

from course_lib import config
from course_lib import detection as det
from course_lib.papers import frozen_backbones as fb

K = 3
S = 32


def tiny_body(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    body = det.ConvBackbone(widths=(8, 16, 32), blocks=1, norm="bn").body
    # pretend it was pre-trained: non-trivial BatchNorm statistics
    for m in body.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return body


def batch(n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, S, S, generator=g) for _ in range(n)]
    targets = [{"boxes": torch.tensor([[2.0, 3.0, 14.0, 16.0], [12.0, 10.0, 30.0, 28.0]]),
                "labels": torch.tensor([1, 3])} for _ in range(n)]
    return images, targets


def detector(body, strategy, capacity="low"):
    return fb.build_strategy_detector(body, strategy, capacity, K, masks=False, image_size=S)


def one_step(model):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    model.train()  # what det.train_detector does every epoch
    images, targets = batch()
    loss = sum(model(images, targets).values())
    opt.zero_grad()
    loss.backward()
    opt.step()
    return model


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    after = module.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_frozen_keeps_weights_and_batchnorm_statistics():
    model = detector(tiny_body(), "frozen")
    body_before, neck_before = state(model.backbone.body), state(model.backbone.neck)
    one_step(model)
    assert model.training and not model.backbone.body.training  # BN stays in eval mode
    assert changed(body_before, model.backbone.body) == set()   # weights and running stats
    assert changed(neck_before, model.backbone.neck)            # the rest trains
    assert all(not p.requires_grad for p in model.backbone.body.parameters())


def test_finetune_changes_weights_and_statistics():
    model = detector(tiny_body(), "finetune")
    before = state(model.backbone.body)
    one_step(model)
    diff = changed(before, model.backbone.body)
    assert any(k.endswith("running_mean") for k in diff)
    assert any(k.endswith("conv1.weight") for k in diff)


def test_adapters_start_as_identity_and_get_gradients():
    body = tiny_body()
    frozen = fb.build_backbone(body, "frozen", "low").eval()
    adapted = fb.build_backbone(body, "adapters", "low").eval()
    adapted.neck.load_state_dict(frozen.neck.state_dict())
    x = torch.rand(2, 3, S, S)
    for a, b in zip(frozen(x).values(), adapted(x).values()):
        torch.testing.assert_close(a, b)
    for ad in adapted.adapters:
        assert torch.count_nonzero(ad.up.weight) == 0
    model = detector(body, "adapters")
    images, targets = batch()
    model.train()
    sum(model(images, targets).values()).backward()
    assert all(ad.up.weight.grad is not None and ad.up.weight.grad.abs().sum() > 0
               for ad in model.backbone.adapters)
    assert all(p.grad is None for p in model.backbone.body.parameters())
    one_step(model)  # after a step the adapters are no longer the identity
    assert any(torch.count_nonzero(ad.up.weight) > 0 for ad in model.backbone.adapters)


def test_residual_adapter_shape_and_zero_init():
    ad = fb.ResidualAdapter(16, reduction=4)
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(ad(x), x)
    assert ad.down.out_channels == 4


@pytest.mark.parametrize("capacity", ["low", "high"])
def test_trained_parameter_counts(capacity):
    body = tiny_body()
    n_body = sum(p.numel() for p in body.parameters())
    c = {s: fb.count_parameters(detector(body, s, capacity)) for s in fb.STRATEGIES}
    assert c["finetune"]["trained"] == c["finetune"]["total"] == c["scratch"]["total"]
    assert c["frozen"]["total"] == c["finetune"]["total"]
    assert c["frozen"]["trained"] == c["frozen"]["total"] - n_body == c["frozen"]["after"]
    n_adapt = sum(2 * ch * max(4, ch // 4) + ch + 2 * max(4, ch // 4) for ch in body.channels)
    assert c["adapters"]["adapters"] == n_adapt
    assert c["adapters"]["trained"] == c["frozen"]["trained"] + n_adapt
    assert det.trainable_parameters(detector(body, "frozen", capacity)) == c["frozen"]["trained"]


def test_high_capacity_has_more_after_the_backbone():
    body = tiny_body()
    low = fb.count_parameters(detector(body, "frozen", "low"))
    high = fb.count_parameters(detector(body, "frozen", "high"))
    assert high["after"] > 2 * low["after"]
    assert high["backbone"] == low["backbone"]


def test_scratch_reinitialises_and_leaves_the_pretrained_body_alone():
    body = tiny_body()
    before = state(body)
    scratch = detector(body, "scratch").backbone.body
    fine = detector(body, "finetune").backbone.body
    conv = "stages.1.0.conv1.weight"
    assert not torch.equal(scratch.state_dict()[conv], before[conv])
    torch.testing.assert_close(fine.state_dict()[conv], before[conv])
    bn = [k for k in before if k.endswith("running_var")][0]
    assert torch.all(scratch.state_dict()[bn] == 1)            # statistics reset
    assert changed(before, body) == set()                       # the original is untouched
    # re-initialised weights keep the Kaiming scale of a fresh body
    w = scratch.state_dict()[conv]
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    assert abs(w.std().item() - (2 / fan_out) ** 0.5) < 0.3 * (2 / fan_out) ** 0.5


def test_training_memory_is_smaller_when_frozen():
    body = tiny_body()
    images, targets = batch()
    mem = {s: fb.training_memory(detector(body, s), images, targets) for s in ("finetune", "frozen")}
    assert mem["frozen"]["activations"] < mem["finetune"]["activations"]
    assert mem["frozen"]["gradients"] < mem["finetune"]["gradients"]
    assert mem["frozen"]["total"] < mem["finetune"]["total"]


def test_train_detector_keeps_frozen_body_in_eval():
    model = detector(tiny_body(), "frozen")
    before = state(model.backbone.body)
    ds = [(im, {**t, "boxes": t["boxes"]}) for im, t in zip(*batch(4))]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=det.collate)
    det.train_detector(model, loader, det.DetTrainConfig(epochs=1, warmup_iters=0), device="cpu",
                       progress=False)
    assert changed(before, model.backbone.body) == set()


def test_load_timm_body_roundtrip(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    body = fb.load_timm_body("resnet18", path).eval()
    x = torch.randn(1, 3, 64, 64)
    feats = ref.forward_features(x)
    y = body.stem(x)
    for st in body.stages:
        y = st(y)
    torch.testing.assert_close(y, feats)
    assert body.channels == [64, 128, 256, 512]
    with pytest.raises(FileNotFoundError, match="weights"):
        fb.load_timm_body("resnet18", tmp_path / "missing.pth")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a truncated download names the file
    with pytest.raises(RuntimeError, match=r"(?s)resnet18 weights .*resnet18\.pth.*damaged"):
        fb.load_timm_body("resnet18", path)


def test_parameters_resolve_and_fail_fast():
    P = config.resolve("08_frozen_backbones", profile="smoke")
    assert set(P.strategies) == set(fb.STRATEGIES) and P.dataset == "world"
    assert fb.grid(P).count(("adapters", "low")) == 0
    with pytest.raises(config.ParameterError):
        config.resolve("08_frozen_backbones", profile="smoke", strategies=("frozen", "melted"))
    with pytest.raises(config.ParameterError):
        config.resolve("08_frozen_backbones", profile="smoke", capacities=())


def test_paper_numbers_are_consistent():
    t3 = fb.PAPER["table3"]
    for row in t3.values():
        assert abs(100 * row["trained_m"] / row["params_m"] - row["trained_pct"]) < 0.2
    t1 = fb.PAPER["table1"]
    assert t1["R101 + FPN"]["frozen"] - t1["R101 + FPN"]["finetune"] == pytest.approx(-6.5)


def _fake_runs(box: dict, masks: bool):
    from types import SimpleNamespace as NS

    def run(s, c, seed):
        b = box[(s, c)] + 0.01 * seed  # three seeds, the same small offset in every arm
        summary = {"bbox": {"AP": b}, **({"segm": {"AP": b / 2}} if masks else {})}
        metrics = NS(summary=summary, tiers={"bbox": {"rare": b, "common": b, "frequent": b}})
        return NS(strategy=s, capacity=c, seed=seed, metrics=metrics, params={"trained": 1, "total": 2},
                  memory={"total": 10.0 if s in ("frozen", "adapters") else 20.0}, images_per_s=50.0)

    return {k: [run(*k, seed) for seed in range(3)] for k in box}


def test_mask_claims_judge_mask_ap_with_the_box_rules():
    P = config.resolve("08_frozen_backbones", "smoke")
    box = {("scratch", "low"): 8.0, ("finetune", "low"): 20.0, ("frozen", "low"): 13.0,
           ("scratch", "high"): 14.0, ("finetune", "high"): 24.0, ("frozen", "high"): 28.0,
           ("adapters", "high"): 28.4}
    for masks in (True, False):
        rec = fb.recorder(P)
        rec.save = lambda *a, **k: None
        fb.record_results(P, {"runs": _fake_runs(box, masks)}, rec)
        c = {x.id: x for x in rec.claims}
        if not masks:
            assert not any(k.endswith("_mask") for k in c)
            continue
        assert c["frozen_low_mask"].ours == pytest.approx(6.505) and c["frozen_low_mask"].verdict == "reproduced"   # 6.5 < 10
        assert c["finetune_high_mask"].ours == pytest.approx(12.005) and c["finetune_high_mask"].verdict == "reproduced"  # > 7
        assert c["frozen_high_mask"].ours == pytest.approx(14.005) and c["frozen_high_mask"].verdict == "reproduced"  # > 12 + 1
        assert c["adapters_high_mask"].verdict == "reproduced"  # +0.2 on each of 3 paired seeds: no margin needed
        for k in ("frozen_low_mask", "finetune_high_mask", "frozen_high_mask", "adapters_high_mask"):
            assert "paired" in c[k].evidence and c[k].seeds == [0, 1, 2], k
        assert c["scratch_high_mask"].kind == "reference"
        h = c["frozen_high_beats_finetune"]
        assert h.verdict == "reproduced" and h.ours == pytest.approx(28.01) and h.headline
    # without the scratch cells the fine-tuned mask AP is only the baseline row of frozen_high_mask
    rec = fb.recorder(P)
    rec.save = lambda *a, **k: None
    fb.record_results(P, {"runs": _fake_runs({k: v for k, v in box.items() if k[0] != "scratch"}, True)}, rec)
    c = {x.id: x for x in rec.claims}
    assert c["finetune_high_mask"].kind == "reference" and "scratch_high_mask" not in c
    assert c["frozen_high_mask"].verdict == "reproduced" and "paired" in c["frozen_high_mask"].evidence


def test_headline_claims_pair_cells_seed_by_seed():
    """Issue 18's four ids, each judged on per-seed differences with a reference row."""
    P = config.resolve("08_frozen_backbones", "study")
    assert P.seeds == 3 and not P.masks
    box = {("finetune", "low"): 20.0, ("frozen", "low"): 13.0, ("finetune", "high"): 24.0,
           ("frozen", "high"): 23.5, ("adapters", "high"): 23.0}
    runs = _fake_runs(box, masks=False)
    for i, r in enumerate(runs[("frozen", "high")]):  # rare classes gain, frequent ones lose, per seed
        r.metrics.tiers["bbox"].update(rare=30.0 + i, frequent=20.0 - i)
    rec = fb.recorder(P)
    rec.save = lambda *a, **k: None
    fb.record_results(P, {"runs": runs}, rec)
    c = {x.id: x for x in rec.claims}
    assert {x.id for x in rec.claims if x.headline} == set(fb.HEADLINE)
    # -0.5 on every seed: inside the one-sided tolerance of 1 AP
    assert c["frozen_high_beats_finetune"].verdict == "reproduced"
    assert "paired" in c["frozen_high_beats_finetune"].evidence
    assert c["frozen_capacity_helps"].verdict == "reproduced"          # 23.5 vs 13.0
    assert c["frozen_helps_rare_most"].verdict == "reproduced"         # rare +6/+7/+8 vs frequent -4/-5/-6
    assert c["frozen_adapters_help"].verdict == "not reproduced"       # -0.5 on every seed
    assert c["box_frozen_low"].kind == "reference" and len(c["box_frozen_low"].runs) == 3
    assert c["box_frozen_low"].verdict == "reported"
    # no scratch cells: no "fine-tuning beats scratch" claim, only the reference row
    assert "finetune_high" not in c and c["box_finetune_high"].kind == "reference"
    # the cost rows pair the two strategies seed by seed too
    assert c["memory_frozen"].verdict == "reproduced" and "paired" in c["memory_frozen"].evidence  # 10 vs 20 MiB
    assert c["memory_finetune"].kind == "reference" and c["memory_frozen"].n == 3
    assert c["speed_frozen"].verdict == "not reproduced" and "paired" in c["speed_frozen"].evidence  # 50 vs 50
    from course_lib.results import takeaways
    text = str(takeaways(rec, fb.TAKEAWAYS))
    assert "frozen_capacity_helps" in text and "AP box AP" not in text and "pp box AP" not in text
