"""Named hooks into the Trainer's loop, and the Trainer's own uses of them: the time budget,
step-interval checkpoints and the best validation weights.

A callback subclasses `Callback` and overrides the hooks it needs. `vaekit.train(...,
callbacks=[...])` takes such instances, and plain functions f(trainer, row), which are
called after each metrics row (`RowFunction`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vaekit.config.runs import save_weights
from vaekit.config.schema import TrainConfig
from vaekit.training import distributed

if TYPE_CHECKING:  # for annotations only: trainer.py imports this module
    from vaekit.training.trainer import Trainer


class Callback:
    """Hooks the Trainer calls at named points of training; each is a no-op here."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first step, once a resumed run's checkpoint is loaded."""

    def on_step_end(self, trainer: Trainer) -> None:
        """After each optimiser step (trainer.state already counts it), on every rank."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any] | None) -> None:
        """After each epoch, before its checkpoint is written: `row` is the metrics row on
        evaluation epochs (rank 0 only; printed after the callbacks), else None."""

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        """When training stops on an error (divergence, Ctrl-C, a crash); it is raised on
        afterwards."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch, when Trainer.fit returns."""


class RowFunction(Callback):
    """A plain function f(trainer, row), called after each metrics row (rank 0 only)."""

    def __init__(self, function: Callable[[Trainer, dict[str, Any]], None]) -> None:
        self.function = function

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any] | None) -> None:
        if row is not None:
            self.function(trainer, row)


def as_callback(callback: Callback | Callable[[Trainer, dict[str, Any]], None]) -> Callback:
    """`callback` itself, or a plain function f(trainer, row) as a RowFunction."""
    if isinstance(callback, Callback):
        return callback
    if callable(callback):
        return RowFunction(callback)
    raise TypeError(
        f"a training callback is a vaekit Callback or a function f(trainer, row), not {callback!r}"
    )


class TimeBudget(Callback):
    """Ends the run cleanly once `seconds` of training are spent: the step that reaches the
    budget is the last, and its epoch is evaluated like a last epoch. Under torchrun every
    rank agrees (the slowest clock counts)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, trainer: Trainer) -> None:
        spent = float(trainer.train_seconds() >= self.seconds)
        (agreed,) = distributed.all_reduce_max([spent], trainer.context)
        trainer.state.out_of_time = bool(agreed)


class IntervalCheckpoints(Callback):
    """A checkpoint every `every` steps. The next step writes it, once these weights have
    given a finite loss (see Trainer.train_step), so a checkpoint is never of NaN weights."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_step_end(self, trainer: Trainer) -> None:
        state = trainer.state
        if state.global_step % self.every == 0 and not state.out_of_time:
            trainer.stop_clock()  # the checkpoint holds the training time up to here
            trainer.checkpoint_due = True


class BestWeights(Callback):
    """Keeps the weights of the lowest validation -ELBO so far in the run's best.safetensors
    and marks their row `best` (rows without a validation number are left alone)."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any] | None) -> None:
        valid_loss = None if row is None else row.get("valid_neg_elbo")
        state = trainer.state
        if valid_loss is None or (state.best_valid is not None and valid_loss >= state.best_valid):
            return
        state.best_valid, state.best_epoch = valid_loss, state.epoch
        row["best"] = True  # the last row marked best holds the kept weights' numbers
        if trainer.run is not None:
            save_weights(trainer.run.best_path, trainer.model)


def standard_callbacks(train_config: TrainConfig) -> list[Callback]:
    """The Trainer's own callbacks for these settings, in the order they run."""
    callbacks: list[Callback] = []
    if train_config.time_budget:
        callbacks.append(TimeBudget(train_config.time_budget))
    if train_config.checkpoint_every_steps:
        callbacks.append(IntervalCheckpoints(train_config.checkpoint_every_steps))
    callbacks.append(BestWeights())
    return callbacks
