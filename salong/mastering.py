"""Audio out for a DAW: the sample format of a WAV or FLAC file (`--bit-depth`) and loudness
normalisation under a true-peak ceiling (`--loudness`, `--peak-db`).

Loudness is integrated loudness after ITU-R BS.1770-4 (K-weighting, 400 ms blocks, absolute
and relative gates), measured with pyloudnorm, in LUFS. True peak is the peak of the signal
oversampled 4x (BS.1770-4 Annex 2; soxr's band-limited resampler as the interpolator), in dBTP.
Normalising applies one gain to the whole song, so its dynamics are kept; where the gain that
reaches the target would lift the true peak over the ceiling, the ceiling wins and a warning
says what loudness the song got, unless the limiter is asked for (`limit`): then the peaks
over the ceiling are turned down (`limit_true_peak`, a look-ahead limiter on the 4x
oversampled signal) and the target is reached.

    audio = normalise_loudness(audio, 44100, lufs=-14.0, peak_db=-1.0)
    levels = measure(audio, 44100)  # Levels(lufs=-14.0, true_peak_db=-3.2)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from salong.checks import is_real
from salong.errors import SalongError

# --- bit depth ---------------------------------------------------------------------------

# 24-bit integer PCM: every DAW, sampler and player reads it, and FLAC holds it too, so one
# default serves both lossless formats; its round-trip error (at most 2^-23 of full scale,
# -138 dBFS) is far below anything a song holds. 32-bit float adds headroom a peak-limited
# song never uses.
BIT_DEPTHS = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}  # --bit-depth -> libsndfile subtype
DEFAULT_BIT_DEPTH = "24"
LOSSY_SUBTYPES = {"ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}  # no bit depth: --bit-depth is ignored
FLAC_DEPTHS = ("16", "24")  # FLAC stores integers only


def check_bit_depth(depth: Any) -> str:
    """A `--bit-depth` as its name ("16", "24" or "32f"; the ints 16 and 24 are taken too), or a one-line error."""
    name = str(depth) if isinstance(depth, (str, int)) and not isinstance(depth, bool) else None
    if name not in BIT_DEPTHS:
        raise SalongError(f"--bit-depth must be 16, 24 or 32f (32-bit float, WAV only), got {depth!r}")
    return name


def written_bit_depth(fmt: str, depth: str | None) -> str | None:
    """The bit depth a file of format `fmt` gets for `--bit-depth` `depth` (None: the default):
    None for ogg and mp3, which have none; a one-line error for 32f in FLAC."""
    if fmt in LOSSY_SUBTYPES:
        return None
    depth = DEFAULT_BIT_DEPTH if depth is None else check_bit_depth(depth)
    if fmt == "flac" and depth not in FLAC_DEPTHS:
        raise SalongError(f"--bit-depth {depth} is not a FLAC sample format (FLAC stores 16 or 24 bits); "
                          "write .wav for 32-bit float, or give --bit-depth 24")
    return depth


def subtype(fmt: str, depth: str | None = None) -> str:
    """The libsndfile subtype of format `fmt` ("wav", "flac", "ogg", "mp3") at `--bit-depth` `depth`."""
    written = written_bit_depth(fmt, depth)
    return LOSSY_SUBTYPES[fmt] if written is None else BIT_DEPTHS[written]


# --- loudness ----------------------------------------------------------------------------

LOUDNESS_RANGE = (-70.0, 0.0)  # LUFS: BS.1770's absolute gate, and full scale
PEAK_RANGE = (-20.0, 0.0)  # dBTP
DEFAULT_PEAK_DB = -1.0  # the usual streaming ceiling: headroom for lossy encoders' overshoot
BLOCK_SECONDS = 0.4  # BS.1770's gating block: shorter audio has no loudness
OVERSAMPLE = 4  # BS.1770-4 Annex 2: true peak from the signal at 4x its rate
MARGIN_DB = 0.01  # aim this far under the ceiling, so rounding to 16 bits cannot cross it
LIMITER_HOLD_SECONDS = 0.005  # the limiter's gain falls over this much before a peak and recovers over as much after
LIMITER_PASSES = 4  # limiter passes before one final gain settles what is left over the ceiling
LOUDNESS_TOLERANCE = 0.1  # LU: how near a limited song's loudness is brought to the target
LOUDNESS_SPEC_TOLERANCE = 0.5  # LU: a limited song further than this from the target gets a warning


def check_loudness(lufs: Any) -> float:
    if not (is_real(lufs) and LOUDNESS_RANGE[0] <= lufs <= LOUDNESS_RANGE[1]):
        raise SalongError(f"--loudness must be an integrated loudness from {LOUDNESS_RANGE[0]:g} to "
                          f"{LOUDNESS_RANGE[1]:g} LUFS (-14 for streaming, -23 for broadcast), got {lufs!r}")
    return float(lufs)


def check_peak_db(peak_db: Any) -> float:
    if not (is_real(peak_db) and PEAK_RANGE[0] <= peak_db <= PEAK_RANGE[1]):
        raise SalongError(f"--peak-db must be a true-peak ceiling from {PEAK_RANGE[0]:g} to {PEAK_RANGE[1]:g} "
                          f"dBTP (-1 is the usual), got {peak_db!r}")
    return float(peak_db)


@dataclass(frozen=True)
class Levels:
    """A song's integrated loudness (LUFS; -inf for silence) and true peak (dBTP; -inf for silence)."""

    lufs: float
    true_peak_db: float


def _finite(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[1] == 0:
        raise SalongError("audio must be (channels, samples) and non-empty")
    if not np.isfinite(audio).all():
        raise SalongError("the audio holds NaN or infinite samples")
    return audio


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """BS.1770-4 integrated loudness of (channels, samples) audio, in LUFS (-inf for silence)."""
    import pyloudnorm  # here: it imports scipy, which nothing else on the way to a song needs

    audio = _finite(audio)
    if audio.shape[1] < BLOCK_SECONDS * sample_rate:
        raise SalongError(f"loudness needs at least {BLOCK_SECONDS:g} s of audio (one BS.1770 block), got "
                          f"{audio.shape[1] / sample_rate:.3f} s")
    if audio.shape[0] > 5:
        raise SalongError(f"loudness is measured for up to 5 channels, got {audio.shape[0]}")
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(audio.T.astype(np.float64)))  # (samples, ch)


def true_peak_db(audio: np.ndarray, sample_rate: int, chunk: int = 1 << 16) -> float:
    """The true peak of (channels, samples) audio in dBTP: the largest magnitude of the signal
    resampled to 4x its rate with soxr, a chunk at a time (a 285 s song is 400 MB at 4x)."""
    audio = _finite(audio)
    stream = soxr.ResampleStream(sample_rate, OVERSAMPLE * sample_rate, audio.shape[0], dtype="float32",
                                 quality="HQ")
    peak = float(np.max(np.abs(audio)))  # the samples themselves are points of the signal
    for start in range(0, audio.shape[1], chunk):
        last = start + chunk >= audio.shape[1]
        up = stream.resample_chunk(np.ascontiguousarray(audio[:, start:start + chunk].T), last=last)  # (4 n, ch)
        if up.size:
            peak = max(peak, float(np.max(np.abs(up))))
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def true_peak_envelope(audio: np.ndarray, sample_rate: int, chunk: int = 1 << 16) -> np.ndarray:
    """(samples,): at each sample, the largest magnitude over channels of the signal resampled to
    4x its rate (`true_peak_db`'s resampler) in the four points from that sample on."""
    audio = _finite(audio)
    n = audio.shape[1]
    stream = soxr.ResampleStream(sample_rate, OVERSAMPLE * sample_rate, audio.shape[0], dtype="float32",
                                 quality="HQ")
    parts = []
    for start in range(0, n, chunk):
        up = stream.resample_chunk(np.ascontiguousarray(audio[:, start:start + chunk].T), last=start + chunk >= n)
        parts.append(np.abs(up).max(axis=1) if up.size else np.zeros(0, np.float32))  # (4 chunk,)
    up = np.concatenate(parts)[: OVERSAMPLE * n]
    up = np.pad(up, (0, OVERSAMPLE * n - up.size))
    return np.maximum(up.reshape(n, OVERSAMPLE).max(axis=1), np.abs(audio).max(axis=0))  # (n,)


def limit_true_peak(audio: np.ndarray, sample_rate: int, peak_db: float = DEFAULT_PEAK_DB) -> np.ndarray:
    """`audio` under a true-peak ceiling of `peak_db` dBTP, by a gain that dips only around the
    samples over it (a look-ahead peak limiter), the same on every channel so the stereo image
    stays.

    The gain each sample needs (ceiling over its 4x-oversampled peak, at most 1) is held at
    its lowest for `LIMITER_HOLD_SECONDS` either side (a sliding minimum) and then averaged
    over the same span, so it starts falling before a peak and recovers after it, and, as a
    mean of values none above the need of the sample in the middle, never exceeds that need.
    Gain changes bend the band-limited signal a little, so the pass repeats on what is still
    over, and one final gain settles the rest. Audio under the ceiling is returned unchanged."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    audio = _finite(audio)
    ceiling = 10 ** ((check_peak_db(peak_db) - MARGIN_DB) / 20)
    width = 2 * max(1, round(LIMITER_HOLD_SECONDS * sample_rate)) + 1
    out = audio
    for _ in range(LIMITER_PASSES):
        envelope = true_peak_envelope(out, sample_rate)  # (samples,)
        if envelope.max() <= ceiling:
            return out
        need = np.minimum(1.0, ceiling / np.maximum(envelope, 1e-30))
        gain = uniform_filter1d(minimum_filter1d(need, width, mode="nearest"), width, mode="nearest")
        gain = np.minimum(gain, need)  # equal in exact arithmetic; the running mean's rounding may not be
        out = (out * gain[None, :]).astype(np.float32)  # (channels, samples)
    over = true_peak_db(out, sample_rate) - (peak_db - MARGIN_DB)
    return out if over <= 0 else (out * np.float32(10 ** (-over / 20))).astype(np.float32)


def measure(audio: np.ndarray, sample_rate: int) -> Levels:
    """A song's integrated loudness and true peak."""
    return Levels(integrated_loudness(audio, sample_rate), true_peak_db(audio, sample_rate))


def loudness_gain_db(levels: Levels, lufs: float, peak_db: float = DEFAULT_PEAK_DB) -> float:
    """The gain, dB, that brings a song at `levels` to `lufs` without lifting its true peak over
    `peak_db` (less `MARGIN_DB`); 0 for silence."""
    if not math.isfinite(levels.lufs):
        return 0.0
    return min(lufs - levels.lufs, peak_db - MARGIN_DB - levels.true_peak_db)


def normalise_loudness(audio: np.ndarray, sample_rate: int, lufs: float, peak_db: float = DEFAULT_PEAK_DB,
                       name: str = "the song", limit: bool = False) -> np.ndarray:
    """`audio` times one gain: at integrated loudness `lufs` (LUFS), or quieter where that would
    lift its true peak over `peak_db` (dBTP), with a warning naming `name` and the loudness it
    got. With `limit`, the peaks that the gain would lift over the ceiling are held under it
    by `limit_true_peak` instead, so the target is reached (the gain is raised again until
    the limited song is within `LOUDNESS_TOLERANCE` of it). Silence is returned as it is, with
    a warning. NaN or infinite samples are an error."""
    lufs, peak_db = check_loudness(lufs), check_peak_db(peak_db)
    try:
        levels = measure(audio, sample_rate)
    except SalongError as exc:
        raise SalongError(f"cannot set the loudness of {name}: {exc}") from None
    if not math.isfinite(levels.lufs):
        warnings.warn(f"{name} is silent (below the {LOUDNESS_RANGE[0]:g} LUFS gate); --loudness left it as it is")
        return np.asarray(audio, dtype=np.float32)
    if limit and lufs - levels.lufs > loudness_gain_db(levels, lufs, peak_db):
        return _limited_to(np.asarray(audio, dtype=np.float32), sample_rate, lufs, peak_db, levels.lufs, name)
    gain_db = loudness_gain_db(levels, lufs, peak_db)
    if gain_db < lufs - levels.lufs - 0.05:
        warnings.warn(f"{name} reached {levels.lufs + gain_db:.1f} LUFS, not {lufs:g}: louder would put its true "
                      f"peak over {peak_db:g} dBTP (one gain); ask for less --loudness, a higher --peak-db or "
                      "--limit")
    return (np.asarray(audio, dtype=np.float32) * np.float32(10 ** (gain_db / 20))).astype(np.float32)


def _limited_to(audio: np.ndarray, sample_rate: int, lufs: float, peak_db: float, measured: float,
                name: str) -> np.ndarray:
    """`audio` (at `measured` LUFS) raised to `lufs` with its peaks limited under `peak_db`:
    limiting lowers the loudness a little, so the gain is raised by what is missing and the
    limiter run again, a few times."""
    gain_db, out = lufs - measured, audio
    for _ in range(LIMITER_PASSES):
        out = limit_true_peak(audio * np.float32(10 ** (gain_db / 20)), sample_rate, peak_db)
        missing = lufs - integrated_loudness(out, sample_rate)
        if abs(missing) <= LOUDNESS_TOLERANCE:
            return out
        gain_db += missing
    if abs(missing) <= LOUDNESS_SPEC_TOLERANCE:
        return out
    warnings.warn(f"{name} reached {lufs - missing:.1f} LUFS, not {lufs:g}: limited under {peak_db:g} dBTP, its "
                  "peaks would need more gain reduction than a limiter gives; ask for less --loudness")
    return out
