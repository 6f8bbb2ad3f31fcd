"""Physically corrupted copies of an episode's states, to measure whether the checks catch them.

    bad = corrupt(episode, "teleport", np.random.default_rng(0))

Each corruption starts at a random frame t0 in the middle half of the episode and keeps positions
and velocities consistent with each other where the corruption allows, so that a check cannot
catch it by a mismatch it did not mean to create.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

import sim
from verifier import geometry

G = 9.81
KINDS = ("teleport", "reversed_gravity", "scaled_gravity", "injected_energy", "sinking", "broken_constraint",
         "vanishing")
RAMP_TIME = 0.3  # s over which gradual corruptions (sinking, stretching) build up


def corrupt(episode: sim.Episode, kind: str, rng: np.random.Generator) -> sim.Episode:
    """A copy of `episode` with one physical law broken from a random frame on."""
    if kind not in KINDS:
        raise ValueError(f"parameter 'kind': got {kind!r}; allowed: one of {', '.join(KINDS)}")
    states = np.array(episode.states, float)  # (T, n, 13)
    T, n = states.shape[:2]
    t0 = int(rng.integers(T // 4, 3 * T // 4))
    k = int(rng.integers(n))
    tau = np.clip(episode.times - episode.times[t0], 0.0, None)  # (T,) s since the corruption began
    ramp = np.minimum(tau / RAMP_TIME, 1.0)  # (T,) 0 -> 1
    pos, vel = states[..., 0:3], states[..., 7:10]  # views into states
    bodies = geometry.bodies(episode)
    if kind == "teleport":
        direction = rng.normal(size=3)
        direction[2] = abs(direction[2])
        pos[t0:, k] += direction / np.linalg.norm(direction) * rng.uniform(0.1, 0.3)
    elif kind in ("reversed_gravity", "scaled_gravity"):
        factor = -1.0 if kind == "reversed_gravity" else float(rng.choice([0.5, 2.0]))
        extra = -(factor - 1) * G  # m/s^2 added to every body's vertical acceleration
        pos[..., 2] += 0.5 * extra * tau[:, None] ** 2
        vel[..., 2] += extra * tau[:, None]
    elif kind == "injected_energy":
        scale = rng.uniform(1.3, 1.6)
        kick = np.r_[rng.normal(size=2), 0.0]
        kick *= rng.uniform(0.3, 0.8) / np.linalg.norm(kick)
        after = tau > 0
        pos[after] += (scale - 1) * (pos[after] - pos[t0]) + kick * tau[after, None, None]
        vel[t0:] = scale * vel[t0:] + kick
    elif kind == "sinking":
        depth = rng.uniform(1.0, 2.0) * max(bodies[k].inner, 0.02)
        pos[:, k, 2] -= depth * ramp
        vel[:, k, 2] -= np.where((tau > 0) & (ramp < 1), depth / RAMP_TIME, 0.0)
    elif kind == "broken_constraint":
        break_constraint(episode, states, k, t0, ramp, rng)
    elif kind == "vanishing":
        states[t0:, k] = np.nan
    return replace(episode, states=states, frames=None, depth=None, segmentation=None)


def break_constraint(episode: sim.Episode, states: np.ndarray, k: int, t0: int, ramp: np.ndarray,
                     rng: np.random.Generator) -> None:
    """Jointed scenes: a joint gives (a pendulum link stretches, an axle or hinge drifts, the paddle
    lifts, a ball leaves the floor). Others: body k moves into its nearest neighbour, or into its
    support when it is alone."""
    pos = states[..., 0:3]
    scene, p = episode.scene, episode.params
    grow = rng.uniform(0.1, 0.3) * ramp[:, None]  # (T, 1)
    if scene == "pendulum":
        pivot = geometry.pendulum_pivot(p)
        pos[:] = pivot + (pos - pivot) * (1 + grow[:, :, None])
    elif scene in ("gears", "pour", "push", "collision"):
        body = 0 if scene in ("pour", "push") else k
        pos[:, body, 2] += grow[:, 0] * (0.5 if scene != "collision" else p["size"] * 2)
    else:
        bodies = geometry.bodies(episode)
        n = pos.shape[1]
        if n == 1:
            pos[:, k, 2] -= 1.5 * bodies[k].inner * ramp
            return
        d = np.linalg.norm(pos[t0] - pos[t0, k], axis=-1)
        d[k] = np.inf
        j = int(np.argmin(d))
        target = pos[:, j] + (pos[:, k] - pos[:, j]) * 0.3  # well inside j's inner sphere
        pos[:, k] += (target - pos[:, k]) * ramp[:, None]
