"""A toy task and dataset for the trainer tests, and a script that trains them.

Run as a script (plain, or under `python -m torch.distributed.run`) it trains the
toy task; the tests use it for Ctrl-C, SIGTERM, kill -9 and 2-process DDP runs.
Exit status 130 on an interrupt, 1 on any other SalongError.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save_file
from torch import nn

from salong.checkpoint import save_checkpoint, write_atomic
from salong.errors import SalongError
from salong.train import Part, Task, TrainConfig, TrainingInterrupted, seed_everything, train

DONE = "done, process group left"  # the last line a rank prints before it exits
TRUE_W = torch.tensor([[1.5], [-2.0], [0.5], [1.0]])


class ToyDataset(torch.utils.data.Dataset):
    """x fixed per index; target noise drawn from the item seed (like a random crop)."""

    def __init__(self, n: int = 37) -> None:
        self.n = n
        self.seen: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        index, seed, _ = key
        self.seen.append((index, seed))
        x = torch.randn(4, generator=torch.Generator().manual_seed(index))
        noise = torch.randn(1, generator=torch.Generator().manual_seed(seed))
        return {"x": x, "y": x @ TRUE_W + 0.05 * noise}


class ToyTask(Task):
    """A small MLP regressing y from x (dropout and loss noise exercise the RNG);
    optionally a second "critic" part without EMA, GAN style."""

    kind = "toy"

    def __init__(self, hidden: int = 8, two_parts: bool = False, nan_at: int | None = None, sleep: float = 0.0):
        self.hidden = hidden
        self.two_parts = two_parts
        self.nan_at = nan_at
        self.sleep = sleep
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Dropout(0.1), nn.Linear(hidden, 1))
        self.critic = nn.Linear(1, 1) if two_parts else None
        self.demos: list[int] = []

    def config(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "two_parts": self.two_parts}

    def parts(self) -> list[Part]:
        parts = [Part("net", self.net)]
        if self.critic is not None:
            parts.append(Part("critic", self.critic, lr=3e-3, betas=(0.5, 0.9), ema=False))
        return parts

    def loss(self, part: str, batch: Any, modules: Mapping[str, nn.Module], step: int):
        if self.sleep:
            time.sleep(self.sleep)
        x, y = batch["x"], batch["y"]
        if part == "net":
            pred = modules["net"](x)
            loss = ((pred + 0.01 * torch.randn_like(pred) - y) ** 2).mean()
            if self.critic is not None:
                loss = loss + 0.01 * modules["critic"](pred).pow(2).mean()
            if self.nan_at is not None and step + 1 >= self.nan_at:
                loss = loss * float("nan")
            return loss, {"pred_mean": pred.mean()}
        with torch.no_grad():
            pred = modules["net"](x)
        loss = ((modules["critic"](pred) - y) ** 2).mean()
        return loss, {}

    def export(self, path: Path, ema_modules: Mapping[str, nn.Module]) -> Path:
        return save_checkpoint(path, ema_modules["net"], kind="toy", config=self.config())

    def demo(self, step: int, out_dir: Path, ema_modules: Mapping[str, nn.Module]) -> None:
        self.demos.append(step)
        value = float(ema_modules["net"](torch.ones(1, 4)).item())
        write_atomic(out_dir / f"demo_{step:07d}.json", lambda tmp: tmp.write_text(json.dumps({"value": value})))

    def evaluate(self, step: int, ema_modules: Mapping[str, nn.Module]) -> dict[str, float]:
        x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1234))
        return {"mse": float(((ema_modules["net"](x) - x @ TRUE_W) ** 2).mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--checkpoint-every", type=int, default=5)
    ap.add_argument("--log-every", type=int, default=1)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--two-parts", action="store_true")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--dump-dir", default=None, help="each rank writes its weights here")
    args = ap.parse_args(argv)

    rank = int(os.environ.get("RANK", "0"))
    seed_everything(100 + rank)  # deliberately different initial weights per rank: DDP must sync them
    task = ToyTask(two_parts=args.two_parts, sleep=args.sleep)
    initial = {k: v.clone() for k, v in task.net.state_dict().items()}
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=1e-2, warmup=0.5,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, keep_checkpoints=100,
    )  # fmt: skip
    try:
        train(task, ToyDataset(), config, args.run_dir, resume=args.resume, task_config=task.config(), quiet=True)
    except TrainingInterrupted as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except SalongError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"rank {rank}: trained", file=sys.stderr, flush=True)
    if args.dump_dir:
        tensors = {f"final/{k}": v.contiguous() for k, v in task.net.state_dict().items()}
        tensors.update({f"initial/{k}": v.contiguous() for k, v in initial.items()})
        save_file(tensors, str(Path(args.dump_dir) / f"rank{rank}.safetensors"))
    print(f"rank {rank}: {DONE}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
