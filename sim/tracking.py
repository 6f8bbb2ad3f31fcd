"""Contact tracking: MuJoCo steps -> `ContactEvent`s as contacts begin, with their impulses.

A contact lasts a few milliseconds (a bounce ~10 ms, shorter than a 50 ms frame), so contacts are
tracked after every simulator step. Two trackers do the same arithmetic in the same order and so
give identical events, bit for bit:

- `NativeTracker` runs the step loop and the tracking in C (`tracking.c`, compiled on first use
  against the installed MuJoCo's headers with the system's C compiler and cached, loaded with
  ctypes). Tracking then costs about 1% of a step instead of a third.
- `PythonTracker`, the reference, used where no C compiler is found or with PHYSFUSION_NATIVE=0.

`make_tracker(model)` picks the native one when it can be built.

Semantics. Moving bodies are named by body, static geometry by geom. A pair of them that begins
touching opens an event at the time after the step, at its first contact's position (MuJoCo's
contact order); a pair that touches again within REBOUND_GAP of separating continues its event
(the chatter of resting or rocking bodies is one event, not hundreds). Events of one step open in
ascending pair order. Every step, each contact's normal force times the step is added to its pair's
current event: `impulse` (N*s) integrates the normal force over the contact.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import numpy as np

from sim import _gl  # noqa: F401
import mujoco

from sim.episode import ContactEvent

REBOUND_GAP = 0.02  # s; shorter flights (rebounds under ~0.5 mm) continue the previous contact
NATIVE_ENV = "PHYSFUSION_NATIVE"  # "0": always use the Python tracker
SOURCE = Path(__file__).with_name("tracking.c")


class _Entities:
    """Who touches whom: entity names and the key of every geom pair (an unordered entity pair)."""

    def __init__(self, model: mujoco.MjModel):
        names: list[str] = []
        entity = np.zeros(model.ngeom, np.int64)
        for g in range(model.ngeom):
            body = int(model.geom_bodyid[g])
            static = model.body_weldid[body] == 0
            label = model.geom(g).name or f"geom{g}" if static else model.body(body).name or f"body{body}"
            if label not in names:
                names.append(label)
            entity[g] = names.index(label)
        self.names = names
        self.n = len(names)
        lo, hi = np.minimum.outer(entity, entity), np.maximum.outer(entity, entity)
        self.pair_key = np.ascontiguousarray(lo * self.n + hi)  # (ngeom, ngeom) -> min * n + max

    def event(self, time: float, key: int, position, impulse: float) -> ContactEvent:
        a, b = divmod(int(key), self.n)
        return ContactEvent(float(time), self.names[a], self.names[b], float(impulse), tuple(float(x) for x in position))


class PythonTracker:
    """The reference tracker: `advance` steps MuJoCo and tracks contacts after each step."""

    native = False

    def __init__(self, model: mujoco.MjModel):
        self._entities = _Entities(model)
        self.reset()

    def reset(self) -> None:
        self._times: list[float] = []
        self._keys: list[int] = []
        self._positions: list[np.ndarray] = []
        self._impulse = np.zeros(16)  # (capacity,) N*s per event
        self._event_of = np.full(self._entities.n**2, -1, np.int64)  # pair key -> its latest event
        self._separated: dict[int, float] = {}  # pair key -> s, when it last stopped touching
        self._touching: list[int] = []  # keys touching after the last step, ascending

    @property
    def events(self) -> list[ContactEvent]:
        return [self._entities.event(*e) for e in zip(self._times, self._keys, self._positions, self._impulse.tolist())]

    def advance(self, model: mujoco.MjModel, data: mujoco.MjData, nstep: int) -> None:
        dt = model.opt.timestep
        for _ in range(nstep):
            mujoco.mj_step(model, data)
            self._track(data, dt)

    def _track(self, data: mujoco.MjData, dt: float) -> None:
        if data.ncon == 0:
            if self._touching:
                self._switch(data, [], None)
            return
        contact = data.contact
        keys = self._entities.pair_key[contact.geom[:, 0], contact.geom[:, 1]]  # (ncon,)
        touching = sorted(set(keys.tolist()))
        if touching != self._touching:
            self._switch(data, touching, keys)
        rows = contact.efc_address  # (ncon,) each contact's normal-force row; -1: excluded
        live = rows >= 0
        # sequentially in contact order, as tracking.c adds them
        np.add.at(self._impulse, self._event_of[keys[live]], data.efc_force[rows[live]] * dt)

    def _switch(self, data: mujoco.MjData, touching: list[int], keys: np.ndarray | None) -> None:
        time = float(data.time)
        now, before = set(touching), set(self._touching)
        for k in before - now:
            self._separated[k] = time
        for k in touching:  # ascending
            if k not in before and time - self._separated.get(k, -np.inf) > REBOUND_GAP:
                first = int(np.flatnonzero(keys == k)[0])
                self._event_of[k] = len(self._times)
                self._times.append(time)
                self._keys.append(k)
                self._positions.append(data.contact.pos[first].copy())
                if len(self._times) > len(self._impulse):
                    self._impulse = np.concatenate([self._impulse, np.zeros(len(self._impulse))])
        self._touching = touching


class _TrackerStruct(ctypes.Structure):
    """`pf_tracker` of tracking.c."""

    _fields_ = [
        ("step", ctypes.c_void_p),
        ("pair_key", ctypes.c_void_p),
        ("separated", ctypes.c_void_p),
        ("event_of", ctypes.c_void_p),
        ("touching", ctypes.c_void_p),
        ("n_touching", ctypes.c_int64),
        ("scratch", ctypes.c_void_p),
        ("capacity", ctypes.c_int64),
        ("event_time", ctypes.c_void_p),
        ("event_key", ctypes.c_void_p),
        ("event_pos", ctypes.c_void_p),
        ("event_impulse", ctypes.c_void_p),
        ("n_events", ctypes.c_int64),
        ("max_events", ctypes.c_int64),
        ("rebound_gap", ctypes.c_double),
    ]


NEEDS_ROOM = 1 << 40  # PF_NEEDS_ROOM of tracking.c


class NativeTracker:
    """The same tracker with the step loop in C (`tracking.c`); its buffers are numpy arrays."""

    native = True

    def __init__(self, model: mujoco.MjModel, library: ctypes.CDLL):
        self._entities = _Entities(model)
        self._lib = library
        self._struct = _TrackerStruct()
        self._struct.step = _mj_step_address()
        self._struct.pair_key = self._entities.pair_key.ctypes.data
        self._struct.rebound_gap = REBOUND_GAP
        self._pointer = ctypes.addressof(self._struct)
        self.reset()

    def reset(self) -> None:
        n_keys = self._entities.n**2
        self._separated = np.full(n_keys, -np.inf)
        self._event_of = np.full(n_keys, -1, np.int64)
        s = self._struct
        s.separated, s.event_of = self._separated.ctypes.data, self._event_of.ctypes.data
        s.n_touching = s.n_events = 0
        self._grow_contacts(64)
        self._grow_events(64)

    def _grow_contacts(self, capacity: int) -> None:
        s = self._struct
        touching = np.zeros(capacity, np.int64)
        if s.n_touching:
            touching[: s.n_touching] = self._touching[: s.n_touching]
        self._touching, self._scratch = touching, np.zeros(3 * capacity, np.int64)
        s.touching, s.scratch, s.capacity = touching.ctypes.data, self._scratch.ctypes.data, capacity

    def _grow_events(self, capacity: int) -> None:
        s, n = self._struct, self._struct.n_events
        arrays = {"time": np.zeros(capacity), "key": np.zeros(capacity, np.int64), "pos": np.zeros((capacity, 3)), "impulse": np.zeros(capacity)}
        for name, array in arrays.items():
            if n:
                array[:n] = self._events[name][:n]
            setattr(s, f"event_{name}", array.ctypes.data)
        self._events = arrays
        s.max_events = capacity

    @property
    def events(self) -> list[ContactEvent]:
        n, e = self._struct.n_events, self._events
        return [self._entities.event(*args) for args in zip(e["time"][:n], e["key"][:n], e["pos"][:n], e["impulse"][:n].tolist())]

    def advance(self, model: mujoco.MjModel, data: mujoco.MjData, nstep: int) -> None:
        m, d, s = model._address, data._address, self._struct
        while nstep > 0:
            done = self._lib.pf_advance(m, d, nstep, self._pointer)
            if done >= NEEDS_ROOM:  # the last step's contacts did not fit: grow, then track them
                done -= NEEDS_ROOM
                if data.ncon > s.capacity:
                    self._grow_contacts(2 * data.ncon)
                if s.n_events + data.ncon > s.max_events:
                    self._grow_events(2 * (s.n_events + data.ncon))
                self._lib.pf_track(m, d, self._pointer)
            nstep -= done


def make_tracker(model: mujoco.MjModel) -> NativeTracker | PythonTracker:
    """The C tracker if it can be built here, else the Python reference."""
    library = native_library()
    return NativeTracker(model, library) if library is not None else PythonTracker(model)


# --------------------------------------------------------------------------------------------------
# Building tracking.c


def _mujoco_dir() -> Path:
    return Path(mujoco.__file__).parent


@functools.cache
def _mj_step_address() -> int:
    """Address of mj_step in the MuJoCo library the bindings loaded (the same file, so the same copy)."""
    libraries = sorted(_mujoco_dir().glob("libmujoco*"))
    if not libraries:
        raise OSError(f"no libmujoco* beside {mujoco.__file__}")
    return ctypes.cast(ctypes.CDLL(str(libraries[0])).mj_step, ctypes.c_void_p).value


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "physfusion"


@functools.cache
def native_library() -> ctypes.CDLL | None:
    """tracking.c built for the installed MuJoCo (cached by source, MuJoCo version and platform), or
    None, with a warning saying why, where it cannot be built or loaded."""
    if os.environ.get(NATIVE_ENV, "1") == "0":
        return None
    try:
        _mj_step_address()
        return _load(_build())
    except (OSError, RuntimeError, AttributeError) as err:  # RuntimeError: no home directory for the cache
        warnings.warn(
            f"physfusion: contact tracking falls back to Python (about 1.4x slower simulation): {err}. "
            f"A C compiler (`cc`, or $CC) makes the fast path; set {NATIVE_ENV}=0 to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def _build() -> Path:
    source = SOURCE.read_bytes()
    include = _mujoco_dir() / "include"
    key = hashlib.sha256(source + mujoco.__version__.encode() + platform.platform().encode() + sys.version.encode()).hexdigest()[:16]
    target = cache_dir() / f"tracking-{key}.so"
    if target.exists():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise OSError("no C compiler found")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}")  # renamed when complete
    try:
        # -ffp-contract=off: no fused multiply-adds, so the impulses equal the Python tracker's
        subprocess.run(
            [compiler, "-O2", "-ffp-contract=off", "-shared", "-fPIC", f"-I{include}", str(SOURCE), "-o", str(partial)],
            check=True, capture_output=True, text=True,
        )
        os.replace(partial, target)
    except subprocess.CalledProcessError as err:
        raise OSError(f"compiling {SOURCE.name} failed: {err.stderr.strip()[-500:]}") from None
    finally:
        partial.unlink(missing_ok=True)
    return target


def _load(path: Path) -> ctypes.CDLL:
    library = ctypes.CDLL(str(path))
    pointer = ctypes.c_void_p
    library.pf_advance.argtypes = [pointer, pointer, ctypes.c_int64, pointer]
    library.pf_advance.restype = ctypes.c_int64
    library.pf_track.argtypes = [pointer, pointer, pointer]
    library.pf_track.restype = None
    return library
