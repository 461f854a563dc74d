"""Trainer callbacks: named hooks, plain row functions, and the Trainer's own uses of them."""

from __future__ import annotations

import pytest

import vaekit
from conftest import tiny_config
from vaekit.core.errors import TrainingDiverged
from vaekit.training.callbacks import (
    BestWeights,
    Callback,
    IntervalCheckpoints,
    RowFunction,
    TimeBudget,
    as_callback,
)
from vaekit.training.logs import CsvLog
from vaekit.training.trainer import Trainer


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_step_end(self, trainer):
        self.events.append(("step", trainer.state.global_step))

    def on_epoch_end(self, trainer, row):
        self.events.append(("epoch", trainer.state.epoch, None if row is None else row["epoch"]))

    def on_exception(self, trainer, error):
        self.events.append(("error", type(error).__name__))

    def on_fit_end(self, trainer):
        self.events.append(("end",))


def test_hooks_run_in_order_and_plain_functions_get_the_rows(synth, tmp_path):
    recorder, rows = Recorder(), []
    config = tiny_config(epochs=3, eval_every=2)  # 8 steps per epoch; rows after epochs 2, 3
    vaekit.train(
        config,
        tmp_path / "r",
        progress=False,
        outputs=False,
        data=synth,
        callbacks=[recorder, lambda trainer, row: rows.append(row["epoch"])],
    )
    steps = [("step", k) for k in range(1, 25)]
    epochs = [("epoch", 1, None), ("epoch", 2, 2), ("epoch", 3, 3)]
    expected = steps[:8] + epochs[:1] + steps[8:16] + epochs[1:2] + steps[16:] + epochs[2:]
    assert recorder.events == [*expected, ("end",)]
    assert rows == [2, 3]


def test_on_exception_hears_of_a_divergence(synth, tmp_path):
    recorder = Recorder()
    with pytest.raises(TrainingDiverged):
        vaekit.train(
            tiny_config(lr=1e6),
            tmp_path / "r",
            progress=False,
            outputs=False,
            data=synth,
            callbacks=[recorder],
        )
    assert recorder.events[-1] == ("error", "TrainingDiverged")
    assert ("end",) not in recorder.events


def test_the_trainers_own_callbacks_follow_the_config(synth):
    def kinds(**train):
        config = tiny_config(**train)
        model = vaekit.models.build_model(config.model, synth.shape)
        return [type(c) for c in Trainer(config, model, synth, progress=False).callbacks]

    assert kinds() == [BestWeights, CsvLog]
    assert kinds(time_budget=5.0, checkpoint_every_steps=3) == [
        TimeBudget,
        IntervalCheckpoints,
        BestWeights,
        CsvLog,
    ]


def test_plain_functions_are_wrapped_and_others_refused():
    def row_function(trainer, row):
        pass

    wrapped = as_callback(row_function)
    assert isinstance(wrapped, RowFunction) and wrapped.function is row_function
    recorder = Recorder()
    assert as_callback(recorder) is recorder
    with pytest.raises(TypeError, match="Callback or a function"):
        as_callback(42)
