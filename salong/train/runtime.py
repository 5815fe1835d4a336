"""The process a training run lives in: precision, seeds, signals (its rank and device:
`salong.distributed`)."""

from __future__ import annotations

import random
import signal
import threading
from typing import Any

import numpy as np
import torch

from salong.errors import SalongError
from salong.train.sampler import mix_seed


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> bf16 on CUDA GPUs that support it, else fp16 (loss-scaled); fp32 on CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision in ("bf16", "fp16") and device.type != "cuda":
        raise SalongError(f"--precision {precision} needs a CUDA GPU; use --precision fp32 (or auto) on CPU")
    return precision


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python's `random`; call before building models."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def reseed_step(seed: int, step: int, rank: int) -> None:
    """Every update draws its randomness from (seed, step, rank): no RNG state needs saving
    for an exact resume, ranks draw different noise, and demos or evaluations between
    steps cannot shift the training stream."""
    seed_everything(mix_seed(seed, step, rank))


def ignore_sigint(_worker_id: int) -> None:
    """DataLoader worker init: leave Ctrl-C to the main process, which stops at a step boundary."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopSignals:
    """While entered, SIGINT and SIGTERM (what cluster schedulers send) only request a stop,
    honoured at the next step boundary; a second Ctrl-C aborts at once. Handlers can only
    be installed from the main thread; elsewhere signals keep their usual effect."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
