"""What machine a benchmark ran on (standard library only: the MOSES scripts, which run in
their own environment without vaekit, import it too as a sibling module)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The processor's model name as /proc/cpuinfo gives it (or platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
