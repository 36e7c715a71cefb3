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
