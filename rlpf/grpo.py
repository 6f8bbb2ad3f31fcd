"""Group-relative policy optimisation for the world model's frame distribution.

For one query, G rollouts are sampled (no gradient) and scored by the simulator: rewards r (G,).
Their advantages are normalised within the group, A = (r - mean r) / (std r + eps); a group whose
rewards do not vary (std < min_std) carries no signal and is skipped (and counted). The "tokens" of
the policy are the predicted pixel values: the frame head's discretised Gaussian gives each one an
exact log-probability, recomputed with gradient by teacher forcing the sampled episodes through
the current model (`per_value_logprob`). The loss of a group, averaged over its predicted values,
is the clipped surrogate with the sequence's advantage on every value, plus beta times the KL to
the frozen starting model:

    ratio = exp(log pi(x) - log pi_old(x))                     per predicted value x
    loss  = -mean(min(ratio A, clip(ratio, 1 - eps, 1 + eps) A)) + beta * mean KL(pi || pi_ref)

The KL is that of the two per-value Gaussians before discretisation, in closed form given the same
sampled past: exact, without sampling noise, zero at the start, and an upper bound of the KL of the
discretised values (discretising is a deterministic map). The predicted states, and with them most
of the reward, are a deterministic function of the sampled frames (see `rlpf.rewards`), so this is
the policy gradient of the reward with respect to the frames' distribution; it reaches the state and
dynamics heads only through the hidden states.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worldmodel.model import discretized_gaussian_logprob


def group_advantages(rewards: torch.Tensor, min_std: float, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards (Q, G) -> advantages (Q, G) normalised within each group (row), and keep (Q,) bool:
    False for groups whose reward std (population) is below min_std (their advantages are 0)."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, unbiased=False, keepdim=True)
    keep = std.squeeze(1) >= min_std
    advantages = torch.where(keep[:, None], (rewards - mean) / (std + eps), torch.zeros_like(rewards))
    return advantages, keep


def clipped_surrogate(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """logp, logp_old (G, ...) per predicted value, advantages (G,) -> (the surrogate to maximise:
    mean over values of min(ratio A, clip(ratio) A), the fraction of values whose ratio is clipped)."""
    ratio = torch.exp(logp - logp_old)
    a = advantages.view(-1, *([1] * (logp.dim() - 1)))
    surrogate = torch.minimum(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a)
    clipped = ((ratio - 1).abs() > clip).float().mean()
    return surrogate.mean(), clipped


def gaussian_kl(mean: torch.Tensor, logstd: torch.Tensor, ref_mean: torch.Tensor, ref_logstd: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, e^logstd) || N(ref_mean, e^ref_logstd)) per value (nats), same shapes."""
    var_ratio = torch.exp(2 * (logstd - ref_logstd))
    return ref_logstd - logstd + 0.5 * (var_ratio + ((mean - ref_mean) / torch.exp(ref_logstd)) ** 2 - 1)


def per_value_logprob(out: dict, frames: torch.Tensor, context: int) -> torch.Tensor:
    """The model's output on a batch and its frames (B, T, H, W, 3) uint8 -> (B, T - context, H, W, 3)
    log-probability of every predicted pixel value (their sum over values is `WorldModel.log_prob`)."""
    return discretized_gaussian_logprob(frames[:, context:].float(), out["frame_mean"][:, context:], out["frame_logstd"][:, context:])


@dataclass
class GroupStats:
    surrogate: float
    kl: float  # nats per predicted value
    clipped: float  # fraction of values whose ratio was clipped


def group_loss(out: dict, ref_out: dict, frames: torch.Tensor, context: int, advantages: torch.Tensor, logp_old: torch.Tensor | None, clip: float, beta: float):
    """The GRPO loss of one group of G sampled episodes, from the current model's output `out` on
    them (with gradient) and the frozen starting model's `ref_out`; frames (G, T, H, W, 3) uint8.

    logp_old: the per-value log-probabilities under the policy that sampled them (None: the current
    model is that policy, its own values detached are used). Returns (loss, logp detached, stats)."""
    logp = per_value_logprob(out, frames, context)
    old = logp.detach() if logp_old is None else logp_old
    surrogate, clipped = clipped_surrogate(logp, old, advantages, clip)
    kl = gaussian_kl(out["frame_mean"][:, context:], out["frame_logstd"][:, context:], ref_out["frame_mean"][:, context:].detach(), ref_out["frame_logstd"][:, context:].detach()).mean()
    loss = -surrogate + beta * kl
    return loss, logp.detach(), GroupStats(surrogate.item(), kl.item(), clipped.item())
