"""The artifact cache: ``cached_model`` trains a model once and reuses its saved weights; atomic
saves, checked loads (``DamagedFileError``) and ``load_cached_artifact``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pickle
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from course_lib import __version__, paths
from course_lib.train.config import RESUME_IGNORES, TrainConfig
from course_lib.train.distributed import _barrier, is_main_process
from course_lib.train.history import History

# Who wants to know which artifacts a piece of code used or built (the course zoo's model cards):
# a stack of lists, each receiving (path, trained_now, train_seconds) for every cached_model call.
_WATCHERS: list[list[tuple[Path, bool, float]]] = []


@contextlib.contextmanager
def watch_artifacts():
    """Collect ``(path, trained_now, train_seconds)`` of every :func:`cached_model` call inside
    the ``with`` block (nested blocks each see their calls)."""
    seen: list[tuple[Path, bool, float]] = []
    _WATCHERS.append(seen)
    try:
        yield seen
    finally:
        _WATCHERS.remove(seen)


def _tell_watchers(path: Path, trained: bool, seconds: float) -> None:
    for w in _WATCHERS:
        w.append((Path(path), trained, float(seconds)))


def _atomic_save(obj: Any, path: Path) -> None:
    """Write to a temporary file next to ``path`` and rename it: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load(path: Path, map_location="cpu") -> dict:
    # our files hold only tensors and plain python values, so the safe loader reads them
    return torch.load(path, map_location=map_location, weights_only=True)


class DamagedFileError(RuntimeError):
    """A checkpoint or cached artifact that exists but cannot be used: ``path`` and ``reason``."""

    def __init__(self, path: Path, reason: str, message: str | None = None):
        self.path, self.reason = Path(path), reason
        super().__init__(message or f"{path} is damaged: {reason}")


# what torch.load raises on a damaged file: a truncated zip ("PytorchStreamReader failed reading
# zip archive"), an empty file (EOFError), garbage (UnpicklingError), a broken record, ...
_LOAD_ERRORS = (RuntimeError, OSError, EOFError, ValueError, KeyError, TypeError, IndexError,
                AttributeError, pickle.UnpicklingError, zipfile.BadZipFile)


def _state_digest(state: dict) -> str:
    """sha256 of a state dict's names, dtypes, shapes and bytes (torch.load does not notice a
    flipped byte inside tensor data; this does)."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k]
        if torch.is_tensor(v):
            h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        else:
            h.update(f"{k}|{v!r}|".encode())
    return h.hexdigest()


def _load_checked(path: Path, map_location="cpu", required: Sequence[str] = ()) -> dict:
    """:func:`_load`, raising :class:`DamagedFileError` (naming ``path``) when the file cannot be
    read, is not a dict with the ``required`` keys, or fails its ``sha256`` (of ``state_dict``).
    A missing file, a permission error or running out of memory are raised as they are."""
    try:
        blob = _load(path, map_location)
    except (FileNotFoundError, PermissionError, torch.OutOfMemoryError):
        raise
    except _LOAD_ERRORS as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
        raise DamagedFileError(path, f"{type(e).__name__}: {first}") from e
    if not isinstance(blob, dict):
        raise DamagedFileError(path, f"holds a {type(blob).__name__}, not a dict")
    missing = [k for k in required if k not in blob]
    if missing:
        raise DamagedFileError(path, f"keys missing: {', '.join(missing)}")
    digest = blob.get("sha256")
    if digest is not None and digest != _state_digest(blob.get("state_dict") or {}):
        raise DamagedFileError(path, "checksum mismatch (the weights changed after saving)")
    return blob


def load_cached_artifact(path: str | os.PathLike, *, required: Sequence[str] = (),
                         map_location="cpu") -> dict | None:
    """Read a file of the artifact cache (``paths.cache_dir()``); ``None`` when it must be built.

    A missing file gives ``None``. A damaged one (torch cannot read it, e.g. truncated: "failed
    reading zip archive"; ``required`` keys missing; ``sha256`` of its ``state_dict`` wrong) is
    reported with a ``RuntimeWarning`` naming it, moved aside to ``<name>.corrupt`` (kept for a
    post-mortem, replaced by the next one) and ``None`` is returned, so the caller rebuilds it.
    The one place :func:`cached_model` (and so ``detection.cached_detector``) reads the cache.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        return _load_checked(path, map_location, required)
    except FileNotFoundError:  # another process moved it aside meanwhile
        return None
    except DamagedFileError as e:
        aside = path.with_name(path.name + ".corrupt")
        if is_main_process():
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, aside)
            warnings.warn(f"cached artifact {path} is damaged ({e.reason}); moved it to "
                          f"{aside.name} and rebuilding it", RuntimeWarning, stacklevel=2)
        return None


# ---------------------------------------------------------------------------------------------
# artifact cache


@dataclass
class CacheInfo:
    """Where a cached model came from. ``history`` is set when ``train`` returned a History."""

    from_cache: bool
    path: Path
    key: str
    train_seconds: float
    history: History | None = None
    result: Any = None
    meta: dict = field(default_factory=dict, repr=False)


def key_value(x: Any) -> Any:
    """``x`` as the plain, complete value a cache key hashes.

    A dataclass gives every field (a :class:`TrainConfig` every field that changes what a run
    computes: not ``RESUME_IGNORES``) under its type name, so a recipe, model or data
    configuration object enters a key whole and a field added later counts without anyone
    listing it. Dicts, lists and tuples recurse; paths, dtypes, inf and NaN become strings; any
    other object its ``repr`` (torchvision transforms, losses).
    """
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        skip = RESUME_IGNORES if isinstance(x, TrainConfig) else ()
        return {"__type__": type(x).__name__,
                **{f.name: key_value(getattr(x, f.name)) for f in dataclasses.fields(x)
                   if f.name not in skip}}
    if isinstance(x, dict):
        return {str(k): key_value(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [key_value(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    text = repr(x)
    if " at 0x" in text:  # a default repr names a memory address: a new key in every run
        raise TypeError(f"cannot put {type(x).__name__} in a cache key: its repr ({text}) is not "
                        f"its configuration; pass a dataclass, a dict or a value")
    return text


def architecture_digest(model: nn.Module) -> str:
    """A hash of a model's architecture: its module tree as printed (layer types, sizes, dropout
    and drop-path rates) and the name, shape and dtype of every parameter and buffer."""
    h = hashlib.sha1(str(model).encode())
    for k, v in model.state_dict().items():
        h.update(f"{k}|{tuple(v.shape)}|{v.dtype}".encode())
    return h.hexdigest()[:16]


def weights_digest(model: nn.Module) -> str:
    """sha256 of a model's weights (names, shapes, bytes): the identity of a trained teacher in
    the key of the students that learn from it."""
    return _state_digest(model.state_dict())


def config_key(name: str, config: Any, architecture: str | None = None) -> str:
    """A short hash of ``name``, the complete ``config`` (:func:`key_value`), the model's
    ``architecture`` (:func:`architecture_digest`) and the course_lib version."""
    blob = json.dumps({"name": name, "config": key_value(config), "architecture": architecture,
                       "course_lib": __version__}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _plain(x: Any) -> Any:
    """Numbers, strings, lists, dicts and CPU tensors only, so the safe loader can read it back."""
    if isinstance(x, History):
        return x.to_dict()
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, np.generic):
        return x.item()
    if torch.is_tensor(x):
        return x.detach().cpu()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, os.PathLike):
        return str(x)
    return repr(x)


def cached_model(
    name: str,
    config: dict,
    build: Callable[[], nn.Module],
    train: Callable[[nn.Module], Any],
    *,
    force: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[nn.Module, CacheInfo]:
    """Train a model once and reuse it in later runs (e.g. a DeiT teacher).

    The file is ``cache_dir/<name>-<config_key>.pt`` (default ``paths.cache_dir()``); the key
    hashes the whole ``config`` (pass configuration objects whole: the recipe's
    :class:`TrainConfig`, the data's and the loss's settings, a teacher's
    :func:`weights_digest`, a code version; see :func:`key_value`) and the built model's
    :func:`architecture_digest`, so no knob can be left out of it. When it
    exists and ``force`` is false, ``build()`` makes the model and the saved weights are loaded:
    no training. Otherwise ``train(model)`` runs and the weights are saved (atomically) with
    metadata: its return value (a History, or plain numbers/strings/tensors), the config and
    the training time, plus a sha256 of the weights. A damaged file (truncated, checksum wrong) is
    reported, moved aside to ``<file>.corrupt`` and rebuilt (:func:`load_cached_artifact`).
    A notebook's ``retrain=True`` parameter maps to ``force``.
    ``train`` should leave the weights to keep in ``model`` (copy EMA weights in if wanted).
    """
    model = build()
    key = config_key(name, config, architecture_digest(model))
    folder = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    path = folder / f"{name}-{key}.pt"
    # read on the CPU: load_state_dict copies to the model's device (and a GPU out of memory is
    # never mistaken for a damaged file)
    blob = None if force else load_cached_artifact(path, required=("state_dict", "meta"))
    if blob is not None:
        model.load_state_dict(blob["state_dict"])
        meta = blob["meta"]
        history = History.from_dict(meta["history"]) if meta.get("history") else None
        _tell_watchers(path, False, meta["train_seconds"])
        return model, CacheInfo(True, path, key, meta["train_seconds"], history,
                                meta.get("result"), meta)

    t0 = time.perf_counter()
    result = train(model)
    seconds = time.perf_counter() - t0
    history = result if isinstance(result, History) else None
    meta = {
        "name": name,
        "key": key,
        "config": _plain(key_value(config)),
        "course_lib_version": __version__,
        "train_seconds": seconds,
        "created": time.time(),
        "history": history.to_dict() if history is not None else None,
        "result": None if history is not None else _plain(result),
    }
    if is_main_process():
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        _atomic_save({"state_dict": state, "meta": meta, "sha256": _state_digest(state)}, path)
    _barrier()
    _tell_watchers(path, True, seconds)
    return model, CacheInfo(False, path, key, seconds, history, meta["result"], meta)
