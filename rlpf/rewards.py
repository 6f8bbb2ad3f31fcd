"""Rewards from the simulator for a predicted trajectory: any predictor can be scored.

An action (the prediction for one query) is a dict:
    positions   (horizon, n_max, 3) m     centre-of-mass positions of the tracked bodies per predicted frame
    velocities  (horizon, n_max, 3) m/s   their velocities (a predictor without them may pass
                                          `finite_difference_velocities(...)`)
    answer      (ANSWER_DIM,)             the answer the trajectory implies (`answer_vector`):
                                          position_at -> [dx, dz] m; yes/no -> [1 or 0, 0]
Rows beyond the query's tracked bodies (min(n_bodies, n_max)) are ignored.

The simulator's own trajectory in this format (`simulated_action`) is the reference: a predicted
episode is the query's context followed by the action's states (orientations identity, angular
velocities 0, for prediction and reference alike), so the perfect predictor matches the reference
exactly and every term below is then 0, the maximum:

    trajectory  -min(e / s, TRAJECTORY_CAP): e the mean distance (m) between predicted and simulated
                positions over the predicted frames and tracked bodies, s the simulated bodies' mean
                distance from their last context position over the horizon, at least MIN_SCALE (m)
    events      -(fraction of the family's events, `worldmodel.metrics.EVENT_FAMILIES`, whose
                occurrence in the predicted frames differs from the simulator's: bounce, collision,
                topple, fall); 0 for families without events
    violations  -mean over intrinsic checks (`verifier.check_trajectory`) of the score by which the
                prediction exceeds max(1, the simulator's own score), each capped at 1
    answer      -1 when the action's answer disagrees with the simulator's (below), else 0
    answer_miss -min(log(m) / log(ANSWER_MISS_CAP), 1) for an answer m > 1 tolerances from the
                simulator's (`verifier.answer.tolerance_miss`), else 0; -1 for no answer or a wrong
                yes/no. The binary term above is -1 for every rollout of a group that misses, so a
                group where none agrees gives it no signal; this one still ranks how far each
                rollout misses (log scale: 8 -> 4 tolerances counts as much as 2 -> 1).
                Weight 0 by default

reward = sum of weight * term. A prediction DISAGREES with the simulator when its answer does not
agree with the simulator's answer read from the reference trajectory (`verifier.answer.agree`:
yes/no equal; numbers within max(tolerance * |simulated|, the unit's absolute tolerance
`verifier.loop.ABS_TOLERANCE`)); a missing or non-finite answer disagrees. This one definition
drives the prioritised query buffer and the before/after report. A prediction VIOLATES when it
fails an intrinsic check that the simulator's trajectory passes.

For the world model, a rollout samples its frames and its states' dynamics steps; `rlpf.grpo` weighs
the log-probabilities of both by the reward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

import sim
from rlpf.queries import Query
from verifier.answer import Answer, AnswerError, read_answer, tolerance_miss
from verifier.checks import check_trajectory
from verifier.loop import ABS_TOLERANCE
from worldmodel import metrics

ANSWER_DIM = 2
TERMS = ("trajectory", "events", "violations", "answer", "answer_miss")
DEFAULT_WEIGHTS = {"trajectory": 1.0, "events": 0.5, "violations": 0.5, "answer": 1.0, "answer_miss": 0.0}
TRAJECTORY_CAP = 4.0  # the trajectory term is at least -TRAJECTORY_CAP
MIN_SCALE = 0.05  # m: the least motion scale a trajectory error is normalised by
ANSWER_MISS_CAP = 32.0  # tolerances: an answer missing by this much or more scores answer_miss -1


def tracked(query: Query, n_max: int) -> int:
    """Bodies a prediction is scored on: the first min(n_bodies, n_max)."""
    return min(query.episode.states.shape[1], n_max)


def answer_vector(answer: Answer | None) -> np.ndarray:
    """(ANSWER_DIM,) float32 encoding of an answer; NaN when there is none."""
    out = np.full(ANSWER_DIM, np.nan, np.float32)
    if answer is None:
        return out
    values = np.atleast_1d(np.asarray(answer.value, np.float64)).ravel()[:ANSWER_DIM]
    out[: len(values)] = values
    if isinstance(answer.value, bool):
        out[1] = 0.0
    return out


def decode_answer(query: Query, vector: np.ndarray) -> Answer | None:
    """The answer an action's vector states for `query`'s question; None when it is not finite."""
    vector = np.asarray(vector, np.float64)
    kind, unit = query.question.question, query.question.unit
    if kind == "position_at":
        return Answer([float(vector[0]), float(vector[1])], unit) if np.isfinite(vector[:2]).all() else None
    return Answer(bool(vector[0] > 0.5), unit) if np.isfinite(vector[0]) else None


def finite_difference_velocities(query: Query, positions: np.ndarray) -> np.ndarray:
    """(horizon, n, 3) m/s: backward differences of predicted positions (horizon, n, 3), the first
    one from the last context position."""
    n = positions.shape[1]
    last = np.zeros((1, n, 3))
    k = min(n, query.episode.states.shape[1])
    last[0, :k] = query.episode.positions[query.context - 1, :k]
    return np.diff(np.concatenate([last, positions]), axis=0) * query.episode.fps


def predicted_episode(query: Query, positions: np.ndarray, velocities: np.ndarray, n_max: int) -> sim.Episode:
    """The query's context followed by the predicted states: an Episode of the tracked bodies
    (states (T, n, 13): positions and velocities as given, identity orientation, no spin; the
    context's states the simulator's, reduced the same way). Frames are not kept."""
    ep, c, n = query.episode, query.context, tracked(query, n_max)
    states = np.zeros((len(ep), n, 13))
    states[:, :, 3] = 1.0
    states[:c, :, 0:3] = ep.positions[:c, :n]
    states[:c, :, 7:10] = ep.velocities[:c, :n]
    states[c:, :, 0:3] = np.asarray(positions, np.float64)[:, :n]
    states[c:, :, 7:10] = np.asarray(velocities, np.float64)[:, :n]
    return replace(ep, states=states, body_names=list(ep.body_names[:n]), frames=None, depth=None, segmentation=None, events=[], audio=None)


def implied_answer(query: Query, episode: sim.Episode) -> Answer | None:
    """The answer to the query's question read from a (predicted) episode; None if it shows none."""
    try:
        return read_answer(query.question, episode)
    except AnswerError:
        return None


def simulated_action(query: Query, n_max: int) -> dict[str, np.ndarray]:
    """The simulator's own trajectory and answer in the action format."""
    ep, c, n = query.episode, query.context, tracked(query, n_max)
    positions = np.zeros((query.horizon, n_max, 3), np.float32)
    velocities = np.zeros((query.horizon, n_max, 3), np.float32)
    positions[:, :n] = ep.positions[c:, :n]
    velocities[:, :n] = ep.velocities[c:, :n]
    reference = predicted_episode(query, ep.positions[c:], ep.velocities[c:], n_max)
    return {"positions": positions, "velocities": velocities, "answer": answer_vector(implied_answer(query, reference))}


@dataclass
class Reference:
    """What a prediction of one query is scored against, computed once per query."""

    action: dict[str, np.ndarray]
    episode: sim.Episode
    answer: Answer | None
    check_scores: dict[str, float]
    events: dict[str, bool]
    motion_scale: float  # m


def reference(query: Query, n_max: int) -> Reference:
    action = simulated_action(query, n_max)
    episode = predicted_episode(query, action["positions"], action["velocities"], n_max)
    n, c = tracked(query, n_max), query.context
    moved = np.linalg.norm(episode.positions[c:] - episode.positions[c - 1], axis=-1).mean()  # m
    return Reference(
        action=action,
        episode=episode,
        answer=implied_answer(query, episode),
        check_scores={k: v.score for k, v in check_trajectory(episode).checks.items()},
        events=scored_events(query, episode, n),
        motion_scale=max(float(moved), MIN_SCALE),
    )


def scored_events(query: Query, episode: sim.Episode, bodies: int) -> dict[str, bool]:
    """{event: whether it happens in the predicted frames} for the events of the query's family."""
    names = [e for e, families in metrics.EVENT_FAMILIES.items() if query.question.scene in families]
    found = metrics.detect_events(episode, query.context, bodies)
    return {e: found[e] is not None for e in names}


def answer_miss_term(miss: float) -> float:
    """The answer_miss term (module docstring) of an answer `miss` tolerances from the simulator's."""
    return -min(math.log(max(miss, 1.0)) / math.log(ANSWER_MISS_CAP), 1.0)


@dataclass
class Score:
    reward: float
    terms: dict[str, float]  # each <= 0; see the module docstring
    disagrees: bool
    violates: bool
    position_error: float  # m, mean over predicted frames and tracked bodies
    answer: Answer | None
    answer_miss: float  # the answer's distance from the simulator's in tolerances (<= 1: agrees; inf: none, or a wrong yes/no)
    failed_checks: list[str] = field(default_factory=list)


def score(query: Query, action: dict, ref: Reference, weights: dict[str, float], tolerance: float, n_max: int) -> Score:
    """Score one action for `query` against its reference (module docstring)."""
    positions = np.asarray(action["positions"], np.float64)
    velocities = np.asarray(action["velocities"], np.float64)
    episode = predicted_episode(query, positions, velocities, n_max)
    n, c = tracked(query, n_max), query.context
    finite = np.isfinite(episode.states).all()

    error = np.linalg.norm(episode.positions[c:] - ref.episode.positions[c:], axis=-1).mean() if finite else math.inf
    trajectory = -min(error / ref.motion_scale, TRAJECTORY_CAP)

    events = scored_events(query, episode, n) if finite else {e: not v for e, v in ref.events.items()}
    event_term = -float(np.mean([events[e] != ref.events[e] for e in ref.events])) if ref.events else 0.0

    if finite:
        checks = check_trajectory(episode).checks
        excess = {k: min(max(chk.score - max(ref.check_scores.get(k, 0.0), 1.0), 0.0), 1.0) for k, chk in checks.items()}
        failed = [k for k, chk in checks.items() if not chk.passed and ref.check_scores.get(k, 0.0) <= 1.0]
    else:
        excess, failed = {"permanence": 1.0}, ["permanence"]
    violation_term = -float(np.mean(list(excess.values()))) if excess else 0.0

    answer = decode_answer(query, action["answer"])
    if ref.answer is None:  # the simulator's trajectory shows no answer: nothing to agree with
        miss = 0.0 if answer is None else math.inf
    else:
        miss = math.inf if answer is None else tolerance_miss(answer, ref.answer, tolerance, ABS_TOLERANCE.get(ref.answer.unit, 0.0))
    agrees = miss <= 1.0
    terms = {"trajectory": float(trajectory), "events": event_term, "violations": violation_term, "answer": 0.0 if agrees else -1.0, "answer_miss": answer_miss_term(miss)}
    reward = float(sum(weights[k] * terms[k] for k in TERMS))
    return Score(reward, terms, not agrees, bool(failed), float(error), answer, miss, failed)
