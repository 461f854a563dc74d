"""Datasets: loaders for built-in and user data, all yielding in-memory tensors."""

from . import arrays, binarized_mnist, folder, mnist, sequences, tables  # noqa: F401  (registers)
from .batches import BatchIterator
from .datasets import Dataset, DataSplits
from .registry import DATASETS, load_data, register_dataset

__all__ = ["DATASETS", "BatchIterator", "DataSplits", "Dataset", "load_data", "register_dataset"]
