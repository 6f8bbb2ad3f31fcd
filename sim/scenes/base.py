"""What a scene family is, and the MJCF pieces every family shares (floor, light, camera, colours).

A family turns named physical parameters into a `Scene`: a complete MJCF document plus the initial
state and, for actuated families, a scripted policy. `SceneFamily.realize` samples what the user did
not give (declared parameters first, then family-specific extras such as the other objects'
positions), so `Episode.params` holds every realised value and regenerates the episode exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from sim import contact
from sim.params import ParamSpace

# Distinct saturated colours, one per tracked body (index order); readable at 64x64 and usable by a
# colour-centroid parser. RGBA.
PALETTE = [
    (0.90, 0.15, 0.15, 1),
    (0.15, 0.45, 0.95, 1),
    (0.15, 0.80, 0.25, 1),
    (0.95, 0.80, 0.10, 1),
    (0.80, 0.20, 0.85, 1),
    (0.10, 0.85, 0.85, 1),
    (0.95, 0.50, 0.10, 1),
    (0.55, 0.35, 0.20, 1),
]


def rgba(i: int) -> str:
    return " ".join(f"{c:g}" for c in PALETTE[i % len(PALETTE)])


@dataclass
class Scene:
    """A built scene, ready to compile and simulate.

    tracked: the moving bodies whose states are recorded, primary first (external-force actions
      act on tracked[0]).
    qpos, qvel: joint name -> initial values applied after reset (free joint: qpos xyz+quat wxyz,
      qvel linear xyz + angular xyz in the world frame).
    policy: for actuated scenes, time (s) -> actuator controls (model.nu,), recorded as actions.
    sounds: body name -> (characteristic size m, restitution) used to synthesise impact audio.
    """

    mjcf: str
    tracked: list[str]
    qpos: dict[str, list[float]] = field(default_factory=dict)
    qvel: dict[str, list[float]] = field(default_factory=dict)
    policy: Callable[[float], np.ndarray] | None = None
    sounds: dict[str, tuple[float, float]] = field(default_factory=dict)


class SceneFamily:
    """Base class of the ten families. Subclasses set `name`, `params` and implement `build` and
    `caption`; they override `extras` when they randomise more than their declared parameters."""

    name: str = ""
    params: ParamSpace
    seconds: float = 2.0  # a sensible default episode length for this family

    def realize(self, given: dict | None, rng: np.random.Generator, split: str = "train") -> dict:
        """Every realised parameter: the given ones (validated), the rest sampled for `split`."""
        values = self.params.resolve(given, rng, split)
        self.check(values)
        values.update(self.extras(values, rng))
        return values

    def check(self, values: dict) -> None:
        """Cross-parameter validation (raise sim.ParamError); single values are checked by ParamSpace."""

    def extras(self, values: dict, rng: np.random.Generator) -> dict[str, Any]:
        """Random choices beyond the declared parameters (positions of other objects, colours...)."""
        return {}

    def build(self, p: dict) -> Scene:
        raise NotImplementedError

    def caption(self, p: dict) -> str:
        raise NotImplementedError


def look_at(eye: tuple[float, float, float], target: tuple[float, float, float]) -> str:
    """MJCF `xyaxes` for a camera at `eye` looking at `target`, z up."""
    eye_, target_ = np.asarray(eye, float), np.asarray(target, float)
    forward = target_ - eye_
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return " ".join(f"{v:.6g}" for v in (*right, *up))


def mjcf(
    body: str,
    *,
    camera_eye: tuple[float, float, float],
    camera_target: tuple[float, float, float],
    restitution: float = 0.5,
    friction: float = 0.5,
    fovy_deg: float = 45.0,
    floor: bool = True,
    extra_assets: str = "",
    extra: str = "",
    timestep: float = contact.TIMESTEP,
) -> str:
    """A complete MJCF document: simulator options, calibrated contact defaults, lights, a
    checkered floor, the `main` camera, and the family's bodies (`body`, inside worldbody).

    Every geom defaults to the calibrated contact for `restitution` and Coulomb `friction`, so a
    scene with one restitution and one friction needs nothing more.
    """
    floor_geom = (
        # finite for rendering (an infinite plane is drawn as a dense grid, most of a CPU frame's
        # cost); planes collide as infinite half-spaces either way
        '<geom name="floor" type="plane" size="100 100 5" material="grid" condim="3"/>' if floor else ""
    )
    return f"""<mujoco model="physfusion">
  <!-- usethread: compiling these small models on threads costs more than it saves (1.3 -> 1.1 ms) -->
  <compiler angle="radian" autolimits="true" usethread="false"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="elliptic" impratio="{contact.IMPRATIO}"
          gravity="0 0 -9.81"/>
  <visual>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0.05 0.05 0.05"/>
    <quality shadowsize="1024"/>
  </visual>
  <default>
    <geom solref="{contact.solref(restitution)}" solimp="{contact.SOLIMP}" friction="{friction:.6g} 0.005 0.0001"
          condim="3"/>
  </default>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.82 0.82 0.80" rgb2="0.62 0.62 0.60"
             width="64" height="64"/>
    <material name="grid" texture="grid" texrepeat="2 2" texuniform="true" reflectance="0"/>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.55 0.70 0.90" rgb2="0.95 0.95 0.97"
             width="32" height="32"/>
    {extra_assets}
  </asset>
  <worldbody>
    <light name="sun" pos="1 -1 4" dir="-0.25 0.25 -1" directional="true" diffuse="0.6 0.6 0.6"
           castshadow="true"/>
    <camera name="main" pos="{' '.join(f'{v:.6g}' for v in camera_eye)}"
            xyaxes="{look_at(camera_eye, camera_target)}" fovy="{fovy_deg:g}"/>
    {floor_geom}
    {body}
  </worldbody>
  {extra}
</mujoco>
"""


def free_body(name: str, shape: str, size: float, mass: float, pos, color: int, quat=(1, 0, 0, 0), geom_extra="") -> str:
    """A free-floating body of one geom. `size` is the object's full extent (m): sphere diameter,
    cube edge, cylinder diameter (= height), capsule diameter (total length 2*size)."""
    return (
        f'<body name="{name}" pos="{pos[0]:.6g} {pos[1]:.6g} {pos[2]:.6g}" '
        f'quat="{" ".join(f"{q:.6g}" for q in quat)}"><freejoint name="{name}"/>'
        f'<geom name="{name}" {geom_size(shape, size)} mass="{mass:.6g}" rgba="{rgba(color)}" {geom_extra}/></body>'
    )


def geom_size(shape: str, size: float) -> str:
    r = size / 2
    return {
        "sphere": f'type="sphere" size="{r:.6g}"',
        "box": f'type="box" size="{r:.6g} {r:.6g} {r:.6g}"',
        "cylinder": f'type="cylinder" size="{r:.6g} {r:.6g}"',
        "capsule": f'type="capsule" size="{r:.6g} {r:.6g}"',
    }[shape]


def half_height(shape: str, size: float) -> float:
    """Height of the centre above the lowest point for a shape in its default (upright) pose."""
    return size if shape == "capsule" else size / 2
