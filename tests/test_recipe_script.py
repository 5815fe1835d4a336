"""examples/default_model.sh end to end at toy scale: every stage runs, the shipped generator
loads and its card is written, and a second run resumes instead of starting over."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from salong.pipeline import Generator

RECIPE = Path(__file__).resolve().parent.parent / "examples" / "default_model.sh"
TOY = {
    "CORPUS_PIECES": "3", "CORPUS_MIN_SECONDS": "2", "CORPUS_MAX_SECONDS": "3",
    "AE_STEPS": "2", "CLAP_STEPS": "2", "DIT_STEPS": "2", "DECODER_STEPS": "0",
    "AE_PRESET": "tiny-spectral", "CLAP_PRESET": "tiny", "DIT_PRESET": "tiny", "TEXT_LAYER": "-1",
    "CORPUS_CAPTIONS": "3", "TIMESTEP_SHIFT": "2",
    "SAMPLE_STEPS": "3", "CFG_SCALE": "2", "THREADS": "1", "EVAL_ARGS": "--quick",
}


def run_recipe(work: Path, ship: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **TOY, "OUT_MODEL": str(ship / "salong-default.safetensors"), **extra}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]  # this interpreter's salong
    return subprocess.run(["bash", str(RECIPE), str(work)], env=env, capture_output=True, text=True, timeout=900)


def stages(work: Path) -> list[str]:
    """The stages walltime.tsv records, in order; autoencoder and CLAP (side by side) sorted."""
    names = [line.split("\t")[0] for line in (work / "walltime.tsv").read_text().splitlines()]
    for i in range(len(names) - 1):
        if {names[i], names[i + 1]} == {"autoencoder", "clap"}:
            names[i], names[i + 1] = "autoencoder", "clap"
    return names


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_recipe_runs_every_stage_and_resumes(tmp_path):
    work, ship = tmp_path / "work", tmp_path / "ship"
    ship.mkdir()
    (ship / "autoencoder.safetensors").write_bytes(b"a standalone autoencoder the generator replaces")
    first = run_recipe(work, ship)
    assert first.returncode == 0, first.stderr[-3000:]
    model = ship / "salong-default.safetensors"
    assert first.stdout.strip().splitlines()[-1] == str(model)
    generator = Generator.load(model)
    assert (generator.config.sampling.steps, generator.config.sampling.cfg_scale) == (3, 2.0)
    assert generator.config.sampling.cfg_interval == (0.7, 1.0)  # the recipe's default, as the bundle's
    assert generator.config.sampling.beat_guidance_without_drums == 0.5
    assert generator.config.text_layer == -1  # the recipe's TEXT_LAYER
    assert not (ship / "autoencoder.safetensors").exists()
    card = (ship / "README.md").read_text()
    assert "3 procedural pieces" in card and "up to 3 caption wordings" in card and "examples/default_model.sh" in card
    assert "timestep shift 2" in card
    lines = [json.loads(line) for line in (work / "corpus" / "metadata.jsonl").read_text().splitlines()]
    assert all(entry["captions"][0] == entry["caption"] and len(entry["captions"]) >= 2 for entry in lines)
    assert json.loads((work / "dit" / "config.json").read_text())["task"]["timestep_shift"] == 2.0
    assert stages(work) == ["corpus", "autoencoder", "clap", "dit", "export", "evaluate"]
    assert json.loads((work / "corpus.json").read_text())["max_seconds"] == 3
    assert json.loads((work / "corpus.json").read_text())["no_drums"] == 0.5  # the bundle's corpus: half drumless
    assert all(entry["chords"] for entry in (json.loads(line) for line in
                                             (work / "corpus" / "metadata.jsonl").read_text().splitlines()))

    second = run_recipe(work, ship)  # finished stages resume at their last step: nothing trains again
    assert second.returncode == 0, second.stderr[-3000:]
    for run in ("autoencoder", "clap", "dit"):
        steps = [json.loads(line)["step"] for line in (work / run / "metrics.jsonl").read_text().splitlines()]
        assert max(steps) == 2, run
    assert stages(work) == ["corpus", "autoencoder", "clap", "dit", "export", "evaluate",
                            "autoencoder", "clap", "dit", "export", "evaluate"]  # the corpus is kept

    # A new machine without the run folders continues from the shipped generator: no
    # autoencoder or CLAP stage, and the DiT run takes the generator's own.
    init = tmp_path / "init.safetensors"
    init.write_bytes(model.read_bytes())
    work2, ship2 = tmp_path / "work2", tmp_path / "ship2"
    ship2.mkdir()
    third = run_recipe(work2, ship2, INIT=str(init), CORPUS_NO_DRUMS="1")
    assert third.returncode == 0, third.stderr[-3000:]
    corpus = [json.loads(line) for line in (work2 / "corpus" / "metadata.jsonl").read_text().splitlines()]
    assert all(entry["attributes"]["drums"] == "none" for entry in corpus)
    assert json.loads((work2 / "corpus.json").read_text())["no_drums"] == 1
    assert stages(work2) == ["corpus", "dit", "export", "evaluate"]
    assert not (work2 / "autoencoder").exists() and not (work2 / "clap").exists()
    assert json.loads((work2 / "init.json").read_text())["init"] == str(init)
    before, after = Generator.load(init), Generator.load(ship2 / "salong-default.safetensors")
    for old_part, new_part in [(before.autoencoder, after.autoencoder),
                               (before.text_encoder.clap, after.text_encoder.clap)]:
        old, new = old_part.state_dict(), new_part.state_dict()
        assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)
    card = (ship2 / "README.md").read_text()
    assert "started from the generator `init.safetensors`" in card
    assert "`--no-drums 1`" in card and "3 without drums" in card
    # The folder remembers its generator: still no autoencoder stage. DECODER_STEPS trains the
    # decoder alone after the DiT, and the shipped generator keeps the encoder its DiT learned.
    third_model = Generator.load(ship2 / "salong-default.safetensors")
    fourth = run_recipe(work2, ship2, DECODER_STEPS="2", DECODER_HEAD="4")
    assert fourth.returncode == 0, fourth.stderr[-3000:]
    assert stages(work2)[4:] == ["dit", "export", "decoder", "export-decoder", "evaluate"]
    shipped = Generator.load(ship2 / "salong-default.safetensors")
    old, new = third_model.autoencoder.state_dict(), shipped.autoencoder.state_dict()
    assert shipped.config.autoencoder.decoder_head == 4 and "decoder.head.2.weight" in new
    assert all(torch.equal(old[k], new[k]) for k in old if not k.startswith("decoder."))
    assert any(not torch.equal(old[k], new[k]) for k in old if k.startswith("decoder."))
    old, new = third_model.dit.state_dict(), shipped.dit.state_dict()
    assert all(torch.equal(old[k], new[k]) for k in old)
    assert "| decoder | 2 of 2 |" in (ship2 / "README.md").read_text()

    missing = run_recipe(tmp_path / "work3", ship2, INIT=str(tmp_path / "nope.safetensors"))
    assert missing.returncode == 2 and "no such file" in missing.stderr and not (tmp_path / "work3").exists()
