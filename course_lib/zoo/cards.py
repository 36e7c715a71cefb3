"""Building zoo entries, their model cards, and checking them.

A model card is ``<cache>/zoo/<entry>-<profile>-<digest>.json``. ``digest`` hashes the entry's
name, its code version and the complete resolved parameters of its notebook for the profile, so a
change of recipe is a different card (content-addressed); the card lists the artifact files the
build used or trained (``<cache>/<name>-<key>.pt``, themselves keyed by their whole configuration)
with their sha256, the build's wall time and device, and the entry's quality figures. Cards are
written atomically after the artifacts. :func:`status` re-hashes the files: a missing or corrupt
one is named, and :func:`ensure` / :func:`build` rebuild it.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from course_lib import __version__, config, paths
from course_lib.results.record import _jsonable, write_atomic
from course_lib.zoo.registry import Entry, get, resolve_names

# parameters that do not change what is trained
_NOT_RECIPE = ("device", "device_resolved", "data_root", "retrain", "zoo")


class ZooMissing(RuntimeError):
    """A notebook asked for zoo entries that are not built (with ``zoo='require'``)."""


def zoo_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    return root / "zoo"


def params_for(entry: Entry, profile: str, device: str | None = None) -> config.Params:
    """The owner notebook's resolved parameters for ``profile`` (its defaults)."""
    return config.resolve(entry.notebook, profile=profile, device=device or "auto")


def recipe_of(P: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(P.items()) if k not in _NOT_RECIPE}


def digest(entry: Entry, profile: str) -> str:
    from course_lib.train import key_value

    P = params_for(entry, profile, device="cpu")
    blob = {"name": entry.name, "profile": profile, "code_version": entry.code_version,
            "params": key_value(recipe_of(P))}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def card_path(entry: Entry, profile: str, cache_dir=None) -> Path:
    return zoo_dir(cache_dir) / f"{entry.name}-{profile}-{digest(entry, profile)}.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_card(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def status(entry: Entry, profile: str, cache_dir=None) -> tuple[str, str]:
    """``("ok" | "missing" | "corrupt", detail)`` of an entry's card and artifact files."""
    p = card_path(entry, profile, cache_dir)
    card = read_card(p)
    if card is None:
        return ("missing", f"no model card {p.name}") if not p.exists() else ("corrupt", f"{p} unreadable")
    root = p.parent.parent
    for a in card.get("artifacts", []):
        f = root / a["file"]
        if not f.is_file():
            return "missing", f"artifact {f} is gone"
        if f.stat().st_size != a["bytes"] or file_sha256(f) != a["sha256"]:
            return "corrupt", f"artifact {f} fails its checksum"
    return "ok", str(p)


def _machine(device: str) -> dict[str, Any]:
    import torch

    info = {"device": device, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _fmt_s(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min"


def build_one(entry: Entry, profile: str, device: str | None = None, *, force: bool = False,
              cache_dir=None, log: Callable[[str], Any] = print) -> dict:
    """Build ``entry`` for ``profile`` (training what is missing, through the notebook's own code),
    measure its figures and write its model card. Returns the card."""
    from course_lib.train import watch_artifacts

    if profile not in entry.profiles:
        raise ValueError(f"zoo entry {entry.name!r} has no {profile!r} build (profiles: "
                         f"{', '.join(entry.profiles)}): that profile trains on real data or loads "
                         "weights from disk")
    state, detail = status(entry, profile, cache_dir)
    if state == "corrupt":
        log(f"zoo: {entry.name}: {detail}; rebuilding it")
        _move_aside_corrupt(entry, profile, cache_dir)
    P = params_for(entry, profile, device)
    if force:
        P["retrain"] = True
    old_cache = os.environ.get("COURSE_CACHE")
    if cache_dir is not None:
        os.environ["COURSE_CACHE"] = str(cache_dir)
    t0 = time.perf_counter()
    try:
        with watch_artifacts() as used:
            figures = dict(entry.builder_fn()(P, log))
    finally:
        if cache_dir is not None:
            if old_cache is None:
                os.environ.pop("COURSE_CACHE", None)
            else:
                os.environ["COURSE_CACHE"] = old_cache
    seconds = time.perf_counter() - t0
    root = zoo_dir(cache_dir).parent
    arts, seen = [], set()
    for path, trained, train_s in used:
        if path in seen:
            continue
        seen.add(path)
        rel = Path(os.path.relpath(path, root)).as_posix()
        arts.append({"file": rel, "bytes": path.stat().st_size, "sha256": file_sha256(path),
                     "trained_now": trained, "train_seconds": round(train_s, 2)})
    card = {
        "entry": entry.name, "what": entry.what, "profile": profile, "digest": digest(entry, profile),
        "code_version": entry.code_version, "course_lib_version": __version__,
        "notebook": entry.notebook, "used_by": list(entry.used_by), "data": entry.data,
        "recipe": entry.recipe, "params": _jsonable(recipe_of(P)),
        "built": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 2),
        "train_seconds": round(sum(a["train_seconds"] for a in arts), 2),
        "estimate_seconds": entry.estimate(profile), "machine": _machine(str(P.device_resolved)),
        "figures": {k: (round(float(v), 4) if isinstance(v, (int, float)) else v) for k, v in figures.items()},
        "figure_meaning": dict(entry.figures), "quality": quality(entry, figures, profile),
        "artifacts": arts,
    }
    out = card_path(entry, profile, cache_dir)
    write_atomic(out, json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    return card


def quality(entry: Entry, figures: Mapping[str, Any], profile: str) -> list[dict]:
    """Whether the entry earns its place: each of its quality figures against its baseline
    (another figure of the card, or a number) plus a margin. A smoke build is too short to be
    judged: its rows say so (``passes: None``)."""
    rows = []
    for fig, base, margin in entry.quality:
        ours = float(figures.get(fig, float("nan")))
        b = float(figures.get(base, float("nan"))) if isinstance(base, str) else float(base)
        ok = None if profile == "smoke" or not (math.isfinite(ours) and math.isfinite(b)) \
            else bool(ours > b + margin)
        rows.append({"figure": fig, "ours": round(ours, 4), "baseline": base, "baseline_value": round(b, 4),
                     "margin": margin, "passes": ok})
    return rows


def _move_aside_corrupt(entry: Entry, profile: str, cache_dir=None) -> None:
    p = card_path(entry, profile, cache_dir)
    card = read_card(p) or {}
    root = p.parent.parent
    for a in card.get("artifacts", []):
        f = root / a["file"]
        if f.is_file() and (f.stat().st_size != a["bytes"] or file_sha256(f) != a["sha256"]):
            os.replace(f, f.with_name(f.name + ".corrupt"))
    if p.exists() and card == {}:
        os.replace(p, p.with_name(p.name + ".corrupt"))


def build(names: Sequence[str] = (), profile: str = "study", device: str | None = None, *,
          force: bool = False, cache_dir=None, log: Callable[[str], Any] = print) -> list[dict]:
    """Build the named entries (all when empty) for ``profile``, one after the other, printing
    progress with an ETA (from the entries' estimates, rescaled by how fast this machine has been
    so far). Entries already built and intact are skipped unless ``force``."""
    todo = [e for e in resolve_names(names) if profile in e.profiles]
    total_est = sum(e.estimate(profile) for e in todo)
    done_est = done_real = 0.0
    cards, t_all = [], time.perf_counter()
    log(f"zoo: {len(todo)} entr{'y' if len(todo) == 1 else 'ies'} for profile {profile!r}, "
        f"about {_fmt_s(total_est)} on 2 CPU cores")
    for i, e in enumerate(todo, 1):
        state, detail = status(e, profile, cache_dir)
        speed = done_real / done_est if done_est > 0 else 1.0
        eta = (total_est - done_est) * speed
        if state == "ok" and not force:
            log(f"[{i}/{len(todo)}] {e.name}: built ({Path(detail).name})")
            card = read_card(Path(detail))
        else:
            log(f"[{i}/{len(todo)}] {e.name}: {e.what} — about {_fmt_s(e.estimate(profile) * speed)}"
                f" (all remaining: {_fmt_s(eta)})")
            t0 = time.perf_counter()
            card = build_one(e, profile, device, force=force, cache_dir=cache_dir, log=log)
            done_real += time.perf_counter() - t0
            done_est += e.estimate(profile)
            figs = ", ".join(f"{k} {v}" for k, v in card["figures"].items())
            log(f"[{i}/{len(todo)}] {e.name}: done in {_fmt_s(card['build_seconds'])}; {figs}")
            for q in card["quality"]:
                if q["passes"] is False:
                    log(f"  WARNING: {e.name}'s {q['figure']} {q['ours']} does not beat {q['baseline']} "
                        f"({q['baseline_value']}) by {q['margin']}: this entry has not earned its place yet")
        cards.append(card)
    log(f"zoo: profile {profile!r} ready in {_fmt_s(time.perf_counter() - t_all)}")
    return cards


def ensure(names: Iterable[str], P: Mapping[str, Any] | None = None, *, profile: str | None = None,
           device: str | None = None, policy: str | None = None, cache_dir=None,
           log: Callable[[str], Any] = print) -> dict[str, dict]:
    """What a notebook calls before it uses pretrained models: every named entry is built and
    intact for the notebook's profile. A missing one is built now, with a message saying what
    and about how long (``policy='build'``, the default), or the call fails at once naming the
    command that builds the zoo (``policy='require'``, the notebooks' ``zoo`` parameter).
    Returns the model cards by name; profiles an entry has no build for are skipped."""
    P = P or {}
    profile = profile or P.get("profile") or "study"
    device = device or P.get("device_resolved") or P.get("device")
    policy = policy or P.get("zoo") or "build"
    if policy not in ("build", "require"):
        raise ValueError(f"zoo policy must be 'build' or 'require', got {policy!r}")
    cards: dict[str, dict] = {}
    wanted = [get(n) for n in names]
    missing = []
    for e in wanted:
        if profile not in e.profiles:
            continue
        changed = _changed_knobs(e, P, profile)
        if changed:
            log(f"zoo: {e.name} is built for the {profile} profile's defaults; this run changes "
                f"{', '.join(changed)}, so the notebook trains its own model")
            continue
        state, detail = status(e, profile, cache_dir)
        if state == "ok":
            cards[e.name] = read_card(Path(detail))
        else:
            missing.append((e, state, detail))
    if missing and policy == "require":
        what = "; ".join(f"{e.name} ({detail})" for e, _, detail in missing)
        raise ZooMissing(f"the course zoo lacks what this notebook needs for profile {profile!r}: "
                         f"{what}. Build it first: make zoo PROFILE={profile} (or python -m "
                         f"course_lib zoo build {' '.join(e.name for e, _, _ in missing)} --profile "
                         f"{profile}), or import an organizer's archive: python -m course_lib zoo "
                         "import FILE")
    for e, state, detail in missing:
        log(f"zoo: building {e.name!r} ({e.what}) for profile {profile!r} now — about "
            f"{_fmt_s(e.estimate(profile))} on 2 CPU cores, once ({detail}). `make zoo "
            f"PROFILE={profile}` builds every entry ahead of time.")
        cards[e.name] = build_one(e, profile, device, cache_dir=cache_dir, log=log)
    return cards


def summary(cards: Mapping[str, dict]) -> str:
    """One line per model card: what it is, when and where it was built, its figures."""
    if not cards:
        return "no zoo entries for this run (other parameters than the profile's defaults, or a profile without zoo builds)"
    lines = []
    for name, c in cards.items():
        figs = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in c["figures"].items())
        lines.append(f"{name}: {c['what']} — built {c['built'][:16].replace('T', ' ')} in "
                     f"{_fmt_s(c['build_seconds'])} on {c['machine']['device']}; {figs}; earns its place: "
                     f"{_earns(c)}")
    return "\n".join(lines)


def _changed_knobs(entry: Entry, P: Mapping[str, Any], profile: str) -> list[str]:
    """The owner notebook's parameters that this run sets away from the profile's defaults (an
    entry is built for the defaults; another notebook's run never changes it)."""
    if P.get("notebook") != entry.notebook:
        return []
    defaults = params_for(entry, profile, device="cpu")
    specs = config.specs_for(entry.notebook)
    return [k for k in specs if k not in _NOT_RECIPE and k in P and P[k] != defaults.get(k)]


def _earns(card: dict | None) -> str:
    if not card or not card.get("quality"):
        return "—"
    verdicts = [q["passes"] for q in card["quality"]]
    if any(v is None for v in verdicts):
        return "not judged (smoke)"
    return "yes" if all(verdicts) else "NO: " + ", ".join(q["figure"] for q in card["quality"] if not q["passes"])


def list_rows(profile: str, cache_dir=None) -> list[dict]:
    """One row per entry for ``zoo list``: name, profile, state, build time, figures, users."""
    rows = []
    for e in resolve_names(()):
        if profile not in e.profiles:
            continue
        state, detail = status(e, profile, cache_dir)
        card = read_card(Path(detail)) if state == "ok" else None
        rows.append({"entry": e.name, "profile": profile, "state": state,
                     "built in": _fmt_s(card["build_seconds"]) if card else "—",
                     "estimate": _fmt_s(e.estimate(profile)),
                     "figures": ", ".join(f"{k} {v}" for k, v in (card or {}).get("figures", {}).items()),
                     "earns its place": _earns(card),
                     "used by": ", ".join(e.used_by), "what": e.what})
    return rows
