"""Continuations in key and tempo: does an extension asked for in neither keep its source's?

    python benchmarks/continuation_key.py [--model MODEL] [--songs 12] [--seconds 10] [--steps 15]

For each of `--songs` prompts of `edit_seams.py` it makes a song of `--seconds` (seed i),
then extends it by half with the prompt's key and tempo words taken out (seed 200 + i),
twice: as the library does (the key and tempo estimated from the source become the
request's, `SongRequest._source_controls`) and with that turned off ("none": the extension
is asked for in no key and at no tempo). Each extension's new part is set against its
source with the adherence estimators (`salong.evaluation.estimate_key`, `estimate_tempo`).

Prints one line per song and arm, then the share of extensions in the source's key and
the median |tempo change| per arm. The same estimators choose the controls and measure
them: a tempo estimated at twice the beat asks for, and then finds, twice the beat.
"""

from __future__ import annotations

import argparse
import re
import time
import warnings
from pathlib import Path

import numpy as np
from edit_seams import PROMPTS

from salong.bundled import default_generator
from salong.evaluation import estimate_key, estimate_tempo
from salong.request import SongRequest
from salong.sao import load_generator

STATED = re.compile(r"\s*(at \d+ BPM|in [A-G]b? (major|minor))")  # the words edit_seams.py's prompts state them in


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path)
    p.add_argument("--songs", type=int, default=12)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--steps", type=int)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    gen = load_generator(args.model or default_generator(), None, args.device)
    rate, start = gen.sample_rate, time.perf_counter()
    estimated = SongRequest._source_controls
    same: dict[str, list[bool]] = {"none": [], "source's": []}
    tempo: dict[str, list[float]] = {"none": [], "source's": []}
    warnings.simplefilter("ignore")  # the note on the estimates, and on a model reading controls as words
    for i, prompt in enumerate(PROMPTS[: args.songs]):
        bare = STATED.sub("", prompt).replace(" ,", ",").strip(" ,")
        song = gen.generate(prompt, args.seconds, seed=i, steps=args.steps).audio
        key, bpm = estimate_key(song, rate), estimate_tempo(song, rate)
        for arm in same:
            SongRequest._source_controls = estimated if arm == "source's" else (lambda self, model: {})
            longer = gen.extend(bare, (song, rate), 1.5 * args.seconds, seed=200 + i, steps=args.steps)
            tail = longer.audio[:, song.shape[1] :]
            same[arm].append(estimate_key(tail, rate) == key)
            tempo[arm].append(abs(estimate_tempo(tail, rate) - bpm))
            asked = f"{longer.request.key or '-'} {longer.request.bpm or '-'}"
            print(f"{i:<3} {bare!r:<50} {arm:<8} asked {asked:<15} key {' '.join(key)} -> "
                  f"{' '.join(estimate_key(tail, rate))}, tempo {bpm:.0f} -> {estimate_tempo(tail, rate):.0f}",
                  flush=True)
    SongRequest._source_controls = estimated
    print(f"\n{args.songs} songs ({time.perf_counter() - start:.0f} s):")
    for arm in same:
        print(f"  {arm:<10} extension in the source's key {np.mean(same[arm]):.0%} of {len(same[arm])}, median |tempo "
              f"change| {np.median(tempo[arm]):.1f} BPM, within 4 BPM {np.mean(np.array(tempo[arm]) <= 4):.0%}")


if __name__ == "__main__":
    main()
