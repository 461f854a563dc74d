"""Dataset registry: a loader turns a DataConfig into train/test splits held in memory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from vaekit.config.schema import DataConfig
from vaekit.core.errors import ConfigError, DataError
from vaekit.data.datasets import Dataset, DataSplits

Loader = Callable[[DataConfig], DataSplits]
DATASETS: dict[str, Loader] = {}
SUFFIXES: dict[str, str] = {}  # file suffix (".csv"), or "/" for a folder -> dataset name


def register_dataset(name: str, suffixes: tuple[str, ...] = ()) -> Callable[[Loader], Loader]:
    """Register a loader; `suffixes` are the paths it reads when given as `--data PATH`."""

    def add(loader: Loader) -> Loader:
        DATASETS[name] = loader
        SUFFIXES.update(dict.fromkeys(suffixes, name))
        return loader

    return add


def dataset_for_path(path: str | Path) -> str:
    """The dataset that reads `path` (`--data PATH`): a folder, or by the file's suffix."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found")
    key = "/" if path.is_dir() else path.suffix.lower()
    if key not in SUFFIXES:
        known = ", ".join(sorted(s for s in SUFFIXES if s != "/"))
        raise DataError(f"{path}: unknown data format {key!r} (a folder of images, or {known})")
    return SUFFIXES[key]


def load_data(config: DataConfig) -> DataSplits:
    """Load the dataset named in `config`, applying its limits."""
    if config.name not in DATASETS:
        raise ConfigError(f"unknown dataset {config.name!r} (known: {', '.join(sorted(DATASETS))})")
    splits = DATASETS[config.name](config)
    if splits.test.shape != splits.train.shape:
        raise DataError(
            f"{splits.source}: test examples are {splits.test.shape}, "
            f"training examples {splits.train.shape}"
        )
    if config.valid_size:
        splits = hold_out_validation(splits, config.valid_size)
    splits.train = splits.train.head(config.limit_train)
    splits.test = splits.test.head(config.limit_test)
    config.kind = splits.kind  # recorded with the run: later commands know what an example is
    return splits


def hold_out_validation(splits: DataSplits, size: int) -> DataSplits:
    """Splits whose last `size` training examples became the validation split (as the
    likelihood papers hold out the last 10,000 MNIST training images)."""
    if splits.valid is not None:
        raise ConfigError(
            f"{splits.name} has a validation split of its own ({len(splits.valid)} examples): "
            "leave data.valid_size at 0"
        )
    if size >= len(splits.train):
        raise ConfigError(
            f"data.valid_size {size} leaves no training examples ({len(splits.train)} in all)"
        )
    train, cut = splits.train, len(splits.train) - size
    labels = (None, None) if train.y is None else (train.y[:cut], train.y[cut:])
    return replace(
        splits,
        train=Dataset(train.storage[:cut], labels[0], train.name, train.kind),
        valid=Dataset(train.storage[cut:], labels[1], f"{train.name} (validation)", train.kind),
    )
