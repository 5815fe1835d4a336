"""What decides a piece: the attribute vocabularies, `PieceAttributes`, their random draw,
the mood rule and the section form; also the seed check and the seed's random streams."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from salong.errors import SalongError
from salong.timing import SAMPLE_RATE

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
        """(name, start_s, end_s) of each section (`form_plan`); one "A" section for short pieces."""
        return form_plan(self.seconds, self.bpm, self.beats_per_bar)

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


def _check_seed(seed: int) -> None:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SalongError(f"seed={seed!r} is not allowed; use an integer >= 0")


# Independent random streams of one seed: default_rng([seed, stream]).
_ATTRIBUTE_STREAM, _CAPTION_STREAM, _RENDER_STREAM, _LENGTH_STREAM = 0, 1, 2, 3
_TEMPO_STREAM = 4  # a corpus's tempo within --min-bpm/--max-bpm
_DRUMS_STREAM = 5  # a corpus's pieces without drums (--no-drums)


# ----------------------------------------------------------------------------- form
# One rule for the synth's pieces and for the form a song asks for (`salong.controls`).

def form_bars(seconds: float, bpm: float, beats_per_bar: int) -> list[tuple[str, int, int]]:
    """Sections as (name, first_bar, end_bar): from LONG_FORM_SECONDS on intro, A, B, A'
    and outro (the edges 1, 2 or 4 bars as the piece grows, the middle in thirds of whole
    4-bar progressions where there is room), else one "A". The last section runs past the
    final bar line; a section left without bars (a very slow tempo) is left out."""
    bar_s = beats_per_bar * (60.0 / bpm)
    total = max(1, math.ceil(seconds / bar_s - 1e-9))
    if seconds < LONG_FORM_SECONDS:
        return [("A", 0, total)]
    full = int(seconds // bar_s)  # >= 10 bars for the synth's tempos: 40 s at 60 BPM in 4/4
    edge = 1 if full < 16 else 2 if full < 32 else 4
    middle = max(0, full - 2 * edge)
    unit = 4 if middle >= 12 else 1  # whole 4-bar progressions once there is room
    k = middle // unit
    a, b, a2 = (unit * (k // 3 + (i < k % 3)) for i in range(3))
    a2 += middle - unit * k
    bounds = np.minimum(np.cumsum([0, edge, a, b, a2]), total)
    names = ("intro", "A", "B", "A'")
    sections = [(n, int(s), int(e)) for n, s, e in zip(names, bounds[:-1], bounds[1:])] + [
        ("outro", int(bounds[-1]), total)]
    return [(n, s, e) for n, s, e in sections if e > s]


def form_plan(seconds: float, bpm: float, beats_per_bar: int) -> tuple[tuple[str, float, float], ...]:
    """(name, start_s, end_s) of each section of `form_bars`, the last cut at `seconds`."""
    bar_s = beats_per_bar * (60.0 / bpm)
    return tuple((name, first * bar_s, min(last * bar_s, seconds))
                 for name, first, last in form_bars(seconds, bpm, beats_per_bar))
