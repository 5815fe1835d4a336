"""An edit of a song salong made keeps the tempo, key and meter its recipe records: an
extension asked for in none continues at them (its exact grid, no estimate) and plays its
chords, and an inpainted region asked for in none says how to keep them."""

import dataclasses
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf
from conftest import run_cli

from salong.errors import Note
from salong.request import InitAudio, SongRequest

RATE = 44100


@pytest.fixture(scope="module")
def made(tmp_path_factory, generator_path):
    """A 2 s song the tiny generator made at 100 BPM in E minor, 3/4, with its recipe (the
    chords too, which this model without a chords conditioner records but does not hear)."""
    from salong.cli import main

    path = tmp_path_factory.mktemp("made") / "take.wav"
    with warnings.catch_warnings(), pytest.raises(SystemExit) as done:
        warnings.simplefilter("ignore")  # the tiny model has no controls: they go into its prompt
        main(["generate", "calm piano", "--bpm", "100", "--key", "E minor", "--meter", "3/4", "--chords", "i VI / iv v",
              "-s", "2", "--seed", "1",
              "--steps", "2", "--model", str(generator_path), "-o", str(path), "--no-progress"])
    assert done.value.code == 0
    return path


@pytest.fixture(scope="module")
def beat_config():
    """The tiny generator's config with a beat conditioner (its grid runs from 0 s of the song)."""
    from conftest import tiny_generator

    config = tiny_generator().config
    return dataclasses.replace(config, dit=dataclasses.replace(config.dit, controls=("beat",)))


def test_an_extension_continues_at_the_tempo_key_and_meter_its_source_records(made, beat_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "librosa", None)  # nothing is estimated: the recipe says it all
    with pytest.warns(UserWarning, match=r"no key or tempo given: the extension is asked for in E minor at 100 BPM, "
                                         r"as its source's recipe records$"):
        request = SongRequest("calm piano", 2.6, extend=InitAudio(str(made))).resolve(beat_config)
    assert (request.key, request.bpm, request.meter) == ("E minor", 100.0, 3)
    assert (str(request.controls.key), request.controls.bpm, request.controls.beats_per_bar) == ("E minor", 100.0, 3)
    given = SongRequest("calm piano at 90 BPM", 2.6, extend=InitAudio(str(made))).resolve(beat_config)
    assert given.controls.bpm == 90 and given.key == "E minor"  # the prompt's tempo wins; the key is the source's


@pytest.mark.parametrize("seconds,keeps_tempo", [(2.0 + 1.8, True), (2.0 + 1.5, False), (2.0 + 0.6, False)])
def test_an_extension_before_its_source_keeps_the_tempo_only_on_the_sources_bars(made, beat_config, monkeypatch,
                                                                                   seconds, keeps_tempo):
    """3/4 at 100 BPM: a bar is 1.8 s, so the source's bars stay on the song's grid from 0 s
    only when whole bars come before it."""
    monkeypatch.setitem(sys.modules, "librosa", None)
    with pytest.warns(UserWarning, match="as its source's recipe records"):
        request = SongRequest("calm piano", seconds, extend=InitAudio(str(made)), extend_before=True,
                              keep_silence=True).resolve(beat_config)
    assert request.key == "E minor"
    assert request.bpm == (100.0 if keeps_tempo else None)
    plain = dataclasses.replace(beat_config, dit=dataclasses.replace(beat_config.dit, controls=()))
    with pytest.warns(UserWarning, match="at 100 BPM"):  # without a beat conditioner there is no grid to keep
        assert SongRequest("calm piano", seconds, extend=InitAudio(str(made)), extend_before=True,
                           keep_silence=True).resolve(plain).bpm == 100.0


def test_a_source_without_a_recipe_is_heard(tmp_path, beat_config):
    path = tmp_path / "plain.wav"
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal((2 * RATE, 2))).astype(np.float32), RATE)
    with pytest.warns(UserWarning, match="as estimated from its source"):
        request = SongRequest("calm piano", 2.6, extend=InitAudio(str(path))).resolve(beat_config)
    assert request.key is not None


def test_an_inpainted_region_says_how_to_keep_its_sources_tempo_and_key(made, beat_config, tmp_path, capsys,
                                                                        generator_path):
    with pytest.warns(Note, match=r"^the source was made in E minor at 100 BPM; the region follows its prompt "
                                  r"alone: give --key 'E minor' --bpm 100 to keep them \(--like .*take\.wav: its "
                                  r"chords and other settings too\)$"):
        request = SongRequest("calm piano", 2.0, inpaint=InitAudio(str(made)), start=0.5, end=1.0).resolve(beat_config)
    assert request.bpm is None and request.key is None  # as asked: the recipe remakes it as it was
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a tempo asked for: no note
        SongRequest("calm piano", 2.0, inpaint=InitAudio(str(made)), start=0.5, end=1.0, bpm=100).resolve(beat_config)
    code, out, err = run_cli(capsys, "generate", "calm piano", "--inpaint", made, "--from", "0.5", "--to", "1",
                             "--steps", "2", "--model", generator_path, "-o", tmp_path / "x.wav", "--no-progress")
    assert code == 0 and "note: the source was made in E minor at 100 BPM" in err


def test_the_extension_records_what_it_took_and_remakes_bit_for_bit(made, tmp_path, capsys, generator_path):
    from salong.recipe import read_recipe

    take = tmp_path / "longer.wav"
    code, out, err = run_cli(capsys, "generate", "calm piano", "--extend", made, "-s", "2.6", "--seed", "2",
                             "--steps", "2", "--model", generator_path, "-o", take, "--no-progress")
    assert code == 0 and "as its source's recipe records" in err, err
    request = read_recipe(take).request
    assert (request.key, request.bpm, request.meter) == ("E minor", 100.0, 3)
    assert "--bpm 100.0 --key 'E minor'" in read_recipe(take).command(take)
    again = tmp_path / "again.wav"
    assert run_cli(capsys, "generate", "--like", take, "-o", again, "--no-progress")[0] == 0
    assert np.array_equal(sf.read(again)[0], sf.read(take)[0])


def test_an_extension_past_the_end_plays_its_sources_chords(made, beat_config, monkeypatch):
    from salong.recipe import read_recipe

    recorded = read_recipe(made).request.chords
    assert recorded == "Em C / Am Bm"  # by name: the model had no chords conditioner to lay them by degree
    config = dataclasses.replace(beat_config, dit=dataclasses.replace(beat_config.dit, controls=("beat", "chords")))
    with pytest.warns(Note, match=r"^the extension plays its source's chords \(Em C / Am Bm\), as its recipe "
                                  r"records; give --chords auto for new ones$"):
        request = SongRequest("calm piano", 2.6, extend=InitAudio(str(made))).resolve(config)
    assert request.chords == recorded and [span[0] for span in request.controls.chords[:2]] == ["Em", "C"]
    drawn = SongRequest("calm piano", 2.6, extend=InitAudio(str(made)), chords="auto", seed=1).resolve(config)
    assert drawn.chords != recorded  # asked for new ones: drawn for the key with the seed
    before = SongRequest("calm piano", 3.8, extend=InitAudio(str(made)), extend_before=True,
                         keep_silence=True, seed=1).resolve(config)
    assert before.chords != recorded  # before its start the cycle would not meet the source's bars
