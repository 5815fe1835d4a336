"""Pieces and corpora: `make_piece` (attributes, caption and audio from a seed),
`write_corpus` (audio files plus metadata.jsonl, optionally in worker processes) and
`recaption_corpus` (more descriptions per piece for a corpus already written)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np

from salong.checks import refuse_special
from salong.errors import SalongError
from salong.outputs import folder_lock, write_atomic
from salong.synth.attributes import (_ATTRIBUTE_STREAM, _CAPTION_STREAM, _DRUMS_STREAM, _LENGTH_STREAM,
                                     _TEMPO_STREAM, DRUM_STYLES, LEADS,
                                     MAX_BPM, MAX_SECONDS, MIN_BPM, SAMPLE_RATE, PieceAttributes, _check_choice,
                                     _check_seed, random_attributes)
from salong.textfile import parse_json, read_lines
from salong.synth.captions import caption_for
from salong.synth.compose import harmony
from salong.synth.mix import render


@dataclass(frozen=True)
class Piece:
    """A rendered piece with its caption and the attributes both were made from."""

    audio: np.ndarray  # (2, samples) float32 at SAMPLE_RATE
    caption: str
    attributes: PieceAttributes


_OVERRIDABLE = tuple(f.name for f in fields(PieceAttributes) if f.name != "seconds")


def make_piece(seed: int, seconds: float, **overrides: object) -> Piece:
    """A reproducible piece: attributes, caption and audio all follow from (seed, seconds).

    Overrides fix attributes (e.g. bpm=120, drums="none"); the rest stay as the seed drew them.
    """
    _check_seed(seed)
    unknown = sorted(set(overrides) - set(_OVERRIDABLE))
    if unknown:
        raise SalongError(f"unknown attribute {unknown[0]!r}; allowed: {', '.join(_OVERRIDABLE)}")
    attrs = random_attributes(np.random.default_rng([seed, _ATTRIBUTE_STREAM]), seconds)
    attrs = replace(attrs, **overrides)
    return Piece(render(attrs, seed), captions_for(attrs, seed)[0], attrs)


def captions_for(attrs: PieceAttributes, seed: int, count: int = 1) -> list[str]:
    """Up to `count` different captions of one piece; the first is `make_piece`'s, and
    caption k depends only on (seed, k), so asking for more keeps the ones before."""
    first = caption_for(attrs, np.random.default_rng([seed, _CAPTION_STREAM]))
    more = (caption_for(attrs, np.random.default_rng([seed, _CAPTION_STREAM, k])) for k in range(1, count))
    return list(dict.fromkeys([first, *more]))


_MAX_CAPTIONS = 64


def _check_captions(captions: int) -> None:
    if (isinstance(captions, (bool, np.bool_)) or not isinstance(captions, (int, np.integer))
            or not 1 <= captions <= _MAX_CAPTIONS):
        raise SalongError(f"captions={captions!r} is not allowed; use an integer from 1 to {_MAX_CAPTIONS}")


def _metadata_line(rel: str, piece_seed: int, attrs: PieceAttributes, seconds: float, captions: int) -> str:
    texts = captions_for(attrs, piece_seed, captions)
    entry = {"path": rel, "caption": texts[0], **({"captions": texts} if captions > 1 else {}),
             "duration": seconds, "seed": piece_seed, "attributes": attrs.to_dict(),
             "chords": harmony(attrs, piece_seed)}
    return json.dumps(entry)


def _corpus_seed(seed: int, index: int) -> int:
    """Seed of piece `index` of a corpus: independent of every other piece."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


DURATION_LAWS = ("uniform", "log")


def piece_length(piece_seed: int, min_seconds: float, max_seconds: float, durations: str = "uniform") -> float:
    """A corpus piece's length: uniform in seconds, or uniform in log-seconds ("log": as many
    pieces between 5 and 10 s as between 100 and 200 s, so long pieces exist without
    dominating the hours)."""
    rng = np.random.default_rng([piece_seed, _LENGTH_STREAM])
    if durations == "log":
        length = math.exp(rng.uniform(math.log(min_seconds), math.log(max_seconds)))
    else:
        length = rng.uniform(min_seconds, max_seconds)
    return min(max(round(float(length), 2), min_seconds), max_seconds)


MAX_PIECES = 1_000_000  # piece names have six digits
BYTES_PER_SECOND = {"wav": SAMPLE_RATE * 2 * 2, "flac": SAMPLE_RATE * 2 * 2 * 0.7}  # 16-bit stereo; FLAC about 70%


def mean_length(min_seconds: float, max_seconds: float, durations: str) -> float:
    """The average piece length of a length law (`piece_length`)."""
    if durations == "log" and max_seconds > min_seconds:
        return (max_seconds - min_seconds) / math.log(max_seconds / min_seconds)
    return (min_seconds + max_seconds) / 2


def check_room(out: Path, n: int, min_seconds: float, max_seconds: float, durations: str, fmt: str) -> None:
    """A corpus of `n` pieces fits on the disk of `out`, or a one-line error before any work."""
    need = n * mean_length(min_seconds, max_seconds, durations) * BYTES_PER_SECOND[fmt]
    folder = next((p for p in (out, *out.absolute().parents) if p.is_dir()), Path("."))
    free = shutil.disk_usage(folder).free
    if need > free:
        raise SalongError(f"{n} pieces need about {need / 1e9:,.1f} GB ({fmt}, "
                          f"{mean_length(min_seconds, max_seconds, durations):.1f} s a piece on average), but "
                          f"{str(folder)!r} has {free / 1e9:,.1f} GB free; make fewer or shorter pieces")


def corpus_overrides(piece_seed: int, lead: str | None, bpm_range: tuple[int, int] | None,
                     no_drums: float | None = None) -> dict[str, object]:
    """The attributes a restricted corpus fixes for one piece: its `lead`, a tempo drawn
    uniformly from `bpm_range` (inclusive), and, with `no_drums`, no drums with that
    probability (else the groove the seed draws, or where it draws none, one of the grooves
    uniformly), each on a stream of its own, so the piece's other attributes are those the
    seed draws without restrictions."""
    overrides: dict[str, object] = {}
    if lead is not None:
        overrides["lead"] = lead
    if bpm_range is not None:
        low, high = bpm_range
        overrides["bpm"] = int(np.random.default_rng([piece_seed, _TEMPO_STREAM]).integers(low, high + 1))
    if no_drums is not None:
        rng = np.random.default_rng([piece_seed, _DRUMS_STREAM])
        drawn = random_attributes(np.random.default_rng([piece_seed, _ATTRIBUTE_STREAM]), 1.0).drums
        grooves = DRUM_STYLES[1:]
        if rng.random() < no_drums:
            overrides["drums"] = "none"
        elif drawn == "none":
            overrides["drums"] = grooves[rng.integers(len(grooves))]
    return overrides


def _check_restrictions(lead: str | None, bpm_range: tuple[int, int] | None, no_drums: float | None = None) -> None:
    if no_drums is not None and (isinstance(no_drums, bool) or not isinstance(no_drums, (int, float))
                                 or not 0 <= no_drums <= 1):
        raise SalongError(f"no_drums={no_drums!r} is not allowed; give the share of pieces without drums, 0 to 1")
    if lead is not None:
        _check_choice("lead", lead, LEADS)
    if bpm_range is not None:
        low, high = bpm_range
        if not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in bpm_range) or not (
                MIN_BPM <= low <= high <= MAX_BPM):
            raise SalongError(f"min_bpm={low!r}, max_bpm={high!r} are not allowed; need whole numbers "
                              f"{MIN_BPM} <= min_bpm <= max_bpm <= {MAX_BPM}")


def piece_path(i: int, fmt: str) -> str:
    """Where piece `i` goes, relative to the corpus folder."""
    return f"audio/{i:06d}.{fmt}"


def _write_piece(job: tuple) -> str:
    """Render and write piece `i`; its metadata line (runs in a worker process under `jobs`)."""
    from salong.audio import write_audio

    out, seed, i, min_seconds, max_seconds, durations, fmt, captions, lead, bpm_range, no_drums = job
    piece_seed = _corpus_seed(seed, i)
    piece = make_piece(piece_seed, piece_length(piece_seed, min_seconds, max_seconds, durations),
                       **corpus_overrides(piece_seed, lead, bpm_range, no_drums))
    rel = piece_path(i, fmt)
    write_audio(out / rel, piece.audio, SAMPLE_RATE, fmt=fmt, bit_depth="16")  # training data: half the bytes of 24
    return _metadata_line(rel, piece_seed, piece.attributes, piece.audio.shape[1] / SAMPLE_RATE, captions)


def _refuse_existing_corpus(out: Path, n: int, fmt: str, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SalongError(f"{str(out)!r} is not a folder; give a folder for the corpus")
    if overwrite:
        return
    if (out / "metadata.jsonl").exists():
        raise SalongError(f"{str(out)!r} already holds a corpus (metadata.jsonl); "
                          "pass --overwrite to replace it, or give another folder")
    clash = next((p for i in range(n) if (p := out / piece_path(i, fmt)).exists()), None)
    if clash is not None:
        raise SalongError(f"{str(clash)!r} exists (an unfinished corpus?); "
                          "pass --overwrite to write over it, or give another folder")


def write_corpus(n: int, out_dir: str | Path, seed: int = 0, min_seconds: float = 5.0,
                 max_seconds: float = 30.0, fmt: str = "wav", durations: str = "uniform", jobs: int = 1,
                 progress: Callable[[int, int], None] | None = None, overwrite: bool = False,
                 captions: int = 1, lead: str | None = None, bpm_range: tuple[int, int] | None = None,
                 no_drums: float | None = None) -> Path:
    """Write n pieces as out_dir/audio/NNNNNN.<fmt> plus out_dir/metadata.jsonl; returns out_dir.

    Each metadata line: {"path", "caption", "duration", "seed", "attributes"}; path is
    relative to out_dir. With `captions` > 1 a line also lists "captions": up to that many
    different descriptions (`captions_for`), the first of them the caption. `lead` (one of
    `LEADS`) and `bpm_range` (lowest and highest tempo) restrict every piece to one lead
    instrument and a tempo range, and `no_drums` (0 to 1) sets the share of pieces without
    drums (`corpus_overrides`; None: the seed's draw, one style in five). Piece i
    depends only on (seed, i), so corpora are reproducible, whatever the number of worker
    processes (`jobs`). metadata.jsonl is written last: a
    corpus folder with one is complete.

    A folder that already holds a corpus, or pieces this call would write, is refused
    unless `overwrite` (salong's overwrite rule); other files in it are left alone.
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_PIECES:
        raise SalongError(f"n={n!r} is not allowed; use an integer from 1 to {MAX_PIECES:,}")
    _check_seed(seed)
    if not 0 < min_seconds <= max_seconds <= MAX_SECONDS:
        raise SalongError(f"min_seconds={min_seconds!r}, max_seconds={max_seconds!r} are not allowed; "
                          f"need 0 < min_seconds <= max_seconds <= {MAX_SECONDS:g}")
    _check_choice("fmt", fmt, ("wav", "flac"))
    _check_choice("durations", durations, DURATION_LAWS)
    _check_captions(captions)
    _check_restrictions(lead, bpm_range, no_drums)
    most = 4 * (os.cpu_count() or 1)  # more workers than CPUs only cost memory
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= most:
        raise SalongError(f"jobs={jobs!r} is not allowed; use an integer from 1 to {most} (4 per CPU)")
    out = Path(out_dir)
    _refuse_existing_corpus(out, n, fmt, overwrite)
    check_room(out, n, min_seconds, max_seconds, durations, fmt)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    work = ((out, seed, i, min_seconds, max_seconds, durations, fmt, captions, lead, bpm_range, no_drums)
            for i in range(n))
    lines = []
    with contextlib.ExitStack() as stack:
        # a second salong writing into this folder is refused at once, not after both wrote pieces
        stack.enter_context(folder_lock(out, "a corpus being written"))
        _refuse_existing_corpus(out, n, fmt, overwrite)  # again: one finished meanwhile?
        if jobs > 1:
            import multiprocessing

            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(min(jobs, n)))
            results = pool.imap(_write_piece, work)
        else:
            results = map(_write_piece, work)
        for line in results:
            lines.append(line)
            if progress is not None:
                progress(len(lines), n)
        text = "\n".join(lines) + "\n"
        write_atomic(out / "metadata.jsonl", lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)
    return out


def recaption_corpus(out_dir: str | Path, captions: int, count: int | None = None) -> Path:
    """Rewrite a corpus's metadata.jsonl with up to `captions` descriptions per piece, as
    `write_corpus(captions=...)` would have written it; the audio is not touched.

    Every line must be one `write_corpus` wrote (its seed and attributes give back its
    caption and any other wordings it lists), so no caption a person wrote is replaced.
    `count`, when given, is the number of pieces the caller expects the corpus to hold.
    """
    _check_captions(captions)
    path = Path(out_dir) / "metadata.jsonl"
    refuse_special(path, "metadata file")
    if not path.is_file():
        raise SalongError(f"{str(out_dir)!r} holds no corpus (metadata.jsonl); write one with `salong synth`")
    with folder_lock(Path(out_dir), "a corpus being written or recaptioned"):
        return _recaption(out_dir, path, captions, count)


def _recaption(out_dir: str | Path, path: Path, captions: int, count: int | None) -> Path:
    names = [f.name for f in fields(PieceAttributes)]
    lines = []
    for lineno, line in enumerate(read_lines(path, "metadata file"), 1):
        if not line.strip():
            continue
        where = f"{path} line {lineno}"
        try:
            entry = parse_json(line)
            attrs = PieceAttributes(**{name: entry["attributes"][name] for name in names})
            seed, rel, seconds, caption = entry["seed"], entry["path"], entry["duration"], entry["caption"]
        except (ValueError, KeyError, TypeError, SalongError) as exc:
            raise SalongError(f"{where} is not a line `salong synth` wrote ({type(exc).__name__}: {exc}); "
                              "only synth corpora can be recaptioned") from None
        others = set(entry.get("captions", []))  # wordings listed before: all must be the seed's own
        known = captions_for(attrs, seed, _MAX_CAPTIONS if others else 1)
        if caption != known[0] or not others <= set(known):
            raise SalongError(f"{where}: its caption is not the one its seed writes (edited by hand?); "
                              "nothing was changed")
        lines.append(_metadata_line(rel, seed, attrs, seconds, captions))
    if count is not None and len(lines) != count:
        raise SalongError(f"{str(out_dir)!r} holds {len(lines)} pieces, not {count}; "
                          "give the corpus's own count to --recaption it")
    text = "\n".join(lines) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return Path(out_dir)
