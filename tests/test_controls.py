"""Tempo, key and meter controls: the parser, the features, the DiT's control conditioners,
training data and dropout, generation with and without conditioners, and the recipe."""

import dataclasses
import json
import math
import re
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import dit_task_inputs, perturbed_dit, run_cli, tiny_generator
from salong.controls import (BEAT_FEATURES, KEY_FEATURES, Controls, Key, beat_features, key_features, parse_bpm,
                             parse_key, parse_meter, prompt_with_controls, read_prompt, resolve)
from salong.errors import SalongError


# --- the parser ---------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt,bpm,key,meter", [
    ("Energetic breakbeat at 132 BPM in D minor", 132, "D minor", None),
    ("calm piano in A minor at 80 bpm", 80, "A minor", None),
    ("in F# minor, 120bpm", 120, "F# minor", None),
    ("Bb major ballad, tempo 96", 96, "Bb major", None),
    ("E flat major hymn at 70 beats per minute", 70, "Eb major", None),
    ("a waltz in 3/4 time in C#m", None, "C# minor", 3),
    ("key of C, 100 BPM, common time", 100, "C major", 4),
    ("dark track in a minor key", None, "A minor", None),
    ("F sharp minor groove at 92.5 BPM", 92.5, "F# minor", None),
    ("Gb major pad, ♩=88", 88, "F# major", None),
    ("B♭ minor dirge", None, "Bb minor", None),
    ("with a minor feel and no drums", None, None, None),  # the article "a" is no key
    ("I am a song", None, None, None),
    ("Track at 60 BPM in C major with a piano melody.", 60, "C major", None),
])
def test_prompt_spellings(prompt, bpm, key, meter):
    controls = read_prompt(prompt).controls
    assert controls.bpm == bpm
    assert (str(controls.key) if controls.key else None) == key
    assert controls.beats_per_bar == meter


@pytest.mark.parametrize("value,tonic,mode", [
    ("A minor", 9, "minor"), ("a-minor", 9, "minor"), ("Am", 9, "minor"), ("F#", 6, "major"), ("Gb major", 6, "major"),
    ("F♯ min", 6, "minor"), ("Bb", 10, "major"), ("A#m", 10, "minor"), ("E flat major", 3, "major"),
    ("Cb major", 11, "major"), ("B# minor", 0, "minor"), ("d MAJOR", 2, "major"), ("Ebmaj", 3, "major"),
])
def test_key_values_sharps_and_flats(value, tonic, mode):
    assert parse_key(value) == Key(tonic, mode)


@pytest.mark.parametrize("value", ["H major", "A minr", "AM", "", "minor", "C## major", "X"])
def test_bad_keys_are_one_line_errors(value):
    with pytest.raises(SalongError, match=r"--key .* is not a key; give a tonic A-G"):
        parse_key(value)


@pytest.mark.parametrize("value,expected", [(120, 120.0), ("96.5", 96.5), ("128 BPM", 128.0), ("40", 40.0)])
def test_bpm_values(value, expected):
    assert parse_bpm(value) == expected


@pytest.mark.parametrize("value", ["fast", "0", "-120", "301", "nan", "1e308", True, "120 bpm bpm"])
def test_bad_bpm_is_one_line_error(value):
    with pytest.raises(SalongError, match=r"--bpm must be a tempo from 40 to 300"):
        parse_bpm(value)


def test_meters():
    assert parse_meter("3/4") == 3 and parse_meter("4") == 4
    with pytest.raises(SalongError, match="--meter must be beats per bar"):
        parse_meter("1/4")


def test_conflicts_need_a_flag_and_flags_win():
    with pytest.raises(SalongError, match=r"states two tempos \(90 BPM and 100 BPM\).*--bpm"):
        resolve("groove at 90 BPM, or 100 BPM")
    with pytest.raises(SalongError, match=r"states two keys \(A minor and C major\).*--key"):
        resolve("A minor or C major ballad")
    with pytest.raises(SalongError, match=r"tempo range"):
        resolve("house at 120-128 BPM")
    assert resolve("groove at 90 BPM, or 100 BPM", bpm=95).bpm == 95
    assert resolve("house at 120-128 BPM", bpm="124").bpm == 124
    assert resolve("A minor or C major ballad at 90 BPM", key="E minor") == Controls(90.0, Key(4, "minor"))
    # a flag wins over a single stated value too
    assert resolve("calm piano at 80 BPM in A minor", bpm=100, key="C major") == Controls(100.0, Key(0, "major"))
    # a conflict about one control is not settled by a flag for another
    with pytest.raises(SalongError, match="two tempos"):
        resolve("groove at 90 BPM, or 100 BPM", key="A minor")


def test_controls_written_into_the_prompt_for_models_without_them():
    c = Controls(bpm=90.0, key=Key(0, "major"))
    assert prompt_with_controls("Calm piano", c) == "Calm piano at 90 BPM in C major"
    assert prompt_with_controls("Calm piano.", c, "sao") == "Calm piano, 90 BPM, C major"
    # a stated value the flag changes is replaced where it stands; an agreeing one stays
    assert prompt_with_controls("Piano in A minor at 120 BPM, slow", c) == "Piano in C major at 90 BPM, slow"
    assert prompt_with_controls("Piano at 90 BPM in C major", c) == "Piano at 90 BPM in C major"
    assert prompt_with_controls("Piano", Controls()) == "Piano"


# --- features -----------------------------------------------------------------------------------

def test_beat_features_keep_the_phase_of_a_crop_offset():
    rate, bpm = 44100 / 2048, 123.0
    whole = beat_features(400, rate, bpm, 3)  # (400, F)
    assert whole.shape == (400, BEAT_FEATURES)
    for offset in (0, 37, 201):
        crop = beat_features(100, rate, bpm, 3, start_seconds=offset / rate)
        torch.testing.assert_close(crop, whole[offset: offset + 100], atol=2e-5, rtol=0)
    # the frame closest to each beat has the beat phase near 0 (cos near 1); bar lines every 3 beats
    centres = (np.arange(400) + 0.5) / rate
    for beat in np.arange(0, 399 / rate, 60 / bpm):
        i = int(np.argmin(abs(centres - beat)))
        assert whole[i, 3] > math.cos(2 * math.pi * 0.5 / rate * bpm / 60) - 1e-4  # within half a frame of the beat
    bars = np.arange(0, 399 / rate, 3 * 60 / bpm)
    i = int(np.argmin(abs(centres - bars[2])))
    assert whole[i, 7] > 0.99 and abs(float(whole[i + 3, 2])) > 0.1
    assert torch.equal(beat_features(7, rate, None), torch.zeros(7, BEAT_FEATURES))


def test_key_features():
    f = key_features(Key(9, "minor"))
    assert f.shape == (KEY_FEATURES,) and f[9] == 1 and f[13] == 1 and f[14:].sum() == 7
    assert f[14 + 0] == 1 and f[14 + 1] == 0  # A minor holds C, not C#
    assert torch.equal(key_features(None), torch.zeros(KEY_FEATURES))


# --- the DiT ------------------------------------------------------------------------------------

def _perturbed(config, seed=0):
    return perturbed_dit(config, seed)


def _inputs(b=2, frames=16):
    torch.manual_seed(1)
    return dict(x=torch.randn(b, 64, frames), t=torch.rand(b), cond_tokens=torch.randn(b, 77, 128),
                seconds_start=torch.tensor([0.0, 3.0][:b]), seconds_total=torch.tensor([30.0, 60.0][:b]))


def test_a_model_without_controls_is_the_reference_network():
    from salong.dit import PRESETS

    dit = _perturbed(PRESETS["tiny"])
    assert not any(k.startswith(("beat_embed", "key_embed")) for k in dit.state_dict())
    args = _inputs()
    plain = dit(**args)
    with_controls = dit(**args, beat=torch.randn(2, 16, BEAT_FEATURES), key=torch.randn(2, KEY_FEATURES))
    assert torch.equal(plain, with_controls)  # bit for bit: the controls are ignored


def test_controls_added_to_a_trained_model_start_at_its_predictions_then_matter():
    from salong.dit import PRESETS
    from salong.train.dit import init_state

    base = _perturbed(PRESETS["tiny"])
    config = dataclasses.replace(PRESETS["tiny"], controls=("beat", "key"))
    from salong.dit import DiT

    dit = DiT(config).eval()
    dit.load_state_dict(init_state(dit, base))
    args = _inputs()
    beat = torch.stack([beat_features(16, 21.5, 120.0), beat_features(16, 21.5, 90.0, 3)])
    key = torch.stack([key_features(Key(9, "minor")), key_features(None)])
    assert torch.equal(dit(**args, beat=beat, key=key), base(**args))
    with torch.no_grad():
        dit.beat_embed.weight.normal_(0, 0.1)
        dit.key_embed.weight.normal_(0, 0.1)
    out = dit(**args, beat=beat, key=key)
    assert not torch.allclose(out, base(**args))
    # absent controls (zeros) and dropped conditioning add nothing
    zeros = dict(beat=torch.zeros_like(beat), key=torch.zeros_like(key))
    assert torch.equal(dit(**args, **zeros), base(**args))
    drop = torch.tensor([True, False])
    dropped = dit(**args, beat=beat, key=key, cond_drop_mask=drop)
    torch.testing.assert_close(dropped[0], base(**args, cond_drop_mask=drop)[0])
    torch.testing.assert_close(dropped[1], out[1])


def test_unknown_controls_are_refused():
    from salong.dit import PRESETS

    with pytest.raises(SalongError, match="DiTConfig.controls must name distinct controls"):
        dataclasses.replace(PRESETS["tiny"], controls=("tempo",))


# --- training data and dropout ------------------------------------------------------------------

def _cache(tmp_path, frames=300):
    latents = torch.zeros(64, frames)
    latents[0] = torch.arange(frames, dtype=torch.float32)  # each frame knows its index: the crop's offset
    save_file({"latents": latents, "text": torch.randn(2, 77, 128)}, str(tmp_path / "000000.safetensors"))
    save_file({"latent": torch.zeros(64)}, str(tmp_path / "silence.safetensors"))
    return [{"file": "000000.safetensors", "path": "a.wav", "caption": "x", "captions": ["x", "y"],
             "duration": frames * 2048 / 44100, "bpm": 101.0, "key": "G minor", "meter": "3/4"}]


def test_crops_carry_the_beat_phase_of_their_offset_and_the_key(tmp_path):
    from salong.train.dit_data import CropLengths, LatentDataset

    rate = 44100 / 2048
    dataset = LatentDataset(tmp_path, _cache(tmp_path), CropLengths(64, 64, 2), rate)
    offsets = set()
    for seed in range(6):
        item = dataset[(0, seed, 0)]
        offset = int(item["latents"][0, 0])
        offsets.add(offset)
        torch.testing.assert_close(item["beat"], beat_features(64, rate, 101.0, 3, start_seconds=offset / rate))
        assert torch.equal(item["key"], key_features(Key(7, "minor")))
    assert len(offsets) > 1 and max(offsets) > 0


def test_files_without_controls_train_without_them(tmp_path):
    from salong.train.dit_data import CropLengths, LatentDataset

    items = _cache(tmp_path)
    for name in ("bpm", "key", "meter"):
        del items[0][name]
    item = LatentDataset(tmp_path, items, CropLengths(64, 64, 2), 21.5)[(0, 3, 0)]
    assert not item["beat"].any() and not item["key"].any()


@pytest.mark.parametrize("dropout", [0.0, 1.0])
def test_control_dropout(dropout, monkeypatch):
    from salong.autoencoder import PRESETS as AE, Autoencoder
    from salong.clap import PRESETS as CLAP, Clap
    from salong.dit import PRESETS as DIT
    from salong.train.dit import DiTTask, DiTTaskConfig

    config = DiTTaskConfig(model=dataclasses.replace(DIT["tiny"], controls=("beat", "key")), cond_dropout=0.0,
                           control_dropout=dropout)
    task = DiTTask(config, Autoencoder(AE["tiny"]), Clap(CLAP["tiny"]))
    seen = {}

    def spy(**kw):
        seen.update(kw)
        return torch.zeros(())

    monkeypatch.setattr("salong.train.dit.v_loss", lambda *a, **kw: spy(**kw))
    b = 64
    batch = {"latents": torch.randn(b, 64, 8), "mask": torch.ones(b, 8, dtype=torch.bool),
             "text": torch.randn(b, 77, 128), "seconds_start": torch.zeros(b), "seconds_total": torch.full((b,), 9.0),
             "beat": torch.rand(b, 8, BEAT_FEATURES) + 0.1, "key": torch.rand(b, KEY_FEATURES) + 0.1}
    torch.manual_seed(0)
    task.loss("dit", batch, {"dit": task.dit}, 0)
    kept_beat = seen["beat"].flatten(1).any(1)
    kept_key = seen["key"].any(1)
    if dropout == 1.0:
        assert not kept_beat.any() and not kept_key.any()
    else:
        assert torch.equal(seen["beat"], batch["beat"]) and torch.equal(seen["key"], batch["key"])
    # a dropped row is all zero, a kept row untouched
    for name in ("beat", "key"):
        for row in range(b):
            assert torch.equal(seen[name][row], batch[name][row]) or not seen[name][row].any()


def test_control_dropout_is_drawn_apart_per_control(monkeypatch):
    seen = dit_task_inputs(("beat", "key"), 0.5, monkeypatch, beat=(8, BEAT_FEATURES), key=(KEY_FEATURES,))
    kept_beat, kept_key = seen["beat"][:, 0, 0] > 0, seen["key"][:, 0] > 0
    assert 0.35 < kept_beat.float().mean() < 0.65 and 0.35 < kept_key.float().mean() < 0.65
    assert not torch.equal(kept_beat, kept_key)


def test_metadata_controls(tmp_path):
    import soundfile as sf

    from salong.data import index_audio

    for name in ("a", "b", "c"):
        sf.write(tmp_path / f"{name}.wav", np.zeros((441, 2), dtype=np.float32), 44100)
    lines = [{"path": "a.wav", "caption": "x", "bpm": 128, "key": "F# minor", "meter": "3/4"},
             {"path": "b.wav", "caption": "y",
              "attributes": {"bpm": 90, "tonic": "Eb", "mode": "major", "meter": "4/4"}},
             {"path": "c.wav", "caption": "z"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    files, _ = index_audio(tmp_path)
    assert [f.controls for f in files] == [Controls(128.0, Key(6, "minor"), 3), Controls(90.0, Key(3, "major"), 4),
                                           Controls()]
    lines[0]["key"] = "H minor"
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    with pytest.raises(SalongError, match=r"metadata.jsonl line 1: key 'H minor' is not a key"):
        index_audio(tmp_path)
    lines[0].update(key="F# minor", downbeat=0.25)
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    assert index_audio(tmp_path)[0][0].downbeat == 0.25
    lines[0]["downbeat"] = -1
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    with pytest.raises(SalongError, match=r"line 1: downbeat must be seconds >= 0"):
        index_audio(tmp_path)


# --- generation ---------------------------------------------------------------------------------

def controlled_generator(seed=0):
    """A tiny generator with beat and key conditioners (perturbed) and canonical text."""
    from salong.dit import DiT
    from salong.pipeline import Generator

    base = tiny_generator(seed)
    config = dataclasses.replace(base.config, dit=dataclasses.replace(base.config.dit, controls=("beat", "key")),
                                 canonical_text=True)
    dit = DiT(config.dit)
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return Generator(config, dit, base.autoencoder, base.text_encoder.clap)


@pytest.fixture(scope="module")
def controlled_path(tmp_path_factory):
    return controlled_generator().save(tmp_path_factory.mktemp("ctrl") / "controlled.safetensors")


def test_controls_change_the_song_and_the_prompt_states_them(controlled_path):
    from salong.pipeline import Generator

    g = Generator.load(controlled_path)
    assert g.controls == ("beat", "key") and g.config.canonical_text
    plain = g.generate("calm piano", 2.0, seed=3).audio
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model with conditioners writes nothing into the prompt
        fast = g.generate("calm piano", 2.0, seed=3, bpm=140)
    assert fast.request.controls == Controls(140.0)
    assert not np.array_equal(plain, fast.audio)
    keyed = g.generate("calm piano", 2.0, seed=3, key="D minor").audio
    assert not np.array_equal(plain, keyed) and not np.array_equal(fast.audio, keyed)
    # the prompt's words are read as the same controls a flag gives
    stated = g.generate("calm piano at 140 BPM", 2.0, seed=3)
    flagged = g.generate("calm piano at 140 BPM", 2.0, seed=3, bpm="140")
    assert np.array_equal(stated.audio, flagged.audio) and stated.request.controls.bpm == 140
    # a flag that changes a stated value changes the words too, so text and controls agree
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        changed = g.generate("calm piano at 120 BPM in A minor", 2.0, seed=3, bpm=140, key="D minor")
    assert np.array_equal(changed.audio, g.generate("calm piano at 140 BPM in D minor", 2.0, seed=3).audio)


def test_canonical_text_ignores_case_and_place(controlled_path):
    from salong.pipeline import Generator

    g = Generator.load(controlled_path)
    te = g.text_encoder
    a, _ = te.encode(["calm piano ballad"])
    b, _ = te.encode(["  Calm   PIANO Ballad"])
    assert torch.equal(a, b)
    ids, _ = te.tokenize(["piano ballad", "calm piano ballad"])
    piano = ids[0, 1: -1][ids[0, 1:-1] != te.tokenizer.pad_token_id][:-1].tolist()  # the tokens of "piano" first
    row = ids[1].tolist()
    assert any(row[i: i + len(piano)] == piano for i in range(2, len(row)))  # the same tokens later in a prompt
    # a model without canonical text reads the prompt as written
    plain = tiny_generator().text_encoder
    x, _ = plain.encode(["calm piano ballad"])
    y, _ = plain.encode(["Calm piano ballad"])
    assert not torch.equal(x, y)


def test_a_model_without_controls_reads_them_as_words(generator_path):
    from salong.pipeline import Generator

    g = Generator.load(generator_path)
    with pytest.warns(UserWarning, match=r"no tempo or key conditioner; the prompt it reads is "
                                         r"'calm piano at 90 BPM in A minor'"):
        flagged = g.generate("calm piano", 2.0, seed=5, bpm=90, key="A minor").audio
    written = g.generate("calm piano at 90 BPM in A minor", 2.0, seed=5).audio
    assert np.array_equal(flagged, written)
    # without controls, nothing changes and nothing is said
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g.generate("calm piano", 2.0, seed=5)


def test_cli_controls_recipe_info_and_like(tmp_path, capsys, controlled_path):
    take = tmp_path / "take.wav"
    code, out, err = run_cli(capsys, "generate", "calm piano in A minor", "-s", 1, "--seed", 2, "--bpm", "96",
                             "--model", controlled_path, "-o", take)
    assert code == 0, err
    code, out, _ = run_cli(capsys, "info", take)
    assert "tempo: 96 BPM (--bpm)" in out and "key: A minor (from the prompt)" in out
    assert re.search(r"--bpm 96 ", out) and "--key" not in out
    again = tmp_path / "again.wav"
    code, _, err = run_cli(capsys, "generate", "--like", take, "-o", again)
    assert code == 0, err
    import soundfile as sf

    assert np.array_equal(sf.read(take)[0], sf.read(again)[0])
    # a new prompt with --like states its own key; the take's --bpm stays
    other = tmp_path / "other.wav"
    code, _, err = run_cli(capsys, "generate", "calm piano in C major", "--like", take, "-o", other)
    code, out, _ = run_cli(capsys, "info", other)
    assert "tempo: 96 BPM (--bpm)" in out and "key: C major (from the prompt)" in out


def test_cli_json_and_prompts_file_controls(tmp_path, capsys, controlled_path):
    lines = [json.dumps({"prompt": "calm piano", "bpm": 100, "key": "Eb major", "output": "a.wav", "seed": 1}),
             json.dumps({"prompt": "calm piano at 80 BPM", "output": "b.wav", "seed": 1}),
             json.dumps({"prompt": "calm piano", "key": "H major", "output": "c.wav", "seed": 1}),
             json.dumps({"prompt": "calm piano at 80 BPM and 90 BPM", "output": "d.wav", "seed": 1})]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(capsys, "generate", "--prompts", tmp_path / "p.jsonl", "-s", 1, "--json",
                             "--model", controlled_path, "-o", tmp_path / "out")
    assert code != 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["bpm"], r["key"]) for r in records] == [(100.0, "Eb major"), (80.0, None)]
    assert "p.jsonl line 3: --key 'H major' is not a key" in err
    assert "p.jsonl line 4: the prompt states two tempos" in err


@pytest.mark.parametrize("args,pattern", [
    (["calm", "--bpm", "fast"], r"--bpm must be a tempo from 40 to 300"),
    (["calm", "--key", "H major"], r"--key 'H major' is not a key"),
    (["calm at 90 BPM and 100 BPM"], r"the prompt states two tempos"),
    (["calm", "--meter", "13/4"], r"--meter must be beats per bar"),
])
def test_bad_controls_fail_before_the_model_loads(tmp_path, capsys, args, pattern):
    code, out, err = run_cli(capsys, "generate", *args, "-s", 1, "--model", tmp_path / "missing.safetensors",
                             "-o", tmp_path / "x.wav")
    assert code != 0 and out == "" and re.search(pattern, err)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# --- user datasets: a downbeat in the metadata, or a tempo estimated from the audio ----------------

def click_track(bpm: float, first: float, seconds: float, rate: int = 44100) -> np.ndarray:
    """(2, samples): short decaying noise bursts on a steady grid starting at `first` s."""
    rng = np.random.default_rng(0)
    audio = np.zeros(round(seconds * rate), dtype=np.float32)
    burst = (rng.standard_normal(2000) * np.exp(-np.arange(2000) / 300)).astype(np.float32)
    for t in np.arange(first, seconds - 0.05, 60 / bpm):
        i = round(t * rate)
        audio[i: i + 2000] += burst[: len(audio) - i]
    return np.stack([audio, audio]) * 0.5


def test_estimated_beat_grid_finds_tempo_and_phase():
    from salong.evaluation import estimate_beat_grid

    bpm, first = estimate_beat_grid(click_track(112, 0.31, 12.0), 44100)
    assert abs(bpm - 112) < 1.0
    period = 60 / 112
    assert abs((first - 0.31 + period / 2) % period - period / 2) < 0.03  # the grid sits on the clicks
    assert estimate_beat_grid(np.zeros((2, 44100), dtype=np.float32), 44100) is None


def test_downbeat_shifts_the_beat_phase_of_crops(tmp_path):
    from salong.train.dit_data import CropLengths, LatentDataset

    rate = 44100 / 2048
    items = _cache(tmp_path)
    items[0]["downbeat"] = 0.4
    item = LatentDataset(tmp_path, items, CropLengths(64, 64, 2), rate)[(0, 1, 0)]
    offset = int(item["latents"][0, 0])
    torch.testing.assert_close(item["beat"], beat_features(64, rate, 101.0, 3, start_seconds=offset / rate - 0.4))


def test_train_dit_estimates_the_tempo_of_files_without_one(tmp_path):
    from conftest import CAPTIONS
    from salong.audio import write_audio
    from salong.autoencoder import PRESETS as AE, Autoencoder, save_autoencoder
    from salong.clap import PRESETS as CLAP, Clap, save_clap
    from salong.clap_inputs import train_tokenizer
    from salong.dit import PRESETS as DIT
    from salong.pipeline import SamplingConfig
    from salong.train import TrainConfig
    from salong.train.dit import DiTTaskConfig, train_dit

    data = tmp_path / "data"
    data.mkdir()
    write_audio(data / "a.wav", click_track(96, 0.2, 10.0), 44100)
    write_audio(data / "b.wav", click_track(140, 0.0, 4.0), 44100)
    (data / "metadata.jsonl").write_text(json.dumps({"path": "a.wav", "caption": "clicks"}) + "\n"
                                         + json.dumps({"path": "b.wav", "caption": "clicks", "bpm": 70}) + "\n")
    torch.manual_seed(0)
    ae = save_autoencoder(tmp_path / "ae.safetensors", Autoencoder(AE["tiny"]))
    clap = save_clap(tmp_path / "clap.safetensors", Clap(CLAP["tiny"], train_tokenizer(CAPTIONS * 4, vocab_size=512)))
    task = DiTTaskConfig(model=dataclasses.replace(DIT["tiny"], controls=("beat",)), estimate_bpm=True,
                         sampling=SamplingConfig(steps=2, sigma_max=80.0), demo_count=0)
    train_dit(data, tmp_path / "run", TrainConfig(steps=1, batch_size=2, lr=1e-4, checkpoint_every=1), task, ae, clap,
              quiet=True)
    items = json.loads((tmp_path / "run" / "prepared" / "cache" / "index.json").read_text())["items"]
    assert abs(items[0]["bpm"] - 96) < 1.0 and abs(items[0]["downbeat"] - 0.2) < 0.03
    assert items[1]["bpm"] == 70 and "downbeat" not in items[1]  # the metadata's tempo is kept


def test_a_generator_with_controls_continues_under_a_preset_of_its_size(tmp_path, capsys, controlled_path):
    """--init G --preset P (G's size) without --controls: the DiT keeps G's conditioners."""
    from salong.pipeline import Generator

    assert run_cli(capsys, "synth", 2, tmp_path / "data", "--min-seconds", 2, "--max-seconds", 3)[0] == 0
    code, out, err = run_cli(capsys, "train", "dit", "--data", tmp_path / "data", "--out", tmp_path / "run",
                             "--init", controlled_path, "--preset", "tiny", "--steps", 1, "--batch-size", 2,
                             "--demo-every", 0, "--quiet")
    assert code == 0, err
    assert Generator.load(out.strip()).controls == ("beat", "key")
    code, _, err = run_cli(capsys, "train", "dit", "--data", tmp_path / "data", "--out", tmp_path / "bad",
                           "--init", controlled_path, "--preset", "small", "--steps", 1, "--quiet")
    assert code == 1 and "another size than --preset small" in err and not (tmp_path / "bad").exists()


def test_pictures_mark_the_bar_lines_of_the_tempo_asked(tmp_path, capsys, controlled_path):
    from salong.plots import _bar_lines

    take = tmp_path / "take.wav"
    code, _, err = run_cli(capsys, "generate", "calm piano in 3/4 time", "-s", 2, "--seed", 1, "--bpm", 90,
                           "--model", controlled_path, "-o", take)
    assert code == 0, err
    np.testing.assert_allclose(_bar_lines(take, 4.5), [0.0, 2.0, 4.0])  # 3 beats at 90 BPM: 2 s bars
    plain = tmp_path / "plain.wav"
    run_cli(capsys, "generate", "calm piano", "-s", 1, "--seed", 1, "--model", controlled_path, "-o", plain)
    assert _bar_lines(plain, 1.0) is None
    code, out, err = run_cli(capsys, "plot", take, "-o", tmp_path / "take.png")
    assert code == 0 and (tmp_path / "take.png").stat().st_size > 1000
