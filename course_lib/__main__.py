"""Command line of the course: ``python -m course_lib <command>`` (also ``course <command>``).

``report [--profile study] [--results DIR] [--out FILE] [--notebook ID ...] [--json]``
    every notebook's (or the named notebooks') "paper vs. ours" rows as one markdown scoreboard:
    per notebook and overall, headline claims reproduced / total, all paper claims, checks;
    ``--json`` prints the same counts and rows for scripts
``readme [--check] [--readme FILE] [--results DIR] [--notebooks DIR] [--profile study]``
    regenerate the README's notebook table between ``<!-- notebooks:begin -->`` and
    ``<!-- notebooks:end -->``; ``--check`` only compares and exits 1 when it is out of date
``zoo list | build [NAMES] [--profile P] [--device D] [--force] | export FILE | import FILE |
artifacts``
    the course zoo: its entries and model cards; build them (progress, ETA); move a built zoo
    between machines as one checksummed archive; every cached model file
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

from . import paths
from .results import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    NOTEBOOKS,
    NotebookInfo,
    counts,
    load_all,
    scoreboard,
)

BEGIN = "<!-- notebooks:begin -->"
END = "<!-- notebooks:end -->"


def _cell(x: object) -> str:
    """Text safe inside a markdown table cell."""
    return str(x).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def _count_text(k: dict, what: str = "") -> str:
    return f"{k['reproduced']} of {k['total']}" if k["total"] else "—"


def report_data(records: Mapping[str, Mapping], profile: str = "study",
                notebooks: Sequence[str] | None = None) -> dict:
    """What ``report --json`` prints: per notebook and overall, the counts of headline claims,
    paper claims and checks (reproduced / total, not reproduced, inconclusive), and every row."""
    wanted = list(notebooks) if notebooks else [nb.id for nb in NOTEBOOKS]
    per_nb, rows = {}, []
    for nb, r in records.items():
        if nb not in wanted:
            continue
        per_nb[nb] = {**counts(r["claims"]), "date": str(r["meta"].get("date") or "")[:10],
                      "commit": r["meta"].get("commit"), "dirty": bool(r["meta"].get("dirty"))}
        rows += [{"notebook": nb, **c} for c in r["claims"]]
    overall = counts(rows)
    return {"profile": profile, "notebooks": per_nb, "overall": overall,
            "missing": [nb for nb in wanted if nb not in per_nb], "rows": rows}


def render_report(
    records: Mapping[str, Mapping], profile: str = "study", notebooks: Sequence[str] | None = None
) -> str:
    """The markdown scoreboard of all records of one profile (or of ``notebooks`` only): the
    counts per notebook (headline claims, paper claims, checks), then every row."""
    data = report_data(records, profile, notebooks)
    scope = f"profile `{profile}`" + (f", {', '.join(notebooks)}" if notebooks else "")
    out = [f"# Scoreboard: paper vs. ours ({scope})", ""]
    if not data["notebooks"]:
        out.append(f"No results recorded for {scope} yet.")
        return "\n".join(out) + "\n"
    out += ["Only *claims* (statements of the paper that can fail, judged on paired seeds: "
            "n ≥ 3 and a 95% interval of the per-seed differences that excludes 0 in the paper's "
            "direction) count as reproduced; *checks* are sanity figures; *reference* rows are the "
            "baseline arms that claims pair with, reported and not judged.", ""]
    summary = []
    for nb, k in list(data["notebooks"].items()) + [("**all**", data["overall"])]:
        summary.append([nb, _count_text(k["headline"]), _count_text(k["claims"]),
                        k["claims"][NOT_REPRODUCED], k["claims"][INCONCLUSIVE],
                        _count_text(k["checks"])])
    out.append(markdown_table(["notebook", "headline claims reproduced", "paper claims reproduced",
                               "not reproduced", "inconclusive", "checks passed"], summary))
    out.append("")
    df = scoreboard(records)
    if notebooks:
        df = df[df["notebook"].isin(notebooks)]
    header = ["notebook", "kind", "claim", "paper", "ours ± std (n)", "verdict", "evidence",
              "run date", "commit"]
    out.append(markdown_table(header, df[["notebook", "kind", "claim", "paper", "ours", "verdict",
                                          "evidence", "run date", "commit"]]
                              .itertuples(index=False, name=None)))
    k = data["overall"]
    out += ["", f"**Total:** paper claims reproduced: {k['claims']['reproduced']} of "
            f"{k['claims']['total']} (headline {k['headline']['reproduced']} of "
            f"{k['headline']['total']}); checks passed: {k['checks']['reproduced']} of "
            f"{k['checks']['total']}."]
    if data["missing"]:
        out += ["", "No results yet: " + ", ".join(data["missing"]) + "."]
    return "\n".join(out) + "\n"


def _notebook_ids(given: Sequence[str], available: Sequence[str]) -> list[str]:
    """Resolve ``--notebook`` values: an exact id, or a unique prefix such as ``03``."""
    known = sorted(set(available) | {nb.id for nb in NOTEBOOKS})
    out = []
    for g in given:
        g = Path(g).stem  # accept notebooks/03_deit.ipynb too
        hits = [g] if g in known else [k for k in known if k.startswith(g)]
        if len(hits) != 1:
            raise SystemExit(f"error: --notebook {g!r} matches {hits or 'no notebook'}; "
                             f"known: {', '.join(known)}")
        out.append(hits[0])
    return out


def cmd_report(args: argparse.Namespace) -> int:
    records = load_all(paths.RECORDED_DIR if args.recorded else args.results, profile=args.profile)
    notebooks = _notebook_ids(args.notebook, list(records)) if args.notebook else None
    if args.json:
        text = json.dumps(report_data(records, args.profile, notebooks), indent=2,
                          ensure_ascii=False) + "\n"
    else:
        text = render_report(records, args.profile, notebooks)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        shown = [r for k, r in records.items() if not notebooks or k in notebooks]
        print(f"wrote {args.out} ({sum(len(r['claims']) for r in shown)} claims)")
    else:
        sys.stdout.write(text)
    return 0


# --------------------------------------------------------------------------------------------
# readme
# --------------------------------------------------------------------------------------------
def notebook_file(nb: NotebookInfo, notebooks_dir: Path) -> Path | None:
    exact = notebooks_dir / f"{nb.id}.ipynb"
    if exact.is_file():
        return exact
    found = sorted(notebooks_dir.glob(f"{nb.id}*.ipynb")) if notebooks_dir.is_dir() else []
    return found[0] if found else None


def render_notebook_table(
    notebooks_dir: Path, results_dir: Path | None, readme_dir: Path, profile: str = "study"
) -> str:
    """The README's table of the course's notebooks, their status and current verdicts."""
    records = load_all(results_dir, profile=profile)
    rows = []
    for nb in NOTEBOOKS:
        f = notebook_file(nb, notebooks_dir)
        if f is not None:
            rel = Path(os.path.relpath(f, readme_dir)).as_posix()
            name, status = f"[{nb.id}]({rel})", "ready"
        else:
            name, status = nb.id, "planned"
        paper = f"**{nb.short}**: " + (f"[{nb.title}]({nb.url})" if nb.url else nb.title)
        rec = records.get(nb.id)
        if rec:
            k = counts(rec["claims"])
            claims = _count_text(k["claims"])
            if k["headline"]["total"]:
                claims += f" (headline {_count_text(k['headline'])})"
            checks = _count_text(k["checks"])
        else:
            claims = checks = "—"
        rows.append([name, paper, nb.learn, status, claims, checks])
    header = ["notebook", "paper", "what you learn", "status",
              f"paper claims reproduced ({profile})", "checks passed"]
    return markdown_table(header, rows)


def update_readme(text: str, table: str) -> str:
    """``text`` with the part between the markers replaced by ``table``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"the README needs the markers {BEGIN} and {END} (in that order)")
    return text[: start + len(BEGIN)] + "\n" + table + "\n" + text[end:]


def cmd_readme(args: argparse.Namespace) -> int:
    readme = Path(args.readme) if args.readme else paths.REPO_ROOT / "README.md"
    notebooks = Path(args.notebooks) if args.notebooks else paths.REPO_ROOT / "notebooks"
    if not readme.is_file():
        print(f"error: {readme} does not exist", file=sys.stderr)
        return 2
    old = readme.read_text(encoding="utf-8")
    results_dir = Path(args.results) if args.results else paths.RECORDED_DIR
    table = render_notebook_table(notebooks, results_dir, readme.resolve().parent, args.profile)
    try:
        new = update_readme(old, table)
    except ValueError as e:
        print(f"error: {readme}: {e}", file=sys.stderr)
        return 2
    if args.check:
        if new != old:
            print(
                f"{readme} is out of date: its notebook table differs from the notebooks and "
                "results; run `python -m course_lib readme`",
                file=sys.stderr,
            )
            return 1
        print(f"{readme} is up to date")
        return 0
    if new != old:
        readme.write_text(new, encoding="utf-8")
        print(f"updated the notebook table in {readme}")
    else:
        print(f"{readme} was already up to date")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from .results.migrate import migrate_folder

    folder = Path(args.results) if args.results else paths.RECORDED_DIR
    changed = migrate_folder(folder)
    for p in changed:
        print(f"migrated {p}")
    print(f"{len(changed)} record(s) migrated to scoreboard v2")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from . import zoo

    cache = getattr(args, "cache", None)
    try:
        if args.zoo_command == "artifacts":
            print(zoo.format_table(zoo.artifacts(cache)))
        elif args.zoo_command == "list":
            rows = zoo.list_rows(args.profile, cache)
            if args.json:
                print(json.dumps(rows, indent=2, ensure_ascii=False))
            else:
                print(markdown_table(["entry", "state", "built in", "estimate (2 cores)", "figures",
                                      "earns its place", "used by", "what"],
                                     [[r["entry"], r["state"], r["built in"], r["estimate"], r["figures"],
                                       r["earns its place"], r["used by"], r["what"]] for r in rows]))
        elif args.zoo_command == "build":
            zoo.build(args.names, args.profile, args.device, force=args.force, cache_dir=cache)
        elif args.zoo_command == "export":
            m = zoo.export(args.file, args.profile, cache)
            print(f"wrote {args.file}: {len(m['files'])} files (model cards and artifacts, sha256 in "
                  "MANIFEST.json)")
        elif args.zoo_command == "import":
            names = zoo.import_archive(args.file, cache)
            print(f"imported {len(names)} files into {zoo.cards.zoo_dir(cache).parent}")
    except (KeyError, ValueError, FileNotFoundError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    return 0


# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m course_lib", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    rp = sub.add_parser("report", help="markdown scoreboard of all results")
    rp.add_argument("--profile", default="study", help="which profile's results (default study)")
    rp.add_argument("--results", default=None, help="results folder (default: paths.results_dir())")
    rp.add_argument("--recorded", action="store_true",
                    help="the committed study runs in <repo>/results instead of a run's results")
    rp.add_argument("--out", default=None, help="write the markdown here instead of stdout")
    rp.add_argument("--json", action="store_true",
                    help="print the counts and rows as JSON (for scripts) instead of markdown")
    rp.add_argument("--notebook", action="append", default=[],
                    help="only this notebook (id or unique prefix; repeatable)")
    rp.set_defaults(func=cmd_report)

    rd = sub.add_parser("readme", help="regenerate the README's notebook table")
    rd.add_argument("--check", action="store_true", help="exit 1 if the README is out of date")
    rd.add_argument("--readme", default=None, help="README file (default: <repo>/README.md)")
    rd.add_argument("--results", default=None,
                    help="results folder (default: the recorded runs, <repo>/results)")
    rd.add_argument("--notebooks", default=None, help="notebooks folder (default: <repo>/notebooks)")
    rd.add_argument("--profile", default="study", help="whose verdicts to show (default study)")
    rd.set_defaults(func=cmd_readme)

    mg = sub.add_parser("migrate-results", help="rewrite scoreboard v1 records as v2 (kinds, "
                        "honest re-judging)")
    mg.add_argument("--results", default=None, help="folder (default: the recorded runs)")
    mg.set_defaults(func=cmd_migrate)

    zp = sub.add_parser("zoo", help="the course zoo: pretrained models built once, reused by notebooks")
    zsub = zp.add_subparsers(dest="zoo_command", required=True)
    profiles = ("smoke", "study", "paper")
    zl = zsub.add_parser("list", help="the zoo's entries, whether they are built, their model cards")
    zl.add_argument("--profile", default="study", choices=profiles)
    zl.add_argument("--json", action="store_true", help="print JSON for scripts")
    zb = zsub.add_parser("build", help="build entries (all when no NAMES) with progress and ETA")
    zb.add_argument("names", nargs="*", metavar="NAMES", help="entries to build (default: all)")
    zb.add_argument("--profile", default="study", choices=profiles)
    zb.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, mps")
    zb.add_argument("--force", action="store_true", help="retrain even what is built")
    ze = zsub.add_parser("export", help="pack the built zoo into one archive with checksums")
    ze.add_argument("file")
    ze.add_argument("--profile", default=None, choices=profiles, help="only this profile's entries")
    zi = zsub.add_parser("import", help="install an exported archive (refuses unsafe members)")
    zi.add_argument("file")
    za = zsub.add_parser("artifacts", help="every cached model file (all notebooks), with its damage")
    for z in (zl, zb, ze, zi, za):
        z.add_argument("--cache", default=None, help="cache folder (default: $COURSE_CACHE or .cache)")
        z.set_defaults(func=cmd_zoo)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
