"""One song as asked for: `SongRequest`, the settings every path to the sampler shares.

A request is checked once. What needs no model is checked when it is made (a length
above 0, a known sampler, a guidance scale in range, a seed, a tempo the prompt and the
flags agree on); what needs the model is checked when it is resolved against one
(`SongRequest.resolve`: a length the window holds, a sampler of the model's objective,
an init noise level its schedule can start from), which also fills in the model's
defaults. `salong generate`, prompts files, `--like` and `Generator.generate` all make
songs from requests; a song's recipe (`salong.recipe`) and its `--json` record are the
request's fields under their own names.

    request = SongRequest("calm piano", 30.0, seed=7, cfg=5.0, bpm=80)
    song = generator.generate(request)  # resolved against the generator, then sampled
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from salong.checks import check_seed, is_real, random_seed
from salong.chords import auto_progressions, chords_text, lay_chords, needs_key, parse_chords
from salong.controls import (Controls, form_sections, form_text, parse_form, resolve as resolve_controls,
                             song_form)
from salong.diffusion import RF_SAMPLERS, SAMPLERS, get_sampler
from salong.errors import Note, SalongError
from salong.mastering import BLOCK_SECONDS, DEFAULT_PEAK_DB, check_bit_depth, check_loudness, check_peak_db
from salong.textfile import from_command_line
from salong.timing import audio_samples

if TYPE_CHECKING:
    from salong.pipeline import GeneratorConfig

MAX_SECONDS = 86400  # no model's window comes near a day; bounds every count of samples and frames
MAX_STEPS = 10_000  # the paper samples 100-250; a crafted recipe's 10**18 would never finish
MAX_CFG_SCALE = 100.0  # far beyond any useful guidance; larger scales overflow float32
MAX_LORA_STRENGTH = 10.0  # an adapter's update is trained at 1; far beyond 10 the DiT's output is noise
FRAME_MODES = ("needed", "window")
CONTROL_FIELDS = ("bpm", "key", "meter", "drums", "form", "chords")  # the controls given as options (`salong.controls`)


# --- one rule per setting (the model's stored defaults, `SamplingConfig`, obey them too) --


def check_seconds(seconds: Any) -> float:
    if isinstance(seconds, bool) or not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise SalongError(f"seconds must be a number above 0, got {seconds!r}")
    if seconds > MAX_SECONDS:
        raise SalongError(f"seconds must be a number above 0 and at most {MAX_SECONDS} (a day; a model's window "
                          f"is far shorter), got {seconds!r}")
    return float(seconds)


def check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise SalongError(f"steps must be a whole number >= 1 and at most {MAX_STEPS}, got {steps!r}")
    return steps


def check_cfg(cfg: Any) -> float:
    if not (is_real(cfg) and 0 <= cfg <= MAX_CFG_SCALE):
        raise SalongError(f"cfg scale must be a number from 0 to {MAX_CFG_SCALE:g} (1 = no guidance, 7 = the "
                          f"paper's), got {cfg!r}")
    return float(cfg)


def check_cfg_interval(value: Any) -> str:
    """Guidance's noise levels, "LO,HI" (or two numbers), 0 <= LO <= HI <= 1 (`cfg_denoiser`),
    as the text the recipe records ("0.7,1.0")."""
    parts = value.split(",") if isinstance(value, str) else value
    try:
        lo, hi = (float(part) for part in parts)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if isinstance(value, bool) or not 0 <= lo <= hi <= 1:
        raise SalongError(f"cfg interval must be two noise levels LO,HI with 0 <= LO <= HI <= 1 (guidance where "
                          f"the step's noise level is in it; 0,1: every step, 0.7,1: not the last steps), "
                          f"got {value!r}")
    return f"{lo!r},{hi!r}"


def cfg_interval_levels(text: str) -> tuple[float, float]:
    """A checked `check_cfg_interval` text as its two levels."""
    lo, hi = (float(part) for part in text.split(","))
    return lo, hi


def check_sampler(name: Any) -> str:
    """A sampler salong has for some objective; `resolve` checks it fits the model's."""
    if not isinstance(name, str) or name.strip().lower().replace("_", "-") not in {**SAMPLERS, **RF_SAMPLERS}:
        get_sampler(str(name))  # raises, naming the known ones
    return name


def check_frames(frames: Any) -> str:
    if frames not in FRAME_MODES:
        raise SalongError(f"frames must be one of {', '.join(FRAME_MODES)}, got {frames!r}")
    return frames


def check_init_noise_level(level: float, model: GeneratorConfig) -> float:
    """An audio-to-audio noise level `model` can start from, or a one-line error: sigma above
    the schedule's sigma_min for v-objective models, t in (0, 1] for rectified flow."""
    if model.objective == "rf":
        if not level <= 1:
            raise SalongError(f"--init-noise-level must be in (0, 1] for this rectified-flow model (t of the "
                              f"noised input: 0.3 stays close, 0.9 follows the prompt), got {level!r}")
    elif not model.sampling.sigma_min < level <= model.sampling.sigma_max:
        raise SalongError(f"--init-noise-level must be a sigma above this model's sigma_min "
                          f"{model.sampling.sigma_min:g} and at most its sigma_max {model.sampling.sigma_max:g} "
                          f"(about 1 stays close to the input, 50 or more follows the prompt), got {level!r}")
    return level


# --- the request -------------------------------------------------------------------------


@dataclass(frozen=True)
class InitAudio:
    """Audio a song starts from (audio-to-audio): a file, read once when first needed, or
    samples given in memory. Requests compare by the file."""

    path: str | None = None  # as given; the recipe records it absolute
    given: tuple[np.ndarray, int] | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def samples(self) -> tuple[np.ndarray, int]:
        """(audio (channels, samples), sample rate): the given samples, or the file's (a one-line
        error if it cannot be read)."""
        from salong.audio import read_audio

        if self.given is None and self.path is None:
            raise SalongError("the init audio was given in memory and is not kept; give it again")
        return self.given if self.given is not None else read_audio(self.path)

    def record(self) -> str | None:
        return str(Path(self.path).resolve()) if self.path is not None else None


@dataclass(frozen=True)
class Lora:
    """An adapter a song is sampled with (`salong.lora`): its file and strength (1: as
    trained, 0: the base model, negative: away from the style). Requests compare by the
    file as given; the recipe records it absolute."""

    path: str
    strength: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, Path)) or not str(self.path):
            raise SalongError(f"--lora takes an adapter file, FILE or FILE:STRENGTH, got {self.path!r}")
        if not (is_real(self.strength) and abs(self.strength) <= MAX_LORA_STRENGTH):
            raise SalongError(f"--lora strength must be a number from {-MAX_LORA_STRENGTH:g} to "
                              f"{MAX_LORA_STRENGTH:g} (1 = as trained, 0 = the base model), got {self.strength!r} "
                              f"for {str(self.path)!r}")
        object.__setattr__(self, "path", str(self.path))
        object.__setattr__(self, "strength", float(self.strength))

    @classmethod
    def parse(cls, text: str) -> Lora:
        """`--lora FILE[:STRENGTH]`: the strength follows the last colon (a colon inside a
        file's path, `C:\\style.safetensors`, is part of the path)."""
        head, colon, tail = text.rpartition(":")
        if not colon or not head or "/" in tail or "\\" in tail:
            return cls(text)
        if _is_number(tail):
            return cls(head, float(tail))
        if Path(text).exists():  # a file whose name holds a colon
            return cls(text)
        raise SalongError(f"--lora strength must be a number after the file's colon (style.safetensors:0.8), "
                          f"got {tail!r} in {text!r}")

    def record(self) -> dict[str, Any]:
        return {"path": str(Path(self.path).resolve()), "strength": self.strength}

    def text(self) -> str:
        """The `--lora` value that gives this adapter back: the absolute path and the strength."""
        return f"{self.record()['path']}:{self.strength!r}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_lora(lora: Any) -> tuple[Lora, ...] | None:
    """Adapters as a tuple of `Lora`s, from one or a sequence of: a `Lora`, a file (str or
    Path, `FILE:STRENGTH` read as `--lora` reads it) or (file, strength); None for none."""
    if lora is None:
        return None
    items = [lora] if isinstance(lora, (Lora, str, Path)) else lora
    if not isinstance(items, (list, tuple)):
        raise SalongError(f"lora must be adapter files or (file, strength) pairs, got {type(lora).__name__}")
    adapters = []
    for item in items:
        if isinstance(item, Lora):
            adapters.append(item)
        elif isinstance(item, str):
            adapters.append(Lora.parse(item))
        elif isinstance(item, Path):
            adapters.append(Lora(item))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            adapters.append(Lora(*item))
        else:
            raise SalongError(f"each lora adapter is a file, FILE:STRENGTH or (file, strength), got {item!r}")
    return tuple(adapters) or None


@dataclass(frozen=True)
class SongRequest:
    """One song: its words, length and sampling settings, and what it starts from.

    None means "the model's default" for `steps`, `cfg` (classifier-free guidance scale),
    `sampler` and `frames` ("needed": sample the latent frames the song needs; "window":
    the model's whole window, then cut), and "draw one" for `seed`; `resolve` fills them
    in. `init_audio` (a file, an `InitAudio`, or (audio, rate)) is noised to
    `init_noise_level` and sampled from. `bpm`, `key`, `meter` and `drums` are the controls given
    as options, kept as given; `controls` is what the song asks for, the options over
    what the prompt states. `form` is "auto" (None), "none" or sections in bars
    (`salong.controls.parse_form`); `resolve` makes it the sections the song plays for the
    model, in bars (`form_text`), and lays them in `controls.form`. `chords` is "auto" (None),
    "none" or progressions (`salong.chords.parse_chords`); `resolve` makes it the chords the
    song plays, by name (`chords_text`), and lays them in `controls.chords`. `lora` are the adapters
    the DiT samples with, each with its strength (`Lora`; `check_lora` says what it takes),
    added on the fly or, with `lora_merge`, baked into a copy of the DiT's weights (faster;
    equal to float rounding).

    The field names are the keys of the song's recipe and of its `--json` record. A new
    input (regions to keep or fill, LoRA adapters) joins as a field that defaults to None:
    a recipe leaves out what is None, so every file written before reads as a request
    without it.
    """

    prompt: str
    seconds: float
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = field(default=None, metadata={"flag": "--cfg-scale"})
    cfg_interval: str | None = None
    sampler: str | None = None
    frames: str | None = None
    negative: str | None = None
    init_audio: InitAudio | None = None
    init_noise_level: float | None = None
    bpm: float | str | None = None
    key: str | None = None
    meter: str | int | None = None
    drums: str | None = None
    form: str | None = None
    chords: str | None = None
    lora: tuple[Lora, ...] | None = None
    lora_merge: bool | None = None
    bit_depth: str | None = None
    loudness: float | None = None
    peak_db: float | None = None
    limit: bool | None = None
    inpaint: InitAudio | None = None
    start: float | None = field(default=None, metadata={"flag": "--from"})
    end: float | None = field(default=None, metadata={"flag": "--to"})
    extend: InitAudio | None = None
    extend_before: bool | None = None
    keep_silence: bool | None = None
    loop: bool | None = None
    controls: Controls = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise SalongError(f"the prompt must be text, got {self.prompt!r}")
        checked: dict[str, Any] = {"prompt": from_command_line(self.prompt, "the prompt"),
                                   "seconds": check_seconds(self.seconds)}
        for name, check in (("seed", check_seed), ("steps", check_steps), ("cfg", check_cfg),
                            ("cfg_interval", check_cfg_interval), ("sampler", check_sampler), ("frames", check_frames)):
            if getattr(self, name) is not None:
                checked[name] = check(getattr(self, name))
        if self.negative is not None:
            if not isinstance(self.negative, str):
                raise SalongError("negative must be a string")
            checked["negative"] = from_command_line(self.negative, "the negative prompt")
        checked.update(self._check_init())
        checked.update(self._check_output())
        checked.update(self._check_edit())
        checked["lora"] = check_lora(self.lora)
        if self.lora_merge not in (None, True, False):
            raise SalongError(f"lora_merge must be True or False, got {self.lora_merge!r}")
        checked["lora_merge"] = self.lora_merge or None  # False is the default: None, left out of the recipe
        if checked["lora_merge"] and checked["lora"] is None:
            raise SalongError("--lora-merge bakes --lora adapters into the weights; give --lora FILE too")
        for name in CONTROL_FIELDS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
                raise SalongError(f"{name} must be a string or number, got {value!r}")
        controls = resolve_controls(checked["prompt"], self.bpm, self.key, self.meter, self.drums)
        checked["controls"], _ = self._laid_form(controls, checked["seconds"])
        if self.chords is not None and (controls.key is not None or self.extend is None or not needs_key(self.chords)):
            parse_chords(self.chords, controls.key)  # read now, so a bad value fails before any model loads
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def _laid_form(self, controls: Controls, seconds: float, conditioned: bool | None = None
                   ) -> tuple[Controls, str | None]:
        """`controls` with the sections of `form` laid over a song of `seconds` (`song_form`),
        and the form as the recipe records it (`form_text`; "none"; None where none was asked):
        listed sections always, "auto" only for a model with a form conditioner (`conditioned`;
        None: no model yet) and not in a loop, whose end flows into its start. A listed form in
        a loop is a one-line error."""
        form = "auto" if self.form is None else parse_form(self.form)
        if isinstance(form, tuple) and self.loop:
            raise SalongError("--form lays sections from a song's start to its end, and a --loop has neither; "
                              "leave --form out")
        if form == "none":
            return dataclasses.replace(controls, form=None), "none"
        if form == "auto" and (not conditioned or self.loop):
            return dataclasses.replace(controls, form=None), None
        bars = song_form(form, seconds, controls.bpm, controls.beats_per_bar)
        sections = form_sections(bars, seconds, controls.bpm, controls.beats_per_bar)
        return dataclasses.replace(controls, form=sections), form_text(bars)

    def _check_init(self) -> dict[str, Any]:
        """The init audio as an `InitAudio` and its level, given together."""
        audio, level = self.init_audio, self.init_noise_level
        if (audio is None) != (level is None):
            raise SalongError("audio-to-audio needs both --init-audio FILE and --init-noise-level LEVEL")
        if audio is None:
            return {}
        if not (is_real(level) and level > 0):
            raise SalongError(f"--init-noise-level must be a number above 0, got {level!r}")
        if isinstance(audio, (str, Path)):
            audio = InitAudio(str(audio))
        elif isinstance(audio, tuple):
            audio = InitAudio(given=(np.asarray(audio[0], dtype=np.float32), int(audio[1])))
        elif not isinstance(audio, InitAudio):
            raise SalongError(f"init audio must be a file or (audio, sample rate), got {type(audio).__name__}")
        return {"init_audio": audio, "init_noise_level": float(level)}

    def _check_edit(self) -> dict[str, Any]:
        """One edit at most (`salong.edit`): its source as an `InitAudio`, its region, its flags.
        What needs the source's samples or the model is checked later (`salong.edit.check_edit`)."""
        from salong.edit import check_cut, check_region

        given = [flag for flag, value in (("--inpaint", self.inpaint), ("--extend", self.extend),
                                          ("--loop", self.loop or None)) if value is not None]
        if len(given) > 1:
            raise SalongError(f"{' and '.join(given)} are different edits; give one of them")
        if given and self.init_audio is not None:
            raise SalongError(f"{given[0]} keeps its source as it is; it does not take --init-audio")
        checked: dict[str, Any] = {"loop": self.loop or None}  # False is the default: None, left out
        if self.loop not in (None, True, False):
            raise SalongError(f"loop must be True or False, got {self.loop!r}")
        if self.extend_before not in (None, True, False):
            raise SalongError(f"extend_before must be True or False, got {self.extend_before!r}")
        checked["extend_before"] = self.extend_before or None
        if checked["extend_before"] and self.extend is None:
            raise SalongError("--extend-before extends a song before its start; give --extend SONG too")
        if self.keep_silence not in (None, True, False):
            raise SalongError(f"keep_silence must be True or False, got {self.keep_silence!r}")
        checked["keep_silence"] = self.keep_silence or None
        if checked["keep_silence"] and self.extend is None:
            raise SalongError("--keep-silence keeps the silent end of the song --extend continues; give --extend SONG "
                              "too")
        if self.inpaint is None and self.extend is None and (self.start is not None or self.end is not None):
            raise SalongError("--from and --to give the region to regenerate; give --inpaint SONG too (or --extend "
                              "SONG, to make all from --from on)")
        if self.inpaint is not None:
            checked["start"], checked["end"] = check_region(self.start, self.end)
        if self.extend is not None:
            checked.update(check_cut(self.start, self.end, bool(checked["extend_before"]),
                                     bool(checked["keep_silence"])))
        for name in ("inpaint", "extend"):
            source = getattr(self, name)
            if source is None or isinstance(source, InitAudio):
                continue
            if isinstance(source, (str, Path)):
                checked[name] = InitAudio(str(source))
            elif isinstance(source, tuple):
                checked[name] = InitAudio(given=(np.asarray(source[0], dtype=np.float32), int(source[1])))
            else:
                raise SalongError(f"--{name} takes an audio file or (audio, sample rate), got {type(source).__name__}")
        return checked

    def _check_output(self) -> dict[str, Any]:
        """The bit depth, and the loudness with its ceiling (given together: -1 dBTP by default)."""
        checked: dict[str, Any] = {}
        if self.bit_depth is not None:
            checked["bit_depth"] = check_bit_depth(self.bit_depth)
        if self.limit not in (None, True, False):
            raise SalongError(f"limit must be True or False, got {self.limit!r}")
        checked["limit"] = self.limit or None  # False is the default: None, left out of the recipe
        if self.loudness is None:
            if self.peak_db is not None:
                raise SalongError("--peak-db is the true-peak ceiling of --loudness; give --loudness LUFS too")
            if checked["limit"]:
                raise SalongError("--limit holds the peaks that --loudness lifts under --peak-db; give --loudness "
                                  "LUFS too")
            return checked
        checked["loudness"] = check_loudness(self.loudness)
        checked["peak_db"] = DEFAULT_PEAK_DB if self.peak_db is None else check_peak_db(self.peak_db)
        if self.seconds < BLOCK_SECONDS:
            raise SalongError(f"--loudness needs a song of at least {BLOCK_SECONDS:g} s (BS.1770 measures "
                              f"{BLOCK_SECONDS:g} s blocks), got seconds={self.seconds:g}")
        return checked

    @property
    def resolved(self) -> bool:
        """Whether every default is filled in (`resolve`)."""
        return None not in (self.seed, self.steps, self.cfg, self.cfg_interval, self.sampler, self.frames)

    def resolve(self, model: GeneratorConfig) -> SongRequest:
        """This request for `model`: checked against it (a length its window holds, a sampler
        of its objective, an init noise level its schedule starts from), with its sampling
        defaults filled in, a random seed if none was given, and an extension's cut
        (`salong.edit.extend_cut`) as its `start` (before its source: `end`)."""
        rate = model.autoencoder.sample_rate
        if audio_samples(self.seconds, rate) < 1:
            raise SalongError(f"seconds={self.seconds} is shorter than one sample; ask for at least {1 / rate:.6f}")
        seconds = self._edited_seconds(model)
        if seconds > model.max_seconds + 1e-9 and self.inpaint is None and self.extend is None:
            raise SalongError(f"seconds={self.seconds:g} is longer than this model's window; the maximum is "
                              f"{model.max_seconds:.2f}")
        defaults = model.sampling
        sampler = self.sampler if self.sampler is not None else defaults.sampler
        get_sampler(sampler, model.objective)
        if self.init_noise_level is not None:
            check_init_noise_level(self.init_noise_level, model)
        filled = dict(seed=random_seed() if self.seed is None else self.seed,
                      steps=self.steps if self.steps is not None else defaults.steps,
                      cfg=self.cfg if self.cfg is not None else float(defaults.cfg_scale),
                      cfg_interval=self.cfg_interval or check_cfg_interval(defaults.cfg_interval),
                      sampler=sampler, frames=self.frames if self.frames is not None else defaults.frames,
                      seconds=seconds)
        filled.update(self._cut())
        from salong.edit import recorded_controls

        source = self.extend if self.extend is not None else self.inpaint
        recorded = recorded_controls(source) if source is not None else {}  # the source's recipe, read once
        filled.update(self._source_controls(model, filled.get("end" if self.extend_before else "start"), recorded))
        filled["controls"], filled["form"] = self._laid_form(filled.get("controls", self.controls), seconds,
                                                             "form" in model.dit.controls)
        filled["controls"], filled["chords"] = self._laid_chords(filled["controls"], seconds, filled["seed"],
                                                                 "chords" in model.dit.controls,
                                                                 self._source_chords(filled["controls"], recorded))
        # The defaults were checked when the model loaded (`SamplingConfig`): filled in, not checked again.
        resolved = copy.copy(self)
        for name, value in filled.items():
            object.__setattr__(resolved, name, value)
        return resolved

    def _source_chords(self, controls: Controls, recorded: dict[str, Any]) -> str | None:
        """The chords an extension past its source's end asked for none (not even "auto") plays:
        its source's `recorded` ones (`salong.edit.recorded_controls`), so its progression goes
        on through the new part, with a one-line note; else None (the request's own)."""
        if self.extend is None or self.extend_before or self.chords is not None:
            return None
        chords = recorded.get("chords")
        if chords is None or (controls.key is None and needs_key(chords)):
            return None
        warnings.warn(f"the extension plays its source's chords ({chords}), as its recipe records; give --chords "
                      "auto for new ones", Note)
        return chords

    def _laid_chords(self, controls: Controls, seconds: float, seed: int, conditioned: bool,
                     chords: str | None = None) -> tuple[Controls, str | None]:
        """`controls` with the chords of `chords` (the request's where None) laid over a song
        of `seconds` (`lay_chords`, over its sections where it has them), and the chords as
        the recipe records them (`chords_text`: by name, or by degree when drawn or so given;
        "none"; None where none were asked). "auto" draws a progression for the song's key
        with its seed (`auto_progressions`), for a model with a chords conditioner only, and
        needs a key; listed chords reach only such a model too (with a one-line warning for
        another)."""
        asked = chords or ("auto" if self.chords is None else self.chords)
        degrees = None  # the key a progression drawn or given by degree is recorded in, so --like --key moves it
        if asked.strip().lower() == "none":
            return dataclasses.replace(controls, chords=None), "none"
        if asked.strip().lower() == "auto":
            if not conditioned or controls.key is None:
                return dataclasses.replace(controls, chords=None), None
            progressions, degrees = auto_progressions(controls.key, seed), controls.key
        else:
            progressions = parse_chords(asked, controls.key)
            degrees = controls.key if needs_key(asked) else None
            if not conditioned:
                warnings.warn("this model has no chords conditioner, and its captions have no words for chords; "
                              "the song is sampled without --chords")
                return dataclasses.replace(controls, chords=None), chords_text(progressions)
        spans = lay_chords(progressions, seconds, controls.bpm, controls.beats_per_bar, controls.form)
        return dataclasses.replace(controls, chords=spans), chords_text(progressions, degrees)

    def _edited_seconds(self, model: GeneratorConfig) -> float:
        """The song's length for `model`, with an edit's checks (`salong.edit.check_edit`): an
        inpainted song is as long as its source at the model's rate; a loop with a tempo is
        whole bars (`salong.edit.loop_seconds`)."""
        from salong.edit import check_edit, loop_seconds, source_audio

        check_edit(self, model.max_seconds)
        rate = model.autoencoder.sample_rate
        if self.inpaint is not None:
            return source_audio(self, rate, model.autoencoder.audio_channels).shape[1] / rate
        if self.loop:
            return loop_seconds(self.seconds, self.controls.bpm, self.controls.beats_per_bar, model.max_seconds)
        return self.seconds

    def _cut(self) -> dict[str, Any]:
        """An extension's cut (`salong.edit.extend_cut`) as its `start` (or, before, `end`), so
        that the recipe remakes it without the rule that chose it; a silent tail (head) the
        rule skipped is a one-line note."""
        from salong.edit import extend_cut, silence_note

        if self.extend is None:
            return {}
        cut = extend_cut(self)
        note = silence_note(self, cut)
        if note is not None:
            warnings.warn(note, Note)
        return {"end" if self.extend_before else "start": cut, "keep_silence": None}

    def _source_controls(self, model: GeneratorConfig, cut: float | None, recorded: dict[str, Any]) -> dict[str, Any]:
        """An extension asked for in no key, or no tempo (none given, none in the prompt),
        continues in its source's, with a one-line note, kept as `key` and `bpm` so that the
        recipe remakes the song: those its source's recipe records where salong made it
        (`recorded`, `salong.edit.recorded_controls`: its exact tempo, and its meter with
        it), else those `salong.evaluation` hears in the part of the source the window sees
        (of the part kept: up to `cut` seconds, or before its start from there on). For a model with a
        beat conditioner, whose grid starts at 0 s of the song, the tempo only where the
        source's grid falls on it: a recorded tempo's bars run from the source's 0 s, an
        estimate's beats are found (`salong.edit.beats_on_grid`). An inpainted region asked
        for in neither only gets a note naming the ones its source records."""
        from salong.edit import heard_controls, inpaint_note, on_beat, said_control

        if self.inpaint is not None:
            if self.controls.key is None and self.controls.bpm is None:
                inpaint_note(self.inpaint, recorded)
            return {}
        if self.extend is None or None not in (self.controls.key, self.controls.bpm):
            return {}
        beat = "beat" in model.dit.controls
        audio, rate = self.extend.samples
        at_cut = min(audio.shape[1], max(0, round(cut * rate)))
        audio = np.asarray(audio)[:, at_cut:] if self.extend_before else np.asarray(audio)[:, :at_cut]  # what is kept
        found: dict[str, Any] = {}
        if self.controls.key is None and "key" in recorded:
            found["key"] = recorded["key"]
        zero = self.seconds - audio.shape[1] / rate - at_cut / rate if self.extend_before else 0.0  # its 0 s, here
        bar = recorded.get("meter", 4) if self.controls.beats_per_bar is None else self.controls.beats_per_bar
        if (self.controls.bpm is None and "bpm" in recorded
                and (not beat or on_beat(zero, recorded["bpm"] / bar))):  # its bars' grid is the song's
            found["bpm"] = recorded["bpm"]
            if self.controls.beats_per_bar is None and "meter" in recorded:
                found["meter"] = recorded["meter"]
        # A recorded tempo whose bars miss the grid is not estimated instead: the estimate would miss it too.
        wanted = [name for name in ("key", "bpm") if getattr(self.controls, name) is None and name not in recorded]
        heard = heard_controls(wanted, model, audio, rate, self.seconds, self.extend_before)
        said = [(said_control(name, found[name]), "as its source's recipe records") for name in ("key", "bpm")
                if name in found] + [(said_control(name, heard[name]), "as estimated from its source")
                                     for name in ("key", "bpm") if name in heard]
        found.update(heard)
        if not found:
            return {}
        names = " or ".join(name for name, key in (("key", "key"), ("tempo", "bpm")) if key in found)
        hows = {how for _, how in said}
        asked = (" ".join(words for words, _ in said) + ", " + hows.pop() if len(hows) == 1
                 else " ".join(f"{words} ({how})" for words, how in said))
        warnings.warn(f"no {names} given: the extension is asked for {asked}")
        found["controls"] = resolve_controls(self.prompt, found.get("bpm", self.bpm), found.get("key", self.key),
                                             found.get("meter", self.meter), self.drums)
        return found

    def with_seed(self, seed: int) -> SongRequest:
        """The same song with another seed (a variation); only the seed is checked."""
        varied = copy.copy(self)
        object.__setattr__(varied, "seed", check_seed(seed))
        return varied

    def record(self) -> dict[str, Any]:
        """The request's fields as JSON values, in order (None where not given)."""
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        if self.init_audio is not None:
            record["init_audio"] = self.init_audio.record()
        if self.lora is not None:
            record["lora"] = [adapter.record() for adapter in self.lora]
        for name in ("inpaint", "extend"):
            if getattr(self, name) is not None:
                record[name] = getattr(self, name).record()
        return record


@functools.lru_cache(maxsize=None)
def option_flag(name: str) -> str:
    """The `salong generate` option that sets field `name` (`--cfg-scale` for `cfg`)."""
    flags = {f.name: f.metadata.get("flag") for f in dataclasses.fields(SongRequest)}
    return flags.get(name) or "--" + name.replace("_", "-")
