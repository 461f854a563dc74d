"""Data-parallel training with torchrun on CPU (gloo): equivalence, rank-0 writing, crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

TRAIN_ARGS = [
    "train",
    "--limit-train",
    "1024",
    "--limit-test",
    "256",
    "--batch-size",
    "64",
    "--hidden",
    "64",
    "--latent-dim",
    "4",
    "--quiet",
]


def torchrun(nproc: int, args: list[str], cwd: Path, env: dict | None = None, **popen):
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    command += ["--standalone", "-m", "vaekit", *args]  # standalone: a free local port
    return subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def run_single(args: list[str], cwd: Path) -> None:
    command = [sys.executable, "-m", "vaekit", *args, "--threads", "1"]
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, timeout=300)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one_process(tmp_path: Path) -> None:
    run_single([*TRAIN_ARGS, "--epochs", "2", "--out", "single"], tmp_path)
    job = torchrun(2, [*TRAIN_ARGS, "--epochs", "2", "--out", "ddp"], tmp_path)
    output, _ = job.communicate(timeout=300)
    assert job.returncode == 0, output

    one, two = (
        load_file(tmp_path / "single/model.safetensors"),
        load_file(tmp_path / "ddp/model.safetensors"),
    )
    assert one.keys() == two.keys()
    for key in one:  # same global batches, same noise: equal up to float summation order,
        # which Adam can amplify for a few weights whose gradients are near zero
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=2e-4)
        assert (two[key] - one[key]).abs().mean() < 1e-6
    for row_one, row_two in zip(
        metrics(tmp_path / "single"), metrics(tmp_path / "ddp"), strict=True
    ):
        # the train sums are reduced over both ranks before they are recorded
        assert row_two["train_neg_elbo"] == pytest.approx(row_one["train_neg_elbo"], rel=1e-5)
        assert row_two["test_neg_elbo"] == pytest.approx(row_one["test_neg_elbo"], rel=1e-5)

    # only rank 0 wrote: one run folder, one line per epoch, a single report on stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]
    assert len(metrics(tmp_path / "ddp")) == 2
    assert output.count("test -ELBO") == 1
    assert not list((tmp_path / "ddp").glob("*.tmp*"))


def test_global_batch_must_split_evenly(tmp_path: Path) -> None:
    job = torchrun(2, [*TRAIN_ARGS, "--batch-size", "63", "--epochs", "1", "--out", "r"], tmp_path)
    output, _ = job.communicate(timeout=300)
    assert job.returncode != 0
    assert "must be divisible by the 2 processes" in output
    assert "vaekit: error: batch size 63 is the global batch" in output


def _rank_pid(tag: str, rank: int) -> int | None:
    """The pid of the torchrun worker with this test's tag and the given RANK."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"VAEKIT_TEST_TAG={tag}".encode() in environ and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


def test_crashed_rank_ends_the_job_and_the_run_resumes(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    args = [*TRAIN_ARGS, "--epochs", "50", "--checkpoint-every", "4", "--out", "run"]
    job = torchrun(2, args, tmp_path, env={"VAEKIT_TEST_TAG": tag})
    checkpoint = tmp_path / "run" / "checkpoint.safetensors"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), "training never reached its first checkpoint"
    pid = _rank_pid(tag, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    try:
        output, _ = job.communicate(timeout=120)  # must not hang
    except subprocess.TimeoutExpired:
        job.kill()
        pytest.fail("the job hung after a rank died")
    assert job.returncode != 0
    assert "exitcode" in output and "-9" in output  # torchrun names the failed rank

    # the last checkpoint is intact: the run resumes (here as one process) and finishes one
    # more epoch than the killed job recorded (on a fast machine it may record several)
    done = len(metrics(tmp_path / "run")) if (tmp_path / "run" / "metrics.jsonl").exists() else 0
    epochs = str(max(2, done + 1))
    result = subprocess.run(
        [sys.executable, "-m", "vaekit", "train", "--resume", "run", "--epochs", epochs, "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert [row["epoch"] for row in metrics(tmp_path / "run")] == list(range(1, int(epochs) + 1))
