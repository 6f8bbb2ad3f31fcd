"""pendulum: a simple (links=1) or double (links=2) pendulum swings from a fixed pivot.

Each link is a massless rod (pivot or joint to bob centre, `length` m) ending in a sphere bob of
`mass` kg; hinges about y, so the motion is in the x-z plane, seen from -y. Released at rest with
the first link `angle_deg` from vertical (positive: bob towards -x) and, for links=2, the second
link `angle2_deg` from vertical (absolute). `damping` is the hinge damping expressed as the
amplitude decay rate (1/s) of a small-swing simple pendulum: hinge damping = 2 * damping * m L^2.

Closed forms: small-angle period 2 pi sqrt(L / g) (for the sphere bob, the physical pendulum
2 pi sqrt((L^2 + 2 r^2 / 5) / (g L))); with damping 0 the amplitude is kept and, for the double
pendulum, the total energy is conserved (the scene uses MuJoCo's RK4 integrator: no contacts). The tracked bodies are the bobs (their centres of mass
are the bob centres).
"""

from __future__ import annotations

import math

from sim.params import Param, ParamError, ParamSpace
from sim.scenes.base import Scene, SceneFamily, mjcf, rgba

FOVY_DEG = 45.0
CLEARANCE = 0.3  # m between the lowest reach of the bobs and the floor


class Pendulum(SceneFamily):
    name = "pendulum"
    seconds = 3.0
    params = ParamSpace(
        (
            Param("links", "1 simple pendulum, 2 double pendulum", "int", valid=(1, 2), train=(1, 2), ood=(1, 2)),
            Param("length", "length of each link in m, pivot (or joint) to bob centre", valid=(0.0, 3.0),
                  train=(0.3, 0.8), ood=(0.9, 1.2), exclusive_low=True),
            Param("angle_deg", "release angle of the first link from vertical in degrees", valid=(-179.0, 179.0),
                  train=(10.0, 60.0), ood=(65.0, 100.0)),
            Param("angle2_deg", "release angle of the second link from vertical in degrees (links=2 only)",
                  valid=(-179.0, 179.0), train=(-40.0, 40.0), ood=[(-90.0, -50.0), (50.0, 90.0)]),
            Param("mass", "mass of each bob in kg", valid=(0.0, 1000.0), train=(0.2, 2.0), ood=(2.5, 5.0),
                  exclusive_low=True),
            Param("size", "bob diameter in m", valid=(0.0, 1.0), train=(0.08, 0.12), ood=(0.13, 0.16),
                  exclusive_low=True),
            Param("damping", "amplitude decay rate of small swings in 1/s (0: no friction at the hinges)",
                  valid=(0.0, 10.0), train=(0.0, 0.15), ood=(0.2, 0.4)),
        ),
        family="pendulum",
    )

    def check(self, p: dict) -> None:
        if p["size"] / 2 >= p["length"]:
            raise ParamError(
                f"parameter 'size': got {p['size']!r}; allowed: a bob diameter below twice the link length "
                f"({2 * p['length']:g} m), or the bob would swallow the pivot"
            )

    def build(self, p: dict) -> Scene:
        L, r, n = p["length"], p["size"] / 2, p["links"]
        pivot_z = n * L + r + CLEARANCE
        hinge_damping = 2 * p["damping"] * p["mass"] * L * L
        body = ""
        for i in reversed(range(n)):  # innermost last, so each link wraps the next
            pos = f"0 0 {pivot_z:.6g}" if i == 0 else f"0 0 {-L:.6g}"
            body = (
                f'<body name="bob{i}" pos="{pos}"><joint name="hinge{i}" type="hinge" axis="0 1 0" '
                f'damping="{hinge_damping:.6g}"/>'
                f'<geom name="rod{i}" type="capsule" fromto="0 0 0 0 0 {-L + r:.6g}" size="{max(0.2 * r, 0.006):.6g}" '
                f'mass="0" contype="0" conaffinity="0" rgba="0.25 0.25 0.25 1"/>'
                f'<geom name="bob{i}" type="sphere" pos="0 0 {-L:.6g}" size="{r:.6g}" mass="{p["mass"]:.6g}" '
                f'contype="0" conaffinity="0" rgba="{rgba(i)}"/>{body}</body>'
            )
        body = (
            f'<geom name="pivot" type="sphere" size="0.02" pos="0 0 {pivot_z:.6g}" rgba="0.2 0.2 0.2 1" '
            f'contype="0" conaffinity="0"/>\n' + body
        )
        reach = n * L + r
        half = 0.85 * max(reach, 0.4)  # bobs mostly swing below the pivot
        distance = half / math.tan(math.radians(FOVY_DEG) / 2)
        a1 = math.radians(p["angle_deg"])
        qpos = {"hinge0": [a1]}
        if n == 2:
            qpos["hinge1"] = [math.radians(p["angle2_deg"]) - a1]
        document = mjcf(body, camera_eye=(0.0, -distance, pivot_z - 0.4 * reach),
                      camera_target=(0.0, 0.0, pivot_z - 0.45 * reach),
                      fovy_deg=FOVY_DEG)
        # no contacts here, so the 4th-order integrator is cheap and keeps the energy (semi-implicit
        # Euler at 1 ms loses ~1.5% of a double pendulum's energy in 3 s)
        document = document.replace('integrator="implicitfast"', 'integrator="RK4"')
        return Scene(
            mjcf=document,
            tracked=[f"bob{i}" for i in range(n)],
            qpos=qpos,
        )

    def caption(self, p: dict) -> str:
        what = "A simple pendulum" if p["links"] == 1 else "A double pendulum"
        angles = f"{p['angle_deg']:.0f} degrees from vertical"
        if p["links"] == 2:
            angles = f"{p['angle_deg']:.0f} and {p['angle2_deg']:.0f} degrees from vertical"
        return (
            f"{what} with {p['length']:.2f} m links and {p['mass']:.2f} kg bobs of {p['size'] * 100:.0f} cm is "
            f"released at rest at {angles}. Hinge damping: amplitude decay rate {p['damping']:.2f} per second."
        )


FAMILY = Pendulum()
