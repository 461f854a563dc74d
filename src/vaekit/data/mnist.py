"""MNIST (bundled with vaekit) and Fashion-MNIST (Debian package or a user folder)."""

from __future__ import annotations

from pathlib import Path

from vaekit.config.schema import DataConfig
from vaekit.core.errors import DataError
from vaekit.data.datasets import (
    Dataset,
    DataSplits,
    channels_first,
    images_from_uint8,
    labels_from_array,
)
from vaekit.data.idx import read_idx
from vaekit.data.registry import register_dataset

BUNDLED_MNIST = Path(__file__).parent / "files" / "mnist"
FASHION_MNIST_DIRS = [Path("/usr/share/datasets/fashion-mnist")]

# md5 of the decompressed IDX content (the same for every faithful copy, gzip or not)
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.exists():
            return candidate
    raise DataError(f"{folder}: missing {stem}(.gz)")


def load_idx_folder(
    folder: Path, name: str, checksums: dict[str, str] | None = None
) -> tuple[Dataset, Dataset]:
    """Load the four MNIST-style files (train/t10k images and labels) from one folder."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    splits = []
    for prefix, split in (("train", "train"), ("t10k", "test")):
        img_stem, lbl_stem = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
        img_path, lbl_path = _find(folder, img_stem), _find(folder, lbl_stem)
        md5 = checksums or {}
        pixels = read_idx(img_path, md5.get(img_stem))
        labels = read_idx(lbl_path, md5.get(lbl_stem))
        x = images_from_uint8(channels_first(pixels, str(img_path)), str(img_path))
        y = labels_from_array(labels, len(x), str(lbl_path))
        if splits and x.shape[1:] != splits[0].storage.shape[1:]:
            raise DataError(
                f"{img_path}: images are {shape_text(x)}, the training images {shape_text(splits[0].storage)}"
            )
        splits.append(Dataset(x, y, f"{name}/{split}"))
    return splits[0], splits[1]


def shape_text(x) -> str:
    """Channels and size of a batch of images, e.g. '1x28x28'."""
    return "x".join(map(str, x.shape[1:]))


@register_dataset("mnist")
def load_mnist(config: DataConfig) -> DataSplits:
    """MNIST from the copy inside the package (or `config.path`), checksums verified."""
    folder = Path(config.path) if config.path else BUNDLED_MNIST
    train, test = load_idx_folder(folder, "mnist", MNIST_MD5 if not config.path else None)
    return DataSplits(train, test, "mnist", str(folder), [str(d) for d in range(10)])


@register_dataset("fashion-mnist")
def load_fashion_mnist(config: DataConfig) -> DataSplits:
    """Fashion-MNIST from `config.path` or the Debian package `dataset-fashion-mnist`."""
    if config.path:
        folder, checksums = Path(config.path), None
    else:
        found = [d for d in FASHION_MNIST_DIRS if d.is_dir()]
        if not found:
            raise DataError(
                "fashion-mnist: not found; install it with `apt-get install dataset-fashion-mnist` "
                "or give the folder holding its four IDX files with --data-path"
            )
        folder, checksums = found[0], FASHION_MNIST_MD5
    train, test = load_idx_folder(folder, "fashion-mnist", checksums)
    return DataSplits(train, test, "fashion-mnist", str(folder), FASHION_CLASSES)
