"""DeiT: "Training data-efficient image transformers & distillation through attention"
(Touvron et al., ICML 2021, arXiv 2012.12877). Everything notebook 03 needs.

The paper's contribution, implemented here from scratch (``method.py``):

* **Soft distillation** (Sec. 4, "Soft distillation"):
  ``L = (1 - λ) CE(ψ(Z_s), y) + λ τ² KL(ψ(Z_s / τ), ψ(Z_t / τ))``.
  The official code sums the KL over batch and classes and divides by ``B * C``
  (``Z_s.numel()``), not by the batch size; :func:`soft_distillation_loss` does the same.
* **Hard-label distillation** (Sec. 4, "Hard-label distillation"):
  ``L = ½ CE(ψ(Z_s), y) + ½ CE(ψ(Z_s), y_t)`` with ``y_t = argmax_c Z_t(c)``
  (:func:`hard_distillation_loss`; the ½ / ½ is ``alpha = 0.5``).
* **The distillation token** (Sec. 4, "Distillation token"): a second learned token after the
  class token; the class head is trained on the label, the distillation head on the teacher
  (:class:`DistillationLoss` routes the two heads). At test time the two heads' softmax-free
  logits are averaged (the official code's eval forward; our
  ``VisionTransformer(distilled=True)`` in ``course_lib/models/vit.py`` does it in ``eval()``
  mode).
* The teacher runs in eval mode, without gradients, on the *same* (mixed) batch the student
  sees: ``train.fit`` hands the criterion the mixed inputs.

The experiments of the notebook (Tables 1-4 at small scale) are driven from ``experiment.py``
(parameters, data, teacher and students, runs, tables, the "paper vs. ours" recorder), the
Table 3 bars from ``figures.py``, so the notebook holds only the story and the plots. The
classification data, transforms, the calibrated world view and the evaluation helpers are the
shared layer ``course_lib.classification``.
"""
from __future__ import annotations

from course_lib.classification import (
    ClassificationData,
    accuracy,
    eval_transform,
    head_logits,
    targets_of,
    train_transform,
    world_config,
)
from course_lib.models import create_vit

from .experiment import (
    CODE_VERSION,
    NOTEBOOK,
    PAPER,
    PAPER_URL,
    PARAMS,
    PROBES,
    STUDENTS,
    TAKEAWAYS,
    TEACHERS,
    TITLE,
    Run,
    accuracies,
    build_student,
    build_teacher,
    disagreement_table,
    load_data,
    param_counts,
    record_results,
    recorder,
    run_experiments,
    scaling_probe,
    train_student,
    train_teacher,
)
from .figures import plot_table3
from .method import DistillationLoss, hard_distillation_loss, soft_distillation_loss

__all__ = [
    "PROBES", "scaling_probe",
    "ClassificationData", "accuracy", "eval_transform", "head_logits", "targets_of", "train_transform",
    "world_config", "create_vit",
    "CODE_VERSION", "NOTEBOOK", "PAPER", "PAPER_URL", "PARAMS", "STUDENTS", "TAKEAWAYS", "TEACHERS", "TITLE", "Run",
    "accuracies", "build_student", "build_teacher", "disagreement_table", "load_data", "param_counts",
    "record_results", "recorder", "run_experiments", "train_student", "train_teacher",
    "plot_table3",
    "DistillationLoss", "hard_distillation_loss", "soft_distillation_loss",
]
