"""Stochastic frame-by-frame rollouts with a key-value cache.

    rollouts = model.rollout(episode, context=4, horizon=16, samples=8, temperature=1.0, seed=0)
    rollouts[0].episode          # sim.Episode: context + 16 predicted frames (uint8), states (20, n, 13)
    rollouts[0].logprob          # scalar tensor, differentiable when grad is enabled

The caption and the context blocks are encoded once (prefill); then each time block's frames are
sampled from the frame head and its states stepped by the dynamics head, and the block is appended
to the cache. The context's states come from the episode (`use_states=True`) and the predicted ones
are fed back as state tokens; with `use_states=False` the model sees pixels only and steps from its
own readout. Only the first `n_max_objects` bodies are tracked: the rollout's episode holds those. A context that is not
a whole number of blocks leaves a partly known block: its known frames are kept and only the rest
is sampled (exact conditioning, the pixels of a block being independent given the past). Audio is
unknown beyond the context (the learned "absent" embedding); actions are read from the episode
when it has them for the horizon, else zero.

The states are sampled too: each frame's dynamics step is drawn from the head's Gaussian (its
moving spread times exp(`WorldModel.step_spread`), 1 unless RL fine-tuning learnt it) at the
same temperature (temperature 0: its mean), or at `step_temperature` where it is given (the frames
and the steps each at their own: which of the two noises a rollout's errors come from; and with
`step_spread` (S,), each sample with its own log-factor in place of the model's), so samples
differ in where the bodies go. The pixels are drawn from the frame head's Gaussian with its spread
times exp(`WorldModel.frame_spread`) (or `frame_spread` (S,), one per sample); the frame's
closed-form step (`WorldModel.closed_form_step`: contact impulses and a pendulum's swing, from the
state it starts from) is added to it. A tethered body's step is read along its tangent alone (`worldmodel.tether`), so its
density is that one component's. The bodies' spins start as the context's last frame has them and
change only where a body lands (`WorldModel.floor_landing`); the predicted states hold them
(`WorldModel.spins`), so teacher forcing the rollout's episode reads the same landings.

`Rollout.logprob` is log p(predicted frames, state steps | context, caption) under the model itself
(temperature 1), whatever temperature drew them: the frames' probability times the steps' density
(leaving out the steps `floor_support` may have set, `WorldModel.set_by_floor`).
It equals `model.log_prob(collate([r.episode]), context)` recomputed by teacher forcing (for
rollouts with `use_states=True`, the default). A model whose frame head gives non-finite values
(diverged weights) raises FloatingPointError.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

import sim
from worldmodel.tether import TETHER_FRAMES, fit_tethers, tether_tangent
from worldmodel.tokens import (
    audio_features,
    block_actions,
    block_layout,
    encode_text,
    text_values,
    episode_arrays,
    frames_to_tubelets,
    n_blocks,
    state_features,
    steady_actions,
    text_layout,
    tubelets_to_frames,
)


@dataclass
class Rollout:
    episode: sim.Episode
    """context + predicted frames (T = context + horizon), states (T, n, 13)"""
    logprob: torch.Tensor
    """scalar: log-probability of the predicted frames and state steps under the model (temperature 1)"""
    mean: torch.Tensor
    """(horizon, H, W, 3) predicted mean frames in [0, 1], detached"""
    context: int
    temperature: float
    step_temperature: float
    """the dynamics steps' temperature (`temperature` unless the rollout was given its own)"""
    step_spread: float
    """the log-factor on the moving steps' spread it drew with (the model's `step_spread` unless given)"""
    frame_spread: float
    """the log-factor on the frame head's spread it drew its pixels with (the model's `frame_spread` unless given)"""


def per_sample(name: str, given: torch.Tensor | None, own: torch.Tensor, samples: int) -> torch.Tensor:
    """(samples,) float log-factors on a spread: `given`, one per sample, or the model's `own` for all."""
    if given is None:
        return own.detach().float().expand(samples)
    if tuple(given.shape) != (samples,) or not torch.isfinite(given).all():
        raise ValueError(f"rollout: {name} of shape {tuple(given.shape)}; allowed: ({samples},) finite log-factors, one per sample, or None (the model's)")
    return given.float()


def rollout(
    model,
    episode: sim.Episode,
    context: int = 4,
    horizon: int = 16,
    samples: int = 1,
    temperature: float = 1.0,
    seed: int | None = None,
    use_states: bool = True,
    step_temperature: float | None = None,
    step_spread: torch.Tensor | None = None,
    frame_spread: torch.Tensor | None = None,
) -> list[Rollout]:
    cfg = model.cfg
    tt = cfg.tubelet_t
    if episode.frames is None or not tt <= context <= len(episode.frames):
        n = 0 if episode.frames is None else len(episode.frames)
        raise ValueError(f"rollout: context={context}; allowed: tubelet_t={tt} .. the episode's {n} frames")
    if horizon < 1:
        raise ValueError(f"rollout: horizon={horizon}; allowed: >= 1")
    if samples < 1:
        raise ValueError(f"rollout: samples={samples}; allowed: >= 1")
    if not temperature >= 0:
        raise ValueError(f"rollout: temperature={temperature}; allowed: >= 0")
    step_temperature = temperature if step_temperature is None else step_temperature
    if not step_temperature >= 0:
        raise ValueError(f"rollout: step_temperature={step_temperature}; allowed: >= 0 (or None: temperature's)")
    T = context + horizon
    nb, nb_known = n_blocks(T, tt), context // tt
    dev, S = model.device, samples
    step_spread = per_sample("step_spread", step_spread, model.step_spread, S).to(dev)
    frame_spread = per_sample("frame_spread", frame_spread, model.frame_spread, S).to(dev)
    generator = None if seed is None else torch.Generator(dev).manual_seed(seed)

    # the episode's context in Batch layout, T frames long (audio and actions as the episode has them)
    ctx = episode.slice(0, context)
    ctx.actions = None if episode.actions is None else episode.actions[:T]
    arr = episode_arrays(ctx, cfg, n_frames=nb * tt)
    levels = torch.zeros(S, nb * tt, cfg.image_size, cfg.image_size, 3, device=dev)  # uint8 levels as float
    levels[:, :context] = torch.from_numpy(episode.frames[:context]).to(dev).float()
    audio_feat = audio_present = actions = steady = active = None
    n = min(episode.states.shape[1], cfg.n_max_objects)  # tracked bodies
    # (S, nb*tt, n_max, 6) SI: the context's states, zeros until predicted
    known = torch.from_numpy(arr["states"]).to(dev).float()[None].repeat(S, 1, 1, 1)
    spin = torch.from_numpy(arr["spins"]).to(dev).float()[None].repeat(S, 1, 1, 1)  # (S, nb*tt, n_max, 3) rad/s: the context's, then what each frame's floor contact leaves (`WorldModel.spin_after`)
    mask = torch.from_numpy(arr["state_mask"]).to(dev)[None].expand(S, -1)  # (S, n_max)
    states_in = torch.full((S,), bool(use_states and cfg.state_tokens), device=dev)  # state tokens present
    if cfg.audio_bins:
        audio_feat = audio_features(torch.from_numpy(arr["audio"]).to(dev), cfg.audio_bins).view(1, nb, tt, -1).expand(S, -1, -1, -1)
        present = torch.from_numpy(arr["audio_present"]).to(dev) & (torch.arange(nb * tt, device=dev) < context)
        audio_present = present.view(1, nb, tt).expand(S, -1, -1)
    if cfg.action_dim:
        actions = block_actions(torch.from_numpy(arr["actions"]).to(dev)[None], nb, tt).expand(S, -1, -1, -1)
        steady = steady_actions(torch.from_numpy(arr["actions"]).to(dev)[None], nb, tt).expand(S, -1, -1)  # (S, nb, tt)
        active = torch.full((S,), bool(arr["active"]), device=dev)

    def blocks(first: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """embeddings (S, count * block_len, D) and tubelets (S, count, Np, Dt) of known blocks"""
        sl = slice(first, first + count)
        tub = frames_to_tubelets(levels[:, first * tt : (first + count) * tt] / 255.0, tt, cfg.patch)
        state_feat = None
        if cfg.state_tokens:
            st = known[:, first * tt : (first + count) * tt]
            state_feat = state_features(st, mask, cfg.pos_scale, cfg.vel_scale).unflatten(1, (count, tt))
        x = model.embed.embed_blocks(
            tub,
            None if audio_feat is None else audio_feat[:, sl],
            None if audio_present is None else audio_present[:, sl],
            None if actions is None else actions[:, sl],
            state_feat,
            states_in,
        )
        return x, tub

    # prefill: caption + whole context blocks
    from worldmodel.model import DRIVEN, KVCache, discretized_gaussian_logprob, sample_levels, undriven_if_passive

    cache = KVCache()
    tokens = np.asarray(encode_text(episode.caption, cfg.max_text_len))
    text = torch.from_numpy(tokens).to(dev)[None].expand(S, -1)
    values = torch.from_numpy(text_values(tokens)).to(dev)[None].expand(S, -1)
    x_blocks, tub = blocks(0, nb_known)
    x = torch.cat([model.embed.embed_text(text, values), x_blocks], dim=1)
    layout = text_layout(text.shape[1]) + block_layout(cfg, 0, nb_known)
    h, _, _ = model.run(x, layout, torch.ones(S, len(layout), dtype=torch.bool, device=dev), cache)
    hidden, _, words = model.caption_numbers(text[:1], values[:1])  # the same caption for every sample
    caption = (hidden.expand(S, -1, -1), values, words.expand(S, -1))  # what the body properties' pointer reads (`WorldModel.body_properties`)
    hv, tub = model.video_hidden(h, 1), tub[:, -1:]  # (S, 1, Np, D), (S, 1, Np, Dt) of the last known block

    # bodies on a hinge, found from the context's states (`worldmodel.tether`); none without them
    tether = fit_tethers(known[:, : min(context, TETHER_FRAMES)], mask.bool()) if states_in[0] else None

    frame = torch.arange(nb * tt, device=dev)
    logprob = torch.zeros(S, device=dev)
    means = []
    diverged = torch.zeros((), dtype=torch.bool, device=dev)  # a non-finite frame head: checked once, after the loop (no sync per block)
    for b in range(nb_known, nb):
        mean, logstd = model.frame_head(hv, tub)  # (S, 1, Np, Dt)
        diverged = diverged | ~torch.isfinite(mean).all() | ~torch.isfinite(logstd).all()
        to_frames = lambda t: tubelets_to_frames(t, tt, tt, cfg.patch, cfg.grid)  # noqa: E731  (S, tt, H, W, 3)
        logstd = logstd + frame_spread[:, None, None, None]  # the spread the pixels are drawn with and scored at
        drawn = to_frames(sample_levels(mean, logstd, temperature, generator).nan_to_num(0.0))  # NaN levels would index out of the bins below
        f = frame[b * tt : (b + 1) * tt]
        new = (f >= context) & (f < T)  # (tt,) frames sampled here
        block = levels[:, b * tt : (b + 1) * tt]
        block = torch.where(new[None, :, None, None, None], drawn, block)
        if (f >= T).any():  # padding past the horizon repeats the last frame, as in training
            block = torch.where((f >= T)[None, :, None, None, None], block[:, (T - 1) - b * tt][:, None], block)
        levels[:, b * tt : (b + 1) * tt] = block
        lp = to_frames(discretized_gaussian_logprob(frames_to_tubelets(block, tt, cfg.patch), mean, logstd))
        logprob = logprob + (lp.flatten(2).sum(-1) * new).sum(-1)
        means.append(to_frames(mean.detach())[:, new])

        # states of block b: dynamics steps from the last frame of block b-1 (known, or read out)
        # (S, F, N, 6) SI states of block b-1's frames and the frame before them (history for the
        # steady change), or block b-1's frames read out from its video tokens
        window = slice(max((b - 1) * tt - 1, 0), b * tt)  # the frame before block b-1's, and block b-1's
        src = known[:, window] if states_in[0] else model.state_head(hv).detach() * model.state_scale
        drive = None if actions is None else actions[:, b - 1 : b]  # (S, 1, tt, A) the actions of block b's frames
        slots = model.dynamics_head.slots(hv)  # (S, 1, tt, n_max, D)
        bodies = model.body_properties(slots, caption)  # (S, 1, n_max, BODY_COLUMNS)
        if b == nb_known:  # which bodies the actions drive: read from the context's video, kept (none in a passive episode)
            driven = undriven_if_passive(bodies, active)[..., DRIVEN : DRIVEN + 1]
            tether = None if tether is None else tether.swinging(driven[:, 0, :, 0] > 0)  # gravity swings the tethered bodies nothing drives
        bodies = torch.cat([bodies[..., :DRIVEN], driven, bodies[..., DRIVEN + 1 :]], dim=-1)
        held = None if actions is None else steady[:, b - 1 : b]  # (S, 1, tt) whether they are the frame before's
        dist = model.block_dynamics(slots, bodies, src, drive, mask.bool(), tether, held, spin[:, window] if states_in[0] else None).map(lambda t: t[:, 0]).spread(step_spread[:, None, None, None])  # (S, tt, n_max)
        steps = dist.sample(step_temperature, generator)  # (S, tt, n_max, 6)
        prev, prev_spin = src[:, -1], spin[:, b * tt - 1]
        body = bodies[:, 0].detach()  # (S, n_max, BODY_COLUMNS): the states carry no gradient
        for j in range(tt):
            step = steps[:, j]
            tangent = tether_tangent(prev, tether, 1.0 / cfg.fps)  # a tethered body draws its velocity change along it alone
            lp = dist.map(lambda t: t[:, j]).log_prob(step, tangent, (step[..., 3:] * tangent).sum(-1))  # (S, n_max, 6)
            roll = model.rolling(prev, prev_spin, body[..., 0])  # (S, n_max) as teacher forcing reads it from the states' spins
            cur = model.advance(prev, step, body, mask.bool(), tether, roll=roll)  # the head's step plus the frame's closed-form step, on the tethers
            scored = mask * ~model.set_by_floor(prev, cur, bodies[:, 0], mask.bool(), tether)  # (S, n_max) the steps the states show as drawn
            logprob = logprob + (lp.sum(-1) * scored).sum(-1) * new[j]
            if b * tt + j >= context:
                known[:, b * tt + j] = cur
                spin[:, b * tt + j] = model.spins(model.spin_after(prev, cur, body, mask.bool(), roll), body[..., 0])
            prev, prev_spin = known[:, b * tt + j], spin[:, b * tt + j]

        x, tub = blocks(b, 1)
        layout = block_layout(cfg, b, 1)
        h, _, _ = model.run(x, layout, torch.ones(S, len(layout), dtype=torch.bool, device=dev), cache)
        hv = model.video_hidden(h, 1)

    if diverged:
        raise FloatingPointError("rollout: the frame head gave non-finite values: the model's weights have diverged")

    # assemble episodes
    pred_states = known[:, context:T, :n].double().cpu().numpy()  # (S, horizon, n, 6)
    pred_spins = spin[:, context:T, :n].double().cpu().numpy()  # (S, horizon, n, 3)
    frames_u8 = levels[:, :T].to(torch.uint8).cpu().numpy()
    mean_frames = torch.cat(means, dim=1).float().cpu()
    out = []
    for i in range(S):
        st = np.zeros((T, n, 13))
        st[:context] = episode.states[:context, :n]
        st[context:, :, 0:3] = pred_states[i, :, :, :3]
        st[context:, :, 3] = 1.0  # identity quaternion
        st[context:, :, 7:10] = pred_states[i, :, :, 3:]
        st[context:, :, 10:13] = pred_spins[i]
        ep = sim.Episode(
            scene=episode.scene,
            seed=episode.seed,
            fps=episode.fps,
            times=episode.times[0] + np.arange(T) / episode.fps,
            body_names=list(episode.body_names[:n]),
            states=st,
            params=episode.params,
            caption=episode.caption,
            frames=frames_u8[i],
            audio=ctx.audio,
            audio_rate=episode.audio_rate,
            actions=None if episode.actions is None else arr["actions"][:T, : episode.actions.shape[1]].copy(),
            camera=episode.camera,
            provenance={**episode.provenance, "rollout": {"context": context, "horizon": horizon, "temperature": temperature, "step_temperature": step_temperature, "step_spread": float(step_spread[i]), "frame_spread": float(frame_spread[i]), "seed": seed, "sample": i}},
        )
        out.append(Rollout(episode=ep, logprob=logprob[i], mean=mean_frames[i], context=context, temperature=temperature, step_temperature=step_temperature, step_spread=float(step_spread[i]), frame_spread=float(frame_spread[i])))
    return out
