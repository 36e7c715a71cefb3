""""Paper vs. ours": what each notebook measured, what the paper claims, and a verdict.

A notebook records its numbers like this::

    rec = Results(notebook="03_deit", title="DeiT", paper_url="https://arxiv.org/abs/2012.12877",
                  params=P)
    rec.add("no_distill", "DeiT-Ti without distillation", paper=72.2, ours=m0, ours_std=s0, n=3,
            rule=AtLeast(chance))
    rec.add("hard_beats_none", "hard distillation beats no distillation", paper="+2.7",
            ours=m1, ours_std=s1, n=3, rule=Better("no_distill"))
    rec.table()          # a pandas DataFrame to display
    rec.save()           # -> results/03_deit/study.json

The verdict of every claim is decided by a *rule object* (:class:`Better`, :class:`Within`,
:class:`AtLeast`, :class:`AtMost`), never written by hand; the rule is stored as a readable
string next to the verdict. ``python -m course_lib report`` collects all records into one
scoreboard and ``python -m course_lib readme`` writes the README's notebook table.

JSON schema of ``results/<notebook>/<profile>.json`` (tests and CI rely on it)::

    {"notebook", "title", "paper_url", "profile", "params",
     "meta": {"date", "commit", "dirty", "machine", "python", "torch", "device", "elapsed_s"},
     "claims": [{"id", "claim", "paper", "ours", "ours_std", "n", "unit", "rule", "verdict",
                 "note"}]}
"""
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

from . import paths

__all__ = [
    "REPRODUCED",
    "NOT_REPRODUCED",
    "INCONCLUSIVE",
    "VERDICTS",
    "Rule",
    "Better",
    "Within",
    "AtLeast",
    "AtMost",
    "Claim",
    "Results",
    "NotebookInfo",
    "NOTEBOOKS",
    "TOP_KEYS",
    "META_KEYS",
    "CLAIM_KEYS",
    "check_record",
    "load",
    "load_all",
    "scoreboard",
    "verdict_summary",
]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)

TOP_KEYS = ("notebook", "title", "paper_url", "profile", "params", "meta", "claims")
META_KEYS = ("date", "commit", "dirty", "machine", "python", "torch", "device", "elapsed_s")
CLAIM_KEYS = (
    "id", "claim", "paper", "ours", "ours_std", "n", "unit", "rule", "verdict", "note",
)  # fmt: skip

# z-value of the noise band: a difference larger than 2 standard errors is "beyond noise"
NOISE_Z = 2.0


# --------------------------------------------------------------------------------------------
# verdict rules
# --------------------------------------------------------------------------------------------
def _fmt(x: float | None) -> str:
    """A number for humans: integers with thousands separators, else at most 2 decimals
    (3 significant digits below 1), trailing zeros dropped; ``None`` is a dash."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    x = float(x)
    if x.is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 100:
        s = f"{x:,.1f}"
    elif abs(x) >= 1:
        s = f"{x:.2f}"
    else:
        return f"{x:.3g}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def _fmt_spread(x: float) -> str:
    """A standard deviation: two significant digits below 1 (0.35), else like :func:`_fmt`."""
    return f"{x:.2g}" if 0 < abs(x) < 1 else _fmt(x)


def _with_unit(text: str, unit: str) -> str:
    if not unit:
        return text
    return text + unit if unit == "%" else f"{text} {unit}"


def _signed(x: float) -> str:
    return ("+" if x >= 0 else "−") + _fmt(abs(x))


class Rule:
    """Decides the verdict of one claim from the measured numbers.

    Subclasses implement :meth:`judge`, returning ``(verdict, evidence)`` where ``evidence``
    is a short text with the numbers the decision used, and :meth:`describe`, the rule as text.
    ``str(rule)`` (what is stored in the JSON) is the description.
    """

    def judge(self, claim: "Claim", others: Mapping[str, "Claim"]) -> tuple[str, str]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def _se(std: float | None, n: int) -> float | None:
    """Standard error of a mean of ``n`` runs, ``None`` when the spread is unknown."""
    if std is None:
        return None
    return float(std) / math.sqrt(max(int(n), 1))


class Better(Rule):
    """"Ours beats a baseline": the baseline is another claim's ``ours`` (by id) or a number.

    With ``diff`` = (ours − baseline), sign-flipped when lower is better, and the noise band
    ``noise = 2·SE``, ``SE = sqrt(s_a²/n_a + s_b²/n_b)`` (standard error of a difference of
    two means over seeds; a numeric baseline has no spread):

    * **reproduced** when ``diff > max(min_effect, noise)``. Two separate tests: the effect
      is beyond seed noise (2 SE is the ~95% two-sided band of a normal difference, the
      usual "two standard errors" a reader can check by hand in the table) *and* it is at
      least as large as the smallest effect that matters (``min_effect``, in the claim's
      unit). We use the maximum, not the sum, of the two: demanding that the whole
      confidence interval clear ``min_effect`` would need far more seeds than a 15-minute
      CPU budget allows, while each condition on its own is easy to read and to justify.
    * **not reproduced** when ``diff < −noise``: the baseline is clearly better.
    * **not reproduced** when the difference stays inside the noise band although both
      sides were run with at least ``min_seeds`` (default 3) seeds: with that many runs
      the claimed advantage should have separated from seed noise, so at our scale it
      does not hold.
    * **inconclusive** otherwise: within noise, with too few seeds to estimate the spread
      reliably (the spread is too large, or too uncertain, to tell).

    Spread: a side's standard deviation is used with its ``n``; when only one side has one,
    the other side (a single run) is assumed to have the same per-run spread. When neither
    side has a spread (single runs) the noise band is 0, so the verdict rests on the point
    estimate: reproduced if ``diff > min_effect``, not reproduced if ``diff < 0``, else
    inconclusive. Record several seeds for a noise-aware verdict.
    """

    def __init__(
        self,
        than: str | float,
        higher_is_better: bool = True,
        min_effect: float = 0.0,
        min_seeds: int = 3,
    ):
        if min_effect < 0:
            raise ValueError(f"min_effect must be >= 0, got {min_effect}")
        if isinstance(than, bool) or not isinstance(than, (str, int, float)):
            raise TypeError(f"Better(than=...) takes a claim id or a number, got {than!r}")
        self.than = than if isinstance(than, str) else float(than)
        self.higher_is_better = bool(higher_is_better)
        self.min_effect = float(min_effect)
        self.min_seeds = int(min_seeds)

    def describe(self) -> str:
        base = f"[{self.than}]" if isinstance(self.than, str) else _fmt(self.than)
        op = "higher" if self.higher_is_better else "lower"
        s = f"{op} than {base} by > max({_fmt(self.min_effect)}, 2·SE)"
        return s + f"; a tie with ≥{self.min_seeds} seeds per side is not reproduced"

    def _baseline(self, others: Mapping[str, "Claim"]) -> tuple[float, float | None, int]:
        if isinstance(self.than, str):
            if self.than not in others:
                known = ", ".join(others) or "none"
                raise KeyError(
                    f"Better({self.than!r}): no claim with that id was added before; "
                    f"added so far: {known}"
                )
            b = others[self.than]
            return b.ours, b.ours_std, b.n
        return self.than, 0.0, 1

    def judge(self, claim: "Claim", others: Mapping[str, "Claim"]) -> tuple[str, str]:
        b_mean, b_std, b_n = self._baseline(others)
        a_std, a_n = claim.ours_std, claim.n
        if a_std is None and b_std is not None and isinstance(self.than, str):
            a_std = b_std  # same per-run spread assumed for the single run
        if b_std is None and a_std is not None:
            b_std = a_std
        diff = (claim.ours - b_mean) * (1.0 if self.higher_is_better else -1.0)
        se_a, se_b = _se(a_std, a_n), _se(b_std, b_n)
        known = se_a is not None and se_b is not None
        noise = NOISE_Z * math.hypot(se_a, se_b) if known else 0.0
        evidence = f"diff {_signed(diff)}, 2·SE {_fmt(noise) if known else 'unknown'}"
        if diff > max(self.min_effect, noise):
            return REPRODUCED, evidence
        if diff < -noise:
            return NOT_REPRODUCED, evidence
        enough = known and a_n >= self.min_seeds and (
            b_n >= self.min_seeds or not isinstance(self.than, str)
        )
        return (NOT_REPRODUCED if enough else INCONCLUSIVE), evidence


class _IntervalRule(Rule):
    """Shared logic: the interval ``ours ± 2·SE`` lies inside (reproduced), outside (not
    reproduced) or across (inconclusive) the region the claim allows. Without a spread the
    interval is the point ``ours`` itself, so the verdict is reproduced or not reproduced."""

    def _band(self, claim: "Claim") -> float:
        se = _se(claim.ours_std, claim.n)
        return 0.0 if se is None else NOISE_Z * se


class Within(_IntervalRule):
    """"Ours is close to the paper's number": ``|ours − paper| ≤ rel_tol·|paper| + abs_tol``.

    reproduced when the whole band ``ours ± 2·SE`` lies within the tolerance, not reproduced
    when it lies entirely outside, inconclusive when it straddles the tolerance's edge.
    Typical use: parameter counts or FLOPs within 10% (``Within(0.10)``), deterministic
    numbers without a spread, for which the verdict is a plain comparison.
    """

    def __init__(self, rel_tol: float, abs_tol: float = 0.0):
        if rel_tol < 0 or abs_tol < 0:
            raise ValueError("tolerances must be >= 0")
        self.rel_tol = float(rel_tol)
        self.abs_tol = float(abs_tol)

    def describe(self) -> str:
        s = f"within {self.rel_tol * 100:g}% of the paper"
        if self.abs_tol:
            s += f" (+ {_fmt(self.abs_tol)})"
        return s + " (band ours ± 2·SE)"

    def judge(self, claim: "Claim", others: Mapping[str, "Claim"]) -> tuple[str, str]:
        if claim.paper is None:
            raise ValueError(f"claim {claim.id!r}: Within needs a paper value to compare with")
        tol = self.rel_tol * abs(claim.paper) + self.abs_tol
        dist = abs(claim.ours - claim.paper)
        band = self._band(claim)
        rel = dist / abs(claim.paper) * 100 if claim.paper else float("inf")
        evidence = f"off by {_fmt(dist)} ({rel:.1f}%), tolerance {_fmt(tol)}"
        if dist + band <= tol:
            return REPRODUCED, evidence
        if dist - band > tol:
            return NOT_REPRODUCED, evidence
        return INCONCLUSIVE, evidence


class AtLeast(_IntervalRule):
    """"Ours reaches a threshold" (``threshold=None``: the paper's number).

    reproduced when ``ours − 2·SE ≥ threshold``, not reproduced when ``ours + 2·SE <
    threshold``, inconclusive in between. Without a spread: ``ours ≥ threshold``.
    """

    def __init__(self, threshold: float | None = None):
        self.threshold = None if threshold is None else float(threshold)

    def _thr(self, claim: "Claim") -> float:
        thr = self.threshold if self.threshold is not None else claim.paper
        if thr is None:
            raise ValueError(f"claim {claim.id!r}: {type(self).__name__} needs a threshold "
                             "or a paper value")
        return thr

    def describe(self) -> str:
        thr = "the paper" if self.threshold is None else _fmt(self.threshold)
        return f"at least {thr} (band ours ± 2·SE)"

    def judge(self, claim: "Claim", others: Mapping[str, "Claim"]) -> tuple[str, str]:
        thr, band = self._thr(claim), self._band(claim)
        evidence = f"ours − threshold {_signed(claim.ours - thr)}, 2·SE {_fmt(band)}"
        if claim.ours - band >= thr:
            return REPRODUCED, evidence
        if claim.ours + band < thr:
            return NOT_REPRODUCED, evidence
        return INCONCLUSIVE, evidence


class AtMost(AtLeast):
    """"Ours stays at or below a threshold" (an error rate, a size, a latency).

    reproduced when ``ours + 2·SE ≤ threshold``, not reproduced when ``ours − 2·SE >
    threshold``, inconclusive in between. Without a spread: ``ours ≤ threshold``.
    """

    def describe(self) -> str:
        thr = "the paper" if self.threshold is None else _fmt(self.threshold)
        return f"at most {thr} (band ours ± 2·SE)"

    def judge(self, claim: "Claim", others: Mapping[str, "Claim"]) -> tuple[str, str]:
        thr, band = self._thr(claim), self._band(claim)
        evidence = f"ours − threshold {_signed(claim.ours - thr)}, 2·SE {_fmt(band)}"
        if claim.ours + band <= thr:
            return REPRODUCED, evidence
        if claim.ours - band > thr:
            return NOT_REPRODUCED, evidence
        return INCONCLUSIVE, evidence


# --------------------------------------------------------------------------------------------
# claims and the recorder
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# reading records back
# --------------------------------------------------------------------------------------------
def check_record(record: Mapping[str, Any], source: str = "record") -> None:
    """Raise ``ValueError`` naming what is wrong when ``record`` does not follow the schema."""
    problems = [f"missing key {k!r}" for k in TOP_KEYS if k not in record]
    meta = record.get("meta")
    if isinstance(meta, Mapping):
        problems += [f"meta: missing key {k!r}" for k in META_KEYS if k not in meta]
    elif "meta" in record:
        problems.append("meta is not an object")
    claims = record.get("claims")
    if isinstance(claims, list):
        for i, c in enumerate(claims):
            if not isinstance(c, Mapping):
                problems.append(f"claims[{i}] is not an object")
                continue
            problems += [f"claims[{i}]: missing key {k!r}" for k in CLAIM_KEYS if k not in c]
            if c.get("verdict") not in VERDICTS:
                problems.append(f"claims[{i}]: verdict {c.get('verdict')!r} not in {VERDICTS}")
    elif "claims" in record:
        problems.append("claims is not a list")
    if problems:
        raise ValueError(f"{source} does not follow the results schema: " + "; ".join(problems))


def load(path: str | os.PathLike) -> dict[str, Any]:
    """One results JSON file, checked against the schema."""
    p = Path(path)
    try:
        record = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from e
    check_record(record, source=str(p))
    return record


def load_all(
    results_dir: str | os.PathLike | None = None, profile: str = "study"
) -> dict[str, dict[str, Any]]:
    """All records of one profile: ``{notebook: record}``, sorted by notebook id."""
    root = Path(results_dir) if results_dir is not None else paths.results_dir()
    out: dict[str, dict[str, Any]] = {}
    if not root.is_dir():
        return out
    for p in sorted(root.glob(f"*/{profile}.json")):
        out[p.parent.name] = load(p)
    return out


def scoreboard(records: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Every claim of every record as one DataFrame (the report's rows)."""
    rows = []
    for nb, r in records.items():
        date = str(r["meta"].get("date") or "")[:10]
        commit = r["meta"].get("commit") or "—"
        if r["meta"].get("dirty"):
            commit += " (dirty)"
        for c in r["claims"]:
            rows.append({
                "notebook": nb,
                "claim": c["claim"],
                "paper": _with_unit(_fmt(c["paper"]), c["unit"]) if c["paper"] is not None
                else "—",
                "ours": _ours_text(c["ours"], c["ours_std"], c["n"], c["unit"]),
                "verdict": c["verdict"],
                "run date": date,
                "commit": commit,
            })  # fmt: skip
    cols = ["notebook", "claim", "paper", "ours", "verdict", "run date", "commit"]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------------------------
# the course's notebooks (the README table is generated from this list)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NotebookInfo:
    id: str
    short: str
    title: str
    arxiv: str | None
    learn: str

    @property
    def url(self) -> str | None:
        return f"https://arxiv.org/abs/{self.arxiv}" if self.arxiv else None


NOTEBOOKS: tuple[NotebookInfo, ...] = (
    NotebookInfo(
        "00_start_here", "Start here", "The offline world: a gallery of the procedural scenes",
        None,
        "the procedural scene world every notebook trains on offline; profiles and parameters",
    ),
    NotebookInfo(
        "01_albef", "ALBEF",
        "Align before Fuse: Vision and Language Representation Learning with Momentum "
        "Distillation", "2107.07651",
        "align image and text embeddings contrastively before fusing them; momentum "
        "distillation against noisy pairs",
    ),
    NotebookInfo(
        "02_usi", "USI", "Solving ImageNet: a Unified Scheme for Training any Backbone to Top "
        "Results", "2204.03475",
        "one recipe for every backbone: knowledge distillation from a strong teacher with "
        "fixed hyper-parameters",
    ),
    NotebookInfo(
        "03_deit", "DeiT", "Training data-efficient image transformers & distillation through "
        "attention", "2012.12877",
        "train a ViT without huge data; distill a convnet teacher through a distillation "
        "token (soft vs. hard)",
    ),
    NotebookInfo(
        "04_convnext", "ConvNeXt", "A ConvNet for the 2020s", "2201.03545",
        "modernise a ResNet step by step (patchify stem, depthwise convs, inverted "
        "bottleneck, LayerNorm) and measure each step",
    ),
    NotebookInfo(
        "05_clear", "CLEAR", "The CLEAR Benchmark: Continual LEArning on Real-World Imagery",
        "2201.06289",
        "continual learning under natural temporal shift: train on the past, test on the "
        "future (the accuracy matrix)",
    ),
    NotebookInfo(
        "06_dino", "DINO", "Emerging Properties in Self-Supervised Vision Transformers",
        "2104.14294",
        "self-distillation without labels (centering, sharpening); class-token attention "
        "that segments objects; k-NN evaluation",
    ),
    NotebookInfo(
        "07_vitdet", "ViTDet", "Exploring Plain Vision Transformer Backbones for Object "
        "Detection", "2203.16527",
        "detect with a plain ViT: a simple feature pyramid from the last map and windowed "
        "attention with a few global blocks",
    ),
    NotebookInfo(
        "08_frozen_backbones", "Frozen backbones", "Proper Reuse of Image Classification "
        "Features Improves Object Detection", "2204.00484",
        "keep the classification backbone frozen and give the detector a strong head; "
        "compare with fine-tuning",
    ),
    NotebookInfo(
        "09_minivit", "MiniViT", "MiniViT: Compressing Vision Transformers with Weight "
        "Multiplexing", "2204.07154",
        "share weights across layers with small per-layer transformations and distill to "
        "recover accuracy",
    ),
    NotebookInfo(
        "10_copy_paste", "Copy-Paste", "Simple Copy-Paste is a Strong Data Augmentation "
        "Method for Instance Segmentation", "2012.07177",
        "paste objects from one image into another as augmentation; how much it helps when "
        "data is scarce",
    ),
    NotebookInfo(
        "11_stego", "STEGO", "Unsupervised Semantic Segmentation by Distilling Feature "
        "Correspondences", "2203.08414",
        "segment without labels by distilling the feature correspondences of a frozen "
        "self-supervised ViT",
    ),
    NotebookInfo(
        "12_surgical_cnn", "Surgical skill CNN", "Deep learning with convolutional neural "
        "network for objective skill evaluation in robot-assisted surgery (Wang & Majewicz "
        "Fey, 2018)", "1806.05796",
        "classify skill levels from robot kinematics with a 1-D CNN and see which motions "
        "drive the decision",
    ),
)
