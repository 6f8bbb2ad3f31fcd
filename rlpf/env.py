"""`QueryEnv` (`physfusion/Query-v0`): one episode is one physical query, scored by the simulator.

    import gymnasium as gym, rlpf
    env = gym.make("physfusion/Query-v0", num_queries=8, horizon=8)
    obs, info = env.reset(seed=0)                      # or reset(options={"query": 3})
    obs["frames"].shape, obs["caption"], obs["question"]
    obs, reward, terminated, truncated, info = env.step(predictor(obs))           # a dict: see Action below
    info["simulated_action"]                           # the simulator's own trajectory, same format

Observation (a Dict):
    frames      (context, S, S, 3) uint8   the context frames
    states      (context, n_max, 6) float32 positions m and velocities m/s of the tracked bodies
                                           in the context (zero rows for absent bodies)
    body_mask   (n_max,) 0/1                which rows are bodies
    caption     text                        the scene's caption (what cannot be seen)
    question    text                        the question (`rlpf.queries.question_text`)
Action (a Dict; `rlpf.rewards`): positions and velocities (horizon, n_max, 3) of the tracked bodies
over the horizon, and the answer (ANSWER_DIM,) they imply. The reward is `rlpf.rewards.score`;
the episode terminates after one step.
"""

from __future__ import annotations

import string
from typing import ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlpf import rewards
from rlpf.queries import FAMILIES, Query, make_queries

TEXT_CHARSET = string.printable + "°²μ×–—"
MAX_TEXT = 1024  # characters of caption or question
LIMIT = 100.0  # bound of the position (m), velocity (m/s) and answer boxes


def observe(query: Query, n_max: int) -> dict:
    """The observation of `query` (module docstring)."""
    ep, c = query.episode, query.context
    n = rewards.tracked(query, n_max)
    states = np.zeros((c, n_max, 6), np.float32)
    states[:, :n, :3] = ep.positions[:c, :n]
    states[:, :n, 3:] = ep.velocities[:c, :n]
    return {
        "frames": ep.frames[:c].copy(),
        "states": states,
        "body_mask": (np.arange(n_max) < n).astype(np.int8),
        "caption": ep.caption[:MAX_TEXT],
        "question": query.text[:MAX_TEXT],
    }


class QueryEnv(gym.Env):
    """Physical queries as a one-step environment (module docstring).

    queries: a query set (`rlpf.make_queries`); when None, `num_queries` are made from
    `families` (split, seed, context, horizon, image_size, fps). weights: reward weights per term
    (`rlpf.rewards.DEFAULT_WEIGHTS`); tolerance: relative agreement of answers.
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(
        self,
        queries: list[Query] | None = None,
        *,
        num_queries: int = 8,
        families: tuple[str, ...] | list[str] = FAMILIES,
        split: str = "val",
        seed: int = 0,
        context: int = 4,
        horizon: int = 8,
        image_size: int = 64,
        fps: float = 20.0,
        n_max_objects: int = 8,
        weights: dict[str, float] | None = None,
        tolerance: float = 0.05,
    ):
        if queries is None:
            queries = make_queries(num_queries, split=split, seed=seed, context=context, horizon=horizon, families=families, image_size=image_size, fps=fps)
        if not queries:
            raise ValueError("parameter 'queries': got an empty list; allowed: at least one query")
        shapes = {(q.context, q.horizon, q.episode.frames.shape[1:]) for q in queries}
        if len(shapes) != 1:
            raise ValueError(f"parameter 'queries': (context, horizon, frame shape) differ across queries: {sorted(shapes)}; allowed: one")
        (c, h, frame_shape), = shapes
        self.queries, self.n_max = list(queries), n_max_objects
        self.weights = {**rewards.DEFAULT_WEIGHTS, **(weights or {})}
        self.tolerance = tolerance
        self._references: dict[int, rewards.Reference] = {}
        self.query: Query | None = None
        self.observation_space = spaces.Dict(
            {
                "frames": spaces.Box(0, 255, (c, *frame_shape), np.uint8),
                "states": spaces.Box(-LIMIT, LIMIT, (c, n_max_objects, 6), np.float32),
                "body_mask": spaces.MultiBinary(n_max_objects),
                "caption": spaces.Text(MAX_TEXT, min_length=0, charset=TEXT_CHARSET),
                "question": spaces.Text(MAX_TEXT, min_length=0, charset=TEXT_CHARSET),
            }
        )
        self.action_space = spaces.Dict(
            {
                "positions": spaces.Box(-LIMIT, LIMIT, (h, n_max_objects, 3), np.float32),
                "velocities": spaces.Box(-LIMIT, LIMIT, (h, n_max_objects, 3), np.float32),
                "answer": spaces.Box(-LIMIT, LIMIT, (rewards.ANSWER_DIM,), np.float32),
            }
        )

    def reference(self, query: Query) -> rewards.Reference:
        """The simulator's side of the score of `query` (cached)."""
        if query.index not in self._references:
            self._references[query.index] = rewards.reference(query, self.n_max)
        return self._references[query.index]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        k = (options or {}).get("query")
        if k is None:
            k = int(self.np_random.integers(len(self.queries)))
        if not 0 <= k < len(self.queries):
            raise ValueError(f"reset option 'query': got {k!r}; allowed: 0 .. {len(self.queries) - 1}")
        self.query = self.queries[k]
        return observe(self.query, self.n_max), {"query": k, "scene": self.query.question.scene}

    def step(self, action: dict):
        if self.query is None:
            raise RuntimeError("QueryEnv.step before reset")
        ref = self.reference(self.query)
        result = rewards.score(self.query, action, ref, self.weights, self.tolerance, self.n_max)
        info = {
            "simulated_action": {k: v.copy() for k, v in ref.action.items()},
            "reward_terms": result.terms,
            "disagrees": result.disagrees,
            "violates": result.violates,
            "failed_checks": result.failed_checks,
            "position_error_m": result.position_error,
            "answer": None if result.answer is None else result.answer.value,
            "simulated_answer": None if ref.answer is None else ref.answer.value,
        }
        obs = observe(self.query, self.n_max)
        return obs, result.reward, True, False, info
