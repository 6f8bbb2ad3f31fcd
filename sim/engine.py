"""`Simulation`: one compiled scene stepped frame by frame, recording states, contacts and pixels.

Shared by `simulate` (whole episodes) and the gymnasium environments (one frame per `step`).
"""

from __future__ import annotations

import hashlib
import math

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
MAX_LAYOUTS = 4096  # contact layouts remembered per tracker (resting bodies switch between a few)


class _Layout:
    """One list of touching geom pairs: how its contacts group into entity pairs, and their normal
    forces summed over the substeps it was current (cached per list)."""

    def __init__(self, keys: list[int], excluded: bool):
        self.first: dict[int, int] = {}  # pair key -> its first contact
        for i, k in enumerate(keys):
            self.first.setdefault(k, i)
        self.pairs = sorted(self.first)  # the touching pairs, in key order
        rank = {k: r for r, k in enumerate(self.pairs)}
        self.group = np.array([rank[k] for k in keys], np.int64)  # (ncon,) contact -> pair rank
        self.grouped = len(self.pairs) < len(keys) or keys != self.pairs  # else contact i is pair i
        self.excluded = excluded  # some contact may have no constraint rows (efc_address -1)
        self.forces = np.zeros(len(keys))  # (ncon,) N, summed over substeps since the last fold
        self.dirty = False  # forces holds something not yet folded into the impulses
        self.slots = np.zeros(0, np.int64)  # (n_pairs,) each pair's event index ...
        self.epoch = -1  # ... as of this many events begun
        # the constraint rows of the contacts' normal forces (slice or index array), valid while the
        # constraint count is `nefc`: contact rows come last, each contact's count fixed by its geoms
        self.rows: slice | np.ndarray = slice(0)
        self.nefc = -1
        self._transitions: dict[_Layout, tuple[list[int], list[int]]] = {}  # next layout -> see `transition`

    def transition(self, to: _Layout) -> tuple[list[int], list[int]]:
        """(pairs that stop touching, pairs that begin touching) when the contacts go from this list to `to`'s."""
        change = self._transitions.get(to)
        if change is None:
            change = self._transitions[to] = (
                [k for k in self.pairs if k not in to.first],
                [k for k in to.pairs if k not in self.first],
            )
        return change

    def normal_rows(self, data: mujoco.MjData) -> slice | np.ndarray:
        """Rows of data.efc_force holding the contacts' normal forces (elliptic cones: a contact's first row)."""
        if data.nefc != self.nefc:
            addr = data.contact.efc_address  # (ncon,)
            step = addr[1] - addr[0] if len(addr) > 1 else 1
            regular = step > 0 and (np.diff(addr) == step).all()
            self.rows = slice(addr[0], addr[-1] + 1, step) if regular else addr.copy()
            self.nefc = data.nefc
        return self.rows

    def add_forces(self, data: mujoco.MjData) -> None:
        """Add this substep's normal forces (N) of the contacts."""
        if self.excluded:
            addr = data.contact.efc_address
            self.forces += np.where(addr >= 0, data.efc_force[addr], 0.0)
        else:
            self.forces += data.efc_force[self.normal_rows(data)]

    def pair_forces(self) -> np.ndarray:
        """(n_pairs,) the summed forces per pair, N."""
        return np.bincount(self.group, weights=self.forces, minlength=len(self.pairs)) if self.grouped else self.forces


class ContactTracker:
    """Turns per-substep contacts into events as they begin, integrating each pair's normal force
    over the contact into an impulse (N*s). Moving bodies are named by body, static geometry by geom.

    A pair that touches again within REBOUND_GAP of separating continues its event (contact
    chatter of resting or rocking bodies is one event, not hundreds).

    `update` runs after every MuJoCo substep, so it is kept lean. Each distinct list of touching
    geom pairs gets a `_Layout` (its grouping into entity pairs and their events, computed once)
    that sums its contacts' normal forces while it is current. Resting and rocking bodies switch
    between a few lists; the sums are added to the events' impulses only when an event begins or
    the events are read.
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
        self.reset()

    def reset(self) -> None:
        self._events: list[ContactEvent] = []
        self._impulse = np.zeros(16)  # (capacity,) N*s, one per event
        self._event_of: dict[int, int] = {}  # pair key -> index of its latest event
        self._separated: dict[int, float] = {}  # pair key -> time it last stopped touching, s
        self._geoms = b""  # the contact geom pairs of the last substep (bytes), b"" when none
        self._layouts: dict[bytes, _Layout] = {b"": _Layout([], False)}  # geom pairs (bytes) -> layout
        self._layout = self._layouts[b""]  # the current one
        self._dirty: list[_Layout] = []  # layouts with forces not yet added to the impulses
        self._dt = 0.0  # s, the substep of the forces being summed

    @property
    def events(self) -> list[ContactEvent]:
        self._fold()
        for event, impulse in zip(self._events, self._impulse.tolist()):
            event.impulse = impulse
        return self._events

    def update(self, data: mujoco.MjData, dt: float) -> None:
        if data.ncon == 0:
            if self._geoms:
                self._switch(data, b"", self._layout_of(b"", None, data))
            return
        geom = data.contact.geom  # (ncon, 2)
        geoms = geom.tobytes()
        if geoms != self._geoms or dt != self._dt:
            if dt != self._dt:
                self._fold()
                self._dt = dt
            self._switch(data, geoms, self._layout_of(geoms, geom, data))
        if data.nefc:
            self._layout.add_forces(data)

    def _layout_of(self, geoms: bytes, geom: np.ndarray | None, data: mujoco.MjData) -> _Layout:
        layout = self._layouts.get(geoms)
        if layout is None:
            keys = self._pair_key[geom[:, 0], geom[:, 1]].tolist()  # (ncon,) pair key per contact
            layout = _Layout(keys, self._gaps or bool((data.contact.efc_address < 0).any()))
            if len(self._layouts) >= MAX_LAYOUTS:
                self._fold()
                self._layouts = {b"": self._layouts[b""]}
            self._layouts[geoms] = layout
        return layout

    def _switch(self, data: mujoco.MjData, geoms: bytes, layout: _Layout) -> None:
        """The touching geoms changed to `layout`'s: note the pairs that stopped touching, open
        events for pairs that begin touching (unless they rebound within REBOUND_GAP)."""
        previous = self._layout
        if layout.pairs != previous.pairs:
            stopped, started = previous.transition(layout)
            time = float(data.time)
            for k in stopped:
                self._separated[k] = time
            for k in started:
                if time - self._separated.get(k, -math.inf) > REBOUND_GAP:
                    self._begin(data, k, layout.first[k])
        if layout.epoch != len(self._events):
            layout.slots = np.array([self._event_of[k] for k in layout.pairs], np.int64)
            layout.epoch = len(self._events)
        if not layout.dirty and len(layout.pairs):
            layout.dirty = True
            self._dirty.append(layout)
        self._geoms, self._layout = geoms, layout

    def _fold(self) -> None:
        """Add the layouts' summed contact forces to their events' impulses."""
        for layout in self._dirty:
            self._impulse[layout.slots] += layout.pair_forces() * self._dt
            layout.forces.fill(0.0)
            layout.dirty = False
        self._dirty.clear()

    def _begin(self, data: mujoco.MjData, key: int, contact: int) -> None:
        """Open an event for pair `key` at its first contact (the forces summed so far are added
        first: they belong to the pair's previous event)."""
        self._fold()
        a, b = divmod(key, self.n)
        pos = data.contact.pos[contact]
        self._events.append(
            ContactEvent(float(data.time), self.names[a], self.names[b], 0.0, (float(pos[0]), float(pos[1]), float(pos[2])))
        )
        if len(self._events) > len(self._impulse):
            self._impulse = np.concatenate([self._impulse, np.zeros(len(self._impulse))])
        self._event_of[key] = len(self._events) - 1


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
        dt, step, track = m.opt.timestep, mujoco.mj_step, self.contacts.update
        for _ in range(self.substeps):
            step(m, d)
            track(d, dt)
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
