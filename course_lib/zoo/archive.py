"""Moving a zoo between machines: one ``.tar.gz`` with a manifest of sha256 checksums.

An organizer builds the zoo once (on a GPU box in minutes, or overnight on a laptop) and shares
one file; every member of the group imports it. :func:`export` packs the model cards of a profile
(or all) and the artifact files they list, plus ``MANIFEST.json`` (``{"files": {name: sha256}}``).
:func:`import_archive` refuses the whole archive before writing anything when a member is not a
plain file, has an absolute name, climbs out with ``..``, is not a card (``zoo/*.json``) or an
artifact (``*.pt`` at the top), or is not in the manifest; it then checks every checksum and
moves the files into the cache atomically (a temporary file in the same folder, renamed).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from course_lib.zoo.cards import file_sha256, read_card, zoo_dir

MANIFEST = "MANIFEST.json"
_CARD = re.compile(r"^zoo/[A-Za-z0-9_.\-]+\.json$")
_ARTIFACT = re.compile(r"^[A-Za-z0-9_.\-]+\.pt$")


class UnsafeArchive(ValueError):
    """An archive member that could write outside the cache, or is not what a zoo holds."""


def export(out: str | os.PathLike, profile: str | None = None, cache_dir=None) -> dict:
    """Write the built entries (of ``profile``, or all) to ``out``; returns the manifest."""
    zdir = zoo_dir(cache_dir)
    root = zdir.parent
    cards = sorted(p for p in zdir.glob("*.json")
                   if profile is None or (read_card(p) or {}).get("profile") == profile)
    if not cards:
        raise FileNotFoundError(f"no model cards in {zdir}" + (f" for profile {profile!r}" if profile else "")
                                + ": build the zoo first (make zoo)")
    files: dict[str, str] = {}
    for c in cards:
        files[f"zoo/{c.name}"] = file_sha256(c)
        for a in (read_card(c) or {}).get("artifacts", []):
            f = root / a["file"]
            if not f.is_file():
                raise FileNotFoundError(f"{c.name} lists {f}, which is missing: rebuild the zoo")
            files[a["file"]] = file_sha256(f)
    manifest = {"format": "course-zoo-1", "profile": profile, "files": files}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        data = json.dumps(manifest, indent=2).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for name in files:
            tar.add(root / name, arcname=name, recursive=False)
    os.replace(tmp, out)
    return manifest


def _check_member(m: tarfile.TarInfo) -> None:
    name = m.name
    p = PurePosixPath(name)
    if not m.isfile():
        raise UnsafeArchive(f"archive member {name!r} is not a plain file (links, devices and "
                            "folders are refused)")
    if p.is_absolute() or ".." in p.parts or "\\" in name or name.startswith("/"):
        raise UnsafeArchive(f"archive member {name!r} would be written outside the cache")
    if name != MANIFEST and not (_CARD.match(name) or _ARTIFACT.match(name)):
        raise UnsafeArchive(f"archive member {name!r} is neither a model card (zoo/*.json) nor an "
                            "artifact (*.pt)")


def import_archive(path: str | os.PathLike, cache_dir=None) -> list[str]:
    """Install an :func:`export` archive into the cache; returns the names installed."""
    zdir = zoo_dir(cache_dir)
    root = zdir.parent
    with tarfile.open(path, "r:*") as tar:
        members = tar.getmembers()
        for m in members:
            _check_member(m)
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise UnsafeArchive("archive has duplicate members")
        if MANIFEST not in names:
            raise UnsafeArchive(f"archive has no {MANIFEST}")
        manifest = json.loads(tar.extractfile(MANIFEST).read().decode())
        files = manifest.get("files", {})
        extra = sorted(set(names) - set(files) - {MANIFEST})
        if extra:
            raise UnsafeArchive(f"archive members not in its manifest: {', '.join(extra)}")
        absent = sorted(set(files) - set(names))
        if absent:
            raise UnsafeArchive(f"manifest lists files the archive lacks: {', '.join(absent)}")
        zdir.mkdir(parents=True, exist_ok=True)
        staged = []
        try:
            for m in members:
                if m.name == MANIFEST:
                    continue
                dest = root / m.name
                fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
                h = hashlib.sha256()
                with os.fdopen(fd, "wb") as out, tar.extractfile(m) as src:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        h.update(chunk)
                        out.write(chunk)
                staged.append((Path(tmp), dest))
                if h.hexdigest() != files[m.name]:
                    raise ValueError(f"{m.name}: checksum differs from the archive's manifest "
                                     "(damaged in transit?); nothing was installed")
        except BaseException:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
    # artifacts first, cards last: a card never points at a file that is not there yet
    for tmp, dest in sorted(staged, key=lambda s: s[1].suffix == ".json"):
        os.replace(tmp, dest)
    return [dest.relative_to(root).as_posix() for _, dest in staged]
