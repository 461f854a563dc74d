"""Dataset registry: a loader turns a DataConfig into train/test splits held in memory."""

from __future__ import annotations

from collections.abc import Callable

from ..config import DataConfig
from ..errors import ConfigError
from .datasets import DataSplits

Loader = Callable[[DataConfig], DataSplits]
DATASETS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    def add(loader: Loader) -> Loader:
        DATASETS[name] = loader
        return loader

    return add


def load_data(config: DataConfig) -> DataSplits:
    """Load the dataset named in `config`, applying its limits."""
    if config.name not in DATASETS:
        raise ConfigError(f"unknown dataset {config.name!r} (known: {', '.join(sorted(DATASETS))})")
    splits = DATASETS[config.name](config)
    splits.train = splits.train.head(config.limit_train)
    splits.test = splits.test.head(config.limit_test)
    return splits
