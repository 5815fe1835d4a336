"""The "Oobleck" VAE of Stable Audio 2: 44.1 kHz stereo <-> 64 latent channels at 21.5 Hz.

Evans et al., "Long-form music generation with latent diffusion" (2024), sec. 3.1, and
"Fast timing-conditioned latent audio diffusion" (2024). The building blocks follow
descript-audio-codec (Kumar et al. 2023): weight-normalised convolutions (Salimans &
Kingma 2016), SnakeBeta activations (Ziyin et al. 2020; BigVGAN, Lee et al. 2023),
residual units with dilations 1, 3, 9 and strided down/up-sampling convolutions.

Module names reproduce the tensor names of Stable Audio Open 1.0 (`pretransform.model.`
with the prefix stripped), so its autoencoder weights load unchanged into the `sa2` preset.

Long audio goes through `encode_long` / `decode_long`: overlapping chunks, stitched with
a raised-cosine crossfade, so memory stays flat whatever the duration.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from salong.checkpoint import build_strict, config_from_dict, load_checkpoint, load_model, save_checkpoint
from salong.errors import SalongError, short_reason
from salong.timing import SAMPLE_RATE

KIND = "autoencoder"
ARCHITECTURES = ("oobleck", "spectral")
Progress = Callable[[int, int], None]

DILATIONS = (1, 3, 9)
RESIDUAL_KERNEL = 7
CONVNEXT_KERNEL = 7


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
        for name in ("frame_blocks", "latent_blocks", "griffin_lim_iterations"):
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
        f, hop = _FAR, self.samples_per_latent
        lo, hi = _input_range(_encoder_geometry(self), f, f)
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
        f, hop = _FAR, self.frame_stride if self.architecture == "spectral" else self.samples_per_latent
        lo, hi = _input_range(_decoder_geometry(self), f * hop, (f + 1) * hop - 1)
        return max(f - lo, hi - f)


# Receptive fields from the layer geometry: (transposed?, kernel, stride, padding, dilation)
# of every layer that mixes neighbours, input to output. Residual units count as their
# k=7 conv (its window contains the skip connection's single tap); Snake is pointwise.
_Layer = tuple[bool, int, int, int, int]
_FAR = 10**6  # a frame far from the signal's edges, where the pattern is shift-invariant


def _block_geometry(stride: int, transposed: bool) -> list[_Layer]:
    units = [(False, RESIDUAL_KERNEL, 1, (RESIDUAL_KERNEL - 1) // 2 * d, d) for d in DILATIONS]
    resample = (transposed, 2 * stride, stride, math.ceil(stride / 2), 1)
    return [resample, *units] if transposed else [*units, resample]


def _spectral_geometry(cfg: AutoencoderConfig, decoder: bool) -> list[_Layer]:
    """The decoder's ends at its log-magnitude frames (Griffin-Lim is global, see `decode_long`).
    A centred STFT frame j reads samples j*hop - n_fft/2 ... j*hop + n_fft/2 - 1, and the
    periodic Hann window is zero at the first: n_fft - 1 taps."""
    block = (False, CONVNEXT_KERNEL, 1, CONVNEXT_KERNEL // 2, 1)
    frames, latents = [block] * cfg.frame_blocks, [block] * cfg.latent_blocks
    if decoder:
        up = (True, cfg.frame_stride, cfg.frame_stride, 0, 1)
        return [(False, 3, 1, 1, 1), *latents, up, *frames]  # to log-magnitude frames
    down = (False, cfg.frame_stride, cfg.frame_stride, 0, 1)
    return [(False, cfg.n_fft - 1, cfg.stft_hop, cfg.n_fft // 2 - 1, 1), *frames, down, *latents]


def _encoder_geometry(cfg: AutoencoderConfig) -> list[_Layer]:
    if cfg.architecture == "spectral":
        return _spectral_geometry(cfg, decoder=False)
    blocks = [layer for s in cfg.strides for layer in _block_geometry(s, transposed=False)]
    return [(False, 7, 1, 3, 1), *blocks, (False, 3, 1, 1, 1)]


def _decoder_geometry(cfg: AutoencoderConfig) -> list[_Layer]:
    if cfg.architecture == "spectral":
        return _spectral_geometry(cfg, decoder=True)
    blocks = [layer for s in reversed(cfg.strides) for layer in _block_geometry(s, transposed=True)]
    return [(False, 7, 1, 3, 1), *blocks, (False, 7, 1, 3, 1)]


def _input_range(layers: list[_Layer], lo: int, hi: int) -> tuple[int, int]:
    """The input index range that output indices [lo, hi] of `layers` depend on."""
    for transposed, k, s, p, d in reversed(layers):
        if transposed:  # o = i * s - p + j, 0 <= j < k
            lo, hi = -(-(lo + p - k + 1) // s), (hi + p) // s
        else:  # o depends on i = o * s - p + j * d, 0 <= j < k
            lo, hi = lo * s - p, hi * s - p + (k - 1) * d
    return lo, hi


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


def autoencoder_config(name: str) -> AutoencoderConfig:
    """A preset by name, with a clear error for unknown names."""
    if name not in PRESETS:
        raise SalongError(f"unknown autoencoder preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


# --- building blocks ---------------------------------------------------------------


class WNConv1d(nn.Module):
    """Conv1d with weight normalisation (Salimans & Kingma 2016): `weight = g * v / ||v||`.

    Stored as `weight_g` (out, 1, 1) and `weight_v` (out, in, k) like `torch.nn.utils.weight_norm`,
    the norm taken over all dims but the output-channel dim.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight_v = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.weight_g = nn.Parameter(torch.empty(out_channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # PyTorch's default Conv1d initialisation, then g = ||v|| so the initial weight is v.
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight_v.shape[1] * self.weight_v.shape[2]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)
        with torch.no_grad():
            self.weight_g.copy_(torch.linalg.vector_norm(self.weight_v, dim=(1, 2), keepdim=True))

    @property
    def weight(self) -> torch.Tensor:
        norm = torch.linalg.vector_norm(self.weight_v, dim=(1, 2), keepdim=True)  # (out, 1, 1)
        return self.weight_g * self.weight_v / norm  # (out, in, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


class WNConvTranspose1d(nn.Module):
    """ConvTranspose1d with weight normalisation.

    The weight is (in, out, k); `torch.nn.utils.weight_norm`'s default dim=0 keeps the
    first (input-channel) dim, so `weight_g` is (in, 1, 1) — as in the SAO checkpoint,
    e.g. `decoder.layers.1.layers.1.weight_g` (2048, 1, 1) for a 2048 -> 1024 conv.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0
    ) -> None:
        super().__init__()
        self.stride, self.padding = stride, padding
        self.weight_v = nn.Parameter(torch.empty(in_channels, out_channels, kernel_size))
        self.weight_g = nn.Parameter(torch.empty(in_channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))
        fan_in = self.weight_v.shape[1] * self.weight_v.shape[2]  # PyTorch's convention for transposed convs
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(self.bias, -bound, bound)
        with torch.no_grad():
            self.weight_g.copy_(torch.linalg.vector_norm(self.weight_v, dim=(1, 2), keepdim=True))

    @property
    def weight(self) -> torch.Tensor:
        norm = torch.linalg.vector_norm(self.weight_v, dim=(1, 2), keepdim=True)  # (in, 1, 1)
        return self.weight_g * self.weight_v / norm  # (in, out, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.weight, self.bias, self.stride, self.padding)


def snake_beta(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    """`x + 1/(exp(log_beta) + 1e-9) * sin(exp(log_alpha) * x)^2` for (B, C, N) x, (C,) params."""
    alpha = log_alpha.exp()[None, :, None]  # (1, C, 1)
    inv_beta = 1.0 / (log_beta.exp()[None, :, None] + 1e-9)  # (1, C, 1)
    return torch.addcmul(x, torch.sin(alpha * x).square(), inv_beta)


_snake: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = snake_beta


def compile_snake() -> bool:
    """Run every SnakeBeta through `torch.compile` from now on; True if that works here.

    Eager Snake is about half of the autoencoder's training step on CPU: each of its
    elementwise ops is a pass over the activations, forward and backward. Compiled, it is
    one fused kernel each way, which makes a `compact` training step about 1.5x faster
    (benchmarks/train_step.py). Compiling takes a minute once per process (a kernel per
    channel count and grad mode, any length) and needs a C++ compiler on CPU; without one,
    Snake stays eager, with a warning.
    Results match eager Snake to float rounding (about 1e-7).
    """
    global _snake
    # One kernel per channel count (parameter shapes stay static) and grad mode: a model has
    # about ten, beyond dynamo's default of 8 recompilations before it falls back to eager.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    compiled = torch.compile(snake_beta, dynamic=True)
    try:
        probe = torch.randn(1, 2, 8)
        compiled(probe, torch.zeros(2), torch.zeros(2))
    except Exception as exc:  # noqa: BLE001 - any backend failure means: stay eager
        warnings.warn(f"torch.compile is not available here ({short_reason(exc)}); Snake runs eagerly")
        return False
    _snake = compiled
    return True


class SnakeBeta(nn.Module):
    """`y = x + 1/(exp(beta) + 1e-9) * sin(exp(alpha) * x)^2`, per channel, log-scale params init 0.

    Snake (Ziyin et al. 2020) with a separate magnitude, as in BigVGAN (Lee et al. 2023).
    `compile_snake` swaps in a compiled kernel for training.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _snake(x, self.alpha, self.beta)


class ResidualUnit(nn.Module):
    """Snake, conv k=7 dilation d, Snake, conv k=1, plus the input."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        pad = (RESIDUAL_KERNEL - 1) // 2 * dilation
        self.layers = nn.Sequential(
            SnakeBeta(channels),
            WNConv1d(channels, channels, RESIDUAL_KERNEL, dilation=dilation, padding=pad),
            SnakeBeta(channels),
            WNConv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class EncoderBlock(nn.Module):
    """Residual units (d = 1, 3, 9), Snake, strided conv (kernel 2s, padding ceil(s/2)): N -> N/s."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *(ResidualUnit(in_channels, d) for d in DILATIONS),
            SnakeBeta(in_channels),
            WNConv1d(in_channels, out_channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DecoderBlock(nn.Module):
    """Snake, transposed conv (kernel 2s, padding ceil(s/2)): N -> N*s, residual units (d = 1, 3, 9)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            SnakeBeta(in_channels),
            WNConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
            *(ResidualUnit(out_channels, d) for d in DILATIONS),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Encoder(nn.Module):
    """Audio (B, audio_channels, N) -> (B, 2 * latent_dim, N / hop): mean and scale."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        c = config.channels
        m = (1,) + config.c_mults
        self.layers = nn.Sequential(
            WNConv1d(config.audio_channels, c * m[0], 7, padding=3),
            *(EncoderBlock(c * m[i], c * m[i + 1], s) for i, s in enumerate(config.strides)),
            SnakeBeta(c * m[-1]),
            WNConv1d(c * m[-1], 2 * config.latent_dim, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    """Latents (B, latent_dim, L) -> audio (B, audio_channels, L * hop); no output tanh."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        c = config.channels
        m = (1,) + config.c_mults
        n = len(config.strides)
        self.layers = nn.Sequential(
            WNConv1d(config.latent_dim, c * m[-1], 7, padding=3),
            *(DecoderBlock(c * m[i + 1], c * m[i], config.strides[i]) for i in reversed(range(n))),
            SnakeBeta(c * m[0]),
            WNConv1d(c * m[0], config.audio_channels, 7, padding=3, bias=False),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class ConvNeXtBlock(nn.Module):
    """1-D ConvNeXt block (Liu et al. 2022, as in Vocos, Siuzdak 2023): depthwise conv k=7,
    LayerNorm over channels, pointwise MLP (3x, GELU), a learned per-channel scale, plus the input."""

    def __init__(self, channels: int, expansion: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(channels, channels, CONVNEXT_KERNEL, padding=CONVNEXT_KERNEL // 2, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.expand = nn.Linear(channels, expansion * channels)
        self.project = nn.Linear(expansion * channels, channels)
        self.scale = nn.Parameter(torch.full((channels,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.depthwise(x).transpose(1, 2))  # (B, T, C)
        h = self.project(F.gelu(self.expand(h))) * self.scale
        return x + h.transpose(1, 2)


def _hann(n_fft: int, like: torch.Tensor) -> torch.Tensor:
    return torch.hann_window(n_fft, device=like.device, dtype=like.dtype)


def to_mid_side(audio: torch.Tensor) -> torch.Tensor:
    """(B, 2, N) left/right -> mid (L+R)/2 and side (L-R)/2; other channel counts pass unchanged."""
    if audio.shape[1] != 2:
        return audio
    left, right = audio[:, :1], audio[:, 1:]
    return torch.cat([(left + right) / 2, (left - right) / 2], dim=1)


def from_mid_side(audio: torch.Tensor) -> torch.Tensor:
    """The inverse of `to_mid_side`."""
    if audio.shape[1] != 2:
        return audio
    mid, side = audio[:, :1], audio[:, 1:]
    return torch.cat([mid + side, mid - side], dim=1)


def stft_magnitudes(audio: torch.Tensor, config: AutoencoderConfig) -> torch.Tensor:
    """|STFT| of mid/side (B, C, N), N a multiple of `stft_hop` -> (B, C, F, N / stft_hop).

    Hann window of `n_fft`, centred and reflect-padded; the frame centred past the end is dropped.
    """
    b, channels, n = audio.shape
    frames = n // config.stft_hop
    rows = to_mid_side(audio).reshape(b * channels, n)
    spec = torch.stft(rows, config.n_fft, config.stft_hop, config.n_fft, _hann(config.n_fft, rows),
                      center=True, pad_mode="reflect", return_complex=True)[..., :frames]  # (B*C, F, T)
    return spec.abs().reshape(b, channels, -1, frames)


MIN_MAGNITUDE = 1e-5  # the floor of log-magnitudes (about -100 dB re a full-scale bin)
MAX_LOG_MAGNITUDE = 8.0  # e^8 ~ 3000 per bin: far above full scale
INITIAL_LOG_MAGNITUDE = -4.0


class SpectralEncoder(nn.Module):
    """Audio (B, audio_channels, N) -> (B, 2 * latent_dim, N / hop), N a multiple of the hop.

    The log-magnitude STFT of mid and side (`stft_magnitudes`) is projected to `channels`,
    refined by ConvNeXt blocks at the frame rate, downsampled `frame_stride`x by a strided
    conv, refined at the latent rate and projected to mean and scale. Pitch is in the input
    as it is; an Oobleck encoder of laptop size never learned to keep it (docs/architecture.md).
    """

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        c, bins = config.channels, config.n_fft // 2 + 1
        self.input = nn.Conv1d(config.audio_channels * bins, c, 1)
        self.frame_blocks = nn.Sequential(*(ConvNeXtBlock(c) for _ in range(config.frame_blocks)))
        self.down = nn.Conv1d(c, c, config.frame_stride, stride=config.frame_stride)
        self.latent_blocks = nn.Sequential(*(ConvNeXtBlock(c) for _ in range(config.latent_blocks)))
        self.output = nn.Conv1d(c, 2 * config.latent_dim, 1)

    def forward(self, x: torch.Tensor, magnitudes: torch.Tensor | None = None) -> torch.Tensor:
        if magnitudes is None:
            magnitudes = stft_magnitudes(x, self.config)  # (B, C, F, T)
        h = magnitudes.clamp_min(MIN_MAGNITUDE).log().flatten(1, 2)  # (B, C*F, T)
        h = self.down(self.frame_blocks(self.input(h)))  # (B, c, T / frame_stride)
        return self.output(self.latent_blocks(h))


class SpectralDecoder(nn.Module):
    """Latents (B, latent_dim, L) -> audio (B, audio_channels, L * hop).

    The mirror of `SpectralEncoder` predicts the log-magnitude STFT of mid and side
    (`log_magnitudes`); `griffin_lim` finds phases for it, and mid/side become left/right.
    The phase is not learned: at laptop scale a learned phase (a Vocos head) trained for
    hundreds of steps still gave a comb at the frame rate and no notes, while these
    magnitudes draw notes within minutes.
    """

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        c, bins = config.channels, config.n_fft // 2 + 1
        self.input = nn.Conv1d(config.latent_dim, c, 3, padding=1)
        self.latent_blocks = nn.Sequential(*(ConvNeXtBlock(c) for _ in range(config.latent_blocks)))
        self.up = nn.ConvTranspose1d(c, c, config.frame_stride, stride=config.frame_stride)
        self.frame_blocks = nn.Sequential(*(ConvNeXtBlock(c) for _ in range(config.frame_blocks)))
        self.output = nn.Conv1d(c, config.audio_channels * bins, 1)
        with torch.no_grad():  # start near a typical level (e^-4 a bin, about -50 dB re a full-scale sine)
            self.output.bias.fill_(INITIAL_LOG_MAGNITUDE)

    def log_magnitudes(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, latent_dim, L) -> log |STFT| of mid/side (B, audio_channels, F, L * frame_stride)."""
        h = self.frame_blocks(self.up(self.latent_blocks(self.input(z))))  # (B, c, T)
        out = self.output(h)  # (B, C*F, T)
        return out.reshape(out.shape[0], self.config.audio_channels, -1, out.shape[-1])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return synthesize(self.log_magnitudes(z), self.config).to(z.dtype)


def synthesize(log_magnitudes: torch.Tensor, config: AutoencoderConfig) -> torch.Tensor:
    """Log-magnitudes of mid/side (B, C, F, T) -> audio (B, C, T * stft_hop) by `griffin_lim_long`."""
    b, channels, bins, frames = log_magnitudes.shape
    magnitude = log_magnitudes.float().clamp(max=MAX_LOG_MAGNITUDE).exp().reshape(b * channels, bins, frames)
    audio = griffin_lim_long(magnitude, config.n_fft, config.stft_hop, config.griffin_lim_iterations)
    return from_mid_side(audio.reshape(b, channels, -1))


def bin_centre_phases(bins: int, start: int, frames: int, n_fft: int, hop: int, like: torch.Tensor) -> torch.Tensor:
    """Unit phasors (F, frames) of steady sinusoids at the bins' centre frequencies, for
    centred STFT frames `start ...`: Griffin-Lim's first guess. They repeat every n_fft / hop
    frames, so blocks that start on a multiple of that agree."""
    k = torch.arange(bins, device=like.device, dtype=torch.float64)[:, None]
    j = torch.arange(start, start + frames, device=like.device, dtype=torch.float64)[None, :]
    angle = (2 * math.pi * k * torch.remainder(j * hop, n_fft) / n_fft).to(like.dtype)
    return torch.polar(torch.ones_like(angle), angle)


def griffin_lim(magnitude: torch.Tensor, n_fft: int, hop: int, iterations: int,
                phases: torch.Tensor, momentum: float = 0.99) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast Griffin-Lim (Perraudin et al. 2013; librosa.griffinlim): magnitudes (R, F, T + 1)
    of centred frames and first phases (R or 1, F, T + 1) -> (signals (R, T * hop), last phases).

    Each iteration rebuilds the signal from magnitude and phase, takes the phases of its
    STFT, and steps past them by `momentum` of the change, which converges far faster than
    plain alternating projections.
    """
    window = _hann(n_fft, magnitude)
    length = (magnitude.shape[-1] - 1) * hop
    angles = phases.expand_as(magnitude).clone()
    previous = torch.zeros_like(angles)
    for _ in range(iterations):
        signal = torch.istft(magnitude * angles, n_fft, hop, n_fft, window, center=True, length=length)
        rebuilt = torch.stft(signal, n_fft, hop, n_fft, window, center=True, pad_mode="reflect", return_complex=True)
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        previous = rebuilt
        angles = angles / angles.abs().clamp_min(1e-16)
    signal = torch.istft(magnitude * angles, n_fft, hop, n_fft, window, center=True, length=length)
    return signal, angles


GL_BLOCK_FRAMES = 2048  # STFT frames per Griffin-Lim block (about 24 s at hop 512)
GL_OVERLAP_FRAMES = 64  # frames two blocks share: the later starts from the earlier's phases there


def griffin_lim_long(magnitude: torch.Tensor, n_fft: int, hop: int, iterations: int,
                     block_frames: int = GL_BLOCK_FRAMES, overlap_frames: int = GL_OVERLAP_FRAMES) -> torch.Tensor:
    """`griffin_lim` of magnitudes (R, F, T) -> signals (R, T * hop) in blocks of `block_frames`.

    Memory stays flat with length. A block starts from the phases its predecessor found in
    the frames they share, so both agree there, and their signals are crossfaded across
    the middle half of the shared frames. The frame past the end repeats the last one.
    """
    rows, bins, frames = magnitude.shape
    period = n_fft // math.gcd(n_fft, hop)
    overlap = min(overlap_frames, block_frames // 2) // period * period
    step = max(block_frames - overlap, period) // period * period
    out = torch.zeros(rows, frames * hop, dtype=magnitude.dtype, device=magnitude.device)
    previous: tuple[int, torch.Tensor] | None = None  # (start frame, last phases) of the block before
    start = 0
    while True:
        end = min(start + block_frames, frames)
        block = torch.cat([magnitude[..., start:end], magnitude[..., end - 1 : end]], dim=-1)  # (R, F, n + 1)
        phases = bin_centre_phases(bins, start, end - start + 1, n_fft, hop, block).expand(rows, -1, -1).clone()
        if previous is not None:
            shared = previous[1][..., start - previous[0] : -1]  # its phases for frames start ... its end
            phases[..., : shared.shape[-1]] = shared
        signal, angles = griffin_lim(block, n_fft, hop, iterations, phases)
        if previous is None:
            out[:, : signal.shape[-1]] = signal
        else:
            fade_start, fade_length = (start + overlap // 4) * hop, (overlap // 2) * hop
            t = torch.arange(signal.shape[-1], device=out.device, dtype=out.dtype)
            rise = ((t - (fade_start - start * hop)) / fade_length).clamp(0, 1)
            rise = torch.sin(0.5 * math.pi * rise).square()
            region = slice(start * hop, start * hop + signal.shape[-1])
            out[:, region] = out[:, region] * (1 - rise) + signal * rise
        if end == frames:
            return out
        previous = (start, angles)
        start += step


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


# --- the model ---------------------------------------------------------------------


class Autoencoder(nn.Module):
    """Encoder + VAE bottleneck + decoder; state-dict keys equal SAO 1.0's `pretransform.model.*`."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        spectral = config.architecture == "spectral"
        self.encoder = SpectralEncoder(config) if spectral else Encoder(config)
        self.decoder = SpectralDecoder(config) if spectral else Decoder(config)
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
        self, audio: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction trimmed to N samples, sampled latents, KL term).

        Spectral: (predicted log-magnitudes (B, C, F, T), their targets |STFT| of mid/side,
        KL term), for `salong.audio_losses.magnitude_loss`; `decode` makes audio."""
        self._check_audio(audio)
        if self.config.architecture == "spectral":
            magnitudes = stft_magnitudes(self._pad_to_hop(audio), self.config)  # (B, C, F, T)
            z, kl = self.bottleneck(self.encoder(audio, magnitudes), sample=True, generator=generator)
            return self.decoder.log_magnitudes(z), magnitudes, kl
        z, kl = self.bottleneck(self.encoder(self._pad_to_hop(audio)), sample=True, generator=generator)
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
        does not change the posterior. Overlap default and seams: see `_overlap`, `_stitch`.
        Runs under `torch.inference_mode()`: for inference, not training.
        """
        self._check_audio(audio)
        cfg = self.config
        hop, n = cfg.samples_per_latent, audio.shape[-1]
        frames = -(-n // hop)
        overlap = _overlap(chunk_frames, overlap_frames, cfg.encoder_context_frames)
        device, dtype = self._run_device()
        out_dtype = torch.promote_types(audio.dtype, torch.float32)
        h = torch.zeros(audio.shape[0], 2 * cfg.latent_dim, frames, dtype=out_dtype, device=audio.device)

        def run(start: int, end: int) -> torch.Tensor:
            piece = audio[..., start * hop : min(end * hop, n)].to(device, dtype)
            piece = F.pad(piece, (0, (end - start) * hop - piece.shape[-1]))  # (B, C, (end - start) * hop)
            return self.encoder(piece).to(h.device, out_dtype)  # (B, 2 * latent_dim, end - start)

        _stitch(run, h, frames, 1, chunk_frames, overlap, cfg.encoder_context_frames, progress)
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

        The output (B, audio_channels, L * hop) is preallocated; each chunk is decoded, weighted
        by its crossfade window and added in, so activation memory does not grow with L.
        Spectral: the chunks give log-magnitudes, and `griffin_lim_long` then finds phases in
        blocks that carry their phases over, so no seam falls between independent solutions.
        Runs under `torch.inference_mode()`.
        """
        self._check_latents(latents)
        cfg = self.config
        if cfg.architecture == "spectral":  # log-magnitudes in chunks, then phases for the whole
            log_magnitudes = self.log_magnitudes_long(latents, chunk_frames, overlap_frames, progress)
            return synthesize(log_magnitudes, cfg).to(log_magnitudes.dtype)
        return self._decode_chunks(latents, self.decoder, cfg.audio_channels, cfg.samples_per_latent,
                                   chunk_frames, overlap_frames, progress)

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
        out = self._decode_chunks(latents, lambda piece: self.decoder.log_magnitudes(piece).flatten(1, 2),
                                  cfg.audio_channels * bins, cfg.frame_stride, chunk_frames, overlap_frames, progress)
        return out.reshape(latents.shape[0], cfg.audio_channels, bins, -1)

    def _decode_chunks(self, latents: torch.Tensor, part: Callable[[torch.Tensor], torch.Tensor], rows: int,
                       scale: int, chunk_frames: int, overlap_frames: int | None,
                       progress: Progress | None) -> torch.Tensor:
        """`part` (latents (B, latent_dim, n) -> (B, rows, n * scale)) over overlapping chunks of
        `latents`, stitched into a preallocated (B, rows, L * scale) on `latents`' device."""
        cfg = self.config
        frames = latents.shape[-1]
        overlap = _overlap(chunk_frames, overlap_frames, cfg.decoder_context_frames)
        device, dtype = self._run_device()
        out_dtype = torch.promote_types(latents.dtype, torch.float32)
        out = torch.zeros(latents.shape[0], rows, frames * scale, dtype=out_dtype, device=latents.device)

        def run(start: int, end: int) -> torch.Tensor:
            return part(latents[..., start:end].to(device, dtype)).to(out.device, out_dtype)

        _stitch(run, out, frames, scale, chunk_frames, overlap, cfg.decoder_context_frames, progress)
        return out


# --- chunking ----------------------------------------------------------------------

CROSSFADE_FRAMES = 4  # crossfade length beyond the dropped context, in the default overlap


def _overlap(chunk_frames: int, overlap_frames: int | None, context: int) -> int:
    """The validated overlap; by default the receptive-field context on both sides plus
    a short crossfade, which makes chunked results equal to unchunked ones (`_stitch`)."""
    if not isinstance(chunk_frames, int) or isinstance(chunk_frames, bool) or chunk_frames < 1:
        raise SalongError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
    if overlap_frames is None:
        overlap = 2 * context + CROSSFADE_FRAMES
        if overlap >= chunk_frames:
            raise SalongError(
                f"chunk_frames={chunk_frames} is too short for this model, whose chunks overlap by {overlap} "
                f"frames (twice its receptive field plus a crossfade); use chunk_frames >= {2 * overlap}"
            )
        return overlap
    if not isinstance(overlap_frames, int) or isinstance(overlap_frames, bool) or not 0 < overlap_frames < chunk_frames:
        raise SalongError(
            f"overlap_frames must be an integer from 1 to chunk_frames - 1 ({chunk_frames - 1}), "
            f"got {overlap_frames!r}; raise chunk_frames or lower overlap_frames"
        )
    return overlap_frames


def chunk_plan(total: int, chunk: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) frame ranges of length `chunk` covering [0, total); neighbours share
    at least `overlap` frames. Starts are spread evenly so the last chunk is full-length too."""
    if total <= chunk:
        return [(0, total)]
    step = chunk - overlap
    n = -(-(total - chunk) // step) + 1
    starts = [round(k * (total - chunk) / (n - 1)) for k in range(n)]
    return [(s, s + chunk) for s in starts]


def _stitch(
    run: Callable[[int, int], torch.Tensor],
    out: torch.Tensor,
    total: int,
    scale: int,
    chunk: int,
    overlap: int,
    context: int,
    progress: Progress | None,
) -> None:
    """Fill `out` (..., total * scale) from chunks `run(start, end)` -> (..., (end - start) * scale).

    Near its cut edges a chunk sees zero padding instead of the neighbouring signal, so
    its output is only exact `context` frames (the receptive field) away from a cut. In
    each shared region, `margin` frames at both ends are therefore given to the chunk
    that sees real signal there, and the rest is a raised-cosine crossfade. When the
    overlap exceeds 2 * context, margin = context and the result equals the unchunked
    one up to float rounding; with a smaller overlap, a quarter of it at each end is
    dropped and half is crossfaded, which hides the (then non-zero) seam error.

    Weights: chunk k gets `r[k-1](x) - r[k](x)`, where r[k] rises 0 -> 1 over the k-th
    crossfade (r[-1] = 1, r[n-1] = 0). Crossfades are ordered, so each weight lies in
    [0, 1] and they telescope to exactly 1 everywhere.
    """
    assert 1 <= overlap < chunk, (overlap, chunk)
    plan = chunk_plan(total, chunk, overlap)
    margin = context if overlap > 2 * context else overlap // 4
    fades = []  # (start, length) of each crossfade, in frames
    for (_, end), (next_start, _) in zip(plan, plan[1:]):
        shared = end - next_start
        assert shared >= overlap, (shared, overlap)
        length = overlap - 2 * margin
        fades.append((next_start + (shared - length) // 2, length))

    def rise(x: torch.Tensor, fade: tuple[int, int]) -> torch.Tensor:
        start, length = fade
        t = ((x - start * scale) / (length * scale)).clamp(0.0, 1.0)
        return torch.sin(0.5 * math.pi * t).pow(2)

    for k, (start, end) in enumerate(plan):
        y = run(start, end)
        assert y.shape[-1] == (end - start) * scale, (y.shape, start, end, scale)
        if len(plan) == 1:
            out[..., start * scale : end * scale] = y
        else:
            x = torch.arange(start * scale, end * scale, dtype=torch.float64) + 0.5  # sample centres
            w = (rise(x, fades[k - 1]) if k > 0 else torch.ones_like(x)) - (
                rise(x, fades[k]) if k < len(fades) else torch.zeros_like(x)
            )
            out[..., start * scale : end * scale] += y * w.to(out.device, out.dtype)
        if progress is not None:
            progress(k + 1, len(plan))


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
