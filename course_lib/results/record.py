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
    CHECK,
    CLAIM,
    KINDS,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REFERENCE,
    REPRODUCED,
    Rule,
    _fmt,
    _fmt_spread,
    _with_unit,
    verdicts_of,
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
    """One row of the "paper vs. ours" table (the JSON ``claims`` entries).

    ``kind`` is ``"claim"`` (a statement of the paper that can fail), ``"check"`` (a sanity
    figure) or ``"reference"`` (the baseline arm of a paired claim, verdict ``"reported"``); ``headline`` marks the paper's headline claims (fixed ids). ``runs`` are the
    per-seed values behind ``ours`` (for ``seeds``, in that order), ``None`` for one number.
    ``evidence`` holds the numbers the rule decided on (mean difference, SE, interval).
    """

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
    evidence: str = ""
    kind: str = CHECK
    headline: bool = False
    seeds: list[int] | None = None
    runs: list[float] | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
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
        # the commit the run starts from: edits made while it runs (say a maintainer's next
        # change during a 15-minute record) must not relabel it
        self._git_start = git_state()
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
        self._rules: dict[str, Rule] = {}

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
        seeds: Sequence[int] | None = None,
        kind: str | None = None,
        headline: bool = False,
    ) -> Claim:
        """Add one row and judge it with ``rule``; returns the :class:`Claim`.

        ``paper`` is a number or a string such as ``"+1.6"`` (a delta: say so in ``claim`` or
        with ``unit="pp"``); it is stored as a number (``None`` for a qualitative claim).
        ``ours`` is a list of per-seed values (for ``seeds``, in that order; their mean, sample
        standard deviation and n are computed, and a :class:`Better` or :class:`Equivalent`
        rule pairs them seed by seed with its baseline's), or one number (one run; a spread
        ``ours_std`` with ``n`` is accepted only from records that kept no per-seed values and
        must have been measured, ``n >= 2``).

        ``kind`` defaults to the rule's (``"claim"`` for Better/Equivalent, ``"check"`` for
        AtLeast/AtMost/Within, ``"reference"`` for Reference); ``headline=True`` marks one
        of the paper's headline claims.
        An id can be added once: adding it again raises ``ValueError``, and so does a second
        claim on the same pair of runs (one pair of runs is one claim).
        """
        if not isinstance(rule, Rule):
            raise TypeError(f"rule must be a Rule object (Better, Equivalent, Within, AtLeast, "
                            f"AtMost, Reference), got {rule!r}")
        id = str(id)
        if any(x.id == id for x in self.claims):
            raise ValueError(f"claim id {id!r} was already added to {self.notebook}; ids are "
                             "unique (a second row with it would overwrite the first)")
        kind = rule.kind if kind is None else kind
        if kind not in KINDS:
            raise ValueError(f"claim {id!r}: kind must be one of {KINDS}, got {kind!r}")
        if (kind == REFERENCE) != (rule.kind == REFERENCE):
            raise ValueError(f"claim {id!r}: a reference row is recorded with rule=Reference() and "
                             f"nothing else (kind={kind!r}, rule {type(rule).__name__})")
        if headline and kind != CLAIM:
            raise ValueError(f"claim {id!r}: a headline row must be a claim (kind='claim')")
        runs: list[float] | None = None
        if isinstance(ours, (list, tuple)) or (
            hasattr(ours, "ndim") and getattr(ours, "ndim") >= 1
        ):
            runs = [float(v) for v in ours]
            if not runs:
                raise ValueError(f"claim {id!r}: ours is an empty list")
            if n is not None and n != len(runs):
                raise ValueError(f"claim {id!r}: n={n} but {len(runs)} values given")
            if ours_std is not None:
                raise ValueError(f"claim {id!r}: ours_std is computed from the per-seed values")
            if not all(math.isfinite(v) for v in runs):
                raise ValueError(f"claim {id!r}: per-seed values must be finite, got {runs}")
            mean = math.fsum(runs) / len(runs)
            if len(runs) > 1:
                ours_std = math.sqrt(math.fsum((v - mean) ** 2 for v in runs) / (len(runs) - 1))
            ours, n = mean, len(runs)
        if seeds is not None:
            seeds = [int(s) for s in seeds]
            if runs is None or len(seeds) != len(runs):
                raise ValueError(f"claim {id!r}: seeds={seeds} need one per-seed value each")
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"claim {id!r}: seeds must differ, got {seeds}")
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
            elif n < 2:
                raise ValueError(f"claim {id!r}: ours_std with n={n}: a spread is measured over "
                                 "at least two runs, never assumed")
        c = Claim(
            id=id, claim=str(claim), paper=parse_number(paper), ours=ours,
            ours_std=ours_std, n=n, unit=str(unit), rule=str(rule), verdict=INCONCLUSIVE,
            note=str(note), kind=kind, headline=bool(headline), seeds=seeds, runs=runs,
        )  # fmt: skip
        others = {x.id: x for x in self.claims}
        same = self._same_pair(c, rule, others)
        if same is not None:
            raise ValueError(f"claim {id!r} compares the same pair of runs as claim {same!r}: "
                             "one pair of runs is one claim")
        c.verdict, c.evidence = rule.judge(c, others)
        assert c.verdict in verdicts_of(kind), (kind, c.verdict)
        self.claims.append(c)
        self._rules[id] = rule
        return c

    def _same_pair(self, c: Claim, rule: Rule, others: Mapping[str, Claim]) -> str | None:
        """The id of an earlier claim on the same two arms as ``c``, if any."""
        if c.kind != CLAIM or not hasattr(rule, "than"):
            return None

        # An arm is recognised by its per-seed values; single runs, and runs without spread
        # (a model stuck at chance gives the same number at every seed), can coincide by chance
        # and are never taken for the same arm.
        def arm(x: Claim) -> tuple | None:
            return tuple(x.runs) if x.runs and len(x.runs) > 1 and x.ours_std else None

        if arm(c) is None:
            return None

        def base(r: Rule) -> tuple | None:
            t = r.than
            return arm(others[t]) if isinstance(t, str) and t in others else (t,)

        me = {arm(c), base(rule)}
        for x in self.claims:
            r = self._rules.get(x.id)
            if (x.kind == CLAIM and r is not None and hasattr(r, "than") and None not in me
                    and {arm(x), base(r)} == me):
                return x.id
        return None

    def __getitem__(self, id: str) -> Claim:
        for c in self.claims:
            if c.id == id:
                return c
        raise KeyError(id)

    # -- output ------------------------------------------------------------------------------
    def _finish_meta(self) -> None:
        commit, dirty = self._git_start
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
        return verdict_summary(self.claims)

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


def _kind_text(d: Mapping[str, Any]) -> str:
    return ("headline claim" if d.get("headline") else d.get("kind", CHECK))


def claims_table(claims: Iterable[Claim | Mapping[str, Any]]) -> ClaimsTable:
    rows = []
    for c in claims:
        d = c if isinstance(c, Mapping) else c.to_json()
        rows.append({
            "id": d["id"],
            "kind": _kind_text(d),
            "claim": d["claim"],
            "paper": d["paper"],
            "ours": _ours_text(d["ours"], d["ours_std"], d["n"]),
            "unit": d["unit"],
            "verdict": d["verdict"],
            "rule": d["rule"] + (f" [{d['evidence']}]" if d.get("evidence") else ""),
            "note": d["note"],
        })  # fmt: skip
    cols = ["id", "kind", "claim", "paper", "ours", "unit", "verdict", "rule", "note"]
    return ClaimsTable(rows, columns=cols).set_index("id")


def counts(claims: Iterable[Claim | Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """``{"headline" | "claims" | "checks": {"reproduced": r, "total": n, "not reproduced": k,
    "inconclusive": m}}`` (for checks "reproduced" reads "passed"); reference rows, which are
    not judged, count in neither."""
    out = {g: {"reproduced": 0, "total": 0, NOT_REPRODUCED: 0, INCONCLUSIVE: 0}
           for g in ("headline", "claims", "checks")}
    for c in claims:
        d = c if isinstance(c, Mapping) else c.to_json()
        if d.get("kind") == REFERENCE:
            continue
        groups = ["checks"] if d.get("kind", CHECK) == CHECK else ["claims"]
        if d.get("headline"):
            groups.append("headline")
        for g in groups:
            out[g]["total"] += 1
            out[g][d["verdict"] if d["verdict"] != REPRODUCED else "reproduced"] += 1
    return out


def verdict_summary(claims: Sequence[Claim | Mapping[str, Any] | str]) -> str:
    """E.g. ``"paper claims reproduced: 2 of 3 (headline 1 of 2); checks passed: 5 of 6"``.

    Given plain verdict strings (older callers), every one counts as a claim."""
    if not claims:
        return "no claims"
    if all(isinstance(c, str) for c in claims):
        claims = [{"kind": CLAIM, "verdict": v} for v in claims]
    k = counts(claims)  # type: ignore[arg-type]
    parts = []
    if k["claims"]["total"]:
        s = f"paper claims reproduced: {k['claims']['reproduced']} of {k['claims']['total']}"
        if k["headline"]["total"]:
            s += f" (headline {k['headline']['reproduced']} of {k['headline']['total']})"
        parts.append(s)
    else:
        parts.append("no paper claims")
    if k["checks"]["total"]:
        parts.append(f"checks passed: {k['checks']['reproduced']} of {k['checks']['total']}")
    return "; ".join(parts)
