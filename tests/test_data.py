"""AudioDataset: indexing, captions, crops and padding, timing, seeds, resampling, faults, splits."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from salong.data import AudioDataset, AudioSkipWarning, collate_audio, validation_member
from salong.errors import SalongError
from salong.train import StepSampler

SR = 8000


def sine(freq: float, seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1)  # (samples, channels)


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = tmp_path / "corpus"
    (root / "audio").mkdir(parents=True)
    (root / "more" / "deep").mkdir(parents=True)
    # A ramp whose value is the time in units of 1/10 s: a crop's first sample tells its offset.
    ramp = (np.arange(int(3.5 * SR)) / SR / 10).astype(np.float32)
    sf.write(root / "audio" / "ramp.wav", np.stack([ramp, -ramp], axis=1), SR, subtype="FLOAT")
    sf.write(root / "audio" / "short.flac", sine(1000, 1.2, 22050), 22050)  # mono, other rate
    sf.write(root / "more" / "deep" / "tone.ogg", sine(500, 2.5, 16000, 2), 16000)
    (root / "more" / "deep" / "tone.txt").write_text("a sidecar caption\n")
    sf.write(root / "more" / "plain.aiff", sine(300, 0.5, SR), SR)
    sf.write(root / "more" / "._resource.wav", sine(300, 0.5, SR), SR)  # hidden: ignored
    (root / "more" / "notes.txt").write_text("not audio")
    lines = [
        {"path": "audio/ramp.wav", "caption": "a rising ramp", "duration": 3.5, "attributes": {"bpm": 120}},
        {"path": "audio/short.flac", "caption": "a short beep"},
    ]
    (root / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


def by_path(ds: AudioDataset) -> dict[str, int]:
    return {f.relpath: i for i, f in enumerate(ds.files)}


def test_index_and_captions(corpus):
    ds = AudioDataset(corpus, SR, 2, window_seconds=2.0)
    assert [f.relpath for f in ds.files] == ["audio/ramp.wav", "audio/short.flac", "more/deep/tone.ogg",
                                             "more/plain.aiff"]
    caps = {f.relpath: f.caption for f in ds.files}
    assert caps == {
        "audio/ramp.wav": "a rising ramp",
        "audio/short.flac": "a short beep",
        "more/deep/tone.ogg": "a sidecar caption",
        "more/plain.aiff": "",
    }
    ramp = ds.files[0]
    assert ramp.duration == pytest.approx(3.5) and ramp.sample_rate == SR and ramp.channels == 2
    assert ramp.attributes == {"bpm": 120}
    assert ds.skipped == 0 and ds.window_samples == 2 * SR


def test_crop_shapes_timing_and_seed_determinism(corpus):
    ds = AudioDataset(corpus, SR, 2, window_samples=2 * SR)
    i = by_path(ds)["audio/ramp.wav"]
    starts = set()
    for seed in range(12):
        item = ds[(i, seed)]
        audio, mask = item["audio"], item["padding_mask"]
        assert audio.dtype == torch.float32 and audio.shape == (2, 2 * SR)
        assert mask.dtype == torch.bool and mask.shape == (2 * SR,) and bool(mask.all())
        offset = round(float(audio[0, 0]) * 10 * SR)  # the ramp gives the offset in samples
        assert 0 <= offset <= int(1.5 * SR)
        expected = (np.arange(offset, offset + 2 * SR) / SR / 10).astype(np.float32)
        assert np.allclose(audio[0].numpy(), expected, atol=1e-6)  # a contiguous window
        assert torch.equal(audio[1], -audio[0])
        assert item["seconds_start"] == math.floor(offset / SR)
        assert item["seconds_total"] == 4  # ceil(3.5)
        assert item["caption"] == "a rising ramp" and item["path"] == "audio/ramp.wav" and item["seed"] == seed
        again = ds[(i, seed)]
        assert torch.equal(again["audio"], audio) and again["seconds_start"] == item["seconds_start"]
        starts.add(offset)
    assert len(starts) > 6  # the seed moves the crop
    # Without random crops the window is the start of the file.
    fixed = AudioDataset(corpus, SR, 2, window_samples=2 * SR, random_crop=False)
    assert fixed[(i, 3)]["seconds_start"] == 0 and float(fixed[(i, 5)]["audio"][0, 0]) == 0.0


def test_padding_resampling_and_channels(corpus):
    ds = AudioDataset(corpus, 44100, 2, window_seconds=2.0)
    i = by_path(ds)["audio/short.flac"]  # 1.2 s mono at 22.05 kHz
    item = ds[(i, 7)]
    audio, mask = item["audio"], item["padding_mask"]
    assert audio.shape == (2, 88200)
    real = int(mask.sum())
    assert abs(real - round(1.2 * 44100)) <= 2
    assert bool(mask[:real].all()) and not bool(mask[real:].any())  # one block of real audio, then padding
    assert torch.count_nonzero(audio[:, real:]) == 0  # the padding is exact silence
    assert torch.equal(audio[0], audio[1])  # mono duplicated to stereo
    assert item["seconds_start"] == 0 and item["seconds_total"] == 2  # ceil(1.2)
    spectrum = np.abs(np.fft.rfft(audio[0, :real].numpy()))
    assert np.fft.rfftfreq(real, 1 / 44100)[spectrum.argmax()] == pytest.approx(1000, abs=2)  # pitch kept
    # Stereo down to mono, and a random crop of a resampled file keeps its pitch.
    mono = AudioDataset(corpus, 44100, 1, window_seconds=1.0)
    tone = mono[(by_path(mono)["more/deep/tone.ogg"], 3)]["audio"]
    assert tone.shape == (1, 44100)
    spectrum = np.abs(np.fft.rfft(tone[0].numpy()))
    assert np.fft.rfftfreq(44100, 1 / 44100)[spectrum.argmax()] == pytest.approx(500, abs=2)


def test_plain_index_collate_and_workers(corpus):
    ds = AudioDataset(corpus, SR, 1, window_seconds=1.0)
    assert torch.equal(ds[2]["audio"], ds[2]["audio"])  # a plain index has a fixed seed
    batch = collate_audio([ds[(i, 0)] for i in range(len(ds))])
    assert batch["audio"].shape == (4, 1, SR) and batch["padding_mask"].shape == (4, SR)
    assert batch["seconds_total"].dtype == torch.float32 and batch["caption"][0] == "a rising ramp"

    def batches(workers: int) -> list[torch.Tensor]:
        sampler = StepSampler(len(ds), 3, seed=5, stop_step=4)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate_audio, num_workers=workers)
        return [b["audio"] for b in loader]

    assert all(torch.equal(a, b) for a, b in zip(batches(0), batches(2)))  # workers do not change items


def test_unreadable_files_are_skipped_with_one_warning_each(corpus):
    (corpus / "audio" / "broken.wav").write_bytes(b"RIFF" + bytes(200))
    (corpus / "audio" / "empty.flac").write_bytes(b"")
    with open(corpus / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"path": "audio/gone.wav", "caption": "deleted"}) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = AudioDataset(corpus, SR, 1, window_seconds=1.0)
    messages = [str(w.message) for w in caught if issubclass(w.category, AudioSkipWarning)]
    assert len(messages) == 3 and ds.skipped == 3
    assert any("audio/broken.wav" in m for m in messages)
    assert any("audio/empty.flac" in m for m in messages)
    assert any("audio/gone.wav" in m and "metadata.jsonl" in m for m in messages)
    assert all("\n" not in m for m in messages)
    assert len(ds) == 4


def test_a_file_corrupted_after_indexing_is_replaced(corpus):
    ds = AudioDataset(corpus, SR, 1, window_seconds=1.0)
    i = by_path(ds)["audio/short.flac"]
    (corpus / "audio" / "short.flac").write_bytes(b"garbage" * 50)
    with pytest.warns(AudioSkipWarning, match="audio/short.flac: decoding failed"):
        item = ds[(i, 11)]
    assert item["path"] == ds.files[i + 1].relpath
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once; later reads go straight to the replacement
        again = ds[(i, 11)]
    assert again["path"] == item["path"] and torch.equal(again["audio"], item["audio"])


def test_errors(tmp_path, corpus):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SalongError, match=r"no readable audio files in .*empty \(looked for \.wav, \.flac"):
        AudioDataset(tmp_path / "empty", SR, 1, window_seconds=1.0)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.wav").write_bytes(b"nope")
    with pytest.warns(AudioSkipWarning), pytest.raises(SalongError, match="no readable audio files"):
        AudioDataset(tmp_path / "junk", SR, 1, window_seconds=1.0)
    with pytest.raises(SalongError, match="does not exist"):
        AudioDataset(tmp_path / "nowhere", SR, 1, window_seconds=1.0)
    with pytest.raises(SalongError, match="window length"):
        AudioDataset(corpus, SR, 1, window_seconds=0.0)
    with pytest.raises(SalongError, match="exactly one"):
        AudioDataset(corpus, SR, 1)
    with open(corpus / "metadata.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(SalongError, match="metadata.jsonl line 3 is not valid JSON"):
        AudioDataset(corpus, SR, 1, window_seconds=1.0)


def test_split_is_deterministic_and_stable(corpus):
    names = [f"song_{i:03d}.wav" for i in range(400)]
    val = [n for n in names if validation_member(n, 0.25)]
    assert 60 < len(val) < 140
    assert val == [n for n in names if validation_member(n, 0.25)]
    assert validation_member("a/b.wav", 0.3) == validation_member("a/./b.wav", 0.3)
    assert {n for n in names if validation_member(n, 0.25, salt="x")} != set(val)  # the salt reshuffles

    ds = AudioDataset(corpus, SR, 1, window_seconds=1.0)
    train, valid = ds.split(0.5)
    assert sorted(f.relpath for f in train.files + valid.files) == sorted(f.relpath for f in ds.files)
    before = {f.relpath for f in valid.files}
    sf.write(corpus / "audio" / "new.wav", sine(200, 0.5, SR), SR)
    _, valid2 = AudioDataset(corpus, SR, 1, window_seconds=1.0).split(0.5)
    assert before <= {f.relpath for f in valid2.files}  # adding a file moves no other file
    assert len(train[(0, 1)]["audio"][0]) == SR
    with pytest.raises(SalongError, match="validation fraction"):
        ds.split(1.5)


def test_several_captions_per_file_are_drawn_by_the_item_seed(corpus):
    """A metadata line's "captions" join its caption; each item reads one of them, fixed by its
    seed, and over many seeds every one; a malformed list is one clear error."""
    lines = [json.loads(line) for line in (corpus / "metadata.jsonl").read_text().splitlines()]
    lines[0]["captions"] = ["a slow climb", "a rising ramp", "ramp, rising, stereo"]
    (corpus / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    ds = AudioDataset(corpus, sample_rate=SR, channels=2, window_seconds=1.0)
    ramp = next(i for i, f in enumerate(ds.files) if f.relpath == lines[0]["path"])
    assert ds.files[ramp].caption == "a rising ramp"
    assert ds.files[ramp].captions == ("a rising ramp", "a slow climb", "ramp, rising, stereo")  # no repeat
    assert all(len(f.captions) == 1 for i, f in enumerate(ds.files) if i != ramp)
    seen = [ds[(ramp, seed)]["caption"] for seed in range(60)]
    assert set(seen) == set(ds.files[ramp].captions)
    assert [ds[(ramp, seed)]["caption"] for seed in range(60)] == seen
    # the draw does not move the crop: offsets are the same as for a single caption
    single = AudioDataset(corpus, sample_rate=SR, channels=2, window_seconds=1.0)
    single.files[ramp] = dataclasses.replace(single.files[ramp], captions=("a rising ramp",))
    assert torch.equal(single[(ramp, 9)]["audio"], ds[(ramp, 9)]["audio"])

    for bad in ("one string", [], ["ok", ""], ["ok", 3]):
        lines[0]["captions"] = bad
        (corpus / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
        with pytest.raises(SalongError, match='line 1: "captions" must be a list of non-empty strings'):
            AudioDataset(corpus, sample_rate=SR, channels=2, window_seconds=1.0)
