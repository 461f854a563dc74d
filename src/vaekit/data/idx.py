"""Reader for the IDX format of MNIST-like datasets (gzip-compressed or raw).

Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then one
big-endian uint32 per dimension. The payload must hold exactly prod(dims) values.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from vaekit.core.errors import DataError
from vaekit.core.files import read_file

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx_bytes(path: str | Path) -> bytes:
    """The decompressed bytes of an IDX file (gzip detected by its magic bytes)."""
    path = Path(path)
    raw = read_file(path, Path.read_bytes, DataError, "an IDX file", "file not found")
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: corrupt gzip data ({err})") from None
    return raw


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array, validating magic number, dimensions and length."""
    if len(data) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        magic = int.from_bytes(data[:4], "big")
        raise DataError(f"{name}: bad IDX magic number 0x{magic:08x} (not an IDX file?)")
    ndim = data[3]
    if ndim < 1:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{name}: truncated IDX header")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        state = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"{name}: {state}: header says {'x'.join(map(str, dims))} "
            f"({expected} bytes of data), file holds {actual}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
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
