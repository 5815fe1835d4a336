"""A training run's settings: `TrainConfig`; the model from a preset or a file, the task's
built-in defaults (each task module's `TRAIN_DEFAULTS`), or the saved ones on `--resume`,
with the options a user gave on top; and the check that a resumed run is the run its
checkpoint was saved from, of which only RESUMABLE_FIELDS may change."""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from salong.checkpoint import Checkpoint, config_from_dict, config_to_dict
from salong.checks import check_seed, is_int, is_real
from salong.distributed import Dist
from salong.errors import SalongError
from salong.textfile import parse_json
from salong.train import state as st

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")

# TrainConfig fields a resumed run may change (length, cadence, hardware, and the
# knobs one turns after a divergence). Any other difference makes it another run.
RESUMABLE_FIELDS = frozenset(
    {
        "steps", "lr", "grad_clip", "checkpoint_every", "log_every", "demo_every", "eval_every",
        "keep_checkpoints", "precision", "device", "num_workers",
    }
)  # fmt: skip

# TrainConfig fields `salong train` sets from an option of the same name (`batch_size` from
# `--batch-size`); the others are set from Python only, so messages name them as fields.
OPTION_FIELDS = frozenset(
    {
        "steps", "batch_size", "lr", "seed", "checkpoint_every", "log_every", "demo_every", "eval_every",
        "precision", "device", "num_workers",
    }
)  # fmt: skip


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise SalongError(message)


# The largest value of each count a run takes: far past any real run, small enough that a
# mistyped one (1e9 samples a batch, a million workers) is refused before it costs minutes or memory.
COUNT_LIMITS = {"steps": 10**9, "batch_size": 65536, "checkpoint_every": 10**9, "log_every": 10**9,
                "keep_checkpoints": 10**6, "demo_every": 10**9, "eval_every": 10**9, "num_workers": 1024}


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained (its task config aside); saved in the run folder and checkpoints.

    `batch_size` is per process: under DDP the global batch is batch_size x world size.
    Learning rate (docs/architecture.md, Training): `lr * (1 - warmup**(step+1)) * (1 + step/inv_gamma)**-power`.
    EMA decay: `min(ema_decay, 1 - (1 + step/ema_inv_gamma)**-ema_power)`.
    `grad_clip` 0 disables clipping (the norm is still reported). `demo_every` and
    `eval_every` 0 mean never. `precision` "auto" is bf16 (or fp16 with loss
    scaling where bf16 is unsupported) on CUDA and fp32 on CPU. `salong train` sets the
    fields in OPTION_FIELDS from its options; the others keep their defaults there.
    """

    steps: int
    batch_size: int  # every count has an upper bound (COUNT_LIMITS): a typo fails now, not after minutes
    lr: float
    seed: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-3
    warmup: float = 0.99
    inv_gamma: float = 1e6
    power: float = 0.5
    ema_decay: float = 0.9999
    ema_inv_gamma: float = 1.0
    ema_power: float = 0.75
    grad_clip: float = 1.0
    checkpoint_every: int = 500
    log_every: int = 10
    demo_every: int = 0
    eval_every: int = 0
    keep_checkpoints: int = 2
    precision: str = "auto"
    device: str = "auto"
    num_workers: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "keep_checkpoints"):
            value = getattr(self, name)
            _require(is_int(value) and 1 <= value <= COUNT_LIMITS[name],
                     f"{_name(name)} must be an integer from 1 to {COUNT_LIMITS[name]:,}, got {value!r}")
        for name in ("demo_every", "eval_every", "num_workers"):
            value = getattr(self, name)
            _require(is_int(value) and 0 <= value <= COUNT_LIMITS[name],
                     f"{_name(name)} must be an integer from 0 to {COUNT_LIMITS[name]:,}, got {value!r}")
        check_seed(self.seed, "--seed")
        reals: dict[str, tuple[Callable[[float], bool], str]] = {
            "lr": (lambda v: 0 < v <= 1, "a positive number, at most 1"),  # AdamW cannot step by more
            "weight_decay": (lambda v: v >= 0, ">= 0"),
            "warmup": (lambda v: 0 <= v < 1, "in [0, 1)"),
            "inv_gamma": (lambda v: v > 0, "> 0"),
            "power": (lambda v: v >= 0, ">= 0"),
            "ema_decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
            "ema_inv_gamma": (lambda v: v > 0, "> 0"),
            "ema_power": (lambda v: v > 0, "> 0"),
            "grad_clip": (lambda v: v >= 0, ">= 0 (0 = off)"),
        }
        for name, (ok, what) in reals.items():
            value = getattr(self, name)
            _require(is_real(value) and ok(value), f"{_name(name)} must be {what}, got {value!r}")
        _require(valid_betas(self.betas), f"{_name('betas')} must be two numbers in [0, 1), got {self.betas!r}")
        for name, allowed in (("precision", PRECISIONS), ("device", DEVICES)):
            value = getattr(self, name)
            _require(value in allowed, f"{_name(name)} must be one of {', '.join(allowed)}, got {value!r}")


def valid_betas(betas: Any) -> bool:
    return isinstance(betas, tuple) and len(betas) == 2 and all(is_real(b) and 0 <= b < 1 for b in betas)


def _name(field: str) -> str:
    """A TrainConfig field as messages name it: its `salong train` option, or `TrainConfig.<field>`."""
    return f"--{field.replace('_', '-')}" if field in OPTION_FIELDS else f"TrainConfig.{field}"


# --- resuming ------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """A config (dataclass or mapping) as the JSON a run folder and its checkpoints hold."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = config_to_dict(value)
    return json.loads(json.dumps(value))


def _diff(path: str, old: Any, new: Any) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(f"{path}.{key}", old.get(key), new.get(key))
        return out
    return [] if old == new else [f"{path}: run has {old!r}, now {new!r}"]


def _config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    diffs = []
    if saved.get("task_kind") != current["task_kind"]:
        diffs.append(f"task kind: run has {saved.get('task_kind')!r}, now {current['task_kind']!r}")
        return diffs
    diffs += _diff("task", saved.get("task", {}), current["task"])
    saved_train = saved.get("train", {})
    for name, value in current["train"].items():
        if name not in RESUMABLE_FIELDS and saved_train.get(name) != value:
            diffs.append(f"{_name(name)}: run has {saved_train.get(name)!r}, now {value!r}")
    return diffs


def check_resume(ckpt: Checkpoint, run_config: Mapping[str, Any], config: TrainConfig, run_dir: Path, d: Dist,
                  task_config: Any = None) -> int:
    """The step to resume from, once the checkpoint's run is known to be this run. A task
    config saved by an older salong is read as today's (renamed fields migrated, fields
    added since at their defaults) before it is compared."""
    saved = ckpt.config
    if dataclasses.is_dataclass(task_config) and isinstance(saved.get("task"), Mapping):
        try:
            task = config_from_dict(type(task_config), saved["task"], getattr(saved, "origin", None))
        except SalongError:
            task = None  # not this kind of task: the comparison names what differs
        if task is not None:
            saved = {**saved, "task": jsonable(task)}
    diffs = _config_differences(saved, run_config)
    if diffs:
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise SalongError(
            f"cannot resume {str(run_dir)!r}: its config differs: {'; '.join(diffs[:3])}{more}; "
            "use the run's settings or choose another --out"
        )
    step = int(ckpt.extra("step"))
    if step > config.steps:
        raise SalongError(f"the run is already at step {step}, beyond --steps {config.steps}; raise --steps")
    saved_world = int(ckpt.extra("world_size"))
    if saved_world != d.world_size and d.main:
        warnings.warn(
            f"resuming a run trained on {saved_world} processes with {d.world_size}; "
            "the data order will differ from an uninterrupted run",
            stacklevel=4,
        )
    return step


def read_run_config(run_dir: str | Path) -> tuple[str, TrainConfig, dict[str, Any]]:
    """(task kind, TrainConfig, task config) a run folder was last started with, so that
    `--resume` can continue a run without its options being repeated. Its models are checked
    first against the run's newest checkpoint (`salong.train.tasks.check_run_models`)."""
    path = Path(run_dir) / st.CONFIG_FILE
    if not path.is_file():
        raise SalongError(f"{str(run_dir)!r} is not a salong run folder (no {st.CONFIG_FILE}); check --out")
    try:
        data = parse_json(path.read_text(encoding="utf-8", errors="replace"))
        kind, train_dict, task_dict = data["task_kind"], data["train"], data["task"]
        if not (isinstance(train_dict, dict) and isinstance(task_dict, dict)):
            raise TypeError("its train and task entries must be JSON objects")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SalongError(f"{str(path)!r} is damaged ({exc}); restore it or start another run") from None
    for name, value, limit in _model_numbers(task_dict):
        if value > limit:  # a crafted or damaged config would take all memory to build
            raise SalongError(f"{str(path)!r} is damaged: task.{name} is {value:,}, more than {limit:,}, beyond any "
                              "model salong builds; restore it or start another run")
    train_config = config_from_dict(TrainConfig, train_dict)
    from salong.train.tasks import check_run_models  # which imports this module

    check_run_models(run_dir, kind, task_dict)  # width times depth, and the checkpoints' shapes
    return kind, train_config, task_dict


MAX_SIZE = 2**20  # any width, rate or window of a model in a run's config (`checkpoint.build_strict`'s bound)
MAX_LAYERS = 1024  # any count of layers, stages or list items
LAYER_COUNTS = ("depth", "text_layers", "audio_depths")


def _model_numbers(data: Any, prefix: str = "") -> list[tuple[str, int, int]]:
    """(dotted name, value, its limit) of every whole number in the model configs (the nested
    objects) of a run's task config; a list gives its length and its items."""
    found: list[tuple[str, int, int]] = []
    for key, value in data.items() if isinstance(data, dict) else ():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found += _model_numbers(value, f"{name}.")
        elif prefix and isinstance(value, int) and not isinstance(value, bool):
            found.append((name, value, MAX_LAYERS if key in LAYER_COUNTS else MAX_SIZE))
        elif prefix and isinstance(value, list):
            found.append((f"{name} length", len(value), MAX_LAYERS))
            found += [(f"{name} item", v, MAX_LAYERS if key in LAYER_COUNTS else MAX_SIZE) for v in value
                      if isinstance(v, int) and not isinstance(v, bool)]
    return found


# --- a new or resumed run's settings --------------------------------------------------------


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
            raise SalongError(f"{str(run_dir)!r} is a {saved_kind} run; "
                              f"continue it with `salong train {saved_kind} --resume`")
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
