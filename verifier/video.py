"""Side-by-side video, predicted | simulated, with each body's trajectory drawn so far.

Frames are upscaled (nearest neighbour) by `scale`; trajectories are body positions projected with
the episode's camera (`sim.Camera.project`): predicted in yellow, simulated in white, and the
simulated one also faintly on the predicted panel for comparison.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

import sim

PREDICTED = np.array([255, 220, 40], np.uint8)
SIMULATED = np.array([255, 255, 255], np.uint8)
FAINT = np.array([170, 170, 170], np.uint8)
GAP = 4  # px between panels


def draw_path(image: np.ndarray, points: np.ndarray, colour: np.ndarray) -> None:
    """Draw a polyline (N, 2) of pixel (u, v) points into image (H, W, 3) in place, 2 px wide."""
    h, w = image.shape[:2]
    points = points[np.isfinite(points).all(axis=1)]
    for a, b in zip(points[:-1], points[1:]):
        n = int(np.ceil(np.abs(b - a).max())) + 1
        if n > 4 * (h + w):  # a jump across the image (teleport, vanishing): not a path
            continue
        line = a + (b - a) * np.linspace(0, 1, n)[:, None]
        for du, dv in ((0, 0), (1, 0), (0, 1), (1, 1)):
            u, v = np.round(line[:, 0]).astype(int) + du, np.round(line[:, 1]).astype(int) + dv
            ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
            image[v[ok], u[ok]] = colour


def panel(episode: sim.Episode, t: int, scale: int, paths: list[tuple[sim.Episode, np.ndarray]]) -> np.ndarray:
    """Frame t of `episode` upscaled, with the given (episode, colour) trajectories up to t."""
    frame = episode.frames[min(t, len(episode.frames) - 1)].repeat(scale, 0).repeat(scale, 1).copy()
    for source, colour in paths:
        if source.camera is None:
            continue
        upto = min(t, len(source.states) - 1) + 1
        for k in range(source.states.shape[1]):
            pixels = source.camera.project(source.positions[:upto, k]) * (frame.shape[0] / source.camera.height)
            draw_path(frame, pixels, colour)
    return frame


def compose(predicted: sim.Episode | None, simulated: sim.Episode | None, scale: int = 4) -> np.ndarray:
    """(T, H, W, 3) uint8 frames: predicted | simulated side by side (either may be None), even-sized."""
    episodes = [e for e in (predicted, simulated) if e is not None and e.frames is not None]
    if not episodes:
        raise ValueError("write_video: no episode with frames")
    frames = []
    for t in range(max(len(e.frames) for e in episodes)):
        panels = []
        if predicted is not None and predicted.frames is not None:
            paths = [(simulated, FAINT)] if simulated is not None else []
            panels.append(panel(predicted, t, scale, paths + [(predicted, PREDICTED)]))
        if simulated is not None and simulated.frames is not None:
            panels.append(panel(simulated, t, scale, [(simulated, SIMULATED)]))
        gap = np.zeros((panels[0].shape[0], GAP, 3), np.uint8)
        row = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
        frames.append(row[: row.shape[0] // 2 * 2, : row.shape[1] // 2 * 2])  # H.264 wants even sizes
    return np.stack(frames)


def write_video(path: str | os.PathLike, predicted: sim.Episode | None, simulated: sim.Episode | None,
                scale: int = 4) -> str:
    """Write `compose(predicted, simulated)` to `path` (.mp4; .gif if no H.264 encoder). Returns the
    path written."""
    frames = compose(predicted, simulated, scale)
    fps = (predicted if predicted is not None else simulated).fps
    path = Path(path)
    for target, kwargs in (
        (path, {"fps": fps, "codec": "libx264", "macro_block_size": 1, "ffmpeg_log_level": "error",
                "pixelformat": "yuv420p"}),
        (path.with_suffix(".gif"), {"duration": 1.0 / fps, "loop": 0}),
    ):
        tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex}{target.suffix}")
        try:
            with imageio.get_writer(tmp, **kwargs) as writer:
                for frame in frames:
                    writer.append_data(frame)
            os.replace(tmp, target)
            return str(target)
        except Exception:  # no H.264 encoder: fall back to GIF
            tmp.unlink(missing_ok=True)
    raise RuntimeError(f"could not write {path}")
