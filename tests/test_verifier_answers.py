"""With the simulator as oracle, answers to questions phrased unlike the issue's examples agree with
closed-form physics. Tolerances: 2% where the simulator is exact; bounce heights 3% for restitution
>= 0.5 (one bounce's restitution scatters with the contact phase; the oracle averages 8 phases;
measured -0.8 to -2.3%); table_fall 3% (the cup tips over the edge; measured +0 to +2.7%)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import sim
from verifier import parse_query, simulate_answer
from verifier.answer import read_answer
from verifier.query import PhysicalQuery

G = 9.81


def projectile_range(v, angle_deg, h):
    a = math.radians(angle_deg)
    vx, vz = v * math.cos(a), v * math.sin(a)
    return vx * (vz + math.sqrt(vz * vz + 2 * G * h)) / G


def period(length, angle_deg):  # finite-amplitude series; the bob's size adds < 0.1% here
    a = math.radians(angle_deg)
    return 2 * math.pi * math.sqrt(length / G) * (1 + a * a / 16 + 11 * a**4 / 3072)


def collision(m1, m2, u1, u2, e):
    p = m1 * u1 + m2 * u2
    return [(p - m2 * e * (u1 - u2)) / (m1 + m2), (p + m1 * e * (u1 - u2)) / (m1 + m2)]


CASES = [
    ("How long does a ball released 1.7 m above the ground take to hit the ground?", math.sqrt(2 * 1.7 / G), 0.02),
    ("A pebble falls from a 2.5 m ledge. What is its height 0.35 seconds later?", 2.5 - G * 0.35**2 / 2, 0.02),
    ("A ball is let go from 90 cm. How fast is it moving after 0.3 s?", G * 0.3, 0.02),
    ("A bouncy ball (restitution 0.75) is dropped from 1.2 m. How high does it rebound?", 0.75**2 * 1.2, 0.03),
    ("A ball with a coefficient of restitution of 0.55 falls from 1.8 m. What is the bounce height?", 0.55**2 * 1.8, 0.03),
    ("A ball is tossed at 4.2 m/s at 35 degrees from 0.5 m high. How far away does it land?",
     projectile_range(4.2, 35, 0.5), 0.02),
    ("A marble rolls off a 1 m high shelf horizontally at 2 m/s. How far does it land?",
     projectile_range(2, 0, 1.0), 0.02),
    ("A ball is launched at 3 m/s, 70 degrees above horizontal. How long until it lands?",
     2 * 3 * math.sin(math.radians(70)) / G, 0.02),
    ("A block slides down a 35 degree slope with friction 0.3. What is its speed after 0.5 s?",
     G * (math.sin(math.radians(35)) - 0.3 * math.cos(math.radians(35))) * 0.5, 0.02),
    ("A sphere rolls down an incline of 20 degrees, friction 0.6. What is its speed after 0.7 s?",
     5 / 7 * G * math.sin(math.radians(20)) * 0.7, 0.02),
    ("What is the period of a 0.6 m long pendulum pulled back 25 degrees?", period(0.6, 25), 0.02),
    ("A 0.8 kg ball travelling at 1.2 m/s strikes a stationary 1.6 kg ball, restitution 0.7. "
     "What are the velocities after the collision?", collision(0.8, 1.6, 1.2, 0, 0.7), 0.02),
    ("Two 0.5 kg balls approach each other head-on at 1 m/s and 1.5 m/s in an elastic collision. What are the "
     "velocities after?", collision(0.5, 0.5, 1.0, -1.5, 1.0), 0.02),
    ("A cup slides off the edge of a 0.9 m table at 1.4 m/s. How far from the table does it land?",
     1.4 * math.sqrt(2 * 0.9 / G), 0.03),
    ("Two gears mesh; the second has twice as many teeth. The driver spins at 4 rad/s. How fast does the second gear "
     "spin?", -2.0, 0.02),
]


@pytest.mark.parametrize("text,expected,rel", CASES, ids=[c[0][:40] for c in CASES])
def test_simulator_answers_match_closed_forms(text, expected, rel):
    answer, _ = simulate_answer(parse_query(text))
    if isinstance(expected, list):
        assert answer.value == pytest.approx(expected, rel=rel, abs=0.02 * max(map(abs, expected)))
    else:
        assert answer.value == pytest.approx(expected, rel=rel)


@pytest.mark.parametrize("text,expected", [
    ("Will a tower of 5 blocks of 6 cm, each shifted 1 cm from the one below, stay standing?", True),
    ("Does a stack of 3 cubes of 10 cm with offsets of 4 cm fall over?", True),
    ("Does a ball launched at 5 m/s at 45 degrees land beyond 3 m?", False),
    ("Does a ball launched at 5 m/s at 45 degrees land beyond 2 m?", True),
])
def test_yes_no_answers_follow_the_closed_form(text, expected):
    answer, _ = simulate_answer(parse_query(text))
    assert answer.value is expected and answer.unit == ""


@pytest.mark.parametrize("seed", [0, 5])
def test_gear_speed_is_read_from_the_rim_marker_alone(seed):
    """A gear's angular speed comes from its rim marker's position and velocity (what a predicted
    episode has), and equals the simulator's own angular velocity of the gear."""
    episode = sim.simulate("gears", seed=seed, render=False)
    last = episode.times >= episode.times[-1] - 0.2
    for body in range(episode.params["num_gears"]):
        query = PhysicalQuery(scene="gears", params=episode.params, question="angular_speed", body=body, text="")
        answer = read_answer(query, episode)
        assert answer.unit == "rad/s"
        assert answer.value == pytest.approx(float(np.mean(episode.states[last, body, 11])), rel=1e-3)


def test_tolerance_miss_measures_distance_in_tolerances_and_agrees_within_one():
    from verifier.answer import Answer, agree, tolerance_miss

    truth = Answer([1.0, -0.1], "m")  # tolerances: 5% of 1 m = 0.05 m; 0.02 m (the floor) for 0.1 m
    for guess, miss in (([1.0, -0.1], 0.0), ([1.04, -0.11], 0.8), ([1.0, -0.125], 1.25), ([1.0, -0.14], 2.0), ([0.9, -0.13], 2.0), ([1.2, -0.1], 4.0)):
        assert tolerance_miss(Answer(guess, "m"), truth, 0.05, 0.02) == pytest.approx(miss)
        assert agree(Answer(guess, "m"), truth, 0.05, 0.02) == (miss <= 1.0)
    assert tolerance_miss(Answer([float("nan"), 0.0], "m"), truth, 0.05, 0.02) == float("inf")
    assert tolerance_miss(Answer(0.0, "m"), Answer(0.0, "m"), 0.05, 0.0) == 0.0  # no tolerance: exact only
    assert tolerance_miss(Answer(1e-9, "m"), Answer(0.0, "m"), 0.05, 0.0) == float("inf")
    assert tolerance_miss(Answer(True, ""), Answer(True, ""), 0.05, 0.0) == 0.0
    assert tolerance_miss(Answer(False, ""), Answer(True, ""), 0.05, 0.0) == float("inf")


def test_a_collision_between_frames_is_read_as_one():
    """At 8 fps the balls' hit (t = 0.4 s) falls between frames 3 and 4, and no frame shows them
    touching: the reader still finds it, by moving the balls on at a frame's velocities to the
    next. Balls on straight lines passing 1.2 sizes apart never touch; 0.8 sizes apart they do,
    though no frame catches them within reach."""
    coarse = sim.simulate("collision", {"num_balls": 2}, seed=1, fps=8, seconds=1.0, render=False)
    size = coarse.params["size"]
    frame_gaps = np.linalg.norm(coarse.positions[:, 0] - coarse.positions[:, 1], axis=-1) - size
    assert frame_gaps.min() > 0.01  # m: no frame within a centimetre of the hit
    query = PhysicalQuery(scene="collision", params=coarse.params, question="collides", text="")
    assert read_answer(query, coarse).value is True
    t = coarse.times - coarse.times[0]
    for offset, touches in ((1.2, False), (0.8, True)):
        states = np.zeros_like(coarse.states)
        states[:, :, 3] = 1.0
        states[:, 0, 0], states[:, 0, 7] = -1.0 + 2.0 * t, 2.0  # ball 0 along +x at 2 m/s
        states[:, 1, 0], states[:, 1, 7] = 1.0 - 2.0 * t, -2.0  # ball 1 along -x, offset sideways
        states[:, 1, 1] = offset * size
        passing = dataclasses.replace(coarse, states=states)
        assert read_answer(query, passing).value is touches
