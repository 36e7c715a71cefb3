"""The verdict rules of the "paper vs. ours" records (:class:`Better`, :class:`Within`,
:class:`AtLeast`, :class:`AtMost`), the three verdicts and the number formatting they use."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from course_lib.results.record import Claim

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)

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
