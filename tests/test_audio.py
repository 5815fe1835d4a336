"""Audio I/O: round trips, atomic writes, peak limiting, clear errors."""

import os

import numpy as np
import pytest
import soundfile as sf

from salong import audio as A
from salong.errors import SalongError


def tone(seconds=0.5, rate=44100, channels=2, freq=440.0, amp=0.5):
    t = np.arange(round(seconds * rate)) / rate
    x = amp * np.sin(2 * np.pi * freq * t, dtype=np.float64)
    return np.stack([x * (0.5 + 0.5 * c) for c in range(channels)]).astype(np.float32)


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
@pytest.mark.parametrize("channels", [1, 2])
def test_round_trip_keeps_rate_channels_length(tmp_path, ext, channels):
    x = tone(channels=channels, rate=32000, seconds=0.37)
    path = A.write_audio(tmp_path / f"a.{ext}", x, 32000)
    y, rate = A.read_audio(path)
    assert rate == 32000
    assert y.shape[0] == channels
    assert y.dtype == np.float32
    if ext in ("wav", "flac"):  # lossless: same length, 16-bit quantisation error only
        assert y.shape == x.shape
        assert np.max(np.abs(y - x)) < 2.0 / 32768
    else:  # lossy codecs keep the length within a codec frame and the signal's energy
        assert abs(y.shape[1] - x.shape[1]) <= 1152
        n = min(x.shape[1], y.shape[1])
        assert abs(np.sqrt(np.mean(y[:, :n] ** 2)) - np.sqrt(np.mean(x[:, :n] ** 2))) < 0.05


def test_format_override_and_unknown_extension(tmp_path):
    x = tone()
    path = A.write_audio(tmp_path / "song.out", x, 44100, fmt="flac")
    assert sf.info(str(path)).format == "FLAC"
    with pytest.raises(SalongError, match=r"unknown output extension '\.xyz'.*wav, flac, ogg"):
        A.write_audio(tmp_path / "song.xyz", x, 44100)
    with pytest.raises(SalongError, match="unknown format 'aac'"):
        A.write_audio(tmp_path / "song.wav", x, 44100, fmt="aac")
    assert sorted(os.listdir(tmp_path)) == ["song.out"]


def test_resample_and_channels():
    x = tone(seconds=1.0, rate=48000, channels=1, freq=1000.0)
    y = A.resample(x, 48000, 44100)
    assert y.shape == (1, 44100)
    # A 1 kHz tone stays a 1 kHz tone: its spectrum peaks at bin 1000 of a 1 s window.
    assert np.argmax(np.abs(np.fft.rfft(y[0]))) == 1000
    stereo = A.to_channels(y, 2)
    assert stereo.shape == (2, 44100) and np.array_equal(stereo[0], stereo[1])
    mono = A.to_channels(np.stack([np.ones(4), -np.ones(4)]).astype(np.float32), 1)
    assert np.array_equal(mono, np.zeros((1, 4), np.float32))


def test_load_audio_brings_file_to_model_format(tmp_path):
    path = A.write_audio(tmp_path / "m.wav", tone(seconds=0.5, rate=22050, channels=1), 22050)
    y = A.load_audio(path, 44100, 2)
    assert y.shape == (2, 22050)  # 0.5 s at 44.1 kHz


def test_peak_limit_scales_never_wraps(tmp_path):
    x = tone(amp=3.0)
    limited = A.peak_limit(x)
    assert np.max(np.abs(limited)) == pytest.approx(A.PEAK_CEILING, rel=1e-6)
    # one gain for the whole signal: the waveform's shape is kept
    np.testing.assert_allclose(limited, x * (A.PEAK_CEILING / np.max(np.abs(x))), rtol=1e-6)
    quiet = tone(amp=0.25)
    assert A.peak_limit(quiet) is quiet
    y, _ = A.read_audio(A.write_audio(tmp_path / "loud.wav", x, 44100))
    assert np.max(np.abs(y)) <= A.PEAK_CEILING + 1e-4
    # a wrapped 16-bit write would flip the sign of the positive peaks
    assert np.sign(y[0, np.argmax(x[0])]) == 1


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    x = tone()

    def broken_write(self, data):  # the header is on disk already
        raise KeyboardInterrupt  # the user pressed Ctrl-C mid-write

    monkeypatch.setattr(A.sf.SoundFile, "write", broken_write)
    with pytest.raises(KeyboardInterrupt):
        A.write_audio(tmp_path / "out.wav", x, 44100)
    assert os.listdir(tmp_path) == []


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    old = A.write_audio(tmp_path / "out.wav", tone(freq=220.0), 44100)
    before = old.read_bytes()

    def full_disk(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(A.sf.SoundFile, "write", full_disk)
    with pytest.raises(SalongError, match="disk full"):
        A.write_audio(tmp_path / "out.wav", tone(), 44100)
    assert os.listdir(tmp_path) == ["out.wav"] and old.read_bytes() == before


def test_read_errors(tmp_path):
    with pytest.raises(SalongError, match="not found"):
        A.read_audio(tmp_path / "nope.wav")
    with pytest.raises(SalongError, match="is a directory"):
        A.read_audio(tmp_path)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(SalongError, match="cannot decode"):
        A.read_audio(junk)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 2), np.float32), 44100)
    with pytest.raises(SalongError, match="empty"):
        A.read_audio(empty)


def test_write_errors(tmp_path):
    with pytest.raises(SalongError, match="does not exist"):
        A.write_audio(tmp_path / "missing" / "a.wav", tone(), 44100)
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(SalongError, match="is a directory"):
        A.write_audio(tmp_path / "dir.wav", tone(), 44100)
    # /proc refuses new files even for root, like a read-only mount would
    with pytest.raises(SalongError, match="(not writable|cannot write in output folder '/proc')"):
        A.write_audio("/proc/a.wav", tone(), 44100)


@pytest.mark.parametrize("ext, bit_depth", [("wav", "16"), ("flac", None), ("wav", "32f")])
@pytest.mark.parametrize("amp", [0.5, 3.0], ids=["quiet", "loud"])
def test_blocks_write_the_same_file_as_the_whole_audio(tmp_path, ext, bit_depth, amp):
    """Blocks of any sizes (the peak limit of a loud signal included) give `write_audio`'s bytes,
    and the spill file is gone afterwards."""
    x = tone(amp=amp)
    whole = A.write_audio(tmp_path / f"whole.{ext}", x, 44100, bit_depth=bit_depth)
    cuts = [0, 1, 1, 1000, 7919, x.shape[1]]  # an empty block too
    blocks = (x[:, a:b] for a, b in zip(cuts, cuts[1:]))
    parts = A.write_audio_blocks(tmp_path / f"parts.{ext}", blocks, 44100, bit_depth=bit_depth)
    assert parts.read_bytes() == whole.read_bytes()
    assert sorted(os.listdir(tmp_path)) == [f"parts.{ext}", f"whole.{ext}"]


def test_blocks_with_bad_samples_write_nothing(tmp_path):
    old = A.write_audio(tmp_path / "out.wav", tone(freq=220.0), 44100)
    before = old.read_bytes()
    bad = tone()
    bad[1, 123] = np.nan
    with pytest.raises(SalongError, match="holds 1 NaN or infinite samples"):
        A.write_audio_blocks(tmp_path / "out.wav", iter([tone(), bad]), 44100)
    with pytest.raises(SalongError, match="non-empty"):
        A.write_audio_blocks(tmp_path / "new.wav", iter([]), 44100)
    with pytest.raises(SalongError, match="it is kept: pass --overwrite"):  # the final rename is exclusive
        A.write_audio_blocks(tmp_path / "out.wav", iter([tone()]), 44100, overwrite=False)
    assert os.listdir(tmp_path) == ["out.wav"] and old.read_bytes() == before
