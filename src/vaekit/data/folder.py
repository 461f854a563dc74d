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
without an image suffix and hidden files (".name") are not images and are left out.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from vaekit.config.schema import DataConfig
from vaekit.core.errors import ConfigError, DataError
from vaekit.data.arrays import Items, own_data
from vaekit.data.limits import MAX_IMAGE_PIXELS, check_image_pixels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
COLORS = ("auto", "grayscale", "rgb")
SPLIT_FOLDERS = ("test", "train")
PROGRESS_FROM = 5000  # show a progress bar when decoding at least this many images


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _images_under(folder: Path) -> list[Path]:
    files = (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return sorted(p for p in files if not any(part.startswith(".") for part in p.parts))


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


def decode_all(files: list[Path], config: DataConfig) -> torch.Tensor:
    """Decode every file into one uint8 tensor (N, C, H, W) of 8-bit pixels, sizes checked
    (kept as uint8 in memory: Dataset.x and BatchIterator read them as x / 255)."""
    arrays = []
    bar = tqdm(
        files,
        desc="images",
        disable=len(files) < PROGRESS_FROM or not sys.stderr.isatty(),
        leave=False,
        file=sys.stderr,
    )
    for path in bar:
        array = decode(path, config.color, config.resize)
        if arrays and array.shape[:2] != arrays[0].shape[:2]:
            (h, w), (h0, w0) = array.shape[:2], arrays[0].shape[:2]
            raise DataError(
                f"{path}: image is {w}x{h} pixels, {files[0].name} (the first) is {w0}x{h0}; "
                "give every image one size or resize them (--resize HxW)"
            )
        arrays.append(array)
    if any(a.ndim == 3 for a in arrays):  # auto colour with some RGB images: all RGB
        arrays = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays]
    pixels = np.stack(arrays)
    pixels = pixels[:, None] if pixels.ndim == 3 else pixels.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(pixels))


def check_options(config: DataConfig) -> None:
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
    return Items(decode_all(files, config), y, ids, classes, str(root), mask)
