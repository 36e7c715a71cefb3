"""Reading records back: loading one or all records (schema-checked), the report's scoreboard."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from course_lib import paths
from course_lib.results.record import _ours_text
from course_lib.results.rules import _fmt, _with_unit
from course_lib.results.schema import check_record


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
                "kind": "headline claim" if c.get("headline") else c.get("kind", "check"),
                "claim": c["claim"],
                "paper": _with_unit(_fmt(c["paper"]), c["unit"]) if c["paper"] is not None
                else "—",
                "ours": _ours_text(c["ours"], c["ours_std"], c["n"], c["unit"]),
                "verdict": c["verdict"],
                "evidence": c.get("evidence", ""),
                "run date": date,
                "commit": commit,
            })  # fmt: skip
    cols = ["notebook", "kind", "claim", "paper", "ours", "verdict", "evidence", "run date",
            "commit"]
    return pd.DataFrame(rows, columns=cols)
