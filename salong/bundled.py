"""The model that ships with salong, used when no `--model` is given.

The files live in the repository's top-level `checkpoints/` folder, which setup.cfg
installs as the package `salong.checkpoints` (an editable install maps it to the
checkout, a wheel copies it), so they are found from any working directory.

- `GENERATOR_FILE`: the complete generator (DiT + autoencoder + CLAP), for `generate`;
  its autoencoder also serves `encode` and `decode`.
- `AUTOENCODER_FILE`: the autoencoder alone, shipped while no generator is bundled yet.

`checkpoints/README.md` is the model card.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from salong.errors import SalongError

PACKAGE = "salong.checkpoints"
GENERATOR_FILE = "salong-default.safetensors"
AUTOENCODER_FILE = "autoencoder.safetensors"
CARD_FILE = "README.md"


def bundled_dir() -> Path | None:
    """The folder holding the bundled files, or None if this install has none."""
    try:
        root = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError:
        return None
    path = Path(str(root))
    return path if path.is_dir() else None


def _bundled(name: str) -> Path | None:
    folder = bundled_dir()
    path = folder / name if folder is not None else None
    return path if path is not None and path.is_file() else None


def bundled_generator_path() -> Path | None:
    """The bundled generator file, if this install has one."""
    return _bundled(GENERATOR_FILE)


def bundled_autoencoder_path() -> Path | None:
    """The file whose autoencoder `encode` and `decode` use by default: the bundled
    generator (its autoencoder), else the bundled autoencoder."""
    return bundled_generator_path() or _bundled(AUTOENCODER_FILE)


def default_generator() -> Path:
    """The bundled generator, or a one-line error saying how to get a model."""
    path = bundled_generator_path()
    if path is None:
        raise SalongError(
            "no --model given and this salong ships no generator yet; pass --model PATH to a generator file "
            "(train one with `bash examples/default_model.sh`, or `salong train dit`)"
        )
    return path


def default_autoencoder() -> Path:
    """The bundled autoencoder (inside the generator, or on its own), or a one-line error."""
    path = bundled_autoencoder_path()
    if path is None:
        raise SalongError(
            "no --model given and this salong ships no autoencoder; pass --model PATH to an autoencoder or "
            "generator file (train one with `salong train autoencoder`)"
        )
    return path
