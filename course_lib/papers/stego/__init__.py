"""STEGO: unsupervised semantic segmentation by distilling feature correspondences.

Hamilton, Zhang, Hariharan, Snavely, Freeman — ICLR 2022, https://arxiv.org/abs/2203.08414
(official code: ``mhamilton723/STEGO``; the facts we follow are in the course notes).
Everything notebook 11 needs.

A *frozen* self-supervised ViT (DINO) gives a feature vector per patch. STEGO trains only a
small segmentation head ``S`` on top of it, so that the correlations of the head's low-dimensional
codes reproduce the correlations of the backbone's features (all in ``method.py``):

* feature correspondence (eq. 3, :func:`correlation`), for images ``x``, ``y`` with feature maps
  ``f``, ``g`` and patches ``(h, w)``, ``(i, j)``::

      F_hwij = <f_hw, g_ij> / (|f_hw| |g_ij|)          (cosine similarity)

* the same for the codes ``s = S(f)``, ``t = S(g)``: ``S_hwij`` (code correspondence; the head
  is :class:`SegmentationHead`);
* the correspondence distillation loss (eq. 4, with the zero-clamp of Sec. 3.2,
  :func:`correspondence_loss`)::

      L_corr(x, y, b) = - sum_hwij (F^SC_hwij - b) max(S_hwij, 0)

  ``F^SC`` is F after the "pointwise" spatial centring (:func:`pointwise_centre`: subtract, for
  each patch of ``x``, its mean over the patches of ``y``, then add the global mean back); ``b``
  shifts the target so that weak correspondences push codes apart. Only ``S`` gets gradients;
  ``F`` is a constant.
* the full loss (eq. 5, :func:`stego_loss`) sums three kinds of image pairs::

      L = l_self L_corr(x, x, b_self) + l_knn L_corr(x, x_knn, b_knn) + l_rand L_corr(x, x_rand, b_rand)

  with ``x_knn`` one of the image's nearest neighbours in pooled backbone features
  (:func:`knn_indices`, attractive signal) and ``x_rand`` a random other image (repulsive
  signal). :func:`train_run` trains the head and, alongside, the probes on its detached codes.

Evaluation as the paper (``probes.py``): a *cluster probe* (cosine to learnable centres,
minimising ``-sum onehot * cos``) and a *linear probe* (1x1 convolution, trained with labels) on
detached codes, Hungarian matching of clusters to classes over the whole split, unsupervised
accuracy / mIoU; and a dense CRF (mean field, gaussian + bilateral kernels) as refinement
(``crf.py``).

Everything here works on cached backbone features ``(N, D, h, w)`` (``data.py``): the backbone
is frozen, so computing its features once is exactly what the official training computes every
step. The backbone itself is the course's DINO ViT (the zoo's ``dino_vit``) or real DINO weights, from the shared
self-supervised layer ``course_lib.selfsup``. ``experiment.py`` holds the parameters
(``PARAMS``), the paper's numbers, Table 1, Table 2's ablations and the "paper vs. ours" record;
``figures.py`` the plots.
"""
from __future__ import annotations

from .crf import CRF_KERNEL_ELEMENTS, OFFICIAL_CRF, dense_crf
from .data import (
    IMAGENET_MEAN, IMAGENET_STD, VOC_CLASSES, Backbone, SegData, five_crop, voc_segdata,
    world_segdata, world_semantic,
)
from .experiment import (
    METRICS, NOTEBOOK, PAPER, PAPER_URL, PARAMS, STUDY_B, Setup, crf_kwargs, derive, load_backbone, load_data,
    PROBES, TAKEAWAYS, prepare, record_results, recorder, run_config, run_experiments, scaling_probe, summary,
    tables,
)
from .figures import (
    class_predictions, cluster_to_class, colorize, correspondence_maps, plot_correspondences, plot_segmentations,
)
from .method import (
    OFFICIAL_LOSS, LossConfig, Run, RunConfig, SegmentationHead, correlation, correspondence_loss, derangement,
    knn_indices, pointwise_centre, pooled, sample, stego_loss, train_run,
)
from .probes import (
    ClusterProbe, confusion, evaluate, hungarian, kmeans_baseline, linear_probe_loss, matched_confusion, predict,
    scores,
)
