"""Progress bars for long work: on stderr, gone when done, refreshed often on a terminal and
rarely in a log file (so a redirected log is not flooded)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress_bar(total: int, desc: str, enabled: bool = True, **options: Any) -> tqdm:
    """A tqdm bar of `total` steps (no output when not `enabled`); `options` go to tqdm."""
    return tqdm(
        total=total,
        desc=desc,
        disable=not enabled,
        leave=False,
        file=sys.stderr,
        mininterval=0.1 if sys.stderr.isatty() else 5.0,
        **options,
    )
