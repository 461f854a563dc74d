"""A damaged checkpoint is refused before use, and a failed command changes nothing.

Each case damages the checkpoint of an unfinished run (right tensor names, wrong metadata
or state) and resumes it: the command must end with one line "PATH: damaged checkpoint
(...)", exit code 2, and leave config.json and the checkpoint byte-identical."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import vaekit.core.files
from helpers import assert_one_line_error, run_cli, write_data_folder

CHECKPOINT = "checkpoint.safetensors"
Damage = Callable[[dict, dict], object]


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data_folder(tmp_path_factory.mktemp("data") / "tiny")


def train_args(data: Path, out: Path, *extra: object) -> list:
    """A tiny MLP on the tiny folder: 4 steps of 16 per epoch."""
    args = ["train", "--data-path", data, "--hidden", "8", "--latent-dim", "2", "--quiet"]
    return args + ["--batch-size", "16", "--epochs", "1", "--out", out, *extra]


@pytest.fixture(scope="module")
def unfinished(data_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped after one epoch of two, before its final weights."""
    run = tmp_path_factory.mktemp("runs") / "run"
    assert vaekit.cli.main([str(a) for a in train_args(data_folder, run)]) == 0
    (run / "model.safetensors").unlink()
    return run


def damage_checkpoint(run: Path, damage: Damage) -> None:
    """Rewrite the checkpoint with `damage(tensors, meta)` applied (it may return a new
    metadata document, e.g. a list)."""
    path = run / CHECKPOINT
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["vaekit"])
    replaced = damage(tensors, meta)
    meta = meta if replaced is None else replaced
    save_file(tensors, str(path), metadata={"vaekit": json.dumps(meta)})


def set_state(key: str, value: object) -> Damage:
    return lambda tensors, meta: meta["state"].__setitem__(key, value)


def reshape_moment(tensors: dict, meta: dict) -> None:
    tensors["optim.0.exp_avg"] = tensors["optim.0.exp_avg"].flatten()[:3].clone()


def retype_moment(tensors: dict, meta: dict) -> None:
    tensors["optim.0.exp_avg_sq"] = tensors["optim.0.exp_avg_sq"].double()


def nan_moment(tensors: dict, meta: dict) -> None:
    tensors["optim.1.exp_avg"] = torch.full_like(tensors["optim.1.exp_avg"], float("nan"))


def text_lr(tensors: dict, meta: dict) -> None:
    meta["optimizer"]["param_groups"][0]["lr"] = "fast"


DAMAGES = {
    "metadata a list": (lambda tensors, meta: [meta], "metadata"),
    "epoch as text": (set_state("epoch", "1"), "epoch"),
    "step past the epoch's end": (set_state("step_in_epoch", 1000), "step_in_epoch"),
    "negative global step": (set_state("global_step", -5), "global_step"),
    "state a list": (lambda tensors, meta: meta.__setitem__("state", [1, 2]), "state"),
    "history rows lists": (set_state("history", [[1, 2]]), "history"),
    "missing state key": (lambda tensors, meta: meta["state"].pop("epoch") and None, "epoch"),
    "moment of the wrong shape": (reshape_moment, "optim.0.exp_avg"),
    "moment of the wrong dtype": (retype_moment, "optim.0.exp_avg_sq"),
    "NaN moment": (nan_moment, "optim.1.exp_avg"),
    "learning rate as text": (text_lr, "lr"),
    "optimizer a number": (lambda tensors, meta: meta.__setitem__("optimizer", 3), "optimizer"),
}


@pytest.mark.parametrize("case", DAMAGES)
def test_a_damaged_checkpoint_is_refused_and_nothing_changes(unfinished, tmp_path, capsys, case):
    damage, names = DAMAGES[case]
    run = Path(shutil.copytree(unfinished, tmp_path / "run"))
    damage_checkpoint(run, damage)
    before = {name: (run / name).read_bytes() for name in ("config.json", CHECKPOINT)}
    files = sorted(p.name for p in run.iterdir())
    code, _, err = run_cli(["train", "--resume", run, "--epochs", "2", "--quiet"], capsys)
    assert_one_line_error(code, err)
    assert f"{run / CHECKPOINT}: damaged checkpoint (" in err and names in err, err
    assert "diverged" not in err and "learning rate" not in err
    assert {name: (run / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in run.iterdir()) == files


def test_the_undamaged_copy_resumes(unfinished, tmp_path, capsys):
    run = Path(shutil.copytree(unfinished, tmp_path / "run"))
    code, _, err = run_cli(["train", "--resume", run, "--epochs", "2", "--quiet"], capsys)
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 2


def test_a_full_disk_at_the_first_checkpoint_leaves_no_half_made_run(
    data_folder, tmp_path, monkeypatch, capsys
):
    real_save = vaekit.core.files.save_file

    def save_file(tensors, path, metadata=None):
        if ".checkpoint.safetensors." in str(path):
            Path(path).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(tensors, path, metadata=metadata)

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(vaekit.core.files, "save_file", save_file)
        code, _, err = run_cli(train_args(data_folder, run), capsys)
    assert_one_line_error(code, err)
    assert "No space left on device" in err
    assert not run.exists()
    code, _, err = run_cli(train_args(data_folder, run), capsys)  # the same command again
    assert code == 0, err
    assert (run / "model.safetensors").exists()


def test_a_failed_first_checkpoint_keeps_a_folder_the_user_made(
    data_folder, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "mine"
    run.mkdir()

    def refuse(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(vaekit.core.files, "save_file", refuse)
        code, _, err = run_cli(train_args(data_folder, run), capsys)
    assert_one_line_error(code, err)
    assert run.is_dir() and not list(run.iterdir())
