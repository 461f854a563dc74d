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


def int_list(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 512,256, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


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
