"""Peak memory of `salong decode` on long latents: the whole command, as a user runs it.

    python benchmarks/decode_memory.py                          # 60 s and 600 s with the bundled autoencoder
    python benchmarks/decode_memory.py --seconds 600 3600 --model path/to/autoencoder.safetensors

For each length, latents are drawn from N(0, 1) (seed 0; what a generator's prior gives) at
the autoencoder's latent rate and saved as a latents file in a temporary folder, then
`python -m salong decode` writes them to a 24-bit WAV in a child process; that child's
peak resident set size (its own ru_maxrss, from wait4) is the figure. Decoding streams
the audio to the file block by block (`Autoencoder.decode_stream`, `salong.audio.write_audio_blocks`),
so the peak should not grow with the length beyond the latents themselves
(64 channels x 4 bytes x 21.5 frames a second: 5.5 kB a second).

Measured (2 CPU cores, OMP_NUM_THREADS=1, bundled spectral autoencoder): 60 s 804 MB,
600 s 929 MB; before decode streamed, 927 MB and 1899 MB. What 600 s add over 60 s is
glibc's heap fragmentation, not audio held: run with MALLOC_MMAP_THRESHOLD_=1048576 in the
environment (large blocks go back to the system at once), 600 s peak at 775 MB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from salong.bundled import default_autoencoder  # noqa: E402
from salong.checkpoint import weights_digest  # noqa: E402
from salong.latents import Latents, save_latents  # noqa: E402
from salong.sao import load_codec  # noqa: E402


def write_latents(path: Path, model: torch.nn.Module, seconds: float) -> None:
    """N(0, 1) latents of `seconds` for `model`, recorded as made by it (so decode does not warn)."""
    cfg = model.config
    samples = round(seconds * cfg.sample_rate)
    frames = -(-samples // cfg.samples_per_latent)
    z = torch.randn(cfg.latent_dim, frames, generator=torch.Generator().manual_seed(0))  # (latent_dim, frames)
    save_latents(path, Latents(z, cfg.sample_rate, cfg.latent_rate, samples, cfg.audio_channels, "benchmark",
                               weights_digest(model)))


def decode_peak(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"decode failed with exit status {child.returncode}: {' '.join(command)}")
    return usage.ru_maxrss / 1024, wall  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[60.0, 600.0],
                        help="Lengths of the latents to decode (default: 60 and 600 s).")
    parser.add_argument("--model", default=None, help="Autoencoder or generator file. [default: the bundled model]")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the decode.")
    args = parser.parse_args()
    model_path = Path(args.model) if args.model else default_autoencoder()
    model, _ = load_codec(model_path)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": str(ROOT)}
    for seconds in args.seconds:
        with tempfile.TemporaryDirectory() as folder:
            latents, wav = Path(folder) / "long.latents.safetensors", Path(folder) / "long.wav"
            write_latents(latents, model, seconds)
            command = [sys.executable, "-m", "salong", "decode", str(latents), "-o", str(wav), "--no-progress",
                       "--model", str(model_path)]
            peak, wall = decode_peak(command, env)
            size = wav.stat().st_size
        print(f"decode of {seconds:g} s of latents ({latents.name}, {model_path.name}): peak RSS {peak:.0f} MB, "
              f"{wall:.1f} s wall, WAV {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
