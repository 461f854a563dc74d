"""A model applied to a whole data set in batches: one loop that every job shares.

Data sets may be too large for one forward pass (and may be held as uint8 pixels): the
batches are sliced in order by `BatchIterator` (which converts each to float32), moved to
the model's device, and the results gathered on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vaekit.data.batches import BatchIterator
from vaekit.models.base import label_args

Batched = torch.Tensor | None | tuple[torch.Tensor | None, ...]


def wide(t: torch.Tensor) -> torch.Tensor:
    """float32, or float64 where it already is (a float64 model scores in float64)."""
    return t if t.dtype == torch.float64 else t.float()


def model_device(model: nn.Module) -> torch.device:
    """The device the model's parameters are on."""
    return next(model.parameters()).device


@torch.no_grad()
def map_batches(
    fn: Callable[[torch.Tensor, torch.Tensor | None], Batched],
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> Batched:
    """fn(x_batch, y_batch) over consecutive batches of x (and y), on `device`, concatenated
    on the CPU. fn may return a tensor or a tuple of tensors (an entry that is None in the
    first batch is None in the result: log-variances of a deterministic model)."""
    parts = []
    for xb, yb in BatchIterator(x, y, batch_size, shuffle=False):
        out = fn(xb.to(device), None if yb is None else yb.to(device))
        parts.append(out)
    if not isinstance(parts[0], tuple):
        return _cat_cpu(parts)
    return tuple(_cat_cpu(list(column)) for column in zip(*parts))


def _cat_cpu(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if parts[0] is None else torch.cat([part.cpu() for part in parts])


def _labels(model: nn.Module, y: torch.Tensor | None) -> dict:
    """The labels keyword of a conditional model; none without labels (any nn.Module with
    an `encode` method works then)."""
    return {} if y is None else label_args(model, y, y.device)


def encode_all(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Posterior means and log-variances (N, latent_dim) on the CPU, float32 (float64 for a
    float64 model); log-variances are None for deterministic models (autoencoder, PCA).
    Conditional models are given the labels y."""

    def encode(xb: torch.Tensor, yb: torch.Tensor | None):
        mean, log_var = model.encode(xb, **_labels(model, yb))
        return wide(mean), None if log_var is None else wide(log_var)

    return map_batches(encode, x, y, batch_size, model_device(model))


def reconstruct_all(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1000
) -> torch.Tensor:
    """Decoded posterior means of every example, float32, on the CPU."""

    def reconstruct(xb: torch.Tensor, yb: torch.Tensor | None) -> torch.Tensor:
        return model.reconstruct(xb, **_labels(model, yb)).float()

    return map_batches(reconstruct, x, y, batch_size, model_device(model))
