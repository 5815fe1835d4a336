"""The task behind a run folder, rebuilt from its saved config (for `salong train export`)."""

from __future__ import annotations

from pathlib import Path

from salong.checkpoint import config_from_dict
from salong.errors import SalongError
from salong.train.trainer import Task, read_run_config


def task_for_run(run_dir: str | Path) -> Task:
    """A fresh task of the run's kind and config, ready to receive its weights."""
    kind, _, task_dict = read_run_config(run_dir)
    if kind == "autoencoder":
        from salong.train.autoencoder import AutoencoderTask, AutoencoderTaskConfig

        return AutoencoderTask(config_from_dict(AutoencoderTaskConfig, task_dict))
    if kind == "clap":
        from salong.train.clap import ClapTask, ClapTaskConfig, run_tokenizer

        return ClapTask(config_from_dict(ClapTaskConfig, task_dict), run_tokenizer(run_dir))
    if kind == "dit":
        from salong.train.dit import DiTTask, DiTTaskConfig, load_frozen

        return DiTTask(config_from_dict(DiTTaskConfig, task_dict), *load_frozen(Path(run_dir)))
    raise SalongError(f"{str(run_dir)!r} is a {kind!r} run, which this salong cannot export")
