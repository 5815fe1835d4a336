"""Autoencoder: SAO 1.0 tensor layout, shapes, padding, VAE sampling, chunking, checkpoints."""

from __future__ import annotations

import ast
import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from salong.autoencoder import (
    PRESETS,
    Autoencoder,
    AutoencoderConfig,
    VAEBottleneck,
    load_autoencoder,
    save_autoencoder,
)
from salong.chunking import chunk_plan
from salong.errors import SalongError
from salong.layers import SnakeBeta, WNConv1d, WNConvTranspose1d
from salong.spectral import griffin_lim, griffin_lim_blocks, griffin_lim_long

TINY = PRESETS["tiny"]  # hop 2048, C = 4
# Strides (2, 4): hop 8, so receptive-field and chunking checks see many frames cheaply.
MINI = AutoencoderConfig(channels=2, c_mults=(1, 2), strides=(2, 4), latent_dim=4)
# The spectral kind at the same two scales: hop 8 (window 8, STFT hop 2) and the tiny preset.
MINI_SPECTRAL = AutoencoderConfig(architecture="spectral", channels=4, latent_dim=4, n_fft=8, stft_hop=2,
                                  frame_stride=4, frame_blocks=1, latent_blocks=1)
TINY_SPECTRAL = PRESETS["tiny-spectral"]
PREFIX = "pretransform.model."


# Every tensor name and shape of the Stable Audio Open 1.0 checkpoint (docs/checkpoints.md).
REFERENCE_FILE = Path(__file__).resolve().parent / "fixtures" / "sao_1_0_state_dict_keys.txt"


def reference_autoencoder_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in REFERENCE_FILE.read_text().splitlines():
        if line.startswith(PREFIX):
            name, shape = line.split(" ", 1)
            shapes[name[len(PREFIX) :]] = tuple(ast.literal_eval(shape))
    assert shapes, "no autoencoder keys in the reference file"
    return shapes


def meta_model(config: AutoencoderConfig) -> Autoencoder:
    with torch.device("meta"):
        return Autoencoder(config)


def perturb(model: Autoencoder, seed: int) -> Autoencoder:
    """Move every parameter away from its init so Snake is strongly non-linear and
    no layer is near-identity (a freshly initialised model could hide seam errors)."""
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=rng, dtype=p.dtype)
            if name.endswith(("alpha", "beta")):
                p.add_(0.7 * noise)
            elif name.endswith("weight_g"):
                p.mul_(torch.exp(0.3 * noise))
            else:
                p.add_(0.2 * noise * p.std().clamp_min(1e-3))
    return model.eval()


# --- layout ------------------------------------------------------------------------


def test_state_dict_matches_stable_audio_open_keys_and_shapes() -> None:
    reference = reference_autoencoder_shapes()
    ours = {k: tuple(v.shape) for k, v in meta_model(PRESETS["sa2"]).state_dict().items()}
    assert sorted(set(reference) - set(ours)) == []
    assert sorted(set(ours) - set(reference)) == []
    assert {k: v for k, v in ours.items() if reference[k] != v} == {}


def test_sa2_parameter_count() -> None:
    count = sum(p.numel() for p in meta_model(PRESETS["sa2"]).parameters())
    assert abs(count - 157e6) / 157e6 < 0.01, count
    assert count == 156_112_514  # the SAO 1.0 checkpoint's autoencoder, tensor by tensor


def test_presets_share_the_sa2_latent_rate() -> None:
    for name, cfg in PRESETS.items():
        assert cfg.samples_per_latent == 2048, name
        assert cfg.latent_rate == pytest.approx(21.533, abs=1e-3)
        assert cfg.latent_dim == 64


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"strides": (2, 3)}, "even"),
        ({"c_mults": (1, 2, 4)}, "one stride per channel multiplier"),
        ({"channels": 0}, "channels"),
        ({"strides": [2, 4]}, "tuple"),
        ({"architecture": "wavenet"}, "architecture must be one of oobleck, spectral"),
        ({"architecture": "spectral", "n_fft": 1023}, "even n_fft"),
        ({"architecture": "spectral", "stft_hop": 1536}, "stft_hop <= n_fft / 2"),
        ({"architecture": "spectral", "n_fft": 4096, "stft_hop": 512}, "multiple of n_fft"),
        ({"architecture": "spectral", "latent_blocks": -1}, "latent_blocks"),
    ],
)
def test_config_rejects_bad_values(changes: dict, match: str) -> None:
    base = {"channels": 2, "c_mults": (1, 2), "strides": (2, 4)}
    with pytest.raises(SalongError, match=match):
        AutoencoderConfig(**{**base, **changes})


# --- building blocks ---------------------------------------------------------------


def test_spectral_decoder_renders_a_held_bin_as_a_steady_tone_in_both_channels() -> None:
    """A head that gives the mid channel one bin at unit magnitude in every frame (and the side
    nothing) must decode to that bin's sinusoid, the same in left and right."""
    config = TINY_SPECTRAL
    model = Autoencoder(config).eval()
    bins, k = config.n_fft // 2 + 1, 37
    with torch.no_grad():
        model.decoder.output.weight.zero_()
        bias = torch.full((config.audio_channels, bins), -30.0)  # magnitudes ~ 0 ...
        bias[0, k] = 0.0  # ... but the mid's bin k
        model.decoder.output.bias.copy_(bias.flatten())
        audio = model.decode(torch.randn(1, config.latent_dim, 12))[0]  # (2, 12 * 2048)
    torch.testing.assert_close(audio[0], audio[1])
    middle = audio[0, 4096:-4096]  # away from the edge frames
    spectrum = torch.fft.rfft(middle * torch.hann_window(len(middle))).abs()
    peak = spectrum.argmax().item()
    assert peak * config.sample_rate / len(middle) == pytest.approx(k * config.sample_rate / config.n_fft, abs=5.0)
    assert spectrum[peak - 3 : peak + 4].square().sum() > 0.99 * spectrum.square().sum()
    assert middle.abs().max() / middle.square().mean().sqrt() == pytest.approx(math.sqrt(2), rel=0.02)  # a sine


def _chord(seconds: float, rate: int = 44100) -> torch.Tensor:
    """A minor chord whose notes change every half second: something Griffin-Lim has to get right."""
    t = torch.arange(int(seconds * rate)) / rate
    notes = torch.tensor([[220.0, 261.63, 329.63], [196.0, 246.94, 293.66]])
    which = (t / 0.5).long() % 2
    return sum(torch.sin(2 * math.pi * notes[which, i].cumsum(0) / rate) / 3 for i in range(3))


@pytest.mark.parametrize("block_frames", [10_000, 96], ids=["one-block", "blocks"])
def test_griffin_lim_recovers_a_signal_with_these_magnitudes(block_frames: int) -> None:
    """Phases found for a chord's magnitudes rebuild a signal with those magnitudes (spectral
    convergence under 0.15; the first guess alone is far off), in one block or in many."""
    n_fft, hop = 512, 128
    signal = _chord(4.0)[: 1300 * hop][None]  # (1, N)
    window = torch.hann_window(n_fft)
    target = torch.stft(signal, n_fft, hop, n_fft, window, center=True, return_complex=True).abs()[..., :-1]

    def convergence(y: torch.Tensor) -> float:
        got = torch.stft(y, n_fft, hop, n_fft, window, center=True, return_complex=True).abs()[..., :-1]
        return ((got - target).norm() / target.norm()).item()

    first_guess = griffin_lim_long(target, n_fft, hop, 0, block_frames=block_frames)
    rebuilt = griffin_lim_long(target, n_fft, hop, 32, block_frames=block_frames)
    assert rebuilt.shape == signal.shape
    assert convergence(rebuilt) < 0.15 < convergence(first_guess)


@pytest.mark.parametrize("n_fft, hop", [(64, 16), (96, 36)], ids=["hop-divides", "hop-does-not"])
def test_griffin_lim_is_the_loop_written_with_torch_stft(n_fft: int, hop: int) -> None:
    """`griffin_lim`'s own STFT pair is torch.istft / torch.stft (centred, reflect-padded Hann),
    round by round: the textbook loop in float64 gives the same signals and last phases."""
    generator = torch.Generator().manual_seed(4)
    magnitude = torch.rand(3, n_fft // 2 + 1, 30, generator=generator, dtype=torch.float64)
    magnitude[:, 2] = 0  # a silent bin keeps its phase unit
    phases = torch.polar(torch.ones_like(magnitude[:1]), 6.3 * torch.rand(magnitude[:1].shape, generator=generator,
                                                                           dtype=torch.float64))
    window, length = torch.hann_window(n_fft, dtype=torch.float64), 29 * hop
    for iterations in (0, 1, 5):
        angles, previous = phases.expand_as(magnitude), torch.zeros_like(magnitude, dtype=phases.dtype)
        for _ in range(iterations):
            y = torch.istft(magnitude * angles, n_fft, hop, n_fft, window, center=True, length=length)
            rebuilt = torch.stft(y, n_fft, hop, n_fft, window, center=True, pad_mode="reflect", return_complex=True)
            angles = rebuilt - (0.99 / 1.99) * previous
            previous = rebuilt
            angles = angles / angles.abs().clamp_min(1e-16)
        expected = torch.istft(magnitude * angles, n_fft, hop, n_fft, window, center=True, length=length)
        signal, last = griffin_lim(magnitude, n_fft, hop, iterations, phases)
        torch.testing.assert_close(signal, expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(last, angles, rtol=0, atol=1e-9)



def test_snake_beta_matches_the_formula() -> None:
    torch.manual_seed(10)
    snake = SnakeBeta(3)
    x = torch.randn(2, 3, 11)
    torch.testing.assert_close(snake(x), x + torch.sin(x) ** 2 / (1 + 1e-9))  # init: alpha = beta = 0
    with torch.no_grad():
        snake.alpha.copy_(torch.tensor([0.5, -1.0, 2.0]))
        snake.beta.copy_(torch.tensor([-0.3, 0.7, 0.0]))
    a = torch.exp(snake.alpha.detach())[None, :, None]
    b = torch.exp(snake.beta.detach())[None, :, None]
    torch.testing.assert_close(snake(x), x + 1 / (b + 1e-9) * torch.sin(a * x) ** 2)


def test_compiled_snake_matches_eager_forward_and_backward(monkeypatch) -> None:
    """`compile_snake` (train autoencoder --compile) changes speed, not results."""
    import salong.layers as L

    monkeypatch.setattr(L, "_snake", L.snake_beta)  # restored afterwards: other tests stay eager
    torch.manual_seed(11)
    model = Autoencoder(TINY)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, SnakeBeta):
                module.alpha.normal_(0, 0.5), module.beta.normal_(0, 0.5)
    audio = 0.1 * torch.randn(2, 2, 4096)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        torch.manual_seed(12)  # the same posterior sample each time
        out, _, kl = model(audio)
        (out.square().mean() + kl).backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    eager_out, eager_grads = run()
    compiled = L.compile_snake()
    assert compiled == (L._snake is not L.snake_beta)  # without a compiler it stays eager (with a warning)
    out, grads = run()
    torch.testing.assert_close(out, eager_out, rtol=1e-4, atol=1e-5)  # float rounding through the network
    for got, want in zip(grads, eager_grads):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4 * want.abs().max().item())
    assert model(0.1 * torch.randn(1, 2, 6144))[0].shape == (1, 2, 6144)  # one kernel serves every shape


def test_weight_norm_convs_equal_plain_convs_and_torch_weight_norm() -> None:
    torch.manual_seed(11)
    conv = WNConv1d(3, 5, 7, stride=2, padding=3, dilation=1)
    up = WNConvTranspose1d(5, 3, 8, stride=4, padding=2)
    with torch.no_grad():
        conv.weight_g.mul_(torch.rand_like(conv.weight_g) + 0.5)
        up.weight_g.mul_(torch.rand_like(up.weight_g) + 0.5)
    x = torch.randn(2, 3, 40)
    v, g = conv.weight_v, conv.weight_g
    plain = F.conv1d(x, g * v / v.pow(2).sum(dim=(1, 2), keepdim=True).sqrt(), conv.bias, 2, 3)
    torch.testing.assert_close(conv(x), plain)
    h = conv(x)  # (2, 5, 20)
    v, g = up.weight_v, up.weight_g  # (5, 3, 8), (5, 1, 1): the input-channel dim is kept
    plain = F.conv_transpose1d(h, g * v / v.pow(2).sum(dim=(1, 2), keepdim=True).sqrt(), up.bias, 4, 2)
    torch.testing.assert_close(up(h), plain)
    assert up(h).shape == (2, 3, 80)
    # the convention of torch.nn.utils.weight_norm (dim=0), which wrote the SAO checkpoint
    ref = torch.nn.utils.parametrizations.weight_norm(torch.nn.ConvTranspose1d(5, 3, 8, stride=4, padding=2), dim=0)
    with torch.no_grad():
        ref.parametrizations.weight.original0.copy_(up.weight_g)
        ref.parametrizations.weight.original1.copy_(up.weight_v)
        ref.bias.copy_(up.bias)
    torch.testing.assert_close(up(h), ref(h))


def test_kl_matches_direct_computation_and_vanishes_at_the_prior() -> None:
    torch.manual_seed(12)
    h = torch.randn(3, 10, 7)
    _, kl = VAEBottleneck()(h, sample=False)
    mean, scale = h[:, :5], h[:, 5:]
    std = torch.log1p(torch.exp(scale)) + 1e-4
    direct = (mean**2 + std**2 - torch.log(std**2) - 1).sum(dim=1).mean()
    torch.testing.assert_close(kl, direct)
    # mean 0 and softplus(scale) = 1: std = 1 + 1e-4, so kl = 5 * (s^2 - log s^2 - 1) ~ 5 * 2e-8
    prior = torch.cat([torch.zeros(1, 5, 4), torch.full((1, 5, 4), math.log(math.e - 1))], dim=1)
    _, kl = VAEBottleneck()(prior, sample=False)
    assert 0 <= kl.item() < 5 * 2.1e-8


# --- shapes and padding ------------------------------------------------------------


def test_ten_seconds_give_216_frames_and_decode_back_to_length() -> None:
    torch.manual_seed(0)
    model = Autoencoder(TINY).eval()
    n = 10 * 44100
    audio = 0.1 * torch.randn(1, 2, n)
    with torch.no_grad():
        z = model.encode(audio)
        assert z.shape == (1, 64, 216) == (1, 64, math.ceil(n / 2048))
        out = model.decode(z)
    assert out.shape == (1, 2, 216 * 2048)
    assert out[..., :n].shape == audio.shape


def test_encode_pads_right_with_silence() -> None:
    torch.manual_seed(1)
    model = Autoencoder(MINI).eval()
    audio = torch.randn(2, 2, 8 * 13 + 5)  # not a multiple of hop 8
    padded = torch.nn.functional.pad(audio, (0, 3))
    with torch.no_grad():
        assert torch.equal(model.encode(audio), model.encode(padded))
        assert model.encode(audio).shape == (2, 4, 14)


def test_bad_inputs_are_user_errors() -> None:
    model = Autoencoder(MINI)
    with pytest.raises(SalongError, match=r"\(batch, 2, samples\)"):
        model.encode(torch.zeros(1, 1, 64))
    with pytest.raises(SalongError, match="empty"):
        model.encode(torch.zeros(1, 2, 0))
    with pytest.raises(SalongError, match=r"\(batch, 4, frames\)"):
        model.decode(torch.zeros(1, 64, 3))


# --- VAE ---------------------------------------------------------------------------


def test_mean_encode_is_deterministic_and_sampled_encode_is_not() -> None:
    torch.manual_seed(2)
    model = perturb(Autoencoder(MINI), 0)
    audio = torch.randn(1, 2, 8 * 32)
    with torch.no_grad():
        assert torch.equal(model.encode(audio), model.encode(audio))
        a, b = model.encode(audio, sample=True), model.encode(audio, sample=True)
        assert not torch.allclose(a, b)
        rng1, rng2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        first = model.encode(audio, sample=True, generator=rng1)
        assert torch.equal(first, model.encode(audio, sample=True, generator=rng2))


def test_sampled_latents_have_the_mean_as_expectation() -> None:
    torch.manual_seed(3)
    h = torch.randn(1, 8, 5)
    mean, std = VAEBottleneck.split(h)
    draws, _ = VAEBottleneck()(h.expand(20000, -1, -1), sample=True)  # (20000, 4, 5)
    # Standard error of a 20000-sample mean is std / 141; allow 5 of them.
    assert ((draws.mean(0) - mean[0]).abs() < 5 * std[0] / math.sqrt(20000)).all()
    assert torch.allclose(draws.std(0), std[0], rtol=0.05)


def test_forward_returns_trimmed_reconstruction_and_kl_with_gradients() -> None:
    torch.manual_seed(4)
    model = Autoencoder(MINI)
    audio = torch.randn(2, 2, 8 * 10 + 3)
    recon, z, kl = model(audio)
    assert recon.shape == audio.shape and z.shape == (2, 4, 11) and kl.ndim == 0
    (recon.square().mean() + kl).backward()
    assert model.encoder.layers[0].weight_v.grad is not None
    assert model.decoder.layers[-1].weight_g.grad is not None


# --- receptive field and chunking --------------------------------------------------


@pytest.mark.parametrize("config", [MINI, TINY, MINI_SPECTRAL, TINY_SPECTRAL],
                         ids=["hop8", "hop2048", "spectral-hop8", "spectral-hop2048"])
def test_receptive_field_is_what_the_chunker_assumes(config: AutoencoderConfig) -> None:
    """Perturb one input; exactly the frames the context formulas predict must change."""
    torch.manual_seed(5)
    model = perturb(Autoencoder(config), 1).double()
    hop, frames = config.samples_per_latent, 60
    audio = torch.randn(1, 2, frames * hop, dtype=torch.float64)
    pos = frames // 2 * hop + hop // 3
    poked = audio.clone()
    poked[..., pos] += 1.0
    with torch.no_grad():
        diff = (model.encoder(poked) - model.encoder(audio)).abs().amax(dim=(0, 1))  # (frames,)
    ctx = config.encoder_context_samples
    changed = diff.nonzero().flatten()
    # frame f reads samples [f*hop - ctx, (f+1)*hop - 1 + ctx]
    assert changed.min().item() == -(-(pos - ctx - hop + 1) // hop)
    assert changed.max().item() == (pos + ctx) // hop
    assert len(changed) == changed.max().item() - changed.min().item() + 1

    latents = torch.randn(1, config.latent_dim, frames, dtype=torch.float64)
    poked = latents.clone()
    poked[..., frames // 2] += 1.0
    if config.architecture == "spectral":  # its log-magnitudes; Griffin-Lim then works on the whole
        decoder, hop = model.decoder.log_magnitudes, config.frame_stride
    else:
        decoder = model.decoder
    with torch.no_grad():
        diff = (decoder(poked) - decoder(latents)).abs().flatten(1, -2).amax(dim=(0, 1))  # (frames * hop,)
    changed = diff.nonzero().flatten() // hop
    assert changed.min().item() == frames // 2 - config.decoder_context_frames
    assert changed.max().item() == frames // 2 + config.decoder_context_frames


def test_chunk_plan_covers_evenly() -> None:
    assert chunk_plan(10, 16, 4) == [(0, 10)]
    plan = chunk_plan(100, 32, 12)
    assert plan[0][0] == 0 and plan[-1][1] == 100
    assert all(e - s == 32 for s, e in plan)
    assert all(e0 - s1 >= 12 for (_, e0), (s1, _) in zip(plan, plan[1:]))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# Chunks overlap by 2 * context + 4 frames by default, and the `context` frames at each
# end of a shared region are taken from the chunk that sees real signal there. Every
# kept sample then depends only on in-chunk input (the receptive field is exact: the
# test above), so chunked == unchunked up to rounding. In float64 that is < 1e-12
# relative. In float32 the unchunked result itself is off from the float64 one by
# 1e-6..5e-4 on these perturbed (ill-conditioned) models, and chunking must not add to
# that: chunked float32 stays within 10% of the unchunked float32 error. With too little
# overlap the seam error is real, which the last check shows.
@pytest.mark.parametrize("perturbed", [False, True], ids=["init", "perturbed"])
@pytest.mark.parametrize(
    "config, frames, chunk",
    [(MINI, 203, 48), (TINY, 77, 32), (MINI_SPECTRAL, 203, 48), (TINY_SPECTRAL, 77, 32)],
    ids=["hop8", "hop2048", "spectral-hop8", "spectral-hop2048"],
)
def test_chunked_equals_unchunked(config: AutoencoderConfig, frames: int, chunk: int, perturbed: bool) -> None:
    torch.manual_seed(6)
    model = perturb(Autoencoder(config), 2) if perturbed else Autoencoder(config).eval()
    model64 = copy.deepcopy(model).double()
    hop = config.samples_per_latent
    n = frames * hop - hop // 2 - 1  # not a multiple of the hop nor of the chunk
    audio = 0.5 * torch.randn(1, 2, n)
    assert frames % chunk != 0
    calls: list[tuple[int, int]] = []
    with torch.no_grad():
        z64 = model64.encode(audio.double())
        y64 = model64.decode(z64)
        assert relative_error(model64.encode_long(audio.double(), chunk_frames=chunk), z64) < 1e-12
        assert relative_error(model64.decode_long(z64, chunk_frames=chunk), y64) < 1e-12

        z_full = model.encode(audio)
        z_chunk = model.encode_long(audio, chunk_frames=chunk, progress=lambda k, t: calls.append((k, t)))
        y_full = model.decode(z64.float())
        y_chunk = model.decode_long(z64.float(), chunk_frames=chunk)
        assert z_chunk.shape == z_full.shape and y_chunk.shape == y_full.shape
        assert relative_error(z_chunk.double(), z64) < 1.1 * relative_error(z_full.double(), z64)
        if config.architecture == "spectral":
            # Griffin-Lim (momentum 0.99, 32 rounds) amplifies float32 rounding of its input by
            # orders of magnitude, chunked or not, so the float32 check is on the magnitudes it
            # gets; the float64 checks above hold the audio exact.
            m64 = model64.decoder.log_magnitudes(z64)
            m_full = model.decoder.log_magnitudes(z64.float())
            m_chunk = model.log_magnitudes_long(z64.float(), chunk_frames=chunk)
            assert relative_error(m_chunk.double(), m64) < 1.1 * relative_error(m_full.double(), m64)
        else:
            assert relative_error(y_chunk.double(), y64) < 1.1 * relative_error(y_full.double(), y64)
        assert len(calls) > 2 and calls[-1][0] == calls[-1][1] == len(calls)

        # A 2-frame overlap cannot hold the receptive field: measurably worse (1e-4 on the
        # fresh models, 1e-2 and more on the perturbed ones), though still crossfaded.
        assert relative_error(model64.decode_long(z64, chunk_frames=chunk, overlap_frames=2), y64) > 1e-6
        assert relative_error(model64.encode_long(audio.double(), chunk_frames=chunk, overlap_frames=2), z64) > 1e-6


def test_single_chunk_and_sampling_through_encode_long() -> None:
    torch.manual_seed(7)
    model = perturb(Autoencoder(MINI), 3)
    audio = torch.randn(1, 2, 8 * 20)
    with torch.no_grad():
        assert torch.equal(model.encode_long(audio, chunk_frames=64), model.encode(audio))
        rng1, rng2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
        a = model.encode_long(audio, chunk_frames=64, sample=True, generator=rng1)
        assert torch.equal(a, model.encode(audio, sample=True, generator=rng2))


def test_chunk_arguments_are_checked() -> None:
    model = Autoencoder(MINI)
    z = torch.zeros(1, 4, 40)
    with pytest.raises(SalongError, match="overlap_frames"):
        model.decode_long(z, chunk_frames=16, overlap_frames=16)
    with pytest.raises(SalongError, match="chunk_frames must be a positive integer"):
        model.decode_long(z, chunk_frames=0)
    with pytest.raises(SalongError, match="too short for this model"):
        model.decode_long(z, chunk_frames=30)  # default overlap 2 * 19 + 4 = 42


@pytest.mark.parametrize("config, frames, chunk", [(TINY, 80, 32), (MINI, 400, 64), (MINI_SPECTRAL, 1200, 32)],
                         ids=["oobleck-hop2048", "oobleck-hop8", "spectral-hop8"])
def test_decode_stream_is_the_whole_decode_in_pieces(config: AutoencoderConfig, frames: int, chunk: int) -> None:
    """Pieces come out while later chunks (or Griffin-Lim blocks: 1200 latent frames of the
    spectral kind are 4800 STFT frames, three blocks) are still to run, and joined they equal
    `decode_long` exactly and the unchunked one-call `decode` (float64) to rounding."""
    torch.manual_seed(8)
    model = perturb(Autoencoder(config), 4).double()
    z = torch.randn(1, config.latent_dim, frames, dtype=torch.float64)
    chunks: list[int] = []
    pieces = []
    for piece in model.decode_stream(z, chunk_frames=chunk, progress=lambda k, total: chunks.append(k)):
        pieces.append((len(chunks), piece))
    assert len(pieces) >= 3 and pieces[0][0] < len(chunks)  # the first piece before the last chunk ran
    assert max(p.shape[-1] for _, p in pieces) < frames * config.samples_per_latent / 2
    streamed = torch.cat([p for _, p in pieces], dim=-1)
    assert torch.equal(streamed, model.decode_long(z, chunk_frames=chunk))
    assert relative_error(streamed, model.decode(z)) < 1e-9


def test_stream_arguments_are_checked_before_the_first_piece() -> None:
    model = Autoencoder(MINI)
    with pytest.raises(SalongError, match="overlap_frames"):
        model.decode_stream(torch.zeros(1, 4, 40), chunk_frames=16, overlap_frames=16)
    with pytest.raises(SalongError, match="latents must be a tensor"):
        model.decode_stream(torch.zeros(1, 3, 40))


def test_griffin_lim_blocks_read_forward_and_yield_before_the_end() -> None:
    """Each block is read once, forward, and its final part is out before the next block is
    read; the pieces join to `griffin_lim_long`."""
    magnitude = torch.rand(2, 33, 157, generator=torch.Generator().manual_seed(3))  # (R, F, T)
    reads: list[tuple[int, int]] = []

    def read(start: int, end: int) -> torch.Tensor:
        reads.append((start, end))
        return magnitude[..., start:end]

    pieces = []
    for piece in griffin_lim_blocks(read, 157, 64, 16, 5, block_frames=40, overlap_frames=12):
        pieces.append((len(reads), piece))
    starts = [start for start, _ in reads]
    assert starts == sorted(starts) and len(reads) == len(pieces) > 3
    assert [n for n, _ in pieces] == list(range(1, len(reads) + 1))
    joined = torch.cat([p for _, p in pieces], dim=-1)
    assert torch.equal(joined, griffin_lim_long(magnitude, 64, 16, 5, block_frames=40, overlap_frames=12))


# --- checkpoints -------------------------------------------------------------------


def test_save_load_round_trip_is_bit_exact(tmp_path: Path) -> None:
    torch.manual_seed(8)
    model = perturb(Autoencoder(TINY), 4)
    path = save_autoencoder(tmp_path / "ae.safetensors", model)
    loaded, config = load_autoencoder(path)
    assert config == TINY and not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    audio = torch.randn(1, 2, 4096)
    with torch.no_grad():
        assert torch.equal(loaded.decode(loaded.encode(audio)), model.decode(model.encode(audio)))


def test_loading_another_kind_is_a_user_error(tmp_path: Path) -> None:
    from salong.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "x.safetensors", {"w": torch.zeros(1)}, "dit", {"width": 1})
    with pytest.raises(SalongError, match="autoencoder"):
        load_autoencoder(path)
