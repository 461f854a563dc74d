"""In-memory datasets: one storage tensor of examples plus optional labels.

Images decoded from 8-bit pixels stay uint8 in memory (1 byte per pixel, a quarter of
float32) and become float32 in [0, 1] only where they are used: `Dataset.x` converts on
access (small call sites such as `data.test.x[:32]`), `BatchIterator` converts each batch
after slicing, so a trainer never holds a float copy of its training set. The conversion
`uint8.to(float32).div_(255.0)` is the one the loaders always used: bit-identical values.

A dataset knows its kind: "image" (examples (C, H, W)), "table" (examples (D,)) or
"sequence" (examples (L,) of token ids, see `sequences.py`), so every later stage asks the
kind rather than guessing from the shape. Token ids are stored as signed integers (int8,
int16, int32) and become int64 per batch (`as_input`); pixels are uint8, never signed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vaekit.core.errors import DataError

EXAMPLE_DIMS = {"image": 3, "table": 1, "sequence": 1}  # kind -> dimensions of one example
KIND_OF_DIMS = {4: "image", 2: "table"}  # dimensions of a stored float or uint8 batch -> kind
TOKEN_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64)  # token ids; never pixels


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Examples as float32: uint8 pixels become [0, 1] (x / 255), floats pass through."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x


def as_input(x: torch.Tensor) -> torch.Tensor:
    """Stored examples as a model takes them: token ids as int64, anything else `as_float`."""
    if x.dtype in TOKEN_DTYPES:
        return x.long()
    return as_float(x)


def kind_of(x: torch.Tensor) -> str:
    """The kind of a stored batch: (N, C, H, W) image, (N, D) table, (N, L) integer
    token ids a sequence."""
    if x.ndim == 2 and x.dtype in TOKEN_DTYPES:
        return "sequence"
    if x.ndim not in KIND_OF_DIMS:
        raise DataError(
            f"expected images (N, C, H, W) or table rows (N, D), got shape {tuple(x.shape)}"
        )
    return KIND_OF_DIMS[x.ndim]


def kind_of_shape(shape: tuple[int, ...] | list[int]) -> str:
    """The kind whose examples have `shape`: (C, H, W) image, (D,) table."""
    kinds = {dims: kind for kind, dims in EXAMPLE_DIMS.items()}
    if len(shape) not in kinds:
        raise DataError(
            f"examples shaped {tuple(shape)} are neither images (C, H, W) nor rows (D,)"
        )
    return kinds[len(shape)]


@dataclass
class Dataset:
    """`storage`: (N, C, H, W) images as uint8 (0-255) or float32 in [0, 1], (N, D)
    float32 table rows, or (N, L) token ids (int8/16/32); `x`: the same as float32 (token
    ids as int64); `y`: (N,) int64 labels or None; `kind`: "image", "table" or "sequence"
    (None: from the storage's dimensions and dtype)."""

    storage: torch.Tensor
    y: torch.Tensor | None = None
    name: str = "data"
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.kind is None:
            self.kind = kind_of(self.storage) if self.storage.ndim in KIND_OF_DIMS else None
        if self.kind not in EXAMPLE_DIMS or self.storage.ndim != EXAMPLE_DIMS[self.kind] + 1:
            raise DataError(
                f"{self.name}: expected images shaped (N, C, H, W), table rows (N, D) or "
                f"token ids (N, L), got {tuple(self.storage.shape)}"
            )
        if self.kind == "sequence" and self.storage.dtype not in TOKEN_DTYPES:
            raise DataError(
                f"{self.name}: sequences are integer token ids, got {self.storage.dtype}"
            )
        if len(self.storage) == 0:
            raise DataError(f"{self.name}: no examples")
        if self.y is not None and len(self.y) != len(self.storage):
            raise DataError(f"{self.name}: {len(self.storage)} examples but {len(self.y)} labels")

    @property
    def x(self) -> torch.Tensor:
        """Every example as float32 (converted on each access for uint8 storage: slice
        `rows`/`head` first, or iterate with BatchIterator, where the data is large)."""
        return as_input(self.storage)

    @x.setter
    def x(self, value: torch.Tensor) -> None:
        self.storage = value

    def __len__(self) -> int:
        return len(self.storage)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. (1, 28, 28) or (D,)."""
        return tuple(self.storage.shape[1:])

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
        return Dataset(self.storage[index], y, self.name, self.kind)


@dataclass
class DataSplits:
    train: Dataset
    test: Dataset
    name: str
    source: str  # where the files came from, for the run's record
    classes: list[str] | None = None
    valid: Dataset | None = None  # a validation split, where the dataset defines one
    vocabulary: list[str] | None = None  # sequences: the token of each id (sequences.py)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.train.shape

    @property
    def kind(self) -> str:
        """ "image", "table" or "sequence": what the examples are."""
        return self.train.kind


def images_from_uint8(pixels: np.ndarray, name: str) -> torch.Tensor:
    """(N, H, W) or (N, C, H, W) uint8 -> uint8 tensor (N, C, H, W), kept as 8-bit pixels
    (Dataset.x and BatchIterator turn them into float32 in [0, 1])."""
    if pixels.ndim == 3:
        pixels = pixels[:, None]
    if pixels.ndim != 4:
        raise DataError(f"{name}: expected images of 2 or 3 dimensions, got {pixels.shape[1:]}")
    if pixels.dtype != np.uint8:
        raise DataError(f"{name}: expected uint8 pixels (0-255), got {pixels.dtype}")
    if len(pixels) == 0:
        raise DataError(f"{name}: no images")
    return torch.from_numpy(np.ascontiguousarray(pixels))  # (N, C, H, W) uint8


def labels_from_array(labels: np.ndarray, count: int, name: str) -> torch.Tensor:
    if labels.ndim != 1:
        raise DataError(f"{name}: labels must be one-dimensional, got shape {labels.shape}")
    if len(labels) != count:
        raise DataError(f"{name}: {len(labels)} labels for {count} images")
    return torch.from_numpy(labels.astype(np.int64))


CHANNELS = (1, 3, 4)  # greyscale, RGB, RGBA


def channels_first(pixels: np.ndarray, name: str) -> np.ndarray:
    """(N, H, W, C) images -> (N, C, H, W); 4-D images must have 1, 3 or 4 channels, first
    or last (anything else would train as that many channels and fail in the pictures)."""
    if pixels.ndim != 4 or pixels.shape[1] in CHANNELS:
        return pixels
    if pixels.shape[-1] in CHANNELS:
        return pixels.transpose(0, 3, 1, 2)
    raise DataError(
        f"{name}: images of shape {pixels.shape[1:]} have no 1, 3 or 4 channels first or last "
        "(expected (N, H, W), (N, C, H, W) or (N, H, W, C))"
    )
