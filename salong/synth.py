"""Seeded procedural music with exact captions: the project's test and training data.

A piece is a small arrangement (lead melody, chords, bass line, drums) in a key, at a
tempo, in a meter and, from 40 s on, in an intro-A-B-A'-outro form. Attributes are
drawn from a seed, the music is composed from them (diatonic triad progressions, a
phrase-structured melody on chord tones, bass and drum patterns on one beat grid) and
synthesised with small vectorised instruments (additive, FM, Karplus-Strong,
subtractive). The caption is written from the same attributes, so every fact it
states (tempo as "N BPM", key as "in X major/minor", instruments, drums, mood) is true
of the audio by construction.
"""

from __future__ import annotations

import contextlib

import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from salong.errors import SalongError

SAMPLE_RATE = 44100
MAX_SECONDS = 285.0
LONG_FORM_SECONDS = 40.0  # from this length on a piece has intro, A, B, A', outro
MIN_BPM, MAX_BPM = 60, 180

LEADS = ("piano", "electric piano", "organ", "plucked guitar", "bells", "strings",
         "flute", "brass", "synth lead")
CHORD_SOUNDS = ("pad", "strings", "organ")
DRUM_STYLES = ("none", "four-on-the-floor", "backbeat", "shuffle", "breakbeat")
TONICS = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor")
METERS = ("4/4", "3/4")
LOUDNESS = ("soft", "loud")
PEAK_DBFS = {"soft": -12.0, "loud": -1.0}

# Tempo bands and their moods: mood is a function of mode, tempo and loudness only.
_MOODS = {
    ("major", "slow", "soft"): "peaceful", ("major", "slow", "loud"): "uplifting",
    ("major", "medium", "soft"): "warm", ("major", "medium", "loud"): "happy",
    ("major", "fast", "soft"): "playful", ("major", "fast", "loud"): "energetic",
    ("minor", "slow", "soft"): "melancholic", ("minor", "slow", "loud"): "dramatic",
    ("minor", "medium", "soft"): "wistful", ("minor", "medium", "loud"): "dark",
    ("minor", "fast", "soft"): "restless", ("minor", "fast", "loud"): "intense",
}


def mood_for(mode: str, bpm: int, loudness: str) -> str:
    """The mood word a listener would give this mode, tempo and loudness."""
    band = "slow" if bpm < 90 else "medium" if bpm < 125 else "fast"
    return _MOODS[(mode, band, loudness)]


def _check_choice(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        names = ", ".join(repr(a) for a in allowed)
        raise SalongError(f"{name}={value!r} is not allowed; choose one of {names}")


@dataclass(frozen=True)
class PieceAttributes:
    """Everything that decides a piece's music; the caption is written from these."""

    lead: str
    chords: str | None  # instrument playing the chords, or None for no chords
    bass: bool
    drums: str
    bpm: int
    tonic: str
    mode: str
    meter: str
    loudness: str
    seconds: float

    def __post_init__(self) -> None:
        _check_choice("lead", self.lead, LEADS)
        _check_choice("chords", self.chords, CHORD_SOUNDS + (None,))
        if not isinstance(self.bass, (bool, np.bool_)):
            raise SalongError(f"bass={self.bass!r} is not allowed; choose True or False")
        _check_choice("drums", self.drums, DRUM_STYLES)
        if (isinstance(self.bpm, (bool, np.bool_)) or not isinstance(self.bpm, (int, np.integer))
                or not MIN_BPM <= self.bpm <= MAX_BPM):
            raise SalongError(f"bpm={self.bpm!r} is out of range; allowed: integers "
                              f"{MIN_BPM}..{MAX_BPM}")
        _check_choice("tonic", self.tonic, TONICS)
        _check_choice("mode", self.mode, MODES)
        _check_choice("meter", self.meter, METERS)
        _check_choice("loudness", self.loudness, LOUDNESS)
        if (isinstance(self.seconds, (bool, np.bool_)) or not isinstance(self.seconds, (int, float, np.number))
                or not 0 < self.seconds <= MAX_SECONDS or round(self.seconds * SAMPLE_RATE) < 1):
            raise SalongError(f"seconds={self.seconds!r} is out of range; allowed: "
                              f"0 < seconds <= {MAX_SECONDS:g}")
        # plain Python types so to_dict() is JSON-ready whatever the caller passed
        object.__setattr__(self, "bass", bool(self.bass))
        object.__setattr__(self, "bpm", int(self.bpm))
        object.__setattr__(self, "seconds", float(self.seconds))

    @property
    def mood(self) -> str:
        return mood_for(self.mode, self.bpm, self.loudness)

    @property
    def beats_per_bar(self) -> int:
        return int(self.meter[0])

    @property
    def beat_seconds(self) -> float:
        return 60.0 / self.bpm

    @property
    def n_samples(self) -> int:
        return round(self.seconds * SAMPLE_RATE)

    @property
    def sections(self) -> tuple[tuple[str, float, float], ...]:
        """(name, start_s, end_s) of each section; one "A" section for short pieces."""
        bar_s = self.beats_per_bar * self.beat_seconds
        return tuple((name, first * bar_s, min(last * bar_s, self.seconds))
                     for name, first, last in _form(self))

    def beat_times(self) -> np.ndarray:
        """Onsets (s) of every beat of the grid the notes and drums are placed on."""
        return np.arange(math.ceil(self.seconds / self.beat_seconds)) * self.beat_seconds

    def to_dict(self) -> dict:
        """JSON-ready attributes, with the derived mood, key and sections."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["key"] = f"{self.tonic} {self.mode}"
        out["mood"] = self.mood
        out["sections"] = [{"name": n, "start": s, "end": e} for n, s, e in self.sections]
        return out


@dataclass(frozen=True)
class Piece:
    """A rendered piece with its caption and the attributes both were made from."""

    audio: np.ndarray  # (2, samples) float32 at SAMPLE_RATE
    caption: str
    attributes: PieceAttributes


def random_attributes(rng: np.random.Generator, seconds: float) -> PieceAttributes:
    """Draw every attribute independently, in a fixed order (so overrides don't shift others)."""
    lead = LEADS[rng.integers(len(LEADS))]
    chords = (None,) + CHORD_SOUNDS
    chord = chords[rng.choice(len(chords), p=(0.15, 0.4, 0.25, 0.2))]
    bass = bool(rng.random() < 0.8)
    drums = DRUM_STYLES[rng.integers(len(DRUM_STYLES))]
    bpm = int(rng.integers(MIN_BPM, MAX_BPM + 1))
    tonic = TONICS[rng.integers(len(TONICS))]
    mode = MODES[rng.integers(2)]
    meter = METERS[int(rng.random() < 0.25)]
    loudness = LOUDNESS[rng.integers(2)]
    return PieceAttributes(lead, chord, bass, drums, bpm, tonic, mode, meter, loudness, seconds)


# ----------------------------------------------------------------------------- form

def _form(attrs: PieceAttributes) -> list[tuple[str, int, int]]:
    """Sections as (name, first_bar, end_bar); the last one runs past the final bar line."""
    bar_s = attrs.beats_per_bar * attrs.beat_seconds
    total = max(1, math.ceil(attrs.seconds / bar_s - 1e-9))
    if attrs.seconds < LONG_FORM_SECONDS:
        return [("A", 0, total)]
    full = int(attrs.seconds // bar_s)  # >= 10 bars: 40 s at 60 BPM in 4/4
    edge = 1 if full < 16 else 2 if full < 32 else 4
    middle = full - 2 * edge
    unit = 4 if middle >= 12 else 1  # whole 4-bar progressions once there is room
    k = middle // unit
    a, b, a2 = (unit * (k // 3 + (i < k % 3)) for i in range(3))
    a2 += middle - unit * k
    bounds = np.cumsum([0, edge, a, b, a2])
    names = ("intro", "A", "B", "A'")
    return [(n, int(s), int(e)) for n, s, e in zip(names, bounds[:-1], bounds[1:])] + [
        ("outro", int(bounds[-1]), total)]


# ------------------------------------------------------------------------- composition

class _Note(NamedTuple):
    start: float  # s
    hold: float  # s until the release begins
    midi: int
    vel: float


class _Hit(NamedTuple):
    start: float
    drum: str
    vel: float


@dataclass
class _Score:
    lead: list[_Note]
    chords: list[_Note]
    bass: list[_Note]
    drums: list[_Hit]


_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}  # natural minor

# Progressions as 0-based scale degrees of diatonic triads. "A" ones lean on the tonic
# (tonic and dominant chords outnumber the relative-key ones) so the key is audible;
# "B" ones start away from it, which is most of the contrast between A and B.
_PROGRESSIONS = {
    ("major", "A"): ((0, 3, 0, 4), (0, 3, 4, 0), (0, 1, 4, 0), (0, 4, 3, 0), (0, 4, 0, 3)),
    ("major", "B"): ((5, 3, 0, 4), (3, 4, 5, 3), (5, 1, 4, 4), (3, 5, 1, 4)),
    ("minor", "A"): ((0, 3, 0, 4), (0, 3, 4, 0), (0, 5, 6, 0), (0, 4, 3, 0), (0, 6, 5, 0)),
    ("minor", "B"): ((5, 6, 0, 0), (3, 5, 6, 6), (2, 6, 5, 4), (5, 3, 6, 4)),
}

# Melody rhythms in eighth notes per bar, by beats per bar; cadences end phrases long.
_RHYTHMS = {4: ((2, 2, 2, 2), (1, 1, 2, 2, 2), (3, 1, 2, 2), (2, 1, 1, 4), (1, 1, 1, 1, 2, 2),
                (4, 2, 2), (2, 2, 4), (3, 3, 2)),
            3: ((2, 2, 2), (1, 1, 2, 2), (3, 1, 2), (4, 2), (1, 1, 1, 1, 2), (2, 1, 1, 2))}
_CADENCES = {4: ((4, 4), (2, 2, 4), (8,)), 3: ((6,), (2, 4), (3, 3))}
_MELODY_RANGE = (-3, 9)  # scale degrees around the lead's tonic

# Offsets (in beats) of the four sixteenth steps of a beat; shuffle swings to triplets.
_STRAIGHT = (0.0, 0.25, 0.5, 0.75)
_SWUNG = (0.0, 1 / 3, 2 / 3, 5 / 6)

# Drum patterns on a 16-step 4/4 bar; 3/4 uses the first 12 steps. "B" is the busier variant.
_EIGHTHS = tuple(range(0, 16, 2))
_DRUM_PATTERNS = {
    ("four-on-the-floor", "A"): {"kick": (0, 4, 8, 12), "snare": (4, 12), "open_hat": (2, 6, 10, 14)},
    ("four-on-the-floor", "B"): {"kick": (0, 4, 8, 12), "snare": (4, 12), "open_hat": (2, 6, 10, 14),
                                 "closed_hat": (0, 1, 3, 4, 5, 7, 8, 9, 11, 12, 13, 15)},
    ("backbeat", "A"): {"kick": (0, 8, 10), "snare": (4, 12), "closed_hat": _EIGHTHS},
    ("backbeat", "B"): {"kick": (0, 3, 8, 10), "snare": (4, 12), "closed_hat": tuple(range(14)) + (15,),
                        "open_hat": (14,)},
    ("shuffle", "A"): {"kick": (0, 8), "snare": (4, 12), "closed_hat": _EIGHTHS},
    ("shuffle", "B"): {"kick": (0, 6, 8), "snare": (4, 12), "ghost": (10, 15),
                       "closed_hat": (0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14)},
    ("breakbeat", "A"): {"kick": (0, 2, 8, 10), "snare": (4, 12), "ghost": (7, 9, 15),
                         "closed_hat": _EIGHTHS},
    ("breakbeat", "B"): {"kick": (0, 2, 10, 11), "snare": (4, 12), "ghost": (7, 9, 14, 15),
                         "closed_hat": tuple(range(16))},
}
_DRUM_VELOCITY = {"kick": 1.0, "snare": 0.9, "ghost": 0.3, "closed_hat": 0.4, "open_hat": 0.45,
                  "crash": 0.8}

# Bass patterns: (step, length in steps, interval above the chord root). The A ones
# dwell on roots and octaves; fifths, which would lean towards the dominant key, pass.
_BASS_PATTERNS = {
    ("none", "A"): ((0, 12, 0), (12, 4, 7)),
    ("none", "B"): ((0, 4, 0), (4, 4, 7), (8, 4, 12), (12, 4, 7)),
    ("four-on-the-floor", "A"): ((2, 2, 0), (6, 2, 0), (10, 2, 0), (14, 2, 0)),
    ("four-on-the-floor", "B"): tuple((s, 2, 12 * (s % 4 == 2)) for s in _EIGHTHS),
    ("backbeat", "A"): ((0, 6, 0), (6, 2, 0), (8, 6, 12), (14, 2, 7)),
    ("backbeat", "B"): ((0, 2, 0), (2, 2, 0), (4, 2, 12), (6, 2, 0), (8, 2, 7), (10, 2, 7),
                        (12, 2, 12), (14, 2, 7)),
    ("shuffle", "A"): ((0, 4, 0), (4, 4, 12), (8, 4, 7), (12, 4, 12)),
    ("shuffle", "B"): ((0, 2, 0), (2, 2, 0), (4, 2, 7), (6, 2, 7), (8, 2, 12), (10, 2, 12),
                       (12, 2, 7), (14, 2, 7)),
    ("breakbeat", "A"): ((0, 3, 0), (3, 3, 0), (10, 4, 7), (14, 2, 0)),
    ("breakbeat", "B"): ((0, 2, 0), (3, 1, 12), (6, 2, 0), (10, 2, 7), (12, 2, 0), (14, 2, 12)),
}


def _next_degree(rng: np.random.Generator, prev: int, targets: tuple[int, ...] | None) -> int:
    """Nearby chord tone on strong beats (targets), a step or skip elsewhere."""
    lo, hi = _MELODY_RANGE
    if targets is None:
        step = int(rng.choice((-2, -1, 1, 2), p=(0.15, 0.35, 0.35, 0.15)))
        return prev + step if lo <= prev + step <= hi else prev - step
    classes = {t % 7 for t in targets}
    cands = np.array([d for d in range(lo, hi + 1) if d % 7 in classes])
    weight = np.exp(-np.abs(cands - prev) / 2.0) * np.where(cands == prev, 0.25, 1.0)
    weight *= np.array((2.5, 1.0, 1.5, 1.0, 1.2, 1.0, 1.0))[cands % 7]  # the tonic triad anchors the key
    return int(rng.choice(cands, p=weight / weight.sum()))


def _melody(rng: np.random.Generator, progression: tuple[int, ...], beats: int) -> list[list[tuple]]:
    """An 8-bar antecedent/consequent phrase over the 4-chord progression played twice.

    Bars are lists of (start_eighth, length_eighths, scale_degree). The first half ends
    open on the chord's third or fifth, the second repeats it and closes on the tonic
    when the last chord contains it, else on the chord's root.
    """
    rhythms, cadences = _RHYTHMS[beats], _CADENCES[beats]
    first, second = rng.choice(len(rhythms), 2, replace=False)
    plan = (rhythms[first], rhythms[second], rhythms[first], cadences[rng.integers(len(cadences))])
    prev = int(rng.choice((0, 2, 4, 7)))
    bars = []
    for bar, lengths in enumerate(plan):
        chord, pos, notes = progression[bar], 0, []
        for i, length in enumerate(lengths):
            if bar == 3 and i == len(lengths) - 1:
                targets = (chord + 2, chord + 4)
            else:
                targets = (chord, chord + 2, chord + 4) if pos % 2 == 0 else None
            prev = _next_degree(rng, prev, targets)
            notes.append((pos, length, prev))
            pos += length
        bars.append(notes)
    before = bars[3][-2][2] if len(bars[3]) > 1 else bars[2][-1][2]
    last = progression[3]
    home = 0 if 0 in {last % 7, (last + 2) % 7, (last + 4) % 7} else last % 7
    close = min((d for d in range(_MELODY_RANGE[0], _MELODY_RANGE[1] + 1) if d % 7 == home),
                key=lambda d: abs(d - before))
    closing = bars[3][:-1] + [bars[3][-1][:2] + (close,)]
    return bars + bars[:3] + [closing]


def _compose(attrs: PieceAttributes, rng: np.random.Generator) -> _Score:
    """Lay every note and drum hit of the piece on one beat grid."""
    beats = attrs.beats_per_bar
    steps = 4 * beats
    beat_s = attrs.beat_seconds
    bar_s = beats * beat_s
    offsets = _SWUNG if attrs.drums == "shuffle" else _STRAIGHT
    scale = _SCALES[attrs.mode]
    tonic = TONICS.index(attrs.tonic)

    def at(bar: int, step: int) -> float:
        return bar * bar_s + beat_s * (step // 4 + offsets[step % 4])

    def semitones(degree: int) -> int:
        return 12 * (degree // 7) + scale[degree % 7]

    def voicing(degree: int, center: int) -> list[int]:
        """Close-position triad (inversion with mean pitch nearest center) over its root."""
        pcs = [(tonic + semitones(degree + k)) % 12 for k in (0, 2, 4)]
        options = []
        for inv in range(3):
            low = center - 6 + (pcs[inv] - (center - 6)) % 12
            options.append(sorted(low + (pc - pcs[inv]) % 12 for pc in pcs))
        chord = min(options, key=lambda c: abs(np.mean(c) - center))
        root = chord[0] - 1 - (chord[0] - 1 - pcs[0]) % 12  # the root below grounds the chord
        return [root] + chord

    def bass_root(degree: int) -> int:
        return 33 + (tonic + semitones(degree) - 9) % 12  # A1..G#2

    def vel(base: float) -> float:
        return float(np.clip(base * (1 + 0.06 * rng.standard_normal()), 0.1, 1.0))

    prog = {v: _PROGRESSIONS[(attrs.mode, v)][rng.integers(len(_PROGRESSIONS[(attrs.mode, v)]))]
            for v in ("A", "B")}
    phrase = {v: _melody(rng, prog[v], beats) for v in ("A", "B")}
    high_lead = attrs.lead in ("bells", "flute")
    lead_tonic = (72 if high_lead else 60) + tonic
    # B lifts: melody doubled an octave away, chords voiced higher, busier bass and
    # drums, everything a little louder
    registers = {"A": (0,), "B": (0, -12 if high_lead else 12)}
    center = {"A": 60, "B": 67}
    energy = {"A": 0.8, "B": 1.0}
    long_form = attrs.seconds >= LONG_FORM_SECONDS
    score = _Score([], [], [], [])

    for name, first, end in _form(attrs):
        variant = "B" if name == "B" else "A"
        for j, bar in enumerate(range(first, end)):
            chord = 0 if name == "outro" else prog[variant][j % 4]

            if attrs.chords is not None and (name != "outro" or j == 0):
                hold = (end - first if name == "outro" else 1) * bar_s * 0.98
                for midi in voicing(chord, center[variant]):
                    score.chords.append(_Note(bar * bar_s, hold, midi, vel(0.7)))

            if name in ("A", "B", "A'"):
                for pos, length, degree in phrase[variant][j % 8]:
                    start = at(bar, 2 * pos)
                    hold = 0.92 * (at(bar, 2 * (pos + length)) - start)
                    accent = energy[variant] * (1.0 if pos == 0 else 0.9 if pos % 2 == 0 else 0.8)
                    for octave in registers[variant]:
                        score.lead.append(_Note(start, hold, lead_tonic + octave + semitones(degree),
                                                vel(accent * (0.7 if octave else 1.0))))
            elif name == "outro" and j == 0:
                score.lead.append(_Note(bar * bar_s, bar_s, lead_tonic, vel(0.7)))
            elif attrs.chords is None:  # intro without chords: the lead arpeggiates them
                for b in range(beats):
                    midi = lead_tonic + semitones(chord + 2 * (b % 3))
                    score.lead.append(_Note(at(bar, 4 * b), 0.9 * beat_s, midi, vel(0.6)))

            if attrs.bass and name in ("A", "B", "A'", "outro"):
                pattern = _BASS_PATTERNS[(attrs.drums, variant)]
                if name == "outro":
                    pattern = ((0, steps, 0),) if j == 0 else ()
                for step, length, interval in pattern:
                    if step < steps:
                        start = at(bar, step)
                        hold = 0.9 * (at(bar, min(step + length, steps)) - start)
                        score.bass.append(_Note(start, hold, bass_root(chord) + interval, vel(0.8)))

            if attrs.drums != "none" and name in ("A", "B", "A'"):
                fill = long_form and j == end - first - 1 and end - first >= 4
                if long_form and j == 0:
                    score.drums.append(_Hit(at(bar, 0), "crash", vel(_DRUM_VELOCITY["crash"])))
                for drum, hits in _DRUM_PATTERNS[(attrs.drums, variant)].items():
                    for step in hits:
                        if step < steps and not (fill and step >= steps - 4 and drum != "kick"):
                            accent = 1.0 if step % 4 == 0 or drum != "closed_hat" else 0.75
                            score.drums.append(_Hit(at(bar, step), drum,
                                                    vel(_DRUM_VELOCITY[drum] * accent * energy[variant])))
                if fill:  # a snare run into the next section
                    for i, step in enumerate(range(steps - 4, steps)):
                        score.drums.append(_Hit(at(bar, step), "snare", vel(0.45 + 0.15 * i)))
    return score


# ------------------------------------------------------------------------- instruments

def _time(n: int) -> np.ndarray:
    return np.arange(n) / SAMPLE_RATE


def _hz(midi: int) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


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
        out[start:start + len(block) + m - 1] += np.fft.irfft(np.fft.rfft(block, size) * response, size)[:len(block) + m - 1]
    return out[:n]


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


# ----------------------------------------------------------------------------- mixing

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


def _reverb_ir(rng: np.random.Generator, seconds: float = 1.2) -> np.ndarray:
    """Impulse responses (2, samples) of a stereo convolution reverb: decaying noise,
    different on each side so the reverb widens what is sent to it."""
    t = _time(int(seconds * SAMPLE_RATE))
    ir = _lowpass(rng.standard_normal((2, t.size)), 5000) * np.exp(-6.9 * t / seconds)
    return (ir / np.sqrt((ir ** 2).sum(axis=1, keepdims=True))).astype(np.float32)


# Track levels (RMS while playing) before the final peak normalisation.
_LEVELS = {"lead": 0.1, "chords": 0.08, "bass": 0.09, "drums": 0.1}
# Independent random streams of one seed: default_rng([seed, stream]).
_ATTRIBUTE_STREAM, _CAPTION_STREAM, _RENDER_STREAM, _LENGTH_STREAM = 0, 1, 2, 3


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


# ----------------------------------------------------------------------------- captions

_LEAD_WORDS = {
    "piano": ("a piano melody", "a piano lead", "piano"),
    "electric piano": ("an electric piano melody", "a Rhodes-style electric piano", "electric piano"),
    "organ": ("an organ melody", "an organ lead", "organ"),
    "plucked guitar": ("a plucked guitar melody", "a picked guitar lead", "plucked guitar"),
    "bells": ("a bell melody", "chiming bells", "bells"),
    "strings": ("a string melody", "a lead line on strings", "strings"),
    "flute": ("a flute melody", "a flute lead", "flute"),
    "brass": ("a brass melody", "a brass lead", "brass"),
    "synth lead": ("a synth lead", "a lead synthesizer", "a synth melody"),
}
_CHORD_WORDS = {
    "pad": ("pad chords", "a lush synth pad", "sustained pad chords"),
    "strings": ("string chords", "a string section", "sustained strings"),
    "organ": ("organ chords", "sustained organ chords", "an organ playing chords"),
}
_BASS_WORDS = ("bass", "a bass line", "a synth bass line", "a deep bass")
_DRUM_WORDS = {
    "none": ("no drums", "no percussion"),
    "four-on-the-floor": ("a four-on-the-floor beat", "four-on-the-floor drums",
                          "a steady four-on-the-floor kick"),
    "backbeat": ("a backbeat groove", "backbeat drums", "a straight backbeat"),
    "shuffle": ("a shuffle groove", "swung shuffle drums", "a shuffle beat"),
    "breakbeat": ("a breakbeat", "breakbeat drums", "a syncopated breakbeat"),
}
_LOUDNESS_WORDS = {"soft": ("soft", "quiet", "gentle"), "loud": ("loud", "powerful", "punchy")}
_METER_WORDS = {"4/4": ("in 4/4 time", "in common time"), "3/4": ("in 3/4 time", "in triple meter")}
_NOUNS = ("track", "piece", "tune", "instrumental", "composition")
_FORM_WORDS = ("with an intro, a contrasting middle section and an outro",
               "moving from an intro through two contrasting sections to an outro",
               "in intro, A, B, A, outro form")


def _article(phrase: str) -> str:
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def _bare(phrase: str) -> str:
    for article in ("a ", "an "):
        if phrase.startswith(article):
            return phrase[len(article):]
    return phrase


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def caption_for(attrs: PieceAttributes, rng: np.random.Generator) -> str:
    """A caption in varied wording and order; every fact it states is true of the piece."""
    def pick(options: tuple[str, ...]) -> str:
        return options[rng.integers(len(options))]

    def maybe(p: float, value: str) -> str | None:
        return value if rng.random() < p else None

    mood = maybe(0.85, attrs.mood)
    loud = maybe(0.5, pick(_LOUDNESS_WORDS[attrs.loudness]))
    tempo = maybe(0.75, f"{attrs.bpm} BPM")
    key = maybe(0.75, f"in {attrs.tonic} {attrs.mode}")
    meter = maybe(0.6 if attrs.meter == "3/4" else 0.15, pick(_METER_WORDS[attrs.meter]))
    lead = pick(_LEAD_WORDS[attrs.lead])
    chords = maybe(0.75, pick(_CHORD_WORDS[attrs.chords])) if attrs.chords else None
    bass = maybe(0.6, pick(_BASS_WORDS)) if attrs.bass else None
    drums = maybe(0.8 if attrs.drums != "none" else 0.5, pick(_DRUM_WORDS[attrs.drums]))
    form = maybe(0.5, pick(_FORM_WORDS)) if len(attrs.sections) > 1 else None
    noun = pick(_NOUNS)
    template = int(rng.integers(5))

    def kept(*items: str | None) -> list[str]:
        return [i for i in items if i]

    head = " ".join(kept(loud, mood, noun))
    where = kept(f"at {tempo}" if tempo else None, key, meter)
    if template == 0:  # "Energetic track at 132 BPM in D minor with a synth lead, bass and pad chords."
        text = " ".join([_cap(head)] + where) + " with " + _join(kept(lead, chords, bass, drums))
        return text + (f", {form}." if form else ".")
    if template == 1:  # instruments first, then the rest
        first = _cap(lead) + (f" over {chords}" if chords else "")
        rest = kept(bass, drums)
        first += (" with " + _join(rest) if rest else "") + "."
        return first + " " + " ".join([_cap(_article(head))] + where + kept(form)) + "."
    if template == 2:  # tag list in random order
        tags = kept(mood, loud, _bare(lead), chords and _bare(chords), bass and _bare(bass),
                    drums and _bare(drums), tempo, key, meter)
        return ", ".join(tags[i] for i in rng.permutation(len(tags)))
    if template == 3:  # "This ... features ..."
        text = f"This {head} features " + _join(kept(lead, chords, bass, drums)) + "."
        if where:
            text += " It is played " + " ".join(where) + "."
        return text + (f" It is structured {form}." if form and form.startswith("with") else "")
    # key first, tempo last
    text = _cap(_article(head)) + (f" {key}" if key else "") + (f" {meter}" if meter else "")
    text += " featuring " + _join(kept(lead, chords, bass, drums))
    return text + (f", {tempo}." if tempo else ".")


# ----------------------------------------------------------------------------- pieces

def _check_seed(seed: int) -> None:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SalongError(f"seed={seed!r} is not allowed; use an integer >= 0")


_OVERRIDABLE = tuple(f.name for f in fields(PieceAttributes) if f.name != "seconds")


def make_piece(seed: int, seconds: float, **overrides: object) -> Piece:
    """A reproducible piece: attributes, caption and audio all follow from (seed, seconds).

    Overrides fix attributes (e.g. bpm=120, drums="none"); the rest stay as the seed drew them.
    """
    _check_seed(seed)
    unknown = sorted(set(overrides) - set(_OVERRIDABLE))
    if unknown:
        raise SalongError(f"unknown attribute {unknown[0]!r}; allowed: {', '.join(_OVERRIDABLE)}")
    attrs = random_attributes(np.random.default_rng([seed, _ATTRIBUTE_STREAM]), seconds)
    attrs = replace(attrs, **overrides)
    caption = caption_for(attrs, np.random.default_rng([seed, _CAPTION_STREAM]))
    return Piece(render(attrs, seed), caption, attrs)


def _corpus_seed(seed: int, index: int) -> int:
    """Seed of piece `index` of a corpus: independent of every other piece."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


DURATION_LAWS = ("uniform", "log")


def piece_length(piece_seed: int, min_seconds: float, max_seconds: float, durations: str = "uniform") -> float:
    """A corpus piece's length: uniform in seconds, or uniform in log-seconds ("log": as many
    pieces between 5 and 10 s as between 100 and 200 s, so long pieces exist without
    dominating the hours)."""
    rng = np.random.default_rng([piece_seed, _LENGTH_STREAM])
    if durations == "log":
        length = math.exp(rng.uniform(math.log(min_seconds), math.log(max_seconds)))
    else:
        length = rng.uniform(min_seconds, max_seconds)
    return min(max(round(float(length), 2), min_seconds), max_seconds)


def _write_piece(job: tuple[Path, int, int, float, float, str, str]) -> str:
    """Render and write piece `i`; its metadata line (runs in a worker process under `jobs`)."""
    from salong.audio import write_audio

    out, seed, i, min_seconds, max_seconds, durations, fmt = job
    piece_seed = _corpus_seed(seed, i)
    piece = make_piece(piece_seed, piece_length(piece_seed, min_seconds, max_seconds, durations))
    rel = f"audio/{i:06d}.{fmt}"
    write_audio(out / rel, piece.audio, SAMPLE_RATE, fmt=fmt)
    return json.dumps({"path": rel, "caption": piece.caption, "duration": piece.audio.shape[1] / SAMPLE_RATE,
                       "seed": piece_seed, "attributes": piece.attributes.to_dict()})


def write_corpus(n: int, out_dir: str | Path, seed: int = 0, min_seconds: float = 5.0,
                 max_seconds: float = 30.0, fmt: str = "wav", durations: str = "uniform", jobs: int = 1,
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """Write n pieces as out_dir/audio/NNNNNN.<fmt> plus out_dir/metadata.jsonl; returns out_dir.

    Each metadata line: {"path", "caption", "duration", "seed", "attributes"}; path is
    relative to out_dir. Piece i depends only on (seed, i), so corpora are reproducible,
    whatever the number of worker processes (`jobs`). metadata.jsonl is written last: a
    corpus folder with one is complete.
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SalongError(f"n={n!r} is not allowed; use an integer >= 1")
    _check_seed(seed)
    if not 0 < min_seconds <= max_seconds <= MAX_SECONDS:
        raise SalongError(f"min_seconds={min_seconds!r}, max_seconds={max_seconds!r} are not allowed; "
                          f"need 0 < min_seconds <= max_seconds <= {MAX_SECONDS:g}")
    _check_choice("fmt", fmt, ("wav", "flac"))
    _check_choice("durations", durations, DURATION_LAWS)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise SalongError(f"jobs={jobs!r} is not allowed; use an integer >= 1")
    # imported here so composing and rendering need neither soundfile nor torch
    from salong.checkpoint import write_atomic

    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    work = [(out, seed, i, min_seconds, max_seconds, durations, fmt) for i in range(n)]
    lines = []
    with contextlib.ExitStack() as stack:
        if jobs > 1:
            import multiprocessing

            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(min(jobs, n)))
            results = pool.imap(_write_piece, work)
        else:
            results = map(_write_piece, work)
        for line in results:
            lines.append(line)
            if progress is not None:
                progress(len(lines), n)
    text = "\n".join(lines) + "\n"
    write_atomic(out / "metadata.jsonl", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return out
