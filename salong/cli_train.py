"""`salong train ...`: the training commands of the command line (`salong.cli`).

Each parses, calls its task's training function (`salong.train.*`, with the task's own
defaults) and reports the exported model. Inference never imports training: these
commands import `salong.train` only when they run (tools/import_check.py checks it).
Importing `salong.cli` registers them on its app.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Optional

import typer

from salong.cli import _OVERWRITE, Device, _Typer, app, say
from salong.errors import SalongError
from salong.progress import status_bar

Precision = Literal["auto", "fp32", "bf16", "fp16"]
train_app = _Typer(help="Train the autoencoder, CLAP or DiT; resume, and export a run's model.", no_args_is_help=True)
app.add_typer(train_app, name="train")


# Options every `salong train` command takes (None: not given, so a resumed run keeps its own).
_COMMON_TAIL = {
    "seed": (Optional[int], typer.Option(None, help="Seed of data order, random crops, noise and initialisation; 0 "
                                         "or more. \\[default: 0]")),
    "checkpoint_every": (Optional[int], typer.Option(None, help="Updates between checkpoints, 1 or more. "
                                                     "\\[default: 500]")),
    "log_every": (Optional[int], typer.Option(None, help="Updates between metrics lines, 1 or more. \\[default: 10]")),
    "precision": (Optional[Precision], typer.Option(None, help="Number format: auto (bf16 or fp16 on a GPU, fp32 on "
                                                    "CPU), fp32, bf16 or fp16. \\[default: auto]")),
    "device": (Optional[Device], typer.Option(None, help="Where to train: auto (the GPUs if there are any), cpu or "
                                              "cuda. \\[default: auto]")),
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
        """(TrainConfig, task config) of the run (`salong.train.runs`): the model from --preset
        or --init, the task's defaults for a new run or the saved settings on --resume, with
        the options given on top."""
        from salong.outputs import resolved
        from salong.train.runs import DEFAULT_PRESET, choose_model, run_settings

        data, out = resolved(self.data), resolved(self.out)
        if data == out or data in out.parents or out in data.parents:  # compared after links and `..`
            raise SalongError(f"--out {str(self.out)!r} and --data {str(self.data)!r} overlap (one is inside the "
                              "other): the run's demos and checkpoints would become training data; give a run "
                              "folder outside the data folder")
        model = choose_model(presets, self.preset, self.init, self.resume, init_model)
        common = {f: getattr(self, f) for f in ("steps", "batch_size", "lr", "seed", "checkpoint_every", "log_every",
                                               "precision", "device", "num_workers")}
        default_task = task_cls(model=presets[DEFAULT_PRESET])
        return run_settings(self.out, self.resume, kind, task_cls, default_train, default_task,
                            {**common, **train_options}, dict(model=model, **task_options))

    def report(self, result: Any) -> None:
        """The exported model's path on stdout, once (rank 0 under torchrun)."""
        if os.environ.get("RANK", "0") == "0":
            say(result.model, result.model)


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
    preset="Model: tiny, compact, small or sa2 (Oobleck, paper scale), or spectral, tiny-spectral (STFT magnitudes "
           "in and out, Griffin-Lim phases; the bundled model's). \\[default: small]",
    init="Start a new run from this model file's autoencoder (an autoencoder or generator file); fresh optimiser.",
    batch_size="Clips per update per process, 1 or more. \\[default: 8]",
    lr="Autoencoder learning rate (the critic has its own), above 0. \\[default: 1.5e-4]",
)
def train_autoencoder_cmd(
    run: _Run,
    discriminator: Optional[str] = typer.Option(
        None, help="Critic size: tiny, compact or sa2. \\[default: the preset's]"),
    window_seconds: Optional[float] = typer.Option(
        None, help="Training crop length, seconds: at least one latent frame. \\[default: 1.5]"),
    adversarial_start: Optional[int] = typer.Option(
        None, help="Updates before the GAN losses join, 0 or more. \\[default: 0]"),
    demo_every: Optional[int] = typer.Option(
        None, help=f"Updates between demo reconstructions, {_EVERY}. \\[default: 1000]"),
    eval_every: Optional[int] = typer.Option(
        None, help=f"Updates between STFT/SI-SDR evaluations, {_EVERY}. \\[default: 1000]"),
    compile: bool = typer.Option(False, "--compile", help="Compile the Snake activations with torch.compile: about "
                                 "1.5x faster steps on CPU after a minute of compiling (needs a C++ compiler; falls "
                                 "back with a warning)."),
    decoder_only: bool = typer.Option(False, "--decoder-only", help="Train the decoder alone on the mean latents of "
                                      "the --init model's frozen encoder: the latents stay as they are, so a "
                                      "generator's DiT works with the new decoder."),
    decoder_head: Optional[int] = typer.Option(
        None, help="Spectral: add a residual MLP of this width on each log-magnitude frame the decoder draws; it "
                   "starts at zero, so an --init model sounds as before until it trains. 0: none. \\[default: "
                   "the model's]"),
) -> None:
    """Train the autoencoder: Oobleck (STFT + adversarial + KL losses) or spectral (STFT magnitudes + KL). \
Works under torchrun."""
    from salong.autoencoder import PRESETS
    from salong.train.autoencoder import (TRAIN_DEFAULTS, AutoencoderTaskConfig, critic_for, init_weights,
                                          train_autoencoder)

    train_config, task_config = run.settings(
        "autoencoder", PRESETS, lambda path: init_weights(path).config, AutoencoderTaskConfig, TRAIN_DEFAULTS,
        dict(demo_every=demo_every, eval_every=eval_every),
        dict(window_seconds=window_seconds, adversarial_start=adversarial_start,
             discriminator=critic_for(run.preset, discriminator), train_encoder=False if decoder_only else None),
    )
    if decoder_head is not None and decoder_head != task_config.model.decoder_head:
        if run.resume:
            raise SalongError(f"--decoder-head {decoder_head}: a resumed run keeps its decoder "
                              f"(head {task_config.model.decoder_head}); start a new run to change it")
        task_config = dataclasses.replace(task_config, model=dataclasses.replace(task_config.model,
                                                                                 decoder_head=decoder_head))
    if not task_config.train_encoder and run.init is None and not run.resume:
        raise SalongError("--decoder-only keeps a trained encoder: give the model to start from with --init "
                          "(an autoencoder or generator file)")
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
    clip_seconds: Optional[float] = typer.Option(
        None, help="Audio window the audio tower sees, seconds, above 0. \\[default: the preset's]"),
    vocab_size: Optional[int] = typer.Option(
        None, help="BPE vocabulary trained on the captions: 261 up to the model's. \\[default: the model's]"),
    eval_crops: Optional[int] = typer.Option(
        None, help="Windows averaged per held-out recording, 1 or more. \\[default: 3]"),
    validation_fraction: Optional[float] = typer.Option(
        None, help="Share of files held out for retrieval recall, 0 <= f < 1. \\[default: 0.1]"),
    eval_every: Optional[int] = typer.Option(
        None, help=f"Updates between held-out recall@1/@5 evaluations, {_EVERY}. \\[default: 500]"),
) -> None:
    """Train CLAP (symmetric contrastive loss) and its tokenizer; reports held-out retrieval recall."""
    from salong.clap import PRESETS, load_clap
    from salong.train.clap import TRAIN_DEFAULTS, ClapTaskConfig, train_clap

    train_config, task_config = run.settings(
        "clap", PRESETS, lambda path: load_clap(path).config, ClapTaskConfig, TRAIN_DEFAULTS,
        dict(eval_every=eval_every),
        dict(vocab_size=vocab_size, validation_fraction=validation_fraction, eval_crops=eval_crops),
    )
    if clip_seconds is not None:  # a model setting: a changed value on --resume is refused by the trainer
        model = dataclasses.replace(task_config.model, clip_seconds=clip_seconds)
        task_config = dataclasses.replace(task_config, model=model)
    run.report(train_clap(run.data, run.out, train_config, task_config, resume=run.resume, quiet=run.quiet,
                          init=run.init))


@_train_command(
    "dit",
    data=_CAPTIONED,
    out="Run folder: prepared latents, config, metrics, checkpoints, demos, model.",
    preset="DiT size: tiny, small, compact (the bundled model's), sa2 (paper) or sao1. \\[default: small]",
    init="Start a new run from this generator: a salong file (CLAP or T5), a converted Stable Audio Open file or "
         "an SAO folder; its DiT's weights (fresh optimiser), objective and sampling defaults, and its autoencoder "
         "and text encoder unless given.",
    batch_size="Crops per update per process, 1 or more. \\[default: 8]",
    lr="Learning rate, above 0. \\[default: 1e-4]",
)
def train_dit_cmd(
    run: _Run,
    autoencoder: Optional[Path] = typer.Option(
        None, help="Frozen autoencoder (from `salong train autoencoder`); copied into the run."),
    text_encoder: Optional[Path] = typer.Option(
        None, help="Frozen CLAP (from `salong train clap`); copied into the run. With --init SAO_DIR: the folder's "
        "T5, if not inside or beside it."),
    crops: Optional[str] = typer.Option(None, help="variable: each batch draws one crop length from "
                                        "--min-crop-seconds to --window-seconds (see --crop-law); fixed: every crop "
                                        "is --window-seconds long. \\[default: variable]"),
    window_seconds: Optional[float] = typer.Option(None, help="Longest training crop, seconds: 0 (the model's window) "
                                                   "up to the model's window. \\[default: 0]"),
    min_crop_seconds: Optional[float] = typer.Option(
        None, help="Shortest crop with --crops variable, seconds, above 0. \\[default: 4]"),
    crop_law: Optional[str] = typer.Option(None, help="How --crops variable draws lengths: log (log-uniform) or "
                                           "balanced (the same compute for every octave of lengths: long crops "
                                           "rarer, steps about 5x cheaper on CPU). \\[default: log]"),
    text_layer: Optional[int] = typer.Option(None, help="CLAP text layer the DiT reads: -1 the last, -2 the "
                                             "next-to-last (Stable Audio 2's), down to minus the tower's depth (its "
                                             "first layer), or one lower for the token embeddings. With --init, the "
                                             "file's. \\[default: -2]"),
    cond_dropout: Optional[float] = typer.Option(
        None, help="Share of unconditional samples (for CFG), 0 <= p < 1. \\[default: 0.1]"),
    timestep_shift: Optional[float] = typer.Option(None, help="Scale the noise-to-signal ratio of training times: 1 "
                                                   "draws t uniformly (the reference), above 1 trains high noise, "
                                                   "where a prompt shapes a song, more; above 0. \\[default: 1]"),
    controls: Optional[str] = typer.Option(None, help="Control conditioners, comma-separated: beat (tempo and meter "
                                           "as beat and bar phase per frame), key, drums (none, on or the groove), "
                                           "form (the section of each frame and how far through it), chords "
                                           "(the chord of each frame); read from each file's metadata (bpm, key, "
                                           "meter, drums, sections, chords). With --init, "
                                           "added to the file's DiT at zero, so "
                                           "training starts from its exact predictions. \\[default: the preset's or "
                                           "the file's, none]"),
    control_dropout: Optional[float] = typer.Option(None, help="Share of samples trained without each control, 0 to "
                                                    "1 (the model then works without it, and guidance amplifies "
                                                    "it). \\[default: 0.2]"),
    estimate_bpm: Optional[bool] = typer.Option(None, "--estimate-bpm/--no-estimate-bpm", help="Give files whose "
                                                "metadata has no bpm the tempo and beat grid librosa's beat tracker "
                                                "finds in them (needs librosa). \\[default: off]"),
    canonical_text: Optional[bool] = typer.Option(None, "--canonical-text/--as-written-text", help="Spell each word "
                                                  "of a caption or prompt alike whatever its case or place. With "
                                                  "--init, the file's. \\[default: as written]"),
    demo_every: Optional[int] = typer.Option(
        None, help=f"Updates between demo songs at CFG 1, 3, 7; {_EVERY}. \\[default: 2000]"),
    compile: bool = typer.Option(False, "--compile", help="Compile the autoencoder's Snake activations with "
                                 "torch.compile while the dataset is encoded: about 1.5x faster on CPU after a "
                                 "minute of compiling."),
    lora: Optional[int] = typer.Option(None, help="Train low-rank adapters of this rank (e.g. 16) on the frozen DiT "
                                       "of --init instead of all its weights; the run's model is the adapter file. "
                                       "\\[default: off]"),
    lora_alpha: Optional[float] = typer.Option(None, help="With --lora: the adapters' update is scaled by alpha / "
                                               "rank; above 0. \\[default: the rank]"),
    lora_targets: Optional[str] = typer.Option(None, help="With --lora: layers to adapt, comma-separated: groups "
                                               "self_attn, cross_attn, ff, or module names. "
                                               "\\[default: self_attn,cross_attn,ff]"),
) -> None:
    """Train the diffusion transformer on pre-encoded latents; exports a complete generator."""
    from salong.dit import PRESETS
    from salong.lora import LoraConfig
    from salong.train.dit import TRAIN_DEFAULTS, DiTTaskConfig, init_config, train_dit

    initial = init_config(run.init, text_encoder) if run.init is not None else None  # read once, used twice
    if lora is None and (lora_alpha is not None or lora_targets is not None):
        raise SalongError("--lora-alpha and --lora-targets set up --lora adapters; give --lora RANK too")
    targets = ({} if lora_targets is None
               else {"targets": tuple(t.strip() for t in lora_targets.split(",") if t.strip())})
    adapters = None if lora is None else LoraConfig(
        rank=lora, alpha=float(lora_alpha if lora_alpha is not None else lora), **targets)
    if text_layer is None and initial is not None:  # a DiT goes on reading the layer it learned from
        text_layer = initial.text_layer
    if canonical_text is None and initial is not None:
        canonical_text = initial.canonical_text
    chosen = None if controls is None else tuple(c.strip() for c in controls.split(",") if c.strip())
    if chosen is not None and run.resume:
        raise SalongError("--controls sets a new run's DiT; a resumed run keeps its own (drop --controls)")

    # without --controls, a generator's DiT keeps its own, so a --preset of its size agrees with it
    kept = chosen if chosen is not None or initial is None else initial.dit.controls

    def with_controls(model: Any) -> Any:
        return model if kept is None else dataclasses.replace(model, controls=kept)

    train_config, task_config = run.settings(
        "dit", {name: with_controls(p) for name, p in PRESETS.items()}, lambda path: with_controls(initial.dit),
        DiTTaskConfig, TRAIN_DEFAULTS, dict(demo_every=demo_every),
        dict(cond_dropout=cond_dropout, crops=crops, window_seconds=window_seconds, min_crop_seconds=min_crop_seconds,
             crop_law=crop_law, text_layer=text_layer, timestep_shift=timestep_shift,
             control_dropout=control_dropout, canonical_text=canonical_text, estimate_bpm=estimate_bpm,
             objective=initial.objective if initial else None, sampling=initial.sampling if initial else None,
             lora=adapters),
    )
    # one line on the terminal: the dataset's encoding, then the training that replaces it
    with status_bar("encoding the dataset", not run.quiet) as bar:
        result = train_dit(run.data, run.out, train_config, task_config, autoencoder, text_encoder, resume=run.resume,
                           quiet=run.quiet, progress=bar, init=run.init, compile=compile)
    run.report(result)


@train_app.command("export")
def train_export_cmd(
    run: Path = typer.Argument(..., help="A run folder, or one of its checkpoints/step_*.safetensors files."),
    out: Path = typer.Option(..., "-o", "--out", help="Model file to write (.safetensors)."),
    half: bool = typer.Option(
        False, "--half", help="Store weight matrices in float16 (half the size; computation stays float32)."),
    steps: Optional[int] = typer.Option(
        None, help="Generators: default sampler steps stored in the file, 1 or more. \\[default: the run's]"),
    cfg_scale: Optional[float] = typer.Option(
        None, help="Generators: default CFG scale stored in the file, >= 0 (at most 100). \\[default: the run's]"),
    sampler: Optional[str] = typer.Option(
        None, help="Generators: default sampler stored in the file. \\[default: the run's]"),
    cfg_interval: Optional[str] = typer.Option(
        None, help="Generators: default noise levels LO,HI where guidance applies, stored in the file (0,1: every "
                   "step). \\[default: the run's]"),
    beat_guidance_without_drums: Optional[float] = typer.Option(
        None, help="Generators: the share (0 to 1) of the guidance the beat control gets in songs asked with no "
                   "drums, stored in the file (1: guided with the rest). \\[default: the run's]"),
    generator: Optional[Path] = typer.Option(
        None, help="Autoencoder runs: write this generator file with the run's autoencoder in place of its own "
                   "(a `--decoder-only` run of its autoencoder, so its DiT fits)."),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Write a run's EMA weights as a model file that --model accepts."""
    from salong.train.tasks import export_model

    path = export_model(run, out, half, steps, cfg_scale, sampler, overwrite, generator, cfg_interval,
                        beat_guidance_without_drums)
    say(path, path)
