"""Offscreen rendering of RGB, depth and segmentation from the scene's `main` camera."""

from __future__ import annotations

import numpy as np

from sim import _gl  # noqa: F401  (selects the backend before mujoco is imported)
import mujoco

from sim.episode import Camera


class RenderError(RuntimeError):
    pass


class FrameRenderer:
    """Renders one camera. Shadows and multisampling are off by default: on a CPU (Mesa) they
    dominate the cost (a 64x64 frame: ~0.6 ms without, ~30 ms with the shadow map).

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
            self._renderer = mujoco.Renderer(model, height=height, width=width)
        except Exception as err:  # the backend could not make a GL context
            from sim._gl import INSTALL_HINT

            raise RenderError(f"{INSTALL_HINT} (MuJoCo said: {err})") from err
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = shadows
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        self._camera = camera
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
        r.update_scene(data, self._camera)
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
