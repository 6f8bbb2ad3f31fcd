"""Held-out evaluation of a world model on physical queries (the before/after report).

    figures = evaluate(model, queries, samples=2, temperature=1.0, seed=0, long_horizon_s=1.5)

Every query is rolled out `samples` times with seeds that depend only on (seed, query), so two
models are compared on the same random draws. Figures (means over queries and samples):
    disagreement_rate        fraction of rollouts whose answer disagrees with the simulator's (`rlpf.rewards`)
    disagreement_by_family   {scene family: the same rate over that family's queries}
    answer_miss_by_family    {family asking a number (position_at): the median distance of the
                             rollouts' answers from the simulator's, in tolerances (<= 1 agrees)}:
                             how far a family is from agreeing, which the rate does not show
                             (None where most rollouts imply no answer)
    violation_rate           fraction failing an intrinsic check the simulator's trajectory passes
    failed_checks            mean number of such checks failed per rollout (finer than the rate,
                             which saturates at 1 for a weak model)
    violations_by_check      {intrinsic check: fraction of rollouts failing it where the simulator's
                             trajectory passes it}: which checks a change of the model breaks
    position_error           m, tracked bodies' position error over all predicted frames
    position_error_long      m, the same over predicted frames at least long_horizon_s after the
                             last context frame (None when the horizon is shorter)
    psnr                     dB, predicted frames against the simulator's (at most 100 per frame)
    reward                   the reward (`rlpf.rewards.score`)
"""

from __future__ import annotations

import numpy as np

from rlpf import rewards
from rlpf.policy import model_actions
from rlpf.queries import Query
from worldmodel import metrics

EVAL_SEED_OFFSET = 7919  # rollout seeds of query i: seed * EVAL_SEED_OFFSET + i


def evaluate(
    model,
    queries: list[Query],
    *,
    samples: int,
    temperature: float,
    seed: int,
    long_horizon_s: float,
    weights: dict[str, float],
    tolerance: float,
    references: dict[int, rewards.Reference] | None = None,
    bar=None,
    step_temperature: float | None = None,
) -> dict:
    """Figures of `model` on `queries` (module docstring). `references` caches the simulator's side;
    `step_temperature`: the dynamics steps' own temperature (None: `temperature`)."""
    n_max = model.cfg.n_max_objects
    references = {} if references is None else references
    rows = []
    was_training = model.training
    model.eval()
    for q in queries:
        if q.index not in references:
            references[q.index] = rewards.reference(q, n_max)
        ref = references[q.index]
        rollouts, actions = model_actions(model, q, samples, temperature, seed * EVAL_SEED_OFFSET + q.index, step_temperature)
        lead = np.arange(1, q.horizon + 1) / q.episode.fps  # (horizon,) s after the last context frame
        n = rewards.tracked(q, n_max)
        for r, action in zip(rollouts, actions):
            s = rewards.score(q, action, ref, weights, tolerance, n_max)
            curve = metrics.position_error(r.episode, q.episode, q.context, n)  # (horizon,) m
            long = curve[lead >= long_horizon_s - 1e-9]
            rows.append(
                {
                    "family": q.question.scene,
                    "disagrees": s.disagrees,
                    "answer_miss": s.answer_miss if q.question.question == "position_at" else None,
                    "violates": s.violates,
                    "failed_checks": len(s.failed_checks),
                    "failed": set(s.failed_checks),
                    "position_error": float(curve.mean()),
                    "position_error_long": float(long.mean()) if len(long) else None,
                    "psnr": float(metrics.psnr(r.episode.frames[q.context :], q.episode.frames[q.context :]).mean()),
                    "reward": s.reward,
                }
            )
        if bar is not None:
            bar.update(1)
    model.train(was_training)
    longs = [r["position_error_long"] for r in rows if r["position_error_long"] is not None]
    families = dict.fromkeys(r["family"] for r in rows)
    misses: dict[str, list[float]] = {}  # position_at family -> its rollouts' answer misses
    for r in rows:
        if r["answer_miss"] is not None:
            misses.setdefault(r["family"], []).append(r["answer_miss"])
    median_miss = {f: float(np.median(v)) for f, v in misses.items()}
    checks = sorted({c for q in queries for c in references[q.index].check_scores} | {c for r in rows for c in r["failed"]})
    return {
        "disagreement_rate": float(np.mean([r["disagrees"] for r in rows])),
        "disagreement_by_family": {f: float(np.mean([r["disagrees"] for r in rows if r["family"] == f])) for f in families},
        "answer_miss_by_family": {f: m if np.isfinite(m) else None for f, m in median_miss.items()},  # None: strict JSON
        "violation_rate": float(np.mean([r["violates"] for r in rows])),
        "failed_checks": float(np.mean([r["failed_checks"] for r in rows])),
        "violations_by_check": {c: float(np.mean([c in r["failed"] for r in rows])) for c in checks},
        "position_error": float(np.mean([r["position_error"] for r in rows])),
        "position_error_long": float(np.mean(longs)) if longs else None,
        "psnr": float(np.mean([r["psnr"] for r in rows])),
        "reward": float(np.mean([r["reward"] for r in rows])),
        "rollouts": len(rows),
    }
