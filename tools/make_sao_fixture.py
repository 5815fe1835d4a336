"""Write the Stable Audio Open reference fixture (tests/fixtures/sao_reference/) with stable-audio-tools.

Run by hand in a side environment that has stable-audio-tools, never by the tests:

    python -m venv /tmp/sat && /tmp/sat/bin/pip install torch==2.13.0   # the CPU wheel
    /tmp/sat/bin/pip install --no-deps stable-audio-tools==0.0.19 k-diffusion==0.1.1 alias-free-torch==0.0.6 \
        v-diffusion-pytorch==0.0.2 dctorch
    /tmp/sat/bin/pip install numpy einops einops-exts safetensors transformers tqdm scipy scikit-image \
        torchsde torchdiffeq jsonmerge resize-right
    /tmp/sat/bin/python tools/make_sao_fixture.py tests/fixtures/sao_reference

The --no-deps installs keep pip from pulling gradio, wandb and a CUDA torch; the second
line is what `import k_diffusion` and the model factory actually need. k_diffusion also
imports torchvision at module level, for image helpers sampling never calls; no
torchvision build on the package index loads next to the CPU torch 2.13 wheel (its
`torchvision::nms` operator fails to register), so this script leaves torchvision
uninstalled and puts an inert stand-in module in `sys.modules` after transformers has
been imported (transformers then sees no torchvision, as it should), and does the same
for `k_diffusion.evaluation` (FID and CLIP metrics, which import clean-fid, CLIP and
torchvision's transforms; sampling never uses them) and for torchaudio (imported by
stable-audio-tools' data helpers at module level; its only index build fails to load
its extension next to the CPU torch, and nothing here calls it).

For each objective, "v" (Stable Audio Open 1.0 style) and "rf" (Small style: rectified
flow, seconds_total only, projected text tokens, q/k LayerNorm), it builds a tiny model
in the SAO layout with the reference's own factory, gives every weight random values
(zero-initialised layers made non-zero), rounds them to float16 so the stored file is
exactly what ran, and writes:

- FOLDER/<objective>/model_config.json and model.safetensors (parameters in float16,
  buffers in float32), loadable by salong;
- FOLDER/<objective>/reference.safetensors: inputs and the reference's outputs, float32:
  the timing embeddings; the DiT output without and with CFG (scale 7) on a batch whose
  second text row is half padding (zero vectors); the VAE encoder output (mean and scale
  before the bottleneck) and decoder output; a sampled latent: v: 10 steps of
  DPM-Solver++(2M), sigma 0.3-500, CFG 7; rf: 8 ping-pong steps, CFG 7 (noise from the
  global RNG seeded with `pingpong_seed`); and the same sampler started from noised
  latents (audio-to-audio, `init_noise_level`).

The metadata records the versions of stable-audio-tools and torch that produced them.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import T5Config, T5EncoderModel

SEED = 1234
PINGPONG_SEED = 99
TEXT_TOKENS = 16


def tiny_config(objective: str, t5_path: str) -> dict:
    enc = {"in_channels": 2, "channels": 4, "c_mults": [1, 2], "strides": [4, 8], "latent_dim": 16, "use_snake": True}
    dec = {"out_channels": 2, "channels": 4, "c_mults": [1, 2], "strides": [4, 8], "latent_dim": 8, "use_snake": True,
           "final_tanh": False}
    timing = ["seconds_start", "seconds_total"] if objective == "v" else ["seconds_total"]
    numbers = [{"id": t, "type": "number", "config": {"min_val": 0, "max_val": 512 if objective == "v" else 256}}
               for t in timing]
    dit = {"io_channels": 8, "embed_dim": 64, "depth": 1, "num_heads": 2, "cond_token_dim": 32,
           "global_cond_dim": 32 * len(timing), "project_cond_tokens": objective != "v",
           "transformer_type": "continuous_transformer"}
    diffusion = {"cross_attention_cond_ids": ["prompt", *timing], "global_cond_ids": timing, "type": "dit",
                 "config": dit}
    if objective == "rf":
        diffusion["diffusion_objective"] = "rf_denoiser"
        dit["attn_kwargs"] = {"qk_norm": "ln"}
    return {
        "model_type": "diffusion_cond", "sample_size": 2048, "sample_rate": 44100, "audio_channels": 2,
        "model": {
            "pretransform": {"type": "autoencoder", "iterate_batch": True, "config": {
                "encoder": {"type": "oobleck", "config": enc}, "decoder": {"type": "oobleck", "config": dec},
                "bottleneck": {"type": "vae"}, "latent_dim": 8, "downsampling_ratio": 32, "io_channels": 2}},
            "conditioning": {"configs": [{"id": "prompt", "type": "t5",
                                          "config": {"t5_model_name": t5_path, "max_length": TEXT_TOKENS}}, *numbers],
                             "cond_dim": 32},
            "diffusion": diffusion,
            "io_channels": 8,
        },
    }


def randomise(model: torch.nn.Module, rng: torch.Generator) -> None:
    """Random values everywhere (zero-initialised layers too), rounded to float16."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 16
            p.add_(torch.randn(p.shape, generator=rng) / fan_in ** 0.5)
            p.copy_(p.half().float())


def _without_torchvision() -> None:
    """An empty `torchvision` for k_diffusion's unused image imports (see the module docstring)."""
    import types

    import transformers.modeling_utils  # noqa: F401  (decides, without torchvision, before the stand-in exists)
    from transformers import AutoTokenizer  # noqa: F401

    class Stub(types.ModuleType):
        def __getattr__(self, name: str) -> type:  # any name imported from it is an inert class
            return type(name, (), {})

    tv = Stub("torchvision")
    tv.transforms = Stub("torchvision.transforms")
    tv.transforms.functional = Stub("torchvision.transforms.functional")
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tv.transforms,
                        "torchvision.transforms.functional": tv.transforms.functional,
                        "k_diffusion.evaluation": Stub("k_diffusion.evaluation")})
    ta = Stub("torchaudio")
    ta.transforms, ta.functional = Stub("torchaudio.transforms"), Stub("torchaudio.functional")
    sys.modules.update({"torchaudio": ta, "torchaudio.transforms": ta.transforms,
                        "torchaudio.functional": ta.functional})


def main(out: Path) -> None:
    _without_torchvision()
    from stable_audio_tools.inference.sampling import sample_k, sample_rf
    from stable_audio_tools.models import conditioners
    from stable_audio_tools.models.factory import create_model_from_config

    t5_dir = out / "t5"  # only to build the reference's conditioner; not part of the fixture
    torch.manual_seed(0)
    t5_config = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    T5EncoderModel(t5_config).save_pretrained(t5_dir)
    (t5_dir / "tokenizer_config.json").write_text("{}")
    conditioners.T5Conditioner.T5_MODELS.append(str(t5_dir))
    conditioners.T5Conditioner.T5_MODEL_DIMS[str(t5_dir)] = 32
    conditioners.AutoTokenizer = type("NoTokenizer", (), {"from_pretrained": staticmethod(lambda name: None)})

    for objective in ("v", "rf"):
        folder = out / objective
        folder.mkdir(parents=True, exist_ok=True)
        config = tiny_config(objective, str(t5_dir))
        model = create_model_from_config(config).eval()
        rng = torch.Generator().manual_seed(SEED)
        randomise(model, rng)
        # parameters were rounded to float16, so storing them so loses nothing; buffers (the
        # rotary inv_freq, LayerNorm betas) keep the float32 values the reference ran with
        params = {k for k, _ in model.named_parameters()}
        state = {k: (v.half() if k in params else v).contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        config["model"]["conditioning"]["configs"][0]["config"]["t5_model_name"] = "t5-base"
        (folder / "model_config.json").write_text(json.dumps(config, indent=1) + "\n")

        timing = config["model"]["diffusion"]["global_cond_ids"]
        seconds = {"seconds_start": [0.0, 3.0], "seconds_total": [5.0, 30.0]}
        text = torch.randn(2, TEXT_TOKENS, 32, generator=rng)
        text[1, TEXT_TOKENS // 2:] = 0  # the second prompt is half padding, zeroed as the T5 conditioner does
        r = {"text_tokens": text, "seconds_start": torch.tensor(seconds["seconds_start"]),
             "seconds_total": torch.tensor(seconds["seconds_total"])}
        with torch.no_grad():
            embeds = {}
            for name in timing:
                embeds[name], _ = model.conditioner.conditioners[name](seconds[name], "cpu")  # (2, 1, 32)
                r[f"{name}_embed"] = embeds[name][:, 0]
            cross = torch.cat([text, *(embeds[n] for n in timing)], dim=1)  # (2, 16 + k, 32)
            glob = torch.cat([embeds[n][:, 0] for n in timing], dim=-1)  # (2, 32 k)
            cond = {"cross_attn_cond": cross, "global_cond": glob}
            r["x"] = torch.randn(2, 8, 64, generator=rng)
            r["t"] = torch.tensor([0.3, 0.8])
            r["dit_out"] = model.model(r["x"], r["t"], **cond, cfg_scale=1.0)
            r["dit_out_cfg7"] = model.model(r["x"], r["t"], **cond, cfg_scale=7.0)

            r["audio"] = 0.2 * torch.randn(1, 2, 2048, generator=rng)
            r["vae_encoder_out"] = model.pretransform.model.encoder(r["audio"])  # (1, 16, 64): mean, scale
            r["latents"] = torch.randn(1, 8, 64, generator=rng)
            r["vae_decoded"] = model.pretransform.decode(r["latents"])

            one = {k: v[:1] for k, v in cond.items()}
            r["noise"] = torch.randn(1, 8, 64, generator=rng)
            r["init_latents"] = torch.randn(1, 8, 64, generator=rng)
            if objective == "v":
                r["init_noise_level"] = torch.tensor(3.0)
                r["sample"] = sample_k(model.model, r["noise"], steps=10, sampler_type="dpmpp-2m", sigma_min=0.3,
                                       sigma_max=500, device="cpu", cfg_scale=7.0, batch_cfg=True, **one)
                r["sample_init"] = sample_k(model.model, r["noise"], init_data=r["init_latents"], steps=10,
                                            sampler_type="dpmpp-2m", sigma_min=0.3, sigma_max=3.0, device="cpu",
                                            cfg_scale=7.0, batch_cfg=True, **one)
            else:
                r["init_noise_level"] = torch.tensor(0.6)
                r["pingpong_seed"] = torch.tensor(PINGPONG_SEED)
                torch.manual_seed(PINGPONG_SEED)
                r["sample"] = sample_rf(model.model, r["noise"], steps=8, sampler_type="pingpong", device="cpu",
                                        cfg_scale=7.0, batch_cfg=True, **one)
                torch.manual_seed(PINGPONG_SEED)
                r["sample_init"] = sample_rf(model.model, r["noise"], init_data=r["init_latents"], steps=8,
                                             sampler_type="pingpong", sigma_max=0.6, device="cpu", cfg_scale=7.0,
                                             batch_cfg=True, **one)
        meta = {"stable_audio_tools": version("stable-audio-tools"), "torch": torch.__version__,
                "k_diffusion": version("k-diffusion"), "objective": objective}
        save_file({k: v.float().contiguous() for k, v in r.items()}, str(folder / "reference.safetensors"),
                  metadata=meta)
        print(folder, sum((folder / f).stat().st_size for f in ("model.safetensors", "reference.safetensors")), "bytes")
    import shutil

    shutil.rmtree(t5_dir)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/sao_reference"))
