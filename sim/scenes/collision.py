"""collision: two or more balls slide on a smooth floor and collide, head-on or glancing, elastic to
inelastic.

Why `velocities` are the speeds at impact: the balls glide on a frictionless floor (all contacts in
this scene are frictionless, like air-hockey pucks or smooth spheres), and nothing else acts on them
horizontally, so a ball keeps its initial velocity exactly until it touches another ball. Balls 0
and 1 are placed so that they touch at t = IMPACT_TIME, near the origin: ball 0 comes from -x,
ball 1 from +x, offset sideways by `impact_parameter` * (sum of radii) (0: head-on, towards 1:
grazing). Further balls (num_balls > 2) are placed at random spots with their own velocities and
may be struck afterwards.

Closed form (head-on, frictionless): momentum m1 v1 + m2 v2 is conserved and the relative velocity
reverses scaled by the restitution: v2' - v1' = -e (v2 - v1). Glancing: the same along the line
of centres at contact; the tangential components are unchanged.

When velocities are sampled (not given) they are drawn as speeds and given directions so that the
balls approach: ball 0 moves +x, ball 1 -x, further balls alternate.
"""

from __future__ import annotations

import math

import numpy as np

from sim import contact
from sim.params import Param, ParamError, ParamSpace
from sim.scenes.base import Scene, SceneFamily, free_body, mjcf

COLOURS = ("red", "blue", "green", "yellow", "purple", "cyan")
# s, when balls 0 and 1 touch: half a simulator step before a step boundary, so the contact begins
# mid-step, where the realised restitution matches the calibration within 0.01 (sim/contact.py)
IMPACT_TIME = 0.4 - contact.TIMESTEP / 2
REST_PENETRATION = 1e-6  # m, a ball's static penetration into the floor (no bounce at the start)
FOVY_DEG = 45.0


class Collision(SceneFamily):
    name = "collision"
    seconds = 2.0
    params = ParamSpace(
        (
            Param("num_balls", "number of balls", "int", valid=(2, 6), train=(2, 3), ood=(4, 5)),
            Param("size", "diameter of every ball in m", valid=(0.0, 0.5), train=(0.14, 0.22), ood=(0.24, 0.3),
                  exclusive_low=True),
            Param("masses", "mass of each ball in kg", "floats", valid=(0.0, 1000.0), train=(0.2, 2.0),
                  ood=(2.5, 5.0), length_from="num_balls", exclusive_low=True),
            Param("velocities", "velocity of each ball along x in m/s, kept until it reaches the impact "
                  "(frictionless floor); ball 0 must move faster along +x than ball 1", "floats",
                  valid=(-10.0, 10.0), train=(0.5, 1.5), ood=(1.7, 2.5), length_from="num_balls"),
            Param("restitution", "coefficient of restitution between balls and with the floor", valid=(0.0, 1.0),
                  train=(0.3, 0.8), ood=[(0.1, 0.25), (0.85, 1.0)]),
            Param("impact_parameter", "sideways offset of balls 0 and 1 as a fraction of the sum of their radii "
                  "(0 head-on, 1 grazing)", valid=(0.0, 0.95), train=(0.0, 0.5), ood=(0.6, 0.9)),
        ),
        family="collision",
    )

    def realize(self, given: dict | None, rng: np.random.Generator, split: str = "train") -> dict:
        values = self.params.resolve(given, rng, split)
        if "velocities" not in (given or {}):  # sampled as speeds: give them approaching directions
            values["velocities"] = [v if i % 2 == 0 else -v for i, v in enumerate(values["velocities"])]
        self.check(values)
        values.update(self.extras(values, rng))
        self.check(values)
        return values

    def check(self, p: dict) -> None:
        v = p["velocities"]
        if v[0] <= v[1]:
            raise ParamError(
                f"parameter 'velocities': got {v}; allowed: ball 0 (from -x) must move faster along +x than "
                f"ball 1 (from +x), i.e. velocities[0] > velocities[1], or they never meet"
            )
        if "others" in p:
            start = self.start_positions(p)
            d = np.linalg.norm(start[:, None] - start[None], axis=-1) + np.eye(len(start)) * 1e9
            i, j = np.unravel_index(np.argmin(d), d.shape)
            if d[i, j] < p["size"] * 1.05:
                raise ParamError(
                    f"parameter 'velocities': got {v}; balls {i} and {j} would overlap at the start "
                    f"(allowed: velocities that keep every ball's start position at least a diameter apart)"
                )

    def impact_positions(self, p: dict) -> np.ndarray:
        """(num_balls, 2) xy of every ball at t = IMPACT_TIME."""
        b = p["impact_parameter"] * p["size"]
        dx = math.sqrt(p["size"] ** 2 - b * b)
        xy = [(-dx / 2, -b / 2), (dx / 2, b / 2)] + [tuple(o) for o in p.get("others", [])]
        return np.array(xy, float)

    def start_positions(self, p: dict) -> np.ndarray:
        xy = self.impact_positions(p)
        xy[:, 0] -= np.asarray(p["velocities"])[: len(xy)] * IMPACT_TIME
        return xy

    def extras(self, p: dict, rng: np.random.Generator) -> dict:
        """Where balls 2.. are at IMPACT_TIME: random spots clear of the first impact and of the other
        balls' start positions (rejection sampling, always the same number of draws)."""
        others: list[list[float]] = []
        spread_x, spread_y = 0.7 + 3 * p["size"], 0.35 + 2 * p["size"]
        for _ in range(2, p["num_balls"]):
            candidates = np.column_stack([rng.uniform(-spread_x, spread_x, 64), rng.uniform(-spread_y, spread_y, 64)])
            scores = []
            for xy in candidates:
                trial = {**p, "others": others + [[float(xy[0]), float(xy[1])]]}
                k = len(others) + 2
                placed, start = self.impact_positions(trial), self.start_positions(trial)
                d_start = np.linalg.norm(start[k] - start[:k], axis=-1).min()
                d_impact = np.linalg.norm(placed[k] - placed[:k], axis=-1).min()
                scores.append(min(d_start / 1.5, d_impact / 2.5) / p["size"])
                if scores[-1] > 1:
                    break
            xy = candidates[int(np.argmax(scores))]
            others.append([float(xy[0]), float(xy[1])])
        return {"others": others}

    def build(self, p: dict) -> Scene:
        r = p["size"] / 2
        start = self.start_positions(p)
        bodies = "\n".join(
            free_body(f"ball{i}", "sphere", p["size"], m, (x, y, r - REST_PENETRATION), i, geom_extra='condim="1"')
            for i, ((x, y), m) in enumerate(zip(start, p["masses"]))
        )
        # frame the start positions and the impact, seen from 55 degrees above the floor
        extent = max(np.abs(np.concatenate([start, self.impact_positions(p)])).max() + p["size"], 0.5)
        distance = 1.1 * extent / math.tan(math.radians(FOVY_DEG) / 2)
        return Scene(
            mjcf=mjcf(bodies, camera_eye=(0.0, -0.57 * distance, 0.82 * distance), camera_target=(0.0, 0.0, 0.0),
                      restitution=p["restitution"], friction=0.0, fovy_deg=FOVY_DEG),
            tracked=[f"ball{i}" for i in range(p["num_balls"])],
            qvel={f"ball{i}": [v, 0.0, 0.0, 0.0, 0.0, 0.0] for i, v in enumerate(p["velocities"])},
            sounds={f"ball{i}": (p["size"], p["restitution"]) for i in range(p["num_balls"])},
        )

    def caption(self, p: dict) -> str:
        balls = ", ".join(
            f"{COLOURS[i]} {m:.2f} kg at {v:+.2f} m/s" for i, (m, v) in enumerate(zip(p["masses"], p["velocities"]))
        )
        kind = "head-on" if p["impact_parameter"] < 0.05 else f"glancing (impact parameter {p['impact_parameter']:.2f})"
        return (
            f"Balls ({p['num_balls']}) of {p['size'] * 100:.0f} cm glide without friction along x and collide, "
            f"red and blue {kind}: {balls}. Restitution {p['restitution']:.2f}."
        )


FAMILY = Collision()
