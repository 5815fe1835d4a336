"""Audio in and out: read what libsndfile reads, resample with soxr, write atomically.

Audio arrays are float32 numpy arrays shaped (channels, samples).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import soundfile as sf
import soxr

from salong.outputs import is_stream, staged, write_atomic
from salong.checks import refuse_special
from salong.errors import SalongError
from salong.mastering import DEFAULT_PEAK_DB, normalise_loudness, subtype

# Output extension -> (libsndfile format, subtype at the default bit depth). WAV and FLAC take
# 16, 24 (the default) or 32-bit float (WAV only) samples (`salong.mastering.subtype`);
# Vorbis and MP3 are lossy and only for listening.
WRITE_FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("WAV", subtype("wav")),
    "flac": ("FLAC", subtype("flac")),
    "ogg": ("OGG", subtype("ogg")),
    "mp3": ("MP3", subtype("mp3")),
}

# The text tags libsndfile writes (`soundfile.SoundFile` attributes); which survive depends
# on the format (`salong.recipe` uses title, comment and software, kept by all four).
TAGS = ("title", "copyright", "software", "artist", "comment", "date", "album", "license", "tracknumber", "genre")

# Leaves a little headroom below full scale so lossy encoders do not overshoot.
PEAK_CEILING = 0.989  # about -0.1 dBFS


def native_path(path: str | Path) -> str | bytes:
    """`path` as libsndfile should get it: its bytes on disk. soundfile encodes a str strictly, so a
    UTF-8 name under LC_ALL=C (its bytes held as surrogates) would fail to open."""
    return str(path) if os.name == "nt" else os.fsencode(path)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read any file libsndfile reads (wav, flac, ogg, mp3, ...) as float32 (channels, samples)."""
    path = _readable(path)
    try:
        with _decoder_quiet():
            data, sample_rate = sf.read(native_path(path), dtype="float32", always_2d=True)  # (samples, channels)
    except (sf.LibsndfileError, sf.SoundFileError, RuntimeError, ValueError) as exc:
        raise _undecodable(path, exc) from None
    if data.shape[0] == 0:
        raise SalongError(f"audio file {str(path)!r} is empty (0 samples)")
    audio = np.ascontiguousarray(data.T)  # (channels, samples)
    if not np.isfinite(audio).all():
        raise SalongError(f"audio file {str(path)!r} holds NaN or infinite samples")
    return audio, int(sample_rate)


@dataclass(frozen=True)
class AudioInfo:
    """What an audio file's header says, without reading its samples."""

    frames: int
    sample_rate: int
    channels: int
    format: str  # libsndfile's words, e.g. "FLAC (Free Lossless Audio Codec)"
    tags: dict[str, str]  # title, comment, software, ... (`TAGS`), the empty ones left out

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def probe(path: str | Path) -> AudioInfo:
    """An audio file's length, rate, channels, format and text tags."""
    path = _readable(path)
    try:
        with _decoder_quiet(), sf.SoundFile(native_path(path)) as f:
            return AudioInfo(f.frames, f.samplerate, f.channels, f"{f.format_info}, {f.subtype_info}",
                             {k: v for k, v in f.copy_metadata().items() if v})
    except (sf.LibsndfileError, sf.SoundFileError, RuntimeError, ValueError) as exc:
        raise _undecodable(path, exc) from None


def _readable(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise SalongError(f"audio file {str(path)!r} not found; check the path")
    if path.is_dir():
        raise SalongError(f"{str(path)!r} is a directory; give an audio file")
    refuse_special(path, "audio file")
    if not os.access(path, os.R_OK):
        raise SalongError(f"audio file {str(path)!r} is not readable; check its permissions")
    return path


def _undecodable(path: Path, exc: Exception) -> SalongError:
    reason = str(exc).strip() or type(exc).__name__
    try:
        empty = path.is_file() and path.stat().st_size == 0
    except OSError:
        empty = False
    if empty:
        return SalongError(f"audio file {str(path)!r} is empty (0 bytes); give a file that holds audio")
    if "not a regular file" in reason or "does not exist" in reason:
        # libsndfile's words for any file it cannot open, though this one exists and is regular
        reason = "its contents are in no format libsndfile reads: damaged, or not audio"
    return SalongError(f"cannot decode {str(path)!r} as audio ({reason}); use wav, flac, ogg or mp3")


@contextlib.contextmanager
def _decoder_quiet() -> Iterator[None]:
    """The C decoders under libsndfile (libmpg123) print warnings about damaged files straight
    to stderr (fd 2); hold them back while a file is opened and read, so a bad file is one
    line, salong's."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        sys.stderr.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr (high quality), (channels, samples) in and out."""
    if from_rate == to_rate:
        return audio
    if from_rate <= 0 or to_rate <= 0:
        raise SalongError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    out = soxr.resample(audio.T, from_rate, to_rate, quality="HQ")  # (samples, channels)
    return np.ascontiguousarray(out.T, dtype=np.float32)


def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """Mono <-> stereo: mono is duplicated; extra channels are averaged down to mono or
    dropped beyond the first `channels` (the usual front left/right)."""
    have = audio.shape[0]
    if have == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=0, keepdims=True)
    if have == 1:
        return np.repeat(audio, channels, axis=0)
    if have > channels:
        return audio[:channels]
    raise SalongError(f"cannot turn {have}-channel audio into {channels} channels")


def load_audio(path: str | Path, sample_rate: int, channels: int) -> np.ndarray:
    """Read a file and bring it to a model's rate and channel count."""
    audio, rate = read_audio(path)
    return to_channels(resample(audio, rate, sample_rate), channels)


def peak_limit(audio: np.ndarray, ceiling: float = PEAK_CEILING) -> np.ndarray:
    """Scale down audio whose peak exceeds `ceiling` so it never clips or wraps.

    A single gain keeps the waveform (and its dynamics) intact; quieter audio is
    returned unchanged. Non-finite samples are an internal error, not clipped away.
    """
    assert np.isfinite(audio).all(), "non-finite audio reached the writer"
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= ceiling:
        return audio
    return (audio * (ceiling / peak)).astype(np.float32)


def output_format(path: str | Path, fmt: str | None = None) -> str:
    """The output format from `fmt` or else the file extension (a stream without one, such as
    `-o -`: wav), validated."""
    name = (fmt or Path(path).suffix.lstrip(".") or ("wav" if is_stream(path) else "")).lower()
    if name not in WRITE_FORMATS:
        known = ", ".join(WRITE_FORMATS)
        what = f"format {fmt!r}" if fmt else f"output extension {Path(path).suffix or '(none)'!r}"
        raise SalongError(f"unknown {what} for {str(path)!r}; use one of: {known}")
    extension = Path(path).suffix.lstrip(".").lower()
    if fmt and extension in WRITE_FORMATS and extension != name:
        raise SalongError(f"--format {fmt} contradicts the extension of {str(path)!r}; drop --format or name the "
                          f"file .{name}")
    return name


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int, fmt: str | None = None,
                tags: Mapping[str, str] | None = None, *, bit_depth: str | None = None,
                loudness: float | None = None, peak_db: float | None = None, overwrite: bool = True,
                limit: bool = False) -> Path:
    """Write (channels, samples) audio atomically, format from the extension or `fmt`.

    The file appears complete or not at all: it is written to a temporary file in the
    same folder and renamed. NaN or infinite samples are refused. With `loudness` (LUFS)
    the audio is first brought to that integrated loudness under a true-peak ceiling of
    `peak_db` dBTP (`salong.mastering.normalise_loudness`; with `limit`, peaks the gain would lift
    over it are limited, so the target is reached); either way, audio that would
    clip is peak-limited. WAV and FLAC get `bit_depth` "16", "24" (None: the default) or
    "32f" (WAV only); ogg and mp3 have no bit depth and ignore it. `tags` are libsndfile's
    text fields (title, comment, software, artist, date, ...). Without `overwrite`, a file that
    appears at `path` meanwhile is kept and this fails (`salong.outputs.commit_atomic`).
    """
    name = output_format(path, fmt)
    subtype(name, bit_depth)  # a bad bit depth fails before any work
    if audio.ndim != 2 or audio.shape[1] == 0:
        raise SalongError(f"refusing to write {str(path)!r}: audio must be (channels, samples) and non-empty")
    audio = np.asarray(audio, dtype=np.float32)
    bad = int(np.size(audio) - np.count_nonzero(np.isfinite(audio)))
    if bad:
        raise SalongError(f"refusing to write {str(path)!r}: its audio holds {bad} NaN or infinite samples "
                          "(try another seed or a lower --cfg-scale)")
    if loudness is not None:
        peak = DEFAULT_PEAK_DB if peak_db is None else peak_db
        audio = normalise_loudness(audio, sample_rate, loudness, peak, name=repr(str(path)), limit=limit)
    data = np.ascontiguousarray(peak_limit(audio).T)  # (samples, channels)
    return write_atomic(path, lambda tmp: _write_sound(tmp, path, name, sample_rate, data.shape[1], bit_depth, tags,
                                                       [data]),
                        suffix=f".{name}.part", overwrite=overwrite)


SPILL_BLOCK = 1 << 18  # samples a channel read back at a time by `write_audio_blocks`


def write_audio_blocks(path: str | Path, blocks: Iterable[np.ndarray], sample_rate: int, fmt: str | None = None,
                       tags: Mapping[str, str] | None = None, *, bit_depth: str | None = None,
                       overwrite: bool = True) -> Path:
    """`write_audio` of audio that arrives as consecutive (channels, n) blocks, holding one block at a
    time: the same file, byte for byte, without loudness normalisation.

    The peak limit needs the whole signal's peak before the first sample is written, so the
    blocks go first to an anonymous float32 spill file beside the temporary output (on disk,
    4 bytes a sample, gone when this returns), then are read back, scaled and written. NaN or
    infinite samples are refused and nothing is written, as by `write_audio`.
    """
    name = output_format(path, fmt)
    subtype(name, bit_depth)
    with staged(path, f".{name}.part", overwrite) as tmp, tempfile.TemporaryFile(dir=tmp.parent) as spill:
        channels, samples, bad, peak = 0, 0, 0, 0.0
        for block in blocks:
            block = np.asarray(block, dtype=np.float32)  # (C, n)
            assert block.ndim == 2 and channels in (0, block.shape[0]), (block.shape, channels)
            channels, samples = block.shape[0], samples + block.shape[1]
            bad += int(np.size(block) - np.count_nonzero(np.isfinite(block)))
            if block.size and not bad:
                peak = max(peak, float(np.max(np.abs(block))))
            spill.write(np.ascontiguousarray(block.T).tobytes())  # (n, C) interleaved
        if not samples:
            raise SalongError(f"refusing to write {str(path)!r}: audio must be (channels, samples) and non-empty")
        if bad:
            raise SalongError(f"refusing to write {str(path)!r}: its audio holds {bad} NaN or infinite samples "
                              "(try another seed or a lower --cfg-scale)")
        spill.seek(0)
        gain = PEAK_CEILING / peak if peak > PEAK_CEILING else None  # `peak_limit`'s one gain

        def read_back() -> Iterator[np.ndarray]:
            while data := spill.read(SPILL_BLOCK * channels * 4):
                data = np.frombuffer(data, dtype=np.float32).reshape(-1, channels)  # (n, C)
                yield data if gain is None else (data * gain).astype(np.float32)

        _write_sound(tmp, path, name, sample_rate, channels, bit_depth, tags, read_back())
    return Path(path)


def _write_sound(tmp: Path, path: str | Path, name: str, sample_rate: int, channels: int, bit_depth: str | None,
                 tags: Mapping[str, str] | None, blocks: Iterable[np.ndarray]) -> None:
    """Write (samples, channels) `blocks` into the temporary file `tmp` of output `path` as format `name`."""
    assert set(tags or {}) <= set(TAGS), f"unknown tags {sorted(set(tags or {}) - set(TAGS))}"
    try:
        with sf.SoundFile(native_path(tmp), "w", sample_rate, channels, subtype(name, bit_depth),
                          format=WRITE_FORMATS[name][0]) as f:
            for key, value in (tags or {}).items():
                setattr(f, key, value)  # before the samples: some formats write tags in the header
            for data in blocks:
                f.write(data)
    except (sf.LibsndfileError, sf.SoundFileError) as exc:
        raise SalongError(f"could not write {str(path)!r} ({str(exc).strip()}); is the disk full?") from None
