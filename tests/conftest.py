"""Shared fixtures: tiny models built and saved by the tests themselves (no downloads)."""

import os

import pytest
import torch

# The suite runs in one process per core (pytest-xdist, setup.cfg): each takes one thread,
# and so do the processes its tests start, or the workers' threads would fight for the cores.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

CAPTIONS = [
    "Calm piano ballad at 70 BPM in C major.",
    "Energetic breakbeat track at 132 BPM in D minor with a synth lead, bass and pad chords.",
    "Melancholic strings in A minor, slow and soft.",
    "Happy four-on-the-floor dance tune with brass at 124 BPM in G major.",
    "A shuffle groove with an organ and bass at 96 BPM in E minor.",
]


def tiny_generator(seed: int = 0):
    """A tiny generator with perturbed weights (a fresh DiT's zero-init output would hide bugs)."""
    from salong.autoencoder import PRESETS as AE, Autoencoder
    from salong.clap import PRESETS as CLAP, Clap
    from salong.clap_inputs import train_tokenizer
    from salong.dit import PRESETS as DIT, DiT
    from salong.pipeline import Generator, GeneratorConfig, SamplingConfig

    torch.manual_seed(seed)
    config = GeneratorConfig(dit=DIT["tiny"], autoencoder=AE["tiny"], clap=CLAP["tiny"],
                             sampling=SamplingConfig(steps=4, cfg_scale=3.0, sigma_min=0.3, sigma_max=80.0))
    dit = DiT(config.dit)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tokenizer = train_tokenizer(CAPTIONS * 4, vocab_size=config.clap.vocab_size)
    clap = Clap(config.clap, tokenizer)
    return Generator(config, dit, Autoencoder(config.autoencoder), clap)


def perturbed_dit(config, seed: int = 0):
    """A DiT of `config` with every weight perturbed (a fresh DiT's zero-init output would hide bugs), in eval mode."""
    from salong.dit import DiT

    torch.manual_seed(seed)
    dit = DiT(config)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return dit.eval()


@pytest.fixture(scope="session")
def generator_path(tmp_path_factory):
    """A saved tiny generator checkpoint."""
    return tiny_generator().save(tmp_path_factory.mktemp("gen") / "generator.safetensors")


def run_cli(capsys, *args):
    """Run `salong ARGS` in-process; return (exit code, stdout, stderr)."""
    from salong.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def tiny_sao_config(objective: str = "v") -> dict:
    """A Stable Audio Open `model_config.json` (stable-audio-tools layout) at test scale:
    hop 32, 64-frame window, 8 latent channels, DiT width 64 of 2 heads, T5 width 32."""
    enc = {"in_channels": 2, "channels": 4, "c_mults": [1, 2], "strides": [4, 8], "latent_dim": 16, "use_snake": True}
    dec = {"out_channels": 2, "channels": 4, "c_mults": [1, 2], "strides": [4, 8], "latent_dim": 8, "use_snake": True,
           "final_tanh": False}
    timing = ["seconds_start", "seconds_total"] if objective == "v" else ["seconds_total"]
    numbers = [{"id": t, "type": "number", "config": {"min_val": 0, "max_val": 512 if objective == "v" else 256}}
               for t in timing]
    dit = {"io_channels": 8, "embed_dim": 64, "depth": 2, "num_heads": 2, "cond_token_dim": 32,
           "global_cond_dim": 32 * len(timing), "project_cond_tokens": objective != "v",
           "transformer_type": "continuous_transformer"}
    diffusion = {"cross_attention_cond_ids": ["prompt", *timing], "global_cond_ids": timing, "type": "dit",
                 "config": dit}
    if objective != "v":
        diffusion["diffusion_objective"] = "rf_denoiser"
        dit["attn_kwargs"] = {"qk_norm": "ln"}
    return {
        "model_type": "diffusion_cond", "sample_size": 2048, "sample_rate": 44100, "audio_channels": 2,
        "model": {
            "pretransform": {"type": "autoencoder", "iterate_batch": True, "config": {
                "encoder": {"type": "oobleck", "requires_grad": False, "config": enc},
                "decoder": {"type": "oobleck", "config": dec},
                "bottleneck": {"type": "vae"}, "latent_dim": 8, "downsampling_ratio": 32, "io_channels": 2}},
            "conditioning": {"configs": [{"id": "prompt", "type": "t5",
                                          "config": {"t5_model_name": "t5-base", "max_length": 16}}, *numbers],
                             "cond_dim": 32},
            "diffusion": diffusion,
            "io_channels": 8,
        },
        "training": {"learning_rate": 1e-4},
    }


def save_tiny_t5(folder):
    """A tiny T5 encoder (width 32) and a T5 tokenizer built offline, saved with save_pretrained."""
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    torch.manual_seed(1)
    t5_config = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    T5EncoderModel(t5_config).save_pretrained(folder)
    words = ["▁ambient", "▁piano", "▁with", "▁soft", "▁rain", "▁a", "▁deep", "▁bass", "▁calm"]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [(w, -3.0) for w in words]
    vocab += [(ch, -8.0) for ch in "abcdefghijklmnopqrstuvwxyz0123456789"]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(folder)
    return folder


def write_tiny_sao(folder, objective: str = "v", t5: bool = True, seed: int = 0):
    """A Stable Audio Open folder: model_config.json, model.safetensors with random weights under
    the reference's tensor names (zero-initialised layers perturbed), and a t5-base/ beside them."""
    import json

    from safetensors.torch import save_file

    from salong.autoencoder import Autoencoder
    from salong.dit import DiT
    from salong.sao import reference_name, translate

    folder.mkdir(parents=True, exist_ok=True)
    data = tiny_sao_config(objective)
    (folder / "model_config.json").write_text(json.dumps(data, indent=1))
    config = translate(data)
    torch.manual_seed(seed)
    dit, ae = DiT(config.dit), Autoencoder(config.autoencoder)
    with torch.no_grad():
        for p in list(dit.parameters()) + list(ae.parameters()):
            p.add_(0.05 * torch.randn_like(p))
    tensors = {reference_name("dit", k): v for k, v in dit.state_dict().items()}
    tensors.update({reference_name("autoencoder", k): v for k, v in ae.state_dict().items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    if t5:
        save_tiny_t5(folder / "t5-base")
    return folder


def dit_task_inputs(controls, dropout, monkeypatch, **features):
    """The keyword inputs a tiny `DiTTask` with `controls` and `control_dropout=dropout` passes to
    `v_loss` for one batch of 256 rows whose every control feature is ones: `features` maps
    each control batch key (beat, key, drums, form) to its shape after the batch dimension."""
    import dataclasses

    from salong.autoencoder import PRESETS as AE, Autoencoder
    from salong.clap import PRESETS as CLAP, Clap
    from salong.dit import PRESETS as DIT
    from salong.train.dit import DiTTask, DiTTaskConfig

    config = DiTTaskConfig(model=dataclasses.replace(DIT["tiny"], controls=controls), cond_dropout=0.0,
                           control_dropout=dropout)
    task = DiTTask(config, Autoencoder(AE["tiny"]), Clap(CLAP["tiny"]))
    seen = {}
    monkeypatch.setattr("salong.train.dit.v_loss", lambda *a, **kw: seen.update(kw) or torch.zeros(()))
    b = 256
    batch = {"latents": torch.randn(b, 64, 8), "mask": torch.ones(b, 8, dtype=torch.bool),
             "text": torch.randn(b, 77, 128), "seconds_start": torch.zeros(b), "seconds_total": torch.full((b,), 9.0),
             **{name: torch.ones(b, *shape) for name, shape in features.items()}}
    torch.manual_seed(0)
    task.loss("dit", batch, {"dit": task.dit}, 0)
    return seen


def saved_with_controls(tmp_path_factory, controls, name):
    """A tiny generator with the DiT's `controls`, its weights perturbed, saved in a fresh folder."""
    import dataclasses

    from salong.dit import DiT
    from salong.pipeline import Generator

    base = tiny_generator(0)
    config = dataclasses.replace(base.config, dit=dataclasses.replace(base.config.dit, controls=controls),
                                 canonical_text=True)
    dit = DiT(config.dit)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return Generator(config, dit, base.autoencoder, base.text_encoder.clap).save(
        tmp_path_factory.mktemp(name) / f"{name}.safetensors")
