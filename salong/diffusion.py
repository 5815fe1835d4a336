"""Diffusion maths, k-diffusion style (docs/diffusion.md): objectives, schedules, samplers, guidance.

The network is any callable `net(x_t, t, **cond)` with t in [0, 1]; it knows nothing of
what follows. Two time axes appear:

- t in [0, 1], what the network sees and training draws: cosine schedule
  `alpha = cos(pi t / 2)`, `sigma_t = sin(pi t / 2)`, `x_t = alpha x0 + sigma_t eps`;
- sigma = sigma_t / alpha = tan(pi t / 2) in [0, inf), the noise-to-signal ratio that
  samplers step through, with `x = x0 + sigma eps` (so `x_t = x / sqrt(1 + sigma^2)`).

`VDenoiser` turns a v-predicting network into a denoiser D(x, sigma) ≈ E[x0 | x]; samplers
are pure functions `(denoiser, x, sigmas, extra_args, callback) -> x` over a sigma
schedule that ends at 0.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import nn

from salong.errors import SalongError

Tensor = torch.Tensor


class Denoiser(Protocol):
    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor: ...


Callback = Callable[[dict[str, Any]], None]


def append_dims(x: Tensor, ndim: int) -> Tensor:
    """Right-pad a (B,) tensor with singleton dims so it broadcasts against (B, ...)."""
    return x.reshape(x.shape + (1,) * (ndim - x.ndim))  # (B, 1, ..., 1)


def _masked_mse(pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
    """Mean squared error; with a (B, L) mask (True = real audio) only over unmasked frames."""
    err = (pred.float() - target.float()) ** 2  # (B, C, L)
    if mask is None:
        return err.mean()
    keep = mask.to(torch.bool)[:, None, :].expand_as(err)  # (B, C, L)
    return torch.where(keep, err, torch.zeros_like(err)).sum() / keep.sum().clamp(min=1)


# --- the v-objective and its cosine schedule -----------------------------------------


def alpha_sigma(t: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine schedule (Nichol & Dhariwal 2021; v-diffusion): alpha = cos(pi t/2), sigma = sin(pi t/2)."""
    return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)


def sigma_to_t(sigma: Tensor) -> Tensor:
    """Noise-to-signal ratio -> network time: t = atan(sigma) * 2 / pi."""
    return torch.atan(sigma) * 2 / math.pi


def v_scalings(sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Preconditioning of a v-model (Salimans & Ho 2022, in k-diffusion's sigma space).

    c_skip = 1/(s^2+1), c_out = -s/sqrt(s^2+1), c_in = 1/sqrt(s^2+1), which are alpha^2,
    -sigma_t and alpha of `alpha_sigma(sigma_to_t(s))`: the same schedule `v_loss` trains on.
    """
    c_in = 1 / torch.sqrt(sigma**2 + 1)
    return c_in**2, -sigma * c_in, c_in


def shifted_time(u: Tensor, shift: float = 1.0, objective: str = "v") -> Tensor:
    """Training times from uniform draws `u`, with every noise-to-signal ratio scaled by `shift`.

    `tan(pi t / 2) = shift * tan(pi u / 2)` on the cosine schedule ("v"), `t / (1 - t) =
    shift * u / (1 - u)` for rectified flow ("rf"): shift 1 is t = u, the reference's
    uniform t; shift > 1 moves training towards high noise, where a sample's global
    character (and so its prompt) is decided (docs/diffusion.md, Training times).
    """
    if shift == 1:
        return u
    if objective == "rf":
        return shift * u / (1 + (shift - 1) * u)
    return torch.atan(shift * torch.tan(u * (math.pi / 2))) * (2 / math.pi)


def v_loss(net: Callable[..., Tensor], x0: Tensor, t: Tensor, noise: Tensor, mask: Tensor | None = None,
           **cond: Any) -> Tensor:
    """v-objective: x_t = alpha x0 + sigma eps, target v = alpha eps - sigma x0, MSE.

    x0, noise (B, C, L); t (B,) in [0, 1]; mask (B, L) bool, True on real audio.
    """
    alpha, sigma = (append_dims(a, x0.ndim) for a in alpha_sigma(t))  # (B, 1, 1) each
    x_t = alpha * x0 + sigma * noise
    target = alpha * noise - sigma * x0
    return _masked_mse(net(x_t, t, **cond), target, mask)


class VDenoiser(nn.Module):
    """Wraps a v-predicting network as a denoiser in sigma space (k-diffusion `VDenoiser`).

    D(x, sigma) = c_skip x + c_out net(c_in x, atan(sigma) 2/pi). `loss` trains the same
    network with the same schedule, so training and sampling cannot drift apart.
    """

    def __init__(self, net: Callable[..., Tensor]):
        super().__init__()
        self.inner_model = net

    def forward(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in v_scalings(sigma))  # (B, 1, 1) each
        return c_skip * x + c_out * self.inner_model(x * c_in, sigma_to_t(sigma), **cond)

    def loss(self, x0: Tensor, t: Tensor, noise: Tensor, mask: Tensor | None = None, **cond: Any) -> Tensor:
        return v_loss(self.inner_model, x0, t, noise, mask, **cond)


# --- schedules -----------------------------------------------------------------------


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise SalongError(f"steps must be an integer >= 1, got {steps!r}")


def get_sigmas_loglinear(
    steps: int, sigma_min: float = 0.3, sigma_max: float = 500.0, device: torch.device | str | None = None
) -> Tensor:
    """`steps` sigmas evenly spaced in log sigma from sigma_max down to sigma_min, then 0.

    k-diffusion's polyexponential schedule with rho = 1, as Stable Audio Open samples with.
    Defaults are its model card's (sigma_min 0.3, sigma_max 500); 0.01 / 100 also appear.
    Returns (steps + 1,) float32.
    """
    _check_steps(steps)
    if not 0 < sigma_min < sigma_max or not math.isfinite(sigma_max):
        raise SalongError(
            f"need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}"
        )
    log_sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64)
    sigmas = torch.cat([log_sigmas.exp(), log_sigmas.new_zeros(1)])  # (steps + 1,)
    return sigmas.to(device=device, dtype=torch.float32)


def start_from_init(x_init: Tensor, noise: Tensor, sigmas: Tensor, sigma_start: float) -> tuple[Tensor, Tensor]:
    """Audio-to-audio (SDEdit, Meng et al. 2022): noise clean latents to sigma_start, sample from there.

    Returns (x_init + sigma_start * noise, [sigma_start] + the sigmas below it). To keep the
    full step count instead, build the schedule with sigma_max = sigma_start.
    """
    if not sigma_start > 0 or not math.isfinite(sigma_start):
        raise SalongError(f"init noise level sigma must be a finite number > 0, got {sigma_start!r}")
    rest = sigmas[sigmas < sigma_start]  # keeps the final 0
    return x_init + sigma_start * noise, torch.cat([sigmas.new_tensor([sigma_start]), rest])


# --- samplers --------------------------------------------------------------------------


def _noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


@torch.no_grad()
def sample_euler(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    extra_args: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Euler's method on the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma
    (Karras et al. 2022, Alg. 1 without the Heun correction). `generator` is unused."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])  # (B,)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "denoised": denoised})
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    extra_args: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), multistep second order in lambda = -log sigma.

    First order (DPM-Solver++ 1, i.e. DDIM) on the first step, where no earlier denoised
    estimate exists, and on the last, which lands on sigma = 0 and returns the denoised
    estimate. `generator` is unused.
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])  # (B,)
    old_denoised = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "denoised": denoised})
        if sigma_next == 0:
            x = denoised
        else:
            lam, lam_next = -sigma.log(), -sigma_next.log()
            h = lam_next - lam
            if old_denoised is None:
                d = denoised
            else:
                r = (lam - (-sigmas[i - 1].log())) / h  # h_last / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_next / sigma) * x - torch.expm1(-h) * d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    extra_args: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
    *,
    generator: torch.Generator | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022; k-diffusion, midpoint variant).

    Each step takes the exponential-integrator update of the SDE with noise fraction
    `eta`, adds the second-order midpoint correction from the previous denoised estimate,
    then fresh Gaussian noise drawn from `generator`, so a seeded generator gives the
    same samples every run. eta = 0 is the ODE solver.
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])  # (B,)
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "denoised": denoised})
        if sigma_next == 0:
            x = denoised
            h = None
        else:
            h = sigma.log() - sigma_next.log()  # lambda_next - lambda
            eta_h = eta * h
            x = (sigma_next / sigma) * torch.exp(-eta_h) * x - torch.expm1(-h - eta_h) * denoised
            if old_denoised is not None:
                r = h_last / h
                x = x - 0.5 * torch.expm1(-h - eta_h) * (1 / r) * (denoised - old_denoised)
            if eta:
                x = x + _noise_like(x, generator) * sigma_next * torch.sqrt(-torch.expm1(-2 * eta_h)) * s_noise
        old_denoised, h_last = denoised, h
    return x


Sampler = Callable[..., Tensor]

SAMPLERS: dict[str, Sampler] = {
    "dpmpp-2m": sample_dpmpp_2m,
    "dpmpp-2m-sde": sample_dpmpp_2m_sde,
    "euler": sample_euler,
}


OBJECTIVES = ("v", "rf")  # v-objective (cosine schedule) and rectified flow


def samplers_for(objective: str) -> dict[str, Sampler]:
    """The samplers that fit a model trained with `objective` ("v" or "rf")."""
    if objective not in OBJECTIVES:
        raise SalongError(f"unknown diffusion objective {objective!r}; salong implements {', '.join(OBJECTIVES)}")
    return SAMPLERS if objective == "v" else RF_SAMPLERS


def get_sampler(name: str, objective: str = "v") -> Sampler:
    """The sampler called `name` (underscores accepted for hyphens) for an `objective` model."""
    key = name.strip().lower().replace("_", "-")
    known = samplers_for(objective)
    if key not in known:
        kind = "a v-objective" if objective == "v" else "a rectified-flow"
        raise SalongError(f"unknown sampler {name!r} for {kind} model; choose one of {', '.join(known)}")
    return known[key]


# --- classifier-free guidance --------------------------------------------------------


FULL_INTERVAL = (0.0, 1.0)  # guidance at every noise level


def noise_level(sigma: Tensor, objective: str = "v") -> float:
    """Where a sampler step is, from 1 (pure noise) to 0 (clean), as stable-audio-tools
    places its `cfg_interval`: sigma / sqrt(1 + sigma^2) for a v-objective sigma (the sine
    of the angle t pi / 2), t itself for rectified flow."""
    value = float(sigma.flatten()[0])
    return value / math.sqrt(1.0 + value * value) if objective == "v" else value


def cfg_denoiser(denoiser: Denoiser, cond: Mapping[str, Any], uncond: Mapping[str, Any], scale: float,
                 interval: tuple[float, float] = FULL_INTERVAL, objective: str = "v",
                 part: Mapping[str, Any] | None = None, part_scale: float = 1.0) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2022) in one batch: `u + scale * (c - u)`.

    Guidance applies where the step's `noise_level` lies in `interval` (ends included;
    Kynkaanniemi et al. 2024, stable-audio-tools' `cfg_interval`); elsewhere the step is the
    conditional denoiser alone, one batch of B.

    `cond` and `uncond` hold the same keyword arguments of `denoiser` (tensors with the batch
    first, or None on both sides); the unconditional one usually has every cross-attention
    token dropped (`cond_drop_mask` all True) or a negative prompt's tokens, timing kept.
    Conditional and unconditional rows run as one batch of 2B. Scale 1 is just the
    conditional denoiser.

    `part`, the conditional inputs with some conditions left out (a control zeroed), weighs
    what those conditions add at `part_scale` instead: `u + scale * (p - u) + part_scale * (c - p)`
    (composable diffusion, Liu et al., ECCV 2022), in one batch of 3B.
    """
    sides = [cond, uncond] if part is None else [cond, part, uncond]
    for side in sides[1:]:
        if set(side) != set(cond):
            raise SalongError(f"guidance: cond and uncond need the same keys, got {sorted(cond)} and {sorted(side)}; "
                              "give uncond every input cond has (None where it has none)")
    if scale == 1.0 and (part is None or part_scale == 1.0):
        return lambda x, sigma, **extra: denoiser(x, sigma, **cond, **extra)

    rows: dict[str, Any] = {}
    for key in cond:
        values = [side[key] for side in sides]
        if any(v is None for v in values):
            if any(v is not None for v in values):
                raise SalongError(f"guidance: {key!r} is None in one of cond and uncond only; "
                                  "give it on both sides or on neither")
            rows[key] = None
        else:
            other = next((v for v in values if v.shape != values[0].shape), None)
            if other is not None:
                raise SalongError(f"guidance: {key!r} is {tuple(values[0].shape)} in cond but "
                                  f"{tuple(other.shape)} in uncond; give both the same shape (pad text tokens "
                                  "to one length)")
            rows[key] = torch.cat(values)  # (2B or 3B, ...)

    def guided(x: Tensor, sigma: Tensor, **extra: Any) -> Tensor:
        if not interval[0] <= noise_level(sigma, objective) <= interval[1]:
            return denoiser(x, sigma, **cond, **extra)
        n = len(sides)
        out = denoiser(torch.cat([x] * n), torch.cat([sigma] * n), **rows, **extra)  # (nB, C, L)
        if part is None:
            c, u = out.chunk(2)  # (B, C, L) each
            return u + scale * (c - u)
        c, p, u = out.chunk(3)
        return u + scale * (p - u) + part_scale * (c - p)

    return guided


# --- rectified flow (Stable Audio Open Small) ----------------------------------------


def rf_loss(net: Callable[..., Tensor], x0: Tensor, t: Tensor, noise: Tensor, mask: Tensor | None = None,
            **cond: Any) -> Tensor:
    """Rectified flow (Liu et al. 2022): x_t = (1 - t) x0 + t eps, target v = eps - x0, MSE."""
    tt = append_dims(t, x0.ndim)  # (B, 1, 1)
    return _masked_mse(net((1 - tt) * x0 + tt * noise, t, **cond), noise - x0, mask)


class RFDenoiser(nn.Module):
    """A velocity network as a denoiser over t: D(x, t) = x - t * net(x, t)."""

    def __init__(self, net: Callable[..., Tensor]):
        super().__init__()
        self.inner_model = net

    def forward(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        return x - append_dims(t, x.ndim) * self.inner_model(x, t, **cond)

    def loss(self, x0: Tensor, t: Tensor, noise: Tensor, mask: Tensor | None = None, **cond: Any) -> Tensor:
        return rf_loss(self.inner_model, x0, t, noise, mask, **cond)


def get_ts_logsnr(steps: int, t_max: float = 1.0, logsnr_end: float = 2.0,
                  device: torch.device | str | None = None) -> Tensor:
    """Rectified-flow times as the reference samples Stable Audio Open Small: log-SNR
    `log((1 - t) / t)` evenly spaced from that of `t_max` (-6 when t_max = 1) up to
    `logsnr_end`, mapped back by t = sigmoid(-logsnr); the first time is t_max itself and
    the last 0. More steps land at low noise than with evenly spaced times. (steps + 1,) float32.
    """
    _check_steps(steps)
    if not 0 < t_max <= 1:
        raise SalongError(f"t_max must be in (0, 1], got {t_max!r}")
    start = math.log((1 - t_max) / t_max + 1e-6) if t_max < 1 else -6.0
    ts = torch.sigmoid(-torch.linspace(start, logsnr_end, steps + 1, dtype=torch.float32))
    ts[0], ts[-1] = t_max, 0.0
    return ts.to(device)


def start_from_init_rf(x_init: Tensor, noise: Tensor, t_start: float) -> Tensor:
    """Audio-to-audio for rectified flow: the clean latents moved to time t_start,
    `(1 - t) x_init + t noise`."""
    if not 0 < t_start <= 1:
        raise SalongError(f"init noise level must be in (0, 1] for a rectified-flow model, got {t_start!r}")
    return (1 - t_start) * x_init + t_start * noise


@torch.no_grad()
def sample_pingpong(
    denoiser: Denoiser,
    x: Tensor,
    ts: Tensor,
    extra_args: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Ping-pong sampling for rectified-flow models (Stable Audio Open Small): denoise fully,
    then re-noise to the next time with fresh noise: x = (1 - t') x0_hat + t' eps.

    `denoiser` is an `RFDenoiser`; `ts` runs from about 1 down to 0 (`get_ts_logsnr`).
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])  # (B,)
    for i in range(len(ts) - 1):
        denoised = denoiser(x, ts[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": ts[i], "denoised": denoised})
        t_next = ts[i + 1]
        x = denoised if t_next == 0 else (1 - t_next) * denoised + t_next * _noise_like(x, generator)
    return x


RF_SAMPLERS: dict[str, Sampler] = {"pingpong": sample_pingpong}
