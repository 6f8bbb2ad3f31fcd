"""ramp: an object released at rest near the top of an incline slides (box) or rolls (sphere,
cylinder) down it with Coulomb friction, then runs out onto the floor.

The incline is a rotated plane (exact analytic contacts for every shape) rising towards +x from
the floor at x = 0, RAMP_LENGTH long along the slope, with a visual-only wedge under it. Closed
forms along the slope (a = angle, mu = friction):
- box: slides with g (sin a - mu cos a) when mu < tan a, else stays put;
- sphere: rolls with (5/7) g sin a when mu >= (2/7) tan a; cylinder (axis across the slope):
  (2/3) g sin a when mu >= (1/3) tan a; with less friction they slide and spin up more slowly.
"""

from __future__ import annotations

import math

from sim.params import Param, ParamSpace
from sim.scenes.base import Scene, SceneFamily, geom_size, mjcf, rgba

SHAPES = ("box", "sphere", "cylinder")
RAMP_LENGTH = 1.5  # m along the slope
RAMP_WIDTH = 0.6  # m
FOVY_DEG = 45.0


def slope_frame(angle_deg: float) -> tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, ...]]:
    """(unit vector up the slope, unit normal, quaternion wxyz rotating x->up-slope, z->normal)."""
    a = math.radians(angle_deg)
    return (math.cos(a), 0.0, math.sin(a)), (-math.sin(a), 0.0, math.cos(a)), (math.cos(a / 2), 0.0, -math.sin(a / 2), 0.0)


def quat_mul(q1, q2):
    w1, x1, y1, z1 = q1
    w2, x2, y2, z2 = q2
    return (
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    )


class Ramp(SceneFamily):
    name = "ramp"
    seconds = 1.5
    params = ParamSpace(
        (
            Param("shape", "box slides, sphere and cylinder roll", "choice", choices=SHAPES, train_choices=SHAPES,
                  ood_choices=SHAPES),
            Param("size", "full extent of the object in m (cube edge, sphere diameter, cylinder diameter = length)",
                  valid=(0.0, 0.4), train=(0.1, 0.18), ood=(0.2, 0.26), exclusive_low=True),
            Param("mass", "mass of the object in kg", valid=(0.0, 1000.0), train=(0.2, 2.0), ood=(2.5, 5.0),
                  exclusive_low=True),
            Param("angle_deg", "incline angle above horizontal in degrees", valid=(0.0, 60.0), train=(15.0, 35.0),
                  ood=[(5.0, 12.0), (38.0, 45.0)]),
            Param("friction", "Coulomb friction coefficient between object and ramp (and floor)", valid=(0.0, 5.0),
                  train=(0.1, 0.6), ood=[(0.0, 0.08), (0.7, 1.0)]),
            Param("restitution", "coefficient of restitution of the object's contacts", valid=(0.0, 1.0),
                  train=(0.1, 0.4), ood=(0.5, 0.7)),
        ),
        family="ramp",
    )

    def start(self, p: dict) -> tuple[tuple[float, float, float], tuple[float, ...]]:
        """Initial centre position and orientation: resting on the slope, its top edge a size below the top."""
        up, normal, q = slope_frame(p["angle_deg"])
        s = RAMP_LENGTH - 1.5 * p["size"]
        h = p["size"] / 2
        pos = tuple(s * u + h * n for u, n in zip(up, normal))
        if p["shape"] == "cylinder":  # axis across the slope (along y) so that it rolls
            q = quat_mul(q, (math.cos(math.pi / 4), math.sin(math.pi / 4), 0.0, 0.0))
        return pos, q

    def build(self, p: dict) -> Scene:
        up, normal, q = slope_frame(p["angle_deg"])
        L, W = RAMP_LENGTH, RAMP_WIDTH
        mid = tuple(L / 2 * u for u in up)
        top_x, top_z = L * up[0], L * up[2]
        wedge = (
            f"0 {-W / 2} -0.002  {top_x} {-W / 2} -0.002  {top_x} {-W / 2} {top_z - 0.002}  "
            f"0 {W / 2} -0.002  {top_x} {W / 2} -0.002  {top_x} {W / 2} {top_z - 0.002}"
        )
        pos, quat = self.start(p)
        body = (
            f'<geom name="ramp" type="plane" size="{L / 2:.6g} {W / 2:.6g} 0.05" pos="{mid[0]:.6g} 0 {mid[2]:.6g}" '
            f'quat="{" ".join(f"{v:.6g}" for v in q)}" rgba="0.45 0.45 0.5 1"/>\n'
            f'<geom name="wedge" type="mesh" mesh="wedge" contype="0" conaffinity="0" rgba="0.6 0.6 0.66 1"/>\n'
            f'<body name="object0" pos="{pos[0]:.6g} 0 {pos[2]:.6g}" quat="{" ".join(f"{v:.6g}" for v in quat)}">'
            f'<freejoint name="object0"/><geom name="object0" {geom_size(p["shape"], p["size"])} '
            f'mass="{p["mass"]:.6g}" rgba="{rgba(0)}"/></body>'
        )
        # side view from -y framing the slope and a run-out of about half a metre on the floor
        xmin, xmax, zmax = -0.6, top_x + 0.05, top_z + p["size"]
        half = 1.05 * max((xmax - xmin) / 2, zmax / 2, 0.5)
        distance = half / math.tan(math.radians(FOVY_DEG) / 2)
        cx, cz = (xmin + xmax) / 2, zmax / 2
        return Scene(
            mjcf=mjcf(body, camera_eye=(cx, -distance, cz + 0.12 * distance), camera_target=(cx, 0.0, cz),
                      restitution=p["restitution"], friction=p["friction"], fovy_deg=FOVY_DEG,
                      extra_assets=f'<mesh name="wedge" vertex="{wedge}"/>'),
            tracked=["object0"],
            sounds={"object0": (p["size"], p["restitution"])},
        )

    def caption(self, p: dict) -> str:
        verb = "slides" if p["shape"] == "box" else "rolls"
        return (
            f"A red {p['shape']} of {p['size'] * 100:.0f} cm and {p['mass']:.2f} kg is released at rest on a "
            f"{p['angle_deg']:.0f}-degree ramp and {verb} down if friction allows. Friction {p['friction']:.2f}, "
            f"restitution {p['restitution']:.2f}."
        )


FAMILY = Ramp()
