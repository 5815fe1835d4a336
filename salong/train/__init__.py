"""Training scaffolding shared by every `salong train` subcommand.

A model plugs in as a `Task` (its `Part`s, collate, loss, export); `train` owns
optimisers, schedules, EMA, precision, DDP, the run folder, exact resume and
fault handling. See `salong.train.trainer`.
"""

from salong.train.sampler import StepSampler, mix_seed
from salong.train.schedules import ema_decay, ema_update, lr_factor
from salong.train.state import latest_checkpoint
from salong.train.runtime import resolve_precision, seed_everything
from salong.train.runs import TrainConfig, read_run_config
from salong.train.tasks import export_run
from salong.train.trainer import (
    Part,
    Task,
    TrainingDiverged,
    TrainingInterrupted,
    TrainResult,
    train,
)

__all__ = [
    "Part",
    "StepSampler",
    "Task",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "ema_decay",
    "ema_update",
    "export_run",
    "latest_checkpoint",
    "lr_factor",
    "mix_seed",
    "read_run_config",
    "resolve_precision",
    "seed_everything",
    "train",
]
