"""What each tracked body is, from an episode's realised parameters: size, mass and restitution.

    props = sim.body_properties(episode)    # (n_bodies, 3): radius m, mass kg, restitution; NaN: not stated

The radius is half the body's full extent (a sphere's radius, half a cube's edge), the size a
world model needs to tell when two bodies touch; restitution is the coefficient of the body's
contacts where the family sets one for them all. A value the family does not set per body (the push
paddle, the gears, a cup) is NaN, so a loss on these can skip it.
"""

from __future__ import annotations

import numpy as np

from sim.episode import Episode


def _objects(p: dict) -> list[tuple[float, float]]:
    """(size, mass) of the primary object, then of `others` (drop, push)"""
    return [(p["size"], p["mass"])] + [(o["size"], o["mass"]) for o in p.get("others", [])]


def _rows(p: dict, scene: str, n: int) -> list[tuple[float, float, float]]:
    """(full extent m, mass kg, restitution) of the family's first n bodies, NaN where not set"""
    nan = float("nan")
    e = p.get("restitution", nan)
    if scene in ("drop", "projectile", "ramp"):
        return [(size, mass, e) for size, mass in _objects(p)]
    if scene == "collision":
        return [(p["size"], m, e) for m in p["masses"]]
    if scene in ("pendulum", "stack"):
        return [(p["size"], p["mass"], nan)] * n
    if scene == "push":  # the paddle first: a slab, not a ball
        return [(nan, nan, nan)] + [(size, mass, nan) for size, mass in _objects(p)]
    if scene == "pour":  # the cup, then the beads
        return [(nan, nan, nan)] + [(p["particle_size"], p["particle_mass"], nan)] * (n - 1)
    return [(nan, nan, nan)] * n  # gears, table_fall: rims and a cup


def body_properties(episode: Episode) -> np.ndarray:
    """(n_bodies, 3) float64: each body's radius m, mass kg and restitution, in `body_names` order;
    NaN where the episode's family does not state the value for that body."""
    n = len(episode.body_names)
    rows = _rows(episode.params, episode.scene, n)[:n]
    out = np.full((n, 3), np.nan)
    for i, (size, mass, e) in enumerate(rows):
        out[i] = (size / 2, mass, e)
    return out
