"""Latent files: what `salong encode` writes and `salong decode` reads.

A latents file is a `.safetensors` file with one tensor, `latents` (latent_dim, frames),
and metadata that lets `decode` restore exactly the original audio shape: the sample
rate, the latent rate, the original sample count and channel count, and the weights
digest of the autoencoder that made them (`autoencoder`), so that decoding with another
one warns. `encode_file` streams the audio from disk (`AudioReader`): memory holds the
latents and one chunk of audio, not the file.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import soundfile as sf
import soxr
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from salong.audio import _undecodable, native_path, probe, resample, to_channels
from salong.checkpoint import FORMAT_KEY, FORMAT_VERSION, read_metadata, weights_digest
from salong.errors import SalongError, short_reason
from salong.outputs import write_atomic

LATENTS_KIND = "latents"
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Latents:
    """Latents of one piece of audio plus what is needed to restore its shape."""

    latents: torch.Tensor  # (latent_dim, frames)
    sample_rate: int
    latent_rate: float
    samples: int  # original length in samples at `sample_rate`
    channels: int  # original channel count
    source: str = ""
    autoencoder: str = ""  # `weights_digest` of the autoencoder that encoded them; "" if not recorded

    @property
    def latent_dim(self) -> int:
        return int(self.latents.shape[0])


def save_latents(path: str | Path, item: Latents, overwrite: bool = True) -> Path:
    """Write a latents file atomically (without `overwrite`, never over a file that appears meanwhile)."""
    metadata = {
        FORMAT_KEY: str(FORMAT_VERSION),
        "kind": LATENTS_KIND,
        "sample_rate": str(item.sample_rate),
        "latent_rate": repr(item.latent_rate),
        "samples": str(item.samples),
        "channels": str(item.channels),
        "latent_dim": str(item.latent_dim),
        "source": item.source,
        **({"autoencoder": item.autoencoder} if item.autoencoder else {}),
    }
    tensors = {"latents": item.latents.detach().to("cpu", torch.float32).contiguous()}
    return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), ".safetensors",
                        overwrite)


MAX_SAMPLE_RATE = 768_000  # the highest audio rate in use
MAX_CHANNELS = 64  # a latents file restores at most the autoencoder's channels; more is damage


def load_latents(path: str | Path) -> Latents:
    """Read a latents file written by `save_latents`, with clear errors otherwise."""
    meta = read_metadata(path)
    if meta.get("kind") != LATENTS_KIND:
        what = (f"a model checkpoint ({meta['kind']})" if "kind" in meta
                else "a safetensors file without salong latents metadata")
        raise SalongError(f"{str(path)!r} is {what}, not a latents file; make one with `salong encode`")
    try:
        with safe_open(str(path), framework="pt") as f:
            latents = f.get_tensor("latents")
        item = Latents(
            latents=latents,
            sample_rate=int(meta["sample_rate"]),
            latent_rate=float(meta["latent_rate"]),
            samples=int(meta["samples"]),
            channels=int(meta["channels"]),
            source=meta.get("source", ""),
            autoencoder=meta.get("autoencoder", ""),
        )
    except (KeyError, ValueError, RuntimeError, OSError, SafetensorError) as exc:
        raise SalongError(f"latents file {str(path)!r} is incomplete or corrupt ({short_reason(exc)}); "
                          "encode the audio again") from None
    if latents.ndim != 2 or latents.shape[1] < 1 or item.samples < 1 or item.channels < 1:
        raise SalongError(f"latents file {str(path)!r} has inconsistent shapes; encode the audio again")
    if not latents.is_floating_point() or not bool(torch.isfinite(latents).all()):
        raise SalongError(f"latents file {str(path)!r} holds NaN, infinite or non-float values; encode the audio again")
    # what `info` prints and `decode` allocates: rates, channels and no more samples than the frames hold
    frames = latents.shape[1]
    if not 1 <= item.sample_rate <= MAX_SAMPLE_RATE:
        problem = f"its sample rate {item.sample_rate} Hz is not from 1 to {MAX_SAMPLE_RATE}"
    elif not 0 < item.latent_rate <= item.sample_rate:  # NaN too
        problem = f"its latent rate {item.latent_rate!r} Hz is not above 0 and at most the sample rate"
    elif item.channels > MAX_CHANNELS:
        problem = f"it records {item.channels} channels, more than {MAX_CHANNELS}"
    elif item.samples > math.ceil(frames * item.sample_rate / item.latent_rate):
        problem = f"it records {item.samples} samples, more than its {frames} frames hold"
    else:
        return item
    raise SalongError(f"latents file {str(path)!r} is damaged: {problem}; encode the audio again")


def encode_audio(
    model: torch.nn.Module,
    audio: np.ndarray,
    sample_rate: int,
    sample: bool = False,
    progress: Progress | None = None,
    source: str = "",
) -> Latents:
    """Encode (channels, samples) audio at any rate with an autoencoder, chunked for long inputs."""
    cfg = model.config
    channels, _ = audio.shape
    model_audio = to_channels(resample(audio, sample_rate, cfg.sample_rate), cfg.audio_channels)
    x = torch.from_numpy(model_audio)[None]  # (1, C, N)
    with torch.inference_mode():
        z = model.encode_long(x, sample=sample, progress=progress)[0]  # (latent_dim, frames)
    return Latents(
        latents=z.float().cpu(),
        sample_rate=cfg.sample_rate,
        latent_rate=cfg.latent_rate,
        samples=model_audio.shape[1],
        # mono comes back as mono; more channels than the model's are mixed down for good
        channels=min(channels, cfg.audio_channels),
        source=source,
        autoencoder=weights_digest(model),
    )


class DownmixWarning(UserWarning):
    """An input had more channels than the autoencoder; it was mixed down."""


AUDIO_BLOCK = 1 << 16  # samples read from disk at a time


class AudioReader:
    """An audio file read forward in blocks, at a model's rate and channel count: what
    `Autoencoder.encode_stream` reads (`read`). Resampling streams too (soxr's stream gives
    the same samples as resampling the whole file at once), so memory holds a chunk, not
    the file. NaN or infinite samples are refused as `read_audio` refuses them."""

    def __init__(self, path: str | Path, sample_rate: int, channels: int) -> None:
        self.path = Path(path)
        info = probe(path)  # a missing, unreadable or undecodable file is a one-line error here
        if info.frames <= 0:
            raise SalongError(f"audio file {str(path)!r} is empty (0 samples)")
        self.source_rate, self.source_channels = info.sample_rate, info.channels
        self.sample_rate, self.channels = sample_rate, channels
        # soxr's output length: the input's at the new rate, rounded half up
        self.samples = (info.frames if info.sample_rate == sample_rate
                        else (2 * info.frames * sample_rate + info.sample_rate) // (2 * info.sample_rate))
        self._resampler = (None if info.sample_rate == sample_rate else
                           soxr.ResampleStream(info.sample_rate, sample_rate, info.channels, dtype="float32",
                                               quality="HQ"))
        self._buffer = np.zeros((channels, 0), dtype=np.float32)  # samples from _start on
        self._start = 0
        self._done = False
        try:
            self._file = sf.SoundFile(native_path(path))
        except (sf.LibsndfileError, sf.SoundFileError, RuntimeError, ValueError) as exc:
            raise _undecodable(self.path, exc) from None

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._file.close()

    def read(self, start: int, end: int) -> torch.Tensor:
        """Samples [start, end) as (1, channels, end - start) (fewer past the end); `start`
        never goes back before an earlier call's `start`."""
        assert start >= self._start, "read forward only"
        self._buffer = self._buffer[:, start - self._start:]
        self._start = start
        while self._start + self._buffer.shape[1] < end and not self._done:
            self._buffer = np.concatenate([self._buffer, self._block()], axis=1)
        return torch.from_numpy(np.ascontiguousarray(self._buffer[:, : end - start]))[None]

    def _block(self) -> np.ndarray:
        try:
            data = self._file.read(AUDIO_BLOCK, dtype="float32", always_2d=True)  # (samples, source channels)
        except (sf.LibsndfileError, sf.SoundFileError, RuntimeError, ValueError) as exc:
            raise _undecodable(self.path, exc) from None
        if not np.isfinite(data).all():
            raise SalongError(f"audio file {str(self.path)!r} holds NaN or infinite samples")
        self._done = len(data) < AUDIO_BLOCK
        if self._resampler is not None:
            data = self._resampler.resample_chunk(data, last=self._done)  # (samples, source channels)
        return to_channels(np.ascontiguousarray(data.T, dtype=np.float32), self.channels)  # (channels, samples)


def encode_file(model: torch.nn.Module, path: str | Path, sample: bool = False,
                progress: Progress | None = None) -> Latents:
    """Encode an audio file, streamed from disk (`AudioReader`); the original channel count is
    remembered (up to the model's: a 5.1 file is mixed down to stereo, with a warning, and
    decodes as stereo). The same latents as `encode_audio` of the whole file."""
    cfg = model.config
    with AudioReader(path, cfg.sample_rate, cfg.audio_channels) as reader:
        if reader.source_channels > cfg.audio_channels:
            warnings.warn(f"{Path(path).name} has {reader.source_channels} channels; it is mixed down to "
                          f"{cfg.audio_channels} and decodes as {cfg.audio_channels}-channel audio",
                          DownmixWarning, stacklevel=2)
        z = model.encode_stream(reader.read, reader.samples, sample=sample, progress=progress)[0]  # (latent_dim, T)
    name = os.fsencode(Path(path).name).decode("utf-8", "replace")  # metadata is UTF-8 text
    return Latents(latents=z.float().cpu(), sample_rate=cfg.sample_rate, latent_rate=cfg.latent_rate,
                   samples=reader.samples, channels=min(reader.source_channels, cfg.audio_channels), source=name,
                   autoencoder=weights_digest(model))


def autoencoder_change(item: Latents, model: torch.nn.Module, source: str) -> str | None:
    """A warning if `item` records an autoencoder other than `model`, else None."""
    now = weights_digest(model)
    if not item.autoencoder or item.autoencoder == now:
        return None
    return (f"{source} was encoded by an autoencoder of weights digest {item.autoencoder}, but --model's is {now}; "
            "another autoencoder decodes them to other audio; pass the one that encoded them with --model")


def decode_latents(model: torch.nn.Module, item: Latents, progress: Progress | None = None) -> np.ndarray:
    """Decode to (channels, samples) audio with the original length and channel count."""
    return np.concatenate(list(decode_blocks(model, item, progress)), axis=1)


def decode_blocks(model: torch.nn.Module, item: Latents, progress: Progress | None = None) -> Iterator[np.ndarray]:
    """`decode_latents` as consecutive blocks of (channels, n) audio, yielded as they decode
    (`Autoencoder.decode_stream`): memory holds a block, not the audio, so `salong decode`
    writes long latents to a file as it goes (`salong.audio.write_audio_blocks`). The
    latents are checked against the model before the first block."""
    cfg = model.config
    if item.latent_dim != cfg.latent_dim:
        raise SalongError(
            f"these latents have {item.latent_dim} channels but the model decodes {cfg.latent_dim}; "
            "decode with the autoencoder that encoded them (--model)"
        )
    if item.sample_rate != cfg.sample_rate or abs(item.latent_rate - cfg.latent_rate) > 1e-6:
        raise SalongError(
            f"these latents are at {item.latent_rate:.3f} Hz for {item.sample_rate} Hz audio, the model at "
            f"{cfg.latent_rate:.3f} Hz for {cfg.sample_rate} Hz; "
            "decode with the autoencoder that encoded them (--model)"
        )
    decodable = item.latents.shape[1] * cfg.samples_per_latent
    if decodable < item.samples:  # frames removed by hand: refuse rather than pad with silence
        raise SalongError(f"latents decode to {decodable} samples but {item.samples} were recorded; encode again")
    pieces = model.decode_stream(item.latents[None].to(torch.float32), progress=progress)  # (1, C, n) each
    return _trimmed(pieces, item.samples, item.channels)


def _trimmed(pieces: Iterator[torch.Tensor], samples: int, channels: int) -> Iterator[np.ndarray]:
    """The first `samples` of audio pieces (1, C, n), as (channels, n) float32 arrays."""
    left = samples
    for piece in pieces:
        audio = piece[0, :, :left].float().cpu().numpy()  # (C, n)
        left -= audio.shape[1]
        if audio.shape[1]:
            yield to_channels(audio, channels)
        if not left:
            return
