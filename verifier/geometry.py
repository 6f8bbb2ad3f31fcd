"""What the physical checks need to know about a scene, from its family and parameters alone:
each tracked body's mass and extent, the static surfaces under it, and the constraints it keeps.

Extents are orientation-free (world-model rollouts have no orientation): `inner` is the radius of
the largest sphere inside the body (two bodies that do not overlap keep their inner spheres apart;
a body resting on the floor keeps its inner sphere above it), `outer` the radius of the smallest
sphere around it (a body farther than this from everything touches nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import sim
from sim.scenes import gears, pendulum, pour, push, ramp, table_fall

PASSIVE = ("drop", "projectile", "collision", "ramp", "pendulum", "stack", "table_fall")  # energy cannot grow
NO_FREE_FLIGHT = ("pendulum", "gears", "pour")  # bodies held by joints or by untracked walls
NO_CONTACT = ("pendulum", "gears")  # bodies that pass through each other (no collision geometry)
STACK_PEDESTAL = 0.1  # m, the height of the stack's pedestal (sim/scenes/stack.py)


@dataclass
class Body:
    mass: float  # kg
    inner: float  # m, radius of the largest sphere inside
    outer: float  # m, radius of the smallest sphere around
    free: bool = True  # a free body (gravity acts when it touches nothing); False: jointed or actuated


def extents(shape: str, size: float) -> tuple[float, float]:
    """(inner, outer) radius of a shape of full extent `size` (sim.scenes.base.free_body)."""
    return {
        "sphere": (size / 2, size / 2),
        "box": (size / 2, size * math.sqrt(3) / 2),
        "cylinder": (size / 2, size * math.sqrt(2) / 2),
        "capsule": (size / 2, size),
    }[shape]


def bodies(episode: sim.Episode) -> list[Body]:
    """One Body per tracked body, in `episode.body_names` order."""
    scene, p = episode.scene, episode.params
    if scene == "drop":
        objects = [{k: p[k] for k in ("shape", "size", "mass")}, *p.get("others", [])]
        return [Body(o["mass"], *extents(o["shape"], o["size"])) for o in objects]
    if scene in ("projectile", "ramp"):
        return [Body(p["mass"], *extents(p["shape"], p["size"]))]
    if scene == "collision":
        return [Body(m, p["size"] / 2, p["size"] / 2) for m in p["masses"]]
    if scene == "pendulum":
        return [Body(p["mass"], p["size"] / 2, p["size"] / 2, free=False) for _ in range(p["links"])]
    if scene == "stack":
        return [Body(p["mass"], *extents("box", p["size"])) for _ in range(p["num_blocks"])]
    if scene == "table_fall":
        r, h = table_fall.CUP_RADIUS, table_fall.CUP_HEIGHT
        return [Body(p["mass"], min(r, h / 2), math.hypot(r, h / 2))]
    if scene == "gears":
        return [Body(1.0, 0.0, 0.0, free=False) for _ in range(p["num_gears"])]
    if scene == "pour":
        beads = [Body(p["particle_mass"], p["particle_size"] / 2, p["particle_size"] / 2) for _ in range(p["num_particles"])]
        return [Body(pour.CUP_MASS, 0.0, 0.0, free=False), *beads]
    if scene == "push":
        others = [Body(o["mass"], *extents(o["shape"], o["size"])) for o in p.get("others", [])]
        paddle = push.PADDLE
        return [Body(push.PUSHER_MASS, min(paddle), float(np.linalg.norm(paddle)), free=False),
                Body(p["mass"], *extents("box", p["size"])), *others]
    raise ValueError(f"parameter 'scene': got {scene!r}; allowed: one of {', '.join(sim.SCENES)}")


def support_clearance(episode: sim.Episode, positions: np.ndarray) -> np.ndarray:
    """(T, n) distance (m) from each body's centre to the static surface beneath it (floor, ramp,
    pedestal, table top), measured along that surface's normal."""
    scene, p = episode.scene, episode.params
    x, y, z = positions[..., 0], positions[..., 1], positions[..., 2]
    if scene == "stack":
        half = p["size"] / 2  # the pedestal has the blocks' footprint
        on = (np.abs(x) < half) & (np.abs(y) < half)
        return z - np.where(on, STACK_PEDESTAL, 0.0)
    if scene == "table_fall":
        outer = bodies(episode)[0].outer
        # over the table top (or tipping over its edge); a cup that rolled back under the table is on the floor
        on = (x < outer) & (x > -table_fall.TABLE_DEPTH) & (z > p["table_height"] - outer)
        return z - np.where(on, p["table_height"], 0.0)
    if scene == "ramp":
        up, normal, _ = ramp.slope_frame(p["angle_deg"])
        along = x * up[0] + z * up[2]
        on = (along > 0) & (along < ramp.RAMP_LENGTH) & (np.abs(y) < ramp.RAMP_WIDTH / 2)
        return np.where(on, x * normal[0] + z * normal[2], z)
    return z


def rest_height(episode: sim.Episode, k: int, body: Body) -> float:
    """The lowest height (m) body k's centre can reach: energies are measured from it."""
    if episode.scene == "pendulum":
        p = episode.params
        return pendulum_pivot(p)[2] - (k + 1) * p["length"]
    return body.inner


def pendulum_pivot(p: dict) -> np.ndarray:
    """(3,) the pendulum's pivot, m (sim/scenes/pendulum.py)."""
    return np.array([0.0, 0.0, p["links"] * p["length"] + p["size"] / 2 + pendulum.CLEARANCE])


def constraint_error(episode: sim.Episode, positions: np.ndarray) -> np.ndarray | None:
    """(T,) the largest relative violation of the scene's joints at each frame, or None when the
    scene has none: pendulum links keep their length, gears' rim markers their distance from the
    axle, the pouring cup turns about its hinge, the paddle slides at a fixed height, colliding balls
    stay on the floor."""
    scene, p = episode.scene, episode.params
    if scene == "pendulum":
        pivot = pendulum_pivot(p)
        links = [positions[:, 0] - pivot] + [positions[:, k] - positions[:, k - 1] for k in range(1, p["links"])]
        return np.max([np.abs(np.linalg.norm(v, axis=-1) / p["length"] - 1) for v in links], axis=0)
    if scene == "gears":  # each rim marker circles its axle at a fixed distance, in the gear's plane
        arm = gears.marker_radii(p)  # (n,)
        offset = positions - gears.axles(p)[None]  # (T, n, 3)
        radial = np.abs(np.linalg.norm(offset[..., [0, 2]], axis=-1) / arm - 1)
        return np.maximum(radial, np.abs(offset[..., 1]) / arm).max(axis=1)
    if scene == "pour":
        hinge = np.array([0.0, 0.0, pour.LIP_HEIGHT])
        arm = np.linalg.norm(positions[:, 0] - hinge, axis=-1)
        return np.abs(arm / arm[0] - 1)
    if scene == "push":
        return np.abs(positions[:, 0, 2] - positions[0, 0, 2]) / push.PADDLE[2]
    if scene == "collision":
        return np.abs(positions[:, :, 2] - positions[:1, :, 2]).max(axis=1) / (p["size"] / 2)
    return None
