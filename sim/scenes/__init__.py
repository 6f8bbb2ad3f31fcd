"""The registry of scene families: one module per family, each exporting `FAMILY`."""

from __future__ import annotations

import importlib

from sim.params import ParamError
from sim.scenes.base import SceneFamily

SCENES = (
    "drop",
    "projectile",
    "collision",
    "ramp",
    "pendulum",
    "stack",
    "table_fall",
    "gears",
    "pour",
    "push",
)


def get_family(name: str) -> SceneFamily:
    if name not in SCENES:
        raise ParamError(f"parameter 'scene': got {name!r}; allowed: one of {', '.join(SCENES)}")
    return importlib.import_module(f"sim.scenes.{name}").FAMILY
