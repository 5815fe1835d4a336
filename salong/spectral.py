"""The spectral autoencoder's encoder and decoder: STFT magnitudes in and out, Griffin-Lim phases.

STFT log-magnitudes of mid and side, ConvNeXt blocks (`salong.layers`) at the STFT frame
rate and at the latent rate, and fast Griffin-Lim (Perraudin et al. 2013) for the phases,
in blocks for long signals. `salong.autoencoder` puts them around its VAE bottleneck
(docs/architecture.md, The spectral autoencoder). `stft_magnitude` is also the STFT
losses' (`salong.audio_losses`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Iterator

import torch
from torch import nn

from salong.chunking import Layer, Pieces
from salong.layers import CONVNEXT_KERNEL, ConvNeXtBlock

if TYPE_CHECKING:
    from salong.autoencoder import AutoencoderConfig


# --- STFT --------------------------------------------------------------------------


def _hann(n_fft: int, like: torch.Tensor) -> torch.Tensor:
    return torch.hann_window(n_fft, device=like.device, dtype=like.dtype)


def to_mid_side(audio: torch.Tensor) -> torch.Tensor:
    """(B, 2, N) left/right -> mid (L+R)/2 and side (L-R)/2; other channel counts pass unchanged."""
    if audio.shape[1] != 2:
        return audio
    left, right = audio[:, :1], audio[:, 1:]
    return torch.cat([(left + right) / 2, (left - right) / 2], dim=1)


def from_mid_side(audio: torch.Tensor) -> torch.Tensor:
    """The inverse of `to_mid_side`."""
    if audio.shape[1] != 2:
        return audio
    mid, side = audio[:, :1], audio[:, 1:]
    return torch.cat([mid + side, mid - side], dim=1)


def stft_magnitude(rows: torch.Tensor, n_fft: int, hop: int, eps: float | None = None) -> torch.Tensor:
    """|STFT| of rows (R, N) -> (R, n_fft/2 + 1, N // hop + 1); centred, reflect-padded, periodic Hann.

    With `eps` the power is clamped at `eps` before the square root, so log-magnitudes and
    their gradients stay finite (the STFT losses); without, it is the complex modulus.
    """
    spec = torch.stft(rows, n_fft, hop, n_fft, _hann(n_fft, rows), center=True, pad_mode="reflect",
                      return_complex=True)  # (R, F, T)
    if eps is None:
        return spec.abs()
    return spec.real.square().add(spec.imag.square()).clamp_min(eps).sqrt()


def mid_side_magnitudes(audio: torch.Tensor, config: AutoencoderConfig) -> torch.Tensor:
    """|STFT| of mid/side (B, C, N), N a multiple of `stft_hop` -> (B, C, F, N / stft_hop).

    `stft_magnitude` with the config's `n_fft` and `stft_hop`; the frame centred past the end is dropped.
    """
    b, channels, n = audio.shape
    frames = n // config.stft_hop
    rows = to_mid_side(audio).reshape(b * channels, n)  # (B*C, N)
    magnitude = stft_magnitude(rows, config.n_fft, config.stft_hop)[..., :frames]  # (B*C, F, T)
    return magnitude.reshape(b, channels, -1, frames)  # (B, C, F, T)


# --- encoder and decoder -----------------------------------------------------------


MIN_MAGNITUDE = 1e-5  # the floor of log-magnitudes (about -100 dB re a full-scale bin)
MAX_LOG_MAGNITUDE = 8.0  # e^8 ~ 3000 per bin: far above full scale
INITIAL_LOG_MAGNITUDE = -4.0


class SpectralEncoder(nn.Module):
    """Audio (B, audio_channels, N) -> (B, 2 * latent_dim, N / hop), N a multiple of the hop.

    The log-magnitude STFT of mid and side (`mid_side_magnitudes`) is projected to `channels`,
    refined by ConvNeXt blocks at the frame rate, downsampled `frame_stride`x by a strided
    conv, refined at the latent rate and projected to mean and scale. Pitch is in the input
    as it is; an Oobleck encoder of laptop size never learned to keep it (docs/architecture.md).
    """

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        c, bins = config.channels, config.n_fft // 2 + 1
        self.input = nn.Conv1d(config.audio_channels * bins, c, 1)
        self.frame_blocks = nn.Sequential(*(ConvNeXtBlock(c) for _ in range(config.frame_blocks)))
        self.down = nn.Conv1d(c, c, config.frame_stride, stride=config.frame_stride)
        self.latent_blocks = nn.Sequential(*(ConvNeXtBlock(c) for _ in range(config.latent_blocks)))
        self.output = nn.Conv1d(c, 2 * config.latent_dim, 1)

    def forward(self, x: torch.Tensor, magnitudes: torch.Tensor | None = None) -> torch.Tensor:
        if magnitudes is None:
            magnitudes = mid_side_magnitudes(x, self.config)  # (B, C, F, T)
        h = magnitudes.clamp_min(MIN_MAGNITUDE).log().flatten(1, 2)  # (B, C*F, T)
        h = self.down(self.frame_blocks(self.input(h)))  # (B, c, T / frame_stride)
        return self.output(self.latent_blocks(h))


class SpectralDecoder(nn.Module):
    """Latents (B, latent_dim, L) -> audio (B, audio_channels, L * hop).

    The mirror of `SpectralEncoder` predicts the log-magnitude STFT of mid and side
    (`log_magnitudes`); `griffin_lim` finds phases for it, and mid/side become left/right.
    The phase is not learned: at laptop scale a learned phase (a Vocos head) trained for
    hundreds of steps still gave a comb at the frame rate and no notes, while these
    magnitudes draw notes within minutes.
    """

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        c, bins = config.channels, config.n_fft // 2 + 1
        self.input = nn.Conv1d(config.latent_dim, c, 3, padding=1)
        self.latent_blocks = nn.Sequential(*(ConvNeXtBlock(c) for _ in range(config.latent_blocks)))
        self.up = nn.ConvTranspose1d(c, c, config.frame_stride, stride=config.frame_stride)
        self.frame_blocks = nn.Sequential(*(ConvNeXtBlock(c) for _ in range(config.frame_blocks)))
        self.output = nn.Conv1d(c, config.audio_channels * bins, 1)
        with torch.no_grad():  # start near a typical level (e^-4 a bin, about -50 dB re a full-scale sine)
            self.output.bias.fill_(INITIAL_LOG_MAGNITUDE)
        self.head = None
        if config.decoder_head:  # a residual MLP per frame, zero at the start (AutoencoderConfig.decoder_head)
            self.head = nn.Sequential(nn.Conv1d(c, config.decoder_head, 1), nn.GELU(),
                                      nn.Conv1d(config.decoder_head, config.audio_channels * bins, 1))
            nn.init.zeros_(self.head[2].weight)
            nn.init.zeros_(self.head[2].bias)

    def log_magnitudes(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, latent_dim, L) -> log |STFT| of mid/side (B, audio_channels, F, L * frame_stride)."""
        h = self.frame_blocks(self.up(self.latent_blocks(self.input(z))))  # (B, c, T)
        out = self.output(h)  # (B, C*F, T)
        if self.head is not None:
            out = out + self.head(h)
        return out.reshape(out.shape[0], self.config.audio_channels, -1, out.shape[-1])  # (B, C, F, T)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return synthesize(self.log_magnitudes(z), self.config).to(z.dtype)


def geometry(config: AutoencoderConfig, decoder: bool) -> list[Layer]:
    """The encoder's or decoder's layers that mix neighbours, input to output.

    The decoder's end at its log-magnitude frames (Griffin-Lim is global, see
    `Autoencoder.decode_long`). A centred STFT frame j reads samples j*hop - n_fft/2 ...
    j*hop + n_fft/2 - 1, and the periodic Hann window is zero at the first: n_fft - 1 taps."""
    block = (False, CONVNEXT_KERNEL, 1, CONVNEXT_KERNEL // 2, 1)
    frames, latents = [block] * config.frame_blocks, [block] * config.latent_blocks
    if decoder:
        up = (True, config.frame_stride, config.frame_stride, 0, 1)
        return [(False, 3, 1, 1, 1), *latents, up, *frames]  # to log-magnitude frames
    down = (False, config.frame_stride, config.frame_stride, 0, 1)
    return [(False, config.n_fft - 1, config.stft_hop, config.n_fft // 2 - 1, 1), *frames, down, *latents]


# --- phases: Griffin-Lim -----------------------------------------------------------


def synthesize(log_magnitudes: torch.Tensor, config: AutoencoderConfig) -> torch.Tensor:
    """Log-magnitudes of mid/side (B, C, F, T) -> audio (B, C, T * stft_hop) by `griffin_lim_long`."""
    pieces = synthesize_blocks(iter([log_magnitudes]), log_magnitudes.shape[-1], config)
    return torch.cat(list(pieces), dim=-1)


def synthesize_blocks(log_magnitudes: Iterator[torch.Tensor], frames: int,
                      config: AutoencoderConfig) -> Iterator[torch.Tensor]:
    """`synthesize` of `frames` log-magnitude frames that arrive as consecutive pieces (B, C, F, n):
    audio (B, C, n' * stft_hop) piece by piece (`griffin_lim_blocks`), holding about one
    Griffin-Lim block whatever the length."""
    magnitudes = (piece.float().clamp(max=MAX_LOG_MAGNITUDE).exp().flatten(0, 1)  # (B*C, F, n)
                  for piece in log_magnitudes)
    blocks = griffin_lim_blocks(Pieces(magnitudes).read, frames, config.n_fft, config.stft_hop,
                                config.griffin_lim_iterations)
    for audio in blocks:  # (B*C, n' * stft_hop)
        yield from_mid_side(audio.reshape(-1, config.audio_channels, audio.shape[-1]))  # (B, C, n' * stft_hop)


def bin_centre_phases(bins: int, start: int, frames: int, n_fft: int, hop: int, like: torch.Tensor) -> torch.Tensor:
    """Unit phasors (F, frames) of steady sinusoids at the bins' centre frequencies, for
    centred STFT frames `start ...`: Griffin-Lim's first guess. They repeat every n_fft / hop
    frames, so blocks that start on a multiple of that agree."""
    k = torch.arange(bins, device=like.device, dtype=torch.float64)[:, None]
    j = torch.arange(start, start + frames, device=like.device, dtype=torch.float64)[None, :]
    angle = (2 * math.pi * k * torch.remainder(j * hop, n_fft) / n_fft).to(like.dtype)
    return torch.polar(torch.ones_like(angle), angle)


@torch.no_grad()  # phase retrieval: nothing trains through it, and its FFTs write into buffers
def griffin_lim(magnitude: torch.Tensor, n_fft: int, hop: int, iterations: int,
                phases: torch.Tensor, momentum: float = 0.99) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast Griffin-Lim (Perraudin et al. 2013; librosa.griffinlim): magnitudes (R, F, T + 1)
    of centred frames and first phases (R or 1, F, T + 1) -> (signals (R, T * hop), last phases).

    Each iteration rebuilds the signal from magnitude and phase, takes the phases of its
    STFT, and steps past them by `momentum` of the change, which converges far faster than
    plain alternating projections.

    The same sums as `torch.istft` / `torch.stft` (centred, reflect-padded Hann frames), spelled
    out on buffers made once: on a CPU each round is memory-bound, and fresh tensors of tens
    of MB cost a page fault per 4 kB, which took more time than the FFTs.
    """
    window = _hann(n_fft, magnitude)
    rows, _, frames_count = magnitude.shape
    half, length = n_fft // 2, (frames_count - 1) * hop
    mag = magnitude.transpose(1, 2).contiguous()  # (R, T + 1, F): each frame's bins adjacent, as the FFTs want
    spec = mag * phases.transpose(1, 2)  # magnitude times unit phases
    frames = magnitude.new_empty(rows, frames_count, n_fft)
    summed = magnitude.new_empty(rows, frames_count + -(-n_fft // hop) - 1, hop)
    envelope = _overlap_add(window.square().expand(1, frames_count, n_fft), hop, torch.empty_like(summed[:1]))
    inverse_envelope = 1 / envelope.view(-1)[half : half + length].clamp_min(1e-11)
    padded = magnitude.new_empty(rows, length + n_fft)
    signal = padded[:, half : half + length]
    rebuilt, previous = torch.empty_like(spec), torch.zeros_like(spec)
    scale = torch.empty_like(mag)
    step = momentum / (1 + momentum)

    def synthesise() -> None:  # torch.istft(spec) into `signal`
        torch.fft.irfft(spec, n=n_fft, out=frames)
        _overlap_add(frames.mul_(window), hop, summed)
        torch.mul(summed.view(rows, -1)[:, half : half + length], inverse_envelope, out=signal)

    last = phases.expand_as(magnitude)
    for round_ in range(iterations):
        synthesise()
        padded[:, :half] = signal[:, 1 : half + 1].flip(-1)  # reflect padding, as torch.stft's
        padded[:, half + length :] = signal[:, -half - 1 : -1].flip(-1)
        torch.fft.rfft(torch.mul(padded.unfold(-1, n_fft, hop), window, out=frames), out=rebuilt)
        torch.sub(rebuilt, previous, alpha=step, out=spec)
        rebuilt, previous = previous, rebuilt
        parts = torch.view_as_real(spec)
        torch.mul(parts[..., 0], parts[..., 0], out=scale).addcmul_(parts[..., 1], parts[..., 1])
        scale.clamp_min_(1e-32).rsqrt_()  # 1 / |spec|
        if round_ == iterations - 1:
            last = (spec * scale).transpose(1, 2)  # the unit phases returned
        parts.mul_(scale.mul_(mag).unsqueeze(-1))
    synthesise()
    return signal.clone(), last


def _overlap_add(frames: torch.Tensor, hop: int, out: torch.Tensor) -> torch.Tensor:
    """Frames (R, T, n) summed `hop` apart -> `out` (R, T + ceil(n / hop) - 1, hop), which is
    the signal laid out a hop per row."""
    out.zero_()
    count = frames.shape[1]
    for start in range(0, frames.shape[-1], hop):
        piece = frames[..., start : start + hop]
        out[:, start // hop : start // hop + count, : piece.shape[-1]].add_(piece)
    return out


GL_BLOCK_FRAMES = 2048  # STFT frames per Griffin-Lim block (about 24 s at hop 512)
GL_OVERLAP_FRAMES = 64  # frames two blocks share: the later starts from the earlier's phases there


def griffin_lim_long(magnitude: torch.Tensor, n_fft: int, hop: int, iterations: int,
                     block_frames: int = GL_BLOCK_FRAMES, overlap_frames: int = GL_OVERLAP_FRAMES) -> torch.Tensor:
    """`griffin_lim` of magnitudes (R, F, T) -> signals (R, T * hop) in blocks: `griffin_lim_blocks`
    of the whole tensor, joined."""
    pieces = griffin_lim_blocks(lambda start, end: magnitude[..., start:end], magnitude.shape[-1], n_fft, hop,
                                iterations, block_frames, overlap_frames)
    return torch.cat(list(pieces), dim=-1)


def griffin_lim_blocks(read: Callable[[int, int], torch.Tensor], frames: int, n_fft: int, hop: int,
                       iterations: int, block_frames: int = GL_BLOCK_FRAMES,
                       overlap_frames: int = GL_OVERLAP_FRAMES) -> Iterator[torch.Tensor]:
    """`griffin_lim` of `frames` magnitude frames, which `read(start, end)` gives as (R, F, end - start)
    in increasing order of `start`, in blocks of `block_frames` -> signals (R, T * hop), yielded
    piece by piece in order as each becomes final.

    Memory stays flat with length. A block starts from the phases its predecessor found in
    the frames they share, so both agree there, and their signals are crossfaded across
    the middle half of the shared frames. The frame past the end repeats the last one.
    """
    period = n_fft // math.gcd(n_fft, hop)
    overlap = min(overlap_frames, block_frames // 2) // period * period
    step = max(block_frames - overlap, period) // period * period
    previous: tuple[int, torch.Tensor] | None = None  # (start frame, last phases) of the block before
    pending: torch.Tensor | None = None  # the signal from frame `start` on that the next block crossfades into
    start = 0
    while True:
        end = min(start + block_frames, frames)
        block = read(start, end)  # (R, F, n)
        block = torch.cat([block, block[..., -1:]], dim=-1)  # (R, F, n + 1)
        rows, bins, _ = block.shape
        phases = bin_centre_phases(bins, start, end - start + 1, n_fft, hop, block).expand(rows, -1, -1).clone()
        if previous is not None:
            shared = previous[1][..., start - previous[0] : -1]  # its phases for frames start ... its end
            phases[..., : shared.shape[-1]] = shared
        signal, angles = griffin_lim(block, n_fft, hop, iterations, phases)  # (R, (end - start) * hop)
        if pending is None:
            out = signal
        else:
            fade_start, fade_length = (start + overlap // 4) * hop, (overlap // 2) * hop
            t = torch.arange(signal.shape[-1], device=signal.device, dtype=signal.dtype)
            rise = ((t - (fade_start - start * hop)) / fade_length).clamp(0, 1)
            rise = torch.sin(0.5 * math.pi * rise).square()
            before = torch.zeros_like(signal)
            before[:, : pending.shape[-1]] = pending
            out = before * (1 - rise) + signal * rise
        if end == frames:
            yield out
            return
        yield out[:, : step * hop]
        pending = out[:, step * hop :]
        previous = (start, angles)
        start += step
