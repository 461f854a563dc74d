"""vaekit's cache folder: downloaded datasets and the feature classifiers of `evaluate`."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$VAEKIT_CACHE` if set, else `~/.cache/vaekit` (created on first write, not here)."""
    configured = os.environ.get("VAEKIT_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "vaekit"
