"""drop: one or more objects fall from rest onto the floor and bounce.

Closed form: free fall z(t) = h - g t^2 / 2 until impact; each bounce's apex is restitution^2
times the previous one (for a sphere)."""

from __future__ import annotations

import numpy as np

from sim.params import Param, ParamSpace
from sim.scenes.base import Scene, SceneFamily, free_body, half_height, mjcf

SHAPES = ("sphere", "box", "cylinder", "capsule")
COLOURS = ("red", "blue", "green", "yellow", "purple")
SPACING = 0.45  # m between object centres along x


class Drop(SceneFamily):
    name = "drop"
    seconds = 2.0
    params = ParamSpace(
        (
            Param("num_objects", "number of falling objects", "int", valid=(1, 5), train=(1, 3), ood=(4, 5)),
            Param("shape", "shape of the first object", "choice", choices=SHAPES),
            Param("size", "full extent of the first object in m (sphere diameter, cube edge)", valid=(0.0, 1.0),
                  train=(0.08, 0.2), ood=(0.22, 0.3), exclusive_low=True),
            Param("mass", "mass of the first object in kg", valid=(0.0, 1000.0), train=(0.2, 2.0), ood=(2.5, 5.0),
                  exclusive_low=True),
            Param("height", "lowest point of the first object above the floor at release, m", valid=(0.0, 6.0),
                  train=(0.3, 1.5), ood=(1.6, 2.2)),
            Param("restitution", "coefficient of restitution (bounce apex / drop height ~ restitution^2)",
                  valid=(0.0, 1.0), train=(0.3, 0.8), ood=[(0.1, 0.25), (0.85, 0.95)]),
            Param("friction", "Coulomb friction coefficient", valid=(0.0, 5.0), train=(0.3, 0.9),
                  ood=[(0.05, 0.2), (1.0, 1.5)]),
        ),
        family="drop",
    )

    def extras(self, p: dict, rng: np.random.Generator) -> dict:
        others = []
        for i in range(1, p["num_objects"]):
            others.append(
                {
                    "shape": str(SHAPES[rng.integers(len(SHAPES))]),
                    "size": float(rng.uniform(0.08, 0.2)),
                    "mass": float(rng.uniform(0.2, 2.0)),
                    "height": float(rng.uniform(0.3, 1.5)),
                    "y": float(rng.uniform(-0.3, 0.3)),
                }
            )
        return {"others": others}

    def objects(self, p: dict) -> list[dict]:
        first = {k: p[k] for k in ("shape", "size", "mass", "height")} | {"y": 0.0}
        objects = [first, *p["others"]]
        offset = (len(objects) - 1) * SPACING / 2
        return [o | {"x": i * SPACING - offset} for i, o in enumerate(objects)]

    def build(self, p: dict) -> Scene:
        objects = self.objects(p)
        bodies = "\n".join(
            free_body(f"object{i}", o["shape"], o["size"], o["mass"],
                      (o["x"], o["y"], o["height"] + half_height(o["shape"], o["size"])), i)
            for i, o in enumerate(objects)
        )
        width = SPACING * (len(objects) - 1)
        distance = 2.3 + 0.8 * max(0.0, width - 0.9)  # m; frames 0..1.7 m of height at fovy 45
        return Scene(
            mjcf=mjcf(bodies, camera_eye=(0, -distance, 0.95), camera_target=(0, 0, 0.8),
                      restitution=p["restitution"], friction=p["friction"]),
            tracked=[f"object{i}" for i in range(len(objects))],
            sounds={f"object{i}": (o["size"], p["restitution"]) for i, o in enumerate(objects)},
        )

    def caption(self, p: dict) -> str:
        objects = self.objects(p)
        parts = [
            f"a {COLOURS[i]} {o['shape']} of {o['size'] * 100:.0f} cm and {o['mass']:.2f} kg from {o['height']:.2f} m"
            for i, o in enumerate(objects)
        ]
        return (
            f"Dropped from rest: {'; '.join(parts)}. Restitution {p['restitution']:.2f}, "
            f"friction {p['friction']:.2f}."
        )


FAMILY = Drop()
