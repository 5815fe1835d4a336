"""`salong train clap`: the contrastive task learns, resumes exactly, exports with its tokenizer,
evaluates held-out retrieval, and refuses uncaptioned data clearly."""

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from salong import clap as C
from salong import clap_inputs as I
from salong.audio import write_audio
from salong.data import validation_member
from salong.errors import SalongError
from salong.synth import DRUM_STYLES, LEADS, make_piece
from salong.train import TrainConfig, export_run
from salong.train.clap import (
    TOKENIZER_FILE,
    ClapTaskConfig,
    UncaptionedWarning,
    captioned_split,
    clap_dataset,
    evaluate_clap,
    load_tokenizer,
    train_clap,
)
from salong.train.tasks import task_for_run

TINY = C.PRESETS["tiny"]
FILES = 10
FRACTION = 0.2


def piece(i: int, seconds: float = 5.0):
    """Synth piece i; lead instrument and drums vary with i so that few pairs are near-twins."""
    return make_piece(seed=i, seconds=seconds, lead=LEADS[i % len(LEADS)], drums=DRUM_STYLES[i % len(DRUM_STYLES)])


def write_pairs(root: Path, captions: list[str], seconds: float = 5.0) -> Path:
    """Synth pieces as `i.wav` with the given captions in metadata.jsonl."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, caption in enumerate(captions):
        write_audio(root / f"{i}.wav", piece(i, seconds).audio, 44100)
        lines.append(json.dumps({"path": f"{i}.wav", "caption": caption}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Ten 5 s synth pieces (the tiny model's window) with their own attribute captions."""
    root = tmp_path_factory.mktemp("corpus")
    return write_pairs(root, [piece(i).caption for i in range(FILES)])


def task_config(**kw):
    return ClapTaskConfig(**{"model": TINY, "validation_fraction": FRACTION, "eval_crops": 2, **kw})


def train_config(**kw):
    base = dict(steps=4, batch_size=4, lr=5e-4, warmup=0.0, log_every=1, checkpoint_every=2)
    return TrainConfig(**{**base, **kw})


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A tiny CLAP trained 40 steps on the corpus's training split, evaluated on its held-out files."""
    run = tmp_path_factory.mktemp("runs") / "run"
    train_clap(corpus, run, train_config(steps=40, batch_size=8, checkpoint_every=40, eval_every=40),
               task_config(), quiet=True)
    return run


def test_split_holds_out_by_path_hash(corpus):
    train_set, held_out = captioned_split(clap_dataset(corpus, TINY), FRACTION)
    want = sorted(f"{i}.wav" for i in range(FILES) if validation_member(f"{i}.wav", FRACTION))
    assert sorted(f.relpath for f in held_out.files) == want and 0 < len(want) < 5
    assert len(train_set) + len(held_out) == FILES
    item = train_set[(0, 123)]
    assert item["audio"].shape == (1, TINY.clip_samples)  # mono windows at the tower's rate


def test_training_lowers_loss_and_retrieves_training_pairs(trained, corpus):
    rows = metrics(trained)
    loss = [m["clap/loss"] for m in rows if "clap/loss" in m]
    assert len(loss) == 40
    assert np.mean(loss[-5:]) < 0.5 * np.mean(loss[:5]), loss
    assert all(m["clap/temperature"] > 0 for m in rows if "clap/temperature" in m)
    # the exported EMA model, on its 8 training pairs (one centre window each), beats chance (1/8) well
    clap = C.load_clap(trained / "model.safetensors")
    train_set, _ = captioned_split(clap_dataset(corpus, TINY), FRACTION)
    recall = evaluate_clap(clap, train_set.files, crops=1)
    chance = 1 / len(train_set)
    assert recall["pairs"] == len(train_set)
    assert recall["text_to_audio@1"] >= 4 * chance and recall["audio_to_text@1"] >= 4 * chance, recall


def test_held_out_evaluation_with_fewer_pairs_than_k(trained):
    (ev,) = [m for m in metrics(trained) if "eval/text_to_audio@1" in m]
    n = ev["eval/pairs"]
    assert ev["step"] == 40 and 0 < n < 5
    # recall@5 over fewer than 5 candidates is 1 by definition; @1 is a fraction of the n pairs
    assert ev["eval/text_to_audio@5"] == ev["eval/audio_to_text@5"] == 1.0
    assert ev["eval/text_to_audio@1"] * n == pytest.approx(round(ev["eval/text_to_audio@1"] * n))
    assert np.isfinite(ev["eval/loss"])


def test_resume_is_exact(corpus, tmp_path):
    # 3 s windows of the 5 s pieces: the random crops (drawn from item seeds) matter too
    config = task_config(model=replace(TINY, clip_seconds=3.0))
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_clap(corpus, straight, train_config(), config, quiet=True)
    train_clap(corpus, split, train_config(steps=2), config, quiet=True)
    train_clap(corpus, split, train_config(), config, resume=True, quiet=True)
    a, b = load_file(straight / "model.safetensors"), load_file(split / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def loss(run: Path) -> float:
        return [m["clap/loss"] for m in metrics(run) if m.get("step") == 4][-1]

    assert loss(straight) == loss(split)
    assert (straight / TOKENIZER_FILE).read_text() == (split / TOKENIZER_FILE).read_text()


def test_export_through_task_for_run(trained, tmp_path):
    out = export_run(trained, tmp_path / "clap.safetensors", task_for_run(trained))
    exported, final = C.load_clap(out), C.load_clap(trained / "model.safetensors")
    captions = ["calm piano at 90 BPM", "energetic drums"]
    ids, mask = exported.tokenize(captions)
    want_ids, _ = I.tokenize(load_tokenizer(trained / TOKENIZER_FILE), captions, TINY.max_text_length)
    assert torch.equal(ids, want_ids)  # the run's own tokenizer travels inside the model
    with torch.no_grad():
        assert torch.equal(exported.embed_text(ids, mask), final.embed_text(*final.tokenize(captions)))


def test_unseen_script_still_encodes(trained):
    clap = C.load_clap(trained / "model.safetensors")
    text = "静かなピアノの曲、ゆっくり"  # no Japanese in the training captions
    ids, mask = clap.tokenize([text])
    n = int(mask.sum())
    assert I.PAD_ID not in ids[0, :n].tolist() and clap.tokenizer.unk_token_id not in ids[0].tolist()
    assert clap.tokenizer.decode(ids[0, :n], skip_special_tokens=True) == text  # byte-level: lossless
    with torch.no_grad():
        assert torch.isfinite(clap.embed_text(ids, mask)).all()


def test_uncaptioned_data(tmp_path, corpus):
    # .txt sidecars that are empty, and a metadata.jsonl whose captions are empty
    sidecars = tmp_path / "sidecars"
    sidecars.mkdir()
    for i in range(3):
        write_audio(sidecars / f"{i}.wav", np.zeros((2, 4410), np.float32), 44100)
        (sidecars / f"{i}.txt").write_text("  \n")
    empty_meta = write_pairs(tmp_path / "meta", ["", "", ""], seconds=0.5)
    for folder in (sidecars, empty_meta):
        with pytest.raises(SalongError, match="none of the 3 audio files .* has a caption"):
            train_clap(folder, tmp_path / f"run_{folder.name}", train_config(), task_config(), quiet=True)
        assert not (tmp_path / f"run_{folder.name}").exists()
    # some captions missing: those files are left out with one counted warning
    partial = write_pairs(tmp_path / "partial", ["a", "", "b c", ""], seconds=0.5)
    with pytest.warns(UncaptionedWarning, match="2 of 4 audio files"):
        train_set, held_out = captioned_split(clap_dataset(partial, TINY), 0.0)
    assert sorted(f.caption for f in train_set.files) == ["a", "b c"] and len(held_out) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UncaptionedWarning)
        with pytest.raises(SalongError, match="needs >= 2"):
            captioned_split(clap_dataset(write_pairs(tmp_path / "one", ["only", ""], 0.5), TINY), 0.0)


def test_bad_settings(corpus, tmp_path):
    with pytest.raises(SalongError, match="--batch-size 1"):
        train_clap(corpus, tmp_path / "r", train_config(batch_size=1), task_config(), quiet=True)
    with pytest.raises(SalongError, match="vocab_size 9999"):
        task_config(vocab_size=9999)  # more than the tiny model's 512
    with pytest.raises(SalongError, match="eval_crops"):
        task_config(eval_crops=0)
    with pytest.raises(SalongError, match="validation_fraction"):
        ClapTaskConfig(model=TINY, validation_fraction=1.0)
    # exporting a CLAP run needs the tokenizer it was trained with
    run = tmp_path / "run"
    train_clap(corpus, run, train_config(steps=1), task_config(), quiet=True)
    (run / TOKENIZER_FILE).unlink()
    with pytest.raises(SalongError, match="no tokenizer.json"):
        task_for_run(run)
    with pytest.raises(SalongError, match="no tokenizer.json"):
        train_clap(corpus, run, train_config(steps=2), task_config(), resume=True, quiet=True)
