"""The course zoo: cached artifacts, the registry of entries, building them with model cards,
checking them, the notebooks' request (ensure), and moving a zoo between machines."""
from __future__ import annotations

import io
import json
import tarfile

import pytest
from torch import nn

from course_lib import train, zoo
from course_lib.__main__ import main


def test_artifacts_lists_cached_models_with_their_config(tmp_path, capsys):
    assert zoo.artifacts(tmp_path / "none") == []
    cfg = train.TrainConfig(lr=1e-3)
    _, info = train.cached_model("teacher-a", {"recipe": cfg}, lambda: nn.Linear(2, 2),
                                 lambda m: None, cache_dir=tmp_path)
    (tmp_path / "broken-0123.pt").write_bytes(b"not a checkpoint")
    items = zoo.artifacts(tmp_path)
    assert [a.name for a in items] == ["broken", "teacher-a"]
    broken, teacher = items
    assert broken.damaged and not teacher.damaged
    assert teacher.key == info.key and teacher.config["recipe"]["lr"] == 1e-3
    assert teacher.train_seconds >= 0 and teacher.size_mb > 0
    assert main(["zoo", "artifacts", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "teacher-a" in out and info.key in out and "damaged" in out


# ------------------------------------------------------------------------------ registry
def test_every_entry_has_a_builder_and_a_recipe_in_its_notebook():
    from course_lib import config

    names = [e.name for e in zoo.ENTRIES]
    assert len(names) == len(set(names))
    for e in zoo.ENTRIES:
        assert callable(e.builder_fn()), e.name
        assert e.notebook in e.used_by and set(e.profiles) <= {"smoke", "study", "paper"}
        assert e.estimate("smoke") <= 30 and e.estimate("study") <= 15 * 60, e.name
        config.resolve(e.notebook, profile="smoke")
        assert zoo.cards.digest(e, "smoke") != zoo.cards.digest(e, "study")
    assert sum(e.estimate("study") for e in zoo.ENTRIES) <= 90 * 60  # the study zoo's budget
    with pytest.raises(KeyError, match="the zoo has: dino_vit"):
        zoo.get("nope")


# ------------------------------------------------------------------------------ build, cards, checks
@pytest.fixture
def smoke_teacher(tmp_path, monkeypatch):
    """deit_teacher built in the smoke profile into a fresh cache."""
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    card = zoo.build_one(zoo.get("deit_teacher"), "smoke", "cpu", log=lambda *a: None)
    return tmp_path / "cache", card


def test_build_writes_a_model_card_and_the_notebook_finds_the_artifact(smoke_teacher):
    from course_lib import config
    from course_lib.papers import deit

    cache, card = smoke_teacher
    e = zoo.get("deit_teacher")
    path = zoo.card_path(e, "smoke")
    assert path.parent == cache / "zoo" and json.loads(path.read_text()) == card
    assert card["entry"] == "deit_teacher" and card["profile"] == "smoke" and card["machine"]["device"] == "cpu"
    assert set(card["figures"]) == {"test_top1", "chance"} and card["build_seconds"] > 0
    (art,) = card["artifacts"]
    assert art["file"].startswith("deit-teacher-") and art["trained_now"] and len(art["sha256"]) == 64
    assert zoo.status(e, "smoke") == ("ok", str(path))
    # the notebook's own call (profile defaults) finds the very same file: no training
    P = config.resolve("03_deit", profile="smoke", device="cpu")
    _, info = deit.train_teacher(P, deit.load_data(P))
    assert info.from_cache and info.path == cache / art["file"]


def test_a_corrupt_artifact_is_named_and_rebuilt(smoke_teacher):
    cache, card = smoke_teacher
    e = zoo.get("deit_teacher")
    f = cache / card["artifacts"][0]["file"]
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    state, detail = zoo.status(e, "smoke")
    assert state == "corrupt" and f.name in detail
    msgs = []
    cards = zoo.ensure(["deit_teacher"], profile="smoke", device="cpu", log=msgs.append)
    assert any("building 'deit_teacher'" in m for m in msgs)
    assert zoo.status(e, "smoke")[0] == "ok" and cards["deit_teacher"]["artifacts"][0]["trained_now"]
    assert (f.with_name(f.name + ".corrupt")).exists()


def test_ensure_require_fails_at_once_naming_make_zoo(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    with pytest.raises(zoo.ZooMissing, match=r"make zoo PROFILE=smoke"):
        zoo.ensure(["deit_teacher", "dino_vit"], {"profile": "smoke", "zoo": "require"})
    assert not (tmp_path / "zoo").exists()  # nothing was trained
    with pytest.raises(ValueError, match="'build' or 'require'"):
        zoo.ensure(["deit_teacher"], {"profile": "smoke", "zoo": "maybe"})
    assert zoo.ensure(["deit_teacher"], {"profile": "paper", "zoo": "require"}) == {}  # no paper build


# ------------------------------------------------------------------------------ export / import
def test_export_import_round_trip(smoke_teacher, tmp_path):
    cache, card = smoke_teacher
    archive = tmp_path / "zoo.tar.gz"
    manifest = zoo.export(archive, "smoke")
    assert set(manifest["files"]) == {f"zoo/{zoo.card_path(zoo.get('deit_teacher'), 'smoke').name}",
                                      card["artifacts"][0]["file"]}
    other = tmp_path / "other"
    installed = zoo.import_archive(archive, other)
    assert sorted(installed) == sorted(manifest["files"])
    assert zoo.status(zoo.get("deit_teacher"), "smoke", other)[0] == "ok"
    assert main(["zoo", "list", "--profile", "smoke", "--cache", str(other), "--json"]) == 0


def _tar(path, members: dict, manifest: dict | None = None, link: str | None = None):
    with tarfile.open(path, "w:gz") as tar:
        items = dict(members)
        if manifest is not None:
            items["MANIFEST.json"] = json.dumps(manifest).encode()
        for name, data in items.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)


@pytest.mark.parametrize("members,link,match", [
    ({"../evil.pt": b"x"}, None, "outside the cache"),
    ({"/abs.pt": b"x"}, None, "outside the cache"),
    ({"zoo/../../x.json": b"x"}, None, "outside the cache"),
    ({"script.py": b"x"}, None, "neither a model card"),
    ({}, "zoo/link.json", "not a plain file"),
])
def test_import_refuses_unsafe_members(tmp_path, members, link, match):
    archive = tmp_path / "bad.tar.gz"
    _tar(archive, members, {"files": {k: "0" for k in members}}, link)
    target = tmp_path / "cache"
    with pytest.raises(zoo.UnsafeArchive, match=match):
        zoo.import_archive(archive, target)
    assert not target.exists() or not any(target.rglob("*"))


def test_import_refuses_a_checksum_mismatch_and_installs_nothing(tmp_path):
    archive = tmp_path / "bad.tar.gz"
    _tar(archive, {"a-1.pt": b"weights", "zoo/a-smoke-1.json": b"{}"},
         {"files": {"a-1.pt": "0" * 64, "zoo/a-smoke-1.json": "0" * 64}})
    with pytest.raises(ValueError, match="checksum"):
        zoo.import_archive(archive, tmp_path / "cache")
    assert not (tmp_path / "cache" / "a-1.pt").exists()
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_cli_errors_name_the_entries(capsys):
    assert main(["zoo", "build", "nope", "--profile", "smoke"]) == 2
    assert "the zoo has: dino_vit" in capsys.readouterr().err


def test_ensure_skips_an_entry_when_the_run_changes_its_recipe(tmp_path, monkeypatch):
    from course_lib import config

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    msgs = []
    P = config.resolve("03_deit", profile="smoke", teacher_epochs=3, zoo="require")
    assert zoo.ensure(["deit_teacher"], P, log=msgs.append) == {}  # no error, nothing built
    assert "teacher_epochs" in msgs[0] and "trains its own model" in msgs[0]
    with pytest.raises(config.ParameterError, match="build.*require"):
        config.resolve("03_deit", profile="smoke", zoo="sometimes")


def test_quality_rows_say_whether_an_entry_earns_its_place():
    e = zoo.get("dino_vit")
    good = {"knn_top1": 40.0, "knn_top1_random": 25.0, "jaccard_best_head": 45.0, "jaccard_best_head_random": 30.0}
    bad = {**good, "knn_top1": 22.0}
    assert [q["passes"] for q in zoo.cards.quality(e, good, "study")] == [True, True]
    assert [q["passes"] for q in zoo.cards.quality(e, bad, "study")] == [False, True]
    assert [q["passes"] for q in zoo.cards.quality(e, bad, "smoke")] == [None, None]
    assert zoo.cards._earns({"quality": zoo.cards.quality(e, bad, "study")}) == "NO: knn_top1"
    assert all(x.quality for x in zoo.ENTRIES if x.name != "clear_dino")


def test_the_dino_entry_is_notebook_11s_backbone(tmp_path, monkeypatch):
    """dino_vit is built by notebook 06's code; notebook 11 loads its backbone through
    selfsup.study_backbone: the same cached file, no second training."""
    from course_lib import selfsup

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    card = zoo.build_one(zoo.get("dino_vit"), "smoke", "cpu", log=lambda *a: None)
    from course_lib.train import watch_artifacts

    with watch_artifacts() as used:
        selfsup.study_backbone("smoke", device="cpu")
    ((path, trained, _),) = used
    assert not trained and path.name == card["artifacts"][0]["file"]
