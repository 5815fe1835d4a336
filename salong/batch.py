"""Batch work with one loaded model: songs from a prompt or a prompts file (`generate_songs`,
what `salong generate` runs), and salong's policy for every command that makes several
files (`Tally`): a failing item is one line and never stops the others (`salong.codec_files`
applies it to encode and decode).

    base = SongRequest("", 30.0, steps=50)  # the command line's settings
    jobs = plan_jobs(read_prompts(path), base, 1, Path("songs"), DEFAULT_NAME, "wav")
    for result in render(Generator.load(model), jobs, skip_existing=True):
        ...  # a Rendered, Skipped or Failed per job, in order
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Union

from salong.checks import random_seed, refuse_special
from salong.errors import SalongError
from salong.outputs import (DEFAULT_NAME, batch_folder, check_output_name,
                            check_template, check_writable, ensure_folder, format_name, is_stream, named_output,
                            refuse_clashes, refuse_existing, refuse_inputs)
from salong.progress import status_bar
from salong.request import CONTROL_FIELDS, SongRequest
from salong.textfile import parse_json, read_lines

if TYPE_CHECKING:
    from salong.distributed import Dist
    from salong.pipeline import Generator, Song

# What `render` reports through `progress(job, stage, done, total)`, in order; only
# "sampling" has a count (its steps), the others report 0 of 0.
STAGES = ("encoding the prompt", "sampling", "decoding", "writing")
RenderProgress = Callable[["Job", str, int, int], None]
EDIT_KEYS = ("inpaint", "start", "end", "extend", "extend_before", "loop")  # `salong.edit`; "from", "to" too
LINE_KEYS = ("prompt", "seconds", "seed", "negative", *CONTROL_FIELDS, *EDIT_KEYS)  # a line's request fields
FLAG_KEYS = {"from": "start", "to": "end"}  # a line may name the region as the flags do
MAX_VARIATIONS = 10_000  # -n
MAX_SONGS = 100_000  # songs of one run: prompts x -n (each planned job is kept in memory)
# `--json`, with the controls and the edit (`EDIT_KEYS`)
RECORD_FIELDS = ("prompt", "seconds", "seed", "steps", "cfg", "cfg_interval", "sampler", "negative")


@dataclass(frozen=True)
class Job:
    """One song to render: what it asks for, where it goes, and where it came from (for
    messages: "prompt" or "prompts.txt line 3")."""

    request: SongRequest
    output: Path
    source: str


@dataclass(frozen=True)
class BadLine:
    """A prompts-file line that could not become a job."""

    source: str
    message: str


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "song"


def read_prompts(path: Path) -> list[dict[str, Any] | BadLine]:
    """Entries of a prompts file: plain lines are prompts; lines starting with `{` are JSON
    objects with `prompt` and optionally `seconds`, `seed`, `output`, `negative`, `bpm`, `key`
    `meter`, `drums`, `form` and `chords`, and an edit (`salong.edit`): `inpaint` (a file) with `from` and `to`
    (or `start` and `end`), `extend` (a file) with `extend_before` and its cut, `from` (before
    its start: `to`), or `loop` (their values are checked as the song's request, `plan_jobs`).
    Blank lines and lines starting with `#` are skipped."""
    refuse_special(path, "prompts file")
    if not path.is_file():
        raise SalongError(f"prompts file {str(path)!r} not found; give a text file with one prompt per line")
    lines = read_lines(path, "prompts file")  # split at newlines only: a form feed or U+2028 is inside a line
    entries: list[dict[str, Any] | BadLine] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        source = f"{path.name} line {number}"
        if not text.startswith("{"):
            entries.append({"prompt": text, "source": source})
            continue
        try:
            entry = parse_json(text)
        except json.JSONDecodeError as exc:
            entries.append(BadLine(source, f"invalid JSON ({exc.msg} at column {exc.colno})"))
            continue
        problem = _check_entry(entry)
        entries.append(BadLine(source, problem) if problem else {**entry, "source": source})
    if not entries:
        raise SalongError(f"prompts file {str(path)!r} has no prompts")
    return entries


def _check_entry(entry: Any) -> str | None:
    """The shape of a JSON line (its values are the request's to check)."""
    if not isinstance(entry, dict):
        return "a JSON line must be an object like {\"prompt\": \"...\", \"seconds\": 30}"
    unknown = sorted(set(entry) - {*LINE_KEYS, *FLAG_KEYS, "output"})
    if unknown:
        return (f"unknown keys {unknown}; use prompt, seconds, seed, output, negative, bpm, key, meter, drums, "
                "form, chords, inpaint, from, to, extend, extend_before, loop")
    for flag, name in FLAG_KEYS.items():
        if flag in entry and name in entry:
            return f"give the region's {flag!r} or {name!r}, not both"
    for name in ("inpaint", "extend"):
        if name in entry and not isinstance(entry[name], str):
            return f"{name} must be an audio file name string, got {entry[name]!r}"
    if not isinstance(entry.get("prompt"), str):
        return "needs a \"prompt\" string"
    if "output" in entry and not isinstance(entry["output"], str):
        return "output must be a file name string"
    if "output" in entry and (entry["output"].strip() in ("", ".", "..") or entry["output"].endswith(("/", "\\"))):
        return f"output must name a file, got {entry['output']!r}; give a name such as \"song.wav\", or leave it out"
    return None


def plan_jobs(entries: list[dict[str, Any] | BadLine], base: SongRequest, variations: int, out: Path | None,
              name: str, ext: str) -> list[Job | BadLine]:
    """Expand entries into jobs: each entry's settings over `base` (the command line's),
    `variations` per entry with consecutive seeds, output paths from the name template inside
    folder `out`, or `out` itself for a single job.

    Without a seed, a prompts-file line gets seeds derived from its text and line number
    (`line_seed`), so rerunning a batch makes the same songs under the same names and
    `--skip-existing` finds them; a single prompt from the command line gets a random
    seed. Every output stays inside `out` (or the working folder): a name that leaves it
    is refused with its line. A line whose request is bad (`SongRequest`) is refused with
    its line too; the command line's own prompt fails the command, before any model loads."""
    if not 1 <= variations <= MAX_VARIATIONS:
        raise SalongError(f"-n must be at least 1 and at most {MAX_VARIATIONS:,}, got {variations}")
    if variations * len(entries) > MAX_SONGS:
        raise SalongError(f"{len(entries):,} prompts x -n {variations:,} is {variations * len(entries):,} songs, more "
                          f"than one run makes ({MAX_SONGS:,}); split the prompts file or lower -n")
    check_template(name)
    many = variations > 1 or len(entries) > 1
    folder = batch_folder(out, variations * len(entries))
    jobs: list[Job | BadLine] = []
    for index, entry in enumerate(entries):
        if isinstance(entry, BadLine):
            jobs.append(entry)
            continue
        source = entry["source"]
        try:
            if not entry["prompt"].strip():
                raise SalongError("the prompt is empty; describe the music, e.g. \"calm piano at 70 BPM\"")
            own = {FLAG_KEYS.get(k, k): v for k, v in entry.items() if k in LINE_KEYS or k in FLAG_KEYS}
            request = base if own == {"prompt": base.prompt} else dataclasses.replace(base, **own)
        except SalongError as exc:
            if source == "prompt":
                raise
            jobs.append(BadLine(source, str(exc)))
            continue
        for variation in range(variations):
            if request.seed is not None:
                seed = request.seed + variation
            elif source == "prompt":
                seed = random_seed()
            else:
                seed = line_seed(request.prompt, index, variation)
            fields = dict(slug=slug(request.prompt), seed=seed, index=index, variation=variation,
                          seconds=f"{request.seconds:g}", ext=ext)
            try:
                if "output" in entry and variations == 1:
                    target = named_output(folder, entry["output"])
                elif out is not None and not many and not out.is_dir():
                    target = out
                else:
                    target = named_output(folder, format_name(name, fields))
                jobs.append(Job(request.with_seed(seed), check_output_name(target), source))
            except SalongError as exc:
                if source == "prompt":
                    raise
                jobs.append(BadLine(source, str(exc)))
    refuse_clashes([j.output for j in jobs if isinstance(j, Job)])
    return jobs


def line_seed(prompt: str, index: int, variation: int) -> int:
    """The seed of a prompts-file line given no seed: a hash of its text and position."""
    digest = hashlib.sha256(f"{index}\0{variation}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1  # 31 bits, like a random seed


# --- results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """A job's song, written to `path`."""

    job: Job
    path: Path
    song: Song
    elapsed: float  # seconds for sampling, decoding and writing
    model: str | None = None  # the generator's file or folder

    def record(self) -> dict[str, Any]:
        """The song's request as one JSON-ready record (what `salong generate --json` prints):
        its settings, the tempo, key, meter and drums it asked for (options over the prompt), the form
        and chords it played (as its recipe records them, `SongRequest.resolve`), the model
        and its adapters (absolute path and strength each, or None), and its edit (the source file
        absolute; None where not an edit)."""
        request = self.song.request
        controls = request.controls.record()
        fields = request.record()
        return dict(path=str(self.path), **{name: getattr(request, name) for name in RECORD_FIELDS},
                    **{name: getattr(request, name) if name in ("form", "chords") else controls.get(name)
                       for name in CONTROL_FIELDS},
                    model=self.model,
                    lora=fields["lora"], **{name: fields[name] for name in EDIT_KEYS}, elapsed=round(self.elapsed, 3))


@dataclass(frozen=True)
class Written:
    """An input's result, written to `path` (encode, decode)."""

    source: Path
    path: Path


@dataclass(frozen=True)
class Skipped:
    """A job left alone: its output file exists (`skip_existing`)."""

    job: Job


@dataclass(frozen=True)
class Failed:
    """A job, prompts-file line or input that failed; `message` is one line. `source` says
    where it came from; None where the message names its input itself."""

    source: str | None
    message: str

    @property
    def line(self) -> str:
        return self.message if self.source is None else f"{self.source}: {self.message}"


Result = Union[Rendered, Written, Skipped, Failed]


@dataclass
class Tally:
    """What a command that makes several files did, and salong's failure policy for them: a
    failure is reported as one line and the rest still run; when there is only one item,
    its failure is the command's own error; after the rest, any failure fails the command
    (`check`)."""

    total: int
    noun: str = "songs"
    start: float = field(default_factory=time.perf_counter)
    rendered: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0

    def add(self, result: Result) -> None:
        if isinstance(result, Failed):
            if self.total == 1:
                raise SalongError(result.message if result.source in (None, "prompt") else result.line)
            self.failed += 1
        elif isinstance(result, Skipped):
            self.skipped += 1
        else:
            self.rendered += 1
            if isinstance(result, Rendered):
                self.audio_seconds += result.song.request.seconds

    def summary(self) -> str:
        """One line: counts, audio made, wall time since the start and real-time factor (wall time / audio time)."""
        wall = time.perf_counter() - self.start
        line = (f"{self.rendered} rendered, {self.skipped} skipped, {self.failed} failed; "
                f"{self.audio_seconds:.1f} s of audio in {wall:.1f} s")
        if self.audio_seconds > 0:
            line += f", real-time factor {wall / self.audio_seconds:.3g}"
        return line

    def check(self) -> None:
        if self.failed:
            raise SalongError(f"{self.failed} of {self.total} {self.noun} failed (see above)")


# --- rendering ---------------------------------------------------------------------------


def check_jobs(generator: Generator, jobs: list[Job | BadLine], fmt: str | None = None,
               overwrite: bool = False, skip_existing: bool = False) -> list[Job | BadLine]:
    """The pre-flight checks of each job (output format, writable output that is not an
    existing file unless `overwrite` or `skip_existing`), its request resolved against
    the model (`SongRequest.resolve`) and its adapters loaded for it (`Generator.adapters`:
    trained on this model): a job that fails one becomes a BadLine, before minutes of
    sampling."""
    from salong.audio import output_format

    checked: list[Job | BadLine] = []
    for job in jobs:
        if isinstance(job, Job):
            try:
                output_format(job.output, fmt)
                check_writable(job.output)
                refuse_existing(job.output, overwrite or skip_existing)
                job = dataclasses.replace(job, request=job.request.resolve(generator.config))
                generator.adapters(job.request.lora)
            except SalongError as exc:
                job = BadLine(job.source, str(exc))
        checked.append(job)
    return checked


def render(
    generator: Generator,
    jobs: list[Job | BadLine],
    *,
    skip_existing: bool = False,
    overwrite: bool = False,
    fmt: str | None = None,
    progress: RenderProgress | None = None,
    text_encoder: Path | None = None,
) -> Iterator[Rendered | Skipped | Failed]:
    """Render `jobs` with one loaded generator, yielding one result per job in order.

    Every job is checked first (`check_jobs`); a job that fails, there or while rendering,
    comes back as `Failed` and the others still run. `skip_existing` leaves jobs whose
    output file exists; otherwise an existing file is an error unless `overwrite`
    (`refuse_existing`). `fmt` is the audio format (default: from each output's
    extension). `progress(job, stage, done, total)` hears the `STAGES` of each job. Every
    file carries its recipe (`salong.recipe`) in its tags, with `text_encoder`, a T5
    folder given apart from the model."""
    from salong.audio import output_format, write_audio
    from salong.recipe import Recipe, lora_fields, model_fields, source_fields

    made_by = dict(model_fields(generator.source),
                   text_encoder=str(text_encoder.resolve()) if text_encoder is not None else None)
    model = str(generator.source) if generator.source is not None else None
    report = progress or (lambda job, stage, done, total: None)
    for job in check_jobs(generator, jobs, fmt, overwrite, skip_existing):
        if isinstance(job, BadLine):
            yield Failed(job.source, job.message)
            continue
        if skip_existing and not is_stream(job.output) and job.output.exists():  # a stream is written into
            yield Skipped(job)
            continue

        def sampling(done: int, total: int, job: Job = job) -> None:
            report(job, "sampling", done, total)
            if done == total:
                report(job, "decoding", 0, 0)

        start = time.perf_counter()
        try:
            request = as_written(job.request, output_format(job.output, fmt))
            tags = Recipe(request, **made_by, **lora_fields(request),
                          **source_fields(request)).tags(output_format(job.output, fmt))
            report(job, "encoding the prompt", 0, 0)
            song = generator.sample(job.request, progress=sampling)
            report(job, "writing", 0, 0)
            path = write_audio(job.output, song.audio, song.sample_rate, fmt, tags, bit_depth=request.bit_depth,
                               loudness=request.loudness, peak_db=request.peak_db, overwrite=overwrite,
                               limit=bool(request.limit))
        except SalongError as exc:
            yield Failed(job.source, str(exc))
            continue
        yield Rendered(job, path, song, time.perf_counter() - start, model)


def as_written(request: SongRequest, fmt: str) -> SongRequest:
    """`request` with the bit depth a file of format `fmt` gets (the default filled in; none for
    ogg and mp3), as its recipe records it; a one-line error for 32f in FLAC."""
    from salong.mastering import written_bit_depth

    written = copy.copy(request)
    object.__setattr__(written, "bit_depth", written_bit_depth(fmt, request.bit_depth))
    return written


def check_formats(jobs: list[Job | BadLine], fmt: str | None) -> list[Job | BadLine]:
    """Each job's output format and bit depth checked (`as_written`) before the model loads: a
    bad one fails the command for the command line's prompt, else becomes its line's BadLine."""
    from salong.audio import output_format

    checked: list[Job | BadLine] = []
    for job in jobs:
        if isinstance(job, Job):
            try:
                as_written(job.request, output_format(job.output, fmt))
            except SalongError as exc:
                if job.source == "prompt":
                    raise
                job = BadLine(job.source, str(exc))
        checked.append(job)
    return checked


def render_shared(generator: Generator, jobs: list[Job | BadLine], d: Dist,
                  **options: Any) -> Iterator[Rendered | Skipped | Failed]:
    """`render` across the K processes of a torchrun job, one generator each: rank r renders
    jobs r, r + K, r + 2K, ...; then rank 0 yields every job's result in job order (a
    Rendered's song without its audio, which is in its file) and the other ranks nothing.
    Every rank must be given the same jobs. In a single process this is `render`."""
    if not d.active:
        yield from render(generator, jobs, **options)
        return
    mine = [_without_audio(result) for result in render(generator, jobs[d.rank::d.world_size], **options)]
    shares = d.gather(mine)  # shares[r][i] is the result of job r + i * K
    if d.main:
        for index in range(len(jobs)):
            yield shares[index % d.world_size][index // d.world_size]


def _without_audio(result: Rendered | Skipped | Failed) -> Rendered | Skipped | Failed:
    if not isinstance(result, Rendered):
        return result
    return dataclasses.replace(result, song=dataclasses.replace(result.song, audio=result.song.audio[:, :0]))


def edit_source(request: SongRequest) -> Path | None:
    """The file an inpaint or extend request edits, if it is one given by file."""
    source = request.inpaint if request.inpaint is not None else request.extend
    return Path(source.path) if source is not None and source.path is not None else None


def _checked_edit(job: Job | BadLine, window: float | None) -> Job | BadLine:
    """`job` with its edit checked (`salong.edit.check_edit`): a bad one fails the command
    for the command line's prompt, else becomes its line's BadLine."""
    from salong.edit import check_edit

    if isinstance(job, BadLine):
        return job
    try:
        check_edit(job.request, window)
    except SalongError as exc:
        if job.source == "prompt":
            raise
        return BadLine(job.source, str(exc))
    return job


def generate_songs(
    base: SongRequest,
    show: Callable[[Result | Tally], None],
    *,
    prompts: Path | None = None,
    variations: int = 1,
    out: Path | None = None,
    name: str = DEFAULT_NAME,
    fmt: str | None = None,
    model: Path | None = None,
    text_encoder: Path | None = None,
    device: str = "auto",
    skip_existing: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    take: Path | None = None,
    lora_take: Path | None = None,
    source_take: Path | None = None,
) -> None:
    """`salong generate`: the songs of `base`, or of each line of a `prompts` file over
    `base`'s settings (`plan_jobs`), `variations` each, rendered with one model (`model`,
    default the bundled one; `text_encoder`: a T5 folder for a Stable Audio Open folder).

    Everything that needs no model (the request, the init audio, outputs, the prompts file)
    is checked before the model loads. `show` hears every result in order and, for several
    songs, the `Tally` (its summary line); failures follow the `Tally` policy. `take` is
    the song whose model this is (`--like` without `--model`): a model changed since is a
    warning, a missing one an error; `lora_take` likewise the song whose `--lora` adapters
    these are (`--like` without `--lora`), and `source_take` the song remade with `--like`, whose
    edit's source file changed since is a warning. Under `torchrun --nproc_per_node=K` the songs are
    shared out over K processes, one model each (`render_shared`); rank 0 shows them."""
    from salong.audio import output_format
    from salong.bundled import default_generator
    from salong.distributed import process_group, resolve_device, wants_cuda
    from salong.lora import check_adapter_file
    from salong.edit import check_edit, edit_mode
    from salong.pipeline import window_seconds
    from salong.recipe import check_take_adapters, check_take_model, check_take_source
    from salong.sao import load_generator

    start = time.perf_counter()
    if base.init_audio is not None:
        _ = base.init_audio.samples  # read once, now: an unreadable file fails before the model loads
    if source_take is not None:
        check_take_source(source_take, base)
    if lora_take is not None:
        check_take_adapters(lora_take)
    for adapter in base.lora or ():
        check_adapter_file(adapter.path)  # a missing or unreadable adapter fails before the model loads
    ext = output_format(out if out is not None and out.suffix and fmt is None else Path("x.wav"), fmt)
    entries = read_prompts(prompts) if prompts is not None else [{"prompt": base.prompt, "source": "prompt"}]
    jobs = check_formats(plan_jobs(entries, base, variations, out, name, ext), fmt)
    sources = [prompts, take, lora_take, model, text_encoder, *(Path(a.path) for a in base.lora or ()),
               Path(base.init_audio.path) if base.init_audio is not None and base.init_audio.path else None,
               *(edit_source(job.request) for job in jobs if isinstance(job, Job))]
    refuse_inputs([job.output for job in jobs if isinstance(job, Job)], [s for s in sources if s is not None])
    model = model if model is not None else default_generator()
    refuse_special(model, "model")  # named as the model, before anything reads it
    # each edit's source read once and its region checked, in the model's window, before the model loads
    edits = any(edit_mode(r) is not None for r in (base, *(j.request for j in jobs if isinstance(j, Job))))
    window = window_seconds(model) if edits and model.exists() else None
    check_edit(base, window)  # the command line's own edit fails the command
    jobs = [_checked_edit(job, window) for job in jobs]
    if take is not None:
        check_take_model(take, model)
    resolve_device(device, 0)  # a missing GPU is named before torchrun's ranks try to join
    tally = Tally(len(jobs), "songs", start)
    if not any(isinstance(job, Job) for job in jobs):  # every line is bad: no model needed to say so
        for job in jobs:
            tally.add(Failed(job.source, job.message))
            show(Failed(job.source, job.message))
        show(tally)
        tally.check()
    with (process_group(wants_cuda(device)) as d,
          status_bar("loading the model", progress and d.main, unit="steps") as bar):
        generator = load_generator(model, text_encoder, resolve_device(device, d.local_rank))
        if d.main and out is not None and len(jobs) > 1:
            ensure_folder(out)
        jobs = d.from_main(jobs)  # the seeds rank 0 drew, where a prompt without --seed draws them

        def stage(job: Job, stage: str, done: int, total: int) -> None:
            bar(done, total, description=f"{job.request.prompt[:30]}: {stage}")

        for result in render_shared(generator, jobs, d, skip_existing=skip_existing, overwrite=overwrite, fmt=fmt,
                                    progress=stage, text_encoder=text_encoder):
            tally.add(result)
            show(result)
    if d.main and len(jobs) > 1:
        show(tally)
    tally.check()
