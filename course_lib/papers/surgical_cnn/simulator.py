"""An offline JIGSAWS for notebook 12 (the release's files, without a registration).

**The simulator** (:class:`SimConfig`, :func:`simulated_root`) writes a JIGSAWS-format copy
offline: 8 users (B..I, with the release's self-proclaimed skill per user: B, G, H, I novices,
C, F intermediates, D, E experts) x 5 trials x 3 tasks. Each trial is a sequence of gestures
(reach, manipulate with a wrist rotation and a grasp, sometimes a pause) of both slave tools; the
masters follow them with motion scaling.

**The generative model of skill** is one model for every task. A surgeon's latent skill in a
trial is ``u = level(class) + e_user + e_trial`` (:func:`_latent_skill`), with ``level`` 0 for a
novice, 1 for an expert and 0.5 for an intermediate (the middle of the three classes' practice
hours on a log scale: < 10 h, 10-100 h, > 100 h) and Gaussian user and trial noise
(:data:`SKILL_NOISE`). What an expert does differently, as ``u`` grows (:func:`_hand`):

* **faster**: peak velocity ``0.05 (0.8 + 0.6 u)`` m/s, hence shorter gestures and trials;
* **smoother, fewer corrections**: a reach is one minimum-jerk stroke plus a Poisson number of
  corrective sub-movements (with overshoot) of mean ``2.5 (1 - u) + 0.2``; the same for the
  wrist rotations (0.7 times as many);
* **steadier**: physiological tremor (8-11 Hz, the user's own frequency) of amplitude
  ``0.2 mm x (1.3 - u)``;
* **fewer hesitations**: a pause after a gesture with probability ``0.65 (1 - u) + 0.1`` lasting
  0.3 s plus an exponential time of mean ``0.2 + 0.6 (1 - u)`` s, and ``1.2 (1 - u) + 0.1``
  re-grasps of the gripper per gesture.

Nuisance that is not skill, the same for every task (:data:`NUISANCE`): a per-user *style*
(workspace offset, speed, tremor frequency, hand use, grip) that makes users recognisable, not
better; where the pad sits from trial to trial; sensor noise. The tasks differ only in what the
task is (:data:`TASK_SIM`): how many gestures a trial has and how far the tools reach. No number
is set per task to make one task harder than another: which task comes out hardest is the
method's (and the task geometry's) result, not the simulator's setting.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from course_lib import paths

from .jigsaws import (FPS, GRS_ITEMS, MANIPULATORS, TASKS, USER_SKILL, USERS, MetaRow, trial_name,
                      write_kinematics, write_meta)

__all__ = ["SimConfig", "TASK_SIM", "SKILL_LEVEL", "SKILL_NOISE", "NUISANCE", "simulate_trial", "write_simulation",
           "simulated_root"]


# latent skill of the three self-proclaimed classes (practice hours on a log scale)
SKILL_LEVEL = {"N": 0.0, "I": 0.5, "E": 1.0}
# user and trial noise of the latent skill (standard deviations, in units of expert - novice)
SKILL_NOISE = dict(user_sd=0.10, trial_sd=0.08)
# what is not skill: how much user habits vary (style) and how far the workspace shifts from
# trial to trial (m)
NUISANCE = dict(style=0.8, shift=0.002)
# Per task, only what the task is: gestures per trial and reach of the tools (m)
TASK_SIM = {
    "Suturing": dict(gestures=6, reach=0.022),
    "Needle_Passing": dict(gestures=6, reach=0.028),
    "Knot_Tying": dict(gestures=4, reach=0.016),
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
    version: int = 2  # bump when the simulator changes, so caches are rebuilt

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
    """u = level(class) + user noise + trial noise: the same model for every task."""
    u_rng = np.random.default_rng([cfg.seed, TASKS.index(task), ord(user), 0])
    t_rng = np.random.default_rng([cfg.seed, TASKS.index(task), ord(user), trial])
    base = SKILL_LEVEL[USER_SKILL.get(user, "N")]
    return float(base + cfg.difficulty * (SKILL_NOISE["user_sd"] * u_rng.normal()
                                          + SKILL_NOISE["trial_sd"] * t_rng.normal()))


def _user_style(cfg: SimConfig, task: str, user: str) -> dict:
    """Per-user habits that are not skill: they make users recognisable, not better."""
    rng = np.random.default_rng([cfg.seed, ord(user), 7])
    s = NUISANCE["style"]
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
    shift = NUISANCE["shift"] * cfg.difficulty * rng.normal(size=3)  # where the pad sits this time
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
