"""Reader for the IDX format of MNIST-like datasets (gzip-compressed or raw).

Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then one
big-endian uint32 per dimension. The payload must hold exactly prod(dims) values.

The reader streams the file (gzip or raw) and trusts nothing it has not checked: the
header's declared size must fit in memory, and it never reads more than that size plus one
byte, so a small gzip that inflates to gigabytes is a DataError, not a MemoryError.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vaekit.core.errors import DataError
from vaekit.core.files import read_file
from vaekit.data.limits import check_fits_memory, declared_bytes, shape_text

CHUNK = 1 << 24  # bytes read at a time
MAX_GZIP_RATIO = 1100  # deflate inflates at most about 1032:1
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx_bytes(path: str | Path) -> bytes:
    """The decompressed bytes of an IDX file (gzip detected by its magic bytes): header and
    payload, never more than the header declares plus one byte (too much is reported by
    `parse_idx` as trailing bytes)."""
    path = Path(path)
    return read_file(path, _read_capped, DataError, "an IDX file", "file not found")


def _read_capped(path: Path) -> bytes:
    gzipped = _gzipped(path)
    try:
        with gzip.open(path, "rb") if gzipped else path.open("rb") as stream:
            data = bytearray(_read_header(stream))
            expected = _check_plausible(path, data, gzipped)
            return _read_into(stream, data, len(data) + expected + 1)
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: corrupt gzip data ({err})") from None


def _check_plausible(path: Path, header: bytes, gzipped: bool) -> int:
    """The payload size the header declares, checked against what the file can hold and
    against memory before anything is read."""
    dims, dtype = _declared(header, path)
    expected = declared_bytes(dims, dtype.itemsize)
    size = path.stat().st_size
    if not gzipped and expected > size - len(header):
        raise DataError(
            f"{path}: truncated: header says {shape_text(dims)} ({expected} bytes of data), "
            f"file holds {size - len(header)}"
        )
    check_fits_memory(expected, str(path), f"its IDX header ({shape_text(dims)} values)")
    if gzipped and expected > MAX_GZIP_RATIO * size:
        raise DataError(
            f"{path}: IDX header declares {shape_text(dims)} values ({expected:,} bytes), "
            f"more than a gzip file of {size:,} bytes can hold (corrupt header?)"
        )
    return expected


def _read_into(stream: BinaryIO, data: bytearray, limit: int) -> bytearray:
    """Append the stream's bytes to `data` until it holds `limit` bytes or the stream ends
    (in chunks: nothing is allocated ahead of what the file really holds)."""
    while len(data) < limit:
        chunk = stream.read(min(CHUNK, limit - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def _gzipped(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _read_header(stream: BinaryIO) -> bytes:
    """The magic number and the dimensions (as many as the header says)."""
    head = stream.read(4)
    if len(head) < 4:
        return head  # parse_idx: too short
    return head + stream.read(4 * head[3])


def _declared(header: bytes, name: str | Path) -> tuple[tuple[int, ...], np.dtype]:
    """The dimensions and item type a header declares (DataError if it is malformed)."""
    if len(header) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(header)} bytes)")
    if header[0] != 0 or header[1] != 0 or header[2] not in _DTYPES:
        magic = int.from_bytes(header[:4], "big")
        raise DataError(f"{name}: bad IDX magic number 0x{magic:08x} (not an IDX file?)")
    ndim = header[3]
    if ndim < 1:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    if len(header) < 4 + 4 * ndim:
        raise DataError(f"{name}: truncated IDX header")
    dims = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return dims, np.dtype(_DTYPES[header[2]])


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array, validating magic number, dimensions and length."""
    dims, dtype = _declared(data, name)
    header_len = 4 + 4 * len(dims)
    expected = declared_bytes(dims, dtype.itemsize)
    actual = len(data) - header_len
    if actual != expected:
        state = "truncated" if actual < expected else "has trailing bytes"
        holds = actual if actual < expected else "more"  # reads stop one byte past
        raise DataError(
            f"{name}: {state}: header says {shape_text(dims)} "
            f"({expected} bytes of data), file holds {holds}"
        )
    try:
        array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    except ValueError:  # no data, but sizes beside the 0 that numpy cannot index
        raise DataError(f"{name}: IDX header sizes {shape_text(dims)} are too large") from None
    return array.astype(dtype.newbyteorder("="))  # a writable, native-order copy


def read_idx(path: str | Path, md5: str | None = None) -> np.ndarray:
    """Read an IDX file; if `md5` is given, the decompressed content must match it."""
    data = read_idx_bytes(path)
    if md5 is not None and hashlib.md5(data).hexdigest() != md5:
        raise DataError(f"{path}: checksum mismatch (file is corrupt or not the expected data)")
    return parse_idx(data, str(path))


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write a uint8 array as IDX (gzip if the name ends in .gz). Used by tests and tools."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + array.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
