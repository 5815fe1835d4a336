"""How much faster than real time salong.synth renders, on one CPU thread.

    OMP_NUM_THREADS=1 python benchmarks/synth_speed.py [--pieces 10] [--seconds 30]

Renders `--pieces` pieces of `--seconds` each, then one piece of the longest length
(285 s), and prints seconds of audio per second of wall time ("x real time").
"""

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy loads its thread pool

from salong import synth  # noqa: E402


def speed(seeds: range, seconds: float) -> tuple[float, float]:
    """(audio seconds, wall seconds) for make_piece over seeds."""
    start = time.perf_counter()
    for seed in seeds:
        synth.make_piece(seed, seconds)
    return len(seeds) * seconds, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    runs = [(f"{args.pieces} x {args.seconds:g} s", range(args.pieces), args.seconds),
            (f"1 x {synth.MAX_SECONDS:g} s", range(1000, 1001), synth.MAX_SECONDS)]
    for label, seeds, seconds in runs:
        audio, wall = speed(seeds, seconds)
        print(f"{label:>12}: {wall:6.2f} s wall, {audio / wall:6.1f}x real time")


if __name__ == "__main__":
    main()
