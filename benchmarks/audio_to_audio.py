"""Audio-to-audio closeness: how far the output moves from the input as the init noise level grows.

    python benchmarks/audio_to_audio.py --model MODEL [--text-encoder T5] --audio IN.wav [--seconds S]

MODEL is a salong generator file or a Stable Audio Open folder. For each noise level it
prints the relative distance of the output to the input, in latents (the encoded input
against the sampled latents) and in audio (RMS of the difference over RMS of the input).
Low levels should stay near the input, high ones follow the prompt.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from salong.audio import read_audio, resample, to_channels
from salong.sao import load_generator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--text-encoder", type=Path)
    p.add_argument("--audio", type=Path, required=True)
    p.add_argument("--prompt", default="deep bass with soft rain")
    p.add_argument("--seconds", type=float)
    p.add_argument("--steps", type=int)
    p.add_argument("--levels", default=None, help="comma-separated noise levels [default: by objective]")
    args = p.parse_args()

    gen = load_generator(args.model, args.text_encoder, "cpu")
    audio, rate = read_audio(args.audio)
    seconds = args.seconds or min(gen.max_seconds, audio.shape[1] / rate)
    rf = gen.config.objective == "rf"
    levels = ([float(v) for v in args.levels.split(",")] if args.levels
              else [0.1, 0.3, 0.5, 0.7, 0.9, 1.0] if rf else [0.5, 1, 3, 10, 30, 100, 500])
    frames = gen.frames_to_sample(seconds, None)
    target = gen.init_latents(audio, rate, frames, seed=0)
    ref = to_channels(resample(audio, rate, gen.sample_rate), gen.config.autoencoder.audio_channels)
    n = round(seconds * gen.sample_rate)
    ref = np.pad(ref[:, :n], ((0, 0), (0, max(0, n - ref.shape[1]))))
    seen = {}
    decode = gen.autoencoder.decode_long
    gen.autoencoder.decode_long = lambda z, **kw: (seen.__setitem__("z", z), decode(z, **kw))[1]
    print(f"model {args.model} ({'rectified flow' if rf else 'v-objective'}), {seconds:.2f} s, {frames} frames")
    print("level     latent distance   audio distance")
    for level in levels:
        song = gen.generate(args.prompt, seconds, steps=args.steps, seed=0, init_audio=(audio, rate),
                            init_noise_level=level)
        latent = float(torch.linalg.vector_norm(seen["z"] - target) / torch.linalg.vector_norm(target))
        rms = float(np.sqrt(np.mean((song.audio - ref) ** 2)) / np.sqrt(np.mean(ref ** 2)))
        print(f"{level:<9g} {latent:>15.3f} {rms:>16.3f}")


if __name__ == "__main__":
    main()
