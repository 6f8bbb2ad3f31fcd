"""Baseline predictors: what the world model must beat.

Each takes an episode (of at least `context` frames; only its first `context` frames and states are
read, the information the model gets) and returns a predicted `sim.Episode` of `context + horizon`
frames: the context copied, then the prediction. Orientations are held at their last context value.

    copy_last(ep, context=4, horizon=30)              # the world freezes: last frame, last positions, at rest
    constant_velocity(ep, context=4, horizon=30)      # every body keeps its last context velocity
    constant_acceleration(ep, context=4, horizon=30)  # ballistic: the context's acceleration is kept

Only `copy_last` predicts frames; the others predict states (their `frames` are None).
"""

from __future__ import annotations

import numpy as np

from sim.episode import STATE_SLICES, Episode

POS, VEL, ANGVEL = STATE_SLICES["pos"], STATE_SLICES["vel"], STATE_SLICES["angvel"]


def _predicted(episode: Episode, context: int, horizon: int, states: np.ndarray, frames: np.ndarray | None) -> Episode:
    """An Episode of context + horizon frames holding `states` (T, n, 13) and `frames` (T, H, W, 3)."""
    T = context + horizon
    return Episode(
        scene=episode.scene,
        seed=episode.seed,
        fps=episode.fps,
        times=episode.times[0] + np.arange(T) / episode.fps,
        body_names=list(episode.body_names),
        states=states,
        params=episode.params,
        caption=episode.caption,
        frames=frames,
        camera=episode.camera,
        provenance={**episode.provenance, "baseline": {"context": context, "horizon": horizon}},
    )


def _held_states(episode: Episode, context: int, horizon: int) -> np.ndarray:
    """(T, n, 13): the context states, then the last context state repeated."""
    last = episode.states[context - 1]
    return np.concatenate([episode.states[:context], np.repeat(last[None], horizon, axis=0)])


def _lead_times(episode: Episode, context: int, horizon: int) -> np.ndarray:
    """(horizon, 1, 1) s: time of each predicted frame after the last context frame."""
    return (np.arange(1, horizon + 1) / episode.fps)[:, None, None]


def copy_last(episode: Episode, context: int, horizon: int) -> Episode:
    """The last context frame repeated; bodies stay where they were, at rest."""
    states = _held_states(episode, context, horizon)
    states[context:, :, VEL] = 0.0
    states[context:, :, ANGVEL] = 0.0
    frames = None
    if episode.frames is not None:
        frames = np.concatenate([episode.frames[:context], np.repeat(episode.frames[context - 1][None], horizon, axis=0)])
    return _predicted(episode, context, horizon, states, frames)


def constant_velocity(episode: Episode, context: int, horizon: int) -> Episode:
    """Each body moves on at its last context velocity: p = p_last + v_last * dt."""
    states = _held_states(episode, context, horizon)
    last = episode.states[context - 1]
    states[context:, :, POS] = last[:, POS] + last[:, VEL] * _lead_times(episode, context, horizon)
    return _predicted(episode, context, horizon, states, None)


def constant_acceleration(episode: Episode, context: int, horizon: int) -> Episode:
    """Ballistic: each body follows the quadratic p0 + u t + a t^2 / 2 fitted to its context positions
    (least squares), and its velocity goes on from the last context velocity with that acceleration
    a (m/s^2). Exact for free flight sampled from MuJoCo's semi-implicit integrator (positions are
    quadratic in time). Needs context >= 3."""
    if context < 3:
        raise ValueError(f"constant_acceleration: context={context}; allowed: >= 3 (a quadratic fit needs three positions)")
    t = episode.times[:context] - episode.times[context - 1]  # (c,) s, 0 at the last context frame
    design = np.stack([np.ones_like(t), t, 0.5 * t**2], axis=1)  # (c, 3)
    pos = episode.positions[:context]  # (c, n, 3)
    c, n = pos.shape[:2]
    fit, *_ = np.linalg.lstsq(design, pos.reshape(c, -1), rcond=None)  # (3, n*3)
    p0, u, accel = fit.reshape(3, n, 3)  # m, m/s, m/s^2
    dt = _lead_times(episode, context, horizon)  # (h, 1, 1)
    states = _held_states(episode, context, horizon)
    states[context:, :, POS] = p0 + u * dt + 0.5 * accel * dt**2
    states[context:, :, VEL] = episode.velocities[context - 1] + accel * dt
    return _predicted(episode, context, horizon, states, None)


BASELINES = {"copy_last": copy_last, "constant_velocity": constant_velocity, "constant_acceleration": constant_acceleration}
"""name -> predictor(episode, context, horizon) -> Episode"""
