"""Audio out for a DAW, measured: loudness reached against the target, true peak against the
ceiling, and the 24-bit round-trip error, through the writer `salong generate` uses.

    python benchmarks/audio_out.py [--model MODEL] [--songs 3] [--pieces 3] [--seconds 20]

Songs come from MODEL (default: the bundled model) with seeds 0.., pieces from `salong synth`.
Each is written as a WAV with `write_audio(..., loudness=TARGET, peak_db=CEILING)` for each
target, read back and measured again (BS.1770 integrated loudness, true peak 4x oversampled).
"ceiling" marks a target the song could not reach under the ceiling with one gain (the
writer warns). Last, each song is written at 24 bits and read back: the largest difference
from the float samples, in steps of 2^-23 (full scale = 1).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from salong.audio import peak_limit, read_audio, write_audio
from salong.mastering import measure

PROMPTS = ["calm piano in A minor at 80 BPM", "Energetic breakbeat at 132 BPM in D minor", "slow strings in C major"]


def sources(model: Path | None, songs: int, pieces: int, seconds: float) -> list[tuple[str, np.ndarray]]:
    from salong.bundled import default_generator
    from salong.request import SongRequest
    from salong.sao import load_generator
    from salong.synth import make_piece

    out = []
    if songs:
        gen = load_generator(model if model is not None else default_generator(), None, "cpu")
        for seed in range(songs):
            prompt = PROMPTS[seed % len(PROMPTS)]
            song = gen.generate(SongRequest(prompt, seconds, seed=seed))
            out.append((f"song {seed} ({prompt[:20]})", song.audio))
    for seed in range(pieces):
        out.append((f"synth piece {seed}", make_piece(seed=seed, seconds=seconds).audio))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path)
    p.add_argument("--songs", type=int, default=3)
    p.add_argument("--pieces", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--targets", default="-23,-16,-14,-9", help="LUFS, comma-separated")
    p.add_argument("--ceiling", type=float, default=-1.0, help="dBTP")
    args = p.parse_args()
    targets = [float(t) for t in args.targets.split(",")]

    items = sources(args.model, args.songs, args.pieces, args.seconds)
    print(f"{'source':<32} {'as made':>16} | " + " | ".join(f"{'target ' + format(t, 'g'):>24}" for t in targets)
          + " | 24-bit error")
    print(f"{'':<32} {'LUFS / dBTP':>16} | " + " | ".join(f"{'LUFS / dBTP':>24}" for _ in targets)
          + " | steps of 2^-23")
    worst_lu, worst_tp, worst_err, elapsed = 0.0, -np.inf, 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name, audio in items:
            made = measure(audio, 44100)
            cells = []
            for target in targets:
                path = Path(tmp) / "x.wav"
                start = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    write_audio(path, audio, 44100, loudness=target, peak_db=args.ceiling)
                elapsed += time.perf_counter() - start
                got = measure(read_audio(path)[0], 44100)
                bound = any("reached" in str(w.message) for w in caught)
                if not bound:
                    worst_lu = max(worst_lu, abs(got.lufs - target))
                worst_tp = max(worst_tp, got.true_peak_db)
                cells.append(f"{got.lufs:7.2f} / {got.true_peak_db:6.2f}{' ceiling' if bound else '        '}")
                path.unlink()
            path = write_audio(Path(tmp) / "r.wav", audio, 44100, bit_depth="24")
            error = float(np.max(np.abs(read_audio(path)[0] - peak_limit(audio)))) * 2**23
            worst_err = max(worst_err, error)
            print(f"{name:<32} {made.lufs:7.2f} / {made.true_peak_db:6.2f} | " + " | ".join(cells)
                  + f" | {error:.3f}")
    print(f"worst |LUFS - target| where reachable: {worst_lu:.3f} LU; highest true peak: {worst_tp:.3f} dBTP "
          f"(ceiling {args.ceiling:g}); worst 24-bit round-trip error: {worst_err:.3f} x 2^-23; "
          f"normalise + write: {elapsed / (len(items) * len(targets)):.2f} s per {args.seconds:g} s song")


if __name__ == "__main__":
    main()
