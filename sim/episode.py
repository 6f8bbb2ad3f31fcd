"""`Episode`: the one currency of physfusion.

A simulated episode and a world-model rollout are the same type, so every check, metric, plot and
video works on both. All arrays are numpy; T frames at `fps` frames per second; SI units, z up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# states[..., STATE_SLICES[name]] for the 13 per-body state channels (world frame)
STATE_SLICES = {
    "pos": slice(0, 3),  # centre-of-mass position, m
    "quat": slice(3, 7),  # orientation quaternion, w x y z
    "vel": slice(7, 10),  # centre-of-mass linear velocity, m/s
    "angvel": slice(10, 13),  # angular velocity, rad/s
}


@dataclass
class ContactEvent:
    """A contact as it begins. `impulse` (N*s) integrates the normal force over the contact."""

    time: float  # s, when the two bodies first touch
    body_a: str
    body_b: str  # static geometry is named by its geom (e.g. "floor")
    impulse: float
    position: tuple[float, float, float]  # m, world frame, first contact point


@dataclass
class Camera:
    """Pinhole camera. Pixel (u, v) = K @ (R @ (p_world - position)) in OpenCV convention."""

    name: str
    fovy_deg: float
    width: int
    height: int
    position: np.ndarray  # (3,) m, world frame
    rotation: np.ndarray  # (3, 3) world -> camera (OpenCV: x right, y down, z forward)

    @property
    def intrinsics(self) -> np.ndarray:
        """(3, 3) matrix K with square pixels and the principal point at the image centre."""
        f = 0.5 * self.height / np.tan(np.deg2rad(self.fovy_deg) / 2)
        return np.array([[f, 0, self.width / 2], [0, f, self.height / 2], [0, 0, 1.0]])

    @property
    def extrinsics(self) -> np.ndarray:
        """(4, 4) world -> camera transform."""
        T = np.eye(4)
        T[:3, :3] = self.rotation
        T[:3, 3] = -self.rotation @ self.position
        return T

    def project(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world points -> (..., 2) pixel coordinates (u right, v down)."""
        cam = (points - self.position) @ self.rotation.T
        uvw = cam @ self.intrinsics.T
        return uvw[..., :2] / uvw[..., 2:3]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "fovy_deg": self.fovy_deg,
            "width": self.width,
            "height": self.height,
            "position": self.position.tolist(),
            "rotation": self.rotation.tolist(),
            "intrinsics": self.intrinsics.tolist(),
            "extrinsics": self.extrinsics.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Camera:
        return cls(
            d["name"], d["fovy_deg"], d["width"], d["height"], np.asarray(d["position"]), np.asarray(d["rotation"])
        )


@dataclass
class Episode:
    """One simulated (or predicted) episode.

    frames: (T, H, W, 3) uint8 RGB, or None when rendering was off
    depth: (T, H, W) float32 metres along the optical axis, optional
    segmentation: (T, H, W) int32; 0 is background/static, i+1 is body_names[i]
    times: (T,) s
    states: (T, n_bodies, 13) float64, see STATE_SLICES
    audio: (S,) float32 mono waveform in [-1, 1] at `audio_rate` Hz
    actions: (T, A) float32 applied during the frame that starts at times[t], or None (passive)
    """

    scene: str
    seed: int
    fps: float
    times: np.ndarray
    body_names: list[str]
    states: np.ndarray
    params: dict[str, Any]
    caption: str
    frames: np.ndarray | None = None
    depth: np.ndarray | None = None
    segmentation: np.ndarray | None = None
    events: list[ContactEvent] = field(default_factory=list)
    audio: np.ndarray | None = None
    audio_rate: int = 16000
    actions: np.ndarray | None = None
    camera: Camera | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.times)

    @property
    def positions(self) -> np.ndarray:
        """(T, n_bodies, 3) centre-of-mass positions, m."""
        return self.states[..., STATE_SLICES["pos"]]

    @property
    def velocities(self) -> np.ndarray:
        """(T, n_bodies, 3) centre-of-mass velocities, m/s."""
        return self.states[..., STATE_SLICES["vel"]]

    def body(self, name: str) -> int:
        return self.body_names.index(name)

    def slice(self, start: int, stop: int) -> Episode:
        """Frames [start, stop) as an episode; events, audio and times keep absolute time."""

        def cut(a):
            return None if a is None else a[start:stop]

        t0, t1 = self.times[start], self.times[stop - 1] + 1.0 / self.fps
        audio = None
        if self.audio is not None:
            audio = self.audio[int(round(t0 * self.audio_rate)) : int(round(t1 * self.audio_rate))]
        return Episode(
            scene=self.scene,
            seed=self.seed,
            fps=self.fps,
            times=self.times[start:stop],
            body_names=list(self.body_names),
            states=self.states[start:stop],
            params=self.params,
            caption=self.caption,
            frames=cut(self.frames),
            depth=cut(self.depth),
            segmentation=cut(self.segmentation),
            events=[e for e in self.events if t0 <= e.time < t1],
            audio=audio,
            audio_rate=self.audio_rate,
            actions=cut(self.actions),
            camera=self.camera,
            provenance=self.provenance,
        )
