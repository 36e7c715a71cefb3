"""CLEAR: "The CLEAR Benchmark: Continual LEArning on Real-World Imagery"
(Lin, Shi, Pathak, Ramanan; NeurIPS 2021 Datasets and Benchmarks, arXiv 2201.06289).
Everything notebook 05 needs.

CLEAR turns ten years of Flickr images (YFCC100M, 2004-2014) into a *temporal stream* of 11
buckets. Bucket 0 is unlabeled (for self-supervised pre-training); buckets 1-10 hold labeled
images of 10 visual concepts plus a BACKGROUND class whose *appearance drifts* over time (a
"camera" of 2005 is a DSLR, of 2013 a smartphone). Here, all from scratch:

* **The stream** on the course's offline world (:func:`make_world_stream`, ``stream.py``): 11
  buckets, bucket 0 unlabeled; five concepts named after CLEAR-10 classes, each drawn as an
  *old* shape variant that gives way to a *new* one at its own time (a sigmoid in the bucket
  index, like the DSLR -> smartphone "camera"), on top of the world's global ``time`` drift
  (object hues turn, objects shrink, background kinds and tints change); and a BACKGROUND class
  of images without objects. :func:`load_clear_folder` reads the real CLEAR-10 layout for the
  ``paper`` profile. The :class:`Bucket` / :class:`Stream` containers live in ``method.py``.
* **The two protocols** (Sec. 4, Fig. 4): *IID* (a seeded 70/30 train/test split of every bucket)
  and *streaming* (train on all of bucket i, test on bucket i+1: today's test set is tomorrow's
  training set) -> :func:`protocol_splits` (``method.py``).
* **The accuracy matrix** ``R[i, j]`` = accuracy on bucket j after training on bucket i and the
  metrics of the paper, all *averages of accuracies* (not GEM-style differences):
  in-domain (mean diagonal), next-domain (mean superdiagonal), accuracy (mean of the lower
  triangle with the diagonal), backward transfer (mean strictly lower), forward transfer (mean
  strictly upper) -> :func:`clear_metrics` (``method.py``).
* **Baselines** (Table 1), each a few lines in :func:`run_protocol` (``method.py``): finetuning,
  reservoir replay (official: the model trains *only* on the buffer), biased reservoir,
  experience replay (ER: every batch mixed with buffer samples), LwF (distillation from the
  previous model's outputs, :func:`lwf_loss`) and EWC (diagonal Fisher penalty,
  :func:`ewc_penalty`, :func:`fisher_diagonal`). The buffer holds one bucket's worth of samples.
* **Two model families** (``experiment.py``): a small ResNet trained from scratch on the stream,
  and linear models on features self-supervised on bucket 0 (DINO, ``course_lib.selfsup``; the
  paper uses MoCo v2). ``experiment.py`` also holds the parameters (``PARAMS``), the paper's
  Table 1 (``PAPER``), the runs, tables and the "paper vs. ours" record; ``figures.py`` the
  plots.

Where we differ from the paper / official code, and why:

* The stream is synthetic: concept drift is an explicit shape-variant schedule plus the world's
  global drift, so we know *what* drifts (the notebook shows accuracy per variant).
* Per-class stratified 70/30 IID split (official: a random 70/30 split per bucket).
* Reservoir buffers are updated sample by sample (Vitter's algorithm R); the biased reservoir
  replaces a random slot with probability ``alpha`` (``bias_mode="alpha"``) or
  ``alpha / t`` at the t-th labeled bucket (``"alpha/t"``; ``alpha = 1`` is about unbiased).
* EWC is the "online" form (one anchor: the weights after the previous bucket, Fisher summed
  over buckets), with the true Fisher (labels sampled from the model) computed per sample.
* Self-supervised features come from DINO (notebook 06's backbone, ``course_lib.selfsup``)
  rather than MoCo v2.
"""
from __future__ import annotations

from .experiment import (
    FAMILIES, METHOD_LABELS, NOTEBOOK, PAPER, PAPER_URL, PARAMS, PROBES, SINGLE_SEED_MARGIN, TAKEAWAYS, TITLE,
    dino_recipe, extract_features, metrics_frame, model_inputs, names, pretrain_backbone, record_results, recorder,
    run_experiments, scaling_probe, stream_stats, table1, variant_accuracy,
)
from .figures import plot_buffers, plot_drift, plot_heatmaps, plot_in_vs_next, schedule_frame
from .method import (
    METHODS, METRICS, PROTOCOLS, Bucket, LearnConfig, ReservoirBuffer, Stream, StreamRun, accuracy,
    augment_batch, clear_metrics, ewc_penalty, fisher_diagonal, iid_split, lwf_loss, protocol_splits,
    run_protocol,
)
from .stream import (
    BACKGROUND, CODE_VERSION, CONCEPTS, load_clear_folder, load_stream, make_world_stream, variant_share,
)

__all__ = [
    "CONCEPTS",
    "FAMILIES",
    "METHODS",
    "METRICS",
    "PAPER",
    "PAPER_URL",
    "PROBES",
    "PROTOCOLS",
    "TAKEAWAYS",
    "TITLE",
    "Bucket",
    "LearnConfig",
    "ReservoirBuffer",
    "Stream",
    "accuracy",
    "augment_batch",
    "clear_metrics",
    "ewc_penalty",
    "extract_features",
    "fisher_diagonal",
    "iid_split",
    "load_clear_folder",
    "load_stream",
    "lwf_loss",
    "make_world_stream",
    "metrics_frame",
    "model_inputs",
    "names",
    "plot_buffers",
    "plot_drift",
    "plot_heatmaps",
    "plot_in_vs_next",
    "pretrain_backbone",
    "protocol_splits",
    "record_results",
    "recorder",
    "run_experiments",
    "scaling_probe",
    "schedule_frame",
    "table1",
    "variant_accuracy",
    "variant_share",
]
