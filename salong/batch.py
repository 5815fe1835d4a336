"""Batch renders: a prompts file and variations turned into a list of jobs, each with its
own output path, rendered with one loaded model; a failing job never stops the others."""

from __future__ import annotations

import json
import math
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from salong.errors import SalongError

DEFAULT_NAME = "{slug}_{seed}.{ext}"
NAME_FIELDS = ("slug", "seed", "index", "variation", "seconds", "ext")


@dataclass(frozen=True)
class Job:
    """One song to render."""

    prompt: str
    seconds: float
    seed: int
    output: Path
    negative_prompt: str | None
    source: str  # where the job came from, for messages: "prompt" or "prompts.txt line 3"


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
    objects with `prompt` and optionally `seconds`, `seed`, `output`, `negative`.
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
    unknown = sorted(set(entry) - {"prompt", "seconds", "seed", "output", "negative"})
    if unknown:
        return f"unknown keys {unknown}; use prompt, seconds, seed, output, negative"
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
    return None


def plan_jobs(
    entries: list[dict[str, Any] | BadLine],
    seconds: float,
    variations: int,
    seed: int | None,
    out: Path | None,
    name: str,
    ext: str,
    negative_prompt: str | None,
) -> list[Job | BadLine]:
    """Expand entries into jobs: `variations` per entry with consecutive seeds (random when
    no seed is given), output paths from the name template inside folder `out`, or `out`
    itself for a single job."""
    if variations < 1:
        raise SalongError(f"-n must be at least 1, got {variations}")
    _check_template(name)
    many = variations > 1 or len(entries) > 1
    jobs: list[Job | BadLine] = []
    for index, entry in enumerate(entries):
        if isinstance(entry, BadLine):
            jobs.append(entry)
            continue
        base_seed = entry.get("seed", seed)
        for variation in range(variations):
            job_seed = secrets.randbits(31) if base_seed is None else base_seed + variation
            job_seconds = float(entry.get("seconds", seconds))
            fields = dict(slug=slug(entry["prompt"]), seed=job_seed, index=index, variation=variation,
                          seconds=f"{job_seconds:g}", ext=ext)
            if "output" in entry and variations == 1:
                target = Path(entry["output"])
                target = target if target.is_absolute() or out is None else out / target
            elif out is not None and not many and not out.is_dir():
                target = out
            else:
                target = (out or Path(".")) / name.format(**fields)
            jobs.append(Job(prompt=entry["prompt"], seconds=job_seconds, seed=job_seed, output=target,
                            negative_prompt=entry.get("negative", negative_prompt), source=entry["source"]))
    outputs = [j.output for j in jobs if isinstance(j, Job)]
    clashes = sorted({str(p) for p in outputs if outputs.count(p) > 1})
    if clashes:
        raise SalongError(f"several songs would be written to {clashes[0]!r}; put {{seed}} or {{index}} in --name")
    return jobs


def _check_template(name: str) -> None:
    try:
        name.format(slug="x", seed=0, index=0, variation=0, seconds="1", ext="wav")
    except (KeyError, IndexError, ValueError) as exc:
        raise SalongError(f"bad --name template {name!r} ({exc}); use fields {{{'}, {'.join(NAME_FIELDS)}}}") from None
