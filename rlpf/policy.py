"""The world model as a predictor of queries: rollouts -> actions in the environment's format.

    rollouts, actions = model_actions(model, query, samples=8, temperature=1.0, seed=0)

Each rollout rolls the query's first `context` simulated frames (with their states and the
caption) forward `horizon` frames; its action is the predicted states of the tracked bodies and
the answer they imply (`rlpf.rewards`).
"""

from __future__ import annotations

import numpy as np
import torch

from rlpf import rewards
from rlpf.queries import Query


def rollout_action(query: Query, episode, n_max: int) -> dict[str, np.ndarray]:
    """A predicted episode (context + horizon frames, states (T, n, 13)) -> an action."""
    c, n = query.context, rewards.tracked(query, n_max)
    positions = np.zeros((query.horizon, n_max, 3), np.float32)
    velocities = np.zeros((query.horizon, n_max, 3), np.float32)
    positions[:, :n] = episode.positions[c:, :n]
    velocities[:, :n] = episode.velocities[c:, :n]
    implied = rewards.predicted_episode(query, positions, velocities, n_max)
    return {"positions": positions, "velocities": velocities, "answer": rewards.answer_vector(rewards.implied_answer(query, implied))}


def model_actions(model, query: Query, samples: int, temperature: float, seed: int, step_temperature: float | None = None, step_spread: torch.Tensor | None = None, frame_spread: torch.Tensor | None = None) -> tuple[list, list[dict]]:
    """`samples` rollouts of `query` (no gradient) and their actions; `step_temperature`: the
    dynamics steps' own (None: `temperature`), `step_spread` and `frame_spread` (samples,): each
    rollout's log-factor on the steps' and the pixels' spread (None: the model's), as
    `worldmodel.rollout.rollout`."""
    with torch.no_grad():
        rollouts = model.rollout(query.episode, context=query.context, horizon=query.horizon, samples=samples, temperature=temperature, seed=seed, step_temperature=step_temperature, step_spread=step_spread, frame_spread=frame_spread)
    return rollouts, [rollout_action(query, r.episode, model.cfg.n_max_objects) for r in rollouts]
