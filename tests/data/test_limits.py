"""Resource limits and shape checks of the data readers: every oversized or ill-shaped
input is a DataError naming the file, found from its header before anything is allocated."""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import SIDE, write_data_folder
from vaekit.apps.explore import load_image_file
from vaekit.config.schema import DataConfig
from vaekit.core.errors import ConfigError, DataError
from vaekit.data import limits
from vaekit.data.arrays import check_fits_likelihood, read_arrays
from vaekit.data.folder import read_folder
from vaekit.data.idx import read_idx
from vaekit.data.mnist import load_idx_folder


# --- images: declared pixels checked before decoding -------------------------------------------
def png_declaring(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header declares width x height greyscale pixels (no real data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


@pytest.mark.parametrize("side", [30000, 9000])  # above PIL's own limit, above vaekit's
def test_folder_refuses_an_image_declaring_too_many_pixels(tmp_path: Path, side: int):
    bomb = png_declaring(tmp_path / "images" / "bomb.png", side, side)
    with pytest.raises(DataError, match="pixels") as info:
        read_folder(DataConfig(name="folder", path=str(tmp_path / "images")))
    assert str(bomb) in str(info.value)
    assert side > 20000 or f"{side}x{side}" in str(info.value)  # PIL refuses the largest


@pytest.mark.parametrize("side", [30000, 9000])
def test_image_file_declaring_too_many_pixels(tmp_path: Path, side: int):
    bomb = png_declaring(tmp_path / "bomb.png", side, side)
    with pytest.raises(DataError, match="pixels") as info:
        load_image_file(bomb, (1, 28, 28))
    assert str(bomb) in str(info.value)


def test_resize_beyond_the_pixel_cap_is_refused(tmp_path: Path):
    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    config = DataConfig(name="folder", path=str(tmp_path), resize=[100000, 100000])
    with pytest.raises(ConfigError, match=r"data\.resize .*at most"):
        read_folder(config)


# --- IDX: streamed, never more than the header declares -----------------------------------------
def idx_header(dims: tuple[int, ...], type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def gzip_of(header: bytes, zeros: int) -> bytes:
    """gzip of `header` followed by `zeros` zero bytes (compressed piecewise: small memory)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0) as f:
        f.write(header)
        chunk = bytes(1 << 20)
        for _ in range(zeros >> 20):
            f.write(chunk)
        f.write(bytes(zeros & ((1 << 20) - 1)))
    return out.getvalue()


def test_idx_gzip_that_inflates_far_beyond_its_header(tmp_path: Path):
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip_of(idx_header((10, SIDE, SIDE)), 200 << 20))  # 200 MB of zeros
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="trailing") as info:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert peak < 16 << 20, f"read {peak} bytes for a header declaring 640"


def test_idx_header_declaring_more_than_memory(tmp_path: Path):
    path = tmp_path / "huge.gz"
    path.write_bytes(gzip_of(idx_header((1 << 20, 1 << 20, 1 << 10)), 1000))
    with pytest.raises(DataError, match="memory") as info:
        read_idx(path)
    assert str(path) in str(info.value) and "1048576x1048576x1024" in str(info.value)


def test_idx_size_checked_against_the_memory_limit(tmp_path: Path, monkeypatch):
    path = tmp_path / "small.gz"
    path.write_bytes(gzip_of(idx_header((64, SIDE, SIDE)), 64 * SIDE * SIDE))
    monkeypatch.setattr(limits, "memory_bytes", lambda: 1000)
    with pytest.raises(DataError, match="memory"):
        read_idx(path)


def test_raw_idx_shorter_than_its_header_is_refused_before_reading(tmp_path: Path):
    path = tmp_path / "raw-idx"
    path.write_bytes(idx_header((1 << 30, 28, 28)) + bytes(100))
    with pytest.raises(DataError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_stream_still_reads_good_files_and_checksums(tmp_path: Path):
    values = np.arange(64 * 9, dtype=np.uint8).reshape(64, 3, 3)
    path = tmp_path / "ok.gz"
    path.write_bytes(gzip.compress(idx_header(values.shape) + values.tobytes()))
    np.testing.assert_array_equal(read_idx(path), values)
    with pytest.raises(DataError, match="checksum"):
        read_idx(path, md5="0" * 32)


def test_idx_channels_last_images_read_as_channels_first(tmp_path: Path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (64, SIDE, SIDE, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (32, SIDE, SIDE, 3), dtype=np.uint8)
    folder = write_data_folder(
        tmp_path / "rgb", **{"train-images-idx3-ubyte": train, "t10k-images-idx3-ubyte": test}
    )
    splits = load_idx_folder(folder, "rgb")
    assert splits[0].storage.shape == (64, 3, SIDE, SIDE)
    np.testing.assert_array_equal(splits[0].storage.numpy(), train.transpose(0, 3, 1, 2))


def test_idx_images_with_an_unusable_channel_count(tmp_path: Path):
    odd = np.zeros((64, SIDE, SIDE, 2), np.uint8)
    folder = write_data_folder(tmp_path / "odd", **{"train-images-idx3-ubyte": odd})
    with pytest.raises(DataError, match="channels") as info:
        load_idx_folder(folder, "odd")
    assert "train-images-idx3-ubyte.gz" in str(info.value)


# --- .npy / .npz: headers checked against the file and memory ----------------------------------
def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """The bytes of a .npy header (magic included) declaring `shape`."""
    out = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue()


def read_npy_file(path: Path):
    return read_arrays(DataConfig(name="array", path=str(path)))


def test_npy_header_declaring_a_billion_rows(tmp_path: Path):
    path = tmp_path / "x.npy"
    path.write_bytes(npy_header((10**9, 784)) + bytes(64))
    with pytest.raises(DataError, match="declares") as info:
        read_npy_file(path)
    assert str(path) in str(info.value) and "(1000000000, 784)" in str(info.value)


def test_npy_shorter_than_its_header(tmp_path: Path):
    path = tmp_path / "x.npy"
    path.write_bytes(npy_header((1000, 8)) + np.zeros((10, 8), "<f4").tobytes())
    with pytest.raises(DataError, match="truncated") as info:
        read_npy_file(path)
    assert str(path) in str(info.value) and "(1000, 8)" in str(info.value)


def test_npz_member_declaring_too_much(tmp_path: Path):
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", npy_header((10**9, 10**6)))
    with pytest.raises(DataError, match="declares") as info:
        read_npy_file(path)
    assert str(path) in str(info.value)


def test_npy_size_checked_against_the_memory_limit(tmp_path: Path, monkeypatch):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((64, 8), np.float32))
    monkeypatch.setattr(limits, "memory_bytes", lambda: 1000)
    with pytest.raises(DataError, match="memory"):
        read_npy_file(path)


def test_good_npy_and_npz_still_read(tmp_path: Path):
    np.save(tmp_path / "x.npy", np.ones((4, 3), np.float32))
    np.savez(tmp_path / "x.npz", x=np.ones((5, 2), np.float32), y=np.arange(5))
    assert read_npy_file(tmp_path / "x.npy").storage.shape == (4, 3)
    assert read_npy_file(tmp_path / "x.npz").storage.shape == (5, 2)


# --- shapes and values that do not fit ----------------------------------------------------------
def test_array_without_features(tmp_path: Path):
    np.save(tmp_path / "x.npy", np.zeros((50, 0), np.float32))
    with pytest.raises(DataError, match="no features") as info:
        read_npy_file(tmp_path / "x.npy")
    assert str(tmp_path / "x.npy") in str(info.value)


def test_complex_values_are_refused(tmp_path: Path):
    np.save(tmp_path / "x.npy", np.ones((4, 3), np.complex64))
    with pytest.raises(DataError, match="complex"):
        read_npy_file(tmp_path / "x.npy")


def test_channels_last_array_with_an_unusable_channel_count(tmp_path: Path):
    np.save(tmp_path / "x.npy", np.zeros((4, 8, 8, 5), np.uint8))
    with pytest.raises(DataError, match="channels"):
        read_npy_file(tmp_path / "x.npy")


def test_pixels_0_to_255_in_floats_named_with_the_advice():
    x = torch.tensor([[0.0, 255.0]])
    with pytest.raises(DataError, match="divide by 255") as info:
        check_fits_likelihood(x, "bernoulli", "data/x.npy")
    assert str(info.value).startswith("data/x.npy: ")
