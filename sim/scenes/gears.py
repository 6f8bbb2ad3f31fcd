"""gears: a train of meshed spur gears; the first (the driver) is spun by a velocity actuator.

The gears stand in the x-z plane facing the camera, on hinges along y, in a row along x; gear i+1
meshes with gear i. Sizes alternate: even gears have the driver's radius, odd gears `ratio` times
it (and `ratio` times the teeth). Tooth contact is not simulated (MuJoCo has no robust gear-tooth
contact): each mesh is a joint equality constraint q_{i+1} = -(r_i / r_{i+1}) q_i, and the teeth
and a contrasting spoke are visual geometry that make the rotation readable.

The tracked bodies are rim markers, one per gear: a dark peg at the tip of its spoke (RIM_FRACTION of
the pitch radius from the axle), fixed to the gear. A gear's centre never moves; its marker circles
the axle at the gear's angular velocity, so the tracked positions show the rotation.

Closed form: omega_{i+1} = -omega_i * r_i / r_{i+1}: odd gears turn at -omega_driver / ratio, even
gears at +omega_driver. The driver's target speed ramps from 0 to `driver_speed` over `RAMP_TIME`
and is held; the controls (the target speed, rad/s) are the episode's actions.
"""

from __future__ import annotations

import math

import numpy as np

from sim.params import Param, ParamSpace
from sim.scenes.base import Scene, SceneFamily, mjcf, rgba

DRIVER_RADIUS = 0.08  # m, pitch radius of the driver
MODULE = 0.012  # m of pitch radius per tooth / 2 (teeth = 2 r / module), visual only
THICKNESS = 0.02  # m
RAMP_TIME = 0.3  # s for the driver's target speed to reach driver_speed
KV = 5.0  # N*m*s/rad, velocity-actuator gain
DENSITY = 2700.0  # kg/m^3 (aluminium discs): sets the inertia the driver works against
RIM_FRACTION = 0.7  # the rim marker's distance from the axle / the pitch radius


def radii(p: dict) -> list[float]:
    return [DRIVER_RADIUS * (p["ratio"] if i % 2 else 1.0) for i in range(p["num_gears"])]


def speed_ratios(p: dict) -> list[float]:
    """omega_i / omega_driver for every gear (closed form)."""
    return [(-1.0 / p["ratio"]) if i % 2 else 1.0 for i in range(p["num_gears"])]


def axles(p: dict) -> np.ndarray:
    """(num_gears, 3) the gears' axle centres, m, world frame."""
    rs = radii(p)
    centres = [0.0]
    for a, b in zip(rs, rs[1:]):
        centres.append(centres[-1] + a + b)
    shift = (centres[0] - rs[0] + centres[-1] + rs[-1]) / 2  # the train centred on x = 0
    return np.array([[c - shift, 0.0, max(rs) + 0.06] for c in centres])  # axles 6 cm above the largest gear's rim


def marker_radii(p: dict) -> np.ndarray:
    """(num_gears,) each rim marker's distance from its axle, m."""
    return RIM_FRACTION * np.array(radii(p))


def gear_geoms(name: str, r: float, color: int) -> str:
    """A disc with teeth on its rim, a hub and a white spoke; only the disc has mass."""
    teeth = max(6, round(2 * r / MODULE))
    tooth = (0.35 * math.pi * r / teeth, THICKNESS / 2, 0.012)  # half sizes: tangential, axial, radial
    parts = [
        f'<geom name="{name}" type="cylinder" size="{r - tooth[2]:.6g} {THICKNESS / 2:.6g}" quat="0.707107 0.707107 0 0" '
        f'rgba="{rgba(color)}" density="{DENSITY}" contype="0" conaffinity="0"/>',
        f'<geom type="box" size="{0.85 * (r - tooth[2]):.6g} {THICKNESS * 0.6:.6g} {0.18 * r:.6g}" '
        f'rgba="0.97 0.97 0.97 1" contype="0" conaffinity="0" mass="0"/>',
        f'<geom type="cylinder" size="{0.12 * r:.6g} {THICKNESS * 0.7:.6g}" quat="0.707107 0.707107 0 0" '
        f'rgba="0.2 0.2 0.2 1" contype="0" conaffinity="0" mass="0"/>',
    ]
    for k in range(teeth):
        a = 2 * math.pi * k / teeth
        x, z = r * math.cos(a), r * math.sin(a)
        # rotate the tooth about y by -a so its radial half-size points outward
        qw, qy = math.cos(-a / 2 + math.pi / 4), math.sin(-a / 2 + math.pi / 4)
        parts.append(
            f'<geom type="box" size="{tooth[0]:.6g} {tooth[1]:.6g} {tooth[2]:.6g}" pos="{x:.6g} 0 {z:.6g}" '
            f'quat="{qw:.6g} 0 {qy:.6g} 0" rgba="{rgba(color)}" contype="0" conaffinity="0" mass="0"/>'
        )
    return "".join(parts)


class Gears(SceneFamily):
    name = "gears"
    seconds = 2.0
    params = ParamSpace(
        (
            Param("num_gears", "number of gears in the train (the first is the driver)", "int", valid=(2, 6),
                  train=(2, 3), ood=(4, 5)),
            Param("ratio", "teeth of each odd gear / teeth of the driver (odd gears turn 1/ratio as fast)",
                  valid=(0.0, 4.0), train=(0.6, 1.8), ood=[(0.35, 0.5), (2.0, 2.5)], exclusive_low=True),
            Param("driver_speed", "the driver's commanded angular speed, rad/s (sign: direction)",
                  valid=(-30.0, 30.0), train=(1.5, 4.0), ood=(4.5, 7.0)),
        ),
        family="gears",
    )

    def build(self, p: dict) -> Scene:
        rs = radii(p)
        centres, axle_z = list(axles(p)[:, 0]), axles(p)[0, 2]
        bodies = []
        equalities = []
        for i, (x, r) in enumerate(zip(centres, rs)):
            phase = math.pi / max(6, round(2 * r / MODULE)) if i % 2 else 0.0  # interleave the teeth
            bodies.append(
                f'<body name="gear{i}" pos="{x:.6g} 0 {axle_z:.6g}" quat="{math.cos(phase / 2):.6g} 0 {math.sin(phase / 2):.6g} 0">'
                f'<joint name="gear{i}" type="hinge" axis="0 1 0" damping="0.002" armature="0.0001"/>'
                f'{gear_geoms(f"gear{i}", r, i)}'
                f'<body name="gear{i}_rim" pos="{RIM_FRACTION * r:.6g} 0 0">'
                f'<inertial pos="0 0 0" mass="1e-6" diaginertia="1e-12 1e-12 1e-12"/>'  # the marker's point
                f'<geom type="cylinder" size="{0.1 * r:.6g} {THICKNESS * 0.8:.6g}" quat="0.707107 0.707107 0 0" '
                f'rgba="0.15 0.15 0.15 1" contype="0" conaffinity="0" mass="0"/></body></body>'
                f'<geom type="box" size="0.012 0.01 {axle_z / 2:.6g}" pos="{x:.6g} 0.04 {axle_z / 2:.6g}" '
                f'rgba="0.4 0.4 0.42 1" contype="0" conaffinity="0"/>'
            )
            if i:
                coef = -rs[i - 1] / r
                equalities.append(
                    f'<joint joint1="gear{i}" joint2="gear{i - 1}" polycoef="0 {coef:.9g} 0 0 0" '
                    f'solref="0.005 1"/>'
                )
        width = centres[-1] + rs[-1] - (centres[0] - rs[0])
        span = max(width, 2 * axle_z)
        eye = (0.0, -1.15 * span - 0.1, axle_z + 0.15 * span)
        target = (0.0, 0.0, axle_z * 0.75)
        extra = (
            f'<equality>{"".join(equalities)}</equality>'
            f'<actuator><velocity name="driver" joint="gear0" kv="{KV}" ctrlrange="-30 30"/></actuator>'
        )
        speed = p["driver_speed"]

        def policy(t: float) -> np.ndarray:
            return np.array([speed * min(1.0, t / RAMP_TIME)])

        return Scene(
            mjcf=mjcf("".join(bodies), camera_eye=eye, camera_target=target, extra=extra),
            tracked=[f"gear{i}_rim" for i in range(p["num_gears"])],
            policy=policy,
        )

    def caption(self, p: dict) -> str:
        rs = radii(p)
        return (
            f"A train of {p['num_gears']} meshed gears; the red driver is spun up to {p['driver_speed']:.2f} rad/s "
            f"and every other gear is {p['ratio']:.2f} times its size ({rs[0] * 200:.0f} and "
            f"{DRIVER_RADIUS * p['ratio'] * 200:.0f} cm across), so it turns {1 / p['ratio']:.2f} times as fast "
            f"the other way."
        )


FAMILY = Gears()
