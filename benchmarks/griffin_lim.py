"""Griffin-Lim for the spectral autoencoder: how close, how fast, against its iterations.

    python benchmarks/griffin_lim.py [--seconds 30] [--pieces 4] [--iterations 0 8 16 32 64]

The spectral autoencoder's decoder predicts STFT magnitudes of mid and side, and
`salong.spectral.griffin_lim_long` finds phases for them. This measures the phase
retrieval alone, on the true magnitudes of held-out synth pieces (so the model's own
error is left out): spectral convergence of the rebuilt signal's magnitudes against the
given ones (0 = exact; at 0 iterations the first guess, steady bin-centre phases), the
multi-resolution STFT distance to the original audio (`salong.audio_losses`), and the
wall seconds per second of stereo audio. One line per iteration count.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salong.audio_losses import reconstruction_loss  # noqa: E402
from salong.autoencoder import PRESETS  # noqa: E402
from salong.spectral import from_mid_side, griffin_lim_long, mid_side_magnitudes  # noqa: E402
from salong.synth import make_piece  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--pieces", type=int, default=4)
    p.add_argument("--iterations", type=int, nargs="+", default=[0, 8, 16, 32, 64])
    args = p.parse_args()
    config = PRESETS["spectral"]
    hop = config.samples_per_latent
    pieces = []
    for i in range(args.pieces):
        audio = make_piece(seed=90_000 + i, seconds=args.seconds).audio
        audio = torch.from_numpy(audio[:, : audio.shape[1] // hop * hop])[None]  # (1, 2, N)
        pieces.append((audio, mid_side_magnitudes(audio, config)))  # (1, 2, F, T)
    print(f"{args.pieces} synth pieces of {args.seconds:g} s, n_fft {config.n_fft}, hop {config.stft_hop}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'iterations':>10} {'convergence':>12} {'STFT dist':>10} {'s per s':>8}")
    for iterations in args.iterations:
        convergence, distance, seconds = [], [], 0.0
        for audio, magnitudes in pieces:
            t0 = time.perf_counter()
            signal = griffin_lim_long(magnitudes[0], config.n_fft, config.stft_hop, iterations)  # (2, N)
            seconds += time.perf_counter() - t0
            rebuilt = from_mid_side(signal[None])
            got = mid_side_magnitudes(rebuilt, config)
            convergence.append(float((got - magnitudes).norm() / magnitudes.norm()))
            distance.append(float(reconstruction_loss(rebuilt, audio)))
        per_second = seconds / (args.pieces * args.seconds)
        print(f"{iterations:>10} {np.mean(convergence):>12.3f} {np.mean(distance):>10.3f} {per_second:>8.4f}")


if __name__ == "__main__":
    main()
