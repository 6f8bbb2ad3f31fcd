import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

import sim  # noqa: E402


def family_params():
    """sim.SCENES as pytest params, one per family."""
    return [pytest.param(name, id=name) for name in sim.SCENES]
