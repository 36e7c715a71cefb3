import pytest
import torch

from course_lib import data, world
from course_lib.world import WorldConfig, load_world, render


@pytest.fixture(scope="module")
def small():
    return render(WorldConfig(num_images=64, eval_images=32, image_size=32, num_classes=8, objects=(1, 3),
                              occlusion=0.5, clutter=1), "train")


def test_shapes_and_types(small):
    n, S = 64, 32
    assert small.images.shape == (n, 3, S, S) and small.images.dtype == torch.uint8
    assert small.instance_map.shape == (n, S, S) and small.stuff.shape == (n, S, S)
    assert small.obj_labels.shape == (n, 3) and small.boxes.shape == (n, 3, 4)
    assert len(small.captions) == n and all(isinstance(c, str) and c for c in small.captions)
    assert int(small.stuff.max()) < len(world.STUFF_NAMES)
    assert small.labels.min() >= 0 and small.labels.max() < 8


def test_deterministic_and_split_dependent():
    cfg = WorldConfig(num_images=16, eval_images=16, image_size=32)
    a, b = render(cfg, "train"), render(cfg, "train")
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert not torch.equal(a.images, render(cfg, "val").images)
    assert not torch.equal(a.images, render(cfg.replace(seed=1), "train").images)


def test_label_is_largest_visible_object_and_boxes_fit_masks(small):
    for i in range(len(small)):
        masks, labels, boxes = small.masks(i)
        areas = masks.flatten(1).sum(1)
        assert small.clean_labels[i] == labels[areas.argmax()]
        for m, b in zip(masks, boxes):
            ys, xs = m.nonzero(as_tuple=True)
            assert b.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_objects_are_drawn_with_their_colour(small):
    # pixels inside an instance differ from the background pixels of another render without objects
    i = 0
    masks, _, _ = small.masks(i)
    inside = small.images[i][:, masks[0]].float().mean(1)
    outside = small.images[i][:, ~masks.any(0)].float().mean(1)
    assert (inside - outside).abs().max() > 5


def test_semantic_map(small):
    sem = small.semantic(0)
    fg = small.instance_map[0] > 0
    assert (sem[fg] >= len(world.STUFF_NAMES)).all() and (sem[~fg] < len(world.STUFF_NAMES)).all()


def test_label_noise_and_imbalance():
    cfg = WorldConfig(num_images=2000, image_size=32, num_classes=6, label_noise=0.4, noise=0.0)
    d = render(cfg, "train")
    flipped = (d.labels != d.clean_labels).float().mean().item()
    assert 0.25 < flipped < 0.45  # 40% resampled, 1/6 of them land on the same class
    imb = render(WorldConfig(num_images=3000, image_size=32, num_classes=6, imbalance=2.0), "train")
    counts = imb.class_counts()
    assert counts[0] > 10 * counts[-1]
    tiers = world.frequency_tiers(counts)
    assert tiers[0] == "frequent" and tiers[-1] == "rare"


def test_time_drifts_appearance():
    base = WorldConfig(num_images=200, image_size=32, noise=0.0)
    a = render(base, "train").images.float().mean((0, 2, 3))
    b = render(base.replace(time=10.0), "train").images.float().mean((0, 2, 3))
    assert (a - b).abs().max() > 3


def test_captions_mention_objects_and_relations():
    d = render(WorldConfig(num_images=50, image_size=32, objects=(2, 2), num_classes=12), "train")
    rel = ("left of", "right of", "above", "below")
    assert sum(any(r in c for r in rel) for c in d.captions) > 40
    for i, c in enumerate(d.captions[:10]):
        assert world.SHAPE_NAMES[int(d.clean_labels[i])] in c


def test_cache_roundtrip(tmp_path):
    cfg = WorldConfig(num_images=20, eval_images=10, image_size=32)
    a = load_world(cfg, "train", root=tmp_path)
    files = list((tmp_path / "world").glob("*.npz"))
    assert len(files) == 1
    b = load_world(cfg, "train", root=tmp_path)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert torch.equal(a.instance_map, b.instance_map)


def test_config_validation():
    with pytest.raises(ValueError, match="image_size"):
        WorldConfig(image_size=8)
    with pytest.raises(ValueError, match="num_classes"):
        WorldConfig(num_classes=99)
    with pytest.raises(ValueError, match="occlusion"):
        WorldConfig(occlusion=2.0)


def test_get_dataset_world(tmp_path):
    ds = data.get_dataset("world", "val", root=tmp_path, num_images=16, eval_images=8, image_size=32)
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    assert len(ds) == 8
    with pytest.raises(ValueError, match="unknown dataset"):
        data.get_dataset("imagenet")
    with pytest.raises(ValueError, match="split"):
        data.get_dataset("world", "holdout")
