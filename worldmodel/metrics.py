"""Metrics of a predicted episode against the simulated one: pure numpy on `sim.Episode`.

A prediction and the simulation are the same type, so every function here takes two episodes (or
one, for the event detectors and the centroid parser) and the index `start` of the first predicted
frame (= the number of context frames). Curves have one value per predicted frame, H = T - start.

    pos = position_error(pred, true, start, bodies=2)      # (H,) m, mean over the first 2 bodies
    psnr(pred.frames[start:], true.frames[start:])         # (H,) dB
    ssim(pred.frames[start:], true.frames[start:])         # (H,)
    colours = body_colours(true, context=4, bodies=2)      # (2, 3) RGB of each body as rendered
    uv = parse_centroids(pred.frames, colours)             # (T, 2, 2) px, NaN where not seen
    detect_events(true, start)                             # {"bounced": 10, "collided": None, ...}

Events are detected from the states alone (positions and velocities; predicted orientations are not
used, the model does not predict them), so the same detector runs on the simulated and the
predicted episode. `EVENT_FAMILIES` names the families where each event is meaningful.
"""

from __future__ import annotations

import numpy as np

from sim.episode import Episode

# --- state errors ---------------------------------------------------------------------------------


def position_error(pred: Episode, true: Episode, start: int, bodies: int) -> np.ndarray:
    """(H,) m: Euclidean centre-of-mass distance per predicted frame, mean over bodies [0, bodies)."""
    diff = pred.positions[start:, :bodies] - true.positions[start : len(pred), :bodies]  # (H, b, 3)
    return np.linalg.norm(diff, axis=-1).mean(axis=1)


def velocity_error(pred: Episode, true: Episode, start: int, bodies: int) -> np.ndarray:
    """(H,) m/s: Euclidean velocity distance per predicted frame, mean over bodies [0, bodies)."""
    diff = pred.velocities[start:, :bodies] - true.velocities[start : len(pred), :bodies]  # (H, b, 3)
    return np.linalg.norm(diff, axis=-1).mean(axis=1)


# --- pixels ---------------------------------------------------------------------------------------

PSNR_MAX_DB = 100.0  # identical frames have infinite PSNR; reported as this instead


def psnr(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(T,) dB per frame of uint8 frames (T, H, W, 3): 10 log10(255^2 / MSE), at most PSNR_MAX_DB."""
    mse = ((pred.astype(np.float64) - true.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        db = 10 * np.log10(255.0**2 / mse)
    return np.minimum(db, PSNR_MAX_DB)


def gaussian_window(sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    """(2 radius + 1,) normalised Gaussian taps."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _blur(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of (T, H, W, C) along H and W: (T, H-k+1, W-k+1, C)."""
    k = len(w)
    rows = sum(w[i] * x[:, i : x.shape[1] - k + 1 + i] for i in range(k))
    return sum(w[i] * rows[:, :, i : x.shape[2] - k + 1 + i] for i in range(k))


def ssim(pred: np.ndarray, true: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """(T,) structural similarity per frame of uint8 frames (T, H, W, 3) (Wang et al. 2004): an 11-tap
    Gaussian window of std `sigma` px, K1 = 0.01, K2 = 0.03, L = 255, averaged over the colour channels
    and the positions where the window fits. 1 for identical frames."""
    x, y = pred.astype(np.float64), true.astype(np.float64)
    w = gaussian_window(sigma)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = _blur(x, w), _blur(y, w)
    vx, vy, cxy = _blur(x * x, w) - mx * mx, _blur(y * y, w) - my * my, _blur(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(axis=(1, 2, 3))


# --- a centroid parser: where is each body in a frame? --------------------------------------------

COLOUR_TOLERANCE = 60.0  # RGB distance (0..255 units) within which a pixel counts as a body's colour
SATURATED = 100.0  # max - min of a pixel's RGB (0..255) above which it is a body's colour, not floor or sky


def body_colours(episode: Episode, context: int, bodies: int, window: int = 2) -> np.ndarray:
    """(bodies, 3) RGB of each body as rendered, from the context frames only: the mean colour of its
    segmentation pixels when the episode has segmentation; else, in each context frame, the pixel
    under its projected centre of mass if saturated, otherwise the most saturated pixel within `window`
    px of it (bodies wear saturated colours, the floor and sky do not; a gear's hub or a cup's rim may
    sit at the centre itself), median over frames.
    NaN for a body never seen in the context, and for bodies whose colours are within
    COLOUR_TOLERANCE of another body's (they cannot be told apart: pour's beads)."""
    frames = episode.frames[:context].astype(np.float64)  # (c, H, W, 3)
    colours = np.full((bodies, 3), np.nan)
    if episode.segmentation is not None:
        for b in range(bodies):
            mask = episode.segmentation[:context] == b + 1
            if mask.any():
                colours[b] = frames[mask].mean(axis=0)
        return _distinct(colours)
    H, W = frames.shape[1:3]
    uv = np.floor(episode.camera.project(episode.positions[:context, :bodies])).astype(int)  # (c, b, 2) px
    for b in range(bodies):
        seen = []
        for t, (u, v) in enumerate(uv[:, b]):
            if not (0 <= u < W and 0 <= v < H):
                continue
            centre = frames[t, v, u]
            if np.ptp(centre) >= SATURATED:
                seen.append(centre)
                continue
            patch = frames[t, max(v - window, 0) : v + window + 1, max(u - window, 0) : u + window + 1].reshape(-1, 3)
            seen.append(patch[np.argmax(np.ptp(patch, axis=1))])
        if seen:
            colours[b] = np.median(seen, axis=0)
    return _distinct(colours)


def _distinct(colours: np.ndarray) -> np.ndarray:
    """`colours` (b, 3) with NaN rows for those within COLOUR_TOLERANCE of another row."""
    dist = np.linalg.norm(colours[:, None] - colours[None], axis=-1) + np.diag(np.full(len(colours), np.inf))
    ambiguous = (dist < COLOUR_TOLERANCE).any(axis=1)
    return np.where(ambiguous[:, None], np.nan, colours)


def parse_centroids(frames: np.ndarray, colours: np.ndarray, tolerance: float = COLOUR_TOLERANCE) -> np.ndarray:
    """(T, b, 2) pixel centroids (u right, v down; pixel (i, j) has its centre at (j + 0.5, i + 0.5)) of
    each body in uint8 frames (T, H, W, 3): the pixels whose colour is nearest to the body's (`colours`,
    (b, 3)) and within `tolerance`. NaN where no pixel matches."""
    dist = np.linalg.norm(frames.astype(np.float64)[..., None, :] - colours, axis=-1)  # (T, H, W, b)
    dist = np.where(np.isnan(dist), np.inf, dist)
    owner = dist.argmin(axis=-1)
    matched = dist.min(axis=-1) < tolerance  # (T, H, W)
    T, H, W = frames.shape[:3]
    v, u = np.mgrid[0:H, 0:W] + 0.5
    out = np.full((T, len(colours), 2), np.nan)
    for b in range(len(colours)):
        mask = matched & (owner == b)
        count = mask.sum(axis=(1, 2))
        seen = count > 0
        out[seen, b, 0] = (mask * u).sum(axis=(1, 2))[seen] / count[seen]
        out[seen, b, 1] = (mask * v).sum(axis=(1, 2))[seen] / count[seen]
    return out


def frame_position_error(frames: np.ndarray, true: Episode, start: int, colours: np.ndarray) -> np.ndarray:
    """(H, b) px: distance between each body's centroid parsed from `frames` (T, H, W, 3) and its true
    centre of mass projected by the camera, for the predicted frames [start, T). NaN where the parser
    finds no pixel of the body."""
    bodies = len(colours)
    parsed = parse_centroids(frames[start:], colours)  # (H, b, 2)
    projected = true.camera.project(true.positions[start : len(frames), :bodies])  # (H, b, 2)
    return np.linalg.norm(parsed - projected, axis=-1)


# --- events ---------------------------------------------------------------------------------------
# Judged on the predicted frames [start, T) alone: a velocity change between two predicted frames (not
# across the seam between the last known frame and the first predicted one, where a predictor's first
# step may jump), a height against the last known frame start - 1.

BOUNCE_SPEED = 0.1  # m/s: a bounce is a frame where a body falling faster than this rises faster than this
COLLISION_DV = 0.05  # m/s: a collision changes two bodies' horizontal velocities by more than this, oppositely
TOPPLE_DROP = 0.02  # m: a body toppling (or falling from a tower) drops its centre this far
FALL_DROP = 0.2  # m: a body falling off a table or a ledge drops its centre this far

EVENT_FAMILIES = {
    "bounced": ("drop", "projectile"),
    "collided": ("collision",),
    "toppled": ("stack",),
    "fell_off": ("table_fall",),
}
"""event -> the scene families where it is scored (elsewhere it is trivially absent or ill-defined)"""


def _first(flags: np.ndarray, start: int) -> int | None:
    """The first frame index >= start where flags (T,) is True, or None."""
    hits = np.flatnonzero(flags[start:])
    return int(start + hits[0]) if len(hits) else None


def bounced(episode: Episode, start: int, bodies: int | None = None) -> int | None:
    """First frame t > start where some body's vertical velocity went from < -BOUNCE_SPEED at t - 1 to
    > BOUNCE_SPEED at t, or None."""
    vz = episode.velocities[:, :bodies, 2]  # (T, b)
    flags = np.zeros(len(vz), bool)
    flags[1:] = ((vz[:-1] < -BOUNCE_SPEED) & (vz[1:] > BOUNCE_SPEED)).any(axis=1)
    return _first(flags, start + 1)


def collided(episode: Episode, start: int, bodies: int | None = None) -> int | None:
    """First frame t > start where two bodies' horizontal velocities both changed by more than
    COLLISION_DV since t - 1, in opposite directions (momentum exchanged between them), or None."""
    dv = np.diff(episode.velocities[:, :bodies, :2], axis=0)  # (T-1, b, 2)
    big = np.linalg.norm(dv, axis=-1) > COLLISION_DV  # (T-1, b)
    opposite = np.einsum("tid,tjd->tij", dv, dv) < 0  # (T-1, b, b)
    flags = np.zeros(len(episode), bool)
    flags[1:] = (opposite & big[:, :, None] & big[:, None, :]).any(axis=(1, 2))
    return _first(flags, start + 1)


def _dropped(episode: Episode, start: int, bodies: int | None, depth: float) -> int | None:
    """First frame t >= start where some body's centre is `depth` (m) below its height at start - 1."""
    z = episode.positions[:, :bodies, 2]  # (T, b)
    return _first((z < z[start - 1] - depth).any(axis=1), start)


def toppled(episode: Episode, start: int, bodies: int | None = None) -> int | None:
    """First frame t >= start where some body's centre is TOPPLE_DROP below its last known height."""
    return _dropped(episode, start, bodies, TOPPLE_DROP)


def fell_off(episode: Episode, start: int, bodies: int | None = None) -> int | None:
    """First frame t >= start where some body's centre is FALL_DROP below its last known height."""
    return _dropped(episode, start, bodies, FALL_DROP)


EVENT_DETECTORS = {"bounced": bounced, "collided": collided, "toppled": toppled, "fell_off": fell_off}


def detect_events(episode: Episode, start: int, bodies: int | None = None) -> dict[str, int | None]:
    """{event: the first frame where it happens in the prediction window, or None} for every event
    type, over bodies [0, bodies) (all when None). start >= 1."""
    return {name: detect(episode, start, bodies) for name, detect in EVENT_DETECTORS.items()}
