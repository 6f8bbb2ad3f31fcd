"""The fine-tuning run behind `physfusion-rlpf`: RL from physical feedback, or continued supervised
training (`baseline=sft`) on the same simulator episodes with the same number of optimiser steps.

One step:
  1. draw `queries_per_step` training queries from the prioritised buffer (`rlpf.buffer`; a pure
     function of (seed, step) and the buffer's state);
  2. rlpf: roll each one out `group_size` times from its context (no gradient), score every rollout
     with the simulator (`rlpf.rewards`), set the query's priority to its disagreement rate and
     normalise the rewards within the group (`rlpf.grpo`); groups without reward variance are
     skipped and counted;
  3. `ppo_epochs` optimiser updates on the loss
        rlpf: mean over the groups of the GRPO loss (clipped surrogate + beta * KL to the start,
              over the sampled pixels and the sampled dynamics steps; 0 for skipped groups;
              with `kl_target` set, beta adapts step by step to hold the KL near it: `grpo.adapt_beta`;
              with `hold_spread`, the surrogate moves the Gaussians' means and not their spreads;
              with `hold_bodies`, neither on-policy term moves the body properties the dynamics
              read (radius, mass, friction...: their own supervised losses teach them);
              with `spread_lr` > 0, the model's `step_spread` too, the log-factor on the spread
              every rollout draws its steps with, which no supervised term reaches: each rollout
              of a group draws at its own level around it (`spread_noise`), and the levels'
              surrogate and KL move it: `grpo.SpreadDraw`; with `policy_reaches=spread`, the
              on-policy terms move `step_spread` alone, through the levels alone, so the model
              makes no pass over the groups (`grpo.level_loss`; `policy/kl` is then the levels'
              KL), and the rollout-state term is dropped; with `learn_frame_spread`, the model's
              `frame_spread` likewise, the log-factor on the spread a rollout draws its pixels with)
              + rollout_state_weight * the error of the model's one-step state predictions on its
              own rollouts (the compounding drift that teacher forcing never sees; `own_state_loss`)
              against the simulator's states (`rollout_state_target=truth`) or against the
              simulator's next state from the rollout's own (`simulator`: `rlpf.resim`)
              + pixel_weight * frame NLL + state_weight * state loss + moe_aux_weight * MoE balance,
              the last three teacher-forced on the drawn queries' simulator episodes: the frame NLL
              is the pixel-fidelity anchor that, with the KL, bounds drift (reward hacking), and
              the state loss keeps the state readout and the dynamics steps' means honest.
              The gradient of the on-policy terms (the first two) and that of the teacher-forced
              terms are each clipped to a global norm of grad_clip before they are summed, so a
              spike of the policy gradient (the steps' KL where a resting step's near-deterministic
              Gaussian moves) cannot shrink the supervised part of the update below SFT's;
        sft:  the model's own supervised loss on the same simulator episodes (the same frame NLL,
              state loss and balance terms with the model's weights), so RLPF with pixel_weight = 1
              and state_weight = the model's state_weight is exactly SFT plus the two on-policy
              terms (GRPO and the rollout state error).
An update whose loss or gradient is not finite is skipped (clipping by a NaN norm would write NaN
into every weight) and counted (`skipped_updates`); MAX_NONFINITE_STEPS in a row, or rollouts that
are no longer finite, stop the run with an error naming lr (exit 2 from the command).
The SFT baseline draws its queries from the same buffer, whose priorities then never change
(uniform draws). Checkpoints, exact resume and the optimiser schedule are those of
`worldmodel.train` (its helpers are used as they are).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import worldmodel
from rlpf import grpo, resim, rewards
from rlpf.buffer import QueryBuffer
from rlpf.evaluate import evaluate
from rlpf.policy import model_actions
from rlpf.queries import make_queries
from sim.dataset import write_json_atomic
from worldmodel import metrics
from worldmodel.tokens import Batch, episode_arrays
from worldmodel.train import (
    CRASH_ENV,
    MAX_NONFINITE_STEPS,
    check_run,
    checkpoint_dirs,
    divergence,
    learning_rate,
    load_checkpoint,
    make_optimizer,
    save_checkpoint,
    set_lr,
    skipped_in_a_row,
)

RUN_KEYS = (
    "baseline", "seed", "families", "train_queries", "context", "horizon", "group_size", "queries_per_step",
    "temperature", "lr", "min_lr", "warmup_steps", "weight_decay", "betas", "grad_clip", "spread_lr", "spread_noise", "beta", "kl_target", "kl_gain", "step_kl_resolution", "clip", "hold_spread", "hold_bodies", "policy_reaches", "learn_frame_spread",
    "ppo_epochs", "state_weight", "pixel_weight", "rollout_state_weight", "rollout_state_target", "min_reward_std", "reward_weights", "answer_tolerance",
    "buffer_alpha", "buffer_floor", *worldmodel.GATE_KNOBS,
)
"""options that define a run: resuming into out_dir with other values is refused"""
IMPLIED = {"rollout_state_target": "truth", "reward_weights.answer_miss": 0.0, "hold_spread": False, "hold_bodies": False, "spread_lr": 0.0, "spread_noise": 0.5, "policy_reaches": "all", "learn_frame_spread": False}
"""options added later (a dotted name: a key of a dict option), at the value that runs before them
had: left out of run.json there, so those runs still resume"""


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_definition(opts: dict) -> dict:
    """What run.json records of a run: the RUN_KEYS options, less those at their IMPLIED value
    and kl_gain without a kl_target (learn_frame_spread without a spread_lr), and the starting
    checkpoint's hash."""
    run = {k: dict(opts[k]) if isinstance(opts[k], dict) else opts[k] for k in RUN_KEYS}
    for name, value in IMPLIED.items():
        *parent, key = name.split(".")
        holder = run[parent[0]] if parent else run
        if holder.get(key) == value:
            del holder[key]
    if opts["kl_target"] is None:
        run.pop("kl_gain")  # the gain matters only with a target
    if not opts["spread_lr"] > 0:
        run.pop("learn_frame_spread", None)  # spread_lr=0 holds both spreads
    run["checkpoint_sha256"] = file_sha256(opts["checkpoint"])
    return run


def rollout_seed(seed: int, step: int, query: int) -> int:
    """The torch seed of the group of `query` at `step`."""
    return int(np.random.default_rng([seed, step, query]).integers(2**31))


def spread_levels(model, opts: dict, step: int, query: int, frames: bool = False) -> torch.Tensor | None:
    """(G,) the group's step-spread levels, N(step_spread, spread_noise^2) (a pure function of
    (seed, step, query) and the model), where RL learns the spread; else None (the model's).
    frames: the pixels' levels around `frame_spread`, where RL learns that too (`learn_frame_spread`)."""
    if not opts["spread_lr"] > 0 or (frames and not opts["learn_frame_spread"]):
        return None
    eps = np.random.default_rng([opts["seed"], step, query, 2 if frames else 1]).standard_normal(opts["group_size"])
    own = model.frame_spread if frames else model.step_spread
    return own.detach().cpu() + opts["spread_noise"] * torch.from_numpy(eps).float()


def sample_group(model, query, opts: dict, step: int, reference: rewards.Reference):
    """G rollouts of `query`, scored. Returns (rollout episodes, rewards (G,), scores, (the step and
    the pixel spread levels they drew with, each or None))."""
    levels, frame_levels = (spread_levels(model, opts, step, query.index, frames) for frames in (False, True))
    rollouts, actions = model_actions(model, query, opts["group_size"], opts["temperature"], rollout_seed(opts["seed"], step, query.index), step_spread=levels, frame_spread=frame_levels)
    scores = [rewards.score(query, a, reference, opts["reward_weights"], opts["answer_tolerance"], model.cfg.n_max_objects) for a in actions]
    return [r.episode for r in rollouts], torch.tensor([s.reward for s in scores], dtype=torch.float64), scores, (levels, frame_levels)


def supervised_loss(model, episodes, opts: dict, device) -> tuple[torch.Tensor, dict]:
    """The teacher-forced loss on simulator episodes (module docstring) and its parts."""
    out = model(worldmodel.collate(episodes, model.cfg).to(device))
    if opts["baseline"] == "sft":
        loss = out["loss"]
    else:
        loss = opts["pixel_weight"] * out["frame_nll"] + opts["state_weight"] * out["state_loss"] + model.cfg.moe_aux_weight * out["moe_aux"]
    return loss, {"frame_nll": out["frame_nll"].item(), "state_loss": out["state_loss"].item()}


@dataclass
class Group:
    """One query's sampled rollouts, ready for the loss."""

    batch: Batch  # the G rollouts (context + sampled frames, the model's own states)
    simulated: torch.Tensor  # (G, T, n_max, 6) the rollout-state term's targets: positions m and velocities m/s
    body_mask: torch.Tensor  # (G, n_max) tracked bodies
    advantages: torch.Tensor | None  # (G,), None for a group skipped for want of reward variance
    target_valid: torch.Tensor | None = None  # (G, T) bool: the frames with a target (None: all)
    levels: torch.Tensor | None = None  # (G,) the step-spread log-factors the rollouts drew with (None: the model's)
    frame_levels: torch.Tensor | None = None  # (G,) the pixels' spread log-factors they drew with (None: the model's)


def rl_step(model, queries, drawn, references, buffer, opts: dict, step: int, device) -> tuple[list[Group], dict]:
    """Sample and score the groups of one step and update the buffer. Returns (the groups, figures
    to log)."""
    model.eval()
    groups, group_rewards, group_levels, disagreement, violation, psnr, terms = [], [], [], [], [], [], []
    for i in drawn:
        q = queries[i]
        episodes, r, scores, levels = sample_group(model, q, opts, step, references[i])
        group_levels.append(tuple(None if x is None else x.to(device) for x in levels))
        disagreement.append(float(np.mean([s.disagrees for s in scores])))
        buffer.update(i, disagreement[-1])
        violation.append(float(np.mean([s.violates for s in scores])))
        psnr.append(float(np.mean([metrics.psnr(e.frames[q.context :], q.episode.frames[q.context :]).mean() for e in episodes])))
        terms += [s.terms for s in scores]
        groups.append(episodes)
        group_rewards.append(r)
    model.train()
    all_rewards = torch.stack(group_rewards)  # (Q, G)
    advantages, keep = grpo.group_advantages(all_rewards, opts["min_reward_std"])
    out = []
    for k, (i, episodes) in enumerate(zip(drawn, groups)):
        truth = episode_arrays(queries[i].episode, model.cfg)
        batch = worldmodel.collate(episodes, model.cfg)
        body_mask = torch.from_numpy(truth["state_mask"]).to(device)[None].expand(len(episodes), -1)
        adv = advantages[k].float().to(device) if keep[k] else None
        if opts["rollout_state_target"] == "simulator":
            targets, valid = resim.simulator_next_states(queries[i], batch.states.numpy(), model.cfg.n_max_objects)
            out.append(Group(batch.to(device), torch.from_numpy(targets).to(device), body_mask, adv, torch.from_numpy(valid).to(device), *group_levels[k]))
        else:
            simulated = torch.from_numpy(truth["states"]).to(device)[None].expand(len(episodes), -1, -1, -1)
            out.append(Group(batch.to(device), simulated, body_mask, adv, None, *group_levels[k]))
    log = {
        "reward/mean": float(all_rewards.mean()),
        "reward/std_within_group": float(all_rewards.std(dim=1, unbiased=False).mean()),
        **{f"reward/{t}": float(np.mean([x[t] for x in terms])) for t in rewards.TERMS},
        "rollouts/disagreement_rate": float(np.mean(disagreement)),
        "rollouts/violation_rate": float(np.mean(violation)),
        "rollouts/psnr": float(np.mean(psnr)),
        "groups/skipped": int((~keep).sum()),
    }
    return out, log


def own_state_loss(model, out: dict, group: Group, context: int) -> torch.Tensor:
    """Mean squared error (positions / pos_scale, velocities / vel_scale) between the model's
    one-step state predictions on its own rollouts (each stepped from its own previous predicted
    state, as in the rollout) and the group's targets (the simulator's states, or its next states
    from the rollout's own), over the predicted frames that have one and the tracked bodies: the
    dynamics head learns to correct the drift it compounds."""
    err = ((out["states"][:, context:] - group.simulated[:, context:]) / model.state_scale).pow(2).mean(-1)  # (G, H, n_max)
    w = group.body_mask[:, None, :].float()  # (G, 1, n_max)
    if group.target_valid is not None:
        w = w * group.target_valid[:, context:, None].float()  # (G, H, n_max)
    return (err * w).sum() / w.expand_as(err).sum().clamp(min=1)


def clip_grads(params: list[torch.Tensor], max_norm: float) -> float:
    """Scale the parameters' gradients in place to a global norm of at most max_norm (0: leave
    them); returns their norm before."""
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))


def spread_draws(model, reference_model, group: Group, opts: dict) -> tuple[grpo.SpreadDraw | None, grpo.SpreadDraw | None]:
    """The group's step and pixel spread draws (`grpo.SpreadDraw`), each None where the rollouts
    drew at the model's own spread."""
    return tuple(None if levels is None else grpo.SpreadDraw(getattr(model, name), getattr(reference_model, name), levels, opts["spread_noise"])
                 for name, levels in (("step_spread", group.levels), ("frame_spread", group.frame_levels)))


def update(model, reference_model, optimizer, groups: list[Group], sim_episodes, opts: dict, beta: float, device) -> dict:
    """`ppo_epochs` optimiser updates on one step's samples, with KL weight `beta`. Returns figures to log: the KL to the
    start and the losses before the first update, the clipped fraction of the last, and
    `train/skipped_update` (1: an update's loss or gradient was not finite, so it and the epochs
    after it were skipped)."""
    old = [None] * len(groups)  # per-value log-probabilities under the sampling policy
    log = {}
    params = [p for p in model.parameters() if p.requires_grad]
    spread_only = opts["policy_reaches"] == "spread"  # the on-policy terms move the learnt spreads alone; the supervised ones the rest
    rollout_state_weight = 0.0 if spread_only else opts["rollout_state_weight"]
    for epoch in range(opts["ppo_epochs"]):
        optimizer.zero_grad(set_to_none=True)
        stats, own = [], []
        for k, group in enumerate(groups):
            if group.advantages is None and not rollout_state_weight:
                continue
            draws = spread_draws(model, reference_model, group, opts)
            if spread_only:  # the spreads reach the loss through their levels alone: no pass over the group
                loss, logp, s = grpo.level_loss([d for d in draws if d is not None], group.advantages, old[k], opts["clip"], beta)
                (loss / len(groups)).backward()
                old[k] = logp if old[k] is None else old[k]
                stats.append(s)
                continue
            out = model(group.batch, hold_bodies=opts["hold_bodies"])
            loss = own_state_loss(model, out, group, opts["context"])
            own.append(loss.item())
            loss = rollout_state_weight * loss
            if group.advantages is not None:
                with torch.no_grad():
                    ref_out = reference_model(group.batch)
                policy_loss, logp, s = grpo.group_loss(out, ref_out, group.batch.frames, opts["context"], group.advantages, old[k], opts["clip"], beta, group.body_mask, opts["step_kl_resolution"], opts["hold_spread"], *draws)
                loss = loss + policy_loss
                old[k] = logp if old[k] is None else old[k]
                stats.append(s)
            (loss / len(groups)).backward()
        policy_norm = clip_grads(params, opts["grad_clip"]) if own or stats else None  # a group was backpropagated
        policy_grads = [p.grad for p in params]
        optimizer.zero_grad(set_to_none=True)
        sup, parts = supervised_loss(model, sim_episodes, opts, device)
        sup.backward()
        grad_norm = clip_grads(params, opts["grad_clip"])
        for p, g in zip(params, policy_grads):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
        if not (np.isfinite(grad_norm) and (policy_norm is None or np.isfinite(policy_norm))):
            optimizer.zero_grad(set_to_none=True)
            return {**log, "train/skipped_update": 1}
        optimizer.step()
        if epoch == 0:
            log = {"loss/frame_nll": parts["frame_nll"], "loss/state_loss": parts["state_loss"], "train/grad_norm": grad_norm}
            if policy_norm is not None:
                log["train/policy_grad_norm"] = policy_norm
            if own:
                log["loss/rollout_state_loss"] = float(np.mean(own))
            log["train/skipped_update"] = 0
            if stats:
                log["policy/kl"] = float(np.mean([s.kl for s in stats]))
                log["policy/surrogate"] = float(np.mean([s.surrogate for s in stats]))
                if not spread_only:
                    log["policy/step_kl"] = float(np.mean([s.step_kl for s in stats]))
                    log["policy/step_surrogate"] = float(np.mean([s.step_surrogate for s in stats]))
        if stats:
            log["policy/clip_fraction"] = float(np.mean([s.clipped for s in stats]))
    return log


def finetune(opts: dict) -> dict:
    """Run (or resume) a fine-tuning run; returns the JSON summary. `opts` are checked options
    (`rlpf.cli.check_options`)."""
    device = torch.device(opts["device"])
    out: Path = opts["out_dir"]
    knobs = {knob: opts[knob] for knob in worldmodel.GATE_KNOBS}
    reference_model = worldmodel.load(opts["checkpoint"], device=device, **knobs)
    for p in reference_model.parameters():
        p.requires_grad_(False)
    cfg = reference_model.cfg
    run = run_definition(opts)
    check_run(out, run)

    kw = dict(context=opts["context"], horizon=opts["horizon"], families=opts["families"], image_size=cfg.image_size, fps=cfg.fps)
    train_queries = make_queries(opts["train_queries"], split="train", seed=opts["seed"], **kw)
    eval_queries = make_queries(opts["eval_queries"], split="val", seed=opts["seed"], **kw)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "run.json", run)

    model = worldmodel.load(opts["checkpoint"], device=device, **knobs).train()
    learns_spread = opts["baseline"] == "rlpf" and opts["spread_lr"] > 0
    model.step_spread.requires_grad_(learns_spread)  # only the policy's surrogate and KL reach it
    model.frame_spread.requires_grad_(learns_spread and opts["learn_frame_spread"])
    optimizer = make_optimizer(model, opts["lr"], opts["weight_decay"], opts["betas"], spread_lr_scale=opts["spread_lr"] / opts["lr"] if learns_spread else None)
    buffer = QueryBuffer(len(train_queries), opts["buffer_alpha"], opts["buffer_floor"])
    totals = {"groups": 0, "skipped_groups": 0, "skipped_updates": 0, "simulator_episodes": 0, "rollouts": 0}
    ckpts = checkpoint_dirs(out)
    start, beta = 0, opts["beta"]
    if ckpts:
        state = load_checkpoint(ckpts[-1], model, optimizer)
        start = state["step"]
        buffer.load_state_dict(state["buffer"])
        totals = {"skipped_updates": 0, **state["totals"]}
        beta = state.get("beta", opts["beta"])  # checkpoints before the adaptive KL weight: the fixed one
        print(f"resuming from {ckpts[-1]} (step {start})", file=sys.stderr, flush=True)

    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    quiet = not opts["progress"]
    eval_kw = dict(samples=opts["eval_samples"], temperature=opts["eval_temperature"], seed=opts["seed"], long_horizon_s=opts["long_horizon_s"], weights=opts["reward_weights"], tolerance=opts["answer_tolerance"])
    eval_refs: dict[int, rewards.Reference] = {}
    with tqdm(total=len(eval_queries), desc="evaluate before", unit="query", file=sys.stderr, disable=quiet, dynamic_ncols=True) as bar:
        before = evaluate(reference_model, eval_queries, references=eval_refs, bar=bar, **eval_kw)

    writer = SummaryWriter(str(out / "tb"), purge_step=start)
    references = {q.index: rewards.reference(q, cfg.n_max_objects) for q in train_queries}
    steps, crash_after = opts["steps"], int(os.environ.get(CRASH_ENV, "-1"))
    bar = tqdm(total=steps, initial=start, desc=opts["baseline"], unit="step", file=sys.stderr, disable=quiet, dynamic_ncols=True)
    t_start, log = time.perf_counter(), {}
    nonfinite = 0  # consecutive skipped updates
    for step in range(start, steps):
        lr = learning_rate(step, lr=opts["lr"], min_lr=opts["min_lr"], warmup_steps=opts["warmup_steps"], steps=steps)
        set_lr(optimizer, lr)
        drawn = buffer.draw(np.random.default_rng([opts["seed"], step]), opts["queries_per_step"])
        groups, log = [], {}
        if opts["baseline"] == "rlpf":
            try:
                groups, log = rl_step(model, train_queries, drawn, references, buffer, opts, step, device)
            except FloatingPointError as err:
                raise divergence("fine-tuning", lr, f"step {step + 1}'s {err}", totals["skipped_updates"]) from None
            totals["groups"] += len(drawn)
            totals["skipped_groups"] += log["groups/skipped"]
            totals["rollouts"] += len(drawn) * opts["group_size"]
        log.update(update(model, reference_model, optimizer, groups, [train_queries[i].episode for i in drawn], opts, beta, device))
        if opts["baseline"] == "rlpf":
            log["policy/beta"] = beta
            log["policy/step_spread"] = model.step_spread.item()
            if model.frame_spread.requires_grad:
                log["policy/frame_spread"] = model.frame_spread.item()
            if opts["kl_target"] is not None and "policy/kl" in log:
                beta = grpo.adapt_beta(beta, log["policy/kl"], floor=opts["beta"], target=opts["kl_target"], gain=opts["kl_gain"])
        nonfinite = nonfinite + 1 if log["train/skipped_update"] else 0
        totals["skipped_updates"] += log["train/skipped_update"]
        if nonfinite == MAX_NONFINITE_STEPS:
            raise divergence("fine-tuning", lr, skipped_in_a_row(step, nonfinite), totals["skipped_updates"])
        totals["simulator_episodes"] += len(drawn)
        done = step + 1
        log["train/lr"] = lr
        log["groups/skipped_total"] = totals["skipped_groups"]
        bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in log.items() if k in ("reward/mean", "policy/kl", "loss/frame_nll")})
        bar.update(1)
        if done % opts["log_every"] == 0 or done == steps:
            for k, v in log.items():
                writer.add_scalar(k, v, done)
        if done % opts["ckpt_every"] == 0 or done == steps:
            save_checkpoint(out, model, optimizer, done, {"run": run, "totals": totals, "buffer": buffer.state_dict(), "beta": beta}, opts["keep_checkpoints"])
        if done == crash_after:
            os._exit(3)
    bar.close()
    elapsed = time.perf_counter() - t_start

    with tqdm(total=len(eval_queries), desc="evaluate after", unit="query", file=sys.stderr, disable=quiet, dynamic_ncols=True) as ebar:
        after = evaluate(model, eval_queries, references=eval_refs, bar=ebar, **eval_kw)
    for k, v in after.items():
        if isinstance(v, float):
            writer.add_scalar(f"eval/{k}", v, steps)
        elif isinstance(v, dict):  # by family, by check
            for part, value in v.items():
                if value is not None:
                    writer.add_scalar(f"eval/{k}/{part}", value, steps)
    writer.close()
    summary = {
        "checkpoint": str(out / "model.safetensors"),
        "out_dir": str(out),
        "baseline": opts["baseline"],
        "steps": steps,
        "resumed_from": start,
        **totals,
        "seconds": round(elapsed, 2),
        "last_step": {k: round(v, 6) for k, v in log.items()},
        "before": before,
        "after": after,
    }
    write_json_atomic(out / "report.json", summary)
    print(f"{opts['baseline']}: before {describe(before)} -> after {describe(after)}", file=sys.stderr, flush=True)
    return summary


def describe(figures: dict) -> str:
    """One line of the held-out figures."""
    long = figures["position_error_long"]
    return (
        f"disagreement {figures['disagreement_rate']:.3f}, violations {figures['violation_rate']:.3f}, "
        f"position error {figures['position_error']:.4f} m" + ("" if long is None else f" (long horizon {long:.4f} m)") + f", PSNR {figures['psnr']:.2f} dB"
    )
