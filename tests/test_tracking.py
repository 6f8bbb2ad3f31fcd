"""Contact tracking: the C step loop against the Python reference, and the fallback when no C
compiler can build it."""

import dataclasses
import shutil
import warnings

import numpy as np
import pytest

import sim
from sim import tracking
from sim.engine import Simulation, frames_for
from sim.scenes import get_family
from conftest import family_params

needs_compiler = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")


def simulated_events(scene: str, seed: int, tracker_cls) -> tuple[list, np.ndarray]:
    """(events, final qpos) of the family's episode with this seed, tracked by `tracker_cls`."""
    family = get_family(scene)
    built = family.build(sim.realize_params(scene, None, seed))
    simulation = Simulation(built, 20)
    simulation.contacts = tracker_cls(simulation.model)
    for _ in range(frames_for(family.seconds, 20) - 1):
        simulation.step()
    return simulation.contacts.events, simulation.data.qpos.copy()


@needs_compiler
@pytest.mark.parametrize("scene", family_params())
def test_native_tracker_gives_the_python_trackers_events_bit_for_bit(scene):
    library = tracking.native_library()
    assert library is not None, "a C compiler is here, yet tracking.c was not built"
    native, native_qpos = simulated_events(scene, 5, lambda model: tracking.NativeTracker(model, library))
    python, python_qpos = simulated_events(scene, 5, tracking.PythonTracker)
    assert [dataclasses.astuple(e) for e in native] == [dataclasses.astuple(e) for e in python]
    assert np.array_equal(native_qpos, python_qpos)  # stepping in C is the same mj_step


@needs_compiler
def test_native_buffers_grow_past_their_first_capacity():
    # pour's beads make hundreds of contacts and events: more than the 64 the buffers start with
    library = tracking.native_library()
    events, _ = simulated_events("pour", 0, lambda model: tracking.NativeTracker(model, library))
    python, _ = simulated_events("pour", 0, tracking.PythonTracker)
    assert len(events) > 64
    assert [dataclasses.astuple(e) for e in events] == [dataclasses.astuple(e) for e in python]


def test_without_a_compiler_it_warns_and_falls_back_to_python(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing cached: it must compile
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    tracking.native_library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="falls back to Python"):
            assert tracking.native_library() is None
        model = Simulation(get_family("drop").build(sim.realize_params("drop", None, 0)), 20).model
        assert isinstance(tracking.make_tracker(model), tracking.PythonTracker)
        assert not list(tmp_path.glob("physfusion/*"))  # no half-built library left behind
    finally:
        tracking.native_library.cache_clear()


def test_native_can_be_turned_off(monkeypatch):
    monkeypatch.setenv(tracking.NATIVE_ENV, "0")
    tracking.native_library.cache_clear()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # turned off on purpose: no warning
            assert tracking.native_library() is None
    finally:
        tracking.native_library.cache_clear()
