"""Text + seconds -> song: the generation pipeline (Stable Audio 2, Evans et al. 2024).

A generator checkpoint is one self-contained file holding the three models of the
system: the DiT (`dit.`), the autoencoder (`autoencoder.`) and the text encoder, either
the CLAP model whose text tower conditions generation (`clap.`) or a T5 encoder (`t5.`,
Stable Audio Open), its tokenizer in the metadata. A Stable Audio Open folder loads into
the same `Generator` (`salong.sao`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from salong.autoencoder import Autoencoder
from salong.checkpoint import build_strict, config_from_dict, load_checkpoint, save_checkpoint
from salong.chords import chord_features, rotate_spans
from salong.clap import (Clap, holds_text_tower_only, text_tower_state,
                         tokenizer_from_metadata, tokenizer_metadata)
from salong.diffusion import (RFDenoiser, VDenoiser, cfg_denoiser, get_sampler, get_sigmas_loglinear, get_ts_logsnr,
                              start_from_init_rf)
from salong.controls import (Controls, beat_features, drum_features, form_features, form_words, key_features,
                             prompt_with_controls)
from salong.dit import DiT
from salong.edit import (Fill, edit_mode, keep_known, limit_made, loop_fill, place_window, regenerated_frames,
                         source_fill, source_seconds, splice)
from salong.errors import SalongError
# The configs live beside the file readers; `salong.pipeline` names them too, as it always has.
from salong.generator_config import KIND, GeneratorConfig, SamplingConfig, T5Spec  # noqa: F401
from salong.generator_config import generator_config, window_seconds  # noqa: F401
from salong.lora import Adapter, attach, load_adapter, merge
from salong.request import Lora, SongRequest, cfg_interval_levels
from salong.text_encoder import ClapTextEncoder, T5TextEncoder, TextEncoder
from salong.timing import audio_samples, latent_frames, timing_condition

FADE_SECONDS = 0.01  # the cut at the requested length is faded so it does not click
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Song:
    """One generated piece of audio and the request that made it (resolved: every setting filled in)."""

    audio: np.ndarray  # (channels, samples) float32
    sample_rate: int
    request: SongRequest


class Generator:
    """DiT + autoencoder + text encoder, loaded once and used for many songs."""

    def __init__(self, config: GeneratorConfig, dit: DiT, autoencoder: Autoencoder, text: Clap | TextEncoder,
                 device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.dit = dit.eval().to(self.device)
        self.autoencoder = autoencoder.eval().to(self.device)
        self.text_encoder = (text if isinstance(text, TextEncoder)
                             else ClapTextEncoder(text.eval(), layer=config.text_layer,
                                                  canonical=config.canonical_text)).to(self.device)
        self.denoiser = self._denoiser(self.dit)
        self.source: Path | None = None  # the file or folder it was loaded from, for a song's recipe
        self._adapters: dict[tuple, Adapter] = {}  # by file (path, size, mtime): loaded once
        self._merged: tuple[tuple, VDenoiser | RFDenoiser] | None = None  # the last --lora-merge DiT copy

    def _denoiser(self, dit: DiT) -> VDenoiser | RFDenoiser:
        return VDenoiser(dit) if self.config.objective == "v" else RFDenoiser(dit)

    # --- files -----------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Generator:
        """Rebuild a generator from its checkpoint (strict: every tensor, every shape)."""
        ckpt = load_checkpoint(path, KIND)
        config = config_from_dict(GeneratorConfig, ckpt.config)
        tokenizer = tokenizer_from_metadata(ckpt.metadata, repr(str(path)))
        builders = {"dit": (DiT, config.dit), "autoencoder": (Autoencoder, config.autoencoder)}
        if config.clap is not None:  # the text tower alone, or (older files) the whole CLAP
            text_only = holds_text_tower_only({k[len("clap."):]: v for k, v in ckpt.tensors.items()
                                               if k.startswith("clap.")})
            builders["clap"] = (lambda c: Clap(c, tokenizer, text_only=text_only), config.clap)
        else:
            builders["t5"] = (build_t5, config.t5)
        parts = {}
        for name, (build, part_config) in builders.items():
            tensors = {k[len(name) + 1:]: v for k, v in ckpt.tensors.items() if k.startswith(name + ".")}
            parts[name] = build_strict(build, part_config, tensors, source=f"{str(path)!r} ({name})")
        unused = [k for k in ckpt.tensors if k.split(".", 1)[0] not in parts]
        if unused:
            raise SalongError(f"{str(path)!r} holds tensors no part of the generator uses (e.g. {unused[0]})")
        text = (parts["clap"] if config.clap is not None
                else T5TextEncoder(parts["t5"], tokenizer, config.t5.max_length))
        generator = cls(config, parts["dit"], parts["autoencoder"], text, device)
        generator.source = Path(path)
        return generator

    def save(self, path: str | Path) -> Path:
        """Write the whole generator as one checkpoint (a Stable Audio Open folder's too)."""
        te = self.text_encoder
        text = te.clap if isinstance(te, ClapTextEncoder) else te.model.float()
        try:
            return save_generator(path, self.config, self.dit, self.autoencoder, text, te.tokenizer)
        finally:
            te.to(self.device)

    # --- generation ------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self.config.autoencoder.sample_rate

    @property
    def max_seconds(self) -> float:
        return self.config.max_seconds

    def frames_for(self, seconds: float) -> int:
        """Latent frames a request needs, rounded up to whole patches (`salong.timing`)."""
        frames = latent_frames(seconds, self.sample_rate, self.config.autoencoder.samples_per_latent,
                               self.config.dit.patch_size)
        return min(self.config.dit.window, frames)

    def frames_to_sample(self, seconds: float, frames: str | None) -> int:
        """Latent frames sampled for a request: the window, or those `seconds` need (`frames`
        "window" or "needed"; None: the model's default)."""
        mode = frames if frames is not None else self.config.sampling.frames
        return self.config.dit.window if mode == "window" else self.frames_for(seconds)

    def init_latents(self, audio: np.ndarray, sample_rate: int, frames: int, seed: int) -> torch.Tensor:
        """Audio-to-audio input: (channels, samples) audio at any rate, resampled, cut or
        padded with silence to `frames` latent frames, encoded (a posterior sample, as the
        reference draws it, seeded). Returns (1, latent_dim, frames) on the model's device."""
        from salong.audio import resample, to_channels

        ae = self.config.autoencoder
        audio = to_channels(resample(np.asarray(audio, dtype=np.float32), sample_rate, ae.sample_rate),
                            ae.audio_channels)
        samples = frames * ae.samples_per_latent
        audio = np.pad(audio[:, :samples], ((0, 0), (0, max(0, samples - audio.shape[1]))))
        x = torch.from_numpy(np.ascontiguousarray(audio))[None]  # (1, C, frames * hop)
        generator = torch.Generator().manual_seed(seed + 2)
        z = self.autoencoder.encode_long(x, sample=True, generator=generator)  # (1, latent_dim, frames)
        return z.float().to(self.device)

    def generate(
        self,
        request: SongRequest | str,
        seconds: float | None = None,
        steps: int | None = None,
        cfg_scale: float | None = None,
        seed: int | None = None,
        negative_prompt: str | None = None,
        sampler: str | None = None,
        full_window: bool = False,
        progress: Progress | None = None,
        frames: str | None = None,
        init_audio: tuple[np.ndarray, int] | str | Path | None = None,
        init_noise_level: float | None = None,
        bpm: float | str | None = None,
        key: str | None = None,
        meter: str | None = None,
        drums: str | None = None,
        form: str | None = None,
        chords: str | None = None,
        lora: Sequence[Lora | str | Path | tuple[str | Path, float]] | None = None,
        lora_merge: bool = False,
        cfg_interval: str | tuple[float, float] | None = None,
    ) -> Song:
        """Sample one song: `request` resolved against this model (`SongRequest.resolve`: its
        defaults, its checks), then `sample`d.

        The keyword form, `generate("calm piano", 30, cfg_scale=7.0, seed=0)`, makes the
        request from a prompt and the long-standing keywords of this method: `cfg_scale` is the
        request's `cfg`, `negative_prompt` its `negative`, `full_window=True` its
        `frames="window"`; `init_audio` is a file or (audio (channels, samples), sample rate);
        `lora` adapters are files or (file, strength) pairs; `cfg_interval` the noise levels
        guidance applies at, "0.7,1" or (0.7, 1.0)."""
        if isinstance(request, SongRequest):
            given = (seconds, steps, cfg_scale, seed, negative_prompt, sampler, frames, init_audio, init_noise_level,
                     bpm, key, meter, drums, form, chords, lora, cfg_interval)
            if full_window or lora_merge or any(value is not None for value in given):
                raise TypeError("give a SongRequest, or a prompt with its settings; not both")
        else:
            request = SongRequest(request, seconds, seed=seed, steps=steps, cfg=cfg_scale, sampler=sampler,
                                  frames="window" if full_window else frames, negative=negative_prompt,
                                  init_audio=init_audio, init_noise_level=init_noise_level,
                                  bpm=bpm, key=key, meter=meter, drums=drums, form=form, chords=chords, lora=lora,
                                  lora_merge=lora_merge, cfg_interval=cfg_interval)
        return self.sample(request.resolve(self.config), progress)

    @torch.inference_mode()
    def sample(self, request: SongRequest, progress: Progress | None = None) -> Song:
        """Sample a resolved request (`SongRequest.resolve`): exactly round(seconds * sample_rate) samples.

        Timing condition from the request, by the rule training uses (`salong.timing`):
        the opening of a piece of `seconds`, rounded up to whole seconds. `frames` says
        what is sampled: "needed" (the latent frames the request needs) or "window" (the
        whole training window, then cut). The same seed and settings on the same machine
        give bit-identical audio.

        Audio-to-audio: the init audio is encoded and noised to `init_noise_level` (sigma for
        v-objective models, t for rectified flow) and the sampler starts there, its schedule
        running from that level down, as the reference does: a low level keeps the input, a
        high one follows the prompt.

        Edits (`salong.edit`): `inpaint` regenerates a region of a song and `extend` continues
        one, keeping its latents where it is kept at every step and its samples bit for bit
        outside the crossfades; `loop` samples the song, then regenerates its wrap-around.

        Controls (`salong.controls`): a model with control conditioners reads the request's
        tempo, key and meter as beat and key features, its grid on a downbeat at 0 s, and its
        form as the section of each frame it samples, where that frame lies in the song; any
        other model reads them as words in its prompt (`prompt_with_controls`, with a
        one-line warning).

        Adapters (`request.lora`, `salong.lora`) are added to the DiT on the fly, or with
        `lora_merge` baked into a copy of its weights; the generator's own DiT is never changed.
        """
        r = request
        assert r.resolved, "sample() takes a request resolved against the model (SongRequest.resolve)"
        mode = edit_mode(r)
        if mode is None:
            audio = self._song(r, progress)
        elif mode == "loop":  # the song, then its wrap-around regenerated: twice the steps
            song = self._song(r, _counted(progress, 0, 2 * r.steps))
            bpm, beats = r.controls.bpm, r.controls.beats_per_bar or 4
            fill, shift = loop_fill(song, self.sample_rate, None if bpm is None else beats * 60 / bpm,
                                    None if bpm is None else 60 / bpm)
            seam = self._fill(_rotated(r, shift / self.sample_rate), fill, r.seed + 3,
                              _counted(progress, r.steps, 2 * r.steps))
            audio = np.roll(seam, shift, axis=1)  # back: the regenerated seam is the wrap-around
        else:
            fill = source_fill(r, self.sample_rate, self.config.autoencoder.audio_channels)
            audio = self._fill(r, fill, r.seed, progress)
            if fill.end == fill.samples:  # the song now ends in new audio: fade its cut, as a new song's
                audio = fade_end(audio, self.sample_rate)
        return Song(audio=audio, sample_rate=self.sample_rate, request=r)

    def _song(self, r: SongRequest, progress: Progress | None) -> np.ndarray:
        """A new song of `r.seconds`, (channels, samples)."""
        needed = self.frames_for(r.seconds)
        length = self.config.dit.window if r.frames == "window" else needed
        latents = self._latents(r, length, 0.0, r.seconds, r.seed, progress=progress)
        # Decode what the song keeps, plus the decoder's receptive field so that part decodes as
        # it would within the whole window: a 30 s song from the full window is not 285 s of decoding.
        keep = min(length, needed + self.config.autoencoder.decoder_context_frames)
        audio = self.autoencoder.decode_long(latents[..., :keep].float())[0]  # (C, keep * hop)
        return finish(audio.float().cpu().numpy(), audio_samples(r.seconds, self.sample_rate), self.sample_rate)

    def _fill(self, r: SongRequest, fill: Fill, seed: int, progress: Progress | None) -> np.ndarray:
        """One edit pass (`salong.edit`): the window around `fill`'s span encoded (posterior
        mean), sampled with the kept frames held to it (`keep_known`), decoded and spliced into
        the kept audio (`splice`). Returns (channels, fill.samples)."""
        from salong.audio import PEAK_CEILING

        hop = self.config.autoencoder.samples_per_latent
        offset, length = place_window(fill, self.config.dit.window * hop)
        frames = self.frames_to_sample(length / self.sample_rate, r.frames)
        piece = fill.known[:, offset : offset + frames * hop]  # shorter at the song's end: padded with silence
        piece = np.pad(piece, ((0, 0), (0, frames * hop - piece.shape[1])))
        known = self.autoencoder.encode_long(torch.from_numpy(np.ascontiguousarray(piece))[None])  # (1, D, frames)
        known = known.float().to(self.device)
        regenerate = regenerated_frames(fill, offset, frames, hop)  # (frames,)
        latents = self._latents(r, frames, offset / self.sample_rate, fill.samples / self.sample_rate, seed,
                                (known, regenerate), progress)
        made = self.autoencoder.decode_long(latents.float())[0].float().cpu().numpy()  # (C, frames * hop)
        return splice(fill, limit_made(made, PEAK_CEILING), offset)

    def _latents(self, r: SongRequest, length: int, start: float, total: float, seed: int,
                 known: tuple[torch.Tensor, torch.Tensor] | None = None,
                 progress: Progress | None = None) -> torch.Tensor:
        """(1, latent_dim, length) latents sampled for `r`, timed as `start` seconds into a piece
        of `total`; with `known` (latents (1, latent_dim, length), regenerate (length,) bool) the
        frames not regenerated keep those latents (`keep_known`)."""
        defaults = self.config.sampling
        # Noise drawn on the CPU from the seed, so a seed means the same song on any device.
        noise = torch.randn((1, self.config.dit.latent_dim, length), generator=torch.Generator().manual_seed(seed))
        noise = noise.to(self.device)
        x_init = None if r.init_audio is None else self.init_latents(*r.init_audio.samples, length, seed)
        if self.config.objective == "v":
            top = defaults.sigma_max if x_init is None else r.init_noise_level
            sigmas = get_sigmas_loglinear(r.steps, defaults.sigma_min, top).to(self.device)
            x = noise * sigmas[0] if x_init is None else x_init + noise * sigmas[0]  # (1, latent_dim, length)
        else:
            sigmas = get_ts_logsnr(r.steps, 1.0 if x_init is None else r.init_noise_level).to(self.device)
            x = noise if x_init is None else start_from_init_rf(x_init, noise, float(sigmas[0]))

        cond, uncond = self._conditioning(r.prompt, r.negative, total, r.controls, length, start)
        part, beat_scale = self._drumless_beat(cond, r)

        def callback(info: Mapping) -> None:
            if progress is not None:
                progress(int(info["i"]) + 1, r.steps)

        sample = get_sampler(r.sampler, self.config.objective)
        with self._adapted(r) as adapted:
            denoiser = cfg_denoiser(adapted, cond, uncond, r.cfg, cfg_interval_levels(r.cfg_interval),
                                    self.config.objective, part, beat_scale)
            if known is not None:
                denoiser = keep_known(denoiser, known[0], known[1], noise, self.config.objective)
            latents = sample(denoiser, x, sigmas, callback=callback,
                             generator=torch.Generator(device=self.device).manual_seed(seed + 1))
        if known is not None:  # Euler's last step lands on the kept latents only to float rounding
            latents = torch.where(known[1].to(self.device), latents, known[0])
        return latents

    # --- edits (salong.edit) ---------------------------------------------------------

    def inpaint(self, prompt: str, source: str | Path | tuple[np.ndarray, int], start: float, end: float,
                progress: Progress | None = None, **settings: Any) -> Song:
        """`source` (a file, or (audio (channels, samples), sample rate)) with seconds `start`
        to `end` regenerated for `prompt`; every other sample kept, bit for bit, outside a
        `CROSSFADE_SECONDS` crossfade on each side, which may move up to
        `SPLICE_SEARCH_SECONDS` into the region (`salong.edit.splice_points`). `settings` are
        `SongRequest`'s."""
        seconds = SongRequest(prompt, 1.0, inpaint=source, start=start, end=end)
        request = SongRequest(prompt, source_seconds(seconds), inpaint=source, start=start, end=end, **settings)
        return self.sample(request.resolve(self.config), progress)

    def extend(self, prompt: str, source: str | Path | tuple[np.ndarray, int], seconds: float,
               before: bool = False, progress: Progress | None = None, **settings: Any) -> Song:
        """`source` continued for `prompt` to `seconds` in all, past its end (or, `before`,
        before its start), from the window-minus-new seconds kept next to its cut; its own
        samples kept bit for bit outside one crossfade, up to where its sound ends (from
        where it starts: a silent tail or head is left out, `salong.edit.extend_cut`), or up
        to `start=` seconds (`before`: from `end=` seconds on). The new part is made from the
        cut on; where `source` goes on past the cut, the crossfade may move up to
        `SPLICE_SEARCH_SECONDS` into the new part, to where the splice changes least, with the
        source kept up to there (`salong.edit.source_fill`). With no key (tempo) given or
        stated, in `source`'s: its recipe's where salong made it (past its end, its chords
        too), else estimated (`SongRequest.resolve`). `settings` are `SongRequest`'s."""
        request = SongRequest(prompt, seconds, extend=source, extend_before=before, **settings)
        return self.sample(request.resolve(self.config), progress)

    def loop(self, prompt: str, seconds: float, progress: Progress | None = None, **settings: Any) -> Song:
        """A song of `seconds` (whole bars where a tempo is given or stated) whose end flows into
        its start. `settings` are `SongRequest`'s."""
        request = SongRequest(prompt, seconds, loop=True, **settings)
        return self.sample(request.resolve(self.config), progress)

    def adapters(self, lora: Sequence[Lora] | None) -> list[tuple[Adapter, float]]:
        """A request's adapters for this DiT with their strengths, each file read once while it
        is unchanged; an adapter trained on another base is refused in one line naming both
        weight digests (`salong.lora.load_adapter`)."""
        return [(adapter, strength) for _, adapter, strength in self._loaded(lora or ())]

    def _loaded(self, lora: Sequence[Lora]) -> list[tuple[tuple, Adapter, float]]:
        loaded = []
        for item in lora:
            path = Path(item.path).resolve()
            try:
                info = path.stat()
            except OSError:
                raise SalongError(f"--lora file {item.path!r} not found; give an adapter file written by "
                                  "`salong train export`") from None
            key = (str(path), info.st_size, info.st_mtime_ns)
            if key not in self._adapters:
                self._adapters = {k: v for k, v in self._adapters.items() if k[0] != key[0]}  # drop a changed file's
                self._adapters[key] = load_adapter(item.path, self.dit).to(self.device)
            loaded.append((key, self._adapters[key], item.strength))
        return loaded

    @contextlib.contextmanager
    def _adapted(self, request: SongRequest) -> Iterator[VDenoiser | RFDenoiser]:
        """The denoiser over the DiT with the request's adapters: hooks for the sampling's
        duration (`attach`), or with `lora_merge` a copy of the DiT with them merged (`merge`),
        kept for the next song with the same adapters. Strength 0 adds nothing: the base."""
        active = [(key, adapter, s) for key, adapter, s in self._loaded(request.lora or ()) if s != 0.0]
        if not active:
            yield self.denoiser
        elif request.lora_merge:
            key = tuple((k, s) for k, _, s in active)
            if self._merged is None or self._merged[0] != key:
                self._merged = None  # free the last copy before making the next
                dit = merge(copy.deepcopy(self.dit), [(adapter, s) for _, adapter, s in active])
                self._merged = (key, self._denoiser(dit))
            yield self._merged[1]
        else:
            with attach(self.dit, [(adapter, s) for _, adapter, s in active]):
                yield self.denoiser

    @property
    def controls(self) -> tuple[str, ...]:
        """The control conditioners of the DiT ("beat", "key", "drums", "form"); none for Stable Audio Open."""
        return self.config.dit.controls

    def text_with_controls(self, prompt: str, controls: Controls) -> str:
        """What the text encoder reads: the prompt, its stated tempo, key and drums changed to
        the controls' where a flag changed them, and the controls the DiT has no conditioner
        for written in (with a one-line warning). The meter stays in the words as stated. A
        form reaches such a model only as asked with --form (`SongRequest.resolve`); one the
        words cannot say (one section) is a one-line warning too."""
        style = "salong" if self.config.clap is not None else "sao"
        said = Controls(bpm=controls.bpm, key=controls.key, drums=controls.drums)
        text = prompt_with_controls(prompt, said, style, append=False)
        has = set(self.controls)
        words = Controls(bpm=None if "beat" in has else controls.bpm, key=None if "key" in has else controls.key,
                         drums=None if "drums" in has else controls.drums,
                         form=None if "form" in has else controls.form)
        written = prompt_with_controls(text, words, style)
        said_form = words.form is not None and form_words(words.form) is not None
        missing = [what for what, value in (("tempo", words.bpm), ("key", words.key), ("drums", words.drums))
                   if value is not None] + (["form"] if said_form else [])
        if written != text:
            warnings.warn(f"this model has no {' or '.join(missing)} conditioner; the prompt it reads is {written!r}")
        if words.form is not None and not said_form:
            warnings.warn("this model has no form conditioner, and its captions have no words for a form without "
                          "an intro, a B section or an outro; the song is sampled without it")
        return written

    def _conditioning(self, prompt: str, negative_prompt: str | None, seconds: float,
                      controls: Controls = Controls(), frames: int = 0, start: float = 0.0) -> tuple[dict, dict]:
        """DiT keyword arguments for the conditional and unconditional halves of CFG, timed as
        `start` seconds into a piece of `seconds`. The conditional half reads the controls; the
        unconditional one has none, so guidance pushes towards them as it pushes towards the prompt."""
        prompt = self.text_with_controls(prompt, controls)
        prompts = [prompt] if negative_prompt is None else [prompt, negative_prompt]
        tokens, _ = self.text_encoder.encode(prompts)  # (1 or 2, L, W), padding zero
        seconds_start, total = timing_condition(start, seconds)
        timing = {
            "seconds_start": torch.full((1,), seconds_start, device=self.device),
            "seconds_total": torch.full((1,), total, device=self.device),
        }
        keep = torch.zeros(1, dtype=torch.bool, device=self.device)
        cond = {"cond_tokens": tokens[:1], "cond_drop_mask": keep, **timing}
        if negative_prompt is None:
            # unconditional: every cross-attention token dropped, the global timing vector kept
            uncond = {"cond_tokens": tokens[:1], "cond_drop_mask": ~keep, **timing}
        else:
            uncond = {"cond_tokens": tokens[1:], "cond_drop_mask": keep, **timing}
        if self.controls:
            rate = self.config.autoencoder.latent_rate
            # the grid lies from the song's 0 s: an edit's window that starts later reads it at its offset
            beat = beat_features(frames, rate, controls.bpm if "beat" in self.controls else None,
                                 controls.beats_per_bar, start_seconds=start)[None].to(self.device)  # (1, frames, F)
            key = key_features(controls.key if "key" in self.controls else None)[None].to(self.device)  # (1, K)
            cond.update(beat=beat, key=key)
            uncond.update(beat=torch.zeros_like(beat), key=torch.zeros_like(key))
            if "drums" in self.controls:  # only then, so a model without it is called as before
                drums = drum_features(controls.drums)[None].to(self.device)  # (1, DRUM_FEATURES)
                cond.update(drums=drums)
                uncond.update(drums=torch.zeros_like(drums))
            if "form" in self.controls:  # the sections of the frames sampled, wherever they start in the song
                form = form_features(frames, rate, controls.form, start_seconds=start)[None].to(self.device)
                cond.update(form=form)  # (1, frames, FORM_FEATURES)
                uncond.update(form=torch.zeros_like(form))
            if "chords" in self.controls:  # as the form
                chords = chord_features(frames, rate, controls.chords, start_seconds=start)[None].to(self.device)
                cond.update(chords=chords)  # (1, frames, CHORD_FEATURES)
                uncond.update(chords=torch.zeros_like(chords))
        return cond, uncond

    def _drumless_beat(self, cond: dict, r: SongRequest) -> tuple[dict | None, float]:
        """(the conditional inputs without the beat, the beat's guidance scale) for a song asked
        with no drums on a model whose `beat_guidance_without_drums` is under 1, else (None, 1).
        Guided at the full scale, the beat control draws percussive onsets on the grid even
        without drums (docs/architecture.md, Controls)."""
        share = self.config.sampling.beat_guidance_without_drums
        if share == 1.0 or r.controls.drums != "none" or r.controls.bpm is None or "beat" not in self.controls:
            return None, 1.0
        return {**cond, "beat": torch.zeros_like(cond["beat"])}, 1 + share * (r.cfg - 1)


def _rotated(r: SongRequest, seconds: float) -> SongRequest:
    """`r` for a loop's seam pass, whose song is rotated left by `seconds` (whole bars): its
    chords rotated with it (`rotate_spans`); the beat grid needs nothing, as whole bars."""
    if r.controls.chords is None:
        return r
    rotated = copy.copy(r)
    chords = rotate_spans(r.controls.chords, seconds, r.seconds)
    object.__setattr__(rotated, "controls", dataclasses.replace(r.controls, chords=chords))
    return rotated


def finish(audio: np.ndarray, samples: int, sample_rate: int) -> np.ndarray:
    """Trim to exactly `samples` and fade the last few milliseconds so the cut does not click."""
    if audio.shape[1] < samples:
        raise AssertionError(f"decoded {audio.shape[1]} samples, fewer than the {samples} requested")
    return fade_end(np.ascontiguousarray(audio[:, :samples], dtype=np.float32), sample_rate)


def fade_end(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """A copy of `audio` with its last `FADE_SECONDS` faded out (raised cosine), so the cut does not click."""
    audio = np.array(audio, dtype=np.float32)
    samples = audio.shape[1]
    fade = min(samples, max(1, round(FADE_SECONDS * sample_rate)))
    ramp = 0.5 * (1 + np.cos(np.linspace(0, np.pi, fade, dtype=np.float64)))  # 1 -> 0, raised cosine
    audio[:, samples - fade:] *= ramp.astype(np.float32)
    return audio


def _counted(progress: Progress | None, before: int, total: int) -> Progress | None:
    """`progress` for a pass that comes after `before` of `total` steps."""
    return None if progress is None else (lambda done, _steps: progress(before + done, total))


def save_generator(path: str | Path, config: GeneratorConfig, dit: DiT, autoencoder: Autoencoder,
                   text: torch.nn.Module, tokenizer: object | None = None) -> Path:
    """One file for the whole system: weights under `dit.`, `autoencoder.` and `clap.` (CLAP's
    text tower only) or `t5.` (the text encoder `text`), plus the tokenizer (a CLAP's own by default)."""
    tensors = {}
    text_name = "clap" if config.clap is not None else "t5"
    for name, module in (("dit", dit), ("autoencoder", autoencoder), (text_name, text)):
        state = text_tower_state(module) if isinstance(module, Clap) else module.state_dict()
        tensors.update({f"{name}.{k}": v for k, v in state.items()})
    tokenizer = tokenizer if tokenizer is not None else text.tokenizer
    return save_checkpoint(path, tensors, KIND, config, extra=tokenizer_metadata(tokenizer))


def build_t5(spec: T5Spec) -> torch.nn.Module:
    """A T5 encoder of `spec`'s architecture with fresh weights (loading fills them)."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(**spec.config))

