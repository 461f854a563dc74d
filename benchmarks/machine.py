"""What machine a benchmark ran on (standard library only: the MOSES scripts, which run in
their own environment without vaekit, import it too as a sibling module)."""

from __future__ import annotations

import datetime
import os
import platform
import sys
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


def where_measured() -> dict:
    """The command, time and machine of a result file: its first fields."""
    return {
        "command": " ".join([sys.executable, *sys.argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
