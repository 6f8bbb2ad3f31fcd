"""`Simulation`: one compiled scene stepped frame by frame, recording states, contacts and pixels.

Shared by `simulate` (whole episodes) and the gymnasium environments (one frame per `step`).
"""

from __future__ import annotations

import hashlib

import numpy as np

from sim import _gl  # noqa: F401
import mujoco

from sim.episode import ContactEvent
from sim.scenes.base import Scene

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


REBOUND_GAP = 0.02  # s; shorter flights (rebounds under ~0.5 mm) continue the previous contact
MAX_LAYOUTS = 4096  # contact layouts remembered per tracker (a resting box chatters between a few)


class _Layout:
    """How one list of touching geom pairs groups into entity pairs (cached per list)."""

    def __init__(self, keys: list[int], excluded: bool):
        self.first: dict[int, int] = {}  # pair key -> its first contact
        for i, k in enumerate(keys):
            self.first.setdefault(k, i)
        self.pairs = sorted(self.first)  # the touching pairs, in key order
        rank = {k: r for r, k in enumerate(self.pairs)}
        self.group = np.array([rank[k] for k in keys], np.int64)  # (ncon,) contact -> pair rank
        self.grouped = len(self.pairs) < len(keys) or keys != self.pairs  # else contact i is pair i
        self.excluded = excluded  # some contact may have no constraint rows (efc_address -1)


class ContactTracker:
    """Turns per-substep contacts into events as they begin, integrating each pair's normal force
    over the contact into an impulse (N*s). Moving bodies are named by body, static geometry by geom.

    A pair that touches again within REBOUND_GAP of separating continues its event (contact
    chatter of resting or rocking bodies is one event, not hundreds).

    `update` runs after every MuJoCo substep, so it is kept lean: while the list of touching geom
    pairs is unchanged (a resting or sliding contact), each contact's normal force is summed in a
    numpy array, folded into its pair's impulse only when the list changes or events are read; the
    grouping of a list into pairs is computed once per distinct list (`_Layout`).
    """

    def __init__(self, model: mujoco.MjModel):
        names = []
        entity = np.zeros(model.ngeom, np.int64)
        for g in range(model.ngeom):
            body = int(model.geom_bodyid[g])
            static = model.body_weldid[body] == 0
            label = model.geom(g).name or f"geom{g}" if static else model.body(body).name or f"body{body}"
            if label not in names:
                names.append(label)
            entity[g] = names.index(label)
        self.names, self.entity = names, entity
        self.n = len(names)
        # (ngeom, ngeom) geom pair -> unordered entity pair key min * n + max
        lo, hi = np.minimum.outer(entity, entity), np.maximum.outer(entity, entity)
        self._pair_key = lo * self.n + hi
        # without gaps, whether a contact makes constraint rows (efc_address >= 0) depends on its geoms only
        self._gaps = bool((model.geom_gap > 0).any() or (model.npair and (model.pair_gap > 0).any()))
        self._layouts: dict[bytes, _Layout] = {}  # contact geom pairs (bytes) -> their layout
        self.reset()

    def reset(self) -> None:
        self._events: list[ContactEvent] = []
        self._impulse = np.zeros(16)  # (capacity,) N*s, one per event
        self._active: dict[int, int] = {}  # pair key -> index into events
        self._ended: dict[int, tuple[int, float]] = {}  # pair key -> (event index, time it separated)
        self._geoms = b""  # the contact geom pairs of the last substep (bytes), b"" when none
        self._layout = _Layout([], False)
        self._slots = np.zeros(0, np.int64)  # (n_active,) active pair -> event index
        self._acc = np.zeros(0)  # (n_active,) the active pairs' impulses, N*s (flushed to _impulse)
        self._forces = np.zeros(0)  # (ncon,) each contact's normal force summed over substeps, N
        self._dt = 0.0  # s, the substep of the forces summed in _forces

    @property
    def events(self) -> list[ContactEvent]:
        self._fold()
        self._flush()
        for event, impulse in zip(self._events, self._impulse.tolist()):
            event.impulse = impulse
        return self._events

    def update(self, data: mujoco.MjData, dt: float) -> None:
        if data.ncon == 0:
            if self._geoms:
                self._fold()
                self._flush()
                self._end(self._active, data.time)
                self._active, self._geoms, self._slots, self._acc = {}, b"", self._slots[:0], self._acc[:0]
                self._layout, self._forces = _Layout([], False), self._forces[:0]
            return
        con = data.contact  # ncon long
        geom = con.geom  # (ncon, 2)
        geoms = geom.tobytes()
        if geoms != self._geoms or dt != self._dt:
            self._fold()
            self._regroup(data, geoms, geom)
            self._geoms, self._dt = geoms, dt
        if not data.nefc:
            return
        addr = con.efc_address  # elliptic cones: row 0 of a contact is its normal force
        if self._layout.excluded:
            self._forces += np.where(addr >= 0, data.efc_force[addr], 0.0)
        else:
            self._forces += data.efc_force[addr]

    def _fold(self) -> None:
        """Add the summed contact forces to their pairs' impulses."""
        if not len(self._forces):
            return
        forces = self._forces
        if self._layout.grouped:
            forces = np.bincount(self._layout.group, weights=forces, minlength=len(self._acc))  # per pair, N
        self._acc += forces * self._dt
        self._forces.fill(0.0)

    def _flush(self) -> None:
        self._impulse[self._slots] = self._acc

    def _layout_of(self, geoms: bytes, geom: np.ndarray, addr: np.ndarray) -> _Layout:
        layout = self._layouts.get(geoms)
        if layout is None:
            keys = self._pair_key[geom[:, 0], geom[:, 1]].tolist()  # (ncon,) pair key per contact
            layout = _Layout(keys, self._gaps or bool((addr < 0).any()))
            if len(self._layouts) >= MAX_LAYOUTS:
                self._layouts.clear()
            self._layouts[geoms] = layout
        return layout

    def _regroup(self, data: mujoco.MjData, geoms: bytes, geom: np.ndarray) -> None:
        """The touching geoms changed: group contacts by pair (in key order) and open events for
        pairs that were not touching in the previous substep."""
        layout = self._layout_of(geoms, geom, data.contact.efc_address)
        if layout.pairs != list(self._active):  # a pair began or ended
            self._flush()
            self._end([k for k in self._active if k not in layout.first], data.time)
            active, slots = {}, []
            for k in layout.pairs:
                idx = self._active.get(k)
                if idx is None:
                    idx, separated = self._ended.get(k, (-1, -np.inf))
                    if data.time - separated > REBOUND_GAP:
                        idx = self._begin(data, k, layout.first[k])
                active[k] = idx
                slots.append(idx)
            self._active, self._slots = active, np.array(slots, np.int64)
            self._acc = self._impulse[self._slots]
        self._layout = layout
        self._forces = np.zeros(len(layout.group))

    def _end(self, keys, time: float) -> None:
        for k in keys:
            self._ended[k] = (self._active[k], float(time))

    def _begin(self, data: mujoco.MjData, key: int, contact: int) -> int:
        """Open an event for pair `key` at its first contact; return the event's index."""
        a, b = divmod(key, self.n)
        pos = data.contact.pos[contact]
        self._events.append(
            ContactEvent(float(data.time), self.names[a], self.names[b], 0.0, (float(pos[0]), float(pos[1]), float(pos[2])))
        )
        if len(self._events) > len(self._impulse):
            self._impulse = np.concatenate([self._impulse, np.zeros(len(self._impulse))])
        return len(self._events) - 1


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
        self.contacts = ContactTracker(self.model)
        # translational dofs (slide joints, free joints' first three) are checked against MAX_SPEED,
        # rotational ones against MAX_SPIN
        self._linear_dofs = np.zeros(self.model.nv, bool)
        for j in range(self.model.njnt):
            adr, kind = self.model.jnt_dofadr[j], self.model.jnt_type[j]
            if kind == mujoco.mjtJoint.mjJNT_FREE:
                self._linear_dofs[adr : adr + 3] = True
            elif kind == mujoco.mjtJoint.mjJNT_SLIDE:
                self._linear_dofs[adr] = True
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
        dt, step, track = m.opt.timestep, mujoco.mj_step, self.contacts.update
        for _ in range(self.substeps):
            step(m, d)
            track(d, dt)
        self._check_stable()

    def _check_stable(self) -> None:
        d = self.data
        if not (np.isfinite(d.qpos).all() and np.isfinite(d.qvel).all()):
            raise UnstableSimulation(f"non-finite state at t={d.time:.3f} s")
        speed = np.abs(d.qvel[self._linear_dofs]).max(initial=0.0)
        spin = np.abs(d.qvel[~self._linear_dofs]).max(initial=0.0)
        if speed > MAX_SPEED or spin > MAX_SPIN:
            raise UnstableSimulation(
                f"energy blow-up: a speed of {speed:.3g} m/s or a spin of {spin:.3g} rad/s at t={d.time:.3f} s"
            )
        if d.ncon and d.contact.dist[: d.ncon].min() < -MAX_PENETRATION:
            depth = -d.contact.dist[: d.ncon].min()
            raise UnstableSimulation(f"deep penetration: {depth * 100:.1f} cm at t={d.time:.3f} s")

    def states(self) -> np.ndarray:
        """(n_tracked, 13): centre-of-mass position, quaternion wxyz, linear and angular velocity."""
        d, ids = self.data, self._ids
        pos = d.xipos[ids]
        # cvel is [angular, linear] at the subtree centre of mass of each body's root
        cvel = d.cvel[ids]
        origin = d.subtree_com[self._roots]
        angvel = cvel[:, :3]
        vel = cvel[:, 3:] + np.cross(angvel, pos - origin)
        return np.concatenate([pos, d.xquat[ids], vel, angvel], axis=1)


def frames_for(seconds: float, fps: float) -> int:
    """Number of frames in an episode of `seconds` at `fps` (frame 0 is the initial state)."""
    return max(1, int(round(seconds * fps)))
