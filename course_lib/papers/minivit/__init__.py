"""MiniViT: "Compressing Vision Transformers with Weight Multiplexing"
(Zhang, Peng, Wu, Liu, Xiao, Fu, Yuan; CVPR 2022, arXiv 2204.07154). Everything notebook 09 needs.

The problem: vision transformers are large (DeiT-B 86M parameters), and simply sharing one
set of weights across layers, as ALBERT did for language, makes training unstable and loses
accuracy because the shared layers become too alike. The idea: share the weights, but let
each layer transform them a little and distill a larger teacher into the small model.

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

Where things live:

``method``        weight sharing and weight transformation: :class:`HeadMix`,
                  :class:`DWConvTransform`, :class:`MultiplexedAttention`, :class:`MiniBlock`,
                  :func:`multiplex_blocks`, :class:`MiniViT`, :func:`from_vit`,
                  :func:`create_minivit`, parameter counts (:func:`param_counts`, Tables 2, 4);
``distillation``  weight distillation: eq. 9 (:func:`prediction_loss`), eq. 10
                  (:func:`qkv_relation_loss`, :func:`attention_relation_loss`), eq. 11
                  (:func:`hidden_relation_loss`), eq. 12 (:class:`MiniViTDistillationLoss`);
``experiment``    the notebook's ``PARAMS``, the paper's numbers (``PAPER``), data, teacher
                  (:class:`ConvStem`) and students of Tables 1-3 (:func:`run_experiments`),
                  :func:`tables` and the "paper vs. ours" record (:func:`record_results`);
``figures``       class-token attention of teacher and students (:func:`cls_attention`,
                  :func:`attention_agreement`, :func:`plot_attention_comparison`).
"""
from __future__ import annotations

from .distillation import (
    MiniViTDistillationLoss,
    attention_relation_loss,
    hidden_relation_loss,
    layer_pairs,
    prediction_loss,
    qkv_relation_loss,
    soft_relation_kl,
)
from .experiment import (
    CODE_VERSION,
    NOTEBOOK,
    PAPER,
    PAPER_URL,
    PARAMS,
    PROBES,
    MATCH_TOLERANCE,
    STUDENTS,
    TAKEAWAYS,
    TEACHERS,
    TITLE,
    ConvStem,
    Run,
    Variant,
    build_student,
    build_teacher,
    load_data,
    record_results,
    recorder,
    run_experiments,
    scaling_probe,
    tables,
    train_student,
    train_teacher,
    variants,
    with_conv_stem,
)
from .figures import (
    attention_agreement,
    cls_attention,
    compare_attention,
    layer_similarity,
    plot_attention_comparison,
)
from .method import (
    SHARE_PATTERNS,
    TEACHER_PRESETS,
    TRANSFORM_INITS,
    DWConvTransform,
    HeadMix,
    MiniBlock,
    MiniViT,
    MultiplexedAttention,
    count_parameters,
    create_minivit,
    from_vit,
    multiplex_blocks,
    param_counts,
    parameter_breakdown,
    preset_config,
    vit_kwargs,
)

__all__ = [
    "PAPER",
    "PAPER_URL",
    "MATCH_TOLERANCE", "PROBES", "scaling_probe",
    "TAKEAWAYS",
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
