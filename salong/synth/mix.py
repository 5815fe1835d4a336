"""Rendering: each track of a composed piece synthesised, levelled, panned and mixed, with
a reverb send, a fade-out and peak normalisation."""

from __future__ import annotations

import math

import numpy as np

from salong.synth.attributes import PEAK_DBFS, SAMPLE_RATE, PieceAttributes, _check_seed, _RENDER_STREAM
from salong.synth.compose import _compose, _Hit, _Note
from salong.synth.dsp import _convolve, _reverb_ir
from salong.synth.instruments import (_BASS_VOICE, _CHORD_VOICES, _DRUM_PAN, _LEAD_VOICES, _drum_kit, _hz,
                                      _Voice)


def _pan(position: float) -> np.ndarray:
    """Equal-power (left, right) gains for a position in [-1, 1]."""
    angle = (position + 1) * np.pi / 4
    return np.array([[math.cos(angle)], [math.sin(angle)]], np.float32)


def _render_notes(notes: list[_Note], voice: _Voice, n_total: int, channels: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Each pitch is synthesised once at the longest length it is needed, then reused."""
    out = np.zeros((channels, n_total), np.float32)
    release = round(voice.release * SAMPLE_RATE)
    placed, need = [], {}
    for note in notes:
        start = round(note.start * SAMPLE_RATE)
        if start >= n_total:
            continue
        hold = round(note.hold * SAMPLE_RATE)
        length = min(hold + release, n_total - start)
        placed.append((start, hold, length, note.midi, note.vel))
        need[note.midi] = max(need.get(note.midi, 0), length)
    tones = {m: np.atleast_2d(voice.tone(_hz(m), need[m], rng)).astype(np.float32) for m in sorted(need)}
    fade = np.linspace(1, 0, release + 1, dtype=np.float32)[1:]
    for start, hold, length, midi, vel in placed:
        seg = tones[midi][:, :length] * np.float32(vel)
        seg[:, hold:] *= fade[:max(length - hold, 0)]
        out[:, start:start + length] += seg
    return out


def _render_drums(hits: list[_Hit], n_total: int, rng: np.random.Generator) -> np.ndarray:
    kit = {k: _pan(_DRUM_PAN[k]) * v for k, v in _drum_kit(rng).items()}  # (2, len) each
    out = np.zeros((2, n_total), np.float32)
    for hit in hits:
        start = round(hit.start * SAMPLE_RATE)
        if start < n_total:
            sample = kit[hit.drum][:, :n_total - start]
            out[:, start:start + sample.shape[1]] += np.float32(hit.vel) * sample
    return out


def _active_rms(x: np.ndarray) -> float:
    """RMS over the samples where the track plays (so sparse tracks are not boosted).

    Silent samples add no energy, so the total energy over the active count is enough;
    the count is estimated on every 8th sample.
    """
    mono = np.abs(x[:, ::8]).max(axis=0)
    active = 8 * np.count_nonzero(mono > 1e-3 * mono.max())
    flat = x.reshape(-1)
    return math.sqrt(float(np.dot(flat, flat)) / (x.shape[0] * max(active, 1)))


# Track levels (RMS while playing) before the final peak normalisation.
_LEVELS = {"lead": 0.1, "chords": 0.08, "bass": 0.09, "drums": 0.1}


def render(attrs: PieceAttributes, seed: int) -> np.ndarray:
    """Compose and synthesise a piece: (2, attrs.n_samples) float32 at SAMPLE_RATE."""
    _check_seed(seed)
    rng = np.random.default_rng([seed, _RENDER_STREAM])
    score = _compose(attrs, rng)
    n = attrs.n_samples
    mix = np.zeros((2, n), np.float32)
    send = np.zeros(n, np.float32)
    lead_pan = rng.uniform(-0.3, 0.3)

    def add(name: str, track: np.ndarray, gains: np.ndarray, reverb: float) -> None:
        """Mix one track ((1 or 2, n)) in at its level, panned by gains ((2, 1)), with a reverb send."""
        rms = _active_rms(track)
        if rms == 0:
            return
        track *= np.float32(_LEVELS[name] / rms)
        for channel in range(2):
            mix[channel] += gains[channel, 0] * track[min(channel, len(track) - 1)]
        if reverb:
            send[:] += np.float32(reverb / len(track)) * track.sum(axis=0)

    # one track at a time, so a 285 s piece never holds more than one in memory
    add("lead", _render_notes(score.lead, _LEAD_VOICES[attrs.lead], n, 1, rng), _pan(lead_pan), 0.3)
    if score.chords:
        chords = _render_notes(score.chords, _CHORD_VOICES[attrs.chords], n, 2, rng)
        add("chords", chords, _pan(-lead_pan / 2) * math.sqrt(2), 0.5)  # unity gain at centre
        del chords
    if score.bass:
        add("bass", _render_notes(score.bass, _BASS_VOICE, n, 1, rng), _pan(0.0), 0.0)
    if score.drums:
        drums = _render_drums(score.drums, n, rng)
        if attrs.loudness == "loud":  # a little bus saturation for punch
            drums = np.tanh(1.5 * drums / np.abs(drums).max()).astype(np.float32)
        add("drums", drums, np.ones((2, 1), np.float32), 0.1)
        del drums
    for channel, ir in enumerate(_reverb_ir(rng)):
        mix[channel] += _convolve(send, ir)

    fade = min(round(1.5 * SAMPLE_RATE), n // 4)
    if fade > 0:
        mix[:, n - fade:] *= np.cos(np.linspace(0, np.pi / 2, fade, dtype=np.float32)) ** 2
    peak = float(np.abs(mix).max())
    if peak > 0:
        mix *= np.float32(10 ** (PEAK_DBFS[attrs.loudness] / 20) / peak)
    return mix.astype(np.float32, copy=False)
