"""Has a fine-tune moved? Held-out v-loss of a base generator, of it with LoRA adapters, and of
fully fine-tuned generators, on the same crops, noise and noise levels.

    python benchmarks/style_loss.py --cache HO_RUN/prepared/cache --model BASE.safetensors \\
        --lora style.safetensors --full full/model.safetensors [--items 8] [--frames 128]

The crops come from a DiT run's encoded dataset (`salong train dit` writes RUN/prepared/cache:
latents, each caption's text features, tempo and key), as training reads them
(`salong.train.dit_data.LatentDataset`): --frames latent frames from a seeded offset of each
of the first --items pieces, padded and masked past a piece's end, with its beat and key
features for a DiT that has controls. Each is noised at every --t with the same noise, and
the v-objective loss (`salong.diffusion.v_loss`, the training loss) is printed per t and
averaged over them, with the right caption and with none (the unconditional half of CFG).

Make the held-out cache from pieces the fine-tune did not see, with the base model's
encoders (a one-update run; the update is thrown away):

    salong train dit --data HELD_OUT --init BASE.safetensors -o HO_RUN --steps 1 --demo-every 0 --quiet

A fine-tune that learnt the style lowers "own" against the base; one that only memorised its
training pieces does not. `--full` generators must share the base's autoencoder and text
encoder (a run with --init BASE keeps them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salong.diffusion import v_loss  # noqa: E402
from salong.errors import SalongError  # noqa: E402
from salong.lora import attach  # noqa: E402
from salong.pipeline import Generator  # noqa: E402
from salong.request import Lora  # noqa: E402
from salong.train.dit_data import CropLengths, LatentDataset  # noqa: E402


def held_out_batch(cache: Path, items: int, frames: int, patch: int, latent_rate: float) -> dict[str, torch.Tensor]:
    """The first `items` pieces of a run's cache as one batch of `frames`-frame crops."""
    try:
        index = json.loads((cache / "index.json").read_text())["items"]
    except (OSError, ValueError, KeyError) as exc:
        raise SalongError(f"cannot read {cache / 'index.json'} ({exc}); give a DiT run's prepared/cache") from None
    frames = max(patch, frames // patch * patch)
    dataset = LatentDataset(cache, index[:items], CropLengths(frames, frames, patch), latent_rate)
    crops = [dataset[(i, 1000 + i, 0)] for i in range(len(dataset))]
    return {key: torch.stack([torch.as_tensor(c[key]) for c in crops]) for key in crops[0]}


def losses(dit: torch.nn.Module, batch: dict[str, torch.Tensor], ts: list[float], seed: int,
           controls: tuple[str, ...]) -> dict[str, list[float]]:
    """v-loss per t, with each crop's caption ("own") and with none."""
    x0 = batch["latents"]  # (B, 64, frames)
    b = x0.shape[0]
    rng = torch.Generator().manual_seed(seed)
    cond = dict(cond_tokens=batch["text"], seconds_start=batch["seconds_start"],
                seconds_total=batch["seconds_total"], **{name: batch[name] for name in controls})
    out: dict[str, list[float]] = {"own": [], "none": []}
    with torch.inference_mode():
        for t in ts:
            noise = torch.randn(x0.shape, generator=rng)
            for name, drop in (("own", False), ("none", True)):
                mask = torch.full((b,), drop)
                out[name].append(float(v_loss(dit, x0, torch.full((b,), t), noise, mask=batch["mask"],
                                              cond_drop_mask=mask, **cond)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="the base generator file")
    p.add_argument("--cache", type=Path, required=True, help="a DiT run's prepared/cache folder, held out")
    p.add_argument("--lora", action="append", default=[], help="an adapter of the base, FILE[:STRENGTH]; repeatable")
    p.add_argument("--full", type=Path, action="append", default=[], help="a fine-tuned generator; repeatable")
    p.add_argument("--items", type=int, default=8, help="held-out pieces, the first ones")
    p.add_argument("--frames", type=int, default=128, help="crop length in latent frames (128: about 6 s)")
    p.add_argument("--t", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9], help="noise levels in (0, 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not all(0 < t < 1 for t in args.t):
        raise SalongError(f"--t values must be in (0, 1), got {args.t}")
    base = Generator.load(args.model)
    config = base.config.dit
    batch = held_out_batch(args.cache, args.items, args.frames, config.patch_size,
                           base.config.autoencoder.sample_rate / base.config.autoencoder.samples_per_latent)
    print(f"{batch['latents'].shape[0]} held-out crops of {batch['latents'].shape[2]} frames from {args.cache}; "
          f"v-loss at t = {', '.join(f'{t:g}' for t in args.t)}, mean last")
    rows = [("base " + args.model.name, lambda: losses(base.dit, batch, args.t, args.seed, config.controls))]
    for spec in args.lora:
        def with_adapter(lora: Lora = Lora.parse(spec)) -> dict[str, list[float]]:
            with attach(base.dit, base.adapters([lora])):
                return losses(base.dit, batch, args.t, args.seed, config.controls)

        rows.append((f"lora {spec}", with_adapter))
    for path in args.full:
        def fine_tuned(path: Path = path) -> dict[str, list[float]]:
            gen = Generator.load(path)
            return losses(gen.dit, batch, args.t, args.seed, gen.config.dit.controls)

        rows.append((f"full {path}", fine_tuned))
    width = max(len(label) for label, _ in rows)
    for label, run in rows:
        result = run()
        for name in ("own", "none"):
            values = result[name]
            print(f"{label:<{width}} {name:>4}: " + "  ".join(f"{v:.4f}" for v in values)
                  + f"  | mean {sum(values) / len(values):.4f}")


if __name__ == "__main__":
    try:
        main()
    except SalongError as exc:
        raise SystemExit(f"error: {exc}")
