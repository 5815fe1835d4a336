"""This process's place in a `torchrun` job (its rank, the process group) and its device:
what training and a batch render across ranks share."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist

from salong.errors import SalongError


@dataclass(frozen=True)
class Dist:
    """This process's place in a `torchrun` job (world size 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True if we called init_process_group, so we also tear it down

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if `flag` is true on any (keeps ranks in lockstep on stops and faults)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def from_main(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (pickled; only between the processes of one job)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SalongError(f"environment variable {name}={value!r} is not an integer; launch with torchrun") from None


def init_distributed(use_cuda: bool) -> Dist:
    """Join the process group torchrun describes through RANK / WORLD_SIZE / LOCAL_RANK
    (NCCL on CUDA, gloo on CPU); a plain process gets world size 1."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Dist()
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if dist.is_initialized():
        if dist.get_world_size() != world:
            raise SalongError(f"the process group has {dist.get_world_size()} ranks but WORLD_SIZE is {world}")
        return Dist(rank, world, local, owns_group=False)
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, local, owns_group=True)


@contextlib.contextmanager
def process_group(use_cuda: bool) -> Iterator[Dist]:
    """`init_distributed` for the length of a block; the group it joined is left at the end."""
    d = init_distributed(use_cuda)
    try:
        yield d
    finally:
        if d.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def wants_cuda(device: str) -> bool:
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def resolve_device(name: str, local_rank: int) -> torch.device:
    """"auto" -> this rank's GPU if there is one, else the CPU."""
    if wants_cuda(name):
        if not torch.cuda.is_available():
            raise SalongError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")
