"""--cfg-interval: guidance at some noise levels only, a model's stored default, the recipe."""

import json
import shutil

import numpy as np
import pytest

from salong.audio import probe, read_audio
from salong.checkpoint import rewrite_checkpoint
from salong.errors import SalongError
from salong.pipeline import Generator
from salong.request import SongRequest
from conftest import run_cli


@pytest.fixture(scope="module")
def interval_path(generator_path, tmp_path_factory):
    """The tiny generator with guidance stored for noise levels 0.7-1 (the bundled model's default)."""
    path = tmp_path_factory.mktemp("interval") / "interval.safetensors"
    shutil.copy(generator_path, path)
    return rewrite_checkpoint(path, config_changes={"sampling": {"cfg_interval": [0.7, 1.0]}})


def recipe(path):
    return json.loads(probe(path).tags["comment"])


def test_a_model_without_the_setting_guides_every_step_bit_for_bit(generator_path):
    gen = Generator.load(generator_path)
    assert gen.config.sampling.cfg_interval == (0.0, 1.0)
    plain = gen.generate("calm piano", 0.5, seed=3, steps=3)
    assert plain.request.cfg_interval == "0.0,1.0"
    assert np.array_equal(plain.audio, gen.generate("calm piano", 0.5, seed=3, steps=3, cfg_interval="0,1").audio)
    late = gen.generate("calm piano", 0.5, seed=3, steps=3, cfg_interval=(0.7, 1.0))
    assert late.request.cfg_interval == "0.7,1.0" and not np.array_equal(plain.audio, late.audio)


def test_a_stored_default_is_used_recorded_and_made_again(interval_path, generator_path, tmp_path, capsys):
    gen = Generator.load(interval_path)
    assert gen.config.sampling.cfg_interval == (0.7, 1.0)
    out = tmp_path / "a.wav"
    code, _, err = run_cli(capsys, "generate", "calm piano", "-s", 0.5, "--steps", 3, "--seed", 2, "-o", out,
                           "--model", interval_path)
    assert code == 0, err
    assert recipe(out)["cfg_interval"] == "0.7,1.0"
    # the same song from the model without the default, given the interval: the weights are equal
    again = Generator.load(generator_path).generate("calm piano", 0.5, seed=2, steps=3, cfg_interval="0.7,1")
    assert np.abs(read_audio(out)[0] - again.audio).max() <= 2 ** -23  # the file is 24-bit
    code, info, err = run_cli(capsys, "info", out)
    assert code == 0, err
    assert "cfg interval: 0.7-1" in info and "--cfg-interval 0.7,1.0" in info
    code, _, err = run_cli(capsys, "generate", "--like", out, "-o", tmp_path / "b.wav")
    assert code == 0, err
    assert np.array_equal(read_audio(out)[0], read_audio(tmp_path / "b.wav")[0])
    # given on the command line, over the model's default
    code, _, err = run_cli(capsys, "generate", "calm piano", "-s", 0.5, "--steps", 3, "--seed", 2, "-o",
                           tmp_path / "c.wav", "--model", interval_path, "--cfg-interval", "0,1")
    assert code == 0, err
    assert not np.array_equal(read_audio(out)[0], read_audio(tmp_path / "c.wav")[0])
    # every step is what a recipe without the key reads as, so it is left out, and files stay as they were
    assert "cfg_interval" not in recipe(tmp_path / "c.wav")
    code, info, _ = run_cli(capsys, "info", tmp_path / "c.wav")
    assert "cfg interval: 0-1 (every step)" in info and "--cfg-interval 0.0,1.0" in info
    code, _, err = run_cli(capsys, "generate", "--like", tmp_path / "c.wav", "-o", tmp_path / "d.wav")
    assert code == 0, err  # on the model whose default is 0.7-1, --like still guides every step
    assert np.array_equal(read_audio(tmp_path / "c.wav")[0], read_audio(tmp_path / "d.wav")[0])
    code, info, _ = run_cli(capsys, "info", interval_path)
    assert "at noise levels 0.7-1" in info


def test_a_recipe_from_before_the_setting_reads_as_every_step(generator_path, tmp_path, capsys):
    from salong.recipe import Recipe

    out = tmp_path / "old.wav"
    code, _, err = run_cli(capsys, "generate", "calm piano", "-s", 0.5, "--steps", 2, "--seed", 1, "-o", out,
                           "--model", generator_path)
    assert code == 0, err
    record = recipe(out)
    assert "cfg_interval" not in record  # as salong wrote every recipe before the setting
    old = Recipe.from_json(json.dumps(record), "old.wav")
    assert old.request.cfg_interval is None and old.to_json() == probe(out).tags["comment"]
    assert old.options()["cfg_interval"] == "0.0,1.0"  # what --like and `salong info`'s command give


@pytest.mark.parametrize("value", ["0.8,0.2", "1.5,2", "-0.1,1", "abc", "0.5", "0.1,0.2,0.3", "nan,1"])
def test_bad_intervals_are_one_line_errors_before_the_model_loads(value, tmp_path, capsys):
    code, out, err = run_cli(capsys, "generate", "calm", "-s", 1, "--cfg-interval", value, "-o", tmp_path / "x.wav",
                             "--model", tmp_path / "missing.safetensors")
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: cfg interval must be two noise levels LO,HI with 0 <= LO <= HI <= 1")
    assert "Traceback" not in err and not (tmp_path / "x.wav").exists()
    with pytest.raises(SalongError, match="cfg interval must be"):
        SongRequest("calm", 1.0, cfg_interval=value)
