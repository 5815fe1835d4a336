"""Shared fixtures: tiny models built and saved by the tests themselves (no downloads)."""

import pytest
import torch

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
    from salong.clap import PRESETS as CLAP, Clap, train_tokenizer
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
