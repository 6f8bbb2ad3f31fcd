"""Physics of the stack, table_fall, gears, pour and push families against closed forms (where one
exists) and conservation/sanity checks. Tolerances are the measured ones, with some headroom:

- stack: the centre-of-mass criterion predicts stand/topple for every drawn tower (|margin| >= 0.1
  of half an edge); measured agreement 100% on 40 drawn towers, and 29/30 even at |margin| < 0.1
  (the miss at margin 0.004).
- table_fall: landing distance of the centre of mass within 3 cm of speed * sqrt(2 h / g) (measured
  -0.4 to +2.2 cm: the edge holds the cup up a little while it tips over it, so it lands up to half
  a cup radius long at low speed); horizontal flight speed within 7% of `speed` (measured 2-5% low).
- gears: speed ratios within 1e-3 of the closed form (measured < 2e-4; the joint coupling is an
  equality constraint, not tooth contact).
- push: the cube (turned to face the paddle) moves within 5 degrees of the push direction (measured
  < 0.1), push_distance + v^2 / (2 mu g) far to within 3 cm (measured -1.9 to +0.8 cm).
- pour: no closed form; every bead stays finite, above the floor and in the scene, and >= 80% end
  in the container (measured 100% on train seeds 0-2).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from sim.scenes import pour, push, stack, table_fall
from sim.scenes.gears import RAMP_TIME, speed_ratios

G = 9.81


# ---------------------------------------------------------------- stack


def toppled(episode: sim.Episode) -> bool:
    """Some block moved more than a quarter edge from where it started."""
    size = episode.params["size"]
    return bool(np.abs(episode.positions[-1] - episode.positions[0]).max() > 0.25 * size)


def test_stack_drawn_towers_stand_or_topple_as_the_centre_of_mass_predicts():
    agree, standing, n = 0, 0, 24
    for seed in range(n):
        e = sim.simulate("stack", seed=seed, seconds=1.5, fps=10, render=False)
        predicted = stack.stands(e.params["offsets"], e.params["size"])
        assert abs(stack.stability_margin(e.params["offsets"], e.params["size"])) >= stack.MIN_MARGIN
        agree += predicted == (not toppled(e))
        standing += predicted
    print(f"stack: centre-of-mass criterion agrees on {agree}/{n} towers ({standing} predicted to stand)")
    assert agree / n >= 0.95
    assert 0 < standing < n  # both outcomes occur


def test_stack_given_offsets_follow_the_criterion():
    size = 0.08
    cases = [
        ([0.0, 0.015, 0.015, 0.015], True),  # a staircase whose top sits over the block below it
        ([0.0, 0.0, 0.05], False),  # the top block overhangs by more than half
        ([0.035, 0.035, 0.0], False),  # each step is fine, but the top two's centre of mass is past block 0
        ([-0.03, 0.0, 0.0], True),
    ]
    for offsets, expected in cases:
        assert stack.stands(offsets, size) == expected, offsets
        e = sim.simulate("stack", {"num_blocks": len(offsets), "size": size, "offsets": offsets}, seconds=1.5,
                         fps=10, render=False)
        assert toppled(e) != expected, offsets


def test_stack_draws_about_half_standing_towers():
    rng = np.random.default_rng(0)
    fams = [stack.FAMILY.realize(None, rng, split) for split in ("train", "ood") for _ in range(200)]
    rate = np.mean([stack.stands(p["offsets"], p["size"]) for p in fams])
    assert 0.4 <= rate <= 0.6


def test_stack_rejects_impossible_offsets():
    with pytest.raises(sim.ParamError, match=r"'offsets'.*0\.09.*size"):
        sim.simulate("stack", {"num_blocks": 2, "size": 0.08, "offsets": [0.0, 0.09]}, render=False)
    with pytest.raises(sim.ParamError, match=r"'offsets'.*exactly 3"):
        sim.simulate("stack", {"num_blocks": 3, "offsets": [0.0, 0.01]}, render=False)
    with pytest.raises(sim.ParamError, match=r"'size'"):
        sim.simulate("stack", {"size": -0.1}, render=False)


# ---------------------------------------------------------------- table_fall


def landing(episode: sim.Episode) -> tuple[float, float]:
    """(landing distance, horizontal flight speed) of the cup's centre of mass, from a fit of its free
    flight: frames after it cleared the edge and before it touched the floor."""
    pos, t = episode.positions[:, 0], episode.times
    first_floor = min(ev.time for ev in episode.events if "floor" in (ev.body_a, ev.body_b))
    flying = (pos[:, 0] > table_fall.CUP_RADIUS + 0.02) & (t < first_floor - 1e-9)
    assert flying.sum() >= 5
    tt, x, z = t[flying], pos[flying, 0], pos[flying, 2]
    vx, x0 = np.polyfit(tt, x, 1)
    vz, z0 = np.polyfit(tt, z + G / 2 * tt**2, 1)  # z = z0 + vz t - g t^2 / 2 in flight
    z_end = pos[0, 2] - episode.params["table_height"]
    t_land = max(np.roots([-G / 2, vz, z0 - z_end]).real)
    return float(x0 + vx * t_land), float(vx)


@pytest.mark.parametrize("seed,split", [(0, "train"), (1, "train"), (3, "train"), (2, "ood"), (4, "ood")])
def test_table_fall_lands_where_the_closed_form_says(seed, split):
    e = sim.simulate("table_fall", seed=seed, split=split, fps=50, render=False)
    p = e.params
    distance, vx = landing(e)
    expected = table_fall.landing_distance(p["speed"], p["table_height"])
    print(f"table_fall {split} seed {seed}: landed {distance:.3f} m, closed form {expected:.3f} m, "
          f"flight speed {vx:.3f} vs {p['speed']:.3f} m/s")
    assert distance == pytest.approx(expected, abs=0.03)
    assert vx == pytest.approx(p["speed"], rel=0.07)
    assert e.positions[-1, 0, 2] < 0.1  # on the floor at the end


def test_table_fall_rejects_friction_that_tips_the_cup():
    with pytest.raises(sim.ParamError, match=r"'friction'.*0\.9"):
        sim.simulate("table_fall", {"friction": 0.9}, render=False)
    with pytest.raises(sim.ParamError, match=r"'table_height'"):
        sim.simulate("table_fall", {"table_height": 0.0}, render=False)


# ---------------------------------------------------------------- gears


@pytest.mark.parametrize("seed,split", [(0, "train"), (1, "train"), (3, "ood")])
def test_gears_turn_at_their_ratio(seed, split):
    e = sim.simulate("gears", seed=seed, split=split, render=False)
    p = e.params
    omega = e.states[:, :, 11]  # (T, n_gears) angular velocity about y
    spinning = e.times > RAMP_TIME + 0.2
    measured = omega[spinning] / omega[spinning][:, :1]
    err = np.abs(measured / np.array(speed_ratios(p)) - 1).max()
    print(f"gears {split} seed {seed}: ratio {p['ratio']:.3f}, {p['num_gears']} gears, max relative error {err:.2e}")
    assert err < 1e-3
    assert omega[-1, 0] == pytest.approx(p["driver_speed"], rel=0.02)
    # the recorded actions are the driver's commanded speed: no external force, then the ramp
    assert e.actions.shape == (len(e), 4)
    assert np.all(e.actions[:, :3] == 0)
    assert e.actions[-1, 3] == pytest.approx(p["driver_speed"], rel=1e-6)
    assert e.actions[0, 3] == 0


def test_gears_with_zero_control_stay_still():
    e = sim.simulate("gears", seed=0, render=False)
    still = sim.simulate("gears", seed=0, render=False, actions=np.zeros_like(e.actions))
    assert np.abs(still.states[:, :, 10:13]).max() < 1e-6


# ---------------------------------------------------------------- pour


def test_pour_keeps_every_bead_and_fills_the_container():
    e = sim.simulate("pour", seed=0, render=False)
    p = e.params
    beads = e.positions[:, 1:]  # (T, n, 3)
    assert beads.shape[1] == p["num_particles"] == len(e.body_names) - 1
    assert np.isfinite(e.states).all()
    assert beads[..., 2].min() > -0.002  # nothing falls through the floor
    assert np.abs(beads[..., :2]).max() < 1.0  # nothing flies off
    inside = pour.in_container(beads[-1])
    print(f"pour: {inside.sum()}/{len(inside)} beads in the container")
    assert inside.mean() >= 0.8
    assert pour.in_container(beads[0]).sum() == 0  # they started in the cup
    tilt = e.actions[:, 3]
    assert tilt[-1] == pytest.approx(math.radians(p["tilt_deg"]), rel=1e-6)


def test_pour_rejects_more_beads_than_the_cup_holds():
    with pytest.raises(sim.ParamError, match=r"'num_particles'.*120"):
        sim.simulate("pour", {"num_particles": 120, "particle_size": 0.03}, render=False)
    with pytest.raises(sim.ParamError, match=r"'particle_mass'"):
        sim.simulate("pour", {"particle_mass": 0}, render=False)


# ---------------------------------------------------------------- push


@pytest.mark.parametrize("seed,split", [(0, "train"), (1, "train"), (2, "train"), (4, "ood")])
def test_push_moves_the_cube_along_the_push(seed, split):
    e = sim.simulate("push", seed=seed, split=split, render=False)
    p = e.params
    moved = e.positions[-1, 1, :2] - e.positions[0, 1, :2]
    u = push.direction(p)
    distance = float(np.linalg.norm(moved))
    expected = p["push_distance"] + p["push_speed"] ** 2 / (2 * p["friction"] * G)
    angle = math.degrees(math.acos(min(1.0, moved @ u / distance)))
    print(f"push {split} seed {seed}: moved {distance:.3f} m, {angle:.1f} deg off the push; expected {expected:.3f} m")
    assert angle < 5
    assert distance == pytest.approx(expected, abs=0.03)
    # the actions are the pusher's commanded velocity
    assert e.actions.shape == (len(e), 5)
    assert np.allclose(e.actions[:, 3:].max(axis=0) / p["push_speed"], np.maximum(u, 0), atol=1e-6)


def test_push_with_zero_action_moves_nothing():
    e = sim.simulate("push", seed=3, split="ood", render=False)
    still = sim.simulate("push", seed=3, split="ood", render=False, actions=np.zeros_like(e.actions))
    assert np.abs(still.positions - still.positions[0]).max() < 1e-3
    assert np.abs(e.positions[-1, 1] - e.positions[0, 1]).max() > 0.1  # while the scripted push does move it


# ---------------------------------------------------------------- all five


@pytest.mark.parametrize("scene", ["stack", "table_fall", "gears", "pour", "push"])
def test_caption_states_what_cannot_be_seen(scene):
    p = sim.realize_params(scene, None, seed=0)
    caption = sim.get_family(scene).caption(p)
    hidden = {"stack": ["kg", "friction"], "table_fall": ["kg", "friction", "m/s"], "gears": ["rad/s"],
              "pour": ["g each", "friction"], "push": ["kg", "friction", "m/s"]}[scene]
    for word in hidden:
        assert word in caption, (word, caption)


@pytest.mark.parametrize("scene", ["stack", "table_fall", "gears", "pour", "push"])
def test_ood_ranges_are_disjoint_from_train(scene):
    for param in sim.get_family(scene).params.params:
        if param.kind != "float" or param.ood is None:
            continue
        ood = param.ood if isinstance(param.ood, list) else [param.ood]
        lo, hi = param.train
        for a, b in ood:
            assert b < lo or a > hi, (scene, param.name)
