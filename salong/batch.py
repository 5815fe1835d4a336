"""Batch renders: a prompts file and variations turned into a list of jobs, each with its
own output path, rendered with one loaded model; a failing job never stops the others.

    jobs = plan_jobs(read_prompts(path), 30.0, 1, None, Path("songs"), DEFAULT_NAME, "wav", None)
    for result in render(Generator.load(model), jobs, skip_existing=True):
        ...  # a Rendered, Skipped or Failed per job, in order
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from salong.controls import Controls, resolve
from salong.errors import SalongError
from salong.outputs import (DEFAULT_NAME, batch_folder, check_template, check_writable, named_output,
                            refuse_clashes, refuse_existing)

if TYPE_CHECKING:
    from salong.distributed import Dist
    from salong.pipeline import Generator, Song

# What `render` reports through `progress(job, stage, done, total)`, in order; only
# "sampling" has a count (its steps), the others report 0 of 0.
STAGES = ("encoding the prompt", "sampling", "decoding", "writing")
RenderProgress = Callable[["Job", str, int, int], None]


@dataclass(frozen=True)
class Job:
    """One song to render."""

    prompt: str
    seconds: float
    seed: int
    output: Path
    negative_prompt: str | None
    source: str  # where the job came from, for messages: "prompt" or "prompts.txt line 3"
    flags: dict[str, Any] = dataclasses.field(default_factory=dict)  # bpm, key, meter as given (the recipe's)
    controls: Controls = Controls()  # what the song asks for: the flags over what the prompt states


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
    and `meter`.
    Blank lines and lines starting with `#` are skipped."""
    if not path.is_file():
        raise SalongError(f"prompts file {str(path)!r} not found; give a text file with one prompt per line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise SalongError(f"prompts file {str(path)!r} is not UTF-8 text") from None
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
            entry = json.loads(text)
        except json.JSONDecodeError as exc:
            entries.append(BadLine(source, f"invalid JSON ({exc.msg} at column {exc.colno})"))
            continue
        problem = _check_entry(entry)
        entries.append(BadLine(source, problem) if problem else {**entry, "source": source})
    if not entries:
        raise SalongError(f"prompts file {str(path)!r} has no prompts")
    return entries


def _check_entry(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "a JSON line must be an object like {\"prompt\": \"...\", \"seconds\": 30}"
    unknown = sorted(set(entry) - {"prompt", "seconds", "seed", "output", "negative", *CONTROL_FLAGS})
    if unknown:
        return f"unknown keys {unknown}; use prompt, seconds, seed, output, negative, bpm, key, meter"
    if not isinstance(entry.get("prompt"), str):
        return "needs a \"prompt\" string"
    seconds = entry.get("seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not math.isfinite(seconds) or seconds <= 0):
        return f"seconds must be a number above 0, got {seconds!r}"
    seed = entry.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        return f"seed must be a whole number >= 0, got {seed!r}"
    if "output" in entry and not isinstance(entry["output"], str):
        return "output must be a file name string"
    if "negative" in entry and not isinstance(entry["negative"], str):
        return "negative must be a string"
    for name in CONTROL_FLAGS:
        value = entry.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
            return f"{name} must be a string or number, got {value!r}"
    return None


CONTROL_FLAGS = ("bpm", "key", "meter")


def plan_jobs(
    entries: list[dict[str, Any] | BadLine],
    seconds: float,
    variations: int,
    seed: int | None,
    out: Path | None,
    name: str,
    ext: str,
    negative_prompt: str | None,
    flags: dict[str, Any] | None = None,
) -> list[Job | BadLine]:
    """Expand entries into jobs: `variations` per entry with consecutive seeds, output paths
    from the name template inside folder `out`, or `out` itself for a single job.

    Without a seed, a prompts-file line gets seeds derived from its text and line number
    (`line_seed`), so rerunning a batch makes the same songs under the same names and
    `--skip-existing` finds them; a single prompt from the command line gets a random
    seed. Every output stays inside `out` (or the working folder): a name that leaves it
    is refused with its line.

    `flags` (bpm, key, meter from the command line; a line's own win) are checked against
    each prompt here (`salong.controls.resolve`), so a bad value fails before any model loads."""
    if variations < 1:
        raise SalongError(f"-n must be at least 1, got {variations}")
    if seed is not None and seed < 0:
        raise SalongError(f"--seed must be a whole number >= 0, got {seed}")
    check_template(name)
    many = variations > 1 or len(entries) > 1
    folder = batch_folder(out, variations * len(entries))
    jobs: list[Job | BadLine] = []
    for index, entry in enumerate(entries):
        if isinstance(entry, BadLine):
            jobs.append(entry)
            continue
        if not entry["prompt"].strip():
            message = "the prompt is empty; describe the music, e.g. \"calm piano at 70 BPM\""
            if entry["source"] == "prompt":
                raise SalongError(message)
            jobs.append(BadLine(entry["source"], message))
            continue
        given = {k: entry.get(k, (flags or {}).get(k)) for k in CONTROL_FLAGS}
        given = {k: v for k, v in given.items() if v is not None}
        try:
            controls = resolve(entry["prompt"], **given)
        except SalongError as exc:
            if entry["source"] == "prompt":
                raise
            jobs.append(BadLine(entry["source"], str(exc)))
            continue
        base_seed = entry.get("seed", seed)
        for variation in range(variations):
            if base_seed is not None:
                job_seed = base_seed + variation
            elif entry["source"] == "prompt":
                job_seed = secrets.randbits(31)
            else:
                job_seed = line_seed(entry["prompt"], index, variation)
            job_seconds = float(entry.get("seconds", seconds))
            fields = dict(slug=slug(entry["prompt"]), seed=job_seed, index=index, variation=variation,
                          seconds=f"{job_seconds:g}", ext=ext)
            try:
                if "output" in entry and variations == 1:
                    target = named_output(folder, entry["output"])
                elif out is not None and not many and not out.is_dir():
                    target = out
                else:
                    target = named_output(folder, name.format(**fields))
            except SalongError as exc:
                jobs.append(BadLine(entry["source"], str(exc)))
                continue
            jobs.append(Job(prompt=entry["prompt"], seconds=job_seconds, seed=job_seed, output=target,
                            negative_prompt=entry.get("negative", negative_prompt), source=entry["source"],
                            flags=given, controls=controls))
    refuse_clashes([j.output for j in jobs if isinstance(j, Job)])
    return jobs


def line_seed(prompt: str, index: int, variation: int) -> int:
    """The seed of a prompts-file line given no seed: a hash of its text and position."""
    digest = hashlib.sha256(f"{index}\0{variation}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1  # 31 bits, like a random seed


@dataclass(frozen=True)
class Rendered:
    """A job's song, written to `path`."""

    job: Job
    path: Path
    song: Song
    elapsed: float  # seconds for sampling, decoding and writing

    def record(self, model: str | Path) -> dict[str, Any]:
        """The song's settings as one JSON-ready record (what `salong generate --json` prints)."""
        song = self.song
        return dict(path=str(self.path), prompt=song.prompt, seconds=song.seconds, seed=song.seed, steps=song.steps,
                    cfg=song.cfg_scale, sampler=song.sampler, negative=song.negative_prompt,
                    **{name: song.controls.record().get(name) for name in CONTROL_FLAGS}, model=str(model),
                    elapsed=round(self.elapsed, 3))


@dataclass(frozen=True)
class Skipped:
    """A job left alone: its output file exists (`skip_existing`)."""

    job: Job


@dataclass(frozen=True)
class Failed:
    """A job (or prompts-file line) that failed; `message` is one line."""

    source: str
    message: str


def check_jobs(generator: Generator, jobs: list[Job | BadLine], fmt: str | None = None,
               overwrite: bool = False, skip_existing: bool = False) -> list[Job | BadLine]:
    """The pre-flight checks of each job (output format, writable output that is not an
    existing file unless `overwrite` or `skip_existing`, a length the model can make): a
    job that fails one becomes a BadLine, before minutes of sampling."""
    from salong.audio import output_format

    checked: list[Job | BadLine] = []
    for job in jobs:
        if isinstance(job, Job):
            try:
                output_format(job.output, fmt)
                check_writable(job.output)
                refuse_existing(job.output, overwrite or skip_existing)
                generator.check_seconds(job.seconds)
            except SalongError as exc:
                job = BadLine(job.source, str(exc))
        checked.append(job)
    return checked


def render(
    generator: Generator,
    jobs: list[Job | BadLine],
    *,
    steps: int | None = None,
    cfg_scale: float | None = None,
    sampler: str | None = None,
    full_window: bool = False,
    skip_existing: bool = False,
    overwrite: bool = False,
    fmt: str | None = None,
    progress: RenderProgress | None = None,
    frames: str | None = None,
    init_audio: tuple[Any, int] | None = None,
    init_noise_level: float | None = None,
    recipe_extra: dict[str, Any] | None = None,
) -> Iterator[Rendered | Skipped | Failed]:
    """Render `jobs` with one loaded generator, yielding one result per job in order.

    Sampling settings default to the model's and are checked before anything is
    rendered (a bad one raises SalongError), as are the jobs (`check_jobs`); a job that
    fails, there or while rendering, comes back as `Failed` and the others still run.
    `skip_existing` leaves jobs whose output file exists; otherwise an existing file is an
    error unless `overwrite` (`refuse_existing`). `fmt` is the audio format
    (default: from each output's extension). `progress(job, stage, done, total)` hears
    the `STAGES` of each job. `frames`, `init_audio` and `init_noise_level` go to
    `Generator.generate` for every job. Every file carries its recipe (`salong.recipe`) in
    its tags; `recipe_extra` adds the batch's own fields to it (the init audio's path, a
    text encoder given apart from the model)."""
    from salong.audio import output_format, write_audio
    from salong.pipeline import check_frames
    from salong.recipe import Recipe, model_fields

    steps, cfg_scale, sampler = generator.settings(steps, cfg_scale, sampler)
    if init_noise_level is not None:
        generator.check_init_noise_level(init_noise_level)
    frame_mode = "window" if full_window else check_frames(frames or generator.config.sampling.frames)
    model = {**model_fields(generator.source), **(recipe_extra or {})}
    report = progress or (lambda job, stage, done, total: None)
    for job in check_jobs(generator, jobs, fmt, overwrite, skip_existing):
        if isinstance(job, BadLine):
            yield Failed(job.source, job.message)
            continue
        if skip_existing and job.output.exists():
            yield Skipped(job)
            continue

        def sampling(done: int, total: int, job: Job = job) -> None:
            report(job, "sampling", done, total)
            if done == total:
                report(job, "decoding", 0, 0)

        start = time.perf_counter()
        try:
            recipe = Recipe(prompt=job.prompt, seconds=job.seconds, seed=job.seed, steps=steps, cfg_scale=cfg_scale,
                            sampler=sampler, negative_prompt=job.negative_prompt, frames=frame_mode,
                            init_noise_level=init_noise_level, **model, **job.flags)
            tags = recipe.tags(output_format(job.output, fmt))
            report(job, "encoding the prompt", 0, 0)
            song = generator.generate(job.prompt, job.seconds, steps=steps, cfg_scale=cfg_scale, seed=job.seed,
                                      negative_prompt=job.negative_prompt, sampler=sampler,
                                      progress=sampling, frames=frame_mode,
                                      init_audio=init_audio, init_noise_level=init_noise_level,
                                      **job.flags)
            report(job, "writing", 0, 0)
            path = write_audio(job.output, song.audio, song.sample_rate, fmt, tags)
        except SalongError as exc:
            yield Failed(job.source, str(exc))
            continue
        yield Rendered(job, path, song, time.perf_counter() - start)


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


@dataclass
class Tally:
    """What a batch did, for its summary line."""

    rendered: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0

    def add(self, result: Rendered | Skipped | Failed) -> None:
        if isinstance(result, Rendered):
            self.rendered += 1
            self.audio_seconds += result.song.seconds
        elif isinstance(result, Skipped):
            self.skipped += 1
        else:
            self.failed += 1

    def summary(self, wall_seconds: float) -> str:
        """One line: counts, audio made, wall time and real-time factor (wall time / audio time)."""
        line = (f"{self.rendered} rendered, {self.skipped} skipped, {self.failed} failed; "
                f"{self.audio_seconds:.1f} s of audio in {wall_seconds:.1f} s")
        if self.audio_seconds > 0:
            line += f", real-time factor {wall_seconds / self.audio_seconds:.3g}"
        return line
