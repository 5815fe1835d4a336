"""Latent files: what `salong encode` writes and `salong decode` reads.

A latents file is a `.safetensors` file with one tensor, `latents` (latent_dim, frames),
and metadata that lets `decode` restore exactly the original audio shape: the sample
rate, the latent rate, the original sample count and channel count.
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from salong.audio import read_audio, resample, to_channels
from salong.checkpoint import FORMAT_KEY, FORMAT_VERSION, read_metadata
from salong.outputs import write_atomic
from salong.errors import SalongError, short_reason

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
    }
    tensors = {"latents": item.latents.detach().to("cpu", torch.float32).contiguous()}
    return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), ".safetensors",
                        overwrite)


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
        )
    except (KeyError, ValueError, RuntimeError, OSError, SafetensorError) as exc:
        raise SalongError(f"latents file {str(path)!r} is incomplete or corrupt ({short_reason(exc)}); "
                          "encode the audio again") from None
    if latents.ndim != 2 or item.samples < 1 or item.channels < 1:
        raise SalongError(f"latents file {str(path)!r} has inconsistent shapes; encode the audio again")
    if not latents.is_floating_point() or not bool(torch.isfinite(latents).all()):
        raise SalongError(f"latents file {str(path)!r} holds NaN, infinite or non-float values; encode the audio again")
    return item


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
    )


class DownmixWarning(UserWarning):
    """An input had more channels than the autoencoder; it was mixed down."""


def encode_file(model: torch.nn.Module, path: str | Path, sample: bool = False,
                progress: Progress | None = None) -> Latents:
    """Read an audio file and encode it; the original channel count is remembered (up to the
    model's: a 5.1 file is mixed down to stereo, with a warning, and decodes as stereo)."""
    audio, rate = read_audio(path)
    if audio.shape[0] > model.config.audio_channels:
        warnings.warn(f"{Path(path).name} has {audio.shape[0]} channels; it is mixed down to "
                      f"{model.config.audio_channels} and decodes as {model.config.audio_channels}-channel audio",
                      DownmixWarning, stacklevel=2)
    return encode_audio(model, audio, rate, sample=sample, progress=progress, source=Path(path).name)


def decode_latents(model: torch.nn.Module, item: Latents, progress: Progress | None = None) -> np.ndarray:
    """Decode to (channels, samples) audio with the original length and channel count."""
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
    with torch.inference_mode():
        audio = model.decode_long(item.latents[None].to(torch.float32), progress=progress)[0]  # (C, frames*hop)
    audio = audio[:, : item.samples].float().cpu().numpy()
    if audio.shape[1] < item.samples:  # frames removed by hand: refuse rather than pad with silence
        raise SalongError(f"latents decode to {audio.shape[1]} samples but {item.samples} were recorded; encode again")
    return to_channels(audio, item.channels)

