"""Files and words from others, read as written (issue 30, classes 2, 4, 5 and 7): prompts
files with a BOM, U+2028 or a form feed; the "make it again" command for any prompt; control
characters shown, not obeyed; text a C locale could not decode; data folders with link loops;
latents that know their autoencoder; long files encoded in bounded memory."""

import json
import shlex
import subprocess
import warnings

import numpy as np
import pytest
import torch

from conftest import run_cli
from salong.audio import read_audio, write_audio
from salong.autoencoder import PRESETS, Autoencoder, save_autoencoder
from salong.batch import BadLine, read_prompts
from salong.errors import SalongError
from salong.outputs import check_template, format_name
from salong.recipe import Recipe, shell_word
from salong.request import SongRequest
from salong.textfile import from_command_line, parse_json, split_lines, visible


def _audio(seconds=0.5, channels=2, seed=0):
    return np.random.default_rng(seed).normal(0, 0.1, (channels, int(44100 * seconds))).astype(np.float32)


# --- class 5: prompts files -------------------------------------------------------------------


def test_prompts_file_with_bom_u2028_and_form_feed_keeps_prompts_and_line_numbers(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes("\ufeff".encode() + b'{"prompt": "calm", "seconds": 2}\r\n'
                     + '{"prompt": "a\u2028b"}\n'.encode() + b"form\x0cfeed\n\n# c\nlast\n")
    entries = read_prompts(path)
    assert [e["prompt"] for e in entries] == ["calm", "a\u2028b", "form\x0cfeed", "last"]
    assert entries[0]["seconds"] == 2
    assert [e["source"] for e in entries] == ["p.txt line 1", "p.txt line 2", "p.txt line 3", "p.txt line 6"]


def test_split_lines_splits_at_newlines_only():
    assert split_lines("\ufeffa\x0cb\r\nc\u2028d\u2029e\x1cf\n") == ["a\x0cb", "c\u2028d\u2029e\x1cf"]
    assert split_lines("") == [] and split_lines("\n") == [""]


@pytest.mark.parametrize("output", ["", ".", "..", " ", "sub/"])
def test_an_output_that_names_no_file_is_its_lines_error(tmp_path, output):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "a", "output": output}) + "\nfine\n")
    bad, good = read_prompts(path)
    assert isinstance(bad, BadLine) and "output must name a file" in bad.message and good["prompt"] == "fine"


@pytest.mark.parametrize("name", ["{slug}_{seed}.{ext}", "{index:03d}-{variation}.{ext}", "{seconds}s_{seed:>8}.wav",
                                  "plain.wav"])
def test_name_templates_with_documented_fields_pass(name):
    check_template(name)
    assert format_name(name, dict(slug="s", seed=7, index=1, variation=0, seconds="2", ext="wav"))


@pytest.mark.parametrize("name", ["{slug.__class__}", "{slug[0]}", "{0}", "{}", "{seed!r}", "{seed!s}",
                                  "{seed:{index}}", "{seed:>999999999}", "{index:0256d}", "{tempo}"])
def test_name_templates_refuse_everything_else(name):
    with pytest.raises(SalongError, match="--name template"):
        check_template(name + ".{ext}")


# --- class 2: text and numbers ----------------------------------------------------------------


def test_json_nesting_bombs_are_decode_errors():
    with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
        parse_json("[" * 100_000 + "]" * 100_000)
    assert parse_json("[[1]]") == [[1]]


def test_text_a_c_locale_could_not_decode_is_given_back_as_utf8():
    as_c_locale = "café ♪".encode().decode("ascii", "surrogateescape")  # what argv holds under LC_ALL=C
    assert from_command_line(as_c_locale, "the prompt") == "café ♪"
    assert SongRequest(as_c_locale, 1.0).prompt == "café ♪"
    with pytest.raises(SalongError, match="not valid UTF-8 text"):
        SongRequest(b"caf\xe9".decode("ascii", "surrogateescape"), 1.0)


@pytest.mark.parametrize("seconds", [1e308, 86400.5, float("inf")])
def test_seconds_are_bounded_before_any_sample_count(seconds):
    with pytest.raises(SalongError, match="seconds must be a number above 0"):
        SongRequest("calm", seconds)


def test_weights_of_another_type_do_not_fit(tmp_path):
    from salong.checkpoint import check_state_fits

    model = torch.nn.Linear(2, 2)
    state = {k: v.to(torch.int8) for k, v in model.state_dict().items()}
    with pytest.raises(SalongError, match="holds int8 values, the model expects floating point"):
        check_state_fits(model, state, "w")
    check_state_fits(model, {k: v.half() for k, v in model.state_dict().items()}, "w")  # float16 is a float


# --- class 4: the printed command and the terminal --------------------------------------------


@pytest.mark.parametrize("word", ["calm", "it's", "-x drums", "a\x1b]0;title\x07b", "line\nbreak", "tab\there",
                                  "back\\slash'\x1b", "u\u2028v", "bidi\u202eevil", "café ♪"])
def test_shell_words_give_the_word_back_and_show_no_control_characters(word):
    quoted = shell_word(word)
    assert visible(quoted) == quoted  # nothing in it drives a terminal
    back = subprocess.run(["bash", "-c", f"printf %s {quoted}"], capture_output=True, check=True).stdout
    assert back.decode() == word


@pytest.mark.parametrize("prompt", ["-x drums", "--help", "-", "-s 3"])
def test_the_command_for_a_prompt_starting_with_a_dash_makes_the_song_again(prompt, generator_path, tmp_path,
                                                                           capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "generate", "--seconds", "0.5", "--seed", "5", "--model", generator_path,
                           "-o", "a.wav", "--", prompt)
    assert code == 0, err
    code, out, _ = run_cli(capsys, "info", "a.wav")
    command = out.strip().splitlines()[-1]
    assert command.endswith(f"-o a.wav -- {shlex.quote(prompt)}")
    argv = shlex.split(command.replace("-o a.wav", "-o b.wav"))
    code, _, err = run_cli(capsys, *argv[1:])
    assert code == 0, err
    assert np.array_equal(read_audio("a.wav")[0], read_audio("b.wav")[0])


def test_info_shows_control_characters_as_escapes(tmp_path, capsys):
    prompt = "calm \x1b]0;pwned\x07\x1b[2J\nfake: line\u2028x"
    recipe = Recipe(SongRequest(prompt, 0.5, seed=1, steps=4, cfg=3.0, sampler="dpmpp-2m", frames="needed"))
    write_audio(tmp_path / "t.flac", _audio(), 44100, tags=recipe.tags("flac"))
    code, out, _ = run_cli(capsys, "info", tmp_path / "t.flac")
    assert code == 0
    assert visible(out.replace("\n", "")) == out.replace("\n", "")  # no raw control character anywhere
    assert "prompt: calm \\x1b]0;pwned\\x07\\x1b[2J\\nfake: line\\u2028x" in out
    assert not any(line.startswith("fake:") for line in out.splitlines())


# --- class 7: silent wrong results ------------------------------------------------------------


def test_a_link_loop_in_a_data_folder_indexes_each_file_once(tmp_path):
    from salong.data import AudioSkipWarning, index_audio

    for name in ("a.wav", "sub/b.wav"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        write_audio(tmp_path / name, _audio(0.1), 44100)
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "again").symlink_to(tmp_path / "sub", target_is_directory=True)
    (tmp_path / "same.wav").symlink_to(tmp_path / "a.wav")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files, _ = index_audio(tmp_path)
    assert sorted(f.relpath for f in files) == ["a.wav", "sub/b.wav"]
    skips = [str(w.message) for w in caught if issubclass(w.category, AudioSkipWarning)]
    assert len(skips) == 3 and any("loop" in m for m in skips)


def test_special_files_in_a_data_folder_are_skipped_never_read(tmp_path):
    """Named pipes, devices, sockets and links that loop inside a data folder: each skipped with
    one warning that says what it is, never opened (a pipe would wait for a writer for ever)."""
    import os
    import socket

    from salong.data import AudioSkipWarning, index_audio

    write_audio(tmp_path / "a.wav", _audio(0.1), 44100)
    os.mkfifo(tmp_path / "pipe.wav")
    (tmp_path / "zero.wav").symlink_to("/dev/zero")
    (tmp_path / "self.wav").symlink_to("self.wav")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock.flac"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            files, skipped = index_audio(tmp_path)
    assert [f.relpath for f in files] == ["a.wav"] and skipped == 1  # the loop: a file that cannot be read
    skips = sorted(str(w.message) for w in caught if issubclass(w.category, AudioSkipWarning))
    assert skips == ["skipping pipe.wav: it is a named pipe (FIFO), not a regular file",
                     "skipping self.wav: it is a symlink to 'self.wav', which does not exist (or loops)",
                     "skipping sock.flac: it is a socket, not a regular file",
                     "skipping zero.wav: it is a character device, not a regular file"]


@pytest.fixture(scope="module")
def two_autoencoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("aes")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(save_autoencoder(root / f"ae{seed}.safetensors", Autoencoder(PRESETS["tiny"])))
    write_audio(root / "song.wav", _audio(), 44100)
    return root, paths


def test_latents_record_their_autoencoder_and_decode_warns_on_another(two_autoencoders, capsys):
    root, (ae0, ae1) = two_autoencoders
    lat = root / "song.latents.safetensors"
    assert run_cli(capsys, "encode", root / "song.wav", "--model", ae0, "-o", lat, "--mean")[0] == 0
    code, _, err = run_cli(capsys, "decode", lat, "--model", ae0, "-o", root / "same.wav")
    assert code == 0 and "warning" not in err
    code, _, err = run_cli(capsys, "decode", lat, "--model", ae1, "-o", root / "other.wav")
    assert code == 0 and "was encoded by an autoencoder of weights digest" in err and err.count("\n") == 1


@pytest.mark.parametrize("rate,channels,samples", [(44100, 2, 70_000), (48000, 1, 65_536), (22050, 3, 33_333),
                                                   (32000, 2, 1)])
def test_streamed_encode_equals_encoding_the_whole_file(two_autoencoders, tmp_path, monkeypatch, rate, channels,
                                                        samples):
    import salong.latents as latents

    monkeypatch.setattr(latents, "AUDIO_BLOCK", 5000)  # many blocks, none aligned with the encoder's chunks
    torch.manual_seed(0)
    ae = Autoencoder(PRESETS["tiny"]).eval()
    audio = np.random.default_rng(1).normal(0, 0.1, (channels, samples)).astype(np.float32)
    write_audio(tmp_path / "x.wav", audio, rate, bit_depth="32f")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", latents.DownmixWarning)
        streamed = latents.encode_file(ae, tmp_path / "x.wav")
    whole = latents.encode_audio(ae, *read_audio(tmp_path / "x.wav"))
    assert torch.equal(streamed.latents, whole.latents)
    assert (streamed.samples, streamed.channels, streamed.autoencoder) == (whole.samples, whole.channels,
                                                                          whole.autoencoder)


def test_a_unicode_prompt_under_the_c_locale(generator_path, tmp_path):
    """The reported case, as a process: LC_ALL=C without locale coercion or UTF-8 mode, so
    argv arrives as ASCII with surrogate escapes (the tokenizer raised TypeError)."""
    import os
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0", "PYTHONPATH": str(root)}
    env.pop("LANG", None)
    run = subprocess.run([sys.executable, "-m", "salong", "generate", "café ♪", "-s", "0.5", "--seed", "1",
                          "--model", str(generator_path), "-o", "café.wav", "--no-progress"],
                         cwd=tmp_path, env=env, capture_output=True)
    assert run.returncode == 0, run.stderr.decode()
    assert (tmp_path / "café.wav").is_file()
    from salong.recipe import read_recipe

    assert read_recipe(tmp_path / "café.wav").request.prompt == "café ♪"
