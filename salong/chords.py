"""Chord progressions: `--chords` read, laid over a song's bars, and the per-frame features a
DiT with a chords conditioner reads (docs/architecture.md, Controls).

A progression is one chord per bar, cycled: "Am F C G", or by degree in the song's key,
"i VI III VII" (upper case major, lower case minor, ° or dim diminished; a flat or sharp
before the numeral moves its root). A second progression after "/" plays in B sections:
"Am F C G / F G Em Am". Intro, A and A' sections cycle the first from their first bar,
B sections the second (the first where none is given), and an outro holds the first
chord: the synth corpus's own rule (`salong.synth.compose`), which "auto" follows with
progressions drawn from the synth's tables for the key's mode.

Like a section, a chord reaches the DiT as something local to each latent frame: its root
and the pitch classes of its triad (`chord_features`), so "play these notes now" is a rule
each frame applies on its own.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from salong.controls import MINOR_NAMES, SCALES, TONIC_NAMES, Key, Section, _pitch_class
from salong.errors import SalongError

QUALITIES = {"major": (0, 4, 7), "minor": (0, 3, 7), "dim": (0, 3, 6)}  # triads, semitones over the root
# Per latent frame: presence, the root one-hot (12), the triad's pitch classes (12).
CHORD_FEATURES = 1 + 12 + 12
MAX_PROGRESSION, MAX_TIMELINE = 32, 4096  # chords in one progression; chord spans in a piece
CHORDS_STREAM = 7  # the random stream (beside a song's seed) that draws "auto" progressions
Chord = tuple[int, str]  # (root pitch class, quality)
Span = tuple[str, float, float]  # (chord name, start s, end s)

CHORDS_EXAMPLE = "'Am F C G', 'i VI III VII' or 'C G Am F / F G C C'"
_NAME = re.compile(r"^(?P<letter>[A-G])(?P<acc>#|♯|b|♭)?(?P<quality>m|min|maj|dim|°|o|)$")
_NUMERAL = re.compile(r"^(?P<acc>b|#|♭|♯)?(?P<numeral>VII|VI|IV|V|III|II|I|vii|vi|iv|v|iii|ii|i)(?P<dim>°|o|dim)?$")
_NUMERALS = ("i", "ii", "iii", "iv", "v", "vi", "vii")


def chord_name(chord: Chord) -> str:
    """"Am", "F#", "Bdim": the root spelled as the synth spells tonics (as minor keys for a minor chord)."""
    root, quality = chord
    names = MINOR_NAMES if quality != "major" else TONIC_NAMES
    return names[root] + {"major": "", "minor": "m", "dim": "dim"}[quality]


def _error(text: str, problem: str) -> SalongError:
    return SalongError(f"--chords {text!r}: {problem}; give auto, none, or one triad per bar, e.g. {CHORDS_EXAMPLE}")


def _read_chord(token: str, key: Key | None, text: str) -> Chord:
    m = _NAME.match(token)
    if m is not None:
        quality = {"m": "minor", "min": "minor", "dim": "dim", "°": "dim", "o": "dim"}.get(m.group("quality"), "major")
        return _pitch_class(m.group("letter"), m.group("acc")), quality
    m = _NUMERAL.match(token)
    if m is None:
        raise _error(text, f"{token!r} is not a triad (C, Am, F#m, Bbdim) or a degree (I, vi, bVII, vii°)")
    if key is None:
        raise SalongError(f"--chords {text!r} names chords by degree, which needs a key; give --key, state the key "
                          "in the prompt, or name the chords (e.g. 'Am F C G')")
    numeral = m.group("numeral")
    degree = _NUMERALS.index(numeral.lower())
    shift = {"b": -1, "♭": -1, "#": 1, "♯": 1}.get(m.group("acc") or "", 0)
    quality = "dim" if m.group("dim") else "major" if numeral.isupper() else "minor"
    return (key.tonic + SCALES[key.mode][degree] + shift) % 12, quality


def parse_chords(value: object, key: Key | None = None) -> str | tuple[tuple[Chord, ...], ...]:
    """Chords as asked: "auto", "none", or progressions (`key` reads degrees): a tuple of one
    or two progressions of (root, quality), the second for B sections. One-line error otherwise."""
    text = str(value).strip()
    if not isinstance(value, str):
        raise _error(text, "is not text")
    if text.lower() in ("auto", "none"):
        return text.lower()
    parts = text.split("/")
    if len(parts) > 2:
        raise _error(text, "has more than two progressions (A / B)")
    progressions = []
    for part in parts:
        tokens = [t for t in re.split(r"[\s,|–-]+", part) if t]
        if not tokens:
            raise _error(text, "has a progression with no chord")
        if len(tokens) > MAX_PROGRESSION:
            raise _error(text, f"{len(tokens)} chords in one progression are more than {MAX_PROGRESSION}")
        progressions.append(tuple(_read_chord(t, key, text) for t in tokens))
    return tuple(progressions)


def needs_key(value: object) -> bool:
    """Whether a --chords value names chords by degree (and so needs a key to read)."""
    text = str(value)
    tokens = [t for t in re.split(r"[\s,|/–-]+", text) if t]
    return text.strip().lower() not in ("auto", "none") and any(_NUMERAL.match(t) for t in tokens)


def chords_text(progressions: tuple[tuple[Chord, ...], ...], key: Key | None = None) -> str:
    """Progressions as --chords takes them: by name, "Am F C G / F G Em Am", or with `key`
    by degree, "i VI III VII / VI VII v i" (a chord off the key's scale by name still)."""
    return " / ".join(" ".join(_degree_name(c, key) or chord_name(c) for c in p) for p in progressions)


def _degree_name(chord: Chord, key: Key | None) -> str | None:
    if key is None:
        return None
    root, quality = chord
    steps = SCALES[key.mode]
    if (root - key.tonic) % 12 not in steps:
        return None
    numeral = _NUMERALS[steps.index((root - key.tonic) % 12)]
    return numeral.upper() if quality == "major" else numeral + ("°" if quality == "dim" else "")


def auto_progressions(key: Key, seed: int) -> tuple[tuple[Chord, ...], tuple[Chord, ...]]:
    """An A and a B progression for `key`, drawn from the synth corpus's tables by `seed`."""
    from salong.synth.compose import _PROGRESSIONS  # here: the synth's package is not needed to read chords

    rng = np.random.default_rng([seed, CHORDS_STREAM])
    out = []
    for variant in ("A", "B"):
        table = _PROGRESSIONS[(key.mode, variant)]
        out.append(tuple(degree_chord(key, d) for d in table[int(rng.integers(len(table)))]))
    return out[0], out[1]


def degree_chord(key: Key, degree: int) -> Chord:
    """The diatonic triad on a 0-based scale degree of `key` (as the synth voices them)."""
    scale = SCALES[key.mode]
    pcs = [(key.tonic + scale[(degree + k) % 7]) % 12 for k in (0, 2, 4)]
    third, fifth = (pcs[1] - pcs[0]) % 12, (pcs[2] - pcs[0]) % 12
    quality = {(4, 7): "major", (3, 7): "minor", (3, 6): "dim"}[(third, fifth)]
    return pcs[0], quality


def lay_chords(progressions: tuple[tuple[Chord, ...], ...], seconds: float, bpm: float | None = None,
               beats_per_bar: int | None = None, sections: tuple[Section, ...] | None = None) -> tuple[Span, ...]:
    """(name, start s, end s) of the chords a song of `seconds` plays: one per bar from 0 s
    (120 BPM, 4/4 where not given), each section cycling its progression from its first bar,
    an outro holding the first chord; neighbours on the same chord are one span."""
    bar_s = (beats_per_bar or 4) * 60.0 / (bpm or 120.0)
    first, second = progressions[0], progressions[-1]
    spans: list[Span] = []
    for name, start, end in sections or (("A", 0.0, seconds),):
        bar0 = round(start / bar_s)
        bars = max(1, math.ceil((min(end, seconds) - start) / bar_s - 1e-9))
        cycle = second if name == "B" else first
        for j in range(bars):
            chord = first[0] if name == "outro" else cycle[j % len(cycle)]
            a, b = (bar0 + j) * bar_s, min((bar0 + j + 1) * bar_s, seconds)
            if a >= seconds:
                break
            label = chord_name(chord)
            if spans and spans[-1][0] == label and abs(spans[-1][2] - a) < 1e-9:
                spans[-1] = (label, spans[-1][1], b)
            else:
                spans.append((label, a, b))
    return tuple((n, round(a, 6), round(b, 6)) for n, a, b in spans)


def rotate_spans(spans: tuple[Span, ...], seconds: float, total: float) -> tuple[Span, ...]:
    """The chords of a song of `total` s rotated left by `seconds` (a loop's seam pass,
    `np.roll(song, -shift)`): what sounded at t now sounds at t - seconds, wrapping around."""
    out: list[Span] = []
    for name, a, b in spans:
        a, b = a - seconds, b - seconds
        for lo, hi in ((a, b), (a + total, b + total), (a - total, b - total)):
            lo, hi = max(lo, 0.0), min(hi, total)
            if hi > lo:
                out.append((name, round(lo, 6), round(hi, 6)))
    return tuple(sorted(out, key=lambda span: span[1]))


def parse_timeline(value: object) -> tuple[Span, ...]:
    """Chords as a metadata line gives them, in seconds and in order, as the synth writes
    them: [{"name": "Am", "start": 0.0, "end": 2.0}, ...]. One-line error otherwise."""
    entries = value if isinstance(value, list) and 0 < len(value) <= MAX_TIMELINE else None
    spans: list[Span] = []
    for entry in entries or ():
        if not isinstance(entry, dict) or set(entry) != {"name", "start", "end"}:
            break
        start, end = entry["start"], entry["end"]
        times = [t for t in (start, end) if isinstance(t, (int, float)) and not isinstance(t, bool)
                 and math.isfinite(t)]
        name = entry["name"] if isinstance(entry["name"], str) and _NAME.match(entry["name"]) else None
        if name is None or len(times) < 2 or not (spans[-1][2] if spans else 0.0) <= start < end:
            break
        spans.append((name, float(start), float(end)))
    if entries is None or len(spans) < len(entries):
        raise SalongError(f"chords {value!r} are not chords; give a list of {{\"name\", \"start\", \"end\"}} in "
                          "seconds, in order, each a triad such as C, Am, F#m or Bdim")
    return tuple(spans)


def chord_features(frames: int, latent_rate: float, spans: tuple[Span, ...] | None,
                   start_seconds: float = 0.0) -> torch.Tensor:
    """(frames, CHORD_FEATURES) float32: for each latent frame's centre, [1, the root one-hot,
    the triad's pitch classes] of the chord sounding there; a frame outside every span has
    none (zeros). `start_seconds` is where the frames start in the piece. No chords: all zero."""
    out = torch.zeros(frames, CHORD_FEATURES)
    if not spans:
        return out
    seconds = start_seconds + (torch.arange(frames, dtype=torch.float64) + 0.5) / latent_rate  # (frames,)
    rows = []
    for name, _, _ in spans:
        root, quality = _read_chord(name, None, name)
        row = torch.zeros(CHORD_FEATURES)
        row[0], row[1 + root] = 1.0, 1.0
        for step in QUALITIES[quality]:
            row[13 + (root + step) % 12] = 1.0
        rows.append(row)
    table = torch.stack(rows)  # (S, F)
    starts = torch.tensor([a for _, a, _ in spans], dtype=torch.float64)  # (S,)
    ends = torch.tensor([b for _, _, b in spans], dtype=torch.float64)  # (S,)
    index = (torch.searchsorted(starts, seconds, right=True) - 1).clamp(0, len(spans) - 1)  # (frames,)
    inside = (seconds >= starts[index]) & (seconds < ends[index])  # (frames,)
    out[inside] = table[index[inside]]
    return out

