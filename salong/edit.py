"""Editing songs at sampling time: inpaint a region, extend a song past its end or before its
start, make a seamless loop. None of it needs new weights.

The method is training-free replacement (RePaint, Lugmayr et al. 2022, without its resampling
passes; "replacement" in Song et al. 2021, Appendix I): the source is encoded to latents,
and at every sampler step the latent frames to keep are set to the source's, noised to the
step's level, while the DiT sees the whole window and fills the rest to fit (`keep_known`).
The decoder cannot give back the source exactly, so the source audio is spliced back at the
end (`splice`): every kept sample is the source's, bit for bit, except the `CROSSFADE_SECONDS`
just outside each regenerated span, where an equal-power crossfade hands over. An inpainted
region's crossfades may move up to `SPLICE_SEARCH_SECONDS` into it, to where the spliced
audio changes least (`splice_points`); the source then goes on up to there. So may an
extension's crossfade where its source goes on past a cut it was given (a `--from` inside
it): that source audio is kept for the splice alone, and the sampler sees the source up to
the cut only, as without it (`source_fill`).

An extension cuts its source where the new part joins it: at `--from` (before its start:
`--to`), or where its sound ends (starts), so that a song that fades out into silence, as a
song made at its own length often does, is continued from its sound and not after a pause
(`sound_bounds`, `extend_cut`).

A loop is a song whose wrap-around is regenerated: the song is rotated by half its length,
so its end meets its start in the middle, and that seam is inpainted (`loop_fill`); rotated
back, the end flows into the start through audio the decoder made in one piece.

    song = generator.inpaint("calm piano", "take.wav", start=8.0, end=12.0, seed=1)
    song = generator.extend("calm piano", "take.wav", seconds=60.0)  # start=8.0: keep its first 8 s
    song = generator.loop("drum groove at 120 BPM", 8.0)
"""

from __future__ import annotations

import math
import shlex
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from salong.diffusion import Denoiser, append_dims
from salong.errors import Note, SalongError
from salong.timing import audio_samples

if TYPE_CHECKING:
    from salong.generator_config import GeneratorConfig
    from salong.request import InitAudio, SongRequest

CROSSFADE_SECONDS = 0.05  # each seam's equal-power crossfade, on the kept side
SPLICE_SEARCH_SECONDS = 0.25  # how far into a regenerated span a crossfade may move (`splice_points`)
SPLICE_FFT, SPLICE_HOP = 1024, 256  # the frames in which a splice's changes are measured
SPLICE_REACH = 2048  # and how far on each side of its crossfade they count
LOOP_SEAM_SECONDS = 2.0  # regenerated on each side of a loop's wrap-around (at most a quarter of the loop)
MIN_LOOP_SECONDS = 1.0
EDIT_MODES = ("inpaint", "extend", "loop")
# An extension skips its source's silent tail (head): frames as `salong.evaluation.longest_silence` reads them
SILENCE_DB = -50.0  # a frame quieter than this (RMS, dB re full scale) is silence
SILENCE_FRAME, SILENCE_HOP = 2048, 512  # RMS frames, in samples, power-averaged over the channels
MIN_SILENCE_SECONDS = 0.25  # a shorter silent tail (head) is a rest, and kept
CUT_STEP_SECONDS = 0.01  # the cut chosen there is rounded outwards to this, to read back as --from (--to) gives it


@dataclass(frozen=True)
class Fill:
    """One edit pass, in samples of the output: the known audio (channels, samples), zeros
    where nothing is known, and the span [start, end) to regenerate; `source`, where given,
    is the audio spliced back, which may go on into the span where `known` is silent."""

    known: np.ndarray  # what the sampler is given (encoded, its frames outside the span kept)
    start: int
    end: int
    fade: int  # crossfade samples at each seam, on the kept side
    search: int = 0  # how far into the span a crossfade may move (`splice_points`); 0 where nothing is kept there
    # For the splice alone: an extension's source up to `search` samples past its cut, which
    # the sampler does not see (it continues from the cut); None: `known` is what is kept.
    source: np.ndarray | None = None

    @property
    def samples(self) -> int:
        return self.known.shape[1]

    @property
    def kept(self) -> np.ndarray:
        """The audio spliced back around the span (`splice`): `source`, else `known`."""
        return self.known if self.source is None else self.source

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
        before = bool(request.extend_before)
        given = request.end if before else request.start  # the cut asked for; None: where the sound ends (starts)
        if before and given is not None and given >= have:
            raise SalongError(f"--to {given:g} is not before the end of {name!r} ({have:.2f} s): --extend-before keeps "
                              f"it from --to on; give --to below {have:.2f}")
        if not before and given is not None and given > have + CUT_STEP_SECONDS / 2:
            raise SalongError(f"--from {given:g} is past the end of {name!r} ({have:.2f} s); give --from "
                              f"{_seconds(have)} or less")
        if given is None and not request.seconds > have:
            raise SalongError(f"--extend makes {name!r} ({have:.2f} s) longer: give -s TOTAL above {have:.2f}, "
                              f"got {request.seconds:g}")
        cut = extend_cut(request)
        kept = have - cut if before else min(have, cut)
        if given is not None and not request.seconds > kept:
            raise SalongError(f"--extend keeps {kept:.2f} s of {name!r} ({'--to' if before else '--from'} {given:g}): "
                              f"give -s TOTAL above {kept:.2f}, got {request.seconds:g}")
        new = request.seconds - kept
    if max_seconds is not None:
        room = max_seconds - (2 if mode == "inpaint" else 1) * CROSSFADE_SECONDS
        if new > room + 1e-9:
            what = "region" if mode == "inpaint" else "extension"
            raise SalongError(f"the {what} of {new:.2f} s is longer than this model's window allows; the most is "
                              f"{room:.2f} s (window {max_seconds:.2f} s less the crossfades)")


def check_cut(start: Any, end: Any, before: bool, keep_silence: bool) -> dict[str, float]:
    """An extension's `--from S` (keep its source up to S) or, extended `before` its start,
    `--to E` (keep it from E on), checked as far as it can be without the source: a one-line
    error for the other flag of the two, for one given with `keep_silence`, or for a cut that
    keeps nothing. Returns {"start": S} or {"end": E} as floats; {} where none is given."""
    from salong.checks import is_real

    if before and start is not None:
        raise SalongError("--from is for --extend (keep SONG up to S); --extend-before keeps SONG from --to E on: "
                          "give --to instead")
    if not before and end is not None:
        raise SalongError("--to is for --extend-before (keep SONG from E on); --extend keeps SONG up to --from S: "
                          "give --from instead")
    flag, value = ("--to", end) if before else ("--from", start)
    if keep_silence and value is not None:
        raise SalongError(f"--keep-silence (extend from SONG's very {'start' if before else 'end'}) and {flag} "
                          f"{value!r} each say where SONG is cut; give one of them")
    if value is None:
        return {}
    if not is_real(value):
        raise SalongError(f"{flag} takes SECONDS, a number; got {value!r}")
    if before and value < 0:
        raise SalongError(f"--to must be 0 or more seconds (where the kept part of SONG starts), got {value:g}")
    if not before and not value > 0:
        raise SalongError(f"--from must be above 0 seconds (how much of SONG to keep), got {value:g}")
    return {"end" if before else "start": float(value)}


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


def sound_bounds(audio: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """Where `audio` (channels, samples) starts and stops sounding, in seconds: the start of its
    first frame and the end of its last whose RMS is SILENCE_DB or more (frames of SILENCE_FRAME
    samples every SILENCE_HOP, power-averaged over the channels; those at the end over the
    samples they have), rounded outwards to CUT_STEP_SECONDS. A silent head or tail shorter
    than MIN_SILENCE_SECONDS counts as sound, and so does all of a song silent throughout:
    (0, its length) is "nothing to skip". Only silence is skipped, never a fade still heard."""
    samples = audio.shape[1]
    length = samples / sample_rate
    if samples == 0:
        return 0.0, 0.0
    starts = np.arange(0, samples, SILENCE_HOP)  # each frame's first sample, and each hop's
    ends = np.minimum(starts + SILENCE_FRAME, samples)
    hops = np.zeros(len(starts))  # (hops,) energy of each hop, summed over the channels one at a time
    for channel in audio:
        channel = np.asarray(channel, dtype=np.float32)
        hops += np.add.reduceat(channel * channel, starts, dtype=np.float64)
    per = SILENCE_FRAME // SILENCE_HOP
    energy = np.convolve(hops, np.ones(per))[per - 1 :]  # (hops,) frame i: hops i to i + per - 1
    heard = np.flatnonzero(energy / (ends - starts) / len(audio) >= 10 ** (SILENCE_DB / 10))
    if heard.size == 0:
        return 0.0, length
    first, last = int(starts[heard[0]]), int(ends[heard[-1]])
    least, steps = MIN_SILENCE_SECONDS * sample_rate, round(1 / CUT_STEP_SECONDS)
    start = math.floor(first * steps / sample_rate + 1e-9) / steps if first >= least else 0.0
    end = min(length, math.ceil(last * steps / sample_rate - 1e-9) / steps) if samples - last >= least else length
    return start, end


def extend_cut(request: SongRequest) -> float:
    """Where an extension cuts its source, in seconds of it: `request.start` (the new part
    follows what comes before) or, extended before its start, `request.end` (the new part leads
    into what comes after); else where the source's sound ends (starts), past a silent tail
    (head) (`sound_bounds`); with `keep_silence`, as recipes from before this rule say, at its
    very end (start). A function of the source's samples alone, so a recipe remakes it."""
    audio, rate = request.extend.samples
    if request.extend_before:
        if request.end is not None:
            return request.end
        return 0.0 if request.keep_silence else sound_bounds(np.asarray(audio), rate)[0]
    if request.start is not None:
        return request.start
    return audio.shape[1] / rate if request.keep_silence else sound_bounds(np.asarray(audio), rate)[1]


def silence_note(request: SongRequest, cut: float) -> str | None:
    """The one line that tells of the silent tail (head) an extension cut at `cut` seconds
    skips by itself, and how to keep it; None where it skips none or the cut was given."""
    before = request.extend_before
    if request.extend is None or request.keep_silence or (request.end if before else request.start) is not None:
        return None
    audio, rate = request.extend.samples
    have, name = audio.shape[1] / rate, request.extend.path or "the source audio"
    if before:
        return None if cut <= 0 else (f"{name}'s first {cut:.2f} s are silent; the new start leads into its sound "
                                      f"at {cut:g} s (give --to 0 to keep them)")
    return None if cut >= have else (f"{name}'s last {have - cut:.2f} s are silent; the extension starts at {cut:g} s "
                                     f"(give --from {_seconds(have)} to keep them)")


def _seconds(value: float) -> str:
    """Seconds to the hundredth (CUT_STEP_SECONDS), as a --from that keeps all of a source
    `value` long (`check_edit` takes up to half a step past its end as its end)."""
    return f"{round(value, 2):g}"


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
    (`source_audio`), placed in the output; an extension's source cut where the new part joins
    it (`extend_cut`; a cut at its very end or start keeps all of it), and after the new part
    for an extension before the start. The sampler knows an extension's source up to the cut
    only; where the source goes on sounding past the cut (a `--from` inside it), up to
    SPLICE_SEARCH_SECONDS of it (no more than sounds there, nor than the new part's length)
    is kept for the splice as `source`, so the crossfade may move into the new part as an
    inpaint's does (`splice_points`). A silent tail (head) past the cut (`sound_bounds`) is
    never offered: a crossfade moved into it would leave a gap before the new part."""
    audio = source_audio(request, sample_rate, channels)
    have, fade, reach = audio.shape[1], fade_samples(sample_rate), round(SPLICE_SEARCH_SECONDS * sample_rate)
    if request.inpaint is not None:
        start = min(have - 1, audio_samples(request.start, sample_rate))
        end = min(have, max(start + 1, audio_samples(request.end, sample_rate)))
        return Fill(audio, start, end, fade, reach)
    cut, length = extend_cut(request), source_seconds(request)
    total = audio_samples(request.seconds, sample_rate)
    heard = [audio_samples(t, sample_rate) for t in sound_bounds(audio, sample_rate)]  # where it sounds
    if request.extend_before:  # kept from `at` on, after `new` samples; the source before `at` lies in the span
        at = 0 if cut <= 0 else min(have - 1, audio_samples(cut, sample_rate))
        new = total - (have - at)
        assert new > 0, "check_edit: an extension adds samples"
        past = min(reach, max(0, at - heard[0]), new)  # never into a silent head
        known = np.concatenate([np.zeros((channels, new), np.float32), audio[:, at:]], axis=1)
        source = known.copy()
        source[:, new - past : new] = audio[:, at - past : at]
        return Fill(known, 0, new, fade, past, source if past else None)
    at = have if cut >= length else max(1, min(have, audio_samples(cut, sample_rate)))  # kept up to `at`
    assert total > at, "check_edit: an extension adds samples"
    past = min(reach, max(0, min(have, heard[1]) - at), total - at)  # never into a silent tail
    known = np.concatenate([audio[:, :at], np.zeros((channels, total - at), np.float32)], axis=1)
    source = known.copy()
    source[:, at : at + past] = audio[:, at : at + past]
    return Fill(known, at, total, fade, past, source if past else None)


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
    """The output of an edit pass: the kept audio (`fill.kept`) with the span taken from
    `made`, the audio the decoder made for samples [offset, offset + made's length). Each seam
    is an equal-power crossfade of `fill.fade` samples (cos / sin of a quarter turn) where the
    kept audio hands over to the made audio: just outside the span, or moved up to
    `fill.search` samples into it (`splice_points`), the kept audio going on up to it. Outside
    the span and its crossfades' documented places the kept samples are kept bit for bit."""
    kept = fill.kept
    out = kept.copy()
    first, last = fill.needs()
    assert offset <= first and last <= offset + made.shape[1], "the made audio covers the span and its crossfades"
    made = made[:, first - offset : last - offset]  # (C, last - first), now at `first`
    start, end = splice_points(fill, made)
    out[:, start:end] = made[:, start - first : end - first]
    if start > first:  # the kept audio hands over to the new
        n = min(fill.fade, start - first)
        fade_in = _quarter_sine(n)
        out[:, start - n : start] = (kept[:, start - n : start] * fade_in[::-1]
                                     + made[:, start - n - first : start - first] * fade_in)
    if last > fill.end:  # and back
        n = min(fill.fade, last - fill.end)
        fade_in = _quarter_sine(n)
        out[:, end : end + n] = (made[:, end - first : end + n - first] * fade_in[::-1]
                                 + kept[:, end : end + n] * fade_in)
    return out


def splice_points(fill: Fill, made: np.ndarray) -> tuple[int, int]:
    """Where the made audio starts and ends in an edit pass's output: `fill.start` and
    `fill.end`, or, where a whole crossfade fits on the kept side and the kept audio
    (`fill.kept`) goes on inside the span, up to `fill.search` samples into the span (and a
    quarter of it), wherever the spliced audio changes least across the crossfade
    (`_crossfade_shift`), so the seam falls where the kept and made audio already match: the
    splice takes no kept sample further into the span than that. made (C, samples) from the
    start of `fill.needs()`."""
    first, last = fill.needs()
    kept = fill.kept
    search = min(fill.search, (fill.end - fill.start) // 4)
    start, end = fill.start, fill.end
    if search > 0 and fill.start - first == fill.fade:
        a, b = fill.start - fill.fade, fill.start + search  # the crossfade and the stretch it may move over
        before, after = min(SPLICE_REACH, a), min(SPLICE_REACH, last - b)  # context for the frames at its ends
        known = kept[:, a - before : b + after]
        made_part = np.concatenate([known[:, :before], made[:, a - first : b + after - first]], axis=1)
        start += _crossfade_shift(known, made_part, before, fill.fade, search)
    if search > 0 and last - fill.end == fill.fade:  # the same, read backwards from the end seam
        a, b = fill.end - search, fill.end + fill.fade
        before, after = min(SPLICE_REACH, fill.samples - b), min(SPLICE_REACH, a - first)
        known = kept[:, a - after : b + before]
        made_part = np.concatenate([made[:, a - after - first : b - first], known[:, b - a + after :]], axis=1)
        end -= _crossfade_shift(known[:, ::-1], made_part[:, ::-1], before, fill.fade, search)
    return start, end


def _crossfade_shift(known: np.ndarray, made: np.ndarray, at: int, fade: int, search: int) -> int:
    """How many samples (0 to `search`, a multiple of SPLICE_HOP) to move a crossfade of `fade`
    samples that starts at sample `at` of `known` and `made` (C, samples) towards their end:
    the shift whose splice (known, the crossfade, then made) has the smallest largest change
    between neighbouring frames touching the crossfade or within SPLICE_REACH of it (mean |dB|
    over log-spaced bands, `_log_bands`); the first of equals, so 0 where nothing is better."""
    if known.shape[1] < at + fade + SPLICE_FFT:
        return 0
    fade_in = _quarter_sine(fade)
    starts = np.arange((known.shape[1] - SPLICE_FFT) // SPLICE_HOP + 1) * SPLICE_HOP  # each frame's first sample
    best, shift = math.inf, 0
    for moved in range(0, search + 1, SPLICE_HOP):
        x = at + moved  # the crossfade is [x, x + fade)
        mixed = known[:, x : x + fade] * fade_in[::-1] + made[:, x : x + fade] * fade_in
        spliced = np.concatenate([known[:, :x], mixed, made[:, x + fade :]], axis=1)
        touching = np.flatnonzero((starts + SPLICE_FFT > x - SPLICE_REACH) & (starts < x + fade + SPLICE_REACH))
        bands = _log_bands(spliced[:, starts[touching[0]] : starts[touching[-1]] + SPLICE_FFT])  # (frames, bands)
        cost = float(np.abs(np.diff(bands, axis=0)).mean(axis=1).max()) if len(bands) > 1 else math.inf
        if cost < best:
            best, shift = cost, moved
    return shift


def _log_bands(audio: np.ndarray) -> np.ndarray:
    """(frames, bands) dB of the mono mix's energy in log-spaced bands (whole FFT bins at the
    low end), Hann frames of SPLICE_FFT samples every SPLICE_HOP."""
    mono = np.asarray(audio, dtype=np.float64).mean(axis=0)
    frames = np.lib.stride_tricks.sliding_window_view(mono, SPLICE_FFT)[::SPLICE_HOP]  # (F, FFT)
    power = np.abs(np.fft.rfft(frames * np.hanning(SPLICE_FFT), axis=1)) ** 2  # (F, FFT / 2 + 1)
    edges = np.unique(np.geomspace(1, SPLICE_FFT // 2, 33).astype(int))  # low bins are whole bands
    return 10 * np.log10(np.add.reduceat(power, edges, axis=1) + 1e-10)  # (F, bands)


def _quarter_sine(n: int) -> np.ndarray:
    """(n,) float32 from about 0 up to about 1, sin of a quarter turn at sample centres; its
    reverse is the matching cos, so the two gains' squares sum to 1 (equal power)."""
    return np.sin((np.arange(n, dtype=np.float64) + 0.5) / n * (np.pi / 2)).astype(np.float32)


def limit_made(made: np.ndarray, ceiling: float) -> np.ndarray:
    """The decoder's audio scaled down if it peaks over `ceiling`, so writing the edit does not
    scale the whole song (and the kept samples with it) to avoid clipping."""
    peak = float(np.max(np.abs(made))) if made.size else 0.0
    return made if peak <= ceiling else (made * (ceiling / peak)).astype(np.float32)


# --- an edit's key, tempo, meter and chords from its source ---------------------------


def recorded_controls(source: InitAudio) -> dict[str, Any]:
    """The key ("E minor"), tempo (BPM) and meter (beats a bar) the recipe of a song salong
    made records, stated or read from its prompt, and its chords as recorded (`--chords`), of
    those it has; none for audio given in memory, or a file without a recipe salong can read."""
    from salong.recipe import read_recipe

    if source.path is None:
        return {}
    try:
        request = read_recipe(source.path).request
    except SalongError:
        return {}
    controls = request.controls
    recorded = {"key": None if controls.key is None else str(controls.key), "bpm": controls.bpm,
                "meter": controls.beats_per_bar, "chords": request.chords}
    return {name: value for name, value in recorded.items() if value is not None}


def said_control(name: str, value: Any) -> str:
    """"in E minor", "at 100 BPM": a key or tempo as the notes say it."""
    return f"in {value}" if name == "key" else f"at {value:g} BPM"


def on_beat(seconds: float, bpm: float) -> bool:
    """Whether `seconds` is within a tenth of a beat of a whole number of beats at `bpm` (of bars,
    at `bpm` over the beats a bar)."""
    phase = (seconds * bpm / 60.0) % 1.0
    return min(phase, 1.0 - phase) < 0.1


def inpaint_note(source: InitAudio, recorded: dict[str, Any]) -> None:
    """A one-line note that an inpainted region asked for in no key or tempo follows its prompt
    alone, and how to keep the ones its source was made with (`recorded`, `recorded_controls`):
    those flags, or `--like` the source, which keeps its other settings too."""
    said = " ".join(said_control(name, recorded[name]) for name in ("key", "bpm") if name in recorded)
    if said:
        flags = " ".join(f"--{name} {shlex.quote(str(recorded[name]) if name == 'key' else f'{recorded[name]:g}')}"
                         for name in ("key", "bpm") if name in recorded)
        warnings.warn(f"the source was made {said}; the region follows its prompt alone: give {flags} to keep "
                      f"them (--like {shlex.quote(str(source.path))}: its chords and other settings too)", Note)


def beats_on_grid(audio: np.ndarray, rate: int, bpm: float, at: float) -> bool:
    """Whether the beats of `audio`, which starts `at` seconds into a song, fall within a
    tenth of a beat of the grid a beat conditioner lays at `bpm` from the song's 0 s (as
    they do in a song salong made at that tempo)."""
    from salong.evaluation import estimate_beat_grid

    grid = estimate_beat_grid(audio, rate)
    if grid is None:
        return False
    return on_beat(at + grid[1], bpm)  # the first grid beat, in the song


def heard_controls(wanted: list[str], model: GeneratorConfig, audio: np.ndarray, rate: int, seconds: float,
                   before: bool) -> dict[str, Any]:
    """The key ("E minor") and tempo (BPM) of `wanted` that `salong.evaluation` hears in the
    part an extension's window sees of its kept source `audio` (the song is `seconds` long;
    `before`: the new part comes first); for a model with a beat conditioner the tempo only
    where the source's beats fall on its grid from the song's 0 s (`beats_on_grid`). A note
    instead where librosa is missing."""
    if not wanted:
        return {}
    try:  # the estimators' library is an extra (`.[eval]`); without it the prompt alone decides
        import librosa  # noqa: F401
    except ImportError:
        warnings.warn("no key or tempo given: the extension follows its prompt alone (hearing the source's "
                      "needs librosa: pip install -e '.[eval]'); give --key and --bpm to set them")
        return {}
    from salong.controls import MAX_BPM, MIN_BPM
    from salong.evaluation import estimate_key, estimate_tempo

    part = min(audio.shape[1], max(1, round(model.max_seconds * rate)))
    # The part next to the new audio, and where it starts in the song, in seconds.
    at = seconds - audio.shape[1] / rate if before else (audio.shape[1] - part) / rate
    audio = audio[:, :part] if before else audio[:, audio.shape[1] - part :]
    heard: dict[str, Any] = {}
    if "key" in wanted:
        heard["key"] = " ".join(estimate_key(audio, rate))
    if "bpm" in wanted:
        bpm = float(min(MAX_BPM, max(MIN_BPM, round(estimate_tempo(audio, rate)))))
        if "beat" not in model.dit.controls or beats_on_grid(audio, rate, bpm, at):
            heard["bpm"] = bpm
    return heard
