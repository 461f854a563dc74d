"""Random draws for a training batch that do not depend on how the batch is split.

Under data parallelism each of W processes holds every W-th example of the global batch
(rank r holds rows r, r + W, r + 2W, ...). Inside `batch_shard(rank, world_size)`, a draw
for the local batch is the matching rows of one draw for the whole global batch, made from
the same random stream on every rank. So W processes see exactly the noise one process
would, their random states stay equal, and a 2-process run follows the 1-process run.
Outside the context (evaluation, sampling, single process) these are plain torch draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from vaekit.core.errors import ConfigError

_SHARD: ContextVar[tuple[int, int] | None] = ContextVar("vaekit_batch_shard", default=None)


@contextmanager
def batch_shard(rank: int, world_size: int) -> Iterator[None]:
    """Within this block, batch draws are this rank's rows of a global-batch draw."""
    token = _SHARD.set((rank, world_size) if world_size > 1 else None)
    try:
        yield
    finally:
        _SHARD.reset(token)


def _draw(sample, shape: tuple[int, ...], batch_dim: int, generator, device, dtype) -> torch.Tensor:
    shard = _SHARD.get()
    if shard is None:
        return sample(shape, generator=generator, device=device, dtype=dtype)
    rank, world_size = shard
    full = list(shape)
    full[batch_dim] *= world_size
    drawn = sample(full, generator=generator, device=device, dtype=dtype)
    index = torch.arange(rank, full[batch_dim], world_size, device=device)
    return drawn.index_select(batch_dim, index)


def _batch_sampler(sample, name: str, what: str):
    """A draw of `sample` (torch.randn, torch.rand) for a batch: see `_draw`."""

    def draw(
        shape: tuple[int, ...],
        batch_dim: int = 0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        return _draw(sample, tuple(shape), batch_dim, generator, device, dtype)

    draw.__name__ = draw.__qualname__ = name
    draw.__doc__ = f"{what} draws of `shape`, whose dimension `batch_dim` indexes examples."
    return draw


randn_batch = _batch_sampler(torch.randn, "randn_batch", "Standard normal")
rand_batch = _batch_sampler(torch.rand, "rand_batch", "Uniform [0, 1)")


def perturb(x: torch.Tensor, rate: float) -> torch.Tensor:
    """x with each value replaced, with probability `rate`, by a uniformly drawn 8-bit level
    k / 255 (the input perturbation of Ren et al. 2019, for a background model)."""
    replace = rand_batch(x.shape, device=x.device, dtype=x.dtype) < rate
    levels = rand_batch(x.shape, device=x.device, dtype=x.dtype).mul_(256).floor_().div_(255)
    return torch.where(replace, levels, x)


def binarize(x: torch.Tensor) -> torch.Tensor:
    """Dynamic binarisation: pixel = 1 with probability equal to its intensity."""
    return (rand_batch(x.shape, device=x.device, dtype=x.dtype) < x).to(x.dtype)


KINDS = ("gaussian", "saltpepper")


@dataclass(frozen=True)
class Noise:
    kind: str
    level: float

    def __str__(self) -> str:
        return f"{self.kind}:{self.level:g}"


def parse_noise(spec: str) -> Noise:
    """'gaussian:0.3' or 'saltpepper:0.1' -> Noise (ConfigError naming the problem)."""
    kind, _, level = spec.partition(":")
    try:
        value = float(level)
    except ValueError:
        value = math.nan
    if kind not in KINDS or not math.isfinite(value) or value < 0:
        raise ConfigError(f"noise {spec!r}: expected gaussian:SIGMA or saltpepper:FRACTION")
    if kind == "saltpepper" and value > 1:
        raise ConfigError(f"noise {spec!r}: the salt-and-pepper fraction must be <= 1")
    return Noise(kind, value)


def in_unit_range(x: torch.Tensor) -> bool:
    """Whether every value lies in [0, 1] (images; uint8 pixels stand for x / 255): noise is
    then clipped to that range."""
    if x.dtype == torch.uint8:
        return True
    low, high = torch.aminmax(x)
    return bool(low >= 0 and high <= 1)


def corrupt(
    x: torch.Tensor, noise: Noise, generator: torch.Generator | None = None, clip: bool = True
) -> torch.Tensor:
    """A noisy copy of x; clipped to [0, 1] when `clip` (salt-and-pepper always is)."""
    if noise.kind == "gaussian":
        noisy = x + noise.level * randn_batch(x.shape, 0, generator, x.device, x.dtype)
        return noisy.clamp(0, 1) if clip else noisy
    if not clip:
        raise ConfigError("salt-and-pepper noise needs data in [0, 1] (images)")
    u = rand_batch(x.shape, 0, generator, x.device, x.dtype)
    noisy = torch.where(u < noise.level / 2, torch.zeros_like(x), x)
    return torch.where((u >= noise.level / 2) & (u < noise.level), torch.ones_like(x), noisy)
