"""ALBEF's data: image-text pairs (:class:`PairData`), the noisy "web" pairs made from clean
captions (:func:`corrupt_captions`), the offline world's three splits of the Table 1 protocol
(:func:`world_data`) and the official COCO / Flickr30k json files (:func:`real_data`)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from course_lib import paths

from .tokenizer import CaptionTokenizer


# ==============================================================================================
# Noisy "web" pairs
# ==============================================================================================
def corrupt_captions(captions: Sequence[str], fraction: float, seed: int = 0,
                     colors: Sequence[str] | None = None, shapes: Sequence[str] | None = None,
                     swap_share: float = 0.5) -> tuple[list[str], np.ndarray]:
    """Web-like noise: a ``fraction`` of the pairs gets a wrong caption.

    Of the corrupted pairs, ``swap_share`` get the caption of another (random) image: the text
    is unrelated to the image, as for many web alt-texts; the rest are *partially* wrong: every
    colour and shape word is replaced, with probability 1/2 each (at least one), by another word
    of its kind: the text is about the image but says something false. Returns the new captions
    and a code per pair: 0 clean, 1 swapped, 2 partially wrong.
    """
    from course_lib.world import COLOR_NAMES, SHAPE_NAMES

    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction}: allowed [0, 1]")
    colors = list(colors or COLOR_NAMES)
    shapes = list(shapes or SHAPE_NAMES)
    kinds = {w: colors for w in colors} | {w: shapes for w in shapes}
    rng = np.random.default_rng([seed, 1107])
    n = len(captions)
    out = list(captions)
    code = np.zeros(n, dtype=np.int64)
    chosen = rng.permutation(n)[: int(round(fraction * n))]
    swap = rng.random(len(chosen)) < swap_share
    for i, s in zip(chosen, swap):
        if s or n == 1:
            for _ in range(8):  # another image's caption, not by chance the same text
                j = int(rng.integers(n))
                if j != i and captions[j] != captions[i]:
                    break
            out[i], code[i] = captions[j], 1
            continue
        words = captions[i].split(" ")
        spots = [k for k, w in enumerate(words) if w.strip(",") in kinds]
        if not spots:  # nothing to falsify: swap instead
            out[i], code[i] = captions[int(rng.integers(n))], 1
            continue
        change = [k for k in spots if rng.random() < 0.5] or [spots[int(rng.integers(len(spots)))]]
        for k in change:
            w = words[k].strip(",")
            pool = [x for x in kinds[w] if x != w]
            words[k] = words[k].replace(w, pool[int(rng.integers(len(pool)))])
        out[i], code[i] = " ".join(words), 2
    return out, code


# ==============================================================================================
# Data
# ==============================================================================================
@dataclass
class PairData:
    """Image-text pairs. ``images``: uint8 (N, 3, S, S) in memory, or ``None`` with ``paths``
    (files read per batch; real data). ``captions[j]`` belongs to image ``image_of[j]``
    (several captions per image for COCO / Flickr30k, one for the world). ``clean`` holds the
    uncorrupted captions and ``noise`` the corruption code per caption (0 clean, 1 swapped,
    2 partially wrong)."""

    images: torch.Tensor | None
    captions: list[str]
    image_of: np.ndarray
    clean: list[str] | None = None
    noise: np.ndarray | None = None
    paths: list[str] | None = None
    image_size: int = 32
    name: str = "world"

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def num_images(self) -> int:
        return len(self.images) if self.images is not None else len(self.paths)

    def load_images(self, index: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """uint8 images (n, 3, S, S) for image indices."""
        index = torch.as_tensor(index, dtype=torch.long)
        if self.images is not None:
            return self.images[index]
        return torch.stack([_read_image(self.paths[int(i)], self.image_size) for i in index])

    def img2txt(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in range(self.num_images)]
        for j, i in enumerate(self.image_of):
            out[int(i)].append(j)
        return out


def _read_image(path: str, size: int) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms import v2

    img = Image.open(path).convert("RGB")
    t = v2.functional.pil_to_tensor(img)
    t = v2.functional.resize(t, size, antialias=True)
    return v2.functional.center_crop(t, size)


def world_config(profile: str = "study", **overrides):
    """The world notebook 01 trains on: one or two objects of 6 shapes, of 8 colours and 3 sizes,
    on 8 kinds of texture; the renderer's caption names them, their relation and the background.
    Calibrated in ``benchmarks/calibrate_albef.py``."""
    from course_lib.world import for_profile

    study = dict(num_images=3000, eval_images=1000, image_size=32, num_classes=6, objects=(1, 2),
                 scale=(0.4, 0.75), occlusion=0.0, bg_contrast=0.5, split_bg=0.0, seed=0)
    return for_profile(profile, study, {"smoke": dict(num_images=256, eval_images=128)}, **overrides)


@dataclass
class ALBEFData:
    """The three sets of the Table 1 protocol and the tokenizer trained on the pre-training text."""

    pretrain: PairData
    finetune: PairData
    test: PairData
    tok: CaptionTokenizer
    noise: float
    key: dict = field(default_factory=dict)
    world: Any = None


def world_data(wcfg, noise: float = 0.0, data_root=None, n_test: int | None = None, vocab_size: int = 256,
               max_len: int = 24, noise_seed: int = 0) -> ALBEFData:
    """The world's splits as pairs: pre-training = train split with a ``noise`` fraction of
    corrupted captions; fine-tuning = val split (clean); test = the first ``n_test`` test images.
    The tokenizer is trained on the pre-training captions (clean and noisy settings use the same
    words, so one vocabulary serves both)."""
    from course_lib.world import load_world

    tr, va, te = (load_world(wcfg, s, data_root) for s in ("train", "val", "test"))
    noisy, code = corrupt_captions(tr.captions, noise, seed=noise_seed, shapes=wcfg.class_names)
    S = wcfg.image_size
    n_test = len(te) if n_test is None else min(n_test, len(te))
    pre = PairData(tr.images, noisy, np.arange(len(tr)), clean=list(tr.captions), noise=code, image_size=S)
    fin = PairData(va.images, list(va.captions), np.arange(len(va)), image_size=S)
    tst = PairData(te.images[:n_test], list(te.captions[:n_test]), np.arange(n_test), image_size=S)
    tok = CaptionTokenizer.train(list(tr.captions) + noisy, vocab_size=vocab_size, max_len=max_len)
    key = {"world": wcfg.key("train"), "noise": noise, "noise_seed": noise_seed, "n_test": n_test,
           "tok": [tok.backend, max_len, tok.fingerprint()]}
    return ALBEFData(pre, fin, tst, tok, noise, key, world=wcfg)


def pre_caption(caption: str, max_words: int = 30) -> str:
    """Caption clean-up of the official datasets: lower case, punctuation dropped, at most
    ``max_words`` words."""
    caption = re.sub(r"([,.'!?\"()*#:;~])", "", caption.lower()).replace("-", " ").replace("/", " ")
    words = re.sub(r"\s{2,}", " ", caption).strip().split(" ")
    return " ".join(words[:max_words])


def _read_json_pairs(json_path: Path, image_root: Path, image_size: int, max_items: int | None = None,
                     name: str = "") -> PairData:
    """Official ALBEF json (a list of {"image": relative path, "caption": str or list of str})."""
    items = json.loads(Path(json_path).read_text())
    if max_items is not None:
        items = items[:max_items]
    index: dict[str, int] = {}
    paths_, caps, owner = [], [], []
    for it in items:
        p = it["image"]
        if p not in index:
            index[p] = len(paths_)
            paths_.append(str(image_root / p))
        for c in (it["caption"] if isinstance(it["caption"], list) else [it["caption"]]):
            caps.append(pre_caption(c))
            owner.append(index[p])
    return PairData(None, caps, np.asarray(owner), paths=paths_, image_size=image_size, name=name)


REAL_LAYOUT = """The paper profile reads the official ALBEF json files and the images:
  {root}/albef_data/coco_train.json, flickr30k_train.json, flickr30k_test.json   (ALBEF's data.tar.gz)
  {root}/coco/train2014/, {root}/coco/val2014/        (COCO 2014 images: catalog entries coco2014_*)
  {root}/flickr30k/flickr30k-images/                  (Flickr30k images: a manual download, see the catalog)
Fetch them with `python data_scripts/fetch.py NAME` (names in /tmp/h5/catalog_albef.json until the
catalog holds them) or place them by hand."""


def real_data(image_size: int = 224, data_root=None, noise: float = 0.0, vocab_size: int = 30522,
              max_len: int = 32, max_items: int | None = None) -> ALBEFData:
    """Paper profile: pre-train on COCO captions (Karpathy train), fine-tune on Flickr30k train,
    test on the Flickr30k 1K test set (Table 1's retrieval numbers). Fails with a clear message
    when the files are absent."""
    root = paths.data_root(data_root)
    need = [root / "albef_data" / f for f in ("coco_train.json", "flickr30k_train.json", "flickr30k_test.json")]
    need += [root / "coco" / "train2014", root / "coco" / "val2014", root / "flickr30k" / "flickr30k-images"]
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        raise FileNotFoundError("ALBEF's paper profile needs real data; missing: " + ", ".join(missing)
                                + "\n" + REAL_LAYOUT.format(root=root))
    pre = _read_json_pairs(need[0], root / "coco", image_size, max_items, "coco")
    fin = _read_json_pairs(need[1], root / "flickr30k", image_size, max_items, "flickr30k")
    tst = _read_json_pairs(need[2], root / "flickr30k", image_size, None, "flickr30k_test")
    if noise > 0:
        pre.clean = list(pre.captions)
        pre.captions, pre.noise = corrupt_captions(pre.captions, noise, swap_share=1.0)
    tok = CaptionTokenizer.train(pre.captions, vocab_size=vocab_size, max_len=max_len, backend="wordpiece")
    return ALBEFData(pre, fin, tst, tok, noise, {"real": [str(p) for p in need], "noise": noise,
                                                 "max_items": max_items, "tok": tok.fingerprint()})


