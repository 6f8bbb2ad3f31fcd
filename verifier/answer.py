"""Reading a query's answer from an Episode's states: the same function reads a simulated and a
predicted episode (states only; frames are not used).

Events between frames (landing, apex) are located from the last frame before them by ballistic
extrapolation with the frame's own position and velocity, so a 20 fps rollout and a 500 fps
simulation are read the same way and the coarse one is not biased by where its frames fall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import sim
from sim.scenes import gears
from sim.scenes.base import half_height
from verifier.query import PhysicalQuery

G = 9.81
PENDULUM_PIVOT_X = 0.0  # m; the pendulum's pivot is above the origin
TOPPLE_FRACTION = 0.25  # a block that moved more than this fraction of its edge has toppled
IMPACT_KICK = 0.5  # m/s; a falling body whose vertical velocity jumps up by more than this (beyond
# what gravity removes in the frame) was stopped by an impact
CONTACT_SLACK = 1e-3  # m; two balls closer than the sum of their radii + this touch


class AnswerError(ValueError):
    """The episode does not contain what the question asks about (e.g. it never lands)."""


@dataclass
class Answer:
    value: float | list[float] | bool
    unit: str

    def to_dict(self) -> dict:
        return {"value": self.value, "unit": self.unit}


def lowest_point(episode: sim.Episode, query: PhysicalQuery) -> np.ndarray:
    """(T,) height of body 0's lowest point above the floor, m (upright pose)."""
    p = query.params
    return episode.positions[:, 0, 2] - half_height(p.get("shape", "sphere"), p["size"])


def at(episode: sim.Episode, values: np.ndarray, t: float) -> np.ndarray:
    """Linear interpolation of per-frame `values` (T, ...) at time t (s)."""
    times = episode.times
    if not times[0] <= t <= times[-1] + 1e-9:
        raise AnswerError(f"time {t:g} s is outside the episode ({times[0]:g} .. {times[-1]:g} s)")
    k = int(np.clip(np.searchsorted(times, t) - 1, 0, len(times) - 2))
    w = (t - times[k]) / (times[k + 1] - times[k])
    return (1 - w) * values[k] + w * values[k + 1]


def ballistic_root(height: float, vz: float) -> float:
    """Time (s) until a body at `height` m above a level, rising at vz m/s, falls to it under g."""
    return (vz + math.sqrt(max(vz * vz + 2 * G * max(height, 0.0), 0.0))) / G


def first_landing(episode: sim.Episode, clearance: np.ndarray) -> tuple[int, float]:
    """(last frame before the first landing, landing time s). `clearance` (T,) is the height above
    the level landed on. The landing is between frames j and j+1 where the clearance reaches 0, or
    where a falling body is kicked upwards (an impact between frames, or a tilted body touching
    first with an edge); its time is where free flight from frame j reaches the level."""
    vz = episode.velocities[:, 0, 2]
    kick = np.diff(vz) - (G * np.diff(episode.times) + IMPACT_KICK)  # > 0: an upward impulse, m/s
    for j in range(len(clearance) - 1):
        if clearance[j] > 0 and (clearance[j + 1] <= 0 or (vz[j] < 0 and kick[j] > 0)):
            return j, float(episode.times[j] + ballistic_root(clearance[j], vz[j]))
    raise AnswerError("the object never reaches the floor in this episode")


def closest_gaps(episode: sim.Episode, size: float) -> np.ndarray:
    """(T,) m: the surface gap of balls 0 and 1 (their radii summing to `size`) at its smallest
    between each frame and the next, the two moving on at that frame's velocities (the last frame:
    its own gap). A hit between frames is found whether or not a frame falls on it."""
    d = episode.positions[:, 0] - episode.positions[:, 1]  # (T, 3) m
    u = episode.velocities[:, 0] - episode.velocities[:, 1]  # (T, 3) m/s
    dt = np.append(np.diff(episode.times), 0.0)  # (T,) s to the next frame
    s = np.clip(-(d * u).sum(-1) / np.maximum((u * u).sum(-1), 1e-12), 0.0, dt)  # (T,) s: closest within the interval
    return np.linalg.norm(d + u * s[:, None], axis=-1) - size


def read_answer(query: PhysicalQuery, episode: sim.Episode) -> Answer:
    """The answer to `query` read from `episode` (simulated or predicted). Raises AnswerError when
    the episode does not show it."""
    p, kind, unit = query.params, query.question, query.unit
    pos, vel = episode.positions, episode.velocities  # (T, n, 3) m, m/s
    if not np.isfinite(episode.states[:, :, :10]).all():
        raise AnswerError("the episode has non-finite states")
    if kind == "height_at":
        return Answer(float(at(episode, lowest_point(episode, query), query.time)), unit)
    if kind == "position_at":
        shift = at(episode, pos[:, 0], query.time) - pos[0, 0]
        return Answer([float(shift[0]), float(shift[2])], unit)
    if kind == "speed_at":
        return Answer(float(np.linalg.norm(at(episode, vel[:, 0], query.time))), unit)
    if kind == "acceleration_at":
        dt = 1.0 / episode.fps
        t0, t1 = max(query.time - dt, episode.times[0]), min(query.time + dt, episode.times[-1])
        a = (at(episode, vel[:, 0], t1) - at(episode, vel[:, 0], t0)) / (t1 - t0)
        return Answer(float(np.linalg.norm(a)), unit)
    if kind in ("time_to_floor", "range", "lands_beyond"):
        if query.scene == "table_fall":  # the cup's centre of mass has fallen by the table height
            clearance = pos[:, 0, 2] - (pos[0, 0, 2] - p["table_height"])
            start_x = 0.0  # the table edge
        else:
            clearance, start_x = lowest_point(episode, query), pos[0, 0, 0]
        j, t_land = first_landing(episode, clearance)
        if kind == "time_to_floor":
            return Answer(t_land - float(episode.times[0]), unit)
        distance = float(pos[j, 0, 0] + vel[j, 0, 0] * (t_land - episode.times[j]) - start_x)
        return Answer(distance, unit) if kind == "range" else Answer(bool(distance > query.distance), unit)
    if kind == "bounce_height":
        low, vz = lowest_point(episode, query), vel[:, 0, 2]
        j, _ = first_landing(episode, low)
        for m in range(j + 1, len(low) - 1):
            if vz[m] > 0 and vz[m + 1] <= 0 and low[m] > 0:
                return Answer(float(low[m] + vz[m] ** 2 / (2 * G)), unit)
        raise AnswerError("no apex after the first bounce in this episode")
    if kind == "period":
        x = pos[:, 0, 0] - PENDULUM_PIVOT_X
        k = np.nonzero(np.sign(x[:-1]) * np.sign(x[1:]) < 0)[0]
        crossings = episode.times[k] + x[k] / (x[k] - x[k + 1]) * np.diff(episode.times)[k]
        if len(crossings) < 3:
            raise AnswerError(f"the pendulum crosses the vertical {len(crossings)} times; at least 3 are needed")
        return Answer(float(np.mean(crossings[2:] - crossings[:-2])), unit)
    if kind == "collides":
        return Answer(bool((closest_gaps(episode, p["size"]) < CONTACT_SLACK).any()), unit)
    if kind == "velocities_after":
        gap = np.linalg.norm(pos[:, 0] - pos[:, 1], axis=-1) - p["size"] - CONTACT_SLACK  # (T,) m
        touching = np.nonzero(gap < 0)[0]
        if not len(touching) or touching[-1] >= len(gap) - 2:
            raise AnswerError("the balls do not collide and separate in this episode")
        after = slice(touching[-1] + 1, len(gap))
        return Answer([float(np.median(vel[after, 0, 0])), float(np.median(vel[after, 1, 0]))], unit)
    if kind in ("topples", "stands"):
        moved = np.abs(pos[-1] - pos[0]).max()
        toppled = bool(moved > TOPPLE_FRACTION * p["size"])
        return Answer(toppled if kind == "topples" else not toppled, unit)
    if kind == "angular_speed":  # from the gear's rim marker circling its axle: omega_y = (o x v)_y / |o|^2
        last = episode.times >= episode.times[-1] - 0.2
        o = pos[last, query.body] - gears.axles(p)[query.body]  # (t, 3) m, axle -> marker
        v = vel[last, query.body]
        omega = (o[:, 2] * v[:, 0] - o[:, 0] * v[:, 2]) / (o[:, 0] ** 2 + o[:, 2] ** 2)  # rad/s about +y
        return Answer(float(np.mean(omega)), unit)
    raise AnswerError(f"question {kind!r} has no reader")


def agree(a: Answer, b: Answer, rel: float, abs_tol: float) -> bool:
    """Whether two answers agree: booleans equal, numbers within max(rel * |b|, abs_tol)."""
    return tolerance_miss(a, b, rel, abs_tol) <= 1.0


def tolerance_miss(a: Answer, b: Answer, rel: float, abs_tol: float) -> float:
    """How far answer a is from b in units of the tolerance max(rel * |b|, abs_tol): the largest
    |a - b| / tolerance over a list's elements (<= 1: they agree); booleans 0 when equal, else inf,
    as are mismatched shapes."""
    if isinstance(b.value, bool) or isinstance(a.value, bool):
        return 0.0 if a.value == b.value else math.inf
    x, y = np.atleast_1d(np.asarray(a.value, float)), np.atleast_1d(np.asarray(b.value, float))
    if x.shape != y.shape:
        return math.inf
    diff, tol = np.abs(x - y), np.maximum(rel * np.abs(y), abs_tol)
    with np.errstate(divide="ignore", invalid="ignore"):
        miss = np.where(tol > 0, diff / tol, np.where(diff == 0, 0.0, math.inf))
    return float(np.nan_to_num(miss, nan=math.inf, posinf=math.inf).max())  # a non-finite answer misses by inf


def relative_error(a: Answer, b: Answer) -> float:
    """|a - b| / max(|b|, scale) (0 or 1 for booleans); lists: the largest over their elements."""
    if isinstance(b.value, bool):
        return float(a.value != b.value)
    x, y = np.atleast_1d(np.asarray(a.value, float)), np.atleast_1d(np.asarray(b.value, float))
    scale = max(float(np.abs(y).max()), 1e-6)
    return float(np.abs(x - y).max() / scale)
