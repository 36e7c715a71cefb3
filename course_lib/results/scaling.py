"""Scaling probes: does the gap of a claim that did not reproduce close with more budget?

A probe trains the claim's two arms (the paper's side and its baseline) on the same seeds at
1x, 2x, 4x ... a training budget (epochs, steps or data) and keeps every per-seed value. Each
budget is then judged like the claim itself: the paired per-seed differences, their mean, SE
and 95% interval (:func:`course_lib.results.paired_interval`), in the paper's direction. The
verdict of the claim stays what the study run measured; the probe shows the reader whether the
gap shrinks, holds or grows with scale.

Probes are too long for a notebook's budget, so they run once (``benchmarks/scaling_probe.py``)
and are committed as ``results/<notebook>/probe_<claim id>.json``; the notebook draws the file::

    {"notebook", "claim", "budget": "epochs per step", "unit": "%",
     "higher_is_better": true, "arms": {"ours": "...", "baseline": "..."},
     "rows": [{"factor": 1, "budget": 3, "seed": 0, "arm": "ours", "value": 61.2}, ...],
     "meta": {"date", "commit", "dirty", "machine", "elapsed_s", "params"}}
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from course_lib import paths
from course_lib.results.record import _jsonable, git_state, machine_info, write_atomic
from course_lib.results.rules import Interval, paired_interval

ARMS = ("ours", "baseline")


def probe_path(notebook: str, claim: str, results_dir: str | Path | None = None) -> Path:
    """Probes are maintainers' records, committed next to the study runs: ``results/`` by default."""
    root = Path(results_dir) if results_dir is not None else paths.RECORDED_DIR
    return root / notebook / f"probe_{claim}.json"


def save_probe(notebook: str, claim: str, rows: list[dict[str, Any]], *, budget: str,
               arms: dict[str, str], higher_is_better: bool = True, unit: str = "%",
               params: dict[str, Any] | None = None, elapsed_s: float | None = None,
               git: tuple[str | None, bool] | None = None, results_dir: str | Path | None = None) -> Path:
    """Write a probe (see the module docstring). ``rows``: one dict per trained model with
    ``factor``, ``budget``, ``seed``, ``arm`` (``"ours"`` or ``"baseline"``) and ``value``;
    ``git``: ``(commit, dirty)`` when the probe started (default: now)."""
    for r in rows:
        missing = {"factor", "budget", "seed", "arm", "value"} - set(r)
        if missing or r["arm"] not in ARMS:
            raise ValueError(f"probe row {r}: needs factor, budget, seed, arm in {ARMS} and value")
    if set(arms) != set(ARMS):
        raise ValueError(f"arms must name {ARMS}, got {sorted(arms)}")
    commit, dirty = git if git is not None else git_state()
    record = {"notebook": notebook, "claim": claim, "budget": budget, "unit": unit,
              "higher_is_better": bool(higher_is_better), "arms": dict(arms),
              "rows": [{k: _jsonable(v) for k, v in r.items()} for r in rows],
              "meta": {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                       "commit": commit, "dirty": dirty, "machine": machine_info(),
                       "elapsed_s": elapsed_s, "params": _jsonable(dict(params or {}))}}
    out = probe_path(notebook, claim, results_dir)
    write_atomic(out, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return out


def load_probe(notebook: str, claim: str, results_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The committed probe of ``claim``, or ``None`` when it was never run."""
    p = probe_path(notebook, claim, results_dir)
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None


def probe_intervals(probe: dict[str, Any]) -> list[tuple[float, float, Interval]]:
    """Per budget factor: ``(factor, budget, interval)`` of the paired difference ours − baseline
    over the seeds both arms ran, in the paper's direction (positive = the paper's side)."""
    out = []
    for f in sorted({r["factor"] for r in probe["rows"]}):
        rows = [r for r in probe["rows"] if r["factor"] == f]
        by = {arm: {r["seed"]: float(r["value"]) for r in rows if r["arm"] == arm} for arm in ARMS}
        seeds = sorted(set(by["ours"]) & set(by["baseline"]))
        if not seeds:
            continue
        sign = 1.0 if probe.get("higher_is_better", True) else -1.0
        iv = paired_interval([sign * by["ours"][s] for s in seeds], [sign * by["baseline"][s] for s in seeds])
        out.append((f, rows[0]["budget"], iv))
    return out


def probe_table(probe: dict[str, Any]):
    """A pandas DataFrame: per budget factor, each arm's mean and the paired difference."""
    import pandas as pd

    rows = []
    for f, budget, iv in probe_intervals(probe):
        arm_mean = {}
        for arm in ARMS:
            vals = [float(r["value"]) for r in probe["rows"] if r["factor"] == f and r["arm"] == arm]
            arm_mean[arm] = sum(vals) / len(vals)
        rows.append({"budget": f"{f:g}x ({budget})", probe["arms"]["ours"]: arm_mean["ours"],
                     probe["arms"]["baseline"]: arm_mean["baseline"], "paired diff (paper's direction)": iv.mean,
                     "SE": iv.se, "95% CI": f"[{iv.lo:+.1f}, {iv.hi:+.1f}]", "n": iv.n})
    return pd.DataFrame(rows).set_index("budget")


def plot_probe(probe: dict[str, Any], ax=None):
    """Left: each arm's mean ± SE per budget; right: the paired difference with its 95% interval
    and the zero line. Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        fig, ax = plt.subplots(1, 2, figsize=(11, 3.4))
    else:
        fig = ax[0].figure
    factors = sorted({r["factor"] for r in probe["rows"]})
    # ticks name the absolute budget too ("1x (8)"): a probe keeps its own 1x, which may differ
    # from the notebook's current parameters
    budget_of = {r["factor"]: r["budget"] for r in probe["rows"]}

    def ticks(fs):
        return [f"{f:g}x ({budget_of[f]:g})" for f in fs]

    for arm, color in zip(ARMS, ("tab:blue", "tab:gray")):
        means, ses = [], []
        for f in factors:
            v = np.array([float(r["value"]) for r in probe["rows"] if r["factor"] == f and r["arm"] == arm])
            means.append(v.mean())
            ses.append(v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0)
        ax[0].errorbar(factors, means, yerr=ses, marker="o", capsize=3, color=color, label=probe["arms"][arm])
    ax[0].set_xscale("log", base=2)
    ax[0].set_xticks(factors, ticks(factors))
    ax[0].set_xlabel(f"training budget ({probe['budget']})"); ax[0].set_ylabel(probe.get("unit", ""))
    ax[0].set_title("each arm (mean ± SE over seeds)"); ax[0].legend(fontsize=8)
    ivs = probe_intervals(probe)
    xs = [f for f, _, _ in ivs]
    ax[1].errorbar(xs, [iv.mean for _, _, iv in ivs],
                   yerr=[[iv.mean - iv.lo for _, _, iv in ivs], [iv.hi - iv.mean for _, _, iv in ivs]],
                   marker="o", capsize=3, color="tab:red")
    ax[1].axhline(0, color="k", lw=0.8)
    ax[1].set_xscale("log", base=2)
    ax[1].set_xticks(xs, ticks(xs))
    ax[1].set_xlabel(f"training budget ({probe['budget']})")
    ax[1].set_title(f"{probe['claim']}: paired difference, 95% CI\n(positive = the paper's direction; "
                    f"n = {ivs[0][2].n if ivs else 0} seeds)", fontsize=9)
    fig.tight_layout()
    return fig


def show_probes(notebook: str, claims, results_dir: str | Path | None = None) -> int:
    """Display the committed probe of each of ``claims`` (table and figure); returns how many
    there were. A notebook's "Scaling probe" cell is this one call."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    shown = 0
    for claim in claims:
        probe = load_probe(notebook, claim, results_dir)
        if probe is None:
            continue
        meta = probe.get("meta", {})
        print(f"{claim}: {probe['arms']['ours']} vs. {probe['arms']['baseline']} (commit {meta.get('commit')}, "
              f"{(meta.get('elapsed_s') or 0) / 60:.0f} min wall clock)" + (f"; {meta['note']}" if meta.get("note") else ""))
        display(probe_table(probe).round(2))
        plot_probe(probe)
        plt.show()
        shown += 1
    if not shown:
        print(f"no scaling probe committed for {notebook} (benchmarks/scaling_probe.py {notebook} CLAIM)")
    return shown


def sweep(P, factors, knob: str, arms: dict, log=print) -> list[dict[str, Any]]:
    """The rows of a probe: for each budget factor ``f``, the parameters ``P`` with ``knob``
    (say ``"epochs"``) set to ``round(P[knob] * f)``, each seed ``P.seed .. P.seed + P.seeds - 1``
    and each arm of ``arms`` (``{"ours": (label, run), "baseline": (label, run)}``, where
    ``run(P_f, seed)`` trains or loads that arm and returns ``(value, train_seconds)``)."""
    from course_lib import config

    if set(arms) != set(ARMS):
        raise ValueError(f"arms must name {ARMS}, got {sorted(arms)}")
    rows = []
    for f in factors:
        budget = max(1, round(P[knob] * f))
        Pf = config.Params({**P, knob: budget})
        for seed in [P.seed + i for i in range(P.seeds)]:
            for arm in ARMS:
                label, run = arms[arm]
                value, seconds = run(Pf, seed)
                rows.append({"factor": f, "budget": budget, "seed": seed, "arm": arm, "value": value,
                             "train_s": seconds})
                log(f"{f:g}x ({knob} {budget}) seed {seed} {label}: {value:.1f} ({seconds:.0f}s)")
    return rows
