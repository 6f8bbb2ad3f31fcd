"""Intrinsic physics checks: laws a trajectory must obey, tested on its states alone (no simulator).

    report = check_trajectory(episode)          # any sim.Episode, simulated or predicted
    report.consistent, report.score             # score >= 0, larger = more violation; <= 1 passes
    report.checks["gravity"].value              # the raw measure, in the unit its doc states

Every check measures one law as a raw number and passes while it stays at or below its
threshold; its score is value / threshold, and the report's score is the largest. The checks
need no orientation (world-model rollouts predict positions and velocities only), and use the
scene's family and parameters for masses, extents, supports and joints (verifier/geometry.py).

| check        | raw value                                                                        |
| permanence   | body-frames whose state is missing or non-finite (a vanished object), count      |
| continuity   | largest step of a body beyond what its speeds allow (a teleport), m              |
| gravity      | mean |a - g| / g over frames in free flight (touching nothing)                   |
| energy       | largest rise of kinetic + potential energy above its lowest earlier value (quiet |
|              | frames: no impact under way), / the energy at play (passive scenes)              |
| momentum     | largest drift of the total horizontal momentum / its scale (collisions)          |
| penetration  | deepest overlap of a body's inner sphere with the floor, a support or another    |
|              | body beyond the first frame's, / that body's inner radius (at least 2 cm)        |
| constraint   | largest relative violation of a joint (pendulum length, gear rim radius, ...)    |

Thresholds (THRESHOLDS) were calibrated with `benchmarks/verifier_checks.py` on valid simulator
episodes of every family (seeds held apart from those it reports on).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import sim
from verifier import geometry

G = 9.81
# m/s^2: accelerations a frame may see besides gravity (impacts are bounded through the speeds)
MAX_ACCELERATION = 2 * G
MIN_DEPTH_UNIT = 0.02  # m
QUIET_PRESS = 0.003  # m a body may be pressed into a contact at rest (its weight on the soft contact)
QUIET_SPEED = 0.3  # m/s a gap may close or open in a quiet frame (sliding, rolling, settling)
# raw value above which each law counts as violated (see the module docstring for units)
THRESHOLDS = {  # from `python benchmarks/verifier_checks.py` calibration (seeds 1000+), rounded up
    "permanence": 0.5,
    "continuity": 0.06,
    "gravity": 0.03,
    "energy": 0.02,
    "momentum": 0.01,
    "penetration": 0.5,
    "constraint": 0.01,
}


@dataclass
class Check:
    value: float  # the raw measure (module docstring)
    threshold: float

    @property
    def score(self) -> float:
        return self.value / self.threshold

    @property
    def passed(self) -> bool:
        return self.value <= self.threshold

    def to_dict(self) -> dict:
        return {"value": self.value, "threshold": self.threshold, "score": self.score, "passed": self.passed}


@dataclass
class CheckReport:
    checks: dict[str, Check] = field(default_factory=dict)  # only the laws that apply to the scene

    @property
    def score(self) -> float:
        """The largest check score (0 when no law applies); > 1 means some law is violated."""
        return max((c.score for c in self.checks.values()), default=0.0)

    @property
    def consistent(self) -> bool:
        return all(c.passed for c in self.checks.values())

    def failed(self) -> list[str]:
        return [name for name, c in self.checks.items() if not c.passed]

    def to_dict(self) -> dict:
        return {"consistent": self.consistent, "score": self.score,
                "checks": {name: c.to_dict() for name, c in self.checks.items()}}


def check_trajectory(episode: sim.Episode, thresholds: dict[str, float] | None = None) -> CheckReport:
    """Check `episode` (states only; frames are not needed) against the laws that apply to its scene."""
    limits = {**THRESHOLDS, **(thresholds or {})}
    values = measure(episode)
    return CheckReport({name: Check(float(v), limits[name]) for name, v in values.items()})


def measure(episode: sim.Episode) -> dict[str, float]:
    """The raw value of every law that applies to `episode` (module docstring)."""
    states = np.asarray(episode.states, float)  # (T, n, 13)
    bodies = geometry.bodies(episode)
    finite = np.isfinite(states[..., :10]).all(axis=-1)  # (T, n)
    out = {"permanence": float((~finite).sum() + abs(states.shape[1] - len(bodies)) * len(states))}
    if states.shape[1] != len(bodies):
        return out
    last = len(states) if finite.all() else int(np.argmin(finite.all(axis=1)))  # laws hold up to a vanishing
    if last < 3:
        return out
    pos, vel = states[:last, :, 0:3], states[:last, :, 7:10]  # (T, n, 3) m, m/s
    dt = np.diff(episode.times[:last])[:, None]  # (T-1, 1) s
    out["continuity"] = continuity(pos, vel, dt)
    flight = free_flight(episode, pos, vel, dt, bodies)
    if flight.any():
        accel = np.diff(vel, axis=0) / dt[..., None]  # (T-1, n, 3) m/s^2
        accel[..., 2] += G
        out["gravity"] = float(np.linalg.norm(accel[flight], axis=-1).mean() / G)
    if episode.scene in geometry.PASSIVE:
        out["energy"] = energy_growth(episode, pos, vel, dt, bodies)
    if episode.scene == "collision":
        masses = np.array([b.mass for b in bodies])[None, :, None]
        momentum = (masses * vel[..., :2]).sum(axis=1)  # (T, 2) kg m/s
        scale = (masses[0, :, 0] * np.linalg.norm(vel[0], axis=-1)).sum() + 1e-9
        out["momentum"] = float(np.linalg.norm(momentum - momentum[0], axis=-1).max() / scale)
    if episode.scene not in geometry.NO_CONTACT:
        out["penetration"] = penetration(episode, pos, bodies)
    error = geometry.constraint_error(episode, pos)
    if error is not None:
        out["constraint"] = float(error.max())
    return out


def continuity(pos: np.ndarray, vel: np.ndarray, dt: np.ndarray) -> float:
    """Largest distance (m) a body's step in one frame departs from the step its velocities at both
    ends imply (trapezoid rule, exact under constant acceleration), beyond what a change of
    velocity within the frame (an impact: half the change times the frame) and MAX_ACCELERATION
    allow."""
    step = np.diff(pos, axis=0)  # (T-1, n, 3) m
    implied = 0.5 * (vel[:-1] + vel[1:]) * dt[..., None]
    change = np.linalg.norm(np.diff(vel, axis=0), axis=-1)  # (T-1, n) m/s
    allowed = 0.5 * change * dt + MAX_ACCELERATION * dt**2
    return float(np.max(np.linalg.norm(step - implied, axis=-1) - allowed, initial=0.0))


def free_flight(episode: sim.Episode, pos: np.ndarray, vel: np.ndarray, dt: np.ndarray, bodies) -> np.ndarray:
    """(T-1, n) bool: free body k touches nothing during frame t (its outer sphere, moving at its
    speed, cannot reach a support or another body within the frame, at either end)."""
    if episode.scene in geometry.NO_FREE_FLIGHT:
        return np.zeros((len(pos) - 1, len(bodies)), bool)
    outer = np.array([b.outer for b in bodies])  # (n,)
    speed = np.linalg.norm(vel, axis=-1)  # (T, n)
    reach = np.maximum(speed[:-1], speed[1:]) * dt + G * dt**2  # (T-1, n) m a body may travel
    clear = geometry.support_clearance(episode, pos) - outer  # (T, n)
    flight = (np.minimum(clear[:-1], clear[1:]) > reach) & np.array([b.free for b in bodies])
    if len(bodies) > 1:
        gap = np.linalg.norm(pos[:, :, None] - pos[:, None], axis=-1) - outer[:, None] - outer[None]  # (T, n, n)
        gap = np.minimum(gap[:-1], gap[1:]) - reach[:, :, None] - reach[:, None]
        gap[:, np.arange(len(bodies)), np.arange(len(bodies))] = np.inf
        flight &= gap.min(axis=2) > 0
    return flight


def energy_growth(episode: sim.Episode, pos: np.ndarray, vel: np.ndarray, dt: np.ndarray, bodies) -> float:
    """Largest rise of the total translational kinetic + potential energy above its lowest earlier
    value, as a fraction of the energy at play (start energy above each body's lowest reachable
    height). Only quiet frames count: an impact stores energy in the (soft) contact and returns it,
    so frames where some body is pressed into a support or another body, or approaches or leaves
    one fast, are skipped."""
    masses = np.array([b.mass for b in bodies])  # (n,) kg
    rest = np.array([geometry.rest_height(episode, k, b) for k, b in enumerate(bodies)])  # (n,) m
    energy = (masses * (0.5 * (vel**2).sum(-1) + G * (pos[..., 2] - rest))).sum(axis=1)  # (T,) J
    at_play = energy[0] + (masses * G * np.array([max(b.inner, 0.01) for b in bodies])).sum()
    quiet = quiet_frames(episode, pos, vel, dt, bodies)
    quiet[0] = True
    e = energy[quiet]
    return float(max((e - np.minimum.accumulate(e)).max(), 0.0) / at_play)


def quiet_frames(episode: sim.Episode, pos: np.ndarray, vel: np.ndarray, dt: np.ndarray, bodies) -> np.ndarray:
    """(T,) bool: no body is in an impact (pressed more than QUIET_PRESS into a support or another
    body, or closing or opening a gap faster than QUIET_SPEED while within reach of it)."""
    if episode.scene in geometry.NO_CONTACT:
        return np.ones(len(pos), bool)
    inner = np.array([b.inner for b in bodies])  # (n,) m
    speed = np.linalg.norm(vel, axis=-1)  # (T, n)
    reach = speed * np.r_[dt[:, 0], dt[-1, 0]][:, None] + QUIET_PRESS  # (T, n) m
    gaps = [geometry.support_clearance(episode, pos) - inner]  # (T, n) m, each body to its support
    if len(bodies) > 1:
        d = np.linalg.norm(pos[:, :, None] - pos[:, None], axis=-1) - inner[:, None] - inner[None]  # (T, n, n)
        d[:, np.arange(len(bodies)), np.arange(len(bodies))] = np.inf
        gaps.append(d.min(axis=2))  # (T, n) to the nearest other body
    quiet = np.ones(len(pos), bool)
    for gap in gaps:
        rate = np.gradient(gap, axis=0) / np.r_[dt[:, 0], dt[-1, 0]][:, None]  # (T, n) m/s
        near = gap < reach
        impact = near & ((gap < -QUIET_PRESS) | (np.abs(rate) > QUIET_SPEED))
        quiet &= ~impact.any(axis=1)
    return quiet


def penetration(episode: sim.Episode, pos: np.ndarray, bodies) -> float:
    """Deepest overlap of a body's inner sphere with its support or with another body's inner
    sphere beyond the overlap at the first frame, in units of the smaller inner radius involved
    (at least MIN_DEPTH_UNIT)."""
    inner = np.array([b.inner for b in bodies])  # (n,) m
    unit = np.maximum(inner, MIN_DEPTH_UNIT)  # small beads are soft: their depth is measured in 2 cm
    solid = inner > 0  # bodies with a known solid extent
    depth = (inner - geometry.support_clearance(episode, pos)) / unit  # (T, n)
    depth -= np.maximum(depth[:1], 0.0)  # an overlap the episode starts with is the scene's, not its motion's
    worst = float(np.max(depth[:, solid], initial=0.0))
    if solid.sum() > 1:
        p = pos[:, solid]
        r, u = inner[solid], unit[solid]
        d = np.linalg.norm(p[:, :, None] - p[:, None], axis=-1)  # (T, m, m)
        overlap = (r[:, None] + r[None] - d) / np.minimum(u[:, None], u[None])
        overlap[:, np.arange(len(r)), np.arange(len(r))] = -np.inf
        overlap -= np.maximum(overlap[:1], 0.0)
        worst = max(worst, float(overlap.max()))
    return max(worst, 0.0)
