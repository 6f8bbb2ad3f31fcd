"""table_fall: a cup-like cylinder slides off a table edge and falls to the floor.

The table's edge is at x = 0 (the table top spans x < 0); the cup starts upright on the table,
`START_DISTANCE` behind the edge, pushed along +x with the initial speed that leaves it `speed` m/s
at the edge after Coulomb friction, v0 = sqrt(speed^2 + 2 mu g d).

Closed form: the cup leaves the edge horizontally at `speed` and its centre of mass falls
`table_height` in sqrt(2 h / g), landing `speed * sqrt(2 * table_height / g)` beyond the edge.
The cup tips a little as it crosses the edge (the edge supports its back half while the front half
is already unsupported): it leaves 2-5% slower and lands within 3 cm of the closed form (measured
-0.4 to +2.2 cm, longest at low speed), see tests/test_scenes_physics.py.
"""

from __future__ import annotations

import math

from sim.params import Param, ParamError, ParamSpace
from sim.scenes.base import Scene, SceneFamily, mjcf, rgba

G = 9.81
START_DISTANCE = 0.2  # m from the cup's centre to the table edge at t = 0
CUP_RADIUS = 0.05  # m
CUP_HEIGHT = 0.12  # m
TABLE_DEPTH = 0.7  # m of table top behind the edge
RESTITUTION = 0.3


def landing_distance(speed: float, table_height: float) -> float:
    """Closed form: horizontal distance (m) beyond the edge where the cup's centre of mass has
    fallen by the table height."""
    return speed * math.sqrt(2 * table_height / G)


def start_speed(speed: float, friction: float, distance: float = START_DISTANCE) -> float:
    """Initial speed (m/s) that leaves `speed` at the edge after sliding `distance` with Coulomb friction."""
    return math.sqrt(speed**2 + 2 * friction * G * distance)


class TableFall(SceneFamily):
    name = "table_fall"
    seconds = 1.5
    params = ParamSpace(
        (
            Param("table_height", "height of the table top above the floor, m", valid=(0.0, 3.0),
                  train=(0.5, 0.9), ood=(1.0, 1.3), exclusive_low=True),
            Param("speed", "the cup's speed as it reaches the table edge, m/s", valid=(0.0, 5.0),
                  train=(0.8, 1.6), ood=[(0.5, 0.7), (1.8, 2.2)], exclusive_low=True),
            Param("mass", "mass of the cup, kg", valid=(0.0, 100.0), train=(0.1, 0.5), ood=(0.6, 1.0),
                  exclusive_low=True),
            Param("friction", "Coulomb friction coefficient between the cup and the table", valid=(0.0, 5.0),
                  train=(0.15, 0.35), ood=[(0.03, 0.1), (0.4, 0.5)]),
        ),
        family="table_fall",
    )

    def check(self, p: dict) -> None:
        # a cup sliding with friction mu tips forward when mu * (height / 2) > radius: it would tumble
        # before the edge and never leave it with the stated speed
        limit = CUP_RADIUS / (CUP_HEIGHT / 2)
        if p["friction"] >= limit:
            raise ParamError(
                f"parameter 'friction': got {p['friction']!r}; allowed: [0, {limit:.3g}) for this cup "
                f"(higher friction tips the sliding cup over before it reaches the edge)"
            )

    def build(self, p: dict) -> Scene:
        h, r, hc = p["table_height"], CUP_RADIUS, CUP_HEIGHT
        top = 0.02  # m, thickness of the table top
        table = (
            f'<geom name="table" type="box" size="{TABLE_DEPTH / 2:.6g} 0.3 {top / 2:.6g}" '
            f'pos="{-TABLE_DEPTH / 2:.6g} 0 {h - top / 2:.6g}" rgba="0.55 0.38 0.22 1"/>'
        ) + "".join(
            f'<geom type="box" size="0.02 0.02 {(h - top) / 2:.6g}" pos="{x:.6g} {y:.6g} {(h - top) / 2:.6g}" '
            f'rgba="0.45 0.30 0.18 1" contype="0" conaffinity="0"/>'
            for x in (-0.04, -TABLE_DEPTH + 0.04) for y in (-0.26, 0.26)
        )
        # the cup: a solid cylinder (the collision geom) with a dark visual rim so it reads as a cup
        cup = (
            f'<body name="cup" pos="{-START_DISTANCE:.6g} 0 {h + hc / 2:.6g}"><freejoint name="cup"/>'
            f'<geom name="cup" type="cylinder" size="{r:.6g} {hc / 2:.6g}" mass="{p["mass"]:.6g}" rgba="{rgba(0)}"/>'
            f'<geom name="cup_inside" type="cylinder" size="{0.75 * r:.6g} 0.002" pos="0 0 {hc / 2:.6g}" '
            f'rgba="0.25 0.05 0.05 1" contype="0" conaffinity="0" mass="0"/></body>'
        )
        # frame the path from the start to a little beyond the landing point, floor to table top
        reach = landing_distance(p["speed"], h)
        left, right = -START_DISTANCE - 0.1, reach + 0.25
        span = max(right - left, h + 0.3)
        eye = ((left + right) / 2, -1.4 * span, 0.7 * h + 0.15)
        target = ((left + right) / 2, 0.0, 0.5 * h + 0.1)
        v0 = start_speed(p["speed"], p["friction"])
        return Scene(
            mjcf=mjcf(table + cup, camera_eye=eye, camera_target=target, restitution=RESTITUTION,
                      friction=p["friction"]),
            tracked=["cup"],
            qvel={"cup": [v0, 0.0, 0.0, 0.0, 0.0, 0.0]},
            sounds={"cup": (2 * r, RESTITUTION)},
        )

    def caption(self, p: dict) -> str:
        return (
            f"A {p['mass']:.2f} kg cup slides along a {p['table_height']:.2f} m high table with friction "
            f"{p['friction']:.2f}, reaches the edge at {p['speed']:.2f} m/s and falls to the floor."
        )


FAMILY = TableFall()
