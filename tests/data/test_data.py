"""IDX reading and writing, corrupt-file errors, and the MNIST-style loaders."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import vaekit
from helpers import write_data_folder
from vaekit.core.errors import ConfigError, DataError
from vaekit.data.batches import BatchIterator
from vaekit.data.idx import parse_idx, read_idx, write_idx
from vaekit.data.mnist import FASHION_MNIST_DIRS


def idx_bytes(array: np.ndarray, type_code: int = 0x08, ndim: int | None = None) -> bytes:
    """An IDX file's bytes, with a header that may lie about the type or dimension count."""
    ndim = array.ndim if ndim is None else ndim
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape[:ndim])
    return bytes([0, 0, type_code, ndim]) + dims + array.tobytes()


SAMPLE = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)


# --- round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_write_read_round_trip(tmp_path: Path, name: str):
    path = tmp_path / name
    write_idx(path, SAMPLE)
    is_gzip = path.read_bytes()[:2] == b"\x1f\x8b"
    assert is_gzip == name.endswith(".gz")
    back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == SAMPLE.shape
    np.testing.assert_array_equal(back, SAMPLE)
    back[0, 0, 0] = 99  # the result is a writable copy
    assert read_idx(path)[0, 0, 0] == 0


def test_gzip_is_detected_by_content_not_name(tmp_path: Path):
    path = tmp_path / "compressed-but-no-suffix"
    write_idx(path, SAMPLE, compress=True)
    np.testing.assert_array_equal(read_idx(path), SAMPLE)


def test_big_endian_types_are_read_in_native_order():
    values = np.array([[-2, 70000], [3, -4]], dtype=">i4")
    array = parse_idx(idx_bytes(values, type_code=0x0C))
    assert array.dtype == np.int32 and array.dtype.isnative
    np.testing.assert_array_equal(array, values.astype(np.int32))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    array=arrays(np.uint8, array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6)),
    compress=st.booleans(),
)
def test_any_uint8_array_round_trips(tmp_path: Path, array: np.ndarray, compress: bool):
    path = tmp_path / "prop.idx"
    write_idx(path, array, compress=compress)
    back = read_idx(path)
    assert back.shape == array.shape and back.dtype == np.uint8
    np.testing.assert_array_equal(back, array)


# --- corrupt files --------------------------------------------------------------------------
CORRUPT = {
    "bad magic": (b"\x12\x34" + idx_bytes(SAMPLE)[2:], "magic"),
    "wrong dtype code": (idx_bytes(SAMPLE, type_code=0x07), "magic"),
    "truncated data": (idx_bytes(SAMPLE)[:-5], "truncated"),
    "trailing bytes": (idx_bytes(SAMPLE) + b"\x00", "trailing"),
    "dimension count mismatch": (idx_bytes(SAMPLE, ndim=2), "trailing"),
    "dimension count too large": (bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big"), "header"),
    "zero dimensions": (bytes([0, 0, 8, 0]), "0 dimensions"),
    "empty file": (b"", "too short"),
    "corrupt gzip": (b"\x1f\x8b\x08\x00" + b"\xff" * 40, "gzip"),
    "truncated gzip": (gzip.compress(idx_bytes(SAMPLE))[:-12], "gzip"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_files_are_rejected_naming_file_and_problem(tmp_path: Path, case: str):
    content, problem = CORRUPT[case]
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert problem in message.lower()
    assert "\n" not in message


def test_missing_file_and_folder_are_data_errors(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope.gz")
    with pytest.raises(DataError, match="folder"):
        read_idx(tmp_path)


def test_checksum_mismatch_is_rejected(tmp_path: Path):
    path = tmp_path / "x.gz"
    write_idx(path, SAMPLE)
    with pytest.raises(DataError, match="checksum"):
        read_idx(path, md5="0" * 32)


# --- MNIST-style folders --------------------------------------------------------------------
def write_mnist_folder(folder: Path, n_train: int = 6, n_test: int = 4, **override) -> Path:
    """Four small IDX files in the MNIST layout (5x5 images, 10 classes)."""
    return write_data_folder(folder, n_train, n_test, side=5, classes=10, **override)


def test_mnist_loader_reads_a_user_folder(tmp_path: Path):
    folder = write_mnist_folder(tmp_path / "mine")
    splits = vaekit.load_data(vaekit.DataConfig(name="mnist", path=str(folder), limit_test=3))
    assert splits.train.x.shape == (6, 1, 5, 5) and splits.test.x.shape == (3, 1, 5, 5)
    expected = read_idx(folder / "train-images-idx3-ubyte.gz").astype(np.float32) / 255
    np.testing.assert_array_equal(splits.train.x[:, 0].numpy(), expected)
    np.testing.assert_array_equal(
        splits.train.y.numpy(), read_idx(folder / "train-labels-idx1-ubyte.gz")
    )


@pytest.mark.parametrize(
    ("stem", "array", "problem"),
    [
        ("train-labels-idx1-ubyte", np.zeros(5, np.uint8), "5 labels for 6 images"),
        ("train-labels-idx1-ubyte", np.zeros((6, 1), np.uint8), "one-dimensional"),
        ("t10k-images-idx3-ubyte", np.zeros((4, 25), np.uint8), "dimensions"),
    ],
)
def test_mnist_loader_rejects_inconsistent_files(tmp_path: Path, stem, array, problem):
    folder = write_mnist_folder(tmp_path / "bad", **{stem: array})
    with pytest.raises(DataError, match=problem) as info:
        vaekit.load_data(vaekit.DataConfig(name="mnist", path=str(folder)))
    assert stem in str(info.value)


def test_mnist_loader_names_a_missing_file(tmp_path: Path):
    folder = write_mnist_folder(tmp_path / "partial")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        vaekit.load_data(vaekit.DataConfig(name="mnist", path=str(folder)))
    with pytest.raises(DataError, match="folder not found"):
        vaekit.load_data(vaekit.DataConfig(name="mnist", path=str(tmp_path / "absent")))


# --- the real datasets ----------------------------------------------------------------------
def check_mnist_like(splits) -> None:
    assert splits.train.x.shape == (60000, 1, 28, 28)
    assert splits.test.x.shape == (10000, 1, 28, 28)
    for part in (splits.train, splits.test):
        assert part.x.dtype.is_floating_point and str(part.x.dtype) == "torch.float32"
        assert part.x.min().item() == 0.0 and part.x.max().item() == 1.0
        assert sorted(part.y.unique().tolist()) == list(range(10))
        assert len(part.y) == len(part.x)
    assert splits.classes is not None and len(splits.classes) == 10


def test_bundled_mnist_loads(mnist):
    check_mnist_like(mnist)
    assert mnist.train.y[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first labels
    assert 0.12 < mnist.train.x.mean().item() < 0.14  # MNIST's mean intensity is 0.1307


def test_mnist_training_pixels_stay_uint8_one_byte_each(mnist):
    storage = mnist.train.storage  # (60000, 1, 28, 28)
    assert storage.dtype == torch.uint8 and storage.element_size() == 1
    assert storage.numel() * storage.element_size() == 60000 * 784  # 47,040,000 bytes
    assert mnist.kind == "image" and mnist.train.kind == mnist.test.kind == "image"


def test_batches_are_float32_equal_to_the_old_whole_set_conversion(mnist):
    part = mnist.train.head(3000)
    old = part.storage.to(torch.float32).div_(255.0)  # what the loader used to keep
    batches = BatchIterator(part.storage, part.y, 256, seed=3)
    reference = BatchIterator(old, part.y, 256, seed=3)
    for (x, y), (x_old, y_old) in zip(batches.epoch(2), reference.epoch(2), strict=True):
        assert x.dtype == torch.float32 and torch.equal(x, x_old) and torch.equal(y, y_old)
    unshuffled = torch.cat([x for x, _ in BatchIterator(part.storage, None, 700, shuffle=False)])
    assert torch.equal(unshuffled, old) and torch.equal(part.x, old)


def test_dataset_kind_follows_its_examples():
    table = vaekit.data.Dataset(torch.zeros(5, 3))
    assert table.kind == "table" and table.shape == (3,) and table.rows(slice(0, 2)).kind == "table"
    with pytest.raises(DataError, match="table rows"):
        vaekit.data.Dataset(torch.zeros(5, 3, 2))


def test_spread_sample_is_fixed_in_order_and_covers_a_sorted_file():
    n = 1000  # image i holds the value i / n, so a sample's pixels name its rows
    x = (torch.arange(n, dtype=torch.float32) / n).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()
    data = vaekit.data.Dataset(x, torch.arange(n) // 100)  # sorted by class, like some files
    sample = data.spread(200)
    rows = (sample.x[:, 0, 0, 0] * n).round().long()
    assert len(sample) == 200 and bool((rows[1:] > rows[:-1]).all())  # distinct, file order
    assert torch.equal(sample.y, data.y[rows])
    assert torch.equal(data.spread(200).x, sample.x)  # the same rows each time
    assert not torch.equal(data.spread(200, seed=1).x, sample.x)
    assert set(data.head(200).y.tolist()) == {0, 1}  # a head sees two classes...
    assert sample.y.bincount(minlength=10).min() >= 8  # ... the sample all ten
    assert data.spread(None) is data and data.spread(n) is data


def test_fashion_mnist_loads():
    if not any(folder.is_dir() for folder in FASHION_MNIST_DIRS):
        pytest.skip("Fashion-MNIST folder missing (apt-get install dataset-fashion-mnist)")
    splits = vaekit.load_data(vaekit.DataConfig(name="fashion-mnist"))
    check_mnist_like(splits)
    assert splits.classes[9] == "Ankle boot"
    assert splits.train.y[:3].tolist() == [9, 0, 0]  # Fashion-MNIST's first training labels


def test_unknown_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        vaekit.load_data(vaekit.DataConfig(name="nope"))
