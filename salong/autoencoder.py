"""The VAE of Stable Audio 2: 44.1 kHz stereo <-> 64 latent channels at 21.5 Hz.

Evans et al., "Long-form music generation with latent diffusion" (2024), sec. 3.1, and
"Fast timing-conditioned latent audio diffusion" (2024). The config, the VAE bottleneck and
the model that puts one of two encoder/decoder pairs around it: the paper's "Oobleck"
(`salong.oobleck`) or a spectral pair (`salong.spectral`). Checkpoint files are read and
written here.

Module names reproduce the tensor names of Stable Audio Open 1.0 (`pretransform.model.`
with the prefix stripped), so its autoencoder weights load unchanged into the `sa2` preset.

Long audio goes through `encode_long` / `decode_long`: overlapping chunks, stitched with
a raised-cosine crossfade (`salong.chunking`), so memory stays flat whatever the duration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from salong import oobleck, spectral
from salong.checkpoint import build_strict, config_from_dict, load_checkpoint, load_model, save_checkpoint
from salong.chunking import FAR, Layer, Progress, input_range, resolve_overlap, stitch, stitched
from salong.errors import SalongError
from salong.layers import compile_snake  # noqa: F401 - public: the autoencoder's switch to compiled Snake
from salong.oobleck import OobleckDecoder, OobleckEncoder
from salong.spectral import SpectralDecoder, SpectralEncoder, mid_side_magnitudes, synthesize_blocks
from salong.timing import SAMPLE_RATE

KIND = "autoencoder"
ARCHITECTURES = ("oobleck", "spectral")


# --- config ------------------------------------------------------------------------


@dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture of the autoencoder; `c_mults` omit the leading 1, as in the SAO JSON."""

    sample_rate: int = SAMPLE_RATE
    audio_channels: int = 2
    channels: int = 128  # C
    c_mults: tuple[int, ...] = (1, 2, 4, 8, 16)
    strides: tuple[int, ...] = (2, 4, 4, 8, 8)
    latent_dim: int = 64
    # "oobleck" (the paper's, and Stable Audio Open's) or "spectral" (an STFT front end and
    # an inverse-STFT head around ConvNeXt stacks; see SpectralEncoder). c_mults and strides
    # shape oobleck only; the fields below shape spectral only.
    architecture: str = "oobleck"
    n_fft: int = 2048  # spectral: STFT window (Hann) and size
    stft_hop: int = 512  # spectral: STFT hop in samples
    frame_stride: int = 4  # spectral: STFT frames per latent frame
    frame_blocks: int = 2  # spectral: ConvNeXt blocks at the STFT frame rate, each side
    latent_blocks: int = 4  # spectral: ConvNeXt blocks at the latent rate, each side
    griffin_lim_iterations: int = 32  # spectral: phase retrieval iterations when decoding
    # spectral: hidden width of a residual MLP on each log-magnitude frame the decoder draws
    # (0: none). The output layer alone is linear in `channels` numbers a frame, which blurs
    # harmonics across bins; the MLP starts at zero, so adding it to a trained decoder changes
    # nothing until it trains (`train autoencoder --decoder-only --decoder-head N`).
    decoder_head: int = 0

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise SalongError(
                f"AutoencoderConfig.architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}"
            )
        for name in ("sample_rate", "audio_channels", "channels", "latent_dim", "n_fft", "stft_hop", "frame_stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SalongError(f"AutoencoderConfig.{name} must be a positive integer, got {value!r}")
        for name in ("c_mults", "strides"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value or not all(isinstance(v, int) and v >= 1 for v in value):
                raise SalongError(
                    f"AutoencoderConfig.{name} must be a non-empty tuple of positive integers, got {value!r}"
                )
        if len(self.c_mults) != len(self.strides):
            raise SalongError(
                f"AutoencoderConfig needs one stride per channel multiplier, got c_mults={self.c_mults} "
                f"and strides={self.strides}"
            )
        # kernel 2s / padding ceil(s/2) maps N -> N/s and back exactly only for even strides.
        odd = [s for s in self.strides if s % 2]
        if odd:
            raise SalongError(
                f"AutoencoderConfig.strides must all be even (got {self.strides}); use e.g. (2, 4, 4, 8, 8)"
            )
        for name in ("frame_blocks", "latent_blocks", "griffin_lim_iterations", "decoder_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SalongError(f"AutoencoderConfig.{name} must be a whole number >= 0, got {value!r}")
        # Hann windows overlap-add to a constant only with hop <= n_fft / 2 (even n_fft), and the
        # decoder's phase advance repeats every latent frame only if a latent frame spans whole windows.
        if self.n_fft % 2 or self.stft_hop > self.n_fft // 2:
            raise SalongError(
                f"AutoencoderConfig needs an even n_fft and stft_hop <= n_fft / 2, got n_fft={self.n_fft} "
                f"and stft_hop={self.stft_hop}; use e.g. 2048 and 512"
            )
        if self.decoder_head and self.architecture != "spectral":
            raise SalongError(f"AutoencoderConfig.decoder_head is for the spectral architecture, got "
                              f"{self.decoder_head} with {self.architecture!r}; leave it at 0")
        if self.architecture == "spectral" and self.samples_per_latent % self.n_fft:
            raise SalongError(
                f"AutoencoderConfig: stft_hop * frame_stride ({self.samples_per_latent}) must be a multiple of "
                f"n_fft ({self.n_fft}); use e.g. 512 * 4 for n_fft 2048"
            )

    @property
    def samples_per_latent(self) -> int:
        """Audio samples per latent frame: the product of the strides, or stft_hop * frame_stride."""
        if self.architecture == "spectral":
            return self.stft_hop * self.frame_stride
        return math.prod(self.strides)

    @property
    def latent_rate(self) -> float:
        """Latent frames per second (21.53 Hz for 44.1 kHz and hop 2048)."""
        return self.sample_rate / self.samples_per_latent

    @property
    def encoder_context_samples(self) -> int:
        """How many input samples beyond its own hop a latent frame depends on (worse side)."""
        f, hop = FAR, self.samples_per_latent
        lo, hi = input_range(self._geometry(decoder=False), f, f)
        return max(f * hop - lo, hi - ((f + 1) * hop - 1))

    @property
    def encoder_context_frames(self) -> int:
        """`encoder_context_samples` in whole latent frames (8 for the sa2 strides)."""
        return -(-self.encoder_context_samples // self.samples_per_latent)

    @property
    def decoder_context_frames(self) -> int:
        """How many latent frames beyond its own an output frame depends on (10 for the sa2 strides).

        Spectral: what its log-magnitudes depend on; the phases come from Griffin-Lim."""
        # Spectral: of a log-magnitude frame, `frame_stride` to a latent frame.
        f, hop = FAR, self.frame_stride if self.architecture == "spectral" else self.samples_per_latent
        lo, hi = input_range(self._geometry(decoder=True), f * hop, (f + 1) * hop - 1)
        return max(f - lo, hi - f)

    def _geometry(self, decoder: bool) -> list[Layer]:
        return spectral.geometry(self, decoder) if self.architecture == "spectral" else oobleck.geometry(self, decoder)


PRESETS: dict[str, AutoencoderConfig] = {
    # Paper / Stable Audio Open 1.0 scale: 156.1M parameters.
    "sa2": AutoencoderConfig(),
    # Laptop scale: same 2048x hop and 64 latents, 7.8M parameters.
    "small": AutoencoderConfig(channels=32, c_mults=(1, 2, 4, 8, 8)),
    # The bundled model's: 2.6M parameters, a quarter of `small`'s cost per sample, so it
    # trains on two CPU cores in hours (benchmarks/train_step.py).
    "compact": AutoencoderConfig(channels=16, c_mults=(1, 2, 4, 8, 16)),
    # The bundled model's: STFT in, inverse STFT out, ConvNeXt in between (3.8M parameters);
    # it keeps pitch where `compact` lost it, at a fraction of the cost per second of audio.
    "spectral": AutoencoderConfig(architecture="spectral", channels=192),
    # Tests: same 2048x hop (21.53 Hz latents) and 64 latents, 50k parameters.
    "tiny": AutoencoderConfig(channels=4, c_mults=(1, 2, 2, 4, 4)),
    # Tests of the spectral kind: hop 2048 and 64 latents, 16k parameters.
    "tiny-spectral": AutoencoderConfig(architecture="spectral", channels=8, n_fft=512, stft_hop=128,
                                       frame_stride=16, frame_blocks=1, latent_blocks=1),
}


# --- the model ---------------------------------------------------------------------


class VAEBottleneck(nn.Module):
    """Diagonal Gaussian posterior (Kingma & Welling 2014), parameterised as in stable-audio-tools.

    The encoder output is split along channels into mean and scale, `std = softplus(scale) + 1e-4`.
    No parameters.
    """

    @staticmethod
    def split(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, scale = h.chunk(2, dim=1)  # 2 x (B, latent_dim, L)
        return mean, F.softplus(scale) + 1e-4

    @staticmethod
    def kl(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """KL(q || N(0, I)) times 2, summed over channels, averaged over batch and frames."""
        var = std * std
        return (mean * mean + var - var.log() - 1).sum(1).mean()

    def forward(
        self, h: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (sampled `mean + std * eps`, or the mean) and the KL term."""
        mean, std = self.split(h)
        kl = self.kl(mean, std)
        if not sample:
            return mean, kl
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * eps, kl


class Autoencoder(nn.Module):
    """Encoder + VAE bottleneck + decoder; state-dict keys equal SAO 1.0's `pretransform.model.*`."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        is_spectral = config.architecture == "spectral"
        self.encoder = SpectralEncoder(config) if is_spectral else OobleckEncoder(config)
        self.decoder = SpectralDecoder(config) if is_spectral else OobleckDecoder(config)
        self.bottleneck = VAEBottleneck()

    # -- checks --

    def _check_audio(self, audio: torch.Tensor) -> None:
        c = self.config.audio_channels
        if not isinstance(audio, torch.Tensor) or audio.ndim != 3 or audio.shape[1] != c:
            shape = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
            raise SalongError(f"audio must be a tensor (batch, {c}, samples), got {shape}; convert it to {c} channels")
        if audio.shape[2] < 1:
            raise SalongError("audio is empty (0 samples); give at least one sample")

    def _check_latents(self, latents: torch.Tensor) -> None:
        d = self.config.latent_dim
        if not isinstance(latents, torch.Tensor) or latents.ndim != 3 or latents.shape[1] != d:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise SalongError(
                f"latents must be a tensor (batch, {d}, frames), got {shape}; use this model's own latents"
            )
        if latents.shape[2] < 1:
            raise SalongError("latents are empty (0 frames); give at least one frame")

    def _pad_to_hop(self, audio: torch.Tensor) -> torch.Tensor:
        hop = self.config.samples_per_latent
        return F.pad(audio, (0, -audio.shape[-1] % hop))  # (B, C, ceil(N / hop) * hop)

    # -- whole-signal API --

    def encode(
        self, audio: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Audio (B, audio_channels, N) -> latents (B, latent_dim, ceil(N / hop)).

        The input is zero-padded on the right to a multiple of `samples_per_latent`, so the last
        frame may describe partly silence; `decode(...)[..., :N]` recovers N samples.
        `sample=False` returns the posterior mean (deterministic), `sample=True` a draw.
        """
        self._check_audio(audio)
        z, _ = self.bottleneck(self.encoder(self._pad_to_hop(audio)), sample=sample, generator=generator)
        return z

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, latent_dim, L) -> audio (B, audio_channels, L * hop)."""
        self._check_latents(latents)
        return self.decoder(latents)

    def forward(
        self, audio: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction trimmed to N samples, sampled latents, KL term).

        Spectral: (predicted log-magnitudes (B, C, F, T), their targets |STFT| of mid/side,
        KL term), for `salong.audio_losses.magnitude_loss`; `decode` makes audio.
        `sample=False` decodes the posterior mean, the latents `encode` gives (and a DiT learns)."""
        self._check_audio(audio)
        if self.config.architecture == "spectral":
            magnitudes = mid_side_magnitudes(self._pad_to_hop(audio), self.config)  # (B, C, F, T)
            z, kl = self.bottleneck(self.encoder(audio, magnitudes), sample=sample, generator=generator)
            return self.decoder.log_magnitudes(z), magnitudes, kl
        z, kl = self.bottleneck(self.encoder(self._pad_to_hop(audio)), sample=sample, generator=generator)
        return self.decoder(z)[..., : audio.shape[-1]], z, kl

    # -- chunked API for long audio --

    def _run_device(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.parameters())
        return p.device, p.dtype

    @torch.inference_mode()
    def encode_long(
        self,
        audio: torch.Tensor,
        chunk_frames: int = 128,
        overlap_frames: int | None = None,
        sample: bool = False,
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """`encode` in overlapping chunks of `chunk_frames` latent frames (times hop samples).

        Same padding and output shape as `encode`. Activation memory depends on the chunk
        size only; `audio` may stay on the CPU while the model runs on a GPU (chunks are
        moved one at a time; the result lands on `audio`'s device). With a sampled encode
        the Gaussian parameters are stitched first and noise is drawn once, so the overlap
        does not change the posterior. Overlap default and seams: `salong.chunking`.
        Runs under `torch.inference_mode()`: for inference, not training.
        """
        self._check_audio(audio)
        return self.encode_stream(lambda start, end: audio[..., start:end], audio.shape[-1], audio.shape[0],
                                  chunk_frames, overlap_frames, sample, generator, progress, audio.dtype, audio.device)

    @torch.inference_mode()
    def encode_stream(
        self,
        read: Callable[[int, int], torch.Tensor],
        samples: int,
        batch: int = 1,
        chunk_frames: int = 128,
        overlap_frames: int | None = None,
        sample: bool = False,
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """`encode_long` of audio `samples` long that `read(start, end)` gives piece by piece,
        (batch, audio_channels, end - start) of `dtype`, asked for in increasing order of
        `start` (chunks overlap, so a piece may begin before the last one ended): only the
        latents and one chunk of audio are held, whatever the length (`salong encode` streams
        a long file from disk). The result lands on `device`."""
        cfg = self.config
        if samples < 1:
            raise SalongError("audio is empty (0 samples); give at least one sample")
        hop = cfg.samples_per_latent
        frames = -(-samples // hop)
        overlap = resolve_overlap(chunk_frames, overlap_frames, cfg.encoder_context_frames)
        run_device, run_dtype = self._run_device()
        out_dtype = torch.promote_types(dtype, torch.float32)
        h = torch.zeros(batch, 2 * cfg.latent_dim, frames, dtype=out_dtype, device=device)

        def run(start: int, end: int) -> torch.Tensor:
            piece = read(start * hop, min(end * hop, samples)).to(run_device, run_dtype)
            piece = F.pad(piece, (0, (end - start) * hop - piece.shape[-1]))  # (B, C, (end - start) * hop)
            return self.encoder(piece).to(h.device, out_dtype)  # (B, 2 * latent_dim, end - start)

        stitch(run, h, frames, 1, chunk_frames, overlap, cfg.encoder_context_frames, progress)
        z, _ = self.bottleneck(h, sample=sample, generator=generator)
        return z

    @torch.inference_mode()
    def decode_long(
        self,
        latents: torch.Tensor,
        chunk_frames: int = 128,
        overlap_frames: int | None = None,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """`decode` in overlapping chunks of `chunk_frames` latent frames; output on `latents`' device.

        The output (B, audio_channels, L * hop) is preallocated and filled by `decode_stream`,
        so activation memory does not grow with L. Runs under `torch.inference_mode()`.
        """
        self._check_latents(latents)
        cfg = self.config
        out_dtype = torch.promote_types(latents.dtype, torch.float32)
        out = torch.zeros(latents.shape[0], cfg.audio_channels, latents.shape[-1] * cfg.samples_per_latent,
                          dtype=out_dtype, device=latents.device)  # (B, C, L * hop)
        position = 0
        for piece in self.decode_stream(latents, chunk_frames, overlap_frames, progress):
            out[..., position : position + piece.shape[-1]] = piece
            position += piece.shape[-1]
        return out

    def decode_stream(
        self,
        latents: torch.Tensor,
        chunk_frames: int = 128,
        overlap_frames: int | None = None,
        progress: Progress | None = None,
    ) -> Iterator[torch.Tensor]:
        """`decode_long` as consecutive pieces of audio (B, audio_channels, n) on `latents`' device,
        each yielded as soon as it is final: memory holds about one chunk (Oobleck) or one
        Griffin-Lim block (spectral), whatever L, so `salong decode` writes long latents to a
        file as they decode. The pieces joined equal `decode_long`'s output.

        Oobleck: each chunk is decoded, weighted by its crossfade window and added in
        (`salong.chunking.stitched`). Spectral: the chunks give log-magnitudes, and
        `spectral.synthesize_blocks` finds phases in Griffin-Lim blocks that carry their phases
        over, so no seam falls between independent solutions. Runs under `torch.inference_mode()`.
        """
        self._check_latents(latents)
        resolve_overlap(chunk_frames, overlap_frames, self.config.decoder_context_frames)  # fail now, not later
        return self._decode_stream(latents, chunk_frames, overlap_frames, progress)

    @torch.inference_mode()
    def _decode_stream(self, latents: torch.Tensor, chunk_frames: int, overlap_frames: int | None,
                       progress: Progress | None) -> Iterator[torch.Tensor]:
        cfg = self.config
        if cfg.architecture != "spectral":
            yield from self._decode_pieces(latents, self.decoder, cfg.samples_per_latent, chunk_frames,
                                           overlap_frames, progress)
            return
        bins = cfg.n_fft // 2 + 1
        pieces = self._decode_pieces(latents, lambda piece: self.decoder.log_magnitudes(piece).flatten(1, 2),
                                     cfg.frame_stride, chunk_frames, overlap_frames, progress)  # (B, C*F, n)
        log_magnitudes = (p.reshape(p.shape[0], cfg.audio_channels, bins, -1) for p in pieces)  # (B, C, F, n)
        out_dtype = torch.promote_types(latents.dtype, torch.float32)
        for audio in synthesize_blocks(log_magnitudes, latents.shape[-1] * cfg.frame_stride, cfg):
            yield audio.to(out_dtype)

    @torch.inference_mode()
    def log_magnitudes_long(
        self,
        latents: torch.Tensor,
        chunk_frames: int = 128,
        overlap_frames: int | None = None,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """Spectral kind: the decoder's log-magnitudes (B, C, F, L * frame_stride) in overlapping
        chunks, stitched as `decode_long` stitches audio (equal to the unchunked ones up to rounding)."""
        self._check_latents(latents)
        cfg = self.config
        if cfg.architecture != "spectral":
            raise SalongError("log-magnitudes come from a spectral autoencoder; this one is an Oobleck")
        bins = cfg.n_fft // 2 + 1
        pieces = self._decode_pieces(latents, lambda piece: self.decoder.log_magnitudes(piece).flatten(1, 2),
                                     cfg.frame_stride, chunk_frames, overlap_frames, progress)  # (B, C*F, n)
        return torch.cat(list(pieces), dim=-1).reshape(latents.shape[0], cfg.audio_channels, bins, -1)

    def _decode_pieces(self, latents: torch.Tensor, part: Callable[[torch.Tensor], torch.Tensor], scale: int,
                       chunk_frames: int, overlap_frames: int | None,
                       progress: Progress | None) -> Iterator[torch.Tensor]:
        """`part` (latents (B, latent_dim, n) -> (B, rows, n * scale)) over overlapping chunks of
        `latents`, stitched (`salong.chunking.stitched`) into consecutive pieces on `latents`' device."""
        overlap = resolve_overlap(chunk_frames, overlap_frames, self.config.decoder_context_frames)
        device, dtype = self._run_device()
        out_dtype = torch.promote_types(latents.dtype, torch.float32)

        def run(start: int, end: int) -> torch.Tensor:
            return part(latents[..., start:end].to(device, dtype)).to(latents.device, out_dtype)

        return stitched(run, latents.shape[-1], scale, chunk_frames, overlap, self.config.decoder_context_frames,
                        progress)


# --- files -------------------------------------------------------------------------


def save_autoencoder(path: str | Path, model: Autoencoder) -> Path:
    """Write weights + config as one safetensors checkpoint of kind "autoencoder"."""
    return save_checkpoint(path, model, KIND, model.config)


def load_autoencoder(path: str | Path) -> tuple[Autoencoder, AutoencoderConfig]:
    """Rebuild an autoencoder (in eval mode) from a checkpoint written by `save_autoencoder`."""
    model, config, _ = load_model(path, KIND, AutoencoderConfig, Autoencoder)
    return model, config


# A generator checkpoint (salong.pipeline) holds its autoencoder under this prefix and
# config key; `load_autoencoder_from` reads it without building the rest of the system.
GENERATOR_KIND, GENERATOR_PART = "generator", "autoencoder"


def load_autoencoder_from(path: str | Path) -> tuple[Autoencoder, AutoencoderConfig]:
    """The autoencoder of an autoencoder checkpoint, or the one inside a generator checkpoint."""
    ckpt = load_checkpoint(path, (KIND, GENERATOR_KIND))
    if ckpt.kind == KIND:
        config_dict, tensors = ckpt.config, ckpt.tensors
    else:
        prefix = GENERATOR_PART + "."
        config_dict = ckpt.config.get(GENERATOR_PART)
        if not isinstance(config_dict, dict):
            raise SalongError(f"{str(path)!r} is a generator checkpoint without an autoencoder config; re-export it")
        tensors = {k[len(prefix):]: v for k, v in ckpt.tensors.items() if k.startswith(prefix)}
    config = config_from_dict(AutoencoderConfig, config_dict)
    model = build_strict(Autoencoder, config, tensors, source=f"{str(path)!r} ({GENERATOR_PART})")
    return model.eval(), config
