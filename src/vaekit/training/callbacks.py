"""Named hooks into the Trainer's loop, and the Trainer's own uses of them: the time and
step budgets, step-interval checkpoints, the best validation weights, early stopping and
the learning-rate plateau.

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
        if agreed:
            trainer.state.out_of_time = True
            trainer.state.stop_reason = f"time budget of {self.seconds:g} s spent"


class StepBudget(Callback):
    """Ends the run cleanly after `steps` optimiser steps, like the time budget (every rank
    counts the same steps)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.state.global_step >= self.steps:
            trainer.state.out_of_time = True
            trainer.state.stop_reason = f"step budget of {self.steps} steps spent"


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
    and marks their row `best` (rows without a validation number are left alone); counts the
    evaluations since the best one; with keep_best k > 1, also keeps the k best epochs'
    weights as RUN/best/epoch-N.safetensors."""

    def __init__(self, keep: int = 1) -> None:
        self.keep = keep

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any] | None) -> None:
        valid_loss = None if row is None else row.get("valid_neg_elbo")
        if valid_loss is None:
            return
        state = trainer.state
        if self.keep > 1:
            self.keep_k_best(trainer, valid_loss)
        if state.best_valid is not None and valid_loss >= state.best_valid:
            state.evals_since_best += 1
            return
        state.best_valid, state.best_epoch, state.evals_since_best = valid_loss, state.epoch, 0
        row["best"] = True  # the last row marked best holds the kept weights' numbers
        if trainer.run is not None:
            save_weights(trainer.run.best_path, trainer.model)

    def keep_k_best(self, trainer: Trainer, valid_loss: float) -> None:
        """Add this epoch's weights to the k best if they are among them; drop the k+1-th."""
        state, run = trainer.state, trainer.run
        ranked = sorted([*state.best_k, [valid_loss, state.epoch]])
        state.best_k, dropped = ranked[: self.keep], ranked[self.keep :]
        if run is None:
            return
        if [valid_loss, state.epoch] in state.best_k:
            run.best_dir.mkdir(exist_ok=True)
            save_weights(run.best_epoch_path(state.epoch), trainer.model)
        for _, epoch in dropped:
            run.best_epoch_path(int(epoch)).unlink(missing_ok=True)


class EarlyStopping(Callback):
    """Ends the run after `patience` evaluations in a row without a better validation -ELBO
    (the best weights are kept, as at the end of any run with a validation split)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any] | None) -> None:
        state = trainer.state
        if row is not None and state.evals_since_best >= self.patience:
            state.stopped_early = True
            state.stop_reason = row["stopped"] = (
                f"early stopping: no better validation -ELBO in {self.patience} evaluations "
                f"(best at epoch {state.best_epoch})"
            )


class LrPlateau(Callback):
    """Multiplies the learning rate by `factor` after every `patience` evaluations in a row
    without a better validation -ELBO (the Trainer applies state.lr_scale)."""

    def __init__(self, patience: int, factor: float) -> None:
        self.patience, self.factor = patience, factor

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any] | None) -> None:
        waited = trainer.state.evals_since_best
        if row is not None and "valid_neg_elbo" in row and waited and waited % self.patience == 0:
            trainer.state.lr_scale *= self.factor


def standard_callbacks(train_config: TrainConfig) -> list[Callback]:
    """The Trainer's own callbacks for these settings, in the order they run."""
    cfg = train_config
    callbacks: list[Callback] = []
    if cfg.time_budget:
        callbacks.append(TimeBudget(cfg.time_budget))
    if cfg.max_steps:
        callbacks.append(StepBudget(cfg.max_steps))
    if cfg.checkpoint_every_steps:
        callbacks.append(IntervalCheckpoints(cfg.checkpoint_every_steps))
    callbacks.append(BestWeights(cfg.keep_best))
    if cfg.early_stop:
        callbacks.append(EarlyStopping(cfg.early_stop))
    if cfg.lr_schedule == "plateau":
        callbacks.append(LrPlateau(cfg.lr_patience, cfg.lr_factor))
    return callbacks
