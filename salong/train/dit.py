"""`salong train dit`: the diffusion transformer on latents of a frozen autoencoder, conditioned
on a frozen text encoder (a CLAP text tower, or the T5 of a Stable Audio Open generator) and
the timing of each crop (docs/architecture.md, Timing, DiT and Training; docs/diffusion.md,
v-objective; rectified flow for Stable Audio Open Small).

The dataset is encoded once into `RUN/prepared/`: copies of the two frozen models (so the
run is self-contained and exports a complete generator) and one file per audio file with
its latents (posterior mean) and its caption's text features. Training then reads only
those files: random crops of `window` latent frames, silence-padded and masked.

A run starts from scratch, or from a generator (`--init`: a salong file, a converted Stable
Audio Open file or an SAO folder), training all of its DiT or, with `lora`, low-rank
adapters on its frozen DiT (`salong.lora`). A LoRA run keeps the base DiT in
`RUN/prepared/dit.safetensors`, so it resumes and exports without the original file, and
its model file is the adapter.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from salong.audio import write_audio
from salong.autoencoder import Autoencoder, load_autoencoder
from salong.checkpoint import (config_from_dict, content_digest, load_checkpoint, load_state_strict,
                               write_atomic)
from salong.clap import Clap, load_clap
from salong.data import MAX_WINDOW_SECONDS
from salong.diffusion import rf_loss, shifted_time, v_loss
from salong.dit import CONTROL_EMBEDS, DiT, DiTConfig
from salong.errors import SalongError, short_reason
from salong.lora import LoraConfig, LoraDiT, adapted_layers, dit_digest, save_adapter
from salong.outputs import folder_lock
from salong.pipeline import Generator, GeneratorConfig, SamplingConfig, T5Spec
from salong.text_encoder import TextEncoder
from salong.textfile import parse_json
from salong.train.runs import TrainConfig
from salong.train.dit_data import (AUTOENCODER_FILE, BASE_FILE, CLAP_FILE, T5_FILE, CropLengths, LatentDataset,
                                   load_t5, preencode, prepare_models)
from salong.train.trainer import PREPARED_DIR, Part, Task



CROP_MODES = ("variable", "fixed")
CROP_LAWS = ("log", "balanced")
OBJECTIVES = ("v", "rf")
# DiTs this wide recompute each block in backward (gradient checkpointing): the sa2 and sao1
# presets, whose activations would not fit a GPU at useful batch sizes; smaller ones are faster without.
CHECKPOINTING_WIDTH = 1024


TRAIN_DEFAULTS = TrainConfig(steps=20000, batch_size=8, lr=1e-4, demo_every=2000)  # a new run's, unless given


@dataclass(frozen=True)
class DiTTaskConfig:
    """DiT, sampling defaults and training settings of a DiT run (saved in config.json)."""

    model: DiTConfig
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # "variable": each batch draws one crop length, log-uniform from `min_crop_seconds` to
    # `window_seconds`, so short and long requests both sample lengths the model was trained
    # on. "fixed": every crop is `window_seconds` long (the reference's whole-window training).
    crops: str = "variable"
    window_seconds: float = 0.0  # the longest crop; 0 = the model's whole window
    min_crop_seconds: float = 4.0
    # How variable crop lengths are drawn (`CropLengths`): "log" is log-uniform; "balanced"
    # spends the same compute on every octave of lengths, so long crops are rarer still.
    crop_law: str = "log"
    text_layer: int = -2  # the CLAP hidden states the DiT reads (`GeneratorConfig.text_layer`)
    canonical_text: bool = False  # words spelled alike whatever their case or place (`GeneratorConfig.canonical_text`)
    # Share of samples trained without each control (tempo, key, drums, form, chords; drawn apart), so the model
    # also works without it and guidance can amplify it. Samples without conditioning
    # (`cond_dropout`) lose their controls too.
    control_dropout: float = 0.2
    # Files whose metadata gives no tempo get one from librosa's beat tracker, with the
    # phase of its grid (`salong.evaluation.estimate_beat_grid`), when the dataset is encoded.
    estimate_bpm: bool = False
    # Training times: the noise-to-signal ratio of uniform t scaled by this (`shifted_time`);
    # 1 is the reference's t ~ U(0, 1), above 1 trains high noise more (docs/diffusion.md).
    timestep_shift: float = 1.0
    # share of samples trained unconditionally, for CFG (docs/diffusion.md, Classifier-free guidance)
    cond_dropout: float = 0.1
    # The loss covers real audio only, except for this share of samples whose padding counts
    # too: they teach the model the silence after seconds_total (stable-audio-tools'
    # mask_padding_dropout); with every loss masked it would never learn to stop.
    mask_padding_dropout: float = 0.2
    # What the DiT predicts: "v" (v-objective: salong's models, Stable Audio Open 1.0) or "rf"
    # (rectified flow: Stable Audio Open Small). A run started from a generator takes its.
    objective: str = "v"
    # Low-rank adapters on the frozen DiT of the generator the run starts from, instead of
    # all of its weights (`salong.lora`); None trains the whole DiT.
    lora: LoraConfig | None = None
    demo_cfg_scales: tuple[float, ...] = (1.0, 3.0, 7.0)
    demo_count: int = 2
    demo_steps: int = 50

    def __post_init__(self) -> None:
        if self.crops not in CROP_MODES:
            raise SalongError(f"crops must be one of {', '.join(CROP_MODES)}, got {self.crops!r}")
        if self.crop_law not in CROP_LAWS:
            raise SalongError(f"crop law must be one of {', '.join(CROP_LAWS)}, got {self.crop_law!r}")
        if not 0 <= self.window_seconds <= MAX_WINDOW_SECONDS:  # NaN too
            raise SalongError(f"window_seconds must be >= 0 (0 = the model's window) and at most "
                              f"{MAX_WINDOW_SECONDS}, got {self.window_seconds}")
        if not 0 < self.min_crop_seconds <= MAX_WINDOW_SECONDS:
            raise SalongError(f"min_crop_seconds must be > 0 and at most {MAX_WINDOW_SECONDS}, "
                              f"got {self.min_crop_seconds}")
        if isinstance(self.text_layer, bool) or not isinstance(self.text_layer, int) or self.text_layer >= 0:
            raise SalongError(f"text layer must be -1 (the CLAP's last) or lower, got {self.text_layer!r}")
        if not (math.isfinite(self.timestep_shift) and self.timestep_shift > 0):
            raise SalongError(f"timestep shift must be above 0 (1 = uniform t), got {self.timestep_shift}")
        if not 0 <= self.cond_dropout < 1:
            raise SalongError(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if not 0 <= self.control_dropout <= 1:
            raise SalongError(f"control dropout must be in [0, 1], got {self.control_dropout}")
        if not isinstance(self.canonical_text, bool):
            raise SalongError(f"canonical_text must be true or false, got {self.canonical_text!r}")
        if not 0 <= self.mask_padding_dropout <= 1:
            raise SalongError(f"mask_padding_dropout must be in [0, 1], got {self.mask_padding_dropout}")
        if self.objective not in OBJECTIVES:
            raise SalongError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")

    def crop_lengths(self, latent_rate: float) -> "CropLengths":
        """The crop lengths of this run, in latent frames (whole patches, at most the window)."""
        patch, window = self.model.patch_size, self.model.window
        longest = window
        if self.window_seconds:
            longest = math.ceil(self.window_seconds * latent_rate / patch) * patch
            if longest > window:
                raise SalongError(f"--window-seconds {self.window_seconds:g} is longer than the model's window "
                                  f"({window / latent_rate:.2f} s)")
        if self.crops == "fixed":
            return CropLengths(longest, longest, patch)
        shortest = min(longest, max(patch, math.ceil(self.min_crop_seconds * latent_rate / patch) * patch))
        return CropLengths(shortest, longest, patch, self.crop_law)


# --- the task ----------------------------------------------------------------------------


def generator_config_for(config: DiTTaskConfig, autoencoder: Autoencoder, text: Clap | TextEncoder) -> GeneratorConfig:
    """The config of the generator a run exports: its DiT, sampling and objective, with the
    run's autoencoder and text encoder (a CLAP, or a T5 `TextEncoder`)."""
    if isinstance(text, Clap):
        return GeneratorConfig(dit=config.model, autoencoder=autoencoder.config, clap=text.config,
                               sampling=config.sampling, objective=config.objective,
                               text_layer=config.text_layer, canonical_text=config.canonical_text)
    spec = T5Spec(config=json.loads(text.module.config.to_json_string(use_diff=False)), max_length=text.max_length)
    return GeneratorConfig(dit=config.model, autoencoder=autoencoder.config, t5=spec, sampling=config.sampling,
                           objective=config.objective)


def part_modules(config: DiTTaskConfig) -> dict[str, nn.Module]:
    """The module a run of `config` trains, by the part name its checkpoints use: the DiT,
    or the adapters of a LoRA run (with the DiT they wrap, whose weights they do not hold)."""
    dit = DiT(config.model)
    return {"dit": LoraDiT(dit, config.lora) if config.lora is not None else dit}


class DiTTask(Task):
    """v-objective or rectified-flow training of the DiT, or of LoRA adapters on a frozen one;
    demos and export go through the full generator (a LoRA run exports its adapter)."""

    kind = "dit"

    def __init__(self, config: DiTTaskConfig, autoencoder: Autoencoder, clap: Clap | TextEncoder,
                 demos: list[tuple[str, float]] | None = None, base: Mapping[str, torch.Tensor] | None = None,
                 facts: Mapping[str, Any] | None = None) -> None:
        """`clap` is the frozen text encoder (a CLAP, or a T5 `TextEncoder`); `base` the
        weights of the DiT a LoRA run adapts, and `facts` what its adapter file records
        besides (`load_base`)."""
        self.config = config
        self.dit = DiT(config.model, checkpointing=config.model.width >= CHECKPOINTING_WIDTH)
        self.lora: LoraDiT | None = None
        if config.lora is not None:
            if base is not None:
                load_state_strict(self.dit, base, source="the run's base DiT")
            self.lora = LoraDiT(self.dit, config.lora)  # freezes the DiT
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.text = clap.eval().requires_grad_(False) if isinstance(clap, Clap) else clap
        self.generator_config = generator_config_for(config, autoencoder, self.text)
        self.demos = list(demos or [])
        self.facts = dict(facts or {})
        self.device = torch.device("cpu")

    @property
    def clap(self) -> Clap | TextEncoder:  # the name older callers use
        return self.text

    def setup(self, device: torch.device) -> None:
        self.device = device
        self.autoencoder.to(device)  # used by demos only: training reads cached latents
        self.text.to(device)
        self.dit.to(device)  # the frozen base of a LoRA run too, which is no part's module

    def parts(self) -> list[Part]:
        return [Part("dit", self.lora if self.lora is not None else self.dit)]

    def collate(self, items: list[Any]) -> Any:
        return {key: torch.stack([torch.as_tensor(it[key]) for it in items]) for key in items[0]}

    def loss(self, part: str, batch: Any, modules: Mapping[str, nn.Module], step: int):
        x0 = batch["latents"]  # (B, 64, L)
        b = x0.shape[0]
        objective = self.config.objective
        t = shifted_time(torch.rand(b, device=x0.device), self.config.timestep_shift, objective)  # (B,)
        noise = torch.randn_like(x0)
        drop = torch.rand(b, device=x0.device) < self.config.cond_dropout  # (B,) whole conditioning dropped
        whole = torch.rand(b, device=x0.device) < self.config.mask_padding_dropout  # (B,) padding counts too
        mask = batch["mask"] | whole[:, None]  # (B, L)
        controls = {}
        if self.config.model.controls:  # drawn only for models with controls, so older runs resume as they were
            # drums, form and chords only for models with them, so the draws of models without stay as they were
            later = tuple(name for name in ("drums", "form", "chords") if name in self.config.model.controls)
            for name in ("beat", "key") + later:
                kept = torch.rand(b, device=x0.device) >= self.config.control_dropout  # (B,)
                value = batch[name]
                controls[name] = value * kept.view(-1, *([1] * (value.ndim - 1))).to(value.dtype)
        if self.lora is not None:  # the updates the adapter will have had after this one, for its file
            self.lora.updates.fill_(step + 1)
        loss_fn = v_loss if objective == "v" else rf_loss
        loss = loss_fn(modules["dit"], x0, t, noise, mask=mask, cond_tokens=batch["text"],
                       seconds_start=batch["seconds_start"], seconds_total=batch["seconds_total"],
                       cond_drop_mask=drop, **controls)
        return loss, {}

    def _generator(self, dit: nn.Module) -> Generator:
        return Generator(self.generator_config, dit, self.autoencoder, self.text, device=self.device)

    def demo(self, step: int, out_dir: Path, ema_modules: Mapping[str, nn.Module]) -> None:
        """Songs for the first captions at a few CFG scales, from the EMA weights."""
        generator = self._generator(ema_modules["dit"])
        for i, (caption, seconds) in enumerate(self.demos):
            seconds = min(seconds, generator.max_seconds)
            for scale in self.config.demo_cfg_scales:
                song = generator.generate(caption, seconds, steps=self.config.demo_steps, cfg_scale=scale, seed=i)
                write_audio(out_dir / f"step_{step:07d}_{i}_cfg{scale:g}.wav", song.audio, song.sample_rate,
                            tags={"title": f"{caption} (step {step}, CFG {scale:g})"})
        if self.demos:
            captions = "\n".join(f"{i}: {c}" for i, (c, _) in enumerate(self.demos)) + "\n"
            if not (out_dir / "captions.txt").exists():
                write_atomic(out_dir / "captions.txt", lambda tmp: tmp.write_text(captions), ".txt")

    def export(self, path: Path, ema_modules: Mapping[str, nn.Module]) -> Path:
        """The generator (the EMA DiT with the run's frozen models), or a LoRA run's adapter file:
        A and B, bound to the base DiT's weights (`dit_digest`), with rank, alpha and targets,
        and as facts the base file's sha256, the data's captions and the updates."""
        module = ema_modules["dit"]
        if self.lora is None:
            return self._generator(module).save(path)
        return save_adapter(path, module.adapter, dit_digest(self.dit), **self.facts, updates=int(module.updates))

    def trainable(self) -> str:
        """`training N of M DiT parameters` for the start of a run."""
        trained = sum(p.numel() for p in self.parts()[0].module.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.dit.parameters()) + (trained if self.lora is not None else 0)
        what = "" if self.lora is None else (f" (LoRA rank {self.config.lora.rank}, alpha {self.config.lora.alpha:g}, "
                                             f"on {', '.join(self.config.lora.targets)})")
        return f"training {trained:,} of {total:,} DiT parameters{what}"


def init_state(dit: DiT, initial: DiT) -> dict[str, torch.Tensor]:
    """The state a run's DiT starts from: the initial model's tensors, plus the run's own
    zero-initialised control embeddings where the initial model has none, so the first
    step predicts exactly what the initial model does."""
    state = dict(initial.state_dict())
    for name, tensor in dit.state_dict().items():
        if name.split(".")[0] in CONTROL_EMBEDS and name not in state:
            state[name] = tensor
    return state


def load_frozen(run_dir: Path) -> tuple[Autoencoder, Clap | TextEncoder]:
    """The run's own copies of the autoencoder and text encoder (a CLAP, or a T5)."""
    folder = run_dir / PREPARED_DIR
    autoencoder, _ = load_autoencoder(folder / AUTOENCODER_FILE)
    if (folder / T5_FILE).exists():
        return autoencoder, load_t5(folder / T5_FILE)
    return autoencoder, load_clap(folder / CLAP_FILE)


def load_base(run_dir: Path, model: DiTConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A LoRA run's base DiT weights (`RUN/prepared/dit.safetensors`, checked against the
    run's DiT config) and what its adapter file records of the run: the base file's name and
    sha256, and the captions and files of its data."""
    path = run_dir / PREPARED_DIR / BASE_FILE
    if not path.is_file():
        raise SalongError(f"{str(path)!r} is missing, so this LoRA run has no base DiT; start a new run with "
                          "--init MODEL --lora RANK")
    ckpt = load_checkpoint(path, "dit")
    if config_from_dict(DiTConfig, ckpt.config) != model:
        raise SalongError(f"{str(path)!r} holds another DiT than this run trains adapters for; start a new run")
    facts: dict[str, Any] = {k: ckpt.metadata.get(k, "") for k in ("base_model", "base_sha256")}
    index = run_dir / PREPARED_DIR / "cache" / "index.json"
    if index.is_file():
        items = json.loads(index.read_text())["items"]
        facts.update(captions=sum(len(it["captions"]) for it in items), files=len(items))
    return dict(ckpt.tensors), facts


def task_for_run(run_dir: Path, config: DiTTaskConfig) -> DiTTask:
    """The task of a run folder, with its frozen models (and a LoRA run's base), for export."""
    ae, text = load_frozen(run_dir)
    base, facts = load_base(run_dir, config.model) if config.lora is not None else (None, None)
    return DiTTask(config, ae, text, base=base, facts=facts)


def load_init(path: str | Path, text_encoder: str | Path | None = None) -> Generator:
    """The generator a run starts from: a salong generator file (CLAP or T5), or a Stable
    Audio Open folder with its T5 (`text_encoder`, or found beside it)."""
    path = Path(path)
    if path.is_dir():
        from salong.sao import load_folder

        return load_folder(path, text_encoder)
    if not path.exists():
        raise SalongError(f"--init {str(path)!r} not found; give a generator file or a Stable Audio Open folder")
    return Generator.load(path)


def init_config(path: str | Path, text_encoder: str | Path | None = None) -> GeneratorConfig:
    """The config of what `load_init` loads, read without its weights."""
    from salong.pipeline import generator_config

    path = Path(path)
    if not path.is_dir():
        if not path.exists():
            raise SalongError(f"--init {str(path)!r} not found; give a generator file or a Stable Audio Open folder")
        return generator_config(path)
    from salong.sao import find_text_encoder, read_config

    sao = read_config(path)
    encoder, _ = find_text_encoder(path, sao, text_encoder)
    config = encoder / "config.json"
    try:
        t5 = parse_json(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise SalongError(f"{str(config)!r} is not readable JSON ({short_reason(exc)})") from None
    return sao.generator_config(t5)


def _prepare(run_dir: Path, data, train_config, task_config: DiTTaskConfig, autoencoder, text_encoder, init,
             progress) -> tuple[Autoencoder, Clap | TextEncoder, list[dict[str, Any]], Path, Generator | None]:
    """The run's frozen models (copied into RUN/prepared/), its encoded dataset and the
    generator it starts from (`init`)."""
    from salong.distributed import init_distributed, wants_cuda

    initial = None
    if init is not None:
        initial = load_init(init, text_encoder if Path(init).is_dir() else None)
        if Path(init).is_dir():
            text_encoder = None  # the folder's T5, now part of `initial`
        if initial.config.objective != task_config.objective:
            raise SalongError(f"--init {init} was trained with the {initial.config.objective} objective, this run "
                              f"with {task_config.objective}; start the run with the file's (objective="
                              f"{initial.config.objective!r})")
        if task_config.lora is not None and initial.dit.config != task_config.model:
            raise SalongError(f"--lora trains adapters on the DiT of --init {init} as it is; drop --controls and "
                              "--preset, which would change it")
        if task_config.lora is not None:
            adapted_layers(initial.dit, task_config.lora)  # targets it lacks, or a rank too large, before any work
    elif task_config.lora is not None and not (run_dir / PREPARED_DIR / BASE_FILE).exists():
        raise SalongError("--lora trains adapters on a generator's DiT; give the generator with --init MODEL")
    d = init_distributed(wants_cuda(train_config.device))
    if d.main:
        prepare_models(run_dir, autoencoder, text_encoder, initial, lora=task_config.lora is not None)
    d.barrier()
    ae, text = load_frozen(run_dir)
    try:
        generator_config_for(task_config, ae, text)
    except SalongError as exc:
        raise SalongError(f"the DiT does not fit the run's autoencoder or text encoder: {exc}") from None
    text_file = T5_FILE if isinstance(text, TextEncoder) else CLAP_FILE
    digest = hashlib.sha256((content_digest(run_dir / PREPARED_DIR / AUTOENCODER_FILE)
                             + content_digest(run_dir / PREPARED_DIR / text_file)).encode()).hexdigest()
    cache = run_dir / PREPARED_DIR / "cache"
    if task_config.estimate_bpm:
        from salong.evaluation import _librosa

        _librosa()  # a missing librosa is named before minutes of encoding
    items = preencode(data, cache, ae, text, digest, d, progress, text_layer=task_config.text_layer,
                      canonical_text=task_config.canonical_text, estimate_bpm=task_config.estimate_bpm)
    return ae, text, items, cache, initial


def train_dit(
    data: str | Path,
    run_dir: str | Path,
    train_config,
    task_config: DiTTaskConfig,
    autoencoder: str | Path | None = None,
    text_encoder: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    progress: Callable[[int, int], None] | None = None,
    init: str | Path | None = None,
    compile: bool = False,
):
    """Prepare (once) and train a DiT run; returns the trainer's result.

    `init` starts a new run from a generator file or Stable Audio Open folder: its DiT's
    weights (fresh optimiser; the run's DiT config and objective must be the file's), and
    its autoencoder and text encoder unless given (a T5 stays). With `task_config.lora` the
    DiT stays frozen and adapters train on it. `compile` runs the autoencoder's Snake through
    `torch.compile` while the dataset is encoded (`salong.autoencoder.compile_snake`): about
    1.5x faster on CPU."""
    from salong.distributed import process_group, wants_cuda
    from salong.train.trainer import check_run_dir

    if compile:
        from salong.autoencoder import compile_snake

        compile_snake()
    run_dir = Path(run_dir)
    check_run_dir(run_dir, resume)  # before anything is prepared; the trainer checks again
    created = not run_dir.exists()
    if created:
        if not run_dir.parent.is_dir():
            raise SalongError(f"folder {str(run_dir.parent)!r} does not exist; create it first")
        run_dir.mkdir(exist_ok=True)
    with contextlib.ExitStack() as held:
        # a second run in this folder is refused now, not after minutes of preparing the same files
        if held.enter_context(process_group(wants_cuda(train_config.device))).main:
            held.enter_context(folder_lock(run_dir, "a training run"))
        return _prepare_and_train(run_dir, created, data, train_config, task_config, autoencoder, text_encoder,
                                  resume, quiet, progress, init)


def _prepare_and_train(run_dir: Path, created: bool, data, train_config, task_config: DiTTaskConfig, autoencoder,
                       text_encoder, resume: bool, quiet: bool, progress, init):
    """`train_dit` once the run folder is there and locked."""
    from salong.distributed import init_distributed, wants_cuda
    from salong.progress import CONSOLE
    from salong.train.runtime import seed_everything
    from salong.train.trainer import train

    try:
        ae, text, items, cache, initial = _prepare(run_dir, data, train_config, task_config, autoencoder,
                                                   text_encoder, init, progress)
        base, facts = load_base(run_dir, task_config.model) if task_config.lora is not None else (None, None)
    except SalongError as exc:
        # A folder this call made goes again; an existing one keeps what earlier runs prepared.
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        kept = str(run_dir / PREPARED_DIR)
        raise SalongError(f"{exc} ({kept!r} keeps what was prepared; a retry reuses it)") from None
    d = init_distributed(wants_cuda(train_config.device))
    dataset = LatentDataset(cache, items, task_config.crop_lengths(ae.config.latent_rate), ae.config.latent_rate)
    demos = [(it["caption"], it["duration"]) for it in items[: task_config.demo_count]]
    seed_everything(train_config.seed)  # the initial weights are part of the run's reproducibility
    task = DiTTask(task_config, ae, text, demos, base=base, facts=facts)
    if initial is not None and task_config.lora is None:
        load_state_strict(task.dit, init_state(task.dit, initial.dit), source=f"{str(init)!r} (dit)")
    del initial
    if d.main and not quiet:
        CONSOLE.print(task.trainable(), markup=False, highlight=False, soft_wrap=True)
    try:
        return train(task, dataset, train_config, run_dir, resume=resume, task_config=task_config, quiet=quiet,
                     locked=True)
    finally:
        if d.owns_group:
            torch.distributed.destroy_process_group()
