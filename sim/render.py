"""Offscreen rendering of RGB, depth and segmentation from the scene's `main` camera."""

from __future__ import annotations

import atexit
import os
import threading

import numpy as np

from sim import _gl  # noqa: F401  (selects the backend before mujoco is imported)
import mujoco

from sim.episode import Camera


class RenderError(RuntimeError):
    pass


# OpenGL contexts kept for reuse, per process and thread: (pid, thread, width, height) -> idle contexts.
# A fresh context costs ~0.2 s on Mesa (its shaders are compiled on first use), more than a whole
# 64x64 episode, so each worker makes one and every later renderer of that size reuses it.
_IDLE_GL: dict[tuple[int, int, int, int], list] = {}


def _gl_key(width: int, height: int) -> tuple[int, int, int, int]:
    return (os.getpid(), threading.get_ident(), width, height)


def _free_idle_gl() -> None:
    for key, contexts in _IDLE_GL.items():
        if key[0] == os.getpid():
            for context in contexts:
                context.free()
    _IDLE_GL.clear()


atexit.register(_free_idle_gl)


class _PooledRenderer(mujoco.Renderer):
    """`mujoco.Renderer` whose OpenGL context comes from (and returns to) the per-process pool.

    Only the model's render context (`MjrContext`: textures, meshes, offscreen buffer) is made per
    renderer; `render`, `update_scene` and depth/segmentation decoding are mujoco.Renderer's own.
    """

    def __init__(self, model: mujoco.MjModel, height: int, width: int, gl_context_cls: type):
        self._gl_context = self._mjr_context = None
        self._width, self._height, self._model = width, height, model
        # mujoco.Renderer allots 10,000 geoms (~15 ms to allocate); start smaller, grow when full
        self._scene = mujoco.MjvScene(model=model, maxgeom=max(1000, 4 * (model.ngeom + model.nsite)))
        self._scene_option = mujoco.MjvOption()
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._depth_rendering = self._segmentation_rendering = False
        self._key = _gl_key(width, height)
        idle = _IDLE_GL.get(self._key)
        self._gl_context = idle.pop() if idle else gl_context_cls(width, height)
        self._gl_context.make_current()
        self._mjr_context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150.value)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN.value, self._mjr_context)
        self._mjr_context.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR

    def update_scene(self, data: mujoco.MjData, camera=-1, scene_option=None) -> None:
        super().update_scene(data, camera, scene_option)
        while self._scene.ngeom >= self._scene.maxgeom:  # full: some geoms may have been left out
            flags = self._scene.flags.copy()
            self._scene = mujoco.MjvScene(model=self._model, maxgeom=4 * self._scene.maxgeom)
            self._scene.flags[:] = flags
            super().update_scene(data, camera, scene_option)

    def close(self) -> None:
        if self._mjr_context is not None:
            with self._gl_context.as_current():
                self._mjr_context.free()
            self._mjr_context = None
        if self._gl_context is not None:
            _IDLE_GL.setdefault(self._key, []).append(self._gl_context)
            self._gl_context = None


def _make_renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    try:
        from mujoco.rendering.classic import gl_context
    except ImportError:  # an older MuJoCo layout: a plain renderer, one OpenGL context each
        return mujoco.Renderer(model, height=height, width=width)
    return _PooledRenderer(model, height, width, gl_context.GLContext)


class FrameRenderer:
    """Renders one camera. Shadows and multisampling are off by default: on a CPU (Mesa) they
    dominate the cost of a frame (as does an infinite plane, which MuJoCo draws as a dense grid).

    segmentation ids: 0 for background and static geometry, i+1 for the i-th tracked body.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        width: int,
        height: int,
        tracked_body_ids: list[int],
        *,
        camera: str = "main",
        shadows: bool = False,
        multisample: bool = False,
        depth: bool = False,
        segmentation: bool = False,
    ):
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        model.vis.quality.offsamples = 4 if multisample else 0
        try:
            self._renderer = _make_renderer(model, height, width)
        except Exception as err:  # the backend could not make a GL context
            from sim._gl import INSTALL_HINT

            raise RenderError(f"{INSTALL_HINT} (MuJoCo said: {err})") from err
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = shadows
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        self._camera = camera
        self._mjv_camera = mujoco.MjvCamera()  # made once: update_scene would look it up every frame
        self._mjv_camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._mjv_camera.fixedcamid = model.camera(camera).id
        self._depth, self._segmentation = depth, segmentation
        self.width, self.height = width, height
        # geom id -> segmentation id (body index + 1 for tracked bodies and their children)
        lut = np.zeros(model.ngeom + 1, np.int32)
        root_of = {b: i + 1 for i, b in enumerate(tracked_body_ids)}
        for g in range(model.ngeom):
            body = int(model.geom_bodyid[g])
            while body not in root_of and body != 0:
                body = int(model.body_parentid[body])
            lut[g] = root_of.get(body, 0)
        self._geom_to_segment = lut
        self._model = model

    def camera(self, data: mujoco.MjData) -> Camera:
        cam = self._model.camera(self._camera).id
        # MuJoCo camera frame: x right, y up, looking along -z. OpenCV: x right, y down, z forward.
        cam_to_world_mj = data.cam_xmat[cam].reshape(3, 3)
        world_to_cv = np.diag([1.0, -1.0, -1.0]) @ cam_to_world_mj.T
        return Camera(
            self._camera,
            float(self._model.cam_fovy[cam]),
            self.width,
            self.height,
            data.cam_xpos[cam].copy(),
            world_to_cv,
        )

    def render(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(H, W, 3) uint8 RGB, (H, W) float32 depth in m or None, (H, W) int32 ids or None."""
        r = self._renderer
        r.update_scene(data, self._mjv_camera)
        rgb = r.render().copy()
        depth = seg = None
        if self._depth:
            r.enable_depth_rendering()
            depth = r.render().astype(np.float32)
            r.disable_depth_rendering()
        if self._segmentation:
            r.enable_segmentation_rendering()
            raw = r.render()  # (H, W, 2): object id, object type
            r.disable_segmentation_rendering()
            is_geom = raw[..., 1] == mujoco.mjtObj.mjOBJ_GEOM
            seg = np.where(is_geom, self._geom_to_segment[np.where(is_geom, raw[..., 0], -1)], 0).astype(np.int32)
        return rgb, depth, seg

    def close(self) -> None:
        self._renderer.close()
