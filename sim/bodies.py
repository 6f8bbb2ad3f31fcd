"""What each tracked body is, from an episode's realised parameters: size, mass, restitution,
friction and hinge damping, and whether the episode's actions drive it.

    props = sim.body_properties(episode)    # (n_bodies, 5): radius m, mass kg, restitution, friction, damping 1/s; NaN: not stated
    driven = sim.driven_bodies(episode)     # (n_bodies,) bool: its motion is the actuators', not the contacts'
    share = sim.roll_shares(episode)        # (n_bodies,): 2/7 a ball, 1/3 a ramp's rolling cylinder; NaN: not stated

The radius is that of the sphere that touches what the body touches where it does: a sphere's
own; a drop's box, cylinder or capsule's height of its centre above its lowest point
(`sim.scenes.base.half_height`), since it falls from rest upright and lands flat, staying upright
(the floor is all it meets). Elsewhere a box or a cylinder touches another body or the floor at a
distance that depends on how it is turned (half its edge flat, half its diagonal on a corner), so
it is NaN there, as is every value the family does not set per body (the push paddle, the gears, a
cup), and a loss on these can skip it. Restitution and friction are the coefficients of
the body's contacts where the family sets one for them all (the floor's included: `sim.scenes.base`
gives every geom the scene's); collision's floor is frictionless (0). Damping is a pendulum bob's
hinge damping as the amplitude decay rate (1/s) the scene and its caption state: its hinge's
damping torque is 2 * damping * m L^2 times the hinge's angular speed (`sim.scenes.pendulum`).

A body's roll share is how much of its slip at a floor contact friction takes off its centre's
velocity before the contact stops slipping and the body rolls: kappa = 1 / (1 + m r^2 / I) for a
contact at distance r below the centre and moment of inertia I about the axis it rolls on. MuJoCo
gives geoms a uniform density, so a sphere's is 2/7 (I = 2/5 m r^2) and a cylinder rolling on its
side 1/3 (I = 1/2 m r^2; the ramp lays its cylinder across the slope). A body whose contact is a
flat face or an edge does not roll, so friction takes its slip off its centre's velocity whole: 1
for a box, for drop's cylinders and capsules, which fall upright and land on their base, and for
projectile's cylinders, launched upright without spin onto their flat base (MuJoCo's mostly slide
to a stop; a bouncy one may tumble onto its side and roll). A capsule launched so lands on its
rounded end and tumbles, and a cup, have none stated (NaN).
"""

from __future__ import annotations

import numpy as np

from sim.episode import Episode
from sim.scenes.base import half_height


def _objects(p: dict, first_shape: str | None = None, upright: bool = False) -> list[tuple[float, float]]:
    """(diameter or NaN, mass) of the primary object, then of `others` (drop, push): a sphere's
    diameter; for the other shapes, where `upright` (they stay so: drop) twice their centre's
    height above their lowest point, else NaN; the primary's shape is `first_shape` where p has
    none (push: a cube)"""
    def extent(o: dict) -> float:
        if o["shape"] == "sphere":
            return o["size"]
        return 2 * half_height(o["shape"], o["size"]) if upright else float("nan")

    objects = [{**p, "shape": p.get("shape", first_shape)}, *p.get("others", [])]
    return [(extent(o), o["mass"]) for o in objects]


def _rows(p: dict, scene: str, n: int) -> list[tuple[float, float, float, float, float]]:
    """(full extent m, mass kg, restitution, friction, damping 1/s) of the family's first n bodies,
    NaN where not set"""
    nan = float("nan")
    e, mu = p.get("restitution", nan), p.get("friction", nan)
    if scene in ("drop", "projectile", "ramp"):
        return [(size, mass, e, mu, nan) for size, mass in _objects(p, upright=scene == "drop")]
    if scene == "collision":
        return [(p["size"], m, e, 0.0, nan) for m in p["masses"]]
    if scene == "pendulum":
        return [(p["size"], p["mass"], nan, nan, p["damping"])] * n
    if scene == "stack":  # cubes
        return [(nan, p["mass"], nan, mu, nan)] * n
    if scene == "push":  # the paddle first: a slab, not a ball; then the cube and the others
        return [(nan,) * 5] + [(size, mass, nan, mu, nan) for size, mass in _objects(p, first_shape="box")]
    if scene == "pour":  # the cup, then the beads
        return [(nan,) * 5] + [(p["particle_size"], p["particle_mass"], nan, mu, nan)] * (n - 1)
    if scene == "table_fall":  # the cup: the table's and the floor's friction
        return [(nan, nan, nan, mu, nan)] * n
    return [(nan,) * 5] * n  # gears


def body_properties(episode: Episode) -> np.ndarray:
    """(n_bodies, 5) float64: each body's radius m (spheres only), mass kg, restitution, Coulomb
    friction and hinge damping (amplitude decay rate 1/s), in `body_names` order; NaN where the
    episode's family does not state the value for that body."""
    n = len(episode.body_names)
    rows = _rows(episode.params, episode.scene, n)[:n]
    out = np.full((n, 5), np.nan)
    for i, (size, mass, e, mu, zeta) in enumerate(rows):
        out[i] = (size / 2, mass, e, mu, zeta)
    return out


SPHERE_ROLL_SHARE = 2 / 7  # 1 / (1 + 5/2): a uniform ball
CYLINDER_ROLL_SHARE = 1 / 3  # 1 / (1 + 2): a uniform cylinder on its side
FLAT_ROLL_SHARE = 1.0  # a body on a face or an edge: it slides, it does not roll


def roll_shares(episode: Episode) -> np.ndarray:
    """(n_bodies,) float64, in `body_names` order: each body's roll share (module docstring), NaN
    where the family's shape and orientation do not fix it."""
    n = len(episode.body_names)
    p, scene = episode.params, episode.scene
    if scene in ("collision", "pendulum"):  # balls and bobs
        return np.full(n, SPHERE_ROLL_SHARE)
    if scene == "stack":  # cubes
        return np.full(n, FLAT_ROLL_SHARE)
    out = np.full(n, np.nan)
    if scene in ("drop", "projectile", "ramp", "push"):
        objects = [p.get("shape"), *(o["shape"] for o in p.get("others", []))]
        if scene == "push":  # the paddle first, then the cube and the others
            objects = [None, "box", *objects[1:]]
        for i, shape in enumerate(objects[:n]):
            if shape == "sphere":
                out[i] = SPHERE_ROLL_SHARE
            elif shape == "cylinder" and scene == "ramp":
                out[i] = CYLINDER_ROLL_SHARE
            elif shape == "box" or (shape is not None and scene == "drop") or (shape == "cylinder" and scene == "projectile"):  # land upright, on their base
                out[i] = FLAT_ROLL_SHARE
    return out


DRIVEN = {"push": 1, "pour": 1, "gears": None}  # family -> how many of its first tracked bodies the actuators drive (None: all)


def driven_bodies(episode: Episode) -> np.ndarray:
    """(n_bodies,) bool, in `body_names` order: the bodies whose motion the episode's actuators set
    (push's paddle and pour's cup on their servos, every gear through the meshes' constraints), so
    a contact does not move them: they push what they touch and are not pushed back."""
    n = len(episode.body_names)
    first = DRIVEN.get(episode.scene, 0)
    return np.arange(n) < (n if first is None else first)
