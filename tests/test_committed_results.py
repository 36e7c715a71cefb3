"""The committed results of real study-profile runs are complete and match the README."""
import math
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib import results

REPO = Path(__file__).resolve().parents[1]
STUDY = sorted((REPO / "results").glob("*/study.json"))


@pytest.mark.parametrize("path", STUDY, ids=[p.parent.name for p in STUDY])
def test_study_record_is_a_real_run(path):
    rec = results.load(path)
    results.check_record(rec, str(path))
    assert rec["notebook"] == path.parent.name and rec["profile"] == "study"
    meta = rec["meta"]
    assert meta["commit"] and meta["date"] and meta["machine"]
    assert meta["elapsed_s"] > 60, "elapsed_s must time the whole run, not only the recording"
    assert meta["elapsed_s"] <= 15 * 60, "the study profile must fit in 15 minutes on 2 cores"
    for c in rec["claims"]:
        assert math.isfinite(c["ours"]) and c["verdict"] in results.verdicts_of(c["kind"])


def test_readme_table_is_regenerated_from_results():
    r = subprocess.run([sys.executable, "-m", "course_lib", "readme", "--check"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
