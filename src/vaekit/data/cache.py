"""Memory-mapped cache of decoded examples, for data larger than memory.

An image folder (or a large `.npy`) is decoded once into `pixels.npy`, one (N, C, H, W)
array (uint8 for 8-bit pixels), in a folder of its own under `$VAEKIT_CACHE/examples/`
(default `~/.cache/vaekit/examples/`) named by a hash of the data's absolute path: one
cache per folder or file, rebuilt in place when anything changes. `manifest.json` beside
it records what the array was made from: every file with its size and modification time,
the decode options (colour, resize), the train/test split and the cache's format. A read
compares that record with the files as they are now and rebuilds on any difference.

Rows are stored in split order, the training split's examples first (in file order), then
the test split's, so each split is a contiguous slice of the memory map: a view, never a
copy. An in-memory run selects the same rows in the same order, so its numbers are the
same. The array is memory-mapped (copy-on-write) and wrapped by `torch.from_numpy`: pages
are read from disk when a batch needs them, and `BatchIterator` drops them from the process
again after every RELEASE_BYTES it reads (`release_pages`), so resident memory stays flat
however large the data (the system's page cache still keeps what fits).

A build writes into a temporary folder beside the final one, streaming chunks to the file
(resident memory stays at a few chunks, not the data set), and renames the folder into
place when complete: an interrupted build leaves no cache, only a temporary folder that
the next build removes. A file lock serialises concurrent builds of one cache (torchrun
ranks started together): the second process waits and then reads the first one's cache.

`data.cache`: auto (default) caches data above AUTO_MIN_EXAMPLES examples or
AUTO_MIN_BYTES decoded bytes, on always, off never.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import mmap
import os
import shutil
import tempfile
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from vaekit.core.errors import ConfigError, DataError
from vaekit.core.files import cache_dir

try:  # POSIX; elsewhere concurrent builds are not serialised
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

CACHE_FORMAT = 1  # bump when the layout or the decoding changes: older caches are rebuilt
CACHE_MODES = ("auto", "on", "off")
AUTO_MIN_EXAMPLES = 20_000  # auto: cache folders with more images than this...
AUTO_MIN_BYTES = 2**29  # ... or more decoded bytes than this (512 MiB)
PIXELS, MANIFEST = "pixels.npy", "manifest.json"
RELEASE_BYTES = 2**28  # readers of a mapped cache keep at most about this much of it resident
DONTNEED = getattr(mmap, "MADV_DONTNEED", None)  # (not on Windows)
# the memory map behind each mapped cache, by its tensors' data pointer (while in use)
MAPPED: weakref.WeakValueDictionary[int, mmap.mmap] = weakref.WeakValueDictionary()
CHUNK_BYTES = 2**25  # a streamed copy reads and writes about this much at a time (32 MiB)
MAX_WORKERS = 8  # decoding processes at most (one per CPU core up to this)


def check_cache_mode(mode: str) -> None:
    """ConfigError unless `mode` is one of CACHE_MODES."""
    if mode not in CACHE_MODES:
        raise ConfigError(f"data.cache must be one of {', '.join(CACHE_MODES)}, got {mode!r}")


def wants_cache(mode: str, count: int, nbytes: int) -> bool:
    """Whether data of `count` examples and `nbytes` decoded bytes goes through the cache."""
    check_cache_mode(mode)
    if mode != "auto":
        return mode == "on"
    return count > AUTO_MIN_EXAMPLES or nbytes > AUTO_MIN_BYTES


def cache_folder(source: Path) -> Path:
    """The cache folder of the data at `source`: `$VAEKIT_CACHE/examples/<hash of its
    absolute path>` (one cache per folder or file)."""
    key = hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:20]
    return cache_dir() / "examples" / key


def file_record(path: Path, root: Path) -> list[Any]:
    """[path relative to `root`, size in bytes, modification time in ns]: what the manifest
    compares to notice a file added, removed or changed."""
    stat = path.stat()
    return [path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns]


def worker_count() -> int:
    """Decoding processes: one per CPU core this process may use, at most MAX_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


def ordered_map(
    fn: Callable[..., np.ndarray], tasks: list[tuple], workers: int
) -> Iterator[np.ndarray]:
    """fn(*task) for each task, in order; with `workers` > 1 in a process pool that keeps at
    most 2 * workers tasks in flight, so finished chunks never pile up in memory."""
    if workers <= 1 or len(tasks) <= 1:
        yield from (fn(*task) for task in tasks)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future] = deque()
        try:
            for task in tasks:
                pending.append(pool.submit(fn, *task))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


class ArraySink:
    """Rows written in order into an in-memory array of `shape`."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.array = np.empty(shape, dtype)
        self.filled = 0

    def write(self, rows: np.ndarray) -> None:
        self.array[self.filled : self.filled + len(rows)] = rows
        self.filled += len(rows)

    def close(self) -> np.ndarray:
        return self.array

    def abort(self) -> None:
        """Give up: nothing to undo in memory."""


class NpySink:
    """Rows streamed in order into a .npy file of `shape` (nothing of it kept in memory)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)
        self.file: BinaryIO = open(path, "wb")  # noqa: SIM115 (closed in close())
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False}
        np.lib.format.write_array_header_2_0(self.file, header | {"shape": shape})
        self.filled = 0

    def write(self, rows: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(rows, self.dtype).tobytes())
        self.filled += len(rows)

    def abort(self) -> None:
        """Give up: close the file (the build's temporary folder is removed)."""
        self.file.close()

    def close(self) -> Path:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.filled != self.shape[0]:  # a bug, not a user's mistake
            raise RuntimeError(f"{self.path}: wrote {self.filled} of {self.shape[0]} rows")
        return self.path


SinkFactory = Callable[[tuple[int, ...], np.dtype], Any]  # (shape, dtype) -> a sink


def open_pixels(folder: Path, manifest: dict[str, Any]) -> torch.Tensor | None:
    """The cached array of `folder` as a tensor backed by the file, if the cache there was
    made from exactly what `manifest` describes; None if it is absent or stale."""
    try:
        stored = json.loads((folder / MANIFEST).read_text())
        tensor = map_npy(folder / PIXELS)
    except (OSError, ValueError, SyntaxError):
        return None
    if not isinstance(stored, dict):
        return None
    made_from = {k: v for k, v in stored.items() if k not in ("shape", "dtype")}
    if made_from != manifest or list(tensor.shape) != stored.get("shape"):
        return None
    return tensor


def map_npy(path: Path) -> torch.Tensor:
    """A .npy file as a tensor on its memory map (copy-on-write: a write never reaches the
    file), registered for `release_pages`; ValueError if the file is not a whole .npy."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else None
        shape, fortran, dtype = (read or np.lib.format.read_array_header_2_0)(f)
        if fortran or dtype.hasobject:
            raise ValueError(f"{path}: not a C-ordered array of numbers")
        offset = f.tell()
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    count = math.prod(shape)
    array = np.frombuffer(mapped, dtype, count=count, offset=offset).reshape(shape)
    tensor = torch.from_numpy(array)
    MAPPED[tensor.untyped_storage().data_ptr()] = mapped
    return tensor


def resident_file_bytes() -> int | None:
    """This process's resident file-backed memory (Linux: /proc/self/statm), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[2]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        return None


def keep_resident_below(x: torch.Tensor, limit: int | None = None) -> None:
    """Drop the cache's pages behind `x` once this process holds more than `limit` bytes of
    mapped files. Counting bytes read is not enough: the kernel maps whole large folios
    (up to 2 MiB) around each row a random batch touches, so a few batches of 12 KiB rows
    can make a gigabyte resident. A no-op for tensors that are not a mapped cache."""
    if x.device.type != "cpu" or x.untyped_storage().data_ptr() not in MAPPED:
        return
    limit = RELEASE_BYTES if limit is None else limit
    resident = resident_file_bytes()
    if resident is None or resident > limit:  # without /proc: drop after every batch
        release_pages(x)


def release_pages(x: torch.Tensor) -> None:
    """Drop the pages of the memory-mapped cache behind `x` (if it is one) from this
    process's resident memory: they stay in the system's page cache and come back on the
    next read, so a process's memory does not grow with the data it has read."""
    mapped = MAPPED.get(x.untyped_storage().data_ptr()) if x.device.type == "cpu" else None
    if mapped is not None and DONTNEED is not None:
        mapped.madvise(DONTNEED)


def cached_array(
    source: Path, manifest: dict[str, Any], fill: Callable[[SinkFactory], Path]
) -> torch.Tensor:
    """The examples of `source` from its cache, built first (by `fill`, which writes every
    row through a sink the factory opens) when the cache is absent or stale."""
    folder = cache_folder(source)
    manifest = {"format": CACHE_FORMAT, "source": str(Path(source).resolve()), **manifest}
    manifest = json.loads(json.dumps(manifest))  # as it reads back: tuples become lists
    with build_lock(folder):
        tensor = open_pixels(folder, manifest)
        if tensor is None:
            build(folder, manifest, fill)
            tensor = open_pixels(folder, manifest)
    if tensor is None:  # pragma: no cover (written and read back by this process)
        raise DataError(f"{folder}: the cache just written does not read back")
    return tensor


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder`'s cache (a `.lock` file beside it)."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        handle = open(folder.parent / f"{folder.name}.lock", "a")  # noqa: SIM115
    except OSError as err:
        raise cache_write_failed(folder, err) from None
    with handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build(folder: Path, manifest: dict[str, Any], fill: Callable[[SinkFactory], Path]) -> None:
    """Write the cache into a temporary folder, then rename it to `folder` (replacing a
    stale one); anything unfinished is removed, also what earlier interrupted builds left."""
    for leftover in folder.parent.glob(f".{folder.name}.*"):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError as err:
        raise cache_write_failed(folder, err) from None
    try:
        pixels = fill(lambda shape, dtype: NpySink(work / PIXELS, shape, dtype))
        array = np.load(pixels, mmap_mode="r")
        record = manifest | {"shape": list(array.shape), "dtype": str(array.dtype)}
        del array  # (unmapped: the folder is renamed next)
        (work / MANIFEST).write_text(json.dumps(record))
        if folder.exists():
            stale = folder.parent / f".{folder.name}.stale"
            os.replace(folder, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(work, folder)
    except OSError as err:
        raise cache_write_failed(folder, err) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cache_write_failed(folder: Path, err: OSError) -> DataError:
    """One line for a cache that cannot be written, saying how to move or skip it."""
    reason = err.strerror or err
    return DataError(
        f"{folder}: cannot write the data cache ({reason}); set VAEKIT_CACHE to a writable "
        "folder with room, or read into memory with --cache off"
    )


def chunk_rows(row_bytes: int) -> int:
    """Rows per chunk of a streamed copy: about CHUNK_BYTES, at least one."""
    return max(1, CHUNK_BYTES // max(1, row_bytes))


def row_chunks(count: int, size: int) -> Iterable[range]:
    """Consecutive ranges of at most `size` of range(count)."""
    return (range(start, min(start + size, count)) for start in range(0, count, size))
