"""Group-relative policy optimisation for the world model's rollout distribution.

For one query, G rollouts are sampled (no gradient) and scored by the simulator: rewards r (G,).
Their advantages are normalised within the group, A = (r - mean r) / (std r + eps); a group whose
rewards do not vary (std < min_std) carries no signal and is skipped (and counted). A rollout draws
two kinds of values, and both are the policy's "tokens":

  pixels  every predicted pixel value, from the frame head's discretised Gaussian (exact probability)
  steps   every predicted state's dynamics step (6 per tracked body and frame; 1 for a tethered
          body, its velocity change along the tangent, the only part its step reads), from the
          dynamics head's Gaussian (a density): where the bodies go, what most of the reward scores;
          with `floor_support` on, not the steps the floor may have set (`per_step_scored`):
          the states do not show what the head drew there

Their log-probabilities are recomputed with gradient by teacher forcing the sampled episodes through
the current model (`per_value_logprob`, `per_step_logprob`). For each kind, the loss averages over
its values the clipped surrogate with the sequence's advantage on every value, plus beta times the
KL to the frozen starting model; the group's loss is the sum of the two (so the few step values are
not drowned by the many pixels):

    ratio = exp(log pi(x) - log pi_old(x))                     per predicted value x
    loss  = sum over kinds of -mean(min(ratio A, clip(ratio, 1 - eps, 1 + eps) A)) + beta * mean KL(pi || pi_ref)

With a `SpreadDraw` the G rollouts drew their steps each at its own level of the model's
`step_spread` (a log-factor on the moving steps' spread), levels ~ N(step_spread, noise^2): the
levels are a third kind of token, one per rollout, whose surrogate alone moves `step_spread`
(a group's rollouts then differ in how much noise they drew, and the advantages say which level
did better: the per-value gradient of one shared spread, the mean over hundreds of values of
(x - mean)^2 / std^2 - 1, barely differs between rollouts). The steps are scored at their drawn
level and the KL is the hierarchical policy's: the levels' Gaussians (same noise) plus the steps'
compared at the one-step spread.

With `hold_spread` the log-probabilities in the surrogate pass no gradient to the Gaussians'
log-stds, so the policy gradient moves their means alone. A Gaussian policy's gradient widens it
whenever the rewarded samples lie far from its mean (their (x - mean)^2 / std^2 exceeds 1): a
biased mean is corrected, but the spread every later rollout samples grows with it. Held, the
spreads are set by the supervised NLL and the KL alone.

The KL is in closed form given the same sampled past: exact, without sampling noise, zero at the
start. For pixels it is that of the two per-value Gaussians before discretisation, an upper bound of
the KL of the discretised values (discretising is a deterministic map). For steps it is
`StepDistribution.component_kl`: each of the dynamics head's two Gaussians (moving, resting) against
the reference's, plus the gate's keep probability as a Bernoulli; with `step_kl_resolution` > 0
seen at that resolution (both widened by that noise: a lower bound of the exact KL that stays
finite where a near-deterministic resting step's mean moves). The KL of the chosen Gaussians
would jump by orders of magnitude wherever the policy's gate and the reference's choose differently.
For a tethered body it is the KL of all six components, an upper bound of its drawn one's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from worldmodel.model import StepDistribution, discretized_gaussian_logprob, gaussian_kl, gaussian_logprob


def group_advantages(rewards: torch.Tensor, min_std: float, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards (Q, G) -> advantages (Q, G) normalised within each group (row), and keep (Q,) bool:
    False for groups whose reward std (population) is below min_std (their advantages are 0)."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, unbiased=False, keepdim=True)
    keep = std.squeeze(1) >= min_std
    advantages = torch.where(keep[:, None], (rewards - mean) / (std + eps), torch.zeros_like(rewards))
    return advantages, keep


def clipped_surrogate(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, clip: float, scored: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """logp, logp_old (G, ...) per predicted value, advantages (G,) -> (the surrogate to maximise:
    mean over values of min(ratio A, clip(ratio) A), the fraction of values whose ratio is clipped);
    scored (G, ...) bool broadcast against logp: the values that count (None: all)."""
    if scored is not None:  # a value left out has ratio 1 and no gradient, and is not averaged
        logp = torch.where(scored, logp, logp_old)
    ratio = torch.exp(logp - logp_old)
    a = advantages.view(-1, *([1] * (logp.dim() - 1)))
    surrogate = torch.minimum(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a)
    clipped = ((ratio - 1).abs() > clip).float()
    if scored is None:
        return surrogate.mean(), clipped.mean()
    weight = scored.expand_as(surrogate).float()
    count = weight.sum().clamp(min=1)
    return (surrogate * weight).sum() / count, (clipped * weight).sum() / count


def per_value_logprob(out: dict, frames: torch.Tensor, context: int, hold_spread: bool = False, levels: torch.Tensor | None = None) -> torch.Tensor:
    """The model's output on a batch and its frames (B, T, H, W, 3) uint8 -> (B, T - context, H, W, 3)
    log-probability of every predicted pixel value (their sum over values is `WorldModel.log_prob`);
    hold_spread: the same values, with no gradient to the log-stds; levels (B,): each rollout drew
    its pixels with the head's spread times exp(level) (its `frame_spread`), and is scored there."""
    logstd = out["frame_logstd"][:, context:]
    logstd = logstd.detach() if hold_spread else logstd
    if levels is not None:
        logstd = logstd + levels.view(-1, 1, 1, 1, 1)
    return discretized_gaussian_logprob(frames[:, context:].float(), out["frame_mean"][:, context:], logstd)


def _first_predicted(out: dict, context: int) -> int:
    """Index, in the model's step outputs (which start at frame tubelet_t), of frame `context`."""
    return context - (out["frame_mean"].shape[1] - out["step_logprob"].shape[1])


def step_distribution(out: dict, context: int, n: int) -> StepDistribution:
    """The model's output on a batch with states -> the distribution (B, T - context, n) of the
    predicted frames' steps of the first n bodies."""
    return out["steps"].map(lambda t: t[:, _first_predicted(out, context) :, :n])


def per_step_logprob(out: dict, context: int, body_mask: torch.Tensor, hold_spread: bool = False, shift: torch.Tensor | None = None) -> torch.Tensor:
    """The model's output on a batch with states -> (B, T - context, n, 6) log-density of every
    predicted dynamics step value of the tracked bodies (body_mask (B, n_max); the rollouts of one
    query track the same n bodies); a tethered body's step is one value, its velocity change along
    the tangent (component 3; the others 0: `StepDistribution.log_prob`). hold_spread: the same
    values, with no gradient to the log-stds; shift (B,): each rollout's moving spread moved by that
    log-factor (the rollouts drew at their own `step_spread`)."""
    logp = out["step_logprob"]
    if hold_spread or shift is not None:
        dist = out["steps"] if shift is None else out["steps"].spread(shift[:, None, None, None])
        if hold_spread:
            dist = replace(dist, move_logstd=dist.move_logstd.detach(), rest_logstd=dist.rest_logstd.detach())
        logp = dist.log_prob(out["step_drawn"], out["step_tangent"], out["step_along"])
    return logp[:, _first_predicted(out, context) :, : int(body_mask.sum(1).max())]


def per_step_scored(out: dict, context: int, body_mask: torch.Tensor) -> torch.Tensor:
    """(B, T - context, n, 1) bool: which of `per_step_logprob`'s steps the head drew, so that they
    count: not those `floor_support` may have set (`WorldModel.set_by_floor`), whose drawn value
    the states do not show."""
    return ~out["step_floor"][:, _first_predicted(out, context) :, : int(body_mask.sum(1).max()), None]


@dataclass
class GroupStats:
    surrogate: float  # pixels + steps (+ levels)
    kl: float  # nats per predicted value, pixels + steps (+ levels)
    clipped: float  # fraction of pixel values (of levels: `level_loss`) whose ratio was clipped
    step_surrogate: float  # steps (+ levels)
    step_kl: float | None  # nats per predicted step value (None: not computed, `level_loss`)


@dataclass
class SpreadDraw:
    """Where RL learns the model's `step_spread`: each rollout of a group drew its steps with its
    own log-factor, levels (G,) ~ N(param, noise^2), a one-number policy of its own (exploring
    in the parameter, as in policy-gradients with parameter-based exploration: the group's
    rollouts differ in how much noise they draw, not only in which). param: the model's
    `step_spread` (with gradient); reference: the frozen start's."""

    param: torch.Tensor
    reference: torch.Tensor
    levels: torch.Tensor
    noise: float


def group_loss(out: dict, ref_out: dict, frames: torch.Tensor, context: int, advantages: torch.Tensor, logp_old: tuple | None, clip: float, beta: float, body_mask: torch.Tensor, step_kl_resolution: float = 0.0, hold_spread: bool = False, spread: SpreadDraw | None = None, frame_spread: SpreadDraw | None = None):
    """The GRPO loss of one group of G sampled episodes, from the current model's output `out` on
    them (with gradient) and the frozen starting model's `ref_out`; frames (G, T, H, W, 3) uint8,
    body_mask (G, n_max) the tracked bodies (the same for every rollout of the query);
    step_kl_resolution (step units) the steps' KL's resolution (`StepDistribution.component_kl`);
    hold_spread: the surrogate moves the Gaussians' means only, not their log-stds (the KL and the
    supervised NLL still act on those).

    spread: the rollouts drew their steps at their own levels (`SpreadDraw`). Their steps are then
    scored at those levels, so the model's `step_spread` learns through the levels' own clipped
    surrogate alone (a third kind, one value per rollout), and the KL is the hierarchical policy's:
    the levels' Gaussians' plus the steps' compared at a common level.

    logp_old: the per-value log-probabilities (pixels, steps, which steps count (`per_step_scored`),
    levels or None) under the policy that sampled them (None: the current model is that policy, its
    own values detached are used). Returns (loss, that tuple, stats)."""
    logp = per_value_logprob(out, frames, context, hold_spread, None if frame_spread is None else frame_spread.levels)
    old = logp.detach() if logp_old is None else logp_old[0]
    surrogate, clipped = clipped_surrogate(logp, old, advantages, clip)
    frame_level_logp = None
    if frame_spread is not None:  # the pixels' levels: a token of their own, the pixels' KL stays at the head's spread
        frame_level_logp, frame_level_surrogate, _, frame_level_kl = level_terms(frame_spread, advantages, None if logp_old is None else logp_old[4], clip)
        surrogate = surrogate + frame_level_surrogate
    kl = gaussian_kl(out["frame_mean"][:, context:], out["frame_logstd"][:, context:], ref_out["frame_mean"][:, context:].detach(), ref_out["frame_logstd"][:, context:].detach()).mean()

    shift = None if spread is None else spread.levels - spread.param  # the param cancels: the steps' density is at the drawn level
    step_logp = per_step_logprob(out, context, body_mask, hold_spread, shift)  # (G, H, n, 6)
    step_old = step_logp.detach() if logp_old is None else logp_old[1]
    scored = per_step_scored(out, context, body_mask) if logp_old is None else logp_old[2]  # (G, H, n, 1) as the sampling policy's pass had it
    step_surrogate, _ = clipped_surrogate(step_logp, step_old, advantages, clip, scored)
    n = step_logp.shape[2]
    steps, ref_steps = step_distribution(out, context, n), step_distribution(ref_out, context, n).map(torch.Tensor.detach)
    level_logp = None
    if spread is not None:
        steps, ref_steps = steps.spread(-spread.param), ref_steps.spread(-spread.reference)  # both at the one-step spread
        level_logp, level_surrogate, _, level_kl = level_terms(spread, advantages, None if logp_old is None else logp_old[3], clip)
        step_surrogate = step_surrogate + level_surrogate
        kl = kl + level_kl
    if frame_spread is not None:
        kl = kl + frame_level_kl
    step_kl = steps.component_kl(ref_steps, step_kl_resolution).mean()

    loss = -(surrogate + step_surrogate) + beta * (kl + step_kl)
    stats = GroupStats((surrogate + step_surrogate).item(), (kl + step_kl).item(), clipped.item(), step_surrogate.item(), step_kl.item())
    levels, frame_levels = (None if x is None else x.detach() for x in (level_logp, frame_level_logp))
    return loss, (logp.detach(), step_logp.detach(), scored, levels, frame_levels), stats


def level_terms(spread: SpreadDraw, advantages: torch.Tensor, level_old: torch.Tensor | None, clip: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The levels' part of the loss: (their log-densities (G,) under N(param, noise^2), their clipped
    surrogate, the fraction of them clipped, the KL of the levels' Gaussian to the reference's);
    level_old (G,): the log-densities under the sampling policy (None: the current ones, detached)."""
    noise = torch.full_like(spread.levels, math.log(spread.noise))
    logp = gaussian_logprob(spread.levels, spread.param.expand_as(spread.levels), noise)
    surrogate, clipped = clipped_surrogate(logp, logp.detach() if level_old is None else level_old, advantages, clip)
    return logp, surrogate, clipped, gaussian_kl(spread.param, noise[0], spread.reference, noise[0])


def level_loss(draws: list[SpreadDraw], advantages: torch.Tensor, levels_old: list[torch.Tensor] | None, clip: float, beta: float) -> tuple[torch.Tensor, list[torch.Tensor], GroupStats]:
    """`group_loss`'s gradient to the learnt spreads (`step_spread`, and `frame_spread` where
    learnt) alone, without the model's pass over the group: the steps are scored at their drawn
    levels and compared with the reference's at the one-step spread, so a parameter cancels in both
    and reaches the loss only through its levels (the pixels likewise, compared at the head's
    spread). For `policy_reaches=spread`, where nothing else is trained by the group. draws: one per
    learnt spread; levels_old: their levels' log-densities under the sampling policy (None: the
    current ones). Returns (loss, each draw's levels' log-densities detached, stats: the levels'
    surrogates and KLs summed, the clipped fraction their mean; no step figures)."""
    terms = [level_terms(d, advantages, None if levels_old is None else levels_old[j], clip) for j, d in enumerate(draws)]
    surrogate, kl = sum(t[1] for t in terms), sum(t[3] for t in terms)
    clipped = torch.stack([t[2] for t in terms]).mean().item()
    stats = GroupStats(surrogate.item(), kl.item(), clipped, surrogate.item(), None)
    return -surrogate + beta * kl, [t[0].detach() for t in terms], stats


def adapt_beta(beta: float, kl: float, *, floor: float, target: float, gain: float) -> float:
    """The KL weight for the next step, from this step's measured KL (nats per value): a proportional
    controller (as in Ziegler et al. 2019, "Fine-tuning language models from human preferences")
    that multiplies beta by 1 + gain * e, e = KL / target - 1 clipped to [-0.2, 0.2], so one noisy
    step moves it by at most that factor, and never lets it fall below `floor` (the configured beta):
    the KL is held near the target once it runs above it, and beta returns to its floor below."""
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return max(beta * (1.0 + gain * error), floor)
