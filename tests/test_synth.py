"""The procedural music generator: reproducible, the right shape and level, and its
captions and attributes agree with what can be measured in the audio (tempo, key,
sections)."""

import json
import re

import numpy as np
import pytest
import soundfile as sf

from salong import synth
from salong.errors import SalongError
from salong.synth.attributes import _MOODS

SR = synth.SAMPLE_RATE


# ------------------------------------------------------------------ audio analysis

def _spectrogram(audio: np.ndarray, hop: int = 512, frame: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    x = audio.mean(axis=0)
    n = 1 + (x.size - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]  # (frames, frame)
    mag = np.abs(np.fft.rfft(x[idx] * np.hanning(frame), axis=1))  # (frames, bins)
    return mag, np.fft.rfftfreq(frame, 1 / SR)


def _onset_envelope(audio: np.ndarray, hop: int = 512) -> tuple[np.ndarray, float]:
    """Log-spectral flux below 4 kHz (kick, snare, bass, notes; not the hats), locally
    mean-removed and half-wave rectified; returns (envelope, frames per second)."""
    mag, freqs = _spectrogram(audio, hop)
    log = np.log1p(10 * mag[:, freqs < 4000] / mag.max())
    flux = np.concatenate([[0.0], np.maximum(np.diff(log, axis=0), 0).sum(axis=1)])
    fps = SR / hop
    width = int(fps)
    env = np.maximum(flux - np.convolve(flux, np.ones(width) / width, mode="same"), 0)
    return env, fps


def _onset_strength_at(audio: np.ndarray, times: np.ndarray, hop: int = 512) -> np.ndarray:
    """Largest onset-envelope value within 30 ms of each time.

    Frame i of the envelope compares STFT frames centred at (i - 1) * hop + 1024 and
    i * hop + 1024 samples, so an onset shows up near i = t * fps - 1.5.
    """
    env, fps = _onset_envelope(audio, hop)
    centre = np.round(times * fps - 1.5).astype(int)
    reach = int(0.03 * fps)
    windows = np.clip(centre[:, None] + np.arange(-reach, reach + 1)[None, :], 0, env.size - 1)
    return env[windows].max(axis=1)


def _estimate_bpm(audio: np.ndarray) -> float:
    """Blind tempo estimate over 60-180 BPM, 0.1 BPM steps.

    Product of the onset envelope's autocorrelation (which also peaks at multiples of
    the beat period) and its Fourier tempogram (which also peaks at multiples of the
    beat frequency), so only the beat itself scores high in both (Peeters 2007).
    """
    env, fps = _onset_envelope(audio)
    env = env - env.mean()
    n = env.size
    bpms = np.arange(60.0, 180.05, 0.1)
    acf = np.correlate(env, env, mode="full")[n - 1:] / np.arange(n, 0, -1)  # unbiased
    acf_at = np.maximum(np.interp(60 / bpms * fps, np.arange(n), acf), 0)
    dft_at = np.abs(np.exp(-2j * np.pi * np.outer(bpms / 60, np.arange(n) / fps)) @ env)
    return float(bpms[np.argmax(acf_at * dft_at)])


def _chroma(audio: np.ndarray) -> np.ndarray:
    """Pitch-class salience (index 0 = C) of the whole piece by harmonic summation.

    Each semitone from C2 to F6 scores the FFT magnitude around its first five
    harmonics weighted 1/h (Klapuri 2006), so a note's own pitch class outscores the
    fifth its third harmonic lands on; then the 12 classes are folded together.
    """
    x = audio.mean(axis=0)
    mag = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    cumulative = np.concatenate([[0.0], np.cumsum(mag)])
    chroma = np.zeros(12)
    for midi in range(36, 90):
        f0 = 440.0 * 2 ** ((midi - 69) / 12)
        for h in range(1, 6):
            lo, hi = np.searchsorted(freqs, [h * f0 * 2 ** (-0.5 / 12), h * f0 * 2 ** (0.5 / 12)])
            chroma[midi % 12] += (cumulative[hi] - cumulative[lo]) / h
    return chroma


def _triad_scores(chroma: np.ndarray, third: int) -> np.ndarray:
    roots = np.arange(12)
    return chroma[roots] + chroma[(roots + third) % 12] + chroma[(roots + 7) % 12]


# ------------------------------------------------------------------ reproducibility, shape, level

def test_same_seed_same_piece_and_different_seeds_differ():
    a, b = synth.make_piece(3, 6.0), synth.make_piece(3, 6.0)
    assert np.array_equal(a.audio, b.audio)
    assert a.caption == b.caption and a.attributes == b.attributes
    c = synth.make_piece(4, 6.0)
    assert c.attributes != a.attributes
    assert not np.array_equal(c.audio, a.audio)
    # render is a pure function of (attributes, seed)
    assert np.array_equal(synth.render(a.attributes, 3), a.audio)
    assert not np.array_equal(synth.render(a.attributes, 5), a.audio)


@pytest.mark.parametrize("seconds", [2.0, 7.37])
def test_shape_dtype_finite_and_stereo(seconds):
    audio = synth.make_piece(11, seconds).audio
    assert audio.shape == (2, round(seconds * SR)) and audio.dtype == np.float32
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    assert not np.allclose(audio[0], audio[1])  # panned instruments: a real stereo image


def test_loudness_sets_the_peak_and_soft_is_quieter_and_the_end_fades():
    loud = synth.make_piece(5, 8.0, loudness="loud").audio
    soft = synth.make_piece(5, 8.0, loudness="soft").audio
    assert np.abs(loud).max() == pytest.approx(10 ** (-1 / 20), rel=1e-4)
    assert np.abs(soft).max() == pytest.approx(10 ** (-12 / 20), rel=1e-4)
    assert np.sqrt(np.mean(soft ** 2)) < 0.4 * np.sqrt(np.mean(loud ** 2))
    tail = np.abs(loud[:, -200:]).max()
    assert tail < 0.01 * np.abs(loud).max()


@pytest.mark.parametrize("field,values", [("lead", synth.LEADS), ("chords", synth.CHORD_SOUNDS),
                                          ("drums", synth.DRUM_STYLES[1:])])
def test_every_instrument_sounds_and_differs(field, values):
    base = dict(lead="piano", chords=None, bass=False, drums="none")
    spectra = []
    for value in values:
        overrides = {**base, field: value}
        if field != "lead":
            overrides["lead"] = "flute"
        audio = synth.make_piece(2, 3.0, **overrides).audio
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0.2
        mag, _ = _spectrogram(audio)
        spectra.append(mag.mean(axis=0) / mag.mean(axis=0).sum())
    for i in range(len(spectra)):
        for j in range(i):
            assert np.abs(spectra[i] - spectra[j]).sum() > 0.05, (values[i], values[j])


# ------------------------------------------------------------------ captions and attributes

_LOUD_WORDS = {"soft": ("soft", "quiet", "gentle"), "loud": ("loud", "powerful", "punchy")}
_DRUM_WORDS = ("beat", "drums", "groove", "breakbeat", "percussion")
_LEAD_WORD = {"piano": "piano", "electric piano": "electric piano", "organ": "organ",
              "plucked guitar": "guitar", "bells": "bell", "strings": "string", "flute": "flute",
              "brass": "brass", "synth lead": "synth"}


def test_captions_state_only_true_facts_and_vary():
    rng = np.random.default_rng(0)
    captions = []
    for _ in range(400):
        attrs = synth.random_attributes(rng, float(rng.uniform(2, 120)))
        caption = synth.caption_for(attrs, rng)
        captions.append(caption)
        bpms = re.findall(r"(\d+) BPM", caption)
        assert bpms in ([], [str(attrs.bpm)]), caption
        keys = re.findall(r"\bin ([A-G][b#]?) (major|minor)\b", caption)
        assert keys in ([], [(attrs.tonic, attrs.mode)]), caption
        assert ("bass" in caption) <= attrs.bass, caption
        no_drums = "no drums" in caption or "no percussion" in caption
        assert no_drums <= (attrs.drums == "none"), caption
        if attrs.drums == "none" and not no_drums:
            assert not any(w in caption for w in _DRUM_WORDS), caption
        other = "soft" if attrs.loudness == "loud" else "loud"
        assert not any(re.search(rf"\b{w}\b", caption, re.I) for w in _LOUD_WORDS[other]), caption
        moods = set(_MOODS.values()) - {attrs.mood}
        assert not any(re.search(rf"\b{m}\b", caption, re.I) for m in moods), caption
        assert _LEAD_WORD[attrs.lead] in caption.lower(), caption
    assert len(set(captions)) == len(captions)
    with_tempo = sum("BPM" in c for c in captions)
    assert 0.5 * len(captions) < with_tempo < len(captions)  # sometimes left out
    starts = {c.split()[0] for c in captions}
    assert len(starts) > 20  # varied order and wording


def test_mood_follows_mode_tempo_and_loudness():
    assert synth.mood_for("minor", 70, "soft") == "melancholic"
    assert synth.mood_for("major", 150, "loud") == "energetic"
    piece = synth.make_piece(8, 2.0, mode="minor", bpm=66, loudness="soft")
    assert piece.attributes.mood == "melancholic"
    assert piece.attributes.to_dict()["mood"] == "melancholic"


def test_overrides_fix_one_attribute_and_keep_the_others():
    free = synth.make_piece(21, 2.0).attributes
    fixed = synth.make_piece(21, 2.0, bpm=97, drums="shuffle").attributes
    assert (fixed.bpm, fixed.drums) == (97, "shuffle")
    assert fixed == synth.PieceAttributes(**{**free.__dict__, "bpm": 97, "drums": "shuffle"})


def test_to_dict_is_json_and_complete():
    attrs = synth.make_piece(1, 50.0, bpm=np.int64(100)).attributes
    d = json.loads(json.dumps(attrs.to_dict()))
    assert d["bpm"] == 100 and d["key"] == f"{attrs.tonic} {attrs.mode}" and d["seconds"] == 50.0
    assert [s["name"] for s in d["sections"]] == ["intro", "A", "B", "A'", "outro"]
    assert {"lead", "chords", "bass", "drums", "tonic", "mode", "meter", "loudness", "mood"} <= d.keys()


# ------------------------------------------------------------------ measured tempo, key, form

@pytest.mark.parametrize("drums,meter,bpm", [
    ("four-on-the-floor", "4/4", 128), ("backbeat", "4/4", 92), ("shuffle", "4/4", 74),
    ("backbeat", "3/4", 150), ("breakbeat", "4/4", 110), ("four-on-the-floor", "4/4", 171),
])
def test_tempo_measured_from_the_audio_matches_the_stated_bpm(drums, meter, bpm):
    piece = synth.make_piece(30, 16.0, drums=drums, meter=meter, bpm=bpm)
    assert f"{bpm} BPM" in piece.caption or "BPM" not in piece.caption
    estimate = _estimate_bpm(piece.audio)
    assert abs(estimate - bpm) / bpm < 0.02, estimate
    # and the onsets sit on the stated beat grid, not half a beat off it
    beats = piece.attributes.beat_times()
    on_beat = _onset_strength_at(piece.audio, beats).mean()
    off_beat = _onset_strength_at(piece.audio, beats + 0.5 * piece.attributes.beat_seconds).mean()
    assert on_beat > 1.3 * off_beat, (on_beat, off_beat)


@pytest.mark.parametrize("tonic,mode", [("C", "major"), ("A", "minor"), ("F#", "major"), ("Eb", "minor")])
def test_key_measured_from_the_audio_matches_the_stated_key(tonic, mode):
    # two pieces with whatever instruments their seeds draw, so one melody that dwells
    # on the dominant cannot decide the outcome
    chroma = np.zeros(12)
    for seed in (40, 41):
        piece = synth.make_piece(seed, 12.0, tonic=tonic, mode=mode)
        assert re.findall(r"\bin ([A-G][b#]?) (major|minor)\b", piece.caption) in ([], [(tonic, mode)])
        single = _chroma(piece.audio)
        chroma += single / single.sum()
    root = synth.TONICS.index(tonic)
    third, other_third = (4, 3) if mode == "major" else (3, 4)
    scores = _triad_scores(chroma, third)
    assert np.argmax(scores) == root, scores  # beats the 11 other triads of this mode
    assert chroma[(root + third) % 12] > chroma[(root + other_third) % 12]  # and the parallel mode


def test_long_piece_has_its_sections_and_a_clear_change_from_a_to_b():
    piece = synth.make_piece(50, 90.0, lead="piano", chords="pad", bass=True, drums="backbeat",
                             bpm=120, meter="4/4")
    sections = piece.attributes.sections
    assert [s[0] for s in sections] == ["intro", "A", "B", "A'", "outro"]
    assert sections[0][1] == 0.0 and sections[-1][2] == 90.0
    assert all(a[2] == b[1] for a, b in zip(sections, sections[1:]))
    bar = 2.0  # 4 beats at 120 BPM: every boundary falls on a bar line
    assert all(abs(s[1] / bar - round(s[1] / bar)) < 1e-9 for s in sections)

    # one feature vector per bar: log energy in octave bands, a spectral fingerprint
    # of instrumentation, register and drum density
    mag, freqs = _spectrogram(piece.audio)
    frame_bar = (np.arange(mag.shape[0]) * 512 + 1024) / SR // bar
    edges = 62.5 * 2.0 ** np.arange(9)  # 62.5 Hz .. 16 kHz
    band = np.digitize(freqs, edges)
    power = np.stack([(mag[:, band == k] ** 2).sum(axis=1) for k in range(1, 9)], axis=1)  # (frames, 8)
    n_bars = int(frame_bar.max())
    bars = np.log10(np.stack([power[frame_bar == i].mean(axis=0) for i in range(n_bars)]) + 1e-9)

    def section_bars(name):
        _, start, end = next(s for s in sections if s[0] == name)
        return bars[round(start / bar) + 1:round(end / bar)]  # skip the crash on the first bar

    a, b = section_bars("A"), section_bars("B")
    half = len(a) // 2
    within_a = np.linalg.norm(a[:half].mean(axis=0) - a[half:].mean(axis=0))
    a_to_b = np.linalg.norm(b.mean(axis=0) - a.mean(axis=0))
    assert a_to_b > 3 * within_a, (a_to_b, within_a)
    assert np.linalg.norm(section_bars("A'").mean(axis=0) - a.mean(axis=0)) < a_to_b  # A returns
    # intro and outro are thinner: no drums or melody, so less energy above 2 kHz
    treble = bars[:, 5:].mean(axis=1)  # log10 power, 2-16 kHz
    intro, outro = round(sections[1][1] / bar), round(sections[-1][1] / bar)
    assert treble[:intro].mean() < treble[intro:intro + 8].mean() - 1, treble
    assert treble[outro:outro + 2].mean() < treble[outro - 8:outro].mean() - 1, treble


# ------------------------------------------------------------------ corpus

def test_write_corpus_writes_audio_and_metadata_that_agree(tmp_path):
    pytest.importorskip("salong.audio")
    calls = []
    out = synth.write_corpus(3, tmp_path / "corpus", seed=7, min_seconds=2.0, max_seconds=4.0,
                             progress=lambda i, n: calls.append((i, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    lines = (out / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        entry = json.loads(line)
        info = sf.info(str(out / entry["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (SR, 2, "PCM_16")
        assert info.frames == round(entry["duration"] * SR)
        assert 2.0 <= entry["attributes"]["seconds"] <= 4.0
        assert entry["duration"] == pytest.approx(entry["attributes"]["seconds"], abs=1 / SR)
        assert entry["caption"] and entry["path"].startswith("audio/")
        piece = synth.make_piece(entry["seed"], entry["attributes"]["seconds"])
        assert piece.caption == entry["caption"]
        audio, _ = sf.read(str(out / entry["path"]), dtype="float32")
        assert np.abs(audio.T - piece.audio).max() < 2e-4  # 16-bit rounding only
    again = synth.write_corpus(3, tmp_path / "again", seed=7, min_seconds=2.0, max_seconds=4.0)
    assert (again / "metadata.jsonl").read_text() == "\n".join(lines) + "\n"


def test_write_corpus_replaces_a_corpus_only_when_told(tmp_path):
    pytest.importorskip("salong.audio")
    out = synth.write_corpus(2, tmp_path / "corpus", seed=1, min_seconds=1.0, max_seconds=2.0)
    (out / "notes.txt").write_text("mine")
    first = (out / "metadata.jsonl").read_text()
    with pytest.raises(SalongError, match="already holds a corpus"):
        synth.write_corpus(2, out, seed=2, min_seconds=1.0, max_seconds=2.0)
    assert (out / "metadata.jsonl").read_text() == first
    synth.write_corpus(2, out, seed=2, min_seconds=1.0, max_seconds=2.0, overwrite=True)
    assert (out / "metadata.jsonl").read_text() != first
    assert (out / "notes.txt").read_text() == "mine"  # only the corpus's own files are written


def test_corpus_with_log_lengths_is_the_same_on_any_number_of_processes(tmp_path):
    one = synth.write_corpus(4, tmp_path / "one", seed=3, min_seconds=1.0, max_seconds=8.0, durations="log")
    two = synth.write_corpus(4, tmp_path / "two", seed=3, min_seconds=1.0, max_seconds=8.0, durations="log", jobs=2)
    assert (one / "metadata.jsonl").read_text() == (two / "metadata.jsonl").read_text()
    for entry in map(json.loads, (one / "metadata.jsonl").read_text().splitlines()):
        assert (one / entry["path"]).read_bytes() == (two / entry["path"]).read_bytes()
    # log-uniform lengths: as likely in [1, 2] s as in [4, 8] s, all within the bounds
    lengths = [synth.piece_length(seed, 1.0, 8.0, "log") for seed in range(3000)]
    assert 1.0 <= min(lengths) and max(lengths) <= 8.0
    low, high = sum(x <= 2 for x in lengths), sum(x >= 4 for x in lengths)
    assert abs(low - high) < 150 and abs(low - 1000) < 150


def test_a_corpus_of_one_lead_and_a_tempo_range_keeps_the_other_draws(tmp_path, capsys):
    """`salong synth --lead bells --min-bpm 70 --max-bpm 80`: every piece has that lead and a tempo
    in the range, stated in its caption; its other attributes are those of the unrestricted corpus."""
    from conftest import run_cli

    code, out, err = run_cli(capsys, "synth", 6, tmp_path / "style", "--seed", 4, "--min-seconds", 1,
                             "--max-seconds", 1.5, "--lead", "bells", "--min-bpm", 70, "--max-bpm", 80)
    assert code == 0, err
    plain = synth.write_corpus(6, tmp_path / "plain", seed=4, min_seconds=1.0, max_seconds=1.5)
    style = [json.loads(line) for line in (tmp_path / "style" / "metadata.jsonl").read_text().splitlines()]
    plain = [json.loads(line) for line in (plain / "metadata.jsonl").read_text().splitlines()]
    assert len({e["attributes"]["bpm"] for e in style}) > 1
    for mine, theirs in zip(style, plain):
        a = mine["attributes"]
        assert a["lead"] == "bells" and 70 <= a["bpm"] <= 80 and "bell" in mine["caption"].lower()
        assert {k: v for k, v in a.items() if k not in ("lead", "bpm", "mood")} == {
            k: v for k, v in theirs["attributes"].items() if k not in ("lead", "bpm", "mood")}
        piece = synth.make_piece(mine["seed"], a["seconds"], lead="bells", bpm=a["bpm"])
        assert piece.caption == mine["caption"]
    code, _, err = run_cli(capsys, "synth", 1, tmp_path / "bad", "--min-bpm", 100, "--max-bpm", 90)
    assert code != 0 and "min_bpm=100, max_bpm=90" in err and err.count("\n") == 1



def test_a_corpus_share_without_drums_keeps_the_other_draws(tmp_path, capsys):
    """`salong synth --no-drums P`: about a share P of the pieces have no drums (their captions and
    bass say so), the others a groove; every other attribute is that of the plain corpus."""
    from conftest import run_cli

    plain = synth.write_corpus(40, tmp_path / "plain", seed=5, min_seconds=0.5, max_seconds=0.6)
    plain = [json.loads(line) for line in (plain / "metadata.jsonl").read_text().splitlines()]
    shares = {}
    for share in (0.0, 0.5, 1.0):
        out = tmp_path / f"share{share}"
        code, _, err = run_cli(capsys, "synth", 40, out, "--seed", 5, "--min-seconds", 0.5, "--max-seconds", 0.6,
                               "--no-drums", share)
        assert code == 0, err
        lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
        shares[share] = sum(e["attributes"]["drums"] == "none" for e in lines)
        for mine, theirs in zip(lines, plain):
            a, b = mine["attributes"], theirs["attributes"]
            assert {k: v for k, v in a.items() if k not in ("drums", "mood")} == {
                k: v for k, v in b.items() if k not in ("drums", "mood")}
            if a["drums"] != "none" and b["drums"] != "none":
                assert a["drums"] == b["drums"]  # a groove the seed drew is kept
            piece = synth.make_piece(mine["seed"], a["seconds"], drums=a["drums"])
            assert piece.caption == mine["caption"]
    assert shares[0.0] == 0 and shares[1.0] == 40 and 12 <= shares[0.5] <= 28
    assert sum(e["attributes"]["drums"] == "none" for e in plain) < shares[0.5]  # the seed's draw: one in five
    code, _, err = run_cli(capsys, "synth", 1, tmp_path / "bad", "--no-drums", 1.5)
    assert code != 0 and "no_drums=1.5" in err and err.count("\n") == 1 and not (tmp_path / "bad").exists()

# ------------------------------------------------------------------ bad arguments

@pytest.mark.parametrize("call,match", [
    (lambda: synth.make_piece(0, 300.0), r"seconds=300.0 .*285"),
    (lambda: synth.make_piece(0, 0.0), r"seconds=0.0"),
    (lambda: synth.make_piece(0, 2.0, bpm=59), r"bpm=59 .*60\.\.180"),
    (lambda: synth.make_piece(0, 2.0, bpm=181), r"bpm=181"),
    (lambda: synth.make_piece(0, 2.0, bpm=120.5), r"bpm=120.5"),
    (lambda: synth.make_piece(0, 2.0, drums="jazz"), r"drums='jazz'.*'breakbeat'"),
    (lambda: synth.make_piece(0, 2.0, tonic="C#"), r"tonic='C#'.*'Db'"),
    (lambda: synth.make_piece(0, 2.0, lead="kazoo"), r"lead='kazoo'.*'piano'"),
    (lambda: synth.make_piece(0, 2.0, chords="choir"), r"chords='choir'.*None"),
    (lambda: synth.make_piece(0, 2.0, meter="5/4"), r"meter='5/4'.*'3/4'"),
    (lambda: synth.make_piece(0, 2.0, mood="happy"), r"unknown attribute 'mood'.*bpm"),
    (lambda: synth.make_piece(-1, 2.0), r"seed=-1"),
    (lambda: synth.write_corpus(0, "unused"), r"n=0"),
    (lambda: synth.write_corpus(1, "unused", min_seconds=5.0, max_seconds=4.0), r"min_seconds=5.0"),
    (lambda: synth.write_corpus(1, "unused", max_seconds=286.0), r"285"),
    (lambda: synth.write_corpus(1, "unused", fmt="mp3"), r"fmt='mp3'.*'flac'"),
    (lambda: synth.write_corpus(1, "unused", durations="normal"), r"durations='normal'.*'log'"),
    (lambda: synth.write_corpus(1, "unused", jobs=0), r"jobs=0"),
    (lambda: synth.write_corpus(1, "unused", lead="kazoo"), r"lead='kazoo'.*'bells'"),
    (lambda: synth.write_corpus(1, "unused", bpm_range=(90, 80)), r"min_bpm=90, max_bpm=80 .*60 <= min_bpm"),
    (lambda: synth.write_corpus(1, "unused", bpm_range=(50, 80)), r"min_bpm=50"),
])
def test_bad_arguments_raise_salong_error_naming_the_value(call, match):
    with pytest.raises(SalongError, match=match):
        call()


def test_filters_follow_the_butterworth_response():
    """A sine through each filter keeps the amplitude |H(f)| = 1/sqrt(1 + (f/fc)^4) (order 2)."""
    from salong.synth.dsp import _bandpass, _highpass, _lowpass

    n = 44100
    t = np.arange(n) / 44100
    for freq in (250.0, 1000.0, 4000.0):
        x = np.sin(2 * np.pi * freq * t)

        def amplitude(y: np.ndarray) -> float:
            return np.sqrt(2 * np.mean(y[4410:-4410] ** 2))  # away from the edges

        assert amplitude(_lowpass(x, 1000.0)) == pytest.approx(1 / np.sqrt(1 + (freq / 1000) ** 4), rel=1e-3)
        assert amplitude(_highpass(x, 1000.0)) == pytest.approx(1 / np.sqrt(1 + (1000 / freq) ** 4), rel=1e-3)
    x = np.sin(2 * np.pi * 1000.0 * t)
    expected = 1 / np.sqrt(1 + (500 / 1000) ** 4) / np.sqrt(1 + (1000 / 2000) ** 4)
    assert np.sqrt(2 * np.mean(_bandpass(x, 500.0, 2000.0)[4410:-4410] ** 2)) == pytest.approx(expected, rel=1e-3)


def test_more_captions_per_piece_and_recaptioning_a_written_corpus(tmp_path, capsys):
    """--captions K lists up to K true descriptions per piece, the caption first; --recaption
    gives an existing corpus exactly those lines without touching its audio, and refuses a
    caption a person wrote."""
    from conftest import run_cli

    many = synth.write_corpus(2, tmp_path / "many", seed=3, min_seconds=1.0, max_seconds=1.5, captions=4)
    one = synth.write_corpus(2, tmp_path / "one", seed=3, min_seconds=1.0, max_seconds=1.5)
    for line in (many / "metadata.jsonl").read_text().splitlines():
        entry = json.loads(line)
        texts = entry["captions"]
        assert texts[0] == entry["caption"] and len(set(texts)) == len(texts) >= 3
        attrs = synth.make_piece(entry["seed"], entry["attributes"]["seconds"]).attributes
        assert texts == synth.captions_for(attrs, entry["seed"], 4)
        assert synth.captions_for(attrs, entry["seed"], 2) == texts[:2]  # more captions keep the earlier ones
        assert all(f"{attrs.bpm} BPM" in t for t in texts if "BPM" in t)
    assert "captions" not in (one / "metadata.jsonl").read_text()

    audio = one / "audio" / "000000.wav"
    stamp = audio.stat().st_mtime_ns
    code, out, err = run_cli(capsys, "synth", 2, one, "--captions", 4, "--recaption")
    assert code == 0, err
    assert (one / "metadata.jsonl").read_text() == (many / "metadata.jsonl").read_text()
    assert audio.stat().st_mtime_ns == stamp

    code, _, err = run_cli(capsys, "synth", 3, one, "--captions", 4, "--recaption")
    assert code == 1 and "holds 2 pieces, not 3" in err
    lines = (one / "metadata.jsonl").read_text().splitlines()
    edited = json.loads(lines[1])
    edited["caption"] = "my own words"
    (one / "metadata.jsonl").write_text("\n".join([lines[0], json.dumps(edited)]) + "\n")
    before = (one / "metadata.jsonl").read_text()
    code, _, err = run_cli(capsys, "synth", 2, one, "--captions", 2, "--recaption")
    assert (code == 1 and "line 2: its caption is not the one its seed writes" in err
            and len(err.strip().splitlines()) == 1)
    assert (one / "metadata.jsonl").read_text() == before
    edited = json.loads(lines[1])
    edited["captions"] = [edited["caption"], "my own words"]
    (one / "metadata.jsonl").write_text("\n".join([lines[0], json.dumps(edited)]) + "\n")
    code, _, err = run_cli(capsys, "synth", 2, one, "--captions", 8, "--recaption")
    assert code == 1 and "line 2: its caption is not the one its seed writes" in err
    code, _, err = run_cli(capsys, "synth", 2, tmp_path / "nowhere", "--recaption")
    assert code == 1 and "holds no corpus (metadata.jsonl)" in err
    with pytest.raises(SalongError, match="captions=0 is not allowed"):
        synth.write_corpus(1, tmp_path / "none", captions=0)
