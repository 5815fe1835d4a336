"""A run's model file (`salong train export`): the task behind a run folder, rebuilt from
its saved config, and the export of a run's EMA weights through that task; and the check
that a run's config.json describes the models its checkpoints hold (`check_run_models`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors.torch import save_file
from torch import nn

from salong.checkpoint import Checkpoint, config_from_dict, load_checkpoint, load_state_strict, rewrite_checkpoint
from salong.errors import SalongError
from salong.outputs import (check_extension, check_writable, refuse_existing, refuse_inputs, refuse_stream, staged,
                            write_atomic)
from salong.train import state as st
from salong.train.runs import read_run_config
from salong.train.trainer import Task

AE_PREFIX = "autoencoder."  # a generator file's autoencoder weights


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


# The most values (parameters and buffers) of the models a run's config may describe: far
# past any model salong trains (Stable Audio Open's DiT: 1.1e9), far short of what a crafted
# width times depth would ask for.
MAX_MODEL_VALUES = 10**10


def _part_modules(kind: Any) -> tuple[type, Callable[[Any], Mapping[str, nn.Module]]] | None:
    """(task config class, its `part_modules`) of a run kind; None for a kind this salong lacks."""
    if kind == "autoencoder":
        from salong.train import autoencoder

        return autoencoder.AutoencoderTaskConfig, autoencoder.part_modules
    if kind == "clap":
        from salong.train import clap

        return clap.ClapTaskConfig, clap.part_modules
    if kind == "dit":
        from salong.train import dit

        return dit.DiTTaskConfig, dit.part_modules
    return None


def check_run_models(run_dir: str | Path, kind: Any, task_dict: Mapping[str, Any]) -> None:
    """The models a run folder's config.json describes, checked before any is built for real
    (on resume and export): built on the meta device (no storage), they may hold at most
    MAX_MODEL_VALUES values (`read_run_config` bounds each width and depth, not their
    product), and where the run has a checkpoint, exactly its tensors with its shapes. A
    config.json damaged or edited apart from its checkpoints is a one-line error, not all
    memory taken or a failure after minutes."""
    found = _part_modules(kind)
    if found is None:
        return  # the caller names the unknown kind
    config_cls, part_modules = found
    where = repr(str(Path(run_dir) / st.CONFIG_FILE))
    with torch.device("meta"):
        parts = part_modules(config_from_dict(config_cls, task_dict))
    values = sum(t.numel() for module in parts.values() for t in module.state_dict().values())
    if values > MAX_MODEL_VALUES:
        raise SalongError(f"{where} is damaged: its models would hold {values:,} values, more than "
                          f"{MAX_MODEL_VALUES:,}, beyond any model salong trains; restore it or start another run")
    newest = _newest_shapes(Path(run_dir))
    if newest is None:
        return
    path, stored = newest
    for part, module in parts.items():
        prefix = f"model/{part}/"
        theirs = {key[len(prefix):]: shape for key, shape in stored.items() if key.startswith(prefix)}
        if not theirs:
            continue  # a checkpoint of another task: resume and export name that
        problem = _shape_difference({key: tuple(t.shape) for key, t in module.state_dict().items()}, theirs)
        if problem:
            raise SalongError(f"{where} does not fit the run's checkpoint {path.name}: {part} {problem}; restore "
                              "config.json (the checkpoint's metadata holds the config it was saved with) or start "
                              "another run")


def _newest_shapes(run_dir: Path) -> tuple[Path, dict[str, tuple[int, ...]]] | None:
    """The newest training checkpoint whose header reads, with its tensor shapes; None if none."""
    for _, path in reversed(st.list_checkpoints(run_dir)):
        try:
            return path, st.stored_shapes(path)
        except SalongError:
            continue  # a damaged newest one: resume falls back past it, and so does this
    return None


def _shape_difference(ours: Mapping[str, tuple[int, ...]], theirs: Mapping[str, tuple[int, ...]]) -> str | None:
    missing, unexpected = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    if missing:
        return f"tensor {missing[0]} is not in the checkpoint ({len(missing)} missing)"
    if unexpected:
        return f"tensor {unexpected[0]} of the checkpoint has no place in the model ({len(unexpected)} such)"
    for key, shape in ours.items():
        if theirs[key] != shape:
            return f"tensor {key} has shape {theirs[key]} in the checkpoint, {shape} by config.json"
    return None


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


def export_model(run: Path, out: Path, half: bool = False, steps: int | None = None, cfg_scale: float | None = None,
                 sampler: str | None = None, overwrite: bool = False, generator: Path | None = None,
                 cfg_interval: str | None = None, beat_guidance_without_drums: float | None = None) -> Path:
    """A run's EMA weights (`run`: its folder, or one of its checkpoints) as a model file that
    --model accepts: in float16 storage with `half`, and for a generator with the sampling
    defaults given (checked as a song's settings are, before any file is written). An existing
    `out`, also one that appears while this runs, is replaced only with `overwrite`.

    `generator`: an autoencoder run's weights go into a copy of that generator file, in place
    of its autoencoder, when the two encode alike (`with_autoencoder`)."""
    if not run.exists():
        raise SalongError(f"{str(run)!r} not found; give a run folder or one of its checkpoints/step_*.safetensors")
    refuse_stream(out, "train export")
    check_extension(out, ".safetensors", "a model checkpoint")
    check_writable(out)
    refuse_existing(out, overwrite, "")
    folder = run if run.is_dir() else run.parent.parent
    # what export reads: the checkpoint(s), the run's config and prepared base model (not its exported model)
    refuse_inputs([out], [*([run] if not run.is_dir() else []), folder / st.CHECKPOINT_DIR, folder / st.CONFIG_FILE,
                          folder / "prepared"])
    task = task_for_run(run if run.is_dir() else run.parent.parent)
    given = dict(steps=steps, cfg_scale=cfg_scale, sampler=sampler, cfg_interval=cfg_interval,
                 beat_guidance_without_drums=beat_guidance_without_drums)
    sampling = {k: v for k, v in given.items() if v is not None}
    base_sampling = getattr(task.config, "sampling", None)
    if generator is not None:
        if task.kind != "autoencoder":
            raise SalongError(f"--generator takes an autoencoder run's decoder into a generator; {run} is a "
                              f"{task.kind} run")
        refuse_inputs([out], [generator])
        from salong.pipeline import GeneratorConfig

        # read once, before any work: a generator file, readable; what it writes is a generator
        base = load_checkpoint(generator, "generator")
        base_sampling = config_from_dict(GeneratorConfig, base.config).sampling
    if sampling and base_sampling is None:
        raise SalongError(f"--steps, --cfg-scale, --cfg-interval, --beat-guidance-without-drums and --sampler are "
                          f"sampling defaults of generators; {run} is a {task.kind} run")
    if sampling and getattr(task.config, "lora", None) is not None:
        raise SalongError(f"{run} trains LoRA adapters, whose file holds no sampling defaults; drop --steps, "
                          "--cfg-scale, --cfg-interval, --beat-guidance-without-drums and --sampler")
    if sampling:  # checked as SamplingConfig checks them, and written as it holds them ("0.7,1" -> (0.7, 1.0))
        checked = dataclasses.replace(base_sampling, **sampling)
        sampling = {k: getattr(checked, k) for k in sampling}
    # written whole beside `out`, then renamed onto it: exclusively without `overwrite`, so a file
    # another run wrote meanwhile is kept
    with staged(out, ".safetensors", overwrite) as tmp:
        export_run(run, tmp, task)
        if generator is not None:
            with_autoencoder(base, tmp, tmp)
        if half or sampling:
            rewrite_checkpoint(tmp, half=half, config_changes={"sampling": sampling} if sampling else None)
    return out


def with_autoencoder(gen: Checkpoint, autoencoder: Path, out: Path) -> Path:
    """Write the generator `gen` with the autoencoder of the file `autoencoder` in place of its own.

    Only a decoder may differ: the autoencoder's config and its encoder's weights must be the
    generator's (as stored, float16 or not), so every latent the generator's DiT learned
    decodes through the new decoder (`train autoencoder --decoder-only`)."""
    from salong.autoencoder import AutoencoderConfig

    ae, generator = load_checkpoint(autoencoder, "autoencoder"), gen.path

    def encoder_side(config: dict) -> AutoencoderConfig:  # a decoder's head may differ (AutoencoderConfig.decoder_head)
        return dataclasses.replace(config_from_dict(AutoencoderConfig, config), decoder_head=0)

    if encoder_side(gen.config["autoencoder"]) != encoder_side(ae.config):
        raise SalongError(f"{str(autoencoder)!r} is not an autoencoder of {str(generator)!r}'s kind (their configs "
                          "differ); train one with `salong train autoencoder --init GENERATOR --decoder-only`")
    own = {k[len(AE_PREFIX):]: v for k, v in gen.tensors.items()
           if k.startswith(AE_PREFIX) and not k.startswith(AE_PREFIX + "decoder.")}
    theirs = {k: v for k, v in ae.tensors.items() if not k.startswith("decoder.")}
    if own.keys() != theirs.keys() or not all(torch.equal(v, theirs[k].to(v.dtype)) for k, v in own.items()):
        raise SalongError(f"{str(autoencoder)!r} encodes differently from {str(generator)!r}'s autoencoder, so its "
                          "DiT would not fit it; train the decoder alone with `salong train autoencoder --init "
                          "GENERATOR --decoder-only`")
    tensors = {k: v for k, v in gen.tensors.items() if not k.startswith(AE_PREFIX)}
    tensors.update({AE_PREFIX + k: v.contiguous() for k, v in ae.tensors.items()})
    # the autoencoder's own config, which may add a decoder head
    metadata = {**gen.metadata, "config": json.dumps({**gen.config, "autoencoder": ae.config})}
    return write_atomic(Path(out), lambda tmp: save_file(tensors, str(tmp), metadata=metadata), ".safetensors")
