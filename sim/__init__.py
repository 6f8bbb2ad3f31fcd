"""physfusion.sim: MuJoCo scene families -> `Episode` -> datasets; gymnasium environments.

    import sim
    episode = sim.simulate("drop", {"height": 1.0, "restitution": 0.8}, seed=0)
    episode.frames.shape   # (40, 64, 64, 3) uint8
"""

from sim import _gl  # noqa: F401  (must run before mujoco is imported)
from sim.bodies import body_properties, driven_bodies, roll_shares
from sim.dataset import load_dataset
from sim.engine import Simulation, UnstableSimulation
from sim.episode import STATE_SLICES, Camera, ContactEvent, Episode
from sim.params import SPLITS, ParamError
from sim.render import RenderError
from sim.scenes import SCENES, get_family
from sim.simulate import realize_params, simulate
from sim import envs  # noqa: F401,E402  (registers the physfusion/<Family>-v0 gymnasium environments)

__all__ = [
    "SCENES",
    "SPLITS",
    "STATE_SLICES",
    "Camera",
    "ContactEvent",
    "Episode",
    "ParamError",
    "RenderError",
    "Simulation",
    "UnstableSimulation",
    "body_properties",
    "driven_bodies",
    "roll_shares",
    "get_family",
    "load_dataset",
    "realize_params",
    "simulate",
]
