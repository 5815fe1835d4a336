"""What a salong file holds, in a few lines of text (`salong info`)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from salong.checkpoint import load_checkpoint, read_metadata
from salong.diffusion import FULL_INTERVAL
from salong.request import CONTROL_FIELDS, SongRequest, cfg_interval_levels
from salong.textfile import visible

if TYPE_CHECKING:
    from salong.recipe import Recipe


def describe(path: str | Path | None = None) -> str:
    """`salong info`: what a file (`describe_file`) or Stable Audio Open folder holds; with
    nothing, the bundled model."""
    from salong.sao import describe_folder

    if path is None:
        return describe_bundled()
    text = describe_folder(path) if Path(path).is_dir() else describe_file(path)
    return "\n".join(visible(line) for line in text.split("\n"))  # nothing from a file drives the terminal


def describe_file(path: str | Path) -> str:
    """A model checkpoint's kind, size and config, a latents file's shape and audio format,
    or an audio file's format and, if salong made it, its settings (`describe_audio`)."""
    from salong.data import AUDIO_EXTENSIONS
    from salong.latents import load_latents

    path = Path(path)
    if path.suffix.lstrip(".").lower() in AUDIO_EXTENSIONS:
        return describe_audio(path)
    if read_metadata(path).get("kind") == "latents":
        item = load_latents(path)
        frames = int(item.latents.shape[1])
        return (f"latents: {item.latent_dim} x {frames} frames at {item.latent_rate:.3f} Hz, "
                f"{item.samples / item.sample_rate:.2f} s of {item.channels}-channel {item.sample_rate} Hz audio"
                + (f", encoded by the autoencoder of weights digest {item.autoencoder}" if item.autoencoder else ""))
    ckpt = load_checkpoint(path)
    if ckpt.kind == "lora":
        return describe_adapter(path)
    lines = [f"{ckpt.kind}: {_millions(ckpt.tensors.values())} values in {len(ckpt.tensors)} tensors, "
             f"{path.stat().st_size / 1e6:.1f} MB on disk ({_dtypes(ckpt.tensors.values())})"]
    if ckpt.kind == "generator":
        parts: dict[str, list] = {}
        for key, tensor in ckpt.tensors.items():
            parts.setdefault(key.split(".", 1)[0], []).append(tensor)
        lines.append("parts: " + ", ".join(f"{name} {_millions(ts)}" for name, ts in parts.items()))
        lines.append(_generator_summary(ckpt.config, parts, path))
    lines.append(json.dumps(ckpt.config, indent=2))
    return "\n".join(lines)


def describe_adapter(path: str | Path) -> str:
    """A LoRA adapter file (`salong.lora`): its rank, scale, targets and size, the base model it
    belongs to, what it was trained on, and how to use it."""
    from salong.lora import read_adapter

    path = Path(path)
    file = read_adapter(path)
    c, facts = file.config, file.facts
    values = sum(t.numel() for t in file.tensors.values())
    base_file = facts.get("base_model") or "a model built in memory"
    base_sha = f", sha256 {facts['base_sha256']}" if facts.get("base_sha256") else ""
    data = [f"{facts['captions']} captions" if "captions" in facts else None,
            f"{facts['files']} files" if "files" in facts else None,
            f"{facts['updates']} updates" if "updates" in facts else None]
    return "\n".join([
        f"lora adapter: rank {c.rank}, alpha {c.alpha:g} (update scale {c.scale:g}), targets {', '.join(c.targets)}; "
        f"{values:,} parameters in {len(file.tensors)} {str(file.stored).removeprefix('torch.')} tensors, "
        f"{path.stat().st_size / 1e6:.1f} MB on disk",
        f"base: the DiT of weights digest {file.base} (trained from {base_file}{base_sha}); other models refuse it",
        "trained on: " + (", ".join(d for d in data if d is not None) or "not recorded"),
        f"use: salong generate PROMPT --model BASE --lora {shlex.quote(str(path))}[:STRENGTH]",
    ])


def describe_audio(path: str | Path) -> str:
    """An audio file's length and format; for a song salong made, its settings and, last,
    the `salong generate` command that makes it again."""
    from salong.audio import probe
    from salong.recipe import Recipe

    info = probe(path)
    lines = [f"{visible(str(path))}: {info.seconds:.2f} s of {info.channels}-channel {info.sample_rate} Hz audio "
             f"({info.format})"]
    if "comment" not in info.tags:
        return "\n".join([*lines, "no salong settings in its tags (not made by `salong generate`, or its tags were "
                                   "stripped)"])
    recipe = Recipe.from_json(info.tags["comment"], repr(str(path)))
    request = recipe.request
    model = recipe.model or "the bundled model"
    tempo, key, meter, drums, form, chords = _controls(request)
    init_audio = request.init_audio.record() if request.init_audio is not None else None
    settings = [
        ("prompt", request.prompt), ("negative prompt", request.negative), ("seconds", f"{request.seconds:g}"),
        ("seed", request.seed), ("steps", request.steps), ("cfg scale", f"{request.cfg:g}"),
        ("cfg interval", _interval(request.cfg_interval)), ("sampler", request.sampler), ("tempo", tempo),
        ("key", key), ("meter", meter), ("drums", drums), ("form", form), ("chords", chords),
        ("frames", "the model's whole window, then cut" if request.frames == "window" else "only those the song needs"),
        ("init audio", init_audio), ("init noise level", request.init_noise_level),
        ("bit depth", {"32f": "32-bit float"}.get(request.bit_depth, f"{request.bit_depth}-bit")
         if request.bit_depth else None),
        ("loudness", f"{request.loudness:g} LUFS, true peak at most {request.peak_db:g} dBTP"
         + (", peaks limited" if request.limit else "") if request.loudness is not None else None),
        ("edit", _edit(recipe)),
        ("model", f"{model} (sha256 {recipe.model_sha256})" if recipe.model_sha256 else model),
        *_adapters(recipe),
        ("text encoder", recipe.text_encoder),
        ("made by", f"salong {recipe.salong}"),
    ]
    lines += [f"{name}: {visible(str(value))}" for name, value in settings if value is not None]  # one line each
    return "\n".join([*lines, "make it again with:", recipe.command(path)])


def _edit(recipe: Recipe) -> str | None:
    """What an edited song was made from (`salong.edit`): the mode, the source and its sha256, the region."""
    r = recipe.request
    source = r.inpaint if r.inpaint is not None else r.extend
    of = ""
    if source is not None:
        of = f" of {source.record() or 'audio given in memory'}"
        of += f" (sha256 {recipe.source_sha256})" if recipe.source_sha256 else ""
    if r.inpaint is not None:
        return f"inpainted {r.start:g} s to {r.end:g} s{of}"
    if r.extend is not None:
        cut = r.end if r.extend_before else r.start
        if cut is None:  # made before extensions recorded their cut: at the source's very end (start)
            return f"extended {'before its start' if r.extend_before else 'past its end'}{of}"
        return f"extended {'before' if r.extend_before else 'past'} {cut:g} s{of}"
    return "a seamless loop" if r.loop else None


def _adapters(recipe: Recipe) -> list[tuple[str, str]]:
    """A line per adapter a song was sampled with: its file, strength and sha256."""
    adapters = recipe.request.lora or ()
    shas = recipe.lora_sha256 or (None,) * len(adapters)
    how = "merged into the weights" if recipe.request.lora_merge else "on the fly"
    return [("lora", f"{a.record()['path']} at strength {a.strength:g}, {how}" + (f" (sha256 {sha})" if sha else ""))
            for a, sha in zip(adapters, shas)]


def _controls(request: SongRequest) -> tuple[str | None, ...]:
    """The tempo, key, meter and drums a song asked for, each saying whether an option or the prompt gave it,
    the sections it played, in bars and seconds, and the chords it played ("Am F G Am / C G F Em")."""
    values = request.controls.record()
    shown = {name: f"{values[name]:g} BPM" if name == "bpm" else values[name] for name in values}
    asked = tuple(None if name not in shown else
                  f"{shown[name]} ({'--' + name if getattr(request, name) is not None else 'from the prompt'})"
                  for name in CONTROL_FIELDS if name not in ("form", "chords"))
    return (*asked, _form(request), request.chords)


def _form(request: SongRequest) -> str | None:
    """The sections a song played, as `--form` lists them, and where each falls: "intro 4, A 16 (intro
    0-8 s, A 8-40 s)"; "none"; None where no form was asked of a model without a form conditioner."""
    sections = request.controls.form
    if sections is None:
        return request.form
    where = ", ".join(f"{name} {start:.4g}-{end:.4g} s" for name, start, end in sections)
    return f"{request.form} ({where})"


def describe_bundled() -> str:
    """The bundled model files and the first lines of their model card."""
    from salong.bundled import CARD_FILE, bundled_autoencoder_path, bundled_dir, bundled_generator_path

    folder = bundled_dir()
    generator, autoencoder = bundled_generator_path(), bundled_autoencoder_path()
    if generator is None and autoencoder is None:
        return "this salong install ships no model; pass --model PATH to generate, encode and decode"
    lines = [f"bundled model in {folder}"]
    if generator is None:
        lines.append("no bundled generator yet: `salong generate` needs --model PATH; "
                     "encode and decode use the bundled autoencoder")
    card = folder / CARD_FILE if folder is not None else None
    if card is not None and card.is_file():
        summary = [line for line in card.read_text(encoding="utf-8").splitlines()[:12] if line.strip()]
        lines += ["", *summary[:6], f"(model card: {card})"]
    lines += ["", describe_file(generator or autoencoder)]
    return "\n".join(lines)


def _generator_summary(config: dict, parts: dict[str, list], path: Path) -> str:
    from salong.checkpoint import check_config_numbers, config_from_dict
    from salong.pipeline import GeneratorConfig

    c = config_from_dict(GeneratorConfig, config)  # the window and rate as the generator derives them
    for name, part in (("dit", c.dit), ("autoencoder", c.autoencoder)):  # held to the file, as loading holds them
        tensors = parts.get(name, [])
        check_config_numbers(part, len(tensors), sum(t.numel() for t in tensors), f"{str(path)!r} ({name})")
    ae, sampling = c.autoencoder, c.sampling
    return (f"window {c.dit.window} latent frames = {c.max_seconds:.2f} s at {ae.latent_rate:.2f} Hz; "
            f"{ae.sample_rate} Hz, {ae.audio_channels} channels; sampler {sampling.sampler}, "
            f"{sampling.steps} steps, CFG {sampling.cfg_scale:g}"
            + (f" at noise levels {_interval(sampling.cfg_interval)}" if sampling.cfg_interval != FULL_INTERVAL
               else "")
            + (f"; the beat control gets {sampling.beat_guidance_without_drums:g} of the guidance in songs without "
               "drums" if sampling.beat_guidance_without_drums != 1 else ""))


def _interval(levels: str | tuple[float, float] | None) -> str:
    """Guidance's noise levels for people: "0.7-1", "0-1 (every step)"; None (a recipe from
    before the setting) is every step."""
    lo, hi = cfg_interval_levels(levels) if isinstance(levels, str) else levels or FULL_INTERVAL
    return f"{lo:g}-{hi:g}" + (" (every step)" if (lo, hi) == FULL_INTERVAL else "")


def _millions(tensors) -> str:
    return f"{sum(t.numel() for t in tensors) / 1e6:.2f}M"


def _dtypes(tensors) -> str:
    return ", ".join(sorted({str(t.dtype).replace("torch.", "") for t in tensors}))
