"""JIGSAWS kinematics: a reader for the real release and an offline simulator that writes the
same files (notebook 12, the surgical-skill CNN).

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

**The simulator** (:class:`SimConfig`, :func:`simulated_root`) writes a JIGSAWS-format copy
offline: 8 users (B..I, with the release's self-proclaimed skill per user: B, G, H, I novices,
C, F intermediates, D, E experts) x 5 trials x 3 tasks. Each trial is a sequence of gestures
(reach, manipulate with a wrist rotation and a grasp, sometimes a pause) of both slave tools; the
masters follow them with motion scaling. A latent skill per user and trial (novice 0,
intermediate :data:`SKILL_LEVEL` ``I``, expert 1, scaled by a task factor, plus user and trial
noise) sets

* speed (peak velocity) and hence duration,
* smoothness (one minimum-jerk stroke for an expert, several corrective sub-movements, with
  overshoot, for a novice),
* physiological tremor (8-11 Hz, amplitude falling with skill),
* pauses (probability and length), and re-grasps of the gripper;

while a per-user *style* (workspace offset, speed, tremor frequency, hand use) that has nothing
to do with skill varies between users. Intermediates sit closer to the novices than to the
experts, and knot tying has the weakest skill signal and the most user/trial noise, so that its
classes overlap most -- the difficulty pattern of the paper (its Fig. 4 and Table 3).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import paths

__all__ = [
    "TASKS", "USERS", "SKILLS", "SKILL_NAMES", "USER_SKILL", "MANIPULATORS", "VARIABLES",
    "COLUMNS", "N_COLUMNS", "FPS", "GRS_ITEMS", "Trial", "MetaRow", "trial_name",
    "parse_trial_name", "read_kinematics", "write_kinematics", "read_meta", "write_meta",
    "find_task_dir", "load_task", "load_jigsaws", "SimConfig", "TASK_SIM", "SKILL_LEVEL",
    "simulate_trial", "write_simulation", "simulated_root", "column_index", "motion_summary",
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


# ----------------------------------------------------------------------------------------------
# the simulator

# latent skill of the three self-proclaimed classes: intermediates closer to the novices
SKILL_LEVEL = {"N": 0.0, "I": 0.4, "E": 1.0}

# Per task: gestures per trial, reach (m), skill gain (how strongly the latent skill shows),
# user and trial noise of the latent skill, how much the user style varies and how far the
# workspace shifts from trial to trial (m).
TASK_SIM = {
    "Suturing": dict(gestures=6, reach=0.022, gain=1.0, user_sd=0.10, trial_sd=0.08, style=0.8,
                     shift=0.002),
    "Needle_Passing": dict(gestures=6, reach=0.028, gain=0.9, user_sd=0.10, trial_sd=0.08, style=0.9,
                           shift=0.002),
    "Knot_Tying": dict(gestures=4, reach=0.016, gain=0.5, user_sd=0.2, trial_sd=0.2, style=1.0,
                       shift=0.005),
}


@dataclass(frozen=True)
class SimConfig:
    """The simulated dataset. ``seed`` fixes the 'surgeons' (a dataset, not a training seed);
    ``duration_scale`` stretches every trial (1 = 10-80 s trials, a third to a half of the real
    ones); ``difficulty`` multiplies the user/trial noise of the latent skill and the sensor noise."""

    tasks: tuple[str, ...] = TASKS
    users: tuple[str, ...] = USERS
    trials: int = 5
    seed: int = 0
    duration_scale: float = 1.0
    difficulty: float = 1.0
    version: int = 1  # bump when the simulator changes, so caches are rebuilt

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _min_jerk(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """n frames from a to b along the minimum-jerk profile 10t^3 - 15t^4 + 6t^5."""
    t = np.linspace(0.0, 1.0, max(n, 2))[:, None]
    s = 10 * t**3 - 15 * t**4 + 6 * t**5
    return a + (b - a) * s


def _euler_to_matrix(ang: np.ndarray) -> np.ndarray:
    """(T, 3) roll/pitch/yaw -> (T, 9) row-major rotation matrices R = Rz(yaw) Ry(pitch) Rx(roll)."""
    r, p, y = ang[:, 0], ang[:, 1], ang[:, 2]
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    R = np.stack([
        cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr,
        sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr,
        -sp, cp * sr, cp * cr,
    ], axis=1)
    return R


def _latent_skill(cfg: SimConfig, task: str, user: str, trial: int) -> float:
    ts = TASK_SIM[task]
    u_rng = np.random.default_rng([cfg.seed, TASKS.index(task), ord(user), 0])
    t_rng = np.random.default_rng([cfg.seed, TASKS.index(task), ord(user), trial])
    base = SKILL_LEVEL[USER_SKILL.get(user, "N")] * ts["gain"] + 0.5 * (1 - ts["gain"])
    return float(base + cfg.difficulty * (ts["user_sd"] * u_rng.normal()
                                          + ts["trial_sd"] * t_rng.normal()))


def _user_style(cfg: SimConfig, task: str, user: str) -> dict:
    """Per-user habits that are not skill: they make users recognisable, not better."""
    rng = np.random.default_rng([cfg.seed, ord(user), 7])
    s = TASK_SIM[task]["style"]
    return dict(
        speed=float(np.exp(0.15 * s * rng.normal())),
        offset=0.01 * s * rng.normal(size=3),
        tremor_hz=float(rng.uniform(8.0, 11.0)),
        right_share=float(np.clip(0.65 + 0.1 * s * rng.normal(), 0.45, 0.85)),
        grip_open=float(np.clip(0.9 + 0.15 * s * rng.normal(), 0.5, 1.3)),
    )


def _task_targets(task: str, hand: int, n: int) -> np.ndarray:
    """The task's fixed sequence of reach targets (the suture pad's entry points, the rings...):
    the same for every user and trial, so trials of a task look alike in space."""
    rng = np.random.default_rng([1234, TASKS.index(task), hand])
    return TASK_SIM[task]["reach"] * rng.normal(size=(n, 3))


def _hand(rng: np.random.Generator, u: float, st: dict, ts: dict, cfg: SimConfig,
          n_gestures: int, amp: float, n_frames: int | None = None,
          targets: np.ndarray | None = None):
    """Positions (T, 3), Euler angles (T, 3) and gripper (T,) of one slave tool.

    ``u`` is the latent skill (0 novice, 1 expert), ``amp`` scales the reach (the assisting hand
    moves less). With ``n_frames`` the gestures repeat until that many frames exist.
    """
    uc = float(np.clip(u, -0.3, 1.3))
    v_peak = 0.05 * (0.8 + 0.6 * uc) * st["speed"] / cfg.duration_scale  # m/s
    n_sub_rate = max(2.5 * (1 - uc) + 0.2, 0.05)
    pause_p = float(np.clip(0.65 * (1 - uc) + 0.1, 0.05, 0.9))
    regrasp_rate = max(1.2 * (1 - uc) + 0.1, 0.02)
    pos_chunks, ang_chunks, grip_chunks = [], [], []
    pos = st["offset"] + 0.3 * ts["reach"] * rng.normal(size=3)
    neutral = np.array([0.0, 0.3, 0.0])
    ang = neutral + 0.05 * rng.normal(size=3)
    grip = 0.1
    g = 0
    total = 0
    while (n_frames is None and g < n_gestures) or (n_frames is not None and total < n_frames):
        g += 1
        # reach: one stroke for experts, corrective sub-movements (with overshoot) for novices
        jitter = 0.25 * amp * ts["reach"] * rng.normal(size=3)
        if targets is None:
            target = st["offset"] + amp * ts["reach"] * rng.normal(size=3)
        else:
            target = st["offset"] + amp * targets[(g - 1) % len(targets)] + jitter
        n_sub = 1 + rng.poisson(n_sub_rate)
        a = pos
        for k in range(n_sub):
            last = k == n_sub - 1
            frac = 1.0 if last else float(np.clip(rng.normal(0.75 + 0.25 * k / n_sub, 0.25), 0.3, 1.4))
            b = pos + frac * (target - pos) + (0 if last else 0.15 * ts["reach"] * rng.normal(size=3))
            dist = float(np.linalg.norm(b - a)) + 1e-3
            n = int(np.clip(FPS * (0.25 + 1.9 * dist / v_peak), 5, 10 * FPS))
            seg = _min_jerk(a, b, n)
            pos_chunks.append(seg)
            # the wrist turns back towards its neutral pose while the tool travels
            ang_chunks.append(_min_jerk(ang, neutral + 0.05 * rng.normal(size=3), n))
            grip_t = _min_jerk(np.array([grip]), np.array([st["grip_open"]]), n)[:, 0]
            grip_chunks.append(grip_t)
            grip = st["grip_open"]
            a = b
            ang = ang_chunks[-1][-1]
        pos = a
        # manipulate: close the gripper, rotate the wrist (needle drive / wrap), re-grasp
        n_close = int(FPS * 0.3 * cfg.duration_scale / st["speed"]) + 2
        pos_chunks.append(np.repeat(pos[None], n_close, 0))
        ang_chunks.append(np.repeat(ang[None], n_close, 0))
        grip_chunks.append(_min_jerk(np.array([grip]), np.array([0.05]), n_close)[:, 0])
        grip = 0.05
        # the wrist rotation the gesture needs (fixed by the task), with a little trial noise
        sweep = (np.array([1.2 * np.sign(targets[(g - 1) % len(targets)][0]) if targets is not None
                           else rng.choice([-1, 1]) * 1.2, 0.0, 0.0])
                 + np.array([0.2, 0.1, 0.15]) * rng.normal(size=3)) * amp
        n_rot_sub = 1 + rng.poisson(n_sub_rate * 0.7)
        start = ang.copy()
        for k in range(n_rot_sub):
            b = start + sweep * (k + 1) / n_rot_sub + (0 if k == n_rot_sub - 1 else 0.1 * rng.normal(size=3))
            n = int(np.clip(FPS * (0.3 + 0.6 * np.abs(b - ang).max() / (2.5 * v_peak / 0.05)), 5, 8 * FPS))
            ang_chunks.append(_min_jerk(ang, b, n))
            drift = pos + 0.1 * ts["reach"] * np.linspace(0, 1, n)[:, None] * rng.normal(size=3)
            pos_chunks.append(drift)
            grip_chunks.append(np.full(n, grip))
            ang, pos = ang_chunks[-1][-1], drift[-1]
        for _ in range(rng.poisson(regrasp_rate)):
            n = int(FPS * rng.uniform(0.4, 0.9) * cfg.duration_scale) + 4
            half = n // 2
            gr = np.concatenate([_min_jerk(np.array([grip]), np.array([st["grip_open"] * 0.7]), half)[:, 0],
                                 _min_jerk(np.array([st["grip_open"] * 0.7]), np.array([0.05]), n - half)[:, 0]])
            grip_chunks.append(gr)
            pos_chunks.append(np.repeat(pos[None], n, 0))
            ang_chunks.append(np.repeat(ang[None], n, 0))
        # pause: hands almost still (novices stop to think)
        if rng.random() < pause_p:
            n = int(FPS * cfg.duration_scale * (0.3 + rng.exponential(max(0.2 + 0.6 * (1 - uc), 0.1)))) + 2
            pos_chunks.append(np.repeat(pos[None], n, 0))
            ang_chunks.append(np.repeat(ang[None], n, 0))
            grip_chunks.append(np.full(n, grip))
        total = sum(len(c) for c in pos_chunks)
    P = np.concatenate(pos_chunks)
    A = np.concatenate(ang_chunks)
    G = np.concatenate(grip_chunks)
    if n_frames is not None:
        P, A, G = P[:n_frames], A[:n_frames], G[:n_frames]
    # physiological tremor: amplitude falls with skill, frequency is the user's own
    T = len(P)
    t = np.arange(T) / FPS
    amp_tr = 0.0002 * (1.3 - uc) * cfg.difficulty ** 0.5
    env = 1 + 0.5 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6.3))
    phase = rng.uniform(0, 6.3, size=3)
    P = P + amp_tr * env[:, None] * np.sin(2 * np.pi * st["tremor_hz"] * t[:, None] + phase)
    A = A + 20 * amp_tr * env[:, None] * np.sin(2 * np.pi * st["tremor_hz"] * t[:, None] + phase[::-1])
    return P, A, G


def _manipulator(P: np.ndarray, A: np.ndarray, G: np.ndarray) -> np.ndarray:
    """(T, 19): position, rotation matrix, linear velocity, rotational velocity, gripper."""
    V = np.gradient(P, axis=0) * FPS
    W = np.gradient(A, axis=0) * FPS
    return np.concatenate([P, _euler_to_matrix(A), V, W, G[:, None]], axis=1)


# master <- slave: motion scaling 3:1, the master console's own frame and offset
_MASTER_ROT = _euler_to_matrix(np.array([[0.2, -0.4, 1.2]]))[0].reshape(3, 3)
_MASTER_OFFSET = {"left": np.array([-0.15, 0.02, -0.05]), "right": np.array([0.15, 0.02, -0.05])}
_SLAVE_OFFSET = {"left": np.array([-0.03, 0.01, 0.08]), "right": np.array([0.03, 0.0, 0.09])}


def simulate_trial(cfg: SimConfig, task: str, user: str, trial: int) -> tuple[np.ndarray, MetaRow]:
    """One simulated trial: kinematics (frames, 76) and its meta-file row. Deterministic."""
    ts = TASK_SIM[task]
    st = _user_style(cfg, task, user)
    u = _latent_skill(cfg, task, user, trial)
    rng = np.random.default_rng([cfg.seed, TASKS.index(task), ord(user), trial, 1])
    dom, other = ("right", "left")
    Pd, Ad, Gd = _hand(rng, u, st, ts, cfg, ts["gestures"], 1.0,
                       targets=_task_targets(task, 0, ts["gestures"]))
    # the assisting hand: the same skill, shorter reaches, as long as the dominant one
    Po, Ao, Go = _hand(rng, u, st, ts, cfg, ts["gestures"],
                       amp=(1 - st["right_share"]) / st["right_share"], n_frames=len(Pd),
                       targets=_task_targets(task, 1, ts["gestures"]))
    hands = {dom: (Pd, Ad, Gd), other: (Po, Ao, Go)}
    shift = ts["shift"] * cfg.difficulty * rng.normal(size=3)  # where the pad sits this time
    blocks = {}
    for side, (P, A, G) in hands.items():
        P = P + shift
        Ps = P + _SLAVE_OFFSET[side]
        blocks[f"slave_{side}"] = _manipulator(Ps, A, G)
        Pm = (3.0 * P) @ _MASTER_ROT.T + _MASTER_OFFSET[side]
        Am = A * np.array([1.0, 0.9, 1.1]) + np.array([0.1, -0.2, 0.3])
        blocks[f"master_{side}"] = _manipulator(Pm, Am, 1.3 * G + 0.1)
    K = np.concatenate([blocks[m] for m in MANIPULATORS], axis=1)
    # sensor noise, relative to each channel's scale
    scale = K.std(0) + 1e-6
    K = K + 0.05 * cfg.difficulty * scale * rng.normal(size=K.shape)
    # GRS: six items on 1..5 from the latent skill, plus rater noise
    items = tuple(int(np.clip(np.rint(1.5 + 3.0 * u + 0.6 * rng.normal()), 1, 5)) for _ in GRS_ITEMS)
    row = MetaRow(trial_name(task, user, trial), USER_SKILL[user], int(sum(items)), items)
    return K.astype(np.float32), row


def write_simulation(cfg: SimConfig, root: str | os.PathLike) -> Path:
    """Write the simulated dataset in the release's layout under ``root``; returns ``root``."""
    root = Path(root)
    for task in cfg.tasks:
        rows = []
        for user in cfg.users:
            for k in range(1, cfg.trials + 1):
                K, row = simulate_trial(cfg, task, user, k)
                write_kinematics(root / task / "kinematics" / "AllGestures" / f"{row.name}.txt", K)
                rows.append(row)
        write_meta(root / task / f"meta_file_{task}.txt", rows)
    return root


def simulated_root(cfg: SimConfig | None = None, data_root: str | os.PathLike | None = None,
                   rebuild: bool = False) -> Path:
    """The simulated dataset's folder ``<data_root>/jigsaws_sim/<key>``, written on first use."""
    cfg = cfg or SimConfig()
    root = paths.data_root(data_root) / "jigsaws_sim" / cfg.key()
    done = root / "COMPLETE.json"
    if done.is_file() and not rebuild:
        return root
    write_simulation(cfg, root)
    done.write_text(json.dumps(asdict(cfg), indent=1))
    return root


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
