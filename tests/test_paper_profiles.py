"""The ``paper`` profiles of the classification notebooks, end to end on a tiny slice of the real
dataset.

A GPU user's first ``paper`` run of 02 USI, 03 DeiT, 04 ConvNeXt or 09 MiniViT must not die after an
hour on a data-format or shape bug. Each test writes a few images of the notebook's real dataset in
its exact on-disk layout (what ``data_scripts/fetch.py`` unpacks and torchvision reads) into
``tmp_path``, resolves the notebook's ``paper`` parameters with only the budget knobs overridden
(epochs, ``max_steps``, batch size, seeds) and runs the notebook's own driver and recorder.

* Imagenette (``imagenette2-160/{train,val}/<wnid>/*.JPEG``): all 10 WordNet folders, 2 JPEGs each
  per split, of the release's sizes (shorter side 160 px, landscape and portrait) and one greyscale
  JPEG per split, as the real release has a few.
* CIFAR-100 (``cifar-100-python/{train,test,meta}``): the python pickles (``data`` uint8 rows of
  3072 = 3x32x32 channel-major bytes, ``fine_labels``, ``coarse_labels``, ``filenames``,
  ``batch_label``; ``meta`` with the 100 fine and 20 coarse names): 2 train images per class and
  1 test image for each of the first 100 classes (MiniViT: 50). torchvision checks the md5 of the real files, which no slice can match: that one check is
  replaced by "the file exists" (everything else torchvision does runs as it is).
"""
from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch

from course_lib import config

pytestmark = pytest.mark.slow  # 10-20 s each on one CPU thread

# ---------------------------------------------------------------------------------------------
# the slices

IMAGENETTE = {  # wnid -> torchvision's first name of the class (torchvision.datasets.Imagenette)
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
    "n03888257": "parachute",
}

CIFAR100_FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel "
    "can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur "
    "dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion "
    "lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree "
    "pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea "
    "seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table "
    "tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman "
    "worm").split()
CIFAR100_COARSE = (
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices "
    "household_furniture insects large_carnivores large_man-made_outdoor_things large_natural_outdoor_scenes "
    "large_omnivores_and_herbivores medium_mammals non-insect_invertebrates people reptiles small_mammals "
    "trees vehicles_1 vehicles_2").split()
assert len(CIFAR100_FINE) == 100 and len(CIFAR100_COARSE) == 20


def make_imagenette(root, per_class: int = 2) -> dict[str, int]:
    """``root/imagenette2-160/{train,val}/<wnid>/<wnid>_<i>.JPEG`` for every class; returns the
    number of images per split."""
    from PIL import Image

    rng = np.random.default_rng(0)
    # the 160 px release: the shorter side is 160, the other one varies
    sizes = [(213, 160), (160, 240), (160, 160), (250, 160)]
    counts = {}
    for split in ("train", "val"):
        n = 0
        for c, wnid in enumerate(IMAGENETTE):
            folder = root / "imagenette2-160" / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                w, h = sizes[(c + i) % len(sizes)]
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                img = Image.fromarray(pixels)
                if c == 3 and i == 0:  # the release has a few greyscale JPEGs
                    img = img.convert("L")
                img.save(folder / f"{wnid}_{split}{i}.JPEG", quality=85)
                n += 1
        counts[split] = n
    return counts


def make_cifar100(root, train_per_class: int = 2, test_images: int = 100) -> dict[str, np.ndarray]:
    """``root/cifar-100-python/{train,test,meta}`` as the python release pickles them: every class
    ``train_per_class`` times in train, classes ``0, 1, ...`` once each in test (``test_images`` of
    them). Returns the pickled ``data`` rows of each split."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rows = {}
    for split, fine in (("train", np.repeat(np.arange(100), train_per_class)),
                        ("test", np.arange(test_images) % 100)):
        rng.shuffle(fine)
        n = len(fine)
        rows[split] = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        entry = {"filenames": [f"slice_{split}_{i}.png" for i in range(n)],
                 "batch_label": f"{split}ing batch 1 of 1",
                 "fine_labels": fine.tolist(),
                 "coarse_labels": (fine % 20).tolist(),
                 "data": rows[split]}
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": CIFAR100_FINE, "coarse_label_names": CIFAR100_COARSE}, f)
    return rows


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Cache, results and data in ``tmp_path``; the profile comes from ``resolve``."""
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("COURSE_WORKERS", "0")  # loader workers only cost start-up time here
    data = tmp_path / "data"
    data.mkdir()
    return tmp_path


@pytest.fixture
def cifar_md5_is_existence(monkeypatch):
    """torchvision's CIFAR reader checks the md5 of the real release; a slice has other bytes."""
    import os

    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def _record(tmp_path, notebook: str) -> dict:
    """The results file the recorder wrote, checked against the schema the README and CI read."""
    from course_lib.results.schema import check_record

    path = tmp_path / "results" / notebook / "paper.json"
    assert path.exists()
    saved = json.loads(path.read_text())
    check_record(saved, str(path))
    assert saved["notebook"] == notebook and saved["profile"] == "paper"
    return saved


def _finite_pct(x: float) -> bool:
    return math.isfinite(x) and 0.0 <= x <= 100.0


def _check_imagenette(d, root, counts, image_size: int):
    assert d.num_classes == 10 and d.class_names == list(IMAGENETTE.values())
    assert len(d.train) == counts["train"] == 20 and len(d.test) == counts["val"] == 20
    assert d.val is d.test
    for ds, split in ((d.train, "train"), (d.test, "val")):  # read from the slice, in class order
        paths = [p for p, _ in ds._samples]
        assert all(p.startswith(str(root / "imagenette2-160" / split)) for p in paths)
        assert [y for _, y in ds._samples] == [c for c in range(10) for _ in range(2)]
    x, y = d.train[0]
    assert x.shape == (3, image_size, image_size) and x.dtype == torch.float32 and y == 0
    x, y = d.test[6]  # the greyscale JPEG comes out as 3 channels
    assert x.shape == (3, image_size, image_size) and y == 3


def _check_cifar100(d, rows, image_size: int):
    assert d.num_classes == 100 and d.class_names == CIFAR100_FINE
    assert len(d.train) == len(rows["train"]) and len(d.test) == len(rows["test"])
    assert d.val is d.test
    # the pickled rows are channel-major 3x32x32 bytes; torchvision holds them as HWC images
    for ds, split in ((d.train, "train"), (d.test, "test")):
        assert np.array_equal(ds.data, rows[split].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert sorted(d.test.targets) == list(range(len(rows["test"])))
    x, y = d.train[0]
    assert x.shape == (3, image_size, image_size) and x.dtype == torch.float32 and 0 <= y < 100


# ---------------------------------------------------------------------------------------------
# 02 USI: Imagenette, 128 px, resnet26d teacher, four student families


def test_usi_paper_profile_on_an_imagenette_slice(env):
    from course_lib.papers import usi

    counts = make_imagenette(env / "data")
    P = config.resolve("02_usi", profile="paper", data_root=str(env / "data"), teacher_epochs=1, epochs=1,
                       max_steps=1, batch_size=4, seeds=1)
    assert (P.dataset, P.image_size, P.patch_size, P.teacher_arch) == ("imagenette", 128, 16, "resnet26d")
    lines = []
    res = usi.run_experiments(P, log=lines.append)
    _check_imagenette(res["data"], env / "data", counts, 128)
    assert "RandAugment" in repr(res["data"].train.transform)  # USI: strong augmentation on real images
    runs = res["runs"]
    labels = [(r.label, r.family) for r in runs]
    assert labels[0] == ("teacher", "cnn")
    for fam in usi.FAMILIES:
        assert ("no_kd", fam) in labels and ("usi", fam) in labels
    assert {r.alpha_kd for r in runs if r.label == "alpha"} == {1.0, math.inf}
    assert {r.tau for r in runs if r.label == "tau"} == {0.1, 5.0}
    assert ("vit_teacher", "cnn") in labels
    assert len(runs) == 1 + 8 + 2 + 2 + 1 == len(lines)
    assert all(_finite_pct(r.top1) and not r.from_cache for r in runs)
    assert res["teacher_logits"].shape == (20, 10) and torch.isfinite(res["teacher_logits"]).all()
    rec = usi.record_results(P, res)
    saved = _record(env, "02_usi")
    assert saved["profile"] == "paper" and saved["params"]["dataset"] == "imagenette"
    ids = {c["id"] for c in saved["claims"]}
    headline = {f"usi_kd_{f}" for f in usi.FAMILIES} | {"usi_alpha5_beats_alpha1"}
    assert headline <= ids
    assert {c.id for c in rec.claims if c.headline} == headline
    assert {"teacher", "cnn_a1", "cnn_ainf", "cnn_tau0.1", "cnn_tau5", "cnn_vit_teacher"} <= ids


# ---------------------------------------------------------------------------------------------
# 03 DeiT: CIFAR-100, 32 px, resnet18 teacher, cifar_tiny (DeiT-Ti shape) students, strong aug


def test_deit_paper_profile_on_a_cifar100_slice(env, cifar_md5_is_existence):
    from course_lib.papers import deit

    rows = make_cifar100(env / "data")
    P = config.resolve("03_deit", profile="paper", data_root=str(env / "data"), teacher_epochs=1,
                       student_epochs=1, max_steps=1, batch_size=8, seeds=1)
    assert (P.dataset, P.image_size, P.student, P.teacher_arch, P.strong_aug) == (
        "cifar100", 32, "cifar_tiny", "resnet18", True)
    lines = []
    res = deit.run_experiments(P, log=lines.append)
    _check_cifar100(res["data"], rows, 32)
    assert "RandAugment" in repr(res["data"].train.transform)  # strong_aug reached the real images
    runs = res["runs"]
    assert set(runs) == {"teacher", "none", "hard", "soft", "token", "vit_teacher"}
    assert len(lines) == 6
    assert set(runs["token"][0].top1) == {"cls", "dist", "both"}
    for label, rs in runs.items():
        assert len(rs) == 1 and all(_finite_pct(a) for a in rs[0].top1.values()), label
        assert all(p.shape == (100,) for p in rs[0].preds.values())
    assert res["token_model"].distilled and res["token_model"].num_classes == 100
    deit.record_results(P, res)
    saved = _record(env, "03_deit")
    assert saved["profile"] == "paper" and saved["params"]["dataset"] == "cifar100"
    ids = {c["id"] for c in saved["claims"]}
    assert {"deit_hard_beats_none", "deit_hard_beats_soft", "deit_token_beats_class",
            "deit_convnet_teacher_wins"} <= ids
    assert {c["id"] for c in saved["claims"] if c.get("headline")} == {
        "deit_hard_beats_none", "deit_hard_beats_soft", "deit_token_beats_class", "deit_convnet_teacher_wins"}


# ---------------------------------------------------------------------------------------------
# 04 ConvNeXt: Imagenette, 128 px, the ImageNet-scale ladder (ResNet-50 ... ConvNeXt-T)


def test_convnext_paper_profile_on_an_imagenette_slice(env):
    from course_lib.papers import convnext

    counts = make_imagenette(env / "data")
    P = config.resolve("04_convnext", profile="paper", data_root=str(env / "data"), epochs=1, max_steps=1,
                       batch_size=2, seeds=1, steps="0,12")
    assert (P.dataset, P.image_size, P.scale, P.init) == ("imagenette", 128, "imagenet", "trunc_normal")
    lines = []
    res = convnext.run_ladder(P, log=lines.append)
    _check_imagenette(res["data"], env / "data", counts, 128)
    first, last = convnext.STEP_KEYS[0], convnext.STEP_KEYS[-1]
    assert res["steps"] == [first, last] and len(lines) == 2 and res["num_classes"] == 10
    assert all(_finite_pct(a) for k in res["steps"] for a in res["top1"][k])
    assert 20e6 < res["params"][first] < 30e6 and 20e6 < res["params"][last] < 30e6  # ResNet-50, ConvNeXt-T
    convnext.record_results(P, res)
    saved = _record(env, "04_convnext")
    assert saved["profile"] == "paper" and saved["params"]["dataset"] == "imagenette"
    ids = {c["id"] for c in saved["claims"]}
    assert {f"acc_{first}", f"acc_{last}", f"delta_{last}", "convnext_beats_resnet",
            "params_resnet50", "params_convnext_tiny"} <= ids
    # The driver trains both ends of the ladder above (each step costs it about 4 s here: two
    # evaluations and a 100 MB cache file); every step in between gets one step of the same recipe
    # (the driver's builder and train_config: mixup/cutmix, label smoothing, drop path, layer
    # scale) on a batch of the slice at the paper's scale and image size.
    from course_lib import data, train

    d = res["data"]
    loader = data.make_loader(d.train, P.batch_size, train=True, num_workers=0)
    for key in convnext.STEP_KEYS[1:-1]:
        cfg = convnext.run_config(P, key)
        model = convnext.build_model(cfg, d.num_classes, drop_path_rate=P.drop_path, init=P.init)
        hist = train.fit(model, loader, convnext.train_config(P, d.num_classes, seed=0),
                         device=P.torch_device)
        assert len(hist.steps["loss"]) == 1 and math.isfinite(hist.steps["loss"][0]), key
        model.eval()
        with torch.no_grad():
            out = model(next(iter(loader))[0].to(P.torch_device))
        assert out.shape == (P.batch_size, 10) and torch.isfinite(out).all(), key


# ---------------------------------------------------------------------------------------------
# 09 MiniViT: CIFAR-100, 32 px, cifar_small teacher (DeiT-S shape), cifar_tiny students


def test_minivit_paper_profile_on_a_cifar100_slice(env, cifar_md5_is_existence):
    from course_lib.papers import minivit as mv

    # 50 test images, not 100: the driver evaluates the test split twice per run (in training and
    # after it) for 12 runs, a teacher of DeiT-S's size among them; that halves the test's time
    rows = make_cifar100(env / "data", test_images=50)
    P = config.resolve("09_minivit", profile="paper", data_root=str(env / "data"), teacher_epochs=1,
                       student_epochs=1, max_steps=1, batch_size=8, seeds=1)
    assert (P.dataset, P.image_size, P.teacher, P.student, P.table3) == (
        "cifar100", 32, "cifar_small", "cifar_tiny", True)
    lines = []
    res = mv.run_experiments(P, log=lines.append)
    _check_cifar100(res["data"], rows, 32)
    runs = res["runs"]
    names = {"teacher", "original", "ws", "ws_wd", "ws_wt", "ws_wt_wd", "every-2", "all", "pred",
             "pred_attn", "pred_attn_hidden", "attn_hidden"}
    assert set(runs) == names and all(len(runs[n]) == 1 for n in names)
    assert all(_finite_pct(runs[n][0].top1) for n in names)
    assert runs["all"][0].params < runs["every-2"][0].params < runs["original"][0].params
    assert isinstance(res["students"]["ws_wt_wd"], mv.MiniViT)
    assert set(mv.tables(res)) == {"table1", "table2", "table3"}
    mv.record_results(P, res)
    saved = _record(env, "09_minivit")
    assert saved["profile"] == "paper" and saved["params"]["dataset"] == "cifar100"
    headline = {"minivit_sharing_alone_hurts", "minivit_distillation_helps", "minivit_transformation_helps",
                "minivit_matches_original"}
    assert {c["id"] for c in saved["claims"] if c.get("headline")} == headline
    assert {"original", "teacher", "compression_every2", "t3_pred", "params_deit_b_all"} <= {
        c["id"] for c in saved["claims"]}
