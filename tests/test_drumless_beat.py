"""A model's `beat_guidance_without_drums`: the beat control guided less in songs asked with no drums."""

import shutil

import numpy as np
import pytest
import torch

import salong.pipeline
from salong.checkpoint import rewrite_checkpoint
from salong.diffusion import cfg_denoiser
from salong.errors import SalongError
from salong.generator_config import SamplingConfig
from salong.pipeline import Generator
from conftest import run_cli, saved_with_controls


def _denoiser(x, sigma, *, a, b):
    """A stand-in whose output depends on its inputs row by row (and not linearly on them)."""
    return torch.tanh(x * a[:, None, None] + b[:, None, None] * sigma[:, None, None])


@pytest.mark.parametrize("sigma", [3.0, 0.2], ids=["guided", "outside-interval"])
def test_part_guidance_is_the_composed_formula_in_one_batch(sigma):
    x = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(0))
    s = torch.full((2,), sigma)
    cond = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5, -0.5])}
    part = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0, 0.0])}
    uncond = {"a": torch.tensor([0.3, 0.3]), "b": torch.tensor([0.0, 0.0])}
    calls = []

    def counted(x, sigma, **kw):
        calls.append(x.shape[0])
        return _denoiser(x, sigma, **kw)

    out = cfg_denoiser(counted, cond, uncond, 5.0, (0.7, 1.0), "v", part=part, part_scale=3.0)(x, s)
    c, p, u = (_denoiser(x, s, **side) for side in (cond, part, uncond))
    if sigma > 1:
        torch.testing.assert_close(out, u + 5 * (p - u) + 3 * (c - p))
        assert calls == [6]  # cond, part and uncond rows in one batch
    else:
        torch.testing.assert_close(out, c)  # outside the interval: the conditional model alone
        assert calls == [2]
    # the part guided at the full scale is plain guidance
    same = cfg_denoiser(_denoiser, cond, uncond, 5.0, part=part, part_scale=5.0)(x, s)
    torch.testing.assert_close(same, cfg_denoiser(_denoiser, cond, uncond, 5.0)(x, s))


def test_part_with_other_inputs_is_refused():
    with pytest.raises(SalongError, match="same keys"):
        cfg_denoiser(_denoiser, {"a": None, "b": None}, {"a": None, "b": None}, 5.0, part={"a": None})


@pytest.mark.parametrize("share", [1.5, -0.1, "half", True, None])
def test_a_share_outside_0_to_1_is_refused(share):
    with pytest.raises(SalongError, match="beat_guidance_without_drums is a share of the guidance, 0 to 1"):
        SamplingConfig(beat_guidance_without_drums=share)


@pytest.fixture(scope="module")
def drum_paths(tmp_path_factory):
    """A tiny generator with beat, key and drums controls, and the same with half the guidance
    for the beat in songs without drums."""
    plain = saved_with_controls(tmp_path_factory, ("beat", "key", "drums"), "drumless-beat")
    half = tmp_path_factory.mktemp("drumless-half") / "half.safetensors"
    shutil.copy(plain, half)
    rewrite_checkpoint(half, config_changes={"sampling": {"beat_guidance_without_drums": 0.5}})
    return plain, half


def test_only_songs_without_drums_at_a_tempo_change(drum_paths, monkeypatch):
    plain, half = (Generator.load(p) for p in drum_paths)
    assert plain.config.sampling.beat_guidance_without_drums == 1.0  # a file without the field
    assert half.config.sampling.beat_guidance_without_drums == 0.5
    seen = []
    real = salong.pipeline.cfg_denoiser

    def spy(denoiser, cond, uncond, scale, interval, objective, part=None, part_scale=1.0):
        seen.append((part, part_scale, cond))
        return real(denoiser, cond, uncond, scale, interval, objective, part, part_scale)

    monkeypatch.setattr(salong.pipeline, "cfg_denoiser", spy)
    args = dict(seed=4, steps=3, cfg_scale=5.0)
    for settings in ({"drums": "on", "bpm": 100}, {"drums": "none"}, {"bpm": 100}):
        a, b = (gen.generate("calm piano", 0.5, **settings, **args).audio for gen in (plain, half))
        assert np.array_equal(a, b), settings  # drums asked, no tempo or drums not asked: as before
        assert seen[-1][0] is None
    a, b = (gen.generate("calm piano", 0.5, drums="none", bpm=100, **args).audio for gen in (plain, half))
    assert seen[-2][0] is None  # the plain model guides the beat with the rest
    part, part_scale, cond = seen[-1]
    assert part_scale == 1 + 0.5 * (5.0 - 1)
    assert torch.count_nonzero(part["beat"]) == 0 < torch.count_nonzero(cond["beat"])
    assert all(torch.equal(part[k], cond[k]) for k in cond if k != "beat" and cond[k] is not None)
    assert not np.array_equal(a, b)
    # "no drums" in the prompt is the same request as the flag
    c = half.generate("calm piano with no drums", 0.5, bpm=100, **args)
    assert c.request.controls.drums == "none" and seen[-1][0] is not None


def test_info_shows_the_share(drum_paths, tmp_path, capsys):
    plain, half = drum_paths
    code, info, err = run_cli(capsys, "info", half)
    assert code == 0, err
    assert "the beat control gets 0.5 of the guidance in songs without drums" in info
    code, info, _ = run_cli(capsys, "info", plain)
    assert "the beat control gets" not in info
