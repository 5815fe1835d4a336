"""Peak memory of `salong encode` on one long file: the whole command, as a user runs it.

    python benchmarks/encode_memory.py --seconds 7200             # a 2-hour 16-bit stereo WAV (1.27 GB)
    python benchmarks/encode_memory.py --seconds 600 --model path/to/autoencoder.safetensors

The WAV is written block by block (noise under a slow sine, 44.1 kHz, 16-bit stereo) into
a temporary folder, then `python -m salong encode` runs in a child process; its peak
resident set size (ru_maxrss of the child) is the figure. Encoding streams the file
(`salong.latents.AudioReader`), so the peak should not grow with the file's length beyond
the latents (64 channels x 4 bytes x 21.5 frames a second: 40 MB for 2 hours).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def write_long_wav(path: Path, seconds: float, rate: int = 44100) -> int:
    """A 16-bit stereo WAV of `seconds`, written a minute at a time; returns its size in bytes."""
    rng = np.random.default_rng(0)
    total, block = int(seconds * rate), 60 * rate
    with sf.SoundFile(str(path), "w", rate, 2, "PCM_16", format="WAV") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / rate
            tone = 0.3 * np.sin(2 * np.pi * 220 * t)
            f.write((tone[:, None] + rng.normal(0, 0.05, (n, 2))).astype(np.float32))  # (samples, channels)
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=7200.0, help="Length of the WAV (default: 2 hours).")
    parser.add_argument("--model", default=None, help="Autoencoder or generator file. [default: the bundled model]")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the encode.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "long.wav"
        size = write_long_wav(wav, args.seconds)
        out = Path(folder) / "long.latents.safetensors"
        command = [sys.executable, "-m", "salong", "encode", str(wav), "-o", str(out), "--no-progress",
                   *(["--model", args.model] if args.model else [])]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports KiB
        latents = out.stat().st_size
    print(f"encode of {args.seconds:g} s ({size / 1e9:.2f} GB 16-bit stereo WAV): peak RSS {peak:.0f} MB, "
          f"{wall:.1f} s wall, latents file {latents / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
