"""Chunked processing of long signals: overlapping chunks stitched by a raised-cosine crossfade.

`Autoencoder.encode_long` / `decode_long` run a model chunk by chunk through `stitch`, so
memory stays flat whatever the duration. The overlap needed for chunked output to equal
unchunked output follows from the receptive field, computed by `input_range` from each
architecture's layer geometry (`salong.oobleck.geometry`, `salong.spectral.geometry`).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch

from salong.errors import SalongError

Progress = Callable[[int, int], None]

# (transposed?, kernel, stride, padding, dilation) of a layer that mixes neighbours.
Layer = tuple[bool, int, int, int, int]
FAR = 10**6  # a frame far from the signal's edges, where the pattern is shift-invariant


def input_range(layers: list[Layer], lo: int, hi: int) -> tuple[int, int]:
    """The input index range that output indices [lo, hi] of `layers` depend on."""
    for transposed, k, s, p, d in reversed(layers):
        if transposed:  # o = i * s - p + j, 0 <= j < k
            lo, hi = -(-(lo + p - k + 1) // s), (hi + p) // s
        else:  # o depends on i = o * s - p + j * d, 0 <= j < k
            lo, hi = lo * s - p, hi * s - p + (k - 1) * d
    return lo, hi


CROSSFADE_FRAMES = 4  # crossfade length beyond the dropped context, in the default overlap


def resolve_overlap(chunk_frames: int, overlap_frames: int | None, context: int) -> int:
    """The validated overlap; by default the receptive-field context on both sides plus
    a short crossfade, which makes chunked results equal to unchunked ones (`stitch`)."""
    if not isinstance(chunk_frames, int) or isinstance(chunk_frames, bool) or chunk_frames < 1:
        raise SalongError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
    if overlap_frames is None:
        overlap = 2 * context + CROSSFADE_FRAMES
        if overlap >= chunk_frames:
            raise SalongError(
                f"chunk_frames={chunk_frames} is too short for this model, whose chunks overlap by {overlap} "
                f"frames (twice its receptive field plus a crossfade); use chunk_frames >= {2 * overlap}"
            )
        return overlap
    if not isinstance(overlap_frames, int) or isinstance(overlap_frames, bool) or not 0 < overlap_frames < chunk_frames:
        raise SalongError(
            f"overlap_frames must be an integer from 1 to chunk_frames - 1 ({chunk_frames - 1}), "
            f"got {overlap_frames!r}; raise chunk_frames or lower overlap_frames"
        )
    return overlap_frames


def chunk_plan(total: int, chunk: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) frame ranges of length `chunk` covering [0, total); neighbours share
    at least `overlap` frames. Starts are spread evenly so the last chunk is full-length too."""
    if total <= chunk:
        return [(0, total)]
    step = chunk - overlap
    n = -(-(total - chunk) // step) + 1
    starts = [round(k * (total - chunk) / (n - 1)) for k in range(n)]
    return [(s, s + chunk) for s in starts]


def stitched(
    run: Callable[[int, int], torch.Tensor],
    total: int,
    scale: int,
    chunk: int,
    overlap: int,
    context: int,
    progress: Progress | None,
) -> Iterator[torch.Tensor]:
    """Chunks `run(start, end)` -> (..., (end - start) * scale) crossfaded into one signal
    (..., total * scale), yielded piece by piece in order as soon as no later chunk reaches
    back into it: memory holds about one chunk, whatever `total`.

    Near its cut edges a chunk sees zero padding instead of the neighbouring signal, so
    its output is only exact `context` frames (the receptive field) away from a cut. In
    each shared region, `margin` frames at both ends are therefore given to the chunk
    that sees real signal there, and the rest is a raised-cosine crossfade. When the
    overlap exceeds 2 * context, margin = context and the result equals the unchunked
    one up to float rounding; with a smaller overlap, a quarter of it at each end is
    dropped and half is crossfaded, which hides the (then non-zero) seam error.

    Weights: chunk k gets `r[k-1](x) - r[k](x)`, where r[k] rises 0 -> 1 over the k-th
    crossfade (r[-1] = 1, r[n-1] = 0). Crossfades are ordered, so each weight lies in
    [0, 1] and they telescope to exactly 1 everywhere. Each sample is the sum, from zero,
    of its chunks' weighted outputs in chunk order, however the pieces are cut.
    """
    assert 1 <= overlap < chunk, (overlap, chunk)
    plan = chunk_plan(total, chunk, overlap)
    margin = context if overlap > 2 * context else overlap // 4
    fades = []  # (start, length) of each crossfade, in frames
    for (_, end), (next_start, _) in zip(plan, plan[1:]):
        shared = end - next_start
        assert shared >= overlap, (shared, overlap)
        length = overlap - 2 * margin
        fades.append((next_start + (shared - length) // 2, length))

    def rise(x: torch.Tensor, fade: tuple[int, int]) -> torch.Tensor:
        start, length = fade
        t = ((x - start * scale) / (length * scale)).clamp(0.0, 1.0)
        return torch.sin(0.5 * math.pi * t).pow(2)

    done = 0  # frames yielded so far; `pending` holds frames done ... the furthest chunk end
    pending: torch.Tensor | None = None
    for k, (start, end) in enumerate(plan):
        y = run(start, end)
        assert y.shape[-1] == (end - start) * scale, (y.shape, start, end, scale)
        if progress is not None:
            progress(k + 1, len(plan))
        if len(plan) == 1:
            yield y
        else:
            if pending is None:
                pending = y.new_zeros(*y.shape[:-1], 0)
            grow = end * scale - done * scale - pending.shape[-1]
            if grow > 0:
                pending = torch.cat([pending, y.new_zeros(*y.shape[:-1], grow)], dim=-1)  # (..., (end - done) * scale)
            x = torch.arange(start * scale, end * scale, dtype=torch.float64) + 0.5  # sample centres
            w = (rise(x, fades[k - 1]) if k > 0 else torch.ones_like(x)) - (
                rise(x, fades[k]) if k < len(fades) else torch.zeros_like(x)
            )
            pending[..., (start - done) * scale : (end - done) * scale] += y * w.to(y.device, y.dtype)
            final = plan[k + 1][0] if k + 1 < len(plan) else total  # no later chunk reaches before its start
            yield pending[..., : (final - done) * scale]
            pending, done = pending[..., (final - done) * scale :], final


def stitch(
    run: Callable[[int, int], torch.Tensor],
    out: torch.Tensor,
    total: int,
    scale: int,
    chunk: int,
    overlap: int,
    context: int,
    progress: Progress | None,
) -> None:
    """Fill `out` (..., total * scale) with `stitched` chunks (`run` gives them on `out`'s
    device and dtype)."""
    position = 0
    for piece in stitched(run, total, scale, chunk, overlap, context, progress):
        out[..., position : position + piece.shape[-1]] = piece
        position += piece.shape[-1]
    assert position == total * scale, (position, total, scale)


class Pieces:
    """A signal that arrives as consecutive pieces (..., n) from an iterator, read forward by
    ranges: `read(start, end)` holds only the pieces that reach from `start` on, and joins
    them once a read (not once a piece: growing copies would fragment memory)."""

    def __init__(self, pieces: Iterator[torch.Tensor]) -> None:
        self._pieces = pieces
        self._held: list[torch.Tensor] = []
        self._start = 0  # where the first held piece starts

    def read(self, start: int, end: int) -> torch.Tensor:
        """Samples [start, end) (fewer past the end); `start` never goes back before an
        earlier call's `start`."""
        while self._held and self._start + self._held[0].shape[-1] <= start:
            self._start += self._held.pop(0).shape[-1]
        assert start >= self._start, "read forward only"
        held_end = self._start + sum(piece.shape[-1] for piece in self._held)
        while held_end < end:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._held.append(piece)
            held_end += piece.shape[-1]
        assert self._held, "no pieces"
        joined = self._held[0] if len(self._held) == 1 else torch.cat(self._held, dim=-1)
        return joined[..., start - self._start : end - self._start]
