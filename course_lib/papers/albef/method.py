"""ALBEF's contribution: the model (image encoder, text encoder, multimodal encoder, their
momentum copies and the ITC queues) and the losses of pre-training, with the paper's equation
numbers.

* ITC (eq. 1-2) with momentum queues and momentum distillation (eq. 6): :func:`itc_targets`,
  :func:`itc_loss`, :meth:`ALBEF.dequeue_and_enqueue`, :func:`momentum_update`;
* ITM (eq. 4) with contrastive hard negatives: :func:`sample_negatives`, :meth:`ALBEF.itm_logits`;
* MLM (eq. 3) with the 80/10/10 masking and momentum distillation (eq. 7): :func:`mask_tokens`,
  :func:`mlm_loss`; the distillation weight's warm-up: :func:`alpha_at`;
* the full objective (eq. 5) ``L = L_itc + L_mlm + L_itm``: :meth:`ALBEF.forward`;
* Table 1's loss variants: :data:`VARIANTS`, switched by :class:`ALBEFConfig`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.models.vit import Mlp, VisionTransformer
from course_lib.models import count_params

from .tokenizer import CaptionTokenizer


# Table 1's pre-training variants: which losses, and where momentum distillation (MoD) acts.
VARIANTS: dict[str, dict[str, Any]] = {
    "mlm_itm": dict(itc=False, itm_hard=False, mod_itc=False, mod_mlm=False, label="MLM + ITM"),
    "itc_mlm_itm": dict(itc=True, itm_hard=False, mod_itc=False, mod_mlm=False, label="ITC + MLM + ITM"),
    "itc_mlm_itm_hard": dict(itc=True, itm_hard=True, mod_itc=False, mod_mlm=False,
                             label="ITC + MLM + ITM_hard"),
    "itc_mod": dict(itc=True, itm_hard=True, mod_itc=True, mod_mlm=False, label="ITC_MoD + MLM + ITM_hard"),
    "full": dict(itc=True, itm_hard=True, mod_itc=True, mod_mlm=True,
                 label="Full (ITC_MoD + MLM_MoD + ITM_hard)"),
}


# ==============================================================================================
# Loss pieces (pure functions, unit-tested)
# ==============================================================================================
def mask_tokens(ids: torch.Tensor, tok: CaptionTokenizer, prob: float = 0.15,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking for MLM (eq. 3): each ordinary token is chosen with probability ``prob``;
    a chosen token becomes [MASK] (80%), a random ordinary word (10%) or stays (10%).
    Special tokens ([PAD], [CLS], [SEP], ...) are never chosen. Returns ``(input_ids, labels)``,
    labels = the original id at chosen positions and -100 elsewhere (ignored by the loss)."""
    dev = ids.device
    special = torch.zeros_like(ids, dtype=torch.bool)
    for s in tok.special_ids:
        special |= ids == s
    u = torch.rand(ids.shape, generator=generator, device="cpu").to(dev)
    chosen = (u < prob) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    inputs = ids.clone()
    v = torch.rand(ids.shape, generator=generator, device="cpu").to(dev)
    to_mask = chosen & (v < 0.8)
    to_random = chosen & (v >= 0.8) & (v < 0.9)
    inputs[to_mask] = tok.mask_id
    ordinary = tok.ordinary_ids().to(dev)
    pick = torch.randint(len(ordinary), ids.shape, generator=generator, device="cpu").to(dev)
    inputs[to_random] = ordinary[pick[to_random]]
    return inputs, labels


def sample_negatives(sim: torch.Tensor | None, batch: int, generator: torch.Generator | None = None,
                     positives: torch.Tensor | None = None) -> torch.Tensor:
    """One negative per row for ITM (Sec. 3.2, "contrastive hard negative mining").

    ``sim`` (B, B): the in-batch contrastive similarity (already divided by the temperature);
    a negative is drawn with probability ``softmax(sim)`` over the row, with the positive(s)
    set to zero, so texts that look similar to the image are picked more often. ``sim=None``
    draws uniformly among the other items (random negatives, Table 1 rows 1-2). ``positives``
    (B, B) bool marks pairs that must never be negatives (default: the diagonal)."""
    if positives is None:
        positives = torch.eye(batch, dtype=torch.bool)
    positives = positives.to("cpu")
    if sim is None:
        w = torch.ones(batch, batch)
    else:
        w = F.softmax(sim.detach().float().cpu(), dim=1)
    w = w.masked_fill(positives, 0.0)
    # rows whose softmax underflowed to exactly 0 off the positives: uniform over the others
    empty = w.sum(1, keepdim=True) <= 0
    w = torch.where(empty, (~positives).float(), w)
    if (w.sum(1) <= 0).any():
        raise ValueError("a row has no possible negative (batch of 1, or every item is a positive)")
    return torch.multinomial(w, 1, generator=generator).squeeze(1)


def itc_targets(sim_m: torch.Tensor, alpha: float, positives: torch.Tensor | None = None) -> torch.Tensor:
    """ITC targets with momentum distillation (eq. 6, as the official code mixes them):
    ``alpha * softmax(s'/tau) + (1 - alpha) * y``, with ``y`` the one-hot (or, when one image has
    several captions in the batch, uniform over its ``positives``) ground truth. ``sim_m`` is
    (B, B + queue): the momentum features against the batch and the queue."""
    B = sim_m.shape[0]
    if positives is None:
        y = torch.zeros_like(sim_m)
        y[:, :B] = torch.eye(B, dtype=sim_m.dtype, device=sim_m.device)
    else:
        y = positives.to(sim_m.dtype)
        y = y / y.sum(1, keepdim=True)
    if alpha == 0:
        return y
    return alpha * F.softmax(sim_m, dim=1) + (1 - alpha) * y


def itc_loss(sim_i2t: torch.Tensor, sim_t2i: torch.Tensor, targets_i2t: torch.Tensor,
             targets_t2i: torch.Tensor) -> torch.Tensor:
    """Eq. 2 (and eq. 6 with soft targets): ``1/2 [H(y_i2t, p_i2t) + H(y_t2i, p_t2i)]`` with
    ``p = softmax(s / tau)`` (eq. 1), averaged over the batch. With soft targets
    ``q_mix = (1-alpha) y + alpha q`` the cross-entropy equals ``(1-alpha) H(y, p) + alpha KL(q || p)``
    plus the entropy of ``q``, a constant: the gradients of eq. 6."""
    l_i2t = -(F.log_softmax(sim_i2t, dim=1) * targets_i2t).sum(1).mean()
    l_t2i = -(F.log_softmax(sim_t2i, dim=1) * targets_t2i).sum(1).mean()
    return (l_i2t + l_t2i) / 2


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None = None,
             alpha: float = 0.0) -> torch.Tensor:
    """Eq. 3 on the masked positions; with the momentum model's softmax ``soft`` (eq. 7):
    ``(1 - alpha) * CE(labels) + alpha * H(soft, p)`` on the same positions (official reduction)."""
    V = logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, V).float(), labels.reshape(-1), ignore_index=-100)
    if soft is None or alpha == 0:
        return ce
    sel = labels != -100
    distill = -(F.log_softmax(logits[sel].float(), dim=-1) * soft[sel].float()).sum(-1).mean()
    return (1 - alpha) * ce + alpha * distill


def alpha_at(epoch: int, step_in_epoch: int, steps_per_epoch: int, alpha: float) -> float:
    """The distillation weight: ramped linearly from 0 over the first epoch, then constant
    (official ``Pretrain.py``: ``alpha * min(1, i / len(loader))`` in epoch 0)."""
    if epoch > 0:
        return alpha
    return alpha * min(1.0, step_in_epoch / max(1, steps_per_epoch))


@torch.no_grad()
def momentum_update(pairs: Sequence[tuple[nn.Module, nn.Module]], m: float) -> None:
    """``theta_m <- m * theta_m + (1 - m) * theta`` for every (online, momentum) module pair."""
    for online, mom in pairs:
        for p, pm in zip(online.parameters(), mom.parameters()):
            pm.mul_(m).add_(p.detach(), alpha=1 - m)


# ==============================================================================================
# Model
# ==============================================================================================
@dataclass(frozen=True)
class ALBEFConfig:
    """Model, losses and recipe. ``VARIANTS`` switches the losses (Table 1)."""

    # model
    image_size: int = 32
    patch_size: int = 8
    embed_dim: int = 64
    num_heads: int = 2
    mlp_ratio: float = 2.0
    vision_depth: int = 3
    text_layers: int = 2           # text-only layers (BERT-base in ALBEF: 6)
    fusion_layers: int = 2         # multimodal layers (ALBEF: 6)
    proj_dim: int = 32             # ITC embedding (ALBEF: 256)
    max_len: int = 24              # tokens incl. [CLS] and [SEP] (ALBEF: 30 words)
    vocab_size: int = 256          # tokenizer training target (the templates need far fewer)
    init_std: float | None = None  # std of the linear/embedding init; None: 0.02 * sqrt(768 / embed_dim)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    # losses
    itc: bool = True
    itm_hard: bool = True
    mod_itc: bool = True
    mod_mlm: bool = True
    mlm: bool = True
    temp: float = 0.07
    queue_size: int = 256          # a multiple of batch_size (ALBEF: 65,536 with batch 512)
    momentum: float = 0.95         # ALBEF 0.995 over ~100k steps; ours ~400 steps (docs/calibration.md)
    alpha: float = 0.4
    mlm_prob: float = 0.15
    # recipe
    epochs: int = 4
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.02
    warmup: float = 0.05           # fraction of the steps with a linear lr warm-up, then cosine
    finetune_epochs: int = 5
    finetune_lr: float = 2e-3
    amp: str = "auto"
    max_steps: int | None = None   # stop early (smoke)

    def variant(self, name: str) -> "ALBEFConfig":
        v = {k: x for k, x in VARIANTS[name].items() if k != "label"}
        return replace(self, **v)

    @property
    def uses_momentum(self) -> bool:
        return self.itc or self.mod_mlm


class CrossAttention(nn.Module):
    """Multi-head attention of queries ``x`` (B, L, D) over a context (B, M, D) (itself when
    ``context is None``): self-attention of the text, or cross-attention from the words to the
    image tokens. ``key_mask`` (B, M) bool, True = may be attended. With ``keep_maps = True`` the
    explicit path stores the post-softmax maps in ``self.maps`` (B, heads, L, M) with their
    gradient retained (for Grad-CAM); otherwise the fused SDPA kernel runs."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.keep_maps = False
        self.maps: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, D = x.shape
        ctx = x if context is None else context
        H, hd = self.num_heads, self.head_dim
        q = self.q(x).view(B, L, H, hd).transpose(1, 2)
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, H, hd).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        if self.keep_maps:
            a = (q @ k.transpose(-2, -1)) * hd ** -0.5
            if mask is not None:
                a = a.masked_fill(~mask, float("-inf"))
            a = a.softmax(-1)
            if a.requires_grad:
                a.retain_grad()
            self.maps = a
            out = a @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


class FusionLayer(nn.Module):
    """One layer of the text transformer (pre-norm). A text layer: ``x += SelfAttn(LN x)``,
    ``x += FFN(LN x)``; a fusion layer adds ``x += CrossAttn(LN x, image tokens)`` between the two
    (ALBEF's multimodal encoder: self-attention -> cross-attention -> FFN)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, cross: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = CrossAttention(dim, num_heads)
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6) if cross else None
        self.cross_attn = CrossAttention(dim, num_heads) if cross else None
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_mask=mask)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm_cross(x), context=image)
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """The text transformer: embeddings, ``text_layers`` text-only layers ("text" mode),
    ``fusion_layers`` multimodal layers ("fusion" mode), and the MLM head (dense-GELU-LN, then the
    decoder tied to the word embeddings, as BERT)."""

    def __init__(self, vocab_size: int, max_len: int, dim: int, num_heads: int, mlp_ratio: float,
                 text_layers: int, fusion_layers: int) -> None:
        super().__init__()
        self.text_layers = text_layers
        self.word_embeddings = nn.Embedding(vocab_size, dim)
        self.position_embeddings = nn.Embedding(max_len, dim)
        self.emb_norm = nn.LayerNorm(dim, eps=1e-6)
        self.layers = nn.ModuleList([FusionLayer(dim, num_heads, mlp_ratio, cross=i >= text_layers)
                                     for i in range(text_layers + fusion_layers)])
        self.text_norm = nn.LayerNorm(dim, eps=1e-6)
        self.fusion_norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlm_dense = nn.Linear(dim, dim)
        self.mlm_norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlm_bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.trunc_normal_(self.word_embeddings.weight, std=0.02)
        nn.init.trunc_normal_(self.position_embeddings.weight, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @property
    def fusion(self) -> list[FusionLayer]:
        return list(self.layers[self.text_layers:])

    def forward_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """"text" mode: the residual stream after the text-only layers (B, L, D)."""
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.emb_norm(self.word_embeddings(ids) + self.position_embeddings(pos))
        for layer in self.layers[: self.text_layers]:
            x = layer(x, mask)
        return x

    def text_output(self, h: torch.Tensor) -> torch.Tensor:
        """The text encoder's output tokens ``{w_cls, w_1, ...}`` (normalised)."""
        return self.text_norm(h)

    def forward_fusion(self, h: torch.Tensor, mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """"fusion" mode: continue the text stream ``h`` through the multimodal layers, attending
        to every image token; returns the multimodal tokens (B, L, D) after the final norm."""
        for layer in self.layers[self.text_layers:]:
            h = layer(h, mask, image)
        return self.fusion_norm(h)

    def mlm_logits(self, fused: torch.Tensor) -> torch.Tensor:
        x = self.mlm_norm(F.gelu(self.mlm_dense(fused)))
        return F.linear(x, self.word_embeddings.weight, self.mlm_bias)


class ALBEF(nn.Module):
    """Image encoder + text encoder + multimodal encoder, their momentum copies and the ITC queues.

    ``forward(images, ids, mask, alpha)`` is one pre-training step's losses (a dict with
    ``loss``, ``itc``, ``itm``, ``mlm`` and diagnostics); ``cfg`` switches the losses of Table 1.
    """

    def __init__(self, cfg: ALBEFConfig, tok: CaptionTokenizer) -> None:
        super().__init__()
        self.cfg, self.tok = cfg, tok
        D = cfg.embed_dim
        self.visual_encoder = VisionTransformer(
            img_size=cfg.image_size, patch_size=cfg.patch_size, num_classes=0, embed_dim=D,
            depth=cfg.vision_depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio)
        self.text_encoder = TextEncoder(tok.vocab_size, cfg.max_len, D, cfg.num_heads, cfg.mlp_ratio,
                                        cfg.text_layers, cfg.fusion_layers)
        self.vision_proj = nn.Linear(D, cfg.proj_dim)
        self.text_proj = nn.Linear(D, cfg.proj_dim)
        self.itm_head = nn.Linear(D, 2)
        self.temp = nn.Parameter(torch.tensor(float(cfg.temp)))
        self._init_weights(cfg.init_std if cfg.init_std is not None else 0.02 * math.sqrt(768 / D))
        # the momentum model (always built: fine-tuning uses it for every variant)
        self.visual_encoder_m = copy.deepcopy(self.visual_encoder)
        self.text_encoder_m = copy.deepcopy(self.text_encoder)
        self.vision_proj_m = copy.deepcopy(self.vision_proj)
        self.text_proj_m = copy.deepcopy(self.text_proj)
        for m in self._momentum_modules():
            m.requires_grad_(False)
        self.register_buffer("image_queue", F.normalize(torch.randn(cfg.proj_dim, cfg.queue_size), dim=0))
        self.register_buffer("text_queue", F.normalize(torch.randn(cfg.proj_dim, cfg.queue_size), dim=0))
        self.register_buffer("idx_queue", torch.full((cfg.queue_size,), -100, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _init_weights(self, std: float) -> None:
        """BERT / timm initialise linear layers and embeddings with std 0.02 at width 768. At our
        width 64 that makes every residual branch ~3x weaker relative to the stream, and the
        multimodal layers sit on a long plateau before image-text interactions appear (measured:
        ITM stays at chance). We scale the std with the width, ``0.02 * sqrt(768 / D)`` (0.069
        at D = 64, 0.02 at 768), for the ViT's and the text transformer's layers alike."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)

    # -- momentum model and queues ----------------------------------------------------------------
    def _momentum_modules(self) -> list[nn.Module]:
        return [self.visual_encoder_m, self.text_encoder_m, self.vision_proj_m, self.text_proj_m]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.visual_encoder, self.visual_encoder_m), (self.text_encoder, self.text_encoder_m),
                (self.vision_proj, self.vision_proj_m), (self.text_proj, self.text_proj_m)]

    @torch.no_grad()
    def reset_momentum(self, seed: int = 0) -> None:
        """Momentum copies = the online weights, queues = fresh random unit vectors (as a new
        official model does at the start of pre-training and of fine-tuning)."""
        for online, mom in self.momentum_pairs():
            mom.load_state_dict(online.state_dict())
        g = torch.Generator().manual_seed(seed)
        for q in (self.image_queue, self.text_queue):
            q.copy_(F.normalize(torch.randn(q.shape, generator=g), dim=0))
        self.idx_queue.fill_(-100)
        self.queue_ptr.zero_()

    @torch.no_grad()
    def dequeue_and_enqueue(self, image_feat: torch.Tensor, text_feat: torch.Tensor,
                            idx: torch.Tensor | None = None) -> None:
        """Write the batch's momentum features over the oldest queue entries (a ring buffer)."""
        B, Q = image_feat.shape[0], self.image_queue.shape[1]
        if Q % B:
            raise ValueError(f"queue_size {Q} must be a multiple of the batch size {B}")
        p = int(self.queue_ptr)
        self.image_queue[:, p:p + B] = image_feat.T
        self.text_queue[:, p:p + B] = text_feat.T
        if idx is not None:
            self.idx_queue[p:p + B] = idx
        self.queue_ptr.fill_((p + B) % Q)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # -- encoders -----------------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor, momentum: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(image tokens (B, 1 + N, D), normalised ITC feature g_v(v_cls) (B, proj_dim))."""
        enc, proj = (self.visual_encoder_m, self.vision_proj_m) if momentum else (self.visual_encoder, self.vision_proj)
        emb = enc.forward_features(images)
        return emb, F.normalize(proj(emb[:, 0]), dim=-1)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor, momentum: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(text stream after the text-only layers (B, L, D), normalised ITC feature g_w(w_cls))."""
        enc, proj = (self.text_encoder_m, self.text_proj_m) if momentum else (self.text_encoder, self.text_proj)
        h = enc.forward_text(ids, mask)
        return h, F.normalize(proj(enc.text_output(h)[:, 0]), dim=-1)

    def itm_logits(self, h_text: torch.Tensor, mask: torch.Tensor, image_emb: torch.Tensor) -> torch.Tensor:
        """ITM logits (B, 2) of pairs: the multimodal [CLS] token through the linear head
        (column 1 = "matched")."""
        return self.itm_head(self.text_encoder.forward_fusion(h_text, mask, image_emb)[:, 0])

    # -- one training step ----------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, alpha: float = 0.0,
                generator: torch.Generator | None = None, idx: torch.Tensor | None = None,
                mlm: bool | None = None) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        use_mlm = cfg.mlm if mlm is None else mlm
        B = images.shape[0]
        out: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
        positives = None if idx is None else idx[:, None] == idx[None, :]

        image_emb, image_feat = self.encode_image(images)
        h_text, text_feat = self.encode_text(ids, mask)
        zero = images.new_zeros(())

        # ---- ITC with queues and momentum distillation (eq. 1, 2, 6) -------------------------
        sim_i2t_batch = sim_t2i_batch = None
        image_emb_m = None
        if cfg.itc or (use_mlm and cfg.mod_mlm):
            with torch.no_grad():
                momentum_update(self.momentum_pairs(), cfg.momentum)  # BEFORE the momentum forward
                image_emb_m, image_feat_m = self.encode_image(images, momentum=True)
                _, text_feat_m = self.encode_text(ids, mask, momentum=True)
            out["image_feat_m"], out["text_feat_m"] = image_feat_m, text_feat_m
        if cfg.itc:
            with torch.no_grad():
                image_feat_all = torch.cat([image_feat_m.T, self.image_queue.clone()], dim=1)
                text_feat_all = torch.cat([text_feat_m.T, self.text_queue.clone()], dim=1)
                pos_all = None
                if idx is not None:
                    pos_all = idx[:, None] == torch.cat([idx, self.idx_queue.clone()])[None, :]
                a_itc = alpha if cfg.mod_itc else 0.0
                t_i2t = itc_targets(image_feat_m @ text_feat_all / self.temp, a_itc, pos_all)
                t_t2i = itc_targets(text_feat_m @ image_feat_all / self.temp, a_itc, pos_all)
            sim_i2t = image_feat @ text_feat_all / self.temp
            sim_t2i = text_feat @ image_feat_all / self.temp
            out["itc"] = itc_loss(sim_i2t, sim_t2i, t_i2t, t_t2i)
            self.dequeue_and_enqueue(image_feat_m, text_feat_m, idx)
            sim_i2t_batch, sim_t2i_batch = sim_i2t[:, :B], sim_t2i[:, :B]
        else:
            out["itc"] = zero
        out["image_feat"], out["text_feat"] = image_feat, text_feat

        # ---- ITM with in-batch hard negatives (eq. 4) --------------------------------------
        hard = cfg.itm_hard and sim_i2t_batch is not None
        neg_image = sample_negatives(sim_t2i_batch if hard else None, B, generator, positives).to(images.device)
        neg_text = sample_negatives(sim_i2t_batch if hard else None, B, generator, positives).to(images.device)
        h_all = torch.cat([h_text, h_text, h_text[neg_text]])
        m_all = torch.cat([mask, mask, mask[neg_text]])
        img_all = torch.cat([image_emb, image_emb[neg_image], image_emb])
        logits = self.itm_logits(h_all, m_all, img_all)
        labels = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long().to(images.device)
        out["itm"] = F.cross_entropy(logits.float(), labels)
        out["itm_acc"] = (logits.argmax(1) == labels).float().mean().detach()
        out["neg_image"], out["neg_text"] = neg_image, neg_text

        # ---- MLM with momentum distillation (eq. 3, 7) -------------------------------------
        if use_mlm:
            inputs, mlm_labels = mask_tokens(ids, self.tok, cfg.mlm_prob, generator)
            soft = None
            if cfg.mod_mlm:
                with torch.no_grad():
                    enc_m = self.text_encoder_m
                    fused_m = enc_m.forward_fusion(enc_m.forward_text(inputs, mask), mask, image_emb_m)
                    soft = F.softmax(enc_m.mlm_logits(fused_m).float(), dim=-1)
            fused = self.text_encoder.forward_fusion(self.text_encoder.forward_text(inputs, mask), mask, image_emb)
            mlm_logits = self.text_encoder.mlm_logits(fused)
            out["mlm"] = mlm_loss(mlm_logits, mlm_labels, soft, alpha if cfg.mod_mlm else 0.0)
            sel = mlm_labels != -100
            out["mlm_acc"] = ((mlm_logits.argmax(-1) == mlm_labels) & sel).sum().float().div(sel.sum().clamp(min=1)).detach()
        else:
            out["mlm"] = zero
        out["loss"] = out["itc"] + out["mlm"] + out["itm"]  # eq. 5
        return out


def param_counts(model: ALBEF) -> dict[str, int]:
    """Trainable parameters per part (the momentum copies are not trained)."""
    n = count_params
    te = model.text_encoder
    fusion = sum(n(layer) for layer in te.fusion) + n(te.fusion_norm)
    mlm = n(te.mlm_dense) + n(te.mlm_norm) + te.mlm_bias.numel()
    text = n(te) - fusion - mlm
    return {"image encoder (ViT)": n(model.visual_encoder), "text encoder": text,
            "multimodal encoder": fusion, "MLM head (tied decoder)": mlm,
            "ITC projections": n(model.vision_proj) + n(model.text_proj), "ITM head": n(model.itm_head),
            "temperature": 1, "total trainable": sum(p.numel() for p in model.trainable_parameters()),
            "momentum copies (not trained)": sum(n(m) for m in model._momentum_modules())}

