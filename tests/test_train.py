"""Tests of the training loop: tiny models and data, a few seconds in all."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from course_lib import train as T
from course_lib.data import make_loader
from course_lib.train import History, StopTraining, TrainConfig, cached_model, evaluate, fit, predict

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# tiny problems


def blobs(n=96, d=8, c=4, seed=0, spread=0.6):
    """Well separated Gaussian clusters (the centres depend only on ``c`` and ``d``)."""
    centres = torch.randn(c, d, generator=torch.Generator().manual_seed(1234)) * 3
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = centres[y] + spread * torch.randn(n, d, generator=g)
    return TensorDataset(x, y)


def images(n=48, c=3, size=8, seed=0):
    """Class k is a bright patch in channel k, on noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = 0.3 * torch.randn(n, 3, size, size, generator=g)
    for i in range(n):
        x[i, y[i], : size // 2, : size // 2] += 2.0
    return TensorDataset(x, y)


def mlp(d=8, c=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, c))


def convnet(c=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, c))


def loader(ds, bs, shuffle=False):
    return DataLoader(ds, batch_size=bs, shuffle=shuffle)


def config(**kw):
    base = dict(progress=False, amp="none", weight_decay=0.0, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def flat(model):
    return torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters()])


class Recorder(nn.Module):
    """A criterion that keeps what it was given and computes a (soft-target) CE."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, inputs, outputs, targets):
        self.calls.append((inputs.detach().cpu().clone(), outputs, targets.detach().cpu().clone()))
        if targets.ndim == 2:
            return torch.sum(-targets * F.log_softmax(outputs.float(), -1), -1).mean()
        return F.cross_entropy(outputs.float(), targets)


# ---------------------------------------------------------------------------------------------
# learning


def test_loss_decreases_and_accuracy_rises():
    model = mlp()
    train_dl, eval_dl = loader(blobs(seed=0), 16, shuffle=True), loader(blobs(seed=1), 32)
    before = evaluate(model, eval_dl)
    hist = fit(model, train_dl, config(epochs=4, lr=1e-2, warmup_epochs=0.5), eval_loader=eval_dl)
    assert isinstance(hist, History) and len(hist.epochs) == 4
    assert hist.epochs[-1]["train_loss"] < 0.5 * hist.epochs[0]["train_loss"]
    assert before["top1"] < 60 and hist.last("eval_top1") >= 95
    df = hist.as_dataframe()
    assert list(df.index) == [1, 2, 3, 4]
    for col in ("train_loss", "lr", "time_s", "images_per_s", "eval_top1", "eval_top5", "eval_loss"):
        assert col in df.columns
    assert len(hist.steps["loss"]) == 4 * 6
    fig = hist.plot()
    assert len(fig.axes) == 3


def test_bf16_autocast_on_cpu_trains():
    seen = []

    def criterion(inputs, outputs, targets):
        seen.append(outputs.dtype)
        return F.cross_entropy(outputs, targets)

    model = mlp()
    hist = fit(model, loader(blobs(), 16, shuffle=True),
               config(epochs=3, lr=1e-2, amp="bf16"), criterion=criterion)
    assert set(seen) == {torch.bfloat16}
    assert hist.epochs[-1]["train_loss"] < 0.5 * hist.epochs[0]["train_loss"]
    assert next(model.parameters()).dtype == torch.float32


def test_amp_settings():
    cpu = torch.device("cpu")
    assert T.amp_settings("auto", cpu) == (None, False)
    assert T.amp_settings("bf16", cpu) == (torch.bfloat16, False)
    assert T.amp_settings("none", cpu) == (None, False)
    with pytest.raises(ValueError, match="CUDA"):
        T.amp_settings("fp16", cpu)
    with pytest.raises(ValueError):
        TrainConfig(amp="fp32")


def test_grad_accumulation_equals_one_big_batch():
    ds = blobs(n=32)
    kw = dict(epochs=2, lr=0.1, optimizer="sgd", momentum=0.9, weight_decay=1e-2, warmup_epochs=1)
    big, small = mlp(), mlp()
    h_big = fit(big, loader(ds, 8), config(accum_steps=1, **kw))
    h_small = fit(small, loader(ds, 4), config(accum_steps=2, **kw))
    assert len(h_big.steps["step"]) == len(h_small.steps["step"]) == 8
    torch.testing.assert_close(flat(small), flat(big), atol=1e-6, rtol=1e-5)
    assert h_small.steps["lr"] == h_big.steps["lr"]
    assert h_small.epochs[-1]["train_loss"] == pytest.approx(h_big.epochs[-1]["train_loss"], rel=1e-5)


def test_grad_clip_caps_the_update():
    ds = TensorDataset(torch.full((4, 3), 10.0), torch.zeros(4, dtype=torch.long))
    steep = lambda inputs, outputs, targets: 100 * outputs.sum()  # noqa: E731  (huge gradient)

    def one_step(clip):
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        w0 = flat(model).clone()
        fit(model, loader(ds, 4), config(epochs=1, lr=1.0, optimizer="sgd", momentum=0.0,
                                         schedule="constant", grad_clip=clip), criterion=steep)
        return (flat(model) - w0).norm().item()  # = lr * |clipped gradient|

    assert one_step(None) > 10
    assert one_step(0.5) == pytest.approx(0.5, rel=1e-4)


def test_ema_is_the_expected_average():
    # loss = mean(w * 1) has gradient 1, so plain SGD gives w_t = w0 - lr * t
    ds = TensorDataset(torch.ones(5, 1), torch.zeros(5, dtype=torch.long))
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    hist = fit(model, loader(ds, 1),
               config(epochs=1, lr=0.1, optimizer="sgd", momentum=0.0, schedule="constant",
                      ema_decay=0.5),
               criterion=lambda inputs, outputs, targets: outputs.mean())
    w, e = 1.0, 1.0
    for _ in range(5):
        w -= 0.1
        e = 0.5 * e + 0.5 * w
    assert model.weight.item() == pytest.approx(w, abs=1e-6)
    assert hist.ema_model.weight.item() == pytest.approx(e, abs=1e-6)
    assert hist.ema_model.weight.item() != pytest.approx(model.weight.item(), abs=1e-3)


# ---------------------------------------------------------------------------------------------
# schedules


def lr_curve(**kw):
    ds = TensorDataset(torch.randn(20, 2), torch.zeros(20, dtype=torch.long))
    model = nn.Linear(2, 2)
    return fit(model, loader(ds, 2), config(epochs=5, **kw)).steps["lr"]  # 10 steps per epoch


def test_warmup_cosine_schedule():
    lrs = lr_curve(lr=0.1, min_lr=1e-4, warmup_epochs=1, schedule="cosine")
    assert len(lrs) == 50
    assert lrs[0] == pytest.approx(0.1 / 11)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))  # linear warm-up over 10 steps
    assert max(lrs) == pytest.approx(0.1) and lrs.index(max(lrs)) == 10
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then cosine decay
    assert lrs[-1] < 1e-3


def test_onecycle_and_constant_schedules():
    lrs = lr_curve(lr=0.1, min_lr=1e-4, warmup_epochs=1, schedule="onecycle")
    assert lrs[0] == pytest.approx(0.1 / 25)
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(0.1, rel=1e-3) and 8 <= peak <= 10
    assert lrs[-1] == pytest.approx(1e-4, rel=1e-3)
    const = lr_curve(lr=0.1, warmup_epochs=0.5, schedule="constant")
    assert const[0] < 0.1 and const[5:] == pytest.approx([0.1] * 45)


def test_max_steps_and_stop_training():
    ds = blobs(n=32)
    hist = fit(mlp(), loader(ds, 4), config(epochs=5, max_steps=3))
    assert hist.steps["step"] == [1, 2, 3] and len(hist.epochs) == 1

    def stop_after_epoch_2(event, state):
        if event == "epoch_end" and state.epoch == 2:
            raise StopTraining

    hist = fit(mlp(), loader(ds, 8), config(epochs=5), callbacks=[stop_after_epoch_2])
    assert len(hist.epochs) == 2


# ---------------------------------------------------------------------------------------------
# mixup / criteria


def test_mixup_cutmix_give_soft_targets_and_still_learn():
    rec = Recorder()
    model = convnet()
    cfg = config(epochs=5, lr=2e-2, mixup=0.8, cutmix=1.0, num_classes=3, label_smoothing=0.1)
    hist = fit(model, loader(images(seed=0), 8, shuffle=True), cfg, criterion=rec,
               eval_loader=loader(images(seed=1), 24))
    targets = torch.cat([t for _, _, t in rec.calls])
    assert targets.shape[1] == 3
    torch.testing.assert_close(targets.sum(1), torch.ones(len(targets)))
    assert (targets.max(1).values < 0.99).all()  # never one-hot (mixed and smoothed)
    assert hist.last("eval_top1") > 80


def test_default_criterion_matches_config():
    assert isinstance(T.default_criterion(config(mixup=0.2, num_classes=3)).loss, T.SoftTargetCrossEntropy)
    ce = T.default_criterion(config(label_smoothing=0.1)).loss
    assert isinstance(ce, nn.CrossEntropyLoss) and ce.label_smoothing == 0.1
    # tuple outputs: the first (class) head is used
    logits, other = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    loss = T.default_criterion(config())(None, (logits, other), y)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))


class TeacherLoss(nn.Module):
    """A distillation-style criterion: runs a teacher on the inputs it is handed."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.teacher = nn.Linear(8, 4)
        self.seen = []

    def forward(self, inputs, outputs, targets):
        self.seen.append((inputs.detach().cpu().clone(), targets.detach().cpu().clone()))
        with torch.no_grad():
            t = self.teacher(inputs).softmax(-1)
        base = torch.sum(-targets * F.log_softmax(outputs, -1), -1).mean()
        kd = torch.sum(-t * F.log_softmax(outputs, -1), -1).mean()
        return 0.5 * base + 0.5 * kd, {"base": base, "kd": kd}


def test_criterion_with_teacher_receives_the_mixed_inputs():
    ds = blobs(n=16)
    crit = TeacherLoss()
    hist = fit(mlp(), loader(ds, 8), config(epochs=1, mixup=1.0, num_classes=4), criterion=crit)
    x, y = ds.tensors
    for b, (inputs, targets) in enumerate(crit.seen):
        raw, labels = x[8 * b: 8 * (b + 1)], y[8 * b: 8 * (b + 1)]
        flipped = labels.flip(0)
        i = int((labels != flipped).nonzero()[0])
        lam = targets[i, labels[i]].item()  # soft target = lam * y + (1 - lam) * y.flip(0)
        assert 0 < lam < 1
        assert not torch.allclose(inputs, raw)
        torch.testing.assert_close(inputs, lam * raw + (1 - lam) * raw.flip(0))
    rec = hist.epochs[0]
    assert "train_kd" in rec and "train_base" in rec
    assert rec["train_loss"] == pytest.approx(0.5 * rec["train_kd"] + 0.5 * rec["train_base"], rel=1e-5)


# ---------------------------------------------------------------------------------------------
# checkpoints and the artifact cache


def test_resume_equals_uninterrupted_run(tmp_path):
    ds = blobs(n=48)
    cfg = dict(epochs=3, lr=1e-2, weight_decay=0.05, warmup_epochs=1, ema_decay=0.9,
               mixup=0.5, num_classes=4, label_smoothing=0.1)

    def shuffled():
        return make_loader(ds, 8, train=True, num_workers=0, seed=3)

    full = mlp(seed=0)
    h_full = fit(full, shuffled(), config(**cfg))

    def crash_after_first_epoch(event, state):
        if event == "epoch_end" and state.epoch == 1:
            raise RuntimeError("simulated crash")

    first = mlp(seed=0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(first, shuffled(), config(checkpoint_dir=tmp_path, **cfg),
            callbacks=[crash_after_first_epoch])
    assert (tmp_path / "last.pt").exists()

    resumed = mlp(seed=99)  # different init: everything must come from the checkpoint
    torch.randn(7)  # and the global random state is disturbed
    h_res = fit(resumed, shuffled(), config(checkpoint_dir=tmp_path, resume=True, **cfg))
    torch.testing.assert_close(flat(resumed), flat(full), atol=0, rtol=0)
    torch.testing.assert_close(flat(h_res.ema_model), flat(h_full.ema_model), atol=0, rtol=0)
    assert h_res.steps == h_full.steps
    assert [r["train_loss"] for r in h_res.epochs] == [r["train_loss"] for r in h_full.epochs]
    assert not list(tmp_path.glob("*.tmp"))


def test_cached_model_trains_once(tmp_path):
    calls = []
    ds = blobs(n=16)

    def build():
        return mlp(seed=7)

    def train(model):
        calls.append(1)
        return fit(model, loader(ds, 8), config(epochs=1, lr=1e-2))

    m1, info1 = cached_model("teacher", {"lr": 1e-2, "epochs": 1}, build, train, cache_dir=tmp_path)
    assert not info1.from_cache and len(calls) == 1 and info1.path.exists()
    assert not torch.equal(flat(m1), flat(build()))  # it did train

    m2, info2 = cached_model("teacher", {"epochs": 1, "lr": 1e-2}, build, train, cache_dir=tmp_path)
    assert info2.from_cache and len(calls) == 1 and info2.path == info1.path
    assert torch.equal(flat(m2), flat(m1))
    assert info2.history.epochs == info1.history.epochs
    assert info2.train_seconds == pytest.approx(info1.train_seconds)

    _, info3 = cached_model("teacher", {"lr": 1e-2, "epochs": 1}, build, train, force=True,
                            cache_dir=tmp_path)
    assert not info3.from_cache and len(calls) == 2

    _, info4 = cached_model("teacher", {"lr": 5e-3, "epochs": 1}, build, train, cache_dir=tmp_path)
    assert not info4.from_cache and len(calls) == 3 and info4.path != info1.path
    assert not list(tmp_path.glob(".*tmp"))


def test_cached_model_keeps_plain_results(tmp_path):
    import numpy as np

    def train(model):
        return {"top1": np.float32(91.5), "per_class": np.arange(3), "note": "ok"}

    _, info = cached_model("m", {"a": 1}, lambda: nn.Linear(2, 2), train, cache_dir=tmp_path)
    _, again = cached_model("m", {"a": 1}, lambda: nn.Linear(2, 2), train, cache_dir=tmp_path)
    assert again.from_cache and again.history is None
    assert again.result["top1"] == pytest.approx(91.5) and again.result["note"] == "ok"
    assert torch.equal(again.result["per_class"], torch.arange(3))


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("damage", ["truncated", "empty", "flipped byte"])
def test_cached_model_rebuilds_a_damaged_file_and_names_it(tmp_path, damage):
    calls = []

    def build():
        return mlp(seed=7)

    def train(model):
        calls.append(1)
        with torch.no_grad():
            model[0].weight.add_(1.0)
        return {"n": len(calls)}

    _, info = cached_model("teacher", {"a": 1}, build, train, cache_dir=tmp_path)
    path = info.path
    if damage == "truncated":
        _truncate(path)
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # torch.load reads this silently: the stored checksum catches it
        blob = torch.load(path, weights_only=True)
        blob["state_dict"]["0.weight"][0, 0] += 1.0
        torch.save(blob, path)
    with pytest.warns(RuntimeWarning, match=rf"{path.name}.*damaged.*rebuilding"):
        m, again = cached_model("teacher", {"a": 1}, build, train, cache_dir=tmp_path)
    assert not again.from_cache and len(calls) == 2 and again.path == path
    assert (tmp_path / f"{path.name}.corrupt").exists()  # moved aside, not lost
    _, third = cached_model("teacher", {"a": 1}, build, train, cache_dir=tmp_path)
    assert third.from_cache and len(calls) == 2 and third.result == {"n": 2}


def test_load_cached_artifact(tmp_path):
    assert T.load_cached_artifact(tmp_path / "missing.pt") is None
    good = tmp_path / "good.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "meta": {}}, good)
    assert T.load_cached_artifact(good, required=("state_dict", "meta"))["meta"] == {}
    with pytest.warns(RuntimeWarning, match="keys missing: other"):
        assert T.load_cached_artifact(good, required=("other",)) is None
    assert not good.exists() and (tmp_path / "good.pt.corrupt").exists()


def _crash_after_first_epoch(event, state):
    if event == "epoch_end" and state.epoch == 1:
        raise RuntimeError("simulated crash")


def _first_epoch(tmp_path, model=None, n=32, bs=8, **kw):
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(model if model is not None else mlp(seed=0), loader(blobs(n=n), bs),
            config(checkpoint_dir=tmp_path, epochs=3, lr=1e-2, **kw),
            callbacks=[_crash_after_first_epoch])
    return tmp_path / "last.pt"


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    ckpt = _first_epoch(tmp_path)
    with pytest.raises(ValueError, match=r"(?s)last\.pt.*different run.*lr: 0\.01 in the "
                                         r"checkpoint, 0\.001 now.*resume=False"):
        fit(mlp(seed=0), loader(blobs(n=32), 8),
            config(checkpoint_dir=tmp_path, resume=True, epochs=3, lr=1e-3))
    with pytest.raises(ValueError, match=r"epochs: 3 in the checkpoint, 5 now"):
        fit(mlp(seed=0), loader(blobs(n=32), 8),
            config(checkpoint_dir=tmp_path, resume=True, epochs=5, lr=1e-2))
    with pytest.raises(ValueError, match=r"batches per epoch.*4 in the checkpoint, 2 now"):
        fit(mlp(seed=0), loader(blobs(n=32), 16),
            config(checkpoint_dir=tmp_path, resume=True, epochs=3, lr=1e-2))
    wide = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    with pytest.raises(ValueError, match=r"model: .*0\.weight \(16, 8\) in the checkpoint, "
                                         r"\(32, 8\) now"):
        fit(wide, loader(blobs(n=32), 8),
            config(checkpoint_dir=tmp_path, resume=True, epochs=3, lr=1e-2))
    assert ckpt.exists()
    # display/evaluation settings do not count: this resumes (and finishes) the run
    h = fit(mlp(seed=0), loader(blobs(n=32), 8),
            config(checkpoint_dir=str(tmp_path), resume=True, epochs=3, lr=1e-2, eval_every=2,
                   live_plot=5))
    assert [r["epoch"] for r in h.epochs] == [1, 2, 3]


def test_resume_names_a_damaged_checkpoint(tmp_path):
    ckpt = _first_epoch(tmp_path)
    _truncate(ckpt)
    with pytest.raises(T.DamagedFileError, match=r"(?s)last\.pt.*damaged.*Delete it.*resume=False"):
        fit(mlp(seed=0), loader(blobs(n=32), 8),
            config(checkpoint_dir=tmp_path, resume=True, epochs=3, lr=1e-2))


# ---------------------------------------------------------------------------------------------
# evaluation


class Passthrough(nn.Module):
    """Returns its input as the logits (or the two halves of it as a tuple)."""

    def __init__(self, as_tuple=False):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.as_tuple = as_tuple

    def forward(self, x):
        return (x[:, 0], x[:, 1]) if self.as_tuple else x


def test_evaluate_known_outputs():
    y = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    logits = torch.zeros(8, 6)
    for i in range(8):
        logits[i, y[i]] = 5.0 if i < 6 else 1.0  # rows 0..5: right at rank 1
    logits[6] = torch.tensor([1.0, 2, 3, 4, 5, 6])  # label 0 ranks 6th -> miss top-5
    logits[7] = torch.tensor([9.0, 1.5, 8, 7, 6, 0])  # label 1 ranks 5th -> top-5 hit
    model = Passthrough()
    model.train()
    out = evaluate(model, loader(TensorDataset(logits, y), 3))
    assert out["n"] == 8
    assert out["top1"] == pytest.approx(75.0)
    assert out["top5"] == pytest.approx(87.5)
    assert out["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert model.training  # mode restored


def test_evaluate_averages_tuple_outputs_and_predict():
    g = torch.Generator().manual_seed(0)
    pairs = torch.randn(10, 2, 5, generator=g)
    y = torch.randint(0, 5, (10,), generator=g)
    mean = pairs.mean(1)
    out = evaluate(Passthrough(as_tuple=True), loader(TensorDataset(pairs, y), 4))
    expected = (mean.argmax(1) == y).float().mean().item() * 100
    assert out["top1"] == pytest.approx(expected)
    logits, targets = predict(Passthrough(as_tuple=True), loader(TensorDataset(pairs, y), 4))
    torch.testing.assert_close(logits, mean)
    assert torch.equal(targets, y)


# ---------------------------------------------------------------------------------------------
# plumbing


def test_channels_last_path():
    rec = Recorder()
    model = convnet()
    fit(model, loader(images(n=16), 8), config(epochs=1, channels_last=True), criterion=rec)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(inp.is_contiguous(memory_format=torch.channels_last) for inp, _, _ in rec.calls)


def test_live_plot_is_headless_safe():
    ds = blobs(n=16)
    hist = fit(mlp(), loader(ds, 4), config(epochs=2, live_plot=1), eval_loader=loader(ds, 8))
    assert not T.LivePlot(1).enabled  # not in a notebook kernel
    fig = T.LivePlot(1, enabled=True).draw(hist)
    assert fig.axes[0].lines
    assert len(hist.steps["loss"]) == 8


def _fake_notebook(monkeypatch, headless: bool):
    """A Jupyter kernel as fit sees it: viz.headless() says ``headless``, displays are kept."""
    import IPython.display

    from course_lib import viz

    shown = []
    monkeypatch.setattr(viz, "headless", lambda: headless)
    monkeypatch.setattr(T.progress, "_in_notebook", lambda: True)  # LivePlot reads it there
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj) or
                        type("Handle", (), {"update": lambda self, o: shown.append(o)})())
    return shown


def test_live_plot_is_auto_on_in_an_interactive_notebook(monkeypatch):
    from matplotlib.figure import Figure

    assert TrainConfig().live_plot == "auto"
    shown = _fake_notebook(monkeypatch, headless=False)
    assert T.live_plot_every("auto", 24) == 10 and T.live_plot_every("auto", 4000) == 100
    ds = blobs(n=96)
    fit(mlp(), loader(ds, 4), config(epochs=1, progress=True))  # 24 steps: redraw every 10
    assert shown and all(isinstance(f, Figure) for f in shown)
    assert len(shown) <= 3  # step 10 (step 20, < 1 s later, is skipped) and the epoch end: cheap
    assert T.live_plot_every("auto", 24, progress=False) == 0  # a quiet run stays quiet
    assert T.live_plot_every(5, 24) == 5  # an explicit interval is kept
    with pytest.raises(ValueError, match="live_plot"):
        TrainConfig(live_plot="sometimes")


def test_live_plot_is_off_headless(monkeypatch):
    ds = blobs(n=16)
    shown = _fake_notebook(monkeypatch, headless=True)
    fit(mlp(), loader(ds, 4), config(epochs=1, progress=True))
    assert shown == []
    assert T.live_plot_every("auto", 1000) == 0
    monkeypatch.undo()  # the real viz.headless(): COURSE_HEADLESS=1 or Agg turns it off
    monkeypatch.setenv("COURSE_HEADLESS", "1")
    assert T.live_plot_every("auto", 1000) == 0
    monkeypatch.delenv("COURSE_HEADLESS")
    assert matplotlib.get_backend().lower() == "agg"
    assert T.live_plot_every("auto", 1000) == 0


class _BarLog:
    """A stand-in for tqdm that records every bar's desc, n and total when it is closed."""

    def __init__(self):
        self.closed = []
        log = self

        class Bar:
            def __init__(self, iterable=None, total=None, desc=None, disable=False, **kw):
                self.total, self.desc, self.disable, self.n = total, desc, disable, 0

            def update(self, k=1):
                self.n += k

            def set_postfix(self, *a, **kw):
                pass

            def refresh(self):
                pass

            def close(self):
                log.closed.append((self.desc, self.n, self.total))

            @staticmethod
            def write(s, **kw):
                print(s)

        self.Bar = Bar


def test_progress_bars_end_full_when_max_steps_stops_early(monkeypatch):
    bars = _BarLog()
    monkeypatch.setattr(T.progress, "progress_bar", bars.Bar)  # fit reads it there
    ds = blobs(n=32)
    fit(mlp(), loader(ds, 4), config(epochs=2, progress=True, max_steps=3, live_plot=0))
    assert bars.closed  # one bar per epoch that ran
    # tqdm.notebook paints a bar closed with n < total red: an early stop is no error
    assert all(n == total for _, n, total in bars.closed), bars.closed
    assert bars.closed[-1][1] == 3

    bars.closed.clear()

    def stop_at_2(event, state):
        if event == "step_end" and state.step == 2:
            raise StopTraining

    fit(mlp(), loader(ds, 4), config(epochs=1, progress=True, live_plot=0), callbacks=[stop_at_2])
    assert bars.closed == [("epoch 1/1", 2, 2)]


def test_finish_bar_on_a_real_tqdm():
    import io

    from tqdm import tqdm

    bar = tqdm(total=10, disable=False, leave=False, file=io.StringIO())
    bar.update(4)
    T.finish_bar(bar)
    assert bar.n == bar.total == 4
    quiet = tqdm(total=10, disable=True)
    T.finish_bar(quiet)  # a disabled bar is left alone


def test_setup_distributed_outside_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert T.setup_distributed("cpu") == torch.device("cpu")
    assert T.is_main_process()
    assert not torch.distributed.is_initialized()


def test_config_key_is_order_independent():
    a = T.config_key("t", {"a": 1, "b": [1, 2]})
    assert a == T.config_key("t", {"b": [1, 2], "a": 1})
    assert a != T.config_key("t", {"a": 2, "b": [1, 2]})
    assert a != T.config_key("u", {"a": 1, "b": [1, 2]})
    assert len(a) == 16 and int(a, 16) >= 0


def test_progress_bar_is_plain_text_when_headless(monkeypatch):
    """make run logs a notebook's outputs: widget bars show there only as '0%' lines."""
    import tqdm.auto
    import tqdm.std

    monkeypatch.setenv("COURSE_HEADLESS", "1")
    out = io.StringIO()
    bar = T.progress_bar(total=3, file=out)
    assert isinstance(bar, tqdm.std.tqdm) and not isinstance(bar, tqdm.auto.tqdm)
    assert bar.mininterval == T.HEADLESS_BAR_SECONDS
    before = out.getvalue()
    bar.set_postfix(loss="1.0")  # no line of its own: it waits for the next timed refresh
    assert out.getvalue() == before
    bar.update(3)
    bar.close()
    assert "3/3" in out.getvalue()
