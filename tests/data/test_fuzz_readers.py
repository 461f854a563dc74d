"""Fuzzing the data readers (hypothesis): IDX, .npy / .npz, CSV and image folders.

Whatever bytes a file holds, a reader gives data or a DataError whose one-line message
names the file, never another exception. Inputs are random bytes and valid files broken
on purpose: truncated, bit-flipped, overwritten, with a wrong magic number or an absurd
header size. Example counts are bounded so that the module runs in seconds."""

from __future__ import annotations

import gzip
import io
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import check_reads_or_names_file, corrupted
from vaekit.config import DataConfig
from vaekit.data.arrays import read_arrays
from vaekit.data.folder import read_folder
from vaekit.data.idx import read_idx, write_idx
from vaekit.data.tables import read_raw

FUZZ = settings(max_examples=100, deadline=None)


def in_tmp(name: str, read: Callable[[Path], object], data: bytes) -> None:
    """check_reads_or_names_file on TMP/`name` in a fresh temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        check_reads_or_names_file(read, Path(tmp) / name, data)


# --- IDX ------------------------------------------------------------------------------------
def idx_file(array: np.ndarray, compress: bool) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a-idx3-ubyte"
        write_idx(path, array, compress=compress)
        return path.read_bytes()


VALID_IDX = [
    idx_file(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4), False),
    idx_file(np.arange(5, dtype=np.uint8), False),
    idx_file(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4), True),
]


@st.composite
def idx_headers(draw) -> bytes:
    """An IDX header with any type code, dimension count and sizes, then a short payload."""
    magic = draw(st.sampled_from([b"\x00\x00", b"\x00\x01", b"\xff\xff"]))
    type_code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]))
    dims = draw(st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=6))
    ndim = draw(st.one_of(st.just(len(dims)), st.integers(0, 255)))
    header = magic + bytes([type_code, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + draw(st.binary(max_size=32))


IDX_INPUTS = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(VALID_IDX).flatmap(corrupted),
    idx_headers(),
    idx_headers().map(lambda raw: gzip.compress(raw, mtime=0)),
)


@FUZZ
@given(data=IDX_INPUTS)
@example(data=b"\x00\x00\x08\x03" + bytes(8) + b"\xff\xff\xff\xff")  # 0 x 0 x 2^32-1
def test_idx_reader_gives_an_array_or_names_the_file(data: bytes):
    in_tmp("x-idx3-ubyte", read_idx, data)


# --- .npy / .npz ----------------------------------------------------------------------------
def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_bytes(compressed: bool = False, **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


GREY = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
VALID_NPY = [npy_bytes(GREY), npy_bytes(np.linspace(0, 1, 12).reshape(4, 3))]
VALID_NPZ = [
    npz_bytes(x=GREY, y=np.array([0, 1, 1])),
    npz_bytes(True, x=GREY, ids=np.array(["a", "b", "c"])),
    npz_bytes(x_train=GREY, x_test=GREY[:1], y_train=np.arange(3), y_test=np.arange(1)),
]


@st.composite
def npy_headers(draw) -> bytes:
    """A .npy header with any dtype and shape (possibly absurd), then a short payload."""
    descr = draw(st.sampled_from(["|u1", "<f4", "<f8", "<c8", "|b1", "<U3", "|O", "|V4", "<M8"]))
    shape = tuple(draw(st.lists(st.integers(0, 2**40), max_size=5)))
    order = draw(st.booleans())
    header = f"{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}"
    header = header.ljust(((len(header) + 10) // 64 + 1) * 64 - 11) + "\n"
    version = draw(st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x09\x00"]))
    size = (
        struct.pack("<H", len(header)) if version == b"\x01\x00" else struct.pack("<I", len(header))
    )
    return b"\x93NUMPY" + version + size + header.encode("latin1") + draw(st.binary(max_size=64))


@st.composite
def npz_of_odd_arrays(draw) -> bytes:
    """A valid .npz whose arrays have odd dtypes or shapes: 0-d ids, 2-d labels, strings."""
    x = draw(
        st.sampled_from([GREY, GREY[0], np.zeros((3, 0)), np.array(["a", "b"]), np.array(1.5)])
    )
    extra = draw(
        st.dictionaries(
            st.sampled_from(["y", "ids", "labels", "x_test", "x_train", "X"]),
            st.sampled_from(
                [np.array(3), np.arange(3), np.zeros((3, 2)), np.array(["p", "q", "r"]), GREY]
            ),
            max_size=3,
        )
    )
    return npz_bytes(draw(st.booleans()), x=x, **extra)


def read_array_file(path: Path) -> object:
    return read_arrays(DataConfig(name="array", path=str(path)))


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=64),
        st.sampled_from(VALID_NPY).flatmap(corrupted),
        npy_headers(),
    )
)
@example(data=VALID_NPY[0].replace(b"4, 4)", b"4, 4("))  # numpy's tokenizer raised TokenError
def test_npy_reader_gives_examples_or_names_the_file(data: bytes):
    in_tmp("x.npy", read_array_file, data)


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=64),
        st.sampled_from(VALID_NPZ).flatmap(corrupted),
        npz_of_odd_arrays(),
    )
)
def test_npz_reader_gives_examples_or_names_the_file(data: bytes):
    in_tmp("x.npz", read_array_file, data)


# --- CSV ------------------------------------------------------------------------------------
VALID_CSV = [b"a,b,label\n1,2,x\n3.5,-4,y\n", "\ufeffa;b\n1;2\n".encode(), b"a\tb\n1\t2\n"]


def read_csv_file(path: Path) -> object:
    return read_raw(DataConfig(name="csv", path=str(path), label_column="label"), strict=False)


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=80),
        st.sampled_from(VALID_CSV).flatmap(corrupted),
        st.text(alphabet='ab1.e-,;\t\n"\r\x00 ', max_size=80).map(str.encode),
    )
)
def test_csv_reader_gives_a_table_or_names_the_file(data: bytes):
    in_tmp("t.csv", read_csv_file, data)


# --- image folders --------------------------------------------------------------------------
def image_bytes(format: str, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (4, 3), 128).save(buffer, format=format)
    return buffer.getvalue()


VALID_IMAGES = {
    ".png": image_bytes("PNG"),
    ".gif": image_bytes("GIF"),
    ".bmp": image_bytes("BMP", "RGB"),
    ".jpg": image_bytes("JPEG"),
    ".tif": image_bytes("TIFF"),
    ".webp": image_bytes("WEBP", "RGB"),
}


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header (with a correct CRC) declares `width` x `height` pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\x00" * 8)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat) - 4)
        + idat
        + struct.pack(">I", zlib.crc32(idat))
    )


@st.composite
def image_files(draw) -> tuple[str, bytes]:
    """(suffix, bytes): a valid small image broken, random bytes, or an absurd PNG header."""
    suffix = draw(st.sampled_from(sorted(VALID_IMAGES)))
    kind = draw(st.sampled_from(["corrupted", "random", "header"]))
    if kind == "corrupted":
        return suffix, draw(corrupted(VALID_IMAGES[suffix]))
    if kind == "random":
        return suffix, draw(st.binary(max_size=64))
    size = st.sampled_from([0, 1, 4, 65_535, 2**31 - 1, 2**32 - 1])  # tiny, or a bomb
    return ".png", png_declaring(draw(size), draw(size))


@settings(max_examples=60, deadline=None)
@given(image=image_files())
def test_image_folder_reader_gives_images_or_names_the_file(image: tuple[str, bytes]):
    suffix, data = image
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "good.png").write_bytes(VALID_IMAGES[".png"])
        path = Path(tmp) / f"odd{suffix}"
        check_reads_or_names_file(
            lambda _: read_folder(DataConfig(name="folder", path=tmp)), path, data
        )
