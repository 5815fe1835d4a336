"""Training data: a folder of audio files with captions, read as fixed-length windows.

Captions come from `metadata.jsonl` at the folder root (one JSON object per line
with "path" relative to the root and "caption"; "attributes" are kept), else from
a `.txt` sidecar beside the audio (`song.wav` + `song.txt`), else "". A line may also
give "captions", a list of other descriptions of the same audio: each item then takes
one of them all, drawn with its seed, so a model learns the facts rather than one
wording of them. Items are
windows cut at a random offset (or the start) and padded with silence at the end,
with the timing condition of `salong.timing`: `seconds_start = floor(offset)`,
`seconds_total = ceil(file duration)`.

Randomness comes only from the per-item seed a sampler hands out: the dataset is
indexed with `(index, item_seed)` (see `salong.train.sampler.StepSampler`), so an
item is the same whichever DataLoader worker reads it and whether or not the run
was resumed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import posixpath
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from salong.audio import native_path, resample, to_channels
from salong.checks import refuse_special, special_kind
from salong.chords import parse_timeline
from salong.controls import Controls, parse_bpm, parse_drums, parse_key, parse_meter, parse_sections
from salong.errors import SalongError
from salong.textfile import parse_json, read_lines, read_text
from salong.timing import timing_condition

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "mp3", "aiff", "aif")
METADATA_FILE = "metadata.jsonl"

# Source samples read on each side of a window before resampling, so the resampler's
# filter sees real neighbours instead of an edge (soxr HQ needs far fewer).
_RESAMPLE_MARGIN = 1024
# Random stream of an item's caption draw, apart from its crop offset's (the seed alone).
_CAPTION_STREAM = 2


class AudioSkipWarning(UserWarning):
    """An audio file was left out because it could not be read."""


@dataclass(frozen=True)
class AudioFile:
    """One indexed audio file; `duration` in seconds at its own `sample_rate`."""

    path: Path
    relpath: str
    caption: str
    duration: float
    sample_rate: int
    channels: int
    frames: int
    attributes: Mapping[str, Any] = field(default_factory=dict)
    captions: tuple[str, ...] = ()  # every description: `caption` first, then the other ones
    controls: Controls = Controls()  # tempo, key and meter, where the metadata gives them (`file_controls`)
    downbeat: float = 0.0  # seconds of the first downbeat of the tempo's grid (metadata "downbeat")

    def __post_init__(self) -> None:
        if not self.captions:
            object.__setattr__(self, "captions", (self.caption,))

    def caption_for_seed(self, seed: int) -> str:
        """The description an item with this seed reads (`caption_index`)."""
        return self.captions[caption_index(len(self.captions), seed)]


def caption_index(count: int, seed: int) -> int:
    """Which of a file's `count` captions an item with this seed reads: uniform, drawn on a
    stream apart from the item's crop offset (the seed's first draw)."""
    return 0 if count == 1 else int(np.random.default_rng([seed, _CAPTION_STREAM]).integers(count))


class _Unreadable(Exception):
    """Internal: decoding one file failed at item time."""


MAX_WINDOW_SECONDS = 3600  # a training crop; far longer than any model's window


def _warn_skip(relpath: str, reason: str) -> None:
    warnings.warn(f"skipping {relpath}: {reason}", AudioSkipWarning, stacklevel=3)


def _normalise(relpath: str) -> str:
    return posixpath.normpath(relpath.replace(os.sep, "/"))


def file_controls(entry: Mapping[str, Any], where: str) -> Controls:
    """A metadata line's tempo, key, meter, drums, form and chords: its own "bpm", "key" ("F# minor"),
    "meter" ("3/4"), "drums" ("none", "on" or a groove), "sections" ([{"name": "intro",
    "start": 0.0, "end": 8.0}, ...] in seconds) and "chords" ([{"name": "Am", "start": 0.0,
    "end": 2.4}, ...]), else those of its synth "attributes" (bpm, tonic and mode, meter,
    drums, sections); absent ones stay None. A value that cannot be read is a one-line error
    naming the line."""
    attrs = entry.get("attributes") if isinstance(entry.get("attributes"), Mapping) else {}
    bpm, key, meter = entry.get("bpm", attrs.get("bpm")), entry.get("key"), entry.get("meter", attrs.get("meter"))
    drums, sections = entry.get("drums", attrs.get("drums")), entry.get("sections", attrs.get("sections"))
    if key is None and attrs.get("tonic") is not None and attrs.get("mode") is not None:
        key = f"{attrs['tonic']} {attrs['mode']}"
    try:
        return Controls(bpm=None if bpm is None else parse_bpm(bpm), key=None if key is None else parse_key(key),
                        beats_per_bar=None if meter is None else parse_meter(meter),
                        drums=None if drums is None else parse_drums(drums),
                        form=None if sections is None else parse_sections(sections),
                        chords=None if entry.get("chords") is None else parse_timeline(entry["chords"]))
    except SalongError as exc:
        raise SalongError(f"{where}: {str(exc).replace('--', '', 1)}; fix or remove that value") from None


def file_downbeat(entry: Mapping[str, Any], where: str) -> float:
    """A metadata line's "downbeat": where, in seconds, the tempo's grid has its first bar
    line (0 when not given; a synth piece starts on one)."""
    value = entry.get("downbeat", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise SalongError(f"{where}: downbeat must be seconds >= 0 (the first bar line), got {value!r}; "
                          "fix or remove that value")
    return float(value)


def read_metadata(root: Path) -> dict[str, dict[str, Any]]:
    """Entries of `root/metadata.jsonl` keyed by normalised relative path ({} if absent)."""
    path = root / METADATA_FILE
    refuse_special(path, "metadata file")
    if os.path.lexists(path) and not path.is_file():
        raise SalongError(f"{str(path)!r} is not a file (a folder, or a link that leads nowhere); "
                          f"make it the data's {METADATA_FILE}, or remove it")
    if not path.is_file():
        return {}
    entries: dict[str, dict[str, Any]] = {}
    for lineno, line in enumerate(read_lines(path, "metadata file"), 1):
        if not line.strip():
            continue
        try:
            entry = parse_json(line)
        except json.JSONDecodeError as exc:
            raise SalongError(f"{path} line {lineno} is not valid JSON ({exc.msg}); fix or remove that line") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise SalongError(f'{path} line {lineno} needs a "path" string (relative to {root})')
        if not isinstance(entry.get("caption", ""), str):
            raise SalongError(f'{path} line {lineno}: "caption" must be a string, got {entry["caption"]!r}')
        captions = entry.get("captions")
        if captions is not None and (not isinstance(captions, list) or not captions
                                     or not all(isinstance(c, str) and c.strip() for c in captions)):
            raise SalongError(f'{path} line {lineno}: "captions" must be a list of non-empty strings; '
                              f'fix it, or give one "caption"')
        file_controls(entry, f"{path} line {lineno}")  # checked here, read again per file
        file_downbeat(entry, f"{path} line {lineno}")
        entries[_normalise(entry["path"])] = entry
    return entries


def _audio_paths(root: Path) -> list[Path]:
    """Audio files under `root`, recursively, in a stable order; hidden files and folders
    (editor temp files, macOS `._` resource forks) are not audio and are left out.

    Linked folders and files are followed, but each real folder and file is indexed once,
    under its own name if it is inside `root`: a link back up the tree (a loop) or a
    second name for the same audio would index it again and again. Each link left out
    gives one `AudioSkipWarning` line."""
    def key(path: str) -> tuple[int, int]:
        info = os.stat(path)
        return info.st_dev, info.st_ino

    def is_audio(name: str) -> bool:
        return not name.startswith(".") and "." in name and name.rsplit(".", 1)[1].lower() in AUDIO_EXTENSIONS

    inside_folders, inside_files = set(), set()  # what the tree holds without following a link
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        inside_folders.add(key(folder))
        inside_files.update(key(os.path.join(folder, n)) for n in files
                            if is_audio(n) and not os.path.islink(os.path.join(folder, n)))
    found = []
    seen_folders, seen_files = set(), set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        here = key(folder)
        relfolder = Path(folder).relative_to(root).as_posix()
        if here in seen_folders:  # a link outside the tree, reached twice
            _warn_skip(relfolder + "/", "it is a second link to a folder already indexed")
            dirs[:] = []
            continue
        seen_folders.add(here)
        kept = []
        for name in sorted(d for d in dirs if not d.startswith(".")):
            path = os.path.join(folder, name)
            if os.path.islink(path) and key(path) in inside_folders:
                _warn_skip(Path(path).relative_to(root).as_posix() + "/",
                           "it links to a folder inside the data folder (a loop, or a second name for it)")
            else:
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            if not is_audio(name):
                continue
            path = Path(folder) / name
            try:
                info = os.stat(path)
            except OSError:  # a dangling link or a loop: index_audio names it
                found.append(path)
                continue
            file = info.st_dev, info.st_ino
            kind = special_kind(info.st_mode)
            if kind is not None:  # opening a named pipe waits for a writer for ever; a device may never end
                _warn_skip(path.relative_to(root).as_posix(), f"it is {kind}, not a regular file")
                continue
            if file in seen_files or (path.is_symlink() and file in inside_files):
                _warn_skip(path.relative_to(root).as_posix(), "it is a second name for audio already indexed")
                continue
            seen_files.add(file)
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def index_audio(root: Path) -> tuple[list[AudioFile], int]:
    """Index every readable audio file under `root`; returns (files, number skipped).

    Each unreadable file, and each metadata entry naming a missing file, gives one
    `AudioSkipWarning` line.
    """
    metadata = read_metadata(root)
    files: list[AudioFile] = []
    skipped = 0
    seen = set()
    for path in _audio_paths(root):
        relpath = path.relative_to(root).as_posix()
        seen.add(relpath)
        if not path.exists():
            _warn_skip(relpath, f"it is a symlink to {os.readlink(path)!r}, which does not exist (or loops)")
            skipped += 1
            continue
        try:
            info = sf.info(native_path(path))
        except (sf.SoundFileError, RuntimeError, OSError) as exc:
            _warn_skip(relpath, f"cannot read it as audio ({str(exc).strip() or type(exc).__name__})")
            skipped += 1
            continue
        if info.frames <= 0 or info.samplerate <= 0:
            _warn_skip(relpath, "it holds no audio (0 samples)")
            skipped += 1
            continue
        entry = metadata.get(relpath)
        captions: tuple[str, ...] = ()
        if entry is not None:
            others = entry.get("captions") or []
            caption = entry.get("caption") or (others[0] if others else "")
            captions = tuple(dict.fromkeys([caption, *others]))  # the caption first, no repeats
            attributes = entry.get("attributes") or {}
            controls = file_controls(entry, relpath)
            downbeat = file_downbeat(entry, relpath)
        else:
            sidecar = path.with_suffix(".txt")
            refuse_special(sidecar, "caption file")
            caption = read_text(sidecar, "caption file").strip() if sidecar.is_file() else ""
            attributes = {}
            controls = Controls()
            downbeat = 0.0
        files.append(
            AudioFile(
                path=path,
                relpath=relpath,
                caption=caption,
                duration=info.frames / info.samplerate,
                sample_rate=int(info.samplerate),
                channels=int(info.channels),
                frames=int(info.frames),
                attributes=attributes,
                captions=captions,
                controls=controls,
                downbeat=downbeat,
            )
        )
    for relpath in sorted(set(metadata) - seen):
        _warn_skip(relpath, f"{METADATA_FILE} names it but there is no such audio file")
        skipped += 1
    return files, skipped


def validation_member(relpath: str, fraction: float, salt: str = "") -> bool:
    """Whether a file belongs to the validation split: a hash of its relative path.

    Depends on nothing but the path, so adding or removing other files never moves
    a file between splits.
    """
    digest = hashlib.sha256(f"{salt}\0{_normalise(relpath)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _split_key(key: int | tuple[int, ...] | Sequence[int]) -> tuple[int, int]:
    if isinstance(key, (tuple, list)):  # (index, item_seed) or (index, item_seed, batch_seed)
        index, seed = key[:2]
        return int(index), int(seed)
    return int(key), int(key)  # plain indexing: a fixed seed per item


class AudioDataset(Dataset):
    """Fixed-length windows of the audio files under `root`, with captions and timing.

    Items are dicts: `audio` float32 (channels, window_samples); `padding_mask` bool
    (window_samples,), True on real audio; `seconds_start`, `seconds_total` (whole
    seconds, `salong.timing`); `caption` (one of the file's, by seed); `path` (relative to
    root); `seed` (the item seed, for any further randomness a collate needs to stay
    deterministic). `files` lists every
    indexed file (for whole-file passes such as pre-encoding); `skipped` counts the
    unreadable ones.
    """

    def __init__(
        self,
        root: str | Path,
        sample_rate: int,
        channels: int,
        window_samples: int | None = None,
        window_seconds: float | None = None,
        random_crop: bool = True,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise SalongError(f"dataset folder {str(root)!r} does not exist or is not a folder; check the path")
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise SalongError(f"sample rate must be a positive integer, got {sample_rate!r}")
        if not isinstance(channels, int) or channels <= 0:
            raise SalongError(f"channels must be a positive integer, got {channels!r}")
        if (window_samples is None) == (window_seconds is None):
            raise SalongError("give exactly one of window_samples and window_seconds")
        if window_seconds is not None:
            if not (isinstance(window_seconds, (int, float)) and math.isfinite(window_seconds)
                    and 0 < window_seconds <= MAX_WINDOW_SECONDS):
                raise SalongError(f"window length must be positive seconds, at most {MAX_WINDOW_SECONDS} (an hour), "
                                  f"got {window_seconds!r}")
            window_samples = round(window_seconds * sample_rate)
        if not isinstance(window_samples, int) or window_samples <= 0:
            raise SalongError(f"window length must be a positive number of samples, got {window_samples!r}")
        self.root = root
        self.sample_rate = sample_rate
        self.channels = channels
        self.window_samples = window_samples
        self.random_crop = random_crop
        self.files, self.skipped = index_audio(root)
        if not self.files:
            exts = ", ".join(f".{e}" for e in AUDIO_EXTENSIONS)
            raise SalongError(f"no readable audio files in {root} (looked for {exts})")
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Item `index` cropped with `item_seed`; a file that fails to decode is replaced
        by the next readable one (same seed), with one warning, so training goes on."""
        index, seed = _split_key(key)
        n = len(self.files)
        if not 0 <= index < n:
            raise IndexError(f"item {index} out of range for {n} files")
        for k in range(n):
            i = (index + k) % n
            if i in self._bad:
                continue
            try:
                return self._item(self.files[i], seed)
            except _Unreadable as exc:
                _warn_skip(self.files[i].relpath, f"decoding failed during training ({exc}); using another file")
                self._bad.add(i)
        raise SalongError(f"none of the {n} audio files in {self.root} can be decoded any more; check the dataset")

    def _item(self, file: AudioFile, seed: int) -> dict[str, Any]:
        window = self.window_samples
        # Length at the target rate, from the index; the crop is chosen in target samples.
        total = file.frames * self.sample_rate // file.sample_rate
        offset = 0
        if self.random_crop and total > window:
            offset = int(np.random.default_rng(seed).integers(0, total - window + 1))
        audio = self._read(file, offset, window)  # (channels, <= window)
        real = audio.shape[1]
        out = np.zeros((self.channels, window), dtype=np.float32)
        out[:, :real] = audio
        mask = torch.zeros(window, dtype=torch.bool)
        mask[:real] = True
        seconds_start, seconds_total = timing_condition(offset / self.sample_rate, file.duration)
        return {
            "audio": torch.from_numpy(out),
            "padding_mask": mask,
            "seconds_start": seconds_start,
            "seconds_total": seconds_total,
            "caption": file.caption_for_seed(seed),
            "path": file.relpath,
            "seed": seed,
        }

    def _read(self, file: AudioFile, offset: int, length: int) -> np.ndarray:
        """Samples [offset, offset+length) at the target rate and channel count; only that
        stretch (plus a resampling margin) is decoded, not the whole file."""
        ratio = file.sample_rate / self.sample_rate
        margin = 0 if file.sample_rate == self.sample_rate else _RESAMPLE_MARGIN
        src_start = math.floor(offset * ratio)
        src_stop = min(file.frames, src_start + math.ceil(length * ratio) + margin)
        read_start = max(0, src_start - margin)
        try:
            data, _ = sf.read(native_path(file.path), start=read_start, stop=src_stop, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError, OSError) as exc:
            raise _Unreadable(str(exc).strip() or type(exc).__name__) from None
        if data.shape[0] == 0:
            raise _Unreadable("no samples where the index said there were some (truncated file?)")
        if not np.isfinite(data).all():
            raise _Unreadable("NaN or infinite samples")
        audio = np.ascontiguousarray(data.T)  # (channels, samples)
        try:
            audio = to_channels(resample(audio, file.sample_rate, self.sample_rate), self.channels)
        except SalongError as exc:
            raise _Unreadable(str(exc)) from None
        lead = round((src_start - read_start) / ratio)
        return np.ascontiguousarray(audio[:, lead : lead + length], dtype=np.float32)

    def subset(self, indices: Sequence[int]) -> "AudioDataset":
        """The same dataset restricted to `files[i]` for i in `indices`."""
        out = copy.copy(self)
        out.files = [self.files[i] for i in indices]
        out._bad = set()
        return out

    def split(self, validation_fraction: float, salt: str = "") -> tuple["AudioDataset", "AudioDataset"]:
        """(train, validation) by hashing each file's relative path; see `validation_member`."""
        if not (isinstance(validation_fraction, (int, float)) and 0 <= validation_fraction < 1):
            raise SalongError(f"validation fraction must be in [0, 1), got {validation_fraction!r}")
        val = [i for i, f in enumerate(self.files) if validation_member(f.relpath, validation_fraction, salt)]
        in_val = set(val)
        train = [i for i in range(len(self.files)) if i not in in_val]
        return self.subset(train), self.subset(val)


def collate_audio(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch AudioDataset items: audio (B, C, T), padding_mask (B, T), seconds as float32 (B,)."""
    return {
        "audio": torch.stack([it["audio"] for it in items]),  # (B, C, T)
        "padding_mask": torch.stack([it["padding_mask"] for it in items]),  # (B, T)
        "seconds_start": torch.tensor([it["seconds_start"] for it in items], dtype=torch.float32),
        "seconds_total": torch.tensor([it["seconds_total"] for it in items], dtype=torch.float32),
        "caption": [it["caption"] for it in items],
        "path": [it["path"] for it in items],
        "seed": torch.tensor([it["seed"] for it in items], dtype=torch.int64),
    }
