"""Deterministic data order: which items, with which seeds, make the batch of a step.

The items a rank sees form an endless stream: epoch after epoch of a permutation
drawn from (seed, epoch), sharded across ranks the way `DistributedSampler` does
(padded by wrapping to a multiple of the world size, then every world_size-th
item). The batch of update `step` is the slice `[step*B, (step+1)*B)` of that
stream, so the data order is a pure function of the step: resuming needs no
saved iterator, and batches may straddle epoch boundaries (no item is dropped).

Each item comes with a seed derived from (seed, epoch, index); datasets draw their
randomness (random crops) from it, so results do not depend on DataLoader workers.
Each batch also has a seed of its own, derived from (seed, step) and the same on every
rank, for what must agree across a batch (the DiT's crop length). Datasets are indexed
with `(index, item_seed, batch_seed)` tuples.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

_MASK64 = (1 << 64) - 1
_BATCH_STREAM = 0xBA7C4  # keeps batch seeds apart from item seeds (seed, epoch, index)


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (SplitMix64 finaliser over each value).

    Stable across Python runs and processes, unlike `hash()`, and small enough for
    numpy and `torch.manual_seed`.
    """
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state >> 1


class StepSampler:
    """Batch sampler for updates `start_step .. stop_step - 1` of one rank.

    Iterating yields one list of `(index, item_seed, batch_seed)` per update; use it as
    a DataLoader `batch_sampler`.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        stop_step: int = 0,
    ) -> None:
        assert num_items > 0 and batch_size > 0 and 0 <= rank < world_size, "bad sampler arguments"
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_step = start_step
        self.stop_step = max(start_step, stop_step)
        # Items per rank per epoch, as DistributedSampler(drop_last=False) pads.
        self.epoch_length = -(-num_items // world_size)
        self._cached: tuple[int, np.ndarray] | None = None

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, position within this rank's epoch) of the first item of `step`'s batch."""
        return divmod(step * self.batch_size, self.epoch_length)

    def shard(self, epoch: int) -> np.ndarray:
        """This rank's item indices for `epoch`, in order."""
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        order = np.random.default_rng(mix_seed(self.seed, epoch)).permutation(self.num_items)
        total = self.epoch_length * self.world_size
        padded = np.resize(order, total)  # wraps around, like DistributedSampler's padding
        shard = padded[self.rank :: self.world_size]
        self._cached = (epoch, shard)
        return shard

    def batch_seed(self, step: int) -> int:
        """The seed shared by every item of update `step`, on every rank."""
        return mix_seed(self.seed, _BATCH_STREAM, step)

    def batch(self, step: int) -> list[tuple[int, int, int]]:
        """The `(index, item_seed, batch_seed)` triples of update `step`."""
        batch_seed = self.batch_seed(step)
        out = []
        for k in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, pos = divmod(k, self.epoch_length)
            index = int(self.shard(epoch)[pos])
            out.append((index, mix_seed(self.seed, epoch, index), batch_seed))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for step in range(self.start_step, self.stop_step):
            yield self.batch(step)

    def __len__(self) -> int:
        return self.stop_step - self.start_step
