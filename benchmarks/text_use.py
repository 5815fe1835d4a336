"""How much a generator's DiT uses its prompt: v-loss with the right, a wrong and no text.

    python benchmarks/text_use.py --model G.safetensors --cache RUN/prepared/cache [--items 16]

Adherence (`benchmarks/adherence.py`) moves only once a DiT follows its text well; this
shows earlier whether it has started to. On --items pieces of a DiT run's encoded dataset
(`salong train dit` writes RUN/prepared/cache: latents and captions), crops of --frames
latent frames from each piece's start are noised at each --t with the same noise, and
the DiT's v-objective loss (`salong.diffusion.v_loss`) is measured three ways:

- own: each crop with its own caption, encoded by the model's text encoder (its layer);
- shuffled: each crop with the next crop's caption;
- none: all text dropped, the unconditional half of classifier-free guidance.

One line per t, and "gain" = (none - own) / none: the share of the loss the right text
removes. A DiT that ignores its text has own = none and gain 0; one that reads a wrong
caption as well as a missing one has shuffled = none. The pieces must be ones the model
was trained on or held out from that same corpus, with the model's autoencoder.

Held-out pieces tell learning from memorising. Synthesise new ones with another seed and let
a one-update run encode them (the update itself is thrown away):

    salong synth 32 HO --seed 777 --min-seconds 16 --max-seconds 30 --captions 8
    salong train dit --data HO --out HO_RUN --init G.safetensors --steps 1 --demo-every 0 --quiet
    python benchmarks/text_use.py --model G.safetensors --cache HO_RUN/prepared/cache --items 32
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salong.diffusion import v_loss  # noqa: E402
from salong.errors import SalongError  # noqa: E402
from salong.pipeline import Generator  # noqa: E402
from salong.timing import timing_condition  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="generator file")
    p.add_argument("--cache", type=Path, required=True, help="a DiT run's prepared/cache folder (index.json)")
    p.add_argument("--items", type=int, default=16, help="pieces, the first ones at least --frames long")
    p.add_argument("--frames", type=int, default=320, help="crop length in latent frames (default 320, about 15 s)")
    p.add_argument("--t", type=float, nargs="+", default=[0.2, 0.5, 0.8, 0.95, 0.99], help="noise levels in (0, 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    try:
        index = json.loads((args.cache / "index.json").read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: cannot read {args.cache / 'index.json'} ({exc}); give a DiT run's prepared/cache")
    gen = Generator.load(args.model)
    crops, captions, totals = [], [], []
    for item in index["items"]:
        latents = load_file(str(args.cache / item["file"]))["latents"]  # (64, n)
        if latents.shape[1] >= args.frames:
            crops.append(latents[:, : args.frames])
            captions.append(item["caption"])
            totals.append(timing_condition(0.0, item["duration"])[1])
        if len(crops) == args.items:
            break
    if len(crops) < 2:
        raise SystemExit(f"error: fewer than 2 pieces of {args.frames} frames in {args.cache}; lower --frames")
    x0 = torch.stack(crops)  # (B, 64, frames)
    b = x0.shape[0]
    own, _ = gen.text_encoder.encode(captions)  # (B, tokens, width)
    cond = {"seconds_start": torch.zeros(b), "seconds_total": torch.tensor(totals, dtype=torch.float32)}
    keep, drop = torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)
    variants = {"own": (own, keep), "shuffled": (own.roll(1, 0), keep), "none": (own, drop)}
    print(f"{args.model}: {b} crops of {args.frames} frames, CLAP layer {gen.config.text_layer}")
    print(f"{'t':>5}  {'own':>7}  {'shuffled':>8}  {'none':>7}  {'gain':>6}")
    rng = torch.Generator().manual_seed(args.seed)
    with torch.inference_mode():
        for t in args.t:
            if not 0 < t < 1:
                raise SystemExit(f"error: --t values must be in (0, 1), got {t}")
            noise = torch.randn(x0.shape, generator=rng)
            losses = {name: float(v_loss(gen.dit, x0, torch.full((b,), t), noise, cond_tokens=tokens,
                                         cond_drop_mask=mask, **cond))
                      for name, (tokens, mask) in variants.items()}
            gain = (losses["none"] - losses["own"]) / losses["none"]
            print(f"{t:5.2f}  {losses['own']:7.4f}  {losses['shuffled']:8.4f}  {losses['none']:7.4f}  {gain:6.1%}")


if __name__ == "__main__":
    try:
        main()
    except SalongError as exc:
        raise SystemExit(f"error: {exc}")
