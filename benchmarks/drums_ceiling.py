"""How much "drums" the autoencoder alone puts into music that has none.

    python benchmarks/drums_ceiling.py [--model MODEL] [--pieces 12] [--seconds 20]

Synth pieces made with drums="none" (seeds from 90000) are round-tripped through the
generator's autoencoder (encode, decode), and the percussive share that the adherence
benchmark scores drums by (`salong.evaluation.percussive_share`, below 150 Hz) is printed
for the piece and its round trip, against DRUMS_THRESHOLD: a round trip above it would be
scored as having drums however well the DiT follows "no drums". Prints a line per piece,
then the medians and how many round trips stay under the threshold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from salong.bundled import default_generator
from salong.evaluation import DRUMS_THRESHOLD, percussive_share
from salong.sao import load_generator
from salong.synth.corpus import make_piece


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="generator file (default: the bundled generator)")
    p.add_argument("--pieces", type=int, default=12)
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    autoencoder = load_generator(args.model or default_generator()).autoencoder
    rows = []
    for i in range(args.pieces):
        piece = make_piece(90000 + i, args.seconds, drums="none")
        audio = np.ascontiguousarray(np.asarray(piece.audio, dtype=np.float32))  # (channels, samples)
        with torch.inference_mode():
            latents = autoencoder.encode_long(torch.from_numpy(audio)[None], sample=False)
            decoded = autoencoder.decode(latents)[0, :, : audio.shape[1]].numpy()
        rows.append((percussive_share(audio, 44100), percussive_share(decoded, 44100)))
        print(f"piece {i:2d} ({piece.attributes.lead:>15}): synth {rows[-1][0]:.4f}  round trip {rows[-1][1]:.4f}",
              flush=True)
    synth, trip = np.array(rows).T
    print(f"median percussive share: synth {np.median(synth):.4f}, round trip {np.median(trip):.4f}; "
          f"under {DRUMS_THRESHOLD}: synth {np.sum(synth < DRUMS_THRESHOLD)} of {len(rows)}, "
          f"round trip {np.sum(trip < DRUMS_THRESHOLD)} of {len(rows)}")


if __name__ == "__main__":
    main()
