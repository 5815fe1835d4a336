"""Audio out for a DAW: bit depths, loudness under a true-peak ceiling, NaN refusal, and the
recipe that records them (`salong.mastering`, `write_audio`, `salong generate`)."""

import json
import math

import numpy as np
import pytest
import soundfile as sf

from salong import audio as A
from salong import mastering as M
from salong.errors import SalongError
from salong.recipe import Recipe, read_recipe
from salong.request import SongRequest
from salong.synth import make_piece
from conftest import run_cli
from test_generate_cli import one_line_error

RATE = 44100


def sine(freq, amp, seconds=2.0, phase=0.0, channels=2):
    t = np.arange(round(seconds * RATE)) / RATE
    return np.repeat((amp * np.sin(2 * np.pi * freq * t + phase))[None], channels, axis=0).astype(np.float32)


@pytest.fixture(scope="module")
def song():
    """A song from the tiny generator (float32, peak-limited as the writer would)."""
    from conftest import tiny_generator

    made = tiny_generator().generate(SongRequest("calm piano", 1.0, seed=3, steps=2))
    return A.peak_limit(made.audio)


@pytest.mark.parametrize("ext,depth,subtype", [
    ("wav", None, "PCM_24"), ("wav", "16", "PCM_16"), ("wav", "24", "PCM_24"), ("wav", "32f", "FLOAT"),
    ("flac", None, "PCM_24"), ("flac", "16", "PCM_16"), ("flac", 24, "PCM_24"),
    ("ogg", "32f", "VORBIS"), ("mp3", "16", "MPEG_LAYER_III"),  # lossy formats have no bit depth: ignored
])
def test_bit_depth_reads_back_as_the_declared_subtype(tmp_path, ext, depth, subtype):
    path = A.write_audio(tmp_path / f"a.{ext}", sine(440, 0.5, 0.5), RATE, bit_depth=depth)
    assert sf.info(str(path)).subtype == subtype


def test_24_bit_round_trip_is_within_one_step_and_float_is_exact(tmp_path, song):
    y, _ = A.read_audio(A.write_audio(tmp_path / "s24.wav", song, RATE, bit_depth="24"))
    assert y.shape == song.shape and np.max(np.abs(y - song)) <= 2.0 ** -23  # 24-bit: steps of 2^-23 of full scale
    y, _ = A.read_audio(A.write_audio(tmp_path / "s24.flac", song, RATE))
    assert np.max(np.abs(y - song)) <= 2.0 ** -23
    y, _ = A.read_audio(A.write_audio(tmp_path / "s32.wav", song, RATE, bit_depth="32f"))
    assert np.array_equal(y, song)
    y, _ = A.read_audio(A.write_audio(tmp_path / "s16.wav", song, RATE, bit_depth="16"))
    assert 2.0 ** -23 < np.max(np.abs(y - song)) <= 2.0 ** -15


def test_bad_bit_depths_are_one_line_errors(tmp_path):
    for bad in ("12", 32, "32", True, "float"):
        with pytest.raises(SalongError, match=r"^--bit-depth must be 16, 24 or 32f"):
            M.check_bit_depth(bad)
    with pytest.raises(SalongError, match=r"^--bit-depth 32f is not a FLAC sample format"):
        A.write_audio(tmp_path / "a.flac", sine(440, 0.5, 0.5), RATE, bit_depth="32f")
    assert list(tmp_path.iterdir()) == []


def test_loudness_and_true_peak_known_answers():
    # BS.1770: a 997 Hz sine of amplitude A in both channels reads 20 log10(A) LUFS (K-weighting ~ +0.69 dB there)
    assert M.integrated_loudness(sine(997, 0.1), RATE) == pytest.approx(-20.0, abs=0.1)
    # a sine at a quarter of the rate, sampled at 45 degrees: every sample is A / sqrt(2), the signal peaks at A
    quarter = sine(RATE / 4, 0.5, phase=math.pi / 4)
    assert 20 * math.log10(np.max(np.abs(quarter))) == pytest.approx(20 * math.log10(0.5) - 3.01, abs=0.01)
    assert M.true_peak_db(quarter, RATE) == pytest.approx(20 * math.log10(0.5), abs=0.1)
    assert M.measure(np.zeros((2, RATE), np.float32), RATE) == M.Levels(-math.inf, -math.inf)


@pytest.mark.parametrize("target,ceiling", [(-23.0, -1.0), (-16.0, -1.0), (-14.0, -2.0)])
def test_loudness_reaches_the_target_under_the_ceiling(tmp_path, song, target, ceiling):
    piece = make_piece(seed=4, seconds=3.0).audio
    for name, audio in (("piece", piece), ("song", song)):
        path = A.write_audio(tmp_path / f"{name}.wav", audio, RATE, loudness=target, peak_db=ceiling)
        levels = M.measure(A.read_audio(path)[0], RATE)
        assert abs(levels.lufs - target) <= 0.5 and levels.true_peak_db <= ceiling, (name, levels)


def test_a_target_over_the_ceiling_stops_at_the_ceiling_and_says_so(tmp_path):
    piece = make_piece(seed=4, seconds=3.0).audio
    with pytest.warns(UserWarning, match=r"'.*loud.wav' reached -[0-9.]+ LUFS, not -3: louder would put its true "
                                         r"peak over -1 dBTP"):
        path = A.write_audio(tmp_path / "loud.wav", piece, RATE, loudness=-3.0)
    levels = M.measure(A.read_audio(path)[0], RATE)
    assert levels.true_peak_db <= -1.0 and levels.true_peak_db > -1.1 and levels.lufs < -3.5
    with pytest.warns(UserWarning, match="is silent"):
        silent = A.write_audio(tmp_path / "silent.wav", np.zeros((2, RATE), np.float32), RATE, loudness=-14.0)
    assert not A.read_audio(silent)[0].any()


def test_the_limiter_holds_true_peaks_under_the_ceiling_and_leaves_the_rest():
    """A quiet sine with a loud 10 ms burst at 1 s: limited under -1 dBTP, the burst is turned
    down and everything more than two hold spans (10 ms) from it is untouched."""
    audio = sine(440, 0.1)
    burst = slice(RATE, RATE + RATE // 100)
    audio[:, burst] = sine(3000, 1.5, 0.01)
    limited = M.limit_true_peak(audio, RATE, -1.0)
    assert -1.1 < M.true_peak_db(limited, RATE) <= -1.0 and limited.dtype == np.float32
    far = round(2 * M.LIMITER_HOLD_SECONDS * RATE) + 1
    outside = np.r_[0:burst.start - far, burst.stop + far:audio.shape[1]]
    assert np.array_equal(limited[:, outside], audio[:, outside])
    assert np.array_equal(limited[0], limited[1])  # one gain for both channels
    quiet = sine(440, 0.5)
    assert np.array_equal(M.limit_true_peak(quiet, RATE), quiet)  # under the ceiling: unchanged


@pytest.mark.parametrize("target", [-10.0, -8.0])
def test_loudness_with_the_limiter_reaches_a_target_one_gain_cannot(tmp_path, target):
    piece = make_piece(seed=4, seconds=3.0).audio
    with pytest.warns(UserWarning, match="reached"):  # one gain alone stops at the ceiling
        alone = M.measure(M.normalise_loudness(piece, RATE, target, -1.0), RATE)
    assert alone.lufs < target - 0.5
    path = A.write_audio(tmp_path / "limited.wav", piece, RATE, loudness=target, peak_db=-1.0, limit=True)
    levels = M.measure(A.read_audio(path)[0], RATE)
    assert abs(levels.lufs - target) <= 0.5 and levels.true_peak_db <= -1.0, levels
    reachable = M.normalise_loudness(piece, RATE, -30.0, -1.0, limit=True)  # nothing to limit: one gain, as before
    assert np.array_equal(reachable, M.normalise_loudness(piece, RATE, -30.0, -1.0))


def test_without_loudness_audio_is_only_scaled_down_where_it_would_clip(tmp_path):
    quiet = sine(440, 0.1)
    y, _ = A.read_audio(A.write_audio(tmp_path / "q.wav", quiet, RATE, bit_depth="32f"))
    assert np.array_equal(y, quiet)  # no gain at all
    y, _ = A.read_audio(A.write_audio(tmp_path / "l.wav", sine(440, 3.0), RATE))
    assert np.max(np.abs(y)) <= A.PEAK_CEILING + 2.0 ** -23  # scaled, never wrapped or clipped


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_samples_are_refused_never_written(tmp_path, bad):
    audio = sine(440, 0.5, 0.5)
    audio[1, 100] = bad
    for kwargs in ({}, {"loudness": -14.0}):
        with pytest.raises(SalongError, match=r"^refusing to write '.*x.wav': its audio holds 1 NaN or infinite"):
            A.write_audio(tmp_path / "x.wav", audio, RATE, **kwargs)
    with pytest.raises(SalongError, match="NaN or infinite"):
        M.normalise_loudness(audio, RATE, -14.0)
    assert list(tmp_path.iterdir()) == []


def test_request_checks_and_recipe_round_trip():
    request = SongRequest("calm piano", 30.0, seed=1, steps=2, cfg=3.0, sampler="euler", frames="needed",
                          bit_depth=16, loudness=-14)
    assert (request.bit_depth, request.loudness, request.peak_db) == ("16", -14.0, -1.0)  # the ceiling's default
    recipe = Recipe(request)
    record = json.loads(recipe.to_json())
    assert (record["bit_depth"], record["loudness"], record["peak_db"]) == ("16", -14.0, -1.0)
    assert Recipe.from_json(recipe.to_json(), "x") == recipe
    assert "limit" not in record and SongRequest("x", 30.0, loudness=-14, limit=False).limit is None
    limited = Recipe(SongRequest("calm piano", 30.0, seed=1, steps=2, cfg=3.0, sampler="euler", frames="needed",
                                 loudness=-9, limit=True))
    assert json.loads(limited.to_json())["limit"] is True and Recipe.from_json(limited.to_json(), "x") == limited
    assert "--loudness -9.0 --peak-db -1.0 --limit" in limited.command("x.wav")
    with pytest.raises(SalongError, match="^--limit holds the peaks that --loudness lifts"):
        SongRequest("x", 30.0, limit=True)
    with pytest.raises(SalongError, match="^limit must be True or False"):
        SongRequest("x", 30.0, loudness=-14, limit="yes")
    assert "--bit-depth 16 --loudness -14.0 --peak-db -1.0" in recipe.command("take.wav")
    old = Recipe(SongRequest("calm piano", 30.0, seed=1, steps=2, cfg=3.0, sampler="euler", frames="needed"))
    assert "bit_depth" not in old.to_json() and Recipe.from_json(old.to_json(), "x").request.bit_depth is None
    for kwargs, message in [(dict(loudness=5), r"^--loudness must be an integrated loudness from -70 to 0 LUFS"),
                            (dict(loudness=-14, peak_db=1), r"^--peak-db must be a true-peak ceiling from -20 to 0"),
                            (dict(peak_db=-2), r"^--peak-db is the true-peak ceiling of --loudness"),
                            (dict(loudness=-14, seconds=0.3), r"^--loudness needs a song of at least 0.4 s"),
                            (dict(bit_depth="12"), r"^--bit-depth must be 16, 24 or 32f")]:
        with pytest.raises(SalongError, match=message):
            SongRequest("calm piano", **{"seconds": 1.0, **kwargs})


@pytest.mark.parametrize("args,pattern", [
    (["--bit-depth", "12"], r"--bit-depth must be 16, 24 or 32f \(32-bit float, WAV only\), got '12'$"),
    (["--loudness", "5"], r"--loudness must be an integrated loudness from -70 to 0 LUFS.*got 5.0$"),
    (["--peak-db", "-2"], r"--peak-db is the true-peak ceiling of --loudness"),
    (["--bit-depth", "32f", "-o", "x.flac"], r"--bit-depth 32f is not a FLAC sample format"),
])
def test_bad_output_settings_fail_before_the_model_loads(tmp_path, capsys, monkeypatch, args, pattern):
    monkeypatch.chdir(tmp_path)
    # the model path does not exist: a setting checked first never gets to it
    code, out, err = run_cli(capsys, "generate", "calm", "-s", 1, "--model", tmp_path / "missing.safetensors",
                             *(args if "-o" in args else [*args, "-o", "x.wav"]))
    one_line_error(code, out, err, pattern)
    assert list(tmp_path.iterdir()) == []


def test_generate_writes_records_and_remakes_bit_depth_and_loudness(tmp_path, capsys, generator_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "generate", "calm piano", "-s", 1, "--seed", 2, "--steps", 2, "--model",
                             generator_path, "--bit-depth", "16", "--loudness", "-20", "--peak-db", "-1.5",
                             "-o", "take.flac")
    assert code == 0, err
    assert sf.info("take.flac").subtype == "PCM_16"
    levels = M.measure(A.read_audio("take.flac")[0], RATE)
    assert abs(levels.lufs + 20) <= 0.5 and levels.true_peak_db <= -1.5
    request = read_recipe("take.flac").request
    assert (request.bit_depth, request.loudness, request.peak_db) == ("16", -20.0, -1.5)
    code, out, err = run_cli(capsys, "info", "take.flac")
    assert "bit depth: 16-bit" in out and "loudness: -20 LUFS, true peak at most -1.5 dBTP" in out
    assert "--bit-depth 16 --loudness -20.0 --peak-db -1.5" in out
    code, out, err = run_cli(capsys, "generate", "--like", "take.flac", "-o", "again.flac")
    assert code == 0, err
    assert np.array_equal(A.read_audio("again.flac")[0], A.read_audio("take.flac")[0])
    assert sf.info("again.flac").subtype == "PCM_16" and read_recipe("again.flac") == read_recipe("take.flac")
    # the default depth is recorded as written; ogg and mp3 record none
    code, out, err = run_cli(capsys, "generate", "calm piano", "-s", 1, "--seed", 2, "--steps", 2, "--model",
                             generator_path, "-o", "plain.wav")
    assert code == 0 and sf.info("plain.wav").subtype == "PCM_24" and read_recipe("plain.wav").request.bit_depth == "24"
    code, out, err = run_cli(capsys, "generate", "--like", "plain.wav", "-o", "plain.ogg")
    assert code == 0 and read_recipe("plain.ogg").request.bit_depth is None
    # --limit: recorded, described, and made again by --like
    code, out, err = run_cli(capsys, "generate", "calm piano", "-s", 1, "--seed", 2, "--steps", 2, "--model",
                             generator_path, "--loudness", "-6", "--limit", "-o", "loud.wav")
    assert code == 0, err
    assert read_recipe("loud.wav").request.limit is True and M.true_peak_db(A.read_audio("loud.wav")[0], RATE) <= -1
    code, out, err = run_cli(capsys, "info", "loud.wav")
    assert "loudness: -6 LUFS, true peak at most -1 dBTP, peaks limited" in out and "--limit" in out
    code, out, err = run_cli(capsys, "generate", "--like", "loud.wav", "-o", "loud2.wav")
    assert code == 0 and np.array_equal(A.read_audio("loud2.wav")[0], A.read_audio("loud.wav")[0])


def test_a_song_with_nan_samples_is_one_line_naming_it_and_no_file(tmp_path, capsys, generator_path, monkeypatch):
    from salong import pipeline

    real = pipeline.Generator.sample

    def diverged(self, request, **kwargs):
        song = real(self, request, **kwargs)
        song.audio[:, 10] = np.nan
        return song

    monkeypatch.setattr(pipeline.Generator, "sample", diverged)
    code, out, err = run_cli(capsys, "generate", "calm", "-s", 0.5, "--steps", 1, "--model", generator_path,
                             "-o", tmp_path / "x.wav")
    one_line_error(code, out, err, r"refusing to write '.*x.wav': its audio holds 2 NaN or infinite samples")
    assert list(tmp_path.iterdir()) == []


def test_decode_takes_a_bit_depth(tmp_path, capsys, generator_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    A.write_audio("in.wav", sine(440, 0.3, 0.5), RATE)
    code, out, err = run_cli(capsys, "encode", "in.wav", "-o", "in.latents.safetensors", "--model", generator_path)
    assert code == 0, err
    code, out, err = run_cli(capsys, "decode", "in.latents.safetensors", "-o", "out.wav", "--bit-depth", "32f",
                             "--model", generator_path)
    assert code == 0 and sf.info("out.wav").subtype == "FLOAT", err
    code, out, err = run_cli(capsys, "decode", "in.latents.safetensors", "-o", "out.flac", "--bit-depth", "32f",
                             "--model", tmp_path / "missing.safetensors")  # refused before the model loads
    one_line_error(code, out, err, r"--bit-depth 32f is not a FLAC sample format")
    assert not (tmp_path / "out.flac").exists()
