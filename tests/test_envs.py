"""Gymnasium environments (sim/envs.py): registration, gymnasium's env checker, seeding, shapes,
vector envs, rendering and unstable simulations, for every scene family."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim
from sim.envs import PhysicsEnv, env_id

families = pytest.mark.parametrize("scene", sim.SCENES)


def make(scene: str, **kwargs) -> PhysicsEnv:
    return gym.make(env_id(scene), **kwargs).unwrapped


def rollout(env, seed: int, steps: int, action_seed: int = 0):
    """(observations, frames, infos) of `steps` steps with seeded random actions scaled down."""
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(action_seed)
    observations, frames, infos = [obs], [env.render()], [info]
    for _ in range(steps):
        action = env.unwrapped.scripted_action() + 0.1 * rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        frames.append(env.render())
        infos.append(info)
        if terminated or truncated:
            break
    return observations, frames, infos


def test_every_family_is_registered():
    assert env_id("drop") == "physfusion/Drop-v0"
    assert env_id("table_fall") == "physfusion/TableFall-v0"
    for scene in sim.SCENES:
        spec = gym.spec(env_id(scene))
        assert spec.kwargs["scene"] == scene


@families
def test_check_env(scene):
    env = make(scene, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # advice about unbounded / non-normalised Box spaces
        check_env(env, skip_render_check=False)
    env.close()


def test_check_env_pixel_observations():
    env = make("drop", render_mode="rgb_array", obs_type="pixels_state", width=32, height=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env, skip_render_check=False)
    obs, _ = env.reset(seed=0)
    assert obs["pixels"].shape == (32, 32, 3) and obs["pixels"].dtype == np.uint8
    assert np.array_equal(obs["pixels"], env.render())
    env.close()


@families
def test_reset_seed_reproducible(scene):
    a, b = make(scene, render_mode="rgb_array"), make(scene, render_mode="rgb_array")
    obs_a, frames_a, infos_a = rollout(a, seed=7, steps=5)
    obs_b, frames_b, infos_b = rollout(b, seed=7, steps=5)
    assert infos_a[0]["params"] == infos_b[0]["params"]
    for x, y in zip(obs_a, obs_b, strict=True):
        assert np.array_equal(x, y)
    for x, y in zip(frames_a, frames_b, strict=True):
        assert np.array_equal(x, y)
    assert [i["contacts"] for i in infos_a] == [i["contacts"] for i in infos_b]
    # the same seed gives the same parameters and initial state as sim.simulate
    episode = sim.simulate(scene, seed=7, seconds=0.05, render=False)
    assert infos_a[0]["params"] == episode.params
    n = len(episode.body_names)
    assert np.array_equal(obs_a[0].reshape(-1, 13)[:n], episode.states[0])
    # an unseeded reset after a seeded one repeats too; another seed gives another episode
    assert np.array_equal(a.reset(seed=3)[0], b.reset(seed=3)[0])
    assert np.array_equal(a.reset()[0], b.reset()[0])
    assert a.reset(seed=8)[1]["params"] != infos_a[0]["params"]
    a.close()
    b.close()


@families
def test_episode_shapes_and_no_nan(scene):
    env = make(scene)
    obs, info = env.reset(seed=1)
    assert obs.shape == env.observation_space.shape == (env.max_bodies * 13,)
    assert info["body_mask"].sum() == len(info["body_names"])
    steps, done = 0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(env.scripted_action())
        steps += 1
        done = terminated or truncated
        assert obs in env.observation_space and np.isfinite(obs).all()
        assert reward == 0.0 and not terminated and not info["unstable"]
    assert truncated and steps == env.n_frames - 1
    assert info["time"] == pytest.approx(steps / env.fps)
    assert env.render() is None  # no render_mode
    env.close()


def test_contacts_reported_as_they_begin():
    env = make("drop", params={"num_objects": 1, "height": 0.3})
    env.reset(seed=0)
    contacts = []
    for _ in range(env.n_frames - 1):
        _, _, _, _, info = env.step(env.scripted_action())
        contacts += info["contacts"]
    episode = sim.simulate("drop", {"num_objects": 1, "height": 0.3}, seed=0, render=False)
    assert [(c["time"], c["body_a"], c["body_b"]) for c in contacts] == [(e.time, e.body_a, e.body_b) for e in episode.events]
    assert contacts and {"floor", "object0"} == {contacts[0]["body_a"], contacts[0]["body_b"]}


def test_render_and_pixel_shapes():
    env = make("drop", render_mode="rgb_array", obs_type="pixels", width=48, height=32)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 48, 3) and obs.dtype == np.uint8
    frame = env.render()
    assert frame.shape == (32, 48, 3) and frame.dtype == np.uint8 and frame.std() > 0
    obs, *_ = env.step(np.zeros(env.action_space.shape, np.float32))
    assert obs.shape == (32, 48, 3)
    env.close()


def test_reset_options_and_bad_input():
    env = make("drop")
    _, info = env.reset(seed=0, options={"params": {"num_objects": 2, "restitution": 0.5}, "split": "ood"})
    assert info["params"]["num_objects"] == 2 and info["params"]["restitution"] == 0.5
    assert info["params"]["mass"] >= 2.5  # the ood range of the first object's mass
    with pytest.raises(sim.ParamError, match="restitution"):
        env.reset(seed=0, options={"params": {"restitution": 1.5}})
    with pytest.raises(sim.ParamError, match="options"):
        env.reset(seed=0, options={"bogus": 1})
    with pytest.raises(sim.ParamError, match="obs_type"):
        make("drop", obs_type="voxels")
    with pytest.raises(sim.ParamError, match="mass"):
        make("drop", params={"mass": -1.0})
    with pytest.raises(ValueError, match="fps"):
        make("drop", fps=30)  # 1/30 s is not a whole number of 1 ms steps


def test_unstable_simulation_terminates_with_flag():
    env = make("drop", params={"num_objects": 1, "mass": 0.2}, max_force=1e6)
    obs0, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(np.array([0.0, 0.0, 1e6], np.float32))
    assert terminated and not truncated and info["unstable"] and "blow-up" in info["error"]
    assert np.isfinite(obs).all() and np.array_equal(obs, obs0)  # the last stable observation


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_env(mode):
    envs = gym.make_vec(env_id("drop"), num_envs=2, vectorization_mode=mode)
    try:
        obs, info = envs.reset(seed=[3, 4])
        assert obs.shape == (2, 5 * 13) and np.isfinite(obs).all()
        single = make("drop")
        assert np.array_equal(obs[0], single.reset(seed=3)[0])
        assert np.array_equal(obs[1], single.reset(seed=4)[0])
        for _ in range(3):
            obs, reward, terminated, truncated, info = envs.step(np.zeros((2, 3), np.float32))
        assert obs.shape == (2, 65) and reward.shape == (2,) and not terminated.any()
        assert np.allclose(info["time"], 3 / 20)
    finally:
        envs.close()


def test_async_vector_env_renders_in_spawned_workers():
    # OpenGL does not survive fork: rendering workers are spawned (see sim/envs.py)
    envs = gym.make_vec(env_id("drop"), num_envs=2, vectorization_mode="async", render_mode="rgb_array",
                        vector_kwargs={"context": "spawn"})
    try:
        envs.reset(seed=[3, 4])
        frames = envs.render()
    finally:
        envs.close()
    single = make("drop", render_mode="rgb_array")
    single.reset(seed=4)
    assert len(frames) == 2 and frames[0].shape == (64, 64, 3)
    assert np.array_equal(frames[1], single.render())
