"""Impact audio synthesised from contact events: each impact is a decaying tone whose loudness
grows with the impulse, whose pitch falls with the object's size and whose ring lasts longer for
bouncier (harder) materials."""

from __future__ import annotations

import numpy as np

from sim.episode import ContactEvent

AUDIO_RATE = 16000  # Hz
REFERENCE_IMPULSE = 1.0  # N*s giving a loudness of tanh(1) ~ 0.76


def impact_sound(
    events: list[ContactEvent],
    duration: float,
    sounds: dict[str, tuple[float, float]],
    rate: int = AUDIO_RATE,
) -> np.ndarray:
    """(round(duration * rate),) float32 mono waveform in [-1, 1].

    sounds: body name -> (characteristic size m, restitution) of the bodies that ring.
    """
    n = int(round(duration * rate))
    wave = np.zeros(n, np.float64)
    rings: dict[tuple[float, float], np.ndarray] = {}  # (frequency, decay) -> the body's full ring
    for event in events:
        size, restitution = sounds.get(event.body_a) or sounds.get(event.body_b) or (0.1, 0.5)
        amplitude = np.tanh(event.impulse / REFERENCE_IMPULSE)
        if amplitude < 1e-3:
            continue
        frequency = float(np.clip(85.0 / max(size, 1e-3), 120.0, 4000.0))  # Hz; 10 cm -> 850 Hz
        decay = 0.01 + 0.12 * restitution  # s, time constant of the ring
        start = int(round(event.time * rate))
        length = min(n - start, int(6 * decay * rate))
        if length <= 0:
            continue
        ring = rings.get((frequency, decay))
        if ring is None:  # computed once per body, in float32 (8x faster than float64, ample for audio)
            t = np.arange(int(6 * decay * rate), dtype=np.float32) / np.float32(rate)  # s
            phase = np.float32(2 * np.pi * frequency) * t  # rad
            ring = rings[frequency, decay] = np.exp(-t / np.float32(decay)) * (np.sin(phase) + np.float32(0.3) * np.sin(np.float32(2.76) * phase)) / np.float32(1.3)
        wave[start : start + length] += amplitude * ring[:length]
    return np.clip(wave, -1.0, 1.0).astype(np.float32)
