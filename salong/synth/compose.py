"""Composition: every note and drum hit of a piece on one beat grid (diatonic triad
progressions, a phrase-structured melody on chord tones, bass and drum patterns)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from salong.synth.attributes import _RENDER_STREAM, LONG_FORM_SECONDS, TONICS, PieceAttributes, _check_seed, form_bars


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
    harmony: list[tuple[float, float, int]]  # (start s, end s, scale degree) of each bar's chord


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
    score = _Score([], [], [], [], [])

    for name, first, end in form_bars(attrs.seconds, attrs.bpm, attrs.beats_per_bar):
        variant = "B" if name == "B" else "A"
        for j, bar in enumerate(range(first, end)):
            chord = 0 if name == "outro" else prog[variant][j % 4]
            score.harmony.append((bar * bar_s, min((bar + 1) * bar_s, attrs.seconds), chord))

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


def harmony(attrs: PieceAttributes, seed: int) -> list[dict]:
    """The chord of every bar of the piece `render(attrs, seed)` plays, as a metadata line
    gives chords (`salong.chords.parse_timeline`): [{"name": "Am", "start": 0.0, "end": 2.4},
    ...], neighbouring bars on one chord joined. Composed again with render's random stream,
    which the chords are drawn from; no audio is made."""
    from salong.chords import chord_name, degree_chord
    from salong.controls import Key

    _check_seed(seed)
    key = Key(TONICS.index(attrs.tonic), attrs.mode)
    spans: list[dict] = []
    for start, end, degree in _compose(attrs, np.random.default_rng([seed, _RENDER_STREAM])).harmony:
        if start >= end:
            continue
        name = chord_name(degree_chord(key, degree))
        if spans and spans[-1]["name"] == name and abs(spans[-1]["end"] - start) < 1e-9:
            spans[-1]["end"] = round(end, 6)
        else:
            spans.append({"name": name, "start": round(start, 6), "end": round(end, 6)})
    return spans
