"""USI (notebook 02): the loss of eq. 2 as the official code computes it, and the students."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import config
from course_lib.papers import usi


def _logits(seed=0, b=5, c=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g) * 2, torch.randn(b, c, generator=g) * 2


def test_kd_kl_is_batchmean_kl_without_tau_squared():
    s, t = _logits()
    for tau in (0.5, 1.0, 4.0):
        ps, pt = F.softmax(s / tau, 1), F.softmax(t / tau, 1)
        manual = (pt * (pt.log() - ps.log())).sum(1).mean()  # KL(p_t || p_s), mean over the batch
        assert usi.kd_kl(s, t, tau).item() == pytest.approx(manual.item(), rel=1e-5)
    assert usi.kd_kl(s, s, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_usi_loss_adds_alpha_times_kd_to_ce():
    s, t = _logits(1)
    y = torch.tensor([0, 1, 2, 3, 4])
    teacher = torch.nn.Identity()  # the "teacher" returns its input: pass teacher logits as inputs
    ce = F.cross_entropy(s, y)
    kd = usi.kd_kl(s, t)
    loss, parts = usi.USILoss(teacher, alpha_kd=5.0)(t, s, y)
    assert loss.item() == pytest.approx((ce + 5.0 * kd).item(), rel=1e-5)  # no (1 - alpha) on the CE
    assert parts["ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    only_kd, _ = usi.USILoss(teacher, alpha_kd=math.inf)(t, s, y)
    assert only_kd.item() == pytest.approx(5.0 * kd.item(), rel=1e-5)  # official: alpha_kd * KL
    plain = usi.USILoss(None, alpha_kd=0.0)(t, s, y)
    assert plain.item() == pytest.approx(ce.item(), rel=1e-6)


def test_kd_only_loss_is_default_alpha_times_batchmean_kl():
    """Official ``--use_kd_only_loss``: ``loss = alpha_kd * kl_div(log_softmax(s), softmax(t),
    reduction='batchmean')`` with the default alpha_kd = 5 (not the bare KL)."""
    teacher = torch.nn.Identity()
    for seed in range(3):
        s, t = _logits(10 + seed, b=8, c=11)
        y = torch.randint(0, 11, (8,))
        kl = F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), reduction="batchmean")
        loss, parts = usi.USILoss(teacher, alpha_kd=math.inf)(t, s, y)
        assert loss.item() == pytest.approx(5.0 * kl.item(), rel=1e-5)
        assert parts["kd"].item() == pytest.approx(kl.item(), rel=1e-5)
        s_req = s.clone().requires_grad_(True)
        usi.USILoss(teacher, alpha_kd=math.inf)(t, s_req, y)[0].backward()
        g_kd = s_req.grad.clone()
        s_req.grad = None
        (usi.kd_kl(s_req, t) * 5.0).backward()
        assert torch.allclose(g_kd, s_req.grad, atol=1e-6)  # gradients 5x the bare KL's
    # another weight is honoured, a non-positive one is refused in KD-only mode
    s, t = _logits(20)
    loss, _ = usi.USILoss(teacher, alpha_kd=math.inf, kd_only_weight=2.0)(t, s, torch.zeros(5, dtype=torch.long))
    assert loss.item() == pytest.approx(2.0 * usi.kd_kl(s, t).item(), rel=1e-5)
    with pytest.raises(ValueError, match="kd_only_weight"):
        usi.USILoss(teacher, alpha_kd=math.inf, kd_only_weight=0.0)


def test_usi_loss_accepts_mixup_targets():
    s, t = _logits(2)
    soft = F.softmax(torch.randn(5, 7), 1)
    loss, parts = usi.USILoss(torch.nn.Identity(), alpha_kd=1.0)(t, s, soft)
    expected = -(soft * F.log_softmax(s, 1)).sum(1).mean()
    assert parts["ce"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.isfinite(loss)


def test_teacher_is_frozen_and_in_eval_mode():
    teacher = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5))
    teacher.train()
    crit = usi.USILoss(teacher, alpha_kd=5.0)
    student = torch.nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    loss, _ = crit(x, student(x), y)
    loss.backward()
    assert not teacher.training
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0
    # dropout off: the teacher's target is deterministic
    a, b = crit(x, student(x), y)[1]["kd"], crit(x, student(x), y)[1]["kd"]
    assert a.item() == b.item()


def test_bad_alpha_and_missing_teacher_fail():
    with pytest.raises(ValueError, match="alpha_kd"):
        usi.USILoss(None, alpha_kd=-1.0)
    with pytest.raises(ValueError, match="teacher"):
        usi.USILoss(None, alpha_kd=5.0)


@pytest.mark.parametrize("family", usi.FAMILIES)
def test_students_of_every_family(family):
    torch.manual_seed(0)
    m = usi.build_student(family, num_classes=6, image_size=32)
    out = m(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 6)
    n = sum(p.numel() for p in m.parameters())
    assert 0.1e6 < n < 2e6  # small enough for the CPU budget
    assert n < sum(p.numel() for p in usi.build_teacher("small_resnet", 6).parameters()) or family == "mobile"


def test_parameters_validate_lists():
    P = config.resolve("02_usi", "smoke", alphas="1,inf", taus="0.1,5")
    assert usi.parse_list(P.alphas, usi.experiment._parse_alpha) == [1.0, math.inf]
    assert usi.parse_list(P.taus) == [0.1, 5.0]
    with pytest.raises(config.ParameterError, match="alphas"):
        config.resolve("02_usi", "smoke", alphas="1,lots")
    with pytest.raises(config.ParameterError, match="families"):
        config.resolve("02_usi", "smoke", families="cnn,rnn")


def test_recipe_is_usi_table_1():
    P = config.resolve("02_usi", "study")
    cfg = usi.recipe(P, 6, seed=0)
    assert (cfg.lr, cfg.weight_decay, cfg.mixup, cfg.cutmix, cfg.label_smoothing) == (2e-3, 2e-2, 0.8, 1.0, 0.0)
