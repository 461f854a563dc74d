"""RUN/log.csv (always) and RUN/tensorboard/ (train.tensorboard): rows, resume, events."""

from __future__ import annotations

import csv
import json

import pytest
from safetensors import safe_open

import vaekit
from conftest import tiny_config
from helpers import interrupt_after
from vaekit.core.errors import ConfigError
from vaekit.training import logs
from vaekit.training.trainer import Interrupted


def log_rows(path):
    with (path / "log.csv").open() as file:
        return list(csv.DictReader(file))


def test_log_csv_has_a_row_every_10_steps_and_at_each_epoch_end(synth, tmp_path):
    vaekit.train(tiny_config(), tmp_path / "a", progress=False, outputs=False, data=synth)
    rows = log_rows(tmp_path / "a")
    assert list(rows[0]) == ["step", "epoch", "train_seconds", "lr", "loss"]
    # 8 steps per epoch, 2 epochs: the ends of epochs 1 and 2, and step 10
    assert [(int(r["step"]), int(r["epoch"])) for r in rows] == [(8, 1), (10, 2), (16, 2)]
    assert all(float(r["lr"]) == pytest.approx(3e-3) for r in rows)
    assert all(float(r["loss"]) > 0 for r in rows)
    seconds = [float(r["train_seconds"]) for r in rows]
    assert seconds == sorted(seconds)


@pytest.mark.parametrize(("how", "steps", "resumes_at"), [("sigint", 11, 11), ("crash", 11, 9)])
def test_a_resumed_run_continues_log_csv_without_duplicate_steps(
    synth, tmp_path, monkeypatch, how, steps, resumes_at
):
    config = tiny_config(checkpoint_every_steps=3)
    path = tmp_path / "b"
    with monkeypatch.context() as patch:
        interrupt_after(patch, steps, how)
        with pytest.raises(Interrupted if how == "sigint" else KeyboardInterrupt):
            vaekit.train(config, path, progress=False, outputs=False, data=synth)
    checkpoint = safe_open(str(path / "checkpoint.safetensors"), "pt").metadata()["vaekit"]
    assert json.loads(checkpoint)["state"]["global_step"] == resumes_at
    # a crash leaves step 10's row, written after its checkpoint (step 9): redone on resume
    assert [int(r["step"]) for r in log_rows(path)] == [8, 10]
    vaekit.train(resume=path, progress=False, outputs=False, data=synth)
    steps_logged = [int(r["step"]) for r in log_rows(path)]
    assert steps_logged == [8, 10, 16]
    assert len(steps_logged) == len(set(steps_logged))


def test_tensorboard_events_hold_scalars_and_images(synth, tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    config = tiny_config(tensorboard=True)
    run = vaekit.train(config, tmp_path / "c", progress=False, outputs=False, data=synth)
    assert run.config.train.tensorboard
    assert vaekit.RunConfig.load(tmp_path / "c" / "config.json").train.tensorboard
    events = accumulator.EventAccumulator(str(tmp_path / "c" / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/images_per_second"} <= scalars
    assert {"epoch/test_neg_elbo", "epoch/test_kl", "epoch/train_loss"} <= scalars
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 17))
    assert [e.step for e in events.Scalars("epoch/test_neg_elbo")] == [8, 16]
    assert {"samples", "reconstructions"} <= set(events.Tags()["images"])
    assert len(events.Images("samples")) == 2


def test_tensorboard_without_the_extra_is_a_one_line_error(synth, tmp_path, monkeypatch):
    def missing():
        raise ConfigError(logs.TENSORBOARD_EXTRA)

    monkeypatch.setattr(logs, "summary_writer_class", missing)
    with pytest.raises(
        ConfigError, match=r"tensorboard extra: pip install 'vaekit\[tensorboard\]'"
    ):
        vaekit.train(tiny_config(tensorboard=True), tmp_path / "d", progress=False, data=synth)
    assert not (tmp_path / "d").exists()
