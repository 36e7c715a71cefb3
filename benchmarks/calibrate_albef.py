"""Calibrate notebook 01 (ALBEF): training speed and retrieval of the Table 1 variants.

Speed (default): times pre-training steps of every Table 1 variant (forward with all its losses,
momentum model and queues included, backward, AdamW step), a fine-tuning step and the retrieval
evaluation, on the study world's pairs; prints pairs/s by wall clock and by CPU time (with one
thread on a shared machine the CPU-time rate is close to what a quiet machine gives), best of
``--rounds`` interleaved rounds. Run it alone::

    OMP_NUM_THREADS=1 python benchmarks/calibrate_albef.py --threads 1
    python benchmarks/calibrate_albef.py --set embed_dim=48 --set vision_depth=2

ITM plateau (``itm``): ``albef.itm_plateau_probe`` (ITM alone / ITC + ITM / ITC + ITM_hard / MLM + ITM
from scratch, ITM loss every 15 steps), e.g. ``python benchmarks/calibrate_albef.py itm --steps 300``.

Accuracy (``train``): runs the notebook's own protocol (``albef.train_variant`` + ``evaluate``:
pre-train, fine-tune on the clean val split, test) for chosen variants and noise levels, and prints
one ``RESULT {json}`` line per run (fine-tuned and zero-shot TR / IR, ITC-only recall, seconds,
pairs/s, load average). Models are cached under ``$COURSE_CACHE``::

    python benchmarks/calibrate_albef.py train --variants full,mlm_itm --noise 0,0.4 \\
        --set epochs=3 --world num_images=3000
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from course_lib.papers import albef


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for it in items or []:
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
        if isinstance(out[k], list):
            out[k] = tuple(out[k])
    return out


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def speed(args) -> None:
    cfg = albef.albef_config("study", **_parse_sets(args.set))
    wcfg = albef.world_config("study", **_parse_sets(args.world))
    d = albef.world_data(wcfg, 0.4, n_test=args.n_test, vocab_size=cfg.vocab_size, max_len=cfg.max_len)
    B = cfg.batch_size
    rows = {}
    variants = list(albef.VARIANTS) + ["finetune"]
    best = {v: (0.0, 0.0) for v in variants}
    models = {}
    for v in variants:
        vcfg = cfg.variant("full" if v == "finetune" else v)
        models[v] = albef.build_model(vcfg, d.tok, 0)
    for _ in range(args.rounds):
        for v in variants:
            m = models[v].train()
            opt = torch.optim.AdamW(m.trainable_parameters(), lr=1e-4)
            g = torch.Generator().manual_seed(0)
            t0 = c0 = 0.0
            for i in range(args.warmup + args.steps):
                if i == args.warmup:
                    t0, c0 = time.perf_counter(), time.process_time()
                sel = torch.arange(i * B, (i + 1) * B) % len(d.pretrain)
                x = albef.runs._normalize(d.pretrain.images[sel], cfg, "cpu")
                ids, mask = d.tok.encode([d.pretrain.captions[int(j)] for j in sel])
                if v == "finetune":
                    out = m(x, ids, mask, alpha=0.0, generator=g, idx=sel, mlm=False)
                else:
                    out = m(x, ids, mask, alpha=0.4, generator=g)
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                opt.step()
            wall = B * args.steps / (time.perf_counter() - t0)
            cpu = B * args.steps / max(time.process_time() - c0, 1e-9)
            best[v] = (max(best[v][0], wall), max(best[v][1], cpu))
    for v in variants:
        rows[v] = {"pairs_per_s_wall": round(best[v][0], 1), "pairs_per_s_cpu": round(best[v][1], 1)}
    # evaluation: embeddings + ITC shortlist + ITM rerank of n_test images and captions
    m = models["full"].eval()
    t0, c0 = time.perf_counter(), time.process_time()
    albef.evaluate(m, d.test, cfg_k := args.k_test, "cpu")
    rows["evaluate"] = {"seconds_wall": round(time.perf_counter() - t0, 2),
                        "seconds_cpu": round(time.process_time() - c0, 2), "n_test": d.test.num_images,
                        "k_test": cfg_k}
    counts = albef.param_counts(m)
    print(f"threads={torch.get_num_threads()} load={loadavg()} cfg: D={cfg.embed_dim} heads={cfg.num_heads} "
          f"vit depth={cfg.vision_depth} patch={cfg.patch_size} text={cfg.text_layers}+{cfg.fusion_layers} "
          f"batch={B} | trainable params {counts['total trainable']:,} | vocab {d.tok.vocab_size}")
    for k, r in rows.items():
        print(f"{k:18s} {r}")
    print("JSON", json.dumps({"cfg": _parse_sets(args.set), "world": _parse_sets(args.world), "rows": rows,
                              "threads": torch.get_num_threads(), "load": loadavg()}))


def train_runs(args) -> None:
    sets = _parse_sets(args.set)
    cfg = albef.albef_config(args.profile, **sets)
    wcfg = albef.world_config(args.profile, **_parse_sets(args.world))
    for noise in [float(x) for x in args.noise.split(",")]:
        t0 = time.perf_counter()
        d = albef.world_data(wcfg, noise, n_test=args.n_test, vocab_size=cfg.vocab_size, max_len=cfg.max_len)
        t_data = time.perf_counter() - t0
        for v in args.variants.split(","):
            t0 = time.perf_counter()
            r = albef.train_variant(v, d, cfg, args.seed, "cpu", args.force, log=print if args.verbose else None)
            t_train = time.perf_counter() - t0
            t0 = time.perf_counter()
            ft = albef.evaluate(r["finetuned"], d.test, args.k_test, "cpu")
            zs = albef.evaluate(r["pretrained"], d.test, args.k_test, "cpu")
            t_eval = time.perf_counter() - t0
            diag = {}
            if noise > 0 and args.diagnose and albef.VARIANTS[v]["itc"]:
                diag = albef.noisy_pair_diagnosis(r["pretrained"], d.pretrain, n=128)
            h = r["pre_info"].history
            hf = r["ft_info"].history
            res = {"variant": v, "noise": noise, "seed": args.seed, "set": sets, "world": _parse_sets(args.world),
                   "ft": {k: round(x, 2) for k, x in ft.items()}, "zs": {k: round(x, 2) for k, x in zs.items()},
                   "train_s": round(t_train, 1), "eval_s": round(t_eval, 1), "data_s": round(t_data, 1),
                   "cached": r["cached"],
                   "pre_pairs_per_s": round(sum(e["images_per_s"] for e in h.epochs) / len(h.epochs), 1) if h else None,
                   "ft_pairs_per_s": round(sum(e["images_per_s"] for e in hf.epochs) / len(hf.epochs), 1) if hf else None,
                   "pre_last": {k: round(x, 3) for k, x in h.epochs[-1].items() if k.startswith("train_") or k == "temp"} if h else None,
                   "diag": diag, "load": loadavg(), "threads": torch.get_num_threads()}
            print("RESULT", json.dumps(res), flush=True)
            print(f"  {v:18s} noise {noise}: fine-tuned r_mean {ft['r_mean']:.1f} (TR {ft['txt_r_mean']:.1f} IR "
                  f"{ft['img_r_mean']:.1f}, ITC-only {ft['itc_r_mean']:.1f}) zero-shot {zs['r_mean']:.1f} | "
                  f"train {t_train:.0f}s eval {t_eval:.0f}s | load {loadavg()}", flush=True)


def itm_probe(args) -> None:
    """The ITM plateau probe of the notebook (``albef.itm_plateau_probe``) with more steps."""
    cfg = albef.albef_config("study", **_parse_sets(args.set))
    wcfg = albef.world_config("study", **_parse_sets(args.world))
    d = albef.world_data(wcfg, 0.0, n_test=args.n_test, vocab_size=cfg.vocab_size, max_len=cfg.max_len)
    t0 = time.perf_counter()
    curves = albef.itm_plateau_probe(d.pretrain, d.tok, cfg, steps=args.steps, seed=args.seed)
    for k, v in curves.items():
        print(f"{k:38s} " + " ".join(f"{x:.3f}" for x in v))
    print("JSON", json.dumps({"curves": curves, "seconds": round(time.perf_counter() - t0, 1), "load": loadavg()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="speed", choices=("speed", "train", "itm"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--set", action="append", help="ALBEFConfig field=value (json)")
    ap.add_argument("--world", action="append", help="WorldConfig field=value (json)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--k-test", type=int, default=16)
    ap.add_argument("--variants", default=",".join(albef.VARIANTS))
    ap.add_argument("--noise", default="0,0.4")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", default="study")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--diagnose", action="store_true", help="pseudo-target diagnosis of noisy pairs")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    {"speed": speed, "train": train_runs, "itm": itm_probe}[args.mode](args)


if __name__ == "__main__":
    main()
