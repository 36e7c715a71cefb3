"""MiniViT's contribution, part 2: weight distillation (paper, "Weight Distillation", Sec. 3):
prediction-logit distillation (eq. 9), self-attention relation distillation on Q, K and V
(eq. 10), hidden-state relation distillation (eq. 11) and their sum (eq. 12) as a ``train.fit``
criterion, :class:`MiniViTDistillationLoss`.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.models.vit import VisionTransformer

# ----------------------------------------------------------------------------------------------
# Weight distillation (eq. 9-12)


def layer_pairs(student_depth: int, teacher_depth: int,
                layers: str | Sequence[tuple[int, int]] = "last") -> list[tuple[int, int]]:
    """Which student layer is compared with which teacher layer in eq. 10 and 11.

    ``"last"``: the last layers only (the official code's default, student 11 <-> teacher 23).
    ``"uniform"``: every student layer ``i`` <-> teacher layer ``(i + 1) * L_t // L_s - 1``, so the
    last layers meet and the teacher's are evenly spaced (4 <- 8 layers: 0-1, 1-3, 2-5, 3-7).
    A list of ``(student, teacher)`` pairs is checked and returned.
    """
    if isinstance(layers, str):
        if layers == "last":
            return [(student_depth - 1, teacher_depth - 1)]
        if layers == "uniform":
            return [(i, max(0, (i + 1) * teacher_depth // student_depth - 1))
                    for i in range(student_depth)]
        raise ValueError(f"layers={layers!r}; allowed: 'uniform', 'last' or (student, teacher) pairs")
    pairs = [(int(s), int(t)) for s, t in layers]
    for s, t in pairs:
        if not (0 <= s < student_depth and 0 <= t < teacher_depth):
            raise ValueError(f"layer pair ({s}, {t}) is outside student depth {student_depth} / "
                             f"teacher depth {teacher_depth}")
    if not pairs:
        raise ValueError("layers: no pairs given")
    return pairs


def soft_relation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy between the row softmaxes of two score tensors ``(..., K)``, minus the
    teacher's entropy: ``mean over rows of KL(softmax(t) || softmax(s))``.

    The official ``soft_cross_entropy`` is ``mean_rows Σ_k -p_t log p_s``; the difference is the
    teacher's entropy, a constant for the student (same gradients). 0 iff the rows agree. The
    teacher side is a fixed target (no gradient flows into it), which lets us write
    ``KL = Σ p_t log p_t - Σ p_t s + logsumexp(s)`` without the student's full log-softmax.
    """
    s = student_logits.float()
    with torch.no_grad():
        log_t = F.log_softmax(teacher_logits.float(), dim=-1)
        p_t = log_t.exp()
        neg_entropy = (p_t * log_t).sum(-1)
    return (neg_entropy - (p_t * s).sum(-1) + torch.logsumexp(s, dim=-1)).mean()


def prediction_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                    tau: float = 1.0) -> torch.Tensor:
    """Eq. 9: ``CE(softmax(z_s / T), softmax(z_t / T))`` as a KL, averaged over the batch
    (no T² factor, as in the official code; the paper uses T = 1)."""
    return soft_relation_kl(student_logits / tau, teacher_logits / tau)


def _split_qkv(qkv: torch.Tensor, relation_heads: int) -> torch.Tensor:
    """Raw ``qkv`` output ``(B, N, 3C)`` -> ``(B, heads, 3N, C / heads)`` in float32: per relation
    head, the tokens of Q, then those of K, then those of V."""
    B, N, C3 = qkv.shape
    C = C3 // 3
    if C % relation_heads:
        raise ValueError(f"relation_heads={relation_heads} does not divide the width {C}")
    x = qkv.float().reshape(B, N, 3, relation_heads, C // relation_heads).permute(0, 3, 2, 1, 4)
    return x.reshape(B, relation_heads, 3 * N, C // relation_heads)


def _qkv_relations(qkv: torch.Tensor, relation_heads: int) -> torch.Tensor:
    """All nine ``X_i X_j^T / sqrt(d_r)`` as ``(B, heads, 3, N, 3, N)``, index ``[..., i, :, j, :]``.

    One Gram matrix of the stacked ``[Q; K; V]`` tokens holds the nine N x N blocks; computing it
    with one batched matmul avoids materialising nine broadcast copies (about 2x faster on a CPU).
    """
    x = _split_qkv(qkv, relation_heads)
    B, H, N3, d = x.shape
    return (x @ x.transpose(-2, -1) / math.sqrt(d)).view(B, H, 3, N3 // 3, 3, N3 // 3)


def qkv_relation_loss(student_qkv: torch.Tensor, teacher_qkv: torch.Tensor,
                      relation_heads: int = 1) -> torch.Tensor:
    """Eq. 10 for one layer pair: ``1/9 Σ_{i,j ∈ {Q,K,V}} mean_rows KL(R^t_ij || R^s_ij)``.

    ``R_ij = softmax(X_i X_j^T / sqrt(d_r))`` with ``X_i`` the raw output of ``qkv`` split into
    Q, K, V and each of them into ``relation_heads`` chunks of width ``d_r = C / relation_heads``
    (the official code's ``--ar``). Relations are ``N x N`` per relation head, so student and
    teacher may differ in width and attention heads (not in token count).
    """
    if student_qkv.shape[1] != teacher_qkv.shape[1]:
        raise ValueError(f"student has {student_qkv.shape[1]} tokens, teacher {teacher_qkv.shape[1]}: "
                         "relations need the same token grid")
    rel_s = _qkv_relations(student_qkv, relation_heads)
    with torch.no_grad():
        rel_t = _qkv_relations(teacher_qkv, relation_heads)
    # the softmax runs over the last axis (the N columns of block j); every (i, j) block has N
    # rows per head, so the mean over all rows is the mean over the nine pairs
    return soft_relation_kl(rel_s, rel_t)


def attention_relation_loss(student_qkv: Sequence[torch.Tensor], teacher_qkv: Sequence[torch.Tensor],
                            relation_heads: int = 1) -> torch.Tensor:
    """Eq. 10 averaged over the distilled layer pairs (the official ``/ (9 * layers)``)."""
    if len(student_qkv) != len(teacher_qkv) or not student_qkv:
        raise ValueError("need as many (non-zero) student as teacher layers")
    losses = [qkv_relation_loss(s, t, relation_heads) for s, t in zip(student_qkv, teacher_qkv)]
    return torch.stack(losses).mean()


def hidden_relation_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
                         kind: str = "softmax") -> torch.Tensor:
    """Eq. 11, the hidden-state relation loss, averaged over the distilled layer pairs.

    ``H`` is a block's output ``(B, N, d)`` (the residual stream after the MLP).
    ``"softmax"`` (the paper): ``R_H = softmax(H H^T / sqrt(d))``, ``mean_rows KL(R^t || R^s)``.
    ``"cosine"`` (the official ``--hidden_relation`` code): Gram matrices of L2-normalised tokens,
    squared differences summed over a row and averaged over rows (the code's
    ``mean(...) * 49`` with 49 tokens per Swin window).
    """
    if kind not in ("softmax", "cosine"):
        raise ValueError(f"kind={kind!r}; allowed: 'softmax', 'cosine'")
    if len(student_hidden) != len(teacher_hidden) or not student_hidden:
        raise ValueError("need as many (non-zero) student as teacher layers")
    losses = []
    for hs, ht in zip(student_hidden, teacher_hidden):
        hs, ht = hs.float(), ht.float()
        if hs.shape[1] != ht.shape[1]:
            raise ValueError(f"student has {hs.shape[1]} tokens, teacher {ht.shape[1]}")
        if kind == "softmax":
            rs = hs @ hs.transpose(-2, -1) / math.sqrt(hs.shape[-1])
            rt = ht @ ht.transpose(-2, -1) / math.sqrt(ht.shape[-1])
            losses.append(soft_relation_kl(rs, rt))
        else:
            hs, ht = F.normalize(hs, dim=-1), F.normalize(ht, dim=-1)
            diff = hs @ hs.transpose(-2, -1) - ht @ ht.transpose(-2, -1)
            losses.append(diff.pow(2).sum(-1).mean())
    return torch.stack(losses).mean()


class _Taps:
    """Forward hooks that record, per forward pass of a (Mini)ViT, the raw ``qkv`` output and the
    block output of the wanted layers.

    A shared ``qkv`` module runs once per layer of its group, so one hook per distinct module
    counts the calls: the ``i``-th ``qkv`` call of a pass belongs to layer ``i``. A pass starts at
    ``blocks[0]`` (a pre-hook resets the records), whether it came from ``forward`` or
    ``forward_features``. ``training_only``: record only while the model is in train mode (the
    student: ``fit``'s evaluation passes are ignored).
    """

    def __init__(self, model: VisionTransformer, layers: Iterable[int], training_only: bool) -> None:
        self.layers = set(layers)
        self.training_only = training_only
        self.qkv: dict[int, torch.Tensor] = {}
        self.hidden: dict[int, torch.Tensor] = {}
        self._calls = 0
        self._on = False
        blocks = model.blocks
        self._handles = [blocks[0].register_forward_pre_hook(self._start)]
        seen: set[int] = set()
        for blk in blocks:
            if id(blk.attn.qkv) not in seen:
                seen.add(id(blk.attn.qkv))
                self._handles.append(blk.attn.qkv.register_forward_hook(self._on_qkv))
        for i, blk in enumerate(blocks):
            if i in self.layers:
                self._handles.append(blk.register_forward_hook(partial(self._on_block, i)))

    def _start(self, module: nn.Module, args: Any) -> None:
        self.clear()
        self._on = module.training or not self.training_only

    def _on_qkv(self, module: nn.Module, args: Any, out: torch.Tensor) -> None:
        if self._on and self._calls in self.layers:
            self.qkv[self._calls] = out
        self._calls += 1

    def _on_block(self, i: int, module: nn.Module, args: Any, out: Any) -> None:
        if self._on:
            self.hidden[i] = out[0] if isinstance(out, tuple) else out

    def clear(self) -> None:
        self.qkv, self.hidden, self._calls = {}, {}, 0

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.clear()


class MiniViTDistillationLoss(nn.Module):
    """Weight distillation (paper, "Weight Distillation") as a ``train.fit`` criterion.

    ``loss = gt · CE(z_s, y) + pred · L_pred + β · L_attn + γ · L_hddn``   (eq. 12 with a GT term)

    * ``L_pred`` (eq. 9): :func:`prediction_loss` with temperature ``tau``;
    * ``L_attn`` (eq. 10): :func:`attention_relation_loss` on the Q/K/V relations;
    * ``L_hddn`` (eq. 11): :func:`hidden_relation_loss` (``hidden_relation="softmax"`` is the
      paper's formula, ``"cosine"`` the official code's);
    * ``gt``: cross-entropy with the labels (``base``, default ``CrossEntropyLoss``; pass timm's
      ``SoftTargetCrossEntropy`` with mixup). The official recipe uses ``gt = 0`` (``--alpha 0``);
      Table 3's "GT + L_pred" row weights both 0.5. A weight of 0 switches a term off.

    The student's activations are recorded by forward hooks on ``student`` (it must be the model
    that ``fit`` trains: ``fit`` runs the student, then calls this criterion); the teacher runs here
    in eval mode without gradients on the same (mixed) inputs. ``layers`` picks the layer pairs
    (:func:`layer_pairs`). Call :meth:`close` to remove the student's hooks.
    Returns ``(loss, {"gt", "pred", "attn", "hidden"})`` with the unweighted terms that are on.
    """

    def __init__(self, teacher: VisionTransformer, student: VisionTransformer, *, pred: float = 1.0,
                 beta: float = 1.0, gamma: float = 0.1, gt: float = 0.0, tau: float = 1.0,
                 layers: str | Sequence[tuple[int, int]] = "last", relation_heads: int = 1,
                 hidden_relation: str = "softmax", base: nn.Module | None = None) -> None:
        super().__init__()
        if teacher is student:
            raise ValueError("teacher and student must be different models")
        if min(pred, beta, gamma, gt) < 0:
            raise ValueError("loss weights must be >= 0")
        if hidden_relation not in ("softmax", "cosine"):
            raise ValueError(f"hidden_relation={hidden_relation!r}; allowed: 'softmax', 'cosine'")
        self.teacher = teacher
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.base = base if base is not None else nn.CrossEntropyLoss()
        self.pred, self.beta, self.gamma, self.gt, self.tau = pred, beta, gamma, gt, tau
        self.relation_heads, self.hidden_relation = relation_heads, hidden_relation
        self.pairs = layer_pairs(len(student.blocks), len(teacher.blocks), layers)
        self.inner = beta > 0 or gamma > 0
        # a plain object, not a submodule: the criterion must not own (or move) the student
        self._student_taps = _Taps(student, [s for s, _ in self.pairs], training_only=True) if self.inner else None

    def close(self) -> None:
        """Remove the hooks from the student."""
        if self._student_taps is not None:
            self._student_taps.remove()
            self._student_taps = None

    def _teacher_forward(self, inputs: torch.Tensor):
        self.teacher.eval()
        with torch.no_grad():
            if not self.inner:
                return self.teacher(inputs), None
            taps = _Taps(self.teacher, [t for _, t in self.pairs], training_only=False)
            try:
                logits = self.teacher(inputs)
                return logits, (dict(taps.qkv), dict(taps.hidden))
            finally:
                taps.remove()

    def forward(self, inputs: torch.Tensor, outputs: Any, targets: torch.Tensor):
        logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        parts: dict[str, torch.Tensor] = {}
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.gt > 0:
            parts["gt"] = self.base(logits, targets)
            loss = loss + self.gt * parts["gt"]
        if self.pred == 0 and not self.inner:
            return loss, {k: v.detach() for k, v in parts.items()}
        t_logits, t_inner = self._teacher_forward(inputs)
        if self.pred > 0:
            parts["pred"] = prediction_loss(logits, t_logits, self.tau)
            loss = loss + self.pred * parts["pred"]
        if self.inner:
            taps = self._student_taps
            if taps is None:
                raise RuntimeError("this criterion was closed")
            s_layers = [s for s, _ in self.pairs]
            if any(s not in taps.qkv or s not in taps.hidden for s in s_layers):
                raise RuntimeError(
                    "no student activations were recorded: build the loss with the very model that "
                    "is trained, and run its forward in train mode before calling the criterion")
            t_qkv, t_hidden = t_inner
            if self.beta > 0:
                parts["attn"] = attention_relation_loss([taps.qkv[s] for s, _ in self.pairs],
                                                        [t_qkv[t] for _, t in self.pairs],
                                                        self.relation_heads)
                loss = loss + self.beta * parts["attn"]
            if self.gamma > 0:
                parts["hidden"] = hidden_relation_loss([taps.hidden[s] for s, _ in self.pairs],
                                                       [t_hidden[t] for _, t in self.pairs],
                                                       self.hidden_relation)
                loss = loss + self.gamma * parts["hidden"]
            taps.clear()  # the autograd graph keeps what backward needs
        return loss, {k: v.detach() for k, v in parts.items()}

