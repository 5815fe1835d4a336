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

`frames` is the frame mode the song was sampled with ("needed" or "window"). Optional
keys, left out when unused: `negative`, `init_audio`, `init_noise_level`, `text_encoder`
(a T5 folder given apart from a Stable Audio Open model), and `bpm`, `key`, `meter`: the
controls given as options (what the prompt states is read from it again, so a new prompt
given with `--like` states its own). `model` is left out for the
bundled model.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import salong
from salong.errors import SalongError

RECIPE_VERSION = 1
# libsndfile drops a WAV's whole INFO chunk when one string is longer than about 2 KB
WAV_TAG_LIMIT = 2000
TITLE_LIMIT = 200  # the title is for people; the full prompt is in the recipe
SHA256_DIGITS = 16

# Recipe field -> JSON key, where they differ (the keys follow `salong generate --json`).
_KEYS = {"version": "salong", "negative_prompt": "negative", "cfg_scale": "cfg"}


@dataclass(frozen=True)
class Recipe:
    """Everything `salong generate` needs to make a song again."""

    prompt: str
    seconds: float
    seed: int
    steps: int
    cfg_scale: float
    sampler: str
    frames: str = "needed"  # the frame mode sampled, resolved (a model's default can differ)
    negative_prompt: str | None = None
    init_audio: str | None = None  # the init audio's path and noise level, when the song was started from audio
    init_noise_level: float | None = None
    model: str | None = None  # the model's absolute path; None: the bundled model
    model_sha256: str | None = None  # the first SHA256_DIGITS hex digits of the model's sha256 (`model_sha256`)
    text_encoder: str | None = None  # a T5 folder given apart from the model (its absolute path)
    bpm: float | str | None = None  # --bpm, --key and --meter as given (`salong.controls`)
    key: str | None = None
    meter: str | int | None = None
    version: str = salong.__version__

    def to_json(self) -> str:
        """The compact JSON the comment tag holds; unused optional fields are left out."""
        record: dict[str, Any] = {"salong": self.version, "recipe": RECIPE_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "version" and (f.default is dataclasses.MISSING or _used(value)):
                record[_KEYS.get(f.name, f.name)] = value
        return json.dumps(record, separators=(",", ":"))  # ASCII: survives every format's tag encoding

    @classmethod
    def from_json(cls, text: str, source: str) -> Recipe:
        """Parse a comment tag; `source` names the file in messages."""
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or "salong" not in record:
            raise no_recipe(source)
        version = record.pop("recipe", None)
        if not isinstance(version, int) or version > RECIPE_VERSION:
            raise SalongError(f"{source} was made by salong {record['salong']}, whose settings this salong "
                              f"{salong.__version__} cannot read; upgrade salong")
        names = {_KEYS.get(f.name, f.name): f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - set(names))
        if unknown:
            raise SalongError(f"{source} holds settings this salong does not know ({', '.join(unknown)}); upgrade salong")
        fields = {names[key]: value for key, value in record.items()}
        for name, kinds in _TYPES.items():
            value = fields.get(name)
            if (value is None and name in _REQUIRED) or (value is not None and not _is(value, kinds)):
                raise SalongError(f"{source} has damaged salong settings ({_KEYS.get(name, name)}={value!r}); "
                                  "re-render it from its prompt and seed")
        return cls(**fields)

    def tags(self, fmt: str) -> dict[str, str]:
        """The audio file's title, comment (the recipe) and software tags, for format `fmt`."""
        comment = self.to_json()
        if fmt == "wav" and len(comment) > WAV_TAG_LIMIT:
            raise SalongError(f"the prompt is too long for a .wav file to keep its settings ({len(comment)} characters "
                              f"of at most {WAV_TAG_LIMIT}); write .flac or .ogg, or shorten the prompt")
        title = self.prompt if len(self.prompt) <= TITLE_LIMIT else self.prompt[: TITLE_LIMIT - 3] + "..."
        return {"title": title, "comment": comment, "software": f"salong {self.version}"}

    def options(self) -> dict[str, Any]:
        """`salong generate`'s parameters (by their Python names) that make this song."""
        options: dict[str, Any] = dict(prompt=self.prompt, seconds=self.seconds, seed=self.seed, steps=self.steps,
                                       cfg_scale=self.cfg_scale, sampler=self.sampler, frames=self.frames)
        optional = dict(negative=self.negative_prompt, init_audio=self.init_audio,
                        init_noise_level=self.init_noise_level, model=self.model, text_encoder=self.text_encoder,
                        bpm=self.bpm, key=self.key, meter=self.meter)
        return {**options, **{k: v for k, v in optional.items() if _used(v)}}

    def command(self, output: str | Path) -> str:
        """The `salong generate` command line that writes this song to `output`."""
        words = ["salong", "generate", self.prompt]
        for name, value in self.options().items():
            if name == "prompt":
                continue
            flag = "--" + name.replace("_", "-")
            words += [flag] if value is True else [flag, _number(value) if isinstance(value, float) else str(value)]
        return shlex.join([*words, "-o", str(output)])


_TYPES: dict[str, tuple[type, ...]] = {
    "prompt": (str,), "seconds": (int, float), "seed": (int,), "steps": (int,), "cfg_scale": (int, float),
    "sampler": (str,), "frames": (str,), "negative_prompt": (str,), "init_audio": (str,),
    "init_noise_level": (int, float), "model": (str,), "model_sha256": (str,), "text_encoder": (str,),
    "bpm": (str, int, float), "key": (str,), "meter": (str, int), "version": (str,),
}
_REQUIRED = ("prompt", "seconds", "seed", "steps", "cfg_scale", "sampler", "version")


def _used(value: Any) -> bool:
    """An optional field worth keeping: not None, not a False flag (0.0 is a value)."""
    return value is not None and value is not False


def _is(value: Any, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds) and (not isinstance(value, float) or math.isfinite(value))


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


def model_change(recipe: Recipe, path: str | Path, source: str) -> str | None:
    """A warning if the model at `path` is not the one `recipe` was made with, else None."""
    if recipe.model_sha256 is None:
        return None
    now = model_sha256(path)
    if now == recipe.model_sha256:
        return None
    return (f"{source} was made with a model of sha256 {recipe.model_sha256}, but {str(path)!r} has sha256 {now}; "
            "the song will differ")
