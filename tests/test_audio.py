"""Impact audio against what it promises: the pitch set by size, loudness by impulse, ring by restitution."""

import numpy as np
import pytest

from sim.audio import AUDIO_RATE, impact_sound
from sim.episode import ContactEvent


def impact(impulse: float = 1.0, time: float = 0.1) -> list[ContactEvent]:
    return [ContactEvent(time, "ball", "floor", impulse, (0.0, 0.0, 0.0))]


@pytest.mark.parametrize("size", [0.05, 0.1, 0.2])
def test_pitch_is_85_hz_metres_over_size(size):
    wave = impact_sound(impact(), 0.5, {"ball": (size, 0.5)})
    start = round(0.1 * AUDIO_RATE)
    spectrum = np.abs(np.fft.rfft(wave[start : start + 4096]))
    peak_hz = np.argmax(spectrum) * AUDIO_RATE / 4096
    assert peak_hz == pytest.approx(85.0 / size, abs=AUDIO_RATE / 4096)


def test_silent_before_the_impact_and_louder_with_the_impulse():
    soft, hard = (impact_sound(impact(i), 0.5, {"ball": (0.1, 0.5)}) for i in (0.2, 2.0))
    start = round(0.1 * AUDIO_RATE)
    assert not soft[:start].any() and not hard[:start].any()
    assert np.abs(hard).max() / np.abs(soft).max() == pytest.approx(np.tanh(2.0) / np.tanh(0.2), rel=0.02)


def test_bouncier_materials_ring_longer():
    def energy_after(restitution: float, seconds: float) -> float:
        wave = impact_sound(impact(), 1.0, {"ball": (0.1, restitution)})
        return float(np.sum(wave[round((0.1 + seconds) * AUDIO_RATE) :] ** 2))

    # the envelope decays with time constant 0.01 + 0.12 e seconds
    for restitution in (0.2, 0.8):
        decay = 0.01 + 0.12 * restitution
        ratio = energy_after(restitution, decay) / energy_after(restitution, 0.0)
        assert ratio == pytest.approx(np.exp(-2.0), rel=0.05)
    assert energy_after(0.8, 0.05) > energy_after(0.2, 0.05)
