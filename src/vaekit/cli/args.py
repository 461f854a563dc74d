"""Argument types shared by the command modules: each turns bad text into a one-line error."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from vaekit.core.errors import ConfigError


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


def comma_ints(text: str, minimum: int, malformed: str, too_small: str) -> list[int]:
    """Integers like "0,3,5", each >= `minimum`; otherwise the error `malformed` or `too_small`."""
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(malformed) from None
    if not values or min(values) < minimum:
        raise argparse.ArgumentTypeError(too_small)
    return values


def int_list(text: str) -> list[int]:
    return comma_ints(
        text,
        1,
        f"expected sizes like 512,256, got {text!r}",
        f"sizes must be positive, got {text!r}",
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
    return size


def check_png(path: Path) -> None:
    if path.suffix.lower() != ".png":
        raise ConfigError(f"{path}: output must be a .png file")


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


def wrote(paths: list) -> int:
    """Print "wrote PATH, PATH" and return the command's exit status, 0."""
    print(f"wrote {', '.join(map(str, paths))}")
    return 0
