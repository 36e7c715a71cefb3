"""MiniViT: "Compressing Vision Transformers with Weight Multiplexing"
(Zhang, Peng, Wu, Liu, Xiao, Fu, Yuan; CVPR 2022, arXiv 2204.07154). Everything notebook 09 needs.

*Weight multiplexing* = weight sharing + weight transformation + weight distillation (paper,
Sec. 3, Fig. 3). Implemented here from scratch on the course's ViT (``models/vit.py``), without
changing it:

* **Weight sharing.** Consecutive layers, in groups of ``share_every``, use one set of MSA
  (``qkv``, ``proj``) and MLP weights: the very same ``nn.Linear`` objects sit in every block of a
  group, so autograd sums the gradients of all the layers that use them.
  ``share_every=1`` is the original ViT, ``2`` is Table 2's "every-2", ``depth`` ("all") is
  "all layers". LayerNorms stay per layer ("the transformation blocks and normalization layers
  are not shared", Fig. 3).
* **Weight transformation** ("Weight Transformation", Sec. 3), one small unshared module per layer:
  - MSA: a linear map across heads (a 1x1 convolution over the head axis, :class:`HeadMix`)
    on the attention logits *before* the softmax and another one on the attention *after* it;
  - MLP: a depth-wise convolution on the patch-token grid between attention and MLP,
    ``x = x + DWConv(LayerNorm(x))`` on the patch tokens (:class:`DWConvTransform`); the class
    token passes through.
  Each one can be switched off (``attn_transform``, ``mlp_transform``).
* **Weight distillation** ("Weight Distillation", Sec. 3) from a larger ViT teacher,
  :class:`MiniViTDistillationLoss`: prediction-logit distillation (eq. 9), self-attention
  distillation on the relations of Q, K and V (eq. 10), hidden-state relation distillation
  (eq. 11) and the total ``L = L_pred + β L_attn + γ L_hddn`` (eq. 12, β = 1, γ = 0.1).

Where we differ from the official code (microsoft/Cream, ``MiniViT/``), and why:

* *Transform init.* Both official models initialise the head transforms with
  ``trunc_normal(std=0.02)``: at the start the pre-softmax map flattens every attention map to
  uniform and the post-softmax map scales it by ~0.02, so attention starts switched off and must
  be re-learned. Our default ``transform_init="identity"`` starts the transforms as the identity
  (head mixes = I, depth-wise conv = 0): a fresh MiniViT is then *exactly* the weight-shared ViT
  and the transforms only add diversity as they learn. With a budget of a few thousand steps
  instead of 300 epochs we expect that to matter (not measured yet: ``transform_init="official"``
  gives the official init, so the notebook can compare). For the same reason the head mixes are
  exempt from weight decay (it would pull them towards the zero map).
* *MLP transform.* Mini-DeiT has none (its code applies only the two head transforms); Mini-Swin
  applies ``x = LN(x); x = x + DWConv7x7(x)``, which replaces the residual stream by its
  normalisation. We keep the pre-norm residual stream intact (``x + DWConv(LN(x))``, an identity
  at init) and let the class token skip the convolution. The kernel is an argument: the
  official 7 matches Swin's 7x7 window on 14x14 to 56x56 grids; on the course's 8x8 grid a 7x7
  kernel would see nearly the whole image, so the notebook defaults to 3.
* *Mini-DeiT specifics we leave out*: no class token (average pooling) and image relative position
  encoding on the keys (iRPE); we keep the class token and absolute position embeddings of our
  ViT, so the class-token attention of teacher and student can be drawn side by side. Mini-DeiT's
  official training uses only logit distillation from a RegNetY-16GF convnet (DeiT's soft loss,
  alpha 1, tau 1); the relation losses of eq. 10-11 exist in the Mini-Swin code, which we follow.
* *The teacher* is a larger plain ViT on the student's token grid (``TEACHER_PRESETS``; the study
  profile's ``course_teacher_d4``: width 192, 4 layers, trained first with labels at lr 1e-3), since
  eq. 10-11 need the teacher's Q/K/V and hidden states on the same N tokens. ``teacher_stem="conv"``
  gives it early convolutions (:class:`ConvStem`). Measured in the calibration
  (``docs/calibration.md``): the conv-stem teacher was far more accurate after the same epochs
  (81% vs. 48%), yet its relation-distilled students were worse (36% vs. 48%): a patch-embedding
  student can imitate the token relations of a patch-embedding teacher, not those of conv
  features. So the default teacher stays a plain ViT, the situation of Mini-Swin (Swin-B teacher).
* *Distillation terms as KL.* Eq. 9-11 are cross-entropies between soft targets; we subtract the
  teacher's entropy (a constant for the student), i.e. report KL divergences: same gradients,
  and a term is 0 exactly when the student matches the teacher.
* *Layers distilled.* The official Mini-Swin code compares chosen layer pairs: by default the last
  layer only (student 11 <-> teacher 23), and in its published recipes six pairs spread over the
  depth and aligned with Swin's stages (student 1,3,5,7,9,11 <-> teacher 1,3,9,15,21,23 for
  Mini-Swin-T from Swin-B). We follow the code's default, ``layers="last"``. A ViT has no stages,
  so the alternative ``layers="uniform"`` maps *every* student layer ``i`` to teacher layer
  ``(i + 1) * L_t // L_s - 1`` (the last layers meet); explicit pairs are accepted too. Eq. 10
  builds nine N x N relations per pair; we get all nine from one Gram matrix of the stacked
  ``[Q; K; V]`` tokens (one batched matmul instead of nine broadcast copies, about 2x faster on a CPU).
  Still, on the course's 4-layer student "uniform" makes a distilled training step about 1.6x
  slower than "last" (``benchmarks/calibrate_minivit.py``).
* *Students start from scratch*, as in the official training commands (the teacher is only used
  through the losses); :func:`from_vit` builds a shared student from a trained ViT when wanted.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from . import config, data, deit, train
from .config import Param
from .models.vit import PRESETS, Block, Mlp, VisionTransformer, create_vit

__all__ = [
    "PAPER",
    "PAPER_URL",
    "SINGLE_SEED_MARGIN",
    "TEACHER_PRESETS",
    "TITLE",
    "ConvStem",
    "DWConvTransform",
    "HeadMix",
    "MiniBlock",
    "MiniViT",
    "MiniViTDistillationLoss",
    "MultiplexedAttention",
    "Variant",
    "attention_agreement",
    "attention_relation_loss",
    "cls_attention",
    "compare_attention",
    "count_parameters",
    "create_minivit",
    "from_vit",
    "hidden_relation_loss",
    "layer_pairs",
    "layer_similarity",
    "load_data",
    "multiplex_blocks",
    "param_counts",
    "parameter_breakdown",
    "plot_attention_comparison",
    "prediction_loss",
    "preset_config",
    "qkv_relation_loss",
    "record_results",
    "recorder",
    "run_experiments",
    "soft_relation_kl",
    "tables",
    "variants",
    "vit_kwargs",
    "with_conv_stem",
]

PAPER_URL = "https://arxiv.org/abs/2204.07154"
TITLE = "MiniViT: Compressing Vision Transformers with Weight Multiplexing"
# bump when a change of this module changes what a cached model would be
CODE_VERSION = 2

# Points of top-1 a single-run comparison must win by to count as reproduced: about one standard
# deviation across seeds at the study budget (3 seeds: about 2 points for the label-trained
# students, 0.6-2.5 for the distilled ones; docs/calibration.md). A smaller gap is inconclusive.
SINGLE_SEED_MARGIN = 2.0

TRANSFORM_INITS = ("identity", "official")
SHARE_PATTERNS = ("none", "every-2", "all")

# Teachers: larger ViTs on the same token grid as the students (relations are N x N, so the
# token count must match; width, depth and head count may differ).
TEACHER_PRESETS: dict[str, dict[str, Any]] = {
    "course_teacher_d4": {"img_size": 32, "patch_size": 4, "embed_dim": 192, "depth": 4,
                          "num_heads": 3, "mlp_ratio": 2.0, "num_classes": 6},
    "course_teacher_d6": {"img_size": 32, "patch_size": 4, "embed_dim": 192, "depth": 6,
                          "num_heads": 3, "mlp_ratio": 2.0, "num_classes": 6},
    "course_teacher_d8": {"img_size": 32, "patch_size": 4, "embed_dim": 192, "depth": 8,
                          "num_heads": 3, "mlp_ratio": 2.0, "num_classes": 6},
    # DeiT-S's width and depth on 32 px (the paper profile's teacher for cifar_tiny = DeiT-Ti shape)
    "cifar_small": {"img_size": 32, "patch_size": 4, "embed_dim": 384, "depth": 12,
                    "num_heads": 6, "mlp_ratio": 4.0, "num_classes": 100},
}
STUDENTS = ("course_tiny", "cifar_tiny")
TEACHERS = tuple(TEACHER_PRESETS)

# The paper's numbers (ImageNet-1k top-1 %, parameters in millions), from the study group's
# notes (seed 003, Tables 1-4). Table 1: WS = weight sharing, WD = weight distillation,
# WT = weight transformation. Table 3 (Mini-Swin-T from a Swin-B (22k) teacher): the scan lost the
# tick columns; we read the rows as in the paper's text: L_pred alone 81.2, GT + L_pred (0.5/0.5)
# 80.9, + L_attn 81.4, + L_hddn 81.5, and attention + hidden relations without L_pred 81.4 (that
# row needs a label signal: the official code then trains with GT, alpha = 1).
PAPER = {
    "table1_deit_s": {"original": 79.9, "ws": 78.3, "ws_wd": 80.1, "ws_wt": 79.3, "ws_wt_wd": 80.7},
    "table1_swin_t": {"original": 81.2, "ws": 79.0, "ws_wd": 79.8, "ws_wt": 79.2, "ws_wt_wd": 81.4},
    "table1_params_m": {"deit_s": 22.0, "mini_deit_s": 11.0, "swin_t": 28.0, "mini_swin_t": 12.0},
    "table2_deit_b": {"original": 81.8, "every-2": 83.2, "all": 79.8},
    "table2_deit_b_params_m": {"original": 86.0, "every-2": 44.0, "all": 9.0},
    "table2_swin_t": {"original": 81.2, "every-2": 82.2, "all": 81.4},
    "table2_swin_t_params_m": {"original": 28.0, "every-2": 16.0, "all": 12.0},
    "table3_swin_t": {"teacher": 85.2, "gt": 79.2, "pred": 81.2, "gt_pred": 80.9, "pred_attn": 81.4,
                      "pred_attn_hidden": 81.5, "attn_hidden": 81.4},
    "table4_params_m": {"deit_tiny": 5.0, "deit_small": 22.0, "deit_base": 86.0,
                        "mini_deit_tiny": 3.0, "mini_deit_small": 11.0, "mini_deit_base": 44.0},
}

config.register("09_minivit", {
    "dataset": Param({"smoke": "world", "study": "world", "paper": "cifar100"},
                     "world (offline) or a real dataset", choices=("world", "cifar100", "imagenette")),
    "image_size": Param(32, "input side in pixels; the patch size scales with it (8x8 token grid)",
                        type=int, low=32, high=224, check=lambda s: s % 32 == 0,
                        check_help="and a multiple of 32"),
    "num_classes": Param({"smoke": 6, "study": 6, "paper": 100},
                         "world: shape classes (2-12); real datasets: ignored", type=int, low=2, high=100),
    "train_images": Param({"smoke": 512, "study": 4000, "paper": 50000}, "world train images",
                          type=int, low=64),
    "eval_images": Param({"smoke": 128, "study": 1000, "paper": 10000}, "world val/test images",
                         type=int, low=64),
    "label_noise": Param(0.0, "world: fraction of train labels replaced at random", low=0.0, high=1.0),
    "teacher": Param({"smoke": "course_teacher_d4", "study": "course_teacher_d4", "paper": "cifar_small"},
                     "the larger ViT teacher", choices=TEACHERS),
    "teacher_stem": Param("patch", "patch: a plain ViT teacher; conv: early convolutions (ConvStem)",
                          choices=("patch", "conv")),
    "teacher_epochs": Param({"smoke": 1, "study": 8, "paper": 300}, type=int, low=1),
    "teacher_lr": Param({"smoke": 1e-3, "study": 1e-3, "paper": 5e-4}, "teacher AdamW lr", low=1e-6, high=1.0),
    "student": Param({"smoke": "course_tiny", "study": "course_tiny", "paper": "cifar_tiny"},
                     "ViT preset that every student (original and Mini) is built from", choices=STUDENTS),
    "student_epochs": Param({"smoke": 1, "study": 2, "paper": 300}, type=int, low=1),
    "batch_size": Param({"smoke": 16, "study": 128, "paper": 256}, type=int, low=2),
    "lr": Param({"smoke": 2e-3, "study": 2e-3, "paper": 5e-4}, "student AdamW lr", low=1e-6, high=1.0),
    "share": Param("every-2", "sharing pattern of Tables 1 and 3 (Table 2 runs both)",
                   choices=("every-2", "all")),
    "transform_init": Param("identity", "identity: a fresh MiniViT is the shared ViT; official: "
                            "trunc_normal(0.02) head mixes", choices=TRANSFORM_INITS),
    "dwconv_kernel": Param({"smoke": 3, "study": 3, "paper": 3},
                           "kernel of the MLP transform (official: 7, Swin's window)",
                           type=int, low=1, high=7, check=lambda k: k % 2 == 1, check_help="and odd"),
    "beta": Param(1.0, "weight β of the attention-relation loss (eq. 12)", low=0.0, high=100.0),
    "gamma": Param(0.1, "weight γ of the hidden-state relation loss (eq. 12)", low=0.0, high=100.0),
    "tau": Param(1.0, "temperature T of the prediction loss (eq. 9; paper: 1)", low=0.05, high=20.0),
    "gt_weight": Param(0.0, "weight of the ground-truth CE in distilled runs (official alpha: 0)",
                       low=0.0, high=1.0),
    "relation_heads": Param(1, "relation heads of eq. 10 (official --ar default: 1)", type=int,
                            low=1, high=64),
    "distill_layers": Param("last", "layer pairs of eq. 10-11: last (the official code's default) "
                            "or uniform (every student layer; costs more)", choices=("last", "uniform")),
    "hidden_relation": Param("softmax", "softmax: eq. 11; cosine: the official code's Gram MSE",
                             choices=("softmax", "cosine")),
    "seeds": Param({"smoke": 1, "study": 1, "paper": 3}, "seeds of the Table 1 students", type=int,
                   low=1, high=10),
    "max_steps": Param({"smoke": 6, "study": 0, "paper": 0}, "cap on steps per run (0: none)",
                       type=int, low=0),
    "table3": Param(True, "train the extra students of Table 3 (which distillation losses)"),
    "retrain": Param(False, "ignore cached teachers/students and train again"),
})


# ----------------------------------------------------------------------------------------------
# Weight transformation


class HeadMix(nn.Module):
    """A linear map across attention heads (paper, "Weight Transformation" for MSA).

    ``out[:, g] = Σ_h W[g, h] · in[:, h]`` for attention tensors ``(B, heads, N, N)``: the same
    mix at every (query, key) position, i.e. a 1x1 convolution over the head axis (Mini-DeiT's
    ``Conv2d(H, H, 1, bias=False)``; Mini-Swin uses ``Linear(H, H)`` over the head axis).
    ``init="identity"`` starts as ``W = I``; ``"official"`` draws ``trunc_normal(std=0.02)``.
    """

    def __init__(self, num_heads: int, init: str = "identity") -> None:
        super().__init__()
        if init not in TRANSFORM_INITS:
            raise ValueError(f"init={init!r}; allowed: {', '.join(TRANSFORM_INITS)}")
        self.num_heads = num_heads
        self.weight = nn.Parameter(torch.empty(num_heads, num_heads))
        self.reset_parameters(init)

    @torch.no_grad()
    def reset_parameters(self, init: str = "identity") -> None:
        if init == "identity":
            nn.init.eye_(self.weight)
        else:
            trunc_normal_(self.weight, std=0.02)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return torch.einsum("gh,bhnm->bgnm", self.weight.to(a.dtype), a)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}"


class DWConvTransform(nn.Module):
    """The MLP transformation: ``x = x + DWConv(LayerNorm(x))`` on the patch tokens.

    A depth-wise ``k x k`` convolution over the patch grid (one filter per channel) brings locality
    between attention and MLP; the prefix tokens (class, distillation) pass through unchanged.
    ``init="identity"`` zeroes the convolution, so the transform starts as the identity;
    ``"official"`` keeps PyTorch's default conv init (as Mini-Swin's code does).
    """

    def __init__(self, dim: int, grid_size: tuple[int, int], num_prefix_tokens: int,
                 kernel_size: int = 7, norm_eps: float = 1e-6, init: str = "identity") -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size={kernel_size}: must be odd (same-size padding)")
        if init not in TRANSFORM_INITS:
            raise ValueError(f"init={init!r}; allowed: {', '.join(TRANSFORM_INITS)}")
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = num_prefix_tokens
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        if init == "identity":
            nn.init.zeros_(self.conv.weight)
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, D = x.shape
        gh, gw = self.grid_size
        prefix, patches = x[:, :self.num_prefix_tokens], x[:, self.num_prefix_tokens:]
        y = self.norm(patches).transpose(1, 2).reshape(B, D, gh, gw)
        y = self.conv(y).flatten(2).transpose(1, 2)
        return torch.cat([prefix, patches + y], dim=1)

    def extra_repr(self) -> str:
        return f"grid={self.grid_size}, prefix_tokens={self.num_prefix_tokens}"


# ----------------------------------------------------------------------------------------------
# Weight sharing: blocks that reuse the modules of the first block of their group


class MultiplexedAttention(nn.Module):
    """Multi-head self-attention whose ``qkv`` and ``proj`` may be shared with other layers.

    Same computation and parameter names as ``vit.Attention``; ``mix_pre`` / ``mix_post`` are this
    layer's own head transforms, applied to the logits before the softmax and to the attention
    after it. Without transforms the fused SDPA path runs (numerically what ``vit.Attention``
    does); with them, the explicit path. ``return_attention`` returns the map after ``mix_post``
    (what multiplies V), which need not be a probability distribution any more.
    """

    def __init__(self, qkv: nn.Linear, proj: nn.Linear, num_heads: int, attn_drop: nn.Dropout,
                 proj_drop: nn.Dropout, mix_pre: HeadMix | None = None,
                 mix_post: HeadMix | None = None) -> None:
        super().__init__()
        dim = proj.out_features
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = qkv
        self.attn_drop = attn_drop
        self.proj = proj
        self.proj_drop = proj_drop
        self.mix_pre = mix_pre
        self.mix_post = mix_post

    def forward(self, x: torch.Tensor, return_attention: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if return_attention or self.mix_pre is not None or self.mix_post is not None:
            attn = (q @ k.transpose(-2, -1)) * self.scale   # (B, heads, N, N) logits
            if self.mix_pre is not None:
                attn = self.mix_pre(attn)
            attn = attn.softmax(dim=-1)
            if self.mix_post is not None:
                attn = self.mix_post(attn)
            x = self.attn_drop(attn) @ v
        else:
            attn = None
            x = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, N, D)
        x = self.proj_drop(self.proj(x))
        return x, (attn if return_attention else None)


class MiniBlock(nn.Module):
    """A pre-norm block of a MiniViT: per-layer norms and transforms, possibly shared MSA/MLP.

    ``x = x + Attention(LN1(x))``; ``x = MLPTransform(x)`` (optional); ``x = x + MLP(LN2(x))``.
    Same signature and parameter names as ``vit.Block`` (plus ``attn.mix_pre``,
    ``attn.mix_post`` and ``mlp_transform``), so ``VisionTransformer.forward_features`` runs it.
    """

    def __init__(self, norm1: nn.LayerNorm, attn: MultiplexedAttention, drop_path1: nn.Module,
                 norm2: nn.LayerNorm, mlp: Mlp, drop_path2: nn.Module,
                 mlp_transform: DWConvTransform | None = None) -> None:
        super().__init__()
        self.norm1 = norm1
        self.attn = attn
        self.drop_path1 = drop_path1
        self.mlp_transform = mlp_transform
        self.norm2 = norm2
        self.mlp = mlp
        self.drop_path2 = drop_path2

    def forward(self, x: torch.Tensor, return_attention: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, attn = self.attn(self.norm1(x), return_attention)
        x = x + self.drop_path1(y)
        if self.mlp_transform is not None:
            x = self.mlp_transform(x)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x, attn


def _share_every(share_every: int | str, depth: int) -> int:
    """``1``/``"none"``, ``2``/``"every-2"``, ``depth``/``"all"`` -> layers per shared group."""
    named = {"none": 1, "every-2": 2, "all": depth}
    k = named[share_every] if isinstance(share_every, str) and share_every in named else share_every
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"share_every={share_every!r}: an int or one of {', '.join(named)}")
    if not 1 <= k <= depth or depth % k:
        raise ValueError(f"share_every={k} must divide the depth {depth} (1 = no sharing)")
    return k


def multiplex_blocks(blocks: Sequence[Block], share_every: int, *, attn_transform: bool = True,
                     mlp_transform: bool = True, transform_init: str = "identity",
                     mlp_kernel: int = 7, grid_size: tuple[int, int] = (8, 8),
                     num_prefix_tokens: int = 1) -> nn.ModuleList:
    """Turn ViT ``Block`` s into :class:`MiniBlock` s that share MSA and MLP within groups.

    Layer ``i`` belongs to group ``i // share_every`` and uses the ``qkv``, ``proj`` and ``mlp``
    modules *of the first block of its group* (the same objects); it keeps its own norms,
    dropouts and drop-path and gets its own transforms. The other blocks' MSA/MLP are dropped.
    """
    k = _share_every(share_every, len(blocks))
    out = []
    for i, blk in enumerate(blocks):
        first = blocks[i - i % k]
        heads = blk.attn.num_heads
        attn = MultiplexedAttention(
            first.attn.qkv, first.attn.proj, heads, blk.attn.attn_drop, blk.attn.proj_drop,
            mix_pre=HeadMix(heads, transform_init) if attn_transform else None,
            mix_post=HeadMix(heads, transform_init) if attn_transform else None)
        local = None
        if mlp_transform:
            local = DWConvTransform(blk.norm1.normalized_shape[0], grid_size, num_prefix_tokens,
                                    mlp_kernel, blk.norm1.eps, transform_init)
        out.append(MiniBlock(blk.norm1, attn, blk.drop_path1, blk.norm2, first.mlp, blk.drop_path2,
                             mlp_transform=local))
    return nn.ModuleList(out)


class MiniViT(VisionTransformer):
    """A ViT with weight multiplexing: ``VisionTransformer`` whose blocks are :class:`MiniBlock` s.

    Args:
        share_every: layers per group sharing one MSA + MLP (int, or ``"none"``, ``"every-2"``,
            ``"all"``); must divide ``depth``. ``1`` = no sharing.
        attn_transform: per-layer head mixes before and after the softmax.
        mlp_transform: per-layer depth-wise conv on the patch grid before the MLP.
        transform_init: ``"identity"`` (default; a fresh model is the plain shared ViT) or
            ``"official"`` (trunc_normal 0.02 head mixes, PyTorch-default conv).
        mlp_kernel: kernel of the depth-wise conv (odd).
        **vit_kwargs: everything ``VisionTransformer`` takes (``embed_dim``, ``depth``, ...).

    With ``share_every=1`` and no transforms the model computes exactly what a
    ``VisionTransformer`` with the same weights computes, and has the same ``state_dict`` keys.
    Shared weights appear once in ``parameters()`` and under every layer's name in
    ``state_dict()``.
    """

    def __init__(self, share_every: int | str = 2, attn_transform: bool = True,
                 mlp_transform: bool = True, transform_init: str = "identity", mlp_kernel: int = 7,
                 **vit_kwargs: Any) -> None:
        super().__init__(**vit_kwargs)
        if transform_init not in TRANSFORM_INITS:
            raise ValueError(f"transform_init={transform_init!r}; allowed: {', '.join(TRANSFORM_INITS)}")
        self.share_every = _share_every(share_every, self.depth)
        self.attn_transform = attn_transform
        self.mlp_transform = mlp_transform
        self.transform_init = transform_init
        self.mlp_kernel = mlp_kernel
        self.blocks = multiplex_blocks(
            self.blocks, self.share_every, attn_transform=attn_transform, mlp_transform=mlp_transform,
            transform_init=transform_init, mlp_kernel=mlp_kernel, grid_size=self.grid_size,
            num_prefix_tokens=self.num_prefix_tokens)

    @property
    def num_groups(self) -> int:
        """Distinct MSA/MLP weight sets (``depth / share_every``)."""
        return self.depth // self.share_every

    def groups(self) -> list[list[int]]:
        """The layer indices of each sharing group, e.g. ``[[0, 1], [2, 3]]``."""
        k = self.share_every
        return [list(range(g * k, (g + 1) * k)) for g in range(self.num_groups)]

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Position embedding and tokens (as ViT) plus the head mixes (see the module docstring)."""
        mixes = {f"blocks.{i}.attn.{m}.weight" for i in range(self.depth) for m in ("mix_pre", "mix_post")
                 if getattr(self.blocks[i].attn, m) is not None}
        return super().no_weight_decay() | mixes

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", share_every={self.share_every}, "
                f"attn_transform={self.attn_transform}, mlp_transform={self.mlp_transform}, "
                f"transform_init={self.transform_init!r}")


# ----------------------------------------------------------------------------------------------
# Building students


def vit_kwargs(vit: VisionTransformer) -> dict[str, Any]:
    """The ``VisionTransformer`` constructor arguments that rebuild ``vit``'s architecture."""
    blk = vit.blocks[0]
    attn = blk.attn
    hidden = blk.mlp.fc1.out_features
    last_dp = vit.blocks[-1].drop_path1
    return {
        "img_size": vit.img_size, "patch_size": vit.patch_size,
        "in_chans": vit.patch_embed.proj.in_channels, "num_classes": vit.num_classes,
        "embed_dim": vit.embed_dim, "depth": len(vit.blocks), "num_heads": attn.num_heads,
        "mlp_ratio": hidden / vit.embed_dim, "qkv_bias": attn.qkv.bias is not None,
        "drop_rate": attn.proj_drop.p, "attn_drop_rate": attn.attn_drop.p,
        "drop_path_rate": float(getattr(last_dp, "drop_prob", 0.0)), "distilled": vit.distilled,
        "class_token": vit.cls_token is not None, "global_pool": vit.global_pool,
        "norm_eps": blk.norm1.eps, "pos_drop": vit.pos_drop.p,
    }


_SHARED_PREFIXES = ("attn.qkv.", "attn.proj.", "mlp.")


def from_vit(vit: VisionTransformer, share_every: int | str = 2, *, attn_transform: bool = True,
             mlp_transform: bool = True, transform_init: str = "identity", mlp_kernel: int = 7,
             init: str = "first") -> MiniViT:
    """A :class:`MiniViT` with ``vit``'s architecture and weights (paper, compression pipeline:
    the compact model is generated from the large pre-trained one).

    Embeddings, per-layer norms and head are copied. Each group's shared MSA/MLP weights come
    from the first layer of the group (``init="first"``) or the mean of the group's layers
    (``init="mean"``). The transforms keep their initialisation (the identity by default, so with
    ``share_every=1`` the result computes exactly what ``vit`` computes).
    """
    if isinstance(vit, MiniViT) or not all(isinstance(b, Block) for b in vit.blocks):
        raise TypeError("from_vit needs a plain VisionTransformer (blocks of vit.Block)")
    if init not in ("first", "mean"):
        raise ValueError(f"init={init!r}; allowed: 'first', 'mean'")
    kwargs = vit_kwargs(vit)
    mini = MiniViT(share_every, attn_transform, mlp_transform, transform_init, mlp_kernel, **kwargs)
    if mini.blocks[0].mlp.fc1.out_features != vit.blocks[0].mlp.fc1.out_features:
        raise ValueError("could not rebuild the MLP width from mlp_ratio")
    mini.to(device=vit.pos_embed.device, dtype=vit.pos_embed.dtype)
    src = vit.state_dict()
    target = {k: v for k, v in src.items()
              if not (k.startswith("blocks.") and k.split(".", 2)[2].startswith(_SHARED_PREFIXES))}
    suffixes = [s for s in vit.blocks[0].state_dict() if s.startswith(_SHARED_PREFIXES)]
    for group in mini.groups():
        for s in suffixes:
            layers = group[:1] if init == "first" else group
            value = torch.stack([src[f"blocks.{i}.{s}"] for i in layers]).mean(0)
            for i in group:
                target[f"blocks.{i}.{s}"] = value
    missing, unexpected = mini.load_state_dict(target, strict=False)
    bad = [k for k in missing if not (".mix_" in k or ".mlp_transform." in k)]
    if bad or unexpected:
        raise RuntimeError(f"from_vit: missing {bad}, unexpected {unexpected}")
    mini.train(vit.training)
    return mini


def preset_config(name: str) -> dict[str, Any]:
    """Constructor arguments of a ViT preset: ``models/vit.py``'s PRESETS or :data:`TEACHER_PRESETS`."""
    if name in TEACHER_PRESETS:
        return dict(TEACHER_PRESETS[name])
    if name in PRESETS:
        return dict(PRESETS[name])
    raise KeyError(f"unknown ViT preset {name!r}; available: {sorted({*PRESETS, *TEACHER_PRESETS})}")


def create_minivit(preset: str, share_every: int | str = 2, *, attn_transform: bool = True,
                   mlp_transform: bool = True, transform_init: str = "identity", mlp_kernel: int = 7,
                   **vit_overrides: Any) -> MiniViT:
    """Mini version of a ViT preset, e.g. ``create_minivit("deit_base", 2)`` (Mini-DeiT-B) or
    ``create_minivit("course_tiny", "all", num_classes=10)``; keyword arguments override the preset."""
    return MiniViT(share_every, attn_transform, mlp_transform, transform_init, mlp_kernel,
                   **{**preset_config(preset), **vit_overrides})


# ----------------------------------------------------------------------------------------------
# Parameter counts


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (a shared tensor counts once)."""
    return sum(p.numel() for p in model.parameters())


def parameter_breakdown(model: VisionTransformer) -> dict[str, int]:
    """Where a (Mini)ViT's parameters are: embeddings, MSA+MLP weights (shared ones once), norms,
    transforms and head."""
    seen: set[int] = set()
    parts = {"embeddings": 0, "msa_mlp": 0, "norms": 0, "transforms": 0, "head": 0}
    for name, p in model.named_parameters():  # named_parameters lists a shared tensor once
        if id(p) in seen:
            continue
        seen.add(id(p))
        if ".mix_" in name or ".mlp_transform." in name:
            key = "transforms"
        elif name.startswith("blocks.") and (".attn." in name or ".mlp." in name):
            key = "msa_mlp"
        elif "norm" in name:
            key = "norms"
        elif name.startswith(("head", "fc_norm")):
            key = "head"
        else:
            key = "embeddings"
        parts[key] += p.numel()
    parts["total"] = sum(parts.values())
    return parts


def param_counts(mlp_transform: bool = False) -> dict[str, dict[str, int]]:
    """Parameters of DeiT-Ti/S/B (224 px, 1000 classes) and their Mini versions (Tables 2 and 4).

    ``{"deit_base": {"original": 86.6M, "every-2": 44.1M, "all": 8.6M}, ...}``, built on the meta
    device (no memory). The Mini versions carry the head transforms (2 · heads² per layer) and
    per-layer norms; ``mlp_transform=False`` follows Mini-DeiT, which has no MLP transform (with a
    7x7 one, DeiT-B gains 12 x 40k = 0.5M).

    Against the paper: DeiT-B 86.57M ("86M"), every-2 44.06M ("44M"), Mini-DeiT-Ti 3.05M ("3M")
    and Mini-DeiT-S 11.41M ("11M") match its rounded numbers; Mini-DeiT also drops the class token
    and adds image relative position encodings on the keys, a few thousand parameters either way.
    For all layers shared we count 8.64M where the paper prints "9M (9.7x)", i.e. about 8.9M; what
    the missing ~0.25M are is not stated (per-layer 7x7 MLP transforms would add 0.48M), so the
    tests allow 10%.
    """
    out: dict[str, dict[str, int]] = {}
    for name in ("deit_tiny", "deit_small", "deit_base"):
        counts = {}
        with torch.device("meta"):
            counts["original"] = count_parameters(create_vit(name))
            for label in ("every-2", "all"):
                m = create_minivit(name, label, attn_transform=True, mlp_transform=mlp_transform,
                                   mlp_kernel=7)
                counts[label] = count_parameters(m)
        out[name] = counts
    return out


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


# ----------------------------------------------------------------------------------------------
# Attention for visualisation


@torch.no_grad()
def cls_attention(model: VisionTransformer, images: torch.Tensor, head: str | None = "mean") -> torch.Tensor:
    """Class-token-to-patch attention of every layer, in eval mode.

    Returns ``(layers, B, gh, gw)`` (``head="mean"``: averaged over heads) or
    ``(layers, B, heads, gh, gw)`` (``head=None``). For a :class:`MiniViT` the maps are taken
    after the post-softmax head transform (what multiplies V), so with transforms a row need not
    sum to 1 and may hold negative values.
    """
    if head not in ("mean", None):
        raise ValueError(f"head={head!r}; allowed: 'mean' or None")
    if model.cls_token is None:
        raise ValueError("the model has no class token")
    was_training = model.training
    model.eval()
    try:
        attns = model.get_attention(images.to(next(model.parameters()).device))
    finally:
        model.train(was_training)
    a = torch.stack([x.float().cpu() for x in attns])  # (L, B, H, N, N)
    L, B, H = a.shape[:3]
    gh, gw = model.grid_size
    maps = a[:, :, :, 0, model.num_prefix_tokens:].reshape(L, B, H, gh, gw)
    return maps.mean(2) if head == "mean" else maps


def compare_attention(models: Mapping[str, VisionTransformer], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`cls_attention` (head mean) of several models on the same images, e.g.
    ``{"teacher": ..., "shared": ..., "shared + transform": ...}``."""
    return {name: cls_attention(m, images) for name, m in models.items()}


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of flattened maps ``(B, gh, gw)`` -> ``(B,)``."""
    return F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1).float()


def attention_agreement(maps: Mapping[str, torch.Tensor], reference: str = "teacher"):
    """How much each model's class-token attention looks like the reference model's, per layer.

    ``maps``: the output of :func:`compare_attention`. For student layer ``l`` the reference
    layer is the one :func:`layer_pairs` (``"uniform"``) assigns; the number is the cosine
    similarity of the two maps, averaged over the images (1 = the same map up to scale).
    Returns a DataFrame: one row per model, one column per student layer.
    """
    import pandas as pd

    ref = maps[reference]
    rows = {}
    for name, m in maps.items():
        if name == reference:
            continue
        pairs = layer_pairs(m.shape[0], ref.shape[0], "uniform")
        rows[name] = {f"layer {s}": float(_cosine(m[s], ref[t]).mean()) for s, t in pairs}
    return pd.DataFrame.from_dict(rows, orient="index")


def layer_similarity(maps: Mapping[str, torch.Tensor]):
    """Mean cosine similarity of the class-token attention of consecutive layers, per model
    (averaged over images and layer pairs): high when the layers attend alike, as weight-shared
    layers without transformations tend to. Returns a pandas Series."""
    import pandas as pd

    return pd.Series({name: float(torch.stack([_cosine(m[i], m[i + 1]) for i in range(m.shape[0] - 1)]).mean())
                      for name, m in maps.items() if m.shape[0] > 1}, name="consecutive-layer similarity")


def plot_attention_comparison(maps: Mapping[str, torch.Tensor], image: torch.Tensor | None = None,
                              index: int = 0, size: float = 1.6):
    """One row per model, one column per layer: the class-token attention of image ``index``.

    ``maps``: the output of :func:`compare_attention`; ``image``: an optional (3, H, W) image shown
    in the first column. Each map is scaled to its own range. Returns the figure.
    """
    import matplotlib.pyplot as plt

    from .viz import to_image

    cols = max(m.shape[0] for m in maps.values()) + (image is not None)
    fig, axes = plt.subplots(len(maps), cols, figsize=(size * cols, size * len(maps)), squeeze=False)
    for r, (name, m) in enumerate(maps.items()):
        c0 = 0
        if image is not None:
            axes[r, 0].imshow(to_image(image))
            c0 = 1
        for layer in range(m.shape[0]):
            axes[r, c0 + layer].imshow(m[layer, index].numpy(), cmap="inferno")
            if r == 0:
                axes[r, c0 + layer].set_title(f"layer {layer}", fontsize=8)
        axes[r, 0].set_ylabel(name, fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[r, c0 + m.shape[0]:]:
            ax.axis("off")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Data, students and teacher


def load_data(P: config.Params) -> deit.DeiTData:
    """The world (offline; DeiT's calibrated view, see :func:`deit.world_config`), CIFAR-100 or
    Imagenette (160 px release, resized and center-cropped to ``image_size``) as train/val/test
    datasets. A real dataset that is not on disk raises ``FileNotFoundError`` naming the command
    that fetches it (``python data_scripts/fetch.py NAME``); its val split is its test split."""
    from torchvision.transforms import v2

    tt = deit.train_transform(P.image_size, False)
    if P.dataset == "world":
        from .world import WorldClassification

        wcfg = deit.world_config(P)
        tr = WorldClassification(wcfg, "train", P.data_root, transform=tt)
        va = WorldClassification(wcfg, "val", P.data_root)
        te = WorldClassification(wcfg, "test", P.data_root)
        return deit.DeiTData(tr, va, te, wcfg.num_classes, list(wcfg.class_names),
                             key={"world": wcfg.key("train")})
    size = [v2.ToImage(), v2.Resize(P.image_size, antialias=True), v2.CenterCrop(P.image_size)]
    tt, te_t = v2.Compose(size + [tt]), v2.Compose(size + [deit.eval_transform()])
    tr = data.get_dataset(P.dataset, "train", P.data_root, transform=tt)
    te = data.get_dataset(P.dataset, "test", P.data_root, transform=te_t)
    if P.dataset == "imagenette":  # torchvision's classes are tuples of WordNet names
        names = [c[0] if isinstance(c, (tuple, list)) else str(c) for c in tr.classes]
        return deit.DeiTData(tr, te, te, len(names), names, key={"dataset": "imagenette-160"})
    return deit.DeiTData(tr, te, te, len(tr.classes), list(tr.classes), key={"dataset": P.dataset})


def _targets(dataset) -> torch.Tensor:
    samples = getattr(dataset, "_samples", None)  # torchvision Imagenette: (path, label) pairs
    if getattr(dataset, "targets", None) is None and samples is not None:
        return torch.tensor([y for _, y in samples])
    return deit.targets_of(dataset)


def _arch(P: config.Params, preset: str, num_classes: int) -> dict[str, Any]:
    """A preset's arguments at ``P.image_size`` (the patch grows with the image: same token grid)."""
    cfg = preset_config(preset)
    cfg["num_classes"] = num_classes
    if P.image_size != cfg["img_size"]:
        patch = cfg["patch_size"] * P.image_size // cfg["img_size"]
        cfg.update(img_size=P.image_size, patch_size=patch)
    return cfg


@dataclass(frozen=True)
class Variant:
    """One student of the tables: sharing pattern, weight transformation, loss weights (eq. 12).

    ``share``: ``"none"`` (the original ViT), ``"every-2"`` or ``"all"``; ``transform``: both
    weight transformations on; ``gt``/``pred``/``attn``/``hidden``: loss weights (0 = off).
    """

    share: str
    transform: bool
    gt: float = 1.0
    pred: float = 0.0
    attn: float = 0.0
    hidden: float = 0.0

    @property
    def distilled(self) -> bool:
        return self.pred > 0 or self.attn > 0 or self.hidden > 0


def variants(P: config.Params) -> dict[str, Variant]:
    """The students of Tables 1-3 (Table 3 only with ``P.table3``), by name; several names may be
    one configuration, which is then trained once.

    Distilled students use eq. 12's weights (β, γ) throughout; the paper's Table 3 caption says its
    rows weight every loss 1 (GT and L_pred 0.5 each when both are on), while its default and the
    official recipes use γ = 0.1 (``--hidden_weight 0.1``). The "attention + hidden" row keeps the
    GT loss: without it or L_pred nothing would train the classifier head.
    """
    s = P.share
    wd = {"gt": P.gt_weight, "pred": 1.0, "attn": P.beta, "hidden": P.gamma}
    out = {
        # Table 1
        "original": Variant("none", False),
        "ws": Variant(s, False),
        "ws_wd": Variant(s, False, **wd),
        "ws_wt": Variant(s, True),
        "ws_wt_wd": Variant(s, True, **wd),  # MiniViT
        # Table 2 (with weight transformation and distillation, as the paper's Mini models)
        "every-2": Variant("every-2", True, **wd),
        "all": Variant("all", True, **wd),
    }
    if P.table3:  # on the Table 1 MiniViT; its "no distillation" row is ws_wt
        out.update({
            "pred": Variant(s, True, gt=P.gt_weight, pred=1.0),
            "pred_attn": Variant(s, True, gt=P.gt_weight, pred=1.0, attn=P.beta),
            "pred_attn_hidden": Variant(s, True, **wd),
            "attn_hidden": Variant(s, True, gt=1.0, attn=P.beta, hidden=P.gamma),
        })
    return out


def build_student(P: config.Params, v: Variant, num_classes: int) -> VisionTransformer:
    """The original ViT (``share="none"`` without transforms) or a :class:`MiniViT`."""
    cfg = _arch(P, P.student, num_classes)
    if v.share == "none" and not v.transform:
        return VisionTransformer(**cfg)
    return MiniViT(v.share, attn_transform=v.transform, mlp_transform=v.transform,
                   transform_init=P.transform_init, mlp_kernel=P.dwconv_kernel, **cfg)


class ConvStem(nn.Module):
    """Early convolutions in place of a ViT's patch projection (Xiao et al., "Early Convolutions
    Help Transformers See Better", NeurIPS 2021): a 3x3 convolution, then stride-2 3x3
    convolutions (BatchNorm + ReLU, channels doubling) while the patch size halves, then a
    ``k x k`` convolution with stride ``k`` for what is left of the patch (1x1 for a power of 2)
    to ``embed_dim``. Same output grid as the patch projection it replaces, so the tokens, and
    the N x N relations of eq. 10-11, match a patch-embedding student's.
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c, rest = in_chans, width, patch_size
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        while rest % 2 == 0 and rest > 1:
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * c),
                       nn.ReLU(inplace=True)]
            c, rest = 2 * c, rest // 2
        layers.append(nn.Conv2d(c, embed_dim, rest, stride=rest))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def with_conv_stem(vit: VisionTransformer, width: int = 32) -> VisionTransformer:
    """Replace ``vit``'s patch projection by a :class:`ConvStem` (in place; returns ``vit``)."""
    pe = vit.patch_embed
    if pe.patch_size[0] != pe.patch_size[1]:
        raise ValueError("a conv stem needs square patches")
    pe.proj = ConvStem(pe.proj.in_channels, vit.embed_dim, pe.patch_size[0], width)
    return vit


def build_teacher(P: config.Params, num_classes: int) -> VisionTransformer:
    """The larger ViT teacher; ``P.teacher_stem == "conv"`` gives it a :class:`ConvStem`."""
    vit = VisionTransformer(**_arch(P, P.teacher, num_classes))
    return with_conv_stem(vit) if P.get("teacher_stem", "patch") == "conv" else vit


def _train_cfg(P: config.Params, epochs: int, lr: float, num_classes: int, seed: int) -> train.TrainConfig:
    # DeiT's short-budget recipe (deit._train_cfg) without strong augmentation; clipping keeps the
    # small ViTs stable at their peak lr
    return train.TrainConfig(
        epochs=epochs, lr=lr, weight_decay=0.05, schedule="cosine", warmup_epochs=min(5.0, 0.3 * epochs),
        min_lr=1e-5, label_smoothing=0.1, grad_clip=1.0, num_classes=num_classes, seed=seed,
        progress=True, max_steps=P.max_steps or None)


def _loaders(P: config.Params, d: deit.DeiTData, seed: int):
    dev = P.torch_device
    return (data.make_loader(d.train, P.batch_size, train=True, seed=seed, device=dev),
            data.make_loader(d.val, 512, train=False, device=dev))


def _base_key(P: config.Params, d: deit.DeiTData) -> dict:
    keys = ("dataset", "image_size", "num_classes", "batch_size", "max_steps")
    return {**{k: P[k] for k in keys}, **d.key, "code": CODE_VERSION}


def _teacher_key(P: config.Params, d: deit.DeiTData) -> dict:
    return {**_base_key(P, d), "teacher": P.teacher, "stem": P.teacher_stem, "epochs": P.teacher_epochs,
            "lr": P.teacher_lr}


def train_teacher(P: config.Params, d: deit.DeiTData):
    """The larger ViT teacher, trained once with labels and cached (``retrain=True`` forces it)."""
    cfg = _train_cfg(P, P.teacher_epochs, P.teacher_lr, d.num_classes, seed=0)

    def fit_teacher(model):
        config.seed_everything(0)
        tl, vl = _loaders(P, d, 0)
        return train.fit(model, tl, cfg, eval_loader=vl, device=P.torch_device)

    def build():
        config.seed_everything(0)
        return build_teacher(P, d.num_classes).to(P.torch_device)

    return train.cached_model(f"minivit-teacher-{P.teacher}", _teacher_key(P, d), build, fit_teacher,
                              force=P.retrain)


def train_student(P: config.Params, d: deit.DeiTData, v: Variant, teacher: nn.Module | None, seed: int):
    """One student, cached by its whole configuration (architecture, recipe, losses, teacher)."""
    cfg = _train_cfg(P, P.student_epochs, P.lr, d.num_classes, seed=seed)
    key = {**_base_key(P, d), "student": P.student, "variant": asdict(v),
           "seed": seed, "epochs": P.student_epochs, "lr": P.lr}
    if v.transform:
        key.update(transform_init=P.transform_init, dwconv_kernel=P.dwconv_kernel)
    if v.distilled:
        key.update(teacher=_teacher_key(P, d), tau=P.tau, relation_heads=P.relation_heads,
                   distill_layers=P.distill_layers, hidden_relation=P.hidden_relation)

    def fit_student(model):
        config.seed_everything(seed)
        tl, vl = _loaders(P, d, seed)
        criterion = None
        if v.distilled:
            criterion = MiniViTDistillationLoss(
                teacher, model, pred=v.pred, beta=v.attn, gamma=v.hidden, gt=v.gt, tau=P.tau,
                layers=P.distill_layers, relation_heads=P.relation_heads,
                hidden_relation=P.hidden_relation, base=nn.CrossEntropyLoss(label_smoothing=0.1))
        try:
            return train.fit(model, tl, cfg, criterion=criterion, eval_loader=vl, device=P.torch_device)
        finally:
            if criterion is not None:
                criterion.close()

    def build():
        config.seed_everything(seed)
        return build_student(P, v, d.num_classes).to(P.torch_device)

    name = f"minivit-student-{v.share}{'-wt' if v.transform else ''}{'-wd' if v.distilled else ''}"
    return train.cached_model(name, key, build, fit_student, force=P.retrain)


# ----------------------------------------------------------------------------------------------
# The whole experiment


@dataclass
class Run:
    name: str
    seed: int
    top1: float
    params: int
    seconds: float
    from_cache: bool
    history: Any = None


def _top1(model: nn.Module, d: deit.DeiTData, y: torch.Tensor, device) -> float:
    return deit.accuracy(deit.head_logits(model, d.test, device)["cls"], y)


def run_experiments(P: config.Params, d: deit.DeiTData | None = None,
                    log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Teacher, then the students of Tables 1-3 (see :func:`variants`); a configuration shared by
    several table rows is trained once. The Table 1 students run ``P.seeds`` seeds, the extra
    rows of Tables 2 and 3 one seed. Returns runs, models and data for the notebook."""
    d = d or load_data(P)
    dev = P.torch_device
    y = _targets(d.test)
    t0 = time.perf_counter()
    teacher, tinfo = train_teacher(P, d)
    teacher.eval()
    runs: dict[str, list[Run]] = {"teacher": [Run("teacher", 0, _top1(teacher, d, y, dev),
                                                  count_parameters(teacher), tinfo.train_seconds,
                                                  tinfo.from_cache, tinfo.history)]}
    log(f"teacher {P.teacher}: top-1 {runs['teacher'][0].top1:.1f}%, "
        f"{runs['teacher'][0].params / 1e6:.2f}M params "
        f"({'cache' if tinfo.from_cache else f'{tinfo.train_seconds:.0f}s'})")

    vs = variants(P)
    done: dict[tuple[Variant, int], Run] = {}  # a configuration shared by several rows trains once
    first: dict[Variant, nn.Module] = {}       # the first seed's model of each configuration
    seeds = [P.seed + i for i in range(P.seeds)]
    table1 = ("original", "ws", "ws_wd", "ws_wt", "ws_wt_wd")
    plan = [(n, s) for n in table1 for s in seeds] + [(n, seeds[0]) for n in vs if n not in table1]
    for name, seed in plan:
        v = vs[name]
        if (v, seed) not in done:
            model, info = train_student(P, d, v, teacher if v.distilled else None, seed)
            run = Run(name, seed, _top1(model, d, y, dev), count_parameters(model), info.train_seconds,
                      info.from_cache, info.history)
            done[(v, seed)] = run
            first.setdefault(v, model)
            log(f"{name:>16s} seed {seed}: top-1 {run.top1:.1f}%, {run.params / 1e6:.3f}M params "
                f"({'cache' if info.from_cache else f'{info.train_seconds:.0f}s'})")
        runs.setdefault(name, []).append(dataclasses.replace(done[(v, seed)], name=name))
    models = {name: first[v] for name, v in vs.items()}
    return {"runs": runs, "targets": y, "teacher": teacher, "students": models, "variants": vs,
            "data": d, "seconds": time.perf_counter() - t0}


def _mean(runs: dict[str, list[Run]], name: str) -> float:
    vals = [r.top1 for r in runs[name]]
    return sum(vals) / len(vals)


def tables(res: dict[str, Any]):
    """Tables 1-3 as pandas DataFrames (Table 3 when it was run): our top-1 (mean over seeds) and
    parameters next to the paper's DeiT-S / DeiT-B / Swin-T numbers."""
    import pandas as pd

    runs = res["runs"]
    t1_rows = [("original", "original"), ("ws", "+ weight sharing"), ("ws_wd", "+ sharing + distillation"),
               ("ws_wt", "+ sharing + transformation"), ("ws_wt_wd", "+ sharing + transf. + distill. (MiniViT)")]
    t1 = pd.DataFrame([{"row": label, "params (M)": runs[n][0].params / 1e6, "ours top-1": _mean(runs, n),
                        "seeds": len(runs[n]), "paper DeiT-S": PAPER["table1_deit_s"][n],
                        "paper Swin-T": PAPER["table1_swin_t"][n]} for n, label in t1_rows]).set_index("row")
    t2 = pd.DataFrame([{"sharing": n, "params (M)": runs[n][0].params / 1e6, "ours top-1": _mean(runs, n),
                        "paper DeiT-B params (M)": PAPER["table2_deit_b_params_m"][n],
                        "paper DeiT-B": PAPER["table2_deit_b"][n], "paper Swin-T": PAPER["table2_swin_t"][n]}
                       for n in ("original", "every-2", "all")]).set_index("sharing")
    t3_rows = [("teacher", "teacher"), ("ws_wt", "GT only (no distillation)"), ("pred", "L_pred"),
               ("pred_attn", "L_pred + L_attn"), ("pred_attn_hidden", "L_pred + L_attn + L_hddn"),
               ("attn_hidden", "GT + L_attn + L_hddn")]
    out = {"table1": t1, "table2": t2}
    if "pred" not in runs:
        return out
    paper3 = PAPER["table3_swin_t"]
    out["table3"] = pd.DataFrame([{"losses": label, "ours top-1": _mean(runs, n),
                                   "paper Mini-Swin-T": paper3["gt" if n == "ws_wt" else n]}
                                  for n, label in t3_rows]).set_index("losses")
    return out


def recorder(P: config.Params):
    """The notebook's results recorder; make it first, so its clock times the whole run."""
    from .results import Results

    return Results("09_minivit", TITLE, PAPER_URL, P)


def record_results(P: config.Params, res: dict[str, Any], rec=None):
    """The "paper vs. ours" claims of the notebook, judged by rules (results.py) and saved.

    A comparison of single runs (Tables 2 and 3 always, Table 1 when ``P.seeds == 1``) has no
    noise estimate, so it needs a margin of :data:`SINGLE_SEED_MARGIN` points to count as
    reproduced; with several seeds the Table 1 claims are judged against their seed noise.
    """
    from .results import AtLeast, Better, Within

    m1 = SINGLE_SEED_MARGIN if len(res["runs"]["original"]) < 2 else 0.0  # Table 1 margin
    m = SINGLE_SEED_MARGIN
    runs, K = res["runs"], res["data"].num_classes
    chance = 100.0 / K
    top = {n: [r.top1 for r in rs] for n, rs in runs.items()}
    t1, t2, t3 = PAPER["table1_deit_s"], PAPER["table2_deit_b"], PAPER["table3_swin_t"]
    rec = rec if rec is not None else recorder(P)
    rec.add("original", "the original ViT student learns (above chance) [Table 1, DeiT-S]",
            paper=t1["original"], ours=top["original"], rule=AtLeast(chance), note=f"chance {chance:.1f}%")
    rec.add("teacher", "the larger ViT teacher beats the original student [Table 3 teacher: Swin-B]",
            paper=t3["teacher"], ours=top["teacher"], rule=Better("original"))
    params = {n: runs[n][0].params for n in ("original", "every-2", "all")}
    rec.add("compression_every2", "sharing every 2 layers halves the parameters [Table 1, DeiT-S 22M -> 11M]",
            paper=PAPER["table1_params_m"]["deit_s"] / PAPER["table1_params_m"]["mini_deit_s"],
            ours=params["original"] / params["every-2"], unit="x", rule=Within(0.15),
            note=f"{params['original']:,} -> {params['every-2']:,} parameters")
    rec.add("ws", "weight sharing alone loses accuracy [Table 1, DeiT-S 78.3 vs 79.9]", paper=t1["ws"],
            ours=top["ws"], rule=Better("original", higher_is_better=False, min_effect=m1))
    rec.add("ws_wd", "distillation improves the shared model [Table 1, 80.1 vs 78.3]", paper=t1["ws_wd"],
            ours=top["ws_wd"], rule=Better("ws", min_effect=m1))
    rec.add("ws_wt", "weight transformation improves the shared model [Table 1, 79.3 vs 78.3]",
            paper=t1["ws_wt"], ours=top["ws_wt"], rule=Better("ws", min_effect=m1))
    rec.add("ws_wt_wd", "transformation + distillation beat distillation alone [Table 1, 80.7 vs 80.1]",
            paper=t1["ws_wt_wd"], ours=top["ws_wt_wd"], rule=Better("ws_wd", min_effect=m1))
    rec.add("minivit_vs_original", "MiniViT beats the original with half the parameters [Table 1, 80.7 vs 79.9]",
            paper=t1["ws_wt_wd"], ours=top["ws_wt_wd"], rule=Better("original", min_effect=m1))
    rec.add("every2", "MiniViT sharing every 2 layers beats the original [Table 2, DeiT-B 83.2 vs 81.8]",
            paper=t2["every-2"], ours=top["every-2"], rule=Better("original", min_effect=m))
    rec.add("all", "sharing all layers is worse than sharing every 2 [Table 2, DeiT-B 79.8 vs 83.2]",
            paper=t2["all"], ours=top["all"], rule=Better("every2", higher_is_better=False, min_effect=m))
    if "pred" in top:  # Table 3 was run
        rec.add("t3_pred", "prediction-logit distillation beats no distillation [Table 3, 81.2 vs 79.2]",
                paper=t3["pred"], ours=top["pred"], rule=Better("ws_wt", min_effect=m))
        rec.add("t3_pred_attn", "adding attention-relation distillation helps [Table 3, 81.4 vs 81.2]",
                paper=t3["pred_attn"], ours=top["pred_attn"], rule=Better("t3_pred", min_effect=m))
        rec.add("t3_pred_attn_hidden", "adding hidden-state distillation helps [Table 3, 81.5 vs 81.4]",
                paper=t3["pred_attn_hidden"], ours=top["pred_attn_hidden"],
                rule=Better("t3_pred_attn", min_effect=m))
        rec.add("t3_attn_hidden", "relation distillation with labels, without logits, beats no "
                "distillation [Table 3, 81.4 vs 79.2]", paper=t3["attn_hidden"], ours=top["attn_hidden"],
                rule=Better("ws_wt", min_effect=m))
    counts = param_counts()
    p2, p4 = PAPER["table2_deit_b_params_m"], PAPER["table4_params_m"]
    for label in ("original", "every-2", "all"):
        rec.add(f"params_deit_b_{label}", f"DeiT-B sharing '{label}' has about {p2[label]:g}M parameters "
                "[Table 2]", paper=p2[label], ours=counts["deit_base"][label] / 1e6, unit="M", rule=Within(0.10))
    for name in ("deit_tiny", "deit_small"):
        rec.add(f"params_mini_{name}", f"Mini-{name} (every 2) has about {p4['mini_' + name]:g}M parameters "
                "[Table 4]", paper=p4["mini_" + name], ours=counts[name]["every-2"] / 1e6, unit="M",
                rule=Within(0.10))
    rec.save()
    return rec
