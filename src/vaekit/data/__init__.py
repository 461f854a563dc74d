"""Datasets: loaders for built-in and user data, yielding tensors (in memory, or memory-mapped
from the cache of a large folder)."""

from . import (  # noqa: F401  (registers the loaders)
    arrays,
    binarized_mnist,
    folder,
    memory,
    mnist,
    sequences,
    tables,
)
from .batches import BatchIterator
from .datasets import Dataset, DataSplits
from .registry import DATASETS, load_data, register_dataset

__all__ = ["DATASETS", "BatchIterator", "DataSplits", "Dataset", "load_data", "register_dataset"]
