"""Model checkpoints: one `.safetensors` file holding the weights and the JSON config.

A checkpoint is self-contained: its metadata names the model kind, the format
version, the salong version that wrote it and the config, which is enough to rebuild
the model with no other file. Loading is strict (every tensor used, every shape
checked) and nothing is ever unpickled. Configs written before a field was renamed are
migrated on load (`MIGRATIONS`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import save_file

from salong import __version__
from salong.checks import refuse_special
from salong.errors import SalongError, short_reason
from salong.outputs import write_atomic
from salong.textfile import parse_json

# Moves whenever a stored config field is renamed or removed, with an entry in MIGRATIONS.
FORMAT_VERSION = 2
FORMAT_KEY = "salong_format"
VERSION_KEY = "salong_version"  # the salong release that wrote the file (files of format 2 on)

C = TypeVar("C")
M = TypeVar("M", bound=torch.nn.Module)


# --- configs -------------------------------------------------------------------------

# A field rename or removal, for one config class: the new field name, or a function that
# takes the config dict holding the old field and returns it as today's code reads it.
Migration = str | Callable[[dict[str, Any]], dict[str, Any]]

# Stored config changes, by the format version that made them: MIGRATIONS[v][class name]
# maps an old field to its Migration, applied to configs of files older than format v. A
# rename applies only where the old name is present and the new one absent, because files
# written between the rename and the format bump that records it say format 1 but already
# hold the new name. Configs with no format (a run folder's config.json) get every migration.
#
# Found in the history of salong/ (every frozen dataclass config stored in a model file or a
# run folder: DiTConfig, AutoencoderConfig, ClapModelConfig, GeneratorConfig,
# SamplingConfig, T5Spec, TrainConfig and the train task configs):
# - 5286ab3: DiTConfig.max_seconds -> timing_max_seconds (the timing embedders' clamp; the
#   generator's window is its own max_seconds). Reaches generator files ("dit") and DiT run
#   folders and training checkpoints ("task.model").
# No field was removed. Every other change added fields with defaults that keep the old
# behaviour (DiTConfig.timing/project_cond_tokens/qk_norm/controls, GeneratorConfig.t5/
# objective/text_layer/canonical_text, SamplingConfig.frames/cfg_interval/
# beat_guidance_without_drums, AutoencoderConfig.architecture and the spectral fields, train
# dit's crops/min_crop_seconds/crop_law/text_layer/timestep_shift/canonical_text/
# control_dropout), so files without them load as they are.
# Old files: tests/fixtures/old_files/.
MIGRATIONS: dict[int, dict[str, dict[str, Migration]]] = {
    2: {"DiTConfig": {"max_seconds": "timing_max_seconds"}},
}


@dataclass(frozen=True)
class Origin:
    """Where a config was read from: the file, its format version and, when the file
    records it, the salong version that wrote it."""

    source: str
    format_version: int
    salong_version: str | None


class FileConfig(dict):
    """A config dict read from a file, which remembers its `Origin`: `config_from_dict` then
    migrates only what a file of that format can hold and names the writer in its errors.
    It compares, copies and serialises as the plain dict it is."""

    def __init__(self, data: Mapping[str, Any], origin: Origin):
        super().__init__(data)
        self.origin = origin


def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen-dataclass config as plain JSON-able data (tuples become lists)."""
    return dataclasses.asdict(config)


def migrate_config(cls: type, data: Mapping[str, Any], format_version: int | None = None) -> dict[str, Any]:
    """`data` (the stored fields of one `cls` config, not its nested ones) with the
    `MIGRATIONS` of formats newer than `format_version` applied (all of them for None).

    An old name stored beside its new one is left alone, for `config_from_dict` to name.
    """
    data = dict(data)
    for version in sorted(MIGRATIONS):
        if format_version is not None and format_version >= version:
            continue
        for old, new in MIGRATIONS[version].get(cls.__name__, {}).items():
            if old not in data:
                continue
            if callable(new):
                data = new(data)
            elif new not in data:
                data[new] = data.pop(old)
    return data


def config_from_dict(cls: type[C], data: Mapping[str, Any], origin: Origin | None = None) -> C:
    """Rebuild a config dataclass; old field names are migrated (`migrate_config`), unknown
    keys are an error, missing keys take defaults.

    Nested dataclass fields and tuple fields are restored from their JSON form. `origin`
    defaults to that of a `FileConfig` (what `load_checkpoint` returns).
    """
    origin = origin or getattr(data, "origin", None)
    if not isinstance(data, Mapping):  # a damaged or crafted file: a list, a number, a string
        where = origin.source if origin else "the config"
        raise SalongError(f"{where} holds its {cls.__name__} as {type(data).__name__} {str(data)[:40]!r}, not as "
                          "a JSON object of fields; the file is damaged or not salong's")
    data = migrate_config(cls, data, origin.format_version if origin else None)
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise SalongError(_unknown_fields_message(cls.__name__, unknown, origin))
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _restore(hints.get(name), value, origin)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SalongError(f"invalid {cls.__name__}: {exc}") from None


def _unknown_fields_message(name: str, unknown: list[str], origin: Origin | None) -> str:
    """Which side is newer, as far as the file tells. Files of a newer format never get here
    (`load_checkpoint` refuses them), but a newer salong that only added fields keeps the
    format, so the writer's version decides; files before format 2 do not record it."""
    if origin is None:
        return (f"config for {name} has unknown fields {unknown} that this salong {__version__} does not know; "
                "a newer or a modified salong wrote it")
    if origin.salong_version and _release(origin.salong_version) > _release(__version__):
        return (f"{origin.source} was written by salong {origin.salong_version}, newer than this salong "
                f"{__version__}, and its {name} has unknown fields {unknown}; upgrade salong")
    writer = (f"written by salong {origin.salong_version}" if origin.salong_version
              else "from before files recorded the salong version")
    return (f"{origin.source} holds {name} fields this salong {__version__} does not know, unknown fields "
            f"{unknown}; the file has format {origin.format_version} ({writer}) and this salong reads formats up "
            f"to {FORMAT_VERSION}, so no newer salong wrote it: a modified or development one did")


def _release(version: str) -> tuple[int, ...]:
    """'0.1.0' -> (0, 1, 0); parts after the first that is not a number are ignored."""
    numbers = []
    for part in version.split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def _restore(hint: Any, value: Any, origin: Origin | None) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # `Config | None`
        hint = next((a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)), None)
    if dataclasses.is_dataclass(hint) and value is not None:
        return config_from_dict(hint, value, origin)  # a value that is no mapping is an error there
    if isinstance(value, list):
        return tuple(_restore(None, v, origin) for v in value)
    return value


# --- writing -------------------------------------------------------------------------


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
        VERSION_KEY: __version__,
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
    in hash-map order, so two processes writing the same model can differ byte for byte. The
    salong version that wrote the file is left out: a model exported again by a later salong
    is the same model. A file that is not safetensors is hashed as bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        try:
            size = struct.unpack("<Q", f.read(8))[0]
            header = parse_json(f.read(size)) if size <= 100_000_000 else None
        except (struct.error, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            header = None
        if isinstance(header, dict):
            if isinstance(header.get("__metadata__"), dict):
                header["__metadata__"].pop(VERSION_KEY, None)
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
        return parse_json(self.metadata[key])


def weights_digest(module: torch.nn.Module) -> str:
    """The first 16 hex digits of a sha256 over a model's weights (names, shapes, values in
    float32): which model this is, whatever file it was loaded from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file, with clear errors for bad paths and files."""
    path = Path(path)
    if not path.exists():
        raise SalongError(f"model file {str(path)!r} not found; check the path")
    if path.is_dir():
        raise SalongError(f"{str(path)!r} is a directory; give the path of a .safetensors model file")
    refuse_special(path, "file")
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
        config = parse_json(meta["config"])
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SalongError(f"{str(path)!r} is corrupt ({short_reason(exc)}); re-export or re-download it") from None
    if isinstance(config, dict):
        config = FileConfig(config, Origin(repr(str(path)), int(meta[FORMAT_KEY]), meta.get(VERSION_KEY)))
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
        # loading would cast int8 or bool weights to float silently, and the model would sample noise
        if value.dtype.is_floating_point != own[key].dtype.is_floating_point or value.is_complex():
            raise SalongError(
                f"{source} does not fit the model: {key} holds {str(value.dtype).replace('torch.', '')} values, the "
                f"model expects {'floating point' if own[key].dtype.is_floating_point else 'whole numbers'}; "
                "the file is damaged or not a salong model"
            )


def check_folder_weights(folder: str | Path, model: torch.nn.Module, what: str) -> None:
    """The weights of a Hugging Face folder (its *.safetensors) are of the kind `model` holds,
    floating point or whole numbers, else a one-line error: `from_pretrained` casts int8 or
    bool weights to float silently, and the model would then steer every song with noise."""
    own = model.state_dict()
    for file in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as f:
                stored = {key: f.get_slice(key).get_dtype() for key in f.keys()}  # "F32", "I8", "BOOL", ...
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise SalongError(f"{what} weights {str(file)!r} are not a readable safetensors file "
                              f"({short_reason(exc)}); download them again") from None
        for key, dtype in stored.items():
            mine = own.get(key, own.get(key.split(".", 1)[-1]))  # a file of the full model: its prefix dropped
            if mine is not None and dtype.startswith(("F", "BF")) != mine.dtype.is_floating_point:
                raise SalongError(f"{what} weights {str(file)!r} are damaged: {key} holds {dtype} values, the model "
                                  f"expects {'floating point' if mine.dtype.is_floating_point else 'whole numbers'}; "
                                  "download them again")


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
    would take all memory to build. So its numbers are first held to the file's
    (`check_config_numbers`); then the model is built on the meta device (no storage) and
    its tensor names and shapes are checked against the file's; only then is it built for
    real and loaded.
    """
    check_config_numbers(config, len(tensors), sum(t.numel() for t in tensors.values()), source)
    with torch.device("meta"):
        probe = build(config)
    check_state_fits(probe, tensors, source)
    del probe
    model = build(config)
    load_state_strict(model, tensors, source)
    return model


def check_config_numbers(config: Any, tensors: int, values: int, source: str) -> None:
    """No layer count of `config` may exceed the number of `tensors` its file holds, and no other
    whole number (a width, a window) the larger of the file's number of `values` and 2**20;
    else a one-line error naming `source`. What `build_strict` checks first, and what
    `salong info` checks before it shows a model's window."""
    for name, number in _whole_numbers(config):
        field = name.rsplit(".", 1)[-1]
        limit, what = (tensors, "tensors") if field in _LAYER_COUNTS else (max(values, _PLAUSIBLE), "values")
        if number > limit:
            raise SalongError(f"{source} does not fit its config: {name}={number} is more than the {limit} {what} "
                              "the file holds; the file is damaged or not a salong model")


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
