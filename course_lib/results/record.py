"""A notebook's record: :class:`Claim`, the :class:`Results` recorder (judge, table, save),
and the record's meta data (git state, machine)."""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from course_lib import paths
from course_lib.results.rules import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    VERDICTS,
    Rule,
    _fmt,
    _fmt_spread,
    _with_unit,
)
from course_lib.results.schema import CLAIM_KEYS, check_record


_NUMBER = re.compile(
    r"^\s*([+\-−]?)\s*(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?(?:[eE][+\-]?\d+)?|\.\d+)"
)


def parse_number(value: Any) -> float | None:
    """A paper value as a float: numbers pass through; strings such as ``"+1.2"``,
    ``"−0.5 pp"``, ``"83.4%"`` or ``"5,717,416"`` are parsed (a delta keeps its sign);
    ``None`` stays ``None`` (a qualitative claim)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("a paper value cannot be a bool")
    if isinstance(value, str):
        m = _NUMBER.match(value)
        if not m:
            raise ValueError(f"cannot read a number from paper value {value!r}")
        sign = -1.0 if m.group(1) in ("-", "−") else 1.0
        return sign * float(m.group(2).replace(",", ""))
    x = float(value)  # numpy / torch scalars
    if not math.isfinite(x):
        raise ValueError(f"paper value must be finite, got {value!r}")
    return x


@dataclass
class Claim:
    """One row of the "paper vs. ours" table (the JSON ``claims`` entries)."""

    id: str
    claim: str
    paper: float | None
    ours: float
    ours_std: float | None
    n: int
    unit: str
    rule: str
    verdict: str
    note: str = ""
    evidence: str = ""  # the numbers the rule used; shown in tables, not stored in the JSON

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("evidence")
        return {k: d[k] for k in CLAIM_KEYS}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> tuple[str | None, bool]:
    """(short commit sha or ``None``, whether tracked or new files differ from it).

    Changes under ``results/`` and of ``README.md`` (its table is regenerated from the records)
    do not count: saving a record must not make the next one dirty.
    """
    commit = _git("rev-parse", "--short", "HEAD")
    status = _git("status", "--porcelain", "--", ".", ":(exclude)results", ":(exclude)README.md")
    return commit or None, bool(status)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def _jsonable(x: Any) -> Any:
    """Parameters as plain JSON: tuples become lists, numpy/torch scalars numbers, else str."""
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 1) == 0:
        return _jsonable(x.item())
    return str(x)


class Results:
    """Records a notebook's claims, judges them and saves them as JSON.

    ``params`` is the notebook's resolved :class:`config.Params` (its ``profile`` and
    ``device_resolved`` are used); ``profile`` overrides the profile when given. The start
    time is taken at construction, so ``meta.elapsed_s`` measures the notebook's run.
    """

    def __init__(
        self,
        notebook: str,
        title: str,
        paper_url: str | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        profile: str | None = None,
    ):
        self.notebook = notebook
        self.title = title
        self.paper_url = paper_url
        self.params = dict(params or {})
        self.profile = profile or self.params.get("profile") or "study"
        self._t0 = time.perf_counter()
        self._start = _dt.datetime.now().astimezone()
        self.meta: dict[str, Any] = {
            "date": self._start.isoformat(timespec="seconds"),
            "commit": None,
            "dirty": False,
            "machine": None,
            "python": platform.python_version(),
            "torch": None,
            "device": self.params.get("device_resolved"),
            "elapsed_s": None,
        }
        self.claims: list[Claim] = []

    # -- recording ---------------------------------------------------------------------------
    def add(
        self,
        id: str,
        claim: str,
        *,
        paper: float | str | None,
        ours: float | Sequence[float],
        ours_std: float | None = None,
        n: int | None = None,
        unit: str = "%",
        rule: Rule,
        note: str = "",
    ) -> Claim:
        """Add one claim and judge it with ``rule``; returns the :class:`Claim`.

        ``paper`` is a number or a string such as ``"+1.6"`` (a delta: say so in ``claim`` or
        with ``unit="pp"``); it is stored as a number (``None`` for a qualitative claim).
        ``ours`` is the mean over ``n`` runs with standard deviation ``ours_std``, or a list of
        per-seed values (mean, sample std and n are then computed). Adding an id again
        replaces that claim.
        """
        if not isinstance(rule, Rule):
            raise TypeError(f"rule must be a Rule object (Better, Within, AtLeast, AtMost), "
                            f"got {rule!r}")
        if isinstance(ours, (list, tuple)) or (
            hasattr(ours, "ndim") and getattr(ours, "ndim") >= 1
        ):
            values = [float(v) for v in ours]
            if not values:
                raise ValueError(f"claim {id!r}: ours is an empty list")
            if n is not None and n != len(values):
                raise ValueError(f"claim {id!r}: n={n} but {len(values)} values given")
            mean = math.fsum(values) / len(values)
            if ours_std is None and len(values) > 1:
                ours_std = math.sqrt(
                    math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
                )
            ours, n = mean, len(values)
        ours = float(ours)
        if not math.isfinite(ours):
            raise ValueError(f"claim {id!r}: ours must be finite, got {ours}")
        n = 1 if n is None else int(n)
        if n < 1:
            raise ValueError(f"claim {id!r}: n must be >= 1")
        if ours_std is not None:
            ours_std = float(ours_std)
            if not math.isfinite(ours_std):
                ours_std = None  # e.g. mean_std of a single value
            elif ours_std < 0:
                raise ValueError(f"claim {id!r}: ours_std must be >= 0")
        c = Claim(
            id=str(id), claim=str(claim), paper=parse_number(paper), ours=ours,
            ours_std=ours_std, n=n, unit=str(unit), rule=str(rule), verdict=INCONCLUSIVE,
            note=str(note),
        )  # fmt: skip
        others = {x.id: x for x in self.claims if x.id != c.id}
        c.verdict, c.evidence = rule.judge(c, others)
        assert c.verdict in VERDICTS, c.verdict
        self.claims = [x for x in self.claims if x.id != c.id] + [c]
        return c

    def __getitem__(self, id: str) -> Claim:
        for c in self.claims:
            if c.id == id:
                return c
        raise KeyError(id)

    # -- output ------------------------------------------------------------------------------
    def _finish_meta(self) -> None:
        commit, dirty = git_state()
        torch = sys.modules.get("torch")
        if torch is None:
            try:
                import torch  # noqa: F811
            except ImportError:
                torch = None
        self.meta.update(
            commit=commit,
            dirty=dirty,
            machine=machine_info(),
            torch=getattr(torch, "__version__", None),
            elapsed_s=round(time.perf_counter() - self._t0, 2),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "notebook": self.notebook,
            "title": self.title,
            "paper_url": self.paper_url,
            "profile": self.profile,
            "params": _jsonable(self.params),
            "meta": dict(self.meta),
            "claims": [c.to_json() for c in self.claims],
        }

    def path(self, results_dir: str | os.PathLike | None = None) -> Path:
        root = Path(results_dir) if results_dir is not None else paths.results_dir()
        return root / self.notebook / f"{self.profile}.json"

    def save(self, results_dir: str | os.PathLike | None = None) -> Path:
        """Write ``<results_dir>/<notebook>/<profile>.json`` (default ``paths.results_dir()``)."""
        self._finish_meta()
        record = self.to_dict()
        check_record(record)
        out = self.path(results_dir)
        write_atomic(out, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        return out

    def table(self) -> ClaimsTable:
        """The "paper vs. ours" table of this notebook, one row per claim (index: claim id)."""
        return claims_table(self.claims)

    def summary(self) -> str:
        return verdict_summary([c.verdict for c in self.claims])

    def _repr_html_(self) -> str:
        return f"<b>{self.title}</b>: {self.summary()}" + self.table()._repr_html_()

    def __repr__(self) -> str:
        return f"Results({self.notebook!r}, profile={self.profile!r}, {self.summary()})"


def _ours_text(ours: float, std: float | None, n: int, unit: str = "") -> str:
    """``81.2 ± 0.4% (n=3)``: mean, spread and number of runs."""
    s = _fmt(ours) if std is None else f"{_fmt(ours)} ± {_fmt_spread(std)}"
    s = _with_unit(s, unit)
    return s + (f" (n={n})" if n > 1 else "")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never half
    of one, even with several processes saving the same file: a temporary file with a unique
    name in the same folder, flushed to disk, then renamed over ``path`` (``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ClaimsTable(pd.DataFrame):
    """The "paper vs. ours" table: a DataFrame that shows every cell whole (pandas cuts text at
    ``display.max_colwidth`` = 50 characters), wrapped at word boundaries in a notebook."""

    @property
    def _constructor(self):
        return ClaimsTable

    def _repr_html_(self) -> str:
        style = {"white-space": "pre-wrap", "text-align": "left", "vertical-align": "top"}
        return self.style.set_properties(**style).format(precision=4).to_html()

    def __repr__(self) -> str:
        with pd.option_context("display.max_colwidth", None, "display.width", 0):
            return super().__repr__()


def claims_table(claims: Iterable[Claim | Mapping[str, Any]]) -> ClaimsTable:
    rows = []
    for c in claims:
        d = c if isinstance(c, Mapping) else {**c.to_json(), "evidence": c.evidence}
        rows.append({
            "id": d["id"],
            "claim": d["claim"],
            "paper": d["paper"],
            "ours": _ours_text(d["ours"], d["ours_std"], d["n"]),
            "unit": d["unit"],
            "verdict": d["verdict"],
            "rule": d["rule"] + (f" [{d['evidence']}]" if d.get("evidence") else ""),
            "note": d["note"],
        })  # fmt: skip
    cols = ["id", "claim", "paper", "ours", "unit", "verdict", "rule", "note"]
    return ClaimsTable(rows, columns=cols).set_index("id")


def verdict_summary(verdicts: Sequence[str]) -> str:
    """E.g. ``"2/3 reproduced, 1 inconclusive"``; ``"no claims"`` when empty."""
    if not verdicts:
        return "no claims"
    s = f"{sum(v == REPRODUCED for v in verdicts)}/{len(verdicts)} reproduced"
    for v in (NOT_REPRODUCED, INCONCLUSIVE):
        k = sum(x == v for x in verdicts)
        if k:
            s += f", {k} {v}"
    return s
