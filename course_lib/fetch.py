"""Real datasets: the catalog, a resumable checksummed download and a safe extraction.

``catalog.json`` (next to this file) lists each dataset: its mirrors, archive name, checksum,
size, licence note and the folder that appears once it is unpacked (the one torchvision
reads). ``fetch(name, root)`` downloads the archive into ``ROOT/downloads/`` and unpacks it
into ``ROOT``; the command line is ``python data_scripts/fetch.py NAME [NAME ...] --root DIR``.

Guarantees:

* a download is written to ``FILE.part`` and resumed with an HTTP ``Range`` request when run
  again; only a file whose checksum matches is renamed (``os.replace``) to ``FILE``;
* a file that fails its checksum is removed (``ChecksumError``);
* an archive member that would land outside the target folder (absolute path, ``..``, a
  symlink or hard link pointing outside) raises ``UnsafeArchiveError`` before anything is
  written (and tarfile's ``filter="data"`` is used where Python has it);
* an archive that cannot be read (truncated, an HTML page saved in its place) raises
  ``BrokenArchiveError``, whose message names the file and says to delete it and fetch again;
* all archives of a dataset are unpacked into one temporary folder ``ROOT/.NAME.*.extracting``
  and moved into place only once every one is in; a failure leaves nothing behind. The
  marker ``<extract_to>/.fetch-complete.json`` (with the archives' checksums) is written
  last: a folder without a valid marker is not ready, and ``fetch`` unpacks it again.

Entries that need a registration (``"manual": "..."``) are not downloaded: ``fetch`` raises
``ManualDownloadRequired`` with the instructions, unless the folder is already there.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import lzma
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Sequence

from . import paths

CATALOG_PATH = Path(__file__).with_name("catalog.json")
CHUNK_SIZE = 1 << 16
DEFAULT_TIMEOUT = (15.0, 60.0)  # (connect, read) seconds, as requests takes them
USER_AGENT = "course_lib-fetch/0.1 (Vision Paper Study Notebooks)"
CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha256", "sha512")

# The standard library's tar extraction filter (PEP 706): Python >= 3.10.12 / 3.11.4 / 3.12.
_HAS_TAR_FILTER = hasattr(tarfile, "data_filter")
_TAR_FILTER_ERROR = getattr(tarfile, "FilterError", ())  # () catches nothing
# What reading a truncated or garbled archive raises (tarfile and gzip let EOFError through).
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError,
                   gzip.BadGzipFile)
MARKER = ".fetch-complete.json"  # in the dataset folder, written once every archive is in place


class FetchError(RuntimeError):
    """Base class of the errors of this module."""


class CatalogError(FetchError, ValueError):
    """``catalog.json`` is malformed or names an unknown dataset."""


class DownloadError(FetchError):
    """Every mirror failed (HTTP error, connection lost, size mismatch, ...)."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the catalog checksum (the bad file was removed)."""


class UnsafeArchiveError(FetchError):
    """An archive member would be written outside the target folder."""


class BrokenArchiveError(FetchError, ValueError):
    """A downloaded archive cannot be read (truncated, garbled, not an archive at all)."""


class ManualDownloadRequired(FetchError):
    """The dataset needs a manual step (registration, licence form); the message says which."""


# ---------------------------------------------------------------------------------------------
# catalog


def _parse_checksum(checksum: str) -> tuple[str, str]:
    algo, sep, digest = str(checksum).partition(":")
    algo = algo.lower()
    if not sep or algo not in CHECKSUM_ALGORITHMS or not digest:
        raise CatalogError(f"checksum {checksum!r} is not 'ALGO:HEX' with ALGO in {CHECKSUM_ALGORITHMS}")
    try:
        int(digest, 16)
    except ValueError:
        raise CatalogError(f"checksum {checksum!r}: {digest!r} is not hexadecimal") from None
    if len(digest) != hashlib.new(algo).digest_size * 2:
        raise CatalogError(f"checksum {checksum!r}: wrong length for {algo}")
    return algo, digest.lower()


def file_specs(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The archives of a catalog entry: its ``files`` list, or the entry itself; none if manual."""
    if "files" in entry:
        return list(entry["files"])
    return [entry] if "urls" in entry else []


def _validate(entry: dict[str, Any]) -> None:
    name = entry.get("name", "?")
    for key in ("name", "description", "licence", "extract_to", "notes"):
        if not isinstance(entry.get(key), str):
            raise CatalogError(f"catalog entry {name!r}: field {key!r} missing or not a string")
    _check_relative(entry["extract_to"], f"catalog entry {name!r}: extract_to")
    if entry.get("manual") is not None and not isinstance(entry["manual"], str):
        raise CatalogError(f"catalog entry {name!r}: 'manual' must be a string of instructions")
    specs = file_specs(entry)
    if not specs and not entry.get("manual"):
        raise CatalogError(f"catalog entry {name!r} has neither urls nor manual instructions")
    for spec in specs:
        urls = spec.get("urls")
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise CatalogError(f"catalog entry {name!r}: 'urls' must be a non-empty list of strings")
        fname = spec.get("filename")
        if not isinstance(fname, str) or not fname or "/" in fname or "\\" in fname or fname in (".", ".."):
            raise CatalogError(f"catalog entry {name!r}: 'filename' must be a plain file name")
        _parse_checksum(spec.get("checksum", ""))
        size = spec.get("size")
        if size is not None and (not isinstance(size, int) or size <= 0):
            raise CatalogError(f"catalog entry {name!r}: 'size' must be a positive integer (bytes)")
        if spec.get("unpack_into"):
            _check_relative(spec["unpack_into"], f"catalog entry {name!r}: unpack_into")
    if entry.get("unpack_into"):
        _check_relative(entry["unpack_into"], f"catalog entry {name!r}: unpack_into")
    intos = [PurePosixPath(_into(entry, spec)).parts for spec in specs]
    if any(a != b and b[: len(a)] == a for a in intos for b in intos):  # one would clobber the other
        raise CatalogError(f"catalog entry {name!r}: its archives must unpack into one folder or disjoint ones")


def _into(entry: dict[str, Any], spec: dict[str, Any]) -> str:
    """The folder, relative to the data root, that the archive ``spec`` is unpacked into."""
    return spec.get("unpack_into") or entry.get("unpack_into") or ""


def _check_relative(p: str, what: str) -> None:
    pp = PurePosixPath(p)
    if pp.is_absolute() or ".." in pp.parts or PureWindowsPath(p).drive or not p:
        raise CatalogError(f"{what} {p!r} must be a relative path inside the data root")


def load_catalog(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """The catalog as ``{name: entry}`` (validated). ``path`` defaults to ``CATALOG_PATH``."""
    path = Path(path) if path is not None else Path(CATALOG_PATH)
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    entries = raw["datasets"] if isinstance(raw, dict) else raw
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        _validate(entry)
        if entry["name"] in out:
            raise CatalogError(f"catalog {path}: dataset {entry['name']!r} listed twice")
        out[entry["name"]] = entry
    return out


def _entry(name: str) -> dict[str, Any]:
    catalog = load_catalog()
    if name not in catalog:
        raise CatalogError(f"unknown dataset {name!r}; the catalog has: {', '.join(sorted(catalog))}")
    return catalog[name]


# ---------------------------------------------------------------------------------------------
# download


def file_checksum(path: str | os.PathLike, algo: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: str | os.PathLike, checksum: str) -> bool:
    """Whether the file's digest matches ``checksum`` (``"md5:..."`` / ``"sha256:..."``)."""
    algo, digest = _parse_checksum(checksum)
    return file_checksum(path, algo) == digest


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _stream(url: str, part: Path, *, size: int | None, progress: bool, timeout) -> None:
    """Append ``url`` to ``part``, resuming from its current length; raise on any failure."""
    import requests
    from tqdm.auto import tqdm

    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:  # longer than the real file: cannot be a prefix
        part.unlink()
        offset = 0
    if size is not None and offset == size:  # complete already; the checksum decides
        return
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with requests.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True) as r:
        if r.status_code == 416 and offset:  # range not satisfiable: start over
            r.close()
            part.unlink()
            return _stream(url, part, size=size, progress=progress, timeout=timeout)
        r.raise_for_status()
        length = r.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        mode = "ab"
        if offset and r.status_code == 206:
            content_range = r.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                raise DownloadError(f"{url}: server answered Range {offset}- with {content_range!r}")
        elif offset:  # 200: the server ignored the Range header; start from scratch
            _say(f"{url}: server does not resume (HTTP {r.status_code}); restarting", progress)
            mode, offset = "wb", 0
        total = offset + length if length is not None else size
        if size is not None and total is not None and total != size:
            raise DownloadError(f"{url}: server reports {total} bytes, the catalog says {size}")
        need = (total or 0) - offset
        free = shutil.disk_usage(part.parent).free
        if need > free:
            raise DownloadError(f"not enough disk space in {part.parent}: need {need} bytes, {free} free")
        with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=part.name[: -len(".part")],
                                         disable=not progress, leave=False) as bar:
            for chunk in r.iter_content(chunk_size=CHUNK_SIZE):
                f.write(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    got = part.stat().st_size
    if size is not None and got < size:
        raise DownloadError(f"{url}: connection ended after {got} of {size} bytes")


def download(
    url: str | Sequence[str],
    dest: str | os.PathLike,
    *,
    checksum: str,
    size: int | None = None,
    progress: bool = True,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
) -> Path:
    """Download ``url`` (or the first mirror of a list that works) to ``dest``; return ``dest``.

    Skips the download when ``dest`` exists with the right checksum (a wrong one is replaced).
    Bytes go to ``dest.part``; an interrupted download leaves it there and the next call
    resumes it with ``Range`` (restarting when the server answers 200 instead of 206). Only
    a verified file is renamed to ``dest``. A checksum mismatch removes the bad file and
    raises ``ChecksumError``; any other failure of every mirror raises ``DownloadError``.
    """
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise ValueError("no URL given")
    algo, digest = _parse_checksum(checksum)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        if file_checksum(dest, algo) == digest:
            _say(f"{dest} already present (checksum ok)", progress)
            return dest
        _say(f"{dest} exists but its checksum is wrong; downloading it again", progress)
        dest.unlink()

    errors: list[tuple[str, Exception]] = []
    for u in urls:
        for attempt in (1, 2):  # a resumed file that fails its checksum gets one fresh try
            resumed = part.exists() and part.stat().st_size > 0
            try:
                _stream(u, part, size=size, progress=progress, timeout=timeout)
            except FetchError as e:
                errors.append((u, e))
                break
            except Exception as e:  # requests' errors, OSError, ...
                errors.append((u, DownloadError(f"{type(e).__name__}: {e}")))
                break
            got = file_checksum(part, algo)
            if got == digest:
                os.replace(part, dest)
                return dest
            part.unlink()
            if resumed and attempt == 1:
                _say(f"{dest.name}: resumed file failed its checksum; downloading from scratch", progress)
                continue
            errors.append((u, ChecksumError(f"expected {algo}:{digest}, got {algo}:{got}")))
            break
    lines = "\n".join(f"  {u}: {e}" for u, e in errors)
    if all(isinstance(e, ChecksumError) for _, e in errors):
        raise ChecksumError(f"{dest.name}: checksum mismatch on every mirror (bad file removed):\n{lines}")
    keep = f"\nthe partial download {part} is kept; run again to resume." if part.exists() else ""
    raise DownloadError(f"{dest.name}: every mirror failed:\n{lines}{keep}")


# ---------------------------------------------------------------------------------------------
# extract


def _split(name: str) -> list[str]:
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or bool(PureWindowsPath(name).drive)


class _Tree:
    """A virtual view of the archive's paths, to resolve symlinks before anything is written."""

    def __init__(self, archive: Path):
        self.archive = archive
        self.links: dict[tuple[str, ...], str] = {}  # symlink path -> its target

    def resolve(self, parts: Sequence[str], what: str, depth: int = 0) -> tuple[str, ...]:
        """Resolve a path relative to the target through the archive's symlinks, or raise."""
        if depth > 40:
            raise UnsafeArchiveError(f"{self.archive}: symlink loop at {what!r}")
        out: list[str] = []
        for p in parts:
            if p == "..":
                if not out:
                    raise UnsafeArchiveError(f"{self.archive}: member {what!r} points outside the target")
                out.pop()
                continue
            out.append(p)
            link = self.links.get(tuple(out))
            if link is not None:
                if _is_absolute(link):
                    raise UnsafeArchiveError(f"{self.archive}: member {what!r} goes through an absolute symlink")
                out = list(self.resolve(out[:-1] + _split(link), what, depth + 1))
        return tuple(out)


def _check_name(archive: Path, name: str, is_dir: bool) -> list[str]:
    if _is_absolute(name):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path")
    parts = _split(name)
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} contains '..'")
    if not parts and not is_dir:  # "./" (the target itself) is fine as a directory only
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an empty path")
    return parts


def _check_tar(archive: Path, tf: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = tf.getmembers()
    tree = _Tree(archive)
    for m in members:
        parts = _check_name(archive, m.name, m.isdir())
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a device, fifo or other special file")
        if m.issym():
            if _is_absolute(m.linkname):
                raise UnsafeArchiveError(f"{archive}: symlink {m.name!r} -> {m.linkname!r} is absolute")
            tree.links[tuple(parts)] = m.linkname
    for m in members:
        parts = _split(m.name)
        if m.issym():
            tree.resolve(parts[:-1], m.name)
            tree.resolve(parts[:-1] + _split(m.linkname), f"{m.name} -> {m.linkname}")
        else:
            tree.resolve(parts, m.name)
        if m.islnk():
            if _is_absolute(m.linkname):
                raise UnsafeArchiveError(f"{archive}: hard link {m.name!r} -> {m.linkname!r} is absolute")
            tree.resolve(_split(m.linkname), f"{m.name} => {m.linkname}")
    return members


def _check_zip(archive: Path, zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    tree = _Tree(archive)
    for info in infos:
        parts = _check_name(archive, info.filename, info.is_dir())
        if stat.S_ISLNK(info.external_attr >> 16):  # zipfile writes these as plain files
            target = zf.read(info).decode("utf-8", "replace")
            if _is_absolute(target):
                raise UnsafeArchiveError(f"{archive}: symlink {info.filename!r} -> {target!r} is absolute")
            tree.resolve(parts[:-1] + _split(target), f"{info.filename} -> {target}")
    for info in infos:
        tree.resolve(_split(info.filename), info.filename)
    return infos


def _broken(archive: str | os.PathLike, what: str) -> BrokenArchiveError:
    return BrokenArchiveError(
        f"cannot unpack {archive}: {what}. The file is damaged or is not the archive (a truncated "
        f"download, an error page saved in its place): delete it and fetch it again (--force does "
        f"both). If that fails the same way, the mirror or the catalog's checksum is wrong."
    )


def archive_kind(path: str | os.PathLike) -> str:
    """``"zip"`` or ``"tar"`` (plain, gz, bz2, xz), judged by content; ``BrokenArchiveError``
    (a ``ValueError``) otherwise."""
    try:
        if zipfile.is_zipfile(path):
            return "zip"
        if tarfile.is_tarfile(path):
            return "tar"
    except _ARCHIVE_ERRORS as e:
        raise _broken(path, f"{type(e).__name__}: {e}") from e
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    html = head.startswith((b"<!doctype html", b"<html"))
    raise _broken(path, "it is neither a tar nor a zip archive" + (" but an HTML page" if html else ""))


def _unpack(archive: Path, dest: Path, *, progress: bool = False) -> None:
    """Check every member of ``archive``, then unpack it into ``dest`` (created).

    Raises ``UnsafeArchiveError`` before anything is written, ``BrokenArchiveError`` when the
    archive cannot be read (``dest`` may then hold part of it: callers unpack into a temporary
    folder).
    """
    kind = archive_kind(archive)
    try:
        with (zipfile.ZipFile(archive) if kind == "zip" else tarfile.open(archive)) as af:
            members = _check_zip(archive, af) if kind == "zip" else _check_tar(archive, af)
            _say(f"unpacking {archive.name}", progress)
            dest.mkdir(parents=True, exist_ok=True)
            if kind == "tar" and _HAS_TAR_FILTER:
                af.extractall(dest, members=members, filter="data")
            else:  # zipfile sanitises names itself; on older Python the checks above protect tar
                af.extractall(dest, members=members)
    except _TAR_FILTER_ERROR as e:
        raise UnsafeArchiveError(f"{archive}: {e}") from e
    except _ARCHIVE_ERRORS as e:
        raise _broken(archive, f"{type(e).__name__}: {e}") from e


def _install(new: Path, target: Path, old: Path) -> list[Path]:
    """Move the entries of ``new`` into ``target`` with ``os.replace`` (an existing entry of the
    same name is first moved to ``old``); return their new paths."""
    target.mkdir(parents=True, exist_ok=True)
    old.mkdir(parents=True, exist_ok=True)
    moved = []
    for entry in sorted(new.iterdir()):
        dest = target / entry.name
        if dest.exists() or dest.is_symlink():
            os.replace(dest, old / entry.name)
        os.replace(entry, dest)
        moved.append(dest)
    return moved


def extract(archive: str | os.PathLike, target: str | os.PathLike, *, progress: bool = False) -> list[Path]:
    """Unpack a tar (.tar, .tar.gz, .tgz, ...) or zip archive into ``target``, safely.

    Every member is checked first; one that would land outside ``target`` raises
    ``UnsafeArchiveError`` and nothing is written; an unreadable archive raises
    ``BrokenArchiveError``. The archive is unpacked into a temporary folder inside ``target``,
    whose top-level entries are then moved into place with ``os.replace`` (an existing entry of
    the same name is replaced). Returns those entries.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extracting", dir=target))
    try:
        _unpack(archive, work / "new", progress=progress)
        return _install(work / "new", target, work / "old")
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# fetch


def dataset_path(name: str, root: str | os.PathLike | None = None) -> Path:
    """Where dataset ``name`` lives once fetched: ``ROOT/<extract_to>``."""
    return paths.data_root(root) / _entry(name)["extract_to"]


def _archives(entry: dict[str, Any]) -> dict[str, str]:
    return {spec["filename"]: spec["checksum"] for spec in file_specs(entry)}


def _is_ready(entry: dict[str, Any], root: Path) -> bool:
    """Whether ``ROOT/<extract_to>`` holds a valid completion marker: one written after the
    catalog's archives (same checksums) were all unpacked, whose entries are all still there."""
    try:
        marker = json.loads((root / entry["extract_to"] / MARKER).read_text(encoding="utf-8"))
        return marker["archives"] == _archives(entry) and all((root / p).exists() for p in marker["installed"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _unpack_dataset(name: str, entry: dict[str, Any], root: Path, downloads: Path, progress: bool) -> None:
    """Unpack every archive of ``entry`` into one temporary folder in ``root``; only once all
    are in, move the results into place and write the completion marker (last)."""
    folder = root / entry["extract_to"]
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".extracting", dir=root))
    new, old = work / "new", work / "old"
    try:
        specs = file_specs(entry)
        for spec in specs:
            _unpack(downloads / spec["filename"], new / _into(entry, spec), progress=progress)
        if not (new / entry["extract_to"]).is_dir():
            raise FetchError(f"{name}: unpacking did not create {folder}; the catalog's extract_to may be wrong")
        (folder / MARKER).unlink(missing_ok=True)  # an interrupted move below must not look ready
        installed: list[Path] = []
        for into in dict.fromkeys(_into(entry, spec) for spec in specs):
            installed += _install(new / into, root / into, old / into)
        marker = {"dataset": name, "archives": _archives(entry),
                  "installed": [p.relative_to(root).as_posix() for p in installed]}
        (work / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        os.replace(work / MARKER, folder / MARKER)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fetch(name: str, root: str | os.PathLike | None = None, *, force: bool = False,
          progress: bool = True) -> Path:
    """Download dataset ``name`` into ``ROOT/downloads/`` and unpack it into ``ROOT``.

    Returns the dataset folder (``ROOT/<extract_to>``, what torchvision reads). Does nothing
    when that folder is ready (holds a valid completion marker, see ``_is_ready``), unless
    ``force`` (then the archives are downloaded and unpacked again); a folder without one is
    unpacked again. ``root`` defaults to ``paths.data_root()``. A ``manual`` entry raises
    ``ManualDownloadRequired`` with its instructions unless the folder is already there.
    """
    entry = _entry(name)
    root = paths.data_root(root)
    folder = root / entry["extract_to"]
    specs = file_specs(entry)
    if not specs:
        if folder.is_dir() and not force:
            _say(f"{name}: already at {folder}", progress)
            return folder
        raise ManualDownloadRequired(
            f"{name} cannot be downloaded automatically:\n{entry['manual']}\n"
            f"When done, the folder {folder} must exist."
        )
    if not force:
        if _is_ready(entry, root):
            _say(f"{name}: already at {folder}", progress)
            return folder
        if folder.exists():
            _say(f"{name}: {folder} has no valid {MARKER} (incomplete unpack?); unpacking again", progress)
    downloads = root / "downloads"
    for spec in specs:
        dest = downloads / spec["filename"]
        if force and dest.exists():
            dest.unlink()
        download(spec["urls"], dest, checksum=spec["checksum"], size=spec.get("size"), progress=progress)
    _unpack_dataset(name, entry, root, downloads, progress)
    _say(f"{name}: ready at {folder}", progress)
    return folder


def _size_mb(entry: dict[str, Any]) -> str:
    sizes = [s.get("size") for s in file_specs(entry)]
    if not sizes or any(s is None for s in sizes):
        return "?"
    return f"{sum(sizes) / 1e6:.1f}"


def format_catalog(catalog: dict[str, dict[str, Any]] | None = None) -> str:
    """The catalog as a text table: name, size in MB, licence (``manual`` marks a manual step)."""
    catalog = load_catalog() if catalog is None else catalog
    rows = [("name", "size MB", "licence")]
    for name, e in sorted(catalog.items()):
        lic = e["licence"] + ("  [manual download]" if not file_specs(e) else "")
        rows.append((name, _size_mb(e), lic))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``fetch.py NAME [NAME ...] [--root DIR] [--force] [--quiet]`` or ``fetch.py --list``."""
    parser = argparse.ArgumentParser(
        prog="python data_scripts/fetch.py",
        description="Download and unpack real datasets of the course catalog (course_lib/catalog.json).",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="catalog datasets to fetch")
    parser.add_argument("--root", default=None,
                        help="data root (default: $COURSE_DATA or <repo>/data); archives go to ROOT/downloads")
    parser.add_argument("--list", action="store_true", help="print the catalog and exit")
    parser.add_argument("--force", action="store_true", help="download and unpack again")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    args = parser.parse_args(argv)
    try:
        catalog = load_catalog()
    except (OSError, ValueError) as e:
        print(f"error: cannot read the catalog: {e}", file=sys.stderr)
        return 1
    if args.list:
        print(format_catalog(catalog))
        return 0
    if not args.names:
        parser.print_usage(sys.stderr)
        print("error: name at least one dataset, or use --list", file=sys.stderr)
        return 2
    unknown = [n for n in args.names if n not in catalog]
    if unknown:
        print(f"error: unknown dataset(s) {', '.join(unknown)}; known: {', '.join(sorted(catalog))}",
              file=sys.stderr)
        return 2
    rc = 0
    for name in args.names:
        try:
            folder = fetch(name, args.root, force=args.force, progress=not args.quiet)
        except ManualDownloadRequired as e:
            print(f"{name}: manual download needed.\n{e}", file=sys.stderr)
            rc = 1
        except (FetchError, OSError) as e:
            print(f"{name}: failed: {e}", file=sys.stderr)
            rc = 1
        else:
            print(f"{name}: {folder}")
    return rc
