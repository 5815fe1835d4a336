"""The training loop every `salong train` subcommand shares.

A model-specific `Task` says which modules are optimised (its `Part`s), how a
batch is collated and what each part's loss is; the trainer owns the rest:
AdamW per part with the learning-rate schedule (docs/architecture.md, Training),
an EMA per part with k-diffusion's warm-up, mixed precision, gradient clipping,
DDP, the run folder, exact resume, fault handling and progress. Its settings
(`TrainConfig`) and the checks of a resume live in `salong.train.runs`, the export of a
run's model in `salong.train.tasks`, its log lines in `salong.train.progress`.

Each update, for every part in order (a GAN alternates its two sides this way,
e.g. the autoencoder and its discriminator, under DDP, with no requires_grad tricks):
    zero all grads -> loss (autocast) -> backward (GradScaler for fp16)
    -> clip this part's grads -> AdamW step with lr(step) -> EMA update with decay(step)

Exact resume rests on three facts: the data order is a pure function of the step
(`StepSampler`), every random number generator is reseeded from (seed, step, rank) at
the start of each update, and the checkpoint holds the whole optimiser, EMA and
GradScaler state. So N steps, stop, resume, M steps equals N+M steps, bit for bit
on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

import salong
from salong.checkpoint import Checkpoint, load_state_strict
from salong.checks import is_real
from salong.distributed import Dist, init_distributed, resolve_device, wants_cuda
from salong.errors import SalongError, short_reason
from salong.outputs import folder_lock
from salong.run_metrics import METRICS_FILE, append_metrics
from salong.train import state as st
from salong.train.progress import LogWindow, RunLog
from salong.train.runs import TrainConfig, check_resume, jsonable, valid_betas
from salong.train.runtime import StopSignals, ignore_sigint, reseed_step, resolve_precision
from salong.train.sampler import StepSampler
from salong.train.schedules import ema_decay, ema_update, lr_factor

# A task's inputs made before training starts (the DiT's frozen models and latent cache);
# a run folder holding only this is still a fresh run folder.
PREPARED_DIR = "prepared"


# --- what a model plugs in ----------------------------------------------------------------------


@dataclass
class Part:
    """One optimised module with its own AdamW, schedule and (optionally) EMA.

    `lr` and `betas` default to the TrainConfig's. A GAN has two parts (the autoencoder
    with EMA, its discriminator without); other models have one. Set
    `find_unused_parameters` if a part's loss may leave some of its parameters
    without gradient (DDP must then search for them every step).
    """

    name: str
    module: nn.Module
    lr: float | None = None
    betas: tuple[float, float] | None = None
    ema: bool = True
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        assert self.name and "/" not in self.name, f"part name {self.name!r} must be non-empty, without '/'"
        if self.lr is not None and not (is_real(self.lr) and self.lr > 0):
            raise SalongError(f"{self.name} learning rate must be positive, got {self.lr!r}")
        if self.betas is not None and not valid_betas(self.betas):
            raise SalongError(f"{self.name} betas must be two numbers in [0, 1), got {self.betas!r}")


class Task:
    """What a model plugs into the trainer. Subclass it and set `kind`.

    The trainer calls `setup(device)` once, then `parts()` once, then for every
    update and every part in `parts()` order `loss(part, batch, modules, step)`.
    `modules` maps part names to the modules to call: DDP-wrapped under
    `torchrun`, the plain modules otherwise. `ema_modules` maps part names to the
    EMA copies (eval mode, no grad), or to the live module for parts without EMA.
    Datasets are indexed with `(index, item_seed, batch_seed)` (see `StepSampler`).
    """

    kind: str = ""

    def setup(self, device: torch.device) -> None:
        """Move whatever frozen helpers the task owns (encoders, losses) to `device`."""

    def parts(self) -> list[Part]:
        raise NotImplementedError

    def trains(self, part: str, step: int) -> bool:
        """Whether `part` is updated at `step` (a GAN's critic waits for the adversarial start)."""
        return True

    def collate(self, items: list[Any]) -> Any:
        """Dataset items -> one batch (runs in DataLoader workers)."""
        return torch.utils.data.default_collate(items)

    def loss(
        self, part: str, batch: Any, modules: Mapping[str, nn.Module], step: int
    ) -> tuple[torch.Tensor, Mapping[str, float | torch.Tensor]]:
        """Scalar loss to minimise for `part` at update `step` (0-based), and values to log
        (averaged over each log interval into metrics.jsonl as `<part>/<name>`)."""
        raise NotImplementedError

    def export(self, path: Path, ema_modules: Mapping[str, nn.Module]) -> Path:
        """Write the model checkpoint that `--model` accepts (usually the EMA weights)."""
        raise NotImplementedError

    def demo(self, step: int, out_dir: Path, ema_modules: Mapping[str, nn.Module]) -> None:
        """Optional: write listening examples for `step` into `out_dir` (rank 0, no grad)."""

    def evaluate(self, step: int, ema_modules: Mapping[str, nn.Module]) -> Mapping[str, float]:
        """Optional: validation numbers, logged to metrics.jsonl under `eval/` (rank 0, no grad)."""
        return {}


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path
    model: Path


class TrainingInterrupted(SalongError):
    """Ctrl-C or SIGTERM stopped the run after saving a checkpoint; the CLI exits 130."""

    exit_code = 130

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"interrupted at step {step}; checkpoint saved to {checkpoint}; continue with --resume")
        self.step = step
        self.checkpoint = checkpoint


class TrainingDiverged(SalongError):
    """A loss or gradient norm became NaN/inf; nothing of that state was saved."""


# --- run folder -------------------------------------------------------------------------------


def check_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """Validate the run folder (read-only, so every rank can do it); the checkpoint to resume.

    A new run needs a folder that does not exist yet, or holds nothing but `prepared/`."""
    if run_dir.exists() and not run_dir.is_dir():
        raise SalongError(f"run folder {str(run_dir)!r} is not a folder; choose another --out")
    if not resume:
        if run_dir.is_dir() and any(p.name != PREPARED_DIR for p in run_dir.iterdir()):
            raise SalongError(
                f"run folder {str(run_dir)!r} exists; pass --resume to continue or choose another --out"
            )
        return None
    if not run_dir.is_dir():
        raise SalongError(
            f"cannot resume: run folder {str(run_dir)!r} does not exist; start a new run without --resume"
        )
    ckpt = st.latest_checkpoint(run_dir)
    if ckpt is None:
        raise SalongError(
            f"cannot resume: {str(run_dir)!r} holds no checkpoint yet; "
            "delete it and start again, or choose another --out"
        )
    return ckpt


# --- the loop ---------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One part's training machinery."""

    part: Part
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    base_lr: float
    ema: nn.Module | None


def _by_part(slots: list[_Slot]) -> dict[str, dict[str, Any]]:
    """The parts' modules, optimisers and GradScalers by part name, as `st.save_state` and
    `st.load_state` take them."""
    return {
        "models": {s.part.name: s.part.module for s in slots},
        "optimizers": {s.part.name: s.optimizer for s in slots},
        "scalers": {s.part.name: s.scaler for s in slots},
    }


@dataclass
class _Run:
    """A run being trained: what the loop, the checkpoints and the export share."""

    task: Task
    config: TrainConfig
    run_dir: Path
    run_config: dict[str, Any]
    d: Dist
    device: torch.device
    precision: str
    slots: list[_Slot]
    modules: dict[str, nn.Module]  # what `task.loss` calls: DDP-wrapped under torchrun
    sampler: StepSampler
    last_saved: Path | None  # the newest checkpoint of this run

    @property
    def ema_modules(self) -> dict[str, nn.Module]:
        """The EMA copies by part name, or the live module for parts without EMA."""
        return {s.part.name: s.ema if s.ema is not None else s.part.module for s in self.slots}

    def save(self, step: int) -> Path:
        """Write the training state after `step` (rank 0); every rank waits until it is on disk."""
        path = self.run_dir / st.CHECKPOINT_DIR / st.checkpoint_name(step)
        if self.d.main:
            epoch, position = self.sampler.position(step)
            extra = {
                "step": step,
                "world_size": self.d.world_size,
                "salong_version": salong.__version__,
                "precision": self.precision,
                "sampler": {"epoch": epoch, "position": position, "batch_size": self.config.batch_size},
            }
            st.save_state(
                path,
                emas={s.part.name: s.ema for s in self.slots if s.ema is not None},
                run_config=self.run_config,
                extra=extra,
                **_by_part(self.slots),
            )
            st.write_latest_pointer(self.run_dir, step, path)
            st.prune_checkpoints(self.run_dir, self.config.keep_checkpoints)
        self.d.barrier()  # other ranks wait until the checkpoint is on disk
        self.last_saved = path
        return path

    def saved(self, step: int) -> Path:
        """The checkpoint of `step`: the last one saved if it is of `step`, else a new one."""
        if self.last_saved is None or self.last_saved.name != st.checkpoint_name(step):
            self.save(step)
        assert self.last_saved is not None
        return self.last_saved


def train(
    task: Task,
    dataset: Dataset,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    task_config: Mapping[str, Any] | Any = None,
    quiet: bool = False,
    locked: bool = False,
) -> TrainResult:
    """Train `task` on `dataset` into `run_dir`; see the module docstring.

    `task_config` (a mapping or config dataclass: the model and loss settings) is
    saved with the run, and a resumed run must present the same one. Raises
    `TrainingInterrupted` after saving a checkpoint on Ctrl-C/SIGTERM, and
    `TrainingDiverged` on a NaN/inf loss. Under `torchrun` every rank calls this;
    only rank 0 writes files. `quiet` turns the progress display off. `locked`: the caller
    holds the run folder's lock already (`salong.train.dit` takes it before its preparation).
    """
    run_dir = Path(run_dir)
    assert task.kind, "a task needs a kind"
    d = init_distributed(wants_cuda(config.device))
    try:
        with contextlib.ExitStack() as held:  # the run folder's lock, from its creation to the end
            return _train(task, dataset, config, run_dir, resume, task_config, quiet, d, None if locked else held)
    finally:
        if d.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(
    task: Task,
    dataset: Dataset,
    config: TrainConfig,
    run_dir: Path,
    resume: bool,
    task_config: Any,
    quiet: bool,
    d: Dist,
    held: contextlib.ExitStack | None,
) -> TrainResult:
    device = resolve_device(config.device, d.local_rank)
    precision = resolve_precision(config.precision, device)
    num_items = len(dataset)  # type: ignore[arg-type]
    if num_items == 0:
        raise SalongError("the training dataset is empty; point the trainer at a folder with audio")
    run_config = {
        "salong_version": salong.__version__,
        "task_kind": task.kind,
        "world_size": d.world_size,
        "train": jsonable(config),
        "task": jsonable(task_config if task_config is not None else {}),
    }
    ckpt, start_step = _open_run_dir(run_dir, resume, run_config, config, d, task_config, held)
    slots, modules = _build_parts(task, config, device, precision, ckpt, d)
    last_saved = ckpt.path if ckpt is not None else None
    del ckpt  # the resumed tensors are loaded: free them before training
    sampler = StepSampler(num_items, config.batch_size, config.seed, d.rank, d.world_size, start_step, config.steps)
    run = _Run(task, config, run_dir, run_config, d, device, precision, slots, modules, sampler, last_saved)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=task.collate,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=ignore_sigint if config.num_workers > 0 else None,
    )
    step = _loop(run, loader, start_step, quiet)
    return _finish(run, step)


def _open_run_dir(
    run_dir: Path, resume: bool, run_config: Mapping[str, Any], config: TrainConfig, d: Dist, task_config: Any = None,
    held: contextlib.ExitStack | None = None,
) -> tuple[Checkpoint | None, int]:
    """The checkpoint to resume (None for a new run) and the step to start at, once the
    run folder is checked and (by rank 0) created, locked against a second run in it (held
    by `held` until it closes), cleared of temp files, its config.json written and, on
    resume, its metrics cut back to the checkpoint's step."""
    # Every rank validates before anything is written, so all ranks fail alike.
    resume_path = check_run_dir(run_dir, resume)
    ckpt = st.read_latest_state(run_dir) if resume_path is not None else None
    start_step = check_resume(ckpt, run_config, config, run_dir, d, task_config) if ckpt is not None else 0
    d.barrier()  # no rank may see the folder rank 0 is about to create
    if d.main:
        try:
            for folder in (run_dir, run_dir / st.CHECKPOINT_DIR, run_dir / st.DEMO_DIR):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SalongError(f"cannot create run folder {str(run_dir)!r} ({exc.strerror}); "
                              "choose another --out") from None
        if held is not None:
            held.enter_context(folder_lock(run_dir, "a training run"))
        st.remove_temp_files(run_dir)
        st.write_json(run_dir / st.CONFIG_FILE, run_config)
        if ckpt is not None:
            st.truncate_metrics(run_dir, start_step)
    d.barrier()
    return ckpt, start_step


def _build_parts(
    task: Task, config: TrainConfig, device: torch.device, precision: str, ckpt: Checkpoint | None, d: Dist
) -> tuple[list[_Slot], dict[str, nn.Module]]:
    """Each part on `device` with its AdamW, GradScaler and EMA copy, restored from `ckpt`
    when resuming; and the modules `task.loss` calls (DDP wrappers under torchrun)."""
    task.setup(device)
    parts = task.parts()
    names = [p.name for p in parts]
    assert parts and all(names) and len(set(names)) == len(names), "a task needs parts with unique names"
    slots: list[_Slot] = []
    for p in parts:
        p.module.to(device).train()
        params = [q for q in p.module.parameters() if q.requires_grad]
        assert params, f"part {p.name!r} has no trainable parameters"
        base_lr = float(p.lr if p.lr is not None else config.lr)
        betas = tuple(p.betas or config.betas)
        optimizer = torch.optim.AdamW(params, lr=base_lr, betas=betas, weight_decay=config.weight_decay)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        slots.append(_Slot(p, params, optimizer, scaler, base_lr, ema=None))
    if ckpt is not None:
        st.load_state(ckpt, emas={}, **_by_part(slots))

    # DDP broadcasts rank 0's weights when it wraps a module, so EMA copies come after.
    modules: dict[str, nn.Module] = {s.part.name: s.part.module for s in slots}
    if d.active:
        for p in parts:
            modules[p.name] = DistributedDataParallel(
                p.module,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=p.find_unused_parameters,
            )
    for s in slots:
        if s.part.ema:
            s.ema = _ema_copy(s.part)
            if ckpt is not None:
                source = f"{str(ckpt.path)!r} (EMA of {s.part.name})"
                load_state_strict(s.ema, st.part_tensors(ckpt, "ema", s.part.name), source=source)
    return slots, modules


def _loop(run: _Run, loader: DataLoader, start_step: int, quiet: bool) -> int:
    """Update from `start_step` to `config.steps`, logging, writing demos, evaluating and
    saving checkpoints on their cadences; returns the step reached. On Ctrl-C/SIGTERM it
    saves a checkpoint and raises `TrainingInterrupted`."""
    config, d = run.config, run.d
    autocast = _autocast(run.precision, run.device)
    log = RunLog([s.part.name for s in run.slots], config.steps, config.log_every, run.run_dir / METRICS_FILE,
                 start_step, d.main, quiet)
    step = start_step
    batches: Iterator[Any] = iter(loader)
    try:
        with StopSignals() as stop:
            while step < config.steps:
                batch = _to_device(next(batches), run.device)
                reseed_step(config.seed, step, d.rank)
                for s in run.slots:
                    if not run.task.trains(s.part.name, step):
                        continue
                    _update_part(run.task, s, run.slots, batch, run.modules, step, config, autocast, log.window,
                                 run.device, d, run.run_dir)
                step += 1
                log.after(step)
                _demo_and_evaluate(run, step, log.metrics_path)
                if step % config.checkpoint_every == 0 or step == config.steps:
                    run.save(step)

                # Agreed across ranks, so every process stops after the same step.
                if step < config.steps and d.any(stop.requested, run.device):
                    raise TrainingInterrupted(step, run.saved(step))
    finally:
        log.close()
        del batches  # shuts DataLoader workers down
    return step


def _autocast(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """The mixed-precision context of each loss computation."""
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def _demo_and_evaluate(run: _Run, step: int, metrics_path: Path) -> None:
    """Rank 0, on their cadences: the task's demos into demos/, its evaluation into metrics.jsonl."""
    config = run.config
    demo = run.d.main and config.demo_every and step % config.demo_every == 0
    if demo:
        with torch.no_grad():
            run.task.demo(step, run.run_dir / st.DEMO_DIR, run.ema_modules)
    if run.d.main and config.eval_every and step % config.eval_every == 0:
        with torch.no_grad():
            results = run.task.evaluate(step, run.ema_modules)
        if results:
            evaluation = {f"eval/{k}": float(v) for k, v in results.items()}
            append_metrics(metrics_path, {"step": step, "time": round(time.time(), 3), **evaluation})
    if demo:
        _pictures(run.run_dir)


def _pictures(run_dir: Path) -> None:
    """The run's curves and a spectrogram beside each new demo. A picture that cannot be
    drawn (an unreadable demo, a full disk) is a warning: a run never stops for a picture."""
    from salong.plots import plot_demos, plot_run

    try:
        plot_demos(run_dir / st.DEMO_DIR)
        metrics = run_dir / METRICS_FILE
        if metrics.is_file() and metrics.stat().st_size:  # a demo may come before the first log line
            plot_run(run_dir, run_dir / st.CURVES_FILE)
    except (SalongError, OSError, ValueError) as exc:
        warnings.warn(f"could not draw the run's pictures: {exc}")


def _finish(run: _Run, step: int) -> TrainResult:
    """The last step's checkpoint (unless already saved) and, by rank 0, the exported model."""
    checkpoint = run.saved(step)
    model_path = run.run_dir / st.MODEL_FILE
    if run.d.main:
        with torch.no_grad():
            model_path = Path(run.task.export(model_path, run.ema_modules))
    run.d.barrier()
    return TrainResult(run_dir=run.run_dir, step=step, checkpoint=checkpoint, model=model_path)


def _update_part(
    task: Task,
    slot: _Slot,
    slots: list[_Slot],
    batch: Any,
    modules: Mapping[str, nn.Module],
    step: int,
    config: TrainConfig,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    window: LogWindow,
    device: torch.device,
    d: Dist,
    run_dir: Path,
) -> None:
    """One part's share of update `step`: loss, backward, clip, AdamW, EMA; logs into `window`."""
    name = slot.part.name
    for other in slots:  # an adversarial loss also fills the discriminator's grads: clear them all
        other.optimizer.zero_grad(set_to_none=True)
    with autocast():
        loss, logs = task.loss(name, batch, modules, step)
    assert torch.is_tensor(loss) and loss.ndim == 0, f"task.loss for {name!r} must return a scalar tensor"
    slot.scaler.scale(loss).backward()
    slot.scaler.unscale_(slot.optimizer)
    norm = torch.nn.utils.clip_grad_norm_(slot.params, config.grad_clip if config.grad_clip > 0 else math.inf)
    loss_value, norm_value = float(loss.detach()), float(norm)
    # With fp16 loss scaling an inf gradient is routine: the scaler skips that step.
    bad_norm = not math.isfinite(norm_value) and not slot.scaler.is_enabled()
    if d.any(not math.isfinite(loss_value) or bad_norm, device):
        raise _diverged(loss_value, norm_value, bad_norm, step, name, run_dir)
    lr = slot.base_lr * lr_factor(step, config.warmup, config.inv_gamma, config.power)
    for group in slot.optimizer.param_groups:
        group["lr"] = lr
    slot.scaler.step(slot.optimizer)
    slot.scaler.update()
    if slot.ema is not None:
        decay = ema_decay(step, config.ema_decay, config.ema_inv_gamma, config.ema_power)
        ema_update(slot.part.module, slot.ema, decay)
    window.add(f"{name}/loss", loss_value)
    window.add(f"{name}/grad_norm", norm_value)
    window.last[f"{name}/lr"] = lr
    for key, value in logs.items():
        window.add(f"{name}/{key}", float(value.detach()) if torch.is_tensor(value) else float(value))


def _diverged(loss: float, norm: float, bad_norm: bool, step: int, part: str, run_dir: Path) -> TrainingDiverged:
    if not math.isfinite(loss):
        what = f"loss became {loss}"
    elif bad_norm:
        what = f"gradient norm became {norm}"
    else:
        what = "the loss or gradient norm became non-finite on another process"
    last = st.latest_checkpoint(run_dir)
    if last is not None:
        advice = f"the last good checkpoint is {last}; lower --lr, then continue with --resume"
    else:
        advice = f"no checkpoint was saved yet; lower --lr and start again (delete {run_dir} first)"
    return TrainingDiverged(f"{what} at step {step + 1} ({part}); {advice}")


def _ema_copy(part: Part) -> nn.Module:
    try:
        ema = copy.deepcopy(part.module)
    except RuntimeError as exc:  # e.g. old-style weight_norm after a forward pass
        raise SalongError(f"cannot copy part {part.name!r} for its EMA ({short_reason(exc)}); "
                          "hand the trainer a module that has not run a forward pass yet") from exc
    return ema.eval().requires_grad_(False)


def _to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields"):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch
