"""Model checkpoints: one `.safetensors` file holding the weights and the JSON config.

A checkpoint is self-contained: its metadata names the model kind, the format
version and the config, which is enough to rebuild the model with no other file.
Loading is strict (every tensor used, every shape checked) and nothing is ever
unpickled.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import stat
import struct
import tempfile
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import save_file

from salong.errors import SalongError, short_reason

FORMAT_VERSION = 1
FORMAT_KEY = "salong_format"

C = TypeVar("C")
M = TypeVar("M", bound=torch.nn.Module)


# --- configs -------------------------------------------------------------------------


def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen-dataclass config as plain JSON-able data (tuples become lists)."""
    return dataclasses.asdict(config)


def config_from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Rebuild a config dataclass; unknown keys are an error, missing keys take defaults.

    Nested dataclass fields and tuple fields are restored from their JSON form.
    """
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise SalongError(
            f"config for {cls.__name__} has unknown fields {unknown}; "
            "the checkpoint was written by a newer or different salong"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _restore(hints.get(name), value)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SalongError(f"invalid {cls.__name__}: {exc}") from None


def _restore(hint: Any, value: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # `Config | None`
        hint = next((a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)), None)
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return config_from_dict(hint, value)
    if isinstance(value, list):
        return tuple(_restore(None, v) for v in value)
    return value


# --- writing -------------------------------------------------------------------------


def check_writable(path: str | Path) -> tuple[Path, Path]:
    """(path, its folder) if a file can be written there; else a SalongError saying why.

    Cheap enough to run before minutes of work whose result would have nowhere to go.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise SalongError(f"output folder {str(folder)!r} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise SalongError(f"output folder {str(folder)!r} is not writable; choose another output path")
    if path.is_dir():
        raise SalongError(f"output path {str(path)!r} is a directory; give a file name")
    if path.exists() and not path.is_file() and not _is_stream(path):
        raise SalongError(f"output path {str(path)!r} is not a regular file (a socket or block device); "
                          "give a file name")
    return path, folder


def _is_stream(path: Path) -> bool:
    """A character device or named pipe (/dev/stdout, /dev/null, a FIFO): written into, never replaced."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def atomic_target(path: str | Path, suffix: str | None = None) -> tuple[Path, Path]:
    """A temporary path in the destination folder, to be renamed onto `path`.

    The folder must exist and be writable; the temp file lives beside the target so
    the final `os.replace` is an atomic rename on the same file system.
    """
    path, folder = check_writable(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=folder)
    except OSError as exc:
        raise SalongError(
            f"cannot write in output folder {str(folder)!r} ({exc.strerror}); choose another output path"
        ) from None
    os.close(fd)
    return path, Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def commit_atomic(tmp: Path, path: Path) -> None:
    """Flush `tmp` to disk and rename it onto `path`, with the permissions the umask gives any
    new file (mkstemp's are 0600). Into a stream (`_is_stream`) the bytes are copied instead:
    a device node or pipe is written to, never replaced."""
    if _is_stream(path):
        with open(tmp, "rb") as source, open(path, "wb") as sink:
            shutil.copyfileobj(source, sink)
        tmp.unlink()
        return
    os.chmod(tmp, 0o666 & ~_umask())
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_atomic(path: str | Path, write: Callable[[Path], None], suffix: str | None = None) -> Path:
    """Run `write(tmp_path)` then rename onto `path`; on any failure remove the temp file.

    A full disk or an interrupted run therefore never leaves a truncated file behind.
    """
    path, tmp = atomic_target(path, suffix)
    try:
        write(tmp)
        commit_atomic(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        # safetensors reports a full disk as its own error type, with the OS's words
        if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in str(exc):
            raise SalongError(f"disk full while writing {str(path)!r}; free some space and retry") from None
        raise
    return path


def save_checkpoint(
    path: str | Path,
    state: torch.nn.Module | Mapping[str, torch.Tensor],
    kind: str,
    config: Any,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write weights + config to `path` atomically.

    `extra` holds further JSON-able metadata (e.g. a tokenizer, a latent rate).
    """
    tensors = state.state_dict() if isinstance(state, torch.nn.Module) else dict(state)
    # safetensors refuses shared or non-contiguous storage; a private copy is cheap next to a write.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    metadata = {
        FORMAT_KEY: str(FORMAT_VERSION),
        "kind": kind,
        "config": json.dumps(config_to_dict(config) if dataclasses.is_dataclass(config) else config),
    }
    for key, value in (extra or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), ".safetensors")


# --- reading -------------------------------------------------------------------------


def content_digest(path: str | Path) -> str:
    """sha256 of what a safetensors file holds (its header read as JSON with sorted keys, then
    its tensor bytes), whatever order the writer gave the header. safetensors writes metadata
    in hash-map order, so two processes writing the same model can differ byte for byte. A
    file that is not safetensors is hashed as bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        try:
            size = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(size)) if size <= 100_000_000 else None
        except (struct.error, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            header = None
        if isinstance(header, dict):
            digest.update(json.dumps(header, sort_keys=True).encode())
        else:
            f.seek(0)
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()



@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds, before any model is built."""

    path: Path
    kind: str
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]

    def extra(self, key: str) -> Any:
        """A JSON metadata entry written through `save_checkpoint(extra=...)`."""
        if key not in self.metadata:
            raise SalongError(f"{str(self.path)!r} has no {key!r} entry; it was not written by this salong command")
        return json.loads(self.metadata[key])


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file, with clear errors for bad paths and files."""
    path = Path(path)
    if not path.exists():
        raise SalongError(f"model file {str(path)!r} not found; check the path")
    if path.is_dir():
        raise SalongError(f"{str(path)!r} is a directory; give the path of a .safetensors model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SalongError(
            f"{str(path)!r} is not a readable safetensors checkpoint ({short_reason(exc)}); "
            "the file may be truncated or of another format"
        ) from None


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...] | None = None) -> Checkpoint:
    """Read a salong checkpoint; `kind` (one or several) rejects checkpoints of other models."""
    path = Path(path)
    meta = read_metadata(path)
    if meta.get(FORMAT_KEY) is None or "kind" not in meta or "config" not in meta:
        raise SalongError(f"{str(path)!r} is a safetensors file but not a salong checkpoint (no salong metadata)")
    if not meta[FORMAT_KEY].isdigit():
        raise SalongError(f"{str(path)!r} has a damaged salong_format entry ({meta[FORMAT_KEY][:20]!r}); "
                          "re-export or re-download it")
    if int(meta[FORMAT_KEY]) > FORMAT_VERSION:
        raise SalongError(
            f"{str(path)!r} uses checkpoint format {meta[FORMAT_KEY]}, newer than this salong "
            f"({FORMAT_VERSION}); upgrade salong"
        )
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and meta["kind"] not in kinds:
        raise SalongError(
            f"{str(path)!r} is a {meta['kind']} checkpoint, but this needs a model of kind "
            f"{' or '.join(kinds)}; pass the right file"
        )
    try:
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
        config = json.loads(meta["config"])
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SalongError(f"{str(path)!r} is corrupt ({short_reason(exc)}); re-export or re-download it") from None
    return Checkpoint(path=path, kind=meta["kind"], config=config, tensors=tensors, metadata=meta)


def check_state_fits(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Missing, unexpected or mis-shaped tensors are errors (the model may live on the meta device)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise SalongError(f"{source} does not fit the model: tensors {', '.join(parts)}")
    for key, value in tensors.items():
        if tuple(own[key].shape) != tuple(value.shape):
            raise SalongError(
                f"{source} does not fit the model: {key} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(own[key].shape)}"
            )


def load_state_strict(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load every tensor into `model`; missing, unexpected or mis-shaped tensors are errors."""
    check_state_fits(model, tensors, source)
    model.load_state_dict(tensors, strict=True)


# Config fields that count repeated layers: each unit holds tensors of its own, so a file
# can never hold fewer tensors than such a count says.
_LAYER_COUNTS = ("depth", "text_layers", "audio_depths", "c_mults", "strides")
# Any other whole number (widths, rates, windows) stays below this or the file's value count.
_PLAUSIBLE = 2**20


def build_strict(build: Callable[[C], M], config: C, tensors: Mapping[str, torch.Tensor], source: str) -> M:
    """`build(config)` with `tensors` loaded strictly, checked before any memory is spent.

    A config is only a promise about the tensors, and a crafted one (`"depth": 10**9`)
    would take all memory to build. So: no layer count may exceed the file's number of
    tensors and no other whole number the larger of its number of values and 2**20; then
    the model is built on the meta device (no storage) and its tensor names and shapes are
    checked against the file's; only then is it built for real and loaded.
    """
    values = sum(t.numel() for t in tensors.values())
    for name, number in _whole_numbers(config):
        field = name.rsplit(".", 1)[-1]
        limit, what = (len(tensors), "tensors") if field in _LAYER_COUNTS else (max(values, _PLAUSIBLE), "values")
        if number > limit:
            raise SalongError(f"{source} does not fit its config: {name}={number} is more than the {limit} {what} "
                              "the file holds; the file is damaged or not a salong model")
    with torch.device("meta"):
        probe = build(config)
    check_state_fits(probe, tensors, source)
    del probe
    model = build(config)
    load_state_strict(model, tensors, source)
    return model


def _whole_numbers(config: Any, prefix: str = "") -> list[tuple[str, int]]:
    """Every int in a (nested) config dataclass with its dotted name; a tuple gives its length
    and its items."""
    found: list[tuple[str, int]] = []
    fields = dataclasses.fields(config) if dataclasses.is_dataclass(config) else ()
    for f in fields:
        name, value = f"{prefix}{f.name}", getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            found += _whole_numbers(value, f"{name}.")
        elif isinstance(value, int) and not isinstance(value, bool):
            found.append((name, value))
        elif isinstance(value, tuple):
            found.append((name, len(value)))
            found += [(name, v) for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return found


def load_model(
    path: str | Path,
    kind: str,
    config_cls: type[C],
    build: Callable[[C], M],
) -> tuple[M, C, Checkpoint]:
    """Rebuild a model from a checkpoint of `kind`: config -> `build(config)` -> strict load."""
    ckpt = load_checkpoint(path, kind)
    config = config_from_dict(config_cls, ckpt.config)
    model = build_strict(build, config, ckpt.tensors, source=f"{str(ckpt.path)!r}")
    model.eval()
    return model, config, ckpt


# --- storage precision -------------------------------------------------------------------------


def half_precision(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weight matrices and kernels (float tensors of 2 or more dims) in float16; everything
    else (biases, norms, rotary frequencies, scalars) stays as it is.

    Halves a model file; loading copies the values into the model's float32 parameters,
    so computation stays float32. Rotary `inv_freq` buffers keep full precision: rounding
    a frequency by 1e-3 would turn into a phase error of radians thousands of positions on.
    """
    out = {}
    for key, value in tensors.items():
        small = value.ndim < 2 or key.endswith("inv_freq")
        out[key] = value if small or not value.is_floating_point() else value.to(torch.float16)
    return out


def rewrite_checkpoint(path: str | Path, half: bool = False, config_changes: Mapping[str, Any] | None = None) -> Path:
    """Rewrite a salong checkpoint in place (atomically): optionally weights in float16
    (`half_precision`) and top-level config entries merged with `config_changes` (e.g. sampling defaults)."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    config = dict(ckpt.config)
    for key, value in (config_changes or {}).items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, Mapping) else value
    metadata = dict(ckpt.metadata)
    metadata["config"] = json.dumps(config)
    tensors = half_precision(ckpt.tensors) if half else ckpt.tensors
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), ".safetensors")
