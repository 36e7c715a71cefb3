"""ALBEF: "Align before Fuse: Vision and Language Representation Learning with Momentum Distillation"
(Li, Selvaraju, Gotmare, Joty, Xiong, Hoi; NeurIPS 2021, arXiv 2107.07651): notebook 01.

The problem: vision-language models fuse image and word features with cross-attention, but
the two encoders' features live in different spaces, so the fusion must learn to align them
while it learns to reason; and the web pairs they train on are noisy. The idea: **align**
the unimodal features with an image-text contrastive loss *before* fusing them, mine hard
negatives for image-text matching from that contrastive similarity, and learn from a
**momentum model**'s pseudo-targets (momentum distillation) instead of the noisy one-hot
targets alone.

The model (paper Sec. 3.1, Fig. 1), from scratch:

* **image encoder**: the course ViT (``models/vit.py``); its tokens ``{v_cls, v_1, ..., v_N}``
  after the final norm are the image embedding;
* **text encoder**: word + position embeddings and the first ``text_layers`` transformer layers
  (self-attention, FFN) over a WordPiece tokenizer trained offline on the training captions
  (the ``tokenizers`` library; :class:`CaptionTokenizer`) -> ``{w_cls, w_1, ..., w_L}``;
* **multimodal encoder**: the remaining ``fusion_layers`` layers of the same text transformer,
  each self-attention -> cross-attention to *all* image tokens -> FFN (the official split of
  BERT-base: layers 0-5 text only, 6-11 fusion).

The losses, as the official code computes them (``models/model_pretrain.py``):

* **ITC** (eq. 1-2): ``s(I, T) = g_v(v_cls)^T g'_w(w'_cls)``, softmax over the texts of the batch
  and of a *queue* of the most recent momentum text features (and the other way round), divided by
  a learnable temperature (init 0.07, clamped to [0.001, 0.5] at every step); the queues are filled
  by the momentum encoders *after* the loss; the momentum update runs *before* the momentum forward.
* **ITM** (eq. 4): a linear layer on the multimodal [CLS] token, matched vs. not matched; for every
  pair one negative text and one negative image sampled from the in-batch contrastive similarity
  (softmax, diagonal set to zero: "contrastive hard negative mining"), so 3B pairs per batch.
* **MLM** (eq. 3): 15% of the text tokens masked (80% [MASK], 10% a random word, 10% unchanged),
  predicted from the image and the unmasked words through the multimodal encoder.
* **Momentum distillation** (eq. 6-7): the momentum model's softmax similarities (ITC) and its
  masked-token predictions (MLM) are pseudo-targets mixed with the one-hot targets,
  ``(1 - alpha) * H(y, p) + alpha * H(q, p)``; alpha 0.4, warmed up linearly over the first epoch.
* The full pre-training objective (eq. 5): ``L = L_itc + L_mlm + L_itm``.

Retrieval follows the official ``Retrieval.py``: cosine similarity of the ITC features gives a
shortlist of the top ``k_test`` candidates, the ITM head's "match" logit re-ranks them, and
text / image R@1/5/10 are read from the ranks (an image's rank is that of its best caption).

Where we differ from the official code, and why:

* *Sizes and data.* A 64-wide transformer on 32 px images of the course's offline world, whose
  renderer writes one caption per image ("a large red circle to the left of a small blue square
  on grass"); pre-training "web" pairs are corrupted on purpose (:func:`corrupt_captions`: a
  fraction of the captions replaced by another image's caption or with wrong colours / shapes),
  because momentum distillation exists for noisy web pairs. The official model is ViT-B/16 +
  BERT-base pre-trained on 4M-14M web pairs. The ``paper`` profile reads COCO (pre-training) and
  Flickr30k (fine-tuning and test) in the official json format.
* *Pre-norm layers trained from scratch* (like our ViT) where ALBEF uses post-norm BERT layers
  initialised from BERT-base: a pre-norm stack trains reliably from scratch at this size.
* *Special tokens.* The official masking excludes only [PAD] and [CLS] (so [SEP] can be masked)
  and draws random replacements from the whole vocabulary; we never mask any special token and
  draw replacements from the ordinary words only (the course's rule: "never mask special tokens").
* *No image augmentation*: the official random crop and horizontal flip would contradict the
  captions' positions ("to the left of").
* *Recipe for a few hundred steps instead of ~100k*: momentum 0.95 (official 0.995: over our
  ~400 steps the momentum model would stay near its random init, and its pseudo-targets and
  queue features would be noise), queue 256 (8 batches of 32), lr 3e-3; the linear layers are
  initialised with std ``0.02 * sqrt(768 / D)`` instead of BERT's 0.02 (see
  :meth:`ALBEF._init_weights`). All measured in ``benchmarks/calibrate_albef.py``.
* *Table 1 protocol.* The paper pre-trains each variant, fine-tunes it for retrieval (ITC + ITM)
  and reports the mean of R@1/5/10 on Flickr30k. We do the same at small scale: pre-train on the
  (clean or noisy) train split, fine-tune every variant with the same short ITC + ITM_hard recipe
  (alpha 0: no momentum distillation downstream) on the clean val split, test on the test split.
  A model pre-trained without ITC has no trained projections; the fine-tuning gives them to every
  variant alike.


Where things live in this package:

``tokenizer.py``
    :class:`CaptionTokenizer`, the BERT-style tokenizer trained offline on the captions.
``method.py``
    the contribution: :class:`ALBEF` (image, text and multimodal encoders, momentum copies,
    ITC queues; eq. 5 in :meth:`ALBEF.forward`), the losses and their pieces (ITC eq. 1-2,
    MLM eq. 3 with the 80/10/10 masking, ITM eq. 4 with contrastive hard negatives, momentum
    distillation eq. 6-7) and Table 1's loss variants (:data:`VARIANTS`, :class:`ALBEFConfig`).
``data.py``
    image-text pairs, the corrupted "web" captions, the world's splits and the official json
    files of COCO / Flickr30k.
``runs.py``
    pre-training and fine-tuning (cached per variant), the official retrieval evaluation, the
    ITM plateau probe, the momentum model's pseudo-targets (Fig. 11) and Grad-CAM.
``experiment.py``
    the notebook's parameters (``PARAMS``), the paper's numbers, the recipe per profile,
    Table 1's runs and table, the "paper vs. ours" record.
``figures.py``
    plots and the retrieval widget.
"""
from __future__ import annotations

from .data import (REAL_LAYOUT, ALBEFData, PairData, corrupt_captions, pre_caption, real_data,
                   world_config, world_data)
from .experiment import (HEADLINE, HEADLINE_VARIANTS, NOTEBOOK, PAPER, PAPER_URL, PARAMS, PROBES, TAKEAWAYS, TITLE,
                         albef_config, config_from_params, fixed_inputs, grid, load_data, record_results, recorder,
                         run_table1, scaling_probe, seed_list, table1_frame)
from .figures import (plot_histories, plot_table1, retrieval_figure, show_gradcam, show_pairs,
                      show_pseudo_targets, wrap_text)
from .method import (ALBEF, VARIANTS, ALBEFConfig, CrossAttention, FusionLayer, TextEncoder, alpha_at,
                     itc_loss, itc_targets, mask_tokens, mlm_loss, momentum_update, param_counts,
                     sample_negatives)
from .runs import (CODE_VERSION, ITM_PROBES, build_model, evaluate, finetune, gradcam,
                   itm_plateau_probe, noisy_pair_diagnosis, pretrain, pseudo_targets, retrieval_metrics,
                   pretrain_variant, retrieval_scores, train_variant)
from .tokenizer import SPECIAL_TOKENS, CaptionTokenizer

__all__ = [
    "PAPER", "PAPER_URL", "TITLE", "VARIANTS", "SPECIAL_TOKENS",
    "CaptionTokenizer", "corrupt_captions", "mask_tokens", "sample_negatives",
    "itc_targets", "itc_loss", "mlm_loss", "alpha_at", "momentum_update",
    "ALBEFConfig", "ALBEF", "TextEncoder", "FusionLayer", "CrossAttention",
    "PairData", "world_config", "albef_config", "world_data", "real_data", "load_data",
    "pretrain", "finetune", "train_variant", "retrieval_scores", "retrieval_metrics", "evaluate",
    "run_table1", "table1_frame", "itm_plateau_probe", "ITM_PROBES", "pseudo_targets", "noisy_pair_diagnosis", "gradcam", "param_counts",
    "build_model", "config_from_params", "fixed_inputs", "plot_table1", "plot_histories", "show_pseudo_targets",
    "show_gradcam", "retrieval_figure", "recorder", "record_results", "show_pairs", "wrap_text",
    "NOTEBOOK", "PARAMS", "CODE_VERSION", "ALBEFData", "pre_caption", "REAL_LAYOUT", "TAKEAWAYS",
    "HEADLINE", "HEADLINE_VARIANTS", "grid", "seed_list", "pretrain_variant", "PROBES", "scaling_probe",
]
