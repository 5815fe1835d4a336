"""The repository passes `ruff check` with the settings in pyproject.toml."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ruff_command() -> list[str]:
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    beside = Path(sys.executable).parent / "ruff"
    if beside.is_file():
        return [str(beside)]
    pytest.skip("ruff is not installed (it comes with the test extras: pip install -e '.[test]')")


def test_ruff_check_is_clean():
    # --no-cache: a test run leaves no .ruff_cache in the checkout
    proc = subprocess.run([*ruff_command(), "check", "--no-cache", "--output-format", "concise", "."],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, f"ruff check found problems:\n{proc.stdout}{proc.stderr}"
