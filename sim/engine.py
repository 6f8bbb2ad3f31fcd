"""`Simulation`: one compiled scene stepped frame by frame, recording states, contacts and pixels.

Shared by `simulate` (whole episodes) and the gymnasium environments (one frame per `step`).
"""

from __future__ import annotations

import hashlib

import numpy as np

from sim import _gl  # noqa: F401
import mujoco

from sim.scenes.base import Scene
from sim.tracking import make_tracker

MAX_PENETRATION = 0.05  # m; deeper contacts mean the solver has failed
MAX_SPEED = 100.0  # m/s; faster bodies mean energy has blown up
MAX_SPIN = 2000.0  # rad/s; a small bead rolling at 3 m/s legitimately spins at ~800 rad/s


class UnstableSimulation(RuntimeError):
    """The simulation went unstable (NaN, energy blow-up or deep penetration)."""


def compile_scene(scene: Scene) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(scene.mjcf)


def model_hash(model: mujoco.MjModel) -> str:
    """SHA-256 of the compiled model's binary form."""
    buffer = np.zeros(mujoco.mj_sizeModel(model), np.uint8)
    mujoco.mj_saveModel(model, None, buffer)
    return hashlib.sha256(buffer.tobytes()).hexdigest()


class Simulation:
    """Steps a scene at `fps`, `substeps` MuJoCo steps per frame.

    Actions: a vector of 3 + nu values per frame: an external force (N, world frame) applied at the
    centre of mass of the primary tracked body, followed by the actuator controls (if any).
    """

    def __init__(self, scene: Scene, fps: float, *, model: mujoco.MjModel | None = None):
        self.scene = scene
        self.model = model if model is not None else compile_scene(scene)
        self.data = mujoco.MjData(self.model)
        self.fps = fps
        self.substeps = max(1, round(1.0 / (fps * self.model.opt.timestep)))
        if abs(self.substeps * self.model.opt.timestep * fps - 1.0) > 1e-6:
            raise ValueError(
                f"parameter 'fps': got {fps}; allowed: a rate whose period is a whole number of "
                f"{self.model.opt.timestep * 1000:g} ms simulator steps (e.g. 10, 20, 25, 50)"
            )
        self.body_ids = [self.model.body(name).id for name in scene.tracked]
        self._ids = np.array(self.body_ids, np.int64)
        self._roots = self.model.body_rootid[self._ids]
        self.action_dim = 3 + self.model.nu
        self.contacts = make_tracker(self.model)  # steps the simulator, recording contact events
        # translational dofs (slide joints, free joints' first three) are checked against MAX_SPEED,
        # rotational ones against MAX_SPIN
        self._linear_dofs = np.zeros(self.model.nv, bool)
        for j in range(self.model.njnt):
            adr, kind = self.model.jnt_dofadr[j], self.model.jnt_type[j]
            if kind == mujoco.mjtJoint.mjJNT_FREE:
                self._linear_dofs[adr : adr + 3] = True
            elif kind == mujoco.mjtJoint.mjJNT_SLIDE:
                self._linear_dofs[adr] = True
        self._max_dof_speed = np.where(self._linear_dofs, MAX_SPEED, MAX_SPIN)  # (nv,) m/s or rad/s
        self.reset()

    def reset(self) -> None:
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        for name, values in self.scene.qpos.items():
            j = m.joint(name)
            d.qpos[j.qposadr[0] : j.qposadr[0] + len(values)] = values
        for name, values in self.scene.qvel.items():
            j = m.joint(name)
            d.qvel[j.dofadr[0] : j.dofadr[0] + len(values)] = values
        mujoco.mj_forward(m, d)
        self.contacts.reset()

    @property
    def time(self) -> float:
        return float(self.data.time)

    def scripted_action(self) -> np.ndarray:
        """The passive/scripted action at the current time: no external force, the scene's policy."""
        action = np.zeros(self.action_dim)
        if self.scene.policy is not None:
            action[3:] = self.scene.policy(self.time)
        return action

    def step(self, action: np.ndarray | None = None) -> None:
        """Advance one frame (1/fps s) holding `action` constant; raise UnstableSimulation."""
        m, d = self.model, self.data
        action = self.scripted_action() if action is None else np.asarray(action, float)
        d.xfrc_applied[self.body_ids[0], :3] = action[:3]
        if m.nu:
            d.ctrl[:] = action[3:]
        self.contacts.advance(m, d, self.substeps)
        # mj_step leaves positions and velocities' derived quantities as they were before its
        # integration, one timestep before d.time: bring those the states read to the frame's time
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        mujoco.mj_comVel(m, d)
        self._check_stable()

    def _check_stable(self) -> None:
        d = self.data
        if not (np.isfinite(d.qpos).all() and np.isfinite(d.qvel).all()):
            raise UnstableSimulation(f"non-finite state at t={d.time:.3f} s")
        if (np.abs(d.qvel) > self._max_dof_speed).any():
            speed = np.abs(d.qvel[self._linear_dofs]).max(initial=0.0)
            spin = np.abs(d.qvel[~self._linear_dofs]).max(initial=0.0)
            raise UnstableSimulation(
                f"energy blow-up: a speed of {speed:.3g} m/s or a spin of {spin:.3g} rad/s at t={d.time:.3f} s"
            )
        if d.ncon and d.contact.dist[: d.ncon].min() < -MAX_PENETRATION:
            depth = -d.contact.dist[: d.ncon].min()
            raise UnstableSimulation(f"deep penetration: {depth * 100:.1f} cm at t={d.time:.3f} s")

    def states(self) -> np.ndarray:
        """(n_tracked, 13): centre-of-mass position, quaternion wxyz, linear and angular velocity."""
        return states_from_kinematics(self.kinematics())

    def kinematics(self) -> np.ndarray:
        """(n_tracked, 16) what the states are derived from (`states_from_kinematics`), a cheap
        copy to record every frame: centre of mass, quaternion, cvel (angular, linear), and the
        centre of mass of the root's subtree, about which cvel is expressed."""
        d, ids = self.data, self._ids
        return np.concatenate([d.xipos[ids], d.xquat[ids], d.cvel[ids], d.subtree_com[self._roots]], axis=-1)


def states_from_kinematics(kinematics: np.ndarray) -> np.ndarray:
    """(..., n, 16) `Simulation.kinematics` -> (..., n, 13) states."""
    pos, quat, angvel, cvel_linear, origin = np.split(kinematics, [3, 7, 10, 13], axis=-1)
    vel = cvel_linear + np.cross(angvel, pos - origin)  # linear velocity at the centre of mass
    return np.concatenate([pos, quat, vel, angvel], axis=-1)


def frames_for(seconds: float, fps: float) -> int:
    """Number of frames in an episode of `seconds` at `fps` (frame 0 is the initial state)."""
    return max(1, int(round(seconds * fps)))
