"""Simple Copy-Paste (course_lib/papers/copy_paste/) on hand-made masks: occlusion, full occlusion,
empty images, blending, determinism, and the scale-jitter pipeline."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from course_lib.papers import copy_paste as cp

S = 16


def target(boxes_px, labels, image_id=0):
    """A target in the detection contract's format with rectangular masks ``(x0, y0, x1, y1)``
    (pixel edges: columns x0..x1-1 and rows y0..y1-1 are inside)."""
    masks = torch.zeros(len(boxes_px), S, S, dtype=torch.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes_px):
        masks[k, y0:y1, x0:x1] = 1
    boxes = torch.tensor(boxes_px, dtype=torch.float32).reshape(-1, 4)
    return {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(S, S)),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": tv_tensors.Mask(masks), "image_id": image_id,
            "area": masks.flatten(1).sum(1).float(), "iscrowd": torch.zeros(len(labels), dtype=torch.int64)}


def image(value):
    return tv_tensors.Image(torch.full((3, S, S), float(value)))


def test_masks_to_boxes_pixel_edges():
    m = torch.zeros(2, S, S, dtype=torch.uint8)
    m[0, 3:5, 2:9] = 1          # rows 3-4, cols 2-8
    m[1, 7, 7] = 1              # one pixel
    assert cp.masks_to_boxes(m).tolist() == [[2, 3, 9, 5], [7, 7, 8, 8]]
    assert cp.masks_to_boxes(torch.zeros(0, S, S)).shape == (0, 4)


def test_partial_occlusion_updates_mask_and_box():
    main = target([(2, 2, 10, 10)], [1])          # 8x8 square
    src = target([(6, 0, 16, 16)], [2])           # covers the square's right half (cols 6..9)
    img, t = cp.paste(image(0.0), main, image(1.0), src, torch.tensor([0]))
    assert t["labels"].tolist() == [1, 2]          # main objects first, then the pasted ones
    assert t["boxes"].tolist() == [[2, 2, 6, 10], [6, 0, 16, 16]]
    assert t["masks"][0].sum() == 4 * 8 and t["area"].tolist() == [32.0, 160.0]
    assert isinstance(t["boxes"], tv_tensors.BoundingBoxes) and t["boxes"].canvas_size == (S, S)
    assert isinstance(t["masks"], tv_tensors.Mask) and t["masks"].dtype == torch.uint8
    # I = I1 * alpha + I2 * (1 - alpha) with a hard alpha: source pixels exactly where pasted
    assert torch.equal(img[0] == 1.0, t["masks"][1].bool())
    assert t["image_id"] == main["image_id"] and t["iscrowd"].tolist() == [0, 0]


def test_full_occlusion_drops_object_and_recomputes_boxes():
    main = target([(2, 2, 6, 6), (8, 8, 14, 14)], [1, 3])
    src = target([(1, 1, 7, 7), (0, 12, 16, 16)], [2, 4])   # first hides object 0 completely
    _, t = cp.paste(image(0.0), main, image(1.0), src, torch.tensor([0, 1]))
    # object 0 gone; object 1 lost its bottom rows 12-13 (box recomputed), both pastes appended
    assert t["labels"].tolist() == [3, 2, 4]
    assert t["boxes"].tolist() == [[8, 8, 14, 12], [1, 1, 7, 7], [0, 12, 16, 16]]
    assert len(t["masks"]) == len(t["boxes"]) == len(t["area"]) == len(t["iscrowd"]) == 3


def test_subset_pastes_only_chosen_objects():
    main = target([(0, 0, 4, 4)], [1])
    src = target([(10, 10, 12, 12), (4, 4, 8, 8)], [2, 5])
    img, t = cp.paste(image(0.0), main, image(1.0), src, torch.tensor([1]))
    assert t["labels"].tolist() == [1, 5]
    assert img[0, 11, 11] == 0.0 and img[0, 5, 5] == 1.0   # the unchosen object was not pasted


def test_empty_source_leaves_main_unchanged():
    main = target([(2, 2, 6, 6)], [1])
    empty = target([], [])
    tr = cp.SimpleCopyPaste(mode="all", blend=True, sigma=1.0)
    imgs, tgts = tr([image(0.25), image(0.75)], [main, empty])
    assert torch.equal(imgs[0], image(0.25))                 # image 0's source (image 1) is empty
    assert tgts[0]["labels"].tolist() == [1] and tgts[0]["boxes"].tolist() == [[2, 2, 6, 6]]
    # image 1 (empty destination) receives image 0's object: only the pasted object remains
    assert tgts[1]["labels"].tolist() == [1] and tgts[1]["boxes"].tolist() == [[2, 2, 6, 6]]
    assert tr.stats["pasted_into"] == 1 and tr.stats["pasted_objects"] == 1


def test_empty_destination_gets_pasted_objects_only():
    _, t = cp.paste(image(0.0), target([], []), image(1.0), target([(3, 4, 9, 7)], [6]), torch.tensor([0]))
    assert t["labels"].tolist() == [6] and t["boxes"].tolist() == [[3, 4, 9, 7]]
    assert t["masks"].shape == (1, S, S)


def test_blending_softens_image_but_keeps_masks_binary():
    main = target([(0, 0, 8, 16)], [1])
    src = target([(6, 4, 12, 12)], [2])
    hard, t_hard = cp.paste(image(0.0), main, image(1.0), src, torch.tensor([0]), sigma=0.0)
    soft, t_soft = cp.paste(image(0.0), main, image(1.0), src, torch.tensor([0]), sigma=1.5)
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    frac = soft[0][(soft[0] > 0.01) & (soft[0] < 0.99)]
    assert frac.numel() > 10                                  # a soft edge exists
    assert soft[0, 8, 9] > 0.9 and soft[0, 0, 0] < 0.01       # inside stays source, far stays main
    assert soft[0, 8, 5] > 0.0 and hard[0, 8, 5] == 0.0       # blending leaks just outside
    for t in (t_hard, t_soft):
        assert set(t["masks"].unique().tolist()) <= {0, 1}
    assert torch.equal(t_hard["masks"], t_soft["masks"])      # masks do not depend on blending


def test_blend_alpha_properties():
    a = torch.zeros(S, S, dtype=torch.bool)
    a[4:12, 4:12] = True
    b = cp.blend_alpha(a, 2.0)
    assert b.min() >= 0 and b.max() <= 1 and 0.9 < b[8, 8] <= 1.0
    assert torch.equal(cp.blend_alpha(a, 0.0), a.float())
    assert cp.gaussian_kernel_size(1.0) == 7


def test_select_objects_modes():
    g = torch.Generator().manual_seed(0)
    assert cp.select_objects(0, "random", generator=g).numel() == 0
    assert cp.select_objects(5, "all").tolist() == [0, 1, 2, 3, 4]
    sizes = {cp.select_objects(5, "one", generator=g).numel() for _ in range(20)}
    assert sizes == {1}
    sizes = [cp.select_objects(4, "random", generator=g).numel() for _ in range(400)]
    assert set(sizes) == {1, 2, 3, 4}                         # subset size uniform in 1..n
    # a small fraction never pastes nothing (conradry's pct=0.1 trap)
    assert cp.select_objects(3, "random", fraction=0.1, generator=g).numel() == 1
    assert cp.select_objects(10, "random", fraction=0.5, generator=g).numel() == 5
    idx = cp.select_objects(6, "random", generator=g)
    assert idx.unique().numel() == idx.numel() and torch.equal(idx, idx.sort().values)
    with pytest.raises(ValueError):
        cp.select_objects(3, "half")


def _batch():
    rects = [[(0, 0, 5, 5), (8, 8, 15, 12)], [(3, 3, 9, 9)], [(10, 0, 16, 6), (1, 9, 6, 15), (7, 7, 9, 9)]]
    return ([image(v) for v in (0.1, 0.5, 0.9)],
            [target(r, list(range(1, len(r) + 1)), image_id=i) for i, r in enumerate(rects)])


def test_batch_pairing_shift_and_consistency():
    imgs, tgts = _batch()
    tr = cp.SimpleCopyPaste(mode="all", blend=False, pairing="shift")
    assert tr.sources(3) == [2, 0, 1] and tr.sources(1) == [-1]
    out_i, out_t = tr(imgs, tgts)
    # image 1 receives all objects of image 0 (the original, not the already-pasted one)
    assert out_t[1]["labels"].tolist() == [1, 1, 2]
    assert out_i[1][0, 1, 1] == pytest.approx(0.1) and out_i[1][0, 4, 4] == pytest.approx(0.1)
    for i, t in enumerate(out_t):
        assert len(t["boxes"]) == len(t["labels"]) == len(t["masks"]) == len(t["area"])
        assert torch.equal(t["boxes"], cp.masks_to_boxes(t["masks"]))
        assert t["image_id"] == i
    assert tr.stats["images"] == 3 and tr.stats["pasted_objects"] == 6


def test_probability_zero_is_identity():
    imgs, tgts = _batch()
    out_i, out_t = cp.SimpleCopyPaste(p=0.0)(imgs, tgts)
    assert all(a is b for a, b in zip(out_i, imgs)) and all(a is b for a, b in zip(out_t, tgts))


def test_determinism_with_seeded_generator():
    def run(seed):
        imgs, tgts = _batch()
        tr = cp.SimpleCopyPaste(mode="random", pairing="random", p=0.7, sigma=1.0, seed=seed)
        outs = [tr(imgs, tgts) for _ in range(4)]
        return [(torch.stack(list(i)), [t["labels"].tolist() for t in ts]) for i, ts in outs]

    a, b, c = run(3), run(3), run(4)
    assert all(torch.equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b))
    assert any(not torch.equal(x[0], y[0]) or x[1] != y[1] for x, y in zip(a, c))


def test_mismatched_sizes_fail_clearly():
    big = tv_tensors.Image(torch.zeros(3, S + 2, S + 2))
    with pytest.raises(ValueError, match="one size"):
        cp.paste(image(0.0), target([(0, 0, 2, 2)], [1]), big, target([(0, 0, 2, 2)], [1]), torch.tensor([0]))


@pytest.mark.parametrize("rng", [cp.SSJ_RANGE, cp.LSJ_RANGE])
def test_scale_jitter_keeps_size_and_consistent_targets(rng):
    torch.manual_seed(0)
    tr = cp.scale_jitter(S, rng)
    sizes = []
    for k in range(30):
        t = target([(2, 2, 8, 8), (9, 3, 15, 14)], [1, 2], image_id=k)
        img, out = tr(tv_tensors.Image(torch.rand(3, S, S)), t)
        assert img.shape == (3, S, S) and out["image_id"] == k
        assert len(out["boxes"]) == len(out["labels"]) == len(out["masks"]) == len(out["iscrowd"])
        assert torch.equal(out["boxes"], cp.masks_to_boxes(out["masks"]))
        assert set(out["masks"].unique().tolist()) <= {0, 1}
        sizes.append(out["area"].sum().item())
    base = 36 + 66
    if rng == cp.LSJ_RANGE:
        assert min(sizes) < 0.25 * base and max(sizes) > 1.5 * base   # objects shrink and grow
    else:
        assert 0.5 * base < sum(sizes) / len(sizes) < 1.6 * base


def test_scale_jitter_pads_gray_when_shrunk():
    torch.manual_seed(0)
    tr = cp.scale_jitter(S, (0.5, 0.5), flip=False)
    img, _ = tr(tv_tensors.Image(torch.zeros(3, S, S)), target([(2, 2, 8, 8)], [1]))
    assert (img == cp.PAD_GRAY).float().mean() == pytest.approx(0.75)  # 8x8 image in a 16x16 canvas


# ---------------------------------------------------------------------------------------------
# with the detection pipeline, and the notebook's bookkeeping
# ---------------------------------------------------------------------------------------------
def test_batch_transform_through_detection_loader(tmp_path):
    from course_lib import detection as det

    wcfg = det.world_config("smoke", num_images=8, eval_images=4)
    ds = det.DetectionDataset(wcfg, "train", root=tmp_path, transform=cp.scale_jitter(64, cp.LSJ_RANGE))
    paste = cp.SimpleCopyPaste(mode="all", blend=True, sigma=1.0, seed=0)
    loader = det.make_loader(ds, 4, shuffle=True, seed=0, batch_transform=paste)
    n = 0
    for images, targets in loader:
        for img, t in zip(images, targets):
            assert img.shape == (3, 64, 64) and 0 <= float(img.min()) and float(img.max()) <= 1
            assert len(t["boxes"]) == len(t["labels"]) == len(t["masks"]) == len(t["area"]) == len(t["iscrowd"])
            assert torch.equal(t["boxes"], cp.masks_to_boxes(t["masks"]))
            assert (t["area"] > 0).all() and t["labels"].min() >= 1 if len(t["labels"]) else True
            n += 1
    assert n == 8 and paste.stats["images"] == 8 and paste.stats["pasted_objects"] > 0


def _fake_results(P, gains: dict):
    """Runs with made-up APs: SSJ = 10 everywhere, the others SSJ + gains[(aug, fraction)]."""
    runs = {}
    for spec in cp.plan(P):
        key = (spec.aug, spec.fraction) if spec.mode == "random" and spec.blend else (spec.mode, spec.blend)
        ap = 10.0 + gains.get(key, 0.0)
        runs[spec] = [cp.Run(spec, s, {"box_AP": ap + 0.01 * s, "mask_AP": ap - 1 + 0.01 * s}, 1.0, 10.0,
                             False, 100) for s in range(3)]  # three seeds, the same offsets in every arm
    return {"runs": runs}


def test_claims_follow_the_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path))
    from course_lib import config

    P = config.resolve("10_copy_paste", profile="smoke", fractions=(0.1, 0.5, 1.0))
    m = cp.SINGLE_RUN_MARGIN
    good = {("lsj_cp", 0.1): 4 * m, ("lsj_cp", 0.5): 2 * m, ("lsj_cp", 1.0): 2 * m, ("lsj", 0.1): m / 2,
            ("lsj", 0.5): m / 2, ("lsj", 1.0): 1.5 * m, ("one", True): m / 2, ("all", True): m, ("random", False): 2 * m}
    rec = cp.recorder(P)
    cp.record_results(P, _fake_results(P, good), rec, save=False)
    v = {c.id: c.verdict for c in rec.claims}
    assert v["learns"] == "reproduced" and v["cp_gain_low"] == "reproduced" and v["cp_gain_high"] == "reproduced"
    assert v["gain_largest_low_data"] == "reproduced" and v["data_efficiency"] == "reproduced"
    assert v["t10_random_vs_one_box"] == "reproduced" and v["t10_random_vs_all_box"] == "inconclusive"
    assert v["t10_blending"] == "reproduced"
    assert v["cp_over_lsj_box"] == "not reproduced"  # +0.75 every seed: below the margin
    # the headline claims: Copy-Paste over LSJ alone at 10% (+3.5 m), that gain minus the one at 100%
    # (+3 m), LSJ over SSJ at 100% (+1.5 m); each paired per seed, headline
    assert v["cp_helps_low_data"] == v["cp_gain_largest_low_data"] == v["cp_lsj_beats_ssj"] == "reproduced"
    h = {c.id: c for c in rec.claims if c.headline}
    assert set(h) == {"cp_helps_low_data", "cp_gain_largest_low_data", "cp_lsj_beats_ssj"}
    assert h["cp_helps_low_data"].seeds == [P.seed, P.seed + 1, P.seed + 2]
    ref = {c.id: c for c in rec.claims}  # each headline claim pairs its arm with a reference row
    assert ref["box_lsj_10"].kind == "reference" and ref["box_lsj_10"].seeds == h["cp_helps_low_data"].seeds
    np.testing.assert_allclose(np.subtract(h["cp_helps_low_data"].runs, ref["box_lsj_10"].runs), [3.5 * m] * 3)
    np.testing.assert_allclose(np.subtract(h["cp_gain_largest_low_data"].runs, ref["cp_gain_over_lsj_100"].runs),
                               [3 * m] * 3)
    assert "paired" in h["cp_lsj_beats_ssj"].evidence and "unpaired" not in h["cp_lsj_beats_ssj"].evidence
    bad = {("lsj_cp", 0.1): -m, ("lsj_cp", 1.0): -2 * m, ("random", False): 5 * m}
    rec2 = cp.recorder(P)
    cp.record_results(P, _fake_results(P, bad), rec2, save=False)
    v2 = {c.id: c.verdict for c in rec2.claims}
    assert v2["cp_gain_low"] == "not reproduced" and v2["cp_gain_high"] == "not reproduced"
    assert v2["t10_blending"] == "not reproduced" and v2["gain_largest_low_data"] == "inconclusive"
    f1 = cp.tables(P, _fake_results(P, good))["figure1"]
    assert f1.loc["10%", "box gain (CP - SSJ)"] == pytest.approx(4 * m)


def test_plan_and_parameters():
    from course_lib import config

    P = config.resolve("10_copy_paste", profile="study")
    assert P.seeds == 3 and not P.table10 and tuple(P.fractions) == (0.1, 1.0)  # the headline claims' budget
    names = [s.name for s in cp.plan(P)]
    assert len(names) == len(set(names)) == 6             # 3 augmentations x 2 fractions
    P = config.resolve("10_copy_paste", profile="study", fractions=(0.1, 0.5, 1.0), table10=True)
    names = [s.name for s in cp.plan(P)]
    assert len(names) == len(set(names)) == 12            # 3 x 3 grid + one / all / no blending
    assert "lsj_cp@1[one]" in names and "lsj_cp@1[random,no-blend]" in names
    with pytest.raises(config.ParameterError):
        config.resolve("10_copy_paste", profile="study", lsj_range=(2.0, 0.1))
    with pytest.raises(config.ParameterError):
        config.resolve("10_copy_paste", profile="study", paste_fraction=0.0)
    with pytest.raises(config.ParameterError):
        cp.plan(config.resolve("10_copy_paste", profile="study", table10=True, table10_fraction=0.3))


def test_scaling_probe_pairs_the_claims_arms(tmp_path, monkeypatch):
    from course_lib import config

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    P = config.resolve("10_copy_paste", profile="smoke", device="cpu", steps=1, train_images=16, eval_images=4)
    out = cp.scaling_probe(P, "cp_helps_low_data", factors=(1, 2), log=None)
    assert [(r["budget"], r["arm"], r["seed"]) for r in out["rows"]] == [
        (1, "ours", P.seed), (1, "baseline", P.seed), (2, "ours", P.seed), (2, "baseline", P.seed)]
    assert "Copy-Paste" in out["arms"]["ours"] and "Copy-Paste" not in out["arms"]["baseline"]
    with pytest.raises(ValueError, match="cp_lsj_beats_ssj"):
        cp.scaling_probe(P, "cp_box_AP")


def test_scaling_probe_of_the_gain_claim_pairs_two_gains(tmp_path, monkeypatch):
    """cp_gain_largest_low_data: each arm is LSJ + Copy-Paste minus LSJ of one seed at one fraction,
    from the same cached detectors a record trains."""
    from course_lib import config
    from course_lib.papers.copy_paste import experiment as cpx

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    P = config.resolve("10_copy_paste", profile="smoke", device="cpu", steps=1, train_images=16, eval_images=4)
    out = cp.scaling_probe(P, "cp_gain_largest_low_data", factors=(1,), log=None)
    (ours,), (base,) = ([r for r in out["rows"] if r["arm"] == a] for a in ("ours", "baseline"))
    d, g = cp.load_data(P), cpx._grid_specs(P)
    lo, hi = sorted(P.fractions)[0], sorted(P.fractions)[-1]

    def box(aug, f):
        return cp.train_run(P, d, g[(aug, f)], P.seed, log=None)[0].metrics["box_AP"]

    assert ours["value"] == pytest.approx(box("lsj_cp", lo) - box("lsj", lo))
    assert base["value"] == pytest.approx(box("lsj_cp", hi) - box("lsj", hi))
    assert "25%" in out["arms"]["ours"] and "100%" in out["arms"]["baseline"]
    assert set(cp.PROBES) == {"cp_helps_low_data", "cp_gain_largest_low_data", "cp_lsj_beats_ssj"}
