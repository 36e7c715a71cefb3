"""Training-step speed of course_lib's readable ViT against timm's VisionTransformer.

Both models get the same configuration and the same weights; one "step" is forward + backward +
AdamW step on the same batch. After a warm-up the two models' repeats are interleaved (and the
order alternates) so that drift in machine load hits both equally. Prints the median step time
of each and the ratio timm_time / ours_time (>= 0.95 means ours is not slower), and checks that
our fast path goes through scaled_dot_product_attention without materialising an N x N
attention map.

    python benchmarks/bench_vit.py                       # img 32, patch 4, dim 192, depth 6, batch 64
    python benchmarks/bench_vit.py --img 224 --patch 16 --batch 32 --device cuda --bf16
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timm.models.vision_transformer import VisionTransformer as TimmViT  # noqa: E402

from course_lib.models.vit import VisionTransformer, load_timm_state_dict  # noqa: E402


class SquareAttentionDetector(TorchDispatchMode):
    """Records every op whose output ends in an (n_tokens, n_tokens) matrix."""

    def __init__(self, n_tokens: int) -> None:
        super().__init__()
        self.n_tokens = n_tokens
        self.hits: list[str] = []
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.add(str(func.overloadpacket))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.ndim >= 3 and tuple(t.shape[-2:]) == (self.n_tokens,) * 2:
                self.hits.append(f"{func} -> {tuple(t.shape)}")
        return out


class OpRecorder(TorchDispatchMode):
    """Records (op, input shapes) of every aten op that runs."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
        self.ops.append((str(func), shapes))
        return func(*args, **(kwargs or {}))


def compare_ops(ours: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Do both models run the same aten ops (forward + backward)? Then only Python overhead differs."""
    counts = []
    for model in (ours, ref):
        with OpRecorder() as rec:
            F.cross_entropy(model.train()(x[:2]), y[:2]).backward()
        model.zero_grad(set_to_none=True)
        counts.append(Counter(rec.ops))
    same = counts[0] == counts[1]
    print(f"aten ops per training step (batch 2): ours {counts[0].total()}, timm {counts[1].total()}, "
          f"identical ops and shapes: {same}")
    if not same:
        print(f"  only ours: {dict(counts[0] - counts[1])}\n  only timm: {dict(counts[1] - counts[0])}")


def check_fast_path(model: VisionTransformer, x: torch.Tensor) -> None:
    calls = []
    original = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    n_tokens = model.pos_embed.shape[1]
    F.scaled_dot_product_attention = counting
    try:
        with torch.no_grad():
            with SquareAttentionDetector(n_tokens) as fast:
                model(x[:2])
            with SquareAttentionDetector(n_tokens) as explicit:
                model.get_attention(x[:2])
    finally:
        F.scaled_dot_product_attention = original
    sdpa_ops = sorted(op for op in fast.ops if "attention" in op)
    print(f"fast path: {len(calls)} scaled_dot_product_attention calls for {len(model.blocks)} blocks "
          f"(kernel: {', '.join(sdpa_ops) or '?'}); N x N tensors materialised: {len(fast.hits)}")
    print(f"explicit path (get_attention): N x N tensors materialised: {len(explicit.hits)} (expected)")
    if len(calls) != len(model.blocks) or fast.hits:
        raise SystemExit("the fast path does not use SDPA cleanly: " + "; ".join(fast.hits[:4]))


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--img", type=int, default=32)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15, help="timed steps per model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = dict(img_size=args.img, patch_size=args.patch, embed_dim=args.dim, depth=args.depth,
               num_heads=args.heads, num_classes=args.classes)
    torch.manual_seed(0)
    ref = TimmViT(**cfg).to(device)
    ours = VisionTransformer(**cfg).to(device)
    load_timm_state_dict(ours, ref.state_dict())  # identical weights
    x = torch.randn(args.batch, 3, args.img, args.img, device=device)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    with torch.no_grad():
        diff = (ours.eval()(x[:4]) - ref.eval()(x[:4])).abs().max().item()
    print(f"config {cfg}, batch {args.batch}, device {device}, threads {torch.get_num_threads()}, "
          f"bf16 {args.bf16}; max |logit diff| ours vs timm: {diff:.2e}")
    check_fast_path(ours, x)
    compare_ops(ours, ref, x, y)

    models = {"ours": ours.train(), "timm": ref.train()}
    optims = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.bf16 else nullcontext

    def step(name: str) -> float:
        model, opt = models[name], optims[name]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        for name in models:
            step(name)
    times: dict[str, list[float]] = {name: [] for name in models}
    for r in range(args.repeats):
        order = ("ours", "timm") if r % 2 == 0 else ("timm", "ours")  # alternate to cancel drift
        for name in order:
            times[name].append(step(name))

    med = {name: statistics.median(t) for name, t in times.items()}
    pair_ratio = statistics.median(t / o for t, o in zip(times["timm"], times["ours"]))
    for name in models:
        print(f"{name:>5}: median step {med[name] * 1e3:8.1f} ms  ({args.batch / med[name]:7.1f} img/s)  "
              f"min {min(times[name]) * 1e3:.1f} ms")
    ratio = med["timm"] / med["ours"]
    min_ratio = min(times["timm"]) / min(times["ours"])
    print(f"ratio timm_time / ours_time = {ratio:.3f} (median of per-repeat ratios {pair_ratio:.3f}, "
          f"ratio of minima {min_ratio:.3f}); "
          f"{'OK' if ratio >= 0.95 else 'SLOWER THAN TIMM'} (>= 0.95 required)")
    return ratio


if __name__ == "__main__":
    main()
