"""Learning-rate and EMA schedules as pure functions of the step, and the EMA update.

Nothing here keeps a counter: the trainer passes the 0-based index of the update
being made, so a resumed run recomputes exactly the values an uninterrupted run
would have used.
"""

from __future__ import annotations

import torch
from torch import nn


def lr_factor(step: int, warmup: float, inv_gamma: float, power: float) -> float:
    """Multiplier of the base learning rate at update `step` (0-based).

    Exponential warm-up times inverse decay (k-diffusion `InverseLR`, used by
    stable-audio-tools; docs/architecture.md, Training):
    `(1 - warmup**(step + 1)) * (1 + step / inv_gamma) ** (-power)`.
    """
    return (1.0 - warmup ** (step + 1)) * (1.0 + step / inv_gamma) ** (-power)


def ema_decay(step: int, max_decay: float, inv_gamma: float, power: float) -> float:
    """EMA decay for update `step` (0-based): `min(max_decay, 1 - (1 + step/inv_gamma)**-power)`.

    k-diffusion `EMAWarmup` (after Karras et al.): the decay starts at 0, so the
    first update copies the weights, and rises towards `max_decay`; with
    inv_gamma=1, power=3/4 it reaches 0.999 at about 10k steps and 0.9999 at 215k.
    """
    return max(0.0, min(max_decay, 1.0 - (1.0 + step / inv_gamma) ** (-power)))


@torch.no_grad()
def ema_update(model: nn.Module, averaged: nn.Module, decay: float) -> None:
    """`averaged = decay * averaged + (1 - decay) * model` for parameters; buffers are copied.

    Written as a lerp towards the model, which is exact at decay 0 (the averaged
    weights then equal the model's bit for bit). Same rule as k-diffusion `ema_update`.
    """
    params = dict(model.named_parameters())
    avg_params = dict(averaged.named_parameters())
    assert params.keys() == avg_params.keys(), "EMA copy and model have different parameters"
    names = list(params)
    if names:
        torch._foreach_lerp_([avg_params[n] for n in names], [params[n].detach() for n in names], 1.0 - decay)
    buffers = dict(model.named_buffers())
    avg_buffers = dict(averaged.named_buffers())
    assert buffers.keys() == avg_buffers.keys(), "EMA copy and model have different buffers"
    for name, buf in buffers.items():
        avg_buffers[name].copy_(buf)
