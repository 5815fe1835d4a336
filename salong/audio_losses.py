"""Training losses of the autoencoder (Evans et al. 2024, sec. 3.1; docs/architecture.md, Training losses).

- Multi-resolution STFT loss (Yamamoto et al. 2020; auraloss's `MultiResolutionSTFTLoss`):
  spectral convergence + log-magnitude L1 at FFT sizes 2048..32, hop n_fft/4, Hann window.
  Stereo: on sum and difference (Steinmetz et al. 2020) plus left/right at half weight.
- Five multi-scale STFT discriminators (EnCodec, Defossez et al. 2022) with the hinge loss
  and feature matching (Kumar et al. 2019).
- The weights that combine them, with the VAE's KL term.

The training loop (optimisers, EMA, alternating steps) lives elsewhere; this file only
computes losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from salong.errors import SalongError
from salong.spectral import MAX_LOG_MAGNITUDE, MIN_MAGNITUDE, stft_magnitude

FFT_SIZES: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64, 32)
POWER_FLOOR = 1e-8  # STFT power is clamped here before the square root: finite log-magnitudes
DISCRIMINATOR_FFT_SIZES: tuple[int, ...] = (2048, 1024, 512, 256, 128)

Logits = torch.Tensor | Sequence[torch.Tensor]
Features = Sequence[torch.Tensor] | Sequence[Sequence[torch.Tensor]]


# --- multi-resolution STFT loss ----------------------------------------------------


def stft_loss(pred: torch.Tensor, target: torch.Tensor, n_fft: int, hop_length: int | None = None) -> torch.Tensor:
    """Spectral convergence + log-magnitude L1 at one resolution (Arik et al. 2018).

    (B, C, N) or (B, N) inputs; every channel is its own signal. Spectral convergence is
    `||Y - X||_F / ||Y||_F` per signal, averaged; the log term is the mean |log Y - log X|.
    """
    _check_pair(pred, target, n_fft)
    hop = hop_length or n_fft // 4
    x = stft_magnitude(pred.reshape(-1, pred.shape[-1]), n_fft, hop, eps=POWER_FLOOR)  # (R, F, T)
    y = stft_magnitude(target.reshape(-1, target.shape[-1]), n_fft, hop, eps=POWER_FLOOR)  # (R, F, T)
    convergence = (torch.linalg.vector_norm(y - x, dim=(1, 2)) / torch.linalg.vector_norm(y, dim=(1, 2))).mean()
    log_magnitude = F.l1_loss(x.log(), y.log())
    return convergence + log_magnitude


def multi_resolution_stft_loss(
    pred: torch.Tensor, target: torch.Tensor, fft_sizes: Sequence[int] = FFT_SIZES
) -> torch.Tensor:
    """The mean of `stft_loss` over `fft_sizes` (hop n_fft/4)."""
    return sum(stft_loss(pred, target, n) for n in fft_sizes) / len(fft_sizes)


def stereo_stft_loss(pred: torch.Tensor, target: torch.Tensor, fft_sizes: Sequence[int] = FFT_SIZES) -> torch.Tensor:
    """Stereo reconstruction loss of Stable Audio: sum/difference plus left/right at half weight.

    `(mr(L+R) + mr(L-R)) / 2 + (mr(L) + mr(R)) / 2` for the multi-resolution loss `mr`,
    as auraloss's `SumAndDifferenceSTFTLoss` plus stable-audio-tools' half-weight L/R terms.
    (B, 2, N) inputs.
    """
    if pred.ndim != 3 or pred.shape[1] != 2:
        raise SalongError(f"stereo_stft_loss needs (batch, 2, samples) audio, got {tuple(pred.shape)}")
    _check_pair(pred, target, max(fft_sizes))
    left_p, right_p = pred[:, 0], pred[:, 1]  # (B, N) each
    left_t, right_t = target[:, 0], target[:, 1]
    sum_diff = multi_resolution_stft_loss(left_p + right_p, left_t + right_t, fft_sizes) + multi_resolution_stft_loss(
        left_p - right_p, left_t - right_t, fft_sizes
    )
    left_right = multi_resolution_stft_loss(left_p, left_t, fft_sizes) + multi_resolution_stft_loss(
        right_p, right_t, fft_sizes
    )
    return sum_diff / 2 + left_right / 2


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, fft_sizes: Sequence[int] = FFT_SIZES) -> torch.Tensor:
    """`stereo_stft_loss` for stereo audio, `multi_resolution_stft_loss` otherwise."""
    if pred.ndim == 3 and pred.shape[1] == 2:
        return stereo_stft_loss(pred, target, fft_sizes)
    return multi_resolution_stft_loss(pred, target, fft_sizes)


def magnitude_loss(log_pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`stft_loss` on magnitudes the model predicts directly (the spectral autoencoder):
    spectral convergence + log-magnitude L1 of predicted log-magnitudes (B, C, F, T) against
    target magnitudes of the same shape, each (batch, channel) its own signal. Predictions are
    clamped and targets floored as the spectral autoencoder clamps and floors them."""
    if log_pred.shape != target.shape:
        raise SalongError(f"prediction {tuple(log_pred.shape)} and target {tuple(target.shape)} must have the same shape")
    pred = log_pred.clamp(max=MAX_LOG_MAGNITUDE).exp().flatten(2)  # (B, C, F*T)
    flat = target.flatten(2)
    convergence = (torch.linalg.vector_norm(flat - pred, dim=-1) / torch.linalg.vector_norm(flat, dim=-1).clamp_min(1e-8))
    return convergence.mean() + F.l1_loss(log_pred, target.clamp_min(MIN_MAGNITUDE).log())


def _check_pair(pred: torch.Tensor, target: torch.Tensor, n_fft: int) -> None:
    if pred.shape != target.shape:
        raise SalongError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    if pred.shape[-1] <= n_fft // 2:
        raise SalongError(
            f"audio of {pred.shape[-1]} samples is too short for an FFT of {n_fft}; use crops longer than {n_fft // 2}"
        )


# --- discriminators ----------------------------------------------------------------


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Multi-scale STFT discriminator (EnCodec); `filters` 32 in stable-audio-tools, 32-64 in the paper."""

    audio_channels: int = 2
    filters: int = 32
    n_ffts: tuple[int, ...] = DISCRIMINATOR_FFT_SIZES
    dilations: tuple[int, ...] = (1, 2, 4)
    negative_slope: float = 0.2

    def __post_init__(self) -> None:
        for name in ("audio_channels", "filters"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SalongError(f"DiscriminatorConfig.{name} must be a positive integer, got {value!r}")
        for name in ("n_ffts", "dilations"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value or not all(isinstance(v, int) and v >= 1 for v in value):
                raise SalongError(
                    f"DiscriminatorConfig.{name} must be a non-empty tuple of positive integers, got {value!r}"
                )
        bad = [n for n in self.n_ffts if n < 4 or n % 4]
        if bad:
            raise SalongError(f"DiscriminatorConfig.n_ffts must be multiples of 4 (hop n_fft/4), got {bad}")


DISCRIMINATOR_PRESETS: dict[str, DiscriminatorConfig] = {
    "sa2": DiscriminatorConfig(),
    "tiny": DiscriminatorConfig(filters=4),
    # For the `compact` autoencoder: a critic that costs about as much as the model it judges.
    "compact": DiscriminatorConfig(filters=8),
}


class WNConv2d(nn.Module):
    """Conv2d with weight normalisation (Salimans & Kingma 2016), norm per output channel."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        stride: tuple[int, int] = (1, 1),
        dilation: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__()
        # "same" padding along both axes, as EnCodec's get_2d_padding
        self.padding = tuple((k - 1) * d // 2 for k, d in zip(kernel_size, dilation))
        self.stride, self.dilation = stride, dilation
        self.weight_v = nn.Parameter(torch.empty(out_channels, in_channels, *kernel_size))
        self.weight_g = nn.Parameter(torch.empty(out_channels, 1, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels))
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))  # PyTorch's Conv2d default
        bound = 1 / math.sqrt(in_channels * kernel_size[0] * kernel_size[1])
        nn.init.uniform_(self.bias, -bound, bound)
        with torch.no_grad():
            self.weight_g.copy_(torch.linalg.vector_norm(self.weight_v, dim=(1, 2, 3), keepdim=True))

    @property
    def weight(self) -> torch.Tensor:
        norm = torch.linalg.vector_norm(self.weight_v, dim=(1, 2, 3), keepdim=True)  # (out, 1, 1, 1)
        return self.weight_g * self.weight_v / norm  # (out, in, kt, kf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


class STFTDiscriminator(nn.Module):
    """One EnCodec STFT discriminator.

    Complex STFT (Hann, hop n_fft/4, no centre padding, normalised by the window's energy
    like torchaudio's `Spectrogram(normalized=True)`), real and imaginary parts of each
    audio channel as input channels, laid out (time, frequency). Convs: (3, 9); three
    (3, 9) with stride 2 in frequency and dilation 1, 2, 4 in time; (3, 3); output (3, 3)
    to one channel. LeakyReLU 0.2 after every conv but the last, each output kept as a
    feature map. All convs are weight-normalised (docs/architecture.md, Training losses;
    EnCodec itself leaves the first one plain).
    """

    def __init__(self, config: DiscriminatorConfig, n_fft: int) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, n_fft // 4
        self.negative_slope = config.negative_slope
        f = config.filters
        self.convs = nn.ModuleList(
            [
                WNConv2d(2 * config.audio_channels, f, (3, 9)),
                *(WNConv2d(f, f, (3, 9), stride=(1, 2), dilation=(d, 1)) for d in config.dilations),
                WNConv2d(f, f, (3, 3)),
            ]
        )
        self.conv_post = WNConv2d(f, 1, (3, 3))

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, C, N) -> (B, 2C, frames, n_fft/2 + 1): real parts of all channels, then imaginary."""
        b, c, n = audio.shape
        if n < self.n_fft:
            raise SalongError(f"audio of {n} samples is shorter than the discriminator's FFT of {self.n_fft}")
        window = torch.hann_window(self.n_fft, dtype=audio.dtype, device=audio.device)
        spec = torch.stft(
            audio.reshape(b * c, n), self.n_fft, self.hop_length, self.n_fft, window, center=False, return_complex=True
        )  # (B*C, F, T)
        spec = spec / window.square().sum().sqrt()
        spec = spec.reshape(b, c, *spec.shape[1:])  # (B, C, F, T)
        return torch.cat([spec.real, spec.imag], dim=1).transpose(2, 3)  # (B, 2C, T, F)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (B, 1, T, F') and the feature map after every hidden conv."""
        z = self.spectrogram(audio)
        features = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), self.negative_slope)
            features.append(z)
        return self.conv_post(z), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """One `STFTDiscriminator` per FFT size; returns per-scale logits and feature maps."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        self.discriminators = nn.ModuleList(STFTDiscriminator(config, n) for n in config.n_ffts)

    def forward(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        logits, features = [], []
        for disc in self.discriminators:
            logit, feats = disc(audio)
            logits.append(logit)
            features.append(feats)
        return logits, features


# --- adversarial losses ------------------------------------------------------------


def _scales(logits: Logits) -> list[torch.Tensor]:
    return [logits] if isinstance(logits, torch.Tensor) else list(logits)


def hinge_d_loss(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    """Discriminator hinge loss `mean(relu(1 - real)) + mean(relu(1 + fake))`, summed over scales."""
    pairs = zip(_scales(real_logits), _scales(fake_logits), strict=True)
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in pairs)


def hinge_g_loss(fake_logits: Logits) -> torch.Tensor:
    """Generator adversarial loss `-mean(fake)`, summed over scales."""
    return sum(-f.mean() for f in _scales(fake_logits))


def feature_matching_loss(real_features: Features, fake_features: Features) -> torch.Tensor:
    """Mean |real - fake| of every feature map, averaged over a scale's maps, summed over scales.

    Takes one scale's list of maps or a list of such lists (as stable-audio-tools' EnCodec wrapper).
    """
    if real_features and isinstance(real_features[0], torch.Tensor):
        real_features, fake_features = [real_features], [fake_features]  # one scale
    total = 0.0
    for real, fake in zip(real_features, fake_features, strict=True):
        total = total + sum((r - f).abs().mean() for r, f in zip(real, fake, strict=True)) / len(real)
    return total


# --- combined ----------------------------------------------------------------------


@dataclass(frozen=True)
class AutoencoderLossConfig:
    """Loss weights of the paper / stable-audio-tools' SAO VAE config."""

    stft_weight: float = 1.0
    adversarial_weight: float = 0.1
    feature_matching_weight: float = 5.0
    kl_weight: float = 1e-4
    fft_sizes: tuple[int, ...] = FFT_SIZES

    def __post_init__(self) -> None:
        for name in ("stft_weight", "adversarial_weight", "feature_matching_weight", "kl_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
                raise SalongError(f"AutoencoderLossConfig.{name} must be a finite number >= 0, got {value!r}")
        if not self.fft_sizes or not all(isinstance(n, int) and n >= 4 for n in self.fft_sizes):
            raise SalongError(f"AutoencoderLossConfig.fft_sizes must be FFT sizes >= 4, got {self.fft_sizes!r}")


def generator_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    kl: torch.Tensor,
    discriminator: MultiScaleSTFTDiscriminator | None = None,
    config: AutoencoderLossConfig = AutoencoderLossConfig(),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Autoencoder objective: weighted STFT + KL, plus adversarial + feature matching when a
    discriminator is given (None during an adversarial warm-up). Returns (total, unweighted parts).

    The pass leaves gradients on the discriminator's parameters, so zero them before its
    own step (the trainer does).
    """
    parts = {"stft": reconstruction_loss(pred, target, config.fft_sizes), "kl": kl}
    total = config.stft_weight * parts["stft"] + config.kl_weight * kl
    if discriminator is not None:
        _, fake_logits, real_features, fake_features = _real_fake_pass(discriminator, target, pred)
        real_features = [[f.detach() for f in scale] for scale in real_features]
        parts["adversarial"] = hinge_g_loss(fake_logits)
        parts["feature_matching"] = feature_matching_loss(real_features, fake_features)
        total = (
            total
            + config.adversarial_weight * parts["adversarial"]
            + config.feature_matching_weight * parts["feature_matching"]
        )
    return total, parts


def discriminator_loss(
    pred: torch.Tensor, target: torch.Tensor, discriminator: MultiScaleSTFTDiscriminator
) -> torch.Tensor:
    """Hinge loss of the discriminator on real `target` and detached fake `pred`."""
    real_logits, fake_logits, _, _ = _real_fake_pass(discriminator, target, pred.detach())
    return hinge_d_loss(real_logits, fake_logits)


def _real_fake_pass(
    discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    """One discriminator call on [real; fake], split back into (real, fake) logits and features.

    One forward per backward is what DistributedDataParallel supports without extra flags.
    """
    batch = real.shape[0]
    logits, features = discriminator(torch.cat([real, fake]))  # per scale: (2B, ...)
    return (
        [l[:batch] for l in logits],
        [l[batch:] for l in logits],
        [[f[:batch] for f in scale] for scale in features],
        [[f[batch:] for f in scale] for scale in features],
    )
