"""The `salong` command line: each command parses, calls a library function, reports.

Results go to stdout (one line per written file, for scripts); progress bars, status
lines, warnings and errors go to stderr. A user-facing failure is one line and a non-zero
exit status. Run it as `salong`, `python -m salong` or `torchrun ... -m salong train ...`.
The `salong train` commands are in salong/cli_train.py.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, List, Literal, Optional

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

import salong
from salong.errors import Note, SalongError
from salong.outputs import DEFAULT_NAME
from salong.progress import status_bar

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


def _version(value: bool) -> None:
    if value:
        print(f"salong {salong.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True),
) -> None:
    """salong turns a text prompt and a length in seconds into a 44.1 kHz stereo song."""


# --- reporting ---------------------------------------------------------------------------

_PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show progress on stderr (on a terminal).")
_OVERWRITE = typer.Option(
    False, "--overwrite", help="Replace output files that exist (without it, an existing file is an error).")
_BIT_DEPTH = typer.Option(None, "--bit-depth", help="WAV and FLAC samples: 16, 24 or 32f (32-bit float, WAV only); "
                          "ogg and mp3 ignore it. \\[default: 24]")
_CODEC_MODEL = typer.Option(None, help="Autoencoder or generator file, or Stable Audio Open folder (its autoencoder "
                                       "is used). \\[default: the bundled model's]")


def print_error(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)


def say(line: Any, path: Any = None) -> None:
    """A result's line on stdout (`path`: the file it reports); on stderr where that file itself
    went to stdout (`-o -`). Stdout that cannot take it (a full disk, a closed pipe) is a
    one-line error that says what was written."""
    from salong.outputs import is_stdout

    if is_stdout(path):
        sys.stderr.write(f"{line}\n")  # as written (rich would expand the tab)
        sys.stderr.flush()
        return
    try:
        print(line, flush=True)
    except OSError as exc:
        try:  # what is left in stdout's buffer must not fail again at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        done = f"{str(path)!r} was written, but its line" if path is not None else "the result"
        raise SalongError(f"{done} could not be printed on stdout ({exc.strerror or exc}); "
                          "check where stdout goes") from None


def _reporter(json_out: bool = False) -> Callable[[Any], None]:
    """How a command's results are reported (`salong.batch`): each file written on stdout,
    one line (a song's path and seed, or its --json record); skips, failures and a batch's
    summary on stderr."""
    from salong.batch import Failed, Rendered, Skipped, Tally

    def show(result: Any) -> None:
        if isinstance(result, Tally):
            err.print(result.summary(), highlight=False, soft_wrap=True)
        elif isinstance(result, Failed):
            print_error(result.line)
        elif isinstance(result, Skipped):
            err.print(f"skipped {result.job.output} (exists)", highlight=False, soft_wrap=True)
        elif isinstance(result, Rendered):
            line = json.dumps(result.record()) if json_out else f"{result.path}\t{result.song.request.seed}"
            say(line, result.path)
        else:
            say(result.path, result.path)

    return show


# --- commands ----------------------------------------------------------------------------
# Each imports its library function when it runs: `salong --help` loads neither torch nor a model.


@app.command()
def synth(
    count: int = typer.Argument(..., help="How many pieces to write, 1 to 1,000,000 (and as many as the disk holds)."),
    out_dir: Path = typer.Argument(..., help="Folder for the corpus (audio/ and metadata.jsonl)."),
    seed: int = typer.Option(0, help="Seed of the corpus, 0 or more; the same seed writes the same files."),
    min_seconds: float = typer.Option(5.0, help="Shortest piece, seconds: above 0, at most --max-seconds."),
    max_seconds: float = typer.Option(30.0, help="Longest piece, seconds: --min-seconds to 285."),
    fmt: str = typer.Option("wav", "--format", help="Audio format: wav or flac."),
    durations: str = typer.Option("uniform", help="Length law between the bounds: uniform, or log (uniform in "
                                                  "log-seconds: many short pieces, some long)."),
    jobs: int = typer.Option(1, help="Worker processes, 1 to 4 per CPU; the corpus is the same for any number."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Write over a corpus (or its pieces) already in OUT_DIR."),
    captions: int = typer.Option(1, help="Descriptions per piece, 1 to 64: above 1, metadata.jsonl also lists "
                                         "\"captions\" in other wordings, and training draws one per crop."),
    recaption: bool = typer.Option(False, "--recaption", help="Keep the audio of the corpus in OUT_DIR (COUNT "
                                   "pieces) and rewrite its metadata.jsonl with --captions descriptions per piece."),
    lead: Optional[str] = typer.Option(None, help="Every piece's lead instrument: piano, electric piano, organ, "
                                       "plucked guitar, bells, strings, flute, brass or synth lead (a corpus of one "
                                       "style). \\[default: drawn per piece]"),
    min_bpm: Optional[int] = typer.Option(None, help="Slowest tempo, 60 to --max-bpm. \\[default: 60]"),
    max_bpm: Optional[int] = typer.Option(None, help="Fastest tempo, --min-bpm to 180. \\[default: 180]"),
    no_drums: Optional[float] = typer.Option(None, help="Share of pieces without drums, 0 to 1; the others keep "
                                             "their drawn groove. \\[default: drawn per piece, one style in five]"),
) -> None:
    """Write a procedural music corpus with exact captions (the training data format)."""
    from salong.synth import recaption_corpus, write_corpus
    from salong.synth.attributes import MAX_BPM, MIN_BPM

    if recaption:
        path = recaption_corpus(out_dir, captions, count=count)
        say(path, path)
        return
    bpm_range = None if min_bpm is None and max_bpm is None else (
        MIN_BPM if min_bpm is None else min_bpm, MAX_BPM if max_bpm is None else max_bpm)
    with status_bar("synthesising") as bar:
        path = write_corpus(count, out_dir, seed=seed, min_seconds=min_seconds, max_seconds=max_seconds, fmt=fmt,
                            durations=durations, jobs=jobs, progress=bar, overwrite=overwrite, captions=captions,
                            lead=lead, bpm_range=bpm_range, no_drums=no_drums)
    say(path, path)


@app.command()
def encode(
    inputs: List[Path] = typer.Argument(..., help="Audio files (wav, flac, ogg, mp3, ...)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Latents file for one input, or a folder for "
                                       "several. \\[default: NAME.latents.safetensors here]"),
    model: Optional[Path] = _CODEC_MODEL,
    mean: bool = typer.Option(False, "--mean", help="Deterministic latents (the posterior mean) instead of a sample."),
    overwrite: bool = _OVERWRITE,
    progress: bool = _PROGRESS,
) -> None:
    """Encode audio to latents (.safetensors) with the autoencoder."""
    from salong.codec_files import encode_files

    encode_files(inputs, out, _reporter(), model=model, mean=mean, overwrite=overwrite, progress=progress)


@app.command()
def decode(
    inputs: List[Path] = typer.Argument(..., help="Latents files written by `salong encode`."),
    out: Optional[Path] = typer.Option(
        None, "-o", "--out", help="Audio file for one input, or a folder for several. \\[default: NAME.wav here]"),
    model: Optional[Path] = _CODEC_MODEL,
    fmt: Optional[str] = typer.Option(None, "--format", help="wav, flac, ogg or mp3. \\[default: from the extension]"),
    bit_depth: Optional[str] = _BIT_DEPTH,
    overwrite: bool = _OVERWRITE,
    progress: bool = _PROGRESS,
) -> None:
    """Decode latents back to audio with the original length and channel count."""
    from salong.codec_files import decode_files
    from salong.mastering import check_bit_depth

    bit_depth = check_bit_depth(bit_depth) if bit_depth is not None else None
    decode_files(inputs, out, _reporter(), model=model, fmt=fmt, overwrite=overwrite, progress=progress,
                 bit_depth=bit_depth)


@app.command()
def info(
    path: Optional[Path] = typer.Argument(None, help="A model checkpoint, Stable Audio Open folder, latents file or "
                                          "audio file. \\[default: the bundled model]"),
) -> None:
    """Show what a checkpoint, model folder or latents file holds, or the settings inside a song
    salong made and the command that makes it again; with nothing, describe the bundled model."""
    from salong.describe import describe

    say(describe(path))


@app.command()
def convert(
    model: Path = typer.Argument(..., help="A Stable Audio Open folder (model_config.json + model.safetensors)."),
    out: Path = typer.Option(..., "-o", "--out", help="The salong generator file to write (.safetensors)."),
    text_encoder: Optional[Path] = typer.Option(None, help="T5 folder. \\[default: a t5-base folder inside or beside "
                                                "MODEL, or its text_encoder/]"),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Save a Stable Audio Open folder and its T5 as one salong generator file (loads faster, travels alone)."""
    from salong.sao import convert_folder

    path = convert_folder(model, out, text_encoder, overwrite)
    say(path, path)


@app.command()
def plot(
    path: Path = typer.Argument(..., help="An audio file, or a training run folder (or its metrics.jsonl)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Picture to write (.png, .svg or .pdf), or a folder "
                                       "for NAME.png. \\[default: NAME.png here]"),
    width: int = typer.Option(1200, help="Width in pixels, 200 to 8000."),
    height: Optional[int] = typer.Option(
        None, help="Height in pixels, 200 to 8000. \\[default: 600 for a song, 280 per row of panels for a run]"),
    title: Optional[str] = typer.Option(
        None, help="A song's title. \\[default: the prompt the file carries, else its name]"),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Draw a song (waveform and log-mel spectrogram, titled with its prompt) or a training
    run (losses, learning rate and evaluations from metrics.jsonl)."""
    from salong.plots import plot_file

    picture = plot_file(path, out, width, height, title, overwrite)
    say(picture, picture)


def _like(ctx: typer.Context, _param: Any, take: Optional[Path]) -> Optional[Path]:
    """--like: a take's settings (`salong.recipe`) become the defaults of the options not given
    on the command line (click's default_map, read by the options parsed after this eager one);
    the recipe's keys are generate's parameter names."""
    if take is None or ctx.resilient_parsing:
        return take
    from salong.recipe import read_recipe
    from salong.request import option_flag

    options = read_recipe(take).options()
    known = {param.name for param in ctx.command.params}
    for name in options:
        if name not in known:
            raise SalongError(f"{str(take)!r} was made with {option_flag(name)}, which this salong "
                              f"{salong.__version__} does not have; upgrade salong")
    ctx.default_map = {**(ctx.default_map or {}), **options}
    return take


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was given on the command line (not taken from --like or a default)."""
    return ctx.get_parameter_source(name).name == "COMMANDLINE"  # typer vendors click: compare by name


def _cut_over_take(ctx: typer.Context, start: Optional[float], end: Optional[float],
                   keep_silence: bool) -> tuple[Optional[float], Optional[float], bool]:
    """An extension's cut (--from or --to, --keep-silence) under --like: the take's belongs to its
    own source and side, so any of them, or --extend or --extend-before, given on the command
    line replaces all of the take's."""
    if not any(_given(ctx, name) for name in ("start", "end", "keep_silence", "extend", "extend_before")):
        return start, end, keep_silence
    return (start if _given(ctx, "start") else None, end if _given(ctx, "end") else None,
            keep_silence if _given(ctx, "keep_silence") else False)


@app.command()
def generate(
    ctx: typer.Context,
    prompt: Optional[str] = typer.Argument(
        None, help="What the music should be, e.g. \"calm piano at 70 BPM in C major\"."),
    seconds: float = typer.Option(30.0, "--seconds", "-s", help="Length of the song in seconds: 0 < s <= the model's "
                                  "window; 285 for the bundled model."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output file for one song, or folder for several. "
                                       "\\[default: the --name template here]"),
    steps: Optional[int] = typer.Option(
        None, help="Sampler steps, 1 or more. \\[default: the model's, 100 for paper settings]"),
    cfg: Optional[float] = typer.Option(None, "--cfg-scale", help="Classifier-free guidance scale, >= 0 (at most "
                                        "100); 1 = none. \\[default: the model's, 7]"),
    cfg_interval: Optional[str] = typer.Option(
        None, "--cfg-interval", help="Noise levels LO,HI (1 = pure noise, 0 = clean) where guidance applies; 0,1 = "
        "every step, 0.7,1 = not the last steps (fewer hits where none are asked for). \\[default: the model's; "
        "the bundled model's 0.7,1]"),
    seed: Optional[int] = typer.Option(None, help="Seed, 0 or more; the same seed and settings give the same song. "
                                       "\\[default: random]"),
    negative: Optional[str] = typer.Option(None, "--negative", help="Negative prompt: what to steer away from."),
    bpm: Optional[str] = typer.Option(None, "--bpm", help="Tempo, 40 to 300 beats per minute; the song starts on a "
                                      "downbeat at 0 s and keeps the grid. \\[default: what the prompt states, e.g. "
                                      "\"at 120 BPM\"]"),
    key: Optional[str] = typer.Option(None, "--key", help="Key: a tonic A-G with # or b, and major or minor, e.g. "
                                      "\"F# minor\", \"Bb major\". \\[default: what the prompt states]"),
    meter: Optional[str] = typer.Option(None, "--meter", help="Beats per bar, e.g. 4/4 or 3/4. \\[default: what the "
                                        "prompt states, else 4/4]"),
    drums: Optional[str] = typer.Option(None, "--drums", help="none, on, or a groove: four-on-the-floor, backbeat, "
                                        "shuffle, breakbeat. \\[default: what the prompt states, e.g. \"no drums\"]"),
    form: Optional[str] = typer.Option(None, "--form", help="Sections: auto (the training corpus's rule at the "
                                       "song's length and tempo: intro, A, B, A', outro from 40 s on, else one A), "
                                       "none, or sections and bars, e.g. \"intro 4, A 16, B 16, A' 16, outro 4\" "
                                       "(A2 for A'). Listed bars are scaled by one factor to fill the song, each "
                                       "bound on a bar line, so the last section ends with the song; a model "
                                       "without a form conditioner reads listed sections as words; a --loop has "
                                       "none. \\[default: auto]"),
    chords: Optional[str] = typer.Option(None, "--chords", help="Chords, one triad per bar, cycled: names (\"Am F "
                                         "C G\") or degrees of the key (\"i VI III VII\", upper case major, lower "
                                         "case minor, ° diminished); after a /, the B sections' (\"Am F C G / F G "
                                         "Em Am\"); an outro holds the first chord. auto draws a progression for "
                                         "the song's key, none plays none; a model without a chords conditioner "
                                         "samples without them. \\[default: auto]"),
    sampler: Optional[str] = typer.Option(
        None, help="dpmpp-2m, dpmpp-2m-sde or euler. \\[default: the model's, dpmpp-2m]"),
    model: Optional[Path] = typer.Option(None, help="Generator file, or Stable Audio Open folder (model_config.json + "
                                         "model.safetensors). \\[default: the bundled model; see `salong info`]"),
    text_encoder: Optional[Path] = typer.Option(None, help="T5 folder for a Stable Audio Open --model. \\[default: a "
                                                "t5-base folder inside or beside it, or its text_encoder/]"),
    fmt: Optional[str] = typer.Option(None, "--format", help="wav, flac, ogg or mp3. \\[default: from -o, else wav]"),
    bit_depth: Optional[str] = _BIT_DEPTH,
    loudness: Optional[float] = typer.Option(None, "--loudness", help="Normalise to this integrated loudness, LUFS "
                                             "(ITU-R BS.1770), -70 to 0: -14 for streaming, -23 for broadcast; one "
                                             "gain, its true peak kept under --peak-db. \\[default: off: a song is "
                                             "only scaled down where it would clip]"),
    peak_db: Optional[float] = typer.Option(None, "--peak-db", help="True-peak ceiling of --loudness, dBTP (4x "
                                            "oversampled), -20 to 0. \\[default: -1]"),
    limit: bool = typer.Option(False, "--limit/--no-limit", help="With --loudness: where its gain would lift the "
                               "true peak over --peak-db, turn those peaks down (a look-ahead limiter) so the "
                               "loudness is reached. \\[default: off: the ceiling wins and the song stays quieter]"),
    prompts: Optional[Path] = typer.Option(None, help="Batch file: a prompt per line, or JSON lines with prompt, "
                                           "seconds, seed, output, negative, bpm, key, meter, drums, form, chords."),
    n: int = typer.Option(1, "-n", help="Variations per prompt, 1 to 10,000 (consecutive seeds)."),
    name: str = typer.Option(
        DEFAULT_NAME, help="Output name template: {slug} {seed} {index} {variation} {seconds} {ext}."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Leave songs whose output file exists."),
    overwrite: bool = _OVERWRITE,
    frames: Optional[Frames] = typer.Option(None, help="needed: sample only the latent frames the song needs (faster "
                                            "for short songs); window: the model's whole window, then cut (what "
                                            "models trained on whole windows expect). \\[default: the model's: "
                                            "window for Stable Audio Open, needed for salong models]"),
    full_window: bool = typer.Option(False, "--full-window", help="Same as --frames window."),
    init_audio: Optional[Path] = typer.Option(None, help="Audio-to-audio: start from this audio file (resampled, cut "
                                              "or padded to the song), noised to --init-noise-level."),
    init_noise_level: Optional[float] = typer.Option(None, help="Noise level of --init-audio: a sigma above "
                                                     "sigma_min for v-objective models (about 1 stays close to the "
                                                     "input, 50+ follows the prompt), t in (0, 1] for rectified flow."),
    inpaint: Optional[Path] = typer.Option(None, "--inpaint", metavar="SONG", help="Regenerate seconds --from to "
                                           "--to of SONG for the prompt and keep the rest, sample for sample "
                                           "outside a 50 ms crossfade at each side (moved up to 0.25 s into the "
                                           "region, where the splice changes least); the song keeps its length."),
    start: Optional[float] = typer.Option(None, "--from", metavar="S", help="Start of the --inpaint region, "
                                          "seconds into SONG, 0 or more. With --extend: keep SONG's first S seconds "
                                          "(0 < S <= its length) and make the rest. \\[default: where SONG's sound "
                                          "ends, past a silent tail]"),
    end: Optional[float] = typer.Option(None, "--to", metavar="E", help="End of the --inpaint region, seconds: "
                                        "after --from, at most SONG's length; the region fits the model's window. "
                                        "With --extend-before: keep SONG from E seconds on (0 <= E < its length). "
                                        "\\[default: where SONG's sound starts]"),
    extend: Optional[Path] = typer.Option(None, "--extend", metavar="SONG", help="Continue SONG to -s TOTAL seconds "
                                          "from --from S, keeping its own samples up to there (by default where its "
                                          "sound ends: a silent tail, under -50 dBFS for 0.25 s or more, is left "
                                          "out); past a --from inside SONG, its crossfade may move up to 0.25 s on, "
                                          "to where the splice changes least. With no --key (--bpm) given or stated, "
                                          "in SONG's: those its recipe records where salong made it (past its end, "
                                          "its chords too), else those estimated from it."),
    extend_before: bool = typer.Option(False, "--extend-before/--extend-after", help="With --extend: add the new "
                                       "part before SONG's start (an intro) instead of after its end."),
    keep_silence: bool = typer.Option(False, "--keep-silence/--skip-silence", help="With --extend and no --from "
                                      "(--to): keep SONG's silent tail (head) and extend from its very end (start), "
                                      "as salong did before it skipped them."),
    loop: bool = typer.Option(False, "--loop/--no-loop", help="A seamless loop: the song's end flows into its "
                              "start. With a tempo (--bpm or stated) its length snaps to whole bars."),
    lora: Optional[List[str]] = typer.Option(None, "--lora", metavar="FILE[:STRENGTH]", help="A LoRA adapter made "
                                             "by `salong train export` for this model, with its strength, -10 to 10 "
                                             "(1 = as trained, 0 = the base model, negative = away from the style); "
                                             "repeat to stack adapters. \\[default strength: 1]"),
    lora_merge: bool = typer.Option(False, "--lora-merge/--no-lora-merge", help="Bake the --lora adapters into a "
                                    "copy of the DiT's weights: as fast as the base model, equal to adapters on the "
                                    "fly to float rounding. --no-lora-merge: on the fly (for --like)."),
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
    from salong.batch import generate_songs
    from salong.request import SongRequest

    if like is not None and prompts is not None:
        raise SalongError("--like makes one take again, --prompts a batch; give only one of them")
    if like is not None and n > 1 and not _given(ctx, "seed"):
        seed = None  # -n asks for new takes, not the take again
    if (prompt is None) == (prompts is None):
        raise SalongError("give a PROMPT or --prompts FILE (one of the two)")
    frames = "window" if full_window else getattr(frames, "value", frames)  # an enum, or a str from --like
    if inpaint is not None and _given(ctx, "seconds"):
        warnings.warn("--inpaint keeps the song's own length; -s is not used")
    if like is not None and inpaint is None:
        start, end, keep_silence = _cut_over_take(ctx, start, end, keep_silence)
    # bad settings fail here, before the model loads
    base = SongRequest(prompt or "", seconds, seed=seed, steps=steps, cfg=cfg, cfg_interval=cfg_interval,
                       sampler=sampler, frames=frames,
                       negative=negative, init_audio=init_audio, init_noise_level=init_noise_level,
                       bpm=bpm, key=key, meter=meter, drums=drums, form=form, chords=chords, lora=lora or None,
                       lora_merge=lora_merge,
                       bit_depth=bit_depth, loudness=loudness, peak_db=peak_db, limit=limit, inpaint=inpaint,
                       start=start, end=end, extend=extend, extend_before=extend_before, keep_silence=keep_silence,
                       loop=loop)
    generate_songs(base, _reporter(json_out), prompts=prompts, variations=n, out=out, name=name, fmt=fmt,
                   model=model, text_encoder=text_encoder, device=device, skip_existing=skip_existing,
                   overwrite=overwrite, progress=progress,
                   take=like if like is not None and not _given(ctx, "model") else None,
                   lora_take=like if like is not None and not _given(ctx, "lora") else None, source_take=like)


import salong.cli_train  # noqa: E402,F401  `salong train ...`, registered on `app`


# --- entry point ---------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> None:
    """Run the CLI; every failure becomes one line on stderr and a non-zero exit status."""
    # a library warning (a skipped file, a mixed-down input) is one line too
    warnings.showwarning = lambda message, category, *_args, **_kw: err.print(
        f"{'note' if issubclass(category, Note) else 'warning'}: {message}", highlight=False, soft_wrap=True)
    try:
        os.getcwd()
    except OSError:  # torch fails to load its libraries from a deleted folder, with a misleading message
        print_error("the working folder no longer exists (deleted?); cd to a folder that exists and run again")
        sys.exit(1)
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
        # typer 0.29 words a bad choice "Value error, ..."
        message = exc.format_message().replace(": Value error, ", ": ").rstrip(".")
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
