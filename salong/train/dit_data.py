"""The DiT run's prepared data (`salong train dit`): copies of the frozen models in
`RUN/prepared/`, the dataset encoded once into latents and text features with each file's
tempo, key and meter, and the random crops training reads (docs/architecture.md, Timing
and Controls)."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from salong.audio import load_audio
from salong.autoencoder import Autoencoder, save_autoencoder
from salong.chords import chord_features, parse_timeline
from salong.checkpoint import (build_strict, config_from_dict, content_digest, load_checkpoint, save_checkpoint,
                               write_atomic)
from salong.clap import Clap, save_clap, tokenizer_from_metadata, tokenizer_metadata
from salong.controls import (GROOVES, beat_features, drum_features, form_features, key_features, parse_key,
                             parse_sections)
from salong.data import caption_index, index_audio
from salong.distributed import Dist
from salong.errors import SalongError
from salong.pipeline import Generator, T5Spec, build_t5
from salong.text_encoder import ClapTextEncoder, T5TextEncoder, TextEncoder
from salong.timing import timing_condition
from salong.train.trainer import PREPARED_DIR

# 2: text holds every caption of a file; 3: items carry tempo, key and meter; 4: and drums; 5: and sections
CACHE_VERSION = 5
_GROOVE_STREAM = 3  # the random stream (beside an item seed) that draws whether a crop names its groove
# Share of crops with drums whose drums control says "drums" without naming the groove, so a
# model learns plain "drums" (a prompt that names none) as well as each groove.
UNNAMED_GROOVE = 0.5
# The run's own copies of its frozen models, in RUN/prepared/: the text encoder is a CLAP or a T5.
AUTOENCODER_FILE, CLAP_FILE, T5_FILE = "autoencoder.safetensors", "clap.safetensors", "t5.safetensors"
BASE_FILE = "dit.safetensors"  # a LoRA run's frozen DiT


@dataclass(frozen=True)
class CropLengths:
    """Crop lengths in latent frames: whole patches from `shortest` to `longest`.

    Long crops are rarer than short ones, since a crop's cost grows at least with its length,
    while every length up to the window is still trained. `law` sets how much rarer:
    - "log": log-uniform, density 1/L: as many crops between 5 and 10 s as between 100 and
      200 s. With a cost linear in L, every second of length gets the same compute, so most
      of it goes to crops longer than 95 s.
    - "balanced": density 1/L^2: every octave of lengths gets the same compute (with a cost
      linear in L). From 4 to 285 s the mean crop is 17 s against log's 66 s, and with the
      compact DiT at batch 8 on 2 CPU cores (0.94 s at 10 s, 51.7 s at 285 s) an average step
      costs about 1.9 s against 9 s, about 5x cheaper; 3% of batches are longer than 95 s.
    """

    shortest: int
    longest: int
    patch: int
    law: str = "log"

    def draw(self, batch_seed: int) -> int:
        if self.shortest == self.longest:
            return self.longest
        lo, hi = self.shortest, self.longest + self.patch  # the top patch gets its share too
        u = np.random.default_rng([batch_seed, 1]).uniform()
        if self.law == "balanced":  # inverse CDF of density 1/L^2 on [lo, hi)
            length = 1 / (1 / lo - u * (1 / lo - 1 / hi))
        else:
            length = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        frames = int(length) // self.patch * self.patch
        return min(self.longest, max(self.shortest, frames))


# --- pre-encoding ----------------------------------------------------------------------


def prepare_models(run_dir: Path, autoencoder: Path | None, text_encoder: Path | None,
                   init: Generator | None = None, lora: bool = False) -> tuple[Path, Path]:
    """Copy the frozen models into `RUN/prepared/` once; later calls check they are the same files.

    A run started from a generator (`init`) takes the generator's own autoencoder and text
    encoder (its CLAP, or its T5, which cannot be replaced) for those not given, and for
    `lora` its DiT, the base the adapters train on."""
    folder = run_dir / PREPARED_DIR
    t5 = init.config.t5 is not None if init is not None else (folder / T5_FILE).exists()
    targets = (folder / AUTOENCODER_FILE, folder / (T5_FILE if t5 else CLAP_FILE))
    if t5 and text_encoder is not None:
        raise SalongError("--text-encoder takes a CLAP, but this run's generator reads T5 features; drop "
                          "--text-encoder (the run keeps the generator's own T5)")
    if init is not None:
        folder.mkdir(parents=True, exist_ok=True)
        if autoencoder is None and not targets[0].exists():
            save_autoencoder(targets[0], init.autoencoder)
        if text_encoder is None and not targets[1].exists():
            if t5:
                save_t5(targets[1], init.text_encoder, init.config.t5)
            else:
                save_clap(targets[1], init.text_encoder.clap)
        if lora and not (folder / BASE_FILE).exists():
            save_base(folder / BASE_FILE, init)
    for source, target, flag in zip((autoencoder, text_encoder), targets, ("--autoencoder", "--text-encoder")):
        if target.exists():
            if source is not None and content_digest(source) != content_digest(target):
                raise SalongError(f"this run was prepared with another {flag[2:]}; omit {flag} to keep the run's "
                                  f"own copy, or start a new run with --out")
            continue
        if source is None:
            command = flag[2:].replace("text-encoder", "clap")
            raise SalongError(f"{flag} is required to start a DiT run (a model file from `salong train {command}`)")
        if not Path(source).is_file():
            raise SalongError(f"{flag} {source} not found; check the path")
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(target, lambda tmp, src=Path(source): shutil.copyfile(src, tmp), ".safetensors")
    return targets


def save_t5(path: Path, encoder: TextEncoder, spec: T5Spec) -> Path:
    """A generator's T5 as a file of its own (weights, `T5Spec`, tokenizer), for a run's copy."""
    state = {k: v.float() for k, v in encoder.module.state_dict().items()}
    return save_checkpoint(path, state, "t5", spec, extra=tokenizer_metadata(encoder.tokenizer))


def load_t5(path: Path) -> T5TextEncoder:
    """The T5 `save_t5` wrote, as the text encoder generation uses."""
    ckpt = load_checkpoint(path, "t5")
    spec = config_from_dict(T5Spec, ckpt.config)
    model = build_strict(build_t5, spec, ckpt.tensors, source=f"{str(path)!r} (t5)")
    return T5TextEncoder(model, tokenizer_from_metadata(ckpt.metadata, repr(str(path))), spec.max_length)


def save_base(path: Path, init: Generator) -> Path:
    """The DiT a LoRA run adapts, with the sha256 of the file or folder it came from."""
    from salong.recipe import model_sha256

    source = init.source
    facts = {"base_model": source.name if source is not None else "",
             "base_sha256": model_sha256(source) if source is not None else ""}
    state = {k: v.float() for k, v in init.dit.state_dict().items()}
    return save_checkpoint(path, state, "dit", init.dit.config, extra=facts)


def preencode(
    data: str | Path,
    cache_dir: Path,
    autoencoder: Autoencoder,
    clap: Clap | TextEncoder,
    models_digest: str,
    d: Dist = Dist(),
    progress: Callable[[int, int], None] | None = None,
    text_layer: int = -2,
    canonical_text: bool = False,
    estimate_bpm: bool = False,
) -> list[dict[str, Any]]:
    """Encode every audio file once: `cache_dir/NNNNNN.safetensors` with `latents` (64, frames) and
    `text` (captions, tokens, width: each of the file's captions at CLAP layer `text_layer`, or
    from the given text encoder, a T5);
    `index.json` lists them, with each file's tempo, key, meter and downbeat where known
    (`estimate_bpm`: a beat grid estimated from the audio, stored as `beat_grid` [bpm,
    downbeat s], for files whose metadata gives no tempo). A complete, matching cache is reused.
    Under DDP (`d`) each rank encodes its share; rank 0 writes the index after a barrier."""
    files, skipped = index_audio(Path(data))
    if not files:
        raise SalongError(f"no readable audio files in {str(data)!r}; check --data")
    signature = {"version": CACHE_VERSION, "models": models_digest, "text_layer": text_layer,
                 "canonical_text": canonical_text, "estimate_bpm": estimate_bpm,
                 "files": [[f.relpath, list(f.captions), f.frames, f.sample_rate, f.controls.record(), f.downbeat]
                           for f in files]}
    index_path = cache_dir / "index.json"
    if index_path.exists():
        saved = json.loads(index_path.read_text())
        if saved.get("signature") == signature:
            return saved["items"]
    cache_dir.mkdir(parents=True, exist_ok=True)
    rate, channels = autoencoder.config.sample_rate, autoencoder.config.audio_channels
    if d.main:  # padding is silence (docs/architecture.md, Timing): the latent of silent audio, away from the edges
        hop = autoencoder.config.samples_per_latent
        with torch.inference_mode():
            silence = autoencoder.encode_long(torch.zeros(1, channels, 64 * hop), sample=False)[0, :, 32]  # (64,)
        write_atomic(cache_dir / "silence.safetensors",
                     lambda tmp: save_file({"latent": silence.float().contiguous()}, str(tmp)), ".safetensors")
    text_encoder = (ClapTextEncoder(clap, layer=text_layer, cache_size=0, canonical=canonical_text)
                    if isinstance(clap, Clap) else clap)
    mine = [i for i in range(len(files)) if i % d.world_size == d.rank]
    for done, i in enumerate(mine, start=1):
        record = files[i]
        audio = torch.from_numpy(load_audio(record.path, rate, channels))[None]  # (1, C, N)
        with torch.inference_mode():
            latents = autoencoder.encode_long(audio, sample=False)[0]  # (64, frames)
            text, _ = text_encoder.encode(list(record.captions))  # (captions, tokens, width), padding zero
        tensors = {"latents": latents.float().contiguous(), "text": text.contiguous()}
        if estimate_bpm and record.controls.bpm is None:
            grid = _beat_grid(audio[0].numpy(), rate)
            if grid is not None:
                tensors["beat_grid"] = torch.tensor(grid, dtype=torch.float64)  # (2,): bpm, downbeat s
        write_atomic(cache_dir / f"{i:06d}.safetensors", lambda tmp, t=tensors: save_file(t, str(tmp)), ".safetensors")
        if progress is not None:
            progress(done, len(mine))
    d.barrier()
    items = [{"file": f"{i:06d}.safetensors", "path": f.relpath, "caption": f.caption, "captions": list(f.captions),
              "duration": f.duration, **f.controls.record(), **({"downbeat": f.downbeat} if f.downbeat else {})}
             for i, f in enumerate(files)]
    if estimate_bpm:
        for item, f in zip(items, files):
            if f.controls.bpm is not None:
                continue
            with safe_open(str(cache_dir / item["file"]), framework="pt") as cached:  # the grid alone, not the latents
                grid = cached.get_tensor("beat_grid") if "beat_grid" in cached.keys() else None
            if grid is not None:
                item.update(bpm=round(float(grid[0]), 2), downbeat=round(float(grid[1]), 4))
    if d.main:
        payload = json.dumps({"signature": signature, "items": items, "skipped": skipped})
        write_atomic(index_path, lambda tmp: tmp.write_text(payload), ".json")
    d.barrier()
    return items


def _beat_grid(audio: np.ndarray, sample_rate: int) -> tuple[float, float] | None:
    """(bpm, downbeat s) of a file's audio, if the tracker finds a tempo salong can condition on."""
    from salong.controls import MAX_BPM, MIN_BPM
    from salong.evaluation import estimate_beat_grid

    grid = estimate_beat_grid(audio, sample_rate)
    return grid if grid is not None and MIN_BPM <= grid[0] <= MAX_BPM else None


class LatentDataset(torch.utils.data.Dataset):
    """Random crops of cached latents, indexed with `(index, item_seed, batch_seed)` for exact resume.

    The batch seed draws the crop length (one per batch, see `CropLengths`), the item seed
    the offset and which of the file's captions the crop reads (`caption_index`). Crops
    that run past the end of a file are padded with the latent of silence and masked;
    timing follows `salong.timing`. A file's tempo becomes beat features that keep the
    phase of the crop's offset (a piece's grid starts on a downbeat at 0 s), its key key
    features and its drums drum features, the groove unnamed in a share of crops
    (`UNNAMED_GROOVE`), its sections form features and its chords chord features that keep
    the crop's offset into the piece, none on the padding past its end (`salong.controls`,
    `salong.chords`; zeros where the metadata gives none).
    """

    def __init__(self, cache_dir: Path, items: list[dict[str, Any]], lengths: CropLengths, latent_rate: float) -> None:
        self.cache_dir, self.items, self.lengths, self.latent_rate = cache_dir, items, lengths, latent_rate
        self.silence = load_file(str(cache_dir / "silence.safetensors"))["latent"]  # (64,)
        # each file's key features, read once rather than per crop
        self.keys = [key_features(parse_key(item["key"]) if item.get("key") else None) for item in items]
        self.forms = [parse_sections(item["sections"]) if item.get("sections") else None for item in items]
        self.chords = [parse_timeline(item["chords"]) if item.get("chords") else None for item in items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        index, seed, batch_seed = key
        frames = self.lengths.draw(batch_seed)
        item = self.items[index]
        tensors = load_file(str(self.cache_dir / item["file"]))
        latents = tensors["latents"]  # (64, n)
        n = latents.shape[1]
        offset = int(np.random.default_rng(seed).integers(0, n - frames + 1)) if n > frames else 0
        crop = latents[:, offset: offset + frames]  # (64, <= frames)
        real = crop.shape[1]
        mask = torch.zeros(frames, dtype=torch.bool)
        mask[:real] = True
        padding = self.silence[:, None].expand(-1, frames - real)  # (64, frames - real)
        texts = tensors["text"]  # (captions, tokens, width)
        seconds_start, seconds_total = timing_condition(offset / self.latent_rate, item["duration"])
        meter = item.get("meter")
        beat = beat_features(frames, self.latent_rate, item.get("bpm"), int(meter.split("/")[0]) if meter else None,
                             start_seconds=offset / self.latent_rate - item.get("downbeat", 0.0))  # (frames, F)
        key = self.keys[index]  # (KEY_FEATURES,)
        drums = item.get("drums")
        if drums in GROOVES and np.random.default_rng([seed, _GROOVE_STREAM]).random() < UNNAMED_GROOVE:
            drums = "on"
        form = form_features(frames, self.latent_rate, self.forms[index], start_seconds=offset / self.latent_rate)
        # Past the piece's end (the silence padding) there is no section. Laid as the last
        # section's end, the padding paired "the outro nearly through" with silence: the likely
        # cause of songs that end early (checkpoints/README.md, Limits).
        form[real:] = 0.0
        chords = chord_features(frames, self.latent_rate, self.chords[index], start_seconds=offset / self.latent_rate)
        chords[real:] = 0.0  # and no chord
        return {
            "latents": torch.cat([crop, padding], dim=1),  # (64, frames)
            "mask": mask,
            "text": texts[caption_index(texts.shape[0], seed)],  # (tokens, width): one caption of the file
            "seconds_start": seconds_start,
            "seconds_total": seconds_total,
            "beat": beat,
            "key": key,
            "drums": drum_features(drums),  # (DRUM_FEATURES,)
            "form": form,  # (frames, FORM_FEATURES)
            "chords": chords,  # (frames, CHORD_FEATURES)
        }
