"""Settings of a training run: built-in defaults, or the saved ones on `--resume`, with
the options a user gave on top. The trainer then refuses changes a resume cannot take."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, TypeVar

from salong.checkpoint import config_from_dict
from salong.errors import SalongError
from salong.train.trainer import TrainConfig, read_run_config

C = TypeVar("C")


def run_settings(
    run_dir: Path,
    resume: bool,
    kind: str,
    task_cls: type[C],
    default_train: TrainConfig,
    default_task: C,
    train_options: Mapping[str, Any],
    task_options: Mapping[str, Any],
) -> tuple[TrainConfig, C]:
    """(TrainConfig, task config) for a run; options that are None were not given."""
    train_config, task_config = default_train, default_task
    if resume:
        saved_kind, train_config, task_dict = read_run_config(run_dir)
        if saved_kind != kind:
            raise SalongError(f"{str(run_dir)!r} is a {saved_kind} run; continue it with `salong train {saved_kind} --resume`")
        task_config = config_from_dict(task_cls, task_dict)
        task_options = _keep_controls(task_config, task_options)
    # every config validates itself and raises SalongError
    train_config = dataclasses.replace(train_config, **{k: v for k, v in train_options.items() if v is not None})
    task_config = dataclasses.replace(task_config, **{k: v for k, v in task_options.items() if v is not None})
    return train_config, task_config


def _keep_controls(saved: Any, task_options: Mapping[str, Any]) -> Mapping[str, Any]:
    """A preset names a model's size: a resumed DiT run given its preset keeps the control
    conditioners it was started with (`train dit --controls`)."""
    model, saved_model = task_options.get("model"), getattr(saved, "model", None)
    if not (hasattr(model, "controls") and hasattr(saved_model, "controls")):
        return task_options
    if dataclasses.replace(model, controls=saved_model.controls) == saved_model:
        return {**task_options, "model": saved_model}
    return task_options
