"""Editing songs at sampling time: inpaint a region, extend a song past its end or before its
start, make a seamless loop. None of it needs new weights.

The method is training-free replacement (RePaint, Lugmayr et al. 2022, without its resampling
passes; "replacement" in Song et al. 2021, Appendix I): the source is encoded to latents,
and at every sampler step the latent frames to keep are set to the source's, noised to the
step's level, while the DiT sees the whole window and fills the rest to fit (`keep_known`).
The decoder cannot give back the source exactly, so the source audio is spliced back at the
end (`splice`): every kept sample is the source's, bit for bit, except the `CROSSFADE_SECONDS`
just outside each regenerated span, where an equal-power crossfade hands over.

A loop is a song whose wrap-around is regenerated: the song is rotated by half its length,
so its end meets its start in the middle, and that seam is inpainted (`loop_fill`); rotated
back, the end flows into the start through audio the decoder made in one piece.

    song = generator.inpaint("calm piano", "take.wav", start=8.0, end=12.0, seed=1)
    song = generator.extend("calm piano", "take.wav", seconds=60.0)
    song = generator.loop("drum groove at 120 BPM", 8.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from salong.diffusion import Denoiser, append_dims
from salong.errors import SalongError
from salong.timing import audio_samples

if TYPE_CHECKING:
    from salong.request import SongRequest

CROSSFADE_SECONDS = 0.05  # each seam's equal-power crossfade, on the kept side
LOOP_SEAM_SECONDS = 2.0  # regenerated on each side of a loop's wrap-around (at most a quarter of the loop)
MIN_LOOP_SECONDS = 1.0
EDIT_MODES = ("inpaint", "extend", "loop")


@dataclass(frozen=True)
class Fill:
    """One edit pass, in samples of the output: the known audio (channels, samples), zeros
    where nothing is known, and the span [start, end) to regenerate."""

    known: np.ndarray
    start: int
    end: int
    fade: int  # crossfade samples at each seam, on the kept side

    @property
    def samples(self) -> int:
        return self.known.shape[1]

    def needs(self) -> tuple[int, int]:
        """The stretch the sampled window must cover: the span and its crossfades."""
        return max(0, self.start - self.fade), min(self.samples, self.end + self.fade)


# --- checks ------------------------------------------------------------------------------


def edit_mode(request: SongRequest) -> str | None:
    """"inpaint", "extend", "loop", or None for a plain song."""
    return next((mode for mode in EDIT_MODES if getattr(request, mode) is not None), None)


def check_region(start: Any, end: Any) -> tuple[float, float]:
    """`--from S --to E` as seconds with 0 <= S < E, or a one-line error naming them."""
    from salong.checks import is_real

    for flag, value in (("--from", start), ("--to", end)):
        if not is_real(value):
            raise SalongError(f"--inpaint needs {flag} SECONDS, a number; got {value!r}")
    if start < 0:
        raise SalongError(f"--from must be 0 or more seconds, got {start:g}")
    if not end > start:
        raise SalongError(f"--to must be after --from (the region to regenerate), got --from {start:g} --to {end:g}")
    return float(start), float(end)


def source_seconds(request: SongRequest) -> float:
    """The length of an inpaint or extend request's source, read from it (a one-line error if
    it cannot be read)."""
    source = request.inpaint if request.inpaint is not None else request.extend
    audio, rate = source.samples
    return audio.shape[1] / rate


def check_edit(request: SongRequest, max_seconds: float | None = None) -> None:
    """The checks of an edit that read its source (readable, the region inside it, a longer
    total for extend) and, given the model's window `max_seconds`, those of the window (the
    region and its crossfades inside it). Each failure is one line; none needs a loaded model."""
    mode = edit_mode(request)
    if mode in (None, "loop"):
        if mode == "loop" and max_seconds is not None and request.seconds > max_seconds + 1e-9:
            raise SalongError(f"--loop of {request.seconds:g} s is longer than this model's window; the "
                              f"maximum is {max_seconds:.2f}")
        return
    have = source_seconds(request)
    name = (request.inpaint if mode == "inpaint" else request.extend).path or "the source audio"
    if mode == "inpaint":
        if request.start >= have:
            raise SalongError(f"--from {request.start:g} is past the end of {name!r} ({have:.2f} s)")
        if request.end > have + 1e-6:
            raise SalongError(f"--to {request.end:g} is past the end of {name!r} ({have:.2f} s); give --to "
                              f"{have:.2f} or less, or --extend it")
        new = request.end - request.start
    else:
        if not request.seconds > have:
            raise SalongError(f"--extend makes {name!r} ({have:.2f} s) longer: give -s TOTAL above {have:.2f}, "
                              f"got {request.seconds:g}")
        new = request.seconds - have
    if max_seconds is not None:
        room = max_seconds - (2 if mode == "inpaint" else 1) * CROSSFADE_SECONDS
        if new > room + 1e-9:
            what = "region" if mode == "inpaint" else "extension"
            raise SalongError(f"the {what} of {new:.2f} s is longer than this model's window allows; the most is "
                              f"{room:.2f} s (window {max_seconds:.2f} s less the crossfades)")


def loop_seconds(seconds: float, bpm: float | None, beats_per_bar: int | None, max_seconds: float) -> float:
    """A loop's length: with a tempo, `seconds` snapped to whole bars (the nearest count, at
    least one, that the window holds); without one, `seconds`."""
    if bpm is not None:
        bar = (beats_per_bar or 4) * 60.0 / bpm
        bars = max(1, round(seconds / bar))
        if bars * bar > max_seconds + 1e-9:
            bars = math.floor(max_seconds / bar)
        if bars < 1:
            raise SalongError(f"one bar at {bpm:g} BPM ({bar:.2f} s) is longer than this model's window "
                              f"({max_seconds:.2f} s)")
        seconds = bars * bar
    if seconds < MIN_LOOP_SECONDS:
        raise SalongError(f"--loop needs at least {MIN_LOOP_SECONDS:g} s, got {seconds:g}")
    return seconds


# --- plans ------------------------------------------------------------------------------


def fade_samples(sample_rate: int) -> int:
    return max(1, round(CROSSFADE_SECONDS * sample_rate))


def source_audio(request: SongRequest, sample_rate: int, channels: int) -> np.ndarray:
    """An inpaint or extend request's source at a model's rate and channels, (channels, samples)."""
    from salong.audio import resample, to_channels

    source = request.inpaint if request.inpaint is not None else request.extend
    audio, rate = source.samples
    return to_channels(resample(np.asarray(audio, dtype=np.float32), rate, sample_rate), channels)


def source_fill(request: SongRequest, sample_rate: int, channels: int) -> Fill:
    """The `Fill` of an inpaint or extend request: its source at the model's rate and channels
    (`source_audio`), placed in the output (after the new part for an extension before the start)."""
    audio = source_audio(request, sample_rate, channels)
    have, fade = audio.shape[1], fade_samples(sample_rate)
    if request.inpaint is not None:
        start = min(have - 1, audio_samples(request.start, sample_rate))
        end = min(have, max(start + 1, audio_samples(request.end, sample_rate)))
        return Fill(audio, start, end, fade)
    total = audio_samples(request.seconds, sample_rate)
    assert total > have, "check_edit: an extension adds samples"
    pad = np.zeros((audio.shape[0], total - have), dtype=np.float32)
    if request.extend_before:
        return Fill(np.concatenate([pad, audio], axis=1), 0, total - have, fade)
    return Fill(np.concatenate([audio, pad], axis=1), have, total, fade)


def loop_fill(song: np.ndarray, sample_rate: int, bar_seconds: float | None = None,
              beat_seconds: float | None = None) -> tuple[Fill, int]:
    """The seam pass of a loop: `song` rotated left by `shift` samples so that its end meets
    its start in the middle, with the span around that meeting point to regenerate. With a
    tempo the shift is whole bars (whole beats in a one-bar loop), so the rotated song still
    starts on the beat grid a beat conditioner lays from 0 s. Returns (fill, shift); rotate
    the result right by `shift` to get the loop."""
    samples = song.shape[1]
    shift = samples // 2
    for unit in (bar_seconds, beat_seconds):
        if unit is not None and round(samples / 2 / (unit * sample_rate)) >= 1:
            shift = round(round(samples / 2 / (unit * sample_rate)) * unit * sample_rate)
            break
    seam = samples - shift  # where the song's last sample meets its first
    half = min(round(LOOP_SEAM_SECONDS * sample_rate), samples // 4)
    fade = min(fade_samples(sample_rate), samples // 8)
    return Fill(np.roll(song, -shift, axis=1), seam - half, seam + half, fade), shift


def place_window(fill: Fill, window: int) -> tuple[int, int]:
    """The stretch [offset, offset + length) of the output the sampler sees: all of it when the
    window holds it, else `window` samples around the span and its crossfades, as central as
    the song's ends allow (an extension at the end sees the song's last part)."""
    length = min(fill.samples, window)
    first, last = fill.needs()
    assert last - first <= length, "check_edit: the span and its crossfades fit the window"
    centre = (first + last) // 2
    offset = min(max(0, centre - length // 2), fill.samples - length)
    offset = min(offset, first)  # rounding never leaves the span's start outside
    return offset, length


def regenerated_frames(fill: Fill, offset: int, frames: int, hop: int) -> torch.Tensor:
    """(frames,) bool: the latent frames the sampler makes (any that overlaps the span, or lies
    past the song's end); the others keep the source's latents."""
    starts = offset + torch.arange(frames) * hop  # each frame's first sample in the output
    overlaps = (starts < fill.end) & (starts + hop > fill.start)
    return overlaps | (starts >= fill.samples)


# --- sampling ---------------------------------------------------------------------------


def keep_known(denoiser: Denoiser, known: torch.Tensor, regenerate: torch.Tensor, noise: torch.Tensor,
               objective: str) -> Denoiser:
    """A denoiser that keeps `known` latents where `regenerate` is False (RePaint's replacement).

    Its input there is `known` noised to the step's level with `noise` (x = x0 + sigma eps for
    v-objective sigmas, x = (1 - t) x0 + t eps for rectified-flow times), so the DiT sees the
    kept frames as a clean sample would look at that level; its output there is `known`
    itself, so each sampler's update moves the kept frames along their noised path and its
    last step returns them exactly. known, noise (B, C, L); regenerate (L,) bool.
    """
    keep = ~regenerate.to(known.device)[None, None, :]  # (1, 1, L)

    def denoise(x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        level = append_dims(sigma, x.ndim)  # (B, 1, 1)
        noised = known + level * noise if objective == "v" else (1 - level) * known + level * noise
        x = torch.where(keep, noised, x)
        return torch.where(keep, known, denoiser(x, sigma, **cond))

    return denoise


def splice(fill: Fill, made: np.ndarray, offset: int) -> np.ndarray:
    """The output of an edit pass: `fill.known` with the span taken from `made`, the audio the
    decoder made for samples [offset, offset + made's length). Outside the span the known
    samples are kept bit for bit, except `fill.fade` samples on each side, where the known
    audio fades out and the made audio in with equal power (cos / sin of a quarter turn)."""
    out = fill.known.copy()
    first, last = fill.needs()
    assert offset <= first and last <= offset + made.shape[1], "the made audio covers the span and its crossfades"
    made = made[:, first - offset : last - offset]  # (C, last - first), now at `first`
    out[:, fill.start : fill.end] = made[:, fill.start - first : fill.end - first]
    if fill.start > first:  # the known audio hands over to the new
        n = fill.start - first
        fade_in = _quarter_sine(n)
        out[:, first : fill.start] = fill.known[:, first : fill.start] * fade_in[::-1] + made[:, :n] * fade_in
    if last > fill.end:  # and back
        n = last - fill.end
        fade_in = _quarter_sine(n)
        out[:, fill.end : last] = (made[:, fill.end - first :] * fade_in[::-1]
                                   + fill.known[:, fill.end : last] * fade_in)
    return out


def _quarter_sine(n: int) -> np.ndarray:
    """(n,) float32 from about 0 up to about 1, sin of a quarter turn at sample centres; its
    reverse is the matching cos, so the two gains' squares sum to 1 (equal power)."""
    return np.sin((np.arange(n, dtype=np.float64) + 0.5) / n * (np.pi / 2)).astype(np.float32)


def limit_made(made: np.ndarray, ceiling: float) -> np.ndarray:
    """The decoder's audio scaled down if it peaks over `ceiling`, so writing the edit does not
    scale the whole song (and the kept samples with it) to avoid clipping."""
    peak = float(np.max(np.abs(made))) if made.size else 0.0
    return made if peak <= ceiling else (made * (ceiling / peak)).astype(np.float32)

