"""Mini-batches sliced from in-memory tensors: no per-example Python, no worker processes.

The order of epoch e is a permutation drawn from a generator seeded by (seed, e), so it
does not depend on how many epochs ran before: a resumed run sees the same batches.
With `world_size` > 1 each rank takes a disjoint shard of every epoch's permutation
(padded to a multiple of world_size, as torch's DistributedSampler does).

Token sequences may come in batches of similar length (`lengths` given): each chunk of
BUCKET_CHUNK batches of the shuffled order is sorted by length and cut into batches, and
the epoch's batches are shuffled. A batch is cut after its longest sequence, so padding
costs almost nothing: random batches of 128 MOSES SMILES compute 1.30x their real tokens,
bucketed ones 1.007x (benchmarks/sequence_padding.py).

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

BUCKET_CHUNK = 64  # batches sorted by length together (length buckets)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def length_buckets(
    order: torch.Tensor, lengths: torch.Tensor, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """`order` (the epoch's example indices) as batches of similar length, in random order:
    each run of BUCKET_CHUNK * batch_size indices is sorted by length (stably) and cut."""
    batches = []
    chunk = BUCKET_CHUNK * batch_size
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[torch.sort(lengths[part], stable=True).indices]
        batches.extend(part.split(batch_size))
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


class BatchIterator:
    """Iterate (x, y) batches of a dataset held as tensors; x batches are float32 (token
    ids: int64). With `lengths` (N,) and shuffle, batches hold sequences of similar length."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        lengths: torch.Tensor | None = None,
    ) -> None:
        if lengths is not None and len(lengths) != len(x):
            raise ValueError(f"{len(lengths)} lengths for {len(x)} examples")
        self.x, self.y, self.lengths = x, y, lengths
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

    def _batches(self, epoch: int) -> list[torch.Tensor] | list[slice]:
        """The epoch's batches: index tensors, or slices when no gather is needed."""
        order = self._indices(epoch)
        if order is None:
            n = len(self.x)
            return [slice(s, s + self.batch_size) for s in range(0, n, self.batch_size)]
        if self.lengths is not None and self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 500_009)
            return length_buckets(order, self.lengths, self.batch_size, generator)
        return list(order.split(self.batch_size))

    def epoch(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        """Yield (x_batch, y_batch or None), skipping the first `start_step` batches."""
        for idx in self._batches(epoch)[start_step:]:
            if isinstance(idx, slice):
                x = self.x[idx]
                y = None if self.y is None else self.y[idx]
            else:
                x = self.x.index_select(0, idx)
                y = None if self.y is None else self.y.index_select(0, idx)
            batch = as_input(x)  # uint8 (B, ...) -> float32, token ids -> int64, after slicing
            keep_resident_below(self.x)  # a memory-mapped cache: resident memory stays flat
            yield batch, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        return self.epoch(0)
