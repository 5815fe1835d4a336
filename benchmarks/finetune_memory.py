"""What fine-tuning a DiT layout costs: trainable parameters and adapter file size at LoRA
ranks, and the peak memory and time of one training step.

    python benchmarks/finetune_memory.py                        # sao1 (Stable Audio Open 1.0), ranks 16 and 64
    python benchmarks/finetune_memory.py --full                 # also one full fine-tuning step (about 22 GB)
    python benchmarks/finetune_memory.py --preset tiny --seconds 2   # a quick check of the script itself

The DiT has random weights (a layout's cost does not depend on them). Counts and sizes
come from the layout alone: an adapter of each rank on the default targets (self_attn,
cross_attn, ff) is saved as `salong train export` saves it (float16) and its file
measured. Each step runs in a fresh process so that its peak resident memory (RSS, the
process's ru_maxrss) is its own: the DiT built as `salong train dit` builds it (gradient
checkpointing from width 1024), one v-loss step on a batch of `--batch` random latents of
`--seconds` (44.1 kHz, 2048 samples a latent frame) with random text tokens of the
layout's width and count, then gradient clipping, an AdamW step and an EMA update, as the
trainer makes them. A LoRA step trains only the adapter (`salong.lora.LoraDiT`); a full
step trains every DiT weight, so it holds the weights four times over besides (gradients,
AdamW's two moments, the EMA copy). CPU only, float32.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SAMPLE_RATE, SAMPLES_PER_LATENT = 44100, 2048


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def _available_gib() -> float:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) / 2**20


def _rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def sizes(preset: str, ranks: list[int]) -> int:
    """Print trainable parameters and float16 adapter file size per rank (the DiT on the meta
    device); returns the DiT's parameter count."""
    from salong.dit import PRESETS, DiT
    from salong.lora import Adapter, LoraConfig, save_adapter

    with torch.device("meta"):
        dit = DiT(PRESETS[preset])
    total = sum(p.numel() for p in dit.parameters())
    print(f"{preset}: {total:,} DiT parameters ({total / 1e6:.0f}M; full fine-tuning trains them all)")
    for rank in ranks:
        with torch.device("meta"):
            adapter = Adapter(dit, LoraConfig(rank=rank, alpha=float(rank)))
        adapter = adapter.to_empty(device="cpu")
        with torch.no_grad():
            for p in adapter.parameters():
                p.normal_(0, 0.02)
        with tempfile.TemporaryDirectory() as tmp:
            path = save_adapter(Path(tmp) / "adapter.safetensors", adapter, "0" * 16)
            size = path.stat().st_size
        count = adapter.parameter_count()
        print(f"  LoRA rank {rank}: {count:,} trainable parameters ({100 * count / total:.2f}% of the DiT) on "
              f"{len(adapter.names)} layers; adapter file {size / 1e6:.1f} MB ({size:,} bytes, "
              "float16)")
    return total


def one_step(preset: str, mode: str, seconds: float, batch: int) -> None:
    """Build the DiT, make one training step, print its memory and time (run in its own process)."""
    from salong.diffusion import v_loss
    from salong.dit import PRESETS, DiT
    from salong.lora import LoraConfig, LoraDiT
    from salong.timing import latent_frames
    from salong.train.dit import CHECKPOINTING_WIDTH
    from salong.train.runs import TrainConfig
    from salong.train.schedules import ema_update

    torch.manual_seed(0)
    config = PRESETS[preset]
    start = time.perf_counter()
    dit = DiT(config, checkpointing=config.width >= CHECKPOINTING_WIDTH)
    built, built_rss = time.perf_counter() - start, _rss_gib()
    if mode == "full":
        module: torch.nn.Module = dit.train()
    else:
        module = LoraDiT(dit, LoraConfig(rank=int(mode), alpha=float(mode)))
    params = [p for p in module.parameters() if p.requires_grad]
    train = TrainConfig(steps=1, batch_size=batch, lr=1e-4)
    optimizer = torch.optim.AdamW(params, lr=train.lr, betas=train.betas, weight_decay=train.weight_decay)
    ema = copy.deepcopy(module).eval().requires_grad_(False)  # a LoRA run's EMA shares the frozen base

    frames = latent_frames(seconds, SAMPLE_RATE, SAMPLES_PER_LATENT, config.patch_size)
    x0 = torch.randn(batch, config.latent_dim, frames)  # (B, C, L)
    cond = dict(cond_tokens=torch.randn(batch, config.max_text_tokens, config.cond_width),
                seconds_start=torch.zeros(batch), seconds_total=torch.full((batch,), seconds))
    start = time.perf_counter()
    loss = v_loss(module, x0, torch.rand(batch), torch.randn_like(x0), **cond)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, train.grad_clip)
    optimizer.step()
    ema_update(module, ema, 0.0)
    step = time.perf_counter() - start
    what = "full fine-tuning" if mode == "full" else f"LoRA rank {mode}"
    print(f"  {what}: one step at batch {batch} x {seconds:g} s ({frames} latent frames) in {step:.1f} s; "
          f"peak RSS {_peak_rss_gib():.2f} GiB (the DiT alone {built_rss:.2f} GiB, built in {built:.0f} s); "
          f"{sum(p.numel() for p in params):,} trained; loss {loss.item():.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="sao1", help="DiT layout (salong.dit.PRESETS) \\[default: sao1]")
    parser.add_argument("--ranks", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="also one full fine-tuning step")
    parser.add_argument("--no-steps", action="store_true", help="only the counts and sizes")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # in a child process: one step, "full" or a rank
    args = parser.parse_args()
    if args.step:
        one_step(args.preset, args.step, args.seconds, args.batch)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, float32")
    total = sizes(args.preset, args.ranks)
    if args.no_steps:
        return
    for mode in [*map(str, args.ranks), *(["full"] if args.full else [])]:
        if mode == "full":  # weights, gradients, two AdamW moments and the EMA copy, in float32
            need, free = 5 * 4 * total / 2**30 + 1.0, _available_gib()
            if need > free:
                print(f"  full fine-tuning: skipped; it needs about {need:.1f} GiB (5 x {4 * total / 2**30:.2f} GiB "
                      f"of float32 weights, plus activations) and {free:.1f} GiB is available")
                continue
        cmd = [sys.executable, __file__, "--preset", args.preset, "--seconds", str(args.seconds),
               "--batch", str(args.batch), "--step", mode]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            why = "killed (out of memory?)" if done.returncode < 0 else done.stderr.strip().splitlines()[-1:]
            print(f"  {mode}: the step failed: {why}")
        else:
            print(done.stdout.rstrip())
        sys.stdout.flush()


if __name__ == "__main__":
    main()
