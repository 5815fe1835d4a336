"""Quality measurement: does a song do what its prompt asked, and how well does the autoencoder reconstruct?

Adherence estimators read back from audio the facts a prompt states, the same facts
`salong.synth` captions state: tempo (`estimate_tempo`, `tempo_within`, `tempo_octave`)
and whether the beats fall on the asked grid (`beat_alignment`), drums or no drums
(`percussive_share`), key and mode (`estimate_key`); `chord_movement` tells harmony
that moves from a held drone, `longest_silence` catches songs that stop before the
requested end, `section_changes` finds where the music changes. `score` runs all of
them on one song against the attributes it was asked for. They use librosa (the
optional `eval` extra), imported only when called, and analyse a mono mix resampled to
librosa's default 22.05 kHz (the rate its defaults are tuned for; halving the rate also
halves the work on a 285 s song).

Reconstruction metrics compare an autoencoder's output with its input, as the paper
reports them (Evans et al. 2024, table 1): multi-resolution STFT distance, mel distance
and SI-SDR in dB.

Every estimator has its own error rate, even on audio that is right by construction;
`benchmarks/adherence.py --ceiling` measures it on synth pieces, so a model's figures
can be read against what the estimators can reach.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from salong.errors import SalongError
from salong.timing import SAMPLE_RATE

ANALYSIS_RATE = 22050  # librosa's default rate: the adherence estimators run on a mono mix at this rate

# Tempo: onset-strength autocorrelation (`librosa.feature.tempo`) with librosa's default
# prior (log-normal around 120 BPM). Its BPM grid is 60 * rate / (hop * lag): with a hop of
# 512 at 22.05 kHz neighbouring lags are ~5-7% apart at 140-180 BPM, so a right-octave
# estimate could miss the tolerance by the grid alone; a hop of 256 halves that step (at
# most 3.6% apart, so the nearest lag is within 1.8% of any tempo up to 180 BPM).
TEMPO_HOP = 256
TEMPO_TOLERANCE = 0.04

# Beats (`beat_alignment`): a detected beat counts as on the grid within this many seconds.
BEAT_TOLERANCE_S = 0.07

# Chords (`chord_movement`): CQT chroma of the harmonic part, averaged over blocks of
# CHORD_BLOCK_S; a block moves when its cosine distance from the block before exceeds
# CHORD_MOVE. See `chord_movement` for what synth pieces score.
CHORD_BLOCK_S = 2.0
CHORD_MOVE = 0.1

# Drums: the percussive share of HPSS below this frequency, where the kick of every drum
# style in `salong.synth` sits (its pitch sweeps 158 -> 48 Hz). Over the whole band the
# attacks of plucked and struck leads count as percussive too: on 36 synth pieces of 8 s
# (seeds 3000-3035), plucked-guitar pieces without drums reached a whole-band share of
# 0.061-0.067, above drum pieces at 0.057-0.062 (on the 30 s set below: no drums up to
# 0.056, drums from 0.054), while below 150 Hz the classes were apart (no drums <= 0.033,
# drums >= 0.060).
PERCUSSIVE_MAX_HZ = 150.0
HPSS_NFFT, HPSS_HOP = 2048, 512
HPSS_KERNEL = 31  # librosa's default median length, in frames (harmonic) and in bins (percussive)
# Chosen on 72 synth pieces of 30 s (seeds 7000-7071, none of them used by the tests or the
# benchmark): each of the 9 leads four times without drums and once with each drum style,
# soft and loud alternating. Shares below 150 Hz: no drums 0.001-0.028 (median 0.007; the
# highest are plucked guitar and strings leads), drums 0.069-0.293 (median 0.133; the
# lowest are loud breakbeats). With the 8 s pieces above (<= 0.033 vs >= 0.060), 0.045 sits
# between the classes, near the geometric mean of the closest pair.
DRUMS_THRESHOLD = 0.045

# Krumhansl & Kessler (1982) probe-tone ratings, index 0 = the tonic.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
KEY_NFFT = 4096  # ~190 ms at 22.05 kHz: 5 Hz bins, enough to tell semitones apart down to ~90 Hz

SILENCE_FRAME, SILENCE_HOP = 2048, 512  # RMS frames for `longest_silence`, in samples

# Sections (`section_changes`): the level of SECTION_BANDS mel bands in dB (re the song's
# loudest bin, floored SECTION_FLOOR_DB below it), averaged over 1 s frames. The change at
# second t is the RMS over bands of the difference between the mean of the SECTION_SPAN_S
# seconds after t and of those before. See `section_changes` for how the threshold was set.
SECTION_BANDS = 40
SECTION_FLOOR_DB = 60.0
SECTION_SPAN_S = 12
SECTION_CHANGE_DB = 3.0

# Mel distance: (n_fft, n_mels) pairs, hop n_fft / 4; see `mel_distance`.
MEL_RESOLUTIONS = ((2048, 128), (1024, 96), (512, 64))
MEL_FLOOR = 1e-5  # magnitude floor before the log, as descript-audio-codec's mel loss


def _librosa() -> Any:
    """librosa, or a one-line error saying how to install it."""
    try:
        import librosa
    except ImportError:
        raise SalongError("quality measurement needs librosa, which is not installed; "
                          "install it with pip install -e '.[eval]'") from None
    return librosa


def _check_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(channels, samples) or (samples,) finite float audio as a 2-D float32 array."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]  # (1, samples)
    if audio.ndim != 2 or audio.shape[1] == 0:
        raise SalongError(f"audio must be (channels, samples) and non-empty, got shape {audio.shape}")
    if not np.isfinite(audio).all():
        raise SalongError("audio holds NaN or infinite samples; it cannot be measured")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise SalongError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    return audio


def _mono(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """The mono mix at ANALYSIS_RATE, (samples,) float32."""
    from salong.audio import resample

    audio = _check_audio(audio, sample_rate)
    return resample(audio.mean(axis=0, keepdims=True), int(sample_rate), ANALYSIS_RATE)[0]


# --- adherence ---------------------------------------------------------------------------


def estimate_tempo(audio: np.ndarray, sample_rate: int) -> float:
    """Global tempo in BPM: `librosa.feature.tempo` on the onset strength of the mono mix.

    Like every autocorrelation tempo estimator it can land on a multiple of the beat
    (half, double, 2/3 or 4/3 of it): on 30 synth pieces of 30 s a third of the estimates
    missed the tempo by 5% or more, with drums as often as without. A flatter prior, a
    uniform 60-180 BPM one or a longer autocorrelation window did no better there.
    """
    librosa = _librosa()
    y = _mono(audio, sample_rate)
    onset = librosa.onset.onset_strength(y=y, sr=ANALYSIS_RATE, hop_length=TEMPO_HOP)
    return float(librosa.feature.tempo(onset_envelope=onset, sr=ANALYSIS_RATE, hop_length=TEMPO_HOP)[0])


def estimate_beat_grid(audio: np.ndarray, sample_rate: int, min_beats: int = 8) -> tuple[float, float] | None:
    """A steady grid fitted to the beats `librosa.beat.beat_track` finds: (bpm, time of the
    first grid beat in seconds, within one beat of 0), or None with fewer than `min_beats`.

    The grid is the least-squares line through the beat times against their index (slope:
    the beat period, intercept: the phase), so one missed or extra beat moves it little.
    Which beat starts a bar is not known: the grid takes the first one as a downbeat."""
    librosa = _librosa()
    y = _mono(audio, sample_rate)
    _, beats = librosa.beat.beat_track(y=y, sr=ANALYSIS_RATE, hop_length=TEMPO_HOP, units="time")  # (beats,) s
    if beats.size < min_beats:
        return None
    period, start = np.polyfit(np.arange(beats.size), beats, 1)
    if not period > 0:
        return None
    return float(60.0 / period), float(start % period)


def tempo_within(estimate: float, target: float, tolerance: float = TEMPO_TOLERANCE) -> bool:
    """Whether `estimate` is strictly within `tolerance` (relative) of `target` BPM.

    No octave forgiveness: half or double the asked tempo counts as wrong, because a
    prompt's "at 90 BPM" asks for 90, and 45 or 180 is a different feel (`tempo_octave`
    counts those misses apart).
    """
    if not target > 0:
        raise SalongError(f"target tempo must be above 0 BPM, got {target!r}")
    if not tolerance > 0:
        raise SalongError(f"tempo tolerance must be above 0, got {tolerance!r}")
    return abs(estimate - target) < tolerance * target


def tempo_octave(estimate: float, target: float, tolerance: float = TEMPO_TOLERANCE) -> bool:
    """Whether `estimate` misses `target` BPM by an octave: within `tolerance` of double
    or half of it, and not within `tolerance` of it.

    The commonest miss of a tempo estimator (and of a listener tapping along): the music
    can be right while the estimate is not, so these misses are counted apart.
    """
    if tempo_within(estimate, target, tolerance):
        return False
    return tempo_within(estimate, 2 * target, tolerance) or tempo_within(estimate, target / 2, tolerance)


def beat_alignment(audio: np.ndarray, sample_rate: int, bpm: float,
                   tolerance_s: float = BEAT_TOLERANCE_S) -> float:
    """Share of the detected beats that lie within `tolerance_s` of the asked grid, the
    times k * 60 / bpm s (k = 0, 1, ...): a song made to a tempo starts on a beat at 0 s.

    Beats from `librosa.beat.beat_track` (Ellis 2007: dynamic programming over the
    onset strength) on the mono mix, as times, with its default tempo prior (the asked
    BPM is not given to it) and TEMPO_HOP, whose finer tempo grid keeps the beats from
    drifting off a tempo between two lags. 0.0 when it finds no beats. A tracker that
    locks on at half the tempo still scores 1 (every other grid beat), one at double
    the tempo about 0.5 (the off-beats miss); beats at random times score
    2 * tolerance_s * bpm / 60 on average (0.14 at 60 BPM, 0.42 at 180).

    On the 24 benchmark prompts' synth pieces of 30 s (`make_piece(i, 30)` with prompt
    i's attributes) it scored 0.79 on average: 0.98-1 on 15, 0.83 on one, 0.46-0.55 on
    5 (half the beats off the grid: double tempo, or the off-beats too), 0.16-0.23 on
    three without drums (organ, flute and strings leads: a wrong tempo, or beats ~0.1 s
    late). The same pieces half a beat late scored 0.08 on average, made 25% off the
    asked tempo 0.30.
    """
    if not bpm > 0:
        raise SalongError(f"bpm must be above 0, got {bpm!r}")
    if not tolerance_s >= 0:
        raise SalongError(f"tolerance_s must be 0 or more, got {tolerance_s!r}")
    librosa = _librosa()
    y = _mono(audio, sample_rate)
    _, beats = librosa.beat.beat_track(y=y, sr=ANALYSIS_RATE, hop_length=TEMPO_HOP, units="time")  # (beats,) s
    if beats.size == 0:
        return 0.0
    period = 60.0 / bpm
    offset = np.abs(beats - period * np.round(beats / period))  # distance to the nearest grid beat, s
    return float(np.mean(offset <= tolerance_s))


def percussive_share(audio: np.ndarray, sample_rate: int, max_hz: float | None = PERCUSSIVE_MAX_HZ) -> float:
    """Share of the energy below `max_hz` that harmonic-percussive separation calls percussive.

    `librosa.decompose.hpss` (median filtering, soft masks) on the STFT of the mono mix,
    which is what `librosa.effects.hpss` does before inverting both parts; the energy is
    summed over STFT bins up to `max_hz` (None: the whole band). Why the low band:
    see PERCUSSIVE_MAX_HZ. 0 for silence.
    """
    librosa = _librosa()
    y = _mono(audio, sample_rate)
    spec = librosa.stft(y, n_fft=HPSS_NFFT, hop_length=HPSS_HOP)  # (bins, frames) complex
    freqs = librosa.fft_frequencies(sr=ANALYSIS_RATE, n_fft=HPSS_NFFT)
    kept = spec.shape[0] if max_hz is None else int(np.sum(freqs <= max_hz))
    # The percussive filter is a median over HPSS_KERNEL neighbouring bins, so separating only
    # the bins up to kept + HPSS_KERNEL // 2 gives the kept ones exactly the masks of a
    # whole-band separation (checked), at about 1/20 of its cost on a 285 s song.
    _, percussive = librosa.decompose.hpss(spec[: kept + HPSS_KERNEL // 2], kernel_size=HPSS_KERNEL)
    spec, percussive = spec[:kept], percussive[:kept]
    total = float(np.sum(np.abs(spec) ** 2))
    return float(np.sum(np.abs(percussive) ** 2)) / total if total > 0 else 0.0


def has_drums(share: float, threshold: float = DRUMS_THRESHOLD) -> bool:
    """Whether a `percussive_share` says the audio has drums (threshold: see DRUMS_THRESHOLD)."""
    return share >= threshold


def estimate_key(audio: np.ndarray, sample_rate: int) -> tuple[str, str]:
    """(tonic, "major" | "minor"): the Krumhansl-Kessler profile, over the 12 tonics and
    both modes, that correlates best with the mean chroma of the mono mix.

    Chroma from `librosa.feature.chroma_stft` with a long (KEY_NFFT) window: on synth
    pieces it named the key more often than `chroma_cqt` (24/24 vs 21/24 pieces of 30 s,
    22/24 vs 14/24 of 8 s; the mode 24/24 of 8 s vs 19/24).
    Tonic names as `salong.synth.TONICS`. Silence gives ("C", "major").
    """
    from salong.synth import TONICS

    librosa = _librosa()
    y = _mono(audio, sample_rate)
    chroma = librosa.feature.chroma_stft(y=y, sr=ANALYSIS_RATE, n_fft=KEY_NFFT).mean(axis=1)  # (12,), C first
    if not np.ptp(chroma) > 0:
        return TONICS[0], "major"
    best, key = -np.inf, (TONICS[0], "major")
    for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
        for tonic in range(12):
            r = np.corrcoef(chroma, np.roll(profile, tonic))[0, 1]  # profile rotated to start on `tonic`
            if r > best:
                best, key = r, (TONICS[tonic], mode)
    return key


def chord_movement(audio: np.ndarray, sample_rate: int, block_seconds: float = CHORD_BLOCK_S,
                   threshold: float = CHORD_MOVE) -> float:
    """Share of the `block_seconds` blocks whose mean chroma moves by more than
    `threshold` cosine distance from the block before: how often the harmony changes.

    Chroma from `librosa.feature.chroma_cqt` on the harmonic part of the mono mix
    (`librosa.effects.harmonic`, so drum hits do not smear the pitch classes), averaged
    over whole blocks from 0 s (a partial block at the end is left out). A block with
    no chroma energy (silence) moves from nothing and to nothing: its distances count
    as 0. 0.0 for audio shorter than two blocks.

    On the 24 benchmark prompts' synth pieces of 30 s (a chord a bar) the share was 0.61
    on average, 0.29-1 on 22 of them, and 0 on two whose bars (1.1 and 1.3 s) are
    shorter than a block: each 2 s mean mixes two chords or more of one progression,
    and neighbouring means differ by less than 0.1.
    """
    if not block_seconds > 0:
        raise SalongError(f"block_seconds must be above 0, got {block_seconds!r}")
    librosa = _librosa()
    y = _mono(audio, sample_rate)
    hop = 512  # librosa's default
    chroma = librosa.feature.chroma_cqt(y=librosa.effects.harmonic(y), sr=ANALYSIS_RATE, hop_length=hop)  # (12, T)
    block = (np.arange(chroma.shape[1]) * hop / ANALYSIS_RATE / block_seconds).astype(int)  # each frame's block
    n = int(y.size / ANALYSIS_RATE / block_seconds)  # whole blocks
    if n < 2:
        return 0.0
    keep = block < n  # a prefix: frames are in time order
    # per-block sums: the cosine does not see the scale, so they stand for the means
    sums = np.add.reduceat(chroma[:, keep], np.searchsorted(block, np.arange(n)), axis=1).T  # (n, 12)
    norms = np.linalg.norm(sums, axis=1)  # (n,)
    both = (norms[1:] > 0) & (norms[:-1] > 0)
    cosine = np.sum(sums[1:] * sums[:-1], axis=1) / np.where(both, norms[1:] * norms[:-1], 1.0)  # (n - 1,)
    distance = np.where(both, 1.0 - cosine, 0.0)
    return float(np.mean(distance > threshold))


def longest_silence(audio: np.ndarray, sample_rate: int, until_seconds: float, threshold_db: float = -50.0) -> float:
    """Longest stretch (s) of silence before `until_seconds`.

    RMS over SILENCE_FRAME-sample frames every SILENCE_HOP samples, power-averaged over the
    channels (so a left/right difference does not cancel out), in dB relative to full
    scale (a +-1 square wave is 0 dB). Only frames centred before `until_seconds` count.
    A run of k frames below `threshold_db` is reported as the span those frames cover,
    (k - 1) * hop + frame samples, so an exact gap is measured to within a hop.
    """
    librosa = _librosa()
    audio = _check_audio(audio, sample_rate)
    rms = librosa.feature.rms(y=audio, frame_length=SILENCE_FRAME, hop_length=SILENCE_HOP)  # (C, 1, T)
    rms = np.sqrt(np.mean(rms[:, 0] ** 2, axis=0))  # (T,)
    centres = np.arange(rms.size) * SILENCE_HOP / sample_rate
    quiet = (20 * np.log10(np.maximum(rms, 1e-12)) < threshold_db)[centres < until_seconds]
    longest = run = 0
    for q in quiet:
        run = run + 1 if q else 0
        longest = max(longest, run)
    if longest == 0:
        return 0.0
    return ((longest - 1) * SILENCE_HOP + SILENCE_FRAME) / sample_rate


def section_curve(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(seconds,) the timbre change at each whole second (dB, see SECTION_*); 0 within
    SECTION_SPAN_S of either end, where one side is short."""
    librosa = _librosa()
    mono = _mono(audio, sample_rate)
    hop = 512
    mel = librosa.feature.melspectrogram(y=mono, sr=ANALYSIS_RATE, n_fft=2048, hop_length=hop, n_mels=SECTION_BANDS)
    level = librosa.power_to_db(mel, ref=np.max, top_db=SECTION_FLOOR_DB)  # (bands, frames)
    second = (np.arange(level.shape[1]) * hop / ANALYSIS_RATE).astype(int)  # each frame's whole second
    n = int(mono.size / ANALYSIS_RATE)
    curve = np.zeros(n)
    w = SECTION_SPAN_S
    if n < 2 * w:
        return curve
    keep = second < n  # the whole seconds (a prefix: frames are in time order)
    starts = np.searchsorted(second, np.arange(n))  # first frame of each second
    per_second = np.add.reduceat(level[:, keep], starts, axis=1) / np.bincount(second[keep])  # (bands, n) means
    sums = np.concatenate([np.zeros((SECTION_BANDS, 1)), np.cumsum(per_second, axis=1)], axis=1)
    t = np.arange(w, n - w + 1)
    after, before = (sums[:, t + w] - sums[:, t]) / w, (sums[:, t] - sums[:, t - w]) / w  # (bands, len(t))
    curve[t] = np.sqrt(np.mean((after - before) ** 2, axis=0))
    return curve


def section_changes(audio: np.ndarray, sample_rate: int, threshold_db: float = SECTION_CHANGE_DB) -> list[float]:
    """Seconds at which the music audibly changes: peaks of `section_curve` of at least
    `threshold_db`, the strongest first, each at least SECTION_SPAN_S from a stronger one.

    The span and threshold were set on synth pieces: 6 of 285 s (seeds 0-5: intro, A,
    B, A', outro) and 4 of 38-39 s in one section (piano, strings, plucked guitar; no
    drums, where note onsets move the level most). The curve peaked at 4.0-9.8 dB at the
    15 boundaries it can see (12 s from either end; intros and outros of 5-8 s fall
    inside that margin) and stayed at 0.3-1.9 dB inside every section. An 8 s span saw
    the intros too but let a soft piano piece reach 4.1 dB inside its one section.
    Silence is a level like any other: a song that falls silent changes there too;
    `longest_silence` tells them apart.
    """
    curve = section_curve(audio, sample_rate)
    found: list[int] = []
    for t in np.argsort(-curve, kind="stable"):
        if curve[t] < threshold_db:
            break
        if all(abs(int(t) - f) >= SECTION_SPAN_S for f in found):
            found.append(int(t))
    return sorted(float(t) for t in found)


def score(audio: np.ndarray, sample_rate: int, attributes: Mapping[str, Any] | Any, seconds: float) -> dict[str, Any]:
    """Every adherence check of one song against the attributes it was asked for.

    `attributes`: a mapping with "bpm", "tonic", "mode" and "drums" (a prompt line of
    benchmarks/adherence_prompts.jsonl, or `PieceAttributes.to_dict()`), or a
    `salong.synth.PieceAttributes`. `seconds`: the requested length; silence is looked
    for before it. Returns JSON-ready values: tempo_ok (within TEMPO_TOLERANCE of the asked
    BPM), tempo_octave (`tempo_octave`), drums_ok, mode_ok, key_ok, bpm_estimate,
    beat_alignment (`beat_alignment` on the asked BPM), percussive_share, key_estimate
    ("A minor"), chord_movement (`chord_movement`), longest_silence (s), section_changes
    (s, see `section_changes`; none in songs under 2 x SECTION_SPAN_S).
    """
    if hasattr(attributes, "to_dict"):
        attributes = attributes.to_dict()
    missing = [k for k in ("bpm", "tonic", "mode", "drums") if k not in attributes]
    if missing:
        raise SalongError(f"attributes lack {', '.join(missing)}; score needs bpm, tonic, mode and drums")
    mono = _mono(audio, sample_rate)[None]  # (1, samples) at ANALYSIS_RATE, resampled once for all five
    target = float(attributes["bpm"])
    bpm = estimate_tempo(mono, ANALYSIS_RATE)
    share = percussive_share(mono, ANALYSIS_RATE)
    tonic, mode = estimate_key(mono, ANALYSIS_RATE)
    return {
        "tempo_ok": tempo_within(bpm, target),
        "tempo_octave": tempo_octave(bpm, target),
        "drums_ok": has_drums(share) == (attributes["drums"] != "none"),
        "mode_ok": mode == attributes["mode"],
        "key_ok": (tonic, mode) == (attributes["tonic"], attributes["mode"]),
        "bpm_estimate": round(bpm, 2),
        "beat_alignment": round(beat_alignment(mono, ANALYSIS_RATE, target), 3),
        "percussive_share": round(share, 4),
        "key_estimate": f"{tonic} {mode}",
        "chord_movement": round(chord_movement(mono, ANALYSIS_RATE), 3),
        "longest_silence": round(longest_silence(audio, sample_rate, seconds), 3),
        "section_changes": section_changes(audio, sample_rate),
    }


# --- reconstruction ------------------------------------------------------------------------


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x.detach().float().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, np.float32))


def _pair(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (channels, samples) signals as float32 tensors (1, C, N) of the same shape."""
    p, t = _tensor(pred), _tensor(target)
    p, t = p.reshape(1, -1, p.shape[-1]), t.reshape(1, -1, t.shape[-1])  # (C, N) or (N,) -> (1, C, N)
    if p.shape != t.shape:
        raise SalongError(f"prediction {tuple(p.shape[1:])} and target {tuple(t.shape[1:])} must have the same "
                          "shape; trim the reconstruction to the original's length")
    return p, t


def stft_distance(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """Multi-resolution STFT distance: the autoencoder's training loss
    (`salong.audio_losses.reconstruction_loss`; for stereo mid/side plus half-weight L/R)
    on (channels, samples) audio. 0 for identical signals; needs > 1024 samples."""
    from salong.audio_losses import reconstruction_loss

    p, t = _pair(pred, target)
    with torch.no_grad():
        return float(reconstruction_loss(p, t))


def mel_distance(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor,
                 sample_rate: int = SAMPLE_RATE) -> float:
    """Mean |log10 mel(pred) - log10 mel(target)| over MEL_RESOLUTIONS, averaged.

    Mel spectrograms from librosa (`librosa.feature.melspectrogram`, magnitude, Slaney
    filters, hop n_fft / 4) per channel; magnitudes floored at MEL_FLOOR and squared
    inside the log, as descript-audio-codec's multi-scale mel loss, which is what
    stable-audio-tools reports as MEL distance (there at seven resolutions; three here).
    """
    librosa = _librosa()
    p, t = _pair(pred, target)
    p, t = p[0].numpy(), t[0].numpy()  # (C, N)
    distances = []
    for n_fft, n_mels in MEL_RESOLUTIONS:
        kwargs = dict(sr=sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels, power=1.0)
        mp = librosa.feature.melspectrogram(y=p, **kwargs)  # (C, n_mels, frames)
        mt = librosa.feature.melspectrogram(y=t, **kwargs)
        log_p = 2 * np.log10(np.maximum(mp, MEL_FLOOR))
        log_t = 2 * np.log10(np.maximum(mt, MEL_FLOOR))
        distances.append(float(np.mean(np.abs(log_p - log_t))))
    return float(np.mean(distances))


def si_sdr_tensor(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), per channel, averaged; in the inputs'
    dtype (an autoencoder run's evaluation)."""
    target = target - target.mean(-1, keepdim=True)
    pred = pred - pred.mean(-1, keepdim=True)
    scale = (pred * target).sum(-1, keepdim=True) / (target.pow(2).sum(-1, keepdim=True) + 1e-8)
    projection = scale * target
    ratio = projection.pow(2).sum(-1) / ((pred - projection).pow(2).sum(-1) + 1e-8)
    return (10 * torch.log10(ratio + 1e-8)).mean()


def si_sdr(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """Scale-invariant SDR in dB, per channel, averaged (`si_sdr_tensor` in float64)."""
    p, t = _pair(pred, target)
    return float(si_sdr_tensor(p.double(), t.double()))
