"""The machinery behind the bundled model: --init for every trainer, float16 exports with
sampling defaults, encode/decode through a generator file, and the bundled files themselves."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open

from conftest import CAPTIONS, run_cli
from salong.audio import load_audio, write_audio
from salong.autoencoder import PRESETS as AE, Autoencoder, load_autoencoder_from, save_autoencoder
from salong.bundled import bundled_autoencoder_path, bundled_generator_path
from salong.checkpoint import half_precision, load_checkpoint
from salong.clap import PRESETS as CLAP, Clap, load_clap, save_clap
from salong.clap_inputs import train_tokenizer
from salong.pipeline import Generator
from salong.synth import make_piece


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Four captioned synth clips in the dataset format."""
    root = tmp_path_factory.mktemp("corpus")
    lines = []
    for i, seconds in enumerate((1.2, 1.5, 0.9, 1.1)):
        piece = make_piece(seed=i, seconds=seconds)
        write_audio(root / f"{i}.wav", piece.audio, 44100)
        lines.append(json.dumps({"path": f"{i}.wav", "caption": piece.caption}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def tensors(path):
    return load_checkpoint(path).tensors


def close(a, b, tol=1e-6):
    """Same tensors; batch-norm running statistics are not weights (training moves them at any lr)."""
    weights = [k for k in a if "running_" not in k and "num_batches_tracked" not in k]
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=tol, rtol=0) for k in weights)


# Learning rate so small that a run's weights stay its starting weights (to float32 precision).
STILL = ["--lr", "1e-30", "--steps", 2, "--batch-size", 2, "--seed", 3, "--quiet"]


def test_autoencoder_init_starts_from_the_given_weights(corpus, tmp_path, capsys):
    torch.manual_seed(1)
    start = Autoencoder(AE["tiny"])
    with torch.no_grad():
        for p in start.parameters():
            p.add_(0.1 * torch.randn_like(p))
    init = save_autoencoder(tmp_path / "start.safetensors", start)
    args = ["train", "autoencoder", "--data", corpus, "--window-seconds", 0.25, "--demo-every", 0, "--eval-every", 0]
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "a", "--init", init, *STILL)
    assert code == 0, err
    assert close(tensors(out.strip()), tensors(init))  # exported EMA weights = the given ones
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "b", "--preset", "tiny", *STILL)
    assert code == 0 and not close(tensors(out.strip()), tensors(init))  # without --init: fresh weights
    # a generator file's autoencoder serves as well
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "c", "--init", tmp_path / "missing.safetensors", *STILL)
    assert code == 1 and "not found" in err
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "a", "--init", init, "--resume")
    assert code == 1 and "give only one of them" in err
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "d", "--init", init, "--preset", "small")
    assert code == 1 and "drop --preset" in err


def test_autoencoder_init_from_a_generator_file(corpus, tmp_path, capsys, generator_path):
    args = ["train", "autoencoder", "--data", corpus, "--window-seconds", 0.25, "--demo-every", 0, "--eval-every", 0]
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "a", "--init", generator_path, *STILL)
    assert code == 0, err
    inside = {k[len("autoencoder."):]: v for k, v in tensors(generator_path).items() if k.startswith("autoencoder.")}
    assert close(tensors(out.strip()), inside)


def test_clap_init_keeps_weights_and_tokenizer(corpus, tmp_path, capsys):
    torch.manual_seed(2)
    tokenizer = train_tokenizer(CAPTIONS * 4, vocab_size=300)
    init = save_clap(tmp_path / "clap.safetensors", Clap(CLAP["tiny"], tokenizer))
    code, out, err = run_cli(capsys, "train", "clap", "--data", corpus, "--out", tmp_path / "a", "--init", init,
                             "--eval-every", 0, "--validation-fraction", 0, *STILL)
    assert code == 0, err
    assert close(tensors(out.strip()), tensors(init))
    trained = load_clap(out.strip())
    assert trained.tokenizer.get_vocab() == tokenizer.get_vocab()  # the file's tokenizer, not a new one


def test_dit_init_takes_dit_autoencoder_and_clap_from_a_generator(corpus, tmp_path, capsys, generator_path):
    code, out, err = run_cli(capsys, "train", "dit", "--data", corpus, "--out", tmp_path / "a", "--init",
                             generator_path, "--demo-every", 0, *STILL)
    assert code == 0, err
    assert close(tensors(out.strip()), tensors(generator_path))  # DiT, autoencoder and CLAP all as given
    code, _, err = run_cli(capsys, "train", "dit", "--data", corpus, "--out", tmp_path / "b", "--init",
                           generator_path, "--preset", "small", *STILL)
    assert code == 1 and "drop --preset" in err


def test_half_export_with_sampling_defaults(corpus, tmp_path, capsys, generator_path):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "dit", "--data", corpus, "--out", run, "--init", generator_path,
                             "--demo-every", 0, *STILL)
    assert code == 0, err
    full = out.strip()
    code, out, err = run_cli(capsys, "train", "export", run, "-o", tmp_path / "half.safetensors", "--half",
                             "--steps", 3, "--cfg-scale", 2.5, "--beat-guidance-without-drums", 0.25)
    assert code == 0, err
    half = out.strip()
    with safe_open(half, "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes["dit.transformer.layers.0.self_attn.to_qkv.weight"] == "F16"
    assert all(d == "F32" for k, d in dtypes.items() if k.endswith("inv_freq") or k.endswith(".bias"))
    config = load_checkpoint(half).config
    assert config["sampling"]["steps"] == 3 and config["sampling"]["cfg_scale"] == 2.5
    assert config["sampling"]["beat_guidance_without_drums"] == 0.25
    a, b = Generator.load(full), Generator.load(half)
    assert b.config.sampling.steps == 3 and next(b.dit.parameters()).dtype == torch.float32  # computes in fp32
    x = torch.randn(1, 64, 32)
    kw = dict(cond_tokens=torch.randn(1, 77, 128), seconds_start=torch.zeros(1), seconds_total=torch.full((1,), 2.0))
    with torch.no_grad():
        ya, yb = a.dit(x, torch.full((1,), 0.5), **kw), b.dit(x, torch.full((1,), 0.5), **kw)
    assert float((ya - yb).norm() / ya.norm()) < 5e-3
    code, _, err = run_cli(capsys, "train", "export", run, "-o", tmp_path / "x.safetensors", "--steps", 0)
    assert code == 1 and "steps must be" in err and not (tmp_path / "x.safetensors").exists()
    code, _, err = run_cli(capsys, "train", "export", run, "-o", tmp_path / "y.safetensors", "--sampler", "nope")
    assert code == 1 and "unknown sampler" in err and not (tmp_path / "y.safetensors").exists()
    code, _, err = run_cli(capsys, "train", "export", run, "-o", tmp_path / "z.safetensors",
                           "--beat-guidance-without-drums", 2)
    assert code == 1 and "a share of the guidance, 0 to 1" in err and not (tmp_path / "z.safetensors").exists()


def test_half_precision_keeps_small_tensors_exact():
    src = {"w": torch.randn(4, 4), "b": torch.randn(4), "rope.inv_freq": torch.rand(16, 2), "n": torch.arange(3)}
    out = half_precision(src)
    assert out["w"].dtype == torch.float16 and torch.equal(out["b"], src["b"])
    assert out["rope.inv_freq"].dtype == torch.float32 and out["n"].dtype == torch.int64


def test_encode_and_decode_accept_a_generator_file(tmp_path, capsys, generator_path):
    audio = make_piece(seed=5, seconds=1.3).audio
    write_audio(tmp_path / "in.wav", audio, 44100)
    code, out, err = run_cli(capsys, "encode", tmp_path / "in.wav", "--model", generator_path, "--mean",
                             "-o", tmp_path / "in.latents.safetensors")
    assert code == 0, err
    model, _ = load_autoencoder_from(generator_path)
    stored = load_audio(tmp_path / "in.wav", 44100, 2)  # 16-bit, as the encoder read it
    expected = model.encode_long(torch.from_numpy(stored)[None], sample=False)[0]
    with safe_open(out.strip(), "pt") as f:
        assert torch.allclose(f.get_tensor("latents"), expected, atol=1e-5)
    code, out, err = run_cli(capsys, "decode", tmp_path / "in.latents.safetensors", "--model", generator_path,
                             "-o", tmp_path / "out.wav")
    assert code == 0, err


# --- the bundled files ---------------------------------------------------------------------------


def test_bundled_autoencoder_loads_strictly_and_keeps_the_contract():
    path = bundled_autoencoder_path()
    assert path is not None, "checkpoints/ must ship an autoencoder (alone or inside the generator)"
    model, config = load_autoencoder_from(path)
    assert ((config.sample_rate, config.audio_channels, config.samples_per_latent, config.latent_dim)
            == (44100, 2, 2048, 64))
    # it makes sense of music: a round trip keeps most of a synth piece's spectrum
    audio = torch.from_numpy(make_piece(seed=11, seconds=3.0).audio)[None]
    with torch.no_grad():
        recon = model.decode_long(model.encode_long(audio, sample=False))[..., : audio.shape[-1]]

    def spectrum(x: torch.Tensor) -> torch.Tensor:
        return torch.stft(x[0].mean(0), 2048, 512, window=torch.hann_window(2048), return_complex=True).abs()

    error = float((spectrum(recon) - spectrum(audio)).norm() / spectrum(audio).norm())
    assert error < 0.9, error  # an untrained compact autoencoder is at about 4


def test_bundled_generator_keeps_the_contract_and_generates(tmp_path, capsys):
    path = bundled_generator_path()
    if path is None:  # this version ships the autoencoder alone: generate says so, in one line
        code, out, err = run_cli(capsys, "generate", "calm piano", "-s", 1, "-o", tmp_path / "x.wav")
        assert code == 1 and "ships no generator yet; pass --model PATH" in err and len(err.splitlines()) == 1
        assert not (tmp_path / "x.wav").exists()
        return
    generator = Generator.load(path)
    assert generator.sample_rate == 44100 and generator.config.dit.window == 6144
    assert math.isclose(generator.max_seconds, 6144 * 2048 / 44100)
    song = generator.generate("calm piano in A minor at 80 BPM", 1.0, steps=2, seed=0)
    assert song.audio.shape == (2, 44100) and np.isfinite(song.audio).all()


def test_info_without_a_file_describes_the_bundled_model(capsys):
    code, out, err = run_cli(capsys, "info")
    assert code == 0, err
    assert "bundled model in" in out and "autoencoder" in out
