"""Fidelity to stable-audio-tools, forever: tiny models in the Stable Audio Open layout and the
reference's outputs on them (tests/fixtures/sao_reference, written by tools/make_sao_fixture.py
with the stable-audio-tools version in each file's metadata), loaded through salong's folder
loader and compared tensor by tensor at 1e-4 relative to the largest reference value."""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from salong import sao
from salong.diffusion import (RFDenoiser, VDenoiser, cfg_denoiser, get_sigmas_loglinear, get_ts_logsnr,
                              sample_dpmpp_2m, sample_pingpong, start_from_init_rf)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sao_reference"
RTOL = 1e-4


def reference(objective: str) -> tuple[dict, dict]:
    with safe_open(str(FIXTURE / objective / "reference.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    assert ours.shape == theirs.shape, what
    error = float((ours - theirs).abs().max())
    scale = float(theirs.abs().max())
    assert scale > 0 and error <= RTOL * scale, f"{what}: max error {error:.3g} of max {scale:.3g}"


@pytest.fixture(scope="module", params=["v", "rf"])
def case(request):
    config, dit, ae = sao.load_parts(FIXTURE / request.param)
    r, meta = reference(request.param)
    assert meta["stable_audio_tools"] == "0.0.19" and meta["objective"] == request.param
    return request.param, config, dit, ae, r


def conditioning(dit, r, rows=slice(None)):
    start, total = r["seconds_start"][rows], r["seconds_total"][rows]
    cond = {"cond_tokens": r["text_tokens"][rows], "seconds_start": start, "seconds_total": total,
            "cond_drop_mask": torch.zeros(len(start), dtype=torch.bool)}
    return cond, {**cond, "cond_drop_mask": torch.ones(len(start), dtype=torch.bool)}


@torch.no_grad()
def test_timing_embeddings(case):
    objective, config, dit, _, r = case
    assert config.dit.timing == (("seconds_start", "seconds_total") if objective == "v" else ("seconds_total",))
    for name in config.dit.timing:
        close(getattr(dit, name)(r[name]), r[f"{name}_embed"], name)


@torch.no_grad()
def test_dit_output_with_and_without_guidance(case):
    _, _, dit, _, r = case
    assert (r["text_tokens"][1, 8:] == 0).all()  # a padded row: zero keys that still take softmax weight
    cond, uncond = conditioning(dit, r)
    close(dit(r["x"], r["t"], **cond), r["dit_out"], "DiT output")
    guided = cfg_denoiser(dit, cond, uncond, 7.0)
    close(guided(r["x"], r["t"]), r["dit_out_cfg7"], "DiT output, CFG 7")


@torch.no_grad()
def test_autoencoder_encode_and_decode(case):
    _, _, _, ae, r = case
    close(ae.encoder(r["audio"]), r["vae_encoder_out"], "encoder output")
    close(ae.decode(r["latents"]), r["vae_decoded"], "decoded audio")


@torch.no_grad()
def test_sampler_from_noise_and_from_noised_latents(case):
    objective, _, dit, _, r = case
    cond, uncond = conditioning(dit, r, slice(0, 1))
    level = float(r["init_noise_level"])
    if objective == "v":
        denoiser = cfg_denoiser(VDenoiser(dit), cond, uncond, 7.0)
        sigmas = get_sigmas_loglinear(10, 0.3, 500.0)
        close(sample_dpmpp_2m(denoiser, r["noise"] * sigmas[0], sigmas), r["sample"], "DPM-Solver++(2M), 10 steps")
        sigmas = get_sigmas_loglinear(10, 0.3, level)
        x = r["init_latents"] + r["noise"] * sigmas[0]
        close(sample_dpmpp_2m(denoiser, x, sigmas), r["sample_init"], "DPM-Solver++(2M) from noised latents")
    else:
        denoiser = cfg_denoiser(RFDenoiser(dit), cond, uncond, 7.0)
        seed = int(r["pingpong_seed"])
        out = sample_pingpong(denoiser, r["noise"], get_ts_logsnr(8), generator=torch.Generator().manual_seed(seed))
        close(out, r["sample"], "ping-pong, 8 steps")
        x = start_from_init_rf(r["init_latents"], r["noise"], level)
        out = sample_pingpong(denoiser, x, get_ts_logsnr(8, level), generator=torch.Generator().manual_seed(seed))
        close(out, r["sample_init"], "ping-pong from noised latents")
