"""The course zoo: the pretrained models the notebooks reuse, built once.

Two floors:

* **artifacts** (this module): every model a notebook trains through ``train.cached_model``
  (teachers, students, ladder steps, DINO and MAE backbones, detectors) is one file in
  ``paths.cache_dir()``, named ``<name>-<key>.pt``, holding its weights (checksummed) and its
  metadata: the complete configuration it was keyed on, the course_lib version, the training
  time and history. :func:`artifacts` lists them.
* **entries** (:mod:`.registry`, :mod:`.cards`, :mod:`.archive`): the named models the course
  pretrains for its notebooks (a DINO ViT, teachers, pretrained backbones), each with its data,
  recipe, budget and code version; :func:`build` trains them through the notebooks' own code and
  writes a model card (time, device, the entry's quality figures, checksummed artifacts);
  :func:`ensure` is what a notebook calls before it needs them; :func:`export` and
  :func:`import_archive` move a built zoo between machines.

Command line: ``python -m course_lib zoo list | build [NAMES] [--profile] [--device] | export
FILE | import FILE | artifacts``; ``make zoo PROFILE=study``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from course_lib import paths

from course_lib.zoo.archive import UnsafeArchive, export, import_archive  # noqa: E402
from course_lib.zoo.cards import (  # noqa: E402
    ZooMissing,
    build,
    build_one,
    card_path,
    ensure,
    list_rows,
    read_card,
    status,
    summary,
)
from course_lib.zoo.registry import ENTRIES, Entry, entries, get  # noqa: E402

__all__ = ["Artifact", "artifacts", "format_table", "Entry", "ENTRIES", "entries", "get", "build",
           "build_one", "ensure", "status", "card_path", "read_card", "list_rows", "summary", "ZooMissing",
           "export", "import_archive", "UnsafeArchive"]


@dataclass
class Artifact:
    """One cached model: ``name`` (its cache name), ``key`` (hash of its configuration),
    ``path``, ``size_mb``, ``train_seconds``, ``created`` (Unix time), ``course_lib_version``
    and ``config`` (the configuration it was keyed on, as plain values); ``damaged`` names why a
    file cannot be read (it is rebuilt the next time it is asked for)."""

    name: str
    key: str
    path: Path
    size_mb: float
    train_seconds: float = float("nan")
    created: float = float("nan")
    course_lib_version: str = ""
    config: dict | None = None
    damaged: str = ""


def _read(path: Path) -> Artifact:
    stem = path.stem
    name, _, key = stem.rpartition("-")
    art = Artifact(name or stem, key, path, path.stat().st_size / 2**20)
    try:  # memory-mapped: the metadata is read, the weights stay on disk
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        meta = blob["meta"]
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported, not raised
        art.damaged = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        return art
    art.name, art.key = meta.get("name", art.name), meta.get("key", art.key)
    art.train_seconds = float(meta.get("train_seconds", float("nan")))
    art.created = float(meta.get("created", float("nan")))
    art.course_lib_version = str(meta.get("course_lib_version", ""))
    art.config = meta.get("config")
    return art


def artifacts(cache_dir: str | os.PathLike | None = None) -> list[Artifact]:
    """The cached models in ``cache_dir`` (default ``paths.cache_dir()``), by name."""
    folder = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    if not folder.is_dir():
        return []
    return sorted((_read(p) for p in folder.glob("*.pt") if p.is_file()),
                  key=lambda a: (a.name, a.created))


def format_table(items: list[Artifact]) -> str:
    """A plain-text table of ``items`` (name, key, size, training time, date)."""
    if not items:
        return "no cached models yet"
    rows = [("name", "key", "MB", "trained in", "created")]
    for a in items:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(a.created)) if a.created == a.created else "?"
        took = f"{a.train_seconds:.0f} s" if a.train_seconds == a.train_seconds else "?"
        rows.append((a.name, a.key, f"{a.size_mb:.1f}", took if not a.damaged else "damaged", when))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
