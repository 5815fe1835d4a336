"""The timing condition and latent length of a stretch of audio: one rule for training and generation.

Stable Audio conditions the DiT on where a stretch of audio sits in its piece
(`seconds_start`) and how long the piece is (`seconds_total`), both in whole seconds
(docs/architecture.md, "Timing"). A training crop starting `offset` seconds into a
file of `duration` seconds gets `(floor(offset), ceil(duration))`; a request for S
seconds is the opening crop of an S-second piece, so it gets `(0, ceil(S))`. Its
length in latent frames is what the autoencoder makes of S seconds of audio, rounded
up to whole DiT patches: exactly the crop that covers such a file in training.
"""

from __future__ import annotations

import math

SAMPLE_RATE = 44100  # salong's audio: every model reads and writes 44.1 kHz


def timing_condition(start_seconds: float, total_seconds: float) -> tuple[float, float]:
    """`(seconds_start, seconds_total)` of audio starting `start_seconds` into a piece of
    `total_seconds`: the start rounded down and the length rounded up to whole seconds."""
    return float(math.floor(start_seconds)), float(math.ceil(total_seconds))


def request_timing(seconds: float) -> tuple[float, float]:
    """The timing condition of a request for `seconds` of audio: the opening of such a piece."""
    return timing_condition(0.0, seconds)


def audio_samples(seconds: float, sample_rate: int) -> int:
    """The samples `seconds` of audio hold: what a request's output is cut to."""
    return round(seconds * sample_rate)


def latent_frames(seconds: float, sample_rate: int, samples_per_latent: int, patch_size: int = 1) -> int:
    """Latent frames that hold `seconds` of audio (`audio_samples`), in whole patches."""
    frames = -(-audio_samples(seconds, sample_rate) // samples_per_latent)
    return -(-frames // patch_size) * patch_size
