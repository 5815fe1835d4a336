"""`salong encode` / `salong decode`: round trips keep rate, channels and length; clear errors."""

import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from salong.audio import read_audio, write_audio
from salong.autoencoder import PRESETS, Autoencoder, AutoencoderConfig, save_autoencoder
from salong.latents import load_latents
from salong.synth import make_piece
from conftest import run_cli


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    return save_autoencoder(tmp_path_factory.mktemp("m") / "ae.safetensors", Autoencoder(PRESETS["tiny"]))


@pytest.mark.parametrize("channels,rate,ext", [(2, 44100, "wav"), (1, 22050, "flac")])
def test_round_trip_keeps_shape(tmp_path, capsys, model_path, channels, rate, ext):
    piece = make_piece(seed=3, seconds=1.3)
    audio = piece.audio[:channels]
    src = write_audio(tmp_path / f"clip.{ext}", audio if rate == 44100 else audio[:, ::2], rate)
    n = read_audio(src)[0].shape[1]

    code, out, err = run_cli(capsys, "encode", src, "-o", tmp_path / "clip.latents.safetensors", "--model", model_path,
                         "--mean", "--no-progress")
    assert code == 0, err
    latents_path = out.strip()
    item = load_latents(latents_path)
    assert item.latents.shape == (64, math.ceil(round(n * 44100 / rate) / 2048))
    assert (item.sample_rate, item.channels) == (44100, channels)

    code, out, err = run_cli(capsys, "decode", latents_path, "-o", tmp_path / f"back.{ext}", "--model", model_path,
                         "--no-progress")
    assert code == 0, err
    back, back_rate = read_audio(out.strip())
    # decoded at the model's rate, with the source's channel count and duration
    assert back_rate == 44100 and back.shape[0] == channels
    assert back.shape[1] == round(n * 44100 / rate)


def test_mean_is_deterministic_and_sampling_is_not(tmp_path, capsys, model_path):
    src = write_audio(tmp_path / "a.wav", make_piece(seed=1, seconds=0.5).audio, 44100)
    paths = []
    for name, flag in [("m1", "--mean"), ("m2", "--mean"), ("s1", None), ("s2", None)]:
        args = ["encode", src, "-o", tmp_path / f"{name}.safetensors", "--model", model_path, "--no-progress"]
        code, out, err = run_cli(capsys, *(args + ([flag] if flag else [])))
        assert code == 0, err
        paths.append(load_latents(out.strip()).latents)
    assert torch.equal(paths[0], paths[1])
    assert not torch.equal(paths[2], paths[3])


def test_many_inputs_go_to_a_folder_and_failures_are_counted(tmp_path, capsys, model_path):
    a = write_audio(tmp_path / "a.wav", make_piece(seed=1, seconds=0.5).audio, 44100)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    code, out, err = run_cli(capsys, "encode", a, bad, "-o", tmp_path / "lat", "--model", model_path, "--no-progress")
    assert code == 1
    assert out.strip() == str(tmp_path / "lat" / "a.latents.safetensors")
    assert "cannot decode" in err and "1 of 2 inputs failed" in err
    assert sorted(p.name for p in (tmp_path / "lat").iterdir()) == ["a.latents.safetensors"]


def test_decode_errors(tmp_path, capsys, model_path):
    src = write_audio(tmp_path / "a.wav", make_piece(seed=1, seconds=0.5).audio, 44100)
    other = save_autoencoder(tmp_path / "ae32.safetensors",
                             Autoencoder(AutoencoderConfig(channels=4, c_mults=(1, 2, 2, 4, 4), latent_dim=32)))
    code, out, err = run_cli(capsys, "encode", src, "-o", tmp_path / "z32.safetensors", "--model", other,
                             "--no-progress")
    assert code == 0, err
    code, out, err = run_cli(capsys, "decode", out.strip(), "-o", tmp_path / "x.wav", "--model", model_path)
    assert code == 1 and "have 32 channels but the model decodes 64" in err and not (tmp_path / "x.wav").exists()

    plain = tmp_path / "plain.safetensors"
    save_file({"latents": torch.zeros(64, 3)}, str(plain))
    code, _, err = run_cli(capsys, "decode", plain, "-o", tmp_path / "x.wav", "--model", model_path)
    assert code == 1 and "not a latents file" in err

    code, _, err = run_cli(capsys, "decode", model_path, "-o", tmp_path / "x.wav", "--model", model_path)
    assert code == 1 and "is a model checkpoint (autoencoder), not a latents file" in err

    code, _, err = run_cli(capsys, "decode", plain, "-o", tmp_path / "x.aac", "--model", model_path)
    assert code == 1 and "unknown output extension '.aac'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "ae32.safetensors", "plain.safetensors",
                                                          "z32.safetensors"]


def test_encode_errors(tmp_path, capsys, model_path):
    code, out, err = run_cli(capsys, "encode", tmp_path / "missing.wav", "--model", model_path)
    assert code == 1 and "not found" in err and out == ""
    code, _, err = run_cli(capsys, "encode", tmp_path, "--model", model_path)
    assert code == 1 and "is a directory" in err
    empty = tmp_path / "empty.wav"
    write_audio(tmp_path / "seed.wav", np.zeros((2, 10), np.float32), 44100)
    import soundfile as sf

    sf.write(str(empty), np.zeros((0, 2), np.float32), 44100)
    code, _, err = run_cli(capsys, "encode", empty, "--model", model_path)
    assert code == 1 and "is empty" in err
    code, _, err = run_cli(capsys, "encode", tmp_path / "seed.wav", "-o", tmp_path / "no" / "dir" / "x.safetensors",
                       "--model", model_path)
    assert code == 1 and "does not exist" in err
    code, _, err = run_cli(capsys, "encode", tmp_path / "seed.wav", "-o", "/proc/x.safetensors", "--model", model_path)
    assert code == 1 and ("not writable" in err or "cannot write" in err)


def test_more_channels_than_the_model_are_mixed_down_and_said_so(tmp_path, capsys, model_path):
    audio = np.random.default_rng(0).normal(0, 0.1, (6, 22050)).astype(np.float32)
    write_audio(tmp_path / "surround.wav", audio, 44100)
    code, out, err = run_cli(capsys, "encode", tmp_path / "surround.wav", "--model", model_path, "--no-progress",
                             "-o", tmp_path / "s.latents.safetensors")
    assert code == 0 and "surround.wav has 6 channels; it is mixed down to 2" in err and len(err.splitlines()) == 1
    assert load_latents(out.strip()).channels == 2
    code, out, err = run_cli(capsys, "decode", tmp_path / "s.latents.safetensors", "--model", model_path,
                             "-o", tmp_path / "back.wav")
    assert code == 0, err
    assert read_audio(tmp_path / "back.wav")[0].shape == (2, 22050)


def test_export_names_the_missing_path(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "export", tmp_path / "no-such-run", "-o", tmp_path / "m.safetensors")
    assert code == 1 and "no-such-run' not found" in err


def test_outputs_are_planned_before_work_and_never_replaced_silently(tmp_path, capsys, model_path):
    audio = make_piece(seed=2, seconds=0.5).audio
    for name in ("take.1.wav", "take.2.wav"):
        write_audio(tmp_path / name, audio, 44100)
    code, out, err = run_cli(capsys, "encode", tmp_path / "take.1.wav", tmp_path / "take.2.wav", "--model", model_path,
                             "-o", tmp_path / "z", "--no-progress")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "z").iterdir()) == ["take.1.latents.safetensors",
                                                                  "take.2.latents.safetensors"]
    # the same name twice: refused before the model loads (the model path is not even read)
    (tmp_path / "other").mkdir()
    write_audio(tmp_path / "other" / "take.1.wav", audio, 44100)
    code, out, err = run_cli(capsys, "encode", tmp_path / "take.1.wav", tmp_path / "other" / "take.1.wav",
                             "--model", tmp_path / "missing.safetensors", "-o", tmp_path / "y")
    assert code == 1 and "would both be written to" in err and not (tmp_path / "y").exists()
    # an existing output is kept unless --overwrite
    first = (tmp_path / "z" / "take.1.latents.safetensors").read_bytes()
    code, _, err = run_cli(capsys, "encode", tmp_path / "take.1.wav", "--model", model_path,
                           "-o", tmp_path / "z" / "take.1.latents.safetensors")
    assert code == 1 and "exists; pass --overwrite" in err
    assert (tmp_path / "z" / "take.1.latents.safetensors").read_bytes() == first
    code, _, err = run_cli(capsys, "decode", tmp_path / "z" / "take.1.latents.safetensors", "--model", model_path,
                           "-o", tmp_path / "take.1.wav")
    assert code == 1 and "exists; pass --overwrite" in err
    code, out, err = run_cli(capsys, "decode", tmp_path / "z" / "take.1.latents.safetensors", "--model", model_path,
                             "-o", tmp_path / "take.1.wav", "--overwrite")
    assert code == 0 and out.strip() == str(tmp_path / "take.1.wav")


def test_decode_writes_block_by_block_the_file_of_the_whole_audio(tmp_path, capsys, model_path, monkeypatch):
    """14 s of latents decode in several blocks straight to the file, and the file is the one
    the whole decoded audio gives (trimmed to the recorded length, mixed to the recorded mono)."""
    import salong.audio
    from salong.autoencoder import load_autoencoder
    from salong.latents import Latents, save_latents

    model, cfg = load_autoencoder(model_path)
    z = torch.randn(64, 300, generator=torch.Generator().manual_seed(5))  # (latent_dim, frames)
    samples = 300 * cfg.samples_per_latent - 777
    save_latents(tmp_path / "z.latents.safetensors",
                 Latents(z, cfg.sample_rate, cfg.latent_rate, samples, 1, "z", ""))
    blocks = []
    real = salong.audio.write_audio_blocks
    monkeypatch.setattr(salong.audio, "write_audio_blocks",
                        lambda path, pieces, *a, **kw: real(path, (blocks.append(p.shape) or p for p in pieces),
                                                            *a, **kw))
    code, out, err = run_cli(capsys, "decode", tmp_path / "z.latents.safetensors", "-o", tmp_path / "z.flac",
                             "--model", model_path, "--no-progress")
    assert code == 0, err
    assert len(blocks) >= 3 and sum(n for _, n in blocks) == samples and {c for c, _ in blocks} == {1}
    with torch.inference_mode():
        whole = model.decode_long(z[None])[0, :, :samples].numpy().mean(axis=0, keepdims=True)  # (1, samples)
    assert (tmp_path / "z.flac").read_bytes() == write_audio(tmp_path / "whole.flac", whole, 44100).read_bytes()
