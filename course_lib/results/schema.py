"""The JSON schema of ``results/<notebook>/<profile>.json``: its keys and :func:`check_record`."""
from __future__ import annotations

from typing import Any, Mapping

from course_lib.results.rules import KINDS, verdicts_of

TOP_KEYS = ("notebook", "title", "paper_url", "profile", "params", "meta", "claims")
META_KEYS = ("date", "commit", "dirty", "machine", "python", "torch", "device", "elapsed_s")
CLAIM_KEYS = (
    "id", "kind", "headline", "claim", "paper", "ours", "ours_std", "n", "seeds", "runs", "unit",
    "rule", "verdict", "evidence", "note",
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
            if c.get("kind") not in KINDS:
                problems.append(f"claims[{i}]: kind {c.get('kind')!r} not in {KINDS}")
            if c.get("headline") and c.get("kind") != "claim":
                problems.append(f"claims[{i}]: a headline row must be a claim")
            allowed = verdicts_of(c.get("kind"))
            if c.get("verdict") not in allowed:
                problems.append(f"claims[{i}]: verdict {c.get('verdict')!r} of a {c.get('kind')} row "
                                f"not in {allowed}")
        ids = [c.get("id") for c in claims if isinstance(c, Mapping)]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            problems.append(f"duplicate claim ids {dup}")
    elif "claims" in record:
        problems.append("claims is not a list")
    if problems:
        raise ValueError(f"{source} does not follow the results schema: " + "; ".join(problems))
