"""Argument types shared by the command modules: each turns bad text into a one-line error."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from vaekit.core.errors import ConfigError

# Largest sizes the command line accepts: beyond them a value is a typo or would ask the
# allocator for more than any machine has (a 20-digit seed overflows every generator).
MAX_SEED = 2**63 - 1  # torch and numpy generators take seeds up to here
MAX_LAYER = 2**16  # units of one layer: latent dimensions, hidden sizes, filters, components
MAX_IMAGES = 10_000  # images one command draws or decodes (sample -n, reconstruct -n, ...)
MAX_GRID = 100  # images per side of a manifold grid (100 x 100 = MAX_IMAGES)
MAX_STEPS = 1_000  # steps of an interpolation or a traversal row
MAX_SAMPLES = 1_000_000  # importance or posterior samples per example
MAX_SIDE = 8192  # pixels per side of a resized image (8192 x 8192 = 2**26 pixels)
MAX_THREADS = 1024


def in_range(value: int, low: int, high: int) -> int:
    """`value` if low <= value <= high, else an argparse error saying the range."""
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    if value > high:
        raise argparse.ArgumentTypeError(f"must be at most {high:,}, got {value}")
    return value


def at_most(high: int, name: str, low: int = 1):
    """An argument type: a whole number in low..high (argparse names it `name` when the
    text is not a number)."""

    def parse(text: str) -> int:
        return in_range(int(text), low, high)

    parse.__name__ = name
    return parse


seed = at_most(MAX_SEED, "seed", low=0)
layer_size = at_most(MAX_LAYER, "positive_int")
image_count = at_most(MAX_IMAGES, "positive_int")
grid_side = at_most(MAX_GRID, "positive_int")
step_count = at_most(MAX_STEPS, "positive_int")
sample_count = at_most(MAX_SAMPLES, "positive_int")
thread_count = at_most(MAX_THREADS, "non_negative_int", low=0)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def finite_float(text: str) -> float:
    """A float that is neither inf nor nan."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def open_unit_float(text: str) -> float:
    """A number strictly between 0 and 1 (a factor that shrinks something)."""
    value = finite_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


DURATION_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """A duration like 90s, 60m, 1.5h or plain seconds -> seconds (> 0)."""
    text = text.strip().lower()
    number, unit = text, "s"
    for suffix in sorted(DURATION_UNITS, key=len, reverse=True):
        if text.endswith(suffix):
            number, unit = text[: -len(suffix)], suffix
            break
    try:
        seconds = float(number) * DURATION_UNITS[unit]
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 60m or 1.5h, got {text!r}")
    return seconds


def comma_ints(
    text: str, minimum: int, malformed: str, too_small: str, maximum: int | None = None
) -> list[int]:
    """Integers like "0,3,5", each >= `minimum` (and <= `maximum` if given); otherwise the
    error `malformed`, `too_small` or "each must be at most MAXIMUM"."""
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(malformed) from None
    if not values or min(values) < minimum:
        raise argparse.ArgumentTypeError(too_small)
    if maximum is not None and max(values) > maximum:
        raise argparse.ArgumentTypeError(f"each must be at most {maximum:,}, got {text!r}")
    return values


def int_list(text: str) -> list[int]:
    """Layer sizes like 512,256, each in 1..MAX_LAYER."""
    return comma_ints(
        text,
        1,
        f"expected sizes like 512,256, got {text!r}",
        f"sizes must be positive, got {text!r}",
        MAX_LAYER,
    )


def image_size(text: str) -> list[int]:
    """HxW (or H,W) -> [height, width]."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        size = [int(part) for part in parts]
    except ValueError:
        size = []
    if len(size) != 2 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected a size like 28x28, got {text!r}")
    if max(size) > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"each side must be at most {MAX_SIDE}, got {text!r}")
    return size


def check_png(path: Path) -> None:
    if path.suffix.lower() != ".png":
        raise ConfigError(f"{path}: output must be a .png file")


def check_output(path: Path, run: Path) -> None:
    """An exploration command's PNG output: a .png that is not one of the pictures training
    wrote into the run folder (exploration writes beside them)."""
    from vaekit.apps.explore import check_beside_training

    check_png(path)
    check_beside_training(path, run)


DEVICE_HELP = "cpu (default), cuda, cuda:N"


def add_run_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run folder")


def add_device_argument(p: argparse.ArgumentParser, help: str | None = DEVICE_HELP) -> None:
    p.add_argument("--device", default="cpu", help=help)


def add_output_argument(p: argparse.ArgumentParser, help: str, **kwargs) -> None:
    """-o/--output PATH (kwargs: metavar, required)."""
    p.add_argument("-o", "--output", type=Path, help=help, **kwargs)


def add_quality_samples_argument(p: argparse.ArgumentParser, flag: str, default: str) -> None:
    p.add_argument(
        flag,
        type=positive_int,
        metavar="N",
        help=f"generated images for sample quality (default: as many as {default}, <= 10000)",
    )


def file_times(folder: Path) -> dict[Path, int]:
    """The files directly in `folder` and their modification times (ns): compared before and
    after a command, they tell which files it wrote there."""
    if not folder.is_dir():
        return {}
    return {p: p.stat().st_mtime_ns for p in sorted(folder.iterdir()) if p.is_file()}


def written_since(folder: Path, since: float) -> list[str]:
    """Names of the entries of `folder` written at `since` (time.time()) or later, sorted; a
    sub-folder ("tensorboard/") when any file in it was. One second of slack: file times
    come from a coarser clock than time.time()."""
    names = []
    for entry in sorted(folder.iterdir()):
        files = [p for p in entry.rglob("*") if p.is_file()] if entry.is_dir() else [entry]
        if any(p.stat().st_mtime >= since - 1.0 for p in files):
            names.append(f"{entry.name}/" if entry.is_dir() else entry.name)
    return names


def wrote(paths: list) -> int:
    """Print "wrote PATH, PATH" and return the command's exit status, 0."""
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


def unit_fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def unit_interval(text: str) -> float:
    """A share in [0, 1): 0 allowed (off), 1 not (nothing left)."""
    value = finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 0 and < 1, got {text}")
    return value
