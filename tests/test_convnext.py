"""ConvNeXt: the readable model vs. timm, the modernization ladder vs. torchvision / timm / the
paper's FLOPs, the step explorer text, the notebook's parameters and a smoke run of the ladder."""
from __future__ import annotations

import re

import pytest
import timm
import torch
import torchvision
from torch import nn

from course_lib import config
from course_lib.papers import convnext
from course_lib.papers.convnext import LADDER, STEP_KEYS, LadderConfig, LadderNet
from course_lib.models.convnext import (
    CheckpointMismatchError,
    ConvNeXt,
    LayerNorm2d,
    create_convnext,
    load_pretrained,
    load_timm_state_dict,
)
from course_lib.results import REPRODUCED, VERDICTS


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests run many small ops on tiny tensors, where a second intra-op thread only adds
    synchronisation, and on a shared 2-core machine a waiting second thread made this module
    5x slower (measured: 95 s vs. 18 s). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random norm weights, biases, layer scales and BN statistics: at their initial values (1, 0,
    1e-6) a wrong mapping of those tensors would go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.ndim != 1 or not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.add_(0.3 * torch.randn(t.shape, generator=g))
    return model.eval()


def _load_by_order(dst: nn.Module, src: nn.Module) -> None:
    """Copy ``src``'s state dict into ``dst`` position by position (reshaping 2-D <-> 1x1 conv)."""
    d, s = dst.state_dict(), src.state_dict()
    assert len(d) == len(s)
    out = {}
    for (kd, vd), (ks, vs) in zip(d.items(), s.items(), strict=True):
        assert vd.numel() == vs.numel(), f"{kd} {tuple(vd.shape)} vs {ks} {tuple(vs.shape)}"
        out[kd] = vs.reshape(vd.shape)
    dst.load_state_dict(out)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# the readable ConvNeXt vs. timm


def _random_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill a model made on the meta device with random weights (cheaper than its own init)."""
    model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(1.0 if t.ndim == 1 else 0.0)
                if t.ndim > 1:
                    t.normal_(0, 0.02, generator=g)
            else:
                t.zero_()
    return _perturb(model, seed)


@pytest.mark.parametrize("name", ["convnext_tiny", "convnext_atto"])
def test_timm_state_dict_gives_timm_logits(name):
    with torch.device("meta"):  # no init of 28M parameters, twice
        ref = timm.create_model(name, pretrained=False)
        ours = create_convnext(name).eval()
    ref = _random_weights(ref)
    ours.to_empty(device="cpu")
    assert _params(ours) == _params(ref)
    result = load_timm_state_dict(ours, ref.state_dict())
    if name == "convnext_atto":  # conv_mlp variant: 1x1-conv MLP weights [out, in, 1, 1]
        assert ref.stages[0].blocks[0].mlp.fc1.weight.ndim == 4
        assert any("reshaped" in n for n in result.notes)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-4, rtol=0)


def test_timm_parameter_names():
    names = set(create_convnext("convnext_atto").state_dict())
    for key in ("stem.0.weight", "stem.1.weight", "stages.1.downsample.0.weight", "stages.1.downsample.1.weight",
                "stages.2.blocks.5.conv_dw.weight", "stages.0.blocks.0.norm.bias", "stages.3.blocks.1.mlp.fc1.weight",
                "stages.3.blocks.1.mlp.fc2.bias", "stages.0.blocks.1.gamma", "head.norm.weight", "head.fc.weight"):
        assert key in names
    assert not any(k.startswith("stages.0.downsample") for k in names)


def test_layernorm2d_is_the_official_channels_first_layernorm():
    torch.manual_seed(0)
    ln = LayerNorm2d(8)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(2, 8, 5, 5) * 3 + 1
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)  # biased variance
    official = ln.weight[:, None, None] * (x - u) / torch.sqrt(s + 1e-6) + ln.bias[:, None, None]
    assert torch.allclose(ln(x), official, atol=1e-5)


def test_init_layer_scale_head_scale_and_drop_path():
    torch.manual_seed(0)
    a = create_convnext("convnext_course", head_init_scale=1.0, drop_path_rate=0.2)
    torch.manual_seed(0)
    b = create_convnext("convnext_course", head_init_scale=0.25)
    assert torch.allclose(b.head.fc.weight, 0.25 * a.head.fc.weight)
    blocks = [blk for stage in a.stages for blk in stage.blocks]
    assert all(torch.all(blk.gamma == 1e-6) for blk in blocks)
    # layer scale 1e-6: every block starts as (almost) the identity
    x = torch.randn(2, 24, 8, 8)
    with torch.no_grad():
        assert (blocks[0].eval()(x) - x).abs().max() < 1e-4
    # stochastic depth rises linearly from 0 (first block) to the rate (last block)
    assert isinstance(blocks[0].drop_path, nn.Identity)
    assert blocks[-1].drop_path.drop_prob == pytest.approx(0.2)
    assert blocks[3].drop_path.drop_prob == pytest.approx(0.2 * 3 / (len(blocks) - 1))


def test_loader_head_handling_and_mismatch_errors(tmp_path):
    torch.manual_seed(0)
    ref = _perturb(timm.create_model("convnext_atto", pretrained=False, num_classes=5))
    sd = ref.state_dict()
    ours = create_convnext("convnext_atto", num_classes=7)
    with pytest.raises(CheckpointMismatchError, match="drop_head=True"):
        load_timm_state_dict(ours, sd)
    own_fc = ours.head.fc.weight.clone()
    load_timm_state_dict(ours, sd, drop_head=True)
    assert torch.equal(ours.head.fc.weight, own_fc)                     # own classifier kept
    assert torch.equal(ours.head.norm.weight, sd["head.norm.weight"])   # the head's norm loaded
    assert torch.equal(ours.stages[2].blocks[0].mlp.fc1.weight, sd["stages.2.blocks.0.mlp.fc1.weight"][..., 0, 0])

    # a backbone checkpoint (timm num_classes=0) has head.norm but no classifier
    backbone = _perturb(timm.create_model("convnext_atto", pretrained=False, num_classes=0)).state_dict()
    assert not any(k.startswith("head.fc") for k in backbone)
    res = load_timm_state_dict(ours, backbone)
    assert torch.equal(ours.head.fc.weight, own_fc) and "has none" in str(res)

    broken = {k: v for k, v in sd.items() if k != "stages.2.blocks.3.gamma"}
    with pytest.raises(CheckpointMismatchError, match=r"missing: stages\.2\.blocks\.3\.gamma"):
        load_timm_state_dict(create_convnext("convnext_atto", num_classes=5), broken)
    res = load_timm_state_dict(create_convnext("convnext_atto", num_classes=5), {**broken, "extra.w": torch.ones(1)},
                               strict=False)
    assert res.missing_keys == ["stages.2.blocks.3.gamma"] and res.unexpected_keys == ["extra.w"]
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        load_timm_state_dict(create_convnext("convnext_femto", num_classes=5), sd)


def _to_official_names(sd: dict) -> dict:
    """timm names -> facebookresearch/ConvNeXt names (the inverse of what the loader does)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("stem.", "downsample_layers.0.")
        k = re.sub(r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", k)
        k = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", k)
        k = k.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        k = k.replace("head.norm.", "norm.").replace("head.fc.", "head.")
        out[k] = v
    return out


def test_load_pretrained_files_and_official_names(tmp_path):
    torch.manual_seed(0)
    ref = _perturb(create_convnext("convnext_course", num_classes=10))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = ref(x)
    for i, blob in enumerate(({"model": _to_official_names(ref.state_dict())},
                              {"state_dict": ref.state_dict()})):
        path = tmp_path / f"ckpt{i}.pth"
        torch.save(blob, path)
        model = create_convnext("convnext_course", num_classes=10).eval()
        load_pretrained(model, path)
        with torch.no_grad():
            assert torch.allclose(model(x), expected, atol=1e-6)
    with pytest.raises(FileNotFoundError):
        load_pretrained(model, tmp_path / "missing.pth")


# ---------------------------------------------------------------------------------------------
# the ladder


def test_first_step_is_torchvision_resnet50():
    with torch.device("meta"):
        ours = convnext.build_step(0).eval()
        ref = torchvision.models.resnet50(num_classes=1000)
    ref = _random_weights(ref)
    ours.to_empty(device="cpu")
    assert isinstance(ours, LadderNet)
    assert _params(ours) == _params(ref) == 25_557_032
    _load_by_order(ours, ref)  # shapes agree position by position: same layers, same order
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-4, rtol=1e-4)
    # the stride sits on the 3x3 conv (torchvision's "ResNet v1.5"): the MACs agree exactly
    assert convnext.complexity(0) == convnext.complexity(ref)


def test_last_step_is_convnext_tiny():
    with torch.device("meta"):
        ref = timm.create_model("convnext_tiny", pretrained=False)
        ours = convnext.build_step("separate_downsampling")
    assert isinstance(ours, ConvNeXt)
    assert _params(ours) == _params(ref) == 28_589_128
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert convnext.ladder_config(-1).is_convnext()
    assert not any(convnext.ladder_config(i).is_convnext() for i in range(len(LADDER) - 1))


def test_generic_ladder_block_reaches_convnext():
    """The LadderNet machinery, forced to build the last step, is the same function as ConvNeXt."""
    cfg = convnext.ladder_config(-1, "course")
    torch.manual_seed(0)
    ref = _perturb(convnext.build_model(cfg, 10))
    generic = LadderNet(cfg, num_classes=10).eval()
    assert isinstance(ref, ConvNeXt) and _params(generic) == _params(ref)
    _load_by_order(generic, ref)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(generic(x), ref(x), atol=1e-5)


def test_each_step_changes_what_it_says():
    assert [s.key for s in LADDER] == list(STEP_KEYS) and len(LADDER) == 13
    for scale in convnext.SCALES:
        for i in range(1, len(LADDER)):
            a, b = convnext.ladder_config(i - 1, scale), convnext.ladder_config(i, scale)
            changed = {f for f in LadderConfig.__dataclass_fields__ if getattr(a, f) != getattr(b, f)}
            assert changed == set(LADDER[i].changes), (scale, LADDER[i].key)
    course = [convnext.ladder_config(k, "course") for k in ("resnet50", "stage_ratio", "width")]
    assert course[0].depths == (1, 1, 2, 1) and course[1].depths == (1, 1, 3, 1)
    assert course[0].widths == (16, 32, 64, 128) and course[2].widths == (24, 48, 96, 192)
    assert convnext.ladder_config(0, "course").stem_stride == 2
    assert convnext.ladder_config(0, "course", stem_stride=4).stem_stride == 4


def test_paper_numbers():
    top1 = [s.paper_top1 for s in LADDER]
    assert top1 == [78.8, 79.4, 79.5, 78.3, 80.5, 80.6, 79.9, 80.6, 80.6, 81.3, 81.4, 81.5, 82.0]
    assert convnext.PAPER["kernel_size_top1"][7] == LADDER[convnext.step_index("kernel_7")].paper_top1
    assert convnext.PAPER["models"]["convnext_tiny"]["params_m"] == 28.6


def test_macs_match_the_papers_flops_at_every_step():
    table = convnext.complexity_table()  # 224 px, 1000 classes, built on the meta device
    known = table.dropna(subset=["paper_gflops"])
    assert len(known) == 9
    # our multiply-adds are the paper's "FLOPs" to the paper's rounding (one decimal)
    assert ((known.gmacs - known.paper_gflops).abs() <= 0.06).all(), known
    assert table.loc[0, "params_m"] == pytest.approx(25.557, abs=1e-3)
    assert table.loc[12, "params_m"] == pytest.approx(28.589, abs=1e-3)
    sizes = convnext.model_sizes()
    for name, (params, gmacs) in sizes.items():
        paper = convnext.PAPER["models"][name]
        assert params / 1e6 == pytest.approx(paper["params_m"], rel=0.01)
        assert gmacs == pytest.approx(paper["gflops"], rel=0.02)


def test_flop_counter_reports_multiply_adds():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    params, gmacs = convnext.complexity(conv, image_size=16)
    assert params == 8 * 3 * 9
    assert gmacs * 1e9 == pytest.approx(8 * 3 * 9 * 16 * 16)  # one per multiply-add


def test_every_course_step_trains_all_its_parameters():
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 3])
    for i, step in enumerate(LADDER):
        model = convnext.build_step(i, num_classes=10, scale="course", drop_path_rate=0.1)
        out = model(x)
        assert out.shape == (2, 10)
        nn.functional.cross_entropy(out, y).backward()
        unused = [n for n, p in model.named_parameters() if p.grad is None]
        assert not unused, (step.key, unused)


def test_config_validation():
    with pytest.raises(ValueError, match="spatial_first"):
        LadderConfig(acts_per_block=1)
    with pytest.raises(ValueError, match="stem='vit'"):
        LadderConfig(stem="vit")
    with pytest.raises(ValueError, match="kernel_size"):
        LadderConfig(kernel_size=4)
    with pytest.raises(KeyError, match="unknown ladder step"):
        convnext.ladder_config("bigger_kernel")
    with pytest.raises(IndexError):
        convnext.step_index(13)
    with pytest.raises(ValueError, match="scale"):
        convnext.ladder_config(0, "cifar")


def test_describe_and_compare():
    first = convnext.describe(0)
    assert "conv 7x7 s2, 3→64 ─ BN ─ ReLU ─ maxpool 3x3 s2" in first
    assert "conv 3x3, 64→64 ─ BN ─ ReLU" in first and "+ x ─ ReLU" in first
    last = convnext.describe("separate_downsampling")
    assert "dwconv 7x7, 96 ─ LN" in last and "conv 1x1, 96→384 ─ GELU" in last
    assert "LN ─ conv 2x2 s2" in last and "global average pool ─ LN" in last and "ReLU" not in last
    block = convnext.block_lines(convnext.ladder_config("fewer_norms"))
    assert sum(line.count("BN") for line in block) == 1 and sum(line.count("GELU") for line in block) == 1

    c = convnext.compare("kernel_7", "gelu")
    assert c.changes == {"act": ("relu", "gelu")} and c.params_diff == 0 and c.gmacs_diff == 0
    c = convnext.compare("resnet50", "stage_ratio")
    assert c.changes == {"depths": ((3, 4, 6, 3), (3, 3, 9, 3))}
    assert c.gmacs_diff == pytest.approx(0.437, abs=0.01) and c.params_diff > 0
    assert "78.8 → 79.4 (+0.6)" in str(c)


# ---------------------------------------------------------------------------------------------
# the notebook


def test_fan_in_init_and_layer_scale_parameter(monkeypatch):
    """The course's init: PyTorch's default for every conv/linear layer (a branch without a
    closing norm starts audible), and the notebook's layer scale replaces the paper's 1e-6."""
    for i in (0, 10, 12):
        torch.manual_seed(0)
        tn = convnext.build_step(i, num_classes=6, scale="course")
        torch.manual_seed(0)
        fi = convnext.build_step(i, num_classes=6, scale="course", init="fan_in")
        assert type(tn) is type(fi)
        convs = [(a.weight, b.weight) for a, b in zip(tn.modules(), fi.modules(), strict=True)
                 if isinstance(a, nn.Linear) or (isinstance(a, nn.Conv2d) and a.kernel_size == (1, 1)
                                                 and a.groups == 1)]
        assert convs
        for w_tn, w_fi in convs:
            assert w_tn.std().item() == pytest.approx(0.02, rel=0.3)  # truncated normal, std 0.02
            fan_in = w_fi[0].numel()
            assert w_fi.std().item() == pytest.approx((3 * fan_in) ** -0.5, rel=0.3)  # kaiming_uniform(a=sqrt(5))
    with pytest.raises(ValueError, match="init"):
        convnext.build_step(0, init="xavier")

    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    P = config.resolve("04_convnext", profile="study")
    assert P.init == "fan_in" and P.layer_scale == 1.0
    assert convnext.run_config(P, -1).layer_scale == 1.0
    assert convnext.run_config(P, "layer_norm").layer_scale is None  # steps without layer scale keep none
    model = convnext.build_model(convnext.run_config(P, -1), 6, init=P.init)
    assert all(torch.all(blk.gamma == 1.0) for stage in model.stages for blk in stage.blocks)
    paper = config.resolve("04_convnext", profile="paper")
    assert paper.init == "trunc_normal" and convnext.run_config(paper, -1).layer_scale == 1e-6


def test_groups_follow_figure_2():
    assert list(convnext.GROUPS) == list(STEP_KEYS)
    assert convnext.GROUPS["resnet50"] == "baseline" and convnext.GROUPS["separate_downsampling"] == "micro design"


def test_parameters(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    P = config.resolve("04_convnext", profile="smoke")
    assert P.max_steps == 6 and P.steps == "all" and convnext.selected_steps(P) == list(STEP_KEYS)
    P = config.resolve("04_convnext", profile="smoke", steps=["separate_downsampling", 0])
    assert convnext.selected_steps(P) == ["resnet50", "separate_downsampling"]
    # papermill's -p passes strings: a comma-separated list of keys or indices
    P = config.resolve("04_convnext", profile="smoke", steps="12, 0,layer_norm")
    assert convnext.selected_steps(P) == ["resnet50", "layer_norm", "separate_downsampling"]
    for bad in ("", "0,13", "resnet101"):
        with pytest.raises(config.ParameterError, match="'steps'"):
            config.resolve("04_convnext", profile="smoke", steps=bad)
    with pytest.raises(config.ParameterError, match="'steps'"):
        config.resolve("04_convnext", profile="smoke", steps=["resnet50", "resnet101"])
    with pytest.raises(config.ParameterError, match="'image_size'"):
        config.resolve("04_convnext", profile="smoke", image_size=48)


def test_imagenette_missing_names_the_download(monkeypatch, tmp_path):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    P = config.resolve("04_convnext", profile="smoke", dataset="imagenette", data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="imagenette2-160"):
        convnext.load_data(P)


def test_run_ladder_smoke_and_record(monkeypatch, tmp_path):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("COURSE_WORKERS", "0")
    P = config.resolve("04_convnext", profile="smoke", steps=["resnet50", "separate_downsampling"],
                       train_images=64, eval_images=64, batch_size=32, max_steps=2,
                       data_root=str(tmp_path / "data"))
    P["device_resolved"] = "cpu"
    logs = []
    res = convnext.run_ladder(P, log=logs.append)
    assert res["steps"] == ["resnet50", "separate_downsampling"] and len(logs) == 2
    assert all(len(res["top1"][k]) == 1 and 0 <= res["top1"][k][0] <= 100 for k in res["steps"])
    assert res["params"]["separate_downsampling"] == convnext.complexity(
        convnext.ladder_config(-1, "course"), 32, 6)[0]
    assert not any(r.from_cache for runs in res["runs"].values() for r in runs)
    again = convnext.run_ladder(P, d=res["data"], log=logs.append)
    assert all(r.from_cache for runs in again["runs"].values() for r in runs)
    assert again["top1"] == res["top1"]

    rec = convnext.record_results(P, res)
    ids = [c.id for c in rec.claims]
    assert {"acc_resnet50", "acc_separate_downsampling", "delta_separate_downsampling",
            "convnext_beats_resnet", "params_resnet50", "params_convnext_tiny"} <= set(ids)
    assert all(c.verdict in VERDICTS for c in rec.claims)
    size_claims = [c for c in rec.claims if c.id.startswith(("gflops_", "params_"))]
    assert len(size_claims) == 9 + 1 + 8
    assert all(c.verdict == REPRODUCED for c in size_claims), [(c.id, c.ours) for c in size_claims]
    assert (tmp_path / "results" / "04_convnext" / "smoke.json").is_file()


def test_record_results_single_seed_spread_and_verdicts(monkeypatch, tmp_path):
    """One seed per step: no spread is assumed, so every claim is inconclusive (scoreboard v2
    needs 3 paired seeds); with 3 seeds the paired differences decide."""
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path))
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    P = config.resolve("04_convnext", profile="smoke")
    keys = ["resnet50", "stage_ratio", "kernel_7", "gelu", "layer_norm", "separate_downsampling"]
    top1 = {"resnet50": [80.0], "stage_ratio": [81.0], "kernel_7": [78.0], "gelu": [78.5],
            "layer_norm": [60.0], "separate_downsampling": [60.5]}
    res = {"steps": keys, "top1": top1, "num_classes": 6}
    rec = convnext.record_results(P, res)
    v = {c.id: c.verdict for c in rec.claims}
    c = rec["acc_resnet50"]
    assert c.ours_std is None and c.n == 1 and "no spread" in c.note
    assert v["acc_resnet50"] == REPRODUCED                          # a check: far above chance
    assert rec["delta_layer_norm"].kind == "claim"
    assert v["delta_layer_norm"] == "inconclusive"                  # -18 pp, but one seed
    assert v["convnext_beats_resnet"] == "inconclusive"
    res["top1"] = {k: [x[0], x[0] + 0.2, x[0] - 0.2] for k, x in top1.items()}
    rec = convnext.record_results(P, res)
    assert rec["acc_resnet50"].n == 3 and rec["acc_resnet50"].ours_std == pytest.approx(0.2)
    assert rec["delta_stage_ratio"].verdict == REPRODUCED           # +1 pp, far beyond a 0.2 spread


def test_headline_ids_and_seed_steps(monkeypatch, tmp_path):
    """The three headline claims of issue 16 under their fixed ids; steps outside `seed_steps`
    run the first seed only, and a comparison with them stays inconclusive."""
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path))
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    P = config.resolve("04_convnext", profile="study")
    assert convnext.step_seeds(P, "resnet50") == list(range(P.seeds)) and convnext.step_seeds(P, "stage_ratio") == [0]
    P = config.resolve("04_convnext", profile="study", seeds=3)
    assert convnext.step_seeds(config.resolve("04_convnext", profile="study", seeds=3, seed_steps="all"), "gelu") == [0, 1, 2]
    with pytest.raises(config.ParameterError, match="seed_steps"):
        config.resolve("04_convnext", profile="study", seed_steps="0,99")
    # a step may carry its own seed count; a bad count fails at once, naming the form
    Pc = config.resolve("04_convnext", profile="study", seeds=3, seed_steps="0, gelu:6,9:4")
    assert [len(convnext.step_seeds(Pc, k)) for k in ("resnet50", "gelu", "fewer_activations", "patchify")] == [3, 6, 4, 1]
    with pytest.raises(config.ParameterError, match="'steps'"):  # a count means nothing for `steps`
        config.resolve("04_convnext", profile="study", steps="0:2,12")
    for bad in ("8:0", "8:x", "8:"):
        with pytest.raises(config.ParameterError, match="optional ':count'"):
            config.resolve("04_convnext", profile="study", seed_steps=bad)
    keys = list(convnext.STEP_KEYS)
    top1 = {k: [70.0 + i + 0.5 * ((j % 3) - 1) * (j > 0) for j in range(len(convnext.step_seeds(P, k)))]
            for i, k in enumerate(keys)}
    rec = convnext.record_results(P, {"steps": keys, "top1": top1, "num_classes": 6})
    ids = {c.id for c in rec.claims}
    assert "delta_fewer_activations" not in ids  # the same pair of runs as the headline claim
    for cid in ("convnext_beats_resnet", "convnext_resnextify_helps", "convnext_fewer_activations_helps"):
        assert rec[cid].headline and rec[cid].kind == "claim" and rec[cid].n >= 3
        assert rec[cid].verdict == REPRODUCED  # +2 / +12 points on every paired seed
    assert rec["convnext_fewer_activations_helps"].n == 10  # the study's own count for 8 -> 9
    assert rec["delta_gelu"].n == 1 and rec["delta_stage_ratio"].verdict == "inconclusive"


def test_scaling_probe_trains_both_steps_per_budget(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    P = config.resolve("04_convnext", profile="smoke", train_images=64, eval_images=64, max_steps=1,
                       batch_size=16, data_root=str(tmp_path / "data"))
    out = convnext.scaling_probe(P, "convnext_beats_resnet", factors=(1, 2), log=lambda s: None)
    rows = out["rows"]
    assert [(r["budget"], r["arm"]) for r in rows] == [(1, "ours"), (1, "baseline"), (2, "ours"), (2, "baseline")]
    assert all(0.0 <= r["value"] <= 100.0 for r in rows) and out["arms"]["baseline"] == "step 0 resnet50"
    with pytest.raises(ValueError, match="probe exists"):
        convnext.scaling_probe(P, "convnext_is_fast")
