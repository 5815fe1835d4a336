"""Training losses of the autoencoder (Evans et al. 2024, sec. 3.1; docs/architecture.md, Training losses).

- Multi-resolution STFT loss (Yamamoto et al. 2020; auraloss's `MultiResolutionSTFTLoss`):
  spectral convergence + log-magnitude L1 at FFT sizes 2048..32, hop n_fft/4, Hann window.
  Stereo: on sum and difference (Steinmetz et al. 2020) plus left/right at half weight.
- The hinge loss and feature matching (Kumar et al. 2019) of the five multi-scale STFT
  discriminators (`salong.discriminators`).
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

from salong.discriminators import MultiScaleSTFTDiscriminator
from salong.errors import SalongError
from salong.spectral import MAX_LOG_MAGNITUDE, MIN_MAGNITUDE, stft_magnitude

FFT_SIZES: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64, 32)
POWER_FLOOR = 1e-8  # STFT power is clamped here before the square root: finite log-magnitudes

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
        raise SalongError(f"prediction {tuple(log_pred.shape)} and target {tuple(target.shape)} "
                          "must have the same shape")
    pred = log_pred.clamp(max=MAX_LOG_MAGNITUDE).exp().flatten(2)  # (B, C, F*T)
    flat = target.flatten(2)
    convergence = (torch.linalg.vector_norm(flat - pred, dim=-1)
                   / torch.linalg.vector_norm(flat, dim=-1).clamp_min(1e-8))
    return convergence.mean() + F.l1_loss(log_pred, target.clamp_min(MIN_MAGNITUDE).log())


def _check_pair(pred: torch.Tensor, target: torch.Tensor, n_fft: int) -> None:
    if pred.shape != target.shape:
        raise SalongError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    if pred.shape[-1] <= n_fft // 2:
        raise SalongError(
            f"audio of {pred.shape[-1]} samples is too short for an FFT of {n_fft}; use crops longer than {n_fft // 2}"
        )


# --- adversarial losses ------------------------------------------------------------


def _scales(logits: Logits) -> list[torch.Tensor]:
    return [logits] if isinstance(logits, torch.Tensor) else list(logits)


def hinge_discriminator_loss(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    """Discriminator hinge loss `mean(relu(1 - real)) + mean(relu(1 + fake))`, summed over scales."""
    pairs = zip(_scales(real_logits), _scales(fake_logits), strict=True)
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in pairs)


def hinge_adversarial_loss(fake_logits: Logits) -> torch.Tensor:
    """The autoencoder's adversarial loss `-mean(fake)` (the hinge GAN's generator loss), summed over scales."""
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


def autoencoder_loss(
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
        parts["adversarial"] = hinge_adversarial_loss(fake_logits)
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
    return hinge_discriminator_loss(real_logits, fake_logits)


def _real_fake_pass(
    discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    """One discriminator call on [real; fake], split back into (real, fake) logits and features.

    One forward per backward is what DistributedDataParallel supports without extra flags.
    """
    batch = real.shape[0]
    logits, features = discriminator(torch.cat([real, fake]))  # per scale: (2B, ...)
    return (
        [logit[:batch] for logit in logits],
        [logit[batch:] for logit in logits],
        [[f[:batch] for f in scale] for scale in features],
        [[f[batch:] for f in scale] for scale in features],
    )
