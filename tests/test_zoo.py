"""The place for pretrained artifacts: the cached models listed with their metadata."""
from __future__ import annotations

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
    assert main(["zoo", "list", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "teacher-a" in out and info.key in out and "damaged" in out
