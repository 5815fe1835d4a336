"""Autoencoder speed and memory on long audio: chunked encode and decode.

    python benchmarks/autoencoder_speed.py --model small --seconds 30 285
    python benchmarks/autoencoder_speed.py --model path/to/autoencoder.safetensors --device cuda

Each (duration, operation) runs in a fresh subprocess, so the peak resident set size
(ru_maxrss) belongs to that one measurement; on CUDA the peak is
torch.cuda.max_memory_allocated. "over base" is the peak minus the memory held before
the operation starts (torch, model weights, input), i.e. what encoding or decoding costs;
for decode it includes the preallocated output (4 bytes x channels x samples).
A preset name gives a model with random weights (seed 0): speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(model_name: str, seconds: float, op: str, device: str, chunk_frames: int, threads: int) -> dict:
    """One measurement, in this process (the parent runs it in a child)."""
    import torch

    from salong.autoencoder import PRESETS, Autoencoder, load_autoencoder

    if threads > 0:
        torch.set_num_threads(threads)
    if model_name in PRESETS:
        torch.manual_seed(0)
        model = Autoencoder(PRESETS[model_name]).eval()
    else:
        model, _ = load_autoencoder(model_name)
    model = model.to(device)
    cfg = model.config
    samples = round(seconds * cfg.sample_rate)
    frames = -(-samples // cfg.samples_per_latent)
    rng = torch.Generator().manual_seed(1)
    if op == "encode":
        data = 0.1 * torch.randn(1, cfg.audio_channels, samples, generator=rng)
    else:
        data = torch.randn(1, cfg.latent_dim, frames, generator=rng)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = rss_mb()
    start = time.perf_counter()
    with torch.inference_mode():
        if op == "encode":
            out = model.encode_long(data, chunk_frames=chunk_frames)
        else:
            out = model.decode_long(data, chunk_frames=chunk_frames)
        if cuda:
            torch.cuda.synchronize()
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss_mb()
    assert out.shape[-1] == (frames if op == "encode" else frames * cfg.samples_per_latent)
    return {
        "seconds": seconds,
        "op": op,
        "wall_s": wall,
        "x_realtime": seconds / wall,
        "peak_mb": peak,
        "base_mb": base,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", help="preset name (random weights) or checkpoint path [small]")
    parser.add_argument("--seconds", type=float, nargs="+", default=[30.0, 285.0], help="durations [30 285]")
    parser.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")
    parser.add_argument("--chunk-frames", type=int, default=128, help="latent frames per chunk [128]")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads, 0 = torch's default [0]")
    parser.add_argument("--ops", nargs="+", default=["encode", "decode"], choices=["encode", "decode"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:  # child: one measurement, JSON on stdout
        row = measure(args.model, args.seconds[0], args.ops[0], args.device, args.chunk_frames, args.threads)
        print(json.dumps(row))
        return

    rows = []
    for seconds in args.seconds:
        for op in args.ops:
            cmd = [sys.executable, __file__, "--worker", "--model", args.model, "--seconds", str(seconds), "--ops", op,
                   "--device", args.device, "--chunk-frames", str(args.chunk_frames), "--threads", str(args.threads)]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                sys.exit(f"measurement {op} {seconds:g}s failed:\n{result.stderr}")
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(
                f"{r['seconds']:7.1f} s  {r['op']:6}  {r['x_realtime']:7.2f}x real time  {r['wall_s']:8.2f} s wall  "
                f"peak {r['peak_mb']:8.1f} MB  (+{r['peak_mb'] - r['base_mb']:7.1f} MB over base)",
                flush=True,
            )
    memory = "CUDA allocated" if args.device.startswith("cuda") else "RSS"
    print(f"model {args.model} ({rows[0]['params_m']:.1f}M params), device {args.device}, "
          f"threads {rows[0]['threads']}, chunk {args.chunk_frames} frames, memory = peak {memory}")


if __name__ == "__main__":
    main()
