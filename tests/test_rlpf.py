"""rlpf in process: the query environment, the simulator's rewards, the GRPO arithmetic and the
prioritised buffer, with real simulations and a real (tiny) world model."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import rlpf
import worldmodel as wm
from rlpf import grpo, rewards
from rlpf.queries import make_queries
from worldmodel.model import FLOOR_TOLERANCE, StepDistribution, gaussian_kl

torch.set_num_threads(1)
HORIZON = 6


@pytest.fixture(scope="module")
def env():
    """One query per family (7), context 4, horizon 6."""
    return gym.make(rlpf.ENV_ID, num_queries=len(rlpf.FAMILIES), horizon=HORIZON).unwrapped


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return wm.WorldModel(wm.preset("nano", d_model=32, n_layer=1, n_head=2)).eval()


def test_query_env_passes_the_gymnasium_checker(env):
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert obs["frames"].shape == (4, 64, 64, 3) and obs["question"] and obs["caption"]
    assert env.action_space["positions"].shape == (HORIZON, 8, 3)
    _, _, terminated, truncated, info = env.step(env.action_space.sample())
    assert terminated and not truncated
    assert env.action_space.contains(info["simulated_action"])


def test_queries_are_deterministic_and_held_out_apart():
    a = make_queries(3, split="train", seed=0, context=4, horizon=2, families=["drop"])
    b = make_queries(3, split="train", seed=0, context=4, horizon=2, families=["drop"])
    held_out = make_queries(3, split="val", seed=0, context=4, horizon=2, families=["drop"])
    assert all(np.array_equal(x.episode.frames, y.episode.frames) for x, y in zip(a, b))
    assert {x.episode.seed for x in a}.isdisjoint({x.episode.seed for x in held_out})
    assert len(a[0].episode) == 6


def test_the_simulators_own_trajectory_scores_the_maximal_reward(env):
    for k in range(len(env.queries)):
        env.reset(options={"query": k})
        _, reward, _, _, info = env.step(env.reference(env.query).action)
        assert reward == 0.0, (env.query.question.scene, info["reward_terms"])  # every term is <= 0
        assert not info["disagrees"] and not info["violates"] and info["position_error_m"] == 0.0
        for _ in range(3):  # no action does better
            _, other, *_ = env.step(env.action_space.sample())
            assert other < reward


def test_corrupted_trajectories_score_less_term_by_term(env):
    for k in range(len(env.queries)):
        env.reset(options={"query": k})
        perfect = env.reference(env.query).action
        scene = env.query.question.scene

        shifted = {**perfect, "positions": perfect["positions"] + np.float32(0.3)}
        _, reward, _, _, info = env.step(shifted)
        assert info["reward_terms"]["trajectory"] < 0 and reward < 0, scene

        wrong = perfect["answer"].copy()
        wrong[0] = 1.0 - wrong[0] if env.query.question.question != "position_at" else wrong[0] + 1.0
        _, reward, _, _, info = env.step({**perfect, "answer": wrong})
        assert info["disagrees"] and info["reward_terms"]["answer"] == -1.0 and reward == -env.weights["answer"], scene

        teleport = {k2: v.copy() for k2, v in perfect.items()}
        teleport["positions"][HORIZON // 2 :, 0, 2] += 1.0  # body 0 jumps up 1 m, its velocity unchanged
        _, reward, _, _, info = env.step(teleport)
        assert info["violates"] and "continuity" in info["failed_checks"] and info["reward_terms"]["violations"] < 0, scene


def test_wrong_events_are_penalised():
    (q,) = make_queries(1, split="train", seed=0, context=4, horizon=12, families=["table_fall"])
    ref = rewards.reference(q, 8)
    assert ref.events == {"fell_off": True}
    stays = {k: v.copy() for k, v in ref.action.items()}
    stays["positions"][:, 0] = q.episode.positions[q.context - 1, 0]  # the cup never leaves the table
    stays["velocities"][:] = 0
    s = rewards.score(q, stays, ref, rewards.DEFAULT_WEIGHTS, 0.05, 8)
    assert s.terms["events"] == -1.0 and s.reward < 0


def test_the_answer_miss_term_ranks_answers_by_how_many_tolerances_they_miss():
    (q,) = make_queries(1, split="train", seed=0, context=4, horizon=12, families=["drop"])  # position_at: [dx, dz] m
    ref = rewards.reference(q, 8)
    tol = max(0.05 * abs(ref.answer.value[0]), 0.02)  # m: the answer's tolerance in dx (verifier.answer.tolerance_miss)
    weights = {**rewards.DEFAULT_WEIGHTS, "answer_miss": 1.0}

    def answer_off(k: float) -> rewards.Score:
        action = {**ref.action, "answer": ref.action["answer"] + np.float32([k * tol, 0.0])}
        return rewards.score(q, action, ref, weights, 0.05, 8)

    assert answer_off(0.5).terms["answer_miss"] == 0.0 and not answer_off(0.5).disagrees  # within tolerance
    for k in (2.0, 4.0, 8.0):  # log scale: each doubling of the miss costs the same, 1 / log2(32) = 0.2
        s = answer_off(k)
        assert s.disagrees and s.terms["answer"] == -1.0
        assert s.terms["answer_miss"] == pytest.approx(-np.log(k) / np.log(rewards.ANSWER_MISS_CAP), rel=1e-3)
        assert s.reward == pytest.approx(-1.0 + s.terms["answer_miss"], rel=1e-3)  # the trajectory is the simulator's
    assert answer_off(64.0).terms["answer_miss"] == -1.0  # capped
    none = rewards.score(q, {**ref.action, "answer": np.full(2, np.nan, np.float32)}, ref, weights, 0.05, 8)
    assert none.terms["answer_miss"] == -1.0  # no answer misses by the most


def test_group_advantages_are_normalised_within_groups_and_flat_groups_skipped():
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], [0.0, 10.0, 0.0, 10.0]], dtype=torch.float64)
    adv, keep = grpo.group_advantages(r, min_std=1e-6)
    assert keep.tolist() == [True, False, True]
    assert torch.allclose(adv[keep].mean(dim=1), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(adv[keep].std(dim=1, unbiased=False), torch.ones(2, dtype=torch.float64), atol=1e-6)
    assert torch.equal(adv[1], torch.zeros(4, dtype=torch.float64))
    assert torch.allclose(adv[2], torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=torch.float64), atol=1e-6)  # shift- and scale-free


def test_the_probability_ratio_is_clipped():
    logp_old = torch.zeros(2, 3)
    logp = torch.log(torch.tensor([[1.5, 1.0, 0.5], [1.5, 1.0, 0.5]])).requires_grad_()
    advantages = torch.tensor([1.0, -1.0])
    surrogate, clipped = grpo.clipped_surrogate(logp, logp_old, advantages, clip=0.2)
    # A > 0: min(r, clip(r)) = 1.2, 1.0, 0.5; A < 0: min(-r, -clip(r)) = -1.5, -1.0, -0.8
    assert surrogate.item() == pytest.approx((1.2 + 1.0 + 0.5 - 1.5 - 1.0 - 0.8) / 6)
    assert clipped.item() == pytest.approx(4 / 6)
    surrogate.backward()
    g = logp.grad
    assert g[0, 0] == 0 and g[1, 2] == 0  # clipped where it would pay to move further
    assert g[0, 2] > 0 and g[1, 0] < 0  # not clipped where the ratio moves against the advantage


def test_the_adaptive_kl_weight_holds_the_kl_at_its_target_and_never_drops_below_its_floor():
    adapt = lambda beta, kl: grpo.adapt_beta(beta, kl, floor=0.05, target=2.0, gain=0.5)
    assert adapt(0.1, 2.0) == 0.1  # on target: unchanged
    assert adapt(0.1, 2.2) == pytest.approx(0.1 * (1 + 0.5 * 0.1))  # proportional to the relative error
    assert adapt(0.1, 1e6) == pytest.approx(0.1 * 1.1) and adapt(0.1, 0.0) == pytest.approx(0.1 * 0.9)  # one step moves it 10% at most
    assert adapt(0.05, 0.0) == 0.05  # below target it returns to the configured beta, no lower
    # closed loop against a drift the weight holds back, KL = 0.5 / beta (target 2 at beta = 0.25): from the
    # floor, beta rises until the KL is on target and stays there
    beta = 0.05
    for _ in range(200):
        beta = adapt(beta, 0.5 / beta)
    assert beta == pytest.approx(0.25, rel=0.02) and 0.5 / beta == pytest.approx(2.0, rel=0.02)


def test_gaussian_kl_matches_torch_and_vanishes_for_equal_distributions():
    m1, s1, m2, s2 = torch.rand(50), torch.randn(50) * 0.3 - 3, torch.rand(50), torch.randn(50) * 0.3 - 3
    ours = gaussian_kl(m1, s1, m2, s2)
    theirs = torch.distributions.kl_divergence(torch.distributions.Normal(m1, s1.exp()), torch.distributions.Normal(m2, s2.exp()))
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    assert torch.equal(gaussian_kl(m1, s1, m1, s1), torch.zeros(50))


def test_step_kl_is_componentwise_and_stays_small_where_the_gates_disagree():
    """Each component's Gaussian KL plus the gate's Bernoulli KL (over 6 values): zero for equal
    distributions, and bounded where a small change of the keep logit flips the chosen mean, where
    the KL of the chosen Gaussians divides the correction by the resting spread."""
    g = torch.Generator().manual_seed(0)
    n = 40
    rest, move = torch.randn(n, 6, generator=g), torch.randn(n, 6, generator=g) * 0.02
    move = rest + move  # corrections within the override: the gate alone decides
    move_ls, rest_ls = torch.full((n, 6), -1.0), torch.full((n, 6), -6.0)
    logit = torch.randn(n, generator=g) * 0.01
    policy = StepDistribution(move, move_ls, rest, rest_ls, logit, 0.1)
    ref = StepDistribution(move, move_ls, rest, rest_ls, -logit, 0.1)  # the other choice everywhere
    assert torch.equal(policy.component_kl(policy), torch.zeros(n, 6))
    ours = policy.component_kl(ref)
    bernoulli = torch.distributions.kl_divergence(torch.distributions.Bernoulli(logits=logit), torch.distributions.Bernoulli(logits=-logit))
    torch.testing.assert_close(ours, (bernoulli / 6)[:, None].expand(n, 6), rtol=1e-4, atol=1e-7)
    chosen = gaussian_kl(policy.mean, policy.logstd, ref.mean, ref.logstd)
    assert chosen.mean() > 1e3 * ours.mean()
    shifted = StepDistribution(move + 0.1, move_ls - 0.5, rest, rest_ls, logit, 0.1)
    torch.testing.assert_close(shifted.component_kl(policy), gaussian_kl(move + 0.1, move_ls - 0.5, move, move_ls))


def test_step_kl_at_a_resolution_stays_finite_below_the_exact_one():
    """Widening both Gaussians by the same noise: 0 gives the exact KL; a resting mean moved by
    0.05 step units against a spread of e^-8 costs ~1e4 nats exactly, but no more than
    0.05^2 / (2 r^2) at resolution r, and never more than the exact KL."""
    n = 16
    move, rest = torch.zeros(n, 6), torch.zeros(n, 6)
    ls = torch.full((n, 6), -8.0)
    ref = StepDistribution(move, ls, rest, ls, torch.zeros(n), 0.1)
    policy = StepDistribution(move + 0.01 * torch.randn(n, 6), ls + 0.3, rest + 0.05, ls, torch.zeros(n), 0.1)
    exact = policy.component_kl(ref)
    torch.testing.assert_close(policy.component_kl(ref, 0.0), exact)
    assert exact.max() > 5e3
    seen = policy.component_kl(ref, 0.02)
    assert (seen <= exact + 1e-6).all() and (seen > 0).all()
    assert seen.max() < (0.05**2 + 0.01**2 * 16) / (2 * 0.02**2) + 1.0  # bounded by the mean shifts at the resolution (+ the log-std term)
    torch.testing.assert_close(ref.component_kl(ref, 0.02), torch.zeros(n, 6))


def test_per_value_logprobs_are_the_rollouts_exact_logprob(tiny_model, env):
    q = env.queries[0]
    rollouts, actions = rlpf.model_actions(tiny_model, q, samples=3, temperature=1.0, seed=0)
    batch = wm.collate([r.episode for r in rollouts], tiny_model.cfg)
    with torch.no_grad():
        out = tiny_model(batch)
        per_value = grpo.per_value_logprob(out, batch.frames, q.context)
        per_step = grpo.per_step_logprob(out, q.context, batch.state_mask)
    n = min(q.episode.states.shape[1], tiny_model.cfg.n_max_objects)
    assert per_value.shape == (3, HORIZON, 64, 64, 3) and per_step.shape == (3, HORIZON, n, 6)
    expected = torch.stack([r.logprob for r in rollouts])  # pixels' probability times the steps' density
    torch.testing.assert_close(per_value.flatten(1).sum(1) + per_step.flatten(1).sum(1), expected, rtol=1e-5, atol=1e-2)
    assert all(env.action_space.contains(a) or np.isnan(a["answer"]).any() for a in actions)


def test_with_floor_support_the_steps_the_floor_set_are_left_out_of_the_policys_density(tiny_model, env):
    """The floor changes a sampled step (it holds a body up, limits a slide), so the step read back
    from the states is not the one the head drew: its log-density under the head's narrow spread is
    huge and negative (RL's updates went non-finite on it). Here every body reads a radius of
    about 0.68 m, so the floor holds the collision query's balls up: those steps are marked, the
    rollout's log-probability and the teacher-forced one both leave them out, and the steps that
    count have ordinary densities."""
    cfg = dataclasses.replace(tiny_model.cfg, floor_support=1.0)
    model = wm.WorldModel(cfg)
    model.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        model.body_head.bias[0] = 0.5  # softplus: a radius of about 0.68 m for every body
    q = env.queries[rlpf.FAMILIES.index("collision")]
    rollouts, _ = rlpf.model_actions(model.eval(), q, samples=3, temperature=1.0, seed=0)
    batch = wm.collate([r.episode for r in rollouts], cfg)
    with torch.no_grad():
        out = model(batch)
        per_value = grpo.per_value_logprob(out, batch.frames, q.context)
        per_step = grpo.per_step_logprob(out, q.context, batch.state_mask)  # (3, H, n, 6)
        scored = grpo.per_step_scored(out, q.context, batch.state_mask)  # (3, H, n, 1)
    set_by_floor = ~scored[..., 0]
    assert set_by_floor.any() and scored.any()
    (_, h, n, _), tt = per_step.shape, cfg.tubelet_t
    radius = out["bodies"][..., :n, 0].repeat_interleave(tt, dim=1)[:, q.context - tt :][:, :h]  # (3, H, n) m: as each predicted frame read it
    heights = batch.states[:, q.context - 1 :, :n, 2]  # (3, H + 1, n) m: each predicted frame's start and end
    on_floor = (heights[:, :-1] - radius <= FLOOR_TOLERANCE) | (heights[:, 1:] - radius <= FLOOR_TOLERANCE)
    assert torch.equal(set_by_floor, on_floor)  # the balls are free: neither driven nor tethered
    assert per_step[set_by_floor.unsqueeze(-1).expand_as(per_step)].min() < -1e3  # read back, not drawn
    assert per_step[scored.expand_as(per_step)].min() > -20.0
    expected = torch.stack([r.logprob for r in rollouts])
    torch.testing.assert_close(per_value.flatten(1).sum(1) + (per_step * scored).flatten(1).sum(1), expected, rtol=1e-5, atol=1e-2)
    advantages = torch.tensor([1.0, -1.0, 0.0])
    loss, old, _ = grpo.group_loss(model.train()(batch), out, batch.frames, q.context, advantages, None, clip=0.2, beta=0.1, body_mask=batch.state_mask)
    loss.backward()
    norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    assert torch.isfinite(norm) and torch.equal(old[2], scored)
    with_off = wm.WorldModel(tiny_model.cfg)
    with_off.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not with_off(batch)["step_floor"].any()  # off: every step counts


def test_group_loss_starts_with_zero_kl_and_moves_towards_advantaged_samples(tiny_model, env):
    model = wm.WorldModel(tiny_model.cfg)
    model.load_state_dict(tiny_model.state_dict())
    q = env.queries[1]
    rollouts, _ = rlpf.model_actions(model, q, samples=2, temperature=1.0, seed=1)
    batch = wm.collate([r.episode for r in rollouts], model.cfg)
    advantages = torch.tensor([1.0, -1.0])
    with torch.no_grad():
        ref = tiny_model(batch)
    loss, old, stats = grpo.group_loss(model(batch), ref, batch.frames, q.context, advantages, None, clip=0.2, beta=0.1, body_mask=batch.state_mask)
    logp, step_logp, _, levels, frame_levels = old
    assert levels is None and frame_levels is None  # the model's own spreads: no levels drawn
    assert stats.kl == 0.0 and stats.step_kl == 0.0 and stats.clipped == 0.0
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 1e-3 * p.grad / (p.grad.norm() + 1e-12)
        out = model(batch)
        after = grpo.per_value_logprob(out, batch.frames, q.context).flatten(1).sum(1)
        after_steps = grpo.per_step_logprob(out, q.context, batch.state_mask).flatten(1).sum(1)
    before, before_steps = logp.flatten(1).sum(1), step_logp.flatten(1).sum(1)
    # the advantaged sample gained relative to the other, in its pixels and in its states' steps
    assert after[0] - before[0] > after[1] - before[1]
    assert after_steps[0] - before_steps[0] > after_steps[1] - before_steps[1]
    _, _, moved = grpo.group_loss(model(batch), ref, batch.frames, q.context, advantages, old, clip=0.2, beta=0.1, body_mask=batch.state_mask)
    assert moved.kl > moved.step_kl > 0


def test_spread_levels_move_the_step_spread_towards_the_advantaged_level_alone(tiny_model, env):
    model = wm.WorldModel(tiny_model.cfg)
    model.load_state_dict(tiny_model.state_dict())
    q = next(x for x in env.queries if x.question.scene == "drop")
    levels = torch.tensor([-0.3, 0.3])  # the narrower rollout did better
    rollouts, _ = rlpf.model_actions(model, q, samples=2, temperature=1.0, seed=1, step_spread=levels)
    assert [r.step_spread for r in rollouts] == pytest.approx([-0.3, 0.3])
    batch = wm.collate([r.episode for r in rollouts], model.cfg)
    with torch.no_grad():
        ref = tiny_model(batch)
    spread = grpo.SpreadDraw(model.step_spread, tiny_model.step_spread.detach(), levels, noise=0.5)
    loss, old, stats = grpo.group_loss(model(batch), ref, batch.frames, q.context, torch.tensor([1.0, -1.0]), None, clip=0.2, beta=0.1, body_mask=batch.state_mask, spread=spread)
    assert stats.kl == 0.0 and stats.step_kl == 0.0
    # each rollout's steps are scored at the level it drew with
    for i, level in enumerate(levels):
        at_level = wm.WorldModel(tiny_model.cfg)
        at_level.load_state_dict(tiny_model.state_dict())
        with torch.no_grad():
            at_level.step_spread.fill_(level)
            torch.testing.assert_close(old[1][i], grpo.per_step_logprob(at_level(batch), q.context, batch.state_mask)[i])
    # only the levels' surrogate reaches step_spread: d/ds of -mean(A (a - s) / noise^2) = 1.2, so a step lowers it
    (grad,) = torch.autograd.grad(loss, model.step_spread)
    assert grad.item() == pytest.approx(1.2, rel=1e-5)
    with torch.no_grad():
        model.step_spread.fill_(-0.1)
    moved_loss, _, moved = grpo.group_loss(model(batch), ref, batch.frames, q.context, torch.tensor([1.0, -1.0]), old, clip=0.2, beta=0.1, body_mask=batch.state_mask, spread=spread)
    assert moved.kl - moved.step_kl == pytest.approx(0.1**2 / (2 * 0.5**2), rel=1e-4)  # the pixels' KL is 0: only the levels' Gaussians moved
    # the levels alone (no pass over the group, policy_reaches=spread) give step_spread the same gradient, KL's part included
    level_loss, _, level_stats = grpo.level_loss([spread], torch.tensor([1.0, -1.0]), [old[3]], clip=0.2, beta=0.1)
    (moved_grad,) = torch.autograd.grad(moved_loss, model.step_spread)
    (level_grad,) = torch.autograd.grad(level_loss, model.step_spread)
    assert moved_grad.item() != pytest.approx(1.2, rel=1e-3)  # the KL's pull now adds to the surrogate's
    assert level_grad.item() == pytest.approx(moved_grad.item(), rel=1e-5)
    assert level_stats.kl == pytest.approx(0.1**2 / (2 * 0.5**2), rel=1e-4) and level_stats.step_kl is None


def test_frame_spread_levels_draw_the_pixels_at_their_own_spread(tiny_model, env):
    q = next(x for x in env.queries if x.question.scene == "drop")
    kw = dict(context=q.context, horizon=q.horizon, samples=2, seed=1, step_temperature=0.0)
    mean = tiny_model.rollout(q.episode, temperature=0.0, **kw)[0]
    narrow, wide = tiny_model.rollout(q.episode, temperature=1.0, frame_spread=torch.tensor([-20.0, 0.0]), **kw)
    assert (narrow.frame_spread, wide.frame_spread) == (-20.0, 0.0) and narrow.episode.provenance["rollout"]["frame_spread"] == -20.0
    np.testing.assert_array_equal(narrow.episode.frames, mean.episode.frames)  # e^-20 of the head's spread: the rounded mean
    assert (wide.episode.frames != mean.episode.frames).any()
    with pytest.raises(ValueError, match=r"frame_spread of shape \(3,\); allowed: \(2,\)"):
        tiny_model.rollout(q.episode, frame_spread=torch.zeros(3), **kw)


def test_frame_spread_levels_move_the_frame_spread_alone_and_the_levels_give_its_whole_gradient(tiny_model, env):
    model = wm.WorldModel(tiny_model.cfg)
    model.load_state_dict(tiny_model.state_dict())
    q = next(x for x in env.queries if x.question.scene == "drop")
    levels, advantages = torch.tensor([-0.3, 0.3]), torch.tensor([1.0, -1.0])  # the narrower rollout did better
    rollouts, _ = rlpf.model_actions(model, q, samples=2, temperature=1.0, seed=1, frame_spread=levels)
    batch = wm.collate([r.episode for r in rollouts], model.cfg)
    with torch.no_grad():
        ref = tiny_model(batch)
    draw = grpo.SpreadDraw(model.frame_spread, tiny_model.frame_spread.detach(), levels, noise=0.5)
    loss, old, stats = grpo.group_loss(model(batch), ref, batch.frames, q.context, advantages, None, clip=0.2, beta=0.1, body_mask=batch.state_mask, frame_spread=draw)
    assert stats.kl == 0.0
    (grad,) = torch.autograd.grad(loss, model.frame_spread)
    assert grad.item() == pytest.approx(1.2, rel=1e-5)  # d/ds of -mean(A (a - s) / noise^2): a step lowers it
    with torch.no_grad():
        model.frame_spread.fill_(-0.1)
    moved_loss, _, _ = grpo.group_loss(model(batch), ref, batch.frames, q.context, advantages, old, clip=0.2, beta=0.1, body_mask=batch.state_mask, frame_spread=draw)
    level_loss, _, level_stats = grpo.level_loss([draw], advantages, [old[4]], clip=0.2, beta=0.1)
    (moved_grad,) = torch.autograd.grad(moved_loss, model.frame_spread)
    (level_grad,) = torch.autograd.grad(level_loss, model.frame_spread)
    assert level_grad.item() == pytest.approx(moved_grad.item(), rel=1e-5)  # the pixels, scored at their levels, add nothing
    assert level_stats.kl == pytest.approx(0.1**2 / (2 * 0.5**2), rel=1e-4)
    # both spreads' levels in one loss: their surrogates and KLs add, each spread keeps its own gradient
    steps = grpo.SpreadDraw(model.step_spread, tiny_model.step_spread.detach(), torch.tensor([0.4, -0.4]), noise=0.5)
    step_loss, step_old, step_stats = grpo.level_loss([steps], advantages, None, clip=0.2, beta=0.1)
    both_loss, both_old, both_stats = grpo.level_loss([steps, draw], advantages, [*step_old, old[4]], clip=0.2, beta=0.1)
    assert len(both_old) == 2 and both_stats.kl == pytest.approx(step_stats.kl + level_stats.kl, rel=1e-5)
    both_step_grad, both_frame_grad = torch.autograd.grad(both_loss, [model.step_spread, model.frame_spread])
    assert both_frame_grad.item() == pytest.approx(level_grad.item(), rel=1e-5)
    assert both_step_grad.item() == pytest.approx(torch.autograd.grad(step_loss, model.step_spread)[0].item(), rel=1e-5)


@pytest.mark.parametrize("family", ["drop", "pendulum"])  # a free body's six step values, a tethered one's drawn along its tangent
def test_a_held_spread_leaves_the_policy_gradient_to_the_means(tiny_model, env, family):
    q = next(x for x in env.queries if x.question.scene == family)
    rollouts, _ = rlpf.model_actions(tiny_model, q, samples=2, temperature=1.0, seed=1)
    batch = wm.collate([r.episode for r in rollouts], tiny_model.cfg)
    found = {}
    for hold in (False, True):
        out = tiny_model(batch)
        loss, old, _ = grpo.group_loss(out, out, batch.frames, q.context, torch.tensor([1.0, -1.0]), None, clip=0.2, beta=0.0, body_mask=batch.state_mask, hold_spread=hold)
        steps = out["steps"]
        tensors = [out["frame_mean"], steps.move, steps.rest, out["frame_logstd"], steps.move_logstd, steps.rest_logstd]
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        found[hold] = old, [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]
    (free_old, free_grads), (held_old, held_grads) = found[False], found[True]
    assert torch.equal(free_old[0], held_old[0]) and torch.equal(free_old[1], held_old[1])  # the same log-probabilities
    for free, held in zip(free_grads[:3], held_grads[:3]):  # the same pull on the means
        torch.testing.assert_close(held, free, rtol=1e-4, atol=1e-9)
    assert free_grads[0].abs().sum() > 0 and (free_grads[1].abs().sum() + free_grads[2].abs().sum()) > 0
    assert all(g.abs().sum() > 0 for g in free_grads[3:4]) and (free_grads[4].abs().sum() + free_grads[5].abs().sum()) > 0  # learnt: the spreads move
    assert all(not g.any() for g in held_grads[3:])  # held: they do not


def test_buffer_draws_high_disagreement_queries_more_often():
    buffer = rlpf.QueryBuffer(6, alpha=1.0, floor=0.1)
    for i, d in enumerate([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]):
        buffer.update(i, d)
    rng = np.random.default_rng(0)
    counts = np.bincount([i for _ in range(2000) for i in buffer.draw(rng, 1)], minlength=6)
    assert counts[:3].min() > 5 * counts[3:].max() and counts[3:].min() > 0  # right answers are drawn less, never starved
    assert buffer.probabilities()[0] == pytest.approx(1.1 / 3.6)
    assert sorted(buffer.draw(rng, 6)) == list(range(6))  # without replacement
    uniform = rlpf.QueryBuffer(6, alpha=0.0)
    uniform.load_state_dict(buffer.state_dict())
    assert np.allclose(uniform.probabilities(), 1 / 6) and np.array_equal(uniform.draws, buffer.draws)


def test_the_rollout_state_term_trains_the_dynamics_head_towards_the_simulator(tiny_model, env):
    from rlpf.finetune import Group, own_state_loss
    from worldmodel.tokens import episode_arrays

    q = next(q for q in env.queries if q.question.scene == "ramp")  # a box the head steps (a falling one flies on gravity alone)
    rollouts, _ = rlpf.model_actions(tiny_model, q, samples=2, temperature=1.0, seed=0)
    truth = episode_arrays(q.episode, tiny_model.cfg)
    group = Group(wm.collate([r.episode for r in rollouts], tiny_model.cfg), torch.from_numpy(truth["states"])[None].expand(2, -1, -1, -1),
                  torch.from_numpy(truth["state_mask"])[None].expand(2, -1), None)
    model = wm.WorldModel(tiny_model.cfg)
    model.load_state_dict(tiny_model.state_dict())
    loss = own_state_loss(model, model(group.batch), group, q.context)
    loss.backward()
    assert loss > 0 and model.dynamics_head.mlp[-1].weight.grad.abs().sum() > 0
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 1e-2 * p.grad / (p.grad.norm() + 1e-12)
        assert own_state_loss(model, model(group.batch), group, q.context) < loss


def test_held_bodies_leave_the_body_properties_to_their_own_losses(tiny_model, env):
    """The rollout-state term reaches the body head (which only reads radius, mass, friction...)
    unless the bodies are held; the dynamics head learns either way."""
    from rlpf.finetune import Group, own_state_loss
    from worldmodel.tokens import episode_arrays

    q = next(q for q in env.queries if q.question.scene == "collision")  # balls whose radii set when they touch
    rollouts, _ = rlpf.model_actions(tiny_model, q, samples=2, temperature=1.0, seed=0)
    truth = episode_arrays(q.episode, tiny_model.cfg)
    group = Group(wm.collate([r.episode for r in rollouts], tiny_model.cfg), torch.from_numpy(truth["states"])[None].expand(2, -1, -1, -1),
                  torch.from_numpy(truth["state_mask"])[None].expand(2, -1), None)
    grads = {}
    for hold in (False, True):
        tiny_model.zero_grad(set_to_none=True)
        own_state_loss(tiny_model, tiny_model(group.batch, hold_bodies=hold), group, q.context).backward()
        body = tiny_model.body_head.weight.grad
        grads[hold] = (0.0 if body is None else float(body.abs().sum()), float(tiny_model.dynamics_head.mlp[-1].weight.grad.abs().sum()))
    tiny_model.zero_grad(set_to_none=True)
    assert grads[False][0] > 0 and grads[True][0] == 0
    assert grads[False][1] > 0 and grads[True][1] > 0


def test_a_policy_gradient_spike_leaves_the_supervised_update_as_sfts(tiny_model, env):
    """The on-policy and the teacher-forced gradients are clipped apart: however large the policy
    gradient, the update is the supervised one plus a policy step of norm grad_clip."""
    from rlpf.finetune import Group, update
    from worldmodel.tokens import episode_arrays

    q = env.queries[1]
    rollouts, _ = rlpf.model_actions(tiny_model, q, samples=2, temperature=1.0, seed=1)
    truth = episode_arrays(q.episode, tiny_model.cfg)
    opts = {"ppo_epochs": 1, "context": q.context, "clip": 0.2, "beta": 0.05, "step_kl_resolution": 0.0, "hold_spread": False, "hold_bodies": False, "grad_clip": 1.0,
            "rollout_state_weight": 1.0, "baseline": "rlpf", "pixel_weight": 1.0, "state_weight": 1.0, "policy_reaches": "all"}
    lr = 1e-3

    def step(advantage: float | None) -> torch.Tensor:
        """The parameters' change (flat) by one SGD update; advantage None: no group, the supervised loss alone."""
        model = wm.WorldModel(tiny_model.cfg).train()
        model.load_state_dict(tiny_model.state_dict())
        before = torch.cat([p.detach().flatten() for p in model.parameters()])
        groups = [] if advantage is None else [Group(wm.collate([r.episode for r in rollouts], model.cfg), torch.from_numpy(truth["states"])[None].expand(2, -1, -1, -1),
                                                     torch.from_numpy(truth["state_mask"])[None].expand(2, -1), torch.tensor([advantage, -advantage]))]
        update(model, tiny_model, torch.optim.SGD(model.parameters(), lr=lr), groups, [q.episode], opts, opts["beta"], torch.device("cpu"))
        return torch.cat([p.detach().flatten() for p in model.parameters()]) - before

    supervised = step(None)
    spike, larger = step(1e6), step(1e9)
    assert torch.linalg.vector_norm(spike - supervised).item() == pytest.approx(lr * opts["grad_clip"], rel=1e-3)
    assert torch.allclose(spike, larger, atol=1e-9)  # both policy gradients clipped to the same step
    assert torch.linalg.vector_norm(supervised).item() > 0.1 * lr  # the supervised part is there to be kept



@pytest.mark.parametrize("reaches, frames", [("all", False), ("spread", False), ("spread", True)])
def test_a_policy_that_reaches_the_spread_alone_leaves_every_other_parameter_to_the_supervised_terms(tiny_model, env, reaches, frames):
    """policy_reaches=spread: the surrogate, the KL and the rollout-state term train step_spread
    only, so every other parameter takes the supervised update alone (as with no group at all)."""
    from rlpf.finetune import Group, update
    from worldmodel.tokens import episode_arrays

    q = next(x for x in env.queries if x.question.scene == "drop")
    levels = torch.tensor([-0.3, 0.3])
    frame_levels = torch.tensor([0.2, -0.2]) if frames else None
    rollouts, _ = rlpf.model_actions(tiny_model, q, samples=2, temperature=1.0, seed=1, step_spread=levels, frame_spread=frame_levels)
    truth = episode_arrays(q.episode, tiny_model.cfg)
    opts = {"ppo_epochs": 1, "context": q.context, "clip": 0.2, "beta": 0.05, "step_kl_resolution": 0.0, "hold_spread": False, "hold_bodies": False, "grad_clip": 1.0,
            "rollout_state_weight": 1.0, "baseline": "rlpf", "pixel_weight": 1.0, "state_weight": 1.0, "policy_reaches": reaches, "spread_noise": 0.5}

    def step(with_group: bool) -> dict[str, torch.Tensor]:
        """Each parameter's change by one SGD update."""
        model = wm.WorldModel(tiny_model.cfg).train()
        model.load_state_dict(tiny_model.state_dict())
        model.step_spread.requires_grad_(True)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        group = Group(wm.collate([r.episode for r in rollouts], model.cfg), torch.from_numpy(truth["states"])[None].expand(2, -1, -1, -1),
                      torch.from_numpy(truth["state_mask"])[None].expand(2, -1), torch.tensor([1.0, -1.0]), levels=levels, frame_levels=frame_levels)
        update(model, tiny_model, torch.optim.SGD(model.parameters(), lr=1e-2), [group] if with_group else [], [q.episode], opts, opts["beta"], torch.device("cpu"))
        return {name: p.detach() - before[name] for name, p in model.named_parameters()}

    supervised, both = step(False), step(True)
    policy_moved = {name for name in both if not torch.allclose(both[name], supervised[name], atol=1e-9)}
    spreads = {"step_spread", "frame_spread"} if frames else {"step_spread"}
    assert spreads <= policy_moved  # the spreads learn from the rollouts either way
    assert (policy_moved == spreads) == (reaches == "spread")

def _sim_states(q, n_max: int = 8, samples: int = 2) -> np.ndarray:
    """The query's own positions and velocities in rollout layout (samples, T, n_max, 6)."""
    truth = q.episode.states
    n = min(truth.shape[1], n_max)
    states = np.zeros((samples, len(truth), n_max, 6))
    states[:, :, :n] = np.concatenate([truth[:, :n, 0:3], truth[:, :n, 7:10]], axis=-1)
    return states


def test_the_simulators_next_state_from_its_own_states_is_its_own_episode(env):
    from rlpf.resim import simulator_next_states

    for q in env.queries:  # every family: free, hinged and stacked bodies
        states = _sim_states(q)
        targets, valid = simulator_next_states(q, states, 8)
        assert valid[:, q.context :].all() and not valid[:, : q.context].any(), q.question.scene
        assert np.abs(targets - states).max() < 1e-5, q.question.scene  # restarted from any frame, it replays itself


def test_the_simulators_next_state_from_a_displaced_ball_is_free_fall_from_there():
    """The target is physics from the rollout's state, not the true state: a ball the rollout has
    5 cm higher and faster, in the air, falls one frame of MuJoCo's semi-implicit Euler from there."""
    from rlpf.resim import Replay, simulator_next_states

    q = next(q for q in make_queries(6, split="train", seed=3, context=4, horizon=6, families=["drop"]) if q.episode.positions[5, 0, 2] > 0.4)
    states = _sim_states(q, samples=1)
    t = q.context  # target of frame t from the rollout's state at t - 1, in free flight
    states[0, t - 1, 0, :3] += [0.03, 0.0, 0.05]
    states[0, t - 1, 0, 3:] += [0.5, 0.0, 1.0]
    targets, valid = simulator_next_states(q, states, 8)
    model = Replay(q).sim.model
    h, n, g = model.opt.timestep, round(1 / (q.episode.fps * model.opt.timestep)), model.opt.gravity
    p, v = states[0, t - 1, 0, :3], states[0, t - 1, 0, 3:]
    assert valid[0, t]
    assert np.allclose(targets[0, t, 0, 3:], v + n * h * g, atol=1e-5)  # v_k+1 = v_k + h g
    assert np.allclose(targets[0, t, 0, :3], p + n * h * v + h * h * g * n * (n + 1) / 2, atol=1e-5)  # x_k+1 = x_k + h v_k+1
    assert np.abs(targets[0, t, 0, 2] - q.episode.positions[t, 0, 2]) > 0.04  # not the simulator's own next state


def test_a_state_the_simulator_rejects_has_no_target(env):
    from rlpf.resim import simulator_next_states

    q = next(q for q in env.queries if q.question.scene == "drop")
    states = _sim_states(q)
    states[1, q.context, 0, 5] = 500.0  # m/s: the simulator refuses to go on (energy blow-up)
    states[1, q.context + 1, 0, 0] = np.nan
    _, valid = simulator_next_states(q, states, 8)
    assert valid[0, q.context :].all()
    assert not valid[1, q.context + 1] and not valid[1, q.context + 2] and valid[1, q.context + 3 :].all()


def test_the_rollout_state_term_counts_only_frames_with_a_target(tiny_model, env):
    from rlpf.finetune import Group, own_state_loss

    q = env.queries[0]
    rollouts, _ = rlpf.model_actions(tiny_model, q, samples=2, temperature=1.0, seed=0)
    batch = wm.collate([r.episode for r in rollouts], tiny_model.cfg)
    mask = torch.zeros(2, tiny_model.cfg.n_max_objects, dtype=torch.bool)
    mask[:, 0] = True
    valid = torch.zeros(2, len(q.episode), dtype=torch.bool)
    valid[:, q.context : q.context + 2] = True
    with torch.no_grad():
        out = tiny_model(batch)
    targets = batch.states.clone()
    loss = own_state_loss(tiny_model, out, Group(batch, targets, mask, None, valid), q.context)
    targets[:, q.context + 2 :] += 100.0  # frames without a target: no effect
    assert own_state_loss(tiny_model, out, Group(batch, targets, mask, None, valid), q.context) == loss
    targets[:, q.context] += 1.0
    assert own_state_loss(tiny_model, out, Group(batch, targets, mask, None, valid), q.context) > loss


def test_a_body_the_rollout_sank_into_the_floor_is_pushed_out_before_the_simulator_steps():
    """The simulator's soft contact would throw a ball set 3 cm into the floor up at metres per
    second; the target is instead physics from the floor's surface: the ball one frame on lies
    within the slack of resting on it and has gained no more speed than a frame of gravity."""
    from rlpf.resim import PENETRATION_SLACK, simulator_next_states

    q = next(q for q in make_queries(20, split="train", seed=5, context=4, horizon=6, families=["drop"]) if q.episode.params["shape"] == "sphere")
    radius = q.episode.params["size"] / 2
    states = _sim_states(q, samples=1)
    t = q.context
    states[0, t - 1, 0, 2] = radius - 0.03
    states[0, t - 1, 0, 3:] = 0.0
    targets, valid = simulator_next_states(q, states, 8)
    assert valid[0, t]
    assert targets[0, t, 0, 2] > radius - PENETRATION_SLACK - 1e-3  # at the surface, not 3 cm in
    assert np.linalg.norm(targets[0, t, 0, 3:]) < 9.81 / q.episode.fps + 0.1  # m/s: no kick out of the floor
