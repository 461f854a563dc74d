"""Pieces the benchmark scripts share (they import it as a sibling module)."""

from __future__ import annotations

import time
from pathlib import Path

import vaekit


def train_once(config: vaekit.RunConfig, path: Path, progress: bool, callbacks=()) -> None:
    """Train `config` into the run folder `path` unless a finished run is there; a stopped
    run (a checkpoint but no final weights) is resumed, so a benchmark survives restarts."""
    if (path / "model.safetensors").exists():
        return
    started = time.perf_counter()
    resume = path if (path / "checkpoint.safetensors").exists() else None
    vaekit.train(
        None if resume else config, path, resume=resume, progress=progress,
        callbacks=list(callbacks),
    )  # fmt: skip
    print(f"{path.name}: trained in {time.perf_counter() - started:.0f} s wall", flush=True)
