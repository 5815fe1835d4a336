"""Diffusion: schedule maths, losses, samplers against closed-form Gaussian answers, guidance."""

from __future__ import annotations

import math

import pytest
import torch

from salong.diffusion import (
    SAMPLERS,
    RFDenoiser,
    VDenoiser,
    alpha_sigma,
    append_dims,
    cfg_denoiser,
    get_sampler,
    get_sigmas_loglinear,
    get_ts_logsnr,
    noise_level,
    rf_loss,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_euler,
    sample_pingpong,
    shifted_time,
    sigma_to_t,
    start_from_init,
    v_loss,
    v_scalings,
)
from salong.dit import PRESETS, DiT
from salong.errors import SalongError

# Data: independent Gaussians per channel, x0 ~ N(MU, SD^2).
MU = torch.tensor([2.0, -1.0, 0.5, 0.0]).view(1, 4, 1)
SD = torch.tensor([0.5, 1.0, 0.2, 2.0]).view(1, 4, 1)


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x0 + sigma eps = x] = (SD^2 x + sigma^2 MU) / (SD^2 + sigma^2)."""
    s2 = append_dims(sigma, x.ndim).to(x.dtype) ** 2
    mu, sd2 = MU.to(x.dtype), SD.to(x.dtype) ** 2
    return (sd2 * x + s2 * mu) / (sd2 + s2)


def gaussian_v_net(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact v-prediction for the Gaussian data, written from the v-objective alone."""
    alpha, sigma = (append_dims(a, x_t.ndim).to(x_t.dtype) for a in alpha_sigma(t))
    x0 = gaussian_denoiser(x_t / alpha, (sigma / alpha).flatten())
    eps = (x_t - alpha * x0) / sigma
    return alpha * eps - sigma * x0


def exact_sample(x_start: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """What a perfect ODE solver returns: the probability-flow ODE of Gaussian data is linear,
    x(s) = MU + (x(s0) - MU) sqrt(SD^2 + s^2) / sqrt(SD^2 + s0^2), solved to the last nonzero
    sigma; the last step then jumps to the denoised estimate, as every sampler here does."""
    s0, s_last = sigmas[0].double(), sigmas[-2].double()
    mu, sd2 = MU.double(), SD.double() ** 2
    x = mu + (x_start.double() - mu) * torch.sqrt(sd2 + s_last**2) / torch.sqrt(sd2 + s0**2)
    return gaussian_denoiser(x, s_last.expand(1))


# --- schedule maths and losses -------------------------------------------------------


def test_v_scalings_are_the_design_formulas_and_the_training_schedule() -> None:
    s = torch.logspace(-3, 3, 50, dtype=torch.float64)
    c_skip, c_out, c_in = v_scalings(s)
    torch.testing.assert_close(c_skip, 1 / (s**2 + 1))
    torch.testing.assert_close(c_out, -s / torch.sqrt(s**2 + 1))
    torch.testing.assert_close(c_in, 1 / torch.sqrt(s**2 + 1))
    alpha, sigma = alpha_sigma(sigma_to_t(s))  # what v_loss trains with
    torch.testing.assert_close(c_in, alpha)
    torch.testing.assert_close(c_skip, alpha**2)
    torch.testing.assert_close(c_out, -sigma)
    torch.testing.assert_close(torch.tan(sigma_to_t(s) * math.pi / 2), s)  # sigma = tan(pi t / 2)


def test_vdenoiser_with_exact_v_returns_exact_x0() -> None:
    torch.manual_seed(0)
    x0, eps = torch.randn(4, 3, 10, dtype=torch.float64), torch.randn(4, 3, 10, dtype=torch.float64)
    sigma = torch.tensor([1e-3, 0.3, 7.0, 500.0], dtype=torch.float64)
    seen = {}

    def net(x_t: torch.Tensor, t: torch.Tensor, *, tag: str) -> torch.Tensor:
        alpha, sig = (append_dims(a, 3) for a in alpha_sigma(t))
        torch.testing.assert_close(x_t, alpha * x0 + sig * eps)  # the network sees the training input
        seen["tag"] = tag
        return alpha * eps - sig * x0  # the training target

    denoised = VDenoiser(net)(x0 + append_dims(sigma, 3) * eps, sigma, tag="cond")
    torch.testing.assert_close(denoised, x0)
    assert seen["tag"] == "cond"  # conditioning is passed through


def test_v_loss_is_zero_for_the_exact_v_and_matches_a_direct_computation() -> None:
    torch.manual_seed(0)
    x0, noise, t = torch.randn(3, 4, 16), torch.randn(3, 4, 16), torch.rand(3)
    a = torch.cos(math.pi * t / 2)[:, None, None]
    s = torch.sin(math.pi * t / 2)[:, None, None]
    perfect = lambda x_t, tt: a * noise - s * x0  # noqa: E731
    assert v_loss(perfect, x0, t, noise) < 1e-12
    crude = lambda x_t, tt: 0.3 * x_t + tt[:, None, None]  # noqa: E731
    direct = ((0.3 * (a * x0 + s * noise) + t[:, None, None] - (a * noise - s * x0)) ** 2).mean()
    torch.testing.assert_close(v_loss(crude, x0, t, noise), direct)
    torch.testing.assert_close(VDenoiser(crude).loss(x0, t, noise), direct)


def test_loss_mask_ignores_padded_frames() -> None:
    torch.manual_seed(0)
    x0, noise, t = torch.randn(2, 4, 12), torch.randn(2, 4, 12), torch.rand(2)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 7:] = False  # first clip is 7 frames of audio padded to 12
    mask[1, 10:] = False
    net = lambda x_t, tt, scale: scale * x_t  # noqa: E731
    loss = v_loss(net, x0, t, noise, mask, scale=0.5)
    garbage = x0.clone()
    garbage[0, :, 7:] = 1e4
    garbage[1, :, 10:] = -1e4
    torch.testing.assert_close(v_loss(net, garbage, t, noise, mask, scale=0.5), loss)
    # Mean over the real frames only.
    a, s = (v[:, None, None] for v in alpha_sigma(t))
    err = (0.5 * (a * x0 + s * noise) - (a * noise - s * x0)) ** 2
    direct = torch.cat([err[0, :, :7].flatten(), err[1, :, :10].flatten()]).mean()
    torch.testing.assert_close(loss, direct)
    torch.testing.assert_close(v_loss(net, x0, t, noise, torch.ones(2, 12, dtype=torch.bool), scale=0.5),
                               v_loss(net, x0, t, noise, scale=0.5))


# --- schedules -----------------------------------------------------------------------


def test_loglinear_sigmas() -> None:
    sigmas = get_sigmas_loglinear(10, 0.3, 500.0)
    assert sigmas.shape == (11,) and sigmas.dtype == torch.float32
    assert sigmas[0].item() == pytest.approx(500.0) and sigmas[-2].item() == pytest.approx(0.3) and sigmas[-1] == 0
    ratios = sigmas[1:-1].double().log() - sigmas[:-2].double().log()
    torch.testing.assert_close(ratios, torch.full_like(ratios, math.log(0.3 / 500) / 9), atol=1e-6, rtol=1e-5)
    assert get_sigmas_loglinear(1, 0.3, 500.0).tolist() == [500.0, 0.0]
    for steps in (0, -3, 2.5):
        with pytest.raises(SalongError, match="steps"):
            get_sigmas_loglinear(steps)
    with pytest.raises(SalongError, match="sigma_min"):
        get_sigmas_loglinear(10, 5.0, 1.0)


def test_start_from_init_truncates_the_schedule() -> None:
    sigmas = get_sigmas_loglinear(20, 0.3, 500.0)
    x_init, noise = torch.randn(1, 4, 8), torch.randn(1, 4, 8)
    x, rest = start_from_init(x_init, noise, sigmas, 10.0)
    torch.testing.assert_close(x, x_init + 10.0 * noise)
    assert rest[0] == 10.0 and rest[-1] == 0 and torch.all(rest[1:] < 10.0)
    assert torch.equal(rest[1:], sigmas[sigmas < 10.0])
    # From a low noise level the exact denoiser keeps most of the input.
    torch.manual_seed(0)
    x_init = MU + SD * torch.randn(64, 4, 32)
    x, rest = start_from_init(x_init, torch.randn_like(x_init), get_sigmas_loglinear(30, 0.01, 500.0), 0.05)
    out = sample_dpmpp_2m(VDenoiser(gaussian_v_net), x, rest)
    assert ((out - x_init).pow(2).mean() / SD.pow(2).mean()) < 0.01
    with pytest.raises(SalongError, match="sigma"):
        start_from_init(x_init, noise, sigmas, 0.0)


# --- samplers ------------------------------------------------------------------------


@pytest.mark.parametrize("name, steps", [("dpmpp-2m", 100), ("dpmpp-2m-sde", 200), ("euler", 500)])
def test_samplers_reproduce_the_gaussian_data_distribution(name: str, steps: int) -> None:
    # 256 * 64 = 16384 samples per channel: the standard error of the mean is SD/128 and
    # the relative standard error of the variance sqrt(2/16383) = 1.1%. Tolerances are about
    # 4 standard errors; the start x = 500 eps instead of the exact marginal biases the
    # mean by MU * SD / 500 <= 0.002, under 0.3 SE. Euler's O(1/steps) error needs many steps.
    torch.manual_seed(0)
    sigmas = get_sigmas_loglinear(steps, 0.01, 500.0)
    x = 500.0 * torch.randn(256, 4, 64)
    out = get_sampler(name)(VDenoiser(gaussian_v_net), x, sigmas, generator=torch.Generator().manual_seed(1))
    mean, var = out.mean(dim=(0, 2)), out.var(dim=(0, 2))
    assert torch.all((mean - MU.flatten()).abs() < 4 * SD.flatten() / 128), mean
    assert torch.all((var / SD.flatten() ** 2 - 1).abs() < 0.05), var


def test_sampler_error_shrinks_with_steps_and_2m_is_second_order() -> None:
    torch.manual_seed(0)
    x_start = MU.double() + math.sqrt(500.0**2 + 4) * torch.randn(32, 4, 16, dtype=torch.float64)
    denoiser = VDenoiser(gaussian_v_net)
    errors: dict[str, list[float]] = {"euler": [], "dpmpp-2m": []}
    for steps in (10, 20, 40, 80):
        sigmas = get_sigmas_loglinear(steps, 0.3, 500.0).double()
        reference = exact_sample(x_start, sigmas)
        for name in errors:
            out = SAMPLERS[name](denoiser, x_start.clone(), sigmas)
            errors[name].append((out - reference).abs().max().item())
    for name, errs in errors.items():
        assert all(a > b for a, b in zip(errs, errs[1:])), (name, errs)
    euler_ratios = [a / b for a, b in zip(errors["euler"], errors["euler"][1:])]
    two_m_ratios = [a / b for a, b in zip(errors["dpmpp-2m"][1:], errors["dpmpp-2m"][2:])]
    assert all(1.6 < r < 2.5 for r in euler_ratios), euler_ratios  # first order: halves per doubling
    assert all(r > 3.2 for r in two_m_ratios), two_m_ratios  # second order: about a quarter
    assert all(e2 < e1 / 10 for e1, e2 in zip(errors["euler"], errors["dpmpp-2m"]))


def test_dpmpp_2m_first_step_is_first_order_and_last_step_lands_on_denoised() -> None:
    torch.manual_seed(0)
    denoiser = VDenoiser(gaussian_v_net)
    x = 80.0 * torch.randn(2, 4, 8, dtype=torch.float64)
    one = torch.tensor([80.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(sample_dpmpp_2m(denoiser, x, one), denoiser(x, one[:1].expand(2)))
    two = torch.tensor([80.0, 5.0, 0.0], dtype=torch.float64)
    d0 = denoiser(x, two[:1].expand(2))
    x1 = (5.0 / 80.0) * x + (1 - 5.0 / 80.0) * d0  # DPM-Solver++(1) = DDIM step
    torch.testing.assert_close(sample_dpmpp_2m(denoiser, x, two), denoiser(x1, two[1:2].expand(2)))
    calls = []
    sample_dpmpp_2m(denoiser, x, get_sigmas_loglinear(7).double(), callback=lambda info: calls.append(info["i"]))
    assert calls == list(range(7))


def test_stochastic_samplers_are_deterministic_given_a_seeded_generator() -> None:
    torch.manual_seed(0)
    x = 500.0 * torch.randn(2, 4, 8)
    sigmas = get_sigmas_loglinear(10)

    def run(seed: int) -> torch.Tensor:
        return sample_dpmpp_2m_sde(VDenoiser(gaussian_v_net), x, sigmas, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))
    assert torch.equal(sample_euler(VDenoiser(gaussian_v_net), x, sigmas),
                       sample_euler(VDenoiser(gaussian_v_net), x, sigmas))


def test_get_sampler_names() -> None:
    assert get_sampler("dpmpp-2m") is sample_dpmpp_2m
    assert get_sampler("DPMPP_2M_SDE") is sample_dpmpp_2m_sde
    with pytest.raises(SalongError, match=r"'ddim'.*dpmpp-2m, dpmpp-2m-sde, euler"):
        get_sampler("ddim")


# --- classifier-free guidance --------------------------------------------------------


def test_cfg_batches_cond_and_uncond_in_one_call_and_scale_one_is_conditional() -> None:
    torch.manual_seed(0)
    net = DiT(PRESETS["tiny"]).eval()
    with torch.no_grad():
        for p in net.parameters():
            if torch.all(p == 0):
                p.normal_(0, 0.05)
    calls = []

    def counted(x, sigma, **cond):
        calls.append(x.shape[0])
        return VDenoiser(net)(x, sigma, **cond)

    b, c = 2, net.config.cond_width
    cond = dict(cond_tokens=torch.randn(b, 6, c), seconds_start=torch.zeros(b),
                seconds_total=torch.tensor([30.0, 90.0]), cond_drop_mask=torch.zeros(b, dtype=torch.bool))
    uncond = {**cond, "cond_drop_mask": torch.ones(b, dtype=torch.bool)}
    negative = {**cond, "cond_tokens": torch.randn(b, 6, c)}
    x, sigma = 3.0 * torch.randn(b, net.config.latent_dim, 11), torch.full((b,), 3.0)
    with torch.no_grad():
        c_out, u_out, n_out = (counted(x, sigma, **k) for k in (cond, uncond, negative))
        calls.clear()
        guided = cfg_denoiser(counted, cond, uncond, 7.0)(x, sigma)
        assert calls == [2 * b]  # one batched call
        torch.testing.assert_close(guided, u_out + 7.0 * (c_out - u_out), atol=1e-5, rtol=1e-4)
        assert torch.equal(cfg_denoiser(counted, cond, uncond, 1.0)(x, sigma), c_out)
        torch.testing.assert_close(cfg_denoiser(counted, cond, negative, 3.0)(x, sigma),
                                   n_out + 3.0 * (c_out - n_out), atol=1e-5, rtol=1e-4)
        out = sample_dpmpp_2m(cfg_denoiser(counted, cond, uncond, 7.0), 500 * torch.randn_like(x),
                              get_sigmas_loglinear(3))
        assert out.shape == x.shape and torch.isfinite(out).all()
    with pytest.raises(SalongError, match="same keys"):
        cfg_denoiser(counted, cond, {"cond_tokens": cond["cond_tokens"]}, 7.0)
    with pytest.raises(SalongError, match="'beat' is None in one of cond and uncond only"):
        cfg_denoiser(counted, {**cond, "beat": None}, {**uncond, "beat": torch.zeros(b, 11, 4)}, 7.0)
    with pytest.raises(SalongError, match="'cond_tokens' is .* in cond but .* in uncond; give both the same shape"):
        cfg_denoiser(counted, cond, {**uncond, "cond_tokens": uncond["cond_tokens"][:, :1]}, 7.0)


def test_cfg_interval_guides_only_the_steps_whose_noise_level_is_in_it() -> None:
    """stable-audio-tools' `cfg_interval`: guidance where sigma / sqrt(1 + sigma^2) (v) or t (rf)
    lies in [lo, hi]; the other steps are the conditional denoiser alone, one batch of B."""
    calls = []

    def net(x, sigma, cond_drop_mask):  # the conditional rows give 1, the unconditional 0
        calls.append(x.shape[0])
        return (~cond_drop_mask).float()[:, None, None].expand_as(x).clone()

    b = 2
    cond = dict(cond_drop_mask=torch.zeros(b, dtype=torch.bool))
    uncond = dict(cond_drop_mask=torch.ones(b, dtype=torch.bool))
    x = torch.zeros(b, 3, 4)
    guided = cfg_denoiser(net, cond, uncond, 5.0, (0.7, 1.0))
    for sigma, level, expected in ((500.0, 1.0, 5.0), (1.0, 0.7071, 5.0), (0.9, 0.669, 1.0), (0.3, 0.287, 1.0)):
        assert noise_level(torch.full((b,), sigma)) == pytest.approx(level, abs=1e-3)
        calls.clear()
        assert torch.equal(guided(x, torch.full((b,), sigma)), torch.full_like(x, expected))
        assert calls == ([2 * b] if expected == 5.0 else [b])
    rf = cfg_denoiser(net, cond, uncond, 5.0, (0.2, 0.6), objective="rf")
    assert [float(rf(x, torch.full((b,), t))[0, 0, 0]) for t in (0.9, 0.59, 0.4, 0.21, 0.1)] == [1, 5, 5, 5, 1]
    full = cfg_denoiser(net, cond, uncond, 5.0)  # the default: every step, as before the option
    assert all(float(full(x, torch.full((b,), s))[0, 0, 0]) == 5.0 for s in (500.0, 0.3, 0.01))


# --- rectified flow ------------------------------------------------------------------


def test_rf_loss_and_denoiser_agree_on_the_exact_velocity() -> None:
    torch.manual_seed(0)
    x0, noise, t = torch.randn(3, 4, 8), torch.randn(3, 4, 8), torch.tensor([0.1, 0.5, 0.9])
    tt = t[:, None, None]

    def exact(x_t: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        torch.testing.assert_close(x_t, (1 - tt) * x0 + tt * noise)
        return noise - x0

    assert rf_loss(exact, x0, t, noise) < 1e-12
    torch.testing.assert_close(RFDenoiser(exact)((1 - tt) * x0 + tt * noise, t), x0)
    zero = lambda x_t, time: torch.zeros_like(x_t)  # noqa: E731
    torch.testing.assert_close(rf_loss(zero, x0, t, noise), ((noise - x0) ** 2).mean())


def test_pingpong_renoises_to_the_right_marginal() -> None:
    # A denoiser that returns a sample of p(x0 | x_t) (what distilled models approximate) makes
    # ping-pong exact for any step count: x_t' = (1 - t') x0 + t' eps has the true marginal.
    # Gaussian posterior: mean MU + a SD^2 (x - a MU) / v, variance SD^2 t^2 / v, a = 1 - t, v = a^2 SD^2 + t^2.
    rng = torch.Generator().manual_seed(5)

    def posterior_sample(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = append_dims(t, x.ndim)
        a, v = 1 - t, (1 - t) ** 2 * SD**2 + t**2
        mean = MU + a * SD**2 * (x - a * MU) / v
        return mean + torch.sqrt(SD**2 * t**2 / v) * torch.randn(x.shape, generator=rng)

    x = torch.randn(256, 4, 64, generator=torch.Generator().manual_seed(0))
    ts = torch.linspace(1.0, 0.0, 9)  # 8 equal steps from t = 1 to 0
    out = sample_pingpong(posterior_sample, x, ts, generator=torch.Generator().manual_seed(1))
    assert torch.all((out.mean(dim=(0, 2)) - MU.flatten()).abs() < 4 * SD.flatten() / 128)
    assert torch.all((out.var(dim=(0, 2)) / SD.flatten() ** 2 - 1).abs() < 0.05)
    with pytest.raises(SalongError, match="steps"):
        get_ts_logsnr(0)


def test_shifted_time_scales_the_noise_to_signal_ratio() -> None:
    u = torch.linspace(0, 0.999, 1001, dtype=torch.float64)
    assert torch.equal(shifted_time(u, 1.0), u)
    for shift in (0.5, 2.0, 4.0):
        t = shifted_time(u, shift)
        torch.testing.assert_close(torch.tan(t * math.pi / 2), shift * torch.tan(u * math.pi / 2), rtol=1e-4, atol=1e-6)
        assert (t.diff() > 0).all() and t[0] == 0 and (t < 1).all()  # a monotone map of [0, 1) onto itself
    draws = shifted_time(torch.rand(200_000, generator=torch.Generator().manual_seed(0)), 4.0)
    assert abs(float(draws.median()) - math.atan(4.0) * 2 / math.pi) < 0.005  # 0.844
    assert abs(float((draws > 0.936).float().mean()) - 0.244) < 0.005  # docs/diffusion.md, Training times
