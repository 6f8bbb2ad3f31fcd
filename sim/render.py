"""Offscreen rendering of RGB, depth and segmentation from the scene's `main` camera."""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import threading

import numpy as np

from sim import _gl  # noqa: F401  (selects the backend before mujoco is imported)
import mujoco

from sim.episode import Camera


class RenderError(RuntimeError):
    pass


# Render resources kept for reuse, per process and thread: (pid, thread, width, height) -> idle
# `_GLResources`. A fresh OpenGL context costs ~0.2 s on Mesa (its shaders are compiled on first use),
# more than a whole 64x64 episode, so each worker makes one and every later renderer of that size
# reuses it. The model's render context (textures, meshes, offscreen buffers, ~3 ms) and abstract
# scene (~1 ms) are reused too when the next model draws the same (`render_signature`): episodes of
# one family differ in sizes, masses and poses, which live in the scene, not in the render context.
_IDLE_GL: dict[tuple[int, int, int, int], list[_GLResources]] = {}
MAX_IDLE = 10  # idle resources kept per size (one per renderer open at once; freed beyond this)
_DEFAULT_FLAGS = mujoco.MjvScene().flags.copy()  # mjv_makeScene's render flags (shadow, skybox, ...)
# thread id -> the OpenGL context this module last made current in that thread: making it current
# again (eglMakeCurrent through PyOpenGL, ~20 us, a tenth of a 64x64 frame) is skipped when it is
_CURRENT_GL: dict[int, object] = {}


def _make_current(gl_context) -> None:
    if _CURRENT_GL.get(threading.get_ident()) is not gl_context:
        gl_context.make_current()
        _CURRENT_GL[threading.get_ident()] = gl_context


class _GLResources:
    """An OpenGL context with the render context and abstract scene last made in it (or None)."""

    def __init__(self, gl_context):
        self.gl_context = gl_context
        self.mjr_context: mujoco.MjrContext | None = None
        self.scene: mujoco.MjvScene | None = None
        self.signature = b""  # render_signature of the model they were made for

    def make_for(self, model: mujoco.MjModel, signature: bytes) -> None:
        """Make the render context and scene for `model` (the OpenGL context must be current)."""
        # mujoco.Renderer allots 10,000 geoms (~15 ms to allocate); start smaller, grow when full
        self.scene = mujoco.MjvScene(model=model, maxgeom=max(1000, 4 * (model.ngeom + model.nsite)))
        self.mjr_context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150.value)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN.value, self.mjr_context)
        self.mjr_context.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self.signature = signature

    def reuse_for(self, model: mujoco.MjModel) -> None:
        """Adapt them to `model`, whose render signature is theirs."""
        _refresh_extent(self.mjr_context, model)
        self.scene.flags[:] = _DEFAULT_FLAGS

    def free_model_resources(self) -> None:
        if self.mjr_context is not None:
            with self.gl_context.as_current():
                self.mjr_context.free()
        self.mjr_context = self.scene = None
        self.signature = b""

    def free(self) -> None:
        self.free_model_resources()
        if _CURRENT_GL.get(threading.get_ident()) is self.gl_context:
            del _CURRENT_GL[threading.get_ident()]  # freeing a current context releases it
        self.gl_context.free()


def _gl_key(width: int, height: int) -> tuple[int, int, int, int]:
    return (os.getpid(), threading.get_ident(), width, height)


def _free_idle_gl() -> None:
    for key, idle in _IDLE_GL.items():
        if key[0] == os.getpid():
            for resources in idle:
                resources.free()
    _IDLE_GL.clear()


atexit.register(_free_idle_gl)

# model fields `mjr_makeContext` and `mjv_makeScene` read: assets, materials, skins and flexes
_ASSET_PREFIXES = ("tex_", "mat_", "mesh_", "hfield_", "skin_", "flex_")
_VISUAL_GROUPS = ("global_", "quality", "headlight", "map", "scale", "rgba")


@functools.cache
def _field_names(cls: type, prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """The data attributes (properties) of a MuJoCo struct type whose names start with a prefix."""
    return tuple(
        sorted(n for n in dir(cls) if n.startswith(prefixes) and not n.startswith("_") and isinstance(getattr(cls, n), property))
    )


def render_signature(model: mujoco.MjModel) -> bytes:
    """Digest of what a render context and an abstract scene take from `model` at creation.

    Two models with equal signatures can share them. Left out: `stat.extent`, which only scales the
    shadow frustum and fog (refreshed on reuse, `_refresh_extent`), except for infinite planes,
    whose grid it sizes.
    """
    h = hashlib.sha256()
    for name in _field_names(type(model), _ASSET_PREFIXES):
        h.update(name.encode() + getattr(model, name).tobytes())
    for group in _VISUAL_GROUPS:
        fields = getattr(model.vis, group)
        for name in _field_names(type(fields), ("",)):
            h.update(name.encode() + np.asarray(getattr(fields, name)).tobytes())
    planes = model.geom_type == mujoco.mjtGeom.mjGEOM_PLANE
    h.update(model.geom_size[planes].tobytes() + model.geom_matid[planes].tobytes())
    if (model.geom_size[planes][:, :2] <= 0).any():
        h.update(np.float64(model.stat.extent).tobytes())
    return h.digest()


def _refresh_extent(mjr_context: mujoco.MjrContext, model: mujoco.MjModel) -> None:
    """Set the render context's extent-scaled fields as `mjr_makeContext` would for `model` (the
    OpenGL fog distances stay the first model's: the renderer never enables fog)."""
    extent, vmap = model.stat.extent, model.vis.map
    mjr_context.shadowClip = extent * vmap.shadowclip
    mjr_context.fogStart = extent * vmap.fogstart
    mjr_context.fogEnd = extent * vmap.fogend


def _acquire(key, signature: bytes, gl_context_cls: type) -> _GLResources:
    """Idle resources for this size: with this signature if any, else any (or a new context)."""
    idle = _IDLE_GL.get(key, [])
    for i in range(len(idle) - 1, -1, -1):
        if idle[i].signature == signature:
            return idle.pop(i)
    if idle:
        resources = idle.pop()
        resources.free_model_resources()
        return resources
    return _GLResources(gl_context_cls(key[2], key[3]))


def _release(key, resources: _GLResources) -> None:
    idle = _IDLE_GL.setdefault(key, [])
    idle.append(resources)
    if len(idle) > MAX_IDLE:
        idle.pop(0).free()


class _PooledRenderer(mujoco.Renderer):
    """`mujoco.Renderer` whose OpenGL context, render context and scene come from (and return to)
    the per-process pool.

    `render`, `update_scene` and depth/segmentation decoding are mujoco.Renderer's own.
    """

    def __init__(self, model: mujoco.MjModel, height: int, width: int, gl_context_cls: type):
        self._gl_context = self._mjr_context = self._resources = None
        self._width, self._height, self._model = width, height, model
        self._scene_option = mujoco.MjvOption()
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._depth_rendering = self._segmentation_rendering = False
        self._key = _gl_key(width, height)
        signature = render_signature(model)
        resources = _acquire(self._key, signature, gl_context_cls)
        self._resources, self._gl_context = resources, resources.gl_context
        _make_current(self._gl_context)
        if resources.mjr_context is None:
            resources.make_for(model, signature)
        else:
            resources.reuse_for(model)
        self._scene, self._mjr_context = resources.scene, resources.mjr_context
        self._pixels = np.empty((height, width, 3), np.uint8)  # OpenGL's rows: bottom first

    def render(self, *, out: np.ndarray | None = None) -> np.ndarray:
        _CURRENT_GL[threading.get_ident()] = self._gl_context  # mujoco.Renderer.render makes it current
        return super().render(out=out)

    def render_rgb(self, out: np.ndarray) -> None:
        """Render RGB into out (H, W, 3) uint8: `render()` without its per-frame overheads (making the
        context current when it is, saving and restoring the render flags, a new array per frame)."""
        _make_current(self._gl_context)
        mujoco.mjr_render(self._rect, self._scene, self._mjr_context)
        mujoco.mjr_readPixels(self._pixels, None, self._rect, self._mjr_context)
        out[...] = self._pixels[::-1]

    def update_scene(self, data: mujoco.MjData, camera=-1, scene_option=None) -> None:
        super().update_scene(data, camera, scene_option)
        while self._scene.ngeom >= self._scene.maxgeom:  # full: some geoms may have been left out
            flags = self._scene.flags.copy()
            self._scene = self._resources.scene = mujoco.MjvScene(model=self._model, maxgeom=4 * self._scene.maxgeom)
            self._scene.flags[:] = flags
            super().update_scene(data, camera, scene_option)

    def close(self) -> None:
        if self._resources is not None:
            _release(self._key, self._resources)
        self._resources = self._gl_context = self._mjr_context = None


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

    def render(self, data: mujoco.MjData, rgb: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(H, W, 3) uint8 RGB (into `rgb` if given), (H, W) float32 depth in m or None, (H, W)
        int32 ids or None."""
        r = self._renderer
        r.update_scene(data, self._mjv_camera)
        if rgb is None:
            rgb = np.empty((self.height, self.width, 3), np.uint8)
        if isinstance(r, _PooledRenderer):
            r.render_rgb(rgb)
        else:
            rgb[...] = r.render()
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
