"""projectile: an object launched with a speed and an angle flies a parabola, lands and bounces.

The object starts at `height` (its lowest point above the floor) with centre-of-mass velocity
speed * (cos a, 0, sin a) along +x (no spin) and no air drag. Closed form until it lands:
x(t) = x0 + v cos(a) t, z(t) = z0 + v sin(a) t - g t^2 / 2; apex z0 + (v sin a)^2 / 2g; a sphere
lands (lowest point at the floor) after t = (v sin a + sqrt((v sin a)^2 + 2 g h)) / g, at range
v cos(a) t.

The camera looks from -y at the whole flight (launch point, apex, landing and a run-out), fitted per
episode; ranges are chosen so that the object stays a few pixels wide at 64x64.
"""

from __future__ import annotations

import math

from sim.params import Param, ParamSpace
from sim.scenes.base import Scene, SceneFamily, free_body, half_height, mjcf

G = 9.81
SHAPES = ("sphere", "box", "cylinder", "capsule")
FOVY_DEG = 45.0


def flight(speed: float, angle_deg: float, height: float) -> tuple[float, float, float]:
    """(time of flight s, range m, apex rise m above the launch point) of the lowest point."""
    a = math.radians(angle_deg)
    vx, vz = speed * math.cos(a), speed * math.sin(a)
    t = (vz + math.sqrt(vz * vz + 2 * G * height)) / G
    return t, vx * t, max(vz, 0.0) ** 2 / (2 * G)


def side_camera(xmin: float, xmax: float, zmin: float, zmax: float, margin: float = 1.2, min_half: float = 0.5):
    """(eye, target) for a camera on -y, slightly raised, that frames the box [xmin,xmax]x[zmin,zmax]."""
    cx, cz = (xmin + xmax) / 2, (zmin + zmax) / 2
    half = max((xmax - xmin) / 2, (zmax - zmin) / 2, min_half) * margin
    distance = half / math.tan(math.radians(FOVY_DEG) / 2)
    return (cx, -distance, cz + 0.08 * distance), (cx, 0.0, cz)


class Projectile(SceneFamily):
    name = "projectile"
    seconds = 1.5
    params = ParamSpace(
        (
            Param("shape", "shape of the object", "choice", choices=SHAPES, train_choices=SHAPES, ood_choices=SHAPES),
            Param("size", "full extent of the object in m (sphere diameter, cube edge)", valid=(0.0, 0.5),
                  train=(0.1, 0.2), ood=(0.22, 0.3), exclusive_low=True),
            Param("mass", "mass of the object in kg", valid=(0.0, 1000.0), train=(0.2, 2.0), ood=(2.5, 5.0),
                  exclusive_low=True),
            Param("speed", "launch speed of the centre of mass in m/s", valid=(0.0, 10.0), train=(1.5, 3.5),
                  ood=(3.8, 5.0)),
            Param("angle_deg", "launch angle above horizontal in degrees", valid=(-90.0, 90.0), train=(25.0, 65.0),
                  ood=[(10.0, 20.0), (70.0, 80.0)]),
            Param("height", "lowest point of the object above the floor at launch, m", valid=(0.0, 3.0),
                  train=(0.1, 0.6), ood=(0.7, 1.2)),
            Param("restitution", "coefficient of restitution with the floor", valid=(0.0, 1.0), train=(0.3, 0.8),
                  ood=[(0.1, 0.25), (0.85, 0.95)]),
            Param("friction", "Coulomb friction coefficient with the floor", valid=(0.0, 5.0), train=(0.3, 0.9),
                  ood=[(0.05, 0.2), (1.0, 1.5)]),
        ),
        family="projectile",
    )

    def build(self, p: dict) -> Scene:
        a = math.radians(p["angle_deg"])
        _, reach, rise = flight(p["speed"], p["angle_deg"], p["height"])
        hh = half_height(p["shape"], p["size"])
        top = p["height"] + rise + 2 * hh
        x0 = -0.5 * reach  # centre the flight on x = 0
        body = free_body("object0", p["shape"], p["size"], p["mass"], (x0, 0.0, p["height"] + hh), 0)
        # frame the flight and a run-out after landing (the object bounces on along +x)
        eye, target = side_camera(x0 - p["size"], x0 + 1.4 * reach + 2 * p["size"], 0.0, top, margin=1.1)
        velocity = [p["speed"] * math.cos(a), 0.0, p["speed"] * math.sin(a), 0.0, 0.0, 0.0]
        return Scene(
            mjcf=mjcf(body, camera_eye=eye, camera_target=target, restitution=p["restitution"],
                      friction=p["friction"], fovy_deg=FOVY_DEG),
            tracked=["object0"],
            qvel={"object0": velocity},
            sounds={"object0": (p["size"], p["restitution"])},
        )

    def caption(self, p: dict) -> str:
        return (
            f"A red {p['shape']} of {p['size'] * 100:.0f} cm and {p['mass']:.2f} kg is launched from "
            f"{p['height']:.2f} m above the floor at {p['speed']:.2f} m/s, {p['angle_deg']:.0f} degrees above "
            f"horizontal; it flies, lands and bounces. Restitution {p['restitution']:.2f}, "
            f"friction {p['friction']:.2f}."
        )


FAMILY = Projectile()
