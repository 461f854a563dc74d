"""Statically binarised MNIST (Salakhutdinov & Murray 2008; Larochelle & Murray 2011).

The fixed binarisation used by most VAE log-likelihood benchmarks (IWAE, NADE, ...):
50,000 train / 10,000 valid / 10,000 test images of 28x28 pixels in {0, 1}, no labels.
Files: `binarized_mnist_{train,valid,test}.amat` (ASCII, one image per line, 784 values
"0"/"1" separated by spaces), plain or gzipped. Every copy is checked against the SHA-256
of the original files, so a number computed here is the benchmark's number.

Where the files are looked for, in order: `DataConfig.path` (a user folder; nothing else
is tried), the cache (`$VAEKIT_CACHE/binarized_mnist`, default ~/.cache/vaekit), the offline
copy next to the source tree (`../shared/datasets/binarized_mnist`); if none has them, they
are downloaded into the cache from the distributor's site and verified.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

from vaekit.config.schema import DataConfig
from vaekit.core.errors import DataError
from vaekit.core.files import atomic_write_bytes, cache_dir
from vaekit.data.datasets import Dataset, DataSplits
from vaekit.data.registry import register_dataset

NAME = "binarized-mnist"
SPLITS = ("train", "valid", "test")
BASE_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
# SHA-256 of the decompressed .amat files (shared/datasets/README.md)
SHA256 = {
    "train": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "valid": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    "test": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
}
SIDE = 28
LINE_BYTES = 2 * SIDE * SIDE  # "0 1 0 ... 1\n": one digit and one separator per pixel
LOCAL_COPIES = [Path(__file__).resolve().parents[4] / "shared" / "datasets" / "binarized_mnist"]


def file_name(split: str) -> str:
    return f"binarized_mnist_{split}.amat"


def _find(folder: Path, split: str) -> Path | None:
    for candidate in (folder / file_name(split), folder / f"{file_name(split)}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _has_all(folder: Path) -> bool:
    return all(_find(folder, split) is not None for split in SPLITS)


def read_amat(path: Path, sha256: str | None = None) -> torch.Tensor:
    """One .amat(.gz) file -> float32 tensor (N, 1, 28, 28) of 0/1, checksum verified."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise DataError(f"{path}: checksum mismatch (corrupt, or not the Larochelle & Murray file)")
    return parse_amat(raw, str(path))


def parse_amat(raw: bytes, name: str) -> torch.Tensor:
    """Bytes of a binary .amat file -> float32 tensor (N, 1, 28, 28), layout validated."""
    if not raw or len(raw) % LINE_BYTES:
        raise DataError(f"{name}: {len(raw)} bytes is not a whole number of 784-pixel lines")
    table = np.frombuffer(raw, dtype=np.uint8).reshape(-1, LINE_BYTES)
    separators = table[:, 1::2]
    if (separators[:, :-1] != ord(" ")).any() or (separators[:, -1] != ord("\n")).any():
        raise DataError(f"{name}: not 784 space-separated values per line")
    digits = table[:, ::2] - ord("0")
    if (digits > 1).any():
        raise DataError(f"{name}: values other than 0 and 1")
    return torch.from_numpy(digits.astype(np.float32)).view(-1, 1, SIDE, SIDE)


def download_binarized_mnist(
    folder: Path | None = None, base_url: str = BASE_URL, progress: bool = True
) -> Path:
    """Download the three .amat files into `folder` (default: the cache), verifying each
    file's SHA-256 before it is kept. Files already present and correct are not fetched."""

    folder = Path(folder) if folder is not None else cache_dir() / "binarized_mnist"
    for split in SPLITS:
        target = folder / file_name(split)
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == SHA256[split]:
            continue
        url = base_url + file_name(split)
        if progress:
            print(f"vaekit: downloading {url}", file=sys.stderr)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                data = response.read()
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise DataError(
                f"{NAME}: download of {url} failed ({err}); put the three "
                "binarized_mnist_*.amat files in a folder and pass it with --data-path"
            ) from None
        if hashlib.sha256(data).hexdigest() != SHA256[split]:
            raise DataError(f"{url}: downloaded file fails its SHA-256 check; nothing was saved")
        atomic_write_bytes(target, data)
    return folder


def locate(config: DataConfig) -> Path:
    """The folder holding the three files: the user's, a local copy, or a fresh download."""
    if config.path:
        folder = Path(config.path)
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found")
        missing = [file_name(s) for s in SPLITS if _find(folder, s) is None]
        if missing:
            raise DataError(f"{folder}: missing {missing[0]}(.gz)")
        return folder
    for folder in [cache_dir() / "binarized_mnist", *LOCAL_COPIES]:
        if _has_all(folder):
            return folder
    return download_binarized_mnist()


def load_split(folder: Path, split: str) -> Dataset:
    """One verified split of the dataset held in `folder`."""
    path = _find(folder, split)
    if path is None:
        raise DataError(f"{folder}: missing {file_name(split)}(.gz)")
    return Dataset(read_amat(path, SHA256[split]), None, f"{NAME}/{split}")


@register_dataset(NAME)
def load_binarized_mnist(config: DataConfig) -> DataSplits:
    """Train (50k) and test (10k) splits; the 10k validation split is `splits.valid`."""
    folder = locate(config)
    train, valid, test = (load_split(folder, split) for split in SPLITS)
    return DataSplits(train, test, NAME, str(folder), valid=valid)
