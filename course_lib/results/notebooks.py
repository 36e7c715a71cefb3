"""The course's notebooks (the README table and the report are generated from this list)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NotebookInfo:
    id: str
    short: str
    title: str
    arxiv: str | None
    learn: str

    @property
    def url(self) -> str | None:
        return f"https://arxiv.org/abs/{self.arxiv}" if self.arxiv else None


NOTEBOOKS: tuple[NotebookInfo, ...] = (
    NotebookInfo(
        "00_start_here", "Start here", "The offline world: a gallery of the procedural scenes",
        None,
        "the procedural scene world every notebook trains on offline; profiles and parameters",
    ),
    NotebookInfo(
        "01_albef", "ALBEF",
        "Align before Fuse: Vision and Language Representation Learning with Momentum "
        "Distillation", "2107.07651",
        "align image and text embeddings contrastively before fusing them; momentum "
        "distillation against noisy pairs",
    ),
    NotebookInfo(
        "02_usi", "USI", "Solving ImageNet: a Unified Scheme for Training any Backbone to Top "
        "Results", "2204.03475",
        "one recipe for every backbone: knowledge distillation from a strong teacher with "
        "fixed hyper-parameters",
    ),
    NotebookInfo(
        "03_deit", "DeiT", "Training data-efficient image transformers & distillation through "
        "attention", "2012.12877",
        "train a ViT without huge data; distill a convnet teacher through a distillation "
        "token (soft vs. hard)",
    ),
    NotebookInfo(
        "04_convnext", "ConvNeXt", "A ConvNet for the 2020s", "2201.03545",
        "modernise a ResNet step by step (patchify stem, depthwise convs, inverted "
        "bottleneck, LayerNorm) and measure each step",
    ),
    NotebookInfo(
        "05_clear", "CLEAR", "The CLEAR Benchmark: Continual LEArning on Real-World Imagery",
        "2201.06289",
        "continual learning under natural temporal shift: train on the past, test on the "
        "future (the accuracy matrix)",
    ),
    NotebookInfo(
        "06_dino", "DINO", "Emerging Properties in Self-Supervised Vision Transformers",
        "2104.14294",
        "self-distillation without labels (centering, sharpening); class-token attention "
        "that segments objects; k-NN evaluation",
    ),
    NotebookInfo(
        "07_vitdet", "ViTDet", "Exploring Plain Vision Transformer Backbones for Object "
        "Detection", "2203.16527",
        "detect with a plain ViT: a simple feature pyramid from the last map and windowed "
        "attention with a few global blocks",
    ),
    NotebookInfo(
        "08_frozen_backbones", "Frozen backbones", "Proper Reuse of Image Classification "
        "Features Improves Object Detection", "2204.00484",
        "keep the classification backbone frozen and give the detector a strong head; "
        "compare with fine-tuning",
    ),
    NotebookInfo(
        "09_minivit", "MiniViT", "MiniViT: Compressing Vision Transformers with Weight "
        "Multiplexing", "2204.07154",
        "share weights across layers with small per-layer transformations and distill to "
        "recover accuracy",
    ),
    NotebookInfo(
        "10_copy_paste", "Copy-Paste", "Simple Copy-Paste is a Strong Data Augmentation "
        "Method for Instance Segmentation", "2012.07177",
        "paste objects from one image into another as augmentation; how much it helps when "
        "data is scarce",
    ),
    NotebookInfo(
        "11_stego", "STEGO", "Unsupervised Semantic Segmentation by Distilling Feature "
        "Correspondences", "2203.08414",
        "segment without labels by distilling the feature correspondences of a frozen "
        "self-supervised ViT",
    ),
    NotebookInfo(
        "12_surgical_cnn", "Surgical skill CNN", "Deep learning with convolutional neural "
        "network for objective skill evaluation in robot-assisted surgery (Wang & Majewicz "
        "Fey, 2018)", "1806.05796",
        "classify skill levels from robot kinematics with a 1-D CNN and see which motions "
        "drive the decision",
    ),
)
