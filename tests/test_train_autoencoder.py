"""`salong train autoencoder`: the GAN task learns, resumes exactly, exports, rejects bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from salong.audio import write_audio
from salong.autoencoder import PRESETS, load_autoencoder
from salong.discriminators import DISCRIMINATOR_PRESETS
from salong.errors import SalongError
from salong.synth import make_piece
from salong.train import TrainConfig
from salong.train.autoencoder import AutoencoderTaskConfig, train_autoencoder
from conftest import run_cli


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three short synth pieces in the dataset format."""
    root = tmp_path_factory.mktemp("corpus")
    lines = []
    for i in range(3):
        piece = make_piece(seed=i, seconds=2.0)
        write_audio(root / f"{i}.wav", piece.audio, 44100)
        lines.append(json.dumps({"path": f"{i}.wav", "caption": piece.caption}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def task_config(**kw):
    return AutoencoderTaskConfig(model=PRESETS["tiny"], discriminator=DISCRIMINATOR_PRESETS["tiny"],
                                 window_seconds=0.25, **kw)


def train_config(**kw):
    base = dict(steps=4, batch_size=2, lr=2e-3, warmup=0.0, log_every=1, checkpoint_every=2)
    return TrainConfig(**{**base, **kw})


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_reconstruction_loss_falls(corpus, tmp_path):
    run = tmp_path / "run"
    train_autoencoder(corpus, run, train_config(steps=40, checkpoint_every=40), task_config(adversarial_start=40),
                      quiet=True, demo_count=0)
    stft = [m["generator/stft"] for m in metrics(run) if "generator/stft" in m]
    assert len(stft) == 40
    # medians: at this rate a batch now and then spikes (one step read 145 here), and a mean of
    # five steps followed the spikes, not the trend
    assert np.median(stft[-10:]) < 0.9 * np.median(stft[:5]), stft
    model, cfg = load_autoencoder(run / "model.safetensors")
    assert cfg == PRESETS["tiny"]
    # the critic is idle before the adversarial start: no loss logged, no optimiser step taken
    assert not any("discriminator/loss" in m for m in metrics(run))
    state = load_file(run / "checkpoints" / "step_0000040.safetensors")
    assert any(k.startswith("model/discriminator/") for k in state)
    assert any(k.startswith("optim/generator/") for k in state)
    assert not any(k.startswith("optim/discriminator/") for k in state)


def test_spectral_autoencoder_learns_magnitudes_without_a_critic(corpus, tmp_path):
    """The spectral kind trains on its magnitude loss; the critic never steps, whatever
    adversarial_start says; demos and evaluations go through Griffin-Lim to audio."""
    run = tmp_path / "spectral"
    config = AutoencoderTaskConfig(model=PRESETS["tiny-spectral"], discriminator=DISCRIMINATOR_PRESETS["tiny"],
                                   window_seconds=0.5, adversarial_start=0)
    train_autoencoder(corpus, run, train_config(steps=30, lr=1e-2, checkpoint_every=30, eval_every=30, demo_every=30),
                      config, quiet=True, demo_count=1)
    stft = [m["generator/stft"] for m in metrics(run) if "generator/stft" in m]
    assert len(stft) == 30
    # medians: at this rate a batch now and then spikes (one step read 145 here), and a mean of
    # five steps followed the spikes, not the trend
    assert np.median(stft[-10:]) < 0.9 * np.median(stft[:5]), stft
    assert not any("discriminator/loss" in m for m in metrics(run))
    assert any(np.isfinite(m.get("eval/stft", np.nan)) for m in metrics(run))
    model, cfg = load_autoencoder(run / "model.safetensors")
    assert cfg == PRESETS["tiny-spectral"] and cfg.architecture == "spectral"
    assert (run / "demos" / "step_0000030_0.wav").exists()


def test_gan_resume_is_exact(corpus, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_autoencoder(corpus, straight, train_config(), task_config(), quiet=True, demo_count=0)
    train_autoencoder(corpus, split, train_config(steps=2), task_config(), quiet=True, demo_count=0)
    train_autoencoder(corpus, split, train_config(), task_config(), resume=True, quiet=True, demo_count=0)
    a, b = load_file(straight / "model.safetensors"), load_file(split / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def last(run: Path) -> dict:
        return [m for m in metrics(run) if m.get("step") == 4 and "discriminator/loss" in m][-1]

    assert last(straight)["discriminator/loss"] == last(split)["discriminator/loss"]


def test_cli_trains_demos_and_exports(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "autoencoder", "--data", corpus, "--out", run, "--preset", "tiny",
                             "--steps", 2, "--batch-size", 1, "--window-seconds", 0.25, "--demo-every", 2,
                             "--eval-every", 2, "--checkpoint-every", 1, "--quiet")
    assert code == 0, err
    assert out.strip() == str(run / "model.safetensors")
    demos = ["original_0", "original_1", "step_0000002_0", "step_0000002_1"]
    assert (sorted(p.name for p in (run / "demos").iterdir())
            == sorted(f"{d}.{e}" for d in demos for e in ("png", "wav")))
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"  # drawn with every demo
    assert any("eval/si_sdr" in m for m in metrics(run))
    # export from an older checkpoint through the CLI
    code, out, err = run_cli(capsys, "train", "export", run / "checkpoints" / "step_0000001.safetensors",
                             "-o", tmp_path / "ae1.safetensors")
    assert code == 0, err
    model, _ = load_autoencoder(out.strip())
    # an existing model file is replaced only with --overwrite
    before = (tmp_path / "ae1.safetensors").read_bytes()
    code, _, err = run_cli(capsys, "train", "export", run, "-o", tmp_path / "ae1.safetensors")
    assert code == 1 and "exists; pass --overwrite" in err
    assert (tmp_path / "ae1.safetensors").read_bytes() == before
    code, _, err = run_cli(capsys, "train", "export", run, "-o", tmp_path / "ae1.safetensors", "--overwrite")
    assert code == 0, err
    assert (tmp_path / "ae1.safetensors").read_bytes() != before  # step 2's weights, not step 1's
    # a bare --resume needs no repeated options; asking for more steps continues
    code, _, err = run_cli(capsys, "train", "autoencoder", "--data", corpus, "--out", run, "--resume", "--steps", 3,
                           "--quiet")
    assert code == 0, err
    assert max(m["step"] for m in metrics(run)) == 3


def test_cli_bad_training_input(corpus, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run_cli(capsys, "train", "autoencoder", "--data", empty, "--out", tmp_path / "r", "--quiet")
    assert code == 1 and err.startswith("error: no readable audio files") and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "train", "autoencoder", "--data", corpus, "--out", tmp_path / "r2", "--steps", 0)
    assert code == 1 and "--steps" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "train", "autoencoder", "--data", corpus, "--out", tmp_path / "r3",
                           "--preset", "huge")
    assert code == 1 and "unknown preset 'huge'" in err
    code, _, err = run_cli(capsys, "train", "autoencoder", "--data", corpus, "--out", tmp_path / "none", "--resume")
    assert code == 1 and "not a salong run folder" in err
    with pytest.raises(SalongError, match="shorter than one latent frame"):
        AutoencoderTaskConfig(model=PRESETS["tiny"], window_seconds=0.001)


@pytest.mark.parametrize("preset", ["tiny-spectral", "tiny"])
def test_decoder_only_keeps_the_encoder_and_its_latents(corpus, tmp_path, capsys, preset):
    """--decoder-only from a trained model: the encoder (and so every latent a DiT learned) stays
    bit for bit, the decoder learns, and the run resumes as a decoder-only run."""
    first = tmp_path / "first"
    config = AutoencoderTaskConfig(model=PRESETS[preset], discriminator=DISCRIMINATOR_PRESETS["tiny"],
                                   window_seconds=0.5, adversarial_start=10)
    train_autoencoder(corpus, first, train_config(steps=2), config, quiet=True, demo_count=0)
    init = first / "model.safetensors"
    run = tmp_path / "decoder"
    code, out, err = run_cli(capsys, "train", "autoencoder", "--data", corpus, "--out", run, "--init", init,
                             "--decoder-only", "--steps", 3, "--batch-size", 1, "--lr", 1e-2, "--window-seconds",
                             0.5, "--adversarial-start", 10, "--demo-every", 0, "--eval-every", 0, "--quiet")
    assert code == 0, err
    before, after = load_file(init), load_file(run / "model.safetensors")
    encoder = [k for k in before if ".encoder." in f".{k}" or "bottleneck" in k]
    decoder = [k for k in before if ".decoder." in f".{k}"]
    assert encoder and decoder
    assert all(torch.equal(before[k], after[k]) for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in decoder)
    audio = torch.from_numpy(make_piece(seed=7, seconds=1.0).audio)[None]
    old, new = load_autoencoder(init)[0], load_autoencoder(run / "model.safetensors")[0]
    assert torch.equal(old.encode(audio), new.encode(audio))
    assert json.loads((run / "config.json").read_text())["task"]["train_encoder"] is False
    code, _, err = run_cli(capsys, "train", "autoencoder", "--data", corpus, "--out", run, "--resume",
                           "--steps", 4, "--quiet")
    assert code == 0, err
    assert all(torch.equal(before[k], load_file(run / "model.safetensors")[k]) for k in encoder)


def test_decoder_only_needs_a_trained_encoder(corpus, tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "autoencoder", "--data", corpus, "--out", tmp_path / "run",
                             "--preset", "tiny", "--decoder-only", "--steps", 1)
    assert code != 0 and out == ""
    assert err.strip().splitlines()[-1].startswith("error: --decoder-only keeps a trained encoder")
    assert not (tmp_path / "run").exists()


def test_export_puts_a_new_decoder_into_its_generator(corpus, generator_path, tmp_path, capsys):
    """A --decoder-only run of a generator's autoencoder exports into that generator (DiT and
    text encoder kept, the new decoder in); a generator with another encoder is refused."""
    from conftest import tiny_generator
    from salong.pipeline import Generator

    run = tmp_path / "decoder"
    code, _, err = run_cli(capsys, "train", "autoencoder", "--data", corpus, "--out", run, "--init", generator_path,
                           "--decoder-only", "--steps", 2, "--batch-size", 1, "--lr", 1e-2, "--window-seconds", 0.25,
                           "--adversarial-start", 10, "--demo-every", 0, "--eval-every", 0, "--quiet")
    assert code == 0, err
    out = tmp_path / "new.safetensors"
    code, stdout, err = run_cli(capsys, "train", "export", run, "-o", out, "--generator", generator_path)
    assert code == 0, err
    assert stdout.strip() == str(out)
    old, new, decoder = load_file(generator_path), load_file(out), load_file(run / "model.safetensors")
    assert old.keys() == new.keys()
    assert all(torch.equal(old[k], new[k]) for k in old if not k.startswith("autoencoder.decoder."))
    assert all(torch.equal(new[f"autoencoder.{k}"], v) for k, v in decoder.items())
    assert any(not torch.equal(old[k], new[k]) for k in old if k.startswith("autoencoder.decoder."))
    song = Generator.load(out).generate("calm piano", 0.5, steps=2, seed=0)
    assert song.audio.shape[-1] == 22050 and np.isfinite(song.audio).all()
    # what it writes is a generator, so it takes a generator's sampling defaults
    tuned = tmp_path / "tuned.safetensors"
    code, _, err = run_cli(capsys, "train", "export", run, "-o", tuned, "--generator", generator_path,
                           "--cfg-scale", 2.5, "--steps", 3)
    assert code == 0, err
    sampling = Generator.load(tuned).config.sampling
    assert (sampling.cfg_scale, sampling.steps) == (2.5, 3)
    code, _, err = run_cli(capsys, "train", "export", run, "-o", tmp_path / "x.safetensors", "--cfg-scale", 2.5)
    assert code != 0 and "sampling defaults of generators" in err

    other = tiny_generator(seed=1).save(tmp_path / "other.safetensors")
    refused = tmp_path / "refused.safetensors"
    code, stdout, err = run_cli(capsys, "train", "export", run, "-o", refused, "--generator", other)
    assert code != 0 and stdout == ""
    assert "encodes differently" in err and len(err.strip().splitlines()) == 1
    assert not refused.exists()
    code, _, err = run_cli(capsys, "train", "export", run, "-o", generator_path, "--generator", generator_path,
                           "--overwrite")
    assert code != 0 and torch.equal(load_file(generator_path)["dit.preprocess_conv.weight"],
                                     old["dit.preprocess_conv.weight"])


def spectral_generator(path: Path) -> Path:
    """A tiny generator whose autoencoder is the spectral kind (the bundled model's)."""
    import dataclasses

    from conftest import tiny_generator
    from salong.autoencoder import Autoencoder
    from salong.pipeline import Generator

    gen = tiny_generator()
    config = dataclasses.replace(gen.config, autoencoder=PRESETS["tiny-spectral"])
    torch.manual_seed(3)
    autoencoder = Autoencoder(config.autoencoder)
    with torch.no_grad():
        for p in autoencoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return Generator(config, gen.dit, autoencoder, gen.text_encoder).save(path)


def test_a_decoder_head_starts_as_the_decoder_it_joins_and_exports_into_its_generator(corpus, tmp_path, capsys):
    """--decoder-head N adds a residual MLP to a trained spectral decoder: the decoder draws the
    same magnitudes until it trains, the head trains, the encoder stays, and the generator it
    is exported into loads with the head and generates."""
    import dataclasses

    from salong.autoencoder import Autoencoder, load_autoencoder_from
    from salong.pipeline import Generator

    generator = spectral_generator(tmp_path / "gen.safetensors")
    plain = load_autoencoder_from(generator)[0]
    headed = Autoencoder(dataclasses.replace(plain.config, decoder_head=8))
    headed.load_state_dict({**headed.state_dict(), **plain.state_dict()})
    z = torch.randn(1, plain.config.latent_dim, 5)
    assert torch.equal(headed.decoder.log_magnitudes(z), plain.decoder.log_magnitudes(z))

    run = tmp_path / "decoder"
    code, _, err = run_cli(capsys, "train", "autoencoder", "--data", corpus, "--out", run, "--init", generator,
                           "--decoder-only", "--decoder-head", 8, "--steps", 2, "--batch-size", 1, "--lr", 1e-2,
                           "--window-seconds", 0.5, "--demo-every", 0, "--eval-every", 0, "--quiet")
    assert code == 0, err
    trained = load_file(run / "model.safetensors")
    assert trained["decoder.head.2.weight"].abs().sum() > 0  # started at zero, and learned
    assert all(torch.equal(v, trained[k]) for k, v in plain.state_dict().items() if not k.startswith("decoder."))
    assert json.loads((run / "config.json").read_text())["task"]["model"]["decoder_head"] == 8
    code, _, err = run_cli(capsys, "train", "autoencoder", "--data", corpus, "--out", run, "--resume",
                           "--decoder-head", 16, "--steps", 3, "--quiet")
    assert code != 0 and "a resumed run keeps its decoder" in err and len(err.strip().splitlines()) == 1

    out = tmp_path / "new.safetensors"
    code, _, err = run_cli(capsys, "train", "export", run, "-o", out, "--generator", generator)
    assert code == 0, err
    new = Generator.load(out)
    assert new.config.autoencoder.decoder_head == 8 and new.autoencoder.decoder.head is not None
    song = new.generate("calm piano", 0.5, steps=2, seed=0)
    assert song.audio.shape[-1] == 22050 and np.isfinite(song.audio).all()


def test_a_decoder_head_is_for_spectral_decoders(corpus, tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "autoencoder", "--data", corpus, "--out", tmp_path / "run",
                             "--preset", "tiny", "--decoder-head", 8, "--steps", 1)
    assert code != 0 and out == "" and "decoder_head is for the spectral architecture" in err
    assert not (tmp_path / "run").exists()
