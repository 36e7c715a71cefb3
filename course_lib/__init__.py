"""course_lib: the shared library of the Vision Paper Study Notebooks.

The house has two floors (``docs/design.md`` draws it):

``course_lib/papers/<paper>/`` (one package per notebook)
    the paper's story (``__init__``), its contribution (``method``), the notebook's
    parameters, runs and "paper vs. ours" record (``experiment``) and its plots and widgets
    (``figures``). No paper package imports another.

Shared layers, named for what they are
    models          a readable ViT that loads timm checkpoints, ConvNeXt, convnet teachers
    world           the offline procedural scene world every notebook trains on
    data            ``get_dataset`` (offline world, CIFAR, ...) and DataLoaders (DDP-aware)
    classification  image-classification data and transforms (02, 03, 04, 09)
    detection       world detection views, readers, R-CNNs on any backbone, COCO AP, drawing
    selfsup         the self-supervised ViT backbone (DINO training, loading, features)
    train           ``fit`` (AMP, EMA, schedules, mixup, DDP, checkpoints) and the model cache
    metrics         top-k accuracy, confusion matrices, disagreement
    attention_maps  a ViT's attention per layer and head, rollout, mass thresholds
    viz             overlays, grids, figure checks and ipywidgets with a static fallback
    results         "paper vs. ours" records, verdict rules and the scoreboard
    config, paths, fetch   parameters and profiles, where things live, real datasets
"""
__version__ = "0.1.0"
