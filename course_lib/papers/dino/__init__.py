"""DINO: "Emerging Properties in Self-Supervised Vision Transformers"
(Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin; ICCV 2021, arXiv 2104.14294).
Notebook 06.

The problem: can a Vision Transformer learn good features without labels, and what does it
learn? DINO is *self-distillation with no labels*: a student network ``g_s`` is trained to predict
the output of a teacher network ``g_t`` of the same architecture on another view of the same
image; the teacher is an exponential moving average of the student. Nothing forbids the trivial
solution (every image gives the same output); two cheap operations on the teacher's output avoid
it, and the features that come out segment objects in their attention maps.

The method lives one floor down, in ``course_lib.selfsup`` (notebooks 05 CLEAR and 11 STEGO use
the same backbone, and paper packages may not import each other). Where each equation lives:

* **Softmax outputs with temperatures** (eq. 1): ``P_s(x) = softmax(g_s(x) / τ_s)``,
  ``τ_s = 0.1``; the teacher is *sharpened* with a lower ``τ_t`` (0.04, optionally warmed up
  from a lower value: the official README recipe goes 0.04 -> 0.07) and *centred*:
  ``P_t(x) = softmax((g_t(x) - c) / τ_t)``: ``selfsup.DINOLoss`` (``selfsup/dino.py``).
* **The loss** (eq. 2, and eq. 3 with multi-crop): the cross-entropy ``H(P_t, P_s) = -Σ P_t log P_s``
  summed over every (teacher view, student view) pair except identical views, averaged over
  the pairs (``selfsup.DINOLoss``; Algorithm 1 of the paper is the two-view case).
* **Centering** (Sec. 3.1, eq. 4): ``c <- m c + (1 - m) mean_batch g_t(x)`` with ``m = 0.9``,
  updated *after* the loss of the step (``DINOLoss.update_center``). Centering prevents one
  dimension from dominating, sharpening prevents the uniform output; each alone collapses
  (paper Fig. 7: :func:`run_ablations`, :func:`plot_collapse`).
* **The momentum teacher** (Sec. 3.1): ``θ_t <- λ θ_t + (1 - λ) θ_s`` after every student step,
  ``λ`` following a cosine from 0.996 to 1 over the iterations (``selfsup.ema_update`` in the loop
  ``selfsup.train_dino``, ``selfsup/training.py``). Without it (``λ = 0``: the teacher is the
  current student) DINO collapses (paper Table 7, row 2).
* **Multi-crop** (Sec. 3.1): two global views and several small local views per image; only the
  global views go through the teacher, the student sees all of them
  (``selfsup.MultiCropAugment``, ``selfsup/augment.py``; ``selfsup.MultiCropNet`` runs the
  backbone once per group of same-resolution crops, ``forward_features(x, any_size=True)`` of ``models/vit.py`` interpolates the
  position embeddings for the local crops).
* **The projection head** (Sec. 3.1, "Network architecture"): a 3-layer MLP (GELU) to a
  bottleneck, L2 normalisation, then a weight-normalised linear layer without bias to ``K``
  outputs whose norm ``g`` is fixed at 1 (``selfsup.DINOHead``).
* **The recipe** (Sec. 3.2 and Appendix): AdamW, lr ``0.0005 * batch / 256`` with linear warm-up and
  a cosine decay, weight decay cosine 0.04 -> 0.4 (none on biases and norms), gradient clipping
  to norm 3 *per parameter*, the last layer of the head frozen during the first epoch
  (``selfsup.train_dino``; per profile ``selfsup.dino_config``).

This package holds the paper's study of that backbone:

``method.py``
    the ablation variants of Table 7 and Fig. 7 (:data:`ABLATIONS`); evaluation (Sec. 4) by
    weighted k-NN (:func:`knn_classifier`, 20 neighbours, votes ``exp(sim / 0.07)``) and a linear
    probe (:func:`linear_probe`) on the frozen class-token features; the last-layer class-token
    attention (``selfsup.cls_attention``) thresholded to keep 60% of its mass
    (:func:`attention_masks`) and compared to ground-truth object masks with the Jaccard index
    (:func:`jaccard`; paper Table "Segmentation from supervised versus DINO": random 22.0,
    supervised 27.3, DINO 45.9 for ViT-S/16 on PASCAL VOC12 val); the random and supervised
    baselines (:func:`random_backbone`, :func:`train_supervised`).
``experiment.py``
    the notebook's parameters, the paper's numbers (:data:`PAPER`), the data (the offline world,
    or Imagenette + PASCAL VOC12), :func:`evaluate_backbone`, :func:`run_ablations`, the photos and
    the "paper vs. ours" record.
``figures.py``
    training curves, collapse, heads, masks, Jaccard, photo attention, the explorer's figure.

Where we differ from the official code (facebookresearch/dino), and why: see
``course_lib.selfsup`` (batched per-image augmentations, fixed colour-jitter order, our ViT with
timm parameter names so that official and timm DINO weights load into it).
"""
from __future__ import annotations

from course_lib.papers.dino.experiment import (
    NOTEBOOK, NOTEBOOK_RECIPE, NOTEBOOK_WORLD, PAPER, PAPER_URL, PARAMS, PHOTOS, PROBES, SEED_ARMS, TAKEAWAYS, TITLE, DINOData,
    config_from_params, evaluate_backbone, imagenette_voc_data, load_data, notebook_config, photos,
    record_results, recorder, run_ablations, arm_model, run_seeds, scaling_probe, seed_table, world_data,
)
from course_lib.papers.dino.figures import (
    explorer_figure, plot_collapse, plot_heads, plot_jaccard, plot_masks, plot_photo_attention, plot_training,
)
from course_lib.papers.dino.method import (
    ABLATIONS, attention_masks, foreground_masks, jaccard, knn_classifier, linear_probe, random_backbone,
    segmentation_scores, train_supervised,
)
# the backbone, its loss and its training (course_lib.selfsup), under the names notebook 06 uses
from course_lib.selfsup import (
    ARCHS, CODE_VERSION, IMAGENET_MEAN, IMAGENET_STD, DINOConfig, DINOHead, DINOLoss, MultiCropAugment,
    MultiCropNet, build_backbone, clip_gradients, cls_attention, cosine_schedule, dino_config, ema_update,
    extract_features, load_dino_weights, normalize, param_groups, study_backbone, train_backbone,
    train_dino, world_config,
)

__all__ = [
    "NOTEBOOK", "PAPER", "PAPER_URL", "TITLE", "PARAMS", "ARCHS", "CODE_VERSION", "DINOConfig", "DINOHead",
    "DINOLoss", "MultiCropAugment", "MultiCropNet", "cosine_schedule", "ema_update", "clip_gradients",
    "param_groups", "train_dino", "world_config", "dino_config", "train_backbone", "study_backbone",
    "load_dino_weights", "build_backbone", "extract_features", "normalize", "IMAGENET_MEAN",
    "IMAGENET_STD", "cls_attention", "ABLATIONS", "knn_classifier", "linear_probe", "attention_masks", "jaccard",
    "foreground_masks", "random_backbone", "train_supervised", "segmentation_scores", "config_from_params",
    "NOTEBOOK_RECIPE", "NOTEBOOK_WORLD", "notebook_config", "SEED_ARMS", "arm_model", "run_seeds", "seed_table", "PROBES", "scaling_probe",
    "load_data", "DINOData", "world_data", "imagenette_voc_data", "evaluate_backbone", "run_ablations",
    "PHOTOS", "photos", "recorder", "record_results", "TAKEAWAYS", "plot_training", "plot_collapse",
    "plot_heads", "plot_masks", "plot_jaccard", "plot_photo_attention", "explorer_figure",
]
