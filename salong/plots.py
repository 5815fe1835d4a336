"""Pictures people look at: a song's waveform and spectrogram, a training run's curves.

Drawn with matplotlib's object-oriented API on its Agg canvas (no pyplot, no display, no
global backend switch) and written atomically. `salong plot` calls `plot_file`; training
runs call `plot_run` and `plot_demos` with every demo.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from salong.outputs import is_stream, plan_outputs, write_atomic
from salong.errors import SalongError
from salong.run_metrics import METRICS_FILE, read_metrics

DPI = 100  # pixels per inch: a figure of W x H pixels is W / DPI x H / DPI inches
SIZE = (1200, 600)  # default width, height in pixels
SIZE_RANGE = (200, 8000)
ROW_HEIGHT = 280  # a run's picture: pixels per row of panels, unless a height is given
PICTURE_FORMATS = ("png", "svg", "pdf")

# Spectrogram: 2048-point frames (46 ms at 44.1 kHz), 128 mel bands, at most MAX_FRAMES
# columns (a longer song takes a longer hop: a picture has fewer pixels than that anyway).
N_FFT = 2048
N_MELS = 128
MAX_FRAMES = 4000
FLOOR_DB = -80.0  # below the loudest band; quieter is drawn as silence


# --- a song --------------------------------------------------------------------------


def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 20.0, fmax: float | None = None) -> np.ndarray:
    """Triangular filters evenly spaced on the HTK mel scale, (n_mels, n_fft // 2 + 1)."""
    fmax = fmax or sample_rate / 2
    edges = _hz(np.linspace(_mel(fmin), _mel(fmax), n_mels + 2))  # (n_mels + 2,) band edges in Hz
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)  # (F,) frequency of each FFT bin
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (n_mels, 1) each
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))  # (n_mels, F)


def _mel(hz: Any) -> Any:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _hz(mel: Any) -> Any:
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def log_mel(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """(dB mel spectrogram (N_MELS, frames) of the channels' mix, seconds per frame)."""
    mono = audio.mean(axis=0)  # (N,)
    hop = max(N_FFT // 4, math.ceil(mono.size / MAX_FRAMES))
    padded = np.pad(mono, (N_FFT // 2, N_FFT // 2))  # centred frames, as librosa and torch.stft
    if padded.size < N_FFT:
        padded = np.pad(padded, (0, N_FFT - padded.size))
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::hop]  # (frames, N_FFT)
    window = np.hanning(N_FFT)
    # scaled so that a full-scale sine peaks at 0 dB
    power = (np.abs(np.fft.rfft(frames * window, axis=1)) / (window.sum() / 2)) ** 2  # (frames, F)
    mel = mel_filters(sample_rate, N_FFT, N_MELS) @ power.T  # (N_MELS, frames)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return np.maximum(db, db.max() + FLOOR_DB), hop / sample_rate


def plot_audio(path: str | Path, out: str | Path, width: int = SIZE[0], height: int = SIZE[1],
               title: str | None = None, overwrite: bool = True) -> Path:
    """Waveform over a log-mel spectrogram, both against time in seconds; the title is
    `title`, else the prompt the file carries (its title tag), else the file name. A song
    salong made to a tempo (its recipe's --bpm, or one its prompt states) gets its bar
    lines marked on the waveform: the grid the song was asked to keep; an inpainted song gets
    the region it regenerated shaded on both panels."""
    from salong.audio import probe, read_audio

    path = Path(path)
    fmt = picture_format(out)
    audio, rate = read_audio(path)
    title = title or probe(path).tags.get("title") or path.name
    seconds = audio.shape[1] / rate
    fig = _figure(width, height)
    wave_ax, spec_ax = fig.subplots(2, 1, sharex=True, height_ratios=[1, 2])

    # waveform: each channel's min and max per pixel column (millions of samples, a few hundred pixels)
    columns = max(1, min(audio.shape[1], width))
    edges = np.linspace(0, audio.shape[1], columns + 1).astype(int)
    times = (edges[:-1] + edges[1:]) / 2 / rate
    for channel, label in zip(audio, ("left", "right") if audio.shape[0] == 2 else ("",) * audio.shape[0]):
        low = np.minimum.reduceat(channel, edges[:-1])
        high = np.maximum.reduceat(channel, edges[:-1])
        wave_ax.fill_between(times, low, high, linewidth=0.3, alpha=0.6, label=label or None)
    wave_ax.set_ylim(-1, 1)
    wave_ax.set_ylabel("amplitude")
    if audio.shape[0] == 2:
        wave_ax.legend(loc="upper right", fontsize="small", ncols=2)
    wave_ax.set_title("\n".join(textwrap.wrap(title, max(40, width // 9))[:2]), fontsize="medium")
    bars = _bar_lines(path, seconds)
    if bars is not None:
        for t in bars:
            wave_ax.axvline(t, color="0.35", linewidth=0.6, linestyle=":")

    region = _inpainted(path)
    if region is not None:
        for ax in (wave_ax, spec_ax):
            ax.axvspan(*region, color="cyan", alpha=0.15, linewidth=0, zorder=3)
        wave_ax.text(sum(region) / 2, 0.9, "regenerated", ha="center", va="top", fontsize="small")

    db, frame_seconds = log_mel(audio, rate)
    image = spec_ax.imshow(db, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                           extent=(-frame_seconds / 2, db.shape[1] * frame_seconds - frame_seconds / 2, 0, N_MELS))
    ticks = [hz for hz in (100, 250, 500, 1000, 2000, 4000, 8000, 16000) if hz < rate / 2]
    # band i (row i, centred at i + 0.5) peaks at the (i + 1)-th of N_MELS + 2 edges
    top, bottom = _mel(rate / 2), _mel(20.0)
    spec_ax.set_yticks([(_mel(hz) - bottom) / (top - bottom) * (N_MELS + 1) - 0.5 for hz in ticks],
                       [f"{hz // 1000}k" if hz >= 1000 else str(hz) for hz in ticks])
    spec_ax.set_ylabel("frequency (Hz, mel scale)")
    spec_ax.set_xlabel("time (s)")
    spec_ax.set_xlim(0, seconds)
    fig.colorbar(image, ax=[wave_ax, spec_ax], label="level (dB re full scale)", shrink=0.6, location="right")
    return _save(fig, out, fmt, overwrite)


def _inpainted(path: Path) -> tuple[float, float] | None:
    """The region (from, to) seconds an inpainted salong song regenerated, or None."""
    from salong.recipe import read_recipe

    try:
        request = read_recipe(path).request
    except SalongError:
        return None
    return None if request.inpaint is None else (request.start, request.end)


def _bar_lines(path: Path, seconds: float) -> np.ndarray | None:
    """Times of the bar lines of the tempo a salong song asked for, or None (no recipe, no tempo)."""
    from salong.recipe import read_recipe

    try:
        controls = read_recipe(path).request.controls
    except SalongError:
        return None
    if controls.bpm is None:
        return None
    bar = (controls.beats_per_bar or 4) * 60.0 / controls.bpm
    return np.arange(0.0, seconds, bar)


def plot_demos(folder: str | Path, width: int = SIZE[0], height: int = SIZE[1]) -> list[Path]:
    """A spectrogram beside every demo .wav in `folder` that has none yet."""
    written = []
    for wav in sorted(Path(folder).glob("*.wav")):
        picture = wav.with_suffix(".png")
        if not picture.exists():
            written.append(plot_audio(wav, picture, width, height))
    return written


# --- a training run ------------------------------------------------------------------


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records
              if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) and math.isfinite(r[key])]
    return [s for s, _ in points], [v for _, v in points]


def plot_run(path: str | Path, out: str | Path, width: int = SIZE[0], height: int | None = None,
             overwrite: bool = True) -> Path:
    """A run's training losses, gradient norms and learning rates against the step, and its
    evaluations (STFT distance, SI-SDR, retrieval recall, ...) as points, from metrics.jsonl.
    `height` defaults to ROW_HEIGHT pixels per row of panels."""
    from matplotlib.ticker import MaxNLocator

    fmt = picture_format(out)
    records = read_metrics(path)
    keys = sorted({k for r in records for k in r if "/" in k})
    train = [k for k in keys if not k.startswith("eval/")]
    evals = [k for k in keys if k.startswith("eval/") and k != "eval/pairs"]  # pairs: a count, not a score
    recalls = [k for k in evals if "@" in k]
    panels = [
        ("training losses", [k for k in train if not k.endswith(("/lr", "/grad_norm"))], "loss"),
        ("gradient norm (before clipping)", [k for k in train if k.endswith("/grad_norm")], "norm"),
        ("learning rate", [k for k in train if k.endswith("/lr")], "learning rate"),
        ("held-out retrieval recall", recalls, "recall"),
        *[(f"evaluation: {k.removeprefix('eval/')}", [k], _unit(k)) for k in evals if k not in recalls],
    ]
    panels = [panel for panel in panels if panel[1]]
    if not panels:
        raise SalongError(f"{str(path)!r} holds no metric salong plots (losses, gradient norms, learning rates or "
                          "evaluations, named like 'dit/loss'); plot a run salong trained")
    columns = 1 if len(panels) <= 2 else 2
    rows = math.ceil(len(panels) / columns)
    fig = _figure(width, height or ROW_HEIGHT * rows + 40)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    run = Path(path).resolve()
    name = run.name if run.is_dir() else run.parent.name
    fig.suptitle(f"training run {name!r}, step {max(r['step'] for r in records)}", fontsize="medium")
    for ax, (title, series, unit) in zip(axes, panels):
        evaluation = series[0].startswith("eval/")
        for key in series:
            steps, values = _series(records, key)
            few = len(steps) <= 30  # a line needs two points; a short run's few points get markers
            ax.plot(steps, values, linewidth=1.0, marker="o" if evaluation or few else None, markersize=3,
                    label=key.removeprefix("eval/"))
        values = [v for key in series for v in _series(records, key)[1]]
        if not evaluation and values and min(values) > 0 and max(values) > 10 * min(values):
            ax.set_yscale("log")  # losses and rates that span decades
        else:
            ax.ticklabel_format(axis="y", useOffset=False)  # 0.001, not "1e-9 + 9.99999e-4" above the axis
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize="small")
        ax.set_xlabel("step")
        ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small", loc="best")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return _save(fig, out, fmt, overwrite)


def _unit(key: str) -> str:
    return "dB" if "sdr" in key else "loss" if key.endswith("loss") else "distance"


# --- files ---------------------------------------------------------------------------


def plot_file(path: str | Path, out: str | Path | None = None, width: int = SIZE[0], height: int | None = None,
              title: str | None = None, overwrite: bool = False) -> Path:
    """`plot_run` for a run folder or a metrics.jsonl, `plot_audio` (with `title`) for anything
    else, written to `out` or, by the output rule, NAME.png in folder `out` or here (an
    existing file only with `overwrite`); `height` defaults to the song's SIZE, or the run's
    ROW_HEIGHT per row of panels."""
    path = Path(path)
    [out] = plan_outputs([path], Path(out) if out is not None else None, ".png", overwrite)
    check_size(width, SIZE[1] if height is None else height)
    picture_format(out)
    if path.is_dir() or path.name == METRICS_FILE:
        return plot_run(path, out, width, height, overwrite)
    if not path.exists():
        raise SalongError(f"{str(path)!r} not found; give an audio file or a training run folder")
    return plot_audio(path, out, width, height or SIZE[1], title, overwrite)


def check_size(width: int, height: int) -> None:
    low, high = SIZE_RANGE
    for name, value in (("width", width), ("height", height)):
        if not low <= value <= high:
            raise SalongError(f"--{name} must be {low} to {high} pixels, got {value}")


def picture_format(out: str | Path) -> str:
    """The picture format from the output's extension (a stream without one, such as `-o -`: png), validated."""
    fmt = Path(out).suffix.lstrip(".").lower() or ("png" if is_stream(out) else "")
    if fmt not in PICTURE_FORMATS:
        raise SalongError(f"unknown picture extension {Path(out).suffix or '(none)'!r} for {str(out)!r}; "
                          f"use one of: {', '.join('.' + f for f in PICTURE_FORMATS)}")
    return fmt


def _figure(width: int, height: int) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")


def _save(fig: Any, out: str | Path, fmt: str, overwrite: bool = True) -> Path:
    """Write the figure atomically (without `overwrite`, never over a file that appears
    meanwhile); a PNG in 256 colours (a colour map has 256 anyway), which makes a
    spectrogram's file about a third of the size (a run writes one per demo)."""

    def write(tmp: Path) -> None:
        if fmt != "png":
            fig.savefig(tmp, format=fmt, dpi=DPI)
            return
        from PIL import Image  # matplotlib's own dependency

        rgba = io.BytesIO()
        fig.savefig(rgba, format="png", dpi=DPI)
        Image.open(rgba).convert("RGB").quantize(256).save(tmp, format="png", optimize=True)

    return write_atomic(out, write, suffix=f".{fmt}.part", overwrite=overwrite)
