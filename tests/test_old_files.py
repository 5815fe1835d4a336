"""Files made by earlier salong versions keep loading (tests/fixtures/old_files/README.md).

Each fixture was written by the old code itself, from a temporary worktree of its commit,
by tests/fixtures/old_files/make_old_files.py.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import salong
from salong import checkpoint as ck

OLD = Path(__file__).parent / "fixtures" / "old_files"
# 9c980fb: the first generator files (float32); 13b2b78: the last commit before DiTConfig.max_seconds
# became timing_max_seconds (5286ab3), float16 weights.
OLD_GENERATORS = ["9c980fb_generator.safetensors", "13b2b78_generator.safetensors"]


def _stored_config(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    return meta, json.loads(meta["config"])


@pytest.mark.parametrize("name", OLD_GENERATORS)
def test_old_generator_loads_generates_and_is_rewritten_in_todays_format(name, tmp_path):
    from salong.pipeline import Generator

    meta, stored = _stored_config(OLD / name)
    assert meta["salong_format"] == "1" and "salong_version" not in meta
    assert stored["dit"]["max_seconds"] == 512.0 and "timing_max_seconds" not in stored["dit"]

    gen = Generator.load(OLD / name)
    assert gen.config.dit.timing_max_seconds == 512.0
    assert gen.config.dit.controls == () and gen.config.canonical_text is False  # added since, with defaults
    song = gen.generate("calm piano", 0.5, steps=2, seed=1)
    assert song.audio.shape == (2, 22050) and np.isfinite(song.audio).all() and np.abs(song.audio).max() > 0

    # Saved again, it is a file of today's format, with today's names, that makes the same song.
    again = gen.save(tmp_path / "again.safetensors")
    meta, stored = _stored_config(again)
    assert meta["salong_format"] == str(ck.FORMAT_VERSION) == "2" and meta["salong_version"] == salong.__version__
    assert stored["dit"]["timing_max_seconds"] == 512.0 and "max_seconds" not in stored["dit"]
    assert np.array_equal(Generator.load(again).generate("calm piano", 0.5, steps=2, seed=1).audio, song.audio)


def test_old_autoencoder_and_clap_files_load():
    from salong.autoencoder import AutoencoderConfig, load_autoencoder
    from salong.clap import load_clap

    model, config = load_autoencoder(OLD / "13b2b78_autoencoder.safetensors")
    assert config == AutoencoderConfig(channels=2, c_mults=(1, 1, 1, 1, 1), latent_dim=8)
    with torch.no_grad():
        audio = model.decode(torch.randn(1, 8, 4))
    assert audio.shape == (1, 2, 4 * 2048) and torch.isfinite(audio).all()

    clap = load_clap(OLD / "13b2b78_clap.safetensors")
    ids, mask = clap.tokenize(["calm piano"])
    with torch.no_grad():
        embedding = clap.embed_text(ids, mask)
    assert embedding.shape == (1, clap.config.projection_dim) and torch.isfinite(embedding).all()


def test_old_dit_run_folder_config_reads_with_todays_names():
    """A DiT run folder keeps its DiTConfig under task.model; config.json has no format
    version, so every migration applies (`salong train export` and --resume read it)."""
    from salong.train.dit import DiTTaskConfig
    from salong.train.runs import read_run_config

    kind, train, task_dict = read_run_config(OLD / "13b2b78_dit_run")
    assert kind == "dit" and task_dict["model"]["max_seconds"] == 512.0
    task = ck.config_from_dict(DiTTaskConfig, task_dict)
    assert task.model.timing_max_seconds == 512.0 and task.model.width == 32


def test_a_dit_run_from_before_the_rename_resumes(tmp_path):
    """A run's checkpoints record its task config; one written before `max_seconds` became
    `timing_max_seconds`, and before fields added since, still resumes."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from salong.audio import write_audio
    from salong.autoencoder import PRESETS as AE, Autoencoder, save_autoencoder
    from salong.clap import PRESETS as CLAP, Clap, save_clap
    from salong.clap_inputs import train_tokenizer
    from salong.dit import PRESETS as DIT
    from salong.pipeline import SamplingConfig
    from salong.synth import make_piece
    from salong.train import TrainConfig
    from salong.train.dit import DiTTaskConfig, train_dit
    from salong.train.state import list_checkpoints

    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        piece = make_piece(seed=i, seconds=1.0)
        write_audio(data / f"{i}.wav", piece.audio, 44100)
    (data / "metadata.jsonl").write_text("".join(json.dumps({"path": f"{i}.wav", "caption": "x"}) + "\n"
                                                 for i in range(2)))
    torch.manual_seed(0)
    ae = save_autoencoder(tmp_path / "ae.safetensors", Autoencoder(AE["tiny"]))
    clap = save_clap(tmp_path / "clap.safetensors", Clap(CLAP["tiny"], train_tokenizer(["a b c"] * 8, vocab_size=512)))
    task = DiTTaskConfig(model=DIT["tiny"], sampling=SamplingConfig(steps=2, sigma_max=80.0), demo_count=0)
    train = TrainConfig(steps=2, batch_size=2, lr=1e-4, checkpoint_every=2)
    run = tmp_path / "run"
    train_dit(data, run, train, task, ae, clap, quiet=True)
    # the checkpoint as an older salong wrote it: format 1, the old name, no fields added since
    path = list_checkpoints(run)[-1][1]
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    config = json.loads(metadata["config"])
    model = config["task"]["model"]
    model["max_seconds"] = model.pop("timing_max_seconds")
    del model["controls"]
    for name in ("canonical_text", "control_dropout", "estimate_bpm"):
        del config["task"][name]
    metadata.update(config=json.dumps(config), salong_format="1")
    metadata.pop("salong_version", None)
    save_file(load_file(str(path)), str(path), metadata=metadata)
    result = train_dit(data, run, dataclasses.replace(train, steps=3), task, resume=True, quiet=True)
    assert result.step == 3
