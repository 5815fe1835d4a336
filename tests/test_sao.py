"""Stable Audio Open folders: config translation, strict loading, T5, defaults, info, convert,
audio-to-audio, and one-line failures for bad folders."""

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import run_cli, save_tiny_t5, tiny_sao_config, write_tiny_sao
from salong import sao
from salong.audio import read_audio, write_audio
from salong.dit import PRESETS as DIT
from salong.errors import SalongError
from salong.pipeline import Generator
from salong.request import SongRequest
from salong.text_encoder import T5TextEncoder

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SECONDS = 0.04  # 56 of the tiny window's 64 latent frames (hop 32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_sao(tmp_path_factory.mktemp("sao") / "model")


@pytest.fixture(scope="module")
def gen(folder):
    return sao.load_folder(folder)


# --- translation -----------------------------------------------------------------------------


def test_stable_audio_open_1_0_config_is_the_sao1_preset_and_implies_every_published_tensor():
    data = json.loads((FIXTURES / "sao_1_0_model_config.json").read_text())
    config = sao.translate(data)
    assert config.dit == DIT["sao1"] and config.objective == "v" and config.t5_name == "t5-base"
    assert config.dit.window == 1024 and config.autoencoder.samples_per_latent == 2048
    s = config.sampling
    assert (s.sampler, s.steps, s.cfg_scale, s.sigma_min, s.sigma_max, s.frames) == ("dpmpp-2m", 100, 7.0, 0.3, 500.0,
                                                                                     "window")
    published = {}
    for line in (FIXTURES / "sao_1_0_state_dict_keys.txt").read_text().splitlines()[1:]:
        name, shape = line.split(" ", 1)
        published[name] = tuple(json.loads(shape.replace("(", "[").replace(")", "]").replace(",]", "]")))
    implied = {k: shape for k, (shape, _, _) in sao.expected_shapes(config).items()}
    assert implied == published  # all 745 names and shapes


def test_stable_audio_open_small_style_config():
    config = sao.translate(tiny_sao_config("rf"))
    assert config.objective == "rf" and config.dit.timing == ("seconds_total",)
    assert config.dit.project_cond_tokens and config.dit.qk_norm and config.dit.cond_kv_heads == 2
    assert config.dit.timing_max_seconds == 256
    s = config.sampling
    assert (s.sampler, s.steps, s.cfg_scale, s.frames) == ("pingpong", 8, 1.0, "window")
    names = set(sao.expected_shapes(config))
    assert "model.model.transformer.layers.0.self_attn.q_norm.weight" in names
    assert "model.model.transformer.layers.1.cross_attn.k_norm.bias" in names
    assert not any("seconds_start" in n for n in names)
    assert sao.expected_shapes(config)["model.model.to_cond_embed.0.weight"][0] == (64, 32)


def _edit(path, value):
    def apply(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        if value is KeyError:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return apply


D = ("model", "diffusion")
UNSUPPORTED = [
    (_edit(("model_type",), "diffusion_uncond"), r"model_type = \"diffusion_uncond\" is not supported"),
    (_edit((*D, "type"), "adp_cfg_1d"), r"model\.diffusion\.type = \"adp_cfg_1d\""),
    (_edit((*D, "config", "patch_size"), 0), r"patch_size must be a positive whole number"),
    (_edit((*D, "config", "global_cond_type"), "adaLN"), r"global_cond_type = \"adaLN\" is not supported"),
    (_edit((*D, "config", "transformer_type"), "x-transformers"), r"transformer_type"),
    (_edit((*D, "config", "attn_kwargs"), {"qk_norm": "l2"}), r"qk_norm = \"l2\""),
    (_edit((*D, "config", "num_memory_tokens"), 4), r"num_memory_tokens = 4"),
    (_edit((*D, "config", "mystery"), 1), r"model\.diffusion\.config\.mystery = 1 is not supported"),
    (_edit((*D, "diffusion_objective"), "x0"), r"diffusion_objective = \"x0\""),
    (_edit(("model", "pretransform", "config", "decoder", "config", "final_tanh"), KeyError), r"final_tanh"),
    (_edit(("model", "pretransform", "config", "decoder", "config", "final_tanh"), True), r"final_tanh = true"),
    (_edit(("model", "pretransform", "config", "bottleneck", "type"), "rvq"), r"bottleneck\.type = \"rvq\""),
    (_edit(("model", "pretransform", "scale"), 2.0), r"pretransform\.scale = 2\.0"),
    (_edit(("model", "conditioning", "configs", 0, "type"), "clap_text"), r"configs\[0\]\.type = \"clap_text\""),
    (_edit(("model", "conditioning", "configs", 1, "type"), "int"), r"configs\[1\]\.type = \"int\""),
    (_edit(("model", "conditioning", "cond_dim"), 48), r"cond_token_dim = 32, salong needs 48"),
    (_edit((*D, "input_concat_ids"), ["prompt"]), r"input_concat_ids"),
    (_edit(("model", "io_channels"), KeyError), r"model\.io_channels is missing"),
]


@pytest.mark.parametrize("edit, pattern", UNSUPPORTED)
def test_unsupported_configs_are_refused_naming_the_field(edit, pattern):
    data = copy.deepcopy(tiny_sao_config())
    edit(data)
    with pytest.raises(SalongError, match=pattern) as info:
        sao.translate(data)
    assert "\n" not in str(info.value)


# --- loading ---------------------------------------------------------------------------------


def test_loaded_folder_matches_the_file_tensor_for_tensor(folder, gen):
    stored = load_file(str(folder / "model.safetensors"))
    ours = {sao.reference_name("dit", k): v for k, v in gen.dit.state_dict().items()}
    ours.update({sao.reference_name("autoencoder", k): v for k, v in gen.autoencoder.state_dict().items()})
    assert set(ours) == set(stored)
    assert all(torch.equal(ours[k], stored[k]) for k in stored)  # weight_g / weight_v as stored
    assert "pretransform.model.decoder.layers.1.layers.1.weight_g" in stored
    assert isinstance(gen.text_encoder, T5TextEncoder) and gen.text_encoder.max_length == 16


def test_t5_conditioning_zeroes_padding_and_changes_the_song(gen):
    tokens, mask = gen.text_encoder.encode(["ambient piano", "deep bass with soft rain"])
    assert tokens.shape == (2, 16, 32) and (tokens[~mask] == 0).all() and mask[0].sum() < 16
    a = gen.generate("ambient piano", SECONDS, steps=3, seed=1).audio
    b = gen.generate("deep bass", SECONDS, steps=3, seed=1).audio
    assert a.shape == (2, round(SECONDS * 44100)) and not np.allclose(a, b)


def test_defaults_come_from_the_model_and_frames_modes_differ(gen, monkeypatch):
    request = SongRequest("calm", SECONDS).resolve(gen.config)
    assert (request.steps, request.cfg, request.sampler, request.frames) == (100, 7.0, "dpmpp-2m", "window")
    seen = []
    real = gen.autoencoder.decode_long
    monkeypatch.setattr(gen.autoencoder, "decode_long", lambda z, **kw: (seen.append(z.shape[-1]), real(z, **kw))[1])
    window = gen.generate("calm", SECONDS, steps=2, seed=0)
    needed = gen.generate("calm", SECONDS, steps=2, seed=0, frames="needed")
    assert seen == [64, 56]  # the whole window by default, else the frames 0.04 s needs
    assert window.audio.shape == needed.audio.shape and not np.allclose(window.audio, needed.audio)


def test_saved_as_one_generator_file_gives_the_same_song(gen, tmp_path):
    path = gen.save(tmp_path / "sao.safetensors")
    again = Generator.load(path)
    assert again.config == gen.config and isinstance(again.text_encoder, T5TextEncoder)
    a = gen.generate("ambient piano", SECONDS, steps=3, seed=5).audio
    assert np.array_equal(a, again.generate("ambient piano", SECONDS, steps=3, seed=5).audio)


def test_rectified_flow_folder_generates_with_pingpong(tmp_path):
    small = sao.load_folder(write_tiny_sao(tmp_path / "small", "rf"))
    request = SongRequest("calm", SECONDS).resolve(small.config)
    assert (request.steps, request.cfg, request.sampler) == (8, 1.0, "pingpong")
    song = small.generate("calm", SECONDS, seed=2)
    again = small.generate("calm", SECONDS, seed=2)
    assert np.array_equal(song.audio, again.audio) and np.isfinite(song.audio).all()
    with pytest.raises(SalongError, match="unknown sampler 'dpmpp-2m' for a rectified-flow model"):
        small.generate("calm", SECONDS, sampler="dpmpp-2m")
    with pytest.raises(SalongError, match=r"in \(0, 1\]"):
        SongRequest("calm", SECONDS, init_audio="in.wav", init_noise_level=2.0).resolve(small.config)


# --- audio-to-audio ----------------------------------------------------------------------------


def test_audio_to_audio_stays_close_at_low_noise_and_departs_at_high(gen, monkeypatch):
    rng = np.random.default_rng(0)
    source = (0.3 * np.sin(np.linspace(0, 200, round(SECONDS * 44100)))[None] + 0.05 * rng.normal(size=(2, 1764)))
    source = source.astype(np.float32)
    frames = gen.frames_to_sample(SECONDS, None)
    target = gen.init_latents(source, 44100, frames, seed=0)
    out = {}
    real = gen.autoencoder.decode_long
    monkeypatch.setattr(gen.autoencoder, "decode_long", lambda z, **kw: (out.__setitem__("z", z), real(z, **kw))[1])
    distance = {}
    for level in (0.5, 1.0, 100.0):
        gen.generate("deep bass", SECONDS, steps=10, seed=0, init_audio=(source, 44100), init_noise_level=level)
        distance[level] = float((out["z"] - target).norm() / target.norm())
    assert distance[0.5] < distance[1.0] < distance[100.0]
    assert distance[0.5] < 0.5 * distance[100.0]


# --- the command line ------------------------------------------------------------------------


def test_cli_generate_info_convert_encode_with_a_folder(folder, tmp_path, capsys):
    t5 = save_tiny_t5(tmp_path / "my-t5")
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model_config.json", "model.safetensors"):
        shutil.copy(folder / name, bare / name)
    out = tmp_path / "a.wav"
    code, stdout, _ = run_cli(capsys, "generate", "ambient piano", "-s", SECONDS, "--model", bare, "--text-encoder", t5,
                              "--steps", 2, "--seed", 4, "-o", out)
    assert code == 0 and stdout.strip() == f"{out}\t4"
    audio, rate = read_audio(out)
    assert rate == 44100 and audio.shape == (2, round(SECONDS * 44100))

    code, stdout, _ = run_cli(capsys, "info", folder)
    assert code == 0 and "window 64 latent frames" in stdout and "1378.12 Hz" in stdout
    assert "prompt (T5 t5-base, 16 tokens, width 32); seconds_start, seconds_total" in stdout
    assert "sampler defaults: dpmpp-2m, 100 steps, CFG 7, sigma 0.3-500, frames window" in stdout

    file = tmp_path / "one.safetensors"
    code, stdout, _ = run_cli(capsys, "convert", folder, "-o", file)
    assert code == 0 and stdout.strip() == str(file)
    for model, name in ((folder, "x.wav"), (file, "y.wav")):
        assert run_cli(capsys, "generate", "calm", "-s", SECONDS, "--model", model, "--steps", 2, "--seed", 1,
                       "-o", tmp_path / name)[0] == 0
    # the same samples (the files' recipes name different models)
    assert np.array_equal(read_audio(tmp_path / "x.wav")[0], read_audio(tmp_path / "y.wav")[0])

    code, _, _ = run_cli(capsys, "generate", "calm", "-s", SECONDS, "--model", folder, "--steps", 2, "--seed", 1,
                         "--init-audio", out, "--init-noise-level", 1.0, "-o", tmp_path / "z.wav")
    assert code == 0 and (tmp_path / "z.wav").is_file()
    lat = tmp_path / "a.latents.safetensors"
    assert run_cli(capsys, "encode", out, "--model", folder, "-o", lat)[0] == 0
    assert run_cli(capsys, "decode", lat, "--model", folder, "-o", tmp_path / "back.wav")[0] == 0
    assert read_audio(tmp_path / "back.wav")[0].shape == audio.shape


def _bad_folders(root: Path, good: Path) -> dict[str, Path]:
    made = {}

    def copy_of(name):
        target = root / name
        shutil.copytree(good, target)
        return target

    made["empty"] = root / "empty"
    made["empty"].mkdir()
    f = copy_of("uncond")
    data = json.loads((f / "model_config.json").read_text())
    data["model_type"] = "diffusion_uncond"
    (f / "model_config.json").write_text(json.dumps(data))
    made["uncond"] = f
    f = copy_of("no_t5")
    shutil.rmtree(f / "t5-base")
    made["no_t5"] = f
    f = copy_of("ckpt")
    (f / "model.safetensors").rename(f / "model.ckpt")
    made["ckpt"] = f
    f = copy_of("badjson")
    (f / "model_config.json").write_text("{oops")
    made["badjson"] = f
    tensors = load_file(str(good / "model.safetensors"))
    for name, change in (("renamed", "rename"), ("missing", "drop"), ("reshaped", "reshape")):
        f = copy_of(name)
        t = dict(tensors)
        key = "model.model.transformer.layers.1.cross_attn.to_kv.weight"
        if change == "rename":
            t["model.model.transformer.layers.1.cross_attn.to_kv.weights"] = t.pop(key)
        elif change == "drop":
            del t[key]
        else:
            t[key] = torch.zeros(3, 3)
        save_file(t, str(f / "model.safetensors"))
        made[name] = f
    return made


KV = r"model\.model\.transformer\.layers\.1\.cross_attn\.to_kv\.weight"
BAD = [
    ("empty", [], r"has no model_config\.json, so it is not a Stable Audio Open model folder"),
    ("uncond", [], r"model_type = \"diffusion_uncond\" is not supported"),
    ("no_t5", [], r"needs its T5 text encoder \(t5-base\).*pass --text-encoder"),
    ("ckpt", [], r"holds only model\.ckpt, a pickle, which salong never loads.*model\.safetensors"),
    ("badjson", [], r"model_config\.json' is not readable JSON"),
    ("renamed", [], KV + r" is missing and " + KV + r"s is not part of the model \(renamed\?\)"),
    ("missing", [], KV + r" is missing"),
    ("reshaped", [], KV + r" has shape \(3, 3\), the config implies \(64, 32\)"),
    ("good", ["--text-encoder", "{nowhere}"], r"--text-encoder .* is not a folder"),
    ("good", ["--text-encoder", "{good}"], r"has no config\.json, so it is not a T5 folder"),
    ("good", ["--init-audio", "{nowhere}", "--init-noise-level", "1"], r"audio file .* not found"),
    ("good", ["--init-noise-level", "1"], r"needs both --init-audio FILE and --init-noise-level"),
    ("good", ["--init-audio", "{wav}", "--init-noise-level", "0.1"], r"above this model's sigma_min 0\.3"),
    ("good", ["--frames", "all"], r"'all' is not one of"),
]


@pytest.mark.parametrize("name, extra, pattern", BAD)
def test_bad_folders_and_options_fail_in_one_line(folder, tmp_path_factory, capsys, name, extra, pattern):
    import re

    root = tmp_path_factory.mktemp("bad")
    made = _bad_folders(root, folder)
    made["good"] = folder
    wav = root / "in.wav"
    write_audio(wav, np.zeros((2, 441), np.float32), 44100)
    args = [a.format(nowhere=root / "nowhere", good=folder, wav=wav) for a in extra]
    out = root / "out.wav"
    code, stdout, stderr = run_cli(capsys, "generate", "calm", "-s", SECONDS, "--model", made[name], "--steps", 1,
                                   "-o", out, *args)
    assert code != 0 and stdout == "" and not out.exists()
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert re.search(pattern, stderr), stderr
    if name not in ("good", "no_t5"):  # info needs no T5
        code, _, stderr = run_cli(capsys, "info", made[name])
        assert code != 0 and len(stderr.strip().splitlines()) == 1


def test_text_encoder_option_needs_a_folder_model(capsys, generator_path, tmp_path):
    code, _, stderr = run_cli(capsys, "generate", "calm", "-s", 0.5, "--model", generator_path, "--text-encoder",
                              tmp_path, "-o", tmp_path / "x.wav")
    assert code == 1 and "--text-encoder is for Stable Audio Open model folders" in stderr
