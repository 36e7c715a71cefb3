"""Frozen backbones: "Proper Reuse of Image Classification Features Improves Object Detection"
(Vasconcelos, Birodkar, Dumoulin; CVPR 2022, arXiv 2204.00484). The package of notebook 08.

The paper's question: a detector's backbone is usually initialised from an image classifier and
then *fine-tuned* on the detection data, or trained *from scratch* with a long schedule. What if
it is initialised from the classifier and then *frozen*?

* **Freezing** (Sec. 3): the backbone keeps its classification weights; only the components after
  it (FPN / NAS-FPN, RPN, box and mask heads, Cascade stages) are trained. "Frozen" means no
  gradient for the backbone's weights *and* its BatchNorm layers in inference mode (running
  statistics neither used from the batch nor updated): :class:`DetectionBackbone` with
  ``frozen=True`` keeps ``.body`` in ``eval()`` whatever ``train()`` is called with.
* **Capacity matters** (Tables 1 and 3): with an FPN (26% of the parameters trained when frozen)
  freezing costs 6.5 mAP on COCO; with NAS-FPN (40%) it is even (+0.1), with NAS-FPN + Cascade
  (54%) it gains (+0.7, +1.7 with JFT-300M pre-training). Our two capacities: ``low`` = an FPN
  (torchvision's ``FeaturePyramidNetwork``) with thin heads; ``high`` = a wider FPN followed by
  repeated top-down + bottom-up fusion cells (:class:`PyramidCell`, the role of NAS-FPN's
  repeated cells) and heavier RPN / box heads (``det.build_detector`` heads dict).
* **Rare classes gain most** (Table 5, LVIS): the frozen classifier features keep what the
  upstream task learnt about every class; fine-tuning on long-tailed detection data moves them
  towards the frequent classes. Measured by AP of the rare / common / frequent tiers.
* **Residual adapters** (Table 7; Rebuffi et al. 2017): small trained bottlenecks added residually
  after each frozen stage, ``x + W_up ReLU(W_down x)`` with ``W_up`` zero-initialised, so a fresh
  adapter is the identity and the detector starts from exactly the frozen features
  (:class:`ResidualAdapter`). +1.2 mAP over the frozen backbone in the paper.

What we build (all on the course's offline world, no downloads):

1. An **upstream classification task**: a *sibling* world of the detection world (same shapes,
   balanced classes, one object per image, more images; ImageNet's role) on which ``det.ConvBackbone(...).body`` is
   pre-trained as a classifier with ``course_lib.train.fit`` (cached with ``train.cached_model``).
2. The **detection task**: the calibrated detection world (``det.world_config``, Zipf-imbalanced,
   so rare / common / frequent classes exist), a smaller subset of it (COCO's / LVIS's role).
3. **Strategies** (:data:`STRATEGIES`): ``scratch`` (same architecture, re-initialised),
   ``finetune``, ``frozen``, ``adapters`` (frozen + residual adapters), at the capacities of
   :data:`CAPACITIES`, each trained with ``det.train_detector`` (same recipe for all, as in the
   paper: "frozen backbones hyper-parameters == non-frozen hyper-parameters").

Where we differ from the paper, and why: CPU scale (a 0.6M-parameter ResNet-style body at 64 px
instead of ResNet-101 / EfficientNet-B7 at 1024 px; a few epochs instead of 600); Faster / Mask
R-CNN with a "deeper pyramid + heavier heads" knob instead of NAS-FPN and Cascade R-CNN; training
memory on CPU is counted (bytes autograd keeps for the backward pass, gradients and AdamW
state: :func:`training_memory`) because process RSS is too coarse to compare runs.

Where things live:

``method.py``
    the contribution: :func:`freeze_`, :class:`DetectionBackbone` (frozen body, BatchNorm kept in
    eval mode), :class:`ResidualAdapter`, the capacities after the backbone (:data:`CAPACITIES`,
    :class:`Neck`, :class:`PyramidCell`) and :func:`build_strategy_detector`;
``experiment.py``
    :data:`PARAMS`, :data:`PAPER`, the upstream world and :func:`pretrain_body`, the timm trunk of
    the paper profile, :func:`detection_data`, :func:`run_experiments` (cache keys),
    :func:`count_parameters`, :func:`training_memory`, :func:`tables` and :func:`record_results`;
``figures.py``
    :func:`per_class_frame`, the data of the "AP by class frequency" plot and the widget;
``probes.py``
    :data:`PROBES`, :func:`scaling_probe`: two-arm headline claims at 1x / 2x / 4x detection epochs.
"""
from __future__ import annotations

from course_lib.papers.frozen_backbones import experiment, figures, method, probes
from course_lib.papers.frozen_backbones.experiment import (
    HEADLINE, MATCH_TOLERANCE, NOTEBOOK, PAPER, PAPER_URL, PARAMS, SINGLE_SEED_MARGIN, TITLE, DetData, Run,
    TimmResNetBody,
    count_parameters, detection_data, grid, load_timm_body, parameter_table, pretrain_body,
    pretrain_worlds, record_results, recorder, run_experiments, tables, train_cell, training_memory,
)
from course_lib.papers.frozen_backbones.figures import TAKEAWAYS, per_class_frame
from course_lib.papers.frozen_backbones.probes import PROBES, scaling_probe
from course_lib.papers.frozen_backbones.method import (
    CAPACITIES, STRATEGIES, STRATEGY_HELP, DetectionBackbone, Neck, PyramidCell, ResidualAdapter,
    build_backbone, build_strategy_detector, freeze_, reinitialize_,
)

__all__ = [
    "NOTEBOOK", "TITLE", "PAPER_URL", "PARAMS", "PAPER", "STRATEGIES", "STRATEGY_HELP", "CAPACITIES",
    "SINGLE_SEED_MARGIN", "ResidualAdapter", "PyramidCell", "Neck", "DetectionBackbone", "TimmResNetBody",
    "freeze_", "reinitialize_", "build_backbone", "build_strategy_detector", "count_parameters",
    "parameter_table", "training_memory", "pretrain_worlds", "detection_data", "pretrain_body",
    "load_timm_body", "grid", "Run", "DetData", "run_experiments", "tables", "per_class_frame", "recorder",
    "record_results", "TAKEAWAYS", "HEADLINE", "MATCH_TOLERANCE", "PROBES", "scaling_probe", "train_cell",
    "method", "experiment", "figures", "probes",
]
