import pytest
import torch

from course_lib import config
from course_lib.config import Param, ParameterError


def test_profiles_and_defaults(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    P = config.resolve("03_deit", profile="smoke")
    assert P.profile == "smoke" and P.student_epochs == 1
    P = config.resolve("03_deit", profile="study", student_epochs=5)
    assert P.student_epochs == 5 and P.profile == "study"
    assert P.device_resolved in ("cpu", "cuda", "mps")


def test_env_overrides_notebook_default(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    assert config.resolve("03_deit", profile="study").profile == "smoke"
    monkeypatch.setenv("COURSE_PROFILE", "huge")
    with pytest.raises(ParameterError, match="COURSE_PROFILE.*'smoke'.*'study'.*'paper'"):
        config.resolve("03_deit", profile="study")


def test_bad_values_name_the_parameter(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    with pytest.raises(ParameterError, match="'profile'.*allowed"):
        config.resolve("03_deit", profile="fast")
    with pytest.raises(ParameterError, match="'alpha' = 1.5 is out of range.*\\[0.0, 1.0\\]"):
        config.resolve("03_deit", alpha=1.5)
    with pytest.raises(ParameterError, match="'seeds' = '2' has type str.*int"):
        config.resolve("03_deit", seeds="2")
    with pytest.raises(ParameterError, match="'dataset' = 'imagenet'.*'world', 'cifar10', 'cifar100'"):
        config.resolve("03_deit", dataset="imagenet")
    with pytest.raises(ParameterError, match="unknown parameter.*'epochz'"):
        config.resolve("03_deit", epochz=3)
    with pytest.raises(ParameterError, match="'retrain' = 1 has type int"):
        config.resolve("03_deit", retrain=1)
    with pytest.raises(ParameterError, match="unknown notebook"):
        config.resolve("99_nothing")


def test_param_int_accepted_for_float_but_not_bool():
    p = Param(0.5, low=0, high=1)
    assert p.validate("x", 1) == 1.0 and isinstance(p.validate("x", 1), float)
    with pytest.raises(ParameterError):
        p.validate("x", True)


def test_pick_device_and_seeding():
    assert config.pick_device("cpu") == torch.device("cpu")
    auto = config.pick_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no CUDA device"):
            config.pick_device("cuda")
    config.seed_everything(3)
    a = torch.rand(3)
    config.seed_everything(3)
    assert torch.equal(a, torch.rand(3))


def _papermill(monkeypatch, cell: str, namespace: dict):
    """Make resolve see a papermill-injected cell, as in a kernel run by ``papermill -p``."""
    monkeypatch.setattr(config, "injected_parameters", lambda: _REAL_INJECTED(
        history=["profile = 'study'", cell], namespace=namespace))


_REAL_INJECTED = config.injected_parameters


def test_injected_parameters_reads_papermills_cell():
    cell = "# Parameters\nepochs = 3\nbatch_size = -1\n"
    ns = {"epochs": 3, "batch_size": -1, "other": 1}
    assert config.injected_parameters(["x = 1", cell], ns) == {"epochs": 3, "batch_size": -1}
    assert config.injected_parameters(["x = 1"], ns) == {}
    assert config.injected_parameters() == {}  # outside IPython nothing was injected


def test_a_misspelt_papermill_parameter_fails_at_once(monkeypatch):
    """``-p epohcs 3`` on 03_deit used to run to the end with the defaults."""
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    _papermill(monkeypatch, "# Parameters\nstudent_epohcs = 3\n", {"student_epohcs": 3})
    with pytest.raises(ParameterError, match="'student_epohcs' \\(did you mean student_epochs"):
        config.resolve("03_deit", profile="smoke")


def test_a_papermill_parameter_the_notebook_does_not_pass_still_takes_effect(monkeypatch):
    """``-p batch_size -1``: batch_size is a knob of 03_deit but not in its parameters cell."""
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    _papermill(monkeypatch, "# Parameters\nbatch_size = -1\n", {"batch_size": -1})
    with pytest.raises(ParameterError, match="'batch_size' = -1 is out of range"):
        config.resolve("03_deit", profile="smoke")
    _papermill(monkeypatch, "# Parameters\nbatch_size = 32\n", {"batch_size": 32})
    assert config.resolve("03_deit", profile="smoke").batch_size == 32


def test_unknown_keyword_says_what_is_close(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    with pytest.raises(ParameterError, match="did you mean student_epochs.*allowed: .*alpha"):
        config.resolve("03_deit", student_epoch=2)


def test_data_root_precedence(monkeypatch, tmp_path):
    """Explicit non-default parameter, then $COURSE_DATA, then <repo>/data. The notebooks pass
    data_root="data" (the default), which used to hide $COURSE_DATA."""
    from course_lib import paths

    monkeypatch.delenv("COURSE_DATA", raising=False)
    assert paths.data_root("data") == paths.REPO_ROOT / "data" == paths.data_root()
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "env"))
    assert paths.data_root("data") == tmp_path / "env"
    assert paths.data_root(None) == tmp_path / "env"
    assert paths.data_root(tmp_path / "mine") == tmp_path / "mine"
    assert paths.data_root("elsewhere") == paths.REPO_ROOT / "elsewhere"
    from course_lib import fetch

    assert fetch.dataset_path("cifar100", "data").is_relative_to(tmp_path / "env")
