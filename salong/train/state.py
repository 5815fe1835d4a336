"""The run folder on disk and the training-state checkpoint format.

    RUN/config.json                      the run's TrainConfig, task config, kind, world size
    RUN/metrics.jsonl                    one JSON object per logged step
    RUN/checkpoints/step_0000500.safetensors   full training state (newest few kept)
    RUN/checkpoints/latest.json          {"step": 500, "file": "step_0000500.safetensors"}
    RUN/demos/                           whatever the task's demo writes, each .wav with a .png spectrogram
    RUN/curves.png                       losses, learning rates and evaluations, redrawn with every demo
    RUN/model.safetensors                the exported EMA model

A training-state checkpoint is ONE safetensors file, written atomically: tensors
`model/<part>/<key>`, `ema/<part>/<key>`, `optim/<part>/<param index>/<name>`; all
the rest (step, optimiser hyper-parameters, GradScaler state, data position, the
configs) is JSON metadata. Nothing is pickled. Random number generators need no
state: the trainer reseeds them from (seed, step, rank) at every step.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from safetensors import SafetensorError, safe_open

from salong.checkpoint import Checkpoint, load_checkpoint, load_state_strict, read_metadata, save_checkpoint
from salong.outputs import write_atomic
from salong.errors import SalongError, short_reason
from salong.run_metrics import METRICS_FILE, metrics_lines

STATE_KIND = "train-state"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
CHECKPOINT_DIR = "checkpoints"
DEMO_DIR = "demos"
CURVES_FILE = "curves.png"
LATEST_FILE = "latest.json"

_CHECKPOINT_RE = re.compile(r"^step_(\d+)\.safetensors$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}.safetensors"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete training checkpoints of a run, oldest first.

    Checkpoints are renamed into place only once fully written, so every file
    matching the name is complete; a killed writer leaves only a hidden temp file.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _CHECKPOINT_RE.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete training checkpoint of a run folder, or None.

    The newest file on disk wins over `latest.json`: the pointer is written after
    the checkpoint, so a run killed in between has a newer complete checkpoint
    than its pointer names.
    """
    found = list_checkpoints(Path(run_dir))
    return found[-1][1] if found else None


def write_latest_pointer(run_dir: Path, step: int, path: Path) -> None:
    text = json.dumps({"step": step, "file": path.name}) + "\n"
    write_atomic(Path(run_dir) / CHECKPOINT_DIR / LATEST_FILE, lambda tmp: tmp.write_text(text), ".tmp")


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` training checkpoints."""
    for _, path in list_checkpoints(run_dir)[:-keep]:
        path.unlink(missing_ok=True)


def remove_temp_files(run_dir: Path) -> list[Path]:
    """Delete temp files a killed process left behind (hidden `.<name>.<random><suffix>`).

    Only names this trainer's atomic writes produce are touched: anything hidden in
    `checkpoints/`, and hidden temp files of the run folder's own files and demos.
    """
    run_dir = Path(run_dir)
    removed = []
    candidates: list[Path] = []
    ckpt_dir = run_dir / CHECKPOINT_DIR
    if ckpt_dir.is_dir():
        candidates += [p for p in ckpt_dir.iterdir() if p.name.startswith(".")]
    for name in (CONFIG_FILE, METRICS_FILE, MODEL_FILE, CURVES_FILE):
        candidates += list(run_dir.glob(f".{name}.*"))
    demo_dir = run_dir / DEMO_DIR
    if demo_dir.is_dir():
        candidates += [p for p in demo_dir.iterdir() if p.name.startswith(".") and p.suffix in (".part", ".tmp")]
    for path in candidates:
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text), ".tmp")


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Keep only well-formed metrics lines up to `step` (a resumed run rewrites the rest).

    A line cut short by a killed process is dropped too.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return
    kept = [line for line, record in metrics_lines(path.read_text()) if record["step"] <= step]
    text = "".join(line + "\n" for line in kept)
    write_atomic(path, lambda tmp: tmp.write_text(text), ".tmp")


# --- optimiser state <-> tensors + JSON ------------------------------------------------


def _optimizer_pack(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in sd["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}/{index}/{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    meta = {"param_groups": groups, "scalars": scalars}
    json.dumps(meta)  # fails loudly here, not at save time, if an optimiser holds non-JSON state
    return tensors, meta


def _optimizer_unpack(
    optimizer: torch.optim.Optimizer,
    prefix: str,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    source: str,
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "/"):
            index, name = key[len(prefix) + 1 :].split("/", 1)
            state.setdefault(int(index), {})[name] = value
    for index, entries in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    current = optimizer.state_dict()["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in current]:
        raise SalongError(f"{source} does not fit the model: the optimiser has a different number of parameters")
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise SalongError(f"{source}: cannot restore the optimiser state ({exc})") from None


# --- whole training state --------------------------------------------------------------


def save_state(
    path: Path,
    *,
    models: Mapping[str, nn.Module],
    emas: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    scalers: Mapping[str, Any],
    run_config: Mapping[str, Any],
    extra: Mapping[str, Any],
) -> Path:
    """Write the full training state as one safetensors file (atomic)."""
    tensors: dict[str, torch.Tensor] = {}
    optim_meta = {}
    for name, module in models.items():
        tensors.update({f"model/{name}/{k}": v for k, v in module.state_dict().items()})
    for name, module in emas.items():
        tensors.update({f"ema/{name}/{k}": v for k, v in module.state_dict().items()})
    for name, optimizer in optimizers.items():
        t, m = _optimizer_pack(optimizer, f"optim/{name}")
        tensors.update(t)
        optim_meta[name] = m
    scaler_meta = {name: scaler.state_dict() for name, scaler in scalers.items()}
    meta = dict(extra, optimizers=optim_meta, scalers=scaler_meta)
    return save_checkpoint(path, tensors, kind=STATE_KIND, config=dict(run_config), extra=meta)


def read_state(path: str | Path) -> Checkpoint:
    """Read a training-state checkpoint (clear errors for other kinds and corrupt files)."""
    return load_checkpoint(path, STATE_KIND)


class CheckpointFallbackWarning(UserWarning):
    """The newest training checkpoint was damaged; an older one is used."""


def read_latest_state(run_dir: str | Path) -> Checkpoint:
    """The newest training checkpoint of a run that reads intact. A damaged newer one (a
    disk that filled up, a copy cut short) is passed over with a warning naming both."""
    found = list_checkpoints(Path(run_dir))
    if not found:
        raise SalongError(f"cannot resume: {str(run_dir)!r} holds no checkpoint yet; "
                          "delete it and start again, or choose another --out")
    first_error: SalongError | None = None
    for _, path in reversed(found):
        try:
            ckpt = read_state(path)
        except SalongError as exc:
            first_error = first_error or exc
            continue
        if first_error is not None:
            warnings.warn(f"{first_error}; resuming from the older {path.name} instead", CheckpointFallbackWarning,
                          stacklevel=2)
        return ckpt
    assert first_error is not None
    raise SalongError(f"no checkpoint in {str(run_dir)!r} reads intact ({first_error}); start the run again")


def stored_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The names and shapes of a training checkpoint's tensors, from its header alone (no
    tensor is read)."""
    read_metadata(path)  # a missing, special or foreign file is a one-line error here
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SalongError(f"{str(path)!r} is not a readable training checkpoint ({short_reason(exc)})") from None


def part_tensors(ckpt: Checkpoint, group: str, part: str) -> dict[str, torch.Tensor]:
    """The tensors of one part in one group ("model" or "ema") of a training checkpoint."""
    prefix = f"{group}/{part}/"
    out = {k[len(prefix) :]: v for k, v in ckpt.tensors.items() if k.startswith(prefix)}
    if not out:
        raise SalongError(f"{str(ckpt.path)!r} holds no {group} weights for part {part!r}; it belongs to another task")
    return out


def load_state(
    ckpt: Checkpoint,
    *,
    models: Mapping[str, nn.Module],
    emas: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    scalers: Mapping[str, Any],
) -> None:
    """Restore every module, EMA copy, optimiser and enabled GradScaler from `ckpt`."""
    source = repr(str(ckpt.path))
    for name, module in models.items():
        load_state_strict(module, part_tensors(ckpt, "model", name), source=f"{source} ({name})")
    for name, module in emas.items():
        load_state_strict(module, part_tensors(ckpt, "ema", name), source=f"{source} (EMA of {name})")
    optim_meta = ckpt.extra("optimizers")
    for name, optimizer in optimizers.items():
        if name not in optim_meta:
            raise SalongError(f"{source} has no optimiser state for part {name!r}; it belongs to another task")
        _optimizer_unpack(optimizer, f"optim/{name}", ckpt.tensors, optim_meta[name], source)
    scaler_meta = ckpt.extra("scalers")
    for name, scaler in scalers.items():
        # A run that switches to fp16 on resume starts a fresh loss scale.
        if scaler.is_enabled() and scaler_meta.get(name):
            scaler.load_state_dict(scaler_meta[name])
