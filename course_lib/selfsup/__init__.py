"""The self-supervised backbone: the course's ViT trained without labels by DINO's
self-distillation, how to train it, load it, and read its features and attention.

Three notebooks use this backbone: 06 (DINO) studies it, 05 (CLEAR) pretrains it on the unlabeled
first bucket of its stream, 11 (STEGO) uses it frozen. Paper packages may not import each other,
so the backbone lives here, one floor below them. It implements the training of DINO
("Emerging Properties in Self-Supervised Vision Transformers", Caron, Touvron, Misra, Jégou,
Mairal, Bojanowski, Joulin; ICCV 2021, arXiv 2104.14294); ``course_lib/papers/dino/`` holds the
paper's study of it (ablations, attention masks and their Jaccard, k-NN and linear evaluation,
the supervised baseline, the figures and the "paper vs. ours" record).

DINO is *self-distillation with no labels*: a student network ``g_s`` is trained to predict the
output of a teacher network ``g_t`` of the same architecture on another view of the same image;
the teacher is an exponential moving average of the student. Where each piece lives:

* **Softmax outputs with temperatures** (eq. 1): ``P_s(x) = softmax(g_s(x) / τ_s)``,
  ``τ_s = 0.1``; the teacher is *sharpened* with a lower ``τ_t`` (0.04, optionally warmed up
  from a lower value: the official README recipe goes 0.04 -> 0.07) and *centred*:
  ``P_t(x) = softmax((g_t(x) - c) / τ_t)`` (:class:`DINOLoss`, ``selfsup/dino.py``).
* **The loss** (eq. 2, and eq. 3 with multi-crop): the cross-entropy ``H(P_t, P_s) = -Σ P_t log P_s``
  summed over every (teacher view, student view) pair except identical views, averaged over
  the pairs (:class:`DINOLoss`; Algorithm 1 of the paper is the two-view case).
* **Centering** (Sec. 3.1, eq. 4): ``c <- m c + (1 - m) mean_batch g_t(x)`` with ``m = 0.9``,
  updated *after* the loss of the step (:meth:`DINOLoss.update_center`). Centering prevents one
  dimension from dominating, sharpening prevents the uniform output; each alone collapses
  (paper Fig. 7).
* **The momentum teacher** (Sec. 3.1): ``θ_t <- λ θ_t + (1 - λ) θ_s`` after every student step,
  ``λ`` following a cosine from 0.996 to 1 over the iterations (:func:`ema_update`,
  :func:`cosine_schedule`, ``selfsup/training.py``). Without it (``λ = 0``: the teacher is the
  current student) DINO collapses (paper Table 7, row 2).
* **Multi-crop** (Sec. 3.1): two global views and several small local views per image; only the
  global views go through the teacher, the student sees all of them (:class:`MultiCropAugment`,
  ``selfsup/augment.py``). The backbone runs once per group of same-resolution crops
  (:class:`MultiCropNet`); position embeddings are interpolated for the local crops
  (``VisionTransformer.forward_features(x, any_size=True)``, ``models/vit.py``).
* **The projection head** (Sec. 3.1, "Network architecture"): a 3-layer MLP (GELU) to a
  bottleneck, L2 normalisation, then a weight-normalised linear layer without bias to ``K``
  outputs whose norm ``g`` is fixed at 1 (:class:`DINOHead`).
* **The recipe** (Sec. 3.2 and Appendix): AdamW, lr ``0.0005 * batch / 256`` with linear warm-up and
  a cosine decay, weight decay cosine 0.04 -> 0.4 (none on biases and norms, :func:`param_groups`),
  gradient clipping to norm 3 *per parameter* (:func:`clip_gradients`), the last layer of the
  head frozen during the first epoch; all in :func:`train_dino`, per profile in :func:`dino_config`.

Using the backbone: :func:`study_backbone` (the course's cached DINO ViT for a profile and its world: the zoo's ``dino_vit``),
:func:`train_backbone` (train once and cache), :func:`load_dino_weights` (official and timm DINO
weights), :func:`extract_features` (class-token features), :func:`cls_attention` (last-layer
class-token attention per head), :func:`normalize`.

Where we differ from the official code (facebookresearch/dino), and why:

* Augmentations run batched on tensors with *per-image* random parameters (torchvision's v2
  transforms draw one set of parameters per call, i.e. the same crop for a whole batch): random
  resized crops through ``torchvision.ops.roi_align``, flips, colour jitter, grayscale, Gaussian
  blur and solarisation written as tensor ops. The blur's sigma scales with the crop size
  (official 0.1-2.0 px at 224 px).
* The colour jitter is applied in a fixed order (brightness, contrast, saturation, hue; torchvision
  shuffles the order per image).
* Our ViT keeps the course's ``models/vit.py`` (timm parameter names), so official DINO and timm
  DINO weights load into it (:func:`load_dino_weights`).
"""
from __future__ import annotations

from course_lib.selfsup.augment import MultiCropAugment
from course_lib.selfsup.backbone import (
    IMAGENET_MEAN, IMAGENET_STD, build_backbone, cls_attention, extract_features,
    load_dino_weights, normalize,
)
from course_lib.selfsup.dino import ARCHS, LOSSES, DINOConfig, DINOHead, DINOLoss, MultiCropNet
from course_lib.selfsup.training import (
    CODE_VERSION, cancel_last_layer_gradients, clip_gradients, cosine_schedule, dino_config, ema_update,
    param_groups, study_backbone, train_backbone, train_dino, world_config,
)

__all__ = [
    "ARCHS", "LOSSES", "CODE_VERSION", "IMAGENET_MEAN", "IMAGENET_STD", "DINOConfig", "DINOHead", "DINOLoss",
    "MultiCropAugment", "MultiCropNet", "cosine_schedule", "param_groups", "clip_gradients", "ema_update",
    "cancel_last_layer_gradients", "train_dino", "world_config", "dino_config", "train_backbone",
    "study_backbone", "build_backbone", "normalize", "load_dino_weights",
    "extract_features", "cls_attention",
]
