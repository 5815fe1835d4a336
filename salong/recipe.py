"""The settings a song was made with, kept inside its own audio file.

`salong generate` writes a recipe into every file: a compact JSON object in the comment
tag, which libsndfile keeps in a WAV INFO chunk, FLAC and Ogg Vorbis comments and an
MP3's ID3 tag. The title tag holds the prompt and the software tag the salong version,
for players and file browsers. `salong info FILE` prints the recipe and the command that
re-makes the file; `salong generate --like FILE` starts from it. With the same model file
(its sha256 is in the recipe) on the same machine, the recipe re-makes the song bit for bit.

    {"salong": "0.1.0", "recipe": 1, "prompt": "calm piano", "seconds": 30.0, "seed": 7,
     "steps": 100, "cfg": 7.0, "sampler": "dpmpp-2m", "frames": "needed", "model": "/models/gen.safetensors",
     "model_sha256": "3f0c9a51d2e87b64"}

The keys are the fields of the song's request (`salong.request.SongRequest`, resolved:
`frames` is the frame mode it was sampled with, `cfg_interval` the noise levels guidance
applied at, "0.7,1.0", left out where it was every step, "0.0,1.0", as in every song before
the setting: a recipe without it is read as None and given to `--like` as every step), then
the model that made it, then the
controls given as options. What is None is left out: `negative`, `init_audio` (written
absolute), `init_noise_level`, `lora` (the adapters, each as
`{"path": "/abs/style.safetensors", "sha256": "...", "strength": 0.8}`, its sha256 as the
model's), `lora_merge` (true: merged into the weights), `text_encoder` (a T5 folder given
apart from a Stable Audio Open model), `bpm`, `key`, `meter`, `drums` (what the prompt states is
read from it again, so a new prompt given with `--like` states its own), `form` (the sections
the song played, in bars: "intro 4, A 44, B 44, A' 46, outro 5"; "none"; left out where a
model without a form conditioner was asked for none), `chords` (the chords it played, by name:
"Am F G Am / C G F Em"; "none"; left out where none were asked of a model without a chords
conditioner, or of one whose song had no key), `bit_depth` (a
WAV's or FLAC's: "16", "24" or "32f"; none in ogg and mp3), `loudness` and `peak_db` (the
LUFS and dBTP ceiling it was normalised to), `limit` (true: its peaks were limited under the
ceiling), `model` for the bundled model, and an edit's
settings (`salong.edit`): `inpaint` (the source song, absolute) with `start` and `end` (its
`--from` and `--to`), or `extend` (the source) with `extend_before` (true: before its start)
and where the source was cut, `start` (its `--from`: kept up to there) or, before its start,
`end` (its `--to`: kept from there on), or `loop` (true); an edited song's `source_sha256` is
its source file's, as the model's. An extension's recipe without its cut was made before
extensions skipped a silent tail: it reads as `keep_silence` (true: cut at the very end or
start), which remakes it as it was.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from salong import __version__
from salong.checks import refuse_special
from salong.errors import SalongError
from salong.request import CONTROL_FIELDS, InitAudio, SongRequest, option_flag
from salong.textfile import parse_json, visible

RECIPE_VERSION = 1
# libsndfile drops a WAV's whole INFO chunk when one string is longer than about 2 KB
WAV_TAG_LIMIT = 2000
TITLE_LIMIT = 200  # the title is for people; the full prompt is in the recipe
SHA256_DIGITS = 16
MODEL_FIELDS = ("model", "model_sha256", "text_encoder")
EVERY_STEP = "0.0,1.0"  # the cfg_interval every song had before the setting, and that a recipe leaves out


@dataclass(frozen=True)
class Recipe:
    """Everything `salong generate` needs to make a song again: its request, resolved (every
    setting filled in), and the model that sampled it."""

    request: SongRequest
    model: str | None = None  # the model's absolute path; None: the bundled model
    model_sha256: str | None = None  # the first SHA256_DIGITS hex digits of the model's sha256 (`model_sha256`)
    text_encoder: str | None = None  # a T5 folder given apart from the model (its absolute path)
    salong: str = __version__  # the salong version that made the song
    lora_sha256: tuple[str, ...] | None = None  # each adapter file's `model_sha256`, in the request's order
    source_sha256: str | None = None  # an edit's source file's `model_sha256`

    def __post_init__(self) -> None:
        assert self.lora_sha256 is None or len(self.lora_sha256) == len(self.request.lora or ()), "a sha256 each"

    def items(self, every_step: bool = False) -> dict[str, Any]:
        """The recipe's keys and values, in the file's order: the request's settings (each
        adapter with its file's sha256), the model, then the controls given as options; what
        is None is left out, and so is a guidance interval of every step (`EVERY_STEP`, which a
        recipe without one means) unless `every_step`."""
        settings = self.request.record()
        if settings["lora"] is not None and self.lora_sha256 is not None:
            settings["lora"] = [{"path": a["path"], "sha256": sha, "strength": a["strength"]}
                                for a, sha in zip(settings["lora"], self.lora_sha256)]
        controls = {name: settings.pop(name) for name in CONTROL_FIELDS}
        interval = settings["cfg_interval"] or EVERY_STEP  # None: read from a recipe without it
        settings["cfg_interval"] = interval if every_step or interval != EVERY_STEP else None
        model = {name: getattr(self, name) for name in MODEL_FIELDS}
        return {k: v for k, v in {**settings, "source_sha256": self.source_sha256, **model, **controls}.items()
                if v is not None}

    def to_json(self) -> str:
        """The compact JSON the comment tag holds."""
        record = {"salong": self.salong, "recipe": RECIPE_VERSION, **self.items()}
        return json.dumps(record, separators=(",", ":"))  # ASCII: survives every format's tag encoding

    @classmethod
    def from_json(cls, text: str, source: str) -> Recipe:
        """Parse a comment tag; `source` names the file in messages."""
        try:
            record = parse_json(text)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or "salong" not in record:
            raise no_recipe(source)
        version = record.pop("recipe", None)
        if not isinstance(version, int) or version > RECIPE_VERSION:
            raise SalongError(f"{source} was made by salong {record['salong']}, whose settings this salong "
                              f"{__version__} cannot read; upgrade salong")
        unknown = sorted(set(record) - set(_TYPES))
        if unknown:
            raise SalongError(f"{source} holds settings this salong does not know ({', '.join(unknown)}); "
                              "upgrade salong")
        for name, kinds in _TYPES.items():
            value = record.get(name)
            if (value is None and name in _REQUIRED) or (value is not None and not _is(value, kinds)):
                raise SalongError(f"{source} has damaged salong settings ({name}={value!r}); "
                                  "re-render it from its prompt and seed")
        record.setdefault("frames", "needed")  # what songs were sampled with before recipes said
        if "init_noise_level" in record:  # a song started from audio given in memory has no init_audio
            record["init_audio"] = InitAudio(record.get("init_audio"))
        if ("start" in record or "end" in record) and "inpaint" not in record and "extend" not in record:
            # a source given in memory: an inpaint's region has both ends, an extension's cut one
            record["inpaint" if "start" in record and "end" in record else "extend"] = InitAudio()
        if "extend" in record and "start" not in record and "end" not in record:
            record["keep_silence"] = True  # made before extensions skipped a silent tail: cut at the very end
        made = {name: record.pop(name) for name in (*MODEL_FIELDS, "salong", "source_sha256") if name in record}
        if "lora" in record:
            adapters = record["lora"]
            if not adapters or not all(_is_adapter(a) for a in adapters):
                raise SalongError(f"{source} has damaged salong settings (lora={adapters!r}); "
                                  "re-render it from its prompt and seed")
            record["lora"] = [(a["path"], a["strength"]) for a in adapters]  # checked as the request's
            if all("sha256" in a for a in adapters):
                made["lora_sha256"] = tuple(a["sha256"] for a in adapters)
        try:
            request = SongRequest(**record)
        except SalongError as exc:
            raise SalongError(f"{source} has damaged salong settings ({exc}); re-render it from its prompt and seed")
        return cls(request, **made)

    def tags(self, fmt: str) -> dict[str, str]:
        """The audio file's title, comment (the recipe) and software tags, for format `fmt`."""
        comment = self.to_json()
        if fmt == "wav" and len(comment) > WAV_TAG_LIMIT:
            raise SalongError(f"the prompt is too long for a .wav file to keep its settings ({len(comment)} characters "
                              f"of at most {WAV_TAG_LIMIT}); write .flac or .ogg, or shorten the prompt")
        prompt = self.request.prompt
        title = prompt if len(prompt) <= TITLE_LIMIT else prompt[: TITLE_LIMIT - 3] + "..."
        return {"title": title, "comment": comment, "software": f"salong {self.salong}"}

    def options(self) -> dict[str, Any]:
        """`salong generate`'s parameters (by their Python names, the recipe's keys) that make this
        song, as the command line gives them: `lora` as its `--lora FILE:STRENGTH` values."""
        # the guidance interval even where the recipe leaves it out: another model's default may differ
        options = {k: v for k, v in self.items(every_step=True).items() if k not in ("model_sha256", "source_sha256")}
        if "lora" in options:
            options["lora"] = [adapter.text() for adapter in self.request.lora]
        return options

    def command(self, output: str | Path) -> str:
        """The `salong generate` command line that writes this song to `output`, each word quoted
        for a POSIX shell (`shell_word`). A prompt that starts with "-" comes last, after "--", so
        that it is not read as an option."""
        prompt = self.request.prompt
        words = ["salong", "generate"] + ([] if prompt.startswith("-") else [prompt])
        for name, value in self.options().items():
            if name == "prompt":
                continue
            if value is True:  # an on/off flag
                words.append(option_flag(name))
                continue
            for item in value if isinstance(value, list) else [value]:  # a list: the option given once per item
                words += [option_flag(name), _number(item) if isinstance(item, float) else str(item)]
        words += ["-o", str(output)] + (["--", prompt] if prompt.startswith("-") else [])
        return " ".join(shell_word(word) for word in words)


def shell_word(word: str) -> str:
    """`word` quoted for a POSIX shell; one holding control characters (ESC, BEL, a newline) in
    bash's $'...' quoting with each shown as an escape, so that printing the command cannot
    drive the terminal and pasting it gives the word back."""
    if visible(word) == word:
        return shlex.quote(word)
    return "$'" + visible(word.replace("\\", "\\\\").replace("'", "\\'")) + "'"


_TYPES: dict[str, tuple[type, ...]] = {
    "prompt": (str,), "seconds": (int, float), "seed": (int,), "steps": (int,), "cfg": (int, float),
    "cfg_interval": (str,), "sampler": (str,), "frames": (str,), "negative": (str,), "init_audio": (str,),
    "init_noise_level": (int, float), "model": (str,), "model_sha256": (str,), "text_encoder": (str,),
    "bpm": (str, int, float), "key": (str,), "meter": (str, int), "drums": (str,), "form": (str,), "chords": (str,),
    "lora": (list,), "lora_merge": (bool,),
    "salong": (str,), "bit_depth": (str,), "loudness": (int, float), "peak_db": (int, float),
    "limit": (bool,),
    "inpaint": (str,), "start": (int, float), "end": (int, float), "extend": (str,), "extend_before": (bool,),
    "keep_silence": (bool,), "loop": (bool,), "source_sha256": (str,),
}
_REQUIRED = ("prompt", "seconds", "seed", "steps", "cfg", "sampler", "salong")


def _is(value: Any, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds) and (not isinstance(value, float) or math.isfinite(value))


def _is_adapter(entry: Any) -> bool:
    """A recipe's adapter: {"path": str, "sha256": str, "strength": number}, its sha256 optional."""
    return (isinstance(entry, dict) and set(entry) <= {"path", "sha256", "strength"} and _is(entry.get("path"), (str,))
            and _is(entry.get("strength"), (int, float)) and _is(entry.get("sha256", ""), (str,)))


def _number(value: float) -> str:
    """A float as the shortest text that reads back as the same float (1.2, not 1.2000000000000002)."""
    return repr(float(value))


def no_recipe(source: str) -> SalongError:
    return SalongError(f"{source} carries no salong settings (it was not made by `salong generate`, or its tags "
                       "were stripped); give a file salong wrote")


def read_recipe(path: str | Path) -> Recipe:
    """The recipe inside an audio file salong wrote, or a one-line error."""
    from salong.audio import probe

    comment = probe(path).tags.get("comment")
    if comment is None:
        raise no_recipe(repr(str(path)))
    return Recipe.from_json(comment, repr(str(path)))


@functools.lru_cache(maxsize=8)
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file != path:  # a model folder: names count too, so renaming a file changes the digest
            sha.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()[:SHA256_DIGITS]


def model_sha256(path: str | Path) -> str:
    """The first SHA256_DIGITS hex digits of a model file's sha256 (of a model folder: of its
    files' names and bytes), computed once per process for a file that has not changed."""
    refuse_special(path, "model")
    path = Path(path).resolve()
    info = path.stat()
    return _digest(path, info.st_size, info.st_mtime_ns)


def model_fields(path: str | Path | None) -> dict[str, str | None]:
    """A recipe's `model` and `model_sha256` for the model loaded from `path` (None: built in memory)."""
    from salong.bundled import bundled_generator_path

    if path is None:
        return {"model": None, "model_sha256": None}
    path = Path(path).resolve()
    bundled = bundled_generator_path()
    return {"model": None if bundled is not None and bundled.resolve() == path else str(path),
            "model_sha256": model_sha256(path)}


def source_fields(request: SongRequest) -> dict[str, str]:
    """A recipe's `source_sha256` for an edit's source file (nothing for a new song or a source in memory)."""
    source = request.inpaint if request.inpaint is not None else request.extend
    return {} if source is None or source.path is None else {"source_sha256": model_sha256(source.path)}


def check_take_source(take: Path, request: SongRequest) -> None:
    """`--like` of an edit: a source file changed since the take was made is a one-line warning
    (the kept samples are the file's as it is now)."""
    recipe = read_recipe(take)
    was = recipe.request.inpaint if recipe.request.inpaint is not None else recipe.request.extend
    now = request.inpaint if request.inpaint is not None else request.extend
    if recipe.source_sha256 is None or was is None or now is None or now.record() != was.record():
        return
    if not Path(now.path).is_file():
        return  # reading it fails in one line, before the model loads
    sha = model_sha256(now.path)
    if sha != recipe.source_sha256:
        warnings.warn(f"{str(take)!r} was made from {now.path!r} of sha256 {recipe.source_sha256}, but it now has "
                      f"sha256 {sha}; the song will differ")


def lora_fields(request: SongRequest) -> dict[str, tuple[str, ...]]:
    """A recipe's `lora_sha256` for the request's adapters (nothing without adapters)."""
    return {} if request.lora is None else {"lora_sha256": tuple(model_sha256(a.path) for a in request.lora)}


def model_change(recipe: Recipe, path: str | Path, source: str) -> str | None:
    """A warning if the model at `path` is not the one `recipe` was made with, else None."""
    if recipe.model_sha256 is None:
        return None
    now = model_sha256(path)
    if now == recipe.model_sha256:
        return None
    return (f"{source} was made with a model of sha256 {recipe.model_sha256}, but {str(path)!r} has sha256 {now}; "
            "the song will differ")


def check_take_model(take: Path, model: Path) -> None:
    """`--like` without `--model`: the take's model must still be there; a changed one is a warning."""
    if not model.exists():
        raise SalongError(f"{str(take)!r} was made with the model {str(model)!r}, which is not there any more; "
                          "pass --model FILE")
    change = model_change(read_recipe(take), model, repr(str(take)))
    if change:
        warnings.warn(change)


def check_take_adapters(take: Path) -> None:
    """`--like` without `--lora`: the take's adapters must still be there; a changed one is a warning."""
    recipe = read_recipe(take)
    adapters = recipe.request.lora or ()
    for adapter, sha in zip(adapters, recipe.lora_sha256 or (None,) * len(adapters)):
        if not Path(adapter.path).is_file():
            raise SalongError(f"{str(take)!r} was made with the adapter {adapter.path!r}, which is not there any more; "
                              "pass --lora FILE[:STRENGTH]")
        now = model_sha256(adapter.path)
        if sha is not None and now != sha:
            warnings.warn(f"{str(take)!r} was made with an adapter of sha256 {sha}, but {adapter.path!r} has sha256 "
                          f"{now}; the song will differ")
