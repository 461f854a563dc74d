"""Your own data, part 1: `.npy` / `.npz` arrays, and what every own-data loader shares.

An own-data reader turns `DataConfig.path` into `Items`: every example of the file or
folder (x, labels or None, one id per example) and, where the data has a split of its own,
which examples are the test split. `split_items` makes the DataSplits that training uses;
a dataset with no split of its own gets a seeded random one (`test_fraction`, `split_seed`
in the config). The applications (anomaly, denoise, encode) read a whole file with
`read_items`, so every row of new data is scored.

Arrays: `.npy` holds the examples; `.npz` holds them under `x` (or `X`, `data`, `images`,
or its only array), labels under `y` (or `labels`, `targets`), ids under `ids`, or a split
of its own as `x_train` / `x_test` (+ `y_train` / `y_test`). Shapes: (N, D) vectors,
(N, H, W) greyscale images, (N, C, H, W) or (N, H, W, C) with C in 1, 3, 4. (N, D) vectors
are a table (kind "table", examples (D,)); the rest are images (kind "image"). uint8 images
stay uint8 in memory (read as x / 255); uint8 vectors are divided by 255; floats are used as
they are (in [0, 1] for the Bernoulli likelihood).
"""

from __future__ import annotations

import tokenize
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from vaekit.config.schema import DataConfig
from vaekit.core.errors import DataError
from vaekit.data.cache import (
    SinkFactory,
    cached_array,
    check_cache_mode,
    chunk_rows,
    file_record,
    row_chunks,
    wants_cache,
)
from vaekit.data.datasets import Dataset, DataSplits, as_input, channels_first, kind_of
from vaekit.data.limits import check_fits_memory, declared_bytes
from vaekit.data.registry import dataset_for_path, register_dataset


@dataclass
class Items:
    """Every example of a user's data: storage (N, C, H, W) images (uint8 or float32) or
    (N, D) float table rows, `x` the same as float32; labels, ids, own split."""

    storage: torch.Tensor
    y: torch.Tensor | None
    ids: list[str]
    classes: list[str] | None
    source: str
    test_mask: torch.Tensor | None = None  # bool (N,): the data's own test split, if any
    vocabulary: list[str] | None = None  # sequences: the token of each id

    @property
    def x(self) -> torch.Tensor:
        """Every example as float32 (uint8 pixels read as x / 255; token ids as int64)."""
        return as_input(self.storage)

    @x.setter
    def x(self, value: torch.Tensor) -> None:
        self.storage = value

    @property
    def kind(self) -> str:
        """ "image" (examples (C, H, W)), "table" (examples (D,)) or "sequence" (token ids)."""
        return kind_of(self.storage)

    def subset(self, index: torch.Tensor) -> Items:
        """The examples at `index` (in that order), without a split of their own; a run of
        consecutive rows is a view of the storage, not a copy (memory-mapped data)."""
        rows = as_slice(index)
        y = None if self.y is None else self.y[rows]
        ids = [self.ids[i] for i in index.tolist()]
        return Items(self.storage[rows], y, ids, self.classes, self.source, None, self.vocabulary)

    def label_names(self) -> list[str] | None:
        """Each example's label as text (its class name where there are names)."""
        if self.y is None:
            return None
        names = self.classes
        return [names[k] if names else str(k) for k in self.y.tolist()]

    def dataset(self, name: str) -> Dataset:
        return Dataset(self.storage, self.y, name, self.kind)


def as_slice(index: torch.Tensor) -> slice | torch.Tensor:
    """`index` as a slice where it is a run of consecutive rows (indexing by a slice is a
    view), else unchanged."""
    if len(index) == 0:
        return index
    start = int(index[0])
    if torch.equal(index, torch.arange(start, start + len(index))):
        return slice(start, start + len(index))
    return index


Reader = Callable[[DataConfig], Items]
UNIT_RANGE_LIKELIHOODS = ("bernoulli", "discretized-logistic")  # need data in [0, 1]
READERS: dict[str, Reader] = {}  # dataset name -> reads every example of config.path


def held_out_mask(
    n: int, own: torch.Tensor | None, config: DataConfig, source: str
) -> torch.Tensor:
    """bool (n,): the data's `own` test split, else a seeded random one (`test_fraction`,
    `split_seed`)."""
    if own is not None:
        return own
    if n < 2:
        raise DataError(f"{source}: needs at least 2 examples to split off a test set")
    n_test = min(n - 1, max(1, round(n * config.test_fraction)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.split_seed))
    test = torch.zeros(n, dtype=torch.bool)
    test[order[:n_test]] = True
    return test


def split_indices(items: Items, config: DataConfig) -> dict[str, torch.Tensor]:
    """{"train": index, "test": index}: the data's own split, else a seeded random one."""
    test = held_out_mask(len(items.storage), items.test_mask, config, items.source)
    index = torch.arange(len(test))
    return {"train": index[~test], "test": index[test]}


def split_order(
    n: int, own: torch.Tensor | None, config: DataConfig, source: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, test mask): the n examples' order with the training split first and the test
    split after it (each in file order), and the test mask of the examples in that order.
    Data stored in this order splits into two contiguous slices (the cache, data/cache.py)."""
    test = held_out_mask(n, own, config, source)
    order = torch.cat([torch.nonzero(~test).flatten(), torch.nonzero(test).flatten()])
    return order, test[order]


def split_items(items: Items, config: DataConfig, name: str) -> DataSplits:
    """Train/test DataSplits of `items` (each split keeps the file order)."""
    parts = {k: items.subset(v) for k, v in split_indices(items, config).items()}
    for split, part in parts.items():
        if len(part.storage) == 0:
            raise DataError(f"{items.source}: the {split} split is empty")
    train, test = (parts[k].dataset(f"{name}/{k}") for k in ("train", "test"))
    return DataSplits(train, test, name, items.source, items.classes, vocabulary=items.vocabulary)


def own_data(name: str, suffixes: tuple[str, ...]) -> Callable[[Reader], Reader]:
    """Register `reader` as dataset `name`: split for training, whole for the applications."""

    def add(reader: Reader) -> Reader:
        READERS[name] = reader
        register_dataset(name, suffixes)(
            lambda config: split_items(read_items(config), config, name)
        )
        return reader

    return add


def read_items(config: DataConfig) -> Items:
    """Every example of `config.path` (no split), for scoring or encoding new data."""
    if config.name not in READERS:
        raise DataError(f"dataset {config.name!r} is not a file or folder of your own")
    if not config.path:
        raise DataError(f"dataset {config.name!r} needs a path (--data PATH)")
    return READERS[config.name](config)


def items_for_path(path: str | Path, config: DataConfig) -> Items:
    """Every example of `path`, read with the options (and table statistics) of `config`."""

    return read_items(replace(config, name=dataset_for_path(path), path=str(path)))


def check_fits_likelihood(x: torch.Tensor, likelihood: str, source: str) -> None:
    """The Bernoulli and discretised logistic likelihoods need values in [0, 1]: a
    DataError otherwise."""
    if likelihood not in UNIT_RANGE_LIKELIHOODS or x.dtype == torch.uint8:  # 8-bit: x / 255
        return
    low, high = torch.aminmax(x)
    if low < 0 or high > 1:
        advice = "rescale, or use --likelihood gaussian"
        if low >= 0 and high <= 255:  # the commonest slip: 8-bit pixel values as floats
            advice = "pixel values 0-255? divide by 255, or store them as uint8"
        raise DataError(
            f"{source}: values range from {low.item():.4g} to {high.item():.4g}; the {likelihood} "
            f"likelihood needs [0, 1] ({advice})"
        )


# --- arrays -------------------------------------------------------------------------------
X_KEYS, Y_KEYS = ("x", "X", "data", "images"), ("y", "labels", "targets")


def check_finite(values: np.ndarray, source: str, rows: np.ndarray | None = None) -> None:
    """DataError naming the first NaN or infinite value's position (`rows`: the file's row
    number of each row of `values`, where they are a selection)."""
    bad = ~np.isfinite(values)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        value = values[where]
        index = list(where) if rows is None else [int(rows[where[0]]), *where[1:]]
        raise DataError(f"{source}: value {value} at index {index} (NaN or infinite)")


def as_examples(values: np.ndarray, source: str, rows: np.ndarray | None = None) -> torch.Tensor:
    """An array of examples -> (N, D) float32 table rows, or (N, C, H, W) images (uint8
    pixels kept as uint8, anything else float32); `rows` as for check_finite."""
    if np.iscomplexobj(values):
        raise DataError(f"{source}: complex numbers ({values.dtype}); vaekit reads real values")
    if values.dtype == object or not (
        np.issubdtype(values.dtype, np.number) or values.dtype == bool
    ):
        raise DataError(f"{source}: expected numbers, got an array of {values.dtype}")
    if np.issubdtype(values.dtype, np.floating):
        check_finite(values, source, rows)  # before reshaping: the index is the file's
    if values.ndim == 2:  # table rows (N, D)
        if values.dtype == np.uint8:
            return torch.from_numpy(np.ascontiguousarray(values)).float().div_(255.0)
    elif values.ndim == 3:
        values = values[:, None]
    elif values.ndim == 4:
        values = channels_first(values, source)
    else:
        raise DataError(f"{source}: expected 2 to 4 dimensions (N, ...), got shape {values.shape}")
    if len(values) == 0:
        raise DataError(f"{source}: no examples")
    if values.size == 0:
        raise DataError(f"{source}: no features (examples of shape {values.shape[1:]})")
    if values.dtype == np.uint8:  # 8-bit pixels: stored as they are
        return torch.from_numpy(np.ascontiguousarray(values))
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def as_labels(values: np.ndarray, count: int, source: str) -> tuple[torch.Tensor, list[str]]:
    """Labels of any type -> (int64 class indices, sorted class names)."""
    if values.ndim != 1 or len(values) != count:
        raise DataError(f"{source}: expected {count} labels in one dimension, got {values.shape}")
    classes, index = np.unique(values, return_inverse=True)
    return torch.from_numpy(index.astype(np.int64)), [str(c) for c in classes]


def _load(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    try:
        check_headers(path)
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return loaded
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{path}: not a readable .npy/.npz file ({err})") from None
    except (NotImplementedError, RuntimeError) as err:  # zipfile: unknown version, encrypted
        raise DataError(f"{path}: not a readable .npy/.npz file ({err})") from None
    except (SyntaxError, tokenize.TokenError):  # numpy's parser of a garbled .npy header
        raise DataError(f"{path}: not a readable .npy/.npz file (garbled .npy header)") from None


def check_headers(path: Path) -> None:
    """Check what a .npy (or each .npy in a .npz) declares against the bytes it holds and
    against memory, from the headers alone: a header declaring 10^9 rows is a DataError
    naming the file and the shape, not an allocation of terabytes."""
    with path.open("rb") as f:
        if f.read(6) == b"\x93NUMPY":
            f.seek(0)
            total = _declared_npy(f, path.stat().st_size, str(path))
        elif zipfile.is_zipfile(f):
            with zipfile.ZipFile(f) as archive:
                total = sum(_declared_member(archive, info, path) for info in archive.infolist())
        else:
            return  # np.load says what it is not
    check_fits_memory(total, str(path), "its arrays' headers")


def _declared_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> int:
    if not info.filename.endswith(".npy"):
        return 0
    with archive.open(info) as member:
        return _declared_npy(member, info.file_size, f"{path}[{info.filename[:-4]}]")


def _declared_npy(f: BinaryIO, size: int, source: str) -> int:
    """Bytes of data the .npy header at `f` declares (DataError if `size` cannot hold them)."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else None
    shape, _, dtype = (read or np.lib.format.read_array_header_2_0)(f)
    if dtype.hasobject:
        return 0  # np.load refuses pickled objects
    nbytes = declared_bytes(shape, dtype.itemsize)
    held = size - f.tell()
    if nbytes > held:
        raise DataError(
            f"{source}: header declares shape {shape} of {dtype} ({nbytes:,} bytes), "
            f"the file holds {held:,} (truncated, or not the expected file)"
        )
    return nbytes


def _pick(arrays: dict[str, np.ndarray], keys: tuple[str, ...], suffix: str = "") -> str | None:
    return next((k + suffix for k in keys if k + suffix in arrays), None)


def _npz_items(arrays: dict[str, np.ndarray], source: str) -> Items:
    if "x_train" in arrays and "x_test" in arrays:
        parts = [_npz_items(_strip(arrays, s), f"{source}[{s}]") for s in ("_train", "_test")]
        return _concat(parts, source)
    key = _pick(arrays, X_KEYS) or (next(iter(arrays)) if len(arrays) == 1 else None)
    if key is None:
        raise DataError(
            f"{source}: no array named x, X, data or images (holds: {', '.join(arrays) or 'none'})"
        )
    x = as_examples(arrays[key], f"{source}[{key}]")  # (N, D) or (N, C, H, W)
    y = classes = None
    if (y_key := _pick(arrays, Y_KEYS)) is not None:
        y, classes = as_labels(arrays[y_key], len(x), f"{source}[{y_key}]")
    if "ids" in arrays and arrays["ids"].ndim != 1:
        raise DataError(f"{source}[ids]: expected ids in one dimension, got {arrays['ids'].shape}")
    ids = [str(i) for i in arrays["ids"]] if "ids" in arrays else [str(i) for i in range(len(x))]
    if len(ids) != len(x):
        raise DataError(f"{source}[ids]: {len(ids)} ids for {len(x)} examples")
    return Items(x, y, ids, classes, source)


def _strip(arrays: dict[str, np.ndarray], suffix: str) -> dict[str, np.ndarray]:
    return {k[: -len(suffix)]: v for k, v in arrays.items() if k.endswith(suffix)}


def _concat(parts: list[Items], source: str) -> Items:
    """Train and test parts as one Items whose test_mask marks the second part."""
    train, test = parts
    if train.storage.shape[1:] != test.storage.shape[1:]:
        raise DataError(
            f"{source}: x_train examples are {tuple(train.storage.shape[1:])}, "
            f"x_test {tuple(test.storage.shape[1:])}"
        )
    y = classes = None
    if train.y is not None and test.y is not None:
        names = train.label_names() + test.label_names()
        y, classes = as_labels(np.array(names), len(names), source)
    ids = [f"train/{i}" for i in train.ids] + [f"test/{i}" for i in test.ids]
    n_train, n_test = len(train.storage), len(test.storage)
    mask = torch.cat([torch.zeros(n_train, dtype=torch.bool), torch.ones(n_test, dtype=torch.bool)])
    same = train.storage.dtype == test.storage.dtype  # both uint8 pixels: stay uint8
    x = torch.cat([train.storage, test.storage] if same else [train.x, test.x])
    return Items(x, y, ids, classes, source, mask)


@own_data("array", (".npy", ".npz"))
def read_arrays(config: DataConfig) -> Items:
    """Every example of a .npy or .npz file (a .npz may carry labels, ids, its own split);
    a large .npy through the memory-mapped cache (data/cache.py)."""
    path = Path(config.path)
    check_cache_mode(config.cache)
    big = path.suffix.lower() == ".npy" and path.is_file()  # by size: there is no decoding
    if big and wants_cache(config.cache, 0, path.stat().st_size):
        return cached_npy(path, config)
    loaded = _load(path)
    if isinstance(loaded, dict):
        return _npz_items(loaded, str(path))
    x = as_examples(loaded, str(path))
    return Items(x, None, [str(i) for i in range(len(x))], None, str(path))


def _load_mapped(path: Path) -> np.ndarray:
    """A .npy file as a read-only memory map (its header checked against its size, not
    against memory: the data may be larger than memory)."""
    try:
        with path.open("rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise ValueError("not a .npy file")
            f.seek(0)
            _declared_npy(f, path.stat().st_size, str(path))
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, SyntaxError, tokenize.TokenError) as err:
        raise DataError(f"{path}: not a readable .npy file ({err})") from None


def cached_npy(path: Path, config: DataConfig) -> Items:
    """The examples of a .npy from its memory-mapped cache (data/cache.py), converted as
    `as_examples` converts them and stored in split order (training rows first), built
    first when absent or stale: a file larger than memory trains without being loaded."""
    values, source = _load_mapped(path), str(path)
    if values.ndim < 2 or len(values) == 0:
        return Items(as_examples(values, source), None, [], None, source)  # its DataError
    order, test_mask = split_order(len(values), None, config, source)
    sample = as_examples(values[:1], source)  # one example: the stored shape and type
    manifest = {
        "reader": "npy",
        "split": [config.test_fraction, config.split_seed],
        "files": [file_record(path, path.parent)],
    }
    step = chunk_rows(sample[0].numel() * sample.element_size())

    def fill(sink: SinkFactory) -> Path:
        target = sink((len(values), *sample.shape[1:]), sample.numpy().dtype)
        for rows in row_chunks(len(values), step):
            selected = order[rows.start : rows.stop].numpy()
            target.write(as_examples(values[selected], source, selected).numpy())
        return target.close()

    storage = cached_array(path, manifest, fill)
    return Items(storage, None, [str(i) for i in order.tolist()], None, source, test_mask)
