"""Settings of a training run: the model from a preset or a file, the task's built-in
defaults (each task module's `TRAIN_DEFAULTS`), or the saved ones on `--resume`, with the
options a user gave on top. The trainer then refuses changes a resume cannot take."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from salong.checkpoint import config_from_dict
from salong.errors import SalongError
from salong.train.trainer import TrainConfig, read_run_config

C = TypeVar("C")
DEFAULT_PRESET = "small"  # every model's, when a new run names none


def choose_model(presets: Mapping[str, Any], preset: str | None, init: Path | None, resume: bool,
                 init_model: Callable[[Path], Any]) -> Any | None:
    """A run's model config: --preset's, or that of the file --init starts a new run from (a
    --preset must agree with it); None when neither is given (a new run's default, or a
    resumed run's own)."""
    if preset is not None and preset not in presets:
        raise SalongError(f"unknown preset {preset!r}; choose one of: {', '.join(presets)}")
    model = presets[preset] if preset else None
    if init is not None:
        if resume:
            raise SalongError(f"--init {init} starts a new run and --resume continues one; give only one of them")
        initial = init_model(init)
        if model is not None and model != initial:
            raise SalongError(f"--init {init} holds a model of another size than --preset {preset}; drop --preset")
        model = initial
    return model


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
    # every config validates itself and raises SalongError
    train_config = dataclasses.replace(train_config, **{k: v for k, v in train_options.items() if v is not None})
    task_config = dataclasses.replace(task_config, **{k: v for k, v in task_options.items() if v is not None})
    return train_config, task_config
