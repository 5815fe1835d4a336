"""Bad-input table, continued (issue 30): model sizes a file states apart from its weights. A run
folder's config.json that does not describe its checkpoints (a width changed, a width times
depth beyond any model), and a model whose window (a Stable Audio Open `sample_size`, a
generator's `window`) is far past what its weights could hold. Each case: a non-zero exit,
one stderr line, no traceback, every file unchanged."""

import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import run_cli, write_tiny_sao
from salong.audio import write_audio
from salong.autoencoder import PRESETS
from salong.discriminators import DISCRIMINATOR_PRESETS
from salong.train import TrainConfig
from salong.train.autoencoder import AutoencoderTaskConfig, train_autoencoder


def _edited_run(run, folder, change):
    """A copy of the run folder `run` whose config.json's task config went through `change`."""
    shutil.copytree(run, folder)
    config = json.loads((folder / "config.json").read_text())
    change(config["task"])
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory, generator_path):
    root = tmp_path_factory.mktemp("models")
    (root / "corpus").mkdir()
    audio = np.random.default_rng(0).normal(0, 0.1, (2, 22050)).astype(np.float32)
    write_audio(root / "corpus" / "a.wav", audio, 44100)
    run = root / "run"  # a real run: two updates of a tiny autoencoder, its checkpoint step_0000002
    task = AutoencoderTaskConfig(model=PRESETS["tiny"], discriminator=DISCRIMINATOR_PRESETS["tiny"],
                                 window_seconds=0.25)
    train_autoencoder(root / "corpus", run, TrainConfig(steps=2, batch_size=1, lr=1e-3, checkpoint_every=2), task,
                      quiet=True, demo_count=0)
    wide = _edited_run(run, root / "wide_run", lambda t: t["model"].update(channels=8))
    critic = _edited_run(run, root / "critic_run", lambda t: t["discriminator"].update(filters=64))
    # each number is within read_run_config's bound (2**20); their product is 6e13 values
    huge = _edited_run(run, root / "huge_run", lambda t: t["model"].update(channels=2**20))
    fresh = root / "fresh_run"  # the same, in a run that has no checkpoint yet
    fresh.mkdir()
    shutil.copyfile(huge / "config.json", fresh / "config.json")
    sao = write_tiny_sao(root / "sao_window")
    config = json.loads((sao / "model_config.json").read_text())
    config["sample_size"] = 32 * 10**15  # whole latent patches of the tiny model: 1e15 frames
    (sao / "model_config.json").write_text(json.dumps(config))
    with safe_open(str(generator_path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    config["dit"]["window"] = 10**15
    save_file(tensors, str(root / "gen_window.safetensors"), metadata={**meta, "config": json.dumps(config)})
    return {"root": root, "corpus": root / "corpus", "run": run, "wide_run": wide, "critic_run": critic,
            "huge_run": huge, "fresh_run": fresh, "sao_window": sao, "gen_window": root / "gen_window.safetensors"}


NOT_FIT = r"config.json' does not fit the run's checkpoint step_0000002.safetensors: "
RESUME = ["train", "autoencoder", "--data", "{corpus}", "--resume", "--out"]
CASES = [
    # a run's config.json against its checkpoint's tensors, before the model is built
    (["train", "export", "{wide_run}", "-o", "m.safetensors"],
     NOT_FIT + r"generator tensor \S+ has shape \(4, 2, 7\) in the checkpoint, \(8, 2, 7\) by config.json; restore"),
    ([*RESUME, "{wide_run}"], NOT_FIT + r"generator tensor \S+ has shape"),
    (["train", "export", "{critic_run}", "-o", "m.safetensors"], NOT_FIT + r"discriminator tensor \S+ has shape"),
    ([*RESUME, "{critic_run}"], NOT_FIT + r"discriminator tensor"),
    # width times depth past any model, though each is within its own bound
    (["train", "export", "{huge_run}", "-o", "m.safetensors"],
     r"config.json' is damaged: its models would hold [\d,]+ values, more than 10,000,000,000, beyond any model"),
    ([*RESUME, "{huge_run}"], r"config.json' is damaged: its models would hold [\d,]+ values"),
    (["train", "export", "{fresh_run}", "-o", "m.safetensors"], r"config.json' is damaged: its models would hold"),
    ([*RESUME, "{fresh_run}"], r"config.json' is damaged: its models would hold"),
    # a window past what the weights could hold: info refuses it as generate does
    (["info", "{sao_window}"],
     r"model.safetensors' \(DiT\) does not fit its config: window=1000000000000000 is more than the \d+ values"),
    (["generate", "calm", "-s", "1", "--model", "{sao_window}", "-o", "x.wav"],
     r"model.safetensors' \(DiT\) does not fit its config: window=1000000000000000"),
    (["encode", "{corpus}/a.wav", "--model", "{sao_window}", "-o", "x.latents.safetensors"],
     r"\(DiT\) does not fit its config: window="),
    (["info", "{gen_window}"], r"gen_window.safetensors' \(dit\) does not fit its config: window=1000000000000000"),
    (["generate", "calm", "-s", "1", "--model", "{gen_window}", "-o", "x.wav"],
     r"gen_window.safetensors' \(dit\) does not fit its config: window=1000000000000000"),
]


def _snapshot(folder):
    """Every file under `folder` (a link as itself), with its size and modification time."""
    state = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            info = os.lstat(os.path.join(dirpath, name))
            state[os.path.join(dirpath, name)] = (info.st_size, info.st_mtime_ns)
    return state


@pytest.mark.parametrize("args,pattern", CASES, ids=[" ".join(a[:3]) + " " + a[-1] for a, _ in CASES])
def test_bad_input_is_one_line_and_changes_nothing(args, pattern, files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a.format(**files) for a in args]
    before = {**_snapshot(tmp_path), **_snapshot(files["root"])}
    code, out, err = run_cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None) and "Traceback" not in err, (argv, code, err)
    assert len(lines) == 1, (argv, err)
    assert re.search(pattern, lines[0]), (argv, lines[0])
    assert {**_snapshot(tmp_path), **_snapshot(files["root"])} == before, argv  # nothing created or changed


def test_the_run_itself_still_exports_and_the_models_are_checked_before_they_are_built(files, tmp_path, capsys,
                                                                                       monkeypatch):
    """The untouched run exports; the damaged ones fail before any model is built for real."""
    code, out, err = run_cli(capsys, "train", "export", files["run"], "-o", tmp_path / "m.safetensors")
    assert code == 0, err
    import salong.train.autoencoder as task_module

    built = []
    real = task_module.Autoencoder
    monkeypatch.setattr(task_module, "Autoencoder",
                        lambda config: (built.append(torch.empty(0).device.type), real(config))[1])
    code, _, err = run_cli(capsys, "train", "export", files["wide_run"], "-o", tmp_path / "w.safetensors")
    assert code == 1 and "does not fit the run's checkpoint" in err
    assert built == ["meta"]  # once, on the meta device, for the check
