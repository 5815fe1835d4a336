"""Autoencoder training losses: STFT losses, EnCodec discriminators, hinge and feature matching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from salong.audio_losses import (
    AutoencoderLossConfig,
    discriminator_loss,
    feature_matching_loss,
    autoencoder_loss,
    hinge_adversarial_loss,
    hinge_discriminator_loss,
    multi_resolution_stft_loss,
    stereo_stft_loss,
)
from salong.discriminators import (
    DISCRIMINATOR_PRESETS,
    DiscriminatorConfig,
    MultiScaleSTFTDiscriminator,
    STFTDiscriminator,
)
from salong.errors import SalongError
from salong.layers import WNConv2d

TINY_DISC = DISCRIMINATOR_PRESETS["tiny"]


def hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic, as torch.hann_window


def direct_magnitude(x: np.ndarray, n_fft: int) -> np.ndarray:
    """|STFT| by hand: reflect-pad n_fft/2, frame with hop n_fft/4, window, rfft."""
    hop = n_fft // 4
    padded = np.pad(x, n_fft // 2, mode="reflect")
    frames = np.stack([padded[i : i + n_fft] for i in range(0, len(padded) - n_fft + 1, hop)])
    power = np.abs(np.fft.rfft(frames * hann(n_fft), axis=1)) ** 2
    return np.sqrt(np.maximum(power, 1e-8))  # (frames, bins)


def direct_mrstft(pred: np.ndarray, target: np.ndarray, sizes: tuple[int, ...]) -> float:
    """auraloss's multi-resolution loss of one mono signal: mean over sizes of SC + log-L1."""
    total = 0.0
    for n in sizes:
        x, y = direct_magnitude(pred, n), direct_magnitude(target, n)
        total += np.linalg.norm(y - x) / np.linalg.norm(y) + np.mean(np.abs(np.log(y) - np.log(x)))
    return total / len(sizes)


# --- STFT losses -------------------------------------------------------------------


def test_stft_loss_is_zero_for_identical_audio_and_positive_otherwise() -> None:
    torch.manual_seed(0)
    audio = torch.randn(2, 2, 4096)
    assert stereo_stft_loss(audio, audio).item() == 0.0
    assert multi_resolution_stft_loss(audio, audio).item() == 0.0
    assert stereo_stft_loss(audio + 0.01 * torch.randn_like(audio), audio).item() > 0
    assert multi_resolution_stft_loss(0.5 * audio, audio).item() > 0


def test_stereo_weighting_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(1)
    target = rng.standard_normal((1, 2, 300))
    pred = target + 0.3 * rng.standard_normal((1, 2, 300))
    sizes = (64, 32)
    (lp, rp), (lt, rt) = pred[0], target[0]
    expected = (direct_mrstft(lp + rp, lt + rt, sizes) + direct_mrstft(lp - rp, lt - rt, sizes)) / 2 + (
        direct_mrstft(lp, lt, sizes) + direct_mrstft(rp, rt, sizes)
    ) / 2
    got = stereo_stft_loss(torch.from_numpy(pred), torch.from_numpy(target), fft_sizes=sizes)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_default_resolutions_are_the_papers() -> None:
    from salong.audio_losses import FFT_SIZES

    assert FFT_SIZES == (2048, 1024, 512, 256, 128, 64, 32)
    assert AutoencoderLossConfig().fft_sizes == FFT_SIZES


def test_stft_loss_rejects_mismatched_or_short_audio() -> None:
    with pytest.raises(SalongError, match="same shape"):
        stereo_stft_loss(torch.zeros(1, 2, 4096), torch.zeros(1, 2, 4000))
    with pytest.raises(SalongError, match="too short"):
        stereo_stft_loss(torch.zeros(1, 2, 512), torch.zeros(1, 2, 512))
    with pytest.raises(SalongError, match=r"\(batch, 2, samples\)"):
        stereo_stft_loss(torch.zeros(1, 1, 4096), torch.zeros(1, 1, 4096))


# --- discriminators ----------------------------------------------------------------


def test_weight_norm_conv2d_equals_plain_conv_with_composed_weight() -> None:
    torch.manual_seed(2)
    conv = WNConv2d(3, 5, (3, 9), stride=(1, 2), dilation=(2, 1))
    with torch.no_grad():
        conv.weight_g.mul_(torch.rand_like(conv.weight_g) + 0.5)
    x = torch.randn(2, 3, 7, 33)
    v, g = conv.weight_v, conv.weight_g
    weight = g * v / v.pow(2).sum(dim=(1, 2, 3), keepdim=True).sqrt()
    plain = nn.functional.conv2d(x, weight, conv.bias, (1, 2), (2, 4), (2, 1))
    torch.testing.assert_close(conv(x), plain)
    assert conv(x).shape == (2, 5, 7, 17)  # "same" in time, halved in frequency


def test_spectrogram_layout_and_normalisation() -> None:
    torch.manual_seed(3)
    disc = STFTDiscriminator(TINY_DISC, 128)
    audio = torch.randn(1, 2, 1000, dtype=torch.float64)
    spec = disc.spectrogram(audio)  # (1, 4, T, 65)
    frames = 1 + (1000 - 128) // 32  # no centre padding
    assert spec.shape == (1, 4, frames, 65)
    w = hann(128)
    for ch in range(2):
        x = audio[0, ch].numpy()
        direct = np.stack([np.fft.rfft(x[i : i + 128] * w) for i in range(0, 1000 - 128 + 1, 32)])
        direct /= np.sqrt(np.sum(w**2))  # torchaudio Spectrogram(normalized=True)
        np.testing.assert_allclose(spec[0, ch].numpy(), direct.real, atol=1e-12)
        np.testing.assert_allclose(spec[0, 2 + ch].numpy(), direct.imag, atol=1e-12)


def test_discriminator_output_shapes_for_each_scale() -> None:
    torch.manual_seed(4)
    disc = MultiScaleSTFTDiscriminator(TINY_DISC)
    audio = torch.randn(2, 2, 4096)
    logits, features = disc(audio)
    assert len(logits) == len(features) == 5
    for n_fft, logit, maps in zip((2048, 1024, 512, 256, 128), logits, features):
        frames, bins = 1 + (4096 - n_fft) // (n_fft // 4), n_fft // 2 + 1
        halved = [bins]
        for _ in range(3):
            halved.append((halved[-1] - 1) // 2 + 1)
        assert logit.shape == (2, 1, frames, halved[3])
        assert [tuple(m.shape) for m in maps] == [
            (2, 4, frames, halved[0]),
            (2, 4, frames, halved[1]),
            (2, 4, frames, halved[2]),
            (2, 4, frames, halved[3]),
            (2, 4, frames, halved[3]),
        ]


def test_discriminator_is_weight_normalised_throughout() -> None:
    disc = MultiScaleSTFTDiscriminator(DiscriminatorConfig())
    names = [n for n, _ in disc.named_parameters()]
    assert not [n for n in names if n.endswith(".weight")]
    assert sum(n.endswith("weight_g") for n in names) == 5 * 6
    assert disc.discriminators[0].convs[0].weight_v.shape == (32, 4, 3, 9)  # stereo: 2 x (real, imag)
    assert all(k.endswith(("weight_g", "weight_v", "bias")) for k in disc.state_dict())


def test_discriminator_rejects_too_short_audio() -> None:
    with pytest.raises(SalongError, match="shorter than the discriminator's FFT of 2048"):
        MultiScaleSTFTDiscriminator(TINY_DISC)(torch.zeros(1, 2, 1000))


# --- adversarial losses ------------------------------------------------------------


def test_hinge_losses_on_known_numbers() -> None:
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.5])
    # relu(1 - real) = (0, 0.5, 2) -> 5/6; relu(1 + fake) = (0, 1, 2.5) -> 7/6
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(2.0)
    assert hinge_adversarial_loss(fake).item() == pytest.approx(-(-0.5 / 3))
    # per-scale lists are summed
    assert hinge_discriminator_loss([real, real], [fake, fake]).item() == pytest.approx(4.0)
    assert hinge_adversarial_loss([fake, 2 * fake]).item() == pytest.approx(0.5)


def test_feature_matching_averages_maps_and_sums_scales() -> None:
    a = [torch.zeros(2, 3), torch.zeros(4)]
    b = [torch.full((2, 3), 1.0), torch.full((4,), -3.0)]
    assert feature_matching_loss(a, b).item() == pytest.approx((1.0 + 3.0) / 2)
    assert feature_matching_loss([a, a], [b, a]).item() == pytest.approx(2.0)


def test_autoencoder_loss_weights_and_gradient_through_the_discriminator() -> None:
    torch.manual_seed(5)
    codec = nn.Conv1d(2, 2, 5, padding=2)
    disc = MultiScaleSTFTDiscriminator(TINY_DISC)
    target = torch.randn(1, 2, 4096)
    pred = codec(target)
    kl = torch.tensor(3.0)
    config = AutoencoderLossConfig()
    total, parts = autoencoder_loss(pred, target, kl, disc, config)
    expected = parts["stft"] + 0.1 * parts["adversarial"] + 5.0 * parts["feature_matching"] + 1e-4 * kl
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert (config.adversarial_weight, config.feature_matching_weight, config.kl_weight) == (0.1, 5.0, 1e-4)

    # The adversarial term alone reaches the autoencoder through the discriminator.
    codec.zero_grad()
    parts["adversarial"].backward(retain_graph=True)
    grad = codec.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0

    # The discriminator's own loss does not touch the autoencoder.
    codec.zero_grad()
    d_loss = discriminator_loss(pred, target, disc)
    d_loss.backward()
    assert codec.weight.grad is None or codec.weight.grad.abs().sum() == 0
    assert disc.discriminators[0].conv_post.weight_v.grad is not None


def test_autoencoder_loss_without_discriminator_during_warmup() -> None:
    target = torch.randn(1, 2, 4096)
    total, parts = autoencoder_loss(target * 0.5, target, torch.tensor(2.0))
    assert set(parts) == {"stft", "kl"}
    assert total.item() == pytest.approx(parts["stft"].item() + 2e-4, rel=1e-6)


def test_loss_config_rejects_negative_weights() -> None:
    with pytest.raises(SalongError, match="kl_weight"):
        AutoencoderLossConfig(kl_weight=-1.0)
