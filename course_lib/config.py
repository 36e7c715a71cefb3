"""Profiles, validated notebook parameters, device choice and seeding.

Every notebook starts with a papermill ``parameters`` cell and then calls::

    P = course_lib.config.resolve("03_deit", profile=profile, seed=seed, device=device, ...)

``resolve`` applies the ``COURSE_PROFILE`` environment variable (it overrides the notebook's
default profile), fills the profile's defaults for every knob the notebook did not set, and
validates each value against the notebook's :class:`Param` specs. A wrong value fails at once
with a message that names the parameter and what is allowed. The specs are the common ones
(:data:`COMMON`) and the ``PARAMS`` that the notebook's paper package declares in its
``experiment`` module (``course_lib/papers/<paper>/experiment.py``), each with its per-profile
defaults written as ``Param({"smoke": ..., "study": ..., "paper": ...})``.
"""
from __future__ import annotations

import ast
import difflib
import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

PROFILES = ("smoke", "study", "paper")
PROFILE_HELP = {
    "smoke": "CI: the whole notebook in about a minute on 2 CPU cores; proves every cell runs",
    "study": "default: at most 15 minutes on 2 CPU cores; reproduces the qualitative claim offline",
    "paper": "real dataset and scale, for a GPU",
}
DEVICES = ("auto", "cpu", "cuda", "mps")


class ParameterError(ValueError):
    """A notebook parameter has a value that is not allowed."""


@dataclass(frozen=True)
class Param:
    """Specification of one notebook parameter.

    ``default`` is either one value for every profile or a mapping ``{profile: value}``.
    ``choices`` lists the allowed values; ``low``/``high`` bound numbers (inclusive).
    ``type`` is inferred from the default when not given; ``int`` is accepted where
    ``float`` is expected, ``bool`` never stands in for a number.
    """

    default: Any
    help: str = ""
    type: type | tuple[type, ...] | None = None
    choices: Sequence[Any] | None = None
    low: float | None = None
    high: float | None = None
    check: Callable[[Any], bool] | None = None
    check_help: str = ""

    def default_for(self, profile: str) -> Any:
        if isinstance(self.default, Mapping) and set(self.default) <= set(PROFILES):
            return self.default[profile]
        return self.default

    def expected_type(self) -> tuple[type, ...]:
        if self.type is not None:
            return self.type if isinstance(self.type, tuple) else (self.type,)
        sample = self.default_for("study")
        if sample is None:
            return (object,)
        if isinstance(sample, bool):
            return (bool,)
        if isinstance(sample, float):
            return (float, int)
        if isinstance(sample, (list, tuple)):
            return (list, tuple)
        return (type(sample),)

    def allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        parts = ["/".join(t.__name__ for t in self.expected_type())]
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else self.low
            hi = "inf" if self.high is None else self.high
            parts.append(f"in [{lo}, {hi}]")
        if self.check_help:
            parts.append(self.check_help)
        return " ".join(parts)

    def validate(self, name: str, value: Any) -> Any:
        if self.choices is not None:
            if value not in self.choices:
                raise ParameterError(
                    f"parameter {name!r} = {value!r} is not allowed; allowed: {self.allowed()}"
                )
            return value
        types = self.expected_type()
        if object not in types:
            is_bool = isinstance(value, bool)
            if (is_bool and bool not in types) or not isinstance(value, types):
                raise ParameterError(
                    f"parameter {name!r} = {value!r} has type {type(value).__name__}; "
                    f"allowed: {self.allowed()}"
                )
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (self.low is not None and value < self.low) or (
                self.high is not None and value > self.high
            ):
                raise ParameterError(
                    f"parameter {name!r} = {value!r} is out of range; allowed: {self.allowed()}"
                )
        if self.check is not None and not self.check(value):
            raise ParameterError(
                f"parameter {name!r} = {value!r} is not allowed; allowed: {self.allowed()}"
            )
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        return value


# Parameters every notebook has (DEVELOPERS.md, notebook standard 2).
COMMON: dict[str, Param] = {
    "seed": Param(0, "random seed of python, numpy and torch", type=int, low=0),
    "device": Param("auto", "auto picks cuda, then mps, then cpu", choices=DEVICES),
    "data_root": Param("data", "folder with real datasets and the offline world's cache "
                       "(the default 'data' gives way to $COURSE_DATA)", type=str),
    "zoo": Param("build", "pretrained models of the course zoo that are missing: 'build' them now "
                 "(with a message), or 'require' them (fail at once naming `make zoo`)",
                 choices=("build", "require")),
}


class Params(dict):
    """Resolved parameters: a dict that also allows attribute access (``P.epochs``)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(key) from e

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self["device_resolved"])


def specs_for(notebook: str) -> dict[str, Param]:
    """The parameters of a notebook: the common ones and its paper's knobs, read from the
    ``PARAMS`` its paper package declares in ``experiment.py`` (``course_lib.papers``)."""
    from . import papers

    try:
        module = papers.experiment(notebook)
    except KeyError as e:
        raise ParameterError(str(e.args[0])) from None
    return {**COMMON, **module.PARAMS}


def for_profile(profile: str, cls: Callable[..., Any], changes: Mapping[str, Mapping[str, Any]],
                base: Mapping[str, Any] | None = None, **overrides: Any) -> Any:
    """A configuration object for ``profile``, built one way everywhere (worlds, DINO's and
    ALBEF's recipes): ``cls(**base, **changes[profile], **overrides)`` (later ones win; a profile
    missing from ``changes`` uses ``base``). An unknown profile is a :class:`ParameterError`
    naming the allowed ones. Notebook parameters read their per-profile defaults off such a
    factory with :func:`per_profile`."""
    if profile not in PROFILES:
        raise ParameterError(f"profile {profile!r}; allowed: {', '.join(PROFILES)}")
    kw = dict(base or {})
    kw.update(changes.get(profile, {}))
    kw.update(overrides)
    return cls(**kw)


def per_profile(recipe: Callable[[str], Any], field: str) -> dict[str, Any]:
    """A parameter's per-profile default read off a recipe factory (``recipe(profile)`` returns
    a config object): ``{profile: getattr(recipe(profile), field)}``, so a notebook's parameter
    and its recipe cannot disagree."""
    return {p: getattr(recipe(p), field) for p in PROFILES}


def resolve_profile(profile: str | None) -> str:
    """``COURSE_PROFILE`` (when set) overrides the notebook's own default profile."""
    env = os.environ.get("COURSE_PROFILE")
    chosen = env if env else profile
    if chosen is None:
        chosen = "study"
    if chosen not in PROFILES:
        source = "environment variable COURSE_PROFILE" if env else "parameter 'profile'"
        raise ParameterError(
            f"{source} = {chosen!r} is not a profile; allowed: "
            + ", ".join(f"{p!r} ({PROFILE_HELP[p]})" for p in PROFILES)
        )
    return chosen


def resolve(notebook: str, profile: str | None = None, **given: Any) -> Params:
    """Validate a notebook's parameters and fill the profile defaults.

    Values given as ``None`` take the profile's default, so a parameters cell can say
    ``epochs = None  # profile default``.
    """
    specs = specs_for(notebook)
    injected = injected_parameters()
    _refuse_unknown(notebook, set(given) | set(injected), specs)
    # ``-p NAME VALUE`` always takes effect, also for a knob the notebook does not pass on
    given = {**given, **{k: v for k, v in injected.items() if k != "profile"}}
    prof = resolve_profile(injected.get("profile", profile))
    out = Params(notebook=notebook, profile=prof)
    for name, spec in specs.items():
        value = given.get(name)
        if value is None:
            value = spec.default_for(prof)
        out[name] = spec.validate(name, value) if value is not None else None
    out["device_resolved"] = str(pick_device(out["device"]))
    seed_everything(out["seed"])
    return out


def _refuse_unknown(notebook: str, names: set[str], specs: Mapping[str, Param]) -> None:
    """Fail at once on a parameter name the notebook does not have, saying which are close."""
    allowed = sorted({"profile", *specs})
    unknown = sorted(names - set(allowed))
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, allowed, n=3, cutoff=0.6)
        hints.append(f"{name!r}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    raise ParameterError(
        f"unknown parameter(s) {', '.join(hints)} for notebook {notebook!r}; "
        f"allowed: {', '.join(allowed)}"
    )


PAPERMILL_MARKER = "# Parameters"  # the first line of the cell papermill injects


def injected_parameters(history: Sequence[str] | None = None,
                        namespace: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parameters papermill injected into this kernel (``papermill -p NAME VALUE``).

    Papermill runs them as an extra cell below the notebook's ``parameters`` cell, starting
    with ``# Parameters``. A notebook passes its knobs to :func:`resolve` by name, so a name
    that is misspelt, or one the notebook does not pass on, would otherwise be ignored: resolve
    reads the names that cell assigned and their values from the kernel's namespace.
    ``history``/``namespace`` default to the running IPython kernel's ``In`` and ``user_ns``;
    outside IPython there is nothing injected (``{}``).
    """
    if history is None or namespace is None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover
            return {}
        shell = get_ipython()
        if shell is None:
            return {}
        namespace = shell.user_ns if namespace is None else namespace
        history = namespace.get("In", []) if history is None else history
    cells = [c for c in history if isinstance(c, str) and c.lstrip().startswith(PAPERMILL_MARKER)]
    if not cells:
        return {}
    try:
        tree = ast.parse(cells[-1])
    except SyntaxError:
        return {}
    names = [t.id for node in tree.body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name)]
    return {n: namespace[n] for n in names if n in namespace}


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu. An explicit device that is absent is an error."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ParameterError(f"parameter 'device' = {device!r}; allowed: {', '.join(DEVICES)}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError("parameter 'device' = 'cuda' but no CUDA device is available; use 'auto'")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ParameterError("parameter 'device' = 'mps' but MPS is not available; use 'auto'")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def describe(specs: Mapping[str, Param], profile: str) -> str:
    """A readable table of a notebook's parameters for one profile."""
    rows = [f"{'parameter':18s} {'value':>12s}  help"]
    for name, s in specs.items():
        rows.append(f"{name:18s} {s.default_for(profile)!r:>12}  {s.help}")
    return "\n".join(rows)
