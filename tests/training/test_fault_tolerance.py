"""Faults lose nothing: kill -9 and resume, NaN losses, failed writes, gradient clipping."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

import vaekit
import vaekit.config.runs
import vaekit.core.files
from conftest import read_jsonl, tiny_config
from helpers import write_data_folder
from vaekit.cli import main
from vaekit.core.errors import TrainingDiverged
from vaekit.evaluation.metrics import evaluate_elbo
from vaekit.training.trainer import Trainer

CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "model.safetensors"


def checkpoint_state(run: Path) -> dict:
    """The trainer state recorded in a run's checkpoint (epoch, step_in_epoch, ...)."""
    with safe_open(str(run / CHECKPOINT), "pt") as f:
        return json.loads(f.metadata()["vaekit"])["state"]


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "train_seconds"} for row in rows]


def assert_good_checkpoint(run: Path, data) -> dict:
    """The run loads (from its checkpoint) and evaluates to finite numbers; returns them."""
    model = vaekit.load(run)
    result = evaluate_elbo(model, data.test, 1000)
    for key in ("neg_elbo", "recon", "kl"):
        assert torch.isfinite(torch.tensor(result[key])), (key, result)
    return result


def cli(argv: list, capsys) -> tuple[int, str]:
    """Run the CLI in-process: (exit code, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data_folder(tmp_path_factory.mktemp("data") / "tiny")


def tiny_train(data: Path, out: Path, *extra: str) -> list:
    """`vaekit train` of a tiny MLP on the tiny folder: 4 steps of 16 per epoch."""
    args = ["train", "--data-path", data, "--hidden", "8", "--latent-dim", "2"]
    return args + ["--batch-size", "16", "--epochs", "2", "--quiet", "--out", out, *extra]


# --- kill -9 in the middle of an epoch, then --resume ---------------------------------------
# 2048 examples / batch 128 = 16 steps per epoch, 48 in all; checkpoints every 5 steps.
KILL_ARGS = ["train", "--limit-train", "2048", "--limit-test", "256", "--hidden", "64"]
KILL_ARGS += ["--latent-dim", "4", "--checkpoint-every", "5", "--epochs", "3", "--seed", "3"]
KILL_ARGS += ["--threads", "1", "--quiet"]
# `python -m vaekit` with every training step slowed by 50 ms (sleeping changes no number),
# so that the kill reliably lands in the middle of the first epoch.
SLOW_VAEKIT = (
    "import runpy, time; from vaekit.training.trainer import Trainer; step = Trainer.train_step; "
    "Trainer.train_step = lambda self, *a: (time.sleep(0.05), step(self, *a))[1]; "
    "runpy.run_module('vaekit', run_name='__main__', alter_sys=True)"
)


def start(args: list, cwd: Path, slow: bool = False) -> subprocess.Popen:
    python = [sys.executable, "-c", SLOW_VAEKIT] if slow else [sys.executable, "-m", "vaekit"]
    return subprocess.Popen(
        [*python, *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_after_checkpoint(process: subprocess.Popen, run: Path, step: int) -> dict:
    """SIGKILL `process` once the checkpoint of global step `step` exists and a bit more ran."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (run / CHECKPOINT).exists() and checkpoint_state(run)["global_step"] >= step:
            time.sleep(0.08)  # one or two more steps, then kill at whatever point it is
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.communicate()
    return checkpoint_state(run)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path: Path, mnist, capsys):
    killed = start([*KILL_ARGS, "--out", tmp_path / "b"], tmp_path, slow=True)
    threads = torch.get_num_threads()
    try:  # meanwhile, the uninterrupted run, in this process (--threads 1 as in the other)
        assert cli([*KILL_ARGS, "--out", tmp_path / "a"], capsys)[0] == 0
    finally:
        torch.set_num_threads(threads)
    state = kill_after_checkpoint(killed, tmp_path / "b", step=10)
    assert state["epoch"] == 0 and 0 < state["step_in_epoch"] < 16  # mid-epoch 1
    assert not (tmp_path / "b" / WEIGHTS).exists()
    assert_good_checkpoint(tmp_path / "b", mnist)  # a killed run is loadable

    resumed = subprocess.run(
        [sys.executable, "-m", "vaekit", "train", "--resume", str(tmp_path / "b"), "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(tmp_path / "a" / WEIGHTS, tmp_path / "b" / WEIGHTS)
    rows_a, rows_b = (read_jsonl(tmp_path / r / "metrics.jsonl") for r in "ab")
    assert len(rows_a) == 3 and without_timing(rows_a) == without_timing(rows_b)


def test_resume_completes_a_run_killed_before_its_final_weights(tiny_run, synth, tmp_path):
    import shutil

    copy = Path(shutil.copytree(tiny_run.path, tmp_path / "copy"))
    (copy / WEIGHTS).unlink()  # killed after the last checkpoint, before model.safetensors
    vaekit.train(resume=copy, progress=False, outputs=False, data=synth)
    assert_same_weights(copy / WEIGHTS, tiny_run.path / WEIGHTS)


# --- NaN and inf losses ---------------------------------------------------------------------
def poison_call(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Make the `call`-th training batch all NaN (a corrupt batch)."""
    calls = {"n": 0}
    original = Trainer.train_step

    def train_step(self, x, *rest):
        calls["n"] += 1
        if calls["n"] == call:
            x = torch.full_like(x, float("nan"))
        return original(self, x, *rest)

    monkeypatch.setattr(Trainer, "train_step", train_step)


def assert_diverged(code: int, err: str, run: Path) -> None:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "training diverged" in lines[0] and "--lr" in lines[0] and "--grad-clip" in lines[0]
    assert not (run / WEIGHTS).exists()  # never final weights from a diverged model


def test_a_poisoned_batch_stops_the_run_and_keeps_the_last_good_checkpoint(
    data_folder, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    poison_call(monkeypatch, 6)  # epoch 2, step 2; checkpoints every 3 steps
    code, err = cli(tiny_train(data_folder, run, "--checkpoint-every", "3"), capsys)
    assert_diverged(code, err, run)
    assert f"loss became nan at epoch 2, step 2; the last good checkpoint {run / CHECKPOINT}" in err
    assert checkpoint_state(run)["global_step"] == 4  # the end of epoch 1 (step 3: superseded)
    assert len(read_jsonl(run / "metrics.jsonl")) == 1
    assert_good_checkpoint(run, vaekit.load_data(vaekit.RunConfig.load(run / "config.json").data))


def test_a_huge_learning_rate_stops_the_run_and_keeps_a_finite_checkpoint(
    data_folder, tmp_path, capsys
):
    run = tmp_path / "run"
    code, err = cli(tiny_train(data_folder, run, "--lr", "1e6", "--checkpoint-every", "1"), capsys)
    assert_diverged(code, err, run)
    # Checkpoints wait for the next step's loss to be finite, so the one kept is usable.
    assert_good_checkpoint(run, vaekit.load_data(vaekit.RunConfig.load(run / "config.json").data))


def test_nan_weights_are_never_written(synth, tmp_path):
    config = tiny_config()
    model = vaekit.models.build_model(config.model, synth.shape)
    trainer = Trainer(config, model, synth, vaekit.config.runs.RunFolder(tmp_path), progress=False)
    trainer.save_checkpoint()
    before = (tmp_path / CHECKPOINT).read_bytes()
    with torch.no_grad():
        next(model.parameters())[0] = float("inf")
    with pytest.raises(TrainingDiverged, match="weights became NaN or infinite"):
        trainer.save_checkpoint()
    assert (tmp_path / CHECKPOINT).read_bytes() == before


# --- failed writes --------------------------------------------------------------------------
def fail_checkpoint_write(monkeypatch, nth: int, how: str) -> list[bytes]:
    """Make the `nth` checkpoint write fail like a full disk (part of the file written, then
    ENOSPC) or a read-only folder (the rename refused). Returns a list that receives the
    checkpoint file's bytes as the failing write found them."""
    found: list[bytes] = []
    state = {"writes": 0, "refuse": False}
    real_save, real_replace = vaekit.core.files.save_file, os.replace

    def save_file(tensors, path, metadata=None):
        if ".checkpoint.safetensors." in str(path):  # the temporary file of a checkpoint
            state["writes"] += 1
            if state["writes"] == nth:
                found.append((Path(path).parent / CHECKPOINT).read_bytes())
                if how == "disk full":
                    Path(path).write_bytes(b"\0" * 100)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                state["refuse"] = True
        return real_save(tensors, path, metadata=metadata)

    def replace(src, dst):
        if state["refuse"] and Path(dst).name == CHECKPOINT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(vaekit.core.files, "save_file", save_file)
    monkeypatch.setattr(os, "replace", replace)
    return found


@pytest.mark.parametrize("how", ["disk full", "read-only"])
def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(
    data_folder, tmp_path, monkeypatch, capsys, how
):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        saved = fail_checkpoint_write(patch, 3, how)
        code, err = cli(tiny_train(data_folder, run, "--checkpoint-every", "2"), capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    reason = "No space left on device" if how == "disk full" else "Permission denied"
    assert f"{run / CHECKPOINT}: write failed ({reason}); the file was left unchanged" in err
    assert saved and (run / CHECKPOINT).read_bytes() == saved[0]
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert checkpoint_state(run)["global_step"] == 4  # the second checkpoint, intact

    code, err = cli(["train", "--resume", run, "--quiet"], capsys)  # and it resumes
    assert code == 0, err
    code, err = cli(tiny_train(data_folder, tmp_path / "ref", "--checkpoint-every", "2"), capsys)
    assert code == 0, err
    assert_same_weights(run / WEIGHTS, tmp_path / "ref" / WEIGHTS)


# --- gradient clipping ----------------------------------------------------------------------
def gradient_norms(config, synth, monkeypatch) -> list[float]:
    """The global gradient norm the optimiser saw at each step of a tiny run."""
    norms: list[float] = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    hook = register_optimizer_step_pre_hook(record)  # vaekit then steps through optimizer.step
    try:
        vaekit.train(config, None, progress=False, outputs=False, data=synth)
    finally:
        hook.remove()
    return norms


def test_gradient_clipping_bounds_the_norm(synth, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    free = gradient_norms(tiny_config(), synth, monkeypatch)
    clipped = gradient_norms(tiny_config(grad_clip=1.0), synth, monkeypatch)
    assert len(free) == len(clipped) == 16
    assert max(free) > 2.0  # the test would notice if clipping did nothing
    assert max(clipped) <= 1.0 + 1e-4


def test_grad_clip_flag_reaches_the_config(capsys, tmp_path):
    from vaekit.cli import make_parser
    from vaekit.cli.train import build_train_config

    args = make_parser().parse_args(["train", "--grad-clip", "0.5"])
    assert build_train_config(args).train.grad_clip == 0.5
    assert vaekit.RunConfig().train.grad_clip == 0  # off by default


# --- weight decay ---------------------------------------------------------------------------
def test_weight_decay_shrinks_the_weights_and_reaches_the_config(synth, tmp_path, monkeypatch):
    from vaekit.cli import make_parser
    from vaekit.cli.train import build_train_config

    monkeypatch.chdir(tmp_path)

    def weight_norm(config) -> float:
        run = vaekit.train(config, None, progress=False, outputs=False, data=synth)
        return sum(p.norm().item() ** 2 for p in run.model.parameters()) ** 0.5

    plain, decayed = weight_norm(tiny_config()), weight_norm(tiny_config(weight_decay=20.0))
    assert decayed < 0.8 * plain  # 16 steps of lr 3e-3 * 20: each shrinks the weights by 6%
    args = make_parser().parse_args(["train", "--weight-decay", "0.01"])
    assert build_train_config(args).train.weight_decay == 0.01
    assert vaekit.RunConfig().train.weight_decay == 0  # plain Adam by default
