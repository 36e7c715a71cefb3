"""The JSON schema of ``results/<notebook>/<profile>.json``: its keys and :func:`check_record`."""
from __future__ import annotations

from typing import Any, Mapping

from course_lib.results.rules import VERDICTS

TOP_KEYS = ("notebook", "title", "paper_url", "profile", "params", "meta", "claims")
META_KEYS = ("date", "commit", "dirty", "machine", "python", "torch", "device", "elapsed_s")
CLAIM_KEYS = (
    "id", "claim", "paper", "ours", "ours_std", "n", "unit", "rule", "verdict", "note",
)  # fmt: skip


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
