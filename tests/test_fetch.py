"""course_lib.fetch against a real HTTP server on 127.0.0.1 (no other network).

The server supports ``Range`` requests and has modes that drop the connection half-way
(``/trunc/...``, once per file), ignore ``Range`` (``/norange/...``) or serve normally
(``/ok/...``). Archives are built in ``tmp_path``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shlex
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from course_lib import fetch, paths  # course_lib.data (torch) is imported where needed

REPO = paths.REPO_ROOT
PAYLOAD = random.Random(0).randbytes(300_000)  # incompressible: the archive spans many chunks


# ---------------------------------------------------------------------------------------------
# a small HTTP server with Range support


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, dict(self.headers)))
        mode, _, fname = self.path.lstrip("/").partition("/")
        f = srv.root / fname
        if mode not in ("ok", "trunc", "norange") or not f.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = f.read_bytes()
        status, start = 200, 0
        rng = self.headers.get("Range")
        if rng and mode != "norange":
            m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            start = int(m.group(1)) if m else 0
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Accept-Ranges", "none" if mode == "norange" else "bytes")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if mode == "trunc" and fname not in srv.truncated:
            srv.truncated.add(fname)
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            self.wfile.flush()
            self.close_connection = True  # the client sees the connection end early
            return
        self.wfile.write(body[start:])


class Server:
    def __init__(self, root: Path):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.root = root
        self.httpd.requests = []
        self.httpd.truncated = set()
        self.httpd.daemon_threads = True
        self.root = root
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def requests(self) -> list[tuple[str, dict]]:
        return self.httpd.requests

    def url(self, name: str, mode: str = "ok") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{mode}/{name}"


@pytest.fixture
def server(tmp_path, monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    root = tmp_path / "srv"
    root.mkdir()
    s = Server(root)
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


# ---------------------------------------------------------------------------------------------
# archives


def make_tar(path: Path, members: list[tuple]) -> Path:
    """members: (name, "file", bytes) | (name, "dir") | (name, "sym", target) | (name, "link", target)."""
    with tarfile.open(path, "w:gz" if path.name.endswith("gz") else "w") as tf:
        for name, kind, *rest in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind == "file":
                info.size = len(rest[0])
                tf.addfile(info, io.BytesIO(rest[0]))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "link": tarfile.LNKTYPE}[kind]
            if kind in ("sym", "link"):
                info.linkname = rest[0]
            tf.addfile(info)
    return path


def make_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, payload in members:
            zf.writestr(zipfile.ZipInfo(name), payload)
    return path


GOOD_MEMBERS = [
    ("toyset", "dir"),
    ("toyset/data.bin", "file", PAYLOAD),
    ("toyset/sub/readme.txt", "file", b"hello\n"),
    ("toyset/latest", "sym", "sub/readme.txt"),
]


def md5(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def entry(name: str, urls: list[str], archive: Path, extract_to: str = "toyset", **extra) -> dict:
    e = {
        "name": name, "description": f"{name} test set", "urls": urls, "filename": archive.name,
        "checksum": sha256(archive), "size": archive.stat().st_size, "licence": "test licence",
        "extract_to": extract_to, "notes": "",
    }
    e.update(extra)
    return e


@pytest.fixture
def catalog(tmp_path, monkeypatch):
    """Write a fake catalog: ``catalog(entry, ...)``; fetch reads it from then on."""
    path = tmp_path / "catalog.json"

    def write(*entries):
        path.write_text(json.dumps({"format": 1, "datasets": list(entries)}))
        monkeypatch.setattr(fetch, "CATALOG_PATH", path)
        return path

    return write


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders the fetch left behind."""
    return [p.name for p in folder.rglob("*") if p.name.endswith((".part", ".extracting"))]


# ---------------------------------------------------------------------------------------------
# the real catalog


def test_real_catalog_matches_torchvision():
    from torchvision.datasets import CIFAR10, CIFAR100

    cat = fetch.load_catalog()
    for name, cls, size in (("cifar10", CIFAR10, 170498071), ("cifar100", CIFAR100, 169001437)):
        e = cat[name]
        assert e["urls"][0] == cls.url
        assert e["filename"] == cls.filename
        assert e["checksum"] == "md5:" + cls.tgz_md5
        assert e["extract_to"] == cls.base_folder
        assert e["size"] == size
        assert "Krizhevsky" in e["licence"] and "2009" in e["notes"]


def test_imagenette_matches_torchvision_and_is_readable(tmp_path):
    from torchvision.datasets import Imagenette

    from course_lib import data

    e = fetch.load_catalog()["imagenette"]
    url, md5sum = Imagenette._ARCHIVES["160px"]
    assert (e["urls"][0], e["checksum"], e["filename"]) == (url, "md5:" + md5sum, "imagenette2-160.tgz")
    with pytest.raises(FileNotFoundError, match="data_scripts/fetch.py imagenette"):
        data.get_dataset("imagenette", "train", tmp_path)
    # the folder layout the archive unpacks to is what get_dataset reads
    from PIL import Image

    for split in ("train", "val"):
        folder = tmp_path / e["extract_to"] / split / "n01440764"
        folder.mkdir(parents=True)
        Image.new("RGB", (20, 16), (200, 10, 10)).save(folder / "a.jpeg")
    ds = data.get_dataset("imagenette", "test", tmp_path)
    img, label = ds[0]
    assert label == 0 and img.size == (20, 16) and ds.classes[0][0] == "tench"


def test_catalog_validation(tmp_path):
    good = {"name": "x", "description": "d", "urls": ["http://127.0.0.1/x.tgz"], "filename": "x.tgz",
            "checksum": "md5:" + "0" * 32, "size": 1, "licence": "l", "extract_to": "x", "notes": ""}
    p = tmp_path / "c.json"
    bad_variants = [
        {"checksum": "crc32:1234"},
        {"checksum": "md5:abc"},
        {"urls": []},
        {"filename": "../x.tgz"},
        {"extract_to": "../x"},
    ]
    for change in bad_variants:
        p.write_text(json.dumps({"datasets": [{**good, **change}]}))
        with pytest.raises(fetch.CatalogError):
            fetch.load_catalog(p)
    p.write_text(json.dumps({"datasets": [good, good]}))
    with pytest.raises(fetch.CatalogError, match="twice"):
        fetch.load_catalog(p)
    manual = {k: v for k, v in good.items() if k not in ("urls", "filename", "checksum", "size")}
    p.write_text(json.dumps({"datasets": [manual]}))
    with pytest.raises(fetch.CatalogError, match="neither"):
        fetch.load_catalog(p)
    p.write_text(json.dumps({"datasets": [{**manual, "manual": "register first"}]}))
    assert fetch.file_specs(fetch.load_catalog(p)["x"]) == []


# ---------------------------------------------------------------------------------------------
# download


def test_fetch_tar_gz_end_to_end(server, catalog, tmp_path):
    archive = make_tar(server.root / "toy.tar.gz", GOOD_MEMBERS)
    catalog(entry("toy", [server.url("toy.tar.gz")], archive))
    root = tmp_path / "data"
    folder = fetch.fetch("toy", root, progress=False)
    assert folder == root / "toyset"
    assert (folder / "data.bin").read_bytes() == PAYLOAD
    assert (folder / "latest").is_symlink() and (folder / "latest").read_bytes() == b"hello\n"
    assert (root / "downloads" / "toy.tar.gz").read_bytes() == archive.read_bytes()
    assert sorted(p.name for p in root.iterdir()) == ["downloads", "toyset"]
    assert leftovers(root) == []
    # a second fetch finds the folder and does not touch the network
    n = len(server.requests)
    assert fetch.fetch("toy", root, progress=False) == folder
    assert len(server.requests) == n


def test_fetch_zip_with_md5(server, catalog, tmp_path):
    archive = make_zip(server.root / "toy.zip", [("toyset/a.txt", b"a"), ("toyset/b/c.bin", PAYLOAD)])
    catalog(entry("toyzip", [server.url("toy.zip")], archive, checksum=md5(archive)))
    folder = fetch.fetch("toyzip", tmp_path / "data", progress=False)
    assert (folder / "a.txt").read_bytes() == b"a"
    assert (folder / "b" / "c.bin").read_bytes() == PAYLOAD


def test_checksum_mismatch_removes_file(server, tmp_path):
    archive = make_tar(tmp_path / "good.tar.gz", GOOD_MEMBERS)
    bad = bytearray(archive.read_bytes())
    for i in (100, 5000, 100_000):
        bad[i] ^= 0xFF
    (server.root / "bad.tar.gz").write_bytes(bytes(bad))
    dest = tmp_path / "dl" / "bad.tar.gz"
    with pytest.raises(fetch.ChecksumError, match="checksum mismatch"):
        fetch.download(server.url("bad.tar.gz"), dest, checksum=sha256(archive), size=len(bad), progress=False)
    assert not dest.exists()
    assert not dest.with_name("bad.tar.gz.part").exists()


def test_truncated_download_resumes_with_range(server, tmp_path):
    archive = make_tar(server.root / "toy.tar.gz", GOOD_MEMBERS)
    full = archive.stat().st_size
    dest = tmp_path / "dl" / "toy.tar.gz"
    part = dest.with_name("toy.tar.gz.part")
    url = server.url("toy.tar.gz", mode="trunc")
    with pytest.raises(fetch.DownloadError, match="run again to resume"):
        fetch.download(url, dest, checksum=sha256(archive), size=full, progress=False)
    assert not dest.exists()
    assert 0 < part.stat().st_size < full
    have = part.stat().st_size

    assert fetch.download(url, dest, checksum=sha256(archive), size=full, progress=False) == dest
    assert dest.read_bytes() == archive.read_bytes()
    assert not part.exists()
    ranges = [h.get("Range") for _, h in server.requests]
    assert ranges == [None, f"bytes={have}-"]


def test_server_ignoring_range_restarts(server, tmp_path):
    archive = make_tar(server.root / "toy.tar.gz", GOOD_MEMBERS)
    dest = tmp_path / "toy.tar.gz"
    dest.with_name("toy.tar.gz.part").write_bytes(b"garbage that is not a prefix")
    fetch.download(server.url("toy.tar.gz", mode="norange"), dest, checksum=sha256(archive), progress=False)
    assert dest.read_bytes() == archive.read_bytes()
    assert server.requests[0][1].get("Range") == "bytes=28-"  # asked to resume, got 200, restarted


def test_bad_partial_is_downloaded_again(server, tmp_path):
    archive = make_tar(server.root / "toy.tar.gz", GOOD_MEMBERS)
    dest = tmp_path / "toy.tar.gz"
    dest.with_name("toy.tar.gz.part").write_bytes(b"x" * 1000)  # wrong bytes; Range is honoured
    fetch.download(server.url("toy.tar.gz"), dest, checksum=sha256(archive),
                   size=archive.stat().st_size, progress=False)
    assert dest.read_bytes() == archive.read_bytes()
    assert [h.get("Range") for _, h in server.requests] == ["bytes=1000-", None]


def test_mirror_fallback(server, catalog, tmp_path):
    archive = make_tar(server.root / "toy.tar.gz", GOOD_MEMBERS)
    urls = [server.url("missing.tar.gz"), server.url("toy.tar.gz")]
    catalog(entry("toy", urls, archive))
    folder = fetch.fetch("toy", tmp_path / "data", progress=False)
    assert (folder / "data.bin").read_bytes() == PAYLOAD
    assert [p for p, _ in server.requests] == ["/ok/missing.tar.gz", "/ok/toy.tar.gz"]


def test_every_mirror_failing_is_a_download_error(server, tmp_path):
    dest = tmp_path / "x.tar.gz"
    with pytest.raises(fetch.DownloadError, match="404") as info:
        fetch.download([server.url("a.tgz"), server.url("b.tgz")], dest, checksum="md5:" + "0" * 32,
                       progress=False)
    assert not isinstance(info.value, fetch.ChecksumError)
    assert "a.tgz" in str(info.value) and "b.tgz" in str(info.value)
    assert not dest.exists()


def test_skip_when_present_and_replace_when_wrong(server, tmp_path):
    archive = make_tar(server.root / "toy.tar.gz", GOOD_MEMBERS)
    dest = tmp_path / "toy.tar.gz"
    dest.write_bytes(archive.read_bytes())
    fetch.download(server.url("toy.tar.gz"), dest, checksum=sha256(archive), progress=False)
    assert server.requests == []  # good file: no request at all
    dest.write_bytes(b"stale")
    fetch.download(server.url("toy.tar.gz"), dest, checksum=sha256(archive), progress=False)
    assert dest.read_bytes() == archive.read_bytes()
    assert len(server.requests) == 1


def test_force_downloads_and_unpacks_again(server, catalog, tmp_path):
    archive = make_tar(server.root / "toy.tar.gz", GOOD_MEMBERS)
    catalog(entry("toy", [server.url("toy.tar.gz")], archive))
    root = tmp_path / "data"
    folder = fetch.fetch("toy", root, progress=False)
    (folder / "data.bin").write_bytes(b"user damaged this")
    (folder / "extra.txt").write_text("stale")
    assert fetch.fetch("toy", root, force=True, progress=False) == folder
    assert (folder / "data.bin").read_bytes() == PAYLOAD
    assert not (folder / "extra.txt").exists()  # the folder was replaced as a whole
    assert len(server.requests) == 2
    assert leftovers(root) == []


# ---------------------------------------------------------------------------------------------
# safe extraction


def _unsafe_archives(tmp: Path, outside: Path) -> dict[str, Path]:
    ok = ("fine.txt", "file", b"fine")
    return {
        "dotdot": make_tar(tmp / "dotdot.tar.gz", [ok, ("../evil.txt", "file", b"evil")]),
        "dotdot_deep": make_tar(tmp / "deep.tar", [ok, ("a/b/../../../evil.txt", "file", b"evil")]),
        "absolute": make_tar(tmp / "abs.tar.gz", [ok, (str(outside / "evil.txt"), "file", b"evil")]),
        "symlink_absolute": make_tar(tmp / "symabs.tar.gz", [
            ok, ("esc", "sym", str(outside)), ("esc/evil.txt", "file", b"evil")]),
        "symlink_dotdot": make_tar(tmp / "symrel.tgz", [
            ok, ("d", "dir"), ("d/up", "sym", "../.."), ("d/up/evil.txt", "file", b"evil")]),
        "symlink_chain": make_tar(tmp / "chain.tar.gz", [  # a -> . makes a/a/.. leave the target
            ok, ("a", "sym", "."), ("b", "sym", "a/a/.."), ("b/evil.txt", "file", b"evil")]),
        "hardlink": make_tar(tmp / "hard.tar.gz", [ok, ("h", "link", "../outside/secret.txt")]),
        "zip_dotdot": make_zip(tmp / "dotdot.zip", [("fine.txt", b"fine"), ("../evil.txt", b"evil")]),
        "zip_absolute": make_zip(tmp / "abs.zip", [("fine.txt", b"fine"), (str(outside / "evil.txt"), b"evil")]),
    }


@pytest.mark.parametrize("has_filter", [True, False], ids=["tar-filter", "own-checks-only"])
def test_unsafe_archives_rejected_before_writing(tmp_path, monkeypatch, has_filter):
    if has_filter and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile extraction filter")
    monkeypatch.setattr(fetch, "_HAS_TAR_FILTER", has_filter)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    archives = tmp_path / "archives"
    archives.mkdir()
    for kind, archive in _unsafe_archives(archives, outside).items():
        target = tmp_path / "targets" / kind
        with pytest.raises(fetch.UnsafeArchiveError):
            fetch.extract(archive, target)
        assert list(target.iterdir()) == [], kind  # nothing written, no temporary folder left
        assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"], kind
        assert not (tmp_path / "targets" / "evil.txt").exists(), kind
        assert not (tmp_path / "evil.txt").exists(), kind


def test_unsafe_archive_through_fetch(server, catalog, tmp_path):
    archive = make_tar(server.root / "evil.tar.gz", [("toyset/ok.txt", "file", b"ok"),
                                                     ("toyset/../../evil.txt", "file", b"evil")])
    catalog(entry("evil", [server.url("evil.tar.gz")], archive))
    root = tmp_path / "data"
    with pytest.raises(fetch.UnsafeArchiveError, match="evil.txt"):
        fetch.fetch("evil", root, progress=False)
    assert not (root / "toyset").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in root.iterdir()) == ["downloads"]


@pytest.mark.parametrize("has_filter", [True, False], ids=["tar-filter", "own-checks-only"])
def test_safe_archive_with_internal_links_and_dot_entry(tmp_path, monkeypatch, has_filter):
    if has_filter and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile extraction filter")
    monkeypatch.setattr(fetch, "_HAS_TAR_FILTER", has_filter)
    archive = make_tar(tmp_path / "ok.tar", [
        (".", "dir"), ("./set", "dir"), ("./set/a.txt", "file", b"a"),
        ("./set/alias", "sym", "a.txt"), ("./set/hard", "link", "set/a.txt"),
    ])
    moved = fetch.extract(archive, tmp_path / "out")
    assert moved == [tmp_path / "out" / "set"]
    assert (tmp_path / "out" / "set" / "alias").read_bytes() == b"a"
    assert (tmp_path / "out" / "set" / "hard").read_bytes() == b"a"


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive at all" * 10)
    with pytest.raises(ValueError, match="neither a tar nor a zip"):
        fetch.extract(junk, tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# broken archives and atomic, verified unpacking


def files_entry(name: str, server: Server, *archives: Path, extract_to: str = "toyset") -> dict:
    """A catalog entry made of several archives, each with the checksum of its current bytes."""
    e = entry(name, [], archives[0], extract_to=extract_to)
    for key in ("urls", "filename", "checksum", "size"):
        del e[key]
    e["files"] = [{"urls": [server.url(a.name)], "filename": a.name, "checksum": sha256(a),
                   "size": a.stat().st_size} for a in archives]
    return e


def truncated(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_broken_second_archive_leaves_nothing_and_is_not_ready(server, catalog, tmp_path):
    a = make_tar(server.root / "a.tar.gz", GOOD_MEMBERS)
    b_members = [("toyset/extra", "dir"), ("toyset/extra/big.bin", "file", PAYLOAD)]
    b = truncated(make_tar(server.root / "b.tar.gz", b_members))  # the catalog accepts its checksum
    catalog(files_entry("two", server, a, b))
    root = tmp_path / "data"
    for _ in range(2):  # the second run is not fooled by anything the first one left
        with pytest.raises(fetch.BrokenArchiveError, match=r"cannot unpack .*b\.tar\.gz.*delete it"):
            fetch.fetch("two", root, progress=False)
        assert sorted(p.name for p in root.iterdir()) == ["downloads"]  # no half folder, no temp
    make_tar(b, b_members)  # the mirror and the catalog are fixed
    catalog(files_entry("two", server, a, b))
    folder = fetch.fetch("two", root, progress=False)
    assert (folder / "data.bin").read_bytes() == PAYLOAD  # both archives, merged into one folder
    assert (folder / "extra" / "big.bin").read_bytes() == PAYLOAD
    marker = json.loads((folder / fetch.MARKER).read_text())
    assert marker["archives"] == {"a.tar.gz": sha256(a), "b.tar.gz": sha256(b)}
    assert leftovers(root) == []


def test_folder_without_valid_marker_is_unpacked_again(server, catalog, tmp_path):
    archive = make_tar(server.root / "toy.tar.gz", GOOD_MEMBERS)
    catalog(entry("toy", [server.url("toy.tar.gz")], archive))
    root = tmp_path / "data"
    (root / "toyset").mkdir(parents=True)  # half-unpacked by an older run: no marker
    (root / "toyset" / "partial.txt").write_text("half")
    folder = fetch.fetch("toy", root, progress=False)
    assert (folder / "data.bin").read_bytes() == PAYLOAD and not (folder / "partial.txt").exists()
    n = len(server.requests)
    marker = folder / fetch.MARKER
    good = json.loads(marker.read_text())
    for bad in ("{not json", json.dumps({**good, "archives": {"toy.tar.gz": "md5:" + "0" * 32}}),
                json.dumps({**good, "installed": ["toyset", "gone"]})):
        marker.write_text(bad)  # damaged, from another catalog version, or its entries removed
        (folder / "stale.txt").write_text("stale")
        assert fetch.fetch("toy", root, progress=False) == folder
        assert not (folder / "stale.txt").exists() and json.loads(marker.read_text()) == good
    assert len(server.requests) == n  # the verified archive in downloads/ was reused
    (folder / "mine.txt").write_text("kept")  # a valid marker: ready, nothing is touched
    fetch.fetch("toy", root, progress=False)
    assert (folder / "mine.txt").exists()


def _broken_archives(srv: Path) -> dict[str, tuple[Path, str]]:
    crc = bytearray(make_zip(srv / "crc.zip", [("toyset/a.bin", PAYLOAD)]).read_bytes())
    crc[1000] ^= 0xFF
    (srv / "crc.zip").write_bytes(bytes(crc))
    (srv / "page.tar.gz").write_text("<!DOCTYPE html>\n<html><body>Please log in</body></html>\n")
    return {
        "truncated_tgz": (truncated(make_tar(srv / "cut.tar.gz", GOOD_MEMBERS)), "EOFError"),
        "truncated_zip": (truncated(make_zip(srv / "cut.zip", [("toyset/a.bin", PAYLOAD)])), "neither"),
        "bad_crc_zip": (srv / "crc.zip", "BadZipFile"),
        "html_page": (srv / "page.tar.gz", "HTML page"),
    }


@pytest.mark.parametrize("case", ["truncated_tgz", "truncated_zip", "bad_crc_zip", "html_page"])
def test_broken_archive_is_a_clear_cli_error(server, catalog, tmp_path, capsys, case):
    archive, what = _broken_archives(server.root)[case]
    catalog(entry("toy", [server.url(archive.name)], archive))  # its checksum matches the bad file
    root = tmp_path / "data"
    assert fetch.main(["toy", "--root", str(root), "--quiet"]) == 1  # no exception escapes
    err = capsys.readouterr().err
    assert err.startswith(f"toy: failed: cannot unpack {root / 'downloads' / archive.name}: ")
    assert what in err and "delete it and fetch it again" in err and "Traceback" not in err
    assert sorted(p.name for p in root.iterdir()) == ["downloads"]
    with pytest.raises(fetch.BrokenArchiveError, match=what):  # extract() says the same
        fetch.extract(archive, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_nested_unpack_into_rejected(tmp_path):
    spec = {"urls": ["http://127.0.0.1/a.zip"], "filename": "a.zip", "checksum": "md5:" + "0" * 32}
    e = {"name": "x", "description": "d", "licence": "l", "extract_to": "coco/x", "notes": "",
         "files": [{**spec, "unpack_into": "coco"}, {**spec, "filename": "b.zip"}]}  # ROOT holds coco
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"datasets": [e]}))
    with pytest.raises(fetch.CatalogError, match="disjoint"):
        fetch.load_catalog(p)
    e["files"][1]["unpack_into"] = "coco"
    p.write_text(json.dumps({"datasets": [e]}))
    assert fetch.file_specs(fetch.load_catalog(p)["x"])[1]["unpack_into"] == "coco"


# ---------------------------------------------------------------------------------------------
# manual entries, CLI, and the hint in course_lib.data


MANUAL = {"name": "jigsaws_like", "description": "needs registration", "licence": "research only",
          "extract_to": "JIGSAWS", "notes": "",
          "manual": "Register at https://example.invalid/form, then unpack the zip into ROOT."}


def test_manual_entry(catalog, tmp_path, capsys):
    catalog(MANUAL)
    root = tmp_path / "data"
    with pytest.raises(fetch.ManualDownloadRequired, match="Register at"):
        fetch.fetch("jigsaws_like", root, progress=False)
    assert fetch.main(["jigsaws_like", "--root", str(root)]) != 0
    err = capsys.readouterr().err
    assert "Register at https://example.invalid/form" in err and str(root / "JIGSAWS") in err
    (root / "JIGSAWS").mkdir(parents=True)  # the user did the manual step
    assert fetch.fetch("jigsaws_like", root, progress=False) == root / "JIGSAWS"
    assert fetch.main(["jigsaws_like", "--root", str(root)]) == 0


def test_cli_list(server, catalog, capsys):
    archive = make_tar(server.root / "toy.tar.gz", GOOD_MEMBERS)
    catalog(entry("toy", [server.url("toy.tar.gz")], archive, size=12_345_678), MANUAL)
    assert fetch.main(["--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "size", "MB", "licence"]
    toy = next(line for line in out if line.startswith("toy "))
    assert "12.3" in toy and "test licence" in toy
    manual = next(line for line in out if line.startswith("jigsaws_like"))
    assert "?" in manual and "research only" in manual and "manual" in manual
    assert server.requests == []


def test_cli_errors(catalog, capsys):
    catalog(MANUAL)
    assert fetch.main([]) == 2
    assert fetch.main(["nope"]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_script_lists_real_catalog_without_install(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, str(REPO / "data_scripts" / "fetch.py"), "--list"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "cifar10 " in r.stdout and "170.5" in r.stdout and "169.0" in r.stdout


def test_data_hint_command_works(server, catalog, tmp_path, capsys):
    """The command that get_dataset's error prints is a valid invocation of this CLI."""
    from course_lib import data

    archive = make_tar(server.root / "toy.tar.gz", GOOD_MEMBERS)
    catalog(entry("toy", [server.url("toy.tar.gz")], archive))
    root = tmp_path / "data"
    argv = shlex.split(data.fetch_command("toy", root))
    assert argv[:2] == ["python", "data_scripts/fetch.py"]
    assert fetch.main(argv[2:] + ["--quiet"]) == 0
    assert capsys.readouterr().out.strip() == f"toy: {root / 'toyset'}"
    assert (root / "toyset" / "data.bin").read_bytes() == PAYLOAD


def test_get_dataset_missing_names_fetch_command(tmp_path):
    from course_lib import data

    with pytest.raises(FileNotFoundError) as info:
        data.get_dataset("cifar10", root=tmp_path)
    msg = str(info.value)
    assert "python data_scripts/fetch.py cifar10" in msg
    assert str(tmp_path / fetch.load_catalog()["cifar10"]["extract_to"]) in msg  # same folder as the catalog
