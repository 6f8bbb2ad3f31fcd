"""The generative-verification loop: answer a physical query by rolling the world model forward,
check every rollout against physical laws (and the simulator), and re-think when inconsistent.

    result = verify("A ball is dropped from 2 m. When does it land?", model=None, oracle="sim")
    result.verdict, result.answer          # 'simulated', Answer(value=0.63..., unit='s')

1. The scene is simulated at the model's frame rate and rendered; its first `context` frames
   condition `samples` stochastic rollouts, and each rollout's answer is read from its states.
2. Each rollout is checked (verifier.checks) and its answer tested for plausibility (unit,
   range, and laws the question itself implies: a bounce cannot rise above the drop, a collision
   keeps momentum).
3. With oracle=sim the simulator answers the same question; the rollouts are compared with it.
4. Rollouts that fail a check are dropped and the survivors' answers aggregated (median; majority
   for yes/no). When nothing survives, or (oracle=sim) the aggregate disagrees with the simulator,
   the model re-thinks: `samples` new rollouts, survivors pooled, up to `max_rethinks` times.
   Verdict: verified (first round), corrected (after re-thinking), unverified (never: the
   simulator's answer is then given as the correction), or simulated (no model).
   When no rollout ever passes every check, the model's answer is the aggregate of the least
   violating half of the plausible ones (`least_violating`), still "unverified": without a
   simulator it is the model's best answer, flagged; with one, the simulator's answer replaces it.
The oracle only triggers re-thinking; it never picks among rollouts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

import sim
from verifier.answer import Answer, AnswerError, agree, read_answer, relative_error
from verifier.checks import CheckReport, check_trajectory
from verifier.oracle import MODEL_FPS, seconds_for, simulate_answer, simulate_video
from verifier.query import PhysicalQuery, QueryError, parse_query

ORACLES = ("sim", "none")
ABS_TOLERANCE = {"m": 0.02, "s": 0.02, "m/s": 0.05, "m/s^2": 0.2, "rad/s": 0.05, "": 0.0}


@dataclass
class Sample:
    """One rollout: its answer (None when it shows none), checks and plausibility."""

    round: int
    episode: sim.Episode
    answer: Answer | None
    report: CheckReport
    plausible: bool
    why: str = ""

    @property
    def survives(self) -> bool:
        return self.answer is not None and self.plausible and self.report.consistent


@dataclass
class Verification:
    query: PhysicalQuery
    answer: Answer | None
    source: str  # "model" | "simulator"
    verdict: str  # verified | corrected | unverified | simulated
    checks: dict
    simulator: dict | None = None
    rounds: list[dict] = field(default_factory=list)
    model_answer: Answer | None = None  # the survivors' aggregate, else the least violating ones' (None: no plausible answer, or no model)
    single_sample: Answer | None = None  # the first rollout's answer, unchecked (for comparison)
    predicted: sim.Episode | None = None  # the representative rollout
    simulated: sim.Episode | None = None  # the simulator at the model's frame rate
    video: str | None = None

    def to_dict(self) -> dict:
        return {
            "query": self.query.to_dict(),
            "answer": None if self.answer is None else {**self.answer.to_dict(), "source": self.source},
            "verdict": self.verdict,
            "simulator": self.simulator,
            "checks": self.checks,
            "rounds": self.rounds,
            "model_answer": None if self.model_answer is None else self.model_answer.to_dict(),
            "single_sample_answer": None if self.single_sample is None else self.single_sample.to_dict(),
            "video": self.video,
        }


def plausibility(query: PhysicalQuery, answer: Answer) -> tuple[bool, str]:
    """Whether an answer is possible at all, from the question alone (no simulator)."""
    p, v = query.params, answer.value
    if isinstance(v, bool):
        return True, ""
    values = np.atleast_1d(np.asarray(v, float))
    if not np.isfinite(values).all():
        return False, "not finite"
    kind = query.question
    if kind in ("time_to_floor", "period", "speed_at", "acceleration_at") and values.min() <= 0:
        return False, f"{kind} must be positive"
    if kind in ("height_at", "bounce_height", "range") and values.min() < -0.05:
        return False, f"{kind} below the floor"
    if kind == "bounce_height" and v > p["height"] + (p.get("speed", 0.0) ** 2) / (2 * 9.81) + 0.01:
        return False, "bounces above its release height (energy would grow)"
    if kind == "speed_at" and v > 100:
        return False, "faster than 100 m/s"
    if kind == "velocities_after":
        m, u = np.asarray(p["masses"], float), np.asarray(p["velocities"], float)
        momentum, energy = (m * u).sum(), 0.5 * (m * u * u).sum()
        if abs((m * values).sum() - momentum) > 0.05 * abs(momentum) + 1e-6:
            return False, "momentum not conserved"
        if 0.5 * (m * values * values).sum() > 1.02 * energy + 1e-9:
            return False, "kinetic energy grew"
    return True, ""


def aggregate(answers: list[Answer]) -> Answer | None:
    """Self-consistency: the median answer (element-wise for lists), the majority for yes/no."""
    if not answers:
        return None
    unit = answers[0].unit
    if isinstance(answers[0].value, bool):
        yes = sum(a.value for a in answers)
        return Answer(bool(yes * 2 > len(answers)), unit)
    values = np.array([np.asarray(a.value, float) for a in answers])
    median = np.median(values, axis=0)
    return Answer(median.tolist() if median.ndim else float(median), unit)


def least_violating(pool: list[Sample]) -> list[Sample]:
    """The plausible answered rollouts with the lowest check scores: the better half (at least one)."""
    answered = sorted((s for s in pool if s.answer is not None and s.plausible), key=lambda s: s.report.score)
    return answered[: (len(answered) + 1) // 2]


def tolerance_for(answer: Answer, relative: float) -> tuple[float, float]:
    return relative, ABS_TOLERANCE.get(answer.unit, 0.0)


def sample_rollouts(model, context_episode: sim.Episode, query: PhysicalQuery, round_: int, *, context: int,
                    horizon: int, samples: int, temperature: float, seed: int) -> list[Sample]:
    out = []
    for r in model.rollout(context_episode, context=context, horizon=horizon, samples=samples,
                           temperature=temperature, seed=seed + 1000 * round_):
        report = check_trajectory(r.episode)
        try:
            answer = read_answer(query, r.episode)
            ok, why = plausibility(query, answer)
        except AnswerError as err:
            answer, ok, why = None, False, str(err)
        out.append(Sample(round_, r.episode, answer, report, ok, why))
    return out


def verify(query: str | dict | PhysicalQuery, model=None, *, oracle: str = "sim", samples: int = 8,
           max_rethinks: int = 2, context: int = 4, temperature: float = 1.0, tolerance: float = 0.05,
           seed: int = 0, progress=None) -> Verification:
    """Answer and verify one query (module docstring). `model`: a worldmodel.WorldModel or None."""
    if oracle not in ORACLES:
        raise QueryError(f"parameter 'oracle': got {oracle!r}; allowed: one of {', '.join(ORACLES)}")
    if model is None and oracle == "none":
        raise QueryError("parameter 'oracle': got 'none' without a checkpoint; allowed: 'sim', or give a checkpoint")
    for name, value, low in (("samples", samples, 1), ("max_rethinks", max_rethinks, 0), ("context", context, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise QueryError(f"parameter {name!r}: got {value!r}; allowed: an integer >= {low}")
    for name, value in (("temperature", temperature), ("tolerance", tolerance)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise QueryError(f"parameter {name!r}: got {value!r}; allowed: a number >= 0")
    if not isinstance(query, PhysicalQuery):
        query = parse_query(query)
    say = progress or (lambda message: None)

    simulator, sim_answer, simulated = None, None, None
    size = model.cfg.image_size if model is not None else 64
    seconds = seconds_for(query)
    if oracle == "sim":
        say("simulating the oracle")
        sim_answer, _ = simulate_answer(query, seed=seed)
        simulated = simulate_video(query, seed=seed, size=size, seconds=seconds)
        simulator = {"answer": sim_answer.to_dict(), "trajectory": trajectory(simulated)}
    if model is None:
        report = check_trajectory(simulated)
        return Verification(query, sim_answer, "simulator", "simulated", report.to_dict(), simulator,
                             simulated=simulated)

    n_frames = round(seconds * MODEL_FPS)
    if context >= n_frames:
        raise QueryError(f"parameter 'context': got {context}; allowed: fewer than the {n_frames} frames the question needs")
    context_episode = simulated if simulated is not None else simulate_video(query, seed=seed, size=size,
                                                                             seconds=seconds)
    if oracle == "none":  # the model may not see the simulated future: keep the context frames only
        context_episode = context_episode.slice(0, context)
    pool: list[Sample] = []
    rounds, verdict, final = [], "unverified", None
    for round_ in range(max_rethinks + 1):
        say(f"round {round_}: {samples} rollouts of {n_frames - context} frames")
        batch = sample_rollouts(model, context_episode, query, round_, context=context, horizon=n_frames - context,
                                samples=samples, temperature=temperature, seed=seed)
        pool += batch
        final = aggregate([s.answer for s in pool if s.survives])
        agrees = final is not None and (sim_answer is None or agree(final, sim_answer, *tolerance_for(sim_answer, tolerance)))
        rounds.append({
            "round": round_,
            "answers": [None if s.answer is None else s.answer.value for s in batch],
            "consistent": [s.report.consistent for s in batch],
            "failed": [s.report.failed() + ([] if s.plausible else ["plausibility"]) for s in batch],
            "why_implausible": [s.why for s in batch],
            "survivors": sum(s.survives for s in pool),
            "aggregate": None if final is None else final.value,
            "agrees_with_simulator": None if sim_answer is None else agrees,
        })
        if agrees:
            verdict = "verified" if round_ == 0 else "corrected"
            break
    if final is None:  # nothing ever passed every check: the model's best, unverified
        final = aggregate([s.answer for s in least_violating(pool)])
    representative = pick_representative(pool, final)
    checks = representative.report.to_dict()
    checks["checks"]["plausibility"] = {"passed": representative.plausible, "reason": representative.why}
    answer, source = final, "model"
    if verdict == "unverified" and sim_answer is not None:
        answer, source = sim_answer, "simulator"  # the correction
    if simulator is not None:
        simulator["disagreement"] = disagreement(final or representative.answer, sim_answer, representative.episode,
                                                 simulated, context)
    return Verification(query, answer, source, verdict, checks, simulator, rounds, final, pool[0].answer,
                        representative.episode, simulated)


def pick_representative(pool: list[Sample], final: Answer | None) -> Sample:
    """The surviving rollout whose answer is nearest the aggregate (the least violating ones when
    none survives); else the least violating one."""
    candidates = [s for s in pool if s.survives] or least_violating(pool)
    if candidates and final is not None:
        return min(candidates, key=lambda s: relative_error(s.answer, final))
    return min(pool, key=lambda s: s.report.score)


def disagreement(answer: Answer | None, sim_answer: Answer, predicted: sim.Episode, simulated: sim.Episode,
                 context: int) -> dict:
    """How far the model is from the simulator: its answer's relative error and the RMS distance (m)
    between predicted and simulated body positions over the predicted frames."""
    n = min(len(predicted), len(simulated))
    diff = predicted.positions[context:n] - simulated.positions[context:n]
    rmse = float(np.sqrt(np.nanmean((diff**2).sum(-1)))) if n > context else math.nan
    return {
        "answer_relative_error": None if answer is None else relative_error(answer, sim_answer),
        "trajectory_rmse_m": rmse if math.isfinite(rmse) else None,
    }


def trajectory(episode: sim.Episode) -> dict:
    """Times (s) and body positions (m), rounded to mm, for the report."""
    return {"times": np.round(episode.times, 4).tolist(), "bodies": list(episode.body_names),
            "positions": np.round(episode.positions, 3).tolist()}
