import importlib.util
import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

import sim  # noqa: E402


def family_params():
    """sim.SCENES as pytest params (every family must exist)."""
    return [pytest.param(name, id=name) for name in sim.SCENES if importlib.util.find_spec(f"sim.scenes.{name}")]
