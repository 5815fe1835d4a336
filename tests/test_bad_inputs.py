"""A table of bad inputs across every command, through the real CLI entry point: each gives a
non-zero exit, exactly one line on stderr, no traceback, and leaves every file as it was."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli, write_tiny_sao
from salong.audio import write_audio
from salong.cli import main
from salong.autoencoder import PRESETS, Autoencoder, save_autoencoder
from salong.latents import Latents, save_latents


@pytest.fixture(scope="module")
def files(tmp_path_factory, generator_path):
    """Inputs the table refers to by name: good files, damaged files and odd paths."""
    root = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    ae = save_autoencoder(root / "ae.safetensors", Autoencoder(PRESETS["tiny"]))
    audio = np.random.default_rng(0).normal(0, 0.1, (2, 22050)).astype(np.float32)
    write_audio(root / "song.wav", audio, 44100)
    lat = save_latents(root / "song.latents.safetensors", Latents(torch.zeros(64, 11), 44100, 44100 / 2048, 22050, 2))
    for name, meta in (("lat_channels", {"channels": str(10**9)}), ("lat_rate", {"latent_rate": "nan"}),
                       ("lat_samples", {"samples": str(10**18)}), ("lat_sr", {"sample_rate": str(10**30)})):
        damaged_latents(lat, root / f"{name}.latents.safetensors", meta)
    nan = save_latents(root / "nan.latents.safetensors",
                       Latents(torch.full((64, 11), float("nan")), 44100, 44100 / 2048, 22050, 2))
    (root / "garbage.wav").write_bytes(b"RIFF" + os.urandom(300))
    (root / "garbage.safetensors").write_bytes(os.urandom(300))
    (root / "empty.txt").write_text("")
    (root / "comments.txt").write_text("# only a comment\n\n")
    (root / "notjson.jsonl").write_text("{\"prompt\": \"a\", \"seconds\": \n")
    (root / "badkey.jsonl").write_text(json.dumps({"prompt": "a", "tempo": 120}) + "\n")
    (root / "corpus").mkdir()
    (root / "nocorpus").mkdir()
    write_audio(root / "corpus" / "a.wav", audio, 44100)
    (root / "corpus" / "metadata.jsonl").write_text(json.dumps({"path": "a.wav", "caption": "calm"}) + "\n")
    (root / "folder").mkdir()
    (root / "partial" / "audio").mkdir(parents=True)
    write_audio(root / "partial" / "audio" / "000001.wav", audio, 44100)
    hard = _hard_inputs(root, audio, generator_path)
    outputs_and_special_files(root, audio, generator_path)
    named = {p.name.replace(".", "_"): p for p in root.iterdir()}  # pipe_wav, take_wav, sao_dir, ...
    return {**named, **hard, "root": root, "zero": "/dev/zero", "partial": root / "partial", "gen": generator_path,
            "ae": ae, "wav": root / "song.wav", "lat": lat,
            "nan": nan, "garbage_wav": root / "garbage.wav", "garbage_model": root / "garbage.safetensors",
            "empty": root / "empty.txt", "comments": root / "comments.txt", "notjson": root / "notjson.jsonl",
            "badkey": root / "badkey.jsonl", "corpus": root / "corpus", "nocorpus": root / "nocorpus",
            "folder": root / "folder", "missing": root / "missing.safetensors"}


def damaged_latents(good, path, changes):
    """A copy of the latents file `good` with metadata entries changed (a crafted file)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(good), "pt") as f:
        save_file({"latents": f.get_tensor("latents")}, str(path), metadata={**f.metadata(), **changes})


def outputs_and_special_files(root, audio, generator_path):
    """Inputs of the output and special-file rows: links that lead nowhere, named pipes, a
    take whose model became a pipe, an audio file named like latents, run and model folders."""
    os.symlink("nowhere.wav", root / "dangling.wav")
    os.symlink("loop_b.wav", root / "loop_a.wav")
    os.symlink("loop_a.wav", root / "loop_b.wav")
    for name in ("pipe.safetensors", "pipe.wav", "pipe.txt"):
        os.mkfifo(root / name)
    (root / "sao_pipe").mkdir()
    os.mkfifo(root / "sao_pipe" / "model_config.json")
    (root / "sao_dir").mkdir()
    (root / "sao_dir" / "model_config.json").write_text("{}")
    (root / "sao_dir" / "model.safetensors").write_bytes(b"weights")
    (root / "fake_run" / "checkpoints").mkdir(parents=True)
    (root / "fake_run" / "checkpoints" / "step_0000001.safetensors").write_bytes(b"state")
    write_audio(root / "audio_named.safetensors", audio, 44100, fmt="wav")
    (root / "alias_prompts.txt").write_text(json.dumps({"prompt": "a", "output": "a.wav"}) + "\n"
                                            + json.dumps({"prompt": "b", "output": "sub/../a.wav"}) + "\n")
    (root / "eleven.txt").write_text("calm\n" * 11)
    (root / "garbage.mp3").write_bytes(os.urandom(3000))
    (root / "emptyaudio.wav").write_bytes(b"")
    for name, special in (("pipemeta", "metadata.jsonl"), ("pipecaption", "a.txt"), ("dirmeta", None)):
        (root / name).mkdir()
        write_audio(root / name / "a.wav", audio, 44100)
        if special is None:
            (root / name / "metadata.jsonl").mkdir()
        else:
            os.mkfifo(root / name / special)
    # a take made with a model that has since become a named pipe
    model = root / "piped_model.safetensors"
    shutil.copyfile(generator_path, model)
    with pytest.raises(SystemExit):
        main(["generate", "calm", "-s", "0.1", "--model", str(model), "-o", str(root / "take.wav"), "--no-progress"])
    model.unlink()
    os.mkfifo(model)


BOMB = "[" * 100_000 + "]" * 100_000  # JSON nested past Python's recursion limit


def _hard_inputs(root, audio, generator_path):
    """Files handed over by someone else (hardening, issue 30): crafted recipes, JSON bombs,
    numbers out of range, weights of the wrong type, text in the wrong encoding."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    recipe = {"salong": "0.1.0", "recipe": 1, "prompt": "calm", "seconds": 1e308, "seed": 3, "steps": 4,
              "cfg": 3.0, "sampler": "dpmpp-2m", "frames": "needed"}
    write_audio(root / "huge.flac", audio, 44100, tags={"comment": json.dumps(recipe)})
    write_audio(root / "bomb.flac", audio, 44100, tags={"comment": '{"salong": "0.1.0", "prompt": ' + BOMB + "}"})
    (root / "bomb.jsonl").write_text('{"prompt": ' + BOMB + "}\n")
    (root / "hugesec.jsonl").write_text(json.dumps({"prompt": "a", "seconds": 1e308}) + "\n")
    (root / "emptyout.jsonl").write_text(json.dumps({"prompt": "a", "output": ""}) + "\n")
    (root / "dotout.jsonl").write_text(json.dumps({"prompt": "a", "output": "."}) + "\n")
    (root / "surrogate.jsonl").write_text('{"prompt": "calm \\ud800"}\n')
    (root / "bombrun").mkdir()
    (root / "bombrun" / "config.json").write_text(BOMB)
    (root / "bombrun" / "metrics.jsonl").write_text('{"step": ' + BOMB + "}\n")
    (root / "oddmetrics").mkdir()
    (root / "oddmetrics" / "metrics.jsonl").write_text('{"step": 1, "loss": NaN}\n{"step": 2, "lr": -1e308}\n')
    (root / "pipemetrics").mkdir()
    os.mkfifo(root / "pipemetrics" / "metrics.jsonl")
    for name, task in (("hugerun", {"model": {"channels": 10**7}}), ("listrun", [1])):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps({"task_kind": "autoencoder", "train": {}, "task": task}))
    (root / "bombsao").mkdir()
    (root / "bombsao" / "model_config.json").write_text(BOMB)
    (root / "bombsao" / "model.safetensors").write_bytes(b"")
    with safe_open(str(generator_path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    for dtype in (torch.int8, torch.bool):
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(cast, str(root / f"gen_{str(dtype)[6:]}.safetensors"), metadata=meta)
    write_tiny_sao(root / "sao_deep", t5=False)
    config = json.loads((root / "sao_deep" / "model_config.json").read_text())
    config["model"]["diffusion"]["config"]["depth"] = 10**6  # building it, even on the meta device, takes hours
    (root / "sao_deep" / "model_config.json").write_text(json.dumps(config))
    for name, file in (("sao_boolw", "model.safetensors"), ("sao_t5int8", "t5-base/model.safetensors")):
        write_tiny_sao(root / name)
        with safe_open(str(root / name / file), "pt") as f:
            kept, weights = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        damaged = {k: (v > 0 if "boolw" in name else v.to(torch.int8)) for k, v in weights.items()}
        save_file(damaged, str(root / name / file), metadata=kept)
    save_file({"w": torch.zeros(2)}, str(root / "bombconfig.safetensors"),
              metadata={**{k: meta[k] for k in ("salong_format", "kind")}, "config": BOMB})
    for name, line in (("latin1", '{"path": "a.wav", "caption": "caf\xe9"}\n'.encode("latin-1")),
                       ("metabomb", ('{"path": "a.wav", "caption": ' + BOMB + "}\n").encode())):
        (root / name).mkdir()
        write_audio(root / name / "a.wav", audio, 44100)
        (root / name / "metadata.jsonl").write_bytes(line)
    return {name.replace(".", "_"): root / name for name in (
        "huge.flac", "bomb.flac", "bomb.jsonl", "hugesec.jsonl", "emptyout.jsonl", "dotout.jsonl", "bombsao", "bombrun",
        "surrogate.jsonl", "gen_int8.safetensors", "gen_bool.safetensors", "bombconfig.safetensors", "latin1",
        "metabomb", "sao_boolw", "sao_t5int8", "hugerun", "listrun", "sao_deep", "oddmetrics",
        "pipemetrics")}


G = ["--model", "{gen}"]
CASES = [
    # generate: numbers
    (["generate", "calm", "-s", "0", *G], r"seconds must be a number above 0"),
    (["generate", "calm", "-s", "-3", *G], r"seconds must be a number above 0"),
    (["generate", "calm", "-s", "nan", *G], r"seconds must be a number above 0"),
    (["generate", "calm", "-s", "inf", *G], r"seconds must be a number above 0"),
    (["generate", "calm", "-s", "abc", *G], r"Input should be a valid number"),
    (["generate", "calm", "-s", "500", *G], r"longer than this model's window"),
    (["generate", "calm", "--steps", "0", *G], r"steps must be a whole number >= 1"),
    (["generate", "calm", "--steps", "-5", *G], r"steps must be a whole number >= 1"),
    (["generate", "calm", "--steps", "2.5", *G], r"Input should be a valid integer"),
    (["generate", "calm", "--cfg-scale", "-1", *G], r"cfg scale must be a number from 0 to 100"),
    (["generate", "calm", "--cfg-scale", "1e38", *G], r"cfg scale must be a number from 0 to 100"),
    (["generate", "calm", "--cfg-scale", "nan", *G], r"cfg scale must be a number from 0 to 100"),
    (["generate", "calm", "--seed", "-1", *G], r"seed must be a whole number"),
    (["generate", "calm", "--seed", "18446744073709551616", *G], r"seed must be a whole number"),
    (["generate", "calm", "-n", "0", *G], r"-n must be at least 1"),
    (["generate", "calm", "--sampler", "heun", *G], r"unknown sampler 'heun'"),
    (["generate", "calm", "--device", "gpu", *G], r"'gpu' is not one of"),
    # generate: prompts and batch files
    (["generate", *G], r"give a PROMPT or --prompts FILE"),
    (["generate", "calm", "--prompts", "{comments}", *G], r"give a PROMPT or --prompts FILE"),
    (["generate", "  ", *G], r"the prompt is empty"),
    (["generate", "--prompts", "{missing}", *G], r"prompts file .* not found"),
    (["generate", "--prompts", "{empty}", *G], r"has no prompts"),
    (["generate", "--prompts", "{comments}", *G], r"has no prompts"),
    (["generate", "--prompts", "{notjson}", "-s", "0.5", *G], r"line 1: invalid JSON"),
    (["generate", "--prompts", "{badkey}", "-s", "0.5", *G], r"line 1: unknown keys \['tempo'\]"),
    (["generate", "calm", "--name", "{{nope}}.wav", "-n", "2", "-o", "out", *G], r"bad --name template"),
    (["generate", "calm", "-n", "2", "--name", "same.wav", "-o", "out", *G], r"several songs would be written"),
    # generate: outputs
    (["generate", "calm", "-o", "x.aac", *G], r"unknown output extension '.aac'"),
    (["generate", "calm", "-o", "x.wav", "--format", "aac", *G], r"unknown format 'aac'"),
    (["generate", "calm", "-o", "x.wav", "--format", "mp3", *G], r"contradicts the extension"),
    (["generate", "calm", "-n", "3", "-o", "take.wav", *G], r"names one file, but 3 songs need a folder"),
    (["generate", "--prompts", "{wav}", *G], r"is not UTF-8 text"),
    (["generate", "calm", "-o", "no/such/dir/x.wav", "-s", "0.5", *G], r"does not exist"),
    (["generate", "calm", "-o", "{wav}", "-s", "0.5", *G], r"exists; pass --overwrite"),
    # generate: models
    (["generate", "calm", "--model", "{missing}"], r"not found"),
    (["generate", "calm", "--model", "{garbage_model}"], r"not a readable safetensors checkpoint"),
    (["generate", "calm", "--model", "{ae}"], r"is a autoencoder checkpoint, but this needs a model of kind generator"),
    (["generate", "calm", "--model", "{folder}"],
     r"has no model_config.json, so it is not a Stable Audio Open model folder"),
    # generate --like: the take must be a song salong made
    (["generate", "--like", "{missing}"], r"not found"),
    (["generate", "--like", "{wav}"], r"carries no salong settings"),
    (["generate", "--like", "{garbage_wav}"], r"cannot decode .* as audio"),
    (["generate", "--like", "{folder}"], r"is a directory"),
    # plot
    (["plot", "{missing}", "-o", "p.png"], r"not found"),
    (["plot", "{garbage_wav}", "-o", "p.png"], r"cannot decode .* as audio"),
    (["plot", "{folder}", "-o", "p.png"], r"is not a training run folder \(no metrics.jsonl\)"),
    (["plot", "{wav}", "-o", "p.jpg"], r"unknown picture extension '.jpg'.*\.png"),
    (["plot", "{wav}", "-o", "no/such/dir/p.png"], r"does not exist"),
    (["plot", "{wav}", "-o", "p"], r"unknown picture extension '\(none\)'"),
    (["plot", "{wav}", "-o", "{wav}"], r"exists; pass --overwrite"),
    (["plot", "{wav}", "-o", "p.png", "--width", "10"], r"--width must be 200 to 8000 pixels, got 10"),
    (["plot", "{wav}", "-o", "p.png", "--height", "0"], r"--height must be 200 to 8000 pixels, got 0"),
    (["train", "clap", "--data", "{corpus}", "--out", "r", "--clip-seconds", "1e308"],
     r"clip_seconds must be > 0 and at most 3600, got 1e\+308"),
    # encode
    (["encode", "{missing}", "--model", "{ae}"], r"not found|does not exist"),
    (["encode", "{garbage_wav}", "--model", "{ae}", "-o", "g.latents.safetensors"], r"cannot decode .* as audio"),
    (["encode", "{wav}", "--model", "{garbage_model}", "-o", "z.latents.safetensors"], r"not a readable safetensors"),
    (["encode", "{wav}", "--model", "{lat}", "-o", "z.latents.safetensors"], r"latents"),
    (["encode", "{wav}", "{wav}", "--model", "{ae}", "-o", "z"], r"would both be written to"),
    (["encode", "{wav}", "--model", "{ae}", "-o", "{lat}"], r"exists; pass --overwrite"),
    # decode
    (["decode", "{nan}", "--model", "{ae}", "-o", "n.wav"], r"holds NaN"),
    (["decode", "{wav}", "--model", "{ae}", "-o", "w.wav"], r"not a readable safetensors|not a latents file"),
    (["decode", "{ae}", "--model", "{ae}", "-o", "w.wav"],
     r"is a model checkpoint \(autoencoder\), not a latents file"),
    (["decode", "{lat}", "--model", "{ae}", "-o", "x.aac"], r"unknown output extension"),
    (["decode", "{lat}", "--model", "{ae}", "-o", "{wav}"], r"exists; pass --overwrite"),
    (["decode", "{missing}", "--model", "{ae}", "-o", "m.wav"], r"not found"),
    (["decode", "{lat_channels_latents_safetensors}", "--model", "{ae}", "-o", "m.wav"],
     r"is damaged: it records 1000000000 channels, more than 64; encode the audio again"),
    (["info", "{lat_rate_latents_safetensors}"], r"is damaged: its latent rate nan Hz is not above 0"),
    (["decode", "{lat_samples_latents_safetensors}", "--model", "{ae}", "-o", "m.wav"],
     r"it records 1000000000000000000 samples, more than its 11 frames hold"),
    (["info", "{lat_sr_latents_safetensors}"], r"its sample rate 1000000000000000000000000000000 Hz is not from 1"),
    # info
    (["info", "{missing}"], r"not found"),
    (["info", "{garbage_model}"], r"not a readable safetensors checkpoint"),
    (["info", "{folder}"], r"has no model_config.json"),
    # synth
    (["synth", "0", "c"], r"n=0 is not allowed"),
    (["synth", "2", "c", "--max-seconds", "300"], r"285"),
    (["synth", "2", "c", "--min-seconds", "5", "--max-seconds", "4"], r"min_seconds=5.0"),
    (["synth", "2", "c", "--format", "mp3"], r"fmt='mp3'"),
    (["synth", "2", "c", "--durations", "normal"], r"durations='normal'"),
    (["synth", "2", "c", "--jobs", "0"], r"jobs=0"),
    (["synth", "2", "c", "--seed", "-1"], r"seed=-1"),
    (["synth", "2", "{corpus}"], r"already holds a corpus .*pass --overwrite"),
    (["synth", "2", "{partial}"], r"000001.wav' exists .*pass --overwrite"),
    (["synth", "2", "{wav}"], r"is not a folder"),
    # train
    (["train", "autoencoder", "--data", "{nocorpus}", "--out", "r", "--preset", "tiny"], r"no readable audio files"),
    (["train", "autoencoder", "--data", "{missing}", "--out", "r"], r"does not exist"),
    (["train", "autoencoder", "--data", "{corpus}", "--out", "{corpus}/run", "--preset", "tiny"],
     r"--out .* and --data .* overlap \(one is inside the other\): the run's demos and checkpoints would become"),
    (["train", "clap", "--data", "{root}/./corpus/..", "--out", "{root}", "--preset", "tiny"], r"overlap"),
    (["train", "dit", "--data", "{corpus}", "--out", "{corpus}/../corpus/r", "--init", "{gen}"], r"overlap"),
    (["train", "autoencoder", "--data", "{corpus}", "--out", "r", "--preset", "huge"], r"unknown preset 'huge'"),
    (["train", "autoencoder", "--data", "{corpus}", "--out", "r", "--lr", "-1"], r"learning rate|lr"),
    (["train", "autoencoder", "--data", "{corpus}", "--out", "r", "--steps", "0"], r"steps"),
    (["train", "autoencoder", "--data", "{corpus}", "--out", "r", "--window-seconds", "0.001"],
     r"shorter than one latent frame"),
    (["train", "autoencoder", "--data", "{corpus}", "--out", "r", "--resume"], r"not a salong run folder"),
    (["train", "autoencoder", "--data", "{corpus}", "--out", "r", "--init", "{missing}"], r"not found"),
    (["train", "autoencoder", "--data", "{corpus}", "--out", "r", "--init", "{ae}", "--resume"],
     r"give only one of them"),
    (["train", "autoencoder", "--data", "{corpus}", "--out", "r", "--discriminator", "huge"], r"huge"),
    (["train", "clap", "--data", "{corpus}", "--out", "r", "--batch-size", "1"], r"no negatives"),
    (["train", "clap", "--data", "{corpus}", "--out", "r", "--validation-fraction", "1.5"], r"validation_fraction"),
    (["train", "dit", "--data", "{corpus}", "--out", "r", "--text-encoder", "{ae}"], r"--autoencoder is required"),
    (["train", "dit", "--data", "{corpus}", "--out", "r", "--crops", "random", "--preset", "tiny"], r"random"),
    (["train", "dit", "--data", "{corpus}", "--out", "r", "--init", "{ae}"], r"generator"),
    (["train", "export", "{missing}", "-o", "m.safetensors"], r"not found"),
    (["train", "export", "{folder}", "-o", "m.safetensors"], r"not a salong run folder"),
    (["train", "export", "{folder}", "-o", "{ae}"], r"exists; pass --overwrite"),
    # outputs: links, streams, inputs as outputs, extensions (issue 30, class 1)
    (["generate", "calm", "-o", "{dangling_wav}", "-s", "0.5", *G], r"is a symlink to 'nowhere.wav', which does not"),
    (["generate", "calm", "-o", "{loop_a_wav}", "-s", "0.5", "--overwrite", *G], r"symlink .* \(or loops\)"),
    (["decode", "{lat}", "--model", "{ae}", "-o", "{dangling_wav}", "--overwrite"], r"symlink .*remove the link"),
    (["generate", "calm", "-n", "2", "-o", "-", *G], r"-o - is a stream, which takes one song, but there are 2"),
    (["encode", "{wav}", "{garbage_wav}", "--model", "{ae}", "-o", "-"], r"-o - is a stream, .* 2 inputs"),
    (["generate", "--prompts", "{alias_prompts_txt}", "-o", "{root}", *G],
     r"several songs would be written to '.*a\.wav' \(named '.*a\.wav' and '.*sub/\.\./a\.wav'\)"),
    (["generate", "calm", "-o", "{wav}", "--init-audio", "{wav}", "--init-noise-level", "1", "--overwrite", *G],
     r"is the input .*never writes over its own input"),
    (["generate", "calm", "-o", "{take_wav}", "--like", "{take_wav}", "--overwrite", "--model", "{gen}"],
     r"is the input"),
    (["encode", "{wav}", "--model", "{ae}", "-o", "{wav}", "--overwrite"],
     r"would hold latents, so its name must end in \.safetensors; e\.g\. -o .*song\.latents\.safetensors"),
    (["encode", "{wav}", "--model", "{ae}", "-o", "out.wav"], r"would hold latents"),
    (["encode", "{audio_named_safetensors}", "--model", "{ae}", "-o", "{audio_named_safetensors}", "--overwrite"],
     r"is the input"),
    (["decode", "{lat}", "--model", "{ae}", "-o", "{lat}", "--format", "wav", "--overwrite"], r"is the input"),
    (["decode", "{lat}", "{lat}", "--model", "{ae}", "-o", "{root}"], r"would both be written to"),
    (["encode", "{wav}", "--model", "{ae}", "-o", "{lat}"], r"exists; pass --overwrite to replace it$"),
    (["convert", "{sao_dir}", "-o", "{sao_dir}/model.safetensors", "--overwrite"], r"inside the input folder"),
    (["convert", "{sao_dir}", "-o", "out.wav"], r"would hold a generator checkpoint, so its name must end"),
    (["convert", "{sao_dir}", "-o", "-"], r"writes a file and reads it back"),
    (["train", "export", "{fake_run}", "-o", "{fake_run}/checkpoints/step_0000001.safetensors", "--overwrite"],
     r"inside the input folder"),
    (["train", "export", "{fake_run}", "-o", "model.wav"], r"would hold a model checkpoint"),
    (["plot", "{wav}", "-o", "{dangling_wav}"], r"symlink"),
    # special files: refused before anything reads them; counts bounded (class 3)
    (["generate", "calm", "--model", "{pipe_safetensors}"], r"'.*pipe\.safetensors' is a named pipe \(FIFO\), not a"),
    (["generate", "calm", "--model", "{zero}"], r"'/dev/zero' is a character device, not a regular file"),
    (["generate", "--like", "{take_wav}", "-o", "again.wav"], r"model '.*piped_model\.safetensors' is a named pipe"),
    (["generate", "--prompts", "{pipe_txt}", *G], r"prompts file .* is a named pipe"),
    (["generate", "calm", "--lora", "{pipe_safetensors}", *G], r"--lora file .* is a named pipe"),
    (["train", "autoencoder", "--data", "{corpus}", "--out", "{zero}"], r"run folder '/dev/zero' is not a folder"),
    (["generate", "calm", "--init-audio", "{pipe_wav}", "--init-noise-level", "1", *G], r"is a named pipe"),
    (["decode", "{pipe_safetensors}", "--model", "{ae}", "-o", "p.wav"], r"is a named pipe"),
    (["encode", "{pipe_wav}", "--model", "{ae}", "-o", "p.latents.safetensors"], r"is a named pipe"),
    (["info", "{pipe_safetensors}"], r"is a named pipe"),
    (["info", "{pipe_wav}"], r"is a named pipe"),
    (["info", "{sao_pipe}"], r"model config .* is a named pipe"),
    (["plot", "{pipe_wav}", "-o", "p.png"], r"is a named pipe"),
    (["train", "autoencoder", "--data", "{pipemeta}", "--out", "r"], r"metadata file .* is a named pipe"),
    (["train", "clap", "--data", "{pipecaption}", "--out", "r"], r"caption file .*a\.txt' is a named pipe"),
    (["train", "dit", "--data", "{pipemeta}", "--out", "r", "--init", "{gen}"], r"metadata file .* is a named pipe"),
    (["train", "autoencoder", "--data", "{dirmeta}", "--out", "r"], r"metadata.jsonl' is not a file \(a folder"),
    (["synth", "1", "{pipemeta}", "--recaption"], r"metadata file .* is a named pipe"),
    (["generate", "--prompts", "{root}", *G], r"prompts file|directory"),
    (["synth", "1000000000000", "c"], r"use an integer from 1 to 1,000,000"),
    (["synth", "50000000", "c"], r"use an integer from 1 to 1,000,000"),
    (["synth", "1000000", "c", "--min-seconds", "285", "--max-seconds", "285"],
     r"1000000 pieces need about .* GB .* free; make fewer or shorter pieces"),
    (["synth", "2", "c", "--jobs", "100000"], r"jobs=100000 is not allowed; use an integer from 1 to \d+"),
    (["generate", "calm", "-n", "100000", "-o", "many", *G], r"-n must be at least 1 and at most 10,000"),
    (["generate", "--prompts", "{eleven_txt}", "-n", "10000", "-o", "many", *G], r"110,000 songs, more than one run"),
    (["train", "autoencoder", "--data", "{corpus}", "--out", "r", "--batch-size", "1000000000"],
     r"--batch-size must be an integer from 1 to 65,536"),
    (["train", "autoencoder", "--data", "{corpus}", "--out", "r", "--num-workers", "100000"], r"--num-workers"),
    # messages that are true (class 6)
    (["info", "{garbage_mp3}"], r"cannot decode .* \(its contents are in no format libsndfile reads"),
    (["info", "{emptyaudio_wav}"], r"audio file .*emptyaudio.wav' is empty \(0 bytes\); give a file that holds audio"),
    (["encode", "{emptyaudio_wav}", "--model", "{ae}", "-o", "e.latents.safetensors"], r"is empty \(0 bytes\)"),
    (["encode", "{garbage_mp3}", "--model", "{ae}", "-o", "g.latents.safetensors"], r"in no format libsndfile"),
    # hardening (issue 30), class 2: numbers too large, JSON nesting bombs, text in the wrong encoding,
    # weights of the wrong type, --name format bombs, huge counts
    (["generate", "calm", "-s", "1e308", *G], r"seconds must be a number above 0 and at most 86400"),
    (["generate", "calm", "-s", "86401", *G], r"at most 86400"),
    (["generate", "--like", "{huge_flac}"], r"damaged salong settings \(seconds must be .* got 1e\+308\)"),
    (["info", "{huge_flac}"], r"damaged salong settings"),
    (["generate", "--like", "{bomb_flac}"], r"carries no salong settings"),
    (["info", "{bombconfig_safetensors}"], r"is corrupt \(nested too deeply"),
    (["generate", "calm", "--model", "{bombconfig_safetensors}"], r"is corrupt \(nested too deeply"),
    (["generate", "calm", "--model", "{bombsao}"], r"model_config.json' is not readable JSON \(nested too deeply"),
    (["info", "{bombsao}"], r"not readable JSON \(nested too deeply"),
    (["generate", "--prompts", "{bomb_jsonl}", "-s", "0.5", *G], r"line 1: invalid JSON \(nested too deeply"),
    (["generate", "--prompts", "{hugesec_jsonl}", *G], r"line 1: seconds must be .* got 1e\+308"),
    (["generate", "calm", "-s", "0.5", "--model", "{gen_int8_safetensors}"],
     r"does not fit the model: .* holds int8 values, the model expects floating point"),
    (["generate", "calm", "-s", "0.5", "--model", "{gen_bool_safetensors}"], r"holds bool values"),
    (["generate", "calm", "-s", "0.04", "--model", "{sao_boolw}"], r"\(DiT\) does not fit .* holds bool values"),
    (["generate", "calm", "-s", "0.04", "--model", "{sao_t5int8}"],
     r"T5 encoder weights .* are damaged: .* holds I8 values, the model expects floating point"),
    (["convert", "{sao_t5int8}", "-o", "c.safetensors"], r"T5 encoder weights .* are damaged"),
    (["info", "{sao_deep}"], r"model.diffusion.config.depth is 1,000,000, more than 1,024; the file is damaged"),
    (["encode", "{wav}", "--model", "{sao_boolw}", "-o", "b.latents.safetensors"], r"holds bool values"),
    (["generate", "calm", "-s", "0.5", "-o", "\udcff\udcfe.wav", *G], r"is not valid UTF-8; give a UTF-8 file name"),
    (["encode", "{wav}", "--model", "{ae}", "-o", "\udcff.latents.safetensors"], r"is not valid UTF-8"),
    (["generate", "caf\udce9", "-s", "0.5", *G], r"the prompt 'caf\\udce9' is not valid UTF-8 text"),
    (["generate", "calm", "--negative", "\udcff", "-s", "0.5", *G], r"negative prompt .* is not valid UTF-8"),
    (["generate", "calm", "-n", "2", "-o", "out", "--name", "{{seed:>999999999}}.{{ext}}", *G],
     r"bad --name template .* is not a plain format"),
    (["generate", "calm", "-n", "2", "-o", "out", "--name", "{{index:{{seed}}}}.{{ext}}", *G], r"not a plain format"),
    (["generate", "calm", "-n", "2", "-o", "out", "--name", "{{seed:0300d}}.{{ext}}", *G], r"not a plain format"),
    (["generate", "calm", "-n", "2", "-o", "out", "--name", "{{slug:x<250}}{{seed}}.{{ext}}", *G],
     r"makes file names of up to .* bytes; file systems take 255"),
    (["generate", "calm", "--steps", "99999999999999999999", *G], r"steps must be a whole number >= 1 and at most"),
    (["train", "autoencoder", "--data", "{corpus}", "--out", "r", "--window-seconds", "1e308"],
     r"window_seconds=1e\+308 is longer than 3600 s"),
    (["train", "autoencoder", "--data", "{corpus}", "--out", "r", "--lr", "1e308"],
     r"--lr must be a positive number, at most 1, got 1e\+308"),
    (["train", "dit", "--data", "{corpus}", "--out", "r", "--lr", "inf"], r"--lr must be a positive number"),
    (["train", "dit", "--data", "{corpus}", "--out", "r", "--init", "{gen}", "--window-seconds", "1e308"],
     r"window_seconds must be >= 0 .* and at most 3600, got 1e\+308"),
    (["train", "dit", "--data", "{corpus}", "--out", "r", "--init", "{gen}", "--min-crop-seconds", "1e308"],
     r"min_crop_seconds must be > 0 and at most 3600"),
    (["train", "dit", "--data", "{corpus}", "--out", "r", "--init", "{gen}", "--lora", "1000000000"],
     r"--lora rank 1000000000 is more than the narrowest target layer's width \(\d+\); use a rank from 1 to"),
    (["train", "autoencoder", "--data", "{corpus}", "--out", "r", "--batch-size", "99999999999999"],
     r"--batch-size must be an integer from 1 to 65,536"),
    (["train", "autoencoder", "--data", "{corpus}", "--out", "{bombrun}", "--resume"],
     r"config.json' is damaged \(nested too deeply"),
    (["plot", "{bombrun}", "-o", "p.png"], r"holds no metrics yet"),
    (["plot", "{oddmetrics}", "-o", "p.png"], r"holds no metric salong plots \(losses, gradient norms"),
    (["plot", "{pipemetrics}", "-o", "p.png"], r"metrics file .* is a named pipe \(FIFO\)"),
    (["train", "export", "{hugerun}", "-o", "m.safetensors"],
     r"config.json' is damaged: task.model.channels is 10,000,000, more than 1,048,576, beyond any model"),
    (["train", "export", "{listrun}", "-o", "m.safetensors"], r"is damaged \(its train and task entries must be"),
    (["generate", "--prompts", "{surrogate_jsonl}", "-s", "0.5", *G], r"line 1: the prompt .* is not valid UTF-8 text"),
    (["generate", "calm", "-s", "0.5", "--init-audio", "{wav}", "--init-noise-level", "1e308", "-o", "i.wav", *G],
     r"at most its sigma_max 80"),
    (["train", "autoencoder", "--data", "{latin1}", "--out", "r", "--preset", "tiny"],
     r"metadata.jsonl' is not UTF-8 text \(byte 0xe9 on line 1\); save it as UTF-8"),
    (["train", "autoencoder", "--data", "{metabomb}", "--out", "r", "--preset", "tiny"],
     r"line 1 is not valid JSON \(nested too deeply\)"),
    # class 4: names that would break the one-line-per-file record
    (["generate", "calm", "-s", "0.5", "-o", "a\nb.wav", *G], r"holds the control character '\\n'"),
    (["generate", "calm", "-s", "0.5", "-o", "a\x1b[2J.wav", *G], r"holds the control character '\\x1b'"),
    (["encode", "{wav}", "--model", "{ae}", "-o", "a\rb.latents.safetensors"], r"control character '\\r'"),
    (["decode", "{lat}", "--model", "{ae}", "-o", "a\u2028b.wav"], r"control character '\\u2028'"),
    (["generate", "calm", "-n", "2", "-o", "out", "--name", "{{slug}}\t{{seed}}.{{ext}}", "-s", "0.5", *G],
     r"control character '\\t'"),
    # class 5: --name takes only the documented fields, plainly; an output that names no file
    (["generate", "calm", "-n", "2", "-o", "out", "--name", "{{slug.__class__.__mro__}}{{seed}}.{{ext}}", *G],
     r"unknown field \{slug.__class__.__mro__\}"),
    (["generate", "calm", "-n", "2", "-o", "out", "--name", "{{slug[0]}}{{seed}}.{{ext}}", *G], r"unknown field"),
    (["generate", "calm", "-n", "2", "-o", "out", "--name", "{{}}{{seed}}.{{ext}}", *G], r"unknown field \{\}"),
    (["generate", "calm", "-n", "2", "-o", "out", "--name", "{{seed!r}}.{{ext}}", *G], r"not a plain format"),
    (["generate", "--prompts", "{emptyout_jsonl}", "-s", "0.5", *G], r"line 1: output must name a file, got ''"),
    (["generate", "--prompts", "{dotout_jsonl}", "-s", "0.5", *G], r"line 1: output must name a file, got '\.'"),
    # usage
    (["nonsense"], r"No such command"),
    (["generate", "calm", "--no-such-option", *G], r"No such option"),
]


def _snapshot(*folders):
    """Every file under the folders (a link as itself), with its size and modification time."""
    state = {}
    for folder in folders:
        for dirpath, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(dirpath, name)
                info = os.lstat(path)
                state[path] = (info.st_size, info.st_mtime_ns)
    return state


def test_the_table_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize("args,pattern", CASES, ids=[" ".join(a[:3]) for a, _ in CASES])
def test_bad_input_is_one_line_and_changes_nothing(args, pattern, files, tmp_path, capsys, monkeypatch):
    import re

    monkeypatch.chdir(tmp_path)
    argv = [a.format(**files) for a in args]
    before = _snapshot(tmp_path, os.path.dirname(files["wav"]))
    code, out, err = run_cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None) and "Traceback" not in err, (argv, code, err)
    assert len(lines) == 1, (argv, err)
    assert re.search(pattern, lines[0]), (argv, lines[0])
    assert _snapshot(tmp_path, os.path.dirname(files["wav"])) == before, argv  # nothing created or changed


def test_a_failed_dit_preparation_leaves_no_run_folder(files, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "dit", "--data", files["corpus"], "--out", out, "--autoencoder",
                           files["ae"], "--text-encoder", files["missing"], "--preset", "tiny")
    assert code == 1 and "not found" in err and not out.exists()


# --- outputs that are streams, links and races (issue 30); cases whose right answer is success


def _salong(*args, cwd, **kw):
    """`python -m salong ARGS` as a process of its own, for what needs real file descriptors."""
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    return subprocess.run([sys.executable, "-m", "salong", *map(str, args)], cwd=cwd, env=env, **kw)


def test_a_stream_output_gets_the_bytes_and_the_record_goes_to_stderr(tmp_path, generator_path):
    import subprocess

    song = ["generate", "calm", "-s", "0.2", "--seed", "3", "--model", generator_path, "--no-progress"]
    assert _salong(*song, "-o", tmp_path / "file.wav", cwd=tmp_path).returncode == 0
    piped = _salong(*song, "-o", "-", cwd=tmp_path, capture_output=True)
    assert piped.returncode == 0 and piped.stdout == (tmp_path / "file.wav").read_bytes()  # nothing appended
    assert piped.stderr.decode().strip() == "-\t3"
    # /dev/stdout onto a file the shell opened, with --overwrite: written into, the link kept
    with open(tmp_path / "out.bin", "wb") as sink:
        done = _salong(*song, "-o", "/dev/stdout", "--overwrite", "--json", cwd=tmp_path, stdout=sink,
                       stderr=subprocess.PIPE)
    assert done.returncode == 0 and (tmp_path / "out.bin").read_bytes() == (tmp_path / "file.wav").read_bytes()
    assert json.loads(done.stderr)["seed"] == 3 and os.path.islink("/dev/stdout")
    assert sorted(os.listdir(tmp_path)) == ["file.wav", "out.bin"]  # no temporary file left


def test_a_full_stdout_says_the_song_was_written(tmp_path, generator_path):
    with open("/dev/full", "w") as full:
        done = _salong("generate", "calm", "-s", "0.2", "--model", generator_path, "-o", "a.wav", "--no-progress",
                       cwd=tmp_path, stdout=full, capture_output=False, stderr=-1)
    err = done.stderr.decode()
    assert done.returncode == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "'a.wav' was written, but its line could not be printed on stdout (No space left on device)" in err
    assert "disk full" not in err and (tmp_path / "a.wav").stat().st_size > 0


def test_a_deleted_working_folder_is_named(tmp_path, files):
    gone = tmp_path / "gone"
    gone.mkdir()
    import subprocess
    import sys

    script = f"import os, sys; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r}); sys.argv[1:] = ['info', " \
             f"{str(files['ae'])!r}]; from salong.cli import main; main()"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.strip() == (
        "error: the working folder no longer exists (deleted?); cd to a folder that exists and run again")


def test_a_damaged_mp3_is_one_line_even_from_the_c_decoder(files, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["info", str(files["garbage_mp3"])])
    err = capfd.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "libmpg123" not in err and "does not exist" not in err, err


def test_a_file_that_appears_while_writing_is_kept(tmp_path):
    from salong.errors import SalongError
    from salong.outputs import write_atomic

    target = tmp_path / "a.wav"

    def write(tmp):  # another run finishes the same file meanwhile
        target.write_bytes(b"theirs")
        tmp.write_bytes(b"mine")

    with pytest.raises(SalongError, match="was created by someone else .* it is kept"):
        write_atomic(target, write, overwrite=False)
    assert target.read_bytes() == b"theirs" and os.listdir(tmp_path) == ["a.wav"]
    write_atomic(target, lambda tmp: tmp.write_bytes(b"mine"), overwrite=True)
    assert target.read_bytes() == b"mine"


def test_a_symlink_output_is_followed_never_replaced(tmp_path, generator_path, capsys):
    (tmp_path / "real.wav").write_bytes(b"old")
    os.symlink("real.wav", tmp_path / "link.wav")
    code, _, err = run_cli(capsys, "generate", "calm", "-s", "0.2", "--model", generator_path,
                           "-o", tmp_path / "link.wav", "--no-progress")
    assert code == 1 and "(the link's target" in err and (tmp_path / "real.wav").read_bytes() == b"old"
    code, out, _ = run_cli(capsys, "generate", "calm", "-s", "0.2", "--model", generator_path,
                           "-o", tmp_path / "link.wav", "--overwrite", "--no-progress")
    assert code == 0 and os.path.islink(tmp_path / "link.wav")
    assert (tmp_path / "real.wav").read_bytes()[:4] == b"RIFF"


def test_stdout_on_a_terminal_is_refused(monkeypatch):
    import sys

    from salong.errors import SalongError
    from salong.outputs import check_writable

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    with pytest.raises(SalongError, match="stdout, which is a terminal; redirect it"):
        check_writable("-")


def test_skip_existing_writes_into_a_stream(tmp_path, generator_path):
    done = _salong("generate", "calm", "-s", "0.2", "--seed", "5", "--model", generator_path, "--no-progress",
                   "-o", "/dev/stdout", "--skip-existing", cwd=tmp_path, capture_output=True)
    assert done.returncode == 0 and done.stdout[:4] == b"RIFF" and b"skipped" not in done.stderr


def test_convert_and_export_keep_a_file_another_run_wrote_meanwhile(files, tmp_path, capsys, monkeypatch):
    """Two runs writing one model file: the one that finishes second fails and the first's file
    is kept (the final rename is an exclusive create); with --overwrite it replaces it."""
    import types

    import salong.sao
    import salong.train.tasks

    target = tmp_path / "model.safetensors"

    def write(path):  # this run's file, while another run finishes the same target
        target.write_bytes(b"theirs")
        Path(path).write_bytes(b"mine")
        return Path(path)

    class Slow:
        def save(self, path):
            return write(path)

    monkeypatch.setattr(salong.sao, "load_folder", lambda *_: Slow())
    monkeypatch.setattr(salong.train.tasks, "task_for_run", lambda _: types.SimpleNamespace(kind="dit", config=None))
    monkeypatch.setattr(salong.train.tasks, "export_run", lambda run, out, task: write(out))
    for command in (["convert", files["sao_dir"]], ["train", "export", files["fake_run"]]):
        target.unlink(missing_ok=True)
        code, out, err = run_cli(capsys, *command, "-o", target)
        assert code == 1 and "was created by someone else (another run?)" in err and out == "", command
        assert target.read_bytes() == b"theirs" and os.listdir(tmp_path) == ["model.safetensors"], command
        code, out, _ = run_cli(capsys, *command, "-o", target, "--overwrite")
        assert code == 0 and out.strip() == str(target) and target.read_bytes() == b"mine", command


def test_a_second_synth_into_one_folder_is_refused(tmp_path, capsys):
    """Two `salong synth` into one folder at once: the second is refused before it writes a
    piece (the folder's lock), also under another spelling of the folder; --recaption too."""
    from salong.outputs import folder_lock

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    os.symlink("corpus", tmp_path / "alias")
    with folder_lock(corpus, "a corpus being written"):  # what the first synth holds while it writes
        for args in (["synth", "1", tmp_path / "alias", "--min-seconds", "1", "--max-seconds", "1"],
                     ["synth", "1", corpus, "--overwrite", "--min-seconds", "1", "--max-seconds", "1"]):
            code, _, err = run_cli(capsys, *args)
            assert code == 1 and "another salong process is using" in err and len(err.strip().splitlines()) == 1
            assert not list(corpus.rglob("*.wav")) and not (corpus / "metadata.jsonl").exists()
    code, _, _ = run_cli(capsys, "synth", "1", corpus, "--min-seconds", "1", "--max-seconds", "1")
    assert code == 0 and (corpus / "metadata.jsonl").exists()  # released when a synth ends
    before = (corpus / "metadata.jsonl").read_bytes()
    with folder_lock(corpus, "a corpus being written"):
        code, _, err = run_cli(capsys, "synth", "1", corpus, "--recaption", "--captions", "3")
        assert code == 1 and "another salong process is using" in err
    assert (corpus / "metadata.jsonl").read_bytes() == before
