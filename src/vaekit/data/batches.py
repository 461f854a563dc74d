"""Mini-batches sliced from in-memory tensors: no per-example Python, no worker processes.

The order of epoch e is a permutation drawn from a generator seeded by (seed, e), so it
does not depend on how many epochs ran before: a resumed run sees the same batches.
With `world_size` > 1 each rank takes a disjoint shard of every epoch's permutation
(padded to a multiple of world_size, as torch's DistributedSampler does).

`x` may be uint8 pixels (a Dataset's storage): each batch is sliced first and then
converted to float32 in [0, 1] where it lies (on the device when x is there), so the
whole set is never held as float32; token ids (int8/16/32) become int64 the same way.
`x` may also be a memory-mapped cache (data/cache.py), whose pages are dropped from the
process whenever it holds more than RELEASE_BYTES of them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from vaekit.data.cache import keep_resident_below
from vaekit.data.datasets import as_input


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


class BatchIterator:
    """Iterate (x, y) batches of a dataset held as tensors; x batches are float32 (token
    ids: int64)."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.seed, self.shuffle = seed, shuffle
        self.rank, self.world_size = rank, world_size

    def _indices(self, epoch: int) -> torch.Tensor | None:
        n = len(self.x)
        if not self.shuffle and self.world_size == 1:
            return None  # contiguous slices, no gather needed
        order = epoch_permutation(n, self.seed, epoch) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            padded = -(-n // self.world_size) * self.world_size
            order = torch.cat([order, order[: padded - n]])[self.rank :: self.world_size]
        return order

    def __len__(self) -> int:
        n = -(-len(self.x) // self.world_size)
        return -(-n // self.batch_size)

    def epoch(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        """Yield (x_batch, y_batch or None), skipping the first `start_step` batches."""
        order = self._indices(epoch)
        n = len(self.x) if order is None else len(order)
        for start in range(start_step * self.batch_size, n, self.batch_size):
            if order is None:
                x = self.x[start : start + self.batch_size]
                y = None if self.y is None else self.y[start : start + self.batch_size]
            else:
                idx = order[start : start + self.batch_size]
                x = self.x.index_select(0, idx)
                y = None if self.y is None else self.y.index_select(0, idx)
            batch = as_input(x)  # uint8 (B, ...) -> float32, token ids -> int64, after slicing
            keep_resident_below(self.x)  # a memory-mapped cache: resident memory stays flat
            yield batch, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        return self.epoch(0)
