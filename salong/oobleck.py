"""The "Oobleck" encoder and decoder of Stable Audio 2 (Evans et al. 2024, sec. 3.1).

After descript-audio-codec's `dac/model/dac.py` (Kumar et al. 2023): residual units with
dilations 1, 3, 9 of Snake and weight-normalised convolutions (`salong.layers`), strided
down/up-sampling convolutions. `salong.autoencoder` puts them around its VAE bottleneck;
module names reproduce Stable Audio Open 1.0's tensor names.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from salong.chunking import Layer
from salong.layers import SnakeBeta, WNConv1d, WNConvTranspose1d

if TYPE_CHECKING:
    from salong.autoencoder import AutoencoderConfig

DILATIONS = (1, 3, 9)
RESIDUAL_KERNEL = 7


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


class OobleckEncoder(nn.Module):
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


class OobleckDecoder(nn.Module):
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


# The layers above as receptive-field geometry (`salong.chunking.Layer`). A residual unit
# counts as its k=7 conv (its window contains the skip connection's single tap); Snake is
# pointwise.


def _block_geometry(stride: int, transposed: bool) -> list[Layer]:
    units = [(False, RESIDUAL_KERNEL, 1, (RESIDUAL_KERNEL - 1) // 2 * d, d) for d in DILATIONS]
    resample = (transposed, 2 * stride, stride, math.ceil(stride / 2), 1)
    return [resample, *units] if transposed else [*units, resample]


def geometry(config: AutoencoderConfig, decoder: bool) -> list[Layer]:
    """The encoder's or decoder's layers that mix neighbours, input to output."""
    if decoder:
        blocks = [layer for s in reversed(config.strides) for layer in _block_geometry(s, transposed=True)]
        return [(False, 7, 1, 3, 1), *blocks, (False, 7, 1, 3, 1)]
    blocks = [layer for s in config.strides for layer in _block_geometry(s, transposed=False)]
    return [(False, 7, 1, 3, 1), *blocks, (False, 3, 1, 1, 1)]
