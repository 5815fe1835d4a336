"""The `salong` command line: each command parses, calls a library function, reports.

Results go to stdout (one line per written file, for scripts); progress bars, warnings
and errors go to stderr. A user-facing failure is one line and a non-zero exit status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import sys
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import salong
from salong.errors import SalongError

app = typer.Typer(
    name="salong",
    help="Text-to-music generation with latent diffusion (Stable Audio 2 style), offline on your machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        print(f"salong {salong.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", callback=_version, is_eager=True),
) -> None:
    """salong turns a text prompt and a length in seconds into a 44.1 kHz stereo song."""


# --- shared helpers ------------------------------------------------------------------


@contextlib.contextmanager
def progress_bar(description: str, enabled: bool = True, unit: str | None = None) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr, driven by a `(done, total)` callback; `unit` adds a rate.

    Only on a terminal: logs of scripted runs stay free of bar remnants."""
    if not (enabled and err.is_terminal):
        yield lambda done, total: None
        return
    columns = [TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if unit is not None:
        columns.append(TextColumn("{task.fields[rate]}"))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(description, total=None, rate="")

        def update(done: int, total: int) -> None:
            speed = bar.tasks[0].speed
            bar.update(task, completed=done, total=total, rate=f"{speed:.2f} {unit}/s" if speed else "")

        yield update


def resolve_model(path: Optional[Path], kind: str) -> Path:
    """The model file to use: the one given, or the bundled one for `kind` (generator or autoencoder)."""
    from salong.bundled import default_autoencoder, default_generator

    if path is not None:
        return path
    return default_generator() if kind == "generator" else default_autoencoder()


def ensure_folder(folder: Path) -> Path:
    """Create an output folder whose parent exists; a missing parent is the user's to make."""
    if not folder.exists():
        if not folder.parent.is_dir():
            raise SalongError(f"output folder {str(folder.parent)!r} does not exist; create it first")
        folder.mkdir()
    return folder


def output_for(source: Path, out: Optional[Path], many: bool, suffix: str) -> Path:
    """Where one input's result goes: `out` itself for a single input, else inside folder `out`."""
    name = source.name.split(".")[0] + suffix
    if out is None:
        return Path(name)
    if many or out.is_dir():
        return ensure_folder(out) / name
    return out


def each_input(paths: List[Path], run: Callable[[Path], Path]) -> None:
    """Process inputs one by one; a failing input is reported and the rest still run."""
    failed = 0
    for path in paths:
        try:
            print(run(path), flush=True)
        except SalongError as exc:
            failed += 1
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
    if failed:
        raise SalongError(f"{failed} of {len(paths)} inputs failed (see above)")


# --- commands --------------------------------------------------------------------------


@app.command()
def synth(
    count: int = typer.Argument(..., help="How many pieces to write."),
    out_dir: Path = typer.Argument(..., help="Folder for the corpus (audio/ and metadata.jsonl)."),
    seed: int = typer.Option(0, help="Seed of the corpus; the same seed writes the same files."),
    min_seconds: float = typer.Option(5.0, help="Shortest piece, seconds."),
    max_seconds: float = typer.Option(30.0, help="Longest piece, seconds (at most 285)."),
    fmt: str = typer.Option("wav", "--format", help="Audio format: wav or flac."),
    durations: str = typer.Option("uniform", help="Length law between the bounds: uniform, or log (uniform in log-seconds: many short pieces, some long)."),
    jobs: int = typer.Option(1, help="Worker processes; the corpus is the same for any number."),
) -> None:
    """Write a procedural music corpus with exact captions (the training data format)."""
    from salong.synth import write_corpus

    with progress_bar("synthesising") as update:
        path = write_corpus(count, out_dir, seed=seed, min_seconds=min_seconds, max_seconds=max_seconds, fmt=fmt,
                            durations=durations, jobs=jobs, progress=update)
    print(path)


@app.command()
def encode(
    inputs: List[Path] = typer.Argument(..., help="Audio files (wav, flac, ogg, mp3, ...)."),
    out: Optional[Path] = typer.Option(
        None, "-o", "--out", help="Latents file for one input, or a folder for several. \\[default: NAME.latents.safetensors here]"
    ),
    model: Optional[Path] = typer.Option(None, help="Autoencoder or generator file (its autoencoder is used). \\[default: the bundled model's]"),
    mean: bool = typer.Option(False, "--mean", help="Deterministic latents (the posterior mean) instead of a sample."),
    progress: bool = typer.Option(True, help="Show progress bars on stderr."),
) -> None:
    """Encode audio to latents (.safetensors) with the autoencoder."""
    from salong.autoencoder import load_autoencoder_from
    from salong.latents import encode_file, save_latents

    ae, _ = load_autoencoder_from(resolve_model(model, "autoencoder"))

    def run(path: Path) -> Path:
        target = output_for(path, out, len(inputs) > 1, ".latents.safetensors")
        with progress_bar(f"encoding {path.name}", progress) as update:
            item = encode_file(ae, path, sample=not mean, progress=update)
        return save_latents(target, item)

    each_input(inputs, run)


@app.command()
def decode(
    inputs: List[Path] = typer.Argument(..., help="Latents files written by `salong encode`."),
    out: Optional[Path] = typer.Option(
        None, "-o", "--out", help="Audio file for one input, or a folder for several. \\[default: NAME.wav here]"
    ),
    model: Optional[Path] = typer.Option(None, help="Autoencoder or generator file (its autoencoder is used). \\[default: the bundled model's]"),
    fmt: Optional[str] = typer.Option(None, "--format", help="wav, flac, ogg or mp3. \\[default: from the extension]"),
    progress: bool = typer.Option(True, help="Show progress bars on stderr."),
) -> None:
    """Decode latents back to audio with the original length and channel count."""
    from salong.audio import output_format, write_audio
    from salong.autoencoder import load_autoencoder_from
    from salong.latents import decode_latents, load_latents

    suffix = "." + (fmt or "wav")
    if out is not None and not out.is_dir() and len(inputs) == 1:
        output_format(out, fmt)  # reject a bad extension before decoding for minutes
    elif fmt is not None:
        output_format(Path("x" + suffix))
    ae, _ = load_autoencoder_from(resolve_model(model, "autoencoder"))

    def run(path: Path) -> Path:
        target = output_for(path, out, len(inputs) > 1, suffix)
        item = load_latents(path)
        with progress_bar(f"decoding {path.name}", progress) as update:
            audio = decode_latents(ae, item, progress=update)
        return write_audio(target, audio, item.sample_rate, fmt)

    each_input(inputs, run)


@app.command()
def info(
    path: Optional[Path] = typer.Argument(None, help="A model checkpoint or latents file. \\[default: the bundled model]"),
) -> None:
    """Show what a checkpoint or latents file holds; with no file, describe the bundled model."""
    from salong.describe import describe_bundled, describe_file

    print(describe_file(path) if path is not None else describe_bundled())


@app.command()
def generate(
    prompt: Optional[str] = typer.Argument(None, help="What the music should be, e.g. \"calm piano at 70 BPM in C major\"."),
    seconds: float = typer.Option(30.0, "--seconds", "-s", help="Length of the song in seconds."),
    out: Optional[Path] = typer.Option(
        None, "-o", "--out", help="Output file for one song, or folder for several. \\[default: the --name template here]"),
    steps: Optional[int] = typer.Option(None, help="Sampler steps. \\[default: the model's, 100 for paper settings]"),
    cfg_scale: Optional[float] = typer.Option(None, help="Classifier-free guidance scale, 1 = none. \\[default: the model's, 7]"),
    seed: Optional[int] = typer.Option(None, help="Seed; the same seed and settings give the same song. \\[default: random]"),
    negative: Optional[str] = typer.Option(None, "--negative", help="Negative prompt: what to steer away from."),
    sampler: Optional[str] = typer.Option(None, help="dpmpp-2m, dpmpp-2m-sde or euler. \\[default: the model's, dpmpp-2m]"),
    model: Optional[Path] = typer.Option(None, help="Generator file. \\[default: the bundled model; see `salong info`]"),
    fmt: Optional[str] = typer.Option(None, "--format", help="wav, flac, ogg or mp3. \\[default: from -o, else wav]"),
    prompts: Optional[Path] = typer.Option(
        None, help="Batch file: a prompt per line, or JSON lines with prompt, seconds, seed, output, negative."),
    n: int = typer.Option(1, "-n", help="Variations per prompt (consecutive seeds)."),
    name: str = typer.Option("{slug}_{seed}.{ext}", help="Output name template: {slug} {seed} {index} {variation} {seconds} {ext}."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Leave songs whose output file exists."),
    full_window: bool = typer.Option(False, "--full-window", help="Sample the model's whole window, then cut."),
    json_out: bool = typer.Option(False, "--json", help="One JSON record per song on stdout."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    progress: bool = typer.Option(True, help="Show a progress bar on stderr."),
) -> None:
    """Generate songs from text prompts. Prints each song's path and seed (or --json records)."""
    import json
    import time

    from salong.audio import output_format, write_audio
    from salong.batch import BadLine, plan_jobs, read_prompts
    from salong.checkpoint import check_writable
    from salong.pipeline import Generator

    if (prompt is None) == (prompts is None):
        raise SalongError("give a PROMPT or --prompts FILE (one of the two)")
    ext = output_format(out if out is not None and out.suffix and fmt is None else Path("x.wav"), fmt)
    entries = read_prompts(prompts) if prompts is not None else [{"prompt": prompt, "source": "prompt"}]
    jobs = plan_jobs(entries, seconds, n, seed, out, name, ext, negative)
    generator = Generator.load(resolve_model(model, "generator"), device=_device(device))
    steps, cfg_scale, sampler = generator.settings(steps, cfg_scale, sampler)
    if out is not None and len(jobs) > 1:
        ensure_folder(out)
    for i, job in enumerate(jobs):  # a bad line fails alone, before minutes of sampling
        if not isinstance(job, BadLine):
            try:
                output_format(job.output, fmt)
                check_writable(job.output)
                generator.check_seconds(job.seconds)
            except SalongError as exc:
                jobs[i] = BadLine(job.source, str(exc))
    if len(jobs) == 1 and isinstance(jobs[0], BadLine):
        raise SalongError(jobs[0].message if jobs[0].source == "prompt" else f"{jobs[0].source}: {jobs[0].message}")

    failed = 0
    for job in jobs:
        if isinstance(job, BadLine):
            failed += 1
            err.print(f"[red]error:[/red] {job.source}: {job.message}", highlight=False, soft_wrap=True)
            continue
        if skip_existing and job.output.exists():
            err.print(f"skipped {job.output} (exists)", highlight=False)
            continue
        start = time.perf_counter()
        try:
            with progress_bar(job.prompt[:30], progress, unit="steps") as update:
                song = generator.generate(job.prompt, job.seconds, steps=steps, cfg_scale=cfg_scale, seed=job.seed,
                                          negative_prompt=job.negative_prompt, sampler=sampler,
                                          full_window=full_window, progress=update)
            path = write_audio(job.output, song.audio, song.sample_rate, fmt)
        except SalongError as exc:
            if len(jobs) == 1:
                raise
            failed += 1
            err.print(f"[red]error:[/red] {job.source}: {exc}", highlight=False, soft_wrap=True)
            continue
        if json_out:
            record = dict(path=str(path), prompt=song.prompt, seconds=song.seconds, seed=song.seed, steps=song.steps,
                          cfg=song.cfg_scale, sampler=song.sampler, negative=song.negative_prompt,
                          model=str(resolve_model(model, "generator")), elapsed=round(time.perf_counter() - start, 3))
            print(json.dumps(record), flush=True)
        else:
            print(f"{path}\t{song.seed}", flush=True)
    if failed:
        raise SalongError(f"{failed} of {len(jobs)} songs failed (see above)")


def _device(name: str) -> str:
    import torch

    if name not in ("auto", "cpu", "cuda"):
        raise SalongError(f"unknown device {name!r}; use auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise SalongError("--device cuda, but no CUDA GPU is visible; use --device cpu")
    return "cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name)


# --- training --------------------------------------------------------------------------

train_app = typer.Typer(
    help="Train the autoencoder, CLAP or DiT; resume, and export a run's model.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(train_app, name="train")


# Options every `salong train` command takes (None: not given, so a resumed run keeps its own).
_RESUME = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint.")
_STEPS = typer.Option(None, help="Total optimiser updates. \\[default: 20000]")
_SEED = typer.Option(None, help="Seed of data order, random crops, noise and initialisation. \\[default: 0]")
_CHECKPOINT_EVERY = typer.Option(None, help="Updates between checkpoints. \\[default: 500]")
_LOG_EVERY = typer.Option(None, help="Updates between metrics lines. \\[default: 10]")
_PRECISION = typer.Option(None, help="auto, fp32, bf16 or fp16. \\[default: auto]")
_DEVICE = typer.Option(None, help="auto, cpu or cuda. \\[default: auto]")
_NUM_WORKERS = typer.Option(None, help="DataLoader worker processes. \\[default: 0]")
_QUIET = typer.Option(False, "--quiet", help="No progress bar.")


def _train_options(
    steps: Optional[int], batch_size: Optional[int], lr: Optional[float], seed: Optional[int],
    checkpoint_every: Optional[int], log_every: Optional[int], demo_every: Optional[int], eval_every: Optional[int],
    precision: Optional[str], device: Optional[str], num_workers: Optional[int],
) -> dict:
    return dict(steps=steps, batch_size=batch_size, lr=lr, seed=seed, checkpoint_every=checkpoint_every,
                log_every=log_every, demo_every=demo_every, eval_every=eval_every, precision=precision,
                device=device, num_workers=num_workers)


def _no_init_with_resume(init: Path, resume: bool) -> None:
    if resume:
        raise SalongError(f"--init {init} starts a new run and --resume continues one; give only one of them")


def _init_model(config, preset_config, preset: Optional[str], init: Path):
    """The model config of a run started with --init: the file's; a --preset must agree with it."""
    if preset_config is not None and preset_config != config:
        raise SalongError(f"--init {init} holds a model of another size than --preset {preset}; drop --preset")
    return config


def _report_model(result) -> None:
    """The exported model's path on stdout, once (rank 0 under torchrun)."""
    if os.environ.get("RANK", "0") == "0":
        print(result.model)


@train_app.command("autoencoder")
def train_autoencoder_cmd(
    data: Path = typer.Option(..., help="Folder of audio (recursive), e.g. one written by `salong synth`."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder: config, metrics, checkpoints, demos, model."),
    preset: Optional[str] = typer.Option(None, help="Model size: tiny, compact, small or sa2 (paper scale). \\[default: small]"),
    init: Optional[Path] = typer.Option(None, help="Start a new run from this model file's autoencoder (an autoencoder or generator file); fresh optimiser."),
    discriminator: Optional[str] = typer.Option(None, help="Critic size: tiny, compact or sa2. \\[default: the preset's]"),
    resume: bool = _RESUME,
    steps: Optional[int] = _STEPS,
    batch_size: Optional[int] = typer.Option(None, help="Clips per update per process. \\[default: 8]"),
    lr: Optional[float] = typer.Option(None, help="Generator learning rate. \\[default: 1.5e-4]"),
    window_seconds: Optional[float] = typer.Option(None, help="Training crop length. \\[default: 1.5]"),
    adversarial_start: Optional[int] = typer.Option(None, help="Updates before the GAN losses join. \\[default: 0]"),
    seed: Optional[int] = _SEED,
    checkpoint_every: Optional[int] = _CHECKPOINT_EVERY,
    log_every: Optional[int] = _LOG_EVERY,
    demo_every: Optional[int] = typer.Option(None, help="Updates between demo reconstructions, 0 = never. \\[default: 1000]"),
    eval_every: Optional[int] = typer.Option(None, help="Updates between STFT/SI-SDR evaluations, 0 = never. \\[default: 1000]"),
    precision: Optional[str] = _PRECISION,
    device: Optional[str] = _DEVICE,
    num_workers: Optional[int] = _NUM_WORKERS,
    quiet: bool = _QUIET,
) -> None:
    """Train the Oobleck autoencoder (STFT + adversarial + KL losses). Works under torchrun."""
    from salong.audio_losses import DISCRIMINATOR_PRESETS
    from salong.autoencoder import PRESETS
    from salong.train import TrainConfig
    from salong.train.autoencoder import AutoencoderTaskConfig, train_autoencoder
    from salong.train.runs import run_settings

    if preset is not None and preset not in PRESETS:
        raise SalongError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if discriminator is not None and discriminator not in DISCRIMINATOR_PRESETS:
        raise SalongError(f"unknown --discriminator {discriminator!r}; choose one of: {', '.join(DISCRIMINATOR_PRESETS)}")
    model = PRESETS[preset] if preset else None
    if init is not None:
        from salong.train.autoencoder import init_weights

        _no_init_with_resume(init, resume)
        model = _init_model(init_weights(init).config, model, preset, init)
    critic = discriminator or (preset if preset in ("tiny", "compact") else "sa2" if preset else None)
    train_config, task_config = run_settings(
        out, resume, "autoencoder", AutoencoderTaskConfig,
        TrainConfig(steps=20000, batch_size=8, lr=1.5e-4, betas=(0.8, 0.99), demo_every=1000, eval_every=1000),
        AutoencoderTaskConfig(model=PRESETS["small"]),
        _train_options(steps, batch_size, lr, seed, checkpoint_every, log_every, demo_every, eval_every,
                       precision, device, num_workers),
        dict(model=model, window_seconds=window_seconds, adversarial_start=adversarial_start,
             # each preset has a critic of its own size; the paper's for the larger ones
             discriminator=DISCRIMINATOR_PRESETS[critic] if critic else None),
    )
    _report_model(train_autoencoder(data, out, train_config, task_config, resume=resume, quiet=quiet, init=init))


@train_app.command("clap")
def train_clap_cmd(
    data: Path = typer.Option(..., help="Folder of captioned audio (metadata.jsonl or .txt sidecars)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder: tokenizer, config, metrics, checkpoints, model."),
    preset: Optional[str] = typer.Option(None, help="Model size: tiny, small or laion-unfused. \\[default: small]"),
    init: Optional[Path] = typer.Option(None, help="Start a new run from this CLAP model file (weights and tokenizer); fresh optimiser."),
    resume: bool = _RESUME,
    steps: Optional[int] = _STEPS,
    batch_size: Optional[int] = typer.Option(None, help="Caption-audio pairs per update per process: the in-batch negatives (>= 2). \\[default: 32]"),
    lr: Optional[float] = typer.Option(None, help="Learning rate. \\[default: 5e-4]"),
    clip_seconds: Optional[float] = typer.Option(None, help="Audio window the audio tower sees. \\[default: the preset's]"),
    vocab_size: Optional[int] = typer.Option(None, help="BPE vocabulary trained on the captions. \\[default: the model's]"),
    eval_crops: Optional[int] = typer.Option(None, help="Windows averaged per held-out recording. \\[default: 3]"),
    validation_fraction: Optional[float] = typer.Option(None, help="Share of files held out for retrieval recall. \\[default: 0.1]"),
    seed: Optional[int] = _SEED,
    checkpoint_every: Optional[int] = _CHECKPOINT_EVERY,
    log_every: Optional[int] = _LOG_EVERY,
    eval_every: Optional[int] = typer.Option(None, help="Updates between held-out recall@1/@5 evaluations, 0 = never. \\[default: 500]"),
    precision: Optional[str] = _PRECISION,
    device: Optional[str] = _DEVICE,
    num_workers: Optional[int] = _NUM_WORKERS,
    quiet: bool = _QUIET,
) -> None:
    """Train CLAP (symmetric contrastive loss) and its tokenizer; reports held-out retrieval recall."""
    from salong.clap import PRESETS
    from salong.train import TrainConfig
    from salong.train.clap import ClapTaskConfig, train_clap
    from salong.train.runs import run_settings

    if preset is not None and preset not in PRESETS:
        raise SalongError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    model = PRESETS[preset] if preset else None
    if init is not None:
        from salong.clap import load_clap

        _no_init_with_resume(init, resume)
        model = _init_model(load_clap(init).config, model, preset, init)
    train_config, task_config = run_settings(
        out, resume, "clap", ClapTaskConfig,
        TrainConfig(steps=20000, batch_size=32, lr=5e-4, eval_every=500),
        ClapTaskConfig(model=PRESETS["small"]),
        _train_options(steps, batch_size, lr, seed, checkpoint_every, log_every, None, eval_every,
                       precision, device, num_workers),
        dict(model=model, vocab_size=vocab_size, validation_fraction=validation_fraction,
             eval_crops=eval_crops),
    )
    if clip_seconds is not None:  # a model setting: a changed value on --resume is refused by the trainer
        from dataclasses import replace

        try:
            task_config = replace(task_config, model=replace(task_config.model, clip_seconds=clip_seconds))
        except ValueError as exc:
            raise SalongError(str(exc)) from None
    _report_model(train_clap(data, out, train_config, task_config, resume=resume, quiet=quiet, init=init))


@train_app.command("dit")
def train_dit_cmd(
    data: Path = typer.Option(..., help="Folder of captioned audio (metadata.jsonl or .txt sidecars)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder: prepared latents, config, metrics, checkpoints, demos, model."),
    autoencoder: Optional[Path] = typer.Option(None, help="Frozen autoencoder (from `salong train autoencoder`); copied into the run."),
    text_encoder: Optional[Path] = typer.Option(None, help="Frozen CLAP (from `salong train clap`); copied into the run."),
    preset: Optional[str] = typer.Option(None, help="DiT size: tiny, small, compact (the bundled model's), sa2 (paper) or sao1. \\[default: small]"),
    init: Optional[Path] = typer.Option(None, help="Start a new run from this generator file: its DiT's weights (fresh optimiser), and its autoencoder and CLAP unless given."),
    resume: bool = _RESUME,
    steps: Optional[int] = _STEPS,
    batch_size: Optional[int] = typer.Option(None, help="Crops per update per process. \\[default: 8]"),
    lr: Optional[float] = typer.Option(None, help="Learning rate. \\[default: 1e-4]"),
    crops: Optional[str] = typer.Option(None, help="variable: each batch draws one crop length, log-uniform from --min-crop-seconds to --window-seconds; fixed: every crop is --window-seconds long. \\[default: variable]"),
    window_seconds: Optional[float] = typer.Option(None, help="Longest training crop, seconds (0 = the model's window). \\[default: 0]"),
    min_crop_seconds: Optional[float] = typer.Option(None, help="Shortest crop with --crops variable, seconds. \\[default: 4]"),
    cond_dropout: Optional[float] = typer.Option(None, help="Share of unconditional samples (for CFG). \\[default: 0.1]"),
    seed: Optional[int] = _SEED,
    checkpoint_every: Optional[int] = _CHECKPOINT_EVERY,
    log_every: Optional[int] = _LOG_EVERY,
    demo_every: Optional[int] = typer.Option(None, help="Updates between demo songs at CFG 1, 3, 7; 0 = never. \\[default: 2000]"),
    precision: Optional[str] = _PRECISION,
    device: Optional[str] = _DEVICE,
    num_workers: Optional[int] = _NUM_WORKERS,
    quiet: bool = _QUIET,
) -> None:
    """Train the diffusion transformer on pre-encoded latents; exports a complete generator."""
    from salong.dit import PRESETS
    from salong.train import TrainConfig
    from salong.train.dit import DiTTaskConfig, train_dit
    from salong.train.runs import run_settings

    if preset is not None and preset not in PRESETS:
        raise SalongError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    model = PRESETS[preset] if preset else None
    if init is not None:
        from salong.pipeline import generator_config

        _no_init_with_resume(init, resume)
        model = _init_model(generator_config(init).dit, model, preset, init)
    train_config, task_config = run_settings(
        out, resume, "dit", DiTTaskConfig,
        TrainConfig(steps=20000, batch_size=8, lr=1e-4, demo_every=2000),
        DiTTaskConfig(model=PRESETS["small"]),
        _train_options(steps, batch_size, lr, seed, checkpoint_every, log_every, demo_every, None,
                       precision, device, num_workers),
        dict(model=model, cond_dropout=cond_dropout, crops=crops, window_seconds=window_seconds,
             min_crop_seconds=min_crop_seconds),
    )
    with progress_bar("encoding the dataset", not quiet) as update:
        result = train_dit(data, out, train_config, task_config, autoencoder, text_encoder, resume=resume, quiet=quiet,
                           progress=update, init=init)
    _report_model(result)


@train_app.command("export")
def train_export_cmd(
    run: Path = typer.Argument(..., help="A run folder, or one of its checkpoints/step_*.safetensors files."),
    out: Path = typer.Option(..., "-o", "--out", help="Model file to write (.safetensors)."),
    half: bool = typer.Option(False, "--half", help="Store weight matrices in float16 (half the size; computation stays float32)."),
    steps: Optional[int] = typer.Option(None, help="Generators: default sampler steps stored in the file. \\[default: the run's]"),
    cfg_scale: Optional[float] = typer.Option(None, help="Generators: default CFG scale stored in the file. \\[default: the run's]"),
    sampler: Optional[str] = typer.Option(None, help="Generators: default sampler stored in the file. \\[default: the run's]"),
) -> None:
    """Write a run's EMA weights as a model file that --model accepts."""
    from salong.train import export_run
    from salong.train.tasks import task_for_run

    run_dir = run if run.is_dir() else run.parent.parent
    task = task_for_run(run_dir)
    sampling = {k: v for k, v in dict(steps=steps, cfg_scale=cfg_scale, sampler=sampler).items() if v is not None}
    if sampling and task.kind != "dit":
        raise SalongError(f"--steps, --cfg-scale and --sampler are sampling defaults of generators; {run} is a {task.kind} run")
    if sampling:
        from salong.pipeline import SamplingConfig

        try:  # the same checks generation applies, before any file is written
            SamplingConfig(**{**dataclasses.asdict(task.config.sampling), **sampling})
        except ValueError as exc:
            raise SalongError(f"bad sampling default: {exc}") from None
    path = export_run(run, out, task)
    if half or sampling:
        from salong.checkpoint import store_half

        store_half(path, {"sampling": sampling} if sampling else None, half=half)
    print(path)


# --- entry point ---------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> None:
    """Run the CLI; every failure becomes one line on stderr and a non-zero exit status."""
    try:
        code = app(args=argv, prog_name="salong", standalone_mode=False)
    except SalongError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", 1))  # 130 for an interrupted training run
    except typer.TyperException as exc:  # usage errors: bad option, missing argument, bad number
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)
        hint = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
        message = exc.format_message().rstrip(".")
        err.print(f"[red]error:[/red] {message}{hint}", highlight=False, soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted; no partial output was kept", highlight=False)
        sys.exit(130)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            err.print("[red]error:[/red] disk full; free some space and run again", highlight=False)
        else:
            where = f" ({exc.filename})" if exc.filename else ""
            err.print(f"[red]error:[/red] {exc.strerror or exc}{where}", highlight=False, soft_wrap=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
