"""Simple Copy-Paste: "Simple Copy-Paste is a Strong Data Augmentation Method for Instance
Segmentation" (Ghiasi, Cui, Srinivas, Qian, Lin, Cubuk, Le, Zoph; CVPR 2021, arXiv 2012.07177).
The package of notebook 10.

The paper's contribution, implemented from scratch in ``method.py`` (Sec. 3 and Fig. 2 of the paper):

1. *Two images, jittered independently.* Each training image gets its own random scale jitter
   (a resize by a factor drawn from a range, then a fixed-size crop that pads when the image got
   smaller, and a horizontal flip). Sec. 3, "Large Scale Jittering", Fig. 3:

   - standard scale jittering, SSJ: factor in [0.8, 1.25] (:data:`SSJ_RANGE`);
   - large scale jittering, LSJ: factor in [0.1, 2.0] (:data:`LSJ_RANGE`); smaller images are
     padded "with gray pixel values".

   :func:`scale_jitter` builds it from ``torchvision.transforms.v2`` (``ScaleJitter``,
   ``RandomCrop(pad_if_needed=True)``, ``RandomHorizontalFlip``, ``SanitizeBoundingBoxes``) plus
   :class:`RefreshFromMasks`. Used per sample by the dataset, it jitters the two images of a pair
   independently (Appendix, Table 11: LSJ on both is best).
2. *A random subset of objects of one image is pasted onto the other* at the same position
   (the randomness of the placement comes from the jitter). :func:`select_objects`: ``"random"``
   (the paper's default), ``"one"`` or ``"all"`` (the ablation of Table 10).
3. *Blending* (Sec. 3, "Blending Pasted Objects"): with the binary mask :math:`\\alpha` of the
   pasted objects (union of their masks), the new image is

   .. math::  I = I_1 \\, \\alpha + I_2 \\, (1 - \\alpha)

   (:math:`I_1` the pasted image, :math:`I_2` the main image), where :math:`\\alpha` may be
   smoothed by a Gaussian filter (:func:`blend_alpha`, knob ``sigma``). Table 10: blending does
   not matter (50.0 box AP with or without).
4. *Annotations are updated*: the pasted alpha is subtracted from the masks of the main image's
   objects (:math:`m_k \\leftarrow m_k \\wedge \\neg\\alpha`), fully occluded objects are removed,
   and the boxes of all objects are recomputed from their masks (:func:`masks_to_boxes`).

:class:`SimpleCopyPaste` does 2-4 on a whole batch (``batch_transform(images, targets)``, the
hook of ``detection.make_loader``): every image of the batch is a main image and takes its
objects from another image of the same batch.

Where we follow / differ from the public implementations (``/work/shared/notes/
official-implementations.md``; we read them, never copied them):

* *Pairing.* torchvision's reference (``references/detection/transforms.py``) pairs image ``i``
  with image ``i - 1`` of the batch; with a shuffled loader that is a random pair, and every image
  serves once as main and once as source. ``pairing="shift"`` (default) does the same,
  ``pairing="random"`` draws a random other image for each. Sources are always the images
  *before* pasting (no chains of pastes).
* *Subset.* torchvision draws ``n`` random indices and keeps the unique ones (a biased subset
  size); conradry/copy-paste-aug pastes ``round(pct * n)`` objects, which with its default
  ``pct = 0.1`` pastes *nothing* for images with fewer than 10 objects (a trap). Our ``"random"``
  draws the subset size uniformly in ``1..n``, then that many distinct objects; with
  ``fraction=f`` it pastes ``max(1, round(f * n))`` objects instead (never zero).
* *Hard masks, soft image.* Blending changes the image only; the pasted masks and the occlusion
  are computed from the hard (binary) alpha, so masks stay binary (conradry does the same;
  torchvision's blur of a boolean alpha acts as a small dilation of the occluder).
* *Boxes* use the course's pixel-edge convention: a mask covering columns ``x0..x1`` has box
  ``x0, x1 + 1`` (``torchvision.ops.masks_to_boxes`` gives ``x1``); the world's boxes agree.

Where things live:

``method.py``
    the contribution: :func:`scale_jitter` (SSJ / LSJ), :func:`select_objects`,
    :func:`blend_alpha`, :func:`paste`, :func:`refresh_target`, :func:`masks_to_boxes` and the
    batch transform :class:`SimpleCopyPaste`;
``experiment.py``
    :data:`PARAMS`, :data:`PAPER`, :func:`load_data`, the runs (:class:`RunSpec`, :func:`plan`,
    :func:`train_run` with its cache key, :func:`run_experiments`), :func:`tables` and
    :func:`record_results`, the headline claims' scaling probes (:func:`scaling_probe`);
``figures.py``
    :func:`jittered_pair`, :func:`paste_demo` / :func:`draw_paste_demo`, :func:`augmented_batch` /
    :func:`draw_gallery`.
"""
from __future__ import annotations

from course_lib.papers.copy_paste import experiment, figures, method
from course_lib.papers.copy_paste.experiment import (
    AUG_LABELS, AUGMENTATIONS, CODE_VERSION, NOTEBOOK, PAPER, PAPER_URL, PARAMS, PROBES, SINGLE_RUN_MARGIN,
    TAKEAWAYS, TITLE, CPData, Run, RunSpec, augmentation, load_data, plan, record_results, recorder,
    run_experiments, scaling_probe, tables, train_run,
)
from course_lib.papers.copy_paste.figures import (
    augmented_batch, draw_gallery, draw_paste_demo, jittered_pair, paste_demo,
)
from course_lib.papers.copy_paste.method import (
    LSJ_RANGE, PAD_GRAY, PAIRINGS, PASTE_MODES, SSJ_RANGE, RefreshFromMasks, SimpleCopyPaste, blend_alpha,
    from_rectangles, gaussian_kernel_size, masks_to_boxes, paste, refresh_target, scale_jitter,
    select_objects,
)

__all__ = [
    "AUGMENTATIONS", "AUG_LABELS", "CODE_VERSION", "LSJ_RANGE", "NOTEBOOK", "PAD_GRAY", "PAIRINGS", "PAPER",
    "PAPER_URL", "PARAMS", "PASTE_MODES", "SINGLE_RUN_MARGIN", "SSJ_RANGE", "TAKEAWAYS", "TITLE", "CPData",
    "RefreshFromMasks", "Run", "RunSpec", "SimpleCopyPaste", "augmentation", "augmented_batch",
    "blend_alpha", "draw_gallery", "draw_paste_demo", "from_rectangles", "gaussian_kernel_size",
    "jittered_pair", "load_data", "masks_to_boxes", "paste", "paste_demo", "plan", "record_results",
    "recorder", "refresh_target", "run_experiments", "scale_jitter", "select_objects", "tables",
    "train_run", "method", "experiment", "figures", "PROBES", "scaling_probe",
]
