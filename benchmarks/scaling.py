"""Data-parallel scaling: training images/s with 1 and N processes launched by torchrun.

Each measurement is a real `torchrun --standalone --nproc_per_node N -m vaekit train` of the
reference config on built-in MNIST; images/s = training images seen / training seconds
(from the run's metrics, so start-up and evaluation are excluded). Process counts are
interleaved (1 N, N 1, ...) and the median per count is reported. GPU rows are measured
only when CUDA is present; otherwise they are printed as "not measured".

    python benchmarks/scaling.py                  # CPU: 1 and 2 processes, 3 rounds
    python benchmarks/scaling.py --procs 1,2,4 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def measure(nproc: int, device: str, epochs: int, threads: int) -> float:
    """Training images/s of one torchrun job."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "vaekit", "train", "--epochs", str(epochs),
            "--device", device, "--out", f"{tmp}/run", "--quiet",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(command, check=True, env=env, capture_output=True, timeout=3600)
        rows = [json.loads(x) for x in Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines()]
    images = 60_000 * len(rows)
    return images / rows[-1]["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", default="1,2", help="process counts, e.g. 1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    procs = [int(p) for p in args.procs.split(",")]
    cores = os.cpu_count() or 1

    print(f"torch {torch.__version__}, {cores} CPU cores; reference config, MNIST")
    rates: dict[int, list[float]] = {p: [] for p in procs}
    for round_ in range(args.rounds):
        order = procs if round_ % 2 == 0 else procs[::-1]
        for nproc in order:
            threads = max(1, cores // nproc)  # the cores are shared among the processes
            rates[nproc].append(measure(nproc, "cpu", args.epochs, threads))
            print(
                f"round {round_ + 1}: cpu x{nproc} ({threads} threads each) {rates[nproc][-1]:,.0f} img/s"
            )
    base = statistics.median(rates[procs[0]])
    print("\n| device | processes | images/s (median) | vs first row |\n|---|---|---|---|")
    for nproc in procs:
        rate = statistics.median(rates[nproc])
        print(f"| cpu | {nproc} | {rate:,.0f} | {rate / base:.2f}x |")
    if torch.cuda.is_available():
        for nproc in sorted({1, torch.cuda.device_count()}):
            rate = measure(nproc, "cuda", args.epochs, 1)
            print(f"| {torch.cuda.get_device_name(0)} | {nproc} | {rate:,.0f} | |")
    else:
        print("| GPU | - | not measured (no CUDA device) | |")


if __name__ == "__main__":
    main()
