"""SongRequest: one song's settings, checked once (model-free when made, against the model
when resolved), and the shape the recipe in files and `--json` records are derived from."""

import json

import numpy as np
import pytest

from conftest import run_cli, tiny_generator
from salong import request as request_module
from salong.checks import MAX_SEED
from salong.controls import Controls, Key
from salong.errors import SalongError
from salong.recipe import Recipe, read_recipe
from salong.request import InitAudio, SongRequest


@pytest.fixture(scope="module")
def gen():
    return tiny_generator()


@pytest.mark.parametrize("kwargs,message", [
    (dict(seconds=0), r"^seconds must be a number above 0, got 0$"),
    (dict(seconds=float("nan")), r"^seconds must be a number above 0, got nan$"),
    (dict(seconds=True), r"^seconds must be a number above 0, got True$"),
    (dict(seed=-1), rf"^seed must be a whole number from 0 to {MAX_SEED}, got -1$"),
    (dict(seed=MAX_SEED + 1), r"^seed must be a whole number from 0 to"),
    (dict(steps=0), r"^steps must be a whole number >= 1 and at most 10000, got 0$"),
    (dict(cfg=1e38), r"^cfg scale must be a number from 0 to 100 \(1 = no guidance, 7 = the paper's\), got 1e\+38$"),
    (dict(sampler="ddim"), r"^unknown sampler 'ddim'.*dpmpp-2m"),
    (dict(frames="all"), r"^frames must be one of needed, window, got 'all'$"),
    (dict(negative=3), r"^negative must be a string$"),
    (dict(init_audio="in.wav"), r"^audio-to-audio needs both --init-audio FILE and --init-noise-level LEVEL$"),
    (dict(init_audio="in.wav", init_noise_level=-1.0), r"^--init-noise-level must be a number above 0, got -1.0$"),
    (dict(bpm="fast"), r"^--bpm must be a tempo from 40 to 300"),
    (dict(bpm=[120]), r"^bpm must be a string or number, got \[120\]$"),
])
def test_a_bad_value_fails_when_the_request_is_made(kwargs, message):
    settings = {"seconds": 1.0, **kwargs}
    with pytest.raises(SalongError, match=message):
        SongRequest("calm piano", **settings)


def test_controls_are_resolved_when_made_flags_over_the_prompt():
    request = SongRequest("calm piano at 90 BPM in A minor", 1.0, bpm="120", meter="3/4")
    assert request.controls == Controls(bpm=120.0, key=Key(9, "minor"), beats_per_bar=3)
    assert (request.bpm, request.key, request.meter) == ("120", None, "3/4")  # kept as given, for the recipe
    with pytest.raises(SalongError, match="states two tempos"):
        SongRequest("calm piano at 90 BPM, tempo 120", 1.0)


def test_each_setting_is_checked_once_on_the_way_to_the_sampler(tmp_path, capsys, generator_path, monkeypatch):
    calls = {"seconds": 0, "cfg": 0, "controls": 0}

    def counted(name, check):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return check(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(request_module, "check_seconds", counted("seconds", request_module.check_seconds))
    monkeypatch.setattr(request_module, "check_cfg", counted("cfg", request_module.check_cfg))
    monkeypatch.setattr(request_module, "resolve_controls", counted("controls", request_module.resolve_controls))
    code, out, err = run_cli(capsys, "generate", "calm piano at 90 BPM", "-s", 0.5, "--cfg-scale", 2, "--steps", 1,
                             "--seed", 4, "-o", tmp_path / "a.wav", "--model", generator_path)
    assert code == 0, err
    assert calls == {"seconds": 1, "cfg": 1, "controls": 1}  # from the CLI to the sampler: made once, resolved once


def test_resolve_fills_the_model_defaults_and_checks_against_the_model(gen):
    request = SongRequest("calm piano", 1.0).resolve(gen.config)
    assert request.resolved and (request.steps, request.cfg, request.sampler, request.frames) == (4, 3.0, "dpmpp-2m",
                                                                                                   "needed")
    assert request.cfg_interval == "0.0,1.0"  # a model that stores none guides every step
    assert 0 <= request.seed < 2**31  # drawn when none was given
    given = SongRequest("calm piano", 1.0, seed=5, steps=2, cfg=1.5, cfg_interval="0.5, 1", sampler="euler",
                        frames="window")
    assert given.cfg_interval == "0.5,1.0"
    assert given.resolve(gen.config) == given
    for kwargs, message in [(dict(seconds=10.0), r"longer than this model's window; the maximum is 2\.97"),
                            (dict(seconds=1e-6), "shorter than one sample"),
                            (dict(sampler="pingpong"), "unknown sampler 'pingpong' for a v-objective model"),
                            (dict(init_audio="x.wav", init_noise_level=0.1), r"above this model's sigma_min 0\.3")]:
        with pytest.raises(SalongError, match=message):
            SongRequest("calm piano", **{"seconds": 1.0, **kwargs}).resolve(gen.config)


def test_generate_takes_a_request_or_its_keyword_form(gen):
    audio = np.random.default_rng(0).normal(0, 0.1, (2, 30000)).astype(np.float32)
    request = SongRequest("calm piano", 0.5, seed=3, steps=2, cfg=2.0, negative="drums", bpm=100,
                          init_audio=(audio, 44100), init_noise_level=5.0)
    with pytest.warns(UserWarning, match="no tempo conditioner"):  # the tiny model reads 100 BPM as words
        song = gen.generate(request)
        short = gen.generate("calm piano", 0.5, steps=2, cfg_scale=2.0, seed=3, negative_prompt="drums", bpm=100,
                             init_audio=(audio, 44100), init_noise_level=5.0)
    assert np.array_equal(song.audio, short.audio) and song.request == short.request == request.resolve(gen.config)
    with pytest.raises(TypeError):
        gen.generate(request, 0.5)


def test_old_recipes_read_and_new_ones_are_written_byte_for_byte():
    """Recipes as salong wrote them before SongRequest: the same keys, in the same order."""
    texts = [
        '{"salong":"0.1.0","recipe":1,"prompt":"calm piano","seconds":30.0,"seed":7,"steps":100,"cfg":7.0,'
        '"sampler":"dpmpp-2m","frames":"needed","model":"/models/gen.safetensors","model_sha256":"3f0c9a51d2e87b64"}',
        '{"salong":"0.1.0","recipe":1,"prompt":"Brass","seconds":1.0,"seed":1,"steps":3,"cfg":3.0,"sampler":"euler",'
        '"frames":"window","negative":"drums","init_audio":"/takes/a.wav","init_noise_level":2.0,'
        '"model":"/m/sao","model_sha256":"0123456789abcdef","text_encoder":"/m/t5-base","bpm":"120","key":"D minor",'
        '"meter":"3/4"}',
    ]
    for text in texts:
        recipe = Recipe.from_json(text, "'t.wav'")
        assert recipe.to_json() == text
    request = Recipe.from_json(texts[1], "'t.wav'").request
    assert (request.cfg, request.negative, request.init_audio, request.init_noise_level) == (3.0, "drums",
                                                                                             InitAudio("/takes/a.wav"),
                                                                                             2.0)
    assert request.controls == Controls(bpm=120.0, key=Key(2, "minor"), beats_per_bar=3)
    # before frames were recorded, songs were sampled with the frames they needed
    old = json.loads(texts[0])
    del old["frames"]
    assert Recipe.from_json(json.dumps(old), "'t.wav'").request.frames == "needed"
    # a value no salong writes is damage, named with its key
    damaged = texts[0].replace('"seconds":30.0', '"seconds":-1')
    with pytest.raises(SalongError, match=r"damaged salong settings \(seconds must be a number above 0, got -1\)"):
        Recipe.from_json(damaged, "'t.wav'")


def test_the_recipe_and_the_json_record_are_the_requests_fields(tmp_path, capsys, generator_path):
    code, out, err = run_cli(capsys, "generate", "calm piano", "-s", 0.5, "--seed", 2, "--steps", 1, "--bpm", 90,
                             "--negative", "drums", "-o", tmp_path / "take.wav", "--json", "--model", generator_path)
    assert code == 0, err
    record = json.loads(out)
    request = read_recipe(tmp_path / "take.wav").request
    assert {k: record[k] for k in ("prompt", "seconds", "seed", "steps", "cfg", "sampler", "negative")} == {
        k: getattr(request, k) for k in ("prompt", "seconds", "seed", "steps", "cfg", "sampler", "negative")}
    assert (record["bpm"], request.bpm) == (90.0, "90")  # --json: what the song asks for; the recipe: the option
    # --like maps the recipe 1:1 onto generate's parameters, and makes the same song
    code, out, err = run_cli(capsys, "generate", "--like", tmp_path / "take.wav", "-o", tmp_path / "again.wav")
    assert code == 0, err
    assert read_recipe(tmp_path / "again.wav") == read_recipe(tmp_path / "take.wav")


def test_one_seed_rule_for_songs_batches_and_training(tmp_path, capsys, generator_path):
    from salong.train import TrainConfig

    with pytest.raises(SalongError, match=rf"^--seed must be a whole number from 0 to {MAX_SEED}, got -1$"):
        TrainConfig(steps=1, batch_size=1, lr=1e-4, seed=-1)
    assert TrainConfig(steps=1, batch_size=1, lr=1e-4, seed=MAX_SEED).seed == MAX_SEED
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "a", "seed": MAX_SEED + 1}) + "\n" + json.dumps({"prompt": "b"}) + "\n")
    code, out, err = run_cli(capsys, "generate", "--prompts", prompts, "-s", 0.3, "--steps", 1, "-o", tmp_path / "o",
                             "--model", generator_path)
    assert code == 1 and f"p.jsonl line 1: seed must be a whole number from 0 to {MAX_SEED}" in err
    assert len(out.splitlines()) == 1
