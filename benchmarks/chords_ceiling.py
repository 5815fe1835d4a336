"""How much chord movement the autoencoder alone leaves in music that has it.

    python benchmarks/chords_ceiling.py [--model MODEL] [--drums with|without|all] [--seconds 30]

The adherence benchmark's synth pieces (benchmarks/adherence_prompts.jsonl, the prompt at
index i rendered with seed i and its bpm, key, drums and lead, as its ceiling line makes
them) are measured three ways with its chord movement estimator
(`salong.evaluation.chord_movement`): as made; through Griffin-Lim on their own exact
mid/side magnitudes (what phase retrieval alone costs: for a spectral autoencoder only,
"nan" for another, whose phases are its own); and round-tripped through the generator's
autoencoder (`encode_long`, mean latents, then `decode_long`). A song the DiT draws
perfectly can keep no more than the round trip does. Prints a line per piece, then each
way's mean and how many pieces reach half the mean of all the prompts' synth pieces (the
adherence target's bar: its ceiling line's mean).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from salong.bundled import default_generator
from salong.evaluation import chord_movement
from salong.sao import load_generator
from salong.spectral import from_mid_side, griffin_lim_long, mid_side_magnitudes
from salong.synth import SAMPLE_RATE, make_piece

PROMPTS = Path(__file__).resolve().parent / "adherence_prompts.jsonl"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="generator file (default: the bundled generator)")
    p.add_argument("--drums", choices=("with", "without", "all"), default="with",
                   help="which of the prompts' pieces: with drums (default), without, or all")
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args()
    autoencoder = load_generator(args.model or default_generator()).autoencoder.float()
    config = autoencoder.config
    spectral = config.architecture == "spectral"  # the Griffin-Lim line is a spectral autoencoder's alone
    prompts = [json.loads(line) for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows, synth = [], []
    for seed, prompt in enumerate(prompts):
        attrs = {k: prompt[k] for k in ("bpm", "tonic", "mode", "drums", "lead")}
        audio = np.ascontiguousarray(np.asarray(make_piece(seed, args.seconds, **attrs).audio, dtype=np.float32))
        synth.append(chord_movement(audio, SAMPLE_RATE))
        if args.drums != "all" and (prompt["drums"] != "none") != (args.drums == "with"):
            continue
        x = torch.from_numpy(audio)[None]  # (1, C, N)
        with torch.inference_mode():
            decoded = autoencoder.decode_long(autoencoder.encode_long(x, sample=False))[0, :, : audio.shape[1]].numpy()
            phased = np.zeros_like(audio)
            if spectral:
                magnitudes = mid_side_magnitudes(x, config)[0]  # (C, F, T)
                signals = griffin_lim_long(magnitudes, config.n_fft, config.stft_hop, config.griffin_lim_iterations)
                phased = from_mid_side(signals[None])[0, :, : audio.shape[1]].numpy()
        rows.append([synth[-1], chord_movement(phased, SAMPLE_RATE) if spectral else np.nan,
                     chord_movement(decoded, SAMPLE_RATE)])
        print(f"prompt {seed:2d} ({prompt['drums']:>17}, {prompt['bpm']:3d} BPM): synth {rows[-1][0]:.2f}  "
              f"Griffin-Lim {rows[-1][1]:.2f}  round trip {rows[-1][2]:.2f}", flush=True)
    table = np.array(rows)  # (pieces, 3)
    half = float(np.mean(synth)) / 2
    print(f"the {len(synth)} prompts' synth pieces: mean {2 * half:.3f}")
    for name, column in zip(("synth", "Griffin-Lim on exact magnitudes", "round trip"), table.T):
        if np.isnan(column).all():
            continue  # not a spectral autoencoder: its phases are its own
        print(f"{name:>32}: mean {column.mean():.3f}, at half that ({half:.3f}) or more: "
              f"{int(np.sum(column >= half))} of {len(column)}")


if __name__ == "__main__":
    main()
