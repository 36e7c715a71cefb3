"""The "What to take away" text, written from the record's verdicts and numbers.

A notebook's closing cell must not contradict its own table, and must not quote numbers of an
older run. So the text that quotes a measured number, or says whether a claim held, is generated
from the record: a paper package lists its points (:class:`Point`: a claim id and one sentence per
verdict), and :func:`takeaways` renders them as markdown with the numbers of this run.

A sentence is a ``str.format`` template; the fields come from the claim:

``{ours}``  our value with its spread and n (``21.5 ± 1.3% (n=3)``)
``{paper}`` the paper's value with its unit
``{diff}``  the mean paired difference in the paper's direction, with its SE (``+1.02 ± 0.11``)
``{ci}``    its 95% interval (``[+0.7, +1.4]``)
``{n}``     the number of seeds (pairs)
``{claim}`` the claim's text; ``{verdict}`` its verdict

Example (in a paper's ``experiment.py``)::

    TAKEAWAYS = [
        Point("stego_beats_kmeans",
              reproduced="STEGO's codes cluster better than k-means on the same features ({diff} mIoU).",
              not_reproduced="k-means on the frozen features still wins ({diff} mIoU): ...",
              inconclusive="STEGO vs k-means is within seed noise here ({diff}, 95% CI {ci})."),
    ]

and in the notebook: ``takeaways(rec, exp.TAKEAWAYS)``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from course_lib.results.record import Claim, Results, _ours_text, verdict_summary
from course_lib.results.rules import REFERENCE
from course_lib.results.rules import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    _fmt,
    _with_unit,
)

_IV = re.compile(r"diff ([+−][\d.,]+)(?: ± ([\d.e+\-]+) SE)?.*?CI \[([^\]]+)\]")
_DIFF_ONLY = re.compile(r"diff ([+−][\d.,]+)")


@dataclass(frozen=True)
class Point:
    """One take-away about claim ``id``: the sentence to show for each verdict (templates with
    the fields listed in the module docstring). ``missing`` is shown when the run did not record
    the claim (e.g. a profile that skips the experiment); empty = say nothing."""

    id: str
    reproduced: str
    not_reproduced: str
    inconclusive: str
    missing: str = ""

    def sentence(self, verdict: str) -> str:
        return {REPRODUCED: self.reproduced, NOT_REPRODUCED: self.not_reproduced,
                INCONCLUSIVE: self.inconclusive}[verdict]


class Markdown(str):
    """Markdown text that Jupyter renders as markdown (and prints as itself elsewhere)."""

    def _repr_markdown_(self) -> str:
        return str(self)


def fields(c: Claim | Mapping[str, Any]) -> dict[str, str]:
    """The template fields of one claim (see the module docstring)."""
    d = c.to_json() if isinstance(c, Claim) else dict(c)
    unit = d.get("unit", "")
    ev = d.get("evidence") or ""
    diff = ci = "—"
    m = _IV.search(ev)
    if m:
        diff = m.group(1) + (f" ± {m.group(2)}" if m.group(2) else "")
        ci = f"[{m.group(3)}]"
    else:
        m = _DIFF_ONLY.search(ev)
        if m:
            diff = m.group(1)
    paper = _with_unit(_fmt(d["paper"]), unit) if d.get("paper") is not None else "—"
    return {"ours": _ours_text(d["ours"], d["ours_std"], d["n"], unit), "paper": paper,
            "diff": _with_unit(diff, unit) if diff != "—" else diff, "ci": ci, "n": str(d["n"]),
            "claim": d["claim"], "verdict": d["verdict"]}


def takeaways(record: Results | Mapping[str, Any], points: Iterable[Point | str],
              title: str = "What to take away") -> Markdown:
    """The take-away cell's markdown: the run's counts, then one bullet per point (a plain
    string is a fixed sentence and must not quote a measured number)."""
    claims = record.claims if isinstance(record, Results) else record["claims"]
    by_id = {(c.id if isinstance(c, Claim) else c["id"]): c for c in claims}
    lines = [f"**{title}** ({verdict_summary(list(claims))} in this run)", ""]
    for p in points:
        if isinstance(p, str):
            lines.append(f"- {p}")
            continue
        c = by_id.get(p.id)
        if c is None:
            if p.missing:
                lines.append(f"- {p.missing}")
            continue
        f = fields(c)
        d = c.to_json() if isinstance(c, Claim) else c
        if d.get("kind") == REFERENCE:
            raise ValueError(f"take-away {p.id!r}: a reference row is reported, not judged; write the "
                             "point on the claim that pairs with it")
        head = "headline claim" if d.get("headline") else d.get("kind", "claim")
        lines.append(f"- *{f['verdict']}* ({head} `{p.id}`): " + p.sentence(f["verdict"]).format(**f))
    return Markdown("\n".join(lines) + "\n")


__all__ = ["Point", "Markdown", "fields", "takeaways"]
