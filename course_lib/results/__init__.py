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

# The package's modules: rules (verdicts, rule objects), schema (JSON keys, check_record),
# record (Claim, Results, ClaimsTable, write_atomic, git state), store (load, load_all,
# scoreboard), notebooks (NOTEBOOKS). Every name of the former single module is re-exported
# here, private helpers included.
from course_lib.results.notebooks import NOTEBOOKS, NotebookInfo
from course_lib.results.record import (  # noqa: F401
    Claim,
    ClaimsTable,
    Results,
    _NUMBER,
    _cpu_model,
    _git,
    _jsonable,
    _ours_text,
    claims_table,
    counts,
    git_state,
    machine_info,
    parse_number,
    verdict_summary,
    write_atomic,
)
from course_lib.results.rules import (  # noqa: F401
    CHECK,
    CLAIM,
    CONFIDENCE,
    KINDS,
    MIN_SEEDS,
    Equivalent,
    Interval,
    paired_interval,
    unpaired_interval,
    INCONCLUSIVE,
    NOISE_Z,
    NOT_REPRODUCED,
    REFERENCE,
    REPORTED,
    REPRODUCED,
    VERDICTS,
    AtLeast,
    Reference,
    verdicts_of,
    AtMost,
    Better,
    Rule,
    Within,
    _fmt,
    _fmt_spread,
    _IntervalRule,
    _se,
    _signed,
    _with_unit,
)
from course_lib.results.schema import CLAIM_KEYS, META_KEYS, TOP_KEYS, check_record
from course_lib.results.store import load, load_all, scoreboard
from course_lib.results.takeaways import Markdown, Point, takeaways

__all__ = [
    "REPRODUCED",
    "NOT_REPRODUCED",
    "INCONCLUSIVE",
    "VERDICTS",
    "Rule",
    "Better",
    "Equivalent",
    "CLAIM",
    "CHECK",
    "REFERENCE",
    "REPORTED",
    "Reference",
    "verdicts_of",
    "paired_interval",
    "counts",
    "Point",
    "takeaways",
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
