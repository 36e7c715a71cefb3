"""Scoreboard v1 records -> v2: every row gets its ``kind``, claims are re-judged honestly.

A v1 record (before scoreboard v2) stored, per row, the mean, a spread and ``n`` but no per-seed
values, and judged "A beats B" on a 2·SE band, with single runs decided on the point estimate.
:func:`migrate_v1` rewrites such a record without inventing anything:

* rows judged by ``higher than`` / ``lower than`` become *claims*, re-judged by v2's
  :class:`~course_lib.results.rules.Better` from the stored means and spreads (unpaired: the
  per-seed pairs were not kept, so the interval is wider than a paired one would be, and a row
  with fewer than 3 runs per arm is "inconclusive", whatever its point estimate);
* every other row (at least, at most, within) becomes a *check*, its verdict unchanged;
* a spread stored with ``n = 1`` was assumed, not measured: it is dropped;
* the same arm recorded twice (same rule, same numbers) and the same pair of arms claimed twice
  are kept once; later rules that named the dropped id now name the kept one;
* ``renames`` (old id -> new id) fixes ids in place, in rows and in the rules that name them.

``python -m course_lib migrate-results [--results DIR]`` migrates every record in a folder.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from course_lib.results.record import Claim, parse_number, write_atomic
from course_lib.results.rules import CHECK, CLAIM, INCONCLUSIVE, Better
from course_lib.results.schema import CLAIM_KEYS, check_record

NOTE = "scoreboard v2: re-judged from the v1 record's means (no per-seed pairs were kept)"

_V1_BETTER = re.compile(
    r"^(?P<op>higher|lower) than (?:\[(?P<id>[^\]]+)\]|(?P<num>[^ ]+)) by > max\((?P<m>[^,]+), 2·SE\)"
)

# Ids to fix in the v1 records. 01_albef: the ITC-ranking rows used the prefix "itc_", so the
# ITC-ranking row of variant "mlm_itm" got the id of the official row of variant "itc_mlm_itm"
# ("clean_itc_mlm_itm") and replaced it; the ITC-ranking rows are "itcrank_" now. The official
# row that was overwritten is lost (the claims that named it become inconclusive).
ALBEF_ITC = re.compile(r"^(clean|noisy)_itc_(.+)$")


def albef_renames(record: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for c in record["claims"]:
        m = ALBEF_ITC.match(c["id"])
        if m and "ITC ranking" in c["claim"]:
            out[c["id"]] = f"{m.group(1)}_itcrank_{m.group(2)}"
        elif c["id"].startswith("itc_mod_gain_"):
            out[c["id"]] = "itcrank_" + c["id"][len("itc_"):]
    return out


def _v1_rule(text: str) -> Better | None:
    m = _V1_BETTER.match(text)
    if not m:
        return None
    than: str | float = m.group("id") if m.group("id") is not None else parse_number(m.group("num"))
    return Better(than, higher_is_better=m.group("op") == "higher",
                  min_effect=parse_number(m.group("m")))


def migrate_v1(record: Mapping[str, Any], renames: Mapping[str, str] | None = None) -> dict:
    """The v2 form of a v1 ``record`` (a v2 record is returned unchanged)."""
    rows = record["claims"]
    if all("kind" in c for c in rows):
        return dict(record)
    renames = dict(renames or {})
    if record.get("notebook") == "01_albef":
        renames = {**albef_renames(record), **renames}

    def ref(x: str) -> str:
        return alias.get(renames.get(x, x), renames.get(x, x))

    alias: dict[str, str] = {}  # dropped id -> kept id
    seen: dict[str, Claim] = {}
    arms: dict[tuple, str] = {}  # (rule, ours, std, n) -> id
    pairs: dict[frozenset, str] = {}
    out: list[Claim] = []
    for c in rows:
        cid = renames.get(c["id"], c["id"])
        n = int(c["n"])
        std = c["ours_std"] if n >= 2 else None
        rule = _v1_rule(c["rule"])
        if rule is not None and isinstance(rule.than, str):
            rule.than = ref(rule.than)
        new = Claim(id=cid, claim=c["claim"], paper=c["paper"], ours=float(c["ours"]),
                    ours_std=std, n=n, unit=c["unit"], rule=c["rule"], verdict=c["verdict"],
                    note=c.get("note", ""), kind=CLAIM if rule is not None else CHECK)
        arm = (new.ours, new.ours_std, new.n)
        if rule is None:
            key = (c["rule"],) + arm
            if key in arms:
                alias[cid] = arms[key]
                continue
            arms[key] = cid
        else:
            base = (rule.than,) if not isinstance(rule.than, str) else (
                (seen[rule.than].ours, seen[rule.than].ours_std, seen[rule.than].n)
                if rule.than in seen else (rule.than,))
            pair = frozenset({arm, base})
            if pair in pairs:
                alias[cid] = pairs[pair]
                continue
            pairs[pair] = cid
            new.rule = str(rule)
            if isinstance(rule.than, str) and rule.than not in seen:
                new.verdict = INCONCLUSIVE
                new.evidence = (f"baseline row {rule.than!r} is not in the v1 record "
                                "(lost to an id collision)")
            else:
                new.verdict, new.evidence = rule.judge(new, seen)
            new.note = "; ".join(t for t in (new.note, NOTE) if t)
        seen[cid] = new
        out.append(new)
    migrated = {**record, "claims": [c.to_json() for c in out]}
    check_record(migrated)
    assert all(list(c) == list(CLAIM_KEYS) for c in migrated["claims"])
    return migrated


def migrate_folder(folder: Path) -> list[Path]:
    """Migrate every ``<folder>/*/*.json`` record in place; returns the files rewritten."""
    changed = []
    for p in sorted(Path(folder).glob("*/*.json")):
        record = json.loads(p.read_text(encoding="utf-8"))
        new = migrate_v1(record)
        if new != record:
            write_atomic(p, json.dumps(new, indent=2, ensure_ascii=False) + "\n")
            changed.append(p)
    return changed
