"""ALBEF's runs: pre-training and fine-tuning (one loop, cached per variant), the official
two-stage retrieval evaluation (ITC shortlist, ITM re-rank), the ITM plateau probe, and the
analyses of trained models (the momentum model's pseudo-targets, Fig. 11; Grad-CAM)."""
from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from course_lib import config, train

from .data import ALBEFData, PairData
from .method import ALBEF, ALBEFConfig, alpha_at
from .tokenizer import CaptionTokenizer

CODE_VERSION = 2  # part of the cache keys of the trained models (train_variant); 2: fit's warm-up


# ==============================================================================================
# Training
# ==============================================================================================
def _normalize(images_u8: torch.Tensor, cfg: ALBEFConfig, device) -> torch.Tensor:
    x = images_u8.to(device, non_blocking=True).float().div_(255)
    mean = torch.tensor(cfg.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def _param_groups(model: ALBEF, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(("pos_embed", "cls_token")) or "embeddings" in name
         else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class _PairBatches:
    """One epoch of shuffled pair batches for :func:`course_lib.train.fit`: ``(images, token ids,
    attention mask, image ids (fine-tuning), alpha)``, full batches only; the shuffle draws from
    ``generator`` (which the model also uses for its negatives). ``alpha`` follows the MoD
    warm-up of pre-training (0 when fine-tuning)."""

    def __init__(self, data: PairData, tok: CaptionTokenizer, cfg: ALBEFConfig, stage: str,
                 generator, device):
        self.data, self.tok, self.cfg, self.stage, self.generator = data, tok, cfg, stage, generator
        self.device = torch.device(device)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.data) // self.cfg.batch_size

    def __iter__(self):
        data, bs, n = self.data, self.cfg.batch_size, len(self)
        epoch, self.epoch = self.epoch, self.epoch + 1
        perm = torch.randperm(len(data), generator=self.generator)
        for i in range(n):
            sel = perm[i * bs:(i + 1) * bs]
            img_idx = torch.as_tensor(data.image_of[sel.numpy()])
            images = _normalize(data.load_images(img_idx), self.cfg, self.device)
            ids, mask = self.tok.encode([data.captions[int(j)] for j in sel])
            pretrain = self.stage == "pretrain"
            alpha = alpha_at(epoch, i, n, self.cfg.alpha) if pretrain else 0.0
            yield images, ids, mask, None if pretrain else img_idx, alpha


def _train_loop(model: ALBEF, data: PairData, cfg: ALBEFConfig, *, epochs: int, lr: float, stage: str,
                device, seed: int, log: Callable[[str], Any] | None) -> train.History:
    """Pre-training (ITC + ITM + MLM as ``cfg`` says, MoD with the alpha warm-up) and fine-tuning
    (ITC + ITM_hard, alpha 0, no MLM) through the course's one loop,
    :func:`course_lib.train.fit`. The momentum model and the queues are updated inside
    ``ALBEF.forward`` (eqs. 1-6), so the step is just the model's loss. AdamW without weight
    decay on norms, biases and embeddings; warm-up for ``cfg.warmup`` of the steps, then cosine
    to 0 (``fit``'s schedule)."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = len(data) // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(data)} pairs are fewer than one batch of {cfg.batch_size}")
    total = steps_per_epoch * epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * epochs)
    batches = _PairBatches(data, model.tok, cfg, stage, gen, device)
    mlm = None if stage == "pretrain" else False
    alphas: list[float] = []

    def step(net, batch):
        images, ids, mask, idx, alpha = batch
        alphas.append(alpha)
        out = net(images, ids, mask, alpha=alpha, generator=gen, idx=idx, mlm=mlm)
        return out["loss"], {k: out[k] for k in ("itc", "itm", "mlm", "itm_acc", "mlm_acc") if k in out}

    def report(event: str, state) -> None:
        if event != "epoch_end":
            return
        rec = state.history.epochs[-1]
        rec.update(alpha=alphas[-1] if alphas else 0.0, temp=model.temp.item())
        if log is not None:
            log(f"  {stage} epoch {rec['epoch']}/{epochs}: loss {rec['train_loss']:.3f} (itc {rec.get('train_itc', 0):.3f} "
                f"itm {rec.get('train_itm', 0):.3f} mlm {rec.get('train_mlm', 0):.3f}) "
                f"temp {rec['temp']:.3f} alpha {rec['alpha']:.2f} {rec['images_per_s']:.0f} pairs/s")

    tcfg = train.TrainConfig(epochs=epochs, lr=lr, min_lr=0.0, warmup_epochs=cfg.warmup * total / steps_per_epoch,
                             amp=cfg.amp, seed=None, progress=False, live_plot=0, max_steps=cfg.max_steps)
    hist = train.fit(model, batches, tcfg, device=device, step=step, callbacks=[report],
                     optimizer=lambda net: torch.optim.AdamW(_param_groups(net, cfg.weight_decay), lr=lr,
                                                             betas=(0.9, 0.999)))
    model.eval()
    return hist


def build_model(cfg: ALBEFConfig, tok: CaptionTokenizer, seed: int = 0, device=None) -> ALBEF:
    torch.manual_seed(seed)
    model = ALBEF(cfg, tok)
    model.reset_momentum(seed)
    return model.to(device or "cpu")


def pretrain(model: ALBEF, data: PairData, cfg: ALBEFConfig | None = None, device=None, seed: int = 0,
             log: Callable[[str], Any] | None = print) -> train.History:
    """Pre-train ``model`` on ``data`` with the losses of ``cfg`` (default ``model.cfg``)."""
    cfg = cfg or model.cfg
    return _train_loop(model, data, cfg, epochs=cfg.epochs, lr=cfg.lr, stage="pretrain",
                       device=device or config.pick_device("auto"), seed=seed, log=log)


def finetune(model: ALBEF, data: PairData, cfg: ALBEFConfig | None = None, device=None, seed: int = 0,
             log: Callable[[str], Any] | None = print) -> train.History:
    """Fine-tune for retrieval (official ``Retrieval.py`` losses, without distillation): ITC with
    fresh queues + ITM with hard negatives; captions of one image are all positives."""
    cfg = replace(cfg or model.cfg, itc=True, itm_hard=True, mod_itc=False, mod_mlm=False, mlm=False)
    model.cfg = cfg
    model.reset_momentum(seed + 1)
    return _train_loop(model, data, cfg, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, stage="finetune",
                       device=device or config.pick_device("auto"), seed=seed + 1, log=log)


def pretrain_variant(variant: str, d: ALBEFData, cfg: ALBEFConfig, seed: int = 0, device=None, force: bool = False,
                     log: Callable[[str], Any] | None = print) -> tuple[ALBEF, Any]:
    """Pre-train one Table 1 variant on ``d.pretrain`` (cached, ``train.cached_model``): the
    stage the course zoo's ``albef_*`` entries build ahead of time. Returns the model and its
    cache info."""
    device = torch.device(device) if device is not None else config.pick_device("auto")
    vcfg = cfg.variant(variant)

    def fit_pre(m):
        return pretrain(m, d.pretrain, vcfg, device, seed, log)

    pre, pinfo = train.cached_model(_tag(variant, d) + "-pre", _key(vcfg, d, seed),
                                    lambda: build_model(vcfg, d.tok, seed, device), fit_pre, force=force)
    pre.eval()
    return pre, pinfo


def _tag(variant: str, d: ALBEFData) -> str:
    return f"albef-{variant}-n{int(round(100 * d.noise))}"


def _key(vcfg: ALBEFConfig, d: ALBEFData, seed: int) -> dict:
    return {**d.key, "albef": asdict(vcfg), "seed": seed, "code": CODE_VERSION}


def train_variant(variant: str, d: ALBEFData, cfg: ALBEFConfig, seed: int = 0, device=None, force: bool = False,
                  log: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """Pre-train one Table 1 variant on ``d.pretrain`` (:func:`pretrain_variant`) and fine-tune
    it on ``d.finetune``; both stages cached (``train.cached_model``). Returns the two models and
    their histories."""
    device = torch.device(device) if device is not None else config.pick_device("auto")
    vcfg = cfg.variant(variant)
    pre, pinfo = pretrain_variant(variant, d, cfg, seed, device, force, log)

    def fit_ft(m):
        return finetune(m, d.finetune, vcfg, device, seed, log)

    def build_ft():
        m = build_model(vcfg, d.tok, seed, device)
        m.load_state_dict(pre.state_dict())
        return m

    ft, finfo = train.cached_model(_tag(variant, d) + "-ft", {**_key(vcfg, d, seed), "stage": "finetune"}, build_ft,
                                   fit_ft, force=force)
    ft.cfg = replace(vcfg, itc=True, itm_hard=True, mod_itc=False, mod_mlm=False, mlm=False)
    ft.eval()
    return {"pretrained": pre, "finetuned": ft, "pre_info": pinfo, "ft_info": finfo,
            "seconds": (pinfo.train_seconds + finfo.train_seconds), "cached": pinfo.from_cache and finfo.from_cache}


# ==============================================================================================
# Retrieval (official Retrieval.py evaluation)
# ==============================================================================================
@torch.no_grad()
def _embed_all(model: ALBEF, data: PairData, device, batch_size: int = 256):
    cfg = model.cfg
    img_emb, img_feat = [], []
    for s in range(0, data.num_images, batch_size):
        e, f = model.encode_image(_normalize(data.load_images(range(s, min(s + batch_size, data.num_images))), cfg, device))
        img_emb.append(e)
        img_feat.append(f)
    ids, mask = model.tok.encode(data.captions)
    ids, mask = ids.to(device), mask.to(device)
    txt_h, txt_feat = [], []
    for s in range(0, len(ids), batch_size):
        h, f = model.encode_text(ids[s:s + batch_size], mask[s:s + batch_size])
        txt_h.append(h)
        txt_feat.append(f)
    return torch.cat(img_emb), torch.cat(img_feat), torch.cat(txt_h), torch.cat(txt_feat), mask


@torch.no_grad()
def retrieval_scores(model: ALBEF, data: PairData, k_test: int = 16, device=None, batch_size: int = 256,
                     rerank: bool = True) -> dict[str, torch.Tensor]:
    """Scores of every image against every caption: ``sims`` = ITC cosine similarity (N_img, N_txt);
    ``i2t`` / ``t2i`` = the ITM "match" logit on each row's top-``k_test`` ITC candidates and -100
    elsewhere (the official two-stage ranking). ``rerank=False`` returns the ITC scores only."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    img_emb, img_feat, txt_h, txt_feat, mask = _embed_all(model, data, device, batch_size)
    sims = img_feat @ txt_feat.T
    out = {"sims": sims.cpu()}
    if not rerank:
        out["i2t"], out["t2i"] = sims.cpu(), sims.T.cpu()
        return out
    k_i2t = min(k_test, sims.shape[1])
    k_t2i = min(k_test, sims.shape[0])
    i2t = torch.full(sims.shape, -100.0)
    t2i = torch.full(sims.T.shape, -100.0)
    rows = max(1, batch_size // max(k_i2t, 1))
    for s in range(0, sims.shape[0], rows):                     # image -> its top-k texts
        top = sims[s:s + rows].topk(k_i2t, dim=1).indices        # (r, k)
        r = top.shape[0]
        img = img_emb[s:s + r].repeat_interleave(k_i2t, 0)
        sc = model.itm_logits(txt_h[top.flatten()], mask[top.flatten()], img)[:, 1].float().view(r, k_i2t)
        i2t[torch.arange(s, s + r)[:, None], top.cpu()] = sc.cpu()
    rows = max(1, batch_size // max(k_t2i, 1))
    simsT = sims.T
    for s in range(0, simsT.shape[0], rows):                    # text -> its top-k images
        top = simsT[s:s + rows].topk(k_t2i, dim=1).indices
        r = top.shape[0]
        h = txt_h[s:s + r].repeat_interleave(k_t2i, 0)
        m = mask[s:s + r].repeat_interleave(k_t2i, 0)
        sc = model.itm_logits(h, m, img_emb[top.flatten()])[:, 1].float().view(r, k_t2i)
        t2i[torch.arange(s, s + r)[:, None], top.cpu()] = sc.cpu()
    out["i2t"], out["t2i"] = i2t, t2i
    return out


def retrieval_metrics(scores_i2t: torch.Tensor | np.ndarray, scores_t2i: torch.Tensor | np.ndarray,
                      img2txt: Sequence[Sequence[int]], txt2img: Sequence[int]) -> dict[str, float]:
    """Recall@1/5/10 in percent, as the official ``itm_eval``: text retrieval (an image's rank is
    its best-ranked caption's), image retrieval, their means over R@1/5/10 (``txt_r_mean``,
    ``img_r_mean``: Table 1's TR and IR) and ``r_mean``."""
    s_i2t = np.asarray(scores_i2t, dtype=np.float64)
    s_t2i = np.asarray(scores_t2i, dtype=np.float64)
    ranks = np.zeros(len(s_i2t))
    for i, row in enumerate(s_i2t):
        order = np.argsort(-row, kind="stable")
        pos = np.empty_like(order)
        pos[order] = np.arange(len(order))
        ranks[i] = min(pos[j] for j in img2txt[i])
    tr = [100.0 * np.mean(ranks < k) for k in (1, 5, 10)]
    ranks = np.zeros(len(s_t2i))
    for j, row in enumerate(s_t2i):
        order = np.argsort(-row, kind="stable")
        ranks[j] = int(np.nonzero(order == txt2img[j])[0][0])
    ir = [100.0 * np.mean(ranks < k) for k in (1, 5, 10)]
    out = {"txt_r1": tr[0], "txt_r5": tr[1], "txt_r10": tr[2], "txt_r_mean": float(np.mean(tr)),
           "img_r1": ir[0], "img_r5": ir[1], "img_r10": ir[2], "img_r_mean": float(np.mean(ir))}
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return out


def evaluate(model: ALBEF, data: PairData, k_test: int = 16, device=None) -> dict[str, float]:
    """ITC shortlist + ITM rerank metrics, and the ITC-only metrics (prefixed ``itc_``)."""
    sc = retrieval_scores(model, data, k_test, device)
    i2t, t2i = data.img2txt(), data.image_of
    out = retrieval_metrics(sc["i2t"], sc["t2i"], i2t, t2i)
    out.update({f"itc_{k}": v for k, v in retrieval_metrics(sc["sims"], sc["sims"].T, i2t, t2i).items()})
    return out


# ==============================================================================================
# Why ITM can sit on a plateau (a probe of fresh small models)
# ==============================================================================================
ITM_PROBES = {
    "ITM alone (random negatives)": dict(variant="mlm_itm", mlm=False),
    "ITC + ITM (random negatives)": dict(variant="itc_mlm_itm", mlm=False),
    "ITC + ITM_hard (fine-tuning losses)": dict(variant="itc_mlm_itm_hard", mlm=False),
    "MLM + ITM (random negatives)": dict(variant="mlm_itm", mlm=True),
}


class _RandomBatches:
    """``steps`` batches of ``batch_size`` rows drawn without replacement from ``tensors`` (a
    fresh permutation from ``generator`` per batch)."""

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch_size: int, steps: int, generator):
        self.tensors, self.batch_size, self.steps, self.generator = tensors, batch_size, steps, generator

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        n = len(self.tensors[0])
        for _ in range(self.steps):
            sel = torch.randperm(n, generator=self.generator)[: self.batch_size]
            yield tuple(t[sel] for t in self.tensors)


def itm_plateau_probe(data: PairData, tok: CaptionTokenizer, cfg: ALBEFConfig, steps: int = 150, pool: int = 256,
                      lr: float = 2e-3, seed: int = 0, probes: Mapping[str, Mapping[str, Any]] | None = None,
                      every: int = 15) -> dict[str, list[float]]:
    """Why ITM can fail from scratch: train fresh small models for ``steps`` steps on ``pool`` pairs
    with different loss mixes and return the ITM loss (mean over every ``every`` steps) of each.
    The 1:2 prior's entropy (0.637 nats) is the plateau: ITM alone, or ITC + ITM with random
    negatives, leave it after a few dozen steps; adding MLM (which shares the fusion layers and
    dominates their Adam statistics) or sampling hard negatives keeps it there."""
    probes = dict(probes or ITM_PROBES)
    out: dict[str, list[float]] = {}
    for name, spec in probes.items():
        c = replace(cfg.variant(spec["variant"]), mlm=spec["mlm"])
        m = build_model(c, tok, seed)
        g = torch.Generator().manual_seed(seed)
        idx = torch.arange(min(pool, len(data)))
        X = _normalize(data.load_images(torch.as_tensor(data.image_of[idx.numpy()])), c, "cpu")
        ids, mask = tok.encode([data.captions[int(i)] for i in idx])
        itm: list[float] = []

        def step(net, batch, c=c, g=g, itm=itm):
            res = net(*batch, alpha=c.alpha, generator=g)
            itm.append(res["itm"].item())
            return res["loss"]

        train.fit(m, _RandomBatches((X, ids, mask), c.batch_size, steps, g),
                  train.TrainConfig(epochs=1, lr=lr, schedule="constant", amp="none", seed=None, progress=False,
                                    live_plot=0),
                  device="cpu", step=step, optimizer=lambda net: torch.optim.AdamW(net.trainable_parameters(), lr=lr))
        curve = [sum(itm[i:i + every]) / every for i in range(0, len(itm) - every + 1, every)]
        out[name] = curve
    return out


# ==============================================================================================
# Pseudo-targets (Fig. 11) and Grad-CAM
# ==============================================================================================
@torch.no_grad()
def pseudo_targets(model: ALBEF, images_u8: torch.Tensor, captions: Sequence[str], k: int = 5,
                   device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The momentum model's ITC pseudo-targets (eq. 6's ``q^{i2t}``) of ``images`` over a pool of
    ``captions``: ``softmax(s'(I, T_m) / tau)``. Returns (top-``k`` probabilities, indices), (n, k)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    _, f_img = model.encode_image(_normalize(images_u8, model.cfg, device), momentum=True)
    ids, mask = model.tok.encode(list(captions))
    _, f_txt = model.encode_text(ids.to(device), mask.to(device), momentum=True)
    q = F.softmax(f_img @ f_txt.T / model.temp, dim=1)
    p, i = q.topk(min(k, q.shape[1]), dim=1)
    return p.cpu(), i.cpu()


@torch.no_grad()
def noisy_pair_diagnosis(model: ALBEF, data: PairData, n: int = 256, pool: int = 510, seed: int = 0,
                         device=None) -> dict[str, Any]:
    """How the momentum model's pseudo-targets treat corrupted pairs. For up to ``n`` corrupted
    training pairs, ``q = softmax(s'(I, T) / tau)`` over the corrupted (given) caption, the true
    caption and a shared pool of ``pool`` other clean captions (pool captions equal to either are
    left out). Reports how often q puts more mass on the true caption than on the given one, and
    the mean mass on each (the one-hot target puts all of it on the given caption)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if data.noise is None or not (data.noise > 0).any():
        return {"n": 0}
    rng = np.random.default_rng(seed)
    noisy = rng.permutation(np.nonzero(data.noise > 0)[0])[:n]
    pool_idx = rng.permutation(len(data))[:pool]
    pool_caps = [data.clean[int(j)] for j in pool_idx]

    def text_feats(caps):
        ids, mask = model.tok.encode(caps)
        return model.encode_text(ids.to(device), mask.to(device), momentum=True)[1]

    imgs = _normalize(data.load_images(torch.as_tensor(data.image_of[noisy])), model.cfg, device)
    f_img = model.encode_image(imgs, momentum=True)[1]
    given = [data.captions[int(i)] for i in noisy]
    true = [data.clean[int(i)] for i in noisy]
    s_given = (f_img * text_feats(given)).sum(1, keepdim=True)
    s_true = (f_img * text_feats(true)).sum(1, keepdim=True)
    s_pool = f_img @ text_feats(pool_caps).T
    same = torch.tensor([[c in (g, t) for c in pool_caps] for g, t in zip(given, true)], device=device)
    s_pool = s_pool.masked_fill(same, float("-inf"))
    q = F.softmax(torch.cat([s_given, s_true, s_pool], 1) / model.temp, dim=1).cpu()
    return {"n": len(noisy), "true_beats_given": 100 * float((q[:, 1] > q[:, 0]).float().mean()),
            "mass_true": float(q[:, 1].mean()), "mass_given": float(q[:, 0].mean()), "pool": pool + 2}


def gradcam(model: ALBEF, image_u8: torch.Tensor, caption: str, layer: int = 0, device=None
            ) -> tuple[list[str], torch.Tensor, torch.Tensor, float]:
    """Grad-CAM of the words on the image, as the official visualisation: the cross-attention maps
    of fusion layer ``layer`` (B=1, heads, L, 1 + N) times their gradient w.r.t. the ITM "match"
    logit, clamped at 0, averaged over the heads; the image [CLS] column dropped and the rest laid
    on the patch grid. Returns (tokens incl. [CLS]/[SEP], Grad-CAM (L, g, g), plain attention
    (L, g, g) mean over heads, ITM match probability)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    attn = model.text_encoder.fusion[layer].cross_attn
    attn.keep_maps = True
    try:
        x = _normalize(image_u8[None], model.cfg, device)
        ids, mask = model.tok.encode([caption])
        ids, mask = ids.to(device), mask.to(device)
        with torch.enable_grad():
            emb, _ = model.encode_image(x)
            h, _ = model.encode_text(ids, mask)
            logits = model.itm_logits(h, mask, emb)
            model.zero_grad(set_to_none=True)
            logits[0, 1].backward()
        maps, grads = attn.maps.detach(), attn.maps.grad.detach()
    finally:
        attn.keep_maps = False
        attn.maps = None
        model.zero_grad(set_to_none=True)
    g = model.visual_encoder.grid_size
    cam = (maps * grads).clamp(min=0).mean(1)[0, :, 1:].reshape(-1, *g)
    plain = maps.mean(1)[0, :, 1:].reshape(-1, *g)
    tokens = ["[CLS]"] + model.tok.tokenize(caption)[: model.cfg.max_len - 2] + ["[SEP]"]
    return tokens, cam.cpu(), plain.cpu(), float(F.softmax(logits.detach(), 1)[0, 1])


