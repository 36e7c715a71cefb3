"""course_lib: the shared library of the Vision Paper Study Notebooks.

Shared building blocks
    config   profiles, validated notebook parameters, device choice, seeding
    paths    where data, caches and results live
    world    the offline procedural scene world every notebook reuses
    data     ``get_dataset`` (offline world, CIFAR, ...) and DataLoaders (DDP-aware)
    fetch    the catalog of real datasets and their checksummed download
    models   a readable ViT that loads timm checkpoints; convnet teachers from timm
    train    the one ``fit`` loop (AMP, EMA, schedules, mixup, DDP, checkpoints, cache)
    metrics  top-k accuracy, confusion matrices, disagreement
    viz      attention maps, rollout, overlays, grids and an ipywidgets explorer
    results  "paper vs. ours" records, verdict rules and the scoreboard

One module per paper holds that paper's own contribution (e.g. ``deit``).
"""
__version__ = "0.1.0"

# notebook id -> module holding that paper's contribution (and its parameter specs)
PAPER_MODULES = {
    "00_start_here": "world",
    "01_albef": "albef",
    "02_usi": "usi",
    "03_deit": "deit",
    "04_convnext": "convnext",
    "05_clear": "clear",
    "06_dino": "dino",
    "07_vitdet": "vitdet",
    "08_frozen_backbones": "frozen_backbones",
    "09_minivit": "minivit",
    "10_copy_paste": "copy_paste",
    "11_stego": "stego",
    "12_surgical_cnn": "surgical",
}
