"""Physical queries for RL from physical feedback: a simulated scene and one question about it.

    queries = make_queries(16, split="train", seed=0, context=4, horizon=16)
    q = queries[0]
    q.episode.frames.shape       # (context + horizon, 64, 64, 3): the simulator's video at the model's rate
    q.question                   # verifier.PhysicalQuery: scene, params, question kind, time
    q.text                       # 'Where is the red sphere at t = 0.95 s? ...'

A query is the scene of `sim.simulate(scene, split=split, seed=...)` run for context + horizon frames
at the model's frame rate and size. Its question is answered from positions alone, so a predicted
trajectory implies an answer and `verifier.read_answer` reads it from predicted and simulated
episodes alike: `topples` for towers, `collides` for ball pairs, elsewhere `position_at` the last
predicted frame (the horizontal shift and height change of body 0 since the start).

Episode seeds are a pure function of (seed, split, i): the training pool (split=train) and the
held-out set (split=val: the same parameter ranges, other seeds) never share a scene.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

import sim
from verifier.query import PhysicalQuery

FAMILIES = ("drop", "projectile", "collision", "ramp", "pendulum", "stack", "table_fall")
"""families a query may come from: at most 8 bodies each, and a question their states answer"""

QUESTION_KINDS = {"stack": "topples", "collision": "collides"}
"""family -> verifier question kind; the others ask `position_at` the last predicted frame"""

RETRIES = 20  # an unstable simulation is replaced by one with a derived seed, this many times at most


@dataclass
class Query:
    """One physical query: the simulator's episode (the context the predictor sees, and the truth
    over the horizon) and the question asked about it."""

    index: int
    """position in its query set"""
    question: PhysicalQuery
    episode: sim.Episode
    """context + horizon frames at the model's frame rate, rendered, with states (T, n, 13)"""
    context: int
    """frames the predictor is given; it predicts the remaining `horizon`"""

    @property
    def horizon(self) -> int:
        return len(self.episode) - self.context

    @property
    def text(self) -> str:
        return question_text(self.question)


def question_text(question: PhysicalQuery) -> str:
    """The question in English, with the unit of its answer."""
    if question.question == "topples":
        return "Does the tower topple? (yes or no)"
    if question.question == "collides":
        return "Do the two balls collide? (yes or no)"
    return (
        f"Where is object 0 at t = {question.time:.2f} s? "
        "(its horizontal shift along x and its height change since t = 0, in m)"
    )


def episode_seed(seed: int, split: str, i: int, attempt: int = 0) -> int:
    """The simulator seed of query i of a set: a pure function of its arguments."""
    return int(np.random.default_rng([seed, zlib.crc32(split.encode()), i, attempt]).integers(2**31))


def make_query(i: int, scene: str, *, split: str, seed: int, context: int, horizon: int, image_size: int = 64, fps: float = 20.0) -> Query:
    """Query i of a set: `scene` simulated for context + horizon frames (a stable seed is searched)."""
    seconds = (context + horizon) / fps
    for attempt in range(RETRIES):
        try:
            episode = sim.simulate(scene, split=split, seed=episode_seed(seed, split, i, attempt), seconds=seconds, fps=fps, width=image_size, height=image_size)
            break
        except sim.UnstableSimulation:
            continue
    else:
        raise RuntimeError(f"query {i}: {RETRIES} simulations of {scene!r} in a row were unstable")
    kind = QUESTION_KINDS.get(scene, "position_at")
    time = float(episode.times[-1]) if kind == "position_at" else None
    question = PhysicalQuery(scene=scene, params=episode.params, question=kind, time=time, text="")
    question.text = question_text(question)
    return Query(index=i, question=question, episode=episode, context=context)


def make_queries(
    n: int,
    *,
    split: str,
    seed: int,
    context: int,
    horizon: int,
    families: tuple[str, ...] | list[str] = FAMILIES,
    image_size: int = 64,
    fps: float = 20.0,
) -> list[Query]:
    """n queries, query i from family families[i % len(families)]."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"parameter 'families': got {list(families)!r}; allowed: a non-empty subset of {', '.join(FAMILIES)}")
    return [
        make_query(i, families[i % len(families)], split=split, seed=seed, context=context, horizon=horizon, image_size=image_size, fps=fps)
        for i in range(n)
    ]
