"""Signal processing on whole numpy buffers: zero-phase FFT Butterworth filters,
overlap-add convolution and the stereo reverb's impulse responses."""

from __future__ import annotations

from typing import Callable

import numpy as np

from salong.synth.attributes import SAMPLE_RATE


def _time(n: int) -> np.ndarray:
    return np.arange(n) / SAMPLE_RATE


def _butterworth(f: np.ndarray, cutoff: float, order: int, highpass: bool = False) -> np.ndarray:
    """Magnitude response of a Butterworth filter, |H(f)| = 1 / sqrt(1 + (f/fc)^(2N)) (high-pass: fc/f)."""
    ratio = (f / cutoff) ** (2 * order)  # (F,)
    return np.sqrt(ratio / (1 + ratio)) if highpass else 1 / np.sqrt(1 + ratio)


def _fft_filter(x: np.ndarray, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Zero-phase filtering of whole buffers by a magnitude response, with numpy's FFT.

    Padding past the end keeps the filter's ringing from wrapping onto the start.
    """
    n = x.shape[-1]
    size = 1 << (n + 2048 - 1).bit_length()  # a power of two: fast, and room for the ringing
    spectrum = np.fft.rfft(x, size, axis=-1)  # (..., size/2 + 1)
    return np.fft.irfft(spectrum * gain(np.fft.rfftfreq(size, 1 / SAMPLE_RATE)), size, axis=-1)[..., :n]


def _lowpass(x: np.ndarray, cutoff: float, order: int = 2) -> np.ndarray:
    return _fft_filter(x, lambda f: _butterworth(f, min(cutoff, 0.45 * SAMPLE_RATE), order))


def _highpass(x: np.ndarray, cutoff: float) -> np.ndarray:
    return _fft_filter(x, lambda f: _butterworth(f, cutoff, 2, highpass=True))


def _bandpass(x: np.ndarray, low: float, high: float) -> np.ndarray:
    return _fft_filter(x, lambda f: _butterworth(f, low, 2, highpass=True) * _butterworth(f, high, 2))


def _convolve(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """`x` convolved with `ir`, cut to len(x): overlap-add FFT blocks, so memory follows the
    block, not the piece."""
    n, m = len(x), len(ir)
    size = 1 << (4 * m - 1).bit_length()
    step = size - m + 1
    response = np.fft.rfft(ir, size)
    out = np.zeros(n + m - 1)
    for start in range(0, n, step):
        block = x[start:start + step]
        filtered = np.fft.irfft(np.fft.rfft(block, size) * response, size)
        out[start:start + len(block) + m - 1] += filtered[:len(block) + m - 1]
    return out[:n]


def _reverb_ir(rng: np.random.Generator, seconds: float = 1.2) -> np.ndarray:
    """Impulse responses (2, samples) of a stereo convolution reverb: decaying noise,
    different on each side so the reverb widens what is sent to it."""
    t = _time(int(seconds * SAMPLE_RATE))
    ir = _lowpass(rng.standard_normal((2, t.size)), 5000) * np.exp(-6.9 * t / seconds)
    return (ir / np.sqrt((ir ** 2).sum(axis=1, keepdims=True))).astype(np.float32)
