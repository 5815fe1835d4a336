"""Seeded procedural music with exact captions: the project's test and training data.

A piece is a small arrangement (lead melody, chords, bass line, drums) in a key, at a
tempo, in a meter and, from 40 s on, in an intro-A-B-A'-outro form. Attributes are
drawn from a seed, the music is composed from them (diatonic triad progressions, a
phrase-structured melody on chord tones, bass and drum patterns on one beat grid) and
synthesised with small vectorised instruments (additive, FM, Karplus-Strong,
subtractive). The caption is written from the same attributes, so every fact it
states (tempo as "N BPM", key as "in X major/minor", instruments, drums, mood) is true
of the audio by construction.

Modules, in the order a piece is made: `attributes` (vocabularies, `PieceAttributes`,
their random draw, the section form), `compose` (notes and drum hits), `instruments`
(tone generators and the drum kit), `dsp` (filters, convolution, reverb), `mix`
(`render`: tracks to a stereo mix), `captions` (`caption_for`) and `corpus`
(`make_piece`, `write_corpus`).
"""

from salong.synth.attributes import (CHORD_SOUNDS, DRUM_STYLES, LEADS, LONG_FORM_SECONDS, LOUDNESS, MAX_BPM,
                                     MAX_SECONDS, METERS, MIN_BPM, MODES, PEAK_DBFS, SAMPLE_RATE, TONICS,
                                     PieceAttributes, mood_for, random_attributes)
from salong.synth.captions import caption_for
from salong.synth.corpus import (DURATION_LAWS, Piece, captions_for, make_piece, piece_length, recaption_corpus,
                                 write_corpus)
from salong.synth.mix import render

__all__ = [
    "CHORD_SOUNDS", "DRUM_STYLES", "DURATION_LAWS", "LEADS", "LONG_FORM_SECONDS", "LOUDNESS", "MAX_BPM",
    "MAX_SECONDS", "METERS", "MIN_BPM", "MODES", "PEAK_DBFS", "SAMPLE_RATE", "TONICS", "Piece",
    "PieceAttributes", "caption_for", "captions_for", "make_piece", "mood_for", "piece_length", "random_attributes",
    "recaption_corpus", "render", "write_corpus",
]
