"""pour: a cup of small beads (a granular "liquid") tilts and pours them into a container.

The cup (open square box) hangs on a hinge along y at its +x rim (the lip), `LIP_HEIGHT` above the
floor; a position actuator tilts it about the lip toward +x, so the beads pour over the lip into an
open container standing on the floor just beyond it. The commanded tilt angle (rad) ramps from 0 to
`tilt_deg` at `tilt_speed_deg` per second after `HOLD_TIME`, and is the episode's action.

No closed form; the checks are conservation: every bead stays in the scene (none vanishes, passes
through a wall or goes non-finite) and, in a standard pour, most end in the container.

Cost: the slowest family (bead-bead contacts); with TIMESTEP = 2 ms and 25-50 beads a rendered
64x64 frame costs ~4.5x a drop frame (physics alone ~18x).
"""

from __future__ import annotations

import math

import numpy as np

from sim.params import Param, ParamError, ParamSpace
from sim.scenes.base import Scene, SceneFamily, mjcf, rgba

TIMESTEP = 0.002  # s; beads are slow and soft, so pour affords twice the default step (cost)
CUP_HALF = 0.06  # m, half the cup's inner width (square)
CUP_DEPTH = 0.1  # m, inner depth of the cup
WALL = 0.008  # m, wall thickness (cup and container)
LIP_HEIGHT = 0.38  # m, height of the hinge (the cup's lip) above the floor
CONTAINER = (0.02, 0.34, 0.16, 0.14)  # x from, x to, half width in y, wall height (m)
HOLD_TIME = 0.2  # s before the tilt starts
KP = 30.0  # N*m/rad, position-actuator stiffness of the tilt
RESTITUTION = 0.15
CUP_MASS = 0.3  # kg


def per_layer(size: float) -> int:
    """Beads per layer when they are laid out on a grid in the cup."""
    n = int(2 * CUP_HALF / (1.08 * size))
    return n * n


def in_container(positions: np.ndarray) -> np.ndarray:
    """(..., 3) bead positions -> bool (...,): inside the container's walls and below its rim."""
    x0, x1, hw, wall_h = CONTAINER
    x, y, z = positions[..., 0], positions[..., 1], positions[..., 2]
    return (x > x0) & (x < x1) & (np.abs(y) < hw) & (z < wall_h + 0.01) & (z > -0.01)


def tilt_target(t: float, p: dict) -> float:
    """Commanded tilt angle (rad) at time t."""
    ramp = max(0.0, t - HOLD_TIME) * p["tilt_speed_deg"]
    return math.radians(min(p["tilt_deg"], ramp))


class Pour(SceneFamily):
    name = "pour"
    seconds = 3.0
    params = ParamSpace(
        (
            Param("num_particles", "number of beads in the cup", "int", valid=(1, 120), train=(25, 50),
                  ood=(51, 70)),
            Param("particle_size", "bead diameter, m", valid=(0.0, 0.03), train=(0.014, 0.018), ood=(0.019, 0.021),
                  exclusive_low=True),
            Param("particle_mass", "mass of each bead, kg", valid=(0.0, 1.0), train=(0.002, 0.006),
                  ood=(0.007, 0.01), exclusive_low=True),
            Param("friction", "Coulomb friction coefficient of the beads", valid=(0.0, 5.0), train=(0.1, 0.3),
                  ood=[(0.02, 0.08), (0.35, 0.5)]),
            Param("tilt_deg", "final tilt of the cup from upright, degrees", valid=(0.0, 180.0), train=(110, 135),
                  ood=(140, 160)),
            Param("tilt_speed_deg", "how fast the cup tilts, degrees per second", valid=(0.0, 1000.0),
                  train=(60, 120), ood=(130, 180), exclusive_low=True),
        ),
        family="pour",
    )

    def check(self, p: dict) -> None:
        layers = math.ceil(p["num_particles"] / per_layer(p["particle_size"]))
        if layers * 1.08 * p["particle_size"] > CUP_DEPTH:
            most = per_layer(p["particle_size"]) * int(CUP_DEPTH / (1.08 * p["particle_size"]))
            raise ParamError(
                f"parameter 'num_particles': got {p['num_particles']!r}; allowed: at most {most} beads of "
                f"{p['particle_size']:g} m in the cup"
            )

    def bead_positions(self, p: dict) -> list[tuple[float, float, float]]:
        """Initial bead centres (world), on a grid filling the cup from the bottom."""
        d = p["particle_size"]
        n = int(2 * CUP_HALF / (1.08 * d))
        pitch = 2 * CUP_HALF / n
        bottom = LIP_HEIGHT - CUP_DEPTH
        out = []
        for k in range(p["num_particles"]):
            layer, cell = divmod(k, n * n)
            i, j = divmod(cell, n)
            x = -2 * CUP_HALF + pitch * (i + 0.5)
            y = -CUP_HALF + pitch * (j + 0.5)
            out.append((x, y, bottom + d / 2 + layer * 1.08 * d + 0.001))
        return out

    def build(self, p: dict) -> Scene:
        a, depth, w = CUP_HALF, CUP_DEPTH, WALL
        # cup frame: origin on the lip (the hinge), interior x in [-2a, 0], z in [-depth, 0]
        walls = [
            ((-a, 0, -depth - w / 2), (a + w, a + w, w / 2)),  # bottom
            (( w / 2, 0, -depth / 2), (w / 2, a + w, depth / 2)),  # +x wall (the lip)
            ((-2 * a - w / 2, 0, -depth / 2), (w / 2, a + w, depth / 2)),
            ((-a, a + w / 2, -depth / 2), (a, w / 2, depth / 2)),
            ((-a, -a - w / 2, -depth / 2), (a, w / 2, depth / 2)),
        ]
        wall_mass = CUP_MASS / len(walls)
        cup = (
            f'<body name="cup" pos="0 0 {LIP_HEIGHT:.6g}"><joint name="tilt" type="hinge" axis="0 1 0" '
            f'armature="0.001" damping="0.05"/>'
            + "".join(
                f'<geom type="box" pos="{x:.6g} {y:.6g} {z:.6g}" size="{sx:.6g} {sy:.6g} {sz:.6g}" '
                f'mass="{wall_mass:.6g}" rgba="{rgba(1)}" friction="0.3"/>'
                for (x, y, z), (sx, sy, sz) in walls
            )
            + "</body>"
        )
        # a post holding the hinge, behind the cup (visual only)
        post = (
            f'<geom type="box" size="0.01 0.01 {LIP_HEIGHT / 2:.6g}" pos="0 {a + 3 * w:.6g} {LIP_HEIGHT / 2:.6g}" '
            f'rgba="0.35 0.35 0.38 1" contype="0" conaffinity="0"/>'
        )
        x0, x1, hw, wall_h = CONTAINER
        xc = (x0 + x1) / 2
        container = "".join(
            f'<geom type="box" pos="{x:.6g} {y:.6g} {wall_h / 2:.6g}" size="{sx:.6g} {sy:.6g} {wall_h / 2:.6g}" '
            f'rgba="0.92 0.92 0.95 {0.4 if y < 0 else 1}"/>'  # the front wall is see-through
            for (x, y), (sx, sy) in (
                ((x0 - w / 2, 0), (w / 2, hw + w)),
                ((x1 + w / 2, 0), (w / 2, hw + w)),
                ((xc, hw + w / 2), ((x1 - x0) / 2, w / 2)),
                ((xc, -hw - w / 2), ((x1 - x0) / 2, w / 2)),
            )
        )
        r = p["particle_size"] / 2
        beads = "".join(
            f'<body name="bead{k}" pos="{x:.6g} {y:.6g} {z:.6g}"><freejoint name="bead{k}"/>'
            f'<geom type="sphere" size="{r:.6g}" mass="{p["particle_mass"]:.6g}" rgba="{rgba(0 if k % 3 else 3)}" '
            f'friction="{p["friction"]:.6g} 0.005 0.0001"/></body>'
            for k, (x, y, z) in enumerate(self.bead_positions(p))
        )
        extra = f'<actuator><position name="tilt" joint="tilt" kp="{KP}" dampratio="1" ctrlrange="0 3.1416"/></actuator>'
        eye = (0.08, -0.8, 0.78)  # from above the front, to see into the container
        target = (0.1, 0.0, 0.17)

        def policy(t: float) -> np.ndarray:
            return np.array([tilt_target(t, p)])

        return Scene(
            mjcf=mjcf(post + cup + container + beads, camera_eye=eye, camera_target=target,
                      restitution=RESTITUTION, friction=0.3, timestep=TIMESTEP, extra=extra),
            tracked=["cup"] + [f"bead{k}" for k in range(p["num_particles"])],
            policy=policy,
            sounds={f"bead{k}": (p["particle_size"], RESTITUTION) for k in range(p["num_particles"])},
        )

    def caption(self, p: dict) -> str:
        return (
            f"A cup of {p['num_particles']} beads of {p['particle_size'] * 1000:.0f} mm and "
            f"{p['particle_mass'] * 1000:.1f} g each, friction {p['friction']:.2f}, tilts to "
            f"{p['tilt_deg']:.0f} degrees at {p['tilt_speed_deg']:.0f} degrees per second and pours them into "
            f"a container."
        )


FAMILY = Pour()
