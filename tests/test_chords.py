"""The chords control: the parser (names, degrees, A / B), the plan (the synth's own rule),
the synth's chord timeline, the features, the DiT's conditioner, sampling (edits, loops,
models without it), the recipe, and training data and dropout."""

import dataclasses
import json
import re
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import dit_task_inputs, saved_with_controls, run_cli
from salong.chords import (CHORD_FEATURES, auto_progressions, chord_features, chords_text, lay_chords, parse_chords,
                           parse_timeline, rotate_spans)
from salong.controls import (BEAT_FEATURES, DRUM_FEATURES, FORM_FEATURES, KEY_FEATURES, Controls, form_sections,
                             parse_key, song_form)
from salong.errors import SalongError
from salong.synth.attributes import PieceAttributes

A_MINOR, C_MAJOR = parse_key("A minor"), parse_key("C major")
AM_F_C_G = ((9, "minor"), (5, "major"), (0, "major"), (7, "major"))


# --- the parser ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["Am F C G", "Am, F, C, G", "Am-F-C-G", "| Am | F | C | G |", "Amin Fmaj C G"])
def test_chord_names(text):
    assert parse_chords(text) == (AM_F_C_G,)


def test_degrees_read_in_the_key_and_two_progressions():
    assert parse_chords("i VI III VII", A_MINOR) == (AM_F_C_G,)
    assert parse_chords("vi IV I V", C_MAJOR) == (AM_F_C_G,)
    assert parse_chords("I bVII IV / vii° ii", C_MAJOR) == (((0, "major"), (10, "major"), (5, "major")),
                                                            ((11, "dim"), (2, "minor")))
    assert parse_chords("F#m Bb Ebdim C#", None) == (((6, "minor"), (10, "major"), (3, "dim"), (1, "major")),)
    assert [parse_chords(t) for t in ("auto", " Auto ", "none", "NONE")] == ["auto", "auto", "none", "none"]


@pytest.mark.parametrize("value,key,problem", [
    ("Am F7 C", None, r"^--chords 'Am F7 C': 'F7' is not a triad \(C, Am, F#m, Bbdim\) or a degree"),
    ("H C", None, r"'H' is not a triad"),
    ("", None, r"has a progression with no chord"),
    ("Am / / C", None, r"has more than two progressions"),
    ("Am /", None, r"has a progression with no chord"),
    ("C " * 33, None, r"33 chords in one progression are more than 32"),
    (5, None, r"is not text"),
    ("I V vi IV", None, r"^--chords 'I V vi IV' names chords by degree, which needs a key; give --key"),
])
def test_bad_chords_are_one_line_errors_naming_the_fix(value, key, problem):
    with pytest.raises(SalongError) as info:
        parse_chords(value, key)
    message = str(info.value)
    assert re.search(problem, message) and "\n" not in message


def test_chords_text_by_name_and_by_degree_reads_back():
    progressions = parse_chords("Am F C G / Dm Em Am Am")
    assert chords_text(progressions) == "Am F C G / Dm Em Am Am"
    assert chords_text(progressions, A_MINOR) == "i VI III VII / iv v i i"
    assert parse_chords(chords_text(progressions, A_MINOR), A_MINOR) == progressions
    assert chords_text((((1, "major"),),), C_MAJOR) == "Db"  # off the scale: by name


# --- the plan -----------------------------------------------------------------------------------

def test_auto_draws_the_synth_corpus_progressions_by_seed():
    from salong.synth.compose import _PROGRESSIONS

    drawn = {auto_progressions(A_MINOR, seed) for seed in range(40)}
    assert len(drawn) > 5 and drawn == {auto_progressions(A_MINOR, seed) for seed in range(40)}  # reproducible
    minor = (0, 2, 3, 5, 7, 8, 10)
    tables = {variant: {tuple((9 + minor[d]) % 12 for d in p) for p in _PROGRESSIONS[("minor", variant)]}
              for variant in ("A", "B")}
    for a, b in drawn:
        assert tuple(root for root, _ in a) in tables["A"] and tuple(root for root, _ in b) in tables["B"]


def test_chords_lay_one_per_bar_cycling_per_section_with_the_outro_on_the_first():
    sections = form_sections(song_form("auto", 60.0, 100, 4), 60.0, 100, 4)  # intro 2, A 8, B 8, A' 5, outro 2 bars
    spans = lay_chords(parse_chords("Am F / C G"), 60.0, 100, 4, sections)
    bar = 2.4
    assert spans[0] == ("Am", 0.0, bar) and spans[1] == ("F", bar, 2 * bar)
    assert spans[2] == ("Am", 2 * bar, pytest.approx(3 * bar))  # A starts its own cycle on its first bar
    b_start = [s for s in sections if s[0] == "B"][0][1]
    assert [s for s in spans if s[1] == pytest.approx(b_start)][0][0] == "C"
    assert spans[-1][0] == "Am" and spans[-1][2] == 60.0  # the outro holds the first chord, to the end
    assert all(a[2] == pytest.approx(b[1]) and a[0] != b[0] for a, b in zip(spans, spans[1:]))  # joined, no gaps
    # no sections: one A, the last bar cut at the song's end; 120 BPM in 4/4 where no tempo is given
    assert lay_chords(parse_chords("C G"), 5.0) == (("C", 0.0, 2.0), ("G", 2.0, 4.0), ("C", 4.0, 5.0))


@pytest.mark.parametrize("seed", [3, 11, 2026])
@pytest.mark.parametrize("seconds,bpm,meter", [(30.0, 97, "4/4"), (75.0, 133, "3/4")])
def test_the_synth_records_the_chords_it_plays(seed, seconds, bpm, meter):
    """The timeline `harmony` writes is the chords the chord track holds: every note of a
    chord starting in a span is a tone of that span's triad."""
    from salong.synth.attributes import _RENDER_STREAM
    from salong.synth.compose import _compose, harmony

    attrs = PieceAttributes("piano", "pad", True, "backbeat", bpm, "E", "minor", meter, "soft", seconds)
    spans = parse_timeline(harmony(attrs, seed))
    assert spans[0][1] == 0.0 and spans[-1][2] == pytest.approx(seconds)
    score = _compose(attrs, np.random.default_rng([seed, _RENDER_STREAM]))
    features = {name: set(np.flatnonzero(chord_features(1, 1.0, ((name, 0.0, 1.0),))[0, 13:].numpy()))
                for name, _, _ in spans}
    for note in score.chords:
        name = next(n for n, a, b in spans if a - 1e-5 <= note.start < b - 1e-5)  # spans are rounded to 1 us
        assert note.midi % 12 in features[name]
    assert len({name for name, _, _ in spans}) >= 3  # the harmony moves


def test_rotating_a_timeline_wraps_it():
    spans = (("Am", 0.0, 2.0), ("F", 2.0, 4.0), ("C", 4.0, 8.0))
    assert rotate_spans(spans, 2.0, 8.0) == (("F", 0.0, 2.0), ("C", 2.0, 6.0), ("Am", 6.0, 8.0))
    assert rotate_spans(spans, 5.0, 8.0) == (("C", 0.0, 3.0), ("Am", 3.0, 5.0), ("F", 5.0, 7.0), ("C", 7.0, 8.0))


# --- features -----------------------------------------------------------------------------------

def test_chord_features_root_and_triad_keep_the_offset_and_absent_is_zero():
    rate = 21.533
    spans = lay_chords(parse_chords("Am F C Bdim"), 40.0, 90, 4)
    whole = chord_features(860, rate, spans)  # 39.9 s
    assert whole.shape == (860, CHORD_FEATURES) and whole[:, 0].eq(1).all()
    first = whole[0]
    assert first[1 + 9] == 1 and first[1:13].sum() == 1  # root A
    assert set(np.flatnonzero(first[13:].numpy())) == {9, 0, 4}  # A C E
    bdim = whole[round(3 * 8 / 3 * rate) + 2]  # in the fourth bar (bars of 2.67 s)
    assert set(np.flatnonzero(bdim[13:].numpy())) == {11, 2, 5}
    for offset in (0, 37, 501):
        assert torch.equal(chord_features(64, rate, spans, start_seconds=offset / rate), whole[offset:offset + 64])
    assert not chord_features(1000, rate, spans)[round(40.0 * rate) + 1:].any()  # past the last chord: none
    assert torch.equal(chord_features(7, rate, None), torch.zeros(7, CHORD_FEATURES))


def test_metadata_chords():
    given = [{"name": "Am", "start": 0, "end": 2.5}, {"name": "F#", "start": 2.5, "end": 5.0}]
    assert parse_timeline(given) == (("Am", 0.0, 2.5), ("F#", 2.5, 5.0))
    for bad in ([], [{"name": "Am7", "start": 0, "end": 1}], [{"name": "C", "start": 2, "end": 1}],
                [{"name": "C", "start": 0, "end": 2}, {"name": "G", "start": 1, "end": 3}],
                [{"name": "C", "start": 0, "end": float("inf")}], "Am F", [["C", 0, 1]]):
        with pytest.raises(SalongError, match=r"are not chords; give a list of \{\"name\", \"start\", \"end\"\}"):
            parse_timeline(bad)


# --- the DiT ------------------------------------------------------------------------------------

def _inputs(b=2, frames=16):
    torch.manual_seed(1)
    return dict(x=torch.randn(b, 64, frames), t=torch.rand(b), cond_tokens=torch.randn(b, 77, 128),
                seconds_start=torch.tensor([0.0, 3.0][:b]), seconds_total=torch.tensor([30.0, 60.0][:b]))


def test_chords_added_to_a_trained_model_start_at_its_predictions_then_matter():
    from salong.dit import PRESETS, DiT

    base = DiT(dataclasses.replace(PRESETS["tiny"], controls=("beat", "key")))
    torch.manual_seed(2)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.05 * torch.randn_like(p))
    dit = DiT(dataclasses.replace(PRESETS["tiny"], controls=("beat", "key", "chords")))
    missing = set(dit.state_dict()) - set(base.state_dict())
    assert missing == {"chords_embed.weight"} and not dit.chords_embed.weight.any()
    dit.load_state_dict({**base.state_dict(), "chords_embed.weight": dit.chords_embed.weight})
    args = _inputs()
    spans = lay_chords(parse_chords("Am F C G"), 8.0, 240, 4)
    chords = torch.stack([chord_features(16, 2.0, spans), chord_features(16, 2.0, spans, start_seconds=1.0)])
    with torch.no_grad():
        assert torch.equal(dit(**args, chords=chords), base(**args))  # update 0: the old model exactly
        dit.chords_embed.weight.normal_(0, 0.1)
        out = dit(**args, chords=chords)
        assert not torch.allclose(out, base(**args))
        assert torch.equal(dit(**args, chords=torch.zeros_like(chords)), base(**args))  # absent: nothing added
        drop = torch.tensor([True, False])
        dropped = dit(**args, chords=chords, cond_drop_mask=drop)
        torch.testing.assert_close(dropped[0], base(**args, cond_drop_mask=drop)[0])
        torch.testing.assert_close(dropped[1], out[1])
        # a model without the conditioner ignores the features
        assert torch.equal(base(**args, chords=chords), base(**args))


# --- generation ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chords_path(tmp_path_factory):
    return saved_with_controls(tmp_path_factory, ("beat", "key", "form", "chords"), "chords")


@pytest.fixture(scope="module")
def form_path(tmp_path_factory):
    return saved_with_controls(tmp_path_factory, ("beat", "key", "form"), "form")


def test_chords_change_the_song_and_auto_is_drawn_in_the_key(chords_path):
    from salong.pipeline import Generator

    g = Generator.load(chords_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model with the conditioner says nothing
        auto = g.generate("calm piano in A minor", 2.5, seed=3, bpm=240)
        listed = g.generate("calm piano in A minor", 2.5, seed=3, bpm=240, chords="Dm G")
        none = g.generate("calm piano in A minor", 2.5, seed=3, bpm=240, chords="none")
        no_key = g.generate("calm piano", 2.5, seed=3, bpm=240)
    assert auto.request.chords == chords_text(auto_progressions(A_MINOR, 3), A_MINOR)  # by degree
    assert auto.request.controls.chords == lay_chords(auto_progressions(A_MINOR, 3), 2.5, 240)
    assert listed.request.chords == "Dm G"
    assert listed.request.controls.chords == (("Dm", 0.0, 1.0), ("G", 1.0, 2.0), ("Dm", 2.0, 2.5))
    assert none.request.chords == "none" and none.request.controls.chords is None
    assert no_key.request.chords is None and no_key.request.controls.chords is None  # auto needs a key
    assert not np.array_equal(auto.audio, listed.audio) and not np.array_equal(listed.audio, none.audio)
    again = g.generate("calm piano in A minor", 2.5, seed=3, bpm=240, chords="iv VII")
    assert np.array_equal(listed.audio, again.audio)  # the same chords by degree
    # the unconditional half of guidance gets none
    seen = []
    forward = g.dit.forward
    g.dit.forward = lambda *a, **kw: (seen.append(kw["chords"]), forward(*a, **kw))[1]
    g.generate("calm piano in A minor", 2.5, seed=3, bpm=240, chords="Dm G", steps=2)
    cond, uncond = seen[0].chunk(2)
    assert cond.any() and not uncond.any()


def test_a_loops_seam_pass_reads_the_chords_rotated_with_the_song(chords_path, monkeypatch):
    import salong.pipeline as pipeline
    from salong.pipeline import Generator

    g = Generator.load(chords_path)
    seen = []
    features = pipeline.chord_features
    monkeypatch.setattr(pipeline, "chord_features", lambda frames, rate, spans, start_seconds=0.0:
                        (seen.append(spans), features(frames, rate, spans, start_seconds))[1])
    loop = g.loop("calm piano", 2.0, seed=1, steps=2, bpm=240, meter="2/4", chords="Am F C G")
    spans = loop.request.controls.chords
    assert spans == (("Am", 0.0, 0.5), ("F", 0.5, 1.0), ("C", 1.0, 1.5), ("G", 1.5, 2.0))
    assert seen == [spans, rotate_spans(spans, 1.0, 2.0)]  # rotated by two bars, as the song


def test_a_model_without_the_chords_conditioner_samples_as_before(form_path, monkeypatch):
    from salong.pipeline import Generator

    g = Generator.load(form_path)
    called = []
    forward = g.dit.forward
    monkeypatch.setattr(g.dit, "forward", lambda *a, **kw: (called.append(sorted(kw)), forward(*a, **kw))[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto and none: nothing said
        plain = g.generate("calm piano in A minor", 2.0, seed=5)
        none = g.generate("calm piano in A minor", 2.0, seed=5, chords="none")
    with pytest.warns(UserWarning, match=r"^this model has no chords conditioner, and its captions have no words for "
                                         r"chords; the song is sampled without --chords$"):
        listed = g.generate("calm piano in A minor", 2.0, seed=5, chords="Am F")
    assert np.array_equal(plain.audio, none.audio) and np.array_equal(plain.audio, listed.audio)
    assert all("chords" not in keys for keys in called)  # the DiT is called exactly as before
    assert plain.request.chords is None and listed.request.chords == "Am F"


# --- the recipe, info, --like, prompts files, --json ---------------------------------------------

def test_cli_chords_recipe_info_like_json_and_prompts_file(tmp_path, capsys, chords_path):
    import soundfile as sf

    from salong.recipe import Recipe, read_recipe

    take = tmp_path / "take.wav"
    code, _, err = run_cli(capsys, "generate", "calm piano at 240 BPM in A minor", "-s", 2.5, "--seed", 2,
                           "--chords", "Am,F", "--model", chords_path, "-o", take)
    assert code == 0, err
    recipe = read_recipe(take)
    assert recipe.request.chords == "Am F" and json.loads(recipe.to_json())["chords"] == "Am F"
    code, out, _ = run_cli(capsys, "info", take)
    assert "chords: Am F\n" in out and "--chords 'Am F'" in out
    again = tmp_path / "again.wav"
    code, _, err = run_cli(capsys, "generate", "--like", take, "-o", again)
    assert code == 0, err
    assert np.array_equal(sf.read(take)[0], sf.read(again)[0]) and read_recipe(again).request.chords == "Am F"
    # auto is recorded by degree, so --like with another key moves it there
    auto = tmp_path / "auto.wav"
    code, _, err = run_cli(capsys, "generate", "calm piano at 240 BPM in A minor", "-s", 2.5, "--seed", 2,
                           "--model", chords_path, "-o", auto)
    assert code == 0, err
    degrees = read_recipe(auto).request.chords
    assert degrees == chords_text(auto_progressions(A_MINOR, 2), A_MINOR)
    moved = tmp_path / "moved.wav"
    code, _, err = run_cli(capsys, "generate", "--like", auto, "--key", "C minor", "-o", moved)
    assert code == 0, err
    request = read_recipe(moved).request  # the same degrees, now read in C minor
    assert request.chords == degrees and request.controls.key == parse_key("C minor")
    assert parse_chords(degrees, request.controls.key) == auto_progressions(parse_key("C minor"), 2)
    # a recipe from before the chords control reads as auto
    old = json.loads(recipe.to_json())
    del old["chords"]
    assert Recipe.from_json(json.dumps(old), "'t.wav'").request.chords is None
    lines = [json.dumps({"prompt": "calm piano in C major", "chords": "C G", "output": "a.wav", "seed": 1}),
             json.dumps({"prompt": "calm piano", "chords": "none", "output": "b.wav", "seed": 1}),
             json.dumps({"prompt": "calm piano", "chords": "I V", "output": "c.wav", "seed": 1})]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(capsys, "generate", "--prompts", tmp_path / "p.jsonl", "-s", 2, "--json",
                             "--model", chords_path, "-o", tmp_path / "out")
    assert code != 0 and "p.jsonl line 3: --chords 'I V' names chords by degree, which needs a key" in err
    assert [json.loads(line)["chords"] for line in out.splitlines()] == ["C G", "none"]


@pytest.mark.parametrize("args,pattern", [
    (["calm", "--chords", "Am F7"], r"^--chords 'Am F7': 'F7' is not a triad"),
    (["calm", "--chords", "I IV V"], r"^--chords 'I IV V' names chords by degree, which needs a key"),
])
def test_bad_chords_fail_before_the_model_loads(tmp_path, capsys, args, pattern):
    code, out, err = run_cli(capsys, "generate", *args, "-s", 1, "--model", tmp_path / "missing.safetensors",
                             "-o", tmp_path / "x.wav")
    assert code != 0 and out == "" and re.search(pattern, err.removeprefix("error: "))
    assert err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# --- training data and dropout ------------------------------------------------------------------

def test_crops_carry_the_chords_at_their_offset_and_none_past_the_end(tmp_path):
    from salong.train.dit_data import CropLengths, LatentDataset

    frames, rate = 3000, 21.5
    spans = lay_chords(parse_chords("Am F C G"), frames / rate, 100, 4)
    save_file({"latents": torch.zeros(64, frames), "text": torch.randn(2, 77, 128)},
              str(tmp_path / "000000.safetensors"))
    save_file({"latent": torch.zeros(64)}, str(tmp_path / "silence.safetensors"))
    item = {"file": "000000.safetensors", "path": "a.wav", "caption": "x", "duration": frames / rate}
    with_chords = {**item, **Controls(chords=spans).record()}  # as the cache holds a file's controls
    dataset = LatentDataset(tmp_path, [with_chords, item], CropLengths(64, 64, 2), rate)
    whole = chord_features(frames, rate, spans)
    starts = set()
    for seed in range(12):
        crop = dataset[(0, seed, 0)]
        offset = int(np.random.default_rng(seed).integers(0, frames - 64 + 1))  # the crop's own draw
        starts.add(offset)
        torch.testing.assert_close(crop["chords"], whole[offset:offset + 64])
        assert not dataset[(1, seed, 0)]["chords"].any()  # no chords: the control is absent
    assert len(starts) > 1
    long = LatentDataset(tmp_path, [with_chords], CropLengths(3200, 3200, 2), rate)[(0, 0, 0)]
    torch.testing.assert_close(long["chords"][:frames], whole)
    assert not long["chords"][frames:].any()  # the padding has no chord


def test_metadata_and_synth_corpora_give_chords(tmp_path):
    import soundfile as sf

    from salong.data import index_audio
    from salong.synth.corpus import recaption_corpus, write_corpus

    for name in ("a", "b"):
        sf.write(tmp_path / f"{name}.wav", np.zeros((441, 2), dtype=np.float32), 44100)
    lines = [{"path": "a.wav", "caption": "x", "chords": [{"name": "Am", "start": 0, "end": 5}]},
             {"path": "b.wav", "caption": "y"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    files, _ = index_audio(tmp_path)
    assert [f.controls.chords for f in files] == [(("Am", 0.0, 5.0),), None]
    lines[0]["chords"] = [{"name": "Am7", "start": 0, "end": 5}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    with pytest.raises(SalongError, match=r"metadata.jsonl line 1: chords .* are not chords; .*; fix or remove"):
        index_audio(tmp_path)
    corpus = tmp_path / "corpus"
    write_corpus(2, corpus, seed=4, min_seconds=3.0, max_seconds=6.0)
    entries = [json.loads(line) for line in (corpus / "metadata.jsonl").read_text().splitlines()]
    files, _ = index_audio(corpus)
    for entry, f in zip(entries, files):
        assert f.controls.chords == parse_timeline(entry["chords"]) and f.controls.chords[-1][2] == pytest.approx(
            entry["duration"], abs=1e-3)
    # a corpus written before the chords were recorded gets them from --recaption (the audio untouched)
    for entry in entries:
        del entry["chords"]
    (corpus / "metadata.jsonl").write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    recaption_corpus(corpus, 1)
    assert [json.loads(line)["chords"] for line in (corpus / "metadata.jsonl").read_text().splitlines()] == [
        e["chords"] for e in [json.loads(line) for line in (corpus / "metadata.jsonl").read_text().splitlines()]]
    assert all(json.loads(line)["chords"] for line in (corpus / "metadata.jsonl").read_text().splitlines())


def _task(controls, dropout, monkeypatch):
    return dit_task_inputs(controls, dropout, monkeypatch, beat=(8, BEAT_FEATURES), key=(KEY_FEATURES,),
                           drums=(DRUM_FEATURES,), form=(8, FORM_FEATURES), chords=(8, CHORD_FEATURES))


def test_chords_dropout_is_drawn_apart_and_older_models_draw_as_before(monkeypatch):
    seen = _task(("beat", "key", "drums", "form", "chords"), 0.5, monkeypatch)
    kept_chords, kept_form = seen["chords"][:, 0, 0] > 0, seen["form"][:, 0, 0] > 0
    assert 0.35 < kept_chords.float().mean() < 0.65 and not torch.equal(kept_chords, kept_form)
    assert all(row.all() or not row.any() for row in seen["chords"])  # a row is kept or dropped whole
    older = _task(("beat", "key", "drums", "form"), 0.5, monkeypatch)  # without chords: the same draws as before
    assert "chords" not in older
    assert all(torch.equal(older[name], seen[name]) for name in ("beat", "key", "drums", "form"))
