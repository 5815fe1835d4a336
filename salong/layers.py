"""Small audio building blocks, after descript-audio-codec's `dac/nn/layers.py`.

Weight-normalised convolutions (Salimans & Kingma 2016) stored as `weight_g` / `weight_v`
like `torch.nn.utils.weight_norm`, SnakeBeta (Ziyin et al. 2020; BigVGAN, Lee et al. 2023)
and a 1-D ConvNeXt block (Liu et al. 2022; Vocos, Siuzdak 2023).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from salong.errors import short_reason

CONVNEXT_KERNEL = 7


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
