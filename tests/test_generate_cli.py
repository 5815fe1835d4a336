"""`salong generate`: outputs, seeds, batch files, JSON records and one-line errors."""

import json
import re

import numpy as np
import pytest

from salong.audio import read_audio
from conftest import run_cli


def one_line_error(code, out, err, pattern):
    lines = err.strip().splitlines()
    assert code != 0 and out == "" and len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]


def test_single_song(tmp_path, capsys, generator_path):
    code, out, err = run_cli(capsys, "generate", "calm piano", "-s", 1.2, "--model", generator_path, "-o",
                         tmp_path / "song.flac", "--seed", 7, "--steps", 2)
    assert code == 0, err
    path, seed = out.strip().split("\t")
    assert path == str(tmp_path / "song.flac") and seed == "7"
    audio, rate = read_audio(path)
    assert rate == 44100 and audio.shape == (2, round(1.2 * 44100))


def test_same_seed_same_file_and_full_window(tmp_path, capsys, generator_path):
    outs = []
    for name, extra in [("a", []), ("b", []), ("c", ["--full-window"])]:
        code, out, err = run_cli(capsys, "generate", "organ", "-s", 0.7, "--model", generator_path, "--seed", 3,
                             "--steps", 2, "-o", tmp_path / f"{name}.wav", *extra)
        assert code == 0, err
        outs.append(read_audio(tmp_path / f"{name}.wav")[0])
    assert np.array_equal(outs[0], outs[1])
    assert outs[2].shape == outs[0].shape  # the whole window was sampled, then cut to the same length


def test_variations_and_json(tmp_path, capsys, generator_path):
    code, out, err = run_cli(capsys, "generate", "happy brass", "-s", 0.5, "-n", 3, "--seed", 10, "--steps", 2,
                         "--model", generator_path, "-o", tmp_path / "batch", "--json",
                         "--name", "{index}-{variation}-{seed}.{ext}")
    assert code == 0, err
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["seed"] for r in records] == [10, 11, 12]
    assert sorted(p.name for p in (tmp_path / "batch").iterdir()) == ["0-0-10.wav", "0-1-11.wav", "0-2-12.wav"]
    assert set(records[0]) == {"path", "prompt", "seconds", "seed", "steps", "cfg", "cfg_interval", "sampler",
                               "negative", "bpm", "key",
                               "meter", "drums", "form", "chords", "model", "lora", "inpaint", "start", "end", "extend",
                               "extend_before", "loop", "elapsed"}
    assert records[0]["steps"] == 2 and records[0]["seconds"] == 0.5 and records[0]["model"] == str(generator_path)


def test_batch_file_with_bad_line(tmp_path, capsys, generator_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join([
        "# a comment",
        "calm piano",
        '{"prompt": "organ", "seconds": 0.4, "seed": 3, "output": "organ.flac"}',
        '{"prompt": "brass", "seconds": -2}',
        "{not json",
        "",
    ]))
    code, out, err = run_cli(capsys, "generate", "--prompts", prompts, "-s", 0.5, "--steps", 2,
                         "--model", generator_path, "-o", tmp_path / "out")
    assert code == 1
    written = [line.split("\t")[0] for line in out.strip().splitlines()]
    assert len(written) == 2 and written[1] == str(tmp_path / "out" / "organ.flac")
    assert "prompts.txt line 4: seconds must be a number above 0" in err
    assert "prompts.txt line 5: invalid JSON" in err
    assert "2 of 4 songs failed" in err
    assert read_audio(written[1])[0].shape[1] == round(0.4 * 44100)

    # rerun with --skip-existing: the good songs are left alone, no new files appear
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    code, out, err = run_cli(capsys, "generate", "--prompts", prompts, "-s", 0.5, "--steps", 2,
                         "--model", generator_path, "-o", tmp_path / "out", "--skip-existing", "--seed", 1)
    assert "skipped" in err and "organ.flac" in err
    assert code == 1  # the bad lines still fail
    after = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(after) == len(before) + 1  # only "calm piano" got a new seed, hence a new file


@pytest.mark.parametrize(
    "args,pattern",
    [
        (["-s", "0"], "seconds must be a number above 0"),
        (["-s", "-3"], "seconds must be a number above 0"),
        (["-s", "400"], r"maximum is 2\.97"),
        (["-s", "abc"], r"Invalid value for '--seconds'"),
        (["--steps", "0"], "steps must be a whole number >= 1"),
        (["--cfg-scale", "-1"], "cfg scale must be (>= 0|a number from 0)"),
        (["--sampler", "ddim"], "unknown sampler 'ddim'.*dpmpp-2m"),
        (["-s", "1", "--format", "aac"], "unknown format 'aac'"),
        (["-s", "1", "-o", "/proc/song.wav"], "(not writable|cannot write)"),
        (["-s", "1", "-o", "/nonexistent/dir/song.wav"], "does not exist"),
    ],
)
def test_bad_input_is_one_line(capsys, generator_path, args, pattern):
    one_line_error(*run_cli(capsys, "generate", "calm piano", "--model", generator_path, "--steps", "1", *args),
                   pattern)


def test_bad_model(tmp_path, capsys, generator_path):
    one_line_error(*run_cli(capsys, "generate", "x", "-s", 1, "--model", tmp_path / "none.safetensors"), "not found")
    from salong.autoencoder import PRESETS, Autoencoder, save_autoencoder

    ae = save_autoencoder(tmp_path / "ae.safetensors", Autoencoder(PRESETS["tiny"]))
    one_line_error(*run_cli(capsys, "generate", "x", "-s", 1, "--model", ae), "needs a model of kind generator")
    one_line_error(*run_cli(capsys, "generate", "-s", 1, "--model", generator_path), "give a PROMPT or --prompts")


def test_render_from_python(tmp_path, generator_path):
    """The batch loop behind `salong generate` is a library function: one result per job, in order."""
    from salong.batch import STAGES, Failed, Rendered, Skipped, plan_jobs, render
    from salong.outputs import DEFAULT_NAME
    from salong.pipeline import Generator
    from salong.request import SongRequest

    generator = Generator.load(generator_path)
    entries = [{"prompt": "calm piano", "source": "a"}, {"prompt": "organ", "seed": 5, "source": "b"},
               {"prompt": "brass", "source": "c"}, {"prompt": "too long", "seconds": 400, "source": "d"}]
    jobs = plan_jobs(entries, SongRequest("", 0.5, seed=3, steps=2, cfg=2.0), 1, tmp_path, DEFAULT_NAME, "wav")
    (tmp_path / "brass_3.wav").write_bytes(b"already there")
    heard = []
    results = list(render(generator, jobs, skip_existing=True,
                          progress=lambda job, stage, done, total: heard.append((job.source, stage, done, total))))
    assert [type(r) for r in results] == [Rendered, Rendered, Skipped, Failed]
    first, second = results[0], results[1]
    assert first.path == tmp_path / "calm-piano_3.wav" and second.path == tmp_path / "organ_5.wav"
    assert read_audio(first.path)[0].shape == (2, round(0.5 * 44100))
    assert (first.song.request.seed, second.song.request.seed, first.song.request.steps,
            first.song.request.cfg) == (3, 5, 2, 2.0)
    assert first.elapsed > 0 and first.record()["model"] == str(generator_path)
    assert set(first.record()) >= {"path", "seed", "model", "elapsed"}
    assert results[2].job.output.read_bytes() == b"already there"
    assert results[3].source == "d" and "maximum is" in results[3].message
    stages = [stage for source, stage, _, _ in heard if source == "a"]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == list(STAGES)
    assert ("a", "sampling", 2, 2) in heard


# --- where outputs go, and what is never replaced ---------------------------------------------


def test_batch_without_seeds_reruns_to_the_same_names_and_skips(tmp_path, capsys, generator_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("calm piano\n{\"prompt\": \"busy drums\", \"seconds\": 0.6}\n")
    args = ["generate", "--prompts", prompts, "-s", 0.5, "--steps", 2, "--model", generator_path, "-o", tmp_path / "r"]
    code, first, err = run_cli(capsys, *args)
    assert code == 0, err
    code, again, err = run_cli(capsys, *args, "--skip-existing")
    assert code == 0 and again == "" and err.count("(exists)") == 2  # the same seeds, so the same names
    code, out, err = run_cli(capsys, *args)  # without --skip-existing or --overwrite: nothing is replaced
    assert code == 1 and "exists; pass --overwrite" in err
    code, out, err = run_cli(capsys, *args, "--overwrite")
    assert code == 0 and out == first


def test_outputs_stay_inside_the_output_folder(tmp_path, capsys, generator_path):
    victim = tmp_path / "victim.wav"
    victim.write_bytes(b"keep me")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join([
        json.dumps({"prompt": "a", "output": "../victim.wav"}),
        json.dumps({"prompt": "b", "output": str(victim)}),
        json.dumps({"prompt": "c", "output": "fine.wav"}),
    ]) + "\n")
    (tmp_path / "out").mkdir()
    code, out, err = run_cli(capsys, "generate", "--prompts", prompts, "-s", 0.5, "--steps", 2, "--model",
                             generator_path, "-o", tmp_path / "out", "--overwrite")
    assert code == 1 and "p.jsonl line 1: output name '../victim.wav' leaves the output folder" in err
    assert "p.jsonl line 2" in err and out.strip().split("\t")[0] == str(tmp_path / "out" / "fine.wav")
    assert victim.read_bytes() == b"keep me"
    code, _, err = run_cli(capsys, "generate", "x", "-n", 2, "--name", "../{seed}.{ext}", "-s", 0.5, "--steps", 2,
                           "--model", generator_path, "-o", tmp_path / "out")
    assert code == 1 and "leaves the output folder" in err and not list(tmp_path.glob("*[0-9].wav"))


@pytest.mark.parametrize("args,pattern", [
    (["-n", 3, "-o", "take.wav"], r"-o take.wav names one file, but 3 songs need a folder"),
    (["-o", "x.wav", "--format", "mp3"], r"--format mp3 contradicts the extension of 'x.wav'"),
])
def test_contradictory_outputs_are_refused_before_work(tmp_path, capsys, generator_path, monkeypatch, args, pattern):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "generate", "calm", "-s", 0.5, "--steps", 2, "--model", generator_path, *args)
    one_line_error(code, out, err, pattern)
    assert list(tmp_path.iterdir()) == []  # no folder named take.wav, no file


@pytest.mark.parametrize("args,pattern", [
    (["   "], r"the prompt is empty"),
    (["calm", "--cfg-scale", "1e38"], r"cfg scale must be a number from 0 to 100"),
    (["calm", "--seed", "18446744073709551616"], r"seed must be a whole number from 0 to"),
    (["calm", "--steps", "0"], r"steps must be a whole number >= 1"),
])
def test_bad_requests_fail_before_the_model_loads(tmp_path, capsys, args, pattern):
    # the model path does not exist: a request checked first never gets to it
    code, out, err = run_cli(capsys, "generate", *args, "-s", 1, "--model", tmp_path / "missing.safetensors",
                             "-o", tmp_path / "x.wav")
    one_line_error(code, out, err, pattern)


def test_ctrl_c_during_generate_says_so_and_keeps_no_file(tmp_path, capsys, generator_path, monkeypatch):
    from salong import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.Generator, "sample", interrupted)
    code, out, err = run_cli(capsys, "generate", "calm", "-s", 0.5, "--model", generator_path, "-o", tmp_path / "x.wav")
    assert code == 130 and "interrupted" in err and "no partial file was kept" in err
    assert list(tmp_path.iterdir()) == []
