"""Dataset registry: a loader turns a DataConfig into train/test splits held in memory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .datasets import DataSplits

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
    splits.train = splits.train.head(config.limit_train)
    splits.test = splits.test.head(config.limit_test)
    return splits
