"""Edits (salong.edit): inpaint, extend and loop keep the source bit for bit outside the
crossfades, for v and rectified-flow models; bad regions fail in one line before the model
loads; the recipe records the edit and remakes it."""

import dataclasses
import json
import re
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import run_cli, tiny_generator
from salong.diffusion import get_sampler, get_sigmas_loglinear, get_ts_logsnr
from salong.edit import (CROSSFADE_SECONDS, LOOP_SEAM_SECONDS, SILENCE_FRAME, SPLICE_SEARCH_SECONDS, Fill, keep_known,
                         sound_bounds, source_fill, splice, splice_points)
from salong.errors import Note, SalongError
from salong.request import SongRequest

RATE = 44100
FADE = round(CROSSFADE_SECONDS * RATE)
REACH = round(SPLICE_SEARCH_SECONDS * RATE)


@pytest.fixture(scope="module", params=["v", "rf"])
def gen(request):
    generator = tiny_generator()
    if request.param == "rf":  # the same tiny networks, sampled as a rectified-flow model
        from salong.pipeline import Generator

        config = dataclasses.replace(generator.config, objective="rf",
                                     sampling=dataclasses.replace(generator.config.sampling, sampler="pingpong"))
        generator = Generator(config, generator.dit, generator.autoencoder, generator.text_encoder.clap)
    return generator


@pytest.fixture(scope="module")
def source(gen):
    return gen.generate("calm piano", 2.0, seed=3, steps=3).audio


def noise_song(seconds, rate=RATE, seed=0):
    """A song-like stand-in longer than the tiny window (2.97 s), at a level a song has."""
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((2, round(seconds * rate)))).astype(np.float32)


def fading_song(sound=1.5, silence=0.5, rate=RATE):
    """`noise_song` of `sound` seconds, then `silence` seconds of digital silence: a song made at
    its own length, that fades out early."""
    song = noise_song(sound + silence, rate)
    song[:, round(sound * rate) :] = 0
    return song


def test_inpaint_keeps_the_rest_bit_for_bit(gen, source):
    song = gen.inpaint("happy brass", (source, RATE), 0.8, 1.3, seed=1, steps=3)
    start, end = round(0.8 * RATE), round(1.3 * RATE)
    assert song.audio.shape == source.shape and song.request.seconds == 2.0
    assert np.array_equal(song.audio[:, : start - FADE], source[:, : start - FADE])
    assert np.array_equal(song.audio[:, end + FADE :], source[:, end + FADE :])
    assert not np.allclose(song.audio[:, start:end], source[:, start:end])
    again = gen.inpaint("happy brass", (source, RATE), 0.8, 1.3, seed=1, steps=3)
    assert np.array_equal(song.audio, again.audio)


def test_inpaint_in_a_song_longer_than_the_window(gen):
    long = noise_song(5.0)
    song = gen.inpaint("calm piano", (long, RATE), 3.0, 3.5, seed=1, steps=2)
    start, end = 3 * RATE, round(3.5 * RATE)
    assert song.audio.shape == long.shape
    assert np.array_equal(song.audio[:, : start - FADE], long[:, : start - FADE])
    assert np.array_equal(song.audio[:, end + FADE :], long[:, end + FADE :])


def test_a_source_at_another_rate_is_kept_as_resampled(gen, tmp_path):
    from salong.audio import resample

    path = tmp_path / "48k.wav"
    sf.write(path, noise_song(1.5, 48000).T, 48000, subtype="FLOAT")
    song = gen.inpaint("calm piano", str(path), 0.5, 1.0, seed=1, steps=2)
    kept = resample(sf.read(path, dtype="float32", always_2d=True)[0].T, 48000, RATE)
    assert song.audio.shape == kept.shape and song.request.seconds == kept.shape[1] / RATE
    assert np.array_equal(song.audio[:, : RATE // 2 - FADE], kept[:, : RATE // 2 - FADE])
    assert np.array_equal(song.audio[:, RATE + FADE :], kept[:, RATE + FADE :])


@pytest.mark.parametrize("before", [False, True])
def test_extend_keeps_the_song_and_adds_to_it(gen, source, before):
    song = gen.extend("calm piano", (source, RATE), 2.6, before=before, seed=1, steps=3)
    have, total = source.shape[1], round(2.6 * RATE)
    assert song.audio.shape == (2, total)
    if before:
        new = total - have
        assert np.array_equal(song.audio[:, new + FADE :], source[:, FADE:])
        assert np.abs(song.audio[:, :new]).max() > 0
    else:
        assert np.array_equal(song.audio[:, : have - FADE], source[:, : have - FADE])
        assert song.audio[:, -1].tolist() == [0.0, 0.0]  # the new end is faded, as a new song's


def test_an_extension_asked_for_in_no_key_or_tempo_continues_in_its_sources(gen, source, monkeypatch):
    from salong.controls import parse_key
    from salong.evaluation import estimate_key, estimate_tempo

    with pytest.warns(UserWarning, match="no key or tempo given: the extension is asked for in .* BPM, as estimated"):
        song = gen.extend("calm piano", (source, RATE), 2.6, seed=1, steps=2)
    heard = " ".join(estimate_key(source, RATE))
    assert song.request.key == heard and song.request.controls.key == parse_key(heard)
    assert song.request.bpm == song.request.controls.bpm == round(estimate_tempo(source, RATE))
    stated = gen.extend("calm piano in A minor at 90 BPM", (source, RATE), 2.6, seed=1, steps=2)
    assert stated.request.key is None and str(stated.request.controls.key) == "A minor"
    assert stated.request.bpm is None and stated.request.controls.bpm == 90
    given = gen.extend("calm piano", (source, RATE), 2.6, seed=1, steps=2, key="F# major", bpm=100)
    assert (given.request.key, given.request.bpm) == ("F# major", 100)
    beat = dataclasses.replace(gen.config, dit=dataclasses.replace(gen.config.dit, controls=("beat",)))
    for on_grid in (False, True):  # a beat grid from 0 s only where the source's beats fall on it
        monkeypatch.setattr("salong.edit.beats_on_grid", lambda *args, on=on_grid: on)
        with pytest.warns(UserWarning, match="no key or tempo given" if on_grid else "no key given: .* in [^,]*, as"):
            request = SongRequest("calm piano", 2.6, extend=(source, RATE)).resolve(beat)
        assert request.key == heard and request.bpm == (song.request.bpm if on_grid else None)


def test_an_extension_without_librosa_follows_its_prompt(gen, source, monkeypatch):
    """librosa is an extra: without it an extension still renders, in the prompt's key and tempo."""
    monkeypatch.setitem(sys.modules, "librosa", None)  # import librosa raises ImportError
    with pytest.warns(UserWarning, match="follows its prompt alone .* pip install"):
        request = SongRequest("calm piano", 2.6, extend=(source, RATE)).resolve(gen.config)
    assert request.key is None and request.bpm is None and request.controls.key is None


def test_beats_on_the_grid_from_0_s():
    from salong.edit import beats_on_grid

    clicks = np.zeros((1, 12 * RATE), np.float32)
    for beat in range(24):  # 120 BPM from 0 s
        clicks[0, beat * RATE // 2 : beat * RATE // 2 + 200] = 0.5
    assert beats_on_grid(clicks, RATE, 120.0, 0.0) and beats_on_grid(clicks, RATE, 120.0, 3.0)
    assert not beats_on_grid(clicks, RATE, 120.0, 0.25)  # half a beat off


def test_extend_a_song_longer_than_the_window_from_its_last_part(gen, monkeypatch):
    long = noise_song(4.0)
    seen = []
    forward = gen.dit.forward
    monkeypatch.setattr(gen.dit, "forward", lambda x, *a, **kw: (seen.append(x.shape[-1]), forward(x, *a, **kw))[1])
    song = gen.extend("calm piano", (long, RATE), 5.0, seed=1, steps=2)
    assert song.audio.shape == (2, 5 * RATE)
    assert np.array_equal(song.audio[:, : 4 * RATE - FADE], long[:, : 4 * RATE - FADE])
    assert set(seen) == {gen.config.dit.window}  # one window: the song's last part and the new second


def test_loop_is_the_song_with_its_wrap_around_regenerated(gen):
    loop = gen.loop("drums at 120 BPM", 2.5, seed=4, steps=3)
    assert loop.request.seconds == 2.0 and loop.audio.shape == (2, 2 * RATE)  # one 4/4 bar at 120 BPM
    plain = gen.generate("drums at 120 BPM", 2.0, seed=4, steps=3)
    half = min(round(LOOP_SEAM_SECONDS * RATE), loop.audio.shape[1] // 4)
    body = slice(half + FADE, loop.audio.shape[1] - half - FADE)
    assert np.array_equal(loop.audio[:, body], plain.audio[:, body])
    assert not np.array_equal(loop.audio[:, :half], plain.audio[:, :half])


def test_loop_wrap_is_no_jump(gen):
    """Played twice in a row, the step from the last sample to the first is like the song's
    own steps; a plain song's end (faded to silence) against its start is not."""
    loop = gen.loop("calm piano", 2.0, seed=5, steps=3).audio
    steps = np.abs(np.diff(loop, axis=1))
    assert np.abs(loop[:, 0] - loop[:, -1]).max() <= np.percentile(steps, 99.9)
    assert np.abs(loop[:, -1]).max() > 0  # no fade to silence at the wrap


@pytest.mark.parametrize("objective,sampler", [("v", "dpmpp-2m"), ("v", "dpmpp-2m-sde"), ("v", "euler"),
                                               ("rf", "pingpong")])
def test_kept_latents_come_out_exactly(objective, sampler):
    torch.manual_seed(0)
    known, noise = torch.randn(1, 4, 10), torch.randn(1, 4, 10)
    regenerate = torch.zeros(10, dtype=torch.bool)
    regenerate[3:6] = True
    seen = []

    def denoiser(x, sigma):
        seen.append(x.clone())
        return 0.5 * x  # anything; the kept frames must not follow it

    sigmas = get_sigmas_loglinear(4, 0.3, 80.0) if objective == "v" else get_ts_logsnr(4)
    x = noise * sigmas[0] if objective == "v" else noise
    out = get_sampler(sampler, objective)(keep_known(denoiser, known, regenerate, noise, objective), x, sigmas,
                                          generator=torch.Generator().manual_seed(1))
    if sampler == "euler":  # its last step, x + (denoised - x), lands there to float rounding
        assert torch.allclose(out[..., ~regenerate], known[..., ~regenerate], atol=1e-5)
    else:
        assert torch.equal(out[..., ~regenerate], known[..., ~regenerate])
    assert not torch.equal(out[..., regenerate], known[..., regenerate])
    level = float(sigmas[1])
    expected = known + level * noise if objective == "v" else (1 - level) * known + level * noise
    assert torch.allclose(seen[1][..., ~regenerate], expected[..., ~regenerate])  # the DiT sees them noised


def test_splice_is_equal_power_and_exact_outside():
    known, made = np.ones((1, 100), np.float32), -np.ones((1, 100), np.float32)
    out = splice(Fill(known, 40, 60, 10), made, 0)
    assert np.array_equal(out[:, :30], known[:, :30]) and np.array_equal(out[:, 70:], known[:, 70:])
    assert np.array_equal(out[:, 40:60], made[:, 40:60])
    gain_in = (1 - out[0, 30:40]) / 2  # out = cos * 1 + sin * -1 over the fade; cos^2 + sin^2 = 1
    assert np.all(np.diff(out[0, 30:40]) < 0) and np.all(np.diff(out[0, 60:70]) > 0)
    assert 0 < gain_in[0] and gain_in[-1] < 1


def test_splice_moves_into_the_region_to_where_the_two_match():
    """Known audio is one tone; the made audio another, except a stretch early in the region
    where it is the known tone itself: the start seam moves there, where the splice changes
    nothing, within the search and with the kept part exact."""
    t = np.arange(3 * RATE) / RATE
    known = np.tile(0.3 * np.sin(2 * np.pi * 440 * t), (2, 1)).astype(np.float32)
    made = np.tile(0.3 * np.sin(2 * np.pi * 3000 * t), (2, 1)).astype(np.float32)
    start, end, search = RATE, 2 * RATE, round(SPLICE_SEARCH_SECONDS * RATE)
    same = slice(start + RATE // 20, start + 3 * RATE // 10)  # 50 ms to 300 ms into the region
    made[:, same] = known[:, same]
    fill = Fill(known, start, end, FADE, search)
    moved, back = splice_points(fill, made[:, start - FADE : end + FADE])
    assert same.start + FADE <= moved <= min(same.stop - FADE, start + search)  # the crossfade lies in the match
    out = splice(fill, made, 0)
    assert np.array_equal(out[:, : moved - FADE], known[:, : moved - FADE])
    assert np.array_equal(out[:, moved:back], made[:, moved:back]) and end - search <= back <= end
    assert np.array_equal(out[:, back + FADE :], known[:, back + FADE :])
    assert splice_points(dataclasses.replace(fill, search=0), made[:, start - FADE : end + FADE]) == (start, end)


# --- an extension's cut ----------------------------------------------------------------------

FRAME_SECONDS = SILENCE_FRAME / RATE  # how far past the sound the frame that ends it may reach


def test_sound_bounds_skip_a_silent_tail_and_head():
    song = fading_song()  # 1.5 s of sound, 0.5 s of zeros
    start, end = sound_bounds(song, RATE)
    assert start == 0.0 and 1.5 <= end <= 1.5 + FRAME_SECONDS + 0.01 and round(end * 100) == end * 100
    intro = np.concatenate([np.zeros((2, RATE // 2), np.float32), song], axis=1)  # 0.5 s of zeros first
    start, end_too = sound_bounds(intro, RATE)
    assert 0.5 - FRAME_SECONDS - 0.01 <= start <= 0.5 and round(start * 100) == start * 100
    assert end_too == pytest.approx(end + 0.5)


def test_a_tail_at_minus_60_dbfs_is_silence_but_an_audible_fade_is_not():
    song = noise_song(2.0)
    hum = song.copy()
    hum[:, RATE:] *= 10 ** (-60 / 20) / 0.1  # the last second at -60 dBFS RMS
    assert 1.0 <= sound_bounds(hum, RATE)[1] <= 1.0 + FRAME_SECONDS + 0.01
    fade = song.copy()
    fade[:, RATE:] *= np.geomspace(1, 10 ** (-28 / 20), RATE, dtype=np.float32)  # -20 down to -48 dBFS: heard
    assert sound_bounds(fade, RATE) == (0.0, 2.0)
    rest = fading_song(1.8, 0.2)  # a silence shorter than MIN_SILENCE_SECONDS is a rest, and kept
    assert sound_bounds(rest, RATE) == (0.0, 2.0)


def test_a_silent_song_and_one_silent_channel():
    assert sound_bounds(np.zeros((2, 2 * RATE), np.float32), RATE) == (0.0, 2.0)  # extended from its very end
    one = noise_song(2.0)
    one[1] = 0  # the right channel silent throughout: the left still sounds
    assert sound_bounds(one, RATE) == (0.0, 2.0)
    one[0, round(1.5 * RATE) :] = 0  # both silent from 1.5 s
    assert sound_bounds(one, RATE) == sound_bounds(fading_song(), RATE)
    assert sound_bounds(one[:1], RATE)[1] == sound_bounds(fading_song()[:1], RATE)[1]  # mono too


def test_extend_from_a_point_keeps_the_song_up_to_it(gen):
    long = noise_song(4.0)
    song = gen.extend("calm piano", (long, RATE), 3.0, start=1.2, seed=1, steps=2)
    cut = round(1.2 * RATE)
    assert song.audio.shape == (2, 3 * RATE) and song.request.start == 1.2
    assert np.array_equal(song.audio[:, : cut - FADE], long[:, : cut - FADE])
    assert not np.allclose(song.audio[:, cut : 2 * RATE], long[:, cut : 2 * RATE])  # the rest is new


def test_extend_skips_the_silent_tail_by_itself(gen):
    quiet = fading_song()
    _, end = sound_bounds(quiet, RATE)
    with pytest.warns(Note, match=rf"the source audio's last {2 - end:.2f} s are silent; the extension starts at "
                                  rf"{end:g} s \(give --from 2 to keep them\)"):
        song = gen.extend("calm piano", (quiet, RATE), 2.6, seed=1, steps=2)
    cut = round(end * RATE)
    assert song.request.start == end and song.audio.shape == (2, round(2.6 * RATE))
    assert np.array_equal(song.audio[:, : cut - FADE], quiet[:, : cut - FADE])
    assert np.abs(song.audio[:, cut : 2 * RATE]).max() > 1e-3  # new audio where the silence was
    kept = gen.extend("calm piano", (quiet, RATE), 2.6, keep_silence=True, seed=1, steps=2)
    assert kept.request.start == 2.0 and np.array_equal(kept.audio[:, : 2 * RATE - FADE], quiet[:, : 2 * RATE - FADE])


@pytest.mark.parametrize("cut", [0.5, None])
def test_extend_before_a_point_keeps_the_song_from_it(gen, cut):
    quiet = np.concatenate([np.zeros((2, RATE // 2), np.float32), noise_song(1.5)], axis=1)  # a silent head
    song = gen.extend("calm piano", (quiet, RATE), 2.6, before=True, end=cut, seed=1, steps=2)
    at = round(song.request.end * RATE)  # the default: where the sound starts
    new = round(2.6 * RATE) - (2 * RATE - at)
    assert song.audio.shape == (2, round(2.6 * RATE)) and 0.5 - FRAME_SECONDS - 0.01 <= song.request.end <= 0.5
    assert np.array_equal(song.audio[:, new + FADE :], quiet[:, at + FADE :])


# --- an extension's crossfade, where its source goes on past the cut ---------------------------


def extension_fill(source, seconds, before=False, **cut):
    request = SongRequest("calm piano", seconds, extend=(source, RATE), extend_before=before or None, **cut)
    return source_fill(request, RATE, 2)


def test_an_extension_past_a_silent_tail_it_left_out_does_not_search_into_it():
    """The cut found by itself is where the sound ends: the silence after it is not offered to
    the splice (a crossfade moved into it would leave a gap before the new part)."""
    fading = np.concatenate([noise_song(1.5), np.zeros((2, RATE // 2), np.float32)], axis=1)
    for before, source in ((False, fading), (True, fading[:, ::-1].copy())):
        fill = extension_fill(source, 3.0, before)
        assert fill.source is None and fill.search == 0
        # as a recipe gives it back: the cut found, now given; and a cut given a little inside the sound
        cut = fill.end / RATE - 1.0 if before else fill.start / RATE  # the cut in the source, s
        found = extension_fill(source, 3.0, before, **{"end" if before else "start": cut})
        assert found.search == 0 and found.source is None
        inside = extension_fill(source, 3.0, before, **{"end" if before else "start": 1.4 if not before else 0.6})
        assert 0 < inside.search <= round(0.1 * RATE) + round(0.05 * RATE)  # up to where the sound ends
        start, end = sound_bounds(source, RATE)
        assert 1.5 <= (2.0 - start if before else end) < 1.6  # the silent half second left out
        kept = fill.known[:, fill.end :] if before else fill.known[:, : fill.start]
        assert kept.shape[1] == round((2.0 - start if before else end) * RATE)


@pytest.mark.parametrize("before,cut,seconds,past", [
    (False, 1.0, 3.0, REACH),  # --from inside the source: up to SPLICE_SEARCH_SECONDS of it past the cut
    (False, 1.9, 3.0, RATE // 10),  # no more than the source has past the cut
    (False, 1.9, 2.0, RATE // 10),  # nor than the new part's length
    (False, 1.0, 1.1, RATE // 10),
    (False, None, 3.0, 0),  # extended from its very end: nothing past the cut, as before
    (True, 1.0, 2.5, REACH),
    (True, 0.1, 2.5, RATE // 10),
    (True, None, 2.5, 0),
])
def test_an_extensions_fill_keeps_the_source_past_its_cut_for_the_splice_alone(before, cut, seconds, past):
    long = noise_song(2.0)
    fill = extension_fill(long, seconds, before, **({} if cut is None else {"end" if before else "start": cut}))
    at = (0 if before else 2 * RATE) if cut is None else round(cut * RATE)  # the cut, in the source
    total = round(seconds * RATE)
    assert fill.samples == total and fill.search == past and (fill.source is None) == (past == 0)
    if not before:
        assert (fill.start, fill.end) == (at, total)
        assert np.array_equal(fill.known[:, :at], long[:, :at]) and not fill.known[:, at:].any()  # the sampler's
        assert np.array_equal(fill.kept[:, : at + past], long[:, : at + past]) and not fill.kept[:, at + past :].any()
    else:
        new = total - (2 * RATE - at)
        assert (fill.start, fill.end) == (0, new)
        assert np.array_equal(fill.known[:, new:], long[:, at:]) and not fill.known[:, :new].any()
        assert np.array_equal(fill.kept[:, new - past :], long[:, at - past :]) and not fill.kept[:, : new - past].any()


@pytest.mark.parametrize("before", [False, True])
def test_an_extensions_crossfade_moves_into_the_new_part_where_the_two_match(before):
    """As an inpaint's: the made audio is another tone than the source's, except a stretch
    next to the cut where it is the source itself; the seam moves there, never further than
    the source kept past the cut, and the source is kept up to it bit for bit."""
    t = np.arange(3 * RATE) / RATE
    tone = np.tile(0.3 * np.sin(2 * np.pi * 440 * t), (2, 1)).astype(np.float32)
    fill = extension_fill(tone, 2.5, before, **({"end": 2.0} if before else {"start": 1.0}))
    made = np.tile(0.3 * np.sin(2 * np.pi * 3000 * t[: fill.samples]), (2, 1)).astype(np.float32)
    cut = fill.end if before else fill.start
    same = (slice(cut - 3 * RATE // 10, cut - RATE // 20) if before  # 50 ms to 300 ms into the new part
            else slice(cut + RATE // 20, cut + 3 * RATE // 10))
    made[:, same] = fill.source[:, same]
    first, last = fill.needs()
    start, end = splice_points(fill, made[:, first:last])
    out = splice(fill, made, 0)
    if before:
        assert start == 0 and max(same.start + FADE, cut - REACH) <= end <= same.stop - FADE
        assert np.array_equal(out[:, : end], made[:, : end]) and np.array_equal(out[:, end + FADE :],
                                                                               fill.source[:, end + FADE :])
    else:
        assert end == fill.samples and same.start + FADE <= start <= min(same.stop - FADE, cut + REACH)
        assert np.array_equal(out[:, : start - FADE], tone[:, : start - FADE])
        assert np.array_equal(out[:, start:], made[:, start:])
    alone = dataclasses.replace(fill, search=0, source=None)  # nothing past the cut: the seam stays at it
    assert splice_points(alone, made[:, first:last]) == (fill.start, fill.end)


@pytest.mark.parametrize("before,cut", [(False, 1.0), (False, 1.9), (True, 1.0), (True, 0.1)])
def test_an_extension_cut_inside_its_source_keeps_it_up_to_the_moved_crossfade(gen, monkeypatch, before, cut):
    """Extending a source from a cut inside it makes the same new part as extending the source
    cut there (the sampler knows the source up to the cut only); the crossfade then may move
    into the new part, with the source kept bit for bit up to it, but never past the
    source's own samples."""
    long = noise_song(2.0)
    at, total = round(cut * RATE), round(2.5 * RATE)
    settings = dict(before=before, seed=1, steps=2, key="C major", bpm=100)
    song = gen.extend("calm piano", (long, RATE), 2.5, **settings, **{"end" if before else "start": cut})
    alone = gen.extend("calm piano", (long[:, at:] if before else long[:, :at], RATE), 2.5, **settings)
    past = min(REACH, at if before else 2 * RATE - at)
    new = total - (2 * RATE - at) if before else at  # where the new part ends (starts)
    placed = np.zeros((2, total), np.float32)  # the whole source where the output holds it
    lead = total - 2 * RATE if before else 0  # output sample = source sample + lead
    placed[:, lead : lead + 2 * RATE] = long
    if before:
        differs = np.flatnonzero(np.any(song.audio != placed, axis=0))[-1] + 1  # the crossfade's end
        assert new + FADE - past <= differs <= new + FADE
        assert np.array_equal(song.audio[:, differs:], placed[:, differs:])
        assert np.array_equal(song.audio[:, : differs - FADE], alone.audio[:, : differs - FADE])  # the same new part
    else:
        differs = np.flatnonzero(np.any(song.audio != placed, axis=0))[0]  # the crossfade's start
        assert at - FADE <= differs <= at - FADE + past
        assert np.array_equal(song.audio[:, :differs], long[:, :differs])
        assert np.array_equal(song.audio[:, differs + FADE :], alone.audio[:, differs + FADE :])
    # Moved as far as it may (the search forced to its end): no further than the source has
    monkeypatch.setattr("salong.edit._crossfade_shift", lambda known, made, at, fade, search: search)
    far = gen.extend("calm piano", (long, RATE), 2.5, **settings, **{"end" if before else "start": cut})
    edge = new - past if before else new + past  # where the made audio starts (ends)
    if before:
        assert np.array_equal(far.audio[:, edge + FADE :], placed[:, edge + FADE :])
        assert not np.array_equal(far.audio[:, edge : edge + FADE], placed[:, edge : edge + FADE])
        assert np.array_equal(far.audio[:, :edge], alone.audio[:, :edge])
    else:
        assert np.array_equal(far.audio[:, : edge - FADE], long[:, : edge - FADE])
        assert not np.array_equal(far.audio[:, edge - FADE : edge], long[:, edge - FADE : edge])
        assert np.array_equal(far.audio[:, edge:], alone.audio[:, edge:])
    assert np.array_equal(gen.extend("calm piano", (long[:, at:] if before else long[:, :at], RATE), 2.5,
                                     **settings).audio, alone.audio)  # nothing past the cut: it cannot move


# --- checks --------------------------------------------------------------------------------


@pytest.mark.parametrize("settings,pattern", [
    (dict(inpaint="a.wav", start=2.0, end=1.0), "--to must be after --from"),
    (dict(inpaint="a.wav", start=1.0, end=1.0), "--to must be after --from"),
    (dict(inpaint="a.wav", start=-1.0, end=1.0), "--from must be 0 or more"),
    (dict(inpaint="a.wav", start=0.0), "--inpaint needs --to"),
    (dict(start=0.0, end=1.0), "give --inpaint SONG too"),
    (dict(extend="a.wav", start=0.0), "--from must be above 0 seconds"),
    (dict(extend="a.wav", end=1.0), "--to is for --extend-before .* give --from instead"),
    (dict(extend="a.wav", extend_before=True, start=1.0), "--from is for --extend .* give --to instead"),
    (dict(extend="a.wav", extend_before=True, end=-1.0), "--to must be 0 or more"),
    (dict(extend="a.wav", start=1.0, keep_silence=True), "--keep-silence .* give one of them"),
    (dict(keep_silence=True), "give --extend SONG too"),
    (dict(extend_before=True), "give --extend SONG too"),
    (dict(extend="a.wav", loop=True), "--extend and --loop are different edits"),
    (dict(inpaint="a.wav", start=0.0, end=1.0, init_audio="a.wav", init_noise_level=2.0), "not take --init-audio"),
])
def test_bad_edits_are_refused_when_asked(settings, pattern):
    with pytest.raises(SalongError, match=pattern):
        SongRequest("calm", 2.0, **settings)


def one_line_error(code, out, err, pattern):
    assert code != 0 and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and re.search(pattern, err), err


@pytest.fixture
def song_file(tmp_path):
    path = tmp_path / "song.wav"
    sf.write(path, noise_song(2.0).T, RATE, subtype="PCM_24")
    return path


@pytest.mark.parametrize("args,pattern", [
    (["--inpaint", "{song}", "--from", "1", "--to", "0.5"], "--to must be after --from"),
    (["--inpaint", "{song}", "--from", "2.5", "--to", "3"], r"--from 2.5 is past the end of .* \(2.00 s\)"),
    (["--inpaint", "{song}", "--from", "1", "--to", "2.5"], r"--to 2.5 is past the end"),
    (["--inpaint", "{song}", "--from", "-1", "--to", "1"], "--from must be 0 or more"),
    (["--inpaint", "{dir}/missing.wav", "--from", "0", "--to", "1"], "not found"),
    (["--inpaint", "{dir}", "--from", "0", "--to", "1"], "is a directory"),
    (["--extend", "{song}", "-s", "1.5"], r"give -s TOTAL above 2.00"),
    (["--extend", "{song}", "-s", "3", "--from", "0"], r"--from must be above 0 seconds"),
    (["--extend", "{song}", "-s", "3", "--from", "2.5"], r"--from 2.5 is past the end of .* give --from 2 or less"),
    (["--extend", "{song}", "-s", "1", "--from", "1.5"], r"--extend keeps 1.50 s of .* give -s TOTAL above 1.50"),
    (["--extend", "{song}", "-s", "3", "--to", "1"], r"--to is for --extend-before"),
    (["--extend", "{song}", "-s", "3", "--extend-before", "--from", "1"], r"--from is for --extend \(keep"),
    (["--extend", "{song}", "-s", "3", "--extend-before", "--to", "2"], r"--to 2 is not before the end of"),
    (["--extend", "{song}", "-s", "3", "--extend-before", "--to", "-1"], r"--to must be 0 or more"),
    (["--extend", "{song}", "-s", "3", "--from", "1", "--keep-silence"], r"--keep-silence .* give one of them"),
    (["-s", "3", "--from", "1"], r"give --inpaint SONG too \(or --extend SONG"),
])
def test_bad_regions_fail_in_one_line_before_the_model_loads(tmp_path, capsys, song_file, args, pattern):
    args = [a.format(song=song_file, dir=tmp_path) for a in args]
    code, out, err = run_cli(capsys, "generate", "calm", *args, "--model", tmp_path / "missing.safetensors",
                             "-o", tmp_path / "x.wav")
    one_line_error(code, out, err, pattern)
    assert not (tmp_path / "x.wav").exists()


def test_a_region_longer_than_the_window_fails_before_the_model_loads(tmp_path, capsys, generator_path, monkeypatch):
    from salong import sao

    monkeypatch.setattr(sao, "load_generator", lambda *a, **k: pytest.fail("the model loaded"))
    path = tmp_path / "long.wav"
    sf.write(path, noise_song(5.0).T, RATE, subtype="PCM_24")
    code, out, err = run_cli(capsys, "generate", "calm", "--inpaint", path, "--from", "0.5", "--to", "4",
                             "--model", generator_path, "-o", tmp_path / "x.wav")
    one_line_error(code, out, err, r"region of 3.50 s is longer than this model's window allows; the most is 2.87 s")
    code, out, err = run_cli(capsys, "generate", "calm", "--extend", path, "-s", "9",
                             "--model", generator_path, "-o", tmp_path / "x.wav")
    one_line_error(code, out, err, r"extension of 4.00 s is longer than this model's window allows")
    code, out, err = run_cli(capsys, "generate", "calm", "--extend", path, "-s", "5", "--from", "1",
                             "--model", generator_path, "-o", tmp_path / "x.wav")
    one_line_error(code, out, err, r"extension of 4.00 s is longer than this model's window allows")
    code, out, err = run_cli(capsys, "generate", "calm", "--extend", path, "-s", "5.5", "--extend-before", "--to",
                             "4", "--model", generator_path, "-o", tmp_path / "x.wav")
    one_line_error(code, out, err, r"extension of 4.50 s is longer than this model's window allows")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.wav"]


# --- recipe ----------------------------------------------------------------------------------


def test_recipe_records_the_edit_and_remakes_it(tmp_path, capsys, generator_path, song_file):
    from salong.recipe import model_sha256, read_recipe

    take = tmp_path / "take.wav"
    code, out, err = run_cli(capsys, "generate", "brass", "--inpaint", song_file, "--from", "0.5", "--to", "1", "-s", 9,
                             "--seed", "2", "--steps", "2", "--model", generator_path, "-o", take, "--no-progress")
    assert code == 0 and err.strip() == "warning: --inpaint keeps the song's own length; -s is not used", err
    recipe = read_recipe(take)
    assert recipe.request.inpaint.path == str(song_file.resolve())
    assert (recipe.request.start, recipe.request.end) == (0.5, 1.0)
    assert recipe.source_sha256 == model_sha256(song_file) and recipe.request.seconds == 2.0
    assert "--inpaint" in recipe.command(take) and "--from 0.5 --to 1.0" in recipe.command(take)
    from salong.plots import _inpainted

    assert _inpainted(take) == (0.5, 1.0)  # what `salong plot` shades
    written, original = sf.read(take, dtype="float32")[0], sf.read(song_file, dtype="float32")[0]
    assert np.array_equal(written[: RATE // 2 - FADE], original[: RATE // 2 - FADE])  # 24-bit in, 24-bit out

    again = tmp_path / "again.wav"
    code, out, err = run_cli(capsys, "generate", "--like", take, "-o", again, "--no-progress")
    assert code == 0 and "warning" not in err  # the recipe's seconds are the song's own
    assert np.array_equal(sf.read(again)[0], sf.read(take)[0])

    sf.write(song_file, noise_song(2.0, seed=9).T, RATE, subtype="PCM_24")  # the source changed since
    code, out, err = run_cli(capsys, "generate", "--like", take, "-o", tmp_path / "third.wav", "--no-progress")
    assert code == 0 and len(err.strip().splitlines()) == 1
    assert "was made from" in err and "the song will differ" in err


@pytest.mark.parametrize("args,fields", [
    (["--extend", "{song}", "-s", "2.5", "--extend-before"], {"extend_before": True}),
    (["--loop", "-s", "2.5", "--bpm", "120"], {"loop": True, "seconds": 2.0}),
])
def test_recipe_of_extend_and_loop(tmp_path, capsys, generator_path, song_file, args, fields):
    from salong.recipe import read_recipe

    take = tmp_path / "take.wav"
    args = [a.format(song=song_file) for a in args]
    code, out, err = run_cli(capsys, "generate", "calm", *args, "--seed", "1", "--steps", "2",
                             "--model", generator_path, "-o", take, "--no-progress")
    assert code == 0, err
    request = read_recipe(take).request
    assert {name: getattr(request, name) for name in fields} == fields
    again = tmp_path / "again.wav"
    assert run_cli(capsys, "generate", "--like", take, "-o", again, "--no-progress")[0] == 0
    assert np.array_equal(sf.read(again)[0], sf.read(take)[0])


@pytest.fixture
def fading_file(tmp_path):
    path = tmp_path / "fading.wav"
    sf.write(path, fading_song().T, RATE, subtype="PCM_24")
    return path


@pytest.mark.parametrize("args", [[], ["--from", "1"], ["--extend-before", "--to", "0.5"]])
def test_an_extensions_cut_is_in_its_recipe_and_remade(tmp_path, capsys, generator_path, fading_file, args):
    from salong.recipe import read_recipe

    take = tmp_path / "take.wav"
    code, out, err = run_cli(capsys, "generate", "calm", "--extend", fading_file, "-s", "2.5", *args, "--seed", "1",
                             "--steps", "2", "--model", generator_path, "-o", take, "--no-progress")
    assert code == 0, err
    original = sf.read(fading_file, dtype="float32")[0].T
    if args:
        cut = float(args[-1])
        assert "note:" not in err
    else:  # chosen where the sound ends, and said
        cut = sound_bounds(original, RATE)[1]
        assert (f"note: {fading_file}'s last {2 - cut:.2f} s are silent; the extension starts at {cut:g} s "
                "(give --from 2 to keep them)") in err.splitlines()
    recipe = read_recipe(take)
    name, flag = ("end", "--to") if "--extend-before" in args else ("start", "--from")
    assert getattr(recipe.request, name) == cut and f"{flag} {cut!r}" in recipe.command(take)
    code, out, err = run_cli(capsys, "info", take)  # `salong info`: what it is, and the command that remakes it
    assert f"edit: extended {'before' if name == 'end' else 'past'} {cut:g} s of {fading_file.resolve()}" in out
    assert recipe.command(take) in out
    written, at = sf.read(take, dtype="float32")[0].T, round(cut * RATE)
    # 24-bit in, 24-bit out: the kept samples are the file's up to the crossfade, which may move
    # into the new part by as much of the source as lies past the cut
    if name == "start":
        differs = np.flatnonzero(np.any(written[:, : 2 * RATE] != original, axis=0))[0]
        assert at - FADE <= differs <= at - FADE + min(REACH, 2 * RATE - at)
        assert np.array_equal(written[:, :differs], original[:, :differs])
    else:
        lead = round(2.5 * RATE) - 2 * RATE  # output sample = source sample + lead
        differs = np.flatnonzero(np.any(written[:, lead:] != original, axis=0))[-1] + 1
        assert at + FADE - min(REACH, at) <= differs <= at + FADE
        assert np.array_equal(written[:, lead + differs :], original[:, differs:])
    again = tmp_path / "again.wav"
    code, out, err = run_cli(capsys, "generate", "--like", take, "-o", again, "--no-progress")
    assert code == 0 and "note:" not in err, err
    assert np.array_equal(sf.read(again)[0], sf.read(take)[0])


def test_an_extension_recipe_from_before_the_cut_remakes_it_as_it_was(tmp_path, capsys, generator_path, fading_file):
    """Recipes written before extensions recorded their cut were cut at the source's very end."""
    from salong.audio import write_audio
    from salong.recipe import read_recipe

    take, old = tmp_path / "take.wav", tmp_path / "old.wav"
    assert run_cli(capsys, "generate", "calm", "--extend", fading_file, "-s", "2.5", "--seed", "1", "--steps", "2",
                   "--model", generator_path, "-o", take, "--no-progress")[0] == 0
    recipe = json.loads(read_recipe(take).to_json())
    del recipe["start"]  # as salong wrote it then
    write_audio(old, sf.read(take, dtype="float32")[0].T, RATE, tags={"comment": json.dumps(recipe)}, bit_depth="24")
    was = read_recipe(old)
    assert was.request.keep_silence is True and was.request.start is None
    assert "--keep-silence" in was.command(old) and "--from" not in was.command(old)
    assert f"edit: extended past its end of {fading_file.resolve()}" in run_cli(capsys, "info", old)[1]
    again = tmp_path / "again.wav"
    code, out, err = run_cli(capsys, "generate", "--like", old, "-o", again, "--no-progress")
    assert code == 0 and "note:" not in err, err
    remade, original = sf.read(again, dtype="float32")[0].T, sf.read(fading_file, dtype="float32")[0].T
    assert np.array_equal(remade[:, : 2 * RATE - FADE], original[:, : 2 * RATE - FADE])  # its silent tail kept
    assert read_recipe(again).request.start == 2.0  # and now recorded
    kept = tmp_path / "kept.wav"  # the take asked again to keep the silence: the same song
    assert run_cli(capsys, "generate", "--like", take, "--keep-silence", "-o", kept, "--no-progress")[0] == 0
    assert np.array_equal(sf.read(kept)[0], sf.read(again)[0])
    assert not np.array_equal(sf.read(take)[0], sf.read(again)[0])


@pytest.mark.parametrize("objective", ["v", "rf"])
def test_stable_audio_open_folders_edit_too(tmp_path, objective):
    """Their default frames are the whole window: frames past the song's end are sampled freely."""
    from conftest import write_tiny_sao
    from salong.sao import load_folder

    folder = write_tiny_sao(tmp_path / "sao", objective)
    config = json.loads((folder / "model_config.json").read_text())
    config["sample_size"] = 32 * 2048  # a 1.49 s window at hop 32: room for a region and its crossfades
    (folder / "model_config.json").write_text(json.dumps(config))
    gen = load_folder(folder)
    assert gen.config.sampling.frames == "window"
    source = noise_song(0.5)
    song = gen.inpaint("calm piano", (source, RATE), 0.2, 0.3, seed=1, steps=2)
    cut, end = round(0.2 * RATE) - FADE, round(0.3 * RATE) + FADE
    assert np.array_equal(song.audio[:, :cut], source[:, :cut]) and np.array_equal(song.audio[:, end:], source[:, end:])
    longer = gen.extend("calm piano", (source, RATE), 1.0, seed=1, steps=2)
    assert longer.audio.shape == (2, RATE) and np.array_equal(longer.audio[:, : RATE // 2 - FADE],
                                                              source[:, : RATE // 2 - FADE])


# --- prompts files and --json ------------------------------------------------------------------


def test_prompts_file_lines_edit_and_json_records_the_edit(tmp_path, capsys, generator_path, song_file):
    prompts = tmp_path / "edits.jsonl"
    lines = [{"prompt": "brass", "inpaint": str(song_file), "from": 0.5, "to": 1.0, "seed": 2, "output": "a.wav"},
             {"prompt": "brass", "inpaint": str(song_file), "start": 0.5, "end": 1.0, "seed": 2},
             {"prompt": "calm", "extend": str(song_file), "seconds": 2.5, "extend_before": True, "seed": 1},
             {"prompt": "drums", "loop": True, "seconds": 2.5, "bpm": 120, "seed": 1},
             {"prompt": "calm", "extend": str(song_file), "seconds": 2.5, "from": 1.0, "seed": 2}]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "songs"
    code, stdout, err = run_cli(capsys, "generate", "--prompts", prompts, "--steps", "2", "--model", generator_path,
                                "-o", out, "--json", "--no-progress")
    assert code == 0, err
    records = [json.loads(line) for line in stdout.splitlines()]
    assert [(r["inpaint"], r["start"], r["end"]) for r in records[:2]] == [(str(song_file.resolve()), 0.5, 1.0)] * 2
    assert records[0]["seconds"] == 2.0 and records[0]["extend"] is None and records[0]["loop"] is None
    assert records[2]["extend"] == str(song_file.resolve()) and records[2]["extend_before"] is True
    assert records[2]["seconds"] == 2.5 and records[2]["inpaint"] is None
    assert records[2]["end"] == 0.0 and records[2]["start"] is None  # the cut: no silent head, its start
    assert records[4]["start"] == 1.0 and records[4]["end"] is None and records[4]["extend_before"] is None
    assert records[3]["loop"] is True and records[3]["seconds"] == 2.0  # whole bars at 120 BPM
    first, second = (sf.read(r["path"], dtype="float32")[0] for r in records[:2])
    assert np.array_equal(first, second)  # "from"/"to" and "start"/"end" are the same region
    original = sf.read(song_file, dtype="float32")[0]
    assert np.array_equal(first[: RATE // 2 - FADE], original[: RATE // 2 - FADE])
    extended = sf.read(records[2]["path"], dtype="float32")[0]
    assert np.array_equal(extended[RATE // 2 + FADE :], original[FADE:])  # the new half second comes first
    extended = sf.read(records[4]["path"], dtype="float32")[0]
    assert extended.shape[0] == round(2.5 * RATE) and np.array_equal(extended[: RATE - FADE], original[: RATE - FADE])


@pytest.mark.parametrize("line,pattern", [
    ({"prompt": "a", "inpaint": "{song}", "from": 1.5, "to": 3}, r"line 2: --to 3 is past the end of .*\(2.00 s\)"),
    ({"prompt": "a", "inpaint": "{song}", "from": 1, "to": 0.5}, r"line 2: --to must be after --from"),
    ({"prompt": "a", "inpaint": "{song}", "from": 1}, r"line 2: --inpaint needs --to SECONDS"),
    ({"prompt": "a", "from": 0, "to": 1}, r"line 2: .*give --inpaint SONG too"),
    ({"prompt": "a", "inpaint": "{song}", "from": 0, "start": 0, "to": 1}, r"line 2: give the region's 'from' or"),
    ({"prompt": "a", "inpaint": 3, "from": 0, "to": 1}, r"line 2: inpaint must be an audio file name"),
    ({"prompt": "a", "inpaint": "{dir}/missing.wav", "from": 0, "to": 1}, r"line 2: .*not found"),
    ({"prompt": "a", "extend": "{song}", "seconds": 1.5}, r"line 2: --extend makes .* give -s TOTAL above 2.00"),
    ({"prompt": "a", "extend": "{song}", "loop": True}, r"line 2: --extend and --loop are different edits"),
    ({"prompt": "a", "extend": "{song}", "seconds": 3, "to": 1}, r"line 2: --to is for --extend-before"),
    ({"prompt": "a", "extend": "{song}", "seconds": 3, "from": 2.5}, r"line 2: --from 2.5 is past the end of"),
])
def test_a_bad_edit_line_is_named_before_the_model_loads(tmp_path, capsys, generator_path, song_file, monkeypatch,
                                                         line, pattern):
    from salong import sao

    monkeypatch.setattr(sao, "load_generator", lambda *a, **k: pytest.fail("the model loaded"))
    prompts = tmp_path / "edits.jsonl"
    line = {k: v.format(song=song_file, dir=tmp_path) if isinstance(v, str) else v for k, v in line.items()}
    prompts.write_text("# a bad edit\n" + json.dumps(line) + "\n")
    code, out, err = run_cli(capsys, "generate", "--prompts", prompts, "--model", generator_path,
                             "-o", tmp_path / "x.wav", "--no-progress")
    one_line_error(code, out, err, pattern)
    assert not (tmp_path / "x.wav").exists()


def test_an_edit_never_writes_over_its_source(tmp_path, capsys, generator_path, song_file):
    before = song_file.read_bytes()
    code, out, err = run_cli(capsys, "generate", "calm", "--inpaint", song_file, "--from", "0.5", "--to", "1",
                             "--model", generator_path, "-o", song_file, "--overwrite", "--no-progress")
    one_line_error(code, out, err, r"is the input .*song.wav'; salong never writes over its own input")
    assert song_file.read_bytes() == before
