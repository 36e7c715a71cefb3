"""ConvNeXt: "A ConvNet for the 2020s" (Liu et al., CVPR 2022, arXiv 2201.03545). Everything
notebook 04 needs.

The problem: vision transformers (ViT, Swin) overtook convnets on ImageNet, but were the gains
due to attention or to the many design and training choices that came with them? The idea:
modernize a standard ResNet step by step towards a transformer's design, keep every change,
and see how far a pure convnet gets.

The paper starts from a ResNet-50 trained with a modern (DeiT/Swin-like) recipe and changes
one design decision at a time, towards the choices of a Swin Transformer, measuring ImageNet-1k
top-1 and FLOPs after each (Sec. 2, Fig. 2). Each change is kept, so the steps accumulate:

====  =========================  ==========================================================
Sec.  step                        what changes
====  =========================  ==========================================================
2.1   modernized recipe          ResNet-50 trained 300 epochs with AdamW, Mixup, CutMix,
                                 RandAugment, Random Erasing, stochastic depth, label
                                 smoothing (76.1 -> 78.8)
2.2   stage ratio                blocks per stage (3, 4, 6, 3) -> (3, 3, 9, 3) (Swin's 1:1:3:1)
2.2   patchify stem              7x7 stride-2 conv + max-pool -> 4x4 stride-4 conv
2.3   ResNeXt-ify                the 3x3 conv becomes depthwise (groups = channels), then the
                                 width grows from 64 to 96 (Swin-T's C)
2.4   inverted bottleneck        narrow-wide-narrow: the block's 1x1 convs go d -> 4d -> d
2.5   move up depthwise conv     the spatial (depthwise) conv comes first, as attention comes
                                 before the MLP in a transformer block
2.5   kernel 7x7                 3x3 -> 7x7 depthwise (Swin's window is 7x7)
2.6   ReLU -> GELU               smoother activation, as in BERT, GPT-2 and ViT
2.6   fewer activations          one GELU per block, between the two 1x1 convs
2.6   fewer norms                one norm per block, after the depthwise conv
2.6   BN -> LN                   LayerNorm instead of BatchNorm
2.6   separate downsampling      stride moves out of the blocks into LN + 2x2 stride-2 convs
                                 between stages; LN after the stem and after global pooling
====  =========================  ==========================================================

The result is ConvNeXt-T (Table 9: 28.6M parameters, 4.5 GFLOPs). Here one readable network,
:class:`LadderNet`, is parameterized by a :class:`LadderConfig` that names each of these
decisions; ``LADDER`` lists the steps with the paper's numbers, :func:`ladder_config` gives the
configuration after any step and :func:`build_step` the network. The last step builds
:class:`course_lib.models.convnext.ConvNeXt` itself (timm names, loads timm checkpoints); the
tests check that the first step is torchvision's ResNet-50 and the last one timm's
``convnext_tiny``, parameter for parameter.

FLOPs. The paper counts a multiply-add as one FLOP (fvcore); ``torch.utils.flop_counter``
counts it as two. :func:`complexity` reports multiply-adds (GMACs), which is what the paper
calls GFLOPs: ResNet-50 4.09 G, ConvNeXt-T 4.46 G at 224 px.

The "course" scale (:func:`ladder_config` ``scale="course"``) keeps every relative change of
the ladder but divides the widths by 4 and the depths by 3 ((3, 4, 6, 3) -> (1, 1, 2, 1),
(3, 3, 9, 3) -> (1, 1, 3, 1)) and halves the stem's stride, so that 32 px images reach the
four stages at 16, 8, 4 and 2 pixels (ImageNet: 56, 28, 14, 7) and every step trains at a few
hundred images per second on two CPU cores (``benchmarks/calibrate_convnext.py``).

Where things live:

``method``      the configurable network: :class:`LadderConfig` (every design decision of
                Sec. 2.2-2.6 as a field), :class:`LadderBlock` (Fig. 3, Fig. 4),
                :class:`LadderStage`, :class:`LadderNet`, :func:`build_model`,
                :func:`reinit_fan_in`;
``ladder``      the modernization ladder (Fig. 2): ``LADDER`` with the paper's numbers
                (``PAPER``: Fig. 2, Tables 1 and 9, the Sec. 2.1 recipe), :func:`ladder_config`,
                :func:`build_step`, parameters and FLOPs (:func:`complexity`,
                :func:`complexity_table`, :func:`model_sizes`);
``experiment``  the notebook's ``PARAMS``, data (:func:`load_data`), training every step with
                one recipe (:func:`run_ladder`), :func:`results_table` and the "paper vs. ours"
                record (:func:`record_results`);
``figures``     the step explorer's text views (:func:`describe`, :func:`block_lines`,
                :func:`compare`).
"""
from __future__ import annotations

from .experiment import (
    CODE_VERSION,
    NO_CHANGE_TOLERANCE_PP,
    NOTEBOOK,
    PAPER_URL,
    PARAMS,
    TAKEAWAYS,
    TITLE,
    LadderData,
    StepRun,
    load_data,
    record_results,
    recorder,
    results_table,
    run_config,
    run_ladder,
    PROBES,
    scaling_probe,
    selected_steps,
    step_seeds,
    train_config,
    train_step,
    world_config,
)
from .figures import Comparison, block_lines, compare, describe
from .ladder import (
    GROUPS,
    LADDER,
    PAPER,
    SCALES,
    SECTIONS,
    STEP_KEYS,
    LadderStep,
    build_step,
    complexity,
    complexity_table,
    count_params,
    course_depth,
    default_stem_stride,
    ladder_config,
    model_sizes,
    step_index,
)
from .method import (
    ACTS,
    BLOCKS,
    DOWNSAMPLING,
    INITS,
    NORMS,
    STEMS,
    LadderBlock,
    LadderConfig,
    LadderNet,
    LadderStage,
    build_model,
    reinit_fan_in,
)
