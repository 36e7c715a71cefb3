"""Shared pytest setup: headless plotting, sane thread counts, markers, notebook timings."""
from __future__ import annotations

import os
import sys

import pytest

# Before anything imports matplotlib or torch.
os.environ.setdefault("MPLBACKEND", "Agg")


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


# torch/OpenMP read these at import: use the CPUs this process may run on, not the host's
# (a container often sees many more cores than it owns, and oversubscription is slow).
# An explicit OMP_NUM_THREADS also sets MKL's (torch takes its thread count from either).
os.environ.setdefault("OMP_NUM_THREADS", str(_cpu_count()))
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])

MARKERS = {
    "notebook": "executes a notebook end to end (slow)",
    "slow": "takes more than a few seconds",
}


def pytest_configure(config):
    known = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    for name, help_text in MARKERS.items():
        if name not in known:
            config.addinivalue_line("markers", f"{name}: {help_text}")


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Cap torch's intra-op threads at the CPUs we own, if a test module imported torch."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(max(1, min(torch.get_num_threads(), _cpu_count())))
    yield


def pytest_terminal_summary(terminalreporter):
    """List how long each notebook took (tests record ``notebook_seconds``)."""
    rows = []
    for reports in terminalreporter.stats.values():
        for rep in reports:
            if getattr(rep, "when", None) != "call":
                continue
            for key, value in getattr(rep, "user_properties", []):
                if key == "notebook_seconds":
                    rows.append((rep.nodeid, value, rep.outcome))
    if rows:
        terminalreporter.section("notebook run times (smoke profile)")
        for nodeid, seconds, outcome in sorted(rows):
            terminalreporter.write_line(f"{seconds:8.1f} s  {outcome:7s}  {nodeid}")
