"""USI (notebook 02): what the notebook's Figure 2 analog shows. The teacher's soft labels on
the test split, the images where they say most beyond the hard label, the corrupted training
labels the teacher repairs, and the teacher's entropy by number of objects; the
notebook draws them."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------
# Figure 2 analog: what the teacher's soft labels know


@torch.no_grad()
def teacher_soft_labels(res: dict[str, Any], tau: float = 1.0) -> torch.Tensor:
    """Teacher probabilities ``softmax(z_t / τ)`` on the test split."""
    return F.softmax(res["teacher_logits"] / tau, dim=1)


def informative_examples(res: dict[str, Any], k: int = 8) -> list[int]:
    """Test images where the teacher's soft label says most beyond the hard label: two visible
    objects and the teacher's second class is the second object (or the highest entropy)."""
    world = getattr(res["data"].test, "data", None)
    probs = teacher_soft_labels(res)
    top2 = probs.topk(2, dim=1)
    if world is None:  # a real dataset: the most spread predictions
        return top2.values[:, 1].argsort(descending=True)[:k].tolist()
    scored = []
    for i in range(len(world)):
        present = set(world.obj_labels[i][world.obj_labels[i] >= 0].tolist())
        second = int(top2.indices[i, 1])
        bonus = 1.0 if len(present) >= 2 and second in present and second != int(world.labels[i]) else 0.0
        scored.append((bonus + float(top2.values[i, 1]), i))
    return [i for _, i in sorted(scored, reverse=True)[:k]]


@torch.no_grad()
def _corrupted_train(res: dict[str, Any], limit: int = 2000):
    """Indices of training images whose label was corrupted, and the teacher's probabilities."""
    ds = res["data"].train
    world = getattr(ds, "data", None)
    if world is None:  # a real dataset: the clean labels are unknown
        return torch.empty(0, dtype=torch.long), torch.empty(0, res["data"].num_classes)
    idx = (world.labels != world.clean_labels).nonzero().squeeze(1)[:limit]
    if len(idx) == 0:
        return idx, torch.empty(0, res["data"].num_classes)
    x = torch.stack([ds.normalize(world.images[int(i)]) for i in idx])
    teacher = res["teacher"].eval()
    dev = next(teacher.parameters()).device
    probs = torch.cat([F.softmax(teacher(x[j:j + 512].to(dev)).float(), 1).cpu()
                       for j in range(0, len(x), 512)])
    return idx, probs


def teacher_fixes(res: dict[str, Any]) -> float:
    """On training images with a corrupted label, how often (%) the teacher's argmax is the true
    class: how much of the label noise KD's target repairs."""
    idx, probs = _corrupted_train(res)
    if len(idx) == 0:
        return float("nan")
    clean = res["data"].train.data.clean_labels[idx]
    return float((probs.argmax(1) == clean).float().mean() * 100)


def label_noise_examples(res: dict[str, Any], k: int = 8) -> list[dict[str, Any]]:
    """``k`` training images with a corrupted label: image (normalised), label, clean label,
    the teacher's class and probability."""
    ds = res["data"].train
    idx, probs = _corrupted_train(res, limit=k)
    return [{"image": ds.normalize(ds.data.images[int(i)]), "label": int(ds.data.labels[i]),
             "clean": int(ds.data.clean_labels[i]), "teacher": int(p.argmax()), "prob": float(p.max())}
            for i, p in zip(idx, probs)]


def entropy_by_objects(res: dict[str, Any]):
    """Mean teacher entropy (nats) and top-1 on test images with one vs. two objects."""
    import pandas as pd

    world = getattr(res["data"].test, "data", None)
    probs = teacher_soft_labels(res)
    ent = -(probs * probs.clamp_min(1e-12).log()).sum(1)
    n_obj = (torch.as_tensor((world.obj_labels >= 0).sum(1)) if world is not None
             else torch.zeros(len(probs), dtype=torch.long))  # real data: one row, "0" = unknown
    correct = (probs.argmax(1) == res["targets"]).float()
    rows = []
    for n in sorted(set(n_obj.tolist())):
        m = n_obj == n
        rows.append({"objects": int(n), "images": int(m.sum()), "teacher entropy (nats)": float(ent[m].mean()),
                     "teacher top-1 (%)": float(correct[m].mean() * 100),
                     "teacher top-1 prob.": float(probs[m].max(1).values.mean())})
    return pd.DataFrame(rows).set_index("objects")
