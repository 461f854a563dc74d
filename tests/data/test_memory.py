"""Data given from Python: the kind rule, its override, torch Datasets, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaekit.config.schema import DataConfig
from vaekit.core.errors import DataError
from vaekit.data.memory import fingerprint, items_from_memory, splits_from_memory


@pytest.mark.parametrize(
    ("shape", "dtype", "kind", "example"),
    [
        ((10, 5), np.float32, "table", (5,)),
        ((10, 6, 7), np.uint8, "image", (1, 6, 7)),
        ((10, 3, 6, 7), np.uint8, "image", (3, 6, 7)),
        ((10, 6, 7, 3), np.uint8, "image", (3, 6, 7)),  # channels last -> first
    ],
)
def test_the_kind_follows_the_shape(shape, dtype, kind, example):
    items = items_from_memory(np.zeros(shape, dtype))
    assert items.kind == kind
    assert tuple(items.storage.shape[1:]) == example
    assert items.storage.dtype == (torch.uint8 if dtype == np.uint8 else torch.float32)


def test_the_kind_can_be_overridden():
    rows = np.arange(2 * 16, dtype=np.float32).reshape(2, 16) / 32
    images = items_from_memory(rows, kind="image")
    assert tuple(images.storage.shape) == (2, 1, 4, 4)
    assert torch.equal(images.storage.flatten(1), torch.from_numpy(rows))
    table = items_from_memory(np.zeros((3, 2, 4, 4), np.float32), kind="table")
    assert tuple(table.storage.shape) == (3, 32)
    with pytest.raises(DataError, match="not square"):
        items_from_memory(np.zeros((2, 15), np.float32), kind="image")


def test_a_pair_gives_labels_and_class_names():
    x = np.random.default_rng(0).random((8, 3)).astype(np.float32)
    items = items_from_memory((x, np.array(["b", "a"] * 4)))
    assert items.classes == ["a", "b"]
    assert items.y.tolist() == [1, 0] * 4


class Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int, bad_at: int | None = None) -> None:
        self.n, self.bad_at = n, bad_at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        side = 5 if i == self.bad_at else 4
        return torch.full((1, side, 4), i / self.n), torch.tensor(i % 2)


def test_a_torch_dataset_is_read_once_into_a_tensor():
    items = items_from_memory(Pairs(6))
    assert tuple(items.storage.shape) == (6, 1, 4, 4)
    assert items.y.tolist() == [0, 1, 0, 1, 0, 1]
    assert items.storage[3].unique().item() == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (Pairs(4, bad_at=2), "item 2 has shape"),
        ("abc", "not str"),
        (np.array([[1.0, np.nan]]), "NaN or infinite"),
        (np.zeros((0, 3), np.float32), "no examples"),
        (np.zeros((2, 2, 2, 2, 2), np.float32), "2 to 4 dimensions"),
        ((np.zeros((4, 3), np.float32), np.arange(3)), "labels"),
    ],
)
def test_bad_data_is_one_line_naming_the_problem(data, message):
    with pytest.raises(DataError, match=message) as info:
        splits_from_memory(data, DataConfig())
    assert "\n" not in str(info.value)


def test_the_split_is_seeded_and_the_fingerprint_sees_every_value():
    x = np.random.default_rng(1).random((50, 4)).astype(np.float32)
    a, b = splits_from_memory(x, DataConfig()), splits_from_memory(x, DataConfig())
    assert torch.equal(a.test.storage, b.test.storage) and len(a.test) == 5
    assert fingerprint(a) == fingerprint(b)
    x[7, 2] += 1e-6
    assert fingerprint(splits_from_memory(x, DataConfig())) != fingerprint(a)
