"""`simulate`: a scene family and its parameters -> one `Episode`."""

from __future__ import annotations

import functools
import importlib.metadata

import numpy as np

from sim import _gl  # noqa: F401
import mujoco

from sim.audio import AUDIO_RATE, impact_sound
from sim.engine import Simulation, compile_scene, frames_for, model_hash, states_from_kinematics
from sim.episode import Episode
from sim.params import ParamError, check_split
from sim.render import FrameRenderer
from sim.scenes import get_family


@functools.cache  # looking it up scans the installed distributions (~0.2 ms)
def package_version() -> str:
    try:
        return importlib.metadata.version("physfusion")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def check_render_settings(seconds: float, fps: float, width: int, height: int) -> None:
    for name, value, lo, hi in (("seconds", seconds, 0.05, 600), ("fps", fps, 1, 1000), ("width", width, 16, 4096), ("height", height, 16, 4096)):
        if not (lo <= value <= hi):
            raise ParamError(f"parameter {name!r}: got {value!r}; allowed: [{lo}, {hi}]")


def realize_params(scene: str, params: dict | None, seed: int, split: str = "train", counterfactual: dict | None = None) -> dict:
    """Every realised parameter of an episode: given values validated, the rest drawn from `seed`.

    `counterfactual` overrides some values after everything else is drawn, so the episode keeps the
    same initial state with only those parameters changed.
    """
    family = get_family(scene)
    check_split(split)
    values = family.realize(params, np.random.default_rng(seed), split)
    if counterfactual:
        unknown = sorted(set(counterfactual) - set(family.params.names()))
        if unknown:
            raise ParamError(
                f"scene {scene!r}: unknown counterfactual parameter(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(family.params.names())}"
            )
        values = family.params.validate({**values, **counterfactual})
        family.check(values)
    return values


def simulate(
    scene: str,
    params: dict | None = None,
    *,
    seed: int = 0,
    seconds: float | None = None,
    fps: float = 20,
    width: int = 64,
    height: int = 64,
    render: bool = True,
    depth: bool = False,
    segmentation: bool = False,
    shadows: bool = False,
    multisample: bool = False,
    split: str = "train",
    counterfactual: dict | None = None,
    actions: np.ndarray | None = None,
) -> Episode:
    """Simulate one episode of a scene family.

    params: physical parameters by name (see `sim.describe(scene)`); missing ones are drawn from
      the family's `split` range using `seed`.
    seconds: episode length (default: the family's own); T = round(seconds * fps) frames, the
      first at t = 0 (the initial state).
    actions: optional (T, 3 + nu) per-frame actions (see `sim.engine.Simulation`); by default the
      scene is passive, or follows its scripted policy.
    counterfactual: parameters to change while keeping everything else (the same seed gives the
      same initial state), e.g. {"mass": 2.0}.
    Raises ParamError on bad input and sim.UnstableSimulation if the physics blows up.
    """
    family = get_family(scene)
    seconds = family.seconds if seconds is None else seconds
    check_render_settings(seconds, fps, width, height)
    values = realize_params(scene, params, seed, split, counterfactual)
    built = family.build(values)
    model = compile_scene(built)
    sim = Simulation(built, fps, model=model)
    n_frames = frames_for(seconds, fps)
    if actions is not None:
        actions = np.asarray(actions, np.float64)
        if actions.shape != (n_frames, sim.action_dim):
            raise ParamError(
                f"parameter 'actions': got shape {actions.shape}; allowed: ({n_frames}, {sim.action_dim}) "
                f"(frames, 3 force components + {model.nu} actuator controls)"
            )
    renderer = (
        FrameRenderer(model, width, height, sim.body_ids, shadows=shadows, multisample=multisample, depth=depth, segmentation=segmentation)
        if render
        else None
    )
    kinematics = np.zeros((n_frames, len(sim.body_ids), 16))  # per frame, see Simulation.kinematics
    rgb = np.zeros((n_frames, height, width, 3), np.uint8) if render else None
    depth_maps = np.zeros((n_frames, height, width), np.float32) if render and depth else None
    segments = np.zeros((n_frames, height, width), np.int32) if render and segmentation else None
    applied = np.zeros((n_frames, sim.action_dim))
    try:
        for t in range(n_frames):
            kinematics[t] = sim.kinematics()
            if renderer is not None:
                _, d, s = renderer.render(sim.data, rgb[t])
                if depth_maps is not None:
                    depth_maps[t] = d
                if segments is not None:
                    segments[t] = s
            applied[t] = sim.scripted_action() if actions is None else actions[t]
            if t + 1 < n_frames:
                sim.step(applied[t])
        camera = renderer.camera(sim.data) if renderer is not None else None
    finally:
        if renderer is not None:
            renderer.close()
    events = sim.contacts.events
    return Episode(
        scene=scene,
        seed=seed,
        fps=float(fps),
        times=np.arange(n_frames) / fps,
        body_names=list(built.tracked),
        states=states_from_kinematics(kinematics),
        params=values,
        caption=family.caption(values),
        frames=rgb,
        depth=depth_maps,
        segmentation=segments,
        events=events,
        audio=impact_sound(events, n_frames / fps, built.sounds),
        audio_rate=AUDIO_RATE,
        actions=applied.astype(np.float32) if (model.nu or actions is not None) else None,
        camera=camera,
        provenance={
            "mujoco": mujoco.__version__,
            "scene_hash": model_hash(model),
            "physfusion": package_version(),
            "timestep": float(model.opt.timestep),
            "split": split,
        },
    )
