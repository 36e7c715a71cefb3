"""JIGSAWS kinematics: a reader (and writer) of the real release's files (notebook 12, the
surgical-skill CNN).

The JHU-ISI Gesture and Skill Assessment Working Set (JIGSAWS; Gao et al., MICCAI workshop 2014)
records eight surgeons (users B..I) doing five repetitions ("trials"; the *supertrials* of the
leave-one-supertrial-out scheme) of three tasks on the da Vinci robot. Layout of the release,
one folder per task::

    <root>/<Task>/kinematics/AllGestures/<Task>_<User><Trial>.txt   e.g. Suturing_B001.txt
    <root>/<Task>/meta_file_<Task>.txt
    <root>/<Task>/transcriptions/, video/                            (not used here)

``Task`` is ``Suturing``, ``Needle_Passing`` or ``Knot_Tying``. A kinematics file has one row per
frame at 30 Hz and **76 whitespace-separated numbers** per row: four manipulators times 19
variables, in the order master left, master right, slave left, slave right (columns 1-19,
20-38, 39-57, 58-76). The 19 variables of a manipulator are the tool-tip position
(x, y, z), its rotation matrix (9 values, row-major), linear velocity (3), rotational velocity
(3) and the gripper angle (1) -- Table 1 of the paper.

``meta_file_<Task>.txt`` has one line per trial::

    Suturing_B001<TAB><TAB>N<TAB>13<TAB><TAB>3<TAB>2<TAB>1<TAB>2<TAB>2<TAB>3

i.e. trial name, self-proclaimed skill (N novice < 10 h of robot time, I intermediate 10-100 h,
E expert > 100 h), the modified GRS total (6..30) and its six items (1..5 each: respect for
tissue, suture/needle handling, time and motion, flow of operation, overall performance,
quality of the final product). The fields are separated by tabs with an empty field after the
name and after the GRS total, so splitting on any whitespace gives 9 tokens.

What we verified and how: the meta-file layout (tabs, the two empty fields, token order, the
skill letters per user) against a public copy of ``Suturing/meta_file_Suturing.txt`` found with
the course's code search, and a MATLAB reader of the release that drops the two empty columns
(``Var2``, ``Var5``) and names the rest ``filename, experience, GRS, tissue, suture, motion,
flow, overall, quality``. The 76-column kinematics layout and the file naming come from the
release's description (the group's notes, official-implementations.md); we did not see a real
kinematics file, so the exact number formatting is unverified: the reader only needs
whitespace-separated floats (``numpy.loadtxt``), which holds for any formatting. Not every
trial exists in the real release (e.g. ``Suturing_H002`` has no kinematics, Knot_Tying and
Needle_Passing miss more): :func:`load_task` reads the trials that have both a kinematics file
and a meta line.

The release needs a registration (catalog entry ``jigsaws``, ``manual`` instructions); place it
so that ``<data_root>/JIGSAWS/<Task>/...`` exists. One extra nesting level
(``JIGSAWS/Suturing/Suturing/...``, as some unzip tools make) is found as well.

The offline simulator that writes the same files is ``simulator.py``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "TASKS", "USERS", "SKILLS", "SKILL_NAMES", "USER_SKILL", "MANIPULATORS", "VARIABLES",
    "COLUMNS", "N_COLUMNS", "FPS", "GRS_ITEMS", "Trial", "MetaRow", "trial_name",
    "parse_trial_name", "read_kinematics", "write_kinematics", "read_meta", "write_meta",
    "find_task_dir", "load_task", "load_jigsaws", "column_index", "motion_summary",
]

TASKS = ("Suturing", "Needle_Passing", "Knot_Tying")
USERS = ("B", "C", "D", "E", "F", "G", "H", "I")
SKILLS = ("N", "I", "E")
SKILL_NAMES = ("Novice", "Intermediate", "Expert")
# self-proclaimed skill of each JIGSAWS user (the same in every task of the release)
USER_SKILL = {"B": "N", "C": "I", "D": "E", "E": "E", "F": "I", "G": "N", "H": "N", "I": "N"}
MANIPULATORS = ("master_left", "master_right", "slave_left", "slave_right")
VARIABLES = ("x", "y", "z", "R11", "R12", "R13", "R21", "R22", "R23", "R31", "R32", "R33",
             "vx", "vy", "vz", "wx", "wy", "wz", "gripper")
COLUMNS = tuple(f"{m}.{v}" for m in MANIPULATORS for v in VARIABLES)
N_COLUMNS = len(COLUMNS)  # 76
FPS = 30
GRS_ITEMS = ("tissue", "suture", "motion", "flow", "overall", "quality")
_NAME = re.compile(r"^(?P<task>[A-Za-z_]+)_(?P<user>[A-Z])(?P<trial>\d{3})$")


def column_index(manipulator: str, variable: str) -> int:
    """0-based column of ``variable`` of ``manipulator`` (e.g. ``("slave_right", "gripper")``)."""
    return MANIPULATORS.index(manipulator) * len(VARIABLES) + VARIABLES.index(variable)


def trial_name(task: str, user: str, trial: int) -> str:
    """``Suturing_B001``: task, user letter and the trial number in three digits."""
    return f"{task}_{user}{int(trial):03d}"


def parse_trial_name(name: str) -> tuple[str, str, int]:
    """``"Knot_Tying_C004"`` -> ``("Knot_Tying", "C", 4)``."""
    m = _NAME.match(Path(name).stem)
    if m is None:
        raise ValueError(f"{name!r} is not a JIGSAWS trial name like Suturing_B001")
    return m["task"], m["user"], int(m["trial"])


# ----------------------------------------------------------------------------------------------
# files


def read_kinematics(path: str | os.PathLike) -> np.ndarray:
    """One kinematics file as a float32 array (frames, 76). Fails unless every row has 76 numbers."""
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path, sep=r"\s+", header=None, dtype=np.float64, engine="c")
    except (ValueError, pd.errors.ParserError) as e:
        raise ValueError(f"{path}: not a table of whitespace-separated numbers ({e})") from None
    if df.shape[1] != N_COLUMNS:
        raise ValueError(f"{path}: {df.shape[1]} columns per row, a JIGSAWS kinematics file has "
                         f"{N_COLUMNS}")
    return df.to_numpy(dtype=np.float32)


def write_kinematics(path: str | os.PathLike, kinematics: np.ndarray) -> None:
    """Write (frames, 76) as fixed-point numbers (`` %12.6f``: 6 decimals, space-padded), one frame
    per line."""
    k = np.asarray(kinematics, dtype=np.float64)
    if k.ndim != 2 or k.shape[1] != N_COLUMNS:
        raise ValueError(f"kinematics must be (frames, {N_COLUMNS}), got {k.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    row = " %12.6f" * N_COLUMNS + "\n"  # the leading space keeps any value separated
    tmp.write_text((row * len(k)) % tuple(k.ravel()))
    os.replace(tmp, path)


@dataclass(frozen=True)
class MetaRow:
    """One line of ``meta_file_<Task>.txt``."""

    name: str
    skill: str  # N, I or E (self-proclaimed)
    grs: int  # modified global rating score, 6..30
    items: tuple[int, ...]  # the six GRS items (GRS_ITEMS), 1..5 each


def read_meta(path: str | os.PathLike) -> dict[str, MetaRow]:
    """``{trial name: MetaRow}``; blank lines are skipped, malformed lines raise ``ValueError``."""
    rows: dict[str, MetaRow] = {}
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 + len(GRS_ITEMS) or parts[1] not in SKILLS:
            raise ValueError(f"{path}:{i}: want 'name skill GRS' and {len(GRS_ITEMS)} item scores, "
                             f"got {line!r}")
        items = tuple(int(float(p)) for p in parts[3:])
        rows[parts[0]] = MetaRow(parts[0], parts[1], int(float(parts[2])), items)
    return rows


def write_meta(path: str | os.PathLike, rows: Iterable[MetaRow]) -> None:
    """The release's layout: name, empty field, skill, GRS, empty field, six items; tabs."""
    lines = ["\t".join([r.name, "", r.skill, str(r.grs), "", *map(str, r.items)]) for r in rows]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------
# loading a dataset folder


@dataclass
class Trial:
    """One trial: its kinematics (frames, 76) and the meta-file labels."""

    task: str
    user: str
    trial: int
    kinematics: np.ndarray = field(repr=False)
    skill: str
    grs: int
    items: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return trial_name(self.task, self.user, self.trial)

    @property
    def label(self) -> int:
        """0 novice, 1 intermediate, 2 expert."""
        return SKILLS.index(self.skill)

    @property
    def seconds(self) -> float:
        return len(self.kinematics) / FPS


def find_task_dir(root: str | os.PathLike, task: str) -> Path:
    """``root/<Task>`` (or ``root/<Task>/<Task>``) holding ``meta_file_<Task>.txt``."""
    root = Path(root)
    for d in (root / task, root / task / task):
        if (d / f"meta_file_{task}.txt").is_file():
            return d
    raise FileNotFoundError(f"no {task}/meta_file_{task}.txt below {root}")


def load_task(root: str | os.PathLike, task: str) -> list[Trial]:
    """Every trial of ``task`` with both a kinematics file and a meta line, sorted by name."""
    d = find_task_dir(root, task)
    meta = read_meta(d / f"meta_file_{task}.txt")
    kin_dir = d / "kinematics" / "AllGestures"
    trials = []
    for name in sorted(meta):
        f = kin_dir / f"{name}.txt"
        if not f.is_file():
            continue  # listed in the meta file, absent in the release (e.g. Suturing_H002)
        t, user, k = parse_trial_name(name)
        if t != task:
            raise ValueError(f"{d}: meta line {name!r} belongs to task {t!r}")
        m = meta[name]
        trials.append(Trial(task, user, k, read_kinematics(f), m.skill, m.grs, m.items))
    if not trials:
        raise FileNotFoundError(f"{kin_dir}: no kinematics file matches a line of the meta file")
    return trials


def load_jigsaws(root: str | os.PathLike, tasks: Sequence[str] = TASKS) -> dict[str, list[Trial]]:
    """``{task: [Trial, ...]}`` for the tasks asked for."""
    return {t: load_task(root, t) for t in tasks}


def motion_summary(trials: Sequence[Trial]):
    """Per-trial motion statistics of the slave tools (a pandas DataFrame): duration, mean speed,
    idle share (smoothed speed below 5 mm/s on both tools), jerk (mean |d^3x/dt^3|) and tremor power
    (share of the speed spectrum at 6-13 Hz). The quantities the simulator ties to skill."""
    import pandas as pd

    rows = []
    for tr in trials:
        k = tr.kinematics.astype(np.float64)
        speeds, jerks, trem = [], [], []
        for side in ("slave_left", "slave_right"):
            i = column_index(side, "x")
            p = k[:, i:i + 3]
            j = column_index(side, "vx")
            raw = np.linalg.norm(k[:, j:j + 3], axis=1)
            speeds.append(np.convolve(raw, np.ones(5) / 5, mode="same"))
            v = raw
            jerks.append(np.linalg.norm(np.diff(p, 3, axis=0), axis=1).mean() * FPS**3)
            spec = np.abs(np.fft.rfft(v - v.mean())) ** 2
            f = np.fft.rfftfreq(len(v), 1 / FPS)
            trem.append(spec[(f >= 6) & (f <= 13)].sum() / max(spec[f > 0.2].sum(), 1e-12))
        idle = float(np.mean((speeds[0] < 0.005) & (speeds[1] < 0.005)))
        rows.append(dict(trial=tr.name, user=tr.user, skill=tr.skill, seconds=tr.seconds,
                         speed_mm_s=1000 * float(np.mean(speeds)), idle=idle,
                         jerk=float(np.mean(jerks)), tremor=float(np.mean(trem)), grs=tr.grs))
    return pd.DataFrame(rows)
