"""Seams of edits: are the boundaries of inpainted, extended and looped songs outliers?

    python benchmarks/edit_seams.py [--model MODEL] [--songs 12] [--seconds 10] [--steps 15]
        [--crossfade SECONDS]

For each of `--songs` prompts it makes a song, then inpaints seconds 40%-60% of it, extends
it by half its length (from where its sound ends: a silent tail is skipped, as `salong
generate --extend` does without `--from`; the medians say how many songs had one and how
long), extends its first 60% back to its length ("extend cut", `--from` at 60% of the whole
song: a source that does not end, as a song the model was asked for does, often into
silence, and goes on past the cut), and makes a loop of the same prompt (`salong.edit`).
Each song is measured in log-mel frames (2048-point FFT, hop 512, 64 bands, dB): the
distance between neighbouring frames (mean absolute dB change) is the song's own
frame-to-frame change. `--crossfade` sets `salong.edit.CROSSFADE_SECONDS` for the run
(default: the library's, 50 ms).

- seam: the largest frame distance across a boundary (the frames that touch its crossfade,
  found where the edit first and last differs from the source: an inpaint's crossfades may
  move into the region, `salong.edit.splice_points`, and so may an extension's where the
  source goes on past its cut, a silent tail or the rest of the song),
  against the 95th percentile of the song's own frame distances (the kept part) and of the
  regenerated part's, and its percentile among the song's own. A seam no larger than its
  song's 95th percentile is no more of an outlier than the song's own changes. A seam on a
  beat is a drum hit's onset as much as a seam, so the plain song's wrap is shown too.
- the same figures for the untouched song at the inpainted boundaries ("untouched"): a seam
  is the largest of about a dozen frame distances, so even a song's own boundary-free frames
  exceed their 95th percentile there often (1 - 0.95^12 = 46% for independent frames).
  "window p95" is the fair reference: the 95th percentile over every place in the song of
  the largest frame distance in a window as wide as a seam's.
- level jump: the RMS level (dB) of the 50 ms after a boundary minus that of the 50 ms before,
  against the same jump at every other 50 ms step of the song (95th percentile of |jump|).
- loop wrap: the frame distance where the loop, played twice, wraps from its end to its
  start, against its own 95th percentile; the plain song of the same seed wrapped the same
  way is the baseline. A loop with a tempo wraps on a downbeat, so the wrap is also set
  against the same measure at the loop's other bar lines, and against its distribution at
  every other beat line of the loop played twice (the song's own seams at comparable
  places, where a hit usually lands too): the wrap's percentile among them, and whether it
  is at or under their 95th percentile.
- kept: whether the kept samples are the source's bit for bit outside the crossfades.
- continuation: tempo and key of the extension against the source (`salong.evaluation`).

Prints one line per song and edit, then the medians and the share of seams under p95.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import salong.edit
from salong.bundled import default_generator
from salong.edit import CROSSFADE_SECONDS, LOOP_SEAM_SECONDS
from salong.evaluation import estimate_key, estimate_tempo
from salong.pipeline import Song
from salong.sao import load_generator

PROMPTS = [
    "calm piano ballad at 70 BPM in C major",
    "energetic breakbeat at 132 BPM in D minor with a synth lead",
    "melancholic strings in A minor, slow and soft",
    "happy four-on-the-floor dance tune with brass at 124 BPM in G major",
    "shuffle groove with organ and bass at 96 BPM in E minor",
    "ambient pad drone in F major",
    "funky bass and drums at 110 BPM in A minor",
    "acoustic guitar folk song at 90 BPM in D major",
    "dark techno at 128 BPM in F minor",
    "jazz trio with brushed drums at 120 BPM in Bb major",
    "lo-fi hip hop beat at 85 BPM in C minor",
    "bright marimba melody at 100 BPM in E major",
]
HOP = 512
BLOCK = 0.05  # seconds per level block


def log_mel(audio: np.ndarray, rate: int) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(y=audio.mean(axis=0), sr=rate, n_fft=2048, hop_length=HOP, n_mels=64)
    return 10 * np.log10(mel + 1e-10)  # (64, frames)


def frame_distances(audio: np.ndarray, rate: int) -> np.ndarray:
    """(frames - 1,) mean |dB change| between neighbouring log-mel frames; entry i is frames i -> i + 1."""
    return np.abs(np.diff(log_mel(audio, rate), axis=1)).mean(axis=0)


def near(distances: np.ndarray, sample: int, rate: int) -> np.ndarray:
    """Indices of the frame distances that touch the crossfade around a boundary at `sample`."""
    reach = round(CROSSFADE_SECONDS * rate) + HOP
    first, last = max(0, (sample - reach) // HOP), min(len(distances), (sample + reach) // HOP + 1)
    return np.arange(first, last)


def seam(distances: np.ndarray, sample: int, rate: int) -> float:
    return float(distances[near(distances, sample, rate)].max())


def levels(audio: np.ndarray, rate: int) -> np.ndarray:
    n = round(BLOCK * rate)
    blocks = audio[:, : audio.shape[1] // n * n].reshape(audio.shape[0], -1, n)  # (C, blocks, n)
    return 10 * np.log10(np.mean(blocks ** 2, axis=(0, 2)) + 1e-10)


def level_jump(audio: np.ndarray, rate: int, sample: int) -> float:
    n = round(BLOCK * rate)
    before, after = audio[:, max(0, sample - n) : sample], audio[:, sample : sample + n]
    return float(10 * np.log10(np.mean(after ** 2) + 1e-10) - 10 * np.log10(np.mean(before ** 2) + 1e-10))


def window_p95(distances: np.ndarray, rate: int) -> float:
    """The 95th percentile, over every place in the song, of the largest frame distance in a
    window as wide as `seam` reads: what a seam is fairly compared with."""
    width = len(near(distances, len(distances) * HOP // 2, rate))
    return p95(np.lib.stride_tricks.sliding_window_view(distances, width).max(axis=1))


def p95(values: np.ndarray) -> float:
    return float(np.percentile(values, 95))


def rank(value: float, values: np.ndarray) -> float:
    """The percentile of `value` among `values` (100: larger than every one)."""
    return float(np.mean(values < value) * 100)


def kept_samples(song: Song) -> int:
    """The sample where an extension (past its source's end) cuts its source: the sampler knows
    the source up to there, the cut its request resolved to, as `salong.edit.source_fill`
    places it."""
    return salong.edit.source_fill(song.request, song.sample_rate, song.audio.shape[0]).start


def new_start(longer: np.ndarray, source: np.ndarray, fade: int) -> int:
    """The sample where an extension's new audio starts: the end of its crossfade, which
    starts where the extension first differs from its source (at the cut less the crossfade,
    or up to `salong.edit.SPLICE_SEARCH_SECONDS` later, `salong.edit.splice_points`)."""
    n = min(longer.shape[1], source.shape[1])
    changed = np.flatnonzero(np.any(longer[:, :n] != source[:, :n], axis=0))
    return int(changed[0] if changed.size else n) + fade


def main() -> None:
    global CROSSFADE_SECONDS  # `near` reads it: a seam is measured over its crossfade
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path)
    p.add_argument("--songs", type=int, default=12)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--steps", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--crossfade", type=float, default=CROSSFADE_SECONDS)
    args = p.parse_args()
    CROSSFADE_SECONDS = salong.edit.CROSSFADE_SECONDS = args.crossfade
    gen = load_generator(args.model or default_generator(), None, args.device)
    rate, fade = gen.sample_rate, round(CROSSFADE_SECONDS * gen.sample_rate)
    start = time.perf_counter()
    rows: dict[str, list[tuple[float, float, float, float]]] = {
        "inpaint": [], "untouched": [], "extend": [], "extend cut": [], "loop": [], "plain wrap": []}
    jumps: list[tuple[float, float]] = []
    bar_lines: list[tuple[float, float]] = []  # (loop wrap, the largest of its other bar lines)
    beat_lines: list[tuple[float, float, float]] = []  # (loop wrap, p95 of its other beat lines, its percentile)
    kept_all = True
    skipped: list[float] = []  # seconds of silent tail each extension left out (0: none)
    tempo_close: dict[str, list[float]] = {"extend": [], "extend cut": []}  # |BPM change| of the new part
    key_same: dict[str, list[bool]] = {"extend": [], "extend cut": []}
    print(f"model {args.model or 'bundled'}, {args.songs} songs of {args.seconds:g} s, "
          f"steps {args.steps or 'default'}, crossfade {CROSSFADE_SECONDS * 1000:g} ms")
    print(f"{'song':<5} {'edit':<10} {'seam dB':>8} {'own p95':>8} {'new p95':>8} {'jump dB':>8} {'|jump| p95':>10}")
    for i, prompt in enumerate(PROMPTS[: args.songs]):
        song = gen.generate(prompt, args.seconds, seed=i, steps=args.steps).audio
        own = frame_distances(song, rate)
        own_w = window_p95(own, rate)
        own_jumps = np.abs(np.diff(levels(song, rate)))

        a, b = 0.4 * args.seconds, 0.6 * args.seconds
        edit = gen.inpaint(prompt, (song, rate), a, b, seed=100 + i, steps=args.steps).audio
        sa, sb = round(a * rate), round(b * rate)
        kept = np.array_equal(edit[:, : sa - fade], song[:, : sa - fade]) and np.array_equal(
            edit[:, sb + fade :], song[:, sb + fade :])
        d = frame_distances(edit, rate)
        changed = np.flatnonzero(np.any(edit != song, axis=0))  # the crossfades may move into the region
        ea, eb = changed[0] + fade, changed[-1] + 1 - fade  # where the new audio starts and ends
        new = d[ea // HOP + 2 : eb // HOP - 2]
        for boundary in (ea - fade // 2, eb + fade // 2):  # the middle of each crossfade
            rows["inpaint"].append((seam(d, boundary, rate), p95(own), rank(seam(d, boundary, rate), own), own_w))
            rows["untouched"].append((seam(own, boundary, rate), p95(own), rank(seam(own, boundary, rate), own), own_w))
            jumps.append((abs(level_jump(edit, rate, boundary)), p95(own_jumps)))
        print(f"{i:<5} {'inpaint':<10} {max(r[0] for r in rows['inpaint'][-2:]):>8.2f} {p95(own):>8.2f} "
              f"{p95(new):>8.2f} {level_jump(edit, rate, ea):>8.2f} {p95(own_jumps):>10.2f}  kept {kept}  "
              f"splices moved {(ea - sa) / rate * 1000:.0f} and {(sb - eb) / rate * 1000:.0f} ms into the region")

        total = 1.5 * args.seconds
        extended = gen.extend(prompt, (song, rate), total, seed=200 + i, steps=args.steps)
        longer, have = extended.audio, kept_samples(extended)  # up to where its sound ends
        skipped.append((song.shape[1] - have) / rate)
        kept_ext = np.array_equal(longer[:, : have - fade], song[:, : have - fade])
        ea = new_start(longer, song, fade)  # the crossfade may move into a silent tail
        d = frame_distances(longer, rate)
        new = d[ea // HOP + 2 :]
        rows["extend"].append((seam(d, ea - fade // 2, rate), p95(own), rank(seam(d, ea - fade // 2, rate), own),
                               own_w))
        jumps.append((abs(level_jump(longer, rate, ea)), p95(own_jumps)))
        tail, heard = longer[:, ea:], song[:, :have]
        tempo_close["extend"].append(abs(estimate_tempo(tail, rate) - estimate_tempo(heard, rate)))
        key_same["extend"].append(estimate_key(tail, rate) == estimate_key(heard, rate))
        print(f"{i:<5} {'extend':<10} {rows['extend'][-1][0]:>8.2f} {p95(own):>8.2f} {p95(new):>8.2f} "
              f"{level_jump(longer, rate, ea):>8.2f} {p95(own_jumps):>10.2f}  kept {kept_ext}  "
              f"silent tail skipped {skipped[-1]:.2f} s, splice moved {(ea - have) / rate * 1000:.0f} ms  "
              f"tempo {estimate_tempo(heard, rate):.0f}->{estimate_tempo(tail, rate):.0f} "
              f"key {' '.join(estimate_key(heard, rate))}->{' '.join(estimate_key(tail, rate))}")
        kept_all &= kept and kept_ext

        extended = gen.extend(prompt, (song, rate), args.seconds, start=0.6 * args.seconds, seed=300 + i,
                              steps=args.steps)
        longer, cut = extended.audio, kept_samples(extended)  # 60%
        kept_all &= np.array_equal(longer[:, : cut - fade], song[:, : cut - fade])
        ea = new_start(longer, song, fade)  # the crossfade may move into the new part: the song goes on past 60%
        d = frame_distances(longer, rate)
        rows["extend cut"].append((seam(d, ea - fade // 2, rate), p95(own), rank(seam(d, ea - fade // 2, rate), own),
                                   own_w))
        tail = longer[:, ea:]
        tempo_close["extend cut"].append(abs(estimate_tempo(tail, rate) - estimate_tempo(song[:, :cut], rate)))
        key_same["extend cut"].append(estimate_key(tail, rate) == estimate_key(song[:, :cut], rate))
        print(f"{i:<5} {'extend cut':<10} {rows['extend cut'][-1][0]:>8.2f} {p95(own):>8.2f} "
              f"{p95(d[ea // HOP + 2 :]):>8.2f} {level_jump(longer, rate, ea):>8.2f} {p95(own_jumps):>10.2f}  "
              f"untouched {seam(own, ea - fade // 2, rate):.2f}  splice moved {(ea - cut) / rate * 1000:.0f} ms  "
              f"tempo {estimate_tempo(song[:, :cut], rate):.0f}->{estimate_tempo(tail, rate):.0f} "
              f"key {' '.join(estimate_key(song[:, :cut], rate))}->{' '.join(estimate_key(tail, rate))}")

        loop = gen.loop(prompt, args.seconds, seed=i, steps=args.steps)
        audio, n = loop.audio, loop.audio.shape[1]
        twice = np.concatenate([audio, audio], axis=1)
        d = frame_distances(twice, rate)
        own_loop = frame_distances(audio, rate)
        rows["loop"].append((seam(d, n, rate), p95(own_loop), rank(seam(d, n, rate), own_loop),
                             window_p95(own_loop, rate)))
        plain = gen.generate(prompt, loop.request.seconds, seed=i, steps=args.steps).audio
        d_plain = frame_distances(np.concatenate([plain, plain], axis=1), rate)
        own_plain = frame_distances(plain, rate)
        rows["plain wrap"].append((seam(d_plain, n, rate), p95(own_plain), rank(seam(d_plain, n, rate), own_plain),
                                   window_p95(own_plain, rate)))
        bars = ""
        if loop.request.controls.bpm is not None:  # the loop's own bar lines, where the wrap also is
            bar = (loop.request.controls.beats_per_bar or 4) * 60 / loop.request.controls.bpm * rate
            own_bars = [seam(d, round(n + k * bar), rate) for k in range(1, round(n / bar))]
            if own_bars:
                bar_lines.append((seam(d, n, rate), max(own_bars)))
                bars = f"; its other bar lines: {' '.join(f'{v:.2f}' for v in own_bars)}"
            # and every other beat line, each place once, in the second time through (the first precedes it)
            beat = 60 / loop.request.controls.bpm * rate
            own_beats = np.array([seam(d, round(n + k * beat), rate) for k in range(1, round(n / beat))])
            if own_beats.size:
                wrap = seam(d, n, rate)
                beat_lines.append((wrap, p95(own_beats), rank(wrap, own_beats)))
                bars += (f"; its other {own_beats.size} beat lines: p95 {p95(own_beats):.2f}, "
                         f"the wrap at percentile {rank(wrap, own_beats):.0f}")
        print(f"{i:<5} {'loop':<10} {rows['loop'][-1][0]:>8.2f} {p95(own_loop):>8.2f} {'':>8} "
              f"{level_jump(twice, rate, n):>8.2f} {p95(np.abs(np.diff(levels(audio, rate)))):>10.2f}  "
              f"{loop.request.seconds:.2f} s; plain song wrapped: {rows['plain wrap'][-1][0]:.2f}{bars}")

    print(f"\nmedians over {args.songs} songs ({time.perf_counter() - start:.0f} s; crossfade "
          f"{CROSSFADE_SECONDS * 1000:.0f} ms, loop seam +-{LOOP_SEAM_SECONDS:g} s):")
    for name, values in rows.items():
        seams, refs = np.array([v[0] for v in values]), np.array([v[1] for v in values])
        ranks, fair = np.array([v[2] for v in values]), np.array([v[3] for v in values])
        print(f"  {name:<10} seam {np.median(seams):6.2f} dB, own p95 {np.median(refs):6.2f} dB, "
              f"seams under their song's p95: {np.mean(seams <= refs):.0%} of {len(seams)}, "
              f"median percentile of a seam among its song's own changes: {np.median(ranks):.0f}; "
              f"window p95 {np.median(fair):6.2f} dB, under it: {np.mean(seams <= fair):.0%}")
    if bar_lines:
        wraps, most = np.array([b[0] for b in bar_lines]), np.array([b[1] for b in bar_lines])
        print(f"  loop wrap against the loop's own other bar lines (loops with a tempo): wrap {np.median(wraps):.2f} "
              f"dB, largest bar line {np.median(most):.2f} dB (medians); wrap no larger: {np.mean(wraps <= most):.0%} "
              f"of {len(wraps)}")
    if beat_lines:
        wraps, refs, ranks = (np.array([b[j] for b in beat_lines]) for j in range(3))
        print(f"  loop wrap against the loop's own other beat lines (loops with a tempo): wrap {np.median(wraps):.2f} "
              f"dB, beat-line p95 {np.median(refs):.2f} dB (medians); wrap at or under its beat lines' p95: "
              f"{np.mean(wraps <= refs):.0%} of {len(wraps)}, median percentile of the wrap among them: "
              f"{np.median(ranks):.0f}")
    jump, ref = np.array([j[0] for j in jumps]), np.array([j[1] for j in jumps])
    print(f"  level     |jump| at boundaries {np.median(jump):.2f} dB, own p95 {np.median(ref):.2f} dB, "
          f"under p95: {np.mean(jump <= ref):.0%} of {len(jump)}")
    for name, changes in tempo_close.items():
        print(f"  continuation ({name}): median |tempo change| {np.median(changes):.1f} BPM, within 4 BPM "
              f"{np.mean(np.array(changes) <= 4):.0%}, same key {np.mean(key_same[name]):.0%} of {len(changes)}")
    gaps = np.array(skipped)
    print(f"  extend: a silent tail skipped in {np.sum(gaps > 0)} of {len(gaps)} songs, median "
          f"{np.median(gaps[gaps > 0]) if np.any(gaps > 0) else 0.0:.2f} s of those")
    print(f"  kept samples bit-identical outside the crossfades: {kept_all}")


if __name__ == "__main__":
    main()
