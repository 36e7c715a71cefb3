import copy
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import config
from course_lib.papers import minivit as mv
from course_lib.models.vit import VisionTransformer, create_vit

TINY = {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 4, "num_heads": 2, "mlp_ratio": 2.0,
        "num_classes": 5}
TEACHER = {"img_size": 16, "patch_size": 4, "embed_dim": 48, "depth": 6, "num_heads": 3, "mlp_ratio": 2.0,
           "num_classes": 5}


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one intra-op thread beats two, above all on a shared 2-core machine
    (conftest's MKL_NUM_THREADS default gives torch every core even under OMP_NUM_THREADS=1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _x(b=3, side=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, side, side, generator=g)


# ---------------------------------------------------------------------------------------------
# weight sharing and transformation


def test_unshared_untransformed_minivit_is_the_vit():
    torch.manual_seed(0)
    vit = create_vit("course_tiny")
    x = _x(side=32)
    mini = mv.from_vit(vit, 1, attn_transform=False, mlp_transform=False)
    assert list(mini.state_dict()) == list(vit.state_dict())
    for mode in ("train", "eval"):
        getattr(vit, mode)(), getattr(mini, mode)()
        assert torch.equal(mini(x), vit(x))
    # built from the same seed, the constructor draws exactly the same weights
    torch.manual_seed(1)
    a = mv.MiniViT(1, attn_transform=False, mlp_transform=False, **mv.preset_config("course_tiny"))
    torch.manual_seed(1)
    b = create_vit("course_tiny")
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    # a distilled (two-token) ViT too
    vd = create_vit("course_tiny_distilled").eval()
    assert torch.equal(mv.from_vit(vd, 1, attn_transform=False, mlp_transform=False).eval()(x), vd(x))


def test_identity_transforms_start_as_the_shared_vit():
    torch.manual_seed(0)
    vit = VisionTransformer(**TINY).eval()
    x = _x()
    plain = mv.from_vit(vit, 2, attn_transform=False, mlp_transform=False).eval()
    mux = mv.from_vit(vit, 2).eval()  # identity-initialised transforms
    assert torch.allclose(mux(x), plain(x), atol=1e-5)
    for a, b in zip(mux.get_attention(x), plain.get_attention(x)):
        assert torch.allclose(a, b, atol=1e-6)
    # with share_every=1 and identity transforms: the original ViT
    assert torch.allclose(mv.from_vit(vit, 1).eval()(x), vit(x), atol=1e-5)
    # the official init does change the function
    official = mv.from_vit(vit, 2, transform_init="official").eval()
    assert not torch.allclose(official(x), plain(x), atol=1e-3)


def test_shared_weights_are_one_tensor_with_gradients_from_every_layer():
    torch.manual_seed(0)
    mini = mv.MiniViT(2, attn_transform=False, mlp_transform=False, **TINY)
    b = mini.blocks
    assert b[0].attn.qkv is b[1].attn.qkv and b[0].attn.proj is b[1].attn.proj and b[0].mlp is b[1].mlp
    assert b[2].attn.qkv is b[3].attn.qkv and b[1].attn.qkv is not b[2].attn.qkv
    assert b[0].norm1 is not b[1].norm1 and b[0].norm2 is not b[1].norm2  # norms are per layer
    assert mini.groups() == [[0, 1], [2, 3]] and mini.num_groups == 2
    # an untied copy: every layer has its own tensors holding the shared values
    untied = VisionTransformer(**TINY)
    untied.load_state_dict(mini.state_dict())  # shared weights appear under every layer's name
    x, y = _x(), torch.tensor([0, 1, 2])
    F.cross_entropy(mini(x), y).backward()
    F.cross_entropy(untied(x), y).backward()
    for name in ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.bias"):
        shared = mini.get_parameter(f"blocks.0.{name}").grad
        per_layer = [untied.get_parameter(f"blocks.{i}.{name}").grad for i in (0, 1)]
        assert all(g.abs().sum() > 0 for g in per_layer)
        assert torch.allclose(shared, per_layer[0] + per_layer[1], atol=1e-6)
    # parameters() counts a shared tensor once
    block = sum(p.numel() for n, p in untied.blocks[0].named_parameters() if not n.startswith("norm"))
    assert mv.count_parameters(mini) == mv.count_parameters(untied) - 2 * block


def test_transforms_are_per_layer_and_switchable():
    torch.manual_seed(0)
    both = mv.MiniViT("all", **TINY)
    assert both.share_every == 4 and both.num_groups == 1
    mixes = [blk.attn.mix_pre for blk in both.blocks] + [blk.attn.mix_post for blk in both.blocks]
    assert len({id(m) for m in mixes}) == 8
    assert torch.equal(mixes[0].weight, torch.eye(2))
    assert len({id(blk.mlp_transform) for blk in both.blocks}) == 4
    assert torch.count_nonzero(both.blocks[0].mlp_transform.conv.weight) == 0
    attn_only = mv.MiniViT("all", mlp_transform=False, **TINY)
    assert all(blk.mlp_transform is None and blk.attn.mix_pre is not None for blk in attn_only.blocks)
    mlp_only = mv.MiniViT("all", attn_transform=False, **TINY)
    assert all(blk.mlp_transform is not None and blk.attn.mix_pre is None for blk in mlp_only.blocks)
    # the head mixes are exempt from weight decay, the shared weights are not
    assert {"blocks.3.attn.mix_post.weight", "pos_embed"} <= both.no_weight_decay()
    with pytest.raises(ValueError, match="divide"):
        mv.MiniViT(3, **TINY)
    with pytest.raises(ValueError, match="odd"):
        mv.MiniViT(2, mlp_kernel=4, **TINY)


def test_mlp_transform_skips_the_class_token_and_mixes_neighbours():
    t = mv.DWConvTransform(4, (3, 3), num_prefix_tokens=1, kernel_size=3)
    x = torch.randn(2, 10, 4)
    assert torch.equal(t(x), x)  # identity at init
    with torch.no_grad():
        t.conv.weight.fill_(1.0)
    y = t(x)
    assert torch.equal(y[:, 0], x[:, 0])  # class token passes through
    assert not torch.allclose(y[:, 1:], x[:, 1:])
    # locality: changing one corner patch moves only its 3x3 neighbourhood
    x2 = x.clone()
    x2[:, 1] += torch.randn(2, 4)  # patch (0, 0) (token 1); a constant shift would be normalised away
    changed = (t(x2) - y).abs().sum((0, 2)) > 1e-5
    assert changed.tolist() == [False, True, True, False, True, True, False, False, False, False]


def test_head_mix_is_a_linear_map_over_heads():
    m = mv.HeadMix(3, init="official")
    a = torch.randn(2, 3, 5, 5)
    ref = torch.stack([sum(m.weight[g, h] * a[:, h] for h in range(3)) for g in range(3)], 1)
    assert torch.allclose(m(a), ref, atol=1e-6)
    assert m.weight.abs().max() < 0.1  # trunc_normal(0.02)


def test_from_vit_initialises_groups_from_first_layer_or_mean():
    torch.manual_seed(0)
    vit = VisionTransformer(**TINY)
    first = mv.from_vit(vit, 2)
    mean = mv.from_vit(vit, 2, init="mean")
    w = [vit.blocks[i].attn.qkv.weight for i in range(4)]
    assert torch.equal(first.blocks[1].attn.qkv.weight, w[0]) and torch.equal(first.blocks[3].attn.qkv.weight, w[2])
    assert torch.allclose(mean.blocks[0].attn.qkv.weight, (w[0] + w[1]) / 2)
    assert torch.equal(first.blocks[1].norm1.weight, vit.blocks[1].norm1.weight)
    assert torch.equal(first.head.weight, vit.head.weight)
    assert first.blocks[0].attn.qkv.weight.data_ptr() != vit.blocks[0].attn.qkv.weight.data_ptr()  # a copy
    with pytest.raises(TypeError):
        mv.from_vit(first, 2)


def test_param_counts_match_tables_2_and_4():
    c = mv.param_counts()
    b = c["deit_base"]
    assert b["original"] == 86_567_656
    # 6 (every-2) or 11 (all) MSA+MLP weight sets fewer, plus 2 head mixes of 12 x 12 per layer
    msa_mlp = 4 * 768 * 768 + 3 * 768 + 768 + 2 * 768 * 3072 + 3072 + 768
    assert b["every-2"] == b["original"] - 6 * msa_mlp + 12 * 2 * 144
    assert b["all"] == b["original"] - 11 * msa_mlp + 12 * 2 * 144
    for got, paper in ((b["original"], 86), (b["every-2"], 44), (b["all"], 9),  # Table 2
                       (c["deit_tiny"]["every-2"], 3), (c["deit_small"]["every-2"], 11)):  # Table 4
        assert abs(got / 1e6 - paper) <= 0.1 * paper, (got, paper)
    # with a 7x7 MLP transform each layer gains LayerNorm + depth-wise conv (DeiT-B: 0.5M in all)
    with torch.device("meta"):
        b7 = mv.count_parameters(mv.create_minivit("deit_base", 2, mlp_transform=True, mlp_kernel=7))
    assert b7 - b["every-2"] == 12 * (2 * 768 + 768 * 49 + 768)


def test_parameter_breakdown_adds_up():
    m = mv.MiniViT(2, mlp_kernel=3, **TINY)
    parts = mv.parameter_breakdown(m)
    assert parts["total"] == mv.count_parameters(m)
    assert parts["transforms"] == 4 * (2 * 4 + 32 * 9 + 32 + 2 * 32)
    assert parts["head"] == 32 * 5 + 5


# ---------------------------------------------------------------------------------------------
# weight distillation


def _official_soft_ce(s, t):
    """The official soft_cross_entropy: mean over rows of sum_k -softmax(t) log_softmax(s)."""
    return (-F.softmax(t, -1) * F.log_softmax(s, -1)).sum(-1).mean()


def test_soft_relation_kl_is_official_ce_minus_teacher_entropy():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 7, 7), torch.randn(2, 3, 7, 7)
    entropy = _official_soft_ce(t, t)
    assert torch.allclose(mv.soft_relation_kl(s, t), _official_soft_ce(s, t) - entropy, atol=1e-6)
    assert mv.soft_relation_kl(t, t).abs() < 1e-6 and mv.soft_relation_kl(s, t) > 0
    s.requires_grad_(True)
    mv.soft_relation_kl(s, t).backward()  # the gradient of the soft CE: (softmax(s) - softmax(t)) / rows
    assert torch.allclose(s.grad, (F.softmax(s, -1) - F.softmax(t, -1)).detach() / (2 * 3 * 7), atol=1e-7)
    assert torch.allclose(mv.prediction_loss(s[0, 0], t[0, 0], tau=2.0),
                          _official_soft_ce(s[0, 0] / 2, t[0, 0] / 2) - _official_soft_ce(t[0, 0] / 2, t[0, 0] / 2),
                          atol=1e-6)


def test_qkv_relation_loss_is_eq10():
    torch.manual_seed(0)
    B, N, Cs, Ct = 2, 9, 8, 12
    s, t = torch.randn(B, N, 3 * Cs), torch.randn(B, N, 3 * Ct)
    # eq. 10 written out for one relation head: softmax(X_i X_j^T / sqrt(C)) for i, j in Q, K, V
    ref = 0.0
    for i in range(3):
        for j in range(3):
            xs_i, xs_j = s[..., i * Cs:(i + 1) * Cs], s[..., j * Cs:(j + 1) * Cs]
            xt_i, xt_j = t[..., i * Ct:(i + 1) * Ct], t[..., j * Ct:(j + 1) * Ct]
            rs, rt = xs_i @ xs_j.transpose(1, 2) / math.sqrt(Cs), xt_i @ xt_j.transpose(1, 2) / math.sqrt(Ct)
            ref += _official_soft_ce(rs, rt) - _official_soft_ce(rt, rt)
    assert torch.allclose(mv.qkv_relation_loss(s, t), torch.as_tensor(ref / 9), atol=1e-5)
    # identical -> 0; different widths and relation heads work; widths must split into heads
    assert mv.qkv_relation_loss(t, t.clone()).abs() < 1e-6
    assert mv.qkv_relation_loss(s, t, relation_heads=2) > 0
    assert mv.attention_relation_loss([s, s], [t, t]) > 0
    with pytest.raises(ValueError, match="divide"):
        mv.qkv_relation_loss(s, t, relation_heads=3)
    with pytest.raises(ValueError, match="tokens"):
        mv.qkv_relation_loss(s, t[:, :5])


@pytest.mark.parametrize("kind", ["softmax", "cosine"])
def test_hidden_relation_loss(kind):
    torch.manual_seed(0)
    hs, ht = torch.randn(2, 9, 8), torch.randn(2, 9, 16)
    assert mv.hidden_relation_loss([ht], [ht.clone()], kind).abs() < 1e-6
    assert mv.hidden_relation_loss([hs], [ht], kind) > 0
    if kind == "softmax":  # eq. 11
        rs, rt = hs @ hs.transpose(1, 2) / math.sqrt(8), ht @ ht.transpose(1, 2) / math.sqrt(16)
        ref = _official_soft_ce(rs, rt) - _official_soft_ce(rt, rt)
    else:  # the official code: Gram MSE of L2-normalised tokens, times the tokens per row
        ns, nt = F.normalize(hs, dim=-1), F.normalize(ht, dim=-1)
        ref = ((ns @ ns.transpose(1, 2) - nt @ nt.transpose(1, 2)) ** 2).mean() * 9
    assert torch.allclose(mv.hidden_relation_loss([hs], [ht], kind), ref, atol=1e-5)


def test_layer_pairs():
    assert mv.layer_pairs(12, 24) == [(11, 23)]  # the official default: the last layers
    assert mv.layer_pairs(4, 8, "uniform") == [(0, 1), (1, 3), (2, 5), (3, 7)]
    assert mv.layer_pairs(4, 4, "uniform") == [(0, 0), (1, 1), (2, 2), (3, 3)]
    below = mv.layer_pairs(4, 2, "uniform")
    assert below[-1] == (3, 1) and min(t for _, t in below) == 0
    assert mv.layer_pairs(4, 8, [(3, 7), (1, 3)]) == [(3, 7), (1, 3)]
    with pytest.raises(ValueError):
        mv.layer_pairs(4, 8, [(4, 7)])
    with pytest.raises(ValueError):
        mv.layer_pairs(4, 8, "first")


def test_distillation_loss_zero_for_a_copy_and_positive_otherwise():
    torch.manual_seed(0)
    student = VisionTransformer(**TINY)
    teacher = copy.deepcopy(student)
    x, y = _x(), torch.tensor([0, 1, 2])
    crit = mv.MiniViTDistillationLoss(teacher, student, gamma=0.1, layers="uniform")
    student.train()
    loss, parts = crit(x, student(x), y)
    assert set(parts) == {"pred", "attn", "hidden"}
    assert all(v.abs() < 1e-5 for v in parts.values()) and loss.abs() < 1e-5
    with torch.no_grad():
        student.blocks[0].attn.qkv.weight.add_(0.05 * torch.randn_like(student.blocks[0].attn.qkv.weight))
    loss, parts = crit(x, student(x), y)
    assert all(v > 1e-6 for v in parts.values())
    crit.close()


def test_distillation_loss_with_shared_student_and_wider_teacher():
    torch.manual_seed(0)
    teacher = VisionTransformer(**TEACHER)
    student = mv.MiniViT(2, transform_init="official", **TINY)  # non-identity transforms get gradients
    x, y = _x(), torch.tensor([0, 1, 2])
    crit = mv.MiniViTDistillationLoss(teacher, student, pred=1.0, beta=1.0, gamma=0.1, gt=0.5,
                                      layers="uniform")
    assert crit.pairs == [(0, 0), (1, 2), (2, 3), (3, 5)]
    assert mv.MiniViTDistillationLoss(teacher, student).pairs == [(3, 5)]  # default: the last layers
    teacher.train()  # the criterion puts it back in eval mode
    student.train()
    loss, parts = crit(x, student(x), y)
    assert set(parts) == {"gt", "pred", "attn", "hidden"}
    expected = 0.5 * parts["gt"] + parts["pred"] + parts["attn"] + 0.1 * parts["hidden"]
    assert torch.allclose(loss, expected) and all(v > 0 for v in parts.values())
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    loss.backward()
    assert student.blocks[1].attn.qkv.weight.grad.abs().sum() > 0  # shared, via both layers
    assert all(blk.attn.mix_pre.weight.grad is not None for blk in student.blocks)
    assert all(p.grad is None for p in teacher.parameters())
    # the terms switch off one by one (Table 3 rows)
    for kw, keys in (({"beta": 0.0}, {"pred", "hidden"}), ({"gamma": 0.0}, {"pred", "attn"}),
                     ({"pred": 0.0, "gt": 1.0}, {"gt", "attn", "hidden"}),
                     ({"beta": 0.0, "gamma": 0.0}, {"pred"})):
        c = mv.MiniViTDistillationLoss(teacher, student, **{"gamma": 0.1, **kw})
        assert set(c(x, student(x), y)[1]) == keys
        c.close()
    crit.close()


def test_student_capture_counts_shared_calls_and_ignores_eval():
    torch.manual_seed(0)
    teacher = VisionTransformer(**TEACHER)
    student = mv.MiniViT("all", **TINY)
    crit = mv.MiniViTDistillationLoss(teacher, student, layers="uniform")
    x, y = _x(), torch.tensor([0, 1, 2])
    student.train()
    student(x)
    taps = crit._student_taps
    assert sorted(taps.qkv) == [0, 1, 2, 3] and sorted(taps.hidden) == [0, 1, 2, 3]
    with torch.no_grad():  # layer i's qkv is the shared qkv applied to layer i's input
        for i in (1, 2, 3):
            blk = student.blocks[i]
            assert torch.allclose(taps.qkv[i], blk.attn.qkv(blk.norm1(taps.hidden[i - 1])), atol=1e-6)
    crit(x, student(x), y)
    student.eval()
    student(x)  # e.g. fit's evaluation pass: not recorded
    with pytest.raises(RuntimeError, match="train mode"):
        crit(x, student(x), y)
    crit.close()
    assert not student.blocks[0]._forward_pre_hooks and not student.blocks[0].attn.qkv._forward_hooks
    assert not teacher.blocks[0]._forward_pre_hooks  # the teacher's hooks live only inside a call
    with pytest.raises(ValueError, match="different"):
        mv.MiniViTDistillationLoss(student, student)


def test_fit_trains_a_minivit_with_the_distillation_loss():
    from course_lib import train

    torch.manual_seed(0)
    teacher = VisionTransformer(**TEACHER)
    student = mv.MiniViT(2, **TINY)
    before = student.blocks[0].attn.qkv.weight.detach().clone()
    ds = torch.utils.data.TensorDataset(torch.randn(16, 3, 16, 16), torch.randint(0, 5, (16,)))
    loader = torch.utils.data.DataLoader(ds, batch_size=8)
    crit = mv.MiniViTDistillationLoss(teacher, student)
    cfg = train.TrainConfig(epochs=1, lr=1e-2, progress=False, seed=0)
    hist = train.fit(student, loader, cfg, criterion=crit, eval_loader=loader, device="cpu")
    crit.close()
    rec = hist.epochs[-1]
    assert {"train_pred", "train_attn", "train_hidden", "eval_top1"} <= set(rec)
    assert not torch.equal(student.blocks[1].attn.qkv.weight, before)
    assert student.blocks[0].attn.qkv is student.blocks[1].attn.qkv  # still shared after fit


# ---------------------------------------------------------------------------------------------
# attention maps for the notebook


def test_cls_attention_for_teacher_and_students():
    import matplotlib

    matplotlib.use("Agg")
    torch.manual_seed(0)
    teacher = VisionTransformer(**TEACHER)
    vit = VisionTransformer(**TINY)
    shared = mv.from_vit(vit, "all", attn_transform=False, mlp_transform=False)
    mux = mv.from_vit(vit, "all")
    x = _x(2)
    maps = mv.compare_attention({"teacher": teacher, "shared": shared, "shared + transform": mux}, x)
    assert maps["teacher"].shape == (6, 2, 4, 4) and maps["shared"].shape == (4, 2, 4, 4)
    assert torch.allclose(maps["shared"], maps["shared + transform"], atol=1e-6)  # identity init
    full = mv.cls_attention(mux, x, head=None)
    assert full.shape == (4, 2, 2, 4, 4) and torch.all(full.sum((-1, -2)) <= 1 + 1e-5)
    with torch.no_grad():  # the maps are taken after the post-softmax transform
        for blk in mux.blocks:
            blk.attn.mix_post.weight.mul_(2.0)
    assert torch.allclose(mv.cls_attention(mux, x)[0], 2 * maps["shared"][0], atol=1e-5)
    mux.train()
    mv.cls_attention(mux, x)
    assert mux.training  # mode restored
    fig = mv.plot_attention_comparison(maps, image=x[0])
    assert len(fig.axes) == 3 * 7


# ---------------------------------------------------------------------------------------------
# notebook parameters and the experiment driver


def test_notebook_parameters(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    P = config.resolve("09_minivit", profile="smoke")
    assert (P.max_steps, P.beta, P.gamma, P.tau, P.share) == (6, 1.0, 0.1, 1.0, "every-2")
    S = config.resolve("09_minivit", profile="study")
    assert S.teacher in mv.TEACHERS and S.student == "course_tiny" and S.distill_layers == "last"
    assert S.teacher_stem == "patch" and S.label_noise == 0.0 and not S.table3 and S.seeds >= 3  # budget: Table 1 seeds
    # the study teacher is larger than the student on the same token grid
    t, s = mv.preset_config(S.teacher), mv.preset_config(S.student)
    assert t["embed_dim"] > s["embed_dim"] and t["img_size"] // t["patch_size"] == s["img_size"] // s["patch_size"]
    with pytest.raises(config.ParameterError, match="dwconv_kernel"):
        config.resolve("09_minivit", profile="smoke", dwconv_kernel=4)
    with pytest.raises(config.ParameterError, match="dataset"):
        config.resolve("09_minivit", profile="smoke", dataset="mnist")
    vs = mv.variants(P)
    assert vs["ws_wt_wd"] == vs["pred_attn_hidden"] and vs["ws_wt_wd"].distilled
    assert not vs["ws_wt"].distilled and vs["attn_hidden"].gt == 1.0 and vs["attn_hidden"].pred == 0.0
    teacher = mv.build_teacher(P, 6)
    student = mv.build_student(P, vs["ws_wt_wd"], 6)
    assert teacher.grid_size == student.grid_size and teacher.embed_dim > student.embed_dim
    assert type(mv.build_student(P, vs["original"], 6)) is VisionTransformer


def test_run_experiments_tiny_end_to_end(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path / "results"))
    P = config.resolve("09_minivit", profile="smoke", train_images=64, eval_images=64, batch_size=16,
                       max_steps=1, data_root=str(tmp_path / "data"), teacher="course_teacher_d6")
    arch = mv.experiment._arch  # narrower presets keep this test fast; the driver logic is the same

    def small(P, preset, num_classes):
        cfg = arch(P, preset, num_classes)
        return {**cfg, "embed_dim": 48 if preset == P.teacher else 32, "depth": 4}

    monkeypatch.setattr(mv.experiment, "_arch", small)
    lines = []
    res = mv.run_experiments(P, log=lines.append)
    runs = res["runs"]
    names = {"teacher", "original", "ws", "ws_wd", "ws_wt", "ws_wt_wd", "every-2", "all", "pred",
             "pred_attn", "pred_attn_hidden", "attn_hidden"}
    assert set(runs) == names and all(len(runs[n]) == 1 for n in names)
    assert runs["pred_attn_hidden"][0].top1 == runs["ws_wt_wd"][0].top1  # one configuration, trained once
    assert len(lines) == 1 + 9
    assert runs["all"][0].params < runs["every-2"][0].params < runs["original"][0].params
    assert isinstance(res["students"]["ws_wt_wd"], mv.MiniViT)
    tabs = mv.tables(res)
    assert list(tabs["table1"]["paper DeiT-S"]) == [79.9, 78.3, 80.1, 79.3, 80.7]
    rec = mv.record_results(P, res)
    ids = [c.id for c in rec.claims]
    assert ids[:3] == ["original", "teacher", "compression_every2"] and "params_deit_b_all" in ids
    assert rec["params_deit_b_every-2"].verdict == "reproduced"
    assert (tmp_path / "results" / "09_minivit" / "smoke.json").exists()
    # a second run comes from the cache; without Table 3 its students and claims are left out
    res2 = mv.run_experiments(config.Params({**P, "table3": False}), log=lambda s: None)
    assert all(r.from_cache for rs in res2["runs"].values() for r in rs)
    assert "pred" not in res2["runs"] and set(mv.tables(res2)) == {"table1", "table2"}


# ---------------------------------------------------------------------------------------------
# teacher stem, attention summaries, real datasets


def test_conv_stem_keeps_the_token_grid():
    torch.manual_seed(0)
    for patch, img in ((4, 32), (8, 64), (28, 224)):
        stem = mv.ConvStem(3, 48, patch)
        assert stem(torch.randn(2, 3, img, img)).shape == (2, 48, img // patch, img // patch)
    vit = mv.with_conv_stem(VisionTransformer(**TEACHER))
    assert isinstance(vit.patch_embed.proj, mv.ConvStem)
    assert vit(_x()).shape == (3, 5) and vit.get_attention(_x())[0].shape == (3, 3, 17, 17)
    P = config.resolve("09_minivit", profile="smoke", teacher_stem="conv")
    assert isinstance(mv.build_teacher(P, 6).patch_embed.proj, mv.ConvStem)
    assert not isinstance(mv.build_teacher(config.resolve("09_minivit", profile="smoke"), 6).patch_embed.proj,
                          mv.ConvStem)
    with pytest.raises(config.ParameterError, match="teacher_stem"):
        config.resolve("09_minivit", profile="smoke", teacher_stem="hybrid")


def test_qkv_relation_gradient_reaches_the_student_only():
    torch.manual_seed(0)
    s = torch.randn(2, 6, 3 * 8, requires_grad=True)
    t = torch.randn(2, 6, 3 * 12, requires_grad=True)
    mv.qkv_relation_loss(s, t, relation_heads=2).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
    # the Gram-matrix form equals the nine relations computed one by one
    rel = mv.distillation._qkv_relations(s.detach(), 2)
    q = s.detach()[..., :8].reshape(2, 6, 2, 4).transpose(1, 2)     # (B, relation heads, N, 4)
    k = s.detach()[..., 8:16].reshape(2, 6, 2, 4).transpose(1, 2)
    assert torch.allclose(rel[:, :, 0, :, 1, :], q @ k.transpose(-2, -1) / 2.0, atol=1e-6)


def test_attention_agreement_and_layer_similarity():
    torch.manual_seed(0)
    a = torch.rand(4, 3, 2, 2)
    maps = {"teacher": a.repeat_interleave(2, dim=0), "same": a.clone(), "scaled": 3 * a,
            "other": torch.rand(4, 3, 2, 2)}
    agree = mv.attention_agreement(maps)  # teacher has 8 layers: student layer l <-> teacher layer 2l + 1
    assert list(agree.index) == ["same", "scaled", "other"] and list(agree.columns) == [f"layer {i}" for i in range(4)]
    assert torch.allclose(torch.tensor(agree.loc["scaled"].values), torch.ones(4, dtype=torch.float64), atol=1e-6)
    assert (agree.loc["other"] < 1).all()
    sim = mv.layer_similarity({"constant": a[:1].repeat(4, 1, 1, 1), "varied": a})
    assert sim["constant"] == pytest.approx(1.0) and sim["varied"] < 1.0


def test_real_datasets_are_found_through_the_catalog(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    for name in ("imagenette", "cifar100"):
        P = config.resolve("09_minivit", profile="smoke", dataset=name, data_root=str(tmp_path))
        with pytest.raises(FileNotFoundError, match=f"fetch.py {name}"):
            mv.load_data(P)


def test_teacher_cache_key_names_the_patch(monkeypatch):
    """A teacher cut into other patches is another model: its cache key must say so (the
    students' keys hold their whole architecture)."""
    seen = []
    monkeypatch.setattr(mv.experiment.classification, "train_cached",
                        lambda name, d, cfg, build, **kw: seen.append(kw["model"]))
    d = type("D", (), {"num_classes": 6})()
    for patch in (0, 8):
        mv.train_teacher(config.resolve("09_minivit", profile="smoke", patch_size=patch), d)
    assert seen[0] == {"teacher": "course_teacher_d4", "stem": "patch"}  # old keys stay valid
    assert seen[1] == {**seen[0], "patch_size": 8}
    assert mv.build_teacher(config.resolve("09_minivit", profile="study"), 6).patch_embed.patch_size == (8, 8)
