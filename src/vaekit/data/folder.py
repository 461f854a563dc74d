"""Your own data, part 2: a folder of images (PNG, JPEG, BMP, GIF, TIFF, WebP).

Layouts (`--data FOLDER`):
  FOLDER/*.png                          no labels
  FOLDER/<class>/**/*.png               the sub-folder names are the class labels
  FOLDER/train/..., FOLDER/test/...     a split of its own, each part in one of the above

Colour: `color` auto gives greyscale when every image is greyscale, else RGB (alpha is
dropped); grayscale / rgb convert every image. Size: every image must have the size of the
first, unless `resize` [height, width] resizes them all (bilinear). An image may declare
at most MAX_IMAGE_PIXELS pixels (checked from its header, before decoding). A file with an image
suffix that does not decode, or has another size, is an error naming the file; files
without an image suffix and hidden entries (".name") inside the folder are not images and
are left out (the folder's own path may pass through hidden folders, as ~/.cache does).

Decoding runs in worker processes from PARALLEL_FROM images; large folders (data.cache,
data/cache.py) are decoded once into a memory-mapped file and read from there.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vaekit.config.schema import DataConfig
from vaekit.core.errors import ConfigError, DataError
from vaekit.core.progress import progress_bar
from vaekit.data.arrays import Items, own_data, split_order
from vaekit.data.cache import (
    ArraySink,
    SinkFactory,
    cached_array,
    check_cache_mode,
    file_record,
    ordered_map,
    row_chunks,
    wants_cache,
    worker_count,
)
from vaekit.data.limits import MAX_IMAGE_PIXELS, check_image_pixels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
COLORS = ("auto", "grayscale", "rgb")
SPLIT_FOLDERS = ("test", "train")
PROGRESS_FROM = 5000  # show a progress bar when decoding at least this many images
PARALLEL_FROM = 2000  # decode in worker processes (data/cache.py) from this many images
DECODE_CHUNK = 256  # images per decoding task


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _images_under(folder: Path) -> list[Path]:
    """Image files below `folder`, leaving out hidden entries below it (not its own path's:
    a dataset under ~/.cache is read)."""
    files = (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return sorted(p for p in files if not is_hidden(p.relative_to(folder)))


def is_hidden(relative: Path) -> bool:
    """Whether a path (relative to the data folder) passes through a hidden entry."""
    return any(part.startswith(".") for part in relative.parts)


def list_images(folder: Path) -> tuple[list[Path], list[str] | None]:
    """Image files of one layout level and each one's class (None without class folders)."""
    entries = _visible(folder)
    subdirs = [p for p in entries if p.is_dir()]
    top = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if subdirs and top:
        raise DataError(
            f"{folder}: holds both images ({top[0].name}) and sub-folders ({subdirs[0].name}); "
            "put every image in a class sub-folder, or none"
        )
    if not subdirs:
        return top, None
    files, labels = [], []
    for sub in subdirs:
        found = _images_under(sub)
        files += found
        labels += [sub.name] * len(found)
    return files, labels


def read_image(path: Path, mode: str | None = None) -> Image.Image:
    """One image file decoded and converted to `mode` ("L", "RGB"; None: "L" for greyscale
    images, else "RGB"). The pixels its header declares are checked before decoding, so a
    small file declaring 30000x30000 pixels is a DataError, not gigabytes of memory."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
            with Image.open(path) as image:
                check_image_pixels(image.width, image.height, str(path))
                image.load()
                return image.convert(mode or ("L" if image.mode in GRAY_MODES else "RGB"))
    except Image.DecompressionBombError as err:  # above twice PIL's limit: refused by open
        raise DataError(f"{path}: image declares too many pixels ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{path}: not a readable image file ({err})") from None


def decode(path: Path, color: str, resize: list[int] | None) -> np.ndarray:
    """One image file -> uint8 (H, W) greyscale or (H, W, 3) RGB."""
    converted = read_image(path, {"grayscale": "L", "rgb": "RGB"}.get(color))
    if resize is not None:
        converted = converted.resize((resize[1], resize[0]), Image.BILINEAR)
    return np.asarray(converted)


class NeedsColour(Exception):
    """An RGB image among images being decoded as greyscale (colour auto): decode again."""


def size_error(
    path: Path, size: tuple[int, ...], first: Path, first_size: tuple[int, ...]
) -> DataError:
    """The DataError of an image whose size differs from the first image's."""
    (h, w), (h0, w0) = size[:2], first_size[:2]
    return DataError(
        f"{path}: image is {w}x{h} pixels, {first.name} (the first) is {w0}x{h0}; "
        "give every image one size or resize them (--resize HxW)"
    )


def decode_chunk(
    paths: list[Path],
    color: str,
    resize: list[int] | None,
    first: Path,
    size: tuple[int, int],
    channels: int,
) -> np.ndarray:
    """Images of `size` (height, width) -> uint8 (n, channels, H, W); greyscale images are
    repeated into 3 channels, an RGB one among 1-channel images raises NeedsColour."""
    rows = np.empty((len(paths), channels, *size), np.uint8)
    for row, path in zip(rows, paths):
        array = decode(path, color, resize)
        if array.shape[:2] != size:
            raise size_error(path, array.shape, first, size)
        if array.ndim == 3 and channels == 1:
            raise NeedsColour
        row[:] = array.transpose(2, 0, 1) if array.ndim == 3 else array  # grey: every channel
    return rows


def decode_files(files: list[Path], config: DataConfig, sink: SinkFactory) -> Any:
    """Decode every file, in order, into uint8 rows (N, C, H, W) written through the sink
    the factory opens (an in-memory array, or a cache file): chunks of DECODE_CHUNK images,
    in worker processes from PARALLEL_FROM images, with a progress bar from PROGRESS_FROM.
    Colour auto: 1 channel while every image is greyscale, else 3 (all decoded again)."""
    first = decode(files[0], config.color, config.resize)
    channels = 3 if first.ndim == 3 else 1
    while True:
        target = sink((len(files), channels, *first.shape[:2]), np.dtype(np.uint8))
        try:
            fill(target, files, config, first.shape[:2], channels)
        except NeedsColour:
            channels = 3
            target.abort()
            continue
        except BaseException:
            target.abort()
            raise
        return target.close()


def fill(target: Any, files: list[Path], config: DataConfig, size: tuple, channels: int) -> None:
    """Write the decoded rows of `files` into `target` in order (see decode_files)."""
    tasks = [
        (files[r.start : r.stop], config.color, config.resize, files[0], size, channels)
        for r in row_chunks(len(files), DECODE_CHUNK)
    ]
    workers = worker_count() if len(files) >= PARALLEL_FROM else 1
    with progress_bar(len(files), "decoding images", len(files) >= PROGRESS_FROM) as bar:
        for rows in ordered_map(decode_chunk, tasks, workers):
            target.write(rows)
            bar.update(len(rows))


def check_options(config: DataConfig) -> None:
    check_cache_mode(config.cache)
    if config.color not in COLORS:
        raise ConfigError(f"data.color must be one of {', '.join(COLORS)}, got {config.color!r}")
    if config.resize is not None and (len(config.resize) != 2 or min(config.resize) < 1):
        raise ConfigError(f"data.resize must be [height, width], got {config.resize}")
    if config.resize is not None and config.resize[0] * config.resize[1] > MAX_IMAGE_PIXELS:
        raise ConfigError(
            f"data.resize {config.resize[0]}x{config.resize[1]} is too large "
            f"(at most {MAX_IMAGE_PIXELS:,} pixels per image)"
        )


@own_data("folder", ("/",))
def read_folder(config: DataConfig) -> Items:
    """Every image of the folder `config.path`, labelled by class sub-folder where there are."""
    check_options(config)
    root = Path(config.path)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    subdirs = sorted(p.name for p in _visible(root) if p.is_dir())
    parts = [root / s for s in SPLIT_FOLDERS] if tuple(subdirs) == SPLIT_FOLDERS else [root]
    files, labels, test = [], [], []
    for part in parts:
        found, classes = list_images(part)
        files += found
        labels.append(classes)
        test += [part.name == "test" and part != root] * len(found)
    if not files:
        raise DataError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    if any(lab is None for lab in labels) and any(lab is not None for lab in labels):
        raise DataError(f"{root}: class sub-folders in one of train/ and test/ but not the other")
    y = classes = None
    if labels[0] is not None:
        names = [name for part in labels for name in part]
        classes = sorted(set(names))
        lookup = {name: k for k, name in enumerate(classes)}
        y = torch.tensor([lookup[name] for name in names], dtype=torch.int64)
    ids = [p.relative_to(root).as_posix() for p in files]
    mask = torch.tensor(test) if len(parts) > 1 else None
    listed = Items(torch.empty(0, dtype=torch.uint8), y, ids, classes, str(root), mask)
    first = decode(files[0], config.color, config.resize)  # (H, W) or (H, W, 3)
    if wants_cache(config.cache, len(files), first.size * len(files)):
        return cached_folder(listed, files, config)
    listed.storage = torch.from_numpy(decode_files(files, config, ArraySink))
    return listed


def cached_folder(listed: Items, files: list[Path], config: DataConfig) -> Items:
    """The folder's images from its memory-mapped cache (data/cache.py), built first when
    absent or stale; rows in split order (training examples first), so each split is a
    view of the file. `listed`: the folder's labels, ids and own split, no pixels yet."""
    root = Path(listed.source)
    order, test_mask = split_order(len(files), listed.test_mask, config, listed.source)
    own = listed.test_mask is not None
    manifest = {
        "reader": "folder",
        "color": config.color,
        "resize": config.resize,
        "split": "own" if own else [config.test_fraction, config.split_seed],
        "files": [file_record(path, root) for path in files],
    }
    ordered = [files[i] for i in order.tolist()]
    storage = cached_array(root, manifest, lambda sink: decode_files(ordered, config, sink))
    y = None if listed.y is None else listed.y[order]
    ids = [listed.ids[i] for i in order.tolist()]
    return Items(storage, y, ids, listed.classes, listed.source, test_mask)
