"""The `salong` command line: each command parses, calls a library function, reports.

Results go to stdout (one line per written file, for scripts); progress bars, status
lines, warnings and errors go to stderr. A user-facing failure is one line and a non-zero
exit status. Run it as `salong`, `python -m salong` or `torchrun ... -m salong train ...`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import inspect
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, List, Literal, Mapping, Optional

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

import salong
from salong.batch import DEFAULT_NAME
from salong.errors import SalongError

# Messages on stderr; while a progress line is up (salong.progress), they print above it.
err = Console(stderr=True)


class _FlagsHelp:
    """Help lists an on/off flag without a `<bool>` value column: it takes no value."""

    def get_params(self, ctx: Any) -> list:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_bool_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_FlagsHelp, TyperCommand):
    pass


class _Group(_FlagsHelp, TyperGroup):
    pass


class _Typer(typer.Typer):
    """A Typer app whose commands and groups show flags as flags in --help."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable:
        return super().command(*args, cls=_Command, **kwargs)


app = _Typer(
    name="salong",
    help="Text-to-music generation with latent diffusion (Stable Audio 2 style), offline on your machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Device = Literal["auto", "cpu", "cuda"]
Frames = Literal["needed", "window"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


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
    """A line with a bar on stderr, driven by a `(done, total)` callback; `unit` adds a rate.

    Only on a terminal: logs of scripted runs stay free of bar remnants."""
    from salong.progress import status_bar

    with status_bar(description, enabled, unit) as bar:
        yield lambda done, total: bar(done, total)


def resolve_model(path: Optional[Path], kind: str) -> Path:
    """The model file to use: the one given, or the bundled one for `kind` (generator or autoencoder)."""
    from salong.bundled import default_autoencoder, default_generator

    if path is not None:
        return path
    return default_generator() if kind == "generator" else default_autoencoder()


def load_generator(path: Path, text_encoder: Optional[Path], device: str):
    """A generator from a salong file or a Stable Audio Open folder (its T5 from `text_encoder`
    or beside it)."""
    from salong.pipeline import Generator
    from salong.sao import load_folder

    if path.is_dir():
        return load_folder(path, text_encoder, device)
    if text_encoder is not None:
        raise SalongError(f"--text-encoder is for Stable Audio Open model folders; {str(path)!r} is a salong "
                          "generator file that holds its own text encoder, so drop --text-encoder")
    return Generator.load(path, device=device)


def load_codec(path: Path):
    """The autoencoder of an autoencoder or generator file, or of a Stable Audio Open folder."""
    from salong.autoencoder import load_autoencoder_from
    from salong.sao import load_autoencoder

    return load_autoencoder(path) if path.is_dir() else load_autoencoder_from(path)


def ensure_folder(folder: Path) -> Path:
    """Create an output folder whose parent exists; a missing parent is the user's to make."""
    if not folder.exists():
        if not folder.parent.is_dir():
            raise SalongError(f"output folder {str(folder.parent)!r} does not exist; create it first")
        folder.mkdir()
    return folder


LATENTS_SUFFIX = ".latents.safetensors"


def output_for(source: Path, out: Optional[Path], many: bool, suffix: str) -> Path:
    """Where one input's result goes: `out` itself for a single input, else inside folder `out`,
    named after the input without its last extension (take.1.wav -> take.1<suffix>)."""
    stem = source.name[: -len(LATENTS_SUFFIX)] if source.name.endswith(LATENTS_SUFFIX) else source.stem
    name = stem + suffix
    if out is None:
        return Path(name)
    if many or out.is_dir():
        return out / name
    return out


def plan_outputs(inputs: List[Path], out: Optional[Path], suffix: str, overwrite: bool) -> List[Path]:
    """Every input's output, checked before any work: no two inputs write the same file, and
    an existing file is replaced only with --overwrite (`salong.batch.refuse_existing`)."""
    from salong.batch import refuse_existing

    many = len(inputs) > 1
    targets = [output_for(path, out, many, suffix) for path in inputs]
    for target in targets:
        if targets.count(target) > 1:
            sources = [str(p) for p, t in zip(inputs, targets) if t == target]
            raise SalongError(f"{sources[0]!r} and {sources[1]!r} would both be written to {str(target)!r}; "
                              "rename one, or encode them in separate runs")
        refuse_existing(target, overwrite)
    if out is not None and (many or out.is_dir()):
        ensure_folder(out)
    return targets


def read_init(path: Optional[Path], level: Optional[float]):
    """Audio-to-audio input checked before any model loads: (audio, rate) or None."""
    import math

    from salong.audio import read_audio

    if (path is None) != (level is None):
        raise SalongError("audio-to-audio needs both --init-audio FILE and --init-noise-level LEVEL")
    if path is None:
        return None
    if not (math.isfinite(level) and level > 0):
        raise SalongError(f"--init-noise-level must be a number above 0, got {level!r}")
    return read_audio(path)


def print_error(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)


def each_input(paths: List[Path], run: Callable[[Path], Path]) -> None:
    """Process inputs one by one; a failing input is reported and the rest still run (a single
    input's failure is the command's, one line)."""
    if len(paths) == 1:
        print(run(paths[0]), flush=True)
        return
    failed = 0
    for path in paths:
        try:
            print(run(path), flush=True)
        except SalongError as exc:
            failed += 1
            print_error(str(exc))
    if failed:
        raise SalongError(f"{failed} of {len(paths)} inputs failed (see above)")


# --- commands --------------------------------------------------------------------------


@app.command()
def synth(
    count: int = typer.Argument(..., help="How many pieces to write, 1 or more."),
    out_dir: Path = typer.Argument(..., help="Folder for the corpus (audio/ and metadata.jsonl)."),
    seed: int = typer.Option(0, help="Seed of the corpus, 0 or more; the same seed writes the same files."),
    min_seconds: float = typer.Option(5.0, help="Shortest piece, seconds: above 0, at most --max-seconds."),
    max_seconds: float = typer.Option(30.0, help="Longest piece, seconds: --min-seconds to 285."),
    fmt: str = typer.Option("wav", "--format", help="Audio format: wav or flac."),
    durations: str = typer.Option("uniform", help="Length law between the bounds: uniform, or log (uniform in log-seconds: many short pieces, some long)."),
    jobs: int = typer.Option(1, help="Worker processes, 1 or more; the corpus is the same for any number."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write over a corpus (or its pieces) already in OUT_DIR."),
    captions: int = typer.Option(1, help="Descriptions per piece, 1 to 64: above 1, metadata.jsonl also lists \"captions\" in other wordings, and training draws one per crop."),
    recaption: bool = typer.Option(False, "--recaption", help="Keep the audio of the corpus in OUT_DIR (COUNT pieces) and rewrite its metadata.jsonl with --captions descriptions per piece."),
) -> None:
    """Write a procedural music corpus with exact captions (the training data format)."""
    from salong.synth import recaption_corpus, write_corpus

    if recaption:
        print(recaption_corpus(out_dir, captions, count=count))
        return
    with progress_bar("synthesising") as update:
        path = write_corpus(count, out_dir, seed=seed, min_seconds=min_seconds, max_seconds=max_seconds, fmt=fmt,
                            durations=durations, jobs=jobs, progress=update, overwrite=overwrite, captions=captions)
    print(path)


_PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show progress on stderr (on a terminal).")
_OVERWRITE = typer.Option(False, "--overwrite", help="Replace output files that exist (without it, an existing file is an error).")
_CODEC_MODEL = typer.Option(None, help="Autoencoder or generator file, or Stable Audio Open folder (its autoencoder is used). \\[default: the bundled model's]")


@app.command()
def encode(
    inputs: List[Path] = typer.Argument(..., help="Audio files (wav, flac, ogg, mp3, ...)."),
    out: Optional[Path] = typer.Option(
        None, "-o", "--out", help="Latents file for one input, or a folder for several. \\[default: NAME.latents.safetensors here]"
    ),
    model: Optional[Path] = _CODEC_MODEL,
    mean: bool = typer.Option(False, "--mean", help="Deterministic latents (the posterior mean) instead of a sample."),
    overwrite: bool = _OVERWRITE,
    progress: bool = _PROGRESS,
) -> None:
    """Encode audio to latents (.safetensors) with the autoencoder."""
    from salong.latents import encode_file, save_latents

    targets = dict(zip(inputs, plan_outputs(inputs, out, LATENTS_SUFFIX, overwrite)))
    with progress_bar("loading the model", progress):
        ae, _ = load_codec(resolve_model(model, "autoencoder"))

    def run(path: Path) -> Path:
        target = targets[path]
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
    model: Optional[Path] = _CODEC_MODEL,
    fmt: Optional[str] = typer.Option(None, "--format", help="wav, flac, ogg or mp3. \\[default: from the extension]"),
    overwrite: bool = _OVERWRITE,
    progress: bool = _PROGRESS,
) -> None:
    """Decode latents back to audio with the original length and channel count."""
    from salong.audio import output_format, write_audio
    from salong.latents import decode_latents, load_latents

    suffix = "." + (fmt or "wav")
    if out is not None and not out.is_dir() and len(inputs) == 1:
        output_format(out, fmt)  # reject a bad extension before decoding for minutes
    elif fmt is not None:
        output_format(Path("x" + suffix))
    targets = dict(zip(inputs, plan_outputs(inputs, out, suffix, overwrite)))
    with progress_bar("loading the model", progress):
        ae, _ = load_codec(resolve_model(model, "autoencoder"))

    def run(path: Path) -> Path:
        target = targets[path]
        item = load_latents(path)
        with progress_bar(f"decoding {path.name}", progress) as update:
            audio = decode_latents(ae, item, progress=update)
        return write_audio(target, audio, item.sample_rate, fmt)

    each_input(inputs, run)


@app.command()
def info(
    path: Optional[Path] = typer.Argument(
        None, help="A model checkpoint, Stable Audio Open folder, latents file or audio file. \\[default: the bundled model]"),
) -> None:
    """Show what a checkpoint, model folder or latents file holds, or the settings inside a song
    salong made and the command that makes it again; with nothing, describe the bundled model."""
    from salong.describe import describe_bundled, describe_file
    from salong.sao import describe_folder

    if path is None:
        print(describe_bundled())
    else:
        print(describe_folder(path) if path.is_dir() else describe_file(path))


@app.command()
def convert(
    model: Path = typer.Argument(..., help="A Stable Audio Open folder (model_config.json + model.safetensors)."),
    out: Path = typer.Option(..., "-o", "--out", help="The salong generator file to write (.safetensors)."),
    text_encoder: Optional[Path] = typer.Option(None, help="T5 folder. \\[default: a t5-base folder inside or beside MODEL, or its text_encoder/]"),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Save a Stable Audio Open folder and its T5 as one salong generator file (loads faster, travels alone)."""
    from salong.batch import refuse_existing
    from salong.checkpoint import check_writable
    from salong.sao import load_folder

    if not model.is_dir():
        raise SalongError(f"{str(model)!r} is not a folder; give a Stable Audio Open folder (model_config.json + "
                          "model.safetensors)")
    check_writable(out)
    refuse_existing(out, overwrite)
    print(load_folder(model, text_encoder).save(out))


@app.command()
def plot(
    path: Path = typer.Argument(..., help="An audio file, or a training run folder (or its metrics.jsonl)."),
    out: Optional[Path] = typer.Option(
        None, "-o", "--out", help="Picture to write (.png, .svg or .pdf), or a folder for NAME.png. \\[default: NAME.png here]"),
    width: int = typer.Option(1200, help="Width in pixels, 200 to 8000."),
    height: Optional[int] = typer.Option(
        None, help="Height in pixels, 200 to 8000. \\[default: 600 for a song, 280 per row of panels for a run]"),
    title: Optional[str] = typer.Option(None, help="A song's title. \\[default: the prompt the file carries, else its name]"),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Draw a song (waveform and log-mel spectrogram, titled with its prompt) or a training
    run (losses, learning rate and evaluations from metrics.jsonl)."""
    from salong.batch import refuse_existing
    from salong.plots import plot_file

    name = (path.stem if path.suffix else path.resolve().name) + ".png"
    target = out / name if out is not None and out.is_dir() else out if out is not None else Path(name)
    refuse_existing(target, overwrite)
    print(plot_file(path, target, width, height, title))


def _like(ctx: typer.Context, _param: Any, take: Optional[Path]) -> Optional[Path]:
    """--like: a take's settings (`salong.recipe`) become the defaults of the options not given
    on the command line (click's default_map, read by the options parsed after this eager one)."""
    if take is None or ctx.resilient_parsing:
        return take
    from salong.recipe import read_recipe

    options = read_recipe(take).options()
    known = {param.name for param in ctx.command.params}
    for name in options:
        if name not in known:
            raise SalongError(f"{str(take)!r} was made with --{name.replace('_', '-')}, which this salong "
                              f"{salong.__version__} does not have; upgrade salong")
    ctx.default_map = {**(ctx.default_map or {}), **options}
    return take


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was given on the command line (not taken from --like or a default)."""
    return ctx.get_parameter_source(name).name == "COMMANDLINE"  # typer vendors click: compare by name


def _check_take_model(take: Path, model_path: Path) -> None:
    """--like without --model: the take's model must still be there; a changed one is a warning."""
    from salong.recipe import model_change, read_recipe

    if not model_path.exists():
        raise SalongError(f"{str(take)!r} was made with the model {str(model_path)!r}, which is not there any more; "
                          "pass --model FILE")
    change = model_change(read_recipe(take), model_path, repr(str(take)))
    if change:
        warnings.warn(change)


@app.command()
def generate(
    ctx: typer.Context,
    prompt: Optional[str] = typer.Argument(None, help="What the music should be, e.g. \"calm piano at 70 BPM in C major\"."),
    seconds: float = typer.Option(
        30.0, "--seconds", "-s", help="Length of the song in seconds: 0 < s <= the model's window; 285 for the bundled model."),
    out: Optional[Path] = typer.Option(
        None, "-o", "--out", help="Output file for one song, or folder for several. \\[default: the --name template here]"),
    steps: Optional[int] = typer.Option(None, help="Sampler steps, 1 or more. \\[default: the model's, 100 for paper settings]"),
    cfg_scale: Optional[float] = typer.Option(
        None, help="Classifier-free guidance scale, >= 0 (at most 100); 1 = none. \\[default: the model's, 7]"),
    seed: Optional[int] = typer.Option(None, help="Seed, 0 or more; the same seed and settings give the same song. \\[default: random]"),
    negative: Optional[str] = typer.Option(None, "--negative", help="Negative prompt: what to steer away from."),
    bpm: Optional[str] = typer.Option(None, "--bpm", help="Tempo, 40 to 300 beats per minute; the song starts on a downbeat at 0 s and keeps the grid. \\[default: what the prompt states, e.g. \"at 120 BPM\"]"),
    key: Optional[str] = typer.Option(None, "--key", help="Key: a tonic A-G with # or b, and major or minor, e.g. \"F# minor\", \"Bb major\". \\[default: what the prompt states]"),
    meter: Optional[str] = typer.Option(None, "--meter", help="Beats per bar, e.g. 4/4 or 3/4. \\[default: what the prompt states, else 4/4]"),
    sampler: Optional[str] = typer.Option(None, help="dpmpp-2m, dpmpp-2m-sde or euler. \\[default: the model's, dpmpp-2m]"),
    model: Optional[Path] = typer.Option(None, help="Generator file, or Stable Audio Open folder (model_config.json + model.safetensors). \\[default: the bundled model; see `salong info`]"),
    text_encoder: Optional[Path] = typer.Option(None, help="T5 folder for a Stable Audio Open --model. \\[default: a t5-base folder inside or beside it, or its text_encoder/]"),
    fmt: Optional[str] = typer.Option(None, "--format", help="wav, flac, ogg or mp3. \\[default: from -o, else wav]"),
    prompts: Optional[Path] = typer.Option(
        None, help="Batch file: a prompt per line, or JSON lines with prompt, seconds, seed, output, negative, bpm, key, meter."),
    n: int = typer.Option(1, "-n", help="Variations per prompt, 1 or more (consecutive seeds)."),
    name: str = typer.Option(DEFAULT_NAME, help="Output name template: {slug} {seed} {index} {variation} {seconds} {ext}."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Leave songs whose output file exists."),
    overwrite: bool = _OVERWRITE,
    frames: Optional[Frames] = typer.Option(None, help="needed: sample only the latent frames the song needs (faster for short songs); window: the model's whole window, then cut (what models trained on whole windows expect). \\[default: the model's: window for Stable Audio Open, needed for salong models]"),
    full_window: bool = typer.Option(False, "--full-window", help="Same as --frames window."),
    init_audio: Optional[Path] = typer.Option(None, help="Audio-to-audio: start from this audio file (resampled, cut or padded to the song), noised to --init-noise-level."),
    init_noise_level: Optional[float] = typer.Option(None, help="Noise level of --init-audio: a sigma above sigma_min for v-objective models (about 1 stays close to the input, 50+ follows the prompt), t in (0, 1] for rectified flow."),
    json_out: bool = typer.Option(False, "--json", help="One JSON record per song on stdout."),
    device: Device = typer.Option("auto", help="Where to run: auto (a GPU if there is one), cpu or cuda."),
    like: Optional[Path] = typer.Option(
        None, "--like", is_eager=True, callback=_like,
        help="Start from the settings inside a song salong made (see `salong info FILE`): prompt, seconds, seed, "
             "sampling and model; options given here override them, and -n above 1 draws new seeds."),
    progress: bool = _PROGRESS,
) -> None:
    """Generate songs from text prompts. Prints each song's path and seed (or --json records).

    Under `torchrun --nproc_per_node=K -m salong generate --prompts FILE ...` the songs are
    shared out over K processes, one model each; rank 0 prints every result in line order."""
    import time

    from salong.audio import output_format
    from salong.batch import Failed, Skipped, Tally, plan_jobs, read_prompts, render_shared
    from salong.distributed import process_group, resolve_device, wants_cuda
    from salong.pipeline import check_request
    from salong.progress import status_bar

    start = time.perf_counter()
    if like is not None and prompts is not None:
        raise SalongError("--like makes one take again, --prompts a batch; give only one of them")
    if like is not None and n > 1 and not _given(ctx, "seed"):
        seed = None  # -n asks for new takes, not the take again
    if (prompt is None) == (prompts is None):
        raise SalongError("give a PROMPT or --prompts FILE (one of the two)")
    check_request(seconds, steps, cfg_scale, sampler, seed)  # bad numbers fail before the model loads
    init = read_init(init_audio, init_noise_level)
    ext = output_format(out if out is not None and out.suffix and fmt is None else Path("x.wav"), fmt)
    entries = read_prompts(prompts) if prompts is not None else [{"prompt": prompt, "source": "prompt"}]
    jobs = plan_jobs(entries, seconds, n, seed, out, name, ext, negative, dict(bpm=bpm, key=key, meter=meter))
    model_path = resolve_model(model, "generator")
    if like is not None and not _given(ctx, "model"):
        _check_take_model(like, model_path)
    resolve_device(device, 0)  # a missing GPU is named before torchrun's ranks try to join
    with process_group(wants_cuda(device)) as d, status_bar("loading the model", progress and d.main, unit="steps") as bar:
        generator = load_generator(model_path, text_encoder, resolve_device(device, d.local_rank))
        if d.main and out is not None and len(jobs) > 1:
            ensure_folder(out)
        jobs = d.from_main(jobs)  # the seeds rank 0 drew, where a prompt without --seed draws them

        def stage(job, stage: str, done: int, total: int) -> None:
            bar(done, total, description=f"{job.prompt[:30]}: {stage}")

        failed, tally = 0, Tally()
        extra = {"init_audio": str(init_audio.resolve()) if init_audio is not None else None,
                 "text_encoder": str(text_encoder.resolve()) if text_encoder is not None else None}
        frame_mode = getattr(frames, "value", frames)  # an enum from the command line, a str from --like
        for result in render_shared(generator, jobs, d, steps=steps, cfg_scale=cfg_scale, sampler=sampler,
                                    full_window=full_window, skip_existing=skip_existing, overwrite=overwrite, fmt=fmt,
                                    progress=stage, frames=frame_mode, init_audio=init,
                                    init_noise_level=init_noise_level, recipe_extra=extra):
            tally.add(result)
            if isinstance(result, Failed):
                if len(jobs) == 1:  # a single song's failure is the command's
                    raise SalongError(result.message if result.source == "prompt" else f"{result.source}: {result.message}")
                failed += 1
                print_error(f"{result.source}: {result.message}")
            elif isinstance(result, Skipped):
                err.print(f"skipped {result.job.output} (exists)", highlight=False, soft_wrap=True)
            elif json_out:
                print(json.dumps(result.record(model_path)), flush=True)
            else:
                print(f"{result.path}\t{result.song.seed}", flush=True)
    if d.main and len(jobs) > 1:  # on stderr: stdout stays one line per file
        err.print(tally.summary(time.perf_counter() - start), highlight=False, soft_wrap=True)
    if failed:
        raise SalongError(f"{failed} of {len(jobs)} songs failed (see above)")


# --- training --------------------------------------------------------------------------

train_app = _Typer(help="Train the autoencoder, CLAP or DiT; resume, and export a run's model.", no_args_is_help=True)
app.add_typer(train_app, name="train")


# Options every `salong train` command takes (None: not given, so a resumed run keeps its own).
_COMMON_TAIL = {
    "seed": (Optional[int], typer.Option(None, help="Seed of data order, random crops, noise and initialisation; 0 or more. \\[default: 0]")),
    "checkpoint_every": (Optional[int], typer.Option(None, help="Updates between checkpoints, 1 or more. \\[default: 500]")),
    "log_every": (Optional[int], typer.Option(None, help="Updates between metrics lines, 1 or more. \\[default: 10]")),
    "precision": (Optional[Precision], typer.Option(None, help="Number format: auto (bf16 or fp16 on a GPU, fp32 on CPU), fp32, bf16 or fp16. \\[default: auto]")),
    "device": (Optional[Device], typer.Option(None, help="Where to train: auto (the GPUs if there are any), cpu or cuda. \\[default: auto]")),
    "num_workers": (Optional[int], typer.Option(None, help="DataLoader worker processes, 0 or more. \\[default: 0]")),
    "quiet": (bool, typer.Option(False, "--quiet", help="No progress bar.")),
}
_EVERY = "0 or more; 0 = never"
_CAPTIONED = "Folder of captioned audio (metadata.jsonl or .txt sidecars)."


@dataclasses.dataclass(frozen=True)
class _Run:
    """The options of a `salong train` run that every model takes."""

    data: Path
    out: Path
    preset: Optional[str]
    init: Optional[Path]
    resume: bool
    steps: Optional[int]
    batch_size: Optional[int]
    lr: Optional[float]
    seed: Optional[int]
    checkpoint_every: Optional[int]
    log_every: Optional[int]
    precision: Optional[str]
    device: Optional[str]
    num_workers: Optional[int]
    quiet: bool

    def settings(self, kind: str, presets: Mapping[str, Any], init_model: Callable[[Path], Any], task_cls: type,
                 default_train: Any, train_options: dict, task_options: dict) -> tuple:
        """(TrainConfig, task config) of the run: the model from --preset or --init (which
        starts a new run; a --preset must agree with its model), the defaults of a new run
        or the saved settings on --resume, with the options given on top."""
        from salong.train.runs import run_settings

        preset, init = self.preset, self.init
        if preset is not None and preset not in presets:
            raise SalongError(f"unknown preset {preset!r}; choose one of: {', '.join(presets)}")
        model = presets[preset] if preset else None
        if init is not None:
            if self.resume:
                raise SalongError(f"--init {init} starts a new run and --resume continues one; give only one of them")
            initial = init_model(init)
            if model is not None and model != initial:
                raise SalongError(f"--init {init} holds a model of another size than --preset {preset}; drop --preset")
            model = initial
        common = {f: getattr(self, f) for f in ("steps", "batch_size", "lr", "seed", "checkpoint_every", "log_every",
                                               "precision", "device", "num_workers")}
        return run_settings(self.out, self.resume, kind, task_cls, default_train, task_cls(model=presets["small"]),
                            {**common, **train_options}, dict(model=model, **task_options))

    def report(self, result: Any) -> None:
        """The exported model's path on stdout, once (rank 0 under torchrun)."""
        if os.environ.get("RANK", "0") == "0":
            print(result.model)


def _train_command(name: str, *, data: str, out: str, preset: str, init: str, batch_size: str, lr: str) -> Callable:
    """Register `salong train NAME`: the decorated function's own options (after its first
    parameter, a `_Run`) between those every run takes, worded for this model by the
    help texts given."""
    head = {
        "data": (Path, typer.Option(..., help=data)),
        "out": (Path, typer.Option(..., "-o", "--out", help=out)),
        "preset": (Optional[str], typer.Option(None, help=preset)),
        "init": (Optional[Path], typer.Option(None, help=init)),
        "resume": (bool, typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint.")),
        "steps": (Optional[int], typer.Option(None, help="Total optimiser updates, 1 or more. \\[default: 20000]")),
        "batch_size": (Optional[int], typer.Option(None, help=batch_size)),
        "lr": (Optional[float], typer.Option(None, help=lr)),
    }

    def decorate(func: Callable) -> Callable:
        kw = inspect.Parameter.KEYWORD_ONLY
        own = [p.replace(kind=kw) for p in list(inspect.signature(func, eval_str=True).parameters.values())[1:]]
        common = [inspect.Parameter(n, kw, default=option, annotation=hint) for n, (hint, option) in head.items()]
        tail = [inspect.Parameter(n, kw, default=option, annotation=hint) for n, (hint, option) in _COMMON_TAIL.items()]

        @functools.wraps(func)
        def command(**options: Any) -> None:
            run = _Run(**{n: options.pop(n) for n in (*head, *_COMMON_TAIL)})
            func(run, **options)

        params = [*common, *own, *tail]
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return train_app.command(name)(command)

    return decorate


@_train_command(
    "autoencoder",
    data="Folder of audio (recursive), e.g. one written by `salong synth`.",
    out="Run folder: config, metrics, checkpoints, demos, model.",
    preset="Model: tiny, compact, small or sa2 (Oobleck, paper scale), or spectral, tiny-spectral (STFT magnitudes in and out, Griffin-Lim phases; the bundled model's). \\[default: small]",
    init="Start a new run from this model file's autoencoder (an autoencoder or generator file); fresh optimiser.",
    batch_size="Clips per update per process, 1 or more. \\[default: 8]",
    lr="Generator learning rate, above 0. \\[default: 1.5e-4]",
)
def train_autoencoder_cmd(
    run: _Run,
    discriminator: Optional[str] = typer.Option(None, help="Critic size: tiny, compact or sa2. \\[default: the preset's]"),
    window_seconds: Optional[float] = typer.Option(None, help="Training crop length, seconds: at least one latent frame. \\[default: 1.5]"),
    adversarial_start: Optional[int] = typer.Option(None, help="Updates before the GAN losses join, 0 or more. \\[default: 0]"),
    demo_every: Optional[int] = typer.Option(None, help=f"Updates between demo reconstructions, {_EVERY}. \\[default: 1000]"),
    eval_every: Optional[int] = typer.Option(None, help=f"Updates between STFT/SI-SDR evaluations, {_EVERY}. \\[default: 1000]"),
    compile: bool = typer.Option(False, "--compile", help="Compile the Snake activations with torch.compile: about 1.5x faster steps on CPU after a minute of compiling (needs a C++ compiler; falls back with a warning)."),
) -> None:
    """Train the autoencoder: Oobleck (STFT + adversarial + KL losses) or spectral (STFT magnitudes + KL). Works under torchrun."""
    from salong.discriminators import DISCRIMINATOR_PRESETS
    from salong.autoencoder import PRESETS
    from salong.train import TrainConfig
    from salong.train.autoencoder import AutoencoderTaskConfig, init_weights, train_autoencoder

    if discriminator is not None and discriminator not in DISCRIMINATOR_PRESETS:
        raise SalongError(f"unknown --discriminator {discriminator!r}; choose one of: {', '.join(DISCRIMINATOR_PRESETS)}")
    # each preset has a critic of its own size; the paper's for the larger ones. The spectral
    # ones have none (they predict magnitudes, not audio): the smallest stands in, unused.
    small_critics = {"tiny": "tiny", "compact": "compact", "spectral": "tiny", "tiny-spectral": "tiny"}
    critic = discriminator or (small_critics.get(run.preset, "sa2") if run.preset else None)
    train_config, task_config = run.settings(
        "autoencoder", PRESETS, lambda path: init_weights(path).config, AutoencoderTaskConfig,
        TrainConfig(steps=20000, batch_size=8, lr=1.5e-4, betas=(0.8, 0.99), demo_every=1000, eval_every=1000),
        dict(demo_every=demo_every, eval_every=eval_every),
        dict(window_seconds=window_seconds, adversarial_start=adversarial_start,
             discriminator=DISCRIMINATOR_PRESETS[critic] if critic else None),
    )
    run.report(train_autoencoder(run.data, run.out, train_config, task_config, resume=run.resume, quiet=run.quiet,
                                 init=run.init, compile=compile))


@_train_command(
    "clap",
    data=_CAPTIONED,
    out="Run folder: tokenizer, config, metrics, checkpoints, model.",
    preset="Model size: tiny, small or laion-unfused. \\[default: small]",
    init="Start a new run from this CLAP model file (weights and tokenizer); fresh optimiser.",
    batch_size="Caption-audio pairs per update per process: the in-batch negatives, 2 or more. \\[default: 32]",
    lr="Learning rate, above 0. \\[default: 5e-4]",
)
def train_clap_cmd(
    run: _Run,
    clip_seconds: Optional[float] = typer.Option(None, help="Audio window the audio tower sees, seconds, above 0. \\[default: the preset's]"),
    vocab_size: Optional[int] = typer.Option(None, help="BPE vocabulary trained on the captions: 261 up to the model's. \\[default: the model's]"),
    eval_crops: Optional[int] = typer.Option(None, help="Windows averaged per held-out recording, 1 or more. \\[default: 3]"),
    validation_fraction: Optional[float] = typer.Option(None, help="Share of files held out for retrieval recall, 0 <= f < 1. \\[default: 0.1]"),
    eval_every: Optional[int] = typer.Option(None, help=f"Updates between held-out recall@1/@5 evaluations, {_EVERY}. \\[default: 500]"),
) -> None:
    """Train CLAP (symmetric contrastive loss) and its tokenizer; reports held-out retrieval recall."""
    from salong.clap import PRESETS, load_clap
    from salong.train import TrainConfig
    from salong.train.clap import ClapTaskConfig, train_clap

    train_config, task_config = run.settings(
        "clap", PRESETS, lambda path: load_clap(path).config, ClapTaskConfig,
        TrainConfig(steps=20000, batch_size=32, lr=5e-4, eval_every=500),
        dict(eval_every=eval_every),
        dict(vocab_size=vocab_size, validation_fraction=validation_fraction, eval_crops=eval_crops),
    )
    if clip_seconds is not None:  # a model setting: a changed value on --resume is refused by the trainer
        model = dataclasses.replace(task_config.model, clip_seconds=clip_seconds)
        task_config = dataclasses.replace(task_config, model=model)
    run.report(train_clap(run.data, run.out, train_config, task_config, resume=run.resume, quiet=run.quiet, init=run.init))


@_train_command(
    "dit",
    data=_CAPTIONED,
    out="Run folder: prepared latents, config, metrics, checkpoints, demos, model.",
    preset="DiT size: tiny, small, compact (the bundled model's), sa2 (paper) or sao1. \\[default: small]",
    init="Start a new run from this generator: a salong file (CLAP or T5), a converted Stable Audio Open file or an SAO folder; its DiT's weights (fresh optimiser), objective and sampling defaults, and its autoencoder and text encoder unless given.",
    batch_size="Crops per update per process, 1 or more. \\[default: 8]",
    lr="Learning rate, above 0. \\[default: 1e-4]",
)
def train_dit_cmd(
    run: _Run,
    autoencoder: Optional[Path] = typer.Option(None, help="Frozen autoencoder (from `salong train autoencoder`); copied into the run."),
    text_encoder: Optional[Path] = typer.Option(None, help="Frozen CLAP (from `salong train clap`); copied into the run. With --init SAO_DIR: the folder's T5, if not inside or beside it."),
    crops: Optional[str] = typer.Option(None, help="variable: each batch draws one crop length from --min-crop-seconds to --window-seconds (see --crop-law); fixed: every crop is --window-seconds long. \\[default: variable]"),
    window_seconds: Optional[float] = typer.Option(None, help="Longest training crop, seconds: 0 (the model's window) up to the model's window. \\[default: 0]"),
    min_crop_seconds: Optional[float] = typer.Option(None, help="Shortest crop with --crops variable, seconds, above 0. \\[default: 4]"),
    crop_law: Optional[str] = typer.Option(None, help="How --crops variable draws lengths: log (log-uniform) or balanced (the same compute for every octave of lengths: long crops rarer, steps about 5x cheaper on CPU). \\[default: log]"),
    text_layer: Optional[int] = typer.Option(None, help="CLAP text layer the DiT reads: -1 the last, -2 the next-to-last (Stable Audio 2's), down to minus the tower's depth (its first layer), or one lower for the token embeddings. With --init, the file's. \\[default: -2]"),
    cond_dropout: Optional[float] = typer.Option(None, help="Share of unconditional samples (for CFG), 0 <= p < 1. \\[default: 0.1]"),
    timestep_shift: Optional[float] = typer.Option(None, help="Scale the noise-to-signal ratio of training times: 1 draws t uniformly (the reference), above 1 trains high noise, where a prompt shapes a song, more; above 0. \\[default: 1]"),
    controls: Optional[str] = typer.Option(None, help="Control conditioners, comma-separated: beat (tempo and meter as beat and bar phase per frame), key; read from each file's metadata (bpm, key, meter). With --init, added to the file's DiT at zero, so training starts from its exact predictions. \\[default: the preset's or the file's, none]"),
    control_dropout: Optional[float] = typer.Option(None, help="Share of samples trained without each control, 0 to 1 (the model then works without it, and guidance amplifies it). \\[default: 0.2]"),
    estimate_bpm: Optional[bool] = typer.Option(None, "--estimate-bpm/--no-estimate-bpm", help="Give files whose metadata has no bpm the tempo and beat grid librosa's beat tracker finds in them (needs librosa). \\[default: off]"),
    canonical_text: Optional[bool] = typer.Option(None, "--canonical-text/--as-written-text", help="Spell each word of a caption or prompt alike whatever its case or place. With --init, the file's. \\[default: as written]"),
    demo_every: Optional[int] = typer.Option(None, help=f"Updates between demo songs at CFG 1, 3, 7; {_EVERY}. \\[default: 2000]"),
    compile: bool = typer.Option(False, "--compile", help="Compile the autoencoder's Snake activations with torch.compile while the dataset is encoded: about 1.5x faster on CPU after a minute of compiling."),
    lora: Optional[int] = typer.Option(None, help="Train low-rank adapters of this rank (e.g. 16) on the frozen DiT of --init instead of all its weights; the run's model is the adapter file. \\[default: off]"),
    lora_alpha: Optional[float] = typer.Option(None, help="With --lora: the adapters' update is scaled by alpha / rank; above 0. \\[default: the rank]"),
    lora_targets: Optional[str] = typer.Option(None, help="With --lora: layers to adapt, comma-separated: groups self_attn, cross_attn, ff, or module names. \\[default: self_attn,cross_attn,ff]"),
) -> None:
    """Train the diffusion transformer on pre-encoded latents; exports a complete generator."""
    from salong.dit import PRESETS
    from salong.lora import LoraConfig
    from salong.train import TrainConfig
    from salong.train.dit import DiTTaskConfig, init_config, train_dit

    initial = init_config(run.init, text_encoder) if run.init is not None else None  # read once, used twice
    if lora is None and (lora_alpha is not None or lora_targets is not None):
        raise SalongError("--lora-alpha and --lora-targets set up --lora adapters; give --lora RANK too")
    adapters = None if lora is None else LoraConfig(
        rank=lora, alpha=float(lora_alpha if lora_alpha is not None else lora),
        **({} if lora_targets is None else {"targets": tuple(t.strip() for t in lora_targets.split(",") if t.strip())}))
    if text_layer is None and initial is not None:  # a DiT goes on reading the layer it learned from
        text_layer = initial.text_layer
    if canonical_text is None and initial is not None:
        canonical_text = initial.canonical_text
    chosen = None if controls is None else tuple(c.strip() for c in controls.split(",") if c.strip())
    if chosen is not None and run.resume:
        raise SalongError("--controls sets a new run's DiT; a resumed run keeps its own (drop --controls)")

    def with_controls(model):
        return model if chosen is None else dataclasses.replace(model, controls=chosen)

    train_config, task_config = run.settings(
        "dit", {name: with_controls(p) for name, p in PRESETS.items()}, lambda path: with_controls(initial.dit),
        DiTTaskConfig, TrainConfig(steps=20000, batch_size=8, lr=1e-4, demo_every=2000),
        dict(demo_every=demo_every),
        dict(cond_dropout=cond_dropout, crops=crops, window_seconds=window_seconds, min_crop_seconds=min_crop_seconds,
             crop_law=crop_law, text_layer=text_layer, timestep_shift=timestep_shift,
             control_dropout=control_dropout, canonical_text=canonical_text, estimate_bpm=estimate_bpm,
             objective=initial.objective if initial else None, sampling=initial.sampling if initial else None,
             lora=adapters),
    )
    # one line on the terminal: the dataset's encoding, then the training that replaces it
    with progress_bar("encoding the dataset", not run.quiet) as update:
        result = train_dit(run.data, run.out, train_config, task_config, autoencoder, text_encoder, resume=run.resume,
                           quiet=run.quiet, progress=update, init=run.init, compile=compile)
    run.report(result)


@train_app.command("export")
def train_export_cmd(
    run: Path = typer.Argument(..., help="A run folder, or one of its checkpoints/step_*.safetensors files."),
    out: Path = typer.Option(..., "-o", "--out", help="Model file to write (.safetensors)."),
    half: bool = typer.Option(False, "--half", help="Store weight matrices in float16 (half the size; computation stays float32)."),
    steps: Optional[int] = typer.Option(None, help="Generators: default sampler steps stored in the file, 1 or more. \\[default: the run's]"),
    cfg_scale: Optional[float] = typer.Option(None, help="Generators: default CFG scale stored in the file, >= 0 (at most 100). \\[default: the run's]"),
    sampler: Optional[str] = typer.Option(None, help="Generators: default sampler stored in the file. \\[default: the run's]"),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Write a run's EMA weights as a model file that --model accepts."""
    from salong.batch import refuse_existing
    from salong.train import export_run
    from salong.train.tasks import task_for_run

    if not run.exists():
        raise SalongError(f"{str(run)!r} not found; give a run folder or one of its checkpoints/step_*.safetensors")
    refuse_existing(out, overwrite)
    run_dir = run if run.is_dir() else run.parent.parent
    task = task_for_run(run_dir)
    sampling = {k: v for k, v in dict(steps=steps, cfg_scale=cfg_scale, sampler=sampler).items() if v is not None}
    if sampling and task.kind != "dit":
        raise SalongError(f"--steps, --cfg-scale and --sampler are sampling defaults of generators; {run} is a {task.kind} run")
    if sampling and getattr(task.config, "lora", None) is not None:
        raise SalongError(f"{run} trains LoRA adapters, whose file holds no sampling defaults; drop --steps, "
                          "--cfg-scale and --sampler")
    if sampling:  # the checks generation applies, before any file is written
        dataclasses.replace(task.config.sampling, **sampling)
    path = export_run(run, out, task)
    if half or sampling:
        from salong.checkpoint import rewrite_checkpoint

        rewrite_checkpoint(path, half=half, config_changes={"sampling": sampling} if sampling else None)
    print(path)


# --- entry point ---------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> None:
    """Run the CLI; every failure becomes one line on stderr and a non-zero exit status."""
    # a library warning (a skipped file, a mixed-down input) is one line too
    warnings.showwarning = lambda message, *_args, **_kw: err.print(f"warning: {message}", highlight=False, soft_wrap=True)
    try:
        code = app(args=argv, prog_name="salong", standalone_mode=False)
    except SalongError as exc:
        print_error(str(exc))
        sys.exit(getattr(exc, "exit_code", 1))  # 130 for an interrupted training run
    except typer.TyperException as exc:  # usage errors: bad option, missing argument, bad number
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)
        hint = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
        message = exc.format_message().replace(": Value error, ", ": ").rstrip(".")  # typer 0.29 words a bad choice "Value error, ..."
        print_error(f"{message}{hint}")
        sys.exit(getattr(exc, "exit_code", 2))
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted; no partial output was kept", highlight=False)
        sys.exit(130)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            print_error("disk full; free some space and run again")
        else:
            where = f" ({exc.filename})" if exc.filename else ""
            print_error(f"{exc.strerror or exc}{where}")
        sys.exit(1)
    if code == 130:  # typer turns Ctrl-C inside a command into exit status 130, silently
        err.print(f"interrupted: `salong {' '.join(argv or sys.argv[1:])[:60]}` stopped; no partial file was kept",
                  highlight=False, soft_wrap=True)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
