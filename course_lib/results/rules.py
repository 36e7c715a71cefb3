"""The verdict rules of the "paper vs. ours" records, the three verdicts and the number
formatting they use.

Scoreboard v2 tells two kinds of rows apart. A *claim* is a statement of the paper that can fail
(method A beats B, an ablation hurts, A matches B): :class:`Better` and :class:`Equivalent`,
decided on the paired per-seed differences of two arms run with the same seeds, 95% interval,
never "reproduced" with fewer than 3 seeds. A *check* is a sanity figure (learns, above chance,
parameter and FLOP counts): :class:`AtLeast`, :class:`AtMost`, :class:`Within`. A *reference*
row (:class:`Reference`) is the baseline arm of a paired claim, shown with its per-seed values and
not judged: its verdict reads "reported" and it counts neither as a claim nor as a check.
Only claims count as reproduced in the README and the report."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    from course_lib.results.record import Claim

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
REPORTED = "reported"  # the "verdict" of a reference row: shown, not judged

CLAIM = "claim"  # a statement of the paper that can fail (only these count as reproduced)
CHECK = "check"  # a sanity figure: learns, above chance, counts
REFERENCE = "reference"  # the baseline arm of a paired claim: reported, never judged
KINDS = (CLAIM, CHECK, REFERENCE)


def verdicts_of(kind: str) -> tuple[str, ...]:
    """The verdicts a row of ``kind`` may carry: ``("reported",)`` for a reference row."""
    return (REPORTED,) if kind == REFERENCE else VERDICTS

# z-value of the noise band: a difference larger than 2 standard errors is "beyond noise"
NOISE_Z = 2.0


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

    kind = CHECK  # what a row judged by this rule is, unless said otherwise

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


# ---------------------------------------------------------------------------------------------
# Scoreboard v2: claims are decided on paired per-seed differences
# ---------------------------------------------------------------------------------------------
CONFIDENCE = 0.95  # two-sided level of the interval a claim is judged on
MIN_SEEDS = 3      # fewer pairs than this: always "inconclusive"



@dataclass(frozen=True)
class Interval:
    """The ``CONFIDENCE`` interval of a mean difference: ``mean``, standard error ``se``,
    ``lo``/``hi`` (Student's t with ``dof`` degrees of freedom), ``n`` pairs; ``paired`` says
    whether it came from per-seed differences (else from two independent means, which is
    wider: it cannot cancel the noise both arms share)."""

    mean: float
    se: float
    lo: float
    hi: float
    n: int
    dof: int
    paired: bool

    def text(self) -> str:
        how = "paired" if self.paired else "unpaired"
        if not math.isfinite(self.se):
            runs = "one run" if self.n < 2 else f"{self.n} runs without a spread"
            return f"{how} diff {_signed(self.mean)} from {runs} per arm, no interval"
        return (f"{how} diff {_signed(self.mean)} ± {_fmt_spread(self.se)} SE (n={self.n}), "
                f"{CONFIDENCE * 100:g}% CI [{_signed(self.lo)}, {_signed(self.hi)}]")


def _t(dof: int) -> float:
    from scipy import stats
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof))


def paired_interval(a: Sequence[float], b: Sequence[float] | float) -> Interval:
    """The interval of ``mean(a_i - b_i)`` over pairs ``i`` (``b`` a number: one sample)."""
    bs = [float(b)] * len(a) if isinstance(b, (int, float)) else [float(x) for x in b]
    if len(bs) != len(a):
        raise ValueError(f"paired runs need the same number of seeds: {len(a)} vs {len(bs)}")
    d = [float(x) - y for x, y in zip(a, bs)]
    n = len(d)
    mean = math.fsum(d) / n
    if n < 2:
        return Interval(mean, float("nan"), float("-inf"), float("inf"), n, 0, True)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in d) / (n - 1))
    se = sd / math.sqrt(n)
    half = _t(n - 1) * se
    return Interval(mean, se, mean - half, mean + half, n, n - 1, True)


def unpaired_interval(mean_a: float, std_a: float | None, n_a: int,
                      mean_b: float, std_b: float | None, n_b: int) -> Interval:
    """The interval of ``mean_a − mean_b`` from two summaries (records without per-seed
    values): Welch's standard error with the smaller side's degrees of freedom (conservative).
    A side without a measured spread (one run) gives an unbounded interval."""
    n = min(int(n_a), int(n_b))
    mean = float(mean_a) - float(mean_b)
    if std_a is None or std_b is None or n < 2:
        return Interval(mean, float("nan"), float("-inf"), float("inf"), n, 0, False)
    se = math.sqrt(float(std_a) ** 2 / n_a + float(std_b) ** 2 / n_b)
    half = _t(n - 1) * se
    return Interval(mean, se, mean - half, mean + half, n, n - 1, False)


def _oriented(iv: Interval, higher_is_better: bool) -> Interval:
    """The interval in the paper's direction (positive = the paper's side)."""
    if higher_is_better:
        return iv
    return Interval(-iv.mean, iv.se, -iv.hi, -iv.lo, iv.n, iv.dof, iv.paired)


class _PairedRule(Rule):
    """Shared by :class:`Better` and :class:`Equivalent`: a claim (``kind = "claim"``) about
    ``ours − baseline``, where the baseline is another claim's runs (by id) or a number.

    When both arms carry per-seed values (``runs``) for the same ``seeds``, the rule is decided
    on the per-seed differences (paired: the noise both arms share cancels). A record without
    per-seed values (older records) is judged on the two means and spreads (unpaired, wider).
    """

    kind = CLAIM

    def __init__(self, than: str | float, higher_is_better: bool = True):
        if isinstance(than, bool) or not isinstance(than, (str, int, float)):
            raise TypeError(f"{type(self).__name__}(than=...) takes a claim id or a number, "
                            f"got {than!r}")
        self.than = than if isinstance(than, str) else float(than)
        self.higher_is_better = bool(higher_is_better)

    def _base_text(self) -> str:
        return f"[{self.than}]" if isinstance(self.than, str) else _fmt(self.than)

    def baseline(self, others: Mapping[str, "Claim"]) -> "Claim | float":
        if isinstance(self.than, str):
            if self.than not in others:
                known = ", ".join(others) or "none"
                raise KeyError(
                    f"{type(self).__name__}({self.than!r}): no claim with that id was added "
                    f"before; added so far: {known}"
                )
            return others[self.than]
        return self.than

    def interval(self, claim: "Claim", others: Mapping[str, "Claim"]) -> Interval:
        b = self.baseline(others)
        if isinstance(b, float):
            if claim.runs:
                iv = paired_interval(claim.runs, b)
                iv = Interval(iv.mean, iv.se, iv.lo, iv.hi, iv.n, iv.dof, False)
            else:
                # one mean against a number: the number has no spread (its n is irrelevant)
                iv = unpaired_interval(claim.ours, claim.ours_std, claim.n, b, 0.0, claim.n)
        elif claim.runs and b.runs and len(claim.runs) == len(b.runs) and claim.seeds == b.seeds:
            iv = paired_interval(claim.runs, b.runs)
        else:
            iv = unpaired_interval(claim.ours, claim.ours_std, claim.n, b.ours, b.ours_std, b.n)
        return _oriented(iv, self.higher_is_better)


class Better(_PairedRule):
    """"Ours beats a baseline" (``than``: another claim's id, or a number), by more than
    ``min_effect`` (a margin in the claim's unit, default 0).

    With ``d_i = ours_i − baseline_i`` for each seed ``i`` (sign-flipped when lower is
    better), ``n`` pairs, and the 95% interval ``mean(d) ± t(n−1)·SE``:

    * **inconclusive** whenever ``n < 3``: two runs cannot tell an effect from seed noise;
    * **reproduced** when the whole interval lies above ``min_effect`` (excludes 0 in the
      paper's direction, or beyond the stated margin);
    * **not reproduced** when the whole interval lies below ``min_effect`` (the other side,
      or an effect smaller than the margin), or inside the "no effect" band
      ``±no_effect`` when one is stated;
    * **inconclusive** otherwise: more seeds would tell.
    """

    def __init__(self, than: str | float, higher_is_better: bool = True,
                 min_effect: float = 0.0, no_effect: float | None = None):
        super().__init__(than, higher_is_better)
        if min_effect < 0:
            raise ValueError(f"min_effect must be >= 0, got {min_effect}")
        if no_effect is not None and no_effect < 0:
            raise ValueError(f"no_effect must be >= 0, got {no_effect}")
        self.min_effect = float(min_effect)
        self.no_effect = None if no_effect is None else float(no_effect)

    def describe(self) -> str:
        op = "higher" if self.higher_is_better else "lower"
        s = f"{op} than {self._base_text()}: {CONFIDENCE * 100:g}% CI of the paired difference "
        s += f"above {_fmt(self.min_effect)}" if self.min_effect else "excludes 0"
        if self.no_effect is not None:
            s += f"; inside ±{_fmt(self.no_effect)} is no effect"
        return s + f"; n ≥ {MIN_SEEDS} seeds"

    def judge(self, claim: "Claim", others: Mapping[str, "Claim"]) -> tuple[str, str]:
        iv = self.interval(claim, others)
        evidence = iv.text()
        if iv.n < MIN_SEEDS:
            return INCONCLUSIVE, evidence + f"; fewer than {MIN_SEEDS} seeds"
        if iv.lo > self.min_effect:
            return REPRODUCED, evidence
        if iv.hi < self.min_effect:
            return NOT_REPRODUCED, evidence
        if self.no_effect is not None and -self.no_effect <= iv.lo and iv.hi <= self.no_effect:
            return NOT_REPRODUCED, evidence + "; inside the no-effect band"
        return INCONCLUSIVE, evidence


class Equivalent(_PairedRule):
    """"Ours matches the baseline" (``one_sided=False``: the interval of the paired difference
    lies inside ``±tolerance``) or "is no worse" (``one_sided=True``: the interval lies above
    ``−tolerance`` in the paper's direction). The tolerance is stated beside the claim.

    inconclusive whenever ``n < 3``; not reproduced when the interval lies entirely outside
    the tolerated region; inconclusive when it straddles an edge.
    """

    def __init__(self, than: str | float, tolerance: float, higher_is_better: bool = True,
                 one_sided: bool = False):
        super().__init__(than, higher_is_better)
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        self.tolerance = float(tolerance)
        self.one_sided = bool(one_sided)

    def describe(self) -> str:
        tol = _fmt(self.tolerance)
        if self.one_sided:
            op = "no worse" if self.higher_is_better else "no higher"
            s = f"{op} than {self._base_text()}: {CONFIDENCE * 100:g}% CI of the paired difference above −{tol}"
        else:
            s = f"matches {self._base_text()}: {CONFIDENCE * 100:g}% CI of the paired difference inside ±{tol}"
        return s + f"; n ≥ {MIN_SEEDS} seeds"

    def judge(self, claim: "Claim", others: Mapping[str, "Claim"]) -> tuple[str, str]:
        iv = self.interval(claim, others)
        tol = self.tolerance
        evidence = iv.text() + f", tolerance {_fmt(tol)}"
        if iv.n < MIN_SEEDS:
            return INCONCLUSIVE, evidence + f"; fewer than {MIN_SEEDS} seeds"
        if self.one_sided:
            if iv.lo > -tol:
                return REPRODUCED, evidence
            if iv.hi < -tol:
                return NOT_REPRODUCED, evidence
            return INCONCLUSIVE, evidence
        if -tol < iv.lo and iv.hi < tol:
            return REPRODUCED, evidence
        if iv.hi < -tol or iv.lo > tol:
            return NOT_REPRODUCED, evidence
        return INCONCLUSIVE, evidence


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


class Reference(Rule):
    """The baseline arm of a paired claim (say the per-seed box AP of the detector a method is
    compared with): recorded so that :class:`Better` and :class:`Equivalent` can pair with it by
    id, and so that the reader sees both arms, but not judged. Its verdict is ``"reported"`` and
    :func:`~course_lib.results.record.counts` leaves it out of the claims and the checks."""

    kind = REFERENCE

    def describe(self) -> str:
        return "reported, not judged (the baseline arm of a paired claim)"

    def judge(self, claim: "Claim", others: Mapping[str, "Claim"]) -> tuple[str, str]:
        return REPORTED, ""
