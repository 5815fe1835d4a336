"""The instruments: small vectorised tone generators (additive, FM, Karplus-Strong,
subtractive), one `_Voice` per lead, chord and bass sound, and the synthesised drum kit."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from salong.synth.attributes import SAMPLE_RATE
from salong.synth.dsp import _bandpass, _highpass, _lowpass, _time


def _hz(midi: int) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _vibrato_phase(freq: float, n: int, rate: float, depth: float, delay: float) -> np.ndarray:
    """Phase in cycles of a tone whose vibrato fades in over `delay` seconds."""
    t = _time(n)
    inst = freq * (1 + depth * np.sin(2 * np.pi * rate * t) * np.minimum(t / delay, 1.0))
    return np.cumsum(inst) / SAMPLE_RATE


def _saw(phase: np.ndarray, dt: float) -> np.ndarray:
    """Band-limited sawtooth from a phase in cycles (PolyBLEP, Valimaki & Huovilainen 2007)."""
    p = phase % 1.0
    y = 2 * p - 1
    lo = p < dt
    x = p[lo] / dt
    y[lo] -= 2 * x - x * x - 1
    hi = p > 1 - dt
    x = (p[hi] - 1) / dt
    y[hi] -= x * x + 2 * x + 1
    return y


def _attack(n: int, seconds: float) -> np.ndarray:
    return np.minimum(_time(n) / seconds, 1.0)


def _piano(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Additive piano: stretched partials (inharmonicity) that decay faster the higher they are."""
    t = _time(n)
    y = np.zeros(n)
    decay = 2.5 * (261.6 / freq) ** 0.5
    for k in range(1, 9):
        fk = k * freq * math.sqrt(1 + 4e-4 * k * k)
        if fk > 10000:
            break
        y += np.sin(2 * np.pi * fk * t + rng.uniform(0, 2 * np.pi)) * np.exp(-t * (1 + 0.7 * (k - 1)) / decay) / k
    return y * (0.5 + 0.5 * np.exp(-t / 0.12)) * _attack(n, 0.002)  # prompt sound, then aftersound


def _electric_piano(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Two-operator FM (Chowning 1973) with a decaying index, plus a short tine partial."""
    t = _time(n)
    w = 2 * np.pi * freq * t
    y = np.sin(w + (0.3 + 1.7 * np.exp(-t / 0.2)) * np.sin(w)) * np.exp(-t / 1.8)
    if 14 * freq < 16000:
        y += 0.2 * np.sin(14 * w) * np.exp(-t / 0.015)
    return y * _attack(n, 0.001)


_DRAWBARS = ((0.5, 0.4), (1, 1.0), (2, 0.6), (3, 0.2), (4, 0.3), (8, 0.15))  # (ratio, level)


def _drawbars(freq: float, n: int) -> np.ndarray:
    t = _time(n)
    y = sum(a * np.sin(2 * np.pi * r * freq * t) for r, a in _DRAWBARS if r * freq < 12000)
    return y * _attack(n, 0.008) / 2


def _leslie(n: int, phase: float) -> np.ndarray:
    return 1 + 0.15 * np.sin(2 * np.pi * 6.2 * _time(n) + phase)


def _organ(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Additive drawbar organ with a rotary-speaker tremolo."""
    return _drawbars(freq, n) * _leslie(n, 0.0)


def _organ_chords(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Stereo organ: the rotary speaker's tremolo in opposite phase on the two sides."""
    return _drawbars(freq, n) * np.stack([_leslie(n, 0.0), _leslie(n, np.pi)])


def _plucked_guitar(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Karplus-Strong string (Karplus & Strong 1983), one delay-line period per numpy step.

    The integer delay line is tuned flat and the result read back faster, so pitch
    is exact without a fractional-delay filter.
    """
    period = math.ceil(SAMPLE_RATE / freq)
    f_string = SAMPLE_RATE / (period + 0.5)  # the two-point average adds half a sample
    rate = freq / f_string  # >= 1
    m = int(n * rate) + 2
    t60 = 2.5 * (196.0 / freq) ** 0.5
    rho = 10 ** (-3 / (f_string * t60))
    blocks = math.ceil(m / period)
    y = np.zeros((blocks + 1) * period + 1)  # y[0] is a zero before the string starts
    y[1:period + 1] = _lowpass(rng.uniform(-1, 1, period), 4000)
    for k in range(1, blocks + 1):
        prev = y[(k - 1) * period: k * period + 1]  # previous period plus the sample before it
        y[k * period + 1:(k + 1) * period + 1] = 0.5 * rho * (prev[1:] + prev[:-1])
    y = y[1:m + 1]
    out = np.interp(np.arange(n) * rate, np.arange(m), y)
    return (out - out.mean()) * _attack(n, 0.001)


def _bells(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """FM bell: modulator at 3.5x the carrier gives inharmonic partials (Chowning 1973)."""
    t = _time(n)
    index = 0.3 + 1.5 * np.exp(-t / 0.3)  # bright strike, then a nearly pure hum
    y = np.sin(2 * np.pi * freq * t + index * np.sin(2 * np.pi * 3.5 * freq * t))
    return y * np.exp(-t / 1.6) * _attack(n, 0.001)


def _string_section(freq: float, n: int, rng: np.random.Generator, cents: tuple[float, ...],
                    attack: float) -> np.ndarray:
    dt = freq / SAMPLE_RATE
    y = sum(_saw(_vibrato_phase(freq * 2 ** (c / 1200), n, 5.2 + 0.3 * i, 0.004, 0.3)
                 + rng.random(), dt) for i, c in enumerate(cents))
    return _lowpass(y, min(8 * freq, 5000)) * _attack(n, attack) / len(cents)


def _strings(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Subtractive ensemble: detuned band-limited saws with vibrato, low-passed."""
    return _string_section(freq, n, rng, (-9.0, 0.0, 8.0), 0.12)


def _string_chords(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Stereo strings: different players (detunings) on each side give width."""
    return np.stack([_string_section(freq, n, rng, c, 0.25) for c in ((-10.0, 4.0), (-3.0, 11.0))])


def _flute(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Near-sine tone with vibrato and band-passed breath noise."""
    phase = 2 * np.pi * _vibrato_phase(freq, n, 5.0, 0.006, 0.25)
    y = np.sin(phase) + 0.2 * np.sin(2 * phase) + 0.08 * np.sin(3 * phase)
    breath = _bandpass(rng.standard_normal(n), 0.7 * freq, min(1.4 * freq, 20000)) * 0.5
    return (y + breath) * _attack(n, 0.06)


def _brass(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Additive brass: upper harmonics grow with loudness during the attack (Risset 1969)."""
    t = _time(n)
    env = np.minimum(t / 0.05, 1.0) * (0.85 + 0.15 * np.exp(-np.maximum(t - 0.05, 0) / 0.1))
    phase = 2 * np.pi * freq * (t - 0.03 * 0.04 * (1 - np.exp(-t / 0.04)))  # pitch scoop up
    y = np.zeros(n)
    for k in range(1, 13):
        if k * freq > 10000:
            break
        y += np.sin(k * phase) * env ** (1 + 0.4 * (k - 1)) / k
    return y


def _synth_lead(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Subtractive lead: two detuned saws and a square sub-octave through a low-pass."""
    dt = freq / SAMPLE_RATE
    phase = _vibrato_phase(freq, n, 5.5, 0.005, 0.4)
    y = _saw(phase * 2 ** (6 / 1200), dt) + _saw(phase * 2 ** (-6 / 1200) + 0.3, dt)
    y += 0.5 * np.sign(np.sin(np.pi * phase))
    return _lowpass(y, 3000) * _attack(n, 0.005) / 2.5


def _pad(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Stereo subtractive pad: three detuned saws per side, dark low-pass, slow attack."""
    dt = freq / SAMPLE_RATE
    t = _time(n)
    sides = []
    for cents in ((-11.0, 3.0, 9.0), (-5.0, 12.0, -2.0)):
        y = sum(_saw(freq * 2 ** (c / 1200) * t + rng.random(), dt) for c in cents)
        sides.append(_lowpass(y, 1400))
    return np.stack(sides) * _attack(n, 0.35) / 3


def _bass(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Saw plus sine through a low-pass, with a plucked decay to a sustain level."""
    t = _time(n)
    phase = freq * t
    y = 0.6 * _saw(phase, freq / SAMPLE_RATE) + np.sin(2 * np.pi * phase)
    return _lowpass(y, 800) * (0.6 + 0.4 * np.exp(-t / 0.2)) * _attack(n, 0.003)


class _Voice(NamedTuple):
    tone: Callable[[float, int, np.random.Generator], np.ndarray]  # -> (n,) or (2, n)
    release: float  # s of fade after the note's hold


_LEAD_VOICES = {
    "piano": _Voice(_piano, 0.15), "electric piano": _Voice(_electric_piano, 0.15),
    "organ": _Voice(_organ, 0.05), "plucked guitar": _Voice(_plucked_guitar, 0.1),
    "bells": _Voice(_bells, 0.6), "strings": _Voice(_strings, 0.25),
    "flute": _Voice(_flute, 0.08), "brass": _Voice(_brass, 0.08),
    "synth lead": _Voice(_synth_lead, 0.06),
}
_CHORD_VOICES = {"pad": _Voice(_pad, 0.8), "strings": _Voice(_string_chords, 0.5),
                 "organ": _Voice(_organ_chords, 0.06)}
_BASS_VOICE = _Voice(_bass, 0.05)


def _drum_kit(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Synthesised drum one-shots (808-style), each peak-normalised."""
    def noise(seconds: float) -> np.ndarray:
        return rng.uniform(-1, 1, int(seconds * SAMPLE_RATE))

    t = _time(int(0.45 * SAMPLE_RATE))
    sweep = 2 * np.pi * np.cumsum(48 + 110 * np.exp(-t / 0.04)) / SAMPLE_RATE  # falling pitch
    click = _lowpass(noise(0.45), 3000) * np.exp(-t / 0.004)
    kick = np.tanh(1.5 * (np.sin(sweep) * np.exp(-t / 0.25) + 0.4 * click))

    t = _time(int(0.3 * SAMPLE_RATE))
    body = (np.sin(2 * np.pi * 185 * t) + 0.5 * np.sin(2 * np.pi * 330 * t)) * np.exp(-t / 0.05)
    snare = 0.6 * body + _highpass(noise(0.3), 1800) * np.exp(-t / 0.11)

    def hat(seconds: float, decay: float) -> np.ndarray:
        t = _time(int(seconds * SAMPLE_RATE))
        metal = sum(np.sign(np.sin(2 * np.pi * f * t)) for f in (205.3, 304.4, 369.6, 522.7, 540.0, 800.0))
        return _highpass(0.3 * metal + noise(seconds), 7000) * np.exp(-t / decay)

    t = _time(int(2.2 * SAMPLE_RATE))
    crash = _highpass(noise(2.2), 3500) * np.exp(-t / 0.8)
    kit = {"kick": kick, "snare": snare, "ghost": snare, "closed_hat": hat(0.12, 0.02),
           "open_hat": hat(0.5, 0.15), "crash": crash}
    return {k: (v / np.abs(v).max()).astype(np.float32) for k, v in kit.items()}


_DRUM_PAN = {"kick": 0.0, "snare": 0.08, "ghost": 0.08, "closed_hat": 0.35, "open_hat": 0.35,
             "crash": -0.4}
