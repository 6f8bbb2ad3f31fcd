"""The MuJoCo oracle: a query's scene simulated finely for its answer, and at the model's frame rate
(rendered) for the context frames, the video and the trajectory comparison."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

import sim
from sim import contact
from verifier.answer import Answer, read_answer
from verifier.query import PhysicalQuery, closed_form_hint

ANSWER_FPS = 500  # states recorded every 2 ms (the simulator steps at 1 ms either way)
MODEL_FPS = 20
SECONDS_MARGIN = 1.1
PHASES = 8  # bounce heights: drops averaged over the phase of the impact within a simulator step
STEP = contact.TIMESTEP  # s, the simulator's step


def seconds_for(query: PhysicalQuery, fps: float = MODEL_FPS) -> float:
    """Episode length (s) that shows the answer, a whole number of frames at `fps`."""
    seconds = closed_form_hint(query) * SECONDS_MARGIN
    return math.ceil(seconds * fps) / fps


def simulate_answer(query: PhysicalQuery, seed: int = 0) -> tuple[Answer, sim.Episode]:
    """(the simulator's answer, the fine episode it was read from; states only).

    A bounce's restitution scatters by up to +-0.04 with where in a 1 ms simulator step the contact
    begins (sim/contact.py; the calibration is exact on average), so bounce heights are averaged
    over PHASES drops whose release heights differ by a fraction of a step's fall, each scaled back
    to the asked height.
    """
    episode = simulate_fine(query, query.params, seed)
    answer = read_answer(query, episode)
    if query.question == "bounce_height":
        ratios = []
        for k in range(PHASES):
            height = query.params["height"] + k / PHASES * impact_speed(query) * STEP
            shifted = replace(query, params={**query.params, "height": height})
            ratios.append(read_answer(shifted, simulate_fine(shifted, shifted.params, seed)).value / height)
        answer = Answer(float(np.mean(ratios) * query.params["height"]), answer.unit)
    return answer, episode


def simulate_fine(query: PhysicalQuery, params: dict, seed: int) -> sim.Episode:
    return sim.simulate(query.scene, params, seed=seed, seconds=seconds_for(query), fps=ANSWER_FPS, render=False)


def impact_speed(query: PhysicalQuery) -> float:
    """m/s at the first impact (closed form, only to space the phase-averaged drops)."""
    p = query.params
    vz = p.get("speed", 0.0) * math.sin(math.radians(p.get("angle_deg", 0.0)))
    return math.sqrt(vz * vz + 2 * 9.81 * p["height"])


def simulate_video(query: PhysicalQuery, seed: int = 0, size: int = 64, seconds: float | None = None) -> sim.Episode:
    """The scene at the model's frame rate, rendered (size x size): context frames and the reference video."""
    return sim.simulate(query.scene, query.params, seed=seed, seconds=seconds or seconds_for(query), fps=MODEL_FPS,
                        width=size, height=size)
