"""Generation speed and memory, and DiT forward throughput.

    python benchmarks/generate_speed.py --model GENERATOR.safetensors --seconds 10 30 285
    python benchmarks/generate_speed.py --preset small --window-seconds 285 --steps 20

With --preset, a generator with random weights is built (speed does not depend on the
weights); --window-seconds widens the DiT window so long requests fit. Every generate
measurement runs in a fresh process, so its peak RSS is its own. Prints one line per
measurement: wall time, real-time factor (audio seconds per wall second) and peak memory,
for the needed-length and the --full-window paths; then DiT forward tokens/s and achieved
GFLOP/s next to a plain fp32 matmul's GFLOP/s measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "a calm piano piece"


def build_generator(args, path: Path) -> Path:
    from salong.autoencoder import PRESETS as AE, Autoencoder
    from salong.clap import PRESETS as CLAP, Clap
    from salong.clap_inputs import train_tokenizer
    from salong.dit import PRESETS as DIT, DiT
    from salong.pipeline import Generator, GeneratorConfig, SamplingConfig

    ae = AE[args.ae_preset]
    dit = DIT[args.preset]
    if args.window_seconds:
        dit = replace(dit, window=math.ceil(args.window_seconds * ae.latent_rate))
    clap = CLAP[args.clap_preset]
    config = GeneratorConfig(dit=dit, autoencoder=ae, clap=clap, sampling=SamplingConfig(steps=args.steps))
    tokenizer = train_tokenizer(["a calm piano piece", "energetic drums and bass"] * 10, vocab_size=300)
    Generator(config, DiT(dit), Autoencoder(ae), Clap(clap, tokenizer)).save(path)
    return path


def one(model: str, seconds: float, steps: int, full_window: bool, prompt: str = PROMPT) -> dict:
    """A single generate call in this process."""
    from salong.pipeline import Generator
    from salong.timing import audio_samples

    start = time.perf_counter()
    gen = Generator.load(model)
    load = time.perf_counter() - start
    song = gen.generate(prompt, seconds, steps=steps, seed=0, full_window=full_window)
    wall = time.perf_counter() - start  # model load included, as a user waits for it
    assert song.audio.shape[1] == audio_samples(seconds, gen.config.autoencoder.sample_rate)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "full_window": full_window, "steps": steps, "wall_s": round(wall, 2),
            "realtime_x": round(seconds / wall, 3), "peak_rss_mb": round(peak_mb), "load_s": round(load, 2)}


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def dit_throughput(model: str, frames: int, repeats: int = 3) -> dict:
    from salong.dit import forward_flops
    from salong.pipeline import Generator

    gen = Generator.load(model)
    cfg = gen.config.dit
    frames = min(frames, cfg.window)
    x = torch.randn(2, cfg.latent_dim, frames)  # batch 2: the CFG pair
    kw = dict(cond_tokens=torch.randn(2, cfg.max_text_tokens, cfg.cond_width), seconds_start=torch.zeros(2),
              seconds_total=torch.full((2,), 30.0))
    with torch.inference_mode():
        gen.dit(x, torch.full((2,), 0.5), **kw)
        start = time.perf_counter()
        for _ in range(repeats):
            gen.dit(x, torch.full((2,), 0.5), **kw)
        wall = (time.perf_counter() - start) / repeats
    flops = 2 * forward_flops(cfg, frames, cfg.max_text_tokens)
    return {"frames": frames, "tokens_per_s": round(2 * (frames + 1) / wall), "gflops": round(flops / wall / 1e9, 1),
            "forward_ms": round(wall * 1e3, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="generator checkpoint; else one with random weights from the presets")
    parser.add_argument("--preset", default="small", help="DiT preset for a random-weight generator")
    parser.add_argument("--ae-preset", default="small")
    parser.add_argument("--clap-preset", default="small")
    parser.add_argument("--window-seconds", type=float, default=0.0, help="widen the DiT window (random models)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 30, 285])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--no-full-window", action="store_true", help="skip the --full-window measurements")
    parser.add_argument("--prompt", default=PROMPT,
                        help="the prompt generated (a song asked with no drums at a tempo guides a third row on "
                             "models that store beat_guidance_without_drums)")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "SECONDS", "FULL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], float(args.one[1]), args.steps, args.one[2] == "1", args.prompt)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(build_generator(args, Path(tmp) / "random.safetensors"))
        from salong.checkpoint import config_from_dict, load_checkpoint
        from salong.pipeline import GeneratorConfig

        cfg = config_from_dict(GeneratorConfig, load_checkpoint(model, "generator").config)
        ae = cfg.autoencoder
        window_s = cfg.dit.window * ae.samples_per_latent / ae.sample_rate
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
              f"model {args.model or 'random ' + args.preset}"
              f" (window {window_s:.1f} s), {args.steps} steps, CFG on; {args.prompt!r}")
        for seconds in args.seconds:
            if seconds > window_s + 1e-6:
                print(f"{seconds:>6g} s: skipped, longer than the model's window ({window_s:.1f} s)")
                continue
            for full in ([False] if args.no_full_window else [False, True]):
                cmd = [sys.executable, __file__, "--one", model, str(seconds), "1" if full else "0",
                       "--steps", str(args.steps), "--prompt", args.prompt]
                r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True)
                               .stdout.strip().splitlines()[-1])
                kind = "full window" if full else "needed frames"
                print(f"{seconds:>6g} s ({kind:>13}): {r['wall_s']:8.2f} s wall (model load {r['load_s']:.2f} s "
                      f"included), {r['realtime_x']:7.3f}x real time, peak RSS {r['peak_rss_mb']} MB")
        mm = matmul_gflops()
        from salong.timing import latent_frames

        patch = cfg.dit.patch_size
        for frames in sorted({latent_frames(s, ae.sample_rate, ae.samples_per_latent, patch)
                              for s in args.seconds if s <= window_s}):
            t = dit_throughput(model, frames)
            print(f"DiT forward, CFG pair of {t['frames']} frames: {t['forward_ms']} ms, {t['tokens_per_s']} tokens/s, "
                  f"{t['gflops']} GFLOP/s achieved vs {mm:.1f} GFLOP/s for a 2048^2 fp32 matmul "
                  f"({100 * t['gflops'] / mm:.0f}%)")


if __name__ == "__main__":
    main()
