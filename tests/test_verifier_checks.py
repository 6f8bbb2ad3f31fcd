"""verifier.check_trajectory on valid simulator episodes of every family (consistent) and on
physically corrupted copies (caught). States only: frames are dropped before checking."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import sim
from conftest import family_params
from verifier import check_trajectory, corrupt


@pytest.fixture(scope="module")
def episodes():
    return {f: sim.simulate(f, seed=7, fps=20, render=False) for f in sim.SCENES}


@pytest.mark.parametrize("family", family_params())
def test_valid_episodes_are_consistent(family, episodes):
    report = check_trajectory(episodes[family])
    assert report.consistent, {k: c.to_dict() for k, c in report.checks.items()}
    assert report.score <= 1.0
    assert {"permanence", "continuity"} <= set(report.checks)


@pytest.mark.parametrize("kind", ["teleport", "reversed_gravity", "scaled_gravity", "vanishing"])
@pytest.mark.parametrize("family", family_params())
def test_corruptions_are_caught(family, kind, episodes):
    valid = check_trajectory(episodes[family])
    bad = check_trajectory(corrupt(episodes[family], kind, np.random.default_rng(3)))
    assert not bad.consistent and bad.score > valid.score, bad.to_dict()


def test_each_law_flags_its_own_corruption(episodes):
    rng = np.random.default_rng(0)
    pendulum = check_trajectory(corrupt(episodes["pendulum"], "broken_constraint", rng))
    assert "constraint" in pendulum.failed()
    drop = check_trajectory(corrupt(episodes["drop"], "sinking", rng))
    assert "penetration" in drop.failed()
    collision = episodes["collision"]
    pushed = collision.states.copy()
    pushed[20:, 0, 7] += 1.0  # ball 0 speeds up from nowhere: momentum and energy both grow
    pushed[20:, 0, 0] += 1.0 * (collision.times[20:] - collision.times[20])
    report = check_trajectory(replace(collision, states=pushed))
    assert {"momentum", "energy"} <= set(report.failed())


def test_predicted_style_episodes_without_orientation_or_frames(episodes):
    e = episodes["projectile"]
    states = e.states.copy()
    states[:, :, 3:7] = [1, 0, 0, 0]  # identity quaternions, no spin: what a rollout predicts
    states[:, :, 10:13] = 0
    assert check_trajectory(replace(e, states=states, frames=None)).consistent
