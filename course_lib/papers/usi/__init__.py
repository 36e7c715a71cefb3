"""USI: "Solving ImageNet: a Unified Scheme for Training any Backbone to Top Results"
(Ridnik et al., 2022, arXiv 2204.03475). Everything notebook 02 needs.

The paper's contribution is a *recipe*, not an architecture: one training configuration
(Table 1) applied unchanged to CNNs, transformers, MLP-only and mobile networks, whose key
ingredient is knowledge distillation (KD) from a strong teacher. Implemented here
(``method.py``):

* **The USI loss** (eq. 2), as the official code (Alibaba-MIIL/Solving_ImageNet) has it::

      L = CE(p_s, y_mix) + α_kd · KL(p_t(τ) ‖ p_s(τ))

  ``CE`` is the soft-target cross-entropy against the mixup/cutmix target, the KL term has
  ``reduction="batchmean"``, ``α_kd = 5`` is *added* to the CE (there is no ``1 - α``), and the
  temperature is ``τ = 1`` with no ``τ²`` factor (Sec. 3.6.2: vanilla softmax probabilities
  work best). ``α_kd = ∞`` ("KD only", Table 6) drops the CE term, as the official
  ``--use_kd_only_loss`` flag: the loss is then ``kd_only_weight · KL`` with the default
  ``α_kd = 5`` still scaling the KL (official ``loss = alpha_kd * kl_div(...)``; with gradient
  clipping the scale matters). The teacher runs in eval mode, without gradients, on the *same* mixed
  batch the student sees (``train.fit`` hands the criterion the mixed inputs).
* **The recipe** (Table 1), scaled down: AdamW, lr 2e-3, weight decay 2e-2, warm-up then
  cosine decay (the code; the paper's table says one-cycle), mixup 0.8 / cutmix 1.0, no label
  smoothing (the teacher's soft labels replace it), the same for every student.
  :func:`recipe` builds it; nothing in it depends on the student.

The experiment (``experiment.py``): **students of four families** (Table 2): a CNN (ResNet), a
ViT, an MLP-only network (ResMLP, timm's ``MlpMixer`` with ResMLP blocks) and a mobile network
(MobileNetV3), all built for 32 px images by :func:`build_student`; USI's own view of the world
(:func:`world_config`: several objects, the label names the largest); and the runs of Table 2
(each family with and without KD), Table 6 (α_kd), Table 7 (τ) and Table 4 (a CNN vs. a
transformer teacher), with the "paper vs. ours" recorder. ``figures.py`` holds the Figure 2
analog (images on which the teacher's soft prediction says more than the hard label). Data,
transforms and evaluation helpers are the shared layer ``course_lib.classification``.
"""
from __future__ import annotations

from .experiment import (
    CODE_VERSION,
    FAMILIES,
    FAMILY_NAMES,
    NOTEBOOK,
    PAPER,
    PAPER_URL,
    PARAMS,
    PROBES,
    TAKEAWAYS,
    TITLE,
    Run,
    ablation_table,
    build_student,
    build_teacher,
    load_data,
    parse_list,
    record_results,
    recorder,
    run_experiments,
    scaling_probe,
    select,
    table2,
    train_student,
    train_teacher,
    world_config,
)
from .figures import (
    entropy_by_objects,
    informative_examples,
    label_noise_examples,
    teacher_fixes,
    teacher_soft_labels,
)
from .method import USILoss, kd_kl, recipe, soft_cross_entropy

__all__ = [
    "PROBES", "scaling_probe",
    "CODE_VERSION", "FAMILIES", "FAMILY_NAMES", "NOTEBOOK", "PAPER", "PAPER_URL", "PARAMS", "TAKEAWAYS", "TITLE", "Run",
    "ablation_table", "build_student", "build_teacher", "load_data", "parse_list", "record_results",
    "recorder", "run_experiments", "select", "table2", "train_student", "train_teacher", "world_config",
    "entropy_by_objects", "informative_examples", "label_noise_examples", "teacher_fixes",
    "teacher_soft_labels",
    "USILoss", "kd_kl", "recipe", "soft_cross_entropy",
]
