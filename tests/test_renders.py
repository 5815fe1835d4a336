"""Renders that explain themselves: the recipe inside every file, `info` and `--like`,
pictures of songs and runs, the batch summary, and batches split over torchrun processes."""

import json
import os
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli, tiny_generator
from salong.audio import probe, read_audio, write_audio
from salong.errors import SalongError
from salong.recipe import WAV_TAG_LIMIT, Recipe, read_recipe
from salong.request import SongRequest

ROOT = Path(__file__).resolve().parent.parent


def png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    return struct.unpack(">II", data[16:24])  # the IHDR chunk: width, height


# --- the recipe in the file's tags ---------------------------------------------------


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_recipe_is_written_and_read_back(tmp_path, ext):
    request = SongRequest(prompt="calm piano, 70 BPM — in C major", seconds=1.2, seed=2**40, steps=2, cfg=3.5,
                          sampler="dpmpp-2m-sde", negative="drums", frames="window", init_audio="/takes/in.wav",
                          init_noise_level=2.5)
    recipe = Recipe(request, model="/models/gen.safetensors", model_sha256="0123456789abcdef",
                    text_encoder="/models/t5-base")
    audio = np.random.default_rng(0).normal(0, 0.1, (2, 4410)).astype(np.float32)
    path = write_audio(tmp_path / f"song.{ext}", audio, 44100, tags=recipe.tags(ext))
    assert read_recipe(path) == recipe
    tags = probe(path).tags
    if ext != "mp3":  # an MP3's software tag names its encoder, and libsndfile reads its non-ASCII title back
        assert tags["software"].startswith("salong ") and tags["title"] == request.prompt  # as Latin-1


def test_recipe_leaves_out_unused_fields_and_refuses_what_it_cannot_keep():
    recipe = Recipe(SongRequest("organ", 30.0, seed=1, steps=100, cfg=7.0, sampler="dpmpp-2m", frames="needed"))
    assert set(json.loads(recipe.to_json())) == {"salong", "recipe", "prompt", "seconds", "seed", "steps", "cfg",
                                                 "sampler", "frames"}
    assert Recipe.from_json(recipe.to_json(), "x") == recipe
    long = Recipe(SongRequest("x" * WAV_TAG_LIMIT, 1.0, seed=1, steps=1, cfg=1.0, sampler="euler", frames="needed"))
    with pytest.raises(SalongError, match=r"too long for a \.wav file to keep its settings.*write \.flac"):
        long.tags("wav")
    assert Recipe.from_json(long.tags("flac")["comment"], "x") == long
    for text, pattern in [("hello", "carries no salong settings"), ('{"salong": "9", "recipe": 7}', "upgrade salong"),
                          ('{"salong": "0.1.0", "recipe": 1, "prompt": "a", "seconds": "long", "seed": 1, "steps": 1,'
                           ' "cfg": 1, "sampler": "euler"}', r"damaged salong settings \(seconds='long'\)")]:
        with pytest.raises(SalongError, match=pattern):
            Recipe.from_json(text, "'t.wav'")


# --- info and --like -----------------------------------------------------------------


def test_render_info_rerender_is_bit_identical(tmp_path, capsys, generator_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "generate", "calm piano 'at night'", "-s", 0.7, "--seed", 3, "--steps", 2,
                             "--cfg-scale", 2.5, "--negative", "drums", "--model", generator_path, "-o", "take.flac")
    assert code == 0, err
    code, out, err = run_cli(capsys, "info", "take.flac")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert "prompt: calm piano 'at night'" in lines and "seed: 3" in lines and "cfg scale: 2.5" in lines
    assert "negative prompt: drums" in lines and f"model: {generator_path} (sha256 " in out
    words = shlex.split(lines[-1])  # the last line is the command that makes the file again
    assert words[:3] == ["salong", "generate", "calm piano 'at night'"] and words[-2:] == ["-o", "take.flac"]
    code, _, err = run_cli(capsys, *words[1:-1], "again.flac")  # the same format: wav rounds differently
    assert code == 0, err
    take = read_audio("take.flac")[0]
    assert np.array_equal(read_audio("again.flac")[0], take)

    code, out, err = run_cli(capsys, "generate", "--like", "take.flac", "-o", "like.flac")
    assert code == 0 and out == "like.flac\t3\n", err
    assert np.array_equal(read_audio("like.flac")[0], take)
    assert read_recipe("like.flac") == read_recipe("take.flac")

    # an option given on the command line wins over the take's
    code, out, err = run_cli(capsys, "generate", "--like", "take.flac", "-s", 0.4, "--steps", 1, "-o", "short.wav")
    assert code == 0, err
    recipe = read_recipe("short.wav")
    assert (recipe.request.seconds, recipe.request.steps, recipe.request.seed, recipe.request.negative) == (0.4, 1, 3,
                                                                                                           "drums")
    assert read_audio("short.wav")[0].shape == (2, round(0.4 * 44100))


def test_recipe_keeps_init_audio_and_frames_for_like(tmp_path, capsys, generator_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_audio(tmp_path / "in.wav", np.random.default_rng(1).normal(0, 0.1, (2, 30000)).astype(np.float32), 44100)
    code, _, err = run_cli(capsys, "generate", "organ", "-s", 0.5, "--seed", 2, "--steps", 2, "--frames", "window",
                           "--init-audio", "in.wav", "--init-noise-level", 1.5, "--model", generator_path,
                           "-o", "take.wav")
    assert code == 0, err
    request = read_recipe("take.wav").request
    assert (request.frames, request.init_audio.path, request.init_noise_level) == ("window", str(tmp_path / "in.wav"),
                                                                                   1.5)
    code, out, err = run_cli(capsys, "info", "take.wav")
    assert "init audio: " + str(tmp_path / "in.wav") in out and "--frames window" in out.splitlines()[-1]
    code, _, err = run_cli(capsys, "generate", "--like", "take.wav", "-o", "again.wav")
    assert code == 0, err
    assert np.array_equal(read_audio("again.wav")[0], read_audio("take.wav")[0])
    code, _, err = run_cli(capsys, "generate", "--like", "take.wav", "--frames", "needed", "-o", "needed.wav")
    assert code == 0 and read_recipe("needed.wav").request.frames == "needed", err


def test_like_with_n_draws_new_seeds(tmp_path, capsys, generator_path):
    take = tmp_path / "take.wav"
    code, _, err = run_cli(capsys, "generate", "organ", "-s", 0.4, "--seed", 5, "--steps", 1, "--model",
                           generator_path, "-o", take)
    assert code == 0, err
    code, out, err = run_cli(capsys, "generate", "--like", take, "-n", 2, "-o", tmp_path / "more", "--json")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 2 and 5 not in [r["seed"] for r in records]
    assert {(r["prompt"], r["seconds"], r["steps"]) for r in records} == {("organ", 0.4, 1)}
    assert "2 rendered, 0 skipped, 0 failed; 0.8 s of audio in" in err and "real-time factor" in err


def test_like_names_a_missing_or_changed_model(tmp_path, capsys):
    model = tiny_generator().save(tmp_path / "gen.safetensors")
    take = tmp_path / "take.wav"
    assert run_cli(capsys, "generate", "organ", "-s", 0.3, "--seed", 1, "--steps", 1, "--model", model,
                   "-o", take)[0] == 0
    tiny_generator(seed=1).save(model)  # other weights at the same path
    code, out, err = run_cli(capsys, "generate", "--like", take, "-o", tmp_path / "again.wav")
    assert code == 0 and "warning:" in err and "the song will differ" in err
    model.unlink()
    code, out, err = run_cli(capsys, "generate", "--like", take, "-o", tmp_path / "third.wav")
    assert code == 1 and "which is not there any more; pass --model FILE" in err
    assert not (tmp_path / "third.wav").exists()


# --- pictures ------------------------------------------------------------------------


def test_plot_a_song_and_a_run(tmp_path, capsys):
    audio = np.sin(np.linspace(0, 2000, 3 * 44100, dtype=np.float32))[None].repeat(2, axis=0) * 0.5
    recipe = Recipe(SongRequest("a sine", 3.0, seed=0, steps=1, cfg=1.0, sampler="euler", frames="needed"))
    song = write_audio(tmp_path / "song.ogg", audio, 44100, tags=recipe.tags("ogg"))
    code, out, err = run_cli(capsys, "plot", song, "-o", tmp_path / "song.png", "--width", 640, "--height", 360)
    assert code == 0 and out.strip() == str(tmp_path / "song.png"), err
    assert png_size(tmp_path / "song.png") == (640, 360)

    run = tmp_path / "run"
    run.mkdir()
    lines = [{"step": s, "elapsed": s, "generator/loss": 2 / s, "generator/stft": 1 / s,
              "generator/lr": 1e-4 * min(1, s / 4)}
             for s in range(1, 11)]
    lines += [{"step": 5, "eval/stft": 0.9, "eval/si_sdr": -3.0}, {"step": 10, "eval/stft": 0.7, "eval/si_sdr": 1.5}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 11, "gen')
    code, out, err = run_cli(capsys, "plot", run, "-o", tmp_path / "curves.png", "--width", 800, "--height", 500)
    assert code == 0, err
    assert png_size(tmp_path / "curves.png") == (800, 500)
    code, out, err = run_cli(capsys, "plot", run, "-o", tmp_path / "curves.png")
    assert code == 1 and "exists; pass --overwrite" in err


# --- batches -------------------------------------------------------------------------


def test_two_processes_render_every_line_once(tmp_path, capsys, generator_path):
    prompts = tmp_path / "prompts.txt"
    lines = ["calm piano", "busy drums", "happy brass", "slow strings", "organ shuffle", "soft pads"]
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "songs"
    args = ["generate", "--prompts", str(prompts), "-o", str(out), "-s", "0.3", "--steps", "1",
            "--model", str(generator_path), "--device", "cpu", "--json", "--no-progress"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks below run: another thread count sums in another order
    try:
        code, single, err = run_cli(capsys, *args)  # the same batch in one process, for reference
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    paths = [Path(json.loads(line)["path"]) for line in single.splitlines()]
    reference = {path: read_audio(path)[0] for path in paths}
    for index in (0, 2, 3, 5):
        paths[index].unlink()

    # ranks 0 and 1 get lines 0, 2, 4 and 1, 3, 5; lines 1 and 4 exist and are skipped
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "salong",
               *args, "--skip-existing"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["prompt"] for r in records] == [lines[i] for i in (0, 2, 3, 5)]  # once each, in line order, by rank 0
    assert [Path(r["path"]) for r in records] == [paths[i] for i in (0, 2, 3, 5)]
    skipped = [line for line in run.stderr.splitlines() if line.endswith("(exists)")]
    assert skipped == [f"skipped {paths[1]} (exists)", f"skipped {paths[4]} (exists)"]
    assert "4 rendered, 2 skipped, 0 failed; 1.2 s of audio in" in run.stderr
    assert sorted(out.iterdir()) == sorted(paths)
    for path in paths:  # the same songs as one process makes, each with its recipe
        assert np.array_equal(read_audio(path)[0], reference[path])
        assert read_recipe(path).request.prompt == lines[paths.index(path)]
