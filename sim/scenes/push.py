"""push: an actuated pusher slides objects across the floor; its controls are the episode's actions.

The pusher is a flat paddle on two world-frame slide joints (x and y) with velocity actuators; it
floats 2 mm above the floor (no vertical joint), so it never drags on it. The scripted policy drives
it at `push_speed` along `push_angle_deg` (from +x, counter-clockwise) until the first object has
been pushed about `push_distance`, then stops it. The controls (commanded x and y velocity, m/s)
are the actions; zero controls hold the pusher still, and then nothing moves.

Closed form (quasi-static pushing with a paddle wider than the object, centred on it): the object
moves along the push direction and stops, give or take its slide after the pusher stops
(speed^2 / (2 mu g)), about `push_distance` from where it started.
"""

from __future__ import annotations

import math

import numpy as np

from sim.params import Param, ParamError, ParamSpace
from sim.scenes.base import Scene, SceneFamily, free_body, mjcf, rgba

PADDLE = (0.015, 0.1, 0.04)  # half sizes (m): thickness along the push, width, height
PUSHER_MASS = 3.0  # kg
KV = 600.0  # N/(m/s), velocity-actuator gain
GAP = 0.06  # m between paddle and object at t = 0
START_TIME = 0.1  # s before the push begins
RESTITUTION = 0.2
COLOURS = ("blue", "green", "yellow", "purple")


def direction(p: dict) -> np.ndarray:
    a = math.radians(p["push_angle_deg"])
    return np.array([math.cos(a), math.sin(a)])


def push_duration(p: dict) -> float:
    """How long (s) the pusher moves: closing the gap, then `push_distance`."""
    return (GAP + p["push_distance"]) / p["push_speed"]


class Push(SceneFamily):
    name = "push"
    seconds = 2.5
    params = ParamSpace(
        (
            Param("num_objects", "number of objects on the floor (the first is pushed)", "int", valid=(1, 4),
                  train=(1, 2), ood=(3, 4)),
            Param("size", "edge of the pushed cube, m", valid=(0.0, 0.19), train=(0.06, 0.1), ood=(0.11, 0.14),
                  exclusive_low=True),
            Param("mass", "mass of the pushed cube, kg", valid=(0.0, 100.0), train=(0.2, 1.0), ood=(1.2, 2.0),
                  exclusive_low=True),
            Param("friction", "Coulomb friction coefficient between objects and floor", valid=(0.0, 2.0),
                  train=(0.3, 0.6), ood=[(0.1, 0.25), (0.7, 0.9)]),
            Param("push_speed", "speed of the pusher, m/s", valid=(0.0, 2.0), train=(0.2, 0.5), ood=(0.6, 0.8),
                  exclusive_low=True),
            Param("push_angle_deg", "push direction, degrees counter-clockwise from +x", valid=(-180.0, 180.0),
                  train=(-30.0, 30.0), ood=[(-60.0, -35.0), (35.0, 60.0)]),
            Param("push_distance", "how far the pusher travels once in contact, m", valid=(0.0, 1.0),
                  train=(0.15, 0.3), ood=(0.35, 0.45)),
        ),
        family="push",
    )

    def extras(self, p: dict, rng: np.random.Generator) -> dict:
        """The other objects: shape, size, mass and place, somewhere beside the push path, apart
        from each other and from the pushed box (their bounding spheres 1 cm apart; places are
        redrawn until they are)."""
        u = direction(p)
        side = np.array([-u[1], u[0]])
        placed = [(np.zeros(2), p["size"] * math.sqrt(3) / 2)]  # (xy, bounding radius): the pushed box at the origin
        others = []
        for i in range(1, p["num_objects"]):
            shape, size, mass = str(rng.choice(["box", "cylinder", "sphere"])), float(rng.uniform(0.06, 0.1)), float(rng.uniform(0.2, 1.0))
            radius = size * math.sqrt(3) / 2
            for _ in range(100):
                along = float(rng.uniform(-0.1, 0.5))
                across = float(rng.choice([-1, 1]) * rng.uniform(0.18, 0.3))
                xy = along * u + across * side
                if all(np.linalg.norm(xy - c) >= r + radius + 0.01 for c, r in placed):
                    break
            else:
                raise ParamError(f"push: no room for object {i} beside the push path (size={p['size']}); allowed: a smaller size or fewer objects")
            placed.append((xy, radius))
            others.append({"shape": shape, "size": size, "mass": mass, "x": float(xy[0]), "y": float(xy[1])})
        return {"others": others}

    def build(self, p: dict) -> Scene:
        u = direction(p)
        start = -(p["size"] / 2 + GAP + PADDLE[0]) * u
        yaw = math.atan2(u[1], u[0])
        pusher = (
            f'<body name="pusher" pos="{start[0]:.6g} {start[1]:.6g} {PADDLE[2] + 0.002:.6g}">'
            f'<joint name="pusher_x" type="slide" axis="1 0 0"/><joint name="pusher_y" type="slide" axis="0 1 0"/>'
            f'<geom name="pusher" type="box" size="{PADDLE[0]} {PADDLE[1]} {PADDLE[2]}" '
            f'euler="0 0 {yaw:.6g}" mass="{PUSHER_MASS}" rgba="{rgba(0)}"/></body>'
        )
        # the cube faces the paddle, so the paddle meets a face, not a corner
        facing = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
        objects = [free_body("object0", "box", p["size"], p["mass"], (0.0, 0.0, p["size"] / 2), 1, quat=facing)]
        for i, o in enumerate(p["others"], start=1):
            objects.append(free_body(f"object{i}", o["shape"], o["size"], o["mass"], (o["x"], o["y"], o["size"] / 2), i + 1))
        extra = (
            "<actuator>"
            + "".join(f'<velocity name="{a}" joint="pusher_{a}" kv="{KV}" ctrlrange="-2 2"/>' for a in ("x", "y"))
            + "</actuator>"
        )
        centre = (start + p["push_distance"] * u) / 2
        eye = (centre[0], centre[1] - 0.7, 0.8)
        target = (centre[0], centre[1], 0.0)
        velocity = p["push_speed"] * u
        stop = START_TIME + push_duration(p)

        def policy(t: float) -> np.ndarray:
            return velocity.copy() if START_TIME <= t < stop else np.zeros(2)

        names = [f"object{i}" for i in range(p["num_objects"])]
        return Scene(
            mjcf=mjcf(pusher + "".join(objects), camera_eye=eye, camera_target=target, restitution=RESTITUTION,
                      friction=p["friction"], extra=extra),
            tracked=["pusher", *names],
            policy=policy,
            sounds={n: (p["size"], RESTITUTION) for n in names},
        )

    def caption(self, p: dict) -> str:
        others = "".join(
            f"; a {COLOURS[i % len(COLOURS)]} {o['shape']} of {o['mass']:.2f} kg stands nearby"
            for i, o in enumerate(p["others"], start=1)
        )
        return (
            f"A red paddle pushes a blue {p['size'] * 100:.0f} cm cube of {p['mass']:.2f} kg at "
            f"{p['push_speed']:.2f} m/s, {p['push_angle_deg']:.0f} degrees from the x axis, for about "
            f"{p['push_distance']:.2f} m on a floor with friction {p['friction']:.2f}{others}."
        )


FAMILY = Push()
