"""A run's model file (`salong train export`): the task behind a run folder, rebuilt from
its saved config, and the export of a run's EMA weights through a task."""

from __future__ import annotations

from pathlib import Path

import torch

from salong.checkpoint import config_from_dict, load_state_strict
from salong.errors import SalongError
from salong.train import state as st
from salong.train.runs import read_run_config
from salong.train.trainer import Task


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
        from salong.train.dit import DiTTaskConfig, task_for_run as dit_task

        return dit_task(Path(run_dir), config_from_dict(DiTTaskConfig, task_dict))
    raise SalongError(f"{str(run_dir)!r} is a {kind!r} run, which this salong cannot export")


def export_run(source: str | Path, out_path: str | Path, task: Task) -> Path:
    """Write the model checkpoint of a run (its newest training checkpoint) or of one
    training checkpoint file, from the EMA weights, through `task.export`.

    The EMA weights (the live weights for parts without EMA) are loaded into the
    task's own modules, which are then handed to `task.export` in eval mode.
    """
    source = Path(source)
    if source.is_dir():
        path = st.latest_checkpoint(source)
        if path is None:
            raise SalongError(
                f"{str(source)!r} holds no training checkpoint to export; train first or give a checkpoint file"
            )
    else:
        path = source
    ckpt = st.read_state(path)
    kind = ckpt.config.get("task_kind")
    if kind != task.kind:
        raise SalongError(f"{str(path)!r} is a {kind} training checkpoint; export it with the {kind} command")
    modules = {}
    for part in task.parts():
        group = "ema" if part.ema else "model"
        tensors = st.part_tensors(ckpt, group, part.name)
        load_state_strict(part.module, tensors, source=f"{str(path)!r} ({group} {part.name})")
        modules[part.name] = part.module.eval().requires_grad_(False)
    with torch.no_grad():
        return Path(task.export(Path(out_path), modules))
