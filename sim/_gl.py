"""Pick a headless OpenGL backend for MuJoCo before `mujoco` is first imported.

MuJoCo reads MUJOCO_GL once, at import. On Linux with no display we prefer EGL (GPU drivers or
Mesa's software renderer), then OSMesa. A user's own MUJOCO_GL always wins.
"""

import ctypes.util
import os
import sys

INSTALL_HINT = (
    "No working OpenGL backend for MuJoCo rendering. Install EGL (Debian/Ubuntu: "
    "`apt-get install libegl1 libgl1-mesa-dri`) or OSMesa (`apt-get install libosmesa6`) and set "
    "MUJOCO_GL=egl or MUJOCO_GL=osmesa; or pass render=False to simulate states only."
)


def choose_backend() -> str | None:
    if "MUJOCO_GL" in os.environ or not sys.platform.startswith("linux"):
        return os.environ.get("MUJOCO_GL")
    if os.environ.get("DISPLAY"):
        return None  # a display exists: MuJoCo's default (GLFW) works
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(library):
            os.environ["MUJOCO_GL"] = backend
            return backend
    return None


choose_backend()
