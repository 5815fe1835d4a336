"""The autoencoder's critic: multi-scale STFT discriminators (EnCodec, Defossez et al. 2022).

Its losses (hinge and feature matching) are in `salong.audio_losses`; docs/architecture.md,
Training losses, describes both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from salong.errors import SalongError
from salong.layers import WNConv2d

DISCRIMINATOR_FFT_SIZES: tuple[int, ...] = (2048, 1024, 512, 256, 128)


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
