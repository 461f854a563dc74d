"""Resource limits of the data readers: what a file may declare before vaekit reads it.

A file's header says how much it holds (an IDX or .npy shape, an image's width and
height). The readers check that declaration here before they allocate or decode anything,
so a small file declaring gigabytes (a decompression bomb, a corrupt or hostile header)
is a DataError naming the file instead of a MemoryError or an allocator crash.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from vaekit.core.errors import DataError

# pixels one image may declare: 64 Mpx (8192x8192), below PIL's own warning (89 Mpx)
MAX_IMAGE_PIXELS = 2**26
FALLBACK_MEMORY = 2**34  # bytes assumed where the system does not say (16 GiB)


def memory_bytes() -> int:
    """The machine's physical memory in bytes (a fixed 16 GiB where it cannot be read)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return FALLBACK_MEMORY


def shape_text(shape: Sequence[int]) -> str:
    """A shape as 'AxBxC'."""
    return "x".join(str(int(d)) for d in shape)


def declared_bytes(shape: Sequence[int], itemsize: int) -> int:
    """Bytes an array of `shape` takes (Python ints: no overflow)."""
    return math.prod(int(d) for d in shape) * itemsize


def check_fits_memory(nbytes: int, source: str, what: str) -> None:
    """DataError if `nbytes` (what `source` declares, in words `what`) exceeds memory."""
    limit = memory_bytes()
    if nbytes > limit:
        raise DataError(
            f"{source}: {what} declares {nbytes:,} bytes, more than this machine's memory "
            f"({limit:,} bytes; corrupt header or not the expected file?)"
        )


def check_image_pixels(width: int, height: int, source: str) -> None:
    """DataError if an image declares more than MAX_IMAGE_PIXELS (checked before decoding)."""
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(
            f"{source}: image declares {width}x{height} pixels, more than vaekit reads "
            f"({MAX_IMAGE_PIXELS:,} pixels per image; resize it first)"
        )
