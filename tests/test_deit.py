
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib import config
from course_lib.papers import deit


def test_soft_loss_matches_official_reduction():
    torch.manual_seed(0)
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    for tau in (1.0, 3.0):
        p_t = F.softmax(t / tau, 1)
        kl = (p_t * (p_t.log() - F.log_softmax(s / tau, 1))).sum()
        expected = kl * tau * tau / s.numel()  # official: sum / (B * C), times tau^2
        assert torch.allclose(deit.soft_distillation_loss(s, t, tau), expected, atol=1e-6)
    assert deit.soft_distillation_loss(t, t, 2.0).abs() < 1e-6


def test_hard_loss_uses_teacher_argmax():
    s = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    t = torch.tensor([[0.0, 5.0, 0.0], [0.0, 0.0, 1.0]])
    expected = F.cross_entropy(s, torch.tensor([1, 2]))
    assert torch.allclose(deit.hard_distillation_loss(s, t), expected)


class Recorder(nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out, self.seen, self.training_flags = out, None, []

    def forward(self, x):
        self.seen = x
        self.training_flags.append(self.training)
        return self.out


def test_distillation_loss_routes_heads_and_weights():
    torch.manual_seed(0)
    x = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 1])
    t_logits = torch.randn(4, 3)
    teacher = Recorder(t_logits)
    cls, dist = torch.randn(4, 3), torch.randn(4, 3)
    ce = nn.CrossEntropyLoss()
    crit = deit.DistillationLoss(ce, teacher, "hard", alpha=0.25)
    crit.train()
    loss, parts = crit(x, (cls, dist), y)
    expected = 0.75 * ce(cls, y) + 0.25 * F.cross_entropy(dist, t_logits.argmax(1))
    assert torch.allclose(loss, expected)
    assert teacher.seen is x and teacher.training_flags == [False]  # same inputs, eval mode
    # without a distillation token both terms use the class head
    loss1, _ = crit(x, cls, y)
    assert torch.allclose(loss1, 0.75 * ce(cls, y) + 0.25 * F.cross_entropy(cls, t_logits.argmax(1)))
    soft = deit.DistillationLoss(ce, teacher, "soft", alpha=0.5, tau=2.0)(x, (cls, dist), y)[0]
    assert torch.allclose(soft, 0.5 * ce(cls, y) + 0.5 * deit.soft_distillation_loss(dist, t_logits, 2.0))
    assert torch.allclose(deit.DistillationLoss(ce, None, "none")(x, cls, y), ce(cls, y))
    with pytest.raises(ValueError, match="needs a teacher"):
        deit.DistillationLoss(ce, None, "hard")
    with pytest.raises(ValueError, match="kind"):
        deit.DistillationLoss(ce, teacher, "medium")


def test_distilled_student_heads_average_in_eval(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    P = config.resolve("03_deit", profile="smoke")
    m = deit.build_student(P, 6, distilled=True)
    x = torch.randn(3, 3, 32, 32)
    m.train()
    cls, dist = m(x)
    m.eval()
    heads = deit.head_logits(m, torch.utils.data.TensorDataset(x, torch.zeros(3, dtype=torch.long)), "cpu")
    assert torch.allclose(heads["both"], (heads["cls"] + heads["dist"]) / 2, atol=1e-6)
    assert torch.allclose(m(x), heads["both"], atol=1e-5)
    assert m.num_prefix_tokens == 2


def test_param_counts_match_table1():
    counts = deit.param_counts()
    assert counts["deit_tiny"] == 5_717_416
    assert abs(counts["deit_small"] / 1e6 - 22.05) < 0.01
    assert abs(counts["deit_base"] / 1e6 - 86.57) < 0.01


def test_plot_table3_legend_covers_no_bar():
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.patches import Rectangle

    methods = ["no distillation", "usual (soft) distillation", "hard distillation", "class embedding",
               "distil. embedding", "class+distillation"]
    for teacher in (68.0, 90.0):
        table3 = pd.DataFrame({"method": methods, "paper DeiT-Ti (ImageNet)": [72.2, 72.2, 74.3, 73.9, 74.6, 74.5],
                               "ours top-1": [61.0, 63.5, 66.0, 64.0, 65.5, 66.2],
                               "ours std": [1.0, 0.8, 0.5, 0.9, float("nan"), float("nan")]}).set_index("method")
        fig = deit.plot_table3(table3, teacher)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent(renderer)
        bars = [p.get_window_extent(renderer) for p in ax.patches if isinstance(p, Rectangle)]
        assert len(bars) == len(methods)
        assert not any(legend.overlaps(b) for b in bars)
        assert ax.get_xlim()[1] > teacher  # the teacher's line is inside the axes
        plt.close(fig)
