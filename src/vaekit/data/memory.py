"""Your own data straight from Python: arrays, tensors, (x, y) pairs and torch Datasets.

`vaekit.train(config, data=X)` takes X as

- a NumPy array or a torch Tensor of examples,
- a pair (X, y) of examples and labels (labels of any type; they become sorted class names),
- a `torch.utils.data.Dataset` whose items are examples or (example, label, ...) tuples,
- or `DataSplits` you built yourself.

What an example is, by the array's shape: (N, D) rows are a table (examples (D,)); (N, H, W)
are greyscale images; (N, C, H, W) or (N, H, W, C) with C in 1, 3, 4 are images. Set
`config.data.kind` to override: "table" flattens images into rows, "image" reads rows of
D = S * S values as S x S greyscale images. Values follow the array rules of
`data/arrays.py`: uint8 images stay 8-bit pixels (x / 255), floats are used as they are.

Such data has no file to read again, so training records it truthfully: `data.name` is
"memory", `data.fingerprint` a SHA-256 of the examples and labels, `data.shape` their shape,
and the splits themselves are kept in the run folder (`data.safetensors`, up to
MAX_STORED_BYTES) so that every later command reads them from there. Larger data is not
kept: later commands then say so in one line and ask for `--data PATH`.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.config.schema import DataConfig
from vaekit.core.errors import DataError
from vaekit.core.files import load_tensors, save_tensors
from vaekit.core.progress import progress_bar
from vaekit.data.arrays import Items, as_examples, as_labels, split_items
from vaekit.data.datasets import Dataset, DataSplits
from vaekit.data.registry import DATASETS, register_dataset

NAME = "memory"  # DataConfig.name of data given from Python
STORED_FILE = "data.safetensors"  # in the run folder
MAX_STORED_BYTES = 1 << 30  # data larger than this (1 GiB) is not copied into the run folder


def splits_from_memory(data: Any, config: DataConfig) -> DataSplits:
    """`data` (see the module docstring) as train/test DataSplits, split by the config's
    test_fraction and split_seed unless it is DataSplits already."""
    if isinstance(data, DataSplits):
        return data
    items = items_from_memory(data, config.kind)
    return split_items(items, config, NAME)


def items_from_memory(data: Any, kind: str | None = None) -> Items:
    """Every example of in-memory `data` (no split), as `Items`."""
    x, y = _examples_and_labels(data)
    source = f"in-memory {type(data).__name__}"
    storage = examples_as_storage(x, kind, source)
    labels, classes = (None, None) if y is None else as_labels(y, len(storage), source)
    ids = [str(i) for i in range(len(storage))]
    return Items(storage, labels, ids, classes, f"{source} {tuple(storage.shape)}")


def examples_as_storage(x: Any, kind: str | None, source: str = "in-memory data") -> torch.Tensor:
    """Examples (array or tensor) as a storage tensor of `kind` (None: by the shape rule)."""
    values = _as_numpy(x, source)
    if kind == "table" and values.ndim > 2:
        values = values.reshape(len(values), -1)
    elif kind == "image" and values.ndim == 2:
        side = math.isqrt(values.shape[1])
        if side * side != values.shape[1]:
            raise DataError(
                f"{source}: rows of {values.shape[1]} values are not square images "
                "(data.kind image needs D = S * S)"
            )
        values = values.reshape(len(values), side, side)
    elif kind not in (None, "image", "table"):
        raise DataError(f"data.kind must be image or table, got {kind!r}")
    return as_examples(values, source)


def _examples_and_labels(data: Any) -> tuple[Any, Any]:
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return data, None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    if isinstance(data, torch.utils.data.Dataset):
        return _from_torch_dataset(data)
    raise DataError(
        f"data must be an array, a tensor, an (x, y) pair, a torch Dataset or DataSplits, "
        f"not {type(data).__name__}"
    )


def _from_torch_dataset(dataset: torch.utils.data.Dataset) -> tuple[np.ndarray, Any]:
    """Read every item once (the Dataset's own Python runs per item here, never in training)."""
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise DataError("a torch Dataset for training needs a length (__len__)") from None
    if n == 0:
        raise DataError("the torch Dataset is empty")
    examples, labels = [], []
    with progress_bar(n, "reading the dataset", n > 10_000) as bar:
        for i in range(n):
            item = dataset[i]
            if isinstance(item, (tuple, list)):
                examples.append(_as_numpy(item[0], f"item {i}"))
                labels.append(_label(item[1], i) if len(item) > 1 else None)
            else:
                examples.append(_as_numpy(item, f"item {i}"))
                labels.append(None)
            bar.update(1)
    first = examples[0].shape
    for i, example in enumerate(examples):
        if example.shape != first:
            raise DataError(f"torch Dataset: item {i} has shape {example.shape}, item 0 {first}")
    has_labels = labels[0] is not None
    if any((label is not None) != has_labels for label in labels):
        raise DataError("torch Dataset: some items have labels and others not")
    return np.stack(examples), (np.array(labels) if has_labels else None)


def _label(value: Any, i: int) -> Any:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise DataError(f"torch Dataset: item {i}'s label has shape {tuple(value.shape)}")
        return value.item()
    return value


def _as_numpy(x: Any, source: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise DataError(f"{source}: not an array of numbers ({err})") from None


# --- the record kept with the run -----------------------------------------------------------
def fingerprint(splits: DataSplits) -> str:
    """SHA-256 (first 16 hex digits) of every split's examples and labels, in order."""
    digest = hashlib.sha256()
    for part in (splits.train, splits.valid, splits.test):
        if part is None:
            continue
        for tensor in (part.storage, part.y):
            if tensor is not None:
                digest.update(str((tensor.dtype, tuple(tensor.shape))).encode())
                digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def stored_bytes(splits: DataSplits) -> int:
    parts = [p for p in (splits.train, splits.valid, splits.test) if p is not None]
    return sum(
        t.numel() * t.element_size() for p in parts for t in (p.storage, p.y) if t is not None
    )


def store_splits(splits: DataSplits, path: Path, digest: str) -> bool:
    """Keep the splits in `path` (safetensors, atomic) if they are at most MAX_STORED_BYTES;
    whether they were kept."""
    if stored_bytes(splits) > MAX_STORED_BYTES:
        return False
    tensors: dict[str, torch.Tensor] = {}
    for split in ("train", "valid", "test"):
        part = getattr(splits, split)
        if part is None:
            continue
        tensors[f"{split}.x"] = part.storage.contiguous()
        if part.y is not None:
            tensors[f"{split}.y"] = part.y.contiguous()
    meta = {
        "kind": "data",
        "data_kind": splits.kind,
        "classes": splits.classes,
        "source": splits.source,
        "fingerprint": digest,
    }
    save_tensors(path, tensors, meta)
    return True


@register_dataset(NAME)
def load_stored(config: DataConfig) -> DataSplits:
    """The splits a run trained from Python kept in its folder (`data.safetensors`)."""
    what = f"{config.shape} examples, fingerprint {config.fingerprint}"
    if not config.path or not Path(config.path).exists():
        raise DataError(
            f"this run was trained on data given from Python ({what}), not kept with the run: "
            "pass the data again (--data PATH, or data= in Python)"
        )
    tensors, meta = load_tensors(Path(config.path), "data")
    if meta.get("kind") != "data" or "train.x" not in tensors or "test.x" not in tensors:
        raise DataError(f"{config.path}: not a vaekit data file")
    kind, classes = meta.get("data_kind"), meta.get("classes")

    def part(split: str) -> Dataset | None:
        if f"{split}.x" not in tensors:
            return None
        return Dataset(tensors[f"{split}.x"], tensors.get(f"{split}.y"), f"{NAME}/{split}", kind)

    splits = DataSplits(part("train"), part("test"), NAME, config.path, classes, part("valid"))
    if config.fingerprint and fingerprint(splits) != config.fingerprint:
        raise DataError(f"{config.path}: the data changed since training (fingerprint differs)")
    return splits


def is_registered(name: str) -> bool:
    """Whether `name` is a dataset vaekit can load again from the config alone."""
    return name in DATASETS and name != NAME
