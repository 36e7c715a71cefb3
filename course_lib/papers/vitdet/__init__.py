"""ViTDet: "Exploring Plain Vision Transformer Backbones for Object Detection"
(Li, Mao, Girshick, He; ECCV 2022, arXiv 2203.16527). The package of notebook 07.

The paper's question: can a *plain*, non-hierarchical ViT (one stride-16 feature map, global
attention, pretrained as a classifier or a masked autoencoder) be a good detection backbone,
if it is adapted **only at fine-tuning time**? Its answer has three parts, written from
scratch on the course's ViT (``models/vit.py``; timm parameter names, unchanged):

* **Simple feature pyramid** (Sec. 3, Fig. 2c, Table 1): build the pyramid from the *last* map
  only, in parallel: scale 4 (two stride-2 deconvolutions with LayerNorm + GELU between),
  2 (one deconvolution), 1 (identity) and 1/2 (max-pool), each followed by a 1x1 and a 3x3 conv
  with LayerNorm (:class:`SimpleFeaturePyramid`). Compared with the FPN-like designs of Fig. 2:
  (a) a ViT artificially cut into 4 stages, each stage's map rescaled, then FPN's top-down path
  (:class:`FPNPyramid` ``"fpn_4stage"``), (b) the same FPN from the last map only
  (``"fpn_lastmap"``), and a single map without pyramid (:class:`SingleScale`).
* **Backbone adaptation** (Sec. 3, Table 2): the pretrained global attention becomes *window
  attention* (non-overlapping windows, no shifting; the map is zero-padded to a multiple of the
  window) in most blocks, with a few *propagation* blocks spread evenly: either global attention
  (ViT-B: blocks 2, 5, 8, 11 of 12) or a residual convolutional block (zero-initialised last
  norm, so it starts as the identity) after those blocks (:class:`ViTDetBackbone`). Optional
  decomposed relative position bias (MViTv2; zero-initialised) in the attention.
* **Pretraining** (Table 4): MAE (He et al. 2022), a masked autoencoder: 75% of the patches are
  dropped at random, the encoder sees only the visible ones, a light decoder with mask tokens
  predicts the per-patch *normalised* pixels, and the MSE is taken on the masked patches only
  (:class:`MaskedAutoencoder`); versus supervised classification and random initialisation.

The absolute position embedding is learnt at the pretraining grid and resized (bicubic, without
the class-token entry) to the detection grid (:func:`resize_pos_embed`), as ViTDet does when it
fine-tunes a 224 px model at 1024 px.

Scale. The paper: ViT-B/L (86M/307M), 1024 px COCO, patch 16 (a 64x64 grid), window 14 (= the
224 px pretraining grid), 100 epochs. Ours (``benchmarks/calibrate_vitdet.py``): a 4-block ViT of
width 128 pretrained at 32 px and fine-tuned at 64 px on the course's detection world with patch
8, i.e. a 4x4 pretraining grid and an 8x8 detection grid, window 2 (a window sees 1/16 of the
image, as the paper's 14x14 windows see 1/21 of its 64x64 grid; window 4 = the pretraining grid
would see a quarter, and propagation would have little to carry), global propagation in blocks 1 and 3 (the last block of each of 2 subsets, the
paper's "evenly spread" rule). The pyramid levels then have strides 2, 4, 8, 16 pixels.

Where we differ from the official code (detectron2 ``modeling/backbone/vit.py``,
``projects/ViTDet``), and why: no p6 level (the 1/2 map is 4x4 already); no layer-wise lr decay
(4 blocks); Mask R-CNN with slim heads (box and mask AP, as the paper's tables; ``masks=False``
gives Faster R-CNN, box AP only); scale-jitter augmentation is not used; far fewer epochs.

Where things live:

``method.py``
    the contribution: windows (:func:`window_partition`, :func:`window_unpartition`,
    :class:`WindowAttention`), the propagation blocks (:func:`evenly_spaced_blocks`,
    :class:`ConvPropagation`), position embeddings (:func:`resize_pos_embed`,
    :func:`add_decomposed_rel_pos`), :class:`ViTDetBlock`, :class:`ViTDetBackbone`, the pyramids
    of Table 1 (:data:`PYRAMIDS`, :class:`SimpleFeaturePyramid`, :class:`FPNPyramid`,
    :class:`SingleScale`) and :func:`build_backbone`;
``pretraining.py``
    MAE pretraining of the plain backbone (Table 4): :func:`patchify`, :func:`random_masking`,
    :func:`mae_loss`, :class:`MaskedAutoencoder`;
``experiment.py``
    :data:`PARAMS`, :data:`PAPER`, the table rows (:class:`Variant`, :func:`variants`),
    :func:`load_data`, the cached pretraining (:func:`train_mae`, :func:`train_supervised`) and
    detectors (:func:`build_detector`, :func:`train_detector`; the R-CNN, its training and COCO
    AP come from the shared ``course_lib.detection``), :func:`run_experiments`, :func:`tables`,
    :func:`record_results`, and the size / FLOPs table (:func:`complexity`, :func:`size_table`);
``figures.py``
    :func:`query_attention` and :func:`plot_query_attention` (window vs. global attention);
``probes.py``
    :data:`PROBES`, :func:`scaling_probe`: the headline claims at 1x / 2x / 4x detection epochs.
"""
from __future__ import annotations

from course_lib.papers.vitdet import experiment, figures, method, pretraining, probes
from course_lib.papers.vitdet.experiment import (
    CODE_VERSION, HEADLINE, MATCH_TOLERANCE, NOTEBOOK, PAPER, PAPER_URL, PARAMS, ROWS, SINGLE_RUN_MARGIN,
    STUDY_ARCH, STUDY_ROWS, TABLE_ROWS, TAKEAWAYS, TITLE, VIT_B_ARCH,
    Data, Run, Variant, anchor_sizes, build_detector, build_variant, complexity, load_data, pretrain_vit,
    record_results, recorder, run_experiments, size_table, tables, train_detector, train_mae,
    train_supervised, variants, vit_kwargs,
)
from course_lib.papers.vitdet.figures import plot_query_attention, query_attention
from course_lib.papers.vitdet.probes import PROBES, scaling_probe
from course_lib.papers.vitdet.method import (
    PYRAMIDS, ConvPropagation, FPNPyramid, SimpleFeaturePyramid, SingleScale, ViTDetBackbone, ViTDetBlock,
    WindowAttention, add_decomposed_rel_pos, build_backbone, evenly_spaced_blocks, resize_pos_embed,
    window_partition, window_unpartition,
)
from course_lib.papers.vitdet.pretraining import MaskedAutoencoder, mae_loss, patchify, random_masking

__all__ = [
    "NOTEBOOK", "TITLE", "PAPER_URL", "CODE_VERSION", "PARAMS", "PAPER", "PYRAMIDS", "SINGLE_RUN_MARGIN",
    "STUDY_ARCH", "VIT_B_ARCH", "ROWS", "STUDY_ROWS", "TABLE_ROWS", "HEADLINE", "MATCH_TOLERANCE",
    # method
    "window_partition", "window_unpartition", "evenly_spaced_blocks", "resize_pos_embed",
    "add_decomposed_rel_pos", "WindowAttention", "ConvPropagation", "ViTDetBlock", "ViTDetBackbone",
    "SimpleFeaturePyramid", "FPNPyramid", "SingleScale", "build_backbone",
    # pretraining
    "patchify", "random_masking", "mae_loss", "MaskedAutoencoder",
    # experiment
    "Variant", "variants", "vit_kwargs", "build_variant", "anchor_sizes", "Data", "load_data", "pretrain_vit",
    "train_mae", "train_supervised", "Run", "build_detector", "train_detector", "run_experiments", "tables",
    "recorder", "record_results", "TAKEAWAYS", "complexity", "size_table",
    # figures
    "query_attention", "plot_query_attention",
    # scaling probes of the headline claims
    "PROBES", "scaling_probe", "probes",
    "method", "pretraining", "experiment", "figures",
]
