"""The command line: help, version, one-line errors with non-zero exits."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import salong
from salong.checkpoint import save_checkpoint
from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]


def assert_one_line_error(code, out, err, pattern):
    assert code != 0
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    import re

    assert re.search(pattern, lines[0]), lines[0]


def test_version_and_help(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"salong {salong.__version__}"
    for command in ["encode", "decode", "synth", "info", "generate"]:
        code, out, _ = run_cli(capsys, command, "--help")
        assert code == 0 and "Usage: salong " + command in " ".join(out.split())
    # defaults are shown, including those the model supplies (rich markup must not eat them)
    code, out, _ = run_cli(capsys, "generate", "--help")
    text = " ".join(out.replace("│", " ").split())
    assert ("[default: 30.0]" in text and "[default: the bundled model; see `salong info`]" in text
            and "[default: the model's, 7]" in text)
    for kind, default in [("autoencoder", "small"), ("clap", "small"), ("dit", "small")]:
        code, out, _ = run_cli(capsys, "train", kind, "--help")
        assert code == 0 and f"[default: {default}]" in " ".join(out.replace("│", " ").split())


def test_usage_errors_are_one_line(capsys):
    assert_one_line_error(*run_cli(capsys, "synth", "abc", "out"), r"Invalid value for 'count'.*salong synth --help")
    assert_one_line_error(*run_cli(capsys, "synth"), r"Missing argument 'count'")
    assert_one_line_error(*run_cli(capsys, "nonsense"), r"No such command 'nonsense'")


def test_checkpoint_errors(capsys, tmp_path):
    assert_one_line_error(*run_cli(capsys, "info", tmp_path / "nope.safetensors"), "not found")
    assert_one_line_error(*run_cli(capsys, "info", tmp_path),
                          "has no model_config.json, so it is not a Stable Audio Open model folder")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 100)
    assert_one_line_error(*run_cli(capsys, "info", corrupt), "not a readable safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(plain))
    assert_one_line_error(*run_cli(capsys, "info", plain), "not a salong checkpoint")


def test_wrong_kind_of_model(capsys, tmp_path):
    wrong = save_checkpoint(tmp_path / "dit.safetensors", {"w": torch.zeros(2)}, "dit", {"width": 2})
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")
    assert_one_line_error(
        *run_cli(capsys, "encode", audio, "--model", wrong),
        "is a dit checkpoint, but this needs a model of kind autoencoder",
    )


def test_info_reports_checkpoint(capsys, tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", {"w": torch.zeros(2, 3)}, "dit", {"width": 3})
    code, out, _ = run_cli(capsys, "info", path)
    assert code == 0 and out.startswith("dit: 0.00M values in 1 tensors") and '"width": 3' in out


def test_console_script_exit_status(tmp_path):
    """The entry point itself (`salong.cli:main`, as `python -m salong`): non-zero status, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "salong", "info", str(tmp_path / "missing.safetensors")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 1
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: model file")


def test_python_dash_m_salong_and_the_root_launcher(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "salong", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == f"salong {salong.__version__}" and proc.stderr == ""
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "--version"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"salong {salong.__version__}"


def test_help_shows_flags_as_flags_and_number_ranges(capsys):
    code, out, _ = run_cli(capsys, "generate", "--help")
    text = " ".join(out.replace("│", " ").split())
    assert code == 0 and "<bool>" not in out
    assert "--skip-existing" in text and "--no-progress" in text
    assert "Sampler steps, 1 or more" in text and ">= 0" in text and "285 for the bundled model" in text
    for args in (["--help"], ["train", "dit", "--help"], ["train", "export", "--help"], ["encode", "--help"]):
        code, out, _ = run_cli(capsys, *args)
        assert code == 0 and "<bool>" not in out, args


def test_no_import_of_training_outside_it_and_the_train_commands(tmp_path):
    """tools/import_check.py: inference never imports salong.train; the check itself sees
    every spelling of such an import and exempts only the CLI's train commands."""
    spec = importlib.util.spec_from_file_location("import_check", ROOT / "tools" / "import_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    assert check.train_imports() == []

    (tmp_path / "salong" / "train").mkdir(parents=True)
    (tmp_path / "salong" / "train" / "x.py").write_text("from salong.train import y\n")
    (tmp_path / "salong" / "a.py").write_text("import salong.train.x\n\ndef f():\n    from . import train\n")
    (tmp_path / "salong" / "cli.py").write_text(
        "@train_app.command('export')\ndef export():\n    from .train import export_run\n\n"
        "def generate():\n    from salong.train.runtime import Dist\n")
    (tmp_path / "salong" / "cli_train.py").write_text(
        "from salong.train import runs\n\n@_train_command('dit')\ndef dit():\n    from salong.train.dit import x\n")
    assert check.train_imports(tmp_path) == [
        "salong/a.py:1: import salong.train.x",
        "salong/a.py:4: from . import train",
        "salong/cli.py:6: from salong.train.runtime import Dist",
        "salong/cli_train.py:1: from salong.train import runs",
    ]
