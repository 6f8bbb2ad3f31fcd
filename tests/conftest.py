import json
import os
import shutil
import subprocess

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

import sim  # noqa: E402


def family_params():
    """sim.SCENES as pytest params, one per family."""
    return [pytest.param(name, id=name) for name in sim.SCENES]


def run_command(name: str, args, cwd, *, env: dict | None = None, check: bool = True, launcher: list | None = None) -> subprocess.CompletedProcess:
    """Run the console script `name` (or `launcher + [its path]`) with Hydra overrides `args` in `cwd`;
    with `check`, fail showing the end of its stderr unless it exits 0."""
    cmd = [*(launcher or []), shutil.which(name), *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "MUJOCO_GL": "egl", **(env or {})}, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def last_json(proc: subprocess.CompletedProcess) -> dict:
    """A command's summary: the JSON object on the last line of its stdout."""
    return json.loads(proc.stdout.strip().splitlines()[-1])
