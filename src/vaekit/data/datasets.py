"""In-memory datasets: one float tensor of images in [0, 1] plus optional labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vaekit.core.errors import DataError


@dataclass
class Dataset:
    """`x`: (N, C, H, W) float32 in [0, 1]; `y`: (N,) int64 labels or None."""

    x: torch.Tensor
    y: torch.Tensor | None = None
    name: str = "data"

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise DataError(
                f"{self.name}: expected images shaped (N, C, H, W), got {tuple(self.x.shape)}"
            )
        if len(self.x) == 0:
            raise DataError(f"{self.name}: no examples")
        if self.y is not None and len(self.y) != len(self.x):
            raise DataError(f"{self.name}: {len(self.x)} examples but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. (1, 28, 28)."""
        return tuple(self.x.shape[1:])

    def head(self, n: int | None) -> Dataset:
        """The first n examples (all if n is None)."""
        if n is None or n >= len(self):
            return self
        return self.rows(slice(0, n))

    def spread(self, n: int | None, seed: int = 0) -> Dataset:
        """n examples drawn at random with a fixed seed, kept in file order (all if n is
        None): a fair sample where the file's order is not random, as in the statically
        binarised MNIST test file, whose first 2,000 images are far easier than the rest."""
        if n is None or n >= len(self):
            return self
        generator = torch.Generator().manual_seed(seed)
        return self.rows(torch.randperm(len(self), generator=generator)[:n].sort().values)

    def rows(self, index: slice | torch.Tensor) -> Dataset:
        """The examples `index` selects (a slice or a tensor of row numbers), labels alike."""
        y = None if self.y is None else self.y[index]
        return Dataset(self.x[index], y, self.name)


@dataclass
class DataSplits:
    train: Dataset
    test: Dataset
    name: str
    source: str  # where the files came from, for the run's record
    classes: list[str] | None = None
    valid: Dataset | None = None  # a validation split, where the dataset defines one

    @property
    def shape(self) -> tuple[int, ...]:
        return self.train.shape


def images_from_uint8(pixels: np.ndarray, name: str) -> torch.Tensor:
    """(N, H, W) or (N, C, H, W) uint8 -> float32 tensor (N, C, H, W) in [0, 1]."""
    if pixels.ndim == 3:
        pixels = pixels[:, None]
    if pixels.ndim != 4:
        raise DataError(f"{name}: expected images of 2 or 3 dimensions, got {pixels.shape[1:]}")
    if pixels.dtype != np.uint8:
        raise DataError(f"{name}: expected uint8 pixels (0-255), got {pixels.dtype}")
    if len(pixels) == 0:
        raise DataError(f"{name}: no images")
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(torch.float32)
    return x.div_(255.0)


def labels_from_array(labels: np.ndarray, count: int, name: str) -> torch.Tensor:
    if labels.ndim != 1:
        raise DataError(f"{name}: labels must be one-dimensional, got shape {labels.shape}")
    if len(labels) != count:
        raise DataError(f"{name}: {len(labels)} labels for {count} images")
    return torch.from_numpy(labels.astype(np.int64))
