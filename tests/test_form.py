"""The form control: the parser, the plan (the synth's own rule), the features, the DiT's
conditioner, sampling (and models without it), the recipe, and training data and dropout."""

import dataclasses
import json
import re
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import dit_task_inputs, saved_with_controls, perturbed_dit, run_cli
from salong.controls import (BEAT_FEATURES, DRUM_FEATURES, FORM_FEATURES, FORM_SECTIONS, KEY_FEATURES, Controls,
                             beat_features, form_features, form_sections, form_text, form_words, parse_form,
                             parse_sections, prompt_with_controls, song_form)
from salong.errors import SalongError
from salong.request import SongRequest
from salong.synth.attributes import LONG_FORM_SECONDS, PieceAttributes

FULL = (("intro", 4), ("A", 16), ("B", 16), ("A'", 16), ("outro", 4))


# --- the parser ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "intro 4, A 16, B 16, A' 16, outro 4",
    "intro:4 A:16 B:16 A':16 outro:4",
    "INTRO 4; a 16; b 16; A2 16; Outro 4",
    "intro=4,A=16,B=16,a’ 16,outro=4",
])
def test_form_spellings(text):
    assert parse_form(text) == FULL


def test_auto_and_none():
    assert [parse_form(t) for t in ("auto", " Auto ", "none", "NONE")] == ["auto", "auto", "none", "none"]


@pytest.mark.parametrize("value,problem", [
    ("verse 4, chorus 8", r"'verse' is not a section"),
    ("intro 4, A", r"A has no bars"),
    ("4 intro", r"'4' follows no section"),
    ("A 0", r"A '0' is not a whole number of bars from 1 to 9999"),
    ("A 1.5", r"A '1.5' is not a whole number of bars"),
    ("A -2", r"'-2' is not a section|A '-2' is not a whole number"),
    ("", r"names no section"),
    (" , ", r"names no section"),
    ("A 4 " * 65, r"65 sections are more than 64"),
    (12, r"is not text"),
])
def test_bad_forms_are_one_line_errors_naming_the_fix(value, problem):
    with pytest.raises(SalongError) as info:
        parse_form(value)
    message = str(info.value)
    assert re.search(problem, message) and "\n" not in message
    assert message.endswith("give auto, none, or sections in bars among intro, A, B, A' (or A2), outro, e.g. "
                            "\"intro 4, A 16, B 16, A' 16, outro 4\"")


# --- the plan -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bpm,meter,seconds", [
    (60, "4/4", 40.0), (97, "3/4", 61.3), (120, "4/4", 285.0), (180, "3/4", 150.0), (133, "4/4", 44.4),
    (75, "4/4", 12.0),
])
def test_auto_is_the_synth_corpus_own_form(bpm, meter, seconds):
    attrs = PieceAttributes("piano", "pad", True, "backbeat", bpm, "C", "major", meter, "soft", seconds)
    bars = song_form("auto", seconds, bpm, attrs.beats_per_bar)
    assert form_sections(bars, seconds, bpm, attrs.beats_per_bar) == attrs.sections  # exactly, float for float
    names = [name for name, _ in bars]
    assert names == (["A"] if seconds < LONG_FORM_SECONDS else list(FORM_SECTIONS))


def test_auto_without_a_tempo_is_120_bpm_in_4_4():
    assert song_form("auto", 285.0) == song_form("auto", 285.0, 120.0, 4) == (
        ("intro", 4), ("A", 44), ("B", 44), ("A'", 46), ("outro", 5))  # 142.5 bars of 2 s: the last one cut
    assert song_form("auto", 39.9) == (("A", 20),)
    assert song_form("none", 285.0) is None


def test_listed_sections_fill_the_song_on_bar_lines():
    # 56 bars at 120 BPM in 4/4 are 112 s; a 285 s song has 143 bars (the last one cut): scaled by 143/56
    scaled = song_form(FULL, 285.0)
    assert scaled == (("intro", 10), ("A", 41), ("B", 41), ("A'", 41), ("outro", 10))
    sections = form_sections(scaled, 285.0)
    assert sections[0] == ("intro", 0.0, 20.0) and sections[-1] == ("outro", 266.0, 285.0)
    assert all(a[2] == b[1] for a, b in zip(sections, sections[1:]))
    # sections that fill the song's bars stay as they are, so a recorded form gives itself back
    assert song_form(FULL, 112.0) == FULL and song_form(FULL, 111.5) == FULL
    assert song_form(parse_form(form_text(scaled)), 285.0) == scaled
    # cut down to a short song: a section scaled to no bars is left out
    assert song_form((("intro", 1), ("A", 100), ("outro", 1)), 20.0) == (("A", 10),)
    assert song_form((("A", 8), ("B", 8)), 10.0, 90.0, 3) == (("A", 3), ("B", 2))  # 5 bars of 2 s: A's 2.5 -> 3
    # a song too short for every section keeps those whose bars round to one or more
    assert song_form(FULL, 2.0) == (("B", 1),)


def test_form_text_and_words():
    assert form_text(FULL) == "intro 4, A 16, B 16, A' 16, outro 4"
    from salong.synth.captions import _FORM_WORDS

    assert form_words(form_sections(FULL, 112.0)) == _FORM_WORDS[0]  # the corpus's words
    assert form_words(form_sections((("A", 8), ("B", 8)), 32.0)) == "with a contrasting middle section"
    assert form_words(form_sections((("A", 8),), 16.0)) is None and form_words(None) is None


# --- the features -------------------------------------------------------------------------------

def test_form_features_one_hot_and_progress():
    rate = 2.0  # frame centres at 0.25, 0.75, ... s
    sections = (("intro", 0.0, 2.0), ("A", 2.0, 6.0), ("outro", 6.0, 7.0))
    f = form_features(16, rate, sections)  # (16, F)
    assert f.shape == (16, FORM_FEATURES) and f.dtype == torch.float32
    assert torch.all(f[:, 0] == 1) and torch.all(f[:, 1:6].sum(1) == 1)
    names = [FORM_SECTIONS[i] for i in f[:, 1:6].argmax(1)]
    assert names == ["intro"] * 4 + ["A"] * 8 + ["outro"] * 4  # past the last end: still the last section
    torch.testing.assert_close(f[:4, -1], torch.tensor([0.125, 0.375, 0.625, 0.875]))
    torch.testing.assert_close(f[4:12, -1], (torch.arange(8) + 0.5) / 8)
    assert f[13, -1] == 0.75 and torch.all((f[14:, -1] < 1) & (f[14:, -1] > 0.999))  # held below 1 past the end


def test_form_features_keep_the_offset_into_the_piece_and_absent_is_zero():
    rate = 21.533
    sections = form_sections(song_form("auto", 120.0, 97.0, 3), 120.0, 97.0, 3)
    whole = form_features(2000, rate, sections)
    for offset in (0, 37, 901):
        assert torch.equal(form_features(64, rate, sections, start_seconds=offset / rate), whole[offset:offset + 64])
    assert torch.equal(form_features(7, rate, None), torch.zeros(7, FORM_FEATURES))
    assert torch.equal(form_features(7, rate, ()), torch.zeros(7, FORM_FEATURES))


def test_metadata_sections():
    given = [{"name": "intro", "start": 0, "end": 4.5}, {"name": "a2", "start": 4.5, "end": 9.0}]
    assert parse_sections(given) == (("intro", 0.0, 4.5), ("A'", 4.5, 9.0))
    for bad in ([], [{"name": "verse", "start": 0, "end": 1}], [{"name": "A", "start": 2, "end": 1}],
                [{"name": "A", "start": 0, "end": 2}, {"name": "B", "start": 1, "end": 3}],
                [{"name": "A", "start": 0, "end": float("nan")}], [{"name": "A", "start": True, "end": 1}],
                "intro 4", [["A", 0, 1]]):
        with pytest.raises(SalongError, match=r"are not sections; give a list of \{\"name\", \"start\", \"end\"\}"):
            parse_sections(bad)


# --- the DiT ------------------------------------------------------------------------------------

def _inputs(b=2, frames=16):
    torch.manual_seed(1)
    return dict(x=torch.randn(b, 64, frames), t=torch.rand(b), cond_tokens=torch.randn(b, 77, 128),
                seconds_start=torch.tensor([0.0, 3.0][:b]), seconds_total=torch.tensor([30.0, 60.0][:b]))


def _form_batch(frames=16, rate=2.0):
    return torch.stack([form_features(frames, rate, form_sections(FULL, 112.0), start_seconds=30.0),
                        form_features(frames, rate, (("A", 0.0, 3.0), ("B", 3.0, 8.0)))])  # (2, frames, F)


def test_a_model_without_the_form_conditioner_ignores_it():
    from salong.dit import PRESETS

    dit = perturbed_dit(dataclasses.replace(PRESETS["tiny"], controls=("beat", "key", "drums"))).eval()
    assert not any(k.startswith("form_embed") for k in dit.state_dict())
    args = _inputs()
    beat, key = torch.randn(2, 16, BEAT_FEATURES), torch.randn(2, KEY_FEATURES)
    assert torch.equal(dit(**args, beat=beat, key=key), dit(**args, beat=beat, key=key, form=_form_batch()))


@pytest.mark.parametrize("patch", [1, 2])
def test_form_added_to_a_trained_model_starts_at_its_predictions_then_matters(patch):
    from salong.dit import PRESETS, DiT
    from salong.train.dit import init_state

    base = perturbed_dit(dataclasses.replace(PRESETS["tiny"], controls=("beat", "key"), patch_size=patch)).eval()
    dit = DiT(dataclasses.replace(base.config, controls=("beat", "key", "form"))).eval()
    assert dit.form_embed.weight.shape == (base.config.width, FORM_FEATURES * patch)
    dit.load_state_dict(init_state(dit, base))
    args = _inputs()
    beat, key, form = torch.randn(2, 16, BEAT_FEATURES), torch.randn(2, KEY_FEATURES), _form_batch()
    assert torch.equal(dit(**args, beat=beat, key=key, form=form), base(**args, beat=beat, key=key))
    with torch.no_grad():
        dit.form_embed.weight.normal_(0, 0.1)
    out = dit(**args, beat=beat, key=key, form=form)
    assert not torch.allclose(out, base(**args, beat=beat, key=key))
    assert torch.equal(dit(**args, beat=beat, key=key, form=torch.zeros_like(form)), base(**args, beat=beat, key=key))
    drop = torch.tensor([True, False])
    dropped = dit(**args, beat=beat, key=key, form=form, cond_drop_mask=drop)
    torch.testing.assert_close(dropped[0], base(**args, cond_drop_mask=drop)[0])
    torch.testing.assert_close(dropped[1], out[1])
    # per frame: changing the form of the last frames changes the prediction there only (a token mixes
    # with the others through attention, so only "mostly": the first frames move far less)
    late = form.clone()
    late[:, -4:, 1:6] = late[:, -4:, 1:6].flip(-1)
    moved = (dit(**args, beat=beat, key=key, form=late) - out).abs().amax(dim=(0, 1))  # (L,)
    assert moved[-4:].min() > 0


# --- generation ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def form_path(tmp_path_factory):
    return saved_with_controls(tmp_path_factory, ("beat", "key", "form"), "form")


@pytest.fixture(scope="module")
def beat_path(tmp_path_factory):
    return saved_with_controls(tmp_path_factory, ("beat", "key"), "beat")


SPEC = "intro 1, A 1, outro 1"  # three bars of 0.75 s at 240 BPM in 3/4: a 2.25 s song


def test_form_changes_the_song(form_path):
    from salong.pipeline import Generator

    g = Generator.load(form_path)
    assert g.controls == ("beat", "key", "form")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model with the conditioner writes nothing into the prompt
        auto = g.generate("calm piano", 2.25, seed=3, bpm=240, meter="3/4")
        listed = g.generate("calm piano", 2.25, seed=3, bpm=240, meter="3/4", form=SPEC)
    none = g.generate("calm piano", 2.25, seed=3, bpm=240, meter="3/4", form="none")
    assert auto.request.form == "A 3" and auto.request.controls.form == (("A", 0.0, 2.25),)
    assert listed.request.form == SPEC
    assert listed.request.controls.form == (("intro", 0.0, 0.75), ("A", 0.75, 1.5), ("outro", 1.5, 2.25))
    assert none.request.form == "none" and none.request.controls.form is None
    assert not np.array_equal(auto.audio, listed.audio) and not np.array_equal(auto.audio, none.audio)
    again = g.generate("calm piano", 2.25, seed=3, bpm=240, meter="3/4", form="intro:1 a:1 OUTRO:1")
    assert np.array_equal(listed.audio, again.audio)


def test_sampling_reads_the_form_where_the_frames_lie_in_the_song(form_path, monkeypatch):
    """Uncond gets zeros; an extension's window reads the sections, and the beat grid laid from
    the song's 0 s, at its offset into the song."""
    import salong.pipeline as pipeline
    from salong.edit import place_window, source_fill
    from salong.pipeline import Generator

    g = Generator.load(form_path)
    seen, inputs = [], []
    features = pipeline.form_features
    monkeypatch.setattr(pipeline, "form_features",
                        lambda frames, rate, sections, start_seconds=0.0:
                        (seen.append((frames, sections, start_seconds)), features(frames, rate, sections,
                                                                                  start_seconds))[1])
    forward = g.dit.forward
    beats = []
    monkeypatch.setattr(g.dit, "forward", lambda *a, **kw: (inputs.append(kw["form"]), beats.append(kw["beat"]),
                                                            forward(*a, **kw))[2])
    source = np.random.default_rng(0).normal(0, 0.1, (2, round(2.5 * 44100))).astype(np.float32)
    song = g.extend("calm piano", (source, 44100), 4.0, seed=1, steps=2, bpm=120, key="C major", form="A 1, B 1")
    assert song.request.controls.form == (("A", 0.0, 2.0), ("B", 2.0, 4.0))
    fill = source_fill(song.request, 44100, 2)
    offset, _ = place_window(fill, g.config.dit.window * g.config.autoencoder.samples_per_latent)
    assert offset > 0 and seen == [(g.config.dit.window, song.request.controls.form, offset / 44100)]
    cond, uncond = inputs[0].chunk(2)  # one batch: cond rows, then uncond rows
    assert torch.equal(cond[0], features(g.config.dit.window, g.config.autoencoder.latent_rate,
                                         song.request.controls.form, offset / 44100))
    assert not uncond.any()
    rate = g.config.autoencoder.latent_rate
    grid = beat_features(g.config.dit.window, rate, 120, None, start_seconds=offset / 44100)
    assert offset / 44100 % 0.5 > 0.01  # off the beat: a grid laid from the window's start would differ
    assert torch.equal(beats[0].chunk(2)[0][0], grid) and not torch.equal(grid, beat_features(
        g.config.dit.window, rate, 120, None))


def test_a_loop_has_no_form(form_path):
    from salong.pipeline import Generator

    g = Generator.load(form_path)
    loop = g.loop("calm piano", 2.0, seed=1, steps=2)
    assert loop.request.form is None and loop.request.controls.form is None
    with pytest.raises(SalongError, match=r"^--form lays sections from a song's start to its end, and a --loop has "
                                          r"neither; leave --form out$"):
        SongRequest("calm piano", 2.0, loop=True, form=SPEC)


def test_a_model_without_the_form_conditioner_samples_as_before(beat_path, monkeypatch):
    from salong.pipeline import Generator

    g = Generator.load(beat_path)
    called = []
    forward = g.dit.forward
    monkeypatch.setattr(g.dit, "forward", lambda *a, **kw: (called.append(sorted(kw)), forward(*a, **kw))[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto and none: nothing written, nothing said
        plain = g.generate("calm piano", 2.0, seed=5)
        auto = g.generate("calm piano", 2.0, seed=5, form="auto")
        none = g.generate("calm piano", 2.0, seed=5, form="none")
    assert np.array_equal(plain.audio, auto.audio) and np.array_equal(plain.audio, none.audio)
    assert all("form" not in keys for keys in called)  # the DiT is called exactly as before
    assert plain.request.form is None and auto.request.form is None and none.request.form == "none"
    assert plain.request.controls == Controls()


def test_a_model_without_the_form_conditioner_reads_listed_sections_as_words(beat_path, generator_path):
    from salong.pipeline import Generator

    words = "with an intro, a contrasting middle section and an outro"
    prompt = "calm piano at 300 BPM in 2/4"  # five bars of 0.4 s in 2 s
    for path in (beat_path, generator_path):
        g = Generator.load(path)
        with pytest.warns(UserWarning, match=rf"no (tempo or )?form conditioner; the prompt it reads is "
                                             rf"'{prompt}, {words}'"):
            listed = g.generate(prompt, 2.0, seed=5, form="intro 1, A 1, B 1, A2 1, outro 1")
        assert np.array_equal(listed.audio, g.generate(f"{prompt}, {words}", 2.0, seed=5).audio)
        assert listed.request.form == "intro 1, A 1, B 1, A' 1, outro 1"  # recorded: --like writes the words again
        with pytest.warns(UserWarning, match=r"no form conditioner, and its captions have no words for a form "
                                             r"without an intro, a B section or an outro; the song is sampled "
                                             r"without it"):
            one = g.generate("calm piano", 2.0, seed=5, form="A 4").audio
        assert np.array_equal(one, g.generate("calm piano", 2.0, seed=5).audio)
    # a prompt that speaks of its form is left as it is; Stable Audio Open's style is tags
    controls = Controls(form=form_sections(FULL, 112.0))
    assert prompt_with_controls("piano with a short intro", controls) == "piano with a short intro"
    assert prompt_with_controls("piano with a string section", controls) == f"piano with a string section, {words}"
    assert prompt_with_controls("piano, 90 BPM", controls, "sao") == f"piano, 90 BPM, {words}"


# --- the recipe, info, --like, prompts files, --json ---------------------------------------------

def test_cli_form_recipe_info_like_json_and_prompts_file(tmp_path, capsys, form_path):
    import soundfile as sf

    from salong.recipe import Recipe, read_recipe

    take = tmp_path / "take.wav"
    code, _, err = run_cli(capsys, "generate", "calm piano at 240 BPM in 3/4", "-s", 2.25, "--seed", 2,
                           "--form", "Intro:1 A:1 outro:1", "--model", form_path, "-o", take)
    assert code == 0, err
    recipe = read_recipe(take)
    assert recipe.request.form == SPEC and json.loads(recipe.to_json())["form"] == SPEC
    code, out, _ = run_cli(capsys, "info", take)
    assert f"form: {SPEC} (intro 0-0.75 s, A 0.75-1.5 s, outro 1.5-2.25 s)" in out
    assert "--form 'intro 1, A 1, outro 1'" in out
    again = tmp_path / "again.wav"
    code, _, err = run_cli(capsys, "generate", "--like", take, "-o", again)
    assert code == 0, err
    assert np.array_equal(sf.read(take)[0], sf.read(again)[0]) and read_recipe(again).request.form == SPEC
    # a recipe from before the form control reads as auto
    old = json.loads(recipe.to_json())
    del old["form"]
    assert Recipe.from_json(json.dumps(old), "'t.wav'").request.form is None
    lines = [json.dumps({"prompt": "calm piano", "form": "none", "output": "a.wav", "seed": 1, "seconds": 2.0}),
             json.dumps({"prompt": "calm piano", "output": "b.wav", "seed": 1, "seconds": 2.0}),
             json.dumps({"prompt": "calm piano", "form": "verse 8", "output": "c.wav", "seed": 1})]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(capsys, "generate", "--prompts", tmp_path / "p.jsonl", "-s", 1, "--json",
                             "--model", form_path, "-o", tmp_path / "out")
    assert code != 0 and "p.jsonl line 3: --form 'verse 8': 'verse' is not a section" in err
    assert [json.loads(line)["form"] for line in out.splitlines()] == ["none", "A 1"]  # auto: 2 s, one bar of 4/4


@pytest.mark.parametrize("args,pattern", [
    (["calm", "--form", "verse 8, chorus 8"], r"^--form 'verse 8, chorus 8': 'verse' is not a section; give auto"),
    (["calm", "--form", "A"], r"^--form 'A': A has no bars; give auto"),
    (["calm", "--form", "A 4", "--loop"], r"^--form lays sections from a song's start to its end"),
])
def test_bad_forms_fail_before_the_model_loads(tmp_path, capsys, args, pattern):
    code, out, err = run_cli(capsys, "generate", *args, "-s", 1, "--model", tmp_path / "missing.safetensors",
                             "-o", tmp_path / "x.wav")
    assert code != 0 and out == "" and re.search(pattern, err.removeprefix("error: "))
    assert err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# --- training data and dropout ------------------------------------------------------------------

def test_crops_carry_the_form_at_their_offset(tmp_path):
    from salong.train.dit_data import CropLengths, LatentDataset

    frames, rate = 3000, 21.5
    sections = PieceAttributes("piano", None, False, "none", 100, "C", "major", "4/4", "soft", frames / rate).sections
    save_file({"latents": torch.zeros(64, frames), "text": torch.randn(2, 77, 128)},
              str(tmp_path / "000000.safetensors"))
    save_file({"latent": torch.zeros(64)}, str(tmp_path / "silence.safetensors"))
    item = {"file": "000000.safetensors", "path": "a.wav", "caption": "x", "duration": frames / rate}
    with_form = {**item, **Controls(form=sections).record()}  # as the cache holds a file's controls
    dataset = LatentDataset(tmp_path, [with_form, item], CropLengths(64, 64, 2), rate)
    whole = form_features(frames, rate, sections)
    starts = set()
    for seed in range(12):
        crop = dataset[(0, seed, 0)]
        offset = int(np.random.default_rng(seed).integers(0, frames - 64 + 1))  # the crop's own draw
        starts.add(offset)
        torch.testing.assert_close(crop["form"], whole[offset:offset + 64])
        assert not dataset[(1, seed, 0)]["form"].any()  # no sections: the control is absent
    assert len(starts) > 1



def test_crops_past_a_pieces_end_have_no_section_on_the_padding(tmp_path):
    """The silence padded after a piece's end is no part of its outro: a crop longer than the
    piece has the form on its real frames and none on the padding (laid as the outro's last
    moment, it taught the model that an outro's end is silence)."""
    from salong.train.dit_data import CropLengths, LatentDataset

    frames, rate = 1000, 21.5
    sections = PieceAttributes("piano", None, False, "none", 100, "C", "major", "4/4", "soft", frames / rate).sections
    save_file({"latents": torch.zeros(64, frames), "text": torch.randn(2, 77, 128)},
              str(tmp_path / "000000.safetensors"))
    save_file({"latent": torch.zeros(64)}, str(tmp_path / "silence.safetensors"))
    item = {"file": "000000.safetensors", "path": "a.wav", "caption": "x", "duration": frames / rate,
            **Controls(form=sections).record()}
    crop = LatentDataset(tmp_path, [item], CropLengths(1200, 1200, 2), rate)[(0, 0, 0)]
    assert crop["mask"][:frames].all() and not crop["mask"][frames:].any()
    torch.testing.assert_close(crop["form"][:frames], form_features(frames, rate, sections))
    assert crop["form"][frames - 1, -1] > 0.99  # the outro nearly through at the last real frame
    assert not crop["form"][frames:].any()  # and nothing after it

def test_metadata_gives_sections_itself_or_through_synth_attributes(tmp_path):
    import soundfile as sf

    from salong.data import index_audio

    for name in ("a", "b", "c"):
        sf.write(tmp_path / f"{name}.wav", np.zeros((441, 2), dtype=np.float32), 44100)
    attrs = PieceAttributes("piano", None, False, "none", 100, "C", "major", "4/4", "soft", 60.0).to_dict()
    lines = [{"path": "a.wav", "caption": "x", "sections": [{"name": "A", "start": 0, "end": 5}]},
             {"path": "b.wav", "caption": "y", "attributes": attrs},
             {"path": "c.wav", "caption": "z"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    files, _ = index_audio(tmp_path)
    assert [f.controls.form for f in files] == [(("A", 0.0, 5.0),), PieceAttributes(**{
        k: attrs[k] for k in ("lead", "chords", "bass", "drums", "bpm", "tonic", "mode", "meter", "loudness",
                              "seconds")}).sections, None]
    lines[0]["sections"] = [{"name": "verse", "start": 0, "end": 5}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    with pytest.raises(SalongError, match=r"metadata.jsonl line 1: sections .* are not sections; .*; fix or remove"):
        index_audio(tmp_path)


def _task(controls, dropout, monkeypatch):
    return dit_task_inputs(controls, dropout, monkeypatch, beat=(8, BEAT_FEATURES), key=(KEY_FEATURES,),
                           drums=(DRUM_FEATURES,), form=(8, FORM_FEATURES))


def test_form_dropout_is_drawn_apart_and_older_models_draw_as_before(monkeypatch):
    seen = _task(("beat", "key", "drums", "form"), 0.5, monkeypatch)
    kept_form, kept_drums = seen["form"][:, 0, 0] > 0, seen["drums"][:, 0] > 0
    assert 0.35 < kept_form.float().mean() < 0.65 and not torch.equal(kept_form, kept_drums)
    assert all(row.all() or not row.any() for row in seen["form"])  # a row is kept or dropped whole
    assert not _task(("beat", "key", "form"), 1.0, monkeypatch)["form"].any()
    older = _task(("beat", "key", "drums"), 0.5, monkeypatch)  # without form: the same draws as before
    assert "form" not in older
    assert all(torch.equal(older[name], seen[name]) for name in ("beat", "key", "drums"))
