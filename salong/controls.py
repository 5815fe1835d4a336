"""Musical controls: tempo, meter, key, drums and form, read from flags or from the prompt,
and the features a DiT with control conditioners reads (docs/architecture.md, Controls).

A tempo reaches the DiT as something local to each latent frame: the phase of the beat
and of the bar at the requested BPM, as sin/cos pairs (`beat_features`), so "a hit on
every beat" is a rule each frame can apply on its own instead of a count the model has
to keep. The grid starts on a downbeat at 0 s. A key is categorical: its tonic, its mode
and the pitch classes of its scale (`key_features`). Drums are categorical too: drums, no
drums, or a named groove (`drum_features`). A form is local to each frame again: the
section it lies in and how far through it (`form_features`), from a plan in bars laid
from 0 s (`song_form`, by the synth corpus's own rule `form_bars`, or as the user lists
the sections). Absent controls are all-zero features, which is also what control
dropout and the unconditional half of guidance use.

Models without control conditioners get the controls written into their prompt instead
(`prompt_with_controls`), in the wording they were trained on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from salong.errors import SalongError

TONIC_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")  # the synth corpus's spelling
MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")  # as minor keys are usually spelled
MODES = ("major", "minor")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}  # natural minor, as the synth plays
MIN_BPM, MAX_BPM = 40.0, 300.0
MIN_BEATS, MAX_BEATS = 2, 12  # beats per bar
REFERENCE_BPM = 120.0  # the tempo feature is log2(bpm / this)

# Per latent frame: presence, log tempo, beat phase (1x and 2x) and bar phase as sin/cos.
BEAT_FEATURES = 8
# Per song: tonic one-hot (12), mode one-hot (2), scale pitch classes (12).
KEY_FEATURES = 26
# The grooves the synth corpus plays, which a drums control can name.
GROOVES = ("four-on-the-floor", "backbeat", "shuffle", "breakbeat")
DRUMS = ("none", "on") + GROOVES  # a drums control: no drums, drums, or drums playing a groove
# Per song: drums asked for, no drums asked for, the groove one-hot (zero when none is named).
DRUM_FEATURES = 2 + len(GROOVES)
# The sections of the synth corpus's long pieces, in their order (`salong.synth.attributes.form_bars`).
FORM_SECTIONS = ("intro", "A", "B", "A'", "outro")
# Per latent frame: presence, the section one-hot (5), progress through the section in [0, 1).
FORM_FEATURES = 2 + len(FORM_SECTIONS)
MAX_FORM_SECTIONS, MAX_SECTION_BARS = 64, 9999
Section = tuple[str, float, float]  # (name, start s, end s)

_LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


@dataclass(frozen=True)
class Key:
    """A key: tonic as a pitch class (C = 0) and a mode."""

    tonic: int
    mode: str

    def __post_init__(self) -> None:
        if not (isinstance(self.tonic, int) and 0 <= self.tonic < 12) or self.mode not in MODES:
            raise SalongError("a key needs a tonic pitch class 0-11 and major or minor, "
                              f"got {self.tonic!r} {self.mode!r}")

    def __str__(self) -> str:
        names = MINOR_NAMES if self.mode == "minor" else TONIC_NAMES
        return f"{names[self.tonic]} {self.mode}"


@dataclass(frozen=True)
class Controls:
    """What a song asks for besides its words; None = not asked."""

    bpm: float | None = None
    key: Key | None = None
    beats_per_bar: int | None = None
    drums: str | None = None  # among DRUMS
    form: tuple[Section, ...] | None = None  # the sections, in seconds from the piece's 0 s
    chords: tuple[Section, ...] | None = None  # (chord name, start s, end s) from the piece's 0 s (`salong.chords`)

    @property
    def empty(self) -> bool:
        return (self.bpm is None and self.key is None and self.beats_per_bar is None and self.drums is None
                and self.form is None and self.chords is None)

    def record(self) -> dict:
        """JSON-ready values for a song's recipe (only those given)."""
        out: dict = {}
        if self.bpm is not None:
            out["bpm"] = self.bpm
        if self.key is not None:
            out["key"] = str(self.key)
        if self.beats_per_bar is not None:
            out["meter"] = f"{self.beats_per_bar}/4"
        if self.drums is not None:
            out["drums"] = self.drums
        if self.form is not None:  # as a metadata line gives them
            out["sections"] = [{"name": name, "start": start, "end": end} for name, start, end in self.form]
        if self.chords is not None:
            out["chords"] = [{"name": name, "start": start, "end": end} for name, start, end in self.chords]
        return out


# --- reading values ---------------------------------------------------------------------------

_ACCIDENTAL = r"(?:#|♯|b|♭|-?\s?sharp|-?\s?flat)"
_TONIC = rf"(?P<letter>[A-Ga-g])(?P<acc>{_ACCIDENTAL})?"
_MODE_WORDS = {"major": "major", "maj": "major", "minor": "minor", "min": "minor", "m": "minor", "": "major"}
_KEY_VALUE = re.compile(rf"^\s*{_TONIC}\s*[-_ ]?\s*(?P<mode>major|minor|maj|min|m|)\s*$", re.IGNORECASE)


def _pitch_class(letter: str, accidental: str | None) -> int:
    shift = 0
    if accidental:
        acc = accidental.lower().replace("-", "").replace(" ", "")
        shift = 1 if acc in ("#", "♯", "sharp") else -1
    return (_LETTERS[letter.upper()] + shift) % 12


def parse_key(value: str) -> Key:
    """A key as musicians write it: "A minor", "F# minor", "Bb major", "E flat major",
    "C#m", "Am", "Ebmaj", "D" (major). One-line error otherwise."""
    if isinstance(value, Key):
        return value
    text = str(value)
    m = _KEY_VALUE.match(text)
    # "m" alone means minor only right after the tonic ("Am", "F#m"), never "M".
    if m is None or (m.group("mode") == "M"):
        raise SalongError(f"--key {text!r} is not a key; give a tonic A-G with an optional # or b and major or "
                          "minor, e.g. 'A minor', 'F# major', 'Bb minor', 'C#m'")
    return Key(_pitch_class(m.group("letter"), m.group("acc")), _MODE_WORDS[m.group("mode").lower()])


def parse_bpm(value: object) -> float:
    """A tempo in beats per minute: a number, or text like "120" or "120 BPM". One-line error otherwise."""
    text = str(value).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(?:bpm)?", text, re.IGNORECASE)
    bpm = float(m.group(1)) if m else math.nan
    if not (isinstance(value, (int, float, str)) and not isinstance(value, bool)) or not MIN_BPM <= bpm <= MAX_BPM:
        raise SalongError(f"--bpm must be a tempo from {MIN_BPM:g} to {MAX_BPM:g} beats per minute, e.g. 120, "
                          f"got {text!r}")
    return round(bpm, 3)


_DRUM_WORDS = {"none": "none", "no": "none", "off": "none", "no-drums": "none", "drumless": "none",
               "on": "on", "yes": "on", "drums": "on", "four-on-the-floor": "four-on-the-floor",
               "4-on-the-floor": "four-on-the-floor", "backbeat": "backbeat", "back-beat": "backbeat",
               "shuffle": "shuffle", "breakbeat": "breakbeat", "break-beat": "breakbeat"}


def parse_drums(value: object) -> str:
    """Drums as asked: "none" (also no, off), "on" (yes), or a groove among GROOVES
    ("four on the floor", "back beat" ... spelled loosely). One-line error otherwise."""
    text = str(value).strip()
    word = re.sub(r"[\s_-]+", "-", text.lower())
    if not isinstance(value, str) or word not in _DRUM_WORDS:
        raise SalongError(f"--drums {text!r} is not a drums choice; give none, on, or a groove: {', '.join(GROOVES)}")
    return _DRUM_WORDS[word]


_SECTION_NAMES = {"intro": "intro", "a": "A", "b": "B", "a'": "A'", "a’": "A'", "a2": "A'", "outro": "outro"}
FORM_EXAMPLE = "\"intro 4, A 16, B 16, A' 16, outro 4\""


def _form_error(text: str, problem: str) -> SalongError:
    return SalongError(f"--form {text!r}: {problem}; give auto, none, or sections in bars among intro, A, B, "
                       f"A' (or A2), outro, e.g. {FORM_EXAMPLE}")


def parse_form(value: object) -> str | tuple[tuple[str, int], ...]:
    """A form as asked: "auto" (the synth's rule at the song's length and tempo), "none", or
    sections and their bars, "intro 4, A 16, B 16, A' 16, outro 4" (also "intro:4 A:16 ...",
    A2 for A', names in any case). One-line error otherwise."""
    text = str(value).strip()
    if not isinstance(value, str):
        raise _form_error(text, "is not text")
    if text.lower() in ("auto", "none"):
        return text.lower()
    tokens = [t for t in re.split(r"[\s,;:=]+", text) if t]
    if not tokens:
        raise _form_error(text, "names no section")
    sections = []
    for i in range(0, len(tokens), 2):
        name = _SECTION_NAMES.get(tokens[i].lower())
        if name is None:
            problem = (f"{tokens[i]!r} follows no section" if re.fullmatch(r"[0-9]+", tokens[i])
                       else f"{tokens[i]!r} is not a section")
            raise _form_error(text, problem)
        if i + 1 == len(tokens):
            raise _form_error(text, f"{name} has no bars")
        bars = tokens[i + 1]
        if not re.fullmatch(r"[0-9]+", bars) or not 1 <= int(bars) <= MAX_SECTION_BARS:
            raise _form_error(text, f"{name} {bars!r} is not a whole number of bars from 1 to {MAX_SECTION_BARS}")
        sections.append((name, int(bars)))
    if len(sections) > MAX_FORM_SECTIONS:
        raise _form_error(text, f"{len(sections)} sections are more than {MAX_FORM_SECTIONS}")
    return tuple(sections)


def parse_sections(value: object) -> tuple[Section, ...]:
    """Sections as a metadata line gives them, in seconds and in order, as the synth writes
    them: [{"name": "intro", "start": 0.0, "end": 8.0}, ...] (names spelled as for --form).
    One-line error otherwise."""
    entries = value if isinstance(value, list) and 0 < len(value) <= MAX_FORM_SECTIONS else None
    sections: list[Section] = []
    for entry in entries or ():
        if not isinstance(entry, dict) or set(entry) != {"name", "start", "end"}:
            break
        name, start, end = _SECTION_NAMES.get(str(entry["name"]).lower()), entry["start"], entry["end"]
        times = [t for t in (start, end) if isinstance(t, (int, float)) and not isinstance(t, bool)
                 and math.isfinite(t)]
        if name is None or len(times) < 2 or not (sections[-1][2] if sections else 0.0) <= start < end:
            break
        sections.append((name, float(start), float(end)))
    if entries is None or len(sections) < len(entries):
        raise SalongError(f"sections {value!r} are not sections; give a list of {{\"name\", \"start\", \"end\"}} "
                          "in seconds, in order, named intro, A, B, A' or outro")
    return tuple(sections)


def song_form(form: str | tuple[tuple[str, int], ...], seconds: float, bpm: float | None = None,
              beats_per_bar: int | None = None) -> tuple[tuple[str, int], ...] | None:
    """The sections and their bars a song of `seconds` plays for `form` (`parse_form`), at
    `bpm` in `beats_per_bar`/4 (120 BPM, 4/4 where not given); None for "none".

    "auto" is the synth corpus's rule (`form_bars`): intro, A, B, A', outro from
    LONG_FORM_SECONDS on, else one A. Listed sections are scaled by one factor to the song's
    bars (its last bar counted whole), each bound rounded to a bar line: the last section
    ends with the song, and one scaled to no bars is left out. Sections that already fill
    the song's bars stay as they are, so a recorded form (`form_text`) gives itself back."""
    from salong.synth.attributes import form_bars  # here: the synth's package is not needed to read controls

    if form == "none":
        return None
    bpm, beats = bpm or REFERENCE_BPM, beats_per_bar or 4
    if form == "auto":
        return tuple((name, end - first) for name, first, end in form_bars(seconds, bpm, beats))
    bar_s = beats * (60.0 / bpm)
    song_bars = max(1, math.ceil(seconds / bar_s - 1e-9))  # as `form_bars` counts them
    total = sum(bars for _, bars in form)
    scaled, done, at = [], 0, 0
    for name, bars in form:
        done += bars
        end = (2 * done * song_bars + total) // (2 * total)  # done * song_bars / total to the nearest bar
        if end > at:
            scaled.append((name, end - at))
            at = end
    return tuple(scaled)


def form_sections(bars: tuple[tuple[str, int], ...], seconds: float, bpm: float | None = None,
                  beats_per_bar: int | None = None) -> tuple[Section, ...]:
    """(name, start s, end s) of sections in bars laid from 0 s, the last cut at `seconds`
    (as `salong.synth.attributes.form_plan`)."""
    bar_s = (beats_per_bar or 4) * (60.0 / (bpm or REFERENCE_BPM))
    sections, first = [], 0
    for name, count in bars:
        sections.append((name, first * bar_s, min((first + count) * bar_s, seconds)))
        first += count
    return tuple(sections)


def form_text(bars: tuple[tuple[str, int], ...]) -> str:
    """Sections in bars as --form takes them: "intro 4, A 16, B 16, A' 16, outro 4"."""
    return ", ".join(f"{name} {count}" for name, count in bars)


def parse_meter(value: object) -> int:
    """Beats per bar from "3/4", "4/4", "3" ... One-line error otherwise."""
    text = str(value).strip()
    m = re.fullmatch(r"(\d+)(?:\s*/\s*4)?", text)
    beats = int(m.group(1)) if m else 0
    if not MIN_BEATS <= beats <= MAX_BEATS:
        raise SalongError(f"--meter must be beats per bar in quarter notes, {MIN_BEATS}/4 to {MAX_BEATS}/4 "
                          f"(e.g. 4/4 or 3/4), got {text!r}")
    return beats


# --- reading the prompt -----------------------------------------------------------------------

_NUMBER = r"(?P<bpm>\d{2,3}(?:\.\d+)?)"
_TEMPO_PATTERNS = (
    re.compile(rf"(?<![\d.]){_NUMBER}\s*-?\s*(?:bpm\b|b\.p\.m\.?|beats\s+(?:per|a)\s+minute\b)", re.IGNORECASE),
    re.compile(rf"\btempo(?:\s+of|\s*[:=])?\s*{_NUMBER}(?![\d.])", re.IGNORECASE),
    re.compile(rf"(?:♩|\bq)\s*=\s*{_NUMBER}(?![\d.])", re.IGNORECASE),
)
_TEMPO_RANGE = re.compile(r"(?<![\d.])(\d{2,3})\s*(?:-|–|to)\s*(\d{2,3})\s*-?\s*(?:bpm\b|beats\s+per\s+minute\b)",
                          re.IGNORECASE)
_MODE = r"(?P<mode>major|minor|maj|min)\b"
_KEY_PATTERNS = (
    # "A minor", "F# major", "Bb min", "E flat major"; a lower-case tonic only after "in" or "key of"
    re.compile(rf"(?<![\w#♯♭])(?P<letter>[A-G])(?P<acc>{_ACCIDENTAL})?(?:\s*-\s*|\s+)?{_MODE}"),
    re.compile(rf"\b(?:in|key\s+of)\s+(?:the\s+key\s+of\s+)?(?P<letter>[a-g])(?P<acc>{_ACCIDENTAL})?"
               rf"(?:\s*-\s*|\s+){_MODE}", re.IGNORECASE),
    # "Am", "F#m", "Bbm": only with an accidental or after "in" / "key"
    re.compile(r"(?<![\w#♯♭])(?P<letter>[A-G])(?P<acc>#|♯|b|♭)(?P<mode>m)\b"),
    re.compile(r"\b(?:in|key(?:\s+of|:)?)\s+(?P<letter>[A-G])(?P<acc>#|♯|b|♭)?(?P<mode>m)\b"),
    # "key of C", "key: F#": major unless a mode follows
    re.compile(r"\bkey(?:\s+of|\s*:)\s*(?P<letter>[A-Ga-g])(?P<acc>#|♯|b|♭|\s?sharp|\s?flat)?(?!\w)(?P<mode>)",
               re.IGNORECASE),
)
_METER_PATTERNS = (
    (re.compile(r"(?<![\d/])(?P<beats>[2-9]|1[0-2])\s*/\s*4(?![\d/])"), None),
    (re.compile(r"\b(?:common\s+time)\b", re.IGNORECASE), 4),
    (re.compile(r"\b(?:triple\s+meter|triple\s+time|waltz(?:es)?)\b", re.IGNORECASE), 3),
)


# Drums: "no drums", "without percussion", "drumless"; a groove by name; drums at all.
_NO_DRUMS = re.compile(r"\b(?:no|without(?:\s+any)?|zero)\s+(?:drums?|percussion|drum\s+kit|beats?)\b"
                       r"|\b(?:drum|percussion|beat)(?:-|\s)?(?:less|free)\b", re.IGNORECASE)
_KIT = r"(?:[-\s]+(?:drums?|groove|beat|rhythm))?\b"  # "backbeat drums": the groove's span takes the noun
_GROOVE_PATTERNS = (
    ("four-on-the-floor", re.compile(r"\b(?:four|4)[-\s]+on[-\s]+the[-\s]+floor" + _KIT, re.IGNORECASE)),
    ("backbeat", re.compile(r"\bback[-\s]?beats?" + _KIT, re.IGNORECASE)),
    ("shuffle", re.compile(r"\b(?:swung\s+)?shuffled?" + _KIT, re.IGNORECASE)),
    ("breakbeat", re.compile(r"\bbreak[-\s]?beats?" + _KIT, re.IGNORECASE)),
)
_DRUMS_WORD = re.compile(r"(?<!steel )(?<!steel-)\b(?:drums?|drumming|drum\s+kit|percussion)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Stated:
    """What a prompt states, with where: `spans` maps "bpm" / "key" / "drums" to (start, end)
    in the prompt."""

    controls: Controls
    spans: dict


def _scan(prompt: str) -> dict[str, list[tuple[object, tuple[int, int]]]]:
    """Every tempo, key and meter the prompt states, with its span."""
    ranges = _TEMPO_RANGE.search(prompt)
    if ranges:
        raise SalongError(f"the prompt states a tempo range ({ranges.group(0)}); state one tempo, or choose with --bpm")
    tempos: list = []
    for pattern in _TEMPO_PATTERNS:
        tempos += [(float(m.group("bpm")), m.span()) for m in pattern.finditer(prompt)]
    keys: list = []
    for pattern in _KEY_PATTERNS:
        for m in pattern.finditer(prompt):
            span = m.span("letter")[0], m.span()[1]
            if any(a < span[1] and span[0] < b for _, (a, b) in keys):
                continue  # an earlier pattern read this text already
            mode = _MODE_WORDS[m.group("mode").lower()] if m.group("mode") else "major"
            keys.append((Key(_pitch_class(m.group("letter"), m.group("acc")), mode), span))
    meters: list = []
    for pattern, beats in _METER_PATTERNS:
        meters += [(beats or int(m.group("beats")), m.span()) for m in pattern.finditer(prompt)]
    drums: list = [("none", m.span()) for m in _NO_DRUMS.finditer(prompt)]
    for groove, pattern in _GROOVE_PATTERNS:
        drums += [(groove, m.span()) for m in pattern.finditer(prompt)]
    drums += [("on", m.span()) for m in _DRUMS_WORD.finditer(prompt)
              if not any(a <= m.start() < b for v, (a, b) in drums if v == "none")]  # not the "drums" of "no drums"
    return {"bpm": tempos, "key": keys, "meter": meters, "drums": sorted(drums, key=lambda d: d[1])}


_FLAGS = {"bpm": "--bpm", "key": "--key", "meter": "--meter", "drums": "--drums"}


def _one_drums(found: list[tuple[str, tuple[int, int]]]) -> tuple[str | None, tuple[int, int] | None]:
    """The drums a prompt asks for, with the span that says so: "no drums" wins over a groove
    word alone ("no drums, a shuffle feel"), a groove over plain "drums"; "no drums" beside
    "drums" elsewhere, or two grooves, is a one-line error."""
    values = {v for v, _ in found}
    if "none" in values and "on" in values:
        raise SalongError("the prompt asks for drums and for no drums; keep one, or choose with --drums")
    grooves = sorted(values - {"none", "on"}, key=GROOVES.index)
    if "none" not in values and len(grooves) > 1:
        raise SalongError(f"the prompt names two grooves ({' and '.join(grooves)}); keep one, or choose with --drums")
    value = "none" if "none" in values else grooves[0] if grooves else "on" if values else None
    return value, next((span for v, span in found if v == value), None)


def _one(found: list[tuple[object, tuple[int, int]]], what: str) -> tuple[object, tuple[int, int] | None]:
    """The single value stated (or None), or a one-line error naming the different ones."""
    values = list(dict.fromkeys(v for v, _ in found))
    if len(values) > 1:
        shown = " and ".join(f"{v:g} BPM" if isinstance(v, float) else str(v) for v in values)
        noun = {"bpm": "tempos", "key": "keys", "meter": "meters"}[what]
        raise SalongError(f"the prompt states two {noun} ({shown}); keep one, or choose with {_FLAGS[what]}")
    if values and what == "bpm" and not MIN_BPM <= values[0] <= MAX_BPM:
        raise SalongError(f"the prompt's tempo {values[0]:g} BPM is outside {MIN_BPM:g}-{MAX_BPM:g}; "
                          "change it, or choose with --bpm")
    return (values[0], found[0][1]) if values else (None, None)


def read_prompt(prompt: str) -> Stated:
    """The tempo, key and meter a prompt states ("at 120 BPM", "in F# minor", "in 3/4 time").

    Two different values of one control are a one-line error naming both."""
    found = _scan(prompt)
    bpm, bpm_span = _one(found["bpm"], "bpm")
    key, key_span = _one(found["key"], "key")
    beats, _ = _one(found["meter"], "meter")
    drums, drums_span = _one_drums(found["drums"])
    spans = {name: span for name, span in (("bpm", bpm_span), ("key", key_span), ("drums", drums_span))
             if span is not None}
    return Stated(Controls(bpm=bpm, key=key, beats_per_bar=beats, drums=drums), spans)


def resolve(prompt: str, bpm: object = None, key: object = None, meter: object = None,
            drums: object = None) -> Controls:
    """The controls of a request: flags (checked here) win over what the prompt states; what
    the prompt states about a control no flag covers must be one value."""
    flags = {"bpm": None if bpm is None else parse_bpm(bpm), "key": None if key is None else parse_key(key),
             "meter": None if meter is None else parse_meter(meter),
             "drums": None if drums is None else parse_drums(drums)}
    if flags["bpm"] is not None:
        found = _scan(re.sub(_TEMPO_RANGE, "", prompt))  # a flag settles a stated range too
    else:
        found = _scan(prompt)
    value = {name: flags[name] if flags[name] is not None
             else (_one_drums(found[name]) if name == "drums" else _one(found[name], name))[0] for name in flags}
    return Controls(bpm=value["bpm"], key=value["key"], beats_per_bar=value["meter"], drums=value["drums"])


# --- models without controls ------------------------------------------------------------------

def prompt_with_controls(prompt: str, controls: Controls, style: str = "salong", append: bool = True) -> str:
    """The prompt with the controls written in, for a model that reads them as words.

    A value the prompt states differently is replaced where it stands; one it does not
    state is appended (unless `append` is false), as salong's captions ("... at 120 BPM in
    A minor") or Stable Audio Open's tags (", 120 BPM, A minor") say it; a form as the
    synth's captions do (", with an intro, a contrasting middle section and an outro",
    `form_words`), unless the prompt speaks of intros, outros, verses or choruses itself."""
    stated = _read_prompt_lenient(prompt)
    text = prompt
    edits = []
    if controls.bpm is not None and "bpm" in stated.spans and stated.controls.bpm != controls.bpm:
        edits.append((stated.spans["bpm"], f"{controls.bpm:g} BPM"))
    if controls.key is not None and "key" in stated.spans and stated.controls.key != controls.key:
        edits.append((stated.spans["key"], str(controls.key)))
    if controls.drums is not None and "drums" in stated.spans and stated.controls.drums != controls.drums:
        edits.append((stated.spans["drums"], _drums_words(controls.drums)))
    for (start, end), new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    add_bpm = append and controls.bpm is not None and "bpm" not in stated.spans
    add_key = append and controls.key is not None and "key" not in stated.spans
    add_drums = append and controls.drums is not None and "drums" not in stated.spans
    form = form_words(controls.form) if append and not _FORM_STATED.search(prompt) else None
    tail = text.rstrip().rstrip(".")
    if style == "sao":
        parts = (([f"{controls.bpm:g} BPM"] if add_bpm else []) + ([str(controls.key)] if add_key else [])
                 + ([_drums_words(controls.drums)] if add_drums else []) + ([form] if form else []))
        return ", ".join([tail] + parts) if parts else text
    if add_bpm:
        tail += f" at {controls.bpm:g} BPM"
    if add_key:
        tail += f" in {controls.key}"
    if add_drums:
        tail += f" with {_drums_words(controls.drums)}"
    if form:
        tail += f", {form}"
    return tail if (add_bpm or add_key or add_drums or form) else text


# A prompt that speaks of its form already is not given the words again.
_FORM_STATED = re.compile(r"\b(?:intros?|outros?|middle\s+section|verses?|chorus(?:es)?)\b", re.IGNORECASE)


def form_words(sections: tuple[Section, ...] | None) -> str | None:
    """A form as the synth's captions say it ("with an intro, a contrasting middle section
    and an outro"), from the sections there are; None where there are no words for it (one
    A section, or none)."""
    names = {name for name, _, _ in sections or ()}
    parts = [words for name, words in (("intro", "an intro"), ("B", "a contrasting middle section"),
                                       ("outro", "an outro")) if name in names]
    if not parts:
        return None
    return "with " + (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1])


def _drums_words(drums: str) -> str:
    return {"none": "no drums", "on": "drums"}.get(drums, f"{drums} drums")


def _read_prompt_lenient(prompt: str) -> Stated:
    """`read_prompt`, with a conflicting control left out instead of refused."""
    try:
        return read_prompt(prompt)
    except SalongError:
        return Stated(Controls(), {})


# --- features for the DiT ---------------------------------------------------------------------


def beat_features(frames: int, latent_rate: float, bpm: float | None, beats_per_bar: int | None = None,
                  start_seconds: float = 0.0) -> torch.Tensor:
    """(frames, BEAT_FEATURES) float32: for each latent frame's centre, [1, log2(bpm/120),
    sin/cos of the beat phase, of twice the beat phase and of the bar phase], with a
    downbeat at time 0 of the piece; `start_seconds` is where the frames start in it (a
    training crop's offset). No tempo: all zero."""
    if bpm is None:
        return torch.zeros(frames, BEAT_FEATURES)
    beats_per_bar = beats_per_bar or 4
    seconds = start_seconds + (torch.arange(frames, dtype=torch.float64) + 0.5) / latent_rate  # (frames,)
    beats = seconds * (bpm / 60.0)
    angle = 2 * math.pi
    columns = [torch.ones_like(beats), torch.full_like(beats, math.log2(bpm / REFERENCE_BPM))]
    for phase in (beats, 2 * beats, beats / beats_per_bar):
        frac = torch.remainder(phase, 1.0)  # the phase in [0, 1): keeps float precision late in long songs
        columns += [torch.sin(angle * frac), torch.cos(angle * frac)]
    return torch.stack(columns, dim=-1).float()  # (frames, 8)


def key_features(key: Key | None) -> torch.Tensor:
    """(KEY_FEATURES,) float32: tonic one-hot, mode one-hot, the scale's pitch classes. No key: zeros."""
    out = torch.zeros(KEY_FEATURES)
    if key is None:
        return out
    out[key.tonic] = 1.0
    out[12 + MODES.index(key.mode)] = 1.0
    for step in SCALES[key.mode]:
        out[14 + (key.tonic + step) % 12] = 1.0
    return out


def drum_features(drums: str | None) -> torch.Tensor:
    """(DRUM_FEATURES,) float32: [drums, no drums, the groove one-hot]. Not asked: zeros."""
    out = torch.zeros(DRUM_FEATURES)
    if drums is None:
        return out
    out[1 if drums == "none" else 0] = 1.0
    if drums in GROOVES:
        out[2 + GROOVES.index(drums)] = 1.0
    return out


def form_features(frames: int, latent_rate: float, sections: tuple[Section, ...] | None,
                  start_seconds: float = 0.0) -> torch.Tensor:
    """(frames, FORM_FEATURES) float32: for each latent frame's centre, [1, the one-hot of
    its section, how far through the section it is, in [0, 1)]. A frame belongs to the last
    section that starts at or before it, so one past the last section's end belongs to the
    last; `start_seconds` is where the frames start in the piece (a training crop's offset,
    an edit's window). No sections: all zero."""
    out = torch.zeros(frames, FORM_FEATURES)
    if not sections:
        return out
    seconds = start_seconds + (torch.arange(frames, dtype=torch.float64) + 0.5) / latent_rate  # (frames,)
    starts = torch.tensor([start for _, start, _ in sections], dtype=torch.float64)  # (S,)
    ends = torch.tensor([end for _, _, end in sections], dtype=torch.float64)  # (S,)
    index = (torch.searchsorted(starts, seconds, right=True) - 1).clamp(0, len(sections) - 1)  # (frames,)
    names = torch.tensor([FORM_SECTIONS.index(name) for name, _, _ in sections])  # (S,)
    progress = (seconds - starts[index]) / (ends[index] - starts[index])  # (frames,)
    out[:, 0] = 1.0
    out[torch.arange(frames), 1 + names[index]] = 1.0
    out[:, -1] = progress.clamp(0.0, 1.0 - 2.0**-24).float()  # below 1 in float32 too
    return out
