"""The drums control: the parser, the features, the DiT's conditioner, training data and
dropout, generation, the recipe, and models without it."""

import dataclasses
import json
import re
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import dit_task_inputs, perturbed_dit, run_cli, saved_with_controls
from salong.controls import (BEAT_FEATURES, DRUM_FEATURES, GROOVES, KEY_FEATURES, Controls, drum_features,
                             parse_drums, prompt_with_controls, read_prompt, resolve)
from salong.errors import SalongError


# --- the parser ---------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt,drums", [
    ("An electric piano melody with no drums. A piece at 65 BPM in G minor.", "none"),
    ("in D major, 70 BPM, organ melody, no drums", "none"),
    ("ambient pad without any percussion", "none"),
    ("Drumless ballad on a nylon guitar", "none"),
    ("a drum-free lullaby", "none"),
    ("house track with a four-on-the-floor beat", "four-on-the-floor"),
    ("Four on the floor drums at 124 BPM", "four-on-the-floor"),
    ("soul groove, backbeat drums", "backbeat"),
    ("a swung shuffle drums blues", "shuffle"),
    ("jungle breakbeat at 170 BPM", "breakbeat"),
    ("piano and DRUMS in C major", "on"),
    ("percussion ensemble", "on"),
    ("drums and a shuffle groove", "shuffle"),  # a groove says more than "drums"
    ("no drums, a shuffle feel on the piano", "none"),  # a groove word alone does not undo "no drums"
    ("steel drum melody", None),  # a pitched instrument, not a kit
    ("calm piano", None),
])
def test_prompt_drums(prompt, drums):
    assert read_prompt(prompt).controls.drums == drums
    assert resolve(prompt).drums == drums


@pytest.mark.parametrize("prompt,pattern", [
    ("no drums, then backbeat drums", r"asks for drums and for no drums; keep one, or choose with --drums"),
    ("piano without drums, drums later", r"asks for drums and for no drums"),
    ("a shuffle into a breakbeat", r"names two grooves \(shuffle and breakbeat\); keep one, or choose with --drums"),
])
def test_drums_conflicts_need_a_flag_and_flags_win(prompt, pattern):
    with pytest.raises(SalongError, match=pattern):
        read_prompt(prompt)
    assert resolve(prompt, drums="none").drums == "none"
    assert resolve("calm piano with no drums", drums="backbeat").drums == "backbeat"


@pytest.mark.parametrize("value,expected", [
    ("none", "none"), ("No", "none"), ("off", "none"), ("on", "on"), ("yes", "on"),
    ("four on the floor", "four-on-the-floor"), ("4-on-the-floor", "four-on-the-floor"),
    ("Back beat", "backbeat"), ("break_beat", "breakbeat"), ("shuffle", "shuffle"),
])
def test_drums_values(value, expected):
    assert parse_drums(value) == expected


@pytest.mark.parametrize("value", ["loud", "", "1", 1, True, "swing"])
def test_bad_drums_are_one_line_errors(value):
    with pytest.raises(SalongError, match=r"--drums .* is not a drums choice; give none, on, or a groove: "
                                          r"four-on-the-floor, backbeat, shuffle, breakbeat"):
        parse_drums(value)


def test_drums_written_into_the_prompt_for_models_without_them():
    assert prompt_with_controls("calm piano", Controls(drums="none")) == "calm piano with no drums"
    assert prompt_with_controls("calm piano", Controls(drums="backbeat"), "sao") == "calm piano, backbeat drums"
    # a stated value the flag changes is replaced where it stands
    assert (prompt_with_controls("piano with backbeat drums at 90 BPM", Controls(drums="none"))
            == "piano with no drums at 90 BPM")
    assert prompt_with_controls("piano, no drums", Controls(drums="on")) == "piano, drums"
    # what the prompt already says is left alone
    assert prompt_with_controls("piano, no drums", Controls(drums="none")) == "piano, no drums"


def test_drum_features():
    assert not drum_features(None).any()
    assert drum_features("none").tolist() == [0, 1] + [0] * len(GROOVES)
    assert drum_features("on").tolist() == [1, 0] + [0] * len(GROOVES)
    shuffle = drum_features("shuffle")
    assert shuffle.shape == (DRUM_FEATURES,) and shuffle[0] == 1 and shuffle[1] == 0
    assert shuffle[2 + GROOVES.index("shuffle")] == 1 and shuffle.sum() == 2


# --- the DiT ------------------------------------------------------------------------------------

def _inputs(b=2, frames=16):
    torch.manual_seed(1)
    return dict(x=torch.randn(b, 64, frames), t=torch.rand(b), cond_tokens=torch.randn(b, 77, 128),
                seconds_start=torch.tensor([0.0, 3.0][:b]), seconds_total=torch.tensor([30.0, 60.0][:b]))


def test_a_model_without_the_drums_conditioner_ignores_it():
    from salong.dit import PRESETS

    dit = perturbed_dit(dataclasses.replace(PRESETS["tiny"], controls=("beat", "key"))).eval()
    assert not any(k.startswith("drums_embed") for k in dit.state_dict())
    args = _inputs()
    beat, key = torch.randn(2, 16, BEAT_FEATURES), torch.randn(2, KEY_FEATURES)
    assert torch.equal(dit(**args, beat=beat, key=key),
                       dit(**args, beat=beat, key=key, drums=torch.randn(2, DRUM_FEATURES)))


def test_drums_added_to_a_trained_model_start_at_its_predictions_then_matter():
    from salong.dit import PRESETS, DiT
    from salong.train.dit import init_state

    base = perturbed_dit(dataclasses.replace(PRESETS["tiny"], controls=("beat", "key"))).eval()
    dit = DiT(dataclasses.replace(base.config, controls=("beat", "key", "drums"))).eval()
    dit.load_state_dict(init_state(dit, base))
    args = _inputs()
    beat, key = torch.randn(2, 16, BEAT_FEATURES), torch.randn(2, KEY_FEATURES)
    drums = torch.stack([drum_features("none"), drum_features("backbeat")])
    assert torch.equal(dit(**args, beat=beat, key=key, drums=drums), base(**args, beat=beat, key=key))
    with torch.no_grad():
        dit.drums_embed.weight.normal_(0, 0.1)
    out = dit(**args, beat=beat, key=key, drums=drums)
    assert not torch.allclose(out, base(**args, beat=beat, key=key))
    assert torch.equal(dit(**args, beat=beat, key=key, drums=torch.zeros_like(drums)), base(**args, beat=beat, key=key))
    drop = torch.tensor([True, False])
    dropped = dit(**args, beat=beat, key=key, drums=drums, cond_drop_mask=drop)
    torch.testing.assert_close(dropped[0], base(**args, cond_drop_mask=drop)[0])
    torch.testing.assert_close(dropped[1], out[1])


# --- training data and dropout ------------------------------------------------------------------

def _cache(tmp_path, drums, frames=300):
    save_file({"latents": torch.zeros(64, frames), "text": torch.randn(2, 77, 128)},
              str(tmp_path / "000000.safetensors"))
    save_file({"latent": torch.zeros(64)}, str(tmp_path / "silence.safetensors"))
    item = {"file": "000000.safetensors", "path": "a.wav", "caption": "x", "duration": frames * 2048 / 44100}
    return [{**item, **({"drums": drums} if drums else {})}]


@pytest.mark.parametrize("drums", ["none", "backbeat", None])
def test_crops_carry_the_drums_the_groove_named_in_about_half(tmp_path, drums):
    from salong.train.dit_data import UNNAMED_GROOVE, CropLengths, LatentDataset

    dataset = LatentDataset(tmp_path, _cache(tmp_path, drums), CropLengths(64, 64, 2), 21.5)
    seen = [dataset[(0, seed, 0)]["drums"] for seed in range(200)]
    if drums is None:
        assert not any(s.any() for s in seen)
    elif drums == "none":
        assert all(torch.equal(s, drum_features("none")) for s in seen)
    else:
        named = sum(torch.equal(s, drum_features("backbeat")) for s in seen)
        plain = sum(torch.equal(s, drum_features("on")) for s in seen)
        assert named + plain == len(seen) and abs(plain / len(seen) - UNNAMED_GROOVE) < 0.1
        assert torch.equal(dataset[(0, 7, 0)]["drums"], dataset[(0, 7, 5)]["drums"])  # the item seed decides


def _task(controls, dropout, monkeypatch):
    return dit_task_inputs(controls, dropout, monkeypatch, beat=(8, BEAT_FEATURES), key=(KEY_FEATURES,),
                           drums=(DRUM_FEATURES,))


def test_drums_dropout_is_drawn_apart_and_older_models_draw_as_before(monkeypatch):
    seen = _task(("beat", "key", "drums"), 0.5, monkeypatch)
    kept_drums, kept_key = seen["drums"][:, 0] > 0, seen["key"][:, 0] > 0
    assert 0.35 < kept_drums.float().mean() < 0.65 and not torch.equal(kept_drums, kept_key)
    assert all(row.all() or not row.any() for row in seen["drums"])  # a row is kept or dropped whole
    assert not _task(("beat", "key", "drums"), 1.0, monkeypatch)["drums"].any()
    # a model without the drums conditioner: no drums passed, the same draws for beat and key as before
    older = _task(("beat", "key"), 0.5, monkeypatch)
    assert "drums" not in older
    assert torch.equal(older["key"], seen["key"]) and torch.equal(older["beat"], seen["beat"])


def test_metadata_drums(tmp_path):
    import soundfile as sf

    from salong.data import index_audio

    for name in ("a", "b", "c"):
        sf.write(tmp_path / f"{name}.wav", np.zeros((441, 2), dtype=np.float32), 44100)
    lines = [{"path": "a.wav", "caption": "x", "drums": "no"},
             {"path": "b.wav", "caption": "y", "attributes": {"drums": "shuffle"}},
             {"path": "c.wav", "caption": "z"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    files, _ = index_audio(tmp_path)
    assert [f.controls.drums for f in files] == ["none", "shuffle", None]
    lines[0]["drums"] = "loud"
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    with pytest.raises(SalongError, match=r"metadata.jsonl line 1: drums 'loud' is not a drums choice"):
        index_audio(tmp_path)


# --- generation ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def drums_path(tmp_path_factory):
    return saved_with_controls(tmp_path_factory, ("beat", "key", "drums"), "drums")


def test_drums_change_the_song_and_the_prompt_states_them(drums_path):
    from salong.pipeline import Generator

    g = Generator.load(drums_path)
    assert g.controls == ("beat", "key", "drums")
    plain = g.generate("calm piano", 2.0, seed=3).audio
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model with the conditioner writes nothing into the prompt
        none = g.generate("calm piano", 2.0, seed=3, drums="none")
    assert none.request.controls == Controls(drums="none")
    backbeat = g.generate("calm piano", 2.0, seed=3, drums="backbeat").audio
    assert not np.array_equal(plain, none.audio) and not np.array_equal(none.audio, backbeat)
    stated = g.generate("calm piano with no drums", 2.0, seed=3)
    flagged = g.generate("calm piano with no drums", 2.0, seed=3, drums="none")
    assert np.array_equal(stated.audio, flagged.audio) and stated.request.controls.drums == "none"
    # a flag that changes the stated drums changes the words too
    changed = g.generate("calm piano with no drums", 2.0, seed=3, drums="backbeat")
    assert np.array_equal(changed.audio, g.generate("calm piano with backbeat drums", 2.0, seed=3).audio)


def test_a_model_without_the_drums_conditioner_reads_drums_as_words(generator_path):
    from salong.pipeline import Generator

    g = Generator.load(generator_path)
    with pytest.warns(UserWarning, match=r"no drums conditioner; the prompt it reads is 'calm piano with no drums'"):
        flagged = g.generate("calm piano", 2.0, seed=5, drums="none").audio
    assert np.array_equal(flagged, g.generate("calm piano with no drums", 2.0, seed=5).audio)


def test_cli_drums_recipe_info_like_and_prompts_file(tmp_path, capsys, drums_path):
    import soundfile as sf

    take = tmp_path / "take.wav"
    code, _, err = run_cli(capsys, "generate", "calm piano with no drums", "-s", 1, "--seed", 2, "--drums", "shuffle",
                           "--model", drums_path, "-o", take)
    assert code == 0, err
    code, out, _ = run_cli(capsys, "info", take)
    assert "drums: shuffle (--drums)" in out and re.search(r"--drums shuffle ", out)
    again = tmp_path / "again.wav"
    code, _, err = run_cli(capsys, "generate", "--like", take, "-o", again)
    assert code == 0, err
    assert np.array_equal(sf.read(take)[0], sf.read(again)[0])
    lines = [json.dumps({"prompt": "calm piano", "drums": "none", "output": "a.wav", "seed": 1}),
             json.dumps({"prompt": "calm piano", "drums": "loud", "output": "b.wav", "seed": 1})]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(capsys, "generate", "--prompts", tmp_path / "p.jsonl", "-s", 1, "--json",
                             "--model", drums_path, "-o", tmp_path / "out")
    assert code != 0 and "p.jsonl line 2: --drums 'loud' is not a drums choice" in err
    assert [json.loads(line).get("drums") for line in out.splitlines()] == ["none"]


@pytest.mark.parametrize("args,pattern", [
    (["calm", "--drums", "loud"], r"--drums 'loud' is not a drums choice"),
    (["no drums, backbeat drums"], r"the prompt asks for drums and for no drums"),
])
def test_bad_drums_fail_before_the_model_loads(tmp_path, capsys, args, pattern):
    code, out, err = run_cli(capsys, "generate", *args, "-s", 1, "--model", tmp_path / "missing.safetensors",
                             "-o", tmp_path / "x.wav")
    assert code != 0 and out == "" and re.search(pattern, err)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
