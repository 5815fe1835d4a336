"""Generation speed with LoRA adapters: the base model, adapters on the fly, adapters merged.

    python benchmarks/lora_speed.py                      # the bundled model, 30 s songs, 15 steps
    python benchmarks/lora_speed.py --model GEN.safetensors --rank 16 --repeats 5

An adapter of `--rank` on every default target (self_attn, cross_attn, ff; 0.85M
parameters at rank 16 on the bundled `compact` DiT) is built with random A and B drawn
as a trained one's would be (B off zero), saved with the model's DiT digest and loaded
back as `salong generate --lora` loads it. One generator is loaded; the three modes are
then timed in turn, `--repeats` rounds after a warm-up round, and each mode's fastest
song is reported (the least disturbed by other work on a shared machine), with the
median beside it, in wall time and in this process's CPU time (steadier where other jobs
share the cores). The merge itself (a copy of the DiT with the adapter added, made once
per set of adapters) is timed apart.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ("base", "on the fly", "merged")


def random_adapter(generator, rank: int, path: Path) -> Path:
    """A rank-`rank` adapter on the default targets with B perturbed, bound to the generator's DiT."""
    from salong.lora import Adapter, LoraConfig, dit_digest, save_adapter

    torch.manual_seed(0)
    adapter = Adapter(generator.dit, LoraConfig(rank=rank, alpha=float(rank)))
    with torch.no_grad():
        for b in adapter.b.values():
            b.normal_(0, 0.01)
    return save_adapter(path, adapter, dit_digest(generator.dit), updates=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="generator file \\[default: the bundled model]")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of the three modes, after a warm-up")
    parser.add_argument("--threads", type=int, default=0, help="torch threads \\[default: torch's]")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from salong.bundled import default_generator
    from salong.lora import merge
    from salong.pipeline import Generator
    from salong.request import Lora, SongRequest

    model = Path(args.model) if args.model else default_generator()
    gen = Generator.load(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = random_adapter(gen, args.rank, Path(tmp) / "adapter.safetensors")
        adapter = gen.adapters([Lora(path)])[0][0]
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {model.name} "
              f"(DiT width {gen.config.dit.width}, depth {gen.config.dit.depth}); adapter rank {args.rank}, "
              f"{adapter.parameter_count() / 1e6:.2f}M parameters on {len(adapter.names)} layers; "
              f"{args.seconds:g} s songs, {args.steps} steps, CFG on")
        start = time.perf_counter()
        merge(copy.deepcopy(gen.dit), [(adapter, 1.0)])
        print(f"merge (once per set of adapters): {time.perf_counter() - start:.3f} s")

        requests = {
            "base": SongRequest("calm piano at 90 BPM in C major", args.seconds, seed=0, steps=args.steps),
            "on the fly": SongRequest("calm piano at 90 BPM in C major", args.seconds, seed=0, steps=args.steps,
                                      lora=[Lora(path)]),
            "merged": SongRequest("calm piano at 90 BPM in C major", args.seconds, seed=0, steps=args.steps,
                                  lora=[Lora(path)], lora_merge=True),
        }
        walls: dict[str, list[float]] = {mode: [] for mode in MODES}
        cpus: dict[str, list[float]] = {mode: [] for mode in MODES}
        for round_ in range(args.repeats + 1):  # round 0 warms up (and makes the merged copy)
            for mode in MODES:
                start, cpu = time.perf_counter(), time.process_time()
                gen.generate(requests[mode])
                if round_:
                    walls[mode].append(time.perf_counter() - start)
                    cpus[mode].append(time.process_time() - cpu)
        for mode in MODES:
            wall, cpu = min(walls[mode]), min(cpus[mode])
            vs = ("" if mode == "base" else f" ({100 * (wall / min(walls['base']) - 1):+.1f}% vs base, CPU "
                  f"{100 * (cpu / min(cpus['base']) - 1):+.1f}%)")
            print(f"{mode:>10}: {wall:6.2f} s wall per song{vs}; median {statistics.median(walls[mode]):.2f} s; "
                  f"CPU {cpu:.2f} s (fastest of {args.repeats})")


if __name__ == "__main__":
    main()
