"""Generation: exact lengths, determinism per seed, guidance paths, checkpoint round trip, bad settings."""

import numpy as np
import pytest
import torch

from salong.errors import SalongError
from salong.pipeline import FADE_SECONDS, Generator, finish


@pytest.fixture(scope="module")
def gen(generator_path):
    return Generator.load(generator_path)


@pytest.mark.parametrize("seconds", [0.3, 1.0, 2.37, 1 / 44100])
def test_length_is_exact(gen, seconds):
    song = gen.generate("calm piano", seconds, seed=1, steps=2)
    assert song.audio.shape == (2, round(seconds * 44100))
    assert song.audio.dtype == np.float32 and np.isfinite(song.audio).all()
    assert song.sample_rate == 44100


def test_only_needed_frames_are_generated_and_decoded(gen, monkeypatch):
    """Needed frames: the DiT samples and the decoder decodes what the request needs. Full
    window: the DiT samples the whole window; the decoder the kept part and its receptive field."""
    sampled, decoded = [], []
    forward, decode = gen.dit.forward, gen.autoencoder.decode_long
    monkeypatch.setattr(gen.dit, "forward", lambda x, *a, **kw: (sampled.append(x.shape[-1]), forward(x, *a, **kw))[1])
    monkeypatch.setattr(gen.autoencoder, "decode_long",
                        lambda z, **kw: (decoded.append(z.shape[-1]), decode(z, **kw))[1])
    gen.generate("calm piano", 1.0, seed=1, steps=2)
    assert set(sampled) == {22} and decoded == [22] and gen.frames_for(1.0) == 22  # ceil(44100 / 2048)
    sampled.clear()
    song = gen.generate("calm piano", 1.0, seed=1, steps=2, full_window=True)
    context = gen.config.autoencoder.decoder_context_frames
    assert set(sampled) == {gen.config.dit.window} and decoded[1] == min(gen.config.dit.window, 22 + context)
    assert song.audio.shape == (2, 44100)


def test_same_seed_same_audio(gen):
    a = gen.generate("energetic breakbeat", 1.0, seed=42, steps=3)
    b = gen.generate("energetic breakbeat", 1.0, seed=42, steps=3)
    c = gen.generate("energetic breakbeat", 1.0, seed=43, steps=3)
    assert np.array_equal(a.audio, b.audio) and a.request.seed == 42
    assert not np.array_equal(a.audio, c.audio)
    for sampler in ["euler", "dpmpp-2m-sde"]:
        x = gen.generate("energetic breakbeat", 1.0, seed=42, steps=3, sampler=sampler)
        y = gen.generate("energetic breakbeat", 1.0, seed=42, steps=3, sampler=sampler)
        assert np.array_equal(x.audio, y.audio)


def test_random_seed_is_reported_and_reproduces(gen):
    a = gen.generate("calm piano", 0.5, steps=2)
    b = gen.generate("calm piano", 0.5, steps=2, seed=a.request.seed)
    assert np.array_equal(a.audio, b.audio)


def test_prompt_guidance_and_negative_prompt_change_the_song(gen):
    base = gen.generate("calm piano", 1.0, seed=5, steps=3)
    assert not np.array_equal(base.audio, gen.generate("happy brass", 1.0, seed=5, steps=3).audio)
    assert not np.array_equal(base.audio, gen.generate("calm piano", 1.0, seed=5, steps=3, cfg_scale=1.0).audio)
    assert not np.array_equal(base.audio,
                              gen.generate("calm piano", 1.0, seed=5, steps=3, negative_prompt="drums").audio)


def test_unconditional_half_drops_text_but_keeps_timing(gen):
    cond, uncond = gen._conditioning("calm piano", None, 2.0)
    assert not cond["cond_drop_mask"].any() and uncond["cond_drop_mask"].all()
    assert float(uncond["seconds_total"]) == 2.0 and float(uncond["seconds_start"]) == 0.0
    cond, uncond = gen._conditioning("calm piano", "noisy drums", 2.0)
    assert not uncond["cond_drop_mask"].any() and not torch.equal(cond["cond_tokens"], uncond["cond_tokens"])


def test_checkpoint_round_trip_gives_the_same_song(gen, tmp_path):
    again = Generator.load(gen.save(tmp_path / "again.safetensors"))
    a = gen.generate("calm piano", 0.5, seed=9, steps=2)
    b = again.generate("calm piano", 0.5, seed=9, steps=2)
    assert np.array_equal(a.audio, b.audio)


def test_generator_files_hold_clap_text_tower_only(gen, tmp_path):
    """A generator stores CLAP's text tower alone (its audio tower is dead weight there); a
    file from before, holding the whole CLAP, still loads and gives the same song."""
    from safetensors import safe_open
    from salong.checkpoint import save_checkpoint
    from salong.clap import tokenizer_metadata
    from salong.errors import SalongError
    from salong.pipeline import KIND

    path = gen.save(tmp_path / "text.safetensors")
    with safe_open(str(path), "pt") as f:
        clap_keys = [k for k in f.keys() if k.startswith("clap.")]
    assert clap_keys and all(k.startswith(("clap.model.text_model.", "clap.model.text_projection.")) for k in clap_keys)
    loaded = Generator.load(path)
    assert loaded.text_encoder.clap.text_only
    with pytest.raises(SalongError, match="holds the text tower only"):
        loaded.text_encoder.clap.embed_audio(torch.zeros(1, 1, 8, 8))

    from salong.clap import Clap

    clap = Clap(gen.config.clap)  # both towers, the text one as the generator's
    missing, _ = clap.load_state_dict(loaded.text_encoder.clap.state_dict(), strict=False)
    assert missing and all(k.startswith("model.audio_") or k.startswith("model.logit_scale") for k in missing)
    whole = {f"{name}.{k}": v for name, module in (("dit", gen.dit), ("autoencoder", gen.autoencoder), ("clap", clap))
             for k, v in module.state_dict().items()}
    assert any(k.startswith("clap.model.audio_model.") for k in whole)
    old = save_checkpoint(tmp_path / "whole.safetensors", whole, KIND, gen.config,
                          extra=tokenizer_metadata(gen.text_encoder.tokenizer))
    older = Generator.load(old)
    assert not older.text_encoder.clap.text_only
    a = loaded.generate("calm piano", 0.5, seed=4, steps=2)
    b = older.generate("calm piano", 0.5, seed=4, steps=2)
    assert np.array_equal(a.audio, b.audio)


def test_end_is_faded_not_cut():
    audio = np.ones((2, 1000), np.float32)
    out = finish(audio, 800, 44100)
    fade = round(FADE_SECONDS * 44100)
    assert out.shape == (2, 800) and out[0, -1] == 0.0
    assert np.all(out[:, : 800 - fade] == 1.0) and np.all(np.diff(out[0, 800 - fade:]) <= 0)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(seconds=0), "seconds must be a number above 0"),
        (dict(seconds=-1.5), "seconds must be a number above 0"),
        (dict(seconds=float("nan")), "seconds must be a number above 0"),
        (dict(seconds=10.0), r"longer than this model's window; the maximum is 2\.97"),
        (dict(seconds=1.0, steps=0), "steps must be a whole number >= 1"),
        (dict(seconds=1.0, cfg_scale=-1.0), "cfg scale must be a number from 0 to 100"),
        (dict(seconds=1.0, cfg_scale=1e38), "cfg scale must be a number from 0 to 100"),
        (dict(seconds=1.0, sampler="heun"), "dpmpp-2m"),
    ],
)
def test_bad_settings(gen, kwargs, message):
    with pytest.raises(SalongError, match=message):
        gen.generate("calm piano", **kwargs)


def test_wrong_kind_of_model(tmp_path):
    from salong.autoencoder import PRESETS, Autoencoder, save_autoencoder

    path = save_autoencoder(tmp_path / "ae.safetensors", Autoencoder(PRESETS["tiny"]))
    with pytest.raises(SalongError, match="is a autoencoder checkpoint, but this needs a model of kind generator"):
        Generator.load(path)


@pytest.mark.parametrize("depth,pattern", [
    (10**9, r"\(dit\) does not fit its config: depth=1000000000 is more than the \d+ tensors the file holds"),
    (20, r"does not fit the model: tensors \d+ missing"),  # plausible alone: caught on the meta device
])
def test_a_crafted_config_is_refused_before_memory_is_spent(tmp_path, generator_path, depth, pattern):
    import json
    import resource
    import time

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(generator_path), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    config["dit"]["depth"] = depth
    meta["config"] = json.dumps(config)
    save_file(tensors, str(tmp_path / "crafted.safetensors"), metadata=meta)
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(SalongError, match=pattern):
        Generator.load(tmp_path / "crafted.safetensors")
    assert time.perf_counter() - start < 20
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: under 200 MB more
