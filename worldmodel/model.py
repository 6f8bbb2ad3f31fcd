"""The world model: UniToken embedding -> block-causal transformer with MoE FFNs -> heads.

    x = [text tokens | block 0 | block 1 | ... ]          (B, L, D), see worldmodel.tokens
    n_layer x  x = x + Attn(LN(x));  x = x + MoE(LN(x))  block-causal attention, 3-D rotary
    h = LN(x)
    frame head:     video token (b, r, c) -> mean, log-std of tubelet (b+1, r, c)   (B, nb-1, Np, tubelet_dim)
    state head:     block b's video tokens -> pos, vel of its own frames (readout)    (B, nb*tt, n_max, 6)
    dynamics head:  block b's video tokens -> steps to block b+1's frames' states     (B, (nb-1)*tt, n_max, DYNAMICS_OUT)

The frame distribution is a diagonal Gaussian per tubelet pixel in [0, 1] units, discretised onto
the 256 uint8 levels (the mass of each level's bin, the edge levels taking the tails); its
log-std is soft-clamped to [logstd_min, logstd_max]. Sampling a
Gaussian value and rounding it to uint8 draws exactly from that distribution, so the
log-probability of a sampled uint8 frame is exact, differentiable in the model's parameters and
recomputable from the frames alone (`WorldModel.log_prob`).

The dynamics head predicts each next frame's state as a semi-physical step from the previous
frame's: p' = p + v dt + step_pos_scale * r_p, v' = v + step_vel_scale * r_v (dt = 1 / fps), so a
constant velocity is free and gravity, bounces and collisions are what it learns. Its base is the
previous frame's known state (teacher forcing; in a rollout, the context's states and then its own
predictions) or, for clips without states, the readout of the last frame of the block it sees.
The step r is a diagonal Gaussian too (mean and log-std per component, the log-std squashed into
[STEP_LOGSTD_MIN, STEP_LOGSTD_MAX]) around one of two means, chosen per body and frame by a gate
(`StepDistribution`): the prior's step alone, which keeps a body at rest exactly at rest and a
falling one exactly on its parabola, or the prior plus the learnt correction. A rollout samples the
step, so sampled rollouts differ in their states and not only in their pixels, and its log-density
joins the frames' log-probability. The moving mean is trained by the step and chain losses as if
there were no gate; the gate by whether the simulator's step is within rest_tolerance of the
prior's; the log-stds by the steps' Gaussian NLL with the means held fixed (`step_nll`), which
calibrates the spread without pulling the mean.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldmodel.config import GATE_KNOBS, ModelConfig, preset
from worldmodel.moe import MoEFeedForward
from worldmodel.tether import GRAVITY, TETHER_FEATURES, TETHER_FRAMES, Tether, fit_tethers, gravity_swing, tangential_draw, tether_features, tether_step
from worldmodel.tokens import (
    PAD,
    Batch,
    Layout,
    UniTokenEmbed,
    audio_features,
    block_actions,
    steady_actions,
    state_features,
    block_causal_mask,
    clip_layout,
    frames_to_tubelets,
    n_blocks,
    pad_time,
    shape_words,
    text_layout,
    tubelets_to_frames,
)

FORMAT = "physfusion.worldmodel/16"  # 2: numeric caption values, Gaussian dynamics steps; 3: steady-change features and prior; 4: the rest gate; 5: the dynamics head reads contacts and actions; 6: contact impulses from learnt body properties; 7: contacts at their time within the frame, velocity-change features without the impulses, body properties pointing at the caption's numbers; 8: the pointer's keys from the caption with its numbers blanked; 9: tethered bodies kept on their circles (about a fixed centre or another body), gravity along the tether a dynamics feature; 10: driven bodies (the actions' servos) neither pushed back by contacts nor bounced, and held on the prior's course while their actions hold; 11: friction a fourth body property (read from the caption, Coulomb friction in the landing impulse); 12: gravity's swing of tethered bodies in the closed-form step (a simple or double pendulum of point masses); 13: hinge damping a fifth body property (read from the caption, in the swing's closed form), the pointer's keys from a banded caption pass; 14: a roll share per body and the bodies' spin in the landing impulse (a ball lands and rolls on); 15: friction on a body resting on the floor in the closed-form step (the velocity-change features leave it out with the spins it depends on), a size's second radius reading (an upright capsule's whole size), the prior carrying on only friction's slowing on the floor (floor_steady); 16: the roll share read from the caption's shape nouns too (`tokens.shape_words`) and taught by the stated shapes alone
STEP_LOGSTD_MIN, STEP_LOGSTD_MAX = -8.0, 1.0  # log-std of a dynamics step, in step units (see ModelConfig.step_pos_scale)
FEATURE_BOUND = 2.0  # soft clip of the dynamics head's features for its learnt maps (`StateHead.decode`)
BODY_FEATURES = 12  # per body: position, velocity, last and steady velocity change (`WorldModel.dynamics_features`)
CONTACT_FEATURES = 5  # per body: gap to the nearest body after one step, approach velocity along it, floor gap (`WorldModel.contact_features`)
RADIUS_INIT = 0.1  # m: a body's learnt radius before training (`WorldModel.body_properties`)
BODY_PROPERTIES = 5  # per body, read from its dynamics slots and the caption: radius m, log mass, restitution, friction, hinge damping 1/s (`WorldModel.body_properties`)
DRIVEN = BODY_PROPERTIES  # the column after them: the logit of its being driven by the actions
ROLL = DRIVEN + 1  # the column after that: its roll share, 1 / (1 + m r^2 / I) (`sim.roll_shares`: 2/7 a ball), from its slots alone
BODY_COLUMNS = BODY_PROPERTIES + 2  # (`WorldModel.body_properties`)
FRICTION_INIT = 0.5  # a body's learnt Coulomb friction before training
DAMPING_INIT = 0.05  # 1/s: a body's learnt hinge damping (amplitude decay rate) before training
DRIVEN_INIT = -4.0  # the driven logit before training: every body free
ROLL_INIT = 0.9  # the roll share before training: nearly a body that slides (1: the landing's brake as before it was learnt)
MIN_ROLL_SHARE = 0.05  # the least roll share the spin's update divides by (`WorldModel.floor_landing`)
MAX_ROLLING_SHARE = 0.5  # a body that rolls has I <= m r^2 (a hoop: all its mass at the rim), so a roll share of at most 1/2
POINTER_DIM = 32  # width of the attention from a body's slots to the caption's numbers (`WorldModel.body_properties`)
CAPTION_UNITS = (math.log(0.005), 0.0, 0.0, 0.0, 0.0)  # log factors from a caption's literal to a property, sim's conventions: a diameter in cm to a radius in m, kg, restitution, friction and damping (1/s) as stated
CAPTION_RADIUS_TWICE = math.log(2.0)  # a size's second radius reading, all of the stated extent rather than half: an upright capsule's centre height (its length is twice its stated diameter; `sim.scenes.base.half_height`)
CAPTION_RADIUS_TWICE_LOGIT = -3.0  # the second reading's score offset before training: about 5% of the radius's attention (a ball's, a cube's radius is half its size)
CAPTION_KEY_WINDOW = 12  # bytes: how far apart two caption bytes may attend in that pass, per layer (`WorldModel.caption_numbers`)
NUMBER_BLANK = ord("#")  # the byte every numeric literal's bytes become in the caption pass the pointer's keys come from (`WorldModel.caption_numbers`)
POINTER_TOLERANCE = 0.1  # log units: a caption number within 10% of a stated property is the one to point at (a diameter in whole cm rounds by up to 5%)
POINTER_ROUNDING = 0.006  # property units: ... or within this of it (a damping of 0.014 /s is stated as 0.01: two decimals round small values by more than 10%)
CONTACT_EPS = 0.001  # m: added in quadrature to a contact's half-chord, so a graze's contact time has a bounded gradient (`WorldModel.contact_impulse`)
FAR_GAP = 100.0  # m: the contact gap of a body with no other tracked body
FALL_SPEED = 0.05  # m/s: a body falls towards the floor (and may hit it) faster than this (`WorldModel.within_reach`)
FLOOR_TOLERANCE = 0.005  # m: a body whose centre is within this of its radius above the floor stands or slides on it (`WorldModel.on_floor`)
FLOOR_SPEED = 0.3  # m/s: a body standing or sliding on the floor moves up or down slower than this (`WorldModel.on_floor_alone`)
FALL_ONSET = 0.25  # of a frame of gravity, g dt: a steady change pointing down by more makes a body alone in the air fall freely (`WorldModel.steady_in_fall`)
FALL_SLOPE = 0.5  # |horizontal| / |vertical| of a steady change below which it is a fall's, not a slope's (a ramp of 60 degrees: 0.58)
VELOCITY, STEADY = slice(3, 6), slice(9, 12)  # the dynamics features' velocity (vel_scale units) and steady velocity change (step_vel_scale units) (`WorldModel.dynamics_features`)
TETHERED = -1  # the dynamics features' last column: 1 where the body is tethered (`tether_features`)
DYNAMICS_OUT = 19  # per body and frame: the moving step's mean (6) and log-std (6), the resting step's log-std (6), the gate's keep logit (`StepDistribution`)




def dynamics_features_dim(cfg: ModelConfig) -> int:
    """The dynamics head's inputs per body: its own BODY_FEATURES, its CONTACT_FEATURES, the
    actions that drive the step (tubelet_t frames x action_dim, the same for every body), then its
    TETHER_FEATURES."""
    return BODY_FEATURES + CONTACT_FEATURES + cfg.tubelet_t * cfg.action_dim + TETHER_FEATURES


# ----------------------------------------------------------------------------------------------
# the discretised Gaussian
# ----------------------------------------------------------------------------------------------
TAIL_Z = 10.0  # an interval entirely beyond -TAIL_Z standard deviations: erfc underflows in float32 there
_SQRT_HALF = math.sqrt(0.5)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _log_mass(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log(Phi(b) - Phi(a)) for a < b (float32), stable in both tails; also where it was taken in
    float64 (bool) and those values in float64. Mirrored onto the left (Phi(b) - Phi(a) = Phi(-a) -
    Phi(-b) for a > 0), the mass is a difference of erf values where the interval reaches the centre
    and of erfc values in the tail, each exact to float32's precision there; intervals entirely
    beyond -TAIL_Z standard deviations, where erfc underflows, take log_ndtr in float64 (far dearer,
    and nearly no pixel needs it)."""
    flip = a > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)  # lo < hi, lo <= 0
    lo_n, hi_n = lo * _SQRT_HALF, hi * _SQRT_HALF
    mass = torch.where(hi > -1, torch.erf(hi_n) - torch.erf(lo_n), torch.erfc(-hi_n) - torch.erfc(-lo_n))
    out = torch.log(0.5 * mass)
    far = hi < -TAIL_Z
    log_hi, log_lo = torch.special.log_ndtr(hi[far].double()), torch.special.log_ndtr(lo[far].double())
    far_out = log_hi + torch.log(-torch.expm1((log_lo - log_hi).clamp(max=-1e-12)))
    out[far] = far_out.float()
    return out, far, far_out


def _bin_edges(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(256,) each level's bin [lo, hi] in [0, 1] pixel units; the edge levels take the half-lines
    (as +-1e3: every standard deviation the head allows puts them beyond any tail)."""
    k = torch.arange(256.0, device=device)
    lo, hi = (k - 0.5) / 255, (k + 0.5) / 255
    lo[0], hi[255] = -1e3, 1e3
    return lo, hi


class _DiscretizedGaussianLogprob(torch.autograd.Function):
    """log P(level) under N(mean, exp(logstd)) discretised onto the levels' bins (float32), with the
    gradient in closed form: for z_a, z_b the bin's ends in standard deviations and P its mass,
    d log P / d mean = (phi(z_a) - phi(z_b)) / (P std), d log P / d logstd = (z_a phi(z_a) - z_b
    phi(z_b)) / P, each ratio phi / P taken in log space (in float64 where the mass was: far in a
    tail, float32 cannot hold z^2 / 2 - log P). One elementwise pass each way instead of autograd
    through a dozen selects (`benchmarks/pixel_nll.py`)."""

    @staticmethod
    def forward(ctx, levels, mean, logstd):
        lo_edge, hi_edge = _bin_edges(mean.device)
        k = levels.round().long() if levels.is_floating_point() else levels.long()
        inv_std = torch.exp(-logstd)
        a, b = (lo_edge[k] - mean) * inv_std, (hi_edge[k] - mean) * inv_std
        logp, far, far_logp = _log_mass(a, b)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            ga = torch.exp(-0.5 * a * a - _LOG_SQRT_2PI - logp)  # phi(z_a) / P
            gb = torch.exp(-0.5 * b * b - _LOG_SQRT_2PI - logp)
            a64, b64 = a[far].double(), b[far].double()
            ga[far] = torch.exp(-0.5 * a64 * a64 - _LOG_SQRT_2PI - far_logp).float()
            gb[far] = torch.exp(-0.5 * b64 * b64 - _LOG_SQRT_2PI - far_logp).float()
            ctx.save_for_backward(a, b, ga, gb, inv_std)
        return logp

    @staticmethod
    def backward(ctx, grad):
        a, b, ga, gb, inv_std = ctx.saved_tensors
        return None, grad * (ga - gb) * inv_std, grad * (ga * a - gb * b)


def discretized_gaussian_logprob(levels: torch.Tensor, mean: torch.Tensor, logstd: torch.Tensor) -> torch.Tensor:
    """log P(level) per value, levels in 0..255 (any dtype), mean and logstd in [0, 1] pixel units.

    The bin of level k is [(k - 0.5) / 255, (k + 0.5) / 255], with level 0 taking everything below
    and level 255 everything above. Computed in float32.
    """
    shape = torch.broadcast_shapes(levels.shape, mean.shape, logstd.shape)
    return _DiscretizedGaussianLogprob.apply(levels.expand(shape), mean.float().expand(shape), logstd.float().expand(shape))


def gaussian_logprob(x: torch.Tensor, mean: torch.Tensor, logstd: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(logstd)) per value (a density), float32."""
    z = (x.float() - mean.float()) * torch.exp(-logstd.float())
    return -0.5 * z * z - logstd.float() - 0.5 * math.log(2 * math.pi)


def gaussian_kl(mean: torch.Tensor, logstd: torch.Tensor, ref_mean: torch.Tensor, ref_logstd: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, e^logstd) || N(ref_mean, e^ref_logstd)) per value (nats), same shapes."""
    var_ratio = torch.exp(2 * (logstd - ref_logstd))
    return ref_logstd - logstd + 0.5 * (var_ratio + ((mean - ref_mean) / torch.exp(ref_logstd)) ** 2 - 1)


def sample_gaussian(mean: torch.Tensor, logstd: torch.Tensor, temperature: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """mean + temperature * std * eps, detached; temperature 0 gives the mean."""
    x = mean.detach().float()
    if temperature > 0:
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + temperature * logstd.detach().float().exp() * eps
    return x


def sample_levels(mean: torch.Tensor, logstd: torch.Tensor, temperature: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw uint8 levels (as float 0..255): round(clip(mean + temperature * std * eps, 0, 1) * 255).
    temperature 0 gives the rounded mean."""
    return (sample_gaussian(mean, logstd, temperature, generator).clamp(0, 1) * 255).round()


@dataclass
class StepDistribution:
    """The dynamics head's distribution of each body's next step (step units, `WorldModel.step_states`),
    a diagonal Gaussian around one of two means, chosen by the gate: `rest`, the constant-acceleration
    prior's step alone (a body at rest stays exactly at rest, a coasting or falling one carries on
    exactly), with the log-std `rest_logstd`, where keep_logit > 0 and the learnt correction
    move - rest is within `override` in every component or the body is out of reach of any
    contact (`reach` False: the override is for impacts the gate misses, and none can come);
    elsewhere `move`, the prior plus the correction, with the log-std `move_logstd`. The gate is
    its mode at every temperature, so a sampled step's log-density is the chosen Gaussian's: exact
    and differentiable through its mean and log-std. A kept step is drawn as the prior's exactly
    (`sample`). Where `release` is set (a body accelerating
    near a contact, `WorldModel.block_dynamics`), the gate never keeps the prior's step. Where
    `hold` is set (a driven body whose command has not changed: its servo holds it on the prior's
    course; a body in free flight out of reach of contacts: gravity alone; a swinging tethered
    body out of reach: its closed-form swing alone; `WorldModel.block_dynamics`), the prior's step is kept whatever the gate says.

    move, move_logstd, rest, rest_logstd (..., 6); keep_logit (...); override a number; hold (..., 1)
    bool or None (nothing held); reach (..., 1) bool or None (every body within reach); release (...,
    1) bool or None (none released)
    """

    move: torch.Tensor
    move_logstd: torch.Tensor
    rest: torch.Tensor
    rest_logstd: torch.Tensor
    keep_logit: torch.Tensor
    override: float
    hold: torch.Tensor | None = None
    reach: torch.Tensor | None = None
    release: torch.Tensor | None = None

    @cached_property
    def keep(self) -> torch.Tensor:
        """(..., 1) bool: the gate keeps the prior's step (computed once: mean and logstd both use it)"""
        small = (self.move - self.rest).abs().amax(-1, keepdim=True) <= self.override
        if self.reach is not None:
            small = small | ~self.reach
        keep = (self.keep_logit[..., None] > 0) & small
        if self.release is not None:
            keep = keep & ~self.release
        return keep if self.hold is None else keep | self.hold

    @property
    def ungated(self) -> torch.Tensor:
        """(..., 6) the moving mean, except where held (the prior's step): what the chained states follow"""
        return self.move if self.hold is None else torch.where(self.hold, self.rest, self.move)

    @property
    def mean(self) -> torch.Tensor:
        """(..., 6) the chosen mean: the temperature-0 step"""
        return torch.where(self.keep, self.rest, self.move)

    @property
    def logstd(self) -> torch.Tensor:
        """(..., 6) the chosen log-std"""
        return torch.where(self.keep, self.rest_logstd, self.move_logstd)

    def spread(self, log_factor: torch.Tensor) -> StepDistribution:
        """The same distribution with the moving Gaussian's std times exp(log_factor), a tensor
        broadcast against the log-stds (a scalar: `WorldModel.step_spread`; (B, 1, 1, 1): one per
        sample); the resting one is never drawn (`sample`) and stays."""
        return replace(self, move_logstd=self.move_logstd + log_factor)

    def map(self, fn) -> StepDistribution:
        """The same distribution with fn applied to every tensor (indexing, flattening): fn must act
        on the leading dimensions only."""
        maybe = lambda t: None if t is None else fn(t)  # noqa: E731
        return StepDistribution(fn(self.move), fn(self.move_logstd), fn(self.rest), fn(self.rest_logstd), fn(self.keep_logit), self.override, maybe(self.hold), maybe(self.reach), maybe(self.release))

    def sample(self, temperature: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """(..., 6) detached: mean + temperature * std * eps where the gate moves; where it keeps,
        the prior's step exactly. The resting spread is how far the truth may lie from the prior
        where the gate keeps it (up to `rest_tolerance`): the density a kept step is scored by, not
        a noise to draw every frame, which would walk a block standing on a tower (velocity 0,
        nothing acting) off its place until it tipped."""
        return torch.where(self.keep, self.mean.detach().float(), sample_gaussian(self.mean, self.logstd, temperature, generator))

    def log_prob(self, steps: torch.Tensor, tangent: torch.Tensor | None = None, along: torch.Tensor | None = None) -> torch.Tensor:
        """(..., 6) log-density of steps (..., 6) per component. A tethered body's step is read
        along one direction only (`worldmodel.tether.tangential_draw`): where tangent (..., 3) is a
        unit vector, component 3 holds the log-density of the velocity part projected on it, at
        along (...) step units (the projection's Gaussian: mean . tangent, variance sum of
        std^2 tangent^2), and the others 0; where it is 0 (a free body), the six components'."""
        free = gaussian_logprob(steps, self.mean, self.logstd)
        if tangent is None:
            return free
        mean = (self.mean[..., 3:] * tangent).sum(-1)
        logstd = 0.5 * ((2 * self.logstd[..., 3:]).exp() * tangent.square()).sum(-1).clamp(min=1e-30).log()
        projected = F.pad(gaussian_logprob(along, mean, logstd)[..., None], (3, 2))  # (..., 6): component 3
        return torch.where(tangent.any(-1, keepdim=True), projected, free)

    def component_kl(self, ref: StepDistribution, resolution: float = 0.0) -> torch.Tensor:
        """(..., 6) nats per step value: each component's Gaussian against ref's same component
        (moving to moving, resting to resting), plus the Bernoulli KL of the gate's keep probability
        shared out over the 6 values. Zero when the two are equal; unlike the KL of the chosen
        Gaussians, it stays smooth and small where the two gates choose differently (there, that
        KL divides the whole correction by the other's small resting spread).

        resolution (step units): both Gaussians are first widened by the same independent noise of
        that spread (variances + resolution^2), the KL of the steps as seen at that resolution. It
        is never above the exact KL (adding the same noise to both cannot separate them more) and
        stays finite where a near-deterministic step's mean moves: a resting step's mean is the
        prior's, which moves with the learnt body properties through the contact impulses its
        steady change leaves out, against a spread of e^-6 step units. 0: the exact KL."""
        def widened(logstd: torch.Tensor) -> torch.Tensor:
            return logstd if resolution == 0 else 0.5 * torch.log(torch.exp(2 * logstd) + resolution**2)

        moving = gaussian_kl(self.move, widened(self.move_logstd), ref.move, widened(ref.move_logstd))
        resting = gaussian_kl(self.rest, widened(self.rest_logstd), ref.rest, widened(ref.rest_logstd))
        p_keep, p_move = F.logsigmoid(self.keep_logit), F.logsigmoid(-self.keep_logit)
        q_keep, q_move = F.logsigmoid(ref.keep_logit), F.logsigmoid(-ref.keep_logit)
        gate = p_keep.exp() * (p_keep - q_keep) + p_move.exp() * (p_move - q_move)  # (...)
        return moving + resting + gate[..., None] / 6


class CaptionPointer(NamedTuple):
    """How `WorldModel.read_bodies` read each body's properties from the caption.

    attention   (B, n, N, BODY_PROPERTIES, 2 Lt) log-probability of each reading of each caption
                token being pointed at: the first Lt as the literal states the property, the second
                Lt (the radius's alone) a size read as the whole radius (CAPTION_RADIUS_TWICE)
    token_value (B, 1, 1, BODY_PROPERTIES, 2 Lt) each reading's value in each property's unit: log of
                radius m, mass kg, restitution, friction, damping 1/s (the literal's value times CAPTION_UNITS); inf off numbers
    gate_logit  (B, n, N, BODY_PROPERTIES) the pointed value's share against the slots' guess
    """

    attention: torch.Tensor
    token_value: torch.Tensor
    gate_logit: torch.Tensor


def pointer_targets(token_value: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which caption tokens state each body's properties: token_value (B, 1, 1, BODY_PROPERTIES, Lt)
    (`CaptionPointer.token_value`), truth (B, N, BODY_PROPERTIES) radius m, mass kg, restitution,
    friction, damping 1/s (NaN: not stated) -> (match (B, 1, N, BODY_PROPERTIES, Lt): the tokens
    nearest the stated value in its unit, found (B, 1, N, BODY_PROPERTIES): the nearest is within
    POINTER_TOLERANCE, so the caption states it). A token's distance from the value is its log
    ratio, or its difference in POINTER_ROUNDINGs of POINTER_TOLERANCE where that is less (a
    value stated to two decimals near 0: a damping of 0 is stated as 0.00)."""
    truth = truth.to(token_value.dtype)[:, None, :, :, None]  # (B, 1, N, P, 1)
    value = token_value.detach()
    ratio = (value - truth.log()).abs()  # (B, 1, N, P, Lt) log units; NaN where not stated
    off = torch.minimum(ratio, (value.exp() - truth).abs() * (POINTER_TOLERANCE / POINTER_ROUNDING))
    nearest = off.min(-1, keepdim=True).values
    return off <= nearest + 1e-3, nearest[..., 0] < POINTER_TOLERANCE


# ----------------------------------------------------------------------------------------------
# rotary positions (M-RoPE: head_dim/2 frequency pairs split over time, row, column)
# ----------------------------------------------------------------------------------------------
class Rotary(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        freqs = [cfg.rope_theta ** (-torch.arange(n, dtype=torch.float32) / n) for n in cfg.rope_sections]
        self.register_buffer("inv_freq", torch.cat(freqs), persistent=False)  # (hd/2,)
        self.register_buffer("axis", torch.cat([torch.full((n,), i) for i, n in enumerate(cfg.rope_sections)]), persistent=False)

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        """pos (L, 3) -> unit complex rotations exp(i * angle), (L, hd/2) complex64"""
        angle = pos[:, self.axis].float() * self.inv_freq  # (L, hd/2)
        return torch.polar(torch.ones_like(angle), angle)


def apply_rotary(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """x (..., L, hd) with adjacent pairs (x[2i], x[2i+1]) rotated as complex numbers by rot (L, hd/2)
    (one complex multiply instead of the rotate-half form's chunk, four products and a concatenation)."""
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(xc * rot).flatten(-2).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# transformer
# ----------------------------------------------------------------------------------------------
@dataclass
class KVCache:
    """Keys and values of every token seen so far, per layer, for frame-by-frame rollouts."""

    k: list = field(default_factory=list)  # per layer (B, nh, Lk, hd)
    v: list = field(default_factory=list)
    block: torch.Tensor | None = None  # (Lk,) time block of each cached key, -1 for text
    valid: torch.Tensor | None = None  # (B, Lk) False for padding keys

    def __len__(self) -> int:
        return 0 if self.block is None else len(self.block)


@dataclass
class ChunkedMask:
    """Block-causal attention split into query chunks. Keys are ordered by time block (text first),
    so the queries of a chunk ending with block b see only the keys up to the end of block b: each
    chunk attends to that prefix alone, and the attention skips the keys no query of the chunk may
    see (about half of them) instead of masking them. Exactly the full masked attention.

    chunks: (q_start, q_end, k_end, additive mask (B or 1, 1, q_end - q_start, k_end)) each
    """

    chunks: list[tuple[int, int, int, torch.Tensor]]

    @classmethod
    def plan(cls, block: torch.Tensor, mask: torch.Tensor, n_chunks: int) -> ChunkedMask | None:
        """block (L,) time block of each token, non-decreasing; mask (B or 1, 1, L, L) additive ->
        about n_chunks chunks cut at block boundaries (the text is one), or None when not ordered."""
        blocks = block.tolist()
        if any(a > b for a, b in zip(blocks, blocks[1:])):
            return None
        L = len(blocks)
        ends = [i + 1 for i in range(L - 1) if blocks[i] != blocks[i + 1]] + [L]  # each block's end
        n_text = ends[0] if blocks[0] < 0 else 0
        target = (L - n_text) / max(n_chunks - (n_text > 0), 1)  # tokens per chunk after the text
        cuts, start = ([n_text] if n_text else []), n_text
        for e in ends[1 if n_text else 0 :]:
            if e - start >= target - 1e-9 or e == L:
                cuts.append(e)
                start = e
        chunks, q0 = [], 0
        for q1 in cuts:
            chunks.append((q0, q1, q1, mask[..., q0:q1, :q1]))
            q0 = q1
        return cls(chunks)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.proj.residual = True

    def forward(self, x, rot, mask, cache: KVCache | None = None, layer: int = 0):
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)  # 3 x (B, nh, L, hd)
        q, k = apply_rotary(q, rot), apply_rotary(k, rot)
        if cache is not None:
            if layer < len(cache.k):
                k, v = torch.cat([cache.k[layer], k], dim=2), torch.cat([cache.v[layer], v], dim=2)
                cache.k[layer], cache.v[layer] = k, v
            else:
                cache.k.append(k)
                cache.v.append(v)
        p = self.dropout if self.training else 0.0
        if isinstance(mask, ChunkedMask):
            y = torch.cat([F.scaled_dot_product_attention(q[:, :, q0:q1], k[:, :, :k1], v[:, :, :k1], attn_mask=m, dropout_p=p) for q0, q1, k1, m in mask.chunks], dim=2)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, nh, L, hd)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.moe = MoEFeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, rot, mask, types, valid, cache=None, layer=0):
        x = x + self.drop(self.attn(self.ln1(x), rot, mask, cache, layer))
        y, aux, routing = self.moe(self.ln2(x), types, valid)
        return x + y, aux, routing


class FrameHead(nn.Module):
    """Video token of block b -> per-pixel mean and log-std of tubelet (b+1, same row, col)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.out = nn.Linear(cfg.d_model, 2 * cfg.tubelet_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.logstd_init = 0.5 * (cfg.logstd_min + cfg.logstd_max)  # std 0.05 by default
        self.delta_scale = cfg.frame_delta_scale

    def forward(self, h: torch.Tensor, tubelets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, n, Np, D), tubelets (B, n, Np, tubelet_dim) the current blocks' pixels in [0, 1]
        -> mean, logstd (B, n, Np, tubelet_dim) of the next blocks"""
        cfg = self.cfg
        delta, raw = self.out(h).chunk(2, dim=-1)
        mean = self.delta_scale * delta
        if cfg.residual_frame:
            last = tubelets.unflatten(-1, (cfg.tubelet_t, -1))[..., -1:, :]  # (B, n, Np, 1, p*p*3)
            mean = mean + last.expand(*last.shape[:-2], cfg.tubelet_t, last.shape[-1]).flatten(-2)
        # soft clamp of raw + centre into [logstd_min, logstd_max], the identity away from the bounds
        logstd = cfg.logstd_max - F.softplus(cfg.logstd_max - (raw + self.logstd_init))
        logstd = cfg.logstd_min + F.softplus(logstd - cfg.logstd_min)
        return mean, logstd


class StateHead(nn.Module):
    """Block b's video tokens -> n_out numbers per object in each of tubelet_t frames, by attention
    pooling: one learned pooling query per (frame, object) slot. With `n_features`, each object's own
    explicit features (B, n, n_max, F) are added to its slots and mapped linearly to the output too,
    by a learned map plus a fixed one, `prior` (n_out, F): what the head outputs before it learns.
    The learnt maps see the features soft-clipped to +-FEATURE_BOUND (the identity near 0), so that
    their corrections stay within what training showed them when a rollout leaves its ranges (a
    faster, higher or farther body; a bounce's velocity jump); the prior sees the features as they are."""

    def __init__(self, cfg: ModelConfig, n_features: int = 0, n_out: int = 6, prior: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        Q = cfg.tubelet_t * cfg.n_max_objects
        self.pool = nn.Linear(cfg.d_model, Q)
        self.slot = nn.Parameter(torch.randn(Q, cfg.d_model) * 0.02)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(), nn.Linear(cfg.d_model, n_out))
        if n_features:
            self.features = nn.Linear(n_features, cfg.d_model)
            self.skip = nn.Linear(n_features, n_out)
            self.register_buffer("prior", torch.zeros(n_out, n_features) if prior is None else prior, persistent=False)

    def slots(self, h: torch.Tensor) -> torch.Tensor:
        """h (B, n, Np, D) -> the pooled slots (B, n, tt, n_max, D)"""
        cfg = self.cfg
        w = self.pool(h).softmax(dim=2)  # (B, n, Np, Q) over patches
        return (torch.einsum("bnpq,bnpd->bnqd", w, h) + self.slot).view(*h.shape[:2], cfg.tubelet_t, cfg.n_max_objects, -1)

    def decode(self, slots: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """slots (..., tt, n_max, D), features (..., n_max, F) or None -> (..., tt, n_max, n_out)"""
        if features is None:
            return self.mlp(slots)
        bounded = FEATURE_BOUND * torch.tanh(features / FEATURE_BOUND)  # what the learnt maps see
        return self.mlp(slots + self.features(bounded).unsqueeze(-3)) + (self.skip(bounded) + features @ self.prior.T).unsqueeze(-3)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h (B, n, Np, D) -> (B, n * tubelet_t, n_max, n_out), without features (the readout)"""
        return self.decode(self.slots(h)).flatten(1, 2)


def constant_acceleration_prior(cfg: ModelConfig) -> torch.Tensor:
    """The dynamics head's fixed map (DYNAMICS_OUT outputs, `dynamics_features_dim` inputs): constant acceleration
    at the steady velocity change (features 9..11, step_vel_scale units), r_v = steady and
    r_p = steady * step_vel_scale * dt (1 + sim_timestep / dt) / (2 * step_pos_scale), what the
    simulator's semi-implicit Euler steps within one frame add up to. The head learns corrections to
    it, so a force the context shows carries on in a rollout unless the head has learnt that it stops;
    its log-std and gate outputs have no prior (rows 6.. are 0), nor do contacts and actions (columns 12..)."""
    prior, eye = torch.zeros(DYNAMICS_OUT, dynamics_features_dim(cfg)), torch.eye(3)
    dt = 1.0 / cfg.fps
    prior[3:6, STEADY] = eye
    prior[0:3, STEADY] = eye * cfg.step_vel_scale * dt * (1 + cfg.sim_timestep / dt) / (2 * cfg.step_pos_scale)
    return prior


def roll_share_of(velocity: torch.Tensor, spin_velocity: torch.Tensor) -> torch.Tensor:
    """(...): the share of a horizontal velocity (..., 2) m/s that a spin rolling at spin_velocity
    (..., 2) m/s makes up, u . v / |v|^2 (0 where it does not move sideways)."""
    v2 = velocity.square().sum(-1)
    return torch.where(v2 > 1e-6, (spin_velocity * velocity).sum(-1) / v2.clamp(min=1e-6), torch.zeros_like(v2))


def physical_roll_share(share: torch.Tensor) -> torch.Tensor:
    """The roll share (..., N) a body can have nearest the one read: a body that rolls has at most
    MAX_ROLLING_SHARE, so a read above it is one that cannot roll, 1. Read at 0.86, a box would
    land, spin up to 14% of its speed and roll on at it for ever (`WorldModel.floor_landing`: with
    no slip left, friction no longer acts), where MuJoCo's stops dead."""
    return torch.where(share > MAX_ROLLING_SHARE, torch.ones_like(share), share)


def sphere_pairs(cur: torch.Tensor, radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every pair of bodies as spheres: cur (..., N, 6) SI states, radius (..., N) m -> the gap
    between their surfaces (..., N, N) m, the unit normal from i towards j (..., N, N, 3) and their
    closing speed along it (..., N, N) m/s, > 0 approaching; [i, j] is body i's view of body j."""
    p, v = cur[..., :3], cur[..., 3:]
    dp = p.unsqueeze(-3) - p.unsqueeze(-2)  # (..., N, N, 3): [i, j] = p_j - p_i
    dist = dp.norm(dim=-1).clamp(min=1e-6)  # (..., N, N) m
    normal = dp / dist[..., None]
    closing = -((v.unsqueeze(-3) - v.unsqueeze(-2)) * normal).sum(-1)
    return dist - (radius.unsqueeze(-1) + radius.unsqueeze(-2)), normal, closing


def other_tracked(mask: torch.Tensor) -> torch.Tensor:
    """(..., N, N) bool: [i, j] is true where j is tracked (mask (..., N)) and j != i."""
    N = mask.shape[-1]
    return mask.unsqueeze(-2) & ~torch.eye(N, dtype=torch.bool, device=mask.device)


def undriven_if_passive(bodies: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor:
    """bodies (B, ..., N, BODY_COLUMNS) (`body_properties`) with the driven logit at DRIVEN_INIT
    (free) in every clip whose episode has no actions, active (B,) bool (None: all active): nothing
    drives a body in a passive scene, whatever its video looks like out of the training ranges."""
    if active is None:
        return bodies
    passive = ~active.view(-1, *[1] * (bodies.dim() - 2))  # (B, 1.., 1)
    driven = bodies[..., DRIVEN : DRIVEN + 1].masked_fill(passive[..., None], DRIVEN_INIT)
    return torch.cat([bodies[..., :DRIVEN], driven, bodies[..., DRIVEN + 1 :]], dim=-1)


def free_bodies(bodies: torch.Tensor, mask: torch.Tensor, tether: Tether | None) -> torch.Tensor:
    """(..., N) bool: the tracked bodies (mask) that are neither driven (bodies (..., N,
    BODY_COLUMNS), `body_properties`) nor tethered."""
    free = mask & (bodies[..., DRIVEN] <= 0)
    return free if tether is None else free & ~tether.on


def held(steady: torch.Tensor | None, bodies: torch.Tensor) -> torch.Tensor | None:
    """The steps held on the prior's: steady (..., tt) bool the steps whose actions are the step
    before's (None: unknown, nothing held), bodies (..., N, BODY_COLUMNS) -> (..., tt, N) bool:
    a driven body (driven logit > 0) under steady actions."""
    if steady is None:
        return None
    return steady[..., :, None] & (bodies[..., DRIVEN] > 0)[..., None, :]


class WorldModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = UniTokenEmbed(cfg)
        self.rotary = Rotary(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.frame_head = FrameHead(cfg)
        self.state_head = StateHead(cfg)
        self.dynamics_head = StateHead(cfg, n_features=dynamics_features_dim(cfg), n_out=DYNAMICS_OUT, prior=constant_acceleration_prior(cfg))  # step mean, log-std, gate
        self.body_head = nn.Linear(cfg.d_model, BODY_COLUMNS + BODY_PROPERTIES)  # each body's size, mass, restitution, friction and damping guessed from its dynamics slots, how far to take the caption's instead, whether the actions drive it, and its roll share
        self.caption_query = nn.Linear(cfg.d_model, BODY_PROPERTIES * POINTER_DIM)  # per body and property: which caption number states it
        self.caption_key = nn.Linear(cfg.d_model, POINTER_DIM)
        self.radius_reading = nn.Parameter(torch.zeros(POINTER_DIM))  # the radius query's pull towards a size's second reading (CAPTION_RADIUS_TWICE)
        self.shape_query = nn.Linear(cfg.d_model, POINTER_DIM)  # per body: which caption word names its shape ("a red box")
        self.shape_key = nn.Linear(cfg.d_model, POINTER_DIM)
        self.shape_read = nn.Linear(cfg.d_model, 1)  # the pointed word's hidden state -> its part of the roll share's logit
        self.register_buffer("caption_unit", torch.tensor(CAPTION_UNITS), persistent=False)  # fixed: a learnt unit drifts to make up for a pointer that averages numbers
        self.register_buffer("state_scale", torch.tensor([cfg.pos_scale] * 3 + [cfg.vel_scale] * 3), persistent=False)
        # log of the factor on the moving steps' spread where the model is a policy (a rollout's
        # draws and their log-density), not in the supervised NLL, which fits the head's spread to
        # one-step errors: 0 from pretraining; RL from physical feedback learns it (rlpf `spread_lr`)
        self.step_spread = nn.Parameter(torch.zeros(()))
        # the same on the frame head's spread, which a rollout draws its pixels with (and reads its
        # next block's bodies from): 0 from pretraining; rlpf `learn_frame_spread` learns it
        self.frame_spread = nn.Parameter(torch.zeros(()))
        self._init_weights()

    def _init_weights(self):
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not name.startswith("frame_head"):
                std = 0.02 / math.sqrt(2 * self.cfg.n_layer) if getattr(m, "residual", False) else 0.02
                nn.init.normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(self.dynamics_head.mlp[-1].weight)  # the dynamics head starts as its prior exactly
        nn.init.zeros_(self.dynamics_head.skip.weight)
        nn.init.zeros_(self.shape_read.weight)  # the caption's shape word starts with no say in the roll share
        with torch.no_grad():  # radius RADIUS_INIT, equal masses, restitution 0.5, friction FRICTION_INIT, damping DAMPING_INIT; the caption's values a quarter in; none driven; roll share ROLL_INIT
            guess = [math.log(math.expm1(RADIUS_INIT)), 0.0, 0.0, math.log(math.expm1(FRICTION_INIT)), math.log(math.expm1(DAMPING_INIT))]
            self.body_head.bias.copy_(torch.tensor(guess + [math.log(1 / 3)] * BODY_PROPERTIES + [DRIVEN_INIT, math.log(ROLL_INIT / (1 - ROLL_INIT))]))

    # --- bookkeeping ---------------------------------------------------------------------------
    def num_parameters(self) -> int:
        """Every parameter, embeddings included."""
        return sum(p.numel() for p in self.parameters())

    def num_active_parameters(self) -> int:
        """Parameters used per token: experts count top_k / n_expert."""
        cfg = self.cfg
        expert = sum(p.numel() for n, p in self.named_parameters() if ".moe." in n and n.split(".")[-1] in ("w_in", "b_in", "w_out", "b_out"))
        return self.num_parameters() - expert * (cfg.n_expert - cfg.top_k) // cfg.n_expert

    def describe(self) -> str:
        c = self.cfg
        return (
            f"WorldModel d_model={c.d_model} n_layer={c.n_layer} n_head={c.n_head} experts={c.n_expert} top_k={c.top_k} "
            f"tubelet={c.tubelet_t}x{c.patch}x{c.patch} on {c.image_size}x{c.image_size}: "
            f"{self.num_parameters():,} parameters ({self.num_active_parameters():,} active per token)"
        )

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- backbone ------------------------------------------------------------------------------
    def run(self, x: torch.Tensor, layout: Layout, valid: torch.Tensor, cache: KVCache | None = None, window: int | None = None):
        """x (B, L, D) new tokens with their layout and validity (B, L); with a cache the tokens
        attend to everything cached before them, and are appended to it. window (no cache): each
        token attends only to those at most this many positions (time) away, in every layer.

        Returns h (B, L, D) after the final norm, moe_aux (scalar, mean over layers), routing (n_layer, B, L, k).
        """
        layout = layout.to(x.device)
        if cache is None:
            k_block, k_valid = layout.block, valid
        else:
            k_block = layout.block if cache.block is None else torch.cat([cache.block, layout.block])
            k_valid = valid if cache.valid is None else torch.cat([cache.valid, valid], dim=1)
            cache.block, cache.valid = k_block, k_valid
        allowed = block_causal_mask(layout.block, k_block, k_valid)  # (B, 1, L, Lk) bool
        if window is not None:
            t = layout.pos[:, 0]
            allowed = allowed & ((t[:, None] - t[None, :]).abs() <= window)
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill_(~allowed, float("-inf"))  # additive, made once for all layers
        if cache is None and self.cfg.attn_chunks > 1:
            mask = ChunkedMask.plan(layout.block, mask, self.cfg.attn_chunks) or mask
        rot = self.rotary(layout.pos)
        aux, routing = [], []
        for i, block in enumerate(self.blocks):
            x, a, r = block(x, rot, mask, layout.types, valid, cache, i)
            aux.append(a)
            routing.append(r)
        return self.ln_f(x), torch.stack(aux).mean(), torch.stack(routing)

    def video_hidden(self, h: torch.Tensor, nb: int) -> torch.Tensor:
        """The last nb blocks' video tokens of h (B, L, D) -> (B, nb, Np, D)"""
        S, Np = self.cfg.block_len, self.cfg.n_patches
        return h[:, h.shape[1] - nb * S :].unflatten(1, (nb, S))[:, :, S - Np :]

    def block_inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Per-block inputs of a batch: tubelets (B, nb, Np, tubelet_dim) in [0, 1], audio
        features (B, nb, tt, bins) and presence (B, nb, tt), block actions (B, nb, tt, A) and
        whether each is the one before it (`steady_actions`, (B, nb, tt); None without actions)."""
        cfg = self.cfg
        B, T = batch.frames.shape[:2]
        nb, tt, dev = n_blocks(T, cfg.tubelet_t), cfg.tubelet_t, batch.frames.device
        out = {"tubelets": frames_to_tubelets(batch.frames.float() / 255.0, tt, cfg.patch)}
        out["audio_feat"] = out["audio_present"] = out["actions"] = out["steady"] = None
        if cfg.audio_bins:
            if batch.audio is None:
                wave = torch.zeros(B, T, cfg.samples_per_frame, device=dev)
                present = torch.zeros(B, T, dtype=torch.bool, device=dev)
            else:
                wave = batch.audio.float()
                present = torch.ones(B, T, dtype=torch.bool, device=dev) if batch.audio_present is None else batch.audio_present.bool()
            present = torch.cat([present, present.new_zeros(B, nb * tt - T)], dim=1)
            out["audio_feat"] = audio_features(pad_time(wave, tt), cfg.audio_bins).unflatten(1, (nb, tt))
            out["audio_present"] = present.unflatten(1, (nb, tt))
        if cfg.action_dim:
            actions = torch.zeros(B, T, cfg.action_dim, device=dev) if batch.actions is None else batch.actions.float()
            out["actions"] = block_actions(actions, nb, tt)
            out["steady"] = None if batch.actions is None else steady_actions(actions, nb, tt)
        out["state_feat"] = out["state_present"] = None
        if cfg.state_tokens:
            states = torch.zeros(B, T, cfg.n_max_objects, 6, device=dev) if batch.states is None else batch.states.float()
            mask = self._state_mask(batch, B, dev)
            out["state_feat"] = state_features(pad_time(states, tt), mask, cfg.pos_scale, cfg.vel_scale).unflatten(1, (nb, tt))
            present = torch.full((B,), batch.states is not None, device=dev)
            out["state_present"] = present if batch.state_present is None else present & batch.state_present.bool()
        return out

    def _state_mask(self, batch: Batch, B: int, device) -> torch.Tensor:
        if batch.state_mask is None:
            return torch.ones(B, self.cfg.n_max_objects, dtype=torch.bool, device=device)
        return batch.state_mask.bool()

    def step_states(self, prev: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """prev (..., 6) position m, velocity m/s; steps (..., 6) the dynamics head's output ->
        the next frame's (..., 6): p + v dt + step_pos_scale * r_p, v + step_vel_scale * r_v"""
        cfg = self.cfg
        p, v = prev[..., :3], prev[..., 3:]
        return torch.cat([p + v / cfg.fps + cfg.step_pos_scale * steps[..., :3], v + cfg.step_vel_scale * steps[..., 3:]], dim=-1)

    def step_targets(self, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """The dynamics head output that takes prev (..., 6) exactly to nxt (..., 6)."""
        cfg = self.cfg
        p, v = prev[..., :3], prev[..., 3:]
        return torch.cat([(nxt[..., :3] - p - v / cfg.fps) / cfg.step_pos_scale, (nxt[..., 3:] - v) / cfg.step_vel_scale], dim=-1)

    def dynamics_features(
        self,
        cur: torch.Tensor,
        prev: torch.Tensor,
        prev2: torch.Tensor | None = None,
        actions: torch.Tensor | None = None,
        bodies: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        history: torch.Tensor | None = None,
        tether: Tether | None = None,
        closed: tuple[torch.Tensor, torch.Tensor | None] | None = None,
        rolls: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Each body's explicit inputs to the dynamics head from the base frame's state cur (..., N, 6)
        and the two frames before, prev and prev2 (..., N, 6; prev2 None, or False in history
        (broadcast to (..., N)): no history beyond prev): position / pos_scale, velocity /
        vel_scale, the last velocity change dv1 and the steady change, all changes / step_vel_scale
        (BODY_FEATURES); its `contact_features`; then, the same for every body, the actions that
        drive the step, actions (..., tt, action_dim) (None: zeros, no action); then its
        `tether_features` (tether (..., N) broadcast against cur; None: none tethered) -> (..., N,
        `dynamics_features_dim`). bodies (..., N, BODY_COLUMNS) (`body_properties`; None: points
        without contacts) and mask (..., N) bool the tracked bodies (None: all); closed the
        `closed_form_step`s (..., N, 6) from prev and prev2 where the caller has them (a chain that
        made those steps; None: computed here from bodies, with rolls, the bodies' spins at prev and
        prev2 as `rolling` reads them, (..., N) each or None: no spin).

        The velocity changes are what the frame's `closed_form_step` does not explain: a hit, a
        bounce or a pendulum's swing is the closed form's job, so it does not enter the forces the
        prior carries on. The
        steady change is the median of dv1, the change before it (dv1 without history) and 0: a
        constant force keeps it, while what is left of an impulse (one frame of a bounce or a hit
        the closed form got slightly wrong) does not carry over into the next step."""
        cfg = self.cfg
        mask = torch.ones(cur.shape[:-1], dtype=torch.bool, device=cur.device) if mask is None else mask.expand(cur.shape[:-1])
        roll1, roll2 = (None, None) if rolls is None else rolls
        kick = lambda s, known, roll: 0.0 if bodies is None else (self.closed_form_step(s, bodies, mask, tether, roll) if known is None else known)[..., 3:] * cfg.step_vel_scale  # noqa: E731  m/s
        dv1 = cur[..., 3:] - prev[..., 3:] - kick(prev, None if closed is None else closed[0], roll1)
        dv2 = dv1 if prev2 is None else prev[..., 3:] - prev2[..., 3:] - kick(prev2, None if closed is None else closed[1], roll2)
        if history is not None:
            dv2 = torch.where(history.expand(cur.shape[:-1])[..., None], dv2, dv1)
        steady = torch.stack([dv1, dv2, torch.zeros_like(dv1)]).median(dim=0).values
        radius = cur.new_zeros(cur.shape[:-1]) if bodies is None else bodies[..., 0]
        free = None if bodies is None else free_bodies(bodies, mask, tether)
        if bodies is not None and cfg.floor_steady > 0:
            steady = self.steady_on_floor(cur, steady, radius, free, mask)
        if bodies is not None and cfg.fall_steady > 0:
            steady = self.steady_in_fall(cur, steady, radius, free, mask)
        parts = [cur[..., :3] / cfg.pos_scale, cur[..., 3:] / cfg.vel_scale, dv1 / cfg.step_vel_scale, steady / cfg.step_vel_scale, self.contact_features(cur, radius, mask)]
        n_act = cfg.tubelet_t * cfg.action_dim
        if n_act:
            act = cur.new_zeros(*cur.shape[:-2], n_act) if actions is None else actions.flatten(-2).to(cur.dtype)
            parts.append(act.unsqueeze(-2).expand(*cur.shape[:-1], n_act))
        parts.append(tether_features(cur, tether, 1.0 / cfg.fps, cfg.step_vel_scale))
        return torch.cat(parts, dim=-1)

    def steady_on_floor(self, cur: torch.Tensor, steady: torch.Tensor, radius: torch.Tensor, free: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """steady (..., N, 3) m/s per frame, the velocity change the prior carries on, with its
        horizontal part, for the free bodies (free (..., N) bool: tracked, neither driven nor
        tethered) whose bottom is on the floor (`on_floor`, or below it) and that no other tracked
        body (mask (..., N) bool) is within `override_reach` of, limited to what friction can do:
        it only slows their horizontal velocity (the part against it, at most the speed, none
        across it). The flat floor pushes only up and rubs; nothing else touches such a body. A
        steady sideways change the head's steps left on a resting body (a drop's box after its
        bounces) was otherwise carried on every frame, so it slid off ever faster. cur (..., N, 6)
        SI the frame's states, radius (..., N) m (`body_properties`)."""
        dt = 1.0 / self.cfg.fps
        alone = self.body_gap(cur, radius, mask, dt) > self.cfg.override_reach
        rubbed = free & alone & self.on_floor(cur, radius)  # (..., N)
        v = cur[..., 3:5]  # (..., N, 2) m/s horizontal
        speed = v.norm(dim=-1, keepdim=True)
        back = -v / speed.clamp(min=1e-9)  # unit vector against the motion (0 at rest)
        slowing = (steady[..., :2] * back).sum(-1, keepdim=True).clamp(min=0).minimum(speed)  # m/s per frame
        friction = torch.cat([back * slowing, steady[..., 2:]], dim=-1)
        return torch.where(rubbed[..., None], friction, steady)

    def steady_in_fall(self, cur: torch.Tensor, steady: torch.Tensor, radius: torch.Tensor, free: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """steady (..., N, 3) m/s per frame, the velocity change the prior carries on, with gravity's
        (0, 0, -g dt) for the free bodies (free (..., N) bool) above the floor that no other tracked
        body (mask (..., N) bool) is within `override_reach` of and whose steady change points down
        by more than FALL_ONSET g dt and within FALL_SLOPE of vertical: nothing the model tracks
        holds them up, so they fall freely (a cup that has left a table's edge, which the model
        does not track; a thrown body in flight, whose change is gravity's already). A body sliding
        down a ramp keeps its change, which is mostly along the slope. cur (..., N, 6) SI the
        frame's states, radius (..., N) m (`body_properties`)."""
        dt, g = 1.0 / self.cfg.fps, -GRAVITY[2]
        alone = self.body_gap(cur, radius, mask, dt) > self.cfg.override_reach
        down = -steady[..., 2]  # (..., N) m/s per frame
        falling = free & alone & ~self.on_floor(cur, radius) & (down > FALL_ONSET * g * dt) & (steady[..., :2].norm(dim=-1) < FALL_SLOPE * down)
        gravity = torch.zeros_like(steady)
        gravity[..., 2] = -g * dt
        return torch.where(falling[..., None], gravity, steady)

    def contact_features(self, cur: torch.Tensor, radius: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each body's contact inputs (..., N, CONTACT_FEATURES) from the base frame's states cur
        (..., N, 6) SI, the bodies' radii (..., N) m and which are tracked, mask (..., N) bool: for
        the other tracked body whose surface gap after one more frame at the current velocities is
        smallest, that gap / contact_scale and the velocity of approach along the line of centres
        (closing speed times the unit normal towards it, / vel_scale: the direction and size of the
        impulse a hit gives); then the gap to the floor (z = 0) after one frame / contact_scale.
        Where the gap falls below 0 within the frame, the bodies touch: an impact's timing is given
        to the head rather than left to infer (measured, it still brakes before hits: benchmarks/HISTORY.md,
        `impact_steps.py`). A body with no other tracked body gets FAR_GAP, no approach."""
        cfg = self.cfg
        dt = 1.0 / cfg.fps
        p, v = cur[..., :3], cur[..., 3:]
        surface, normal, closing = sphere_pairs(cur, radius)
        gap = surface - closing * dt  # (..., N, N) m
        other = other_tracked(mask)
        nearest = gap.masked_fill(~other, float("inf")).argmin(-1, keepdim=True)  # (..., N, 1)
        has = other.any(-1).expand(gap.shape[:-1])  # (..., N)
        near_gap = torch.where(has, torch.gather(gap, -1, nearest).squeeze(-1), torch.full_like(gap[..., 0], FAR_GAP))
        near_normal = torch.gather(normal, -2, nearest[..., None].expand(*nearest.shape, 3)).squeeze(-2)  # (..., N, 3)
        approach = torch.gather(closing, -1, nearest) * near_normal * has[..., None]  # (..., N, 3) m/s
        floor_gap = p[..., 2] + v[..., 2] * dt - radius  # (..., N) m
        return torch.cat([near_gap[..., None] / cfg.contact_scale, approach / cfg.vel_scale, floor_gap[..., None] / cfg.contact_scale], dim=-1)

    def caption_numbers(self, text: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The caption as the body properties' pointer reads it: text (B, Lt) tokens, values (B, Lt)
        their `text_values` -> (hidden states (B, Lt, D), values, the last bytes of its shape nouns
        (B, Lt) bool, `tokens.shape_words`). The hidden states come from a pass
        of the caption alone with every numeric literal blanked (its bytes NUMBER_BLANK, no value), so
        a number's key says what it states and of which body ("the red ball's kg"), never how large
        it is: a mass or a size outside the training range is pointed at as surely as one inside.
        Each byte attends only to those within CAPTION_KEY_WINDOW of it (per layer), so a number's key
        comes from its own clause and its neighbours' ("red #.## kg"), whatever follows more than
        n_layer * CAPTION_KEY_WINDOW bytes on (a caption of five balls, where training had three,
        keeps the first three's keys)."""
        blank = text.masked_fill(values.isfinite(), NUMBER_BLANK)
        x = self.embed.embed_text(blank, torch.full_like(values, float("nan")))
        h, _, _ = self.run(x, text_layout(text.shape[1]), text != PAD, window=CAPTION_KEY_WINDOW)
        return h, values, torch.from_numpy(shape_words(text.cpu().numpy())).to(text.device)

    def body_properties(self, slots: torch.Tensor, caption: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The dynamics slots (..., tt, N, D) of a block -> each body's properties (..., N,
        BODY_COLUMNS): radius m, log mass, restitution, Coulomb friction, hinge damping (1/s), the
        logit of its being driven by the actions (> 0: driven) and its roll share (in (0, 1)), what
        the contact features, the impulses and the swing need
        (`read_bodies` with its pointer)."""
        return self.read_bodies(slots, caption)[0]

    def read_bodies(self, slots: torch.Tensor, caption: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, CaptionPointer | None]:
        """`body_properties`, and how they were read from the caption. Without a caption, the
        slots' guess (averaged over the block's frames): softplus, as is, sigmoid, softplus, softplus. With one,
        caption = (its tokens' hidden states (B, Lt, D) from `caption_numbers`, their `text_values`
        (B, Lt), NaN off numbers, its shape nouns (B, Lt) bool) for slots (B, n, tt, N, D): each body and property also points at
        the caption's numbers (attention from its slots to them) and takes the pointed value, times
        its unit (CAPTION_UNITS), in the proportion a learnt gate gives ("Balls (3) of 20 cm ... red
        1.15 kg ... Restitution 0.80, friction 0.40"). The value passes through as stated, so a mass or a size
        beyond the training range is read as it is, not squashed into it. Whether the actions drive
        a body is the slots' alone (the caption does not say). The roll share's logit is the slots'
        plus what the caption's shape word says: each body also points at the caption's shape
        nouns (attention from its slots to them alone, as to the numbers) and reads the pointed
        word's hidden state ("red box": a body that slides, "red sphere": one that rolls); a
        64-pixel video barely tells a box from a ball. Returns (bodies (..., N,
        BODY_COLUMNS), the `CaptionPointer`, None without a caption)."""
        pooled = slots.mean(-3)  # (..., N, D)
        raw = self.body_head(pooled)  # (..., N, BODY_COLUMNS + BODY_PROPERTIES): the guess, the gate logits, the driven logit, the roll share's logit
        guess = torch.stack([F.softplus(raw[..., 0]), raw[..., 1], torch.sigmoid(raw[..., 2]), F.softplus(raw[..., 3]), F.softplus(raw[..., 4])], dim=-1)
        driven, roll = raw[..., 2 * BODY_PROPERTIES : 2 * BODY_PROPERTIES + 1], raw[..., 2 * BODY_PROPERTIES + 1 :]  # (..., N, 1) each: the driven logit, the roll share's logit
        if caption is None:
            return torch.cat([guess, driven, torch.sigmoid(roll)], dim=-1), None
        hidden, values, words = caption  # words: the shape nouns
        number = values.isfinite()  # (B, Lt)
        shape_score = torch.einsum("bnkd,bld->bnkl", self.shape_query(pooled), self.shape_key(hidden)) / math.sqrt(POINTER_DIM)  # (B, n, N, Lt)
        shape_score = torch.where(words.any(-1)[:, None, None, None], shape_score.masked_fill(~words[:, None, None], float("-inf")), torch.zeros_like(shape_score))
        shape_word = shape_score.softmax(-1) @ hidden[:, None]  # (B, n, N, D): the hidden state of the noun each body points at
        said = self.shape_read(shape_word) * words.any(-1)[:, None, None, None]  # (B, n, N, 1): no shape noun, no say
        q = self.caption_query(pooled).unflatten(-1, (BODY_PROPERTIES, POINTER_DIM))  # (B, n, N, BODY_PROPERTIES, P)
        k = self.caption_key(hidden)  # (B, Lt, P)
        score = torch.einsum("bnkpd,bld->bnkpl", q, k) / math.sqrt(POINTER_DIM)
        twice = score[..., :1, :] + (q[..., :1, :] @ self.radius_reading)[..., None] / math.sqrt(POINTER_DIM) + CAPTION_RADIUS_TWICE_LOGIT  # (B, n, N, 1, Lt): the radius read as the whole size
        score = torch.cat([score, F.pad(twice, (0, 0, 0, BODY_PROPERTIES - 1), value=float("-inf"))], dim=-1)  # (B, n, N, BODY_PROPERTIES, 2 Lt)
        number2 = number.repeat(1, 2)  # (B, 2 Lt)
        score = score.masked_fill(~number2[:, None, None, None], float("-inf"))
        score = torch.where(number.any(-1)[:, None, None, None, None], score, torch.zeros_like(score))  # no numbers: unused (gate 0)
        attention = score.log_softmax(-1)  # (B, n, N, BODY_PROPERTIES, 2 Lt)
        once = values.abs().clamp(min=1e-3).log().nan_to_num()[:, None, None, None] + self.caption_unit[:, None]  # (B, 1, 1, BODY_PROPERTIES, Lt) log, in each property's unit
        token_value = torch.cat([once, once + F.pad(once.new_tensor([CAPTION_RADIUS_TWICE]), (0, BODY_PROPERTIES - 1))[:, None]], dim=-1)  # (B, 1, 1, BODY_PROPERTIES, 2 Lt)
        pointed = (attention.exp() * token_value).sum(-1)  # (B, n, N, BODY_PROPERTIES) log
        read = torch.stack([pointed[..., 0].exp(), pointed[..., 1], pointed[..., 2].exp().clamp(max=1.0), pointed[..., 3].exp(), pointed[..., 4].exp()], dim=-1)
        gate_logit = raw[..., BODY_PROPERTIES : 2 * BODY_PROPERTIES]
        gate = torch.sigmoid(gate_logit.masked_fill(~number.any(-1)[:, None, None, None], -torch.inf))  # no numbers: shut
        second = torch.arange(number2.shape[-1], device=number.device) >= number.shape[-1]  # (2 Lt,) the second readings
        radius_row = torch.arange(BODY_PROPERTIES, device=number.device)[:, None] == 0  # (BODY_PROPERTIES, 1)
        readable = number2[:, None, None, None] & (~second | radius_row)  # (B, 1, 1, BODY_PROPERTIES, 2 Lt): the second readings are the radius's alone
        pointer = CaptionPointer(attention, token_value.masked_fill(~readable, torch.inf), gate_logit)
        return torch.cat([gate * read + (1 - gate) * guess, driven, torch.sigmoid(roll + said)], dim=-1), pointer

    def contact_impulse(self, cur: torch.Tensor, bodies: torch.Tensor, mask: torch.Tensor, roll: torch.Tensor | None = None) -> torch.Tensor:
        """The closed-form part of a frame's step (..., N, 6) in step units: the velocity change of
        every collision the frame holds, and the distance it moves the body by the frame's end.
        cur (..., N, 6) SI the frame's starting states; bodies (..., N, BODY_COLUMNS)
        (`body_properties`); mask (..., N) bool the tracked bodies; roll (..., N) each body's spin
        as a share of its horizontal velocity (`rolling`; None: no spin).

        Each contact is found at its time within the frame, the bodies moving at their starting
        velocities: two spheres i, j touch at the first t in [0, dt) where |d + u t| = r_i + r_j
        (d, u their relative position and velocity). If they are closing at speed c along the
        unit normal n at that moment (from i to j), i's velocity changes by
        -(1 + e) m_j / (m_i + m_j) c n, e the mean of their restitutions: momentum is conserved and
        the closing speed becomes e c apart. A body falling onto the floor lands
        (`floor_landing`: it bounces, and friction works on its slip). Each impulse acts for the part of the frame after its
        contact, and all of it lands in the one frame that holds the contact (a hit at a frame's
        end is not split over two frames, which would lose part of its restitution). The size of
        the impulse is continuous in the radii: a grazing touch has c -> 0, and the contact time
        and normal move with them, which is how the radii learn. Bodies touching without closing
        (a stack at rest, a box on the floor) get no bounce; the floor's friction on a body resting
        on it is `floor_landing`'s, and the dynamics head learns the rest of resting contact as
        corrections to this. A driven body (driven logit > 0: its
        servo holds it to the actions' command) counts as infinitely heavy: it takes no impulse
        and does not bounce, and a free body it hits takes the whole exchange."""
        cfg = self.cfg
        dt = 1.0 / cfg.fps
        p, v = cur[..., :3], cur[..., 3:]
        radius, log_mass, restitution = bodies[..., 0], bodies[..., 1], bodies[..., 2]  # (..., N) each
        driven = bodies[..., DRIVEN] > 0
        d = p.unsqueeze(-3) - p.unsqueeze(-2)  # (..., N, N, 3): [i, j] = p_j - p_i
        u = v.unsqueeze(-3) - v.unsqueeze(-2)  # (..., N, N, 3): [i, j] = v_j - v_i
        reach = radius.unsqueeze(-1) + radius.unsqueeze(-2)  # (..., N, N) m
        uu = (u * u).sum(-1).clamp(min=1e-12)  # (m/s)^2
        du = (d * u).sum(-1)  # < 0: approaching
        miss2 = (d * d).sum(-1) - du.square() / uu  # (..., N, N) m^2: closest approach of the lines of motion, squared
        inside = reach.square() - miss2  # > 0: they come within reach
        chord = (inside.clamp(min=0) + CONTACT_EPS**2).sqrt()  # m: half the path within reach (bounded gradients at a graze)
        t_hit = (-du - chord * uu.sqrt()) / uu  # s: the first touch (< 0: touching already)
        pair = other_tracked(mask) & mask.unsqueeze(-1)
        hits = pair & (inside > 0) & (t_hit < dt) & (du < 0)  # (..., N, N): they meet within this frame
        t_hit = t_hit.clamp(0, dt)
        at = d + u * t_hit[..., None]  # (..., N, N, 3) the line of centres at the touch
        normal = at / at.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        closing = (-(u * normal).sum(-1)).clamp(min=0)  # (..., N, N) m/s
        share = torch.sigmoid(log_mass.unsqueeze(-2) - log_mass.unsqueeze(-1))  # [i, j] m_j / (m_i + m_j)
        share = torch.where(driven.unsqueeze(-2), torch.ones_like(share), share)  # j driven: infinitely heavy
        share = torch.where(driven.unsqueeze(-1), torch.zeros_like(share), share)  # i driven: unmoved
        e = (restitution.unsqueeze(-1) + restitution.unsqueeze(-2)) / 2
        hit = (1 + e) * share * closing * hits  # (..., N, N) m/s: i's speed change along -n
        dv = -(hit[..., None] * normal).sum(-2)  # (..., N, 3)
        dx = -((hit * (dt - t_hit))[..., None] * normal).sum(-2)  # (..., N, 3) m by the frame's end
        floor_dv, t_floor, _, _ = self.floor_landing(cur, bodies, mask, roll)
        dv = dv + floor_dv
        dx = dx + (dt - t_floor.clamp(0, dt))[..., None] * floor_dv
        return torch.cat([dx / cfg.step_pos_scale, dv / cfg.step_vel_scale], dim=-1)

    def floor_landing(self, cur: torch.Tensor, bodies: torch.Tensor, mask: torch.Tensor, roll: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the floor (z = 0) does to the bodies that land on it within the frame: cur (..., N,
        6) SI, bodies (..., N, BODY_COLUMNS), mask (..., N) the tracked bodies, roll (..., N) their
        spin as a share of the horizontal velocity (`rolling`; None: 0) -> (velocity change (...,
        N, 3) m/s, time of the landing within the frame (..., N) s, roll after it (..., N), whether
        the floor touches it within the frame (..., N) bool: it lands or rests on it).

        A body that lands bounces: its vertical velocity v_z at the floor becomes -e v_z. Its
        bottom slips on the floor at s = v_h - u, its horizontal velocity less the part its spin
        would roll it at (u = roll x v_h). Coulomb friction (its friction mu: the scene sets one
        for body and floor alike) works against the slip with an impulse of at most mu (1 + e)
        |v_z| per unit mass, and each unit it takes off the centre's velocity takes 1 / kappa off
        the slip, kappa the body's roll share (1 / (1 + m r^2 / I): 2/7 a ball, 1 a body that
        cannot roll): so the velocity changes by -min(mu (1 + e) |v_z|, kappa |s|) along s, and
        the slip stops where friction suffices. A ball thrown without spin keeps 5/7 of its
        horizontal speed and rolls on; on its next bounce it no longer slips and keeps it all; a
        ball rolling off a ramp's foot spins faster than it moves along the floor and is sped up
        a little; a body that cannot roll is slowed to a stop at most. The spin changes by the
        rest of the friction's work, u' = u + dv_h (1 - 1 / kappa). A body that rests on the floor
        (not landing, its centre within FLOOR_TOLERANCE of its radius above it or below, moving up
        or down slower than FLOOR_SPEED) is pressed on it by its weight: friction's bound over the
        frame is mu g dt, the rest as for a landing, so a box sliding on the floor slows at mu g
        to a stop and a ball thrown without spin slips until it rolls at 5/7 of its speed. Its
        returned time is half the time friction acts (the body then ends the frame where a
        constant deceleration takes it). With `floor_support` on, a
        body falling faster than one frame of gravity gives (g dt) is in free fall onto the floor:
        gravity speeds it up over the height left, so it lands sooner and faster than its starting
        velocity says, v_z^2 = v_0^2 + 2 g h (with the prior's gravity step, the frame then ends
        exactly where a bouncing ball does; at its starting velocity a fast fall reaches the floor
        a frame late, from below it, and bounces short). A driven body does not land."""
        dt, g = 1.0 / self.cfg.fps, -GRAVITY[2]  # s, m/s^2
        p, v = cur[..., :3], cur[..., 3:]
        radius, restitution, friction = bodies[..., 0], bodies[..., 2], bodies[..., 3]
        share = physical_roll_share(bodies[..., ROLL].detach())  # taught by the stated shapes alone (`body_loss`); with the steps' losses on it too, the `slide` weights read thrown boxes at 0.15, not 1
        driven = bodies[..., DRIVEN] > 0
        fall = (-v[..., 2]).clamp(min=0)  # (..., N) m/s towards the floor
        impact, t_floor = fall, (p[..., 2] - radius) / fall.clamp(min=1e-6)  # m/s at the floor; s: when the body's bottom reaches z = 0
        if self.cfg.floor_support > 0:  # a free fall lands under gravity
            free_fall = fall > g * dt
            impact = torch.where(free_fall, (fall.square() + 2 * g * (p[..., 2] - radius).clamp(min=0)).clamp(min=1e-12).sqrt(), fall)
            t_floor = torch.where(free_fall, (impact - fall) / g, t_floor)
        lands = mask & ~driven & (fall > 0) & (t_floor < dt)
        bounce = (1 + restitution) * impact * lands  # (..., N) m/s upwards
        resting = mask & ~driven & ~lands & (p[..., 2] - radius <= FLOOR_TOLERANCE) & (v[..., 2].abs() < FLOOR_SPEED)
        normal = torch.where(lands, bounce, g * dt * resting)  # (..., N) m/s: the floor's push per unit mass within the frame
        slide = v[..., :2]  # (..., N, 2) m/s horizontal
        roll = torch.zeros_like(radius) if roll is None else roll
        slip = slide * (1 - roll)[..., None]  # (..., N, 2) m/s: the bottom's speed over the floor
        slip_speed = slip.norm(dim=-1).clamp(min=1e-6)
        brake = torch.minimum(friction * normal, share * slip_speed)  # (..., N) m/s: Coulomb's bound, at most what stops the slip
        slow = -(brake / slip_speed)[..., None] * slip  # (..., N, 2) m/s
        braking = brake / (friction * g).clamp(min=1e-6)  # s: how long friction acts on a resting body (a constant deceleration mu g)
        t_floor = torch.where(resting, braking.clamp(max=dt) / 2, t_floor)  # the frame's end is (dt - this) x the change further on
        spun = slide * roll[..., None] + slow * (1 - 1 / share.clamp(min=MIN_ROLL_SHARE))[..., None]  # u' (..., N, 2) m/s
        after = slide + slow
        moving = after.square().sum(-1) > 1e-6
        roll_after = torch.where((lands | resting) & moving, (spun * after).sum(-1) / after.square().sum(-1).clamp(min=1e-6), roll)
        return torch.cat([slow, bounce[..., None]], dim=-1), t_floor, roll_after, lands | resting

    def rolling(self, states: torch.Tensor, spins: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        """Each body's spin as a share of its horizontal velocity (..., N): the horizontal velocity
        u = r (w_y, -w_x) at which its spin w (..., N, 3) rad/s would roll it on the floor with its
        bottom at rest, r its radius (..., N) m (no gradient: the spin teaches the radius nothing),
        projected on its horizontal velocity v_h (states (..., N, 6) SI): u . v_h / |v_h|^2
        (`roll_share_of`). 1: it rolls on the floor; 0: no spin (thrown, or sliding); a ball
        rolling down a ramp of angle a: 1 / cos a."""
        r = radius.detach()
        u = torch.stack([spins[..., 1], -spins[..., 0]], dim=-1) * r[..., None]  # (..., N, 2) m/s
        return roll_share_of(states[..., 3:5], u)

    def spins(self, spin_velocity: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        """The angular velocities (..., N, 3) rad/s that roll bodies of radius (..., N) m at
        spin_velocity (..., N, 2) m/s on the floor: about the horizontal axis across it, none about
        the vertical (what a rollout writes into its episode's states; `rolling` reads them back)."""
        w = spin_velocity / radius.clamp(min=1e-6)[..., None]  # (..., N, 2) rad/s
        return torch.stack([-w[..., 1], w[..., 0], torch.zeros_like(radius)], dim=-1)

    def spin_after(self, cur: torch.Tensor, nxt: torch.Tensor, bodies: torch.Tensor, mask: torch.Tensor, roll: torch.Tensor | None) -> torch.Tensor:
        """(..., N, 2) m/s: the velocity each body's spin would roll it at by the frame's end, from
        the frame's starting and ending states cur, nxt (..., N, 6) SI and its roll at the start
        (..., N) (`rolling`; None: 0): the roll the floor leaves it (`floor_landing`) times, for a
        body the floor touches (it lands or rests on it), the horizontal velocity the floor's
        friction leaves it, since nothing else turns it there (a head's step that speeds it up
        makes it slip, and friction then slows it); elsewhere times the velocity it ends the frame with (a ball rolling down a
        ramp, which the model does not track, spins up as it speeds up)."""
        dv, _, roll_after, touched = self.floor_landing(cur, bodies, mask, roll)
        left = torch.where(touched[..., None], cur[..., 3:5] + dv[..., :2], nxt[..., 3:5])
        return left * roll_after[..., None]

    def body_loss(self, bodies: torch.Tensor, truth: torch.Tensor | None) -> torch.Tensor:
        """The learnt bodies' (B, n, N, BODY_COLUMNS) (`body_properties`) error against the
        simulator's, truth (B, N, BODY_COLUMNS) radius m, mass kg, restitution, friction, damping 1/s,
        driven, roll share (`Batch.bodies`, NaN where not stated; None: 0), averaged over the stated
        values: the squared error of the radius in contact_scale units, the log mass, restitution,
        friction and damping; the roll share's relative entropy to the stated one (a sigmoid's
        cross-entropy less the target's own, so 0 when equal). Squared error on a sigmoid fades as
        it saturates: the shape-word weights read thrown boxes at 0.76 where the shape fixes 1, and
        the landing lets such a box spin up and roll on (`floor_landing`)."""
        if truth is None:
            return bodies.new_zeros(())
        truth = truth[:, None].to(bodies.dtype)  # (B, 1, N, BODY_COLUMNS)
        pred = torch.stack([bodies[..., 0] / self.cfg.contact_scale, *bodies[..., 1:BODY_PROPERTIES].unbind(-1)], dim=-1)
        target = torch.stack([truth[..., 0] / self.cfg.contact_scale, truth[..., 1].log(), *truth[..., 2:BODY_PROPERTIES].unbind(-1)], dim=-1)
        known = target.isfinite().expand_as(pred)
        err = (pred - target.nan_to_num()).pow(2)
        share = truth[..., ROLL].expand_as(bodies[..., ROLL])  # (B, n, N)
        stated = share.isfinite()
        share = share.nan_to_num()
        read = bodies[..., ROLL]
        log_read, log_rest = read.log().clamp(min=-100), (1 - read).log().clamp(min=-100)  # as binary_cross_entropy bounds them, without its range check, so diverged (NaN) weights give a NaN loss to skip
        roll = torch.xlogy(share, share) + torch.xlogy(1 - share, 1 - share) - share * log_read - (1 - share) * log_rest  # relative entropy (0 when equal)
        return ((err * known).sum() + (roll * stated).sum()) / (known.sum() + stated.sum()).clamp(min=1)

    def driven_loss(self, bodies: torch.Tensor, truth: torch.Tensor | None) -> torch.Tensor:
        """Binary cross-entropy of each body's driven logit (`body_properties`' column DRIVEN, bodies
        (B, n, N, BODY_COLUMNS)) against whether the actions drive it, truth (B, N, BODY_COLUMNS)
        (`Batch.bodies`' column DRIVEN, NaN past the episode's bodies; None: 0)."""
        if truth is None:
            return bodies.new_zeros(())
        label = truth[:, None, :, DRIVEN].to(bodies.dtype).expand_as(bodies[..., DRIVEN])  # (B, n, N)
        known = label.isfinite()
        bce = F.binary_cross_entropy_with_logits(bodies[..., DRIVEN], label.nan_to_num(), reduction="none")
        return (bce * known).sum() / known.sum().clamp(min=1)

    def pointer_loss(self, pointer: CaptionPointer | None, truth: torch.Tensor | None) -> torch.Tensor:
        """How well each body points at its own numbers in the caption, against the simulator's
        properties truth (B, N, BODY_COLUMNS) radius m, mass kg, restitution, friction, damping 1/s (NaN where not stated) and driven
        (not the caption's to say): for every stated property, the caption numbers nearest it in
        the property's unit (within
        POINTER_TOLERANCE) are the target, and the loss is the cross-entropy of the pointer's
        attention on them plus the binary cross-entropy of its gate: open where such a number
        exists, shut everywhere else, for values the caption does not state and for every property
        of a body the episode states nothing of (a push's paddle must not take the cube's mass and
        size, or the contact impulses would have it bounce off the cube). Teaching the pointer
        which token to look at directly, rather than only through the value it reads, avoids the
        average of several numbers that the value's squared error alone settles into. 0 without
        either."""
        if pointer is None or truth is None:
            return torch.zeros((), device=self.caption_unit.device)
        match, found = pointer_targets(pointer.token_value, truth[..., :BODY_PROPERTIES])
        found = found.expand_as(pointer.gate_logit)  # (B, n, N, BODY_PROPERTIES)
        ce = -pointer.attention.masked_fill(~match.expand_as(pointer.attention), -torch.inf).logsumexp(-1)  # (B, n, N, BODY_PROPERTIES)
        ce = torch.where(found, ce, torch.zeros_like(ce)).sum() / found.sum().clamp(min=1)
        gate = F.binary_cross_entropy_with_logits(pointer.gate_logit, found.to(pointer.gate_logit.dtype))
        return ce + gate

    def advance(self, cur: torch.Tensor, steps: torch.Tensor, bodies: torch.Tensor, mask: torch.Tensor, tether: Tether | None = None, closed: torch.Tensor | None = None, roll: torch.Tensor | None = None) -> torch.Tensor:
        """The next frame's states: cur (..., N, 6) SI taken by the dynamics head's steps (..., N, 6)
        plus the frame's `closed_form_step` (bodies, mask, tether, roll as there; closed: that step, where
        the caller has it), tethered bodies kept on their circles (`tether_step`)."""
        closed = self.closed_form_step(cur, bodies, mask, tether, roll) if closed is None else closed
        support = self.cfg.floor_support > 0
        if support:
            free = free_bodies(bodies, mask, tether)
            steps = self.floor_friction(cur, steps, bodies[..., 0], free, mask)
        nxt = tether_step(cur, self.step_states(cur, steps + closed), tether, 1.0 / self.cfg.fps)
        return self.floor_hold(nxt, bodies[..., 0], free) if support else nxt

    def set_by_floor(self, cur: torch.Tensor, nxt: torch.Tensor, bodies: torch.Tensor, mask: torch.Tensor, tether: Tether | None = None) -> torch.Tensor:
        """(..., N) bool: the bodies whose step over a frame `floor_support` may have set rather
        than the head drawn (none when it is off): the free ones (tracked, neither driven nor
        tethered) that start or end the frame, cur and nxt (..., N, 6) SI, on the floor (their
        centre within FLOOR_TOLERANCE of their radius above it), where `floor_friction` limits a
        sliding body's step and `floor_hold` puts a sinking one back. What the head drew there
        cannot be read back from the states, so the steps' log-density leaves them out (a wider
        set than the steps the floor changed, and the same whether read from a rollout or its
        states). bodies (..., N, BODY_COLUMNS) (`body_properties`); mask (..., N) bool the tracked bodies."""
        if not self.cfg.floor_support > 0:
            return torch.zeros(cur.shape[:-1], dtype=torch.bool, device=cur.device)
        radius = bodies[..., 0]
        return free_bodies(bodies, mask, tether) & (self.on_floor(cur, radius) | self.on_floor(nxt, radius))

    @staticmethod
    def on_floor(states: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        """(..., N) bool: the bodies whose bottom is on the floor (or below it): their centre
        within FLOOR_TOLERANCE of their radius above it; states (..., N, 6) SI, radius (..., N) m."""
        return states[..., 2] - radius <= FLOOR_TOLERANCE

    def floor_friction(self, cur: torch.Tensor, steps: torch.Tensor, radius: torch.Tensor, free: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The head's steps (..., N, 6) with those of the free bodies (free (..., N) bool: tracked,
        neither driven nor tethered) that slide or stand on the floor alone (`on_floor_alone`)
        limited to what friction can do: it slows a body's horizontal velocity, never speeds it up
        or turns it back. Such a step keeps the head's vertical part and the direction of its
        horizontal velocity, its speed at most the frame's start's (0 where it would turn back), and
        moves the body by the mean of the two velocities over the frame (a constant deceleration).
        cur (..., N, 6) SI the frame's start; radius (..., N) m (`body_properties`). The frame's
        closed-form step (a hit, a landing) is added after, unlimited. mask (..., N) bool: the tracked bodies."""
        dt = 1.0 / self.cfg.fps
        learnt = self.step_states(cur, steps)  # (..., N, 6) where the head's step alone takes them
        sliding = self.on_floor_alone(cur, learnt, radius, free, mask)
        v0, v1 = cur[..., 3:5], learnt[..., 3:5]  # (..., N, 2) m/s horizontal
        onward = (v0 * v1).sum(-1) > 0
        scale = torch.where(onward, (v0.norm(dim=-1) / v1.norm(dim=-1).clamp(min=1e-9)).clamp(max=1.0), torch.zeros_like(radius))
        v1 = v1 * scale[..., None]
        limited = torch.cat([cur[..., :2] + (v0 + v1) * dt / 2, learnt[..., 2:3], v1, learnt[..., 5:6]], dim=-1)
        return torch.where(sliding[..., None], self.step_targets(cur, limited), steps)

    def on_floor_alone(self, cur: torch.Tensor, nxt: torch.Tensor, radius: torch.Tensor, free: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(..., N) bool: the free bodies whose bottom is on the floor (their centre within
        FLOOR_TOLERANCE of their radius above it) at the frame's start and end, cur and nxt (...,
        N, 6) SI, that neither fall onto it nor leave it faster than FLOOR_SPEED, and that no other
        tracked body (mask (..., N) bool) comes within `override_reach` of during the frame:
        nothing but the floor touches them."""
        dt = 1.0 / self.cfg.fps
        low = self.on_floor(cur, radius) & self.on_floor(nxt, radius)
        level = (cur[..., 5].abs() < FLOOR_SPEED) & (nxt[..., 5].abs() < FLOOR_SPEED)
        alone = self.body_gap(cur, radius, mask, dt) > self.cfg.override_reach
        return free & low & level & alone

    @staticmethod
    def floor_hold(nxt: torch.Tensor, radius: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        """nxt (..., N, 6) SI with every free body (free (..., N) bool) that ends the frame below its
        radius (`body_properties`) put back on the floor, its downward velocity taken away: the
        floor holds bodies up (a landing's bounce is the closed-form step's, in the frame that
        reaches the floor). The radius passes no gradient through the hold: a position error would
        teach it (an RL run grew the radii of bouncing balls to float them at their mean height)."""
        radius = radius.detach()
        below = free & (nxt[..., 2] < radius)
        z = torch.where(below, radius, nxt[..., 2])
        vz = torch.where(below, nxt[..., 5].clamp(min=0), nxt[..., 5])
        return torch.cat([nxt[..., :2], z[..., None], nxt[..., 3:5], vz[..., None]], dim=-1)

    def closed_form_step(self, cur: torch.Tensor, bodies: torch.Tensor, mask: torch.Tensor, tether: Tether | None = None, roll: torch.Tensor | None = None) -> torch.Tensor:
        """The part of a frame's step (..., N, 6) in step units that physics gives in closed form,
        from the frame's starting states cur (..., N, 6) SI: the `contact_impulse` (bodies (..., N,
        BODY_COLUMNS), mask (..., N) bool and roll (..., N) or None as there), plus the swing of the tethered bodies that
        nothing drives under gravity and their hinges' damping (`worldmodel.tether.gravity_swing`, a
        pendulum as point masses of the bodies' masses and dampings; tether (..., N) broadcast against cur, None: all free; which swing is its `swings`,
        set once per batch or rollout by `Tether.swinging`). The swing's velocity change
        moves the body by half of it times the frame in the position part (what `tether_step` then
        replaces by the turn on the circle)."""
        step = self.contact_impulse(cur, bodies, mask, roll)
        if tether is None or tether.swings is None:
            return step
        cfg = self.cfg
        dt = 1.0 / cfg.fps
        swing = gravity_swing(cur, tether, bodies[..., 1], bodies[..., 4], dt)  # (..., N, 3) m/s, from the log masses and dampings
        return step + torch.cat([swing * dt / (2 * cfg.step_pos_scale), swing / cfg.step_vel_scale], dim=-1)

    def step_distribution(
        self,
        raw: torch.Tensor,
        features: torch.Tensor,
        hold: torch.Tensor | None = None,
        reach: torch.Tensor | None = None,
        release: torch.Tensor | None = None,
        swing: torch.Tensor | None = None,
    ) -> StepDistribution:
        """The dynamics head's output raw (..., tt, N, DYNAMICS_OUT) for bodies whose features are
        (..., N, `dynamics_features_dim`) -> their steps' `StepDistribution` (..., tt, N); hold
        (..., tt, N) bool the steps held on the prior's (None: none); reach (..., N) bool the bodies
        within reach of a contact (`within_reach`; None: all); release (..., N) bool the bodies the
        gate may not keep (None: none); swing (..., N) bool the bodies whose prior's step is 0, the
        closed-form swing's alone (`in_free_swing`; None: none)."""
        logstd = STEP_LOGSTD_MIN + (STEP_LOGSTD_MAX - STEP_LOGSTD_MIN) * torch.sigmoid(raw[..., 6:18])  # moving, resting
        rest = (features @ self.dynamics_head.prior[:6].T).unsqueeze(-3).expand_as(raw[..., :6])  # the prior's step alone
        if swing is not None:
            rest = torch.where(swing.unsqueeze(-2)[..., None], 0.0, rest)
        per_step = lambda x: None if x is None else x.unsqueeze(-2).expand(raw.shape[:-1])[..., None]  # noqa: E731  (..., N) -> (..., tt, N, 1)
        return StepDistribution(raw[..., :6], logstd[..., :6], rest, logstd[..., 6:], raw[..., 18], self.cfg.gate_override, None if hold is None else hold[..., None], per_step(reach), per_step(release))

    def within_reach(self, cur: torch.Tensor, radius: torch.Tensor, mask: torch.Tensor | None, seconds: float, gap: torch.Tensor | None = None) -> torch.Tensor:
        """(..., N) bool: which bodies come within `override_reach` of a contact in the next
        `seconds` at their current velocities: cur (..., N, 6) SI states, radius (..., N) m, mask
        the tracked bodies (broadcast to (..., N); None: all). A contact is another tracked body
        (`body_gap`, or gap where already computed: touching counts, a stack at rest included) or
        the floor while the body falls towards it (faster than FALL_SPEED: a body rolling or resting
        on the floor is not about to hit it)."""
        reach = self.cfg.override_reach
        mask = torch.ones(cur.shape[:-1], dtype=torch.bool, device=cur.device) if mask is None else mask.expand(cur.shape[:-1])
        if math.isinf(reach):
            return mask
        gap = self.body_gap(cur, radius, mask, seconds) if gap is None else gap
        p, v = cur[..., :3], cur[..., 3:]
        floor = (v[..., 2] < -FALL_SPEED) & (p[..., 2] - radius + v[..., 2] * seconds < reach)
        return mask & ((gap < reach) | floor)

    @staticmethod
    def body_gap(cur: torch.Tensor, radius: torch.Tensor, mask: torch.Tensor | None, seconds: float) -> torch.Tensor:
        """(..., N) m: each body's smallest gap to another tracked body over the next `seconds`, the
        gap between their spheres less what their closing speed covers (inf for an untracked body or
        one with no other tracked body). cur (..., N, 6) SI states, radius (..., N) m, mask the
        tracked bodies (broadcast to (..., N); None: all)."""
        mask = torch.ones(cur.shape[:-1], dtype=torch.bool, device=cur.device) if mask is None else mask.expand(cur.shape[:-1])
        surface, _, closing = sphere_pairs(cur, radius)
        gap = (surface - closing.clamp(min=0) * seconds).masked_fill(~other_tracked(mask), float("inf")).amin(-1)
        return gap.masked_fill(~mask, float("inf"))

    def in_free_flight(self, features: torch.Tensor, bodies: torch.Tensor) -> torch.Tensor:
        """(..., N) bool: the free bodies (neither driven nor tethered) that nothing holds up:
        those whose steady velocity change is at least gravity's downwards (to within
        `free_flight_tolerance` of one frame's g dt; 0: none), since whatever stands below a body
        can only slow its fall, and those rising faster than FALL_SPEED, since nothing but a
        contact lifts a free body (off a bounce, its steady change is not yet gravity's). Such a
        body has nothing pressing on it and no friction: gravity alone acts on it until it meets
        something. features (..., N, `dynamics_features_dim`) (`dynamics_features`), bodies (...,
        N, BODY_COLUMNS) (`body_properties`)."""
        cfg = self.cfg
        g_dt = GRAVITY[2] / cfg.fps  # m/s per frame, < 0
        steady_z = features[..., STEADY][..., 2] * cfg.step_vel_scale
        rising = features[..., VELOCITY][..., 2] * cfg.vel_scale > FALL_SPEED
        falling = steady_z < (1 - cfg.free_flight_tolerance) * g_dt
        return (falling | rising) & (bodies[..., DRIVEN] <= 0) & (features[..., TETHERED] <= 0) & (cfg.free_flight_tolerance > 0)

    def in_free_swing(self, tether: Tether | None, reach: torch.Tensor) -> torch.Tensor:
        """(..., N) bool: the tethered bodies that gravity swings (`Tether.swings`: nothing drives
        them) out of reach of every contact (reach (..., N) bool, `within_reach`), where
        `free_swing` is on. Nothing but their hinges and gravity acts on them: the frame's
        `closed_form_step` is their whole step."""
        if tether is None or tether.swings is None or not self.cfg.free_swing > 0:
            return torch.zeros_like(reach)
        return tether.swings & ~reach

    def ballistic(self, features: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        """features (..., N, F) with the steady velocity change of the bodies in free flight, free
        (..., N) bool, set to gravity's exactly (no horizontal part): the prior then steps them on
        the parabola."""
        g = features.new_tensor(GRAVITY) / (self.cfg.fps * self.cfg.step_vel_scale)  # step units
        steady = torch.where(free[..., None], g, features[..., STEADY])
        return torch.cat([features[..., : STEADY.start], steady, features[..., STEADY.stop :]], dim=-1)

    def block_dynamics(
        self,
        slots: torch.Tensor,
        bodies: torch.Tensor,
        src: torch.Tensor,
        actions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        tether: Tether | None = None,
        steady: torch.Tensor | None = None,
        spins: torch.Tensor | None = None,
    ) -> StepDistribution:
        """Steps to the n blocks after those whose dynamics slots are slots (B, n, tt, N, D)
        (`StateHead.slots` of their video hidden states) with the bodies' properties read from them,
        bodies (B, n, N, BODY_COLUMNS) (`body_properties`); src (B, F, N, 6) SI states of frames ending with those n
        blocks' frames (known, or read out; F >= n*tt, and a frame before them, if given, is history
        for the first block's features); actions (B, n, tt, action_dim) those driving the steps
        (`block_actions`), or None; mask (B, N) bool the tracked bodies (None: all); tether (B, N)
        the bodies' `Tether` (None: all free); steady (B, n, tt) bool whether each step's actions are
        the step before's (`steady_actions`; None: unknown); spins (B, F, N, 3) rad/s the bodies'
        spins in src's frames (None: none), which the closed-form steps the features leave out
        depend on -> the steps' distribution (B, n, tt, N):
        what the head adds to each frame's `closed_form_step`. A driven body (`body_properties`)
        whose actions are steady is held on the prior's step: its servo keeps it on its course (a
        paddle at its commanded velocity, a gear at its speed, a tipped cup where it is), which the
        prior carries on; so is a body in free flight out of reach of every contact
        (`in_free_flight`, `within_reach`), on gravity's step alone (`ballistic`), and a swinging
        tethered body out of reach, on the closed-form swing alone (`in_free_swing`). A body within
        reach, or within `release_reach` of another tracked body, whose steady velocity change
        exceeds `accel_tolerance` is released from the gate's keep (`StepDistribution`): the
        force a contact exerts on it changes as it moves."""
        tt, n, F = self.cfg.tubelet_t, slots.shape[1], src.shape[1]
        last = F - n * tt + torch.arange(n, device=slots.device) * tt + tt - 1  # base frame of each block
        before, before2 = (last - 1).clamp(min=0), last - 2
        body_mask = None if mask is None else mask[:, None]
        history = (before2 >= 0)[None, :, None]  # (1, n, 1): block has a frame before prev
        body_tether = None if tether is None else tether.unsqueeze(1)
        cur = src[:, last]  # (B, n, N, 6)
        radius = bodies[..., 0]
        rolls = None if spins is None else tuple(self.rolling(src[:, f], spins[:, f], radius) for f in (before, before2.clamp(min=0)))
        features = self.dynamics_features(cur, src[:, before], src[:, before2.clamp(min=0)], actions, bodies, body_mask, history, body_tether, rolls=rolls)  # (B, n, N, F)
        gap = self.body_gap(cur, bodies[..., 0], body_mask, tt / self.cfg.fps)  # (B, n, N) m to the nearest tracked body
        reach = self.within_reach(cur, bodies[..., 0], body_mask, tt / self.cfg.fps, gap)
        free = self.in_free_flight(features, bodies) & ~reach  # (B, n, N): on gravity's parabola
        swing = self.in_free_swing(body_tether, reach)  # (B, n, N): on the closed-form swing
        alone = (free | swing).unsqueeze(-2)  # (B, n, 1, N)
        hold = held(steady, bodies)
        hold = alone.expand(*free.shape[:-1], tt, free.shape[-1]) if hold is None else hold | alone
        accelerating = (features[..., STEADY] * self.cfg.step_vel_scale).norm(dim=-1) > self.cfg.accel_tolerance  # (B, n, N)
        release = accelerating & (reach | (gap < self.cfg.release_reach))
        return self.step_distribution(self.dynamics_head.decode(slots, features), self.ballistic(features, free), hold, reach, release, swing)

    def chain_states(
        self,
        slots: torch.Tensor,
        bodies: torch.Tensor,
        src: torch.Tensor,
        actions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        tether: Tether | None = None,
        steady: torch.Tensor | None = None,
        roll: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """States of blocks 1..n stepped from block 0's known (or read-out) states and then from the
        chain's own predictions only, as a rollout does, while the video stays teacher-forced, with
        the moving means alone (no gate: they learn what compounds wherever the gate might let them
        act, free flight included: held there too, a 1500-step training run's chain loss diverged,
        cause not isolated; the prior's step where a driven body is held, as in `block_dynamics`),
        with each frame's closed-form step and tethers (a tethered body's chained state is returned
        with its gradient, so each frame's error trains the step that made it, but the next frame
        steps from it detached: the tether step's Jacobian stretches some directions several times
        per frame on a double pendulum, and compounded over a clip that took training to NaN;
        the velocity-change features leave out the closed-form steps the chain took, each computed
        once): slots (B, n, tt, N, D) and bodies (B, n, N,
        BODY_COLUMNS) of blocks 0..n-1 (as `block_dynamics`); src (B, tt, N, 6) SI block 0's
        states; actions (B, n, tt, action_dim) driving the steps, or None; mask (B, N) the tracked
        bodies; tether (B, N) or None; steady (B, n, tt) or None as in `block_dynamics`; roll (B, N)
        the bodies' spin at block 0's last frame (`rolling`; None: none), carried on as a rollout
        carries it (`spin_after`) -> (B, n*tt, N, 6)."""
        tt = self.cfg.tubelet_t
        cur, prev = src[:, -1], src[:, -2] if tt > 1 else src[:, -1]
        prev2 = src[:, -3] if tt > 2 else None
        out, closed = [], []  # closed: the closed-form steps the chain took, from the frames it stepped from
        for b in range(slots.shape[1]):
            made = (closed[-1], closed[-2]) if len(closed) >= 2 else None  # the ones from prev and prev2 (not block 0's, which src gives)
            rolls = None if made is not None or roll is None else (roll, roll)  # block 0's spin: a spin changes only at the floor
            features = self.dynamics_features(cur, prev, prev2, None if actions is None else actions[:, b], bodies[:, b], mask, tether=tether, closed=made, rolls=rolls)
            hold = held(None if steady is None else steady[:, b], bodies[:, b])
            steps = self.step_distribution(self.dynamics_head.decode(slots[:, b], features), features, hold).ungated  # (B, tt, N, 6)
            for j in range(tt):
                closed.append(self.closed_form_step(cur, bodies[:, b], mask, tether, roll))
                nxt = self.advance(cur, steps[:, j], bodies[:, b], mask, tether, closed[-1])
                out.append(nxt)
                if roll is not None:
                    roll = roll_share_of(nxt[..., 3:5], self.spin_after(cur, nxt, bodies[:, b], mask, roll)).detach()
                if tether is not None:  # the next frame steps from a tethered body's state without its gradient (docstring)
                    nxt = torch.where(tether.on[..., None], nxt.detach(), nxt)
                prev2, prev, cur = prev, cur, nxt
        return torch.stack(out, dim=1)

    def predict_states(self, steps: torch.Tensor, bodies: torch.Tensor, src: torch.Tensor, present: torch.Tensor, mask: torch.Tensor, tether: Tether | None = None, spins: torch.Tensor | None = None) -> torch.Tensor:
        """Next blocks' states, one step each from the frame before (`advance`): steps (B, n, tt, N,
        6) for blocks 1..n and bodies (B, n, N, BODY_COLUMNS), made by blocks 0..n-1; src (B,
        (n+1)*tt, N, 6) SI the known states of blocks 0..n (read out where not `present`); mask
        (B, N) the tracked bodies; tether (B, N) or None; spins (B, (n+1)*tt, N, 3) rad/s the
        bodies' spins in those frames (`rolling`; None: none). Within a block, clips without known
        states step from the previous prediction. Returns (B, n*tt, N, 6) SI for blocks 1..n."""
        tt, n = self.cfg.tubelet_t, steps.shape[1]
        p = present[:, None, None, None]
        prev = src[:, tt - 1 : n * tt : tt]  # (B, n, N, 6) last frame of blocks 0..n-1
        out = []
        for j in range(tt):
            spin = None if spins is None else spins[:, tt - 1 + j :: tt][:, :n]  # (B, n, N, 3) of the frames stepped from
            roll = None if spin is None else self.rolling(prev, spin, bodies[..., 0])
            cur = self.advance(prev, steps[:, :, j], bodies, mask[:, None], None if tether is None else tether.unsqueeze(1), roll=roll)
            out.append(cur)
            prev = torch.where(p, src[:, tt + j :: tt][:, :n], cur)
        return torch.stack(out, dim=2).flatten(1, 2)

    # --- training forward ----------------------------------------------------------------------
    def forward(self, batch: Batch | dict, hold_bodies: bool = False) -> dict[str, torch.Tensor]:
        """Teacher-forced pass over clips (see `worldmodel.tokens.Batch` for the shapes). With
        hold_bodies, the body properties the dynamics use pass no gradient back (their own losses,
        `body_loss` in state_loss, still do): a loss on the states then cannot move a body's read
        radius, mass or friction to make up for the dynamics' errors (RL on a model's own rollouts
        read ramp balls' radius at 1.66 times the stated one: benchmarks/HISTORY.md).

        Returns a dict:
          loss           scalar: frame_nll + state_weight * state_loss + moe_aux_weight * moe_aux
          frame_nll      scalar: nats per predicted pixel value (frames tubelet_t .. T-1)
          state_loss     scalar: readout_loss + step_loss + chain_loss + step_nll + gate_loss + body_loss
                         (0 without states)
          readout_loss   scalar: MSE of the readout's normalised positions and velocities
          step_loss      scalar: smooth-L1 loss of the dynamics head's moving step means (see `step_targets`)
          step_nll       scalar: step_nll_weight x Gaussian NLL of the true steps under the moving
                         mean (held fixed) and its log-std, plus, where the gate's label is keep,
                         under the resting mean and its log-std (nats per value)
          chain_loss     scalar: chain_weight x smooth-L1 error of the states chained from the first
                         block by the dynamics head alone (`chain_states`), in step-scale units
          moe_aux        scalar: load-balancing loss, mean over layers (1 = perfectly balanced)
          frame_logprob  (B, T) log-probability of each frame (sum over pixels); 0 for the first
                         block's frames, which are not predicted
          state_logprob  (B, T) log-density of each frame's dynamics steps (sum over the tracked
                         bodies' 6 components, step units) as a rollout samples them: from the
                         previous frame's state in `batch.states` (a block's first frame: from the
                         state its steps are based on), leaving out those `step_floor` marks; 0 for
                         the first block and without states
          body_loss      scalar: body_weight x `body_loss` of the learnt body properties plus
                         pointer_weight x `pointer_loss` of how they were read from the caption plus
                         driven_weight x `driven_loss` of which bodies the actions drive (0 where
                         the batch states none)
          gate_loss      scalar: gate_weight x binary cross-entropy of the gate's keep logit against
                         whether the true step is within rest_tolerance of the prior's (`StepDistribution`)
          steps          `StepDistribution` (B, T - tt, n_max) of the dynamics steps of frames tt..
                         as a rollout draws them (step units; `.mean` and `.logstd` the gate's
                         choice; the moving spread times exp(`step_spread`))
          step_drawn     (B, T - tt, n_max, 6) the steps of the head that `batch.states` took, their
                         closed-form steps taken out (None without states); a tethered body's
                         were drawn along its tangent only (`tangential_draw`)
          step_logprob   (B, T - tt, n_max, 6) their log-density per value (`StepDistribution.log_prob`;
                         a tethered body's in component 3): summed over the tracked bodies, the
                         state_logprob of frames tt.. (None without states)
          step_tangent   (B, T - tt, n_max, 3), step_along (B, T - tt, n_max): the tangent a tethered
                         body's step was drawn along (0 for a free body) and the drawn value, as
                         `StepDistribution.log_prob` takes them (None without states)
          step_floor     (B, T - tt, n_max) bool the steps `floor_support` may have set rather than
                         the head drawn (`set_by_floor`; all False with it off): their step_drawn
                         is not what the head drew, and state_logprob leaves them out (None without states)
          step_impulse   (B, T - tt, n_max, 6) those frames' `closed_form_step`s (step units, detached;
                         None without states): step_drawn + step_impulse is the whole step
          bodies         (B, nb - 1, n_max, BODY_COLUMNS) each body's learnt radius m, log mass,
                         restitution, friction, damping 1/s, driven logit (the first block's, for every block) and roll share in
                         the blocks that step the next ones (`body_properties`)
          frame_mean     (B, T, H, W, 3) predicted mean in [0, 1] (first block: the input frames)
          frame_logstd   (B, T, H, W, 3) predicted log-std (first block: 0)
          states         (B, T, n_max, 6) positions m and velocities m/s: the readout for the first
                         block's frames, the dynamics head's one-step prediction after
          routing        (n_layer, B, L, top_k) experts chosen per token
          token_types    (L,) modality of each token; token_valid (B, L)
        """
        cfg = self.cfg
        batch = Batch.coerce(batch)
        B, T = batch.frames.shape[:2]
        nb, tt = n_blocks(T, cfg.tubelet_t), cfg.tubelet_t
        inp = self.block_inputs(batch)
        tub = inp["tubelets"]  # (B, nb, Np, Dt)
        text_valid = batch.text != PAD  # (B, Lt)
        text_values = batch.text_values  # (B, Lt) derived from the bytes on each access: once here
        blocks = self.embed.embed_blocks(tub, inp["audio_feat"], inp["audio_present"], inp["actions"], inp["state_feat"], inp["state_present"])
        x = torch.cat([self.embed.embed_text(batch.text, text_values), blocks], dim=1)
        layout = clip_layout(cfg, batch.text.shape[1], nb)
        valid = torch.cat([text_valid, text_valid.new_ones(B, nb * cfg.block_len)], dim=1)  # (B, L)
        h, moe_aux, routing = self.run(x, layout, valid)
        hv = self.video_hidden(h, nb)  # (B, nb, Np, D)

        # next-block frames: block b's tokens predict block b+1
        mean, logstd = self.frame_head(hv[:, :-1], tub[:, :-1])  # (B, nb-1, Np, Dt)
        logp = discretized_gaussian_logprob(tub[:, 1:] * 255.0, mean, logstd)  # (B, nb-1, Np, Dt)
        to_frames = lambda t: tubelets_to_frames(t, (nb - 1) * tt, tt, cfg.patch, cfg.grid)  # noqa: E731
        logp_f = to_frames(logp).flatten(2).sum(-1)  # (B, (nb-1)*tt) frames tt ..
        frame_logprob = torch.cat([logp_f.new_zeros(B, tt), logp_f], dim=1)[:, :T]  # (B, T)
        n_pred = (T - tt) * cfg.image_size**2 * 3
        frame_nll = -frame_logprob.sum() / max(B * n_pred, 1)
        first = batch.frames[:, :tt].float() / 255.0
        frame_mean = torch.cat([first, to_frames(mean)], dim=1)[:, :T]
        frame_logstd = torch.cat([torch.zeros_like(first), to_frames(logstd)], dim=1)[:, :T]

        # states: readout of each block's own frames; dynamics steps to the next block's
        readout = self.state_head(hv) * self.state_scale  # (B, nb*tt, n_max, 6) SI
        known = None if batch.states is None else pad_time(batch.states.float(), tt)  # (B, nb*tt, n_max, 6)
        present = inp["state_present"] if inp["state_present"] is not None else torch.full((B,), known is not None, device=tub.device)
        src = readout.detach() if known is None else torch.where(present[:, None, None, None], known, readout.detach())
        actions = None if inp["actions"] is None else inp["actions"][:, :-1]  # (B, nb-1, tt, A) driving blocks 1..
        body_mask = self._state_mask(batch, B, tub.device)  # (B, n_max) tracked bodies
        slots = self.dynamics_head.slots(hv[:, :-1])  # (B, nb-1, tt, n_max, D): shared by the one-step and chained dynamics
        read, pointer = self.read_bodies(slots, self.caption_numbers(batch.text, text_values))  # (B, nb-1, n_max, BODY_COLUMNS)
        bodies = torch.cat([read[..., :DRIVEN], read[:, :1, :, DRIVEN : DRIVEN + 1].expand_as(read[..., DRIVEN : DRIVEN + 1]), read[..., DRIVEN + 1 :]], dim=-1)  # driven as the first block reads it, kept (a rollout keeps its context's)
        bodies = undriven_if_passive(bodies, batch.active)
        bodies = bodies.detach() if hold_bodies else bodies
        tether = None if known is None else fit_tethers(known[:, :TETHER_FRAMES], body_mask & present[:, None]).swinging(bodies[:, 0, :, DRIVEN] > 0)  # (B, n_max) from the clip's first frames, as a rollout's context
        steady = None if inp["steady"] is None else inp["steady"][:, :-1]  # (B, nb-1, tt) of the steps into blocks 1..
        spins = None if batch.spins is None or known is None else pad_time(batch.spins.float(), tt)  # (B, nb*tt, n_max, 3) rad/s
        dist = self.block_dynamics(slots, bodies, src[:, : (nb - 1) * tt], actions, body_mask, tether, steady, None if spins is None else spins[:, : (nb - 1) * tt])  # (B, nb-1, tt, n_max)
        predicted = self.predict_states(dist.mean, bodies, src, present, body_mask, tether, spins)
        frame_bodies = bodies.repeat_interleave(tt, dim=1)  # (B, (nb-1)*tt, n_max, BODY_COLUMNS) of frames tt..
        start_spins = None if spins is None else spins[:, tt - 1 : -1]  # (B, (nb-1)*tt, n_max, 3) of the frames stepped from

        def impulse(start: torch.Tensor) -> torch.Tensor:  # (B, (nb-1)*tt, n_max, 6) the closed-form steps from the frames before tt..
            roll = None if start_spins is None else self.rolling(start, start_spins, frame_bodies[..., 0])
            return self.closed_form_step(start, frame_bodies, body_mask[:, None], None if tether is None else tether.unsqueeze(1), roll)

        states = torch.cat([readout[:, :tt], predicted], dim=1)[:, :T]  # (B, T, n_max, 6) SI
        frame_dist = dist.map(lambda t: t.flatten(1, 2)[:, : T - tt])  # (B, T-tt, n_max) frames tt..
        policy = frame_dist.spread(self.step_spread)  # what a rollout draws the steps from
        if known is not None:
            w = body_mask[:, None, :].float()  # (B, 1, n_max)
            err = ((readout[:, :T] - known[:, :T]) / self.state_scale).pow(2).mean(-1)  # (B, T, n_max)
            readout_loss = (err * w).sum() / (w.sum() * T).clamp(min=1)
            # what the head must add to each frame's closed-form step (which learns through it)
            target = (self.step_targets(known[:, tt - 1 : -1], known[:, tt:]) - impulse(known[:, tt - 1 : -1])).unflatten(1, (nb - 1, tt))  # (B, nb-1, tt, n_max, 6)
            # the moving mean, on every frame; nearly L1 (quadratic only within 0.01): rollouts
            # integrate these steps, so small errors matter
            step_err = F.smooth_l1_loss(dist.move, target, reduction="none", beta=0.01).mean(-1).flatten(1, 2)[:, : T - tt]  # (B, T-tt, n_max)
            step_loss = (step_err * w).sum() / (w.sum() * (T - tt)).clamp(min=1)
            # the gate: keep the prior's step where the truth is within rest_tolerance of it
            keep = ((target - dist.rest).abs().amax(-1) < cfg.rest_tolerance).float().flatten(1, 2)[:, : T - tt]  # (B, T-tt, n_max)
            gate_err = F.binary_cross_entropy_with_logits(frame_dist.keep_logit, keep, reduction="none")
            gate_loss = cfg.gate_weight * (gate_err * w).sum() / (w.sum() * (T - tt)).clamp(min=1)
            # the same steps chained over the clip from its first block alone, against the truth: what
            # a rollout does with its own states (errors compound), in units of one step's scales
            roll0 = None if spins is None else self.rolling(src[:, tt - 1], spins[:, tt - 1], bodies[:, 0, :, 0])  # (B, n_max) at block 0's last frame
            chained = self.chain_states(slots, bodies, src[:, :tt], actions, body_mask, tether, steady, roll0)[:, : T - tt]  # (B, T-tt, n_max, 6)
            scale = chained.new_tensor([cfg.step_pos_scale] * 3 + [cfg.step_vel_scale] * 3)
            chain_err = F.smooth_l1_loss(chained / scale, known[:, tt:T] / scale, reduction="none", beta=0.01).mean(-1)  # (B, T-tt, n_max)
            chain_loss = cfg.chain_weight * (chain_err * w).sum() / (w.sum() * (T - tt)).clamp(min=1)
            body_loss = cfg.body_weight * self.body_loss(read, batch.bodies) + cfg.pointer_weight * self.pointer_loss(pointer, batch.bodies) + cfg.driven_weight * self.driven_loss(read, batch.bodies)
            # each component's spread around its own mean (held fixed): moving on every frame, resting where kept
            true_steps = target.flatten(1, 2)[:, : T - tt].detach()
            nll = -gaussian_logprob(true_steps, frame_dist.move.detach(), frame_dist.move_logstd).mean(-1)  # (B, T-tt, n_max)
            nll = nll - keep * gaussian_logprob(true_steps, frame_dist.rest.detach(), frame_dist.rest_logstd).mean(-1)
            step_nll = cfg.step_nll_weight * (nll * w).sum() / (w.sum() * (T - tt)).clamp(min=1)
            # the steps a rollout drew: as the targets, but a block's first frame steps from `src`
            prev = known[:, tt - 1 : -1].clone()
            prev[:, ::tt] = src[:, tt - 1 : -1 : tt]
            step_impulse = impulse(prev).detach()[:, : T - tt]  # (B, T-tt, n_max, 6)
            drawn = self.step_targets(prev, known[:, tt:])[:, : T - tt] - step_impulse
            # a tethered body drew only its velocity change along the tangent (`tangential_draw`)
            tangent, change = tangential_draw(prev[:, : T - tt], known[:, tt:T], tether.unsqueeze(1), 1.0 / cfg.fps)
            along = change / cfg.step_vel_scale - (step_impulse[..., 3:] * tangent).sum(-1)
            step_logprob = policy.log_prob(drawn, tangent, along)  # (B, T-tt, n_max, 6)
            step_floor = self.set_by_floor(prev[:, : T - tt], known[:, tt:T], frame_bodies[:, : T - tt], body_mask[:, None], None if tether is None else tether.unsqueeze(1))
            lp = (step_logprob.sum(-1) * (w * ~step_floor)).sum(-1)  # (B, T-tt)
            state_logprob = torch.cat([lp.new_zeros(B, tt), lp], dim=1)
        else:
            readout_loss = step_loss = chain_loss = step_nll = gate_loss = body_loss = readout.new_zeros(())
            state_logprob, drawn, step_impulse, step_logprob, step_floor = readout.new_zeros(B, T), None, None, None, None
            tangent = along = None
        state_loss = readout_loss + step_loss + chain_loss + step_nll + gate_loss + body_loss

        loss = frame_nll + cfg.state_weight * state_loss + cfg.moe_aux_weight * moe_aux
        return {
            "loss": loss,
            "frame_nll": frame_nll,
            "state_loss": state_loss,
            "readout_loss": readout_loss,
            "step_loss": step_loss,
            "chain_loss": chain_loss,
            "step_nll": step_nll,
            "gate_loss": gate_loss,
            "body_loss": body_loss,
            "moe_aux": moe_aux,
            "frame_logprob": frame_logprob,
            "state_logprob": state_logprob,
            "steps": policy,
            "step_drawn": drawn,
            "step_logprob": step_logprob,
            "step_impulse": step_impulse,
            "step_tangent": tangent,
            "step_along": along,
            "step_floor": step_floor,
            "bodies": bodies,
            "frame_mean": frame_mean,
            "frame_logstd": frame_logstd,
            "states": states,
            "routing": routing,
            "token_types": layout.types.to(h.device),
            "token_valid": valid,
        }

    def log_prob(self, batch: Batch | dict, start_frame: int) -> torch.Tensor:
        """(B,) log-probability of frames start_frame .. T-1 given everything before them
        (teacher forcing), with the log-density of their states' dynamics steps when the batch has
        states; start_frame >= tubelet_t."""
        if start_frame < self.cfg.tubelet_t:
            raise ValueError(f"log_prob: start_frame={start_frame}; allowed: >= tubelet_t={self.cfg.tubelet_t} (the first block is not predicted)")
        out = self(batch)
        return (out["frame_logprob"] + out["state_logprob"])[:, start_frame:].sum(-1)

    # --- rollouts and checkpoints --------------------------------------------------------------
    def rollout(self, episode, context: int = 4, horizon: int = 16, samples: int = 1, temperature: float = 1.0, seed: int | None = None, use_states: bool = True, step_temperature: float | None = None, step_spread: torch.Tensor | None = None, frame_spread: torch.Tensor | None = None):
        """Roll `episode` forward from its first `context` frames; see `worldmodel.rollout.rollout`."""
        from worldmodel.rollout import rollout

        return rollout(self, episode, context=context, horizon=horizon, samples=samples, temperature=temperature, seed=seed, use_states=use_states, step_temperature=step_temperature, step_spread=step_spread, frame_spread=frame_spread)

    def save(self, path: str | os.PathLike) -> Path:
        """Weights as safetensors with the config JSON in the file's metadata (written atomically)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "config": self.cfg.to_json()})
        os.replace(tmp, path)
        return path

    @classmethod
    def from_preset(cls, name: str, **overrides) -> WorldModel:
        return cls(preset(name, **overrides))


def load(path: str | os.PathLike, device: str | torch.device = "cpu", **knobs: float | None) -> WorldModel:
    """A `WorldModel` from `WorldModel.save`'s file (or a directory holding model.safetensors);
    knobs, the dynamics gate's (`GATE_KNOBS`: gate_override=, override_reach=,
    free_flight_tolerance=, free_swing=, accel_tolerance=, release_reach=), replace the checkpoint's `ModelConfig` fields where given (None:
    the checkpoint's)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"worldmodel.load: no checkpoint at {str(path)!r}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"worldmodel.load: {str(path)!r} has format {meta.get('format')!r}; allowed: {FORMAT!r}")
    cfg = ModelConfig.from_dict(json.loads(meta["config"]))
    for name, value in knobs.items():
        if name not in GATE_KNOBS:
            raise TypeError(f"worldmodel.load: unknown knob {name!r}; allowed: {', '.join(GATE_KNOBS)}")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"worldmodel.load: {name}={value!r}; allowed: >= 0 ({GATE_KNOBS[name]}) or None (the checkpoint's)")
            cfg = replace(cfg, **{name: float(value)})
    model = WorldModel(cfg)
    state = load_file(str(path))
    state.setdefault("step_spread", torch.zeros(()))  # saved before the learnt spread: the one-step spread
    state.setdefault("frame_spread", torch.zeros(()))  # saved before the frames' learnt spread: the head's
    model.load_state_dict(state)
    return model.to(device).eval()


def baseline_encoder(cfg: ModelConfig) -> nn.TransformerEncoder:
    """A plain `nn.TransformerEncoder` of the same width and depth (dense 4x GELU MLP, pre-norm)
    for throughput comparisons on the same token embeddings (B, L, D)."""
    layer = nn.TransformerEncoderLayer(
        cfg.d_model, cfg.n_head, dim_feedforward=4 * cfg.d_model, dropout=cfg.dropout, activation="gelu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, cfg.n_layer, enable_nested_tensor=False)


if __name__ == "__main__":  # python -m worldmodel.model: parameter counts of the presets
    from worldmodel.config import PRESETS

    for name in PRESETS:
        print(f"{name}: {WorldModel.from_preset(name).describe()}")
