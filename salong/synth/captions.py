"""Captions written from a piece's attributes, in varied wording and order."""

from __future__ import annotations

import numpy as np

from salong.synth.attributes import PieceAttributes


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
