"""Training: the loop, checkpoints, resume, clean stops, and the run's final outputs.

The loop is plain PyTorch: batches are sliced from tensors already in memory, the model's
`loss(x, beta)` gives the objective (new objectives override it), Adam steps. Everything a
resumed run needs (weights, optimizer moments, RNG state, position inside the epoch and the
running sums of the epoch's metrics) is in one safetensors checkpoint, so a run stopped at
any step and resumed gives the same numbers as one that never stopped.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaekit.config.presets import underfit_hint
from vaekit.config.runs import RunFolder, load_weights_into, save_weights
from vaekit.config.schema import RunConfig
from vaekit.core.device import pick_device
from vaekit.core.errors import ConfigError, RunError, TrainingDiverged
from vaekit.core.files import load_tensors
from vaekit.core.noise import in_unit_range
from vaekit.data.arrays import check_fits_likelihood
from vaekit.data.binarize import evaluation_set
from vaekit.data.datasets import DataSplits
from vaekit.data.memory import NAME as MEMORY
from vaekit.data.memory import (
    STORED_FILE,
    fingerprint,
    is_registered,
    splits_from_memory,
    store_splits,
)
from vaekit.data.registry import hold_out_validation, load_data
from vaekit.evaluation.metrics import reconstruction_mse
from vaekit.models.registry import build_model, configure_model, prepare_data
from vaekit.training import distributed
from vaekit.training.callbacks import Callback
from vaekit.training.denoising import add_denoising
from vaekit.training.pictures import write_outputs
from vaekit.training.trainer import Trainer, TrainState, check_objective, weights_are_finite


@dataclass
class Run:
    """What `vaekit.train` returns: the folder, the trained model and the per-epoch metrics."""

    path: Path
    config: RunConfig
    model: nn.Module
    history: list[dict[str, Any]]
    rank: int = 0  # under torchrun, only rank 0 holds the history and wrote the files

    @property
    def final(self) -> dict[str, Any]:
        """The metrics of the weights the run kept: the best validation epoch's when the run
        had a validation split, else the last epoch's."""
        return final_row(self.history)


def final_row(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The row of the kept weights: the last row marked `best`, else the last row."""
    best = [row for row in history if row.get("best")]
    return best[-1] if best else (history[-1] if history else {})


def new_run_dir(config: RunConfig, run_dir: str | Path | None) -> Path:
    """`run_dir` if it is new or empty; by default runs/<name>, suffixed if taken."""
    if run_dir is None:
        return unique_run_dir(Path("runs") / config.name)
    base = Path(run_dir)
    if base.exists() and any(base.iterdir()):
        raise RunError(
            f"{base}: already exists and is not empty (use --resume {base} to continue it)"
        )
    return base


def unique_run_dir(base: Path) -> Path:
    """`base`, or `base-2`, `base-3`, ... so that an existing run is never overwritten."""
    if not base.exists():
        return base
    k = 2
    while base.with_name(f"{base.name}-{k}").exists():
        k += 1
    return base.with_name(f"{base.name}-{k}")


def train(
    config: RunConfig | dict | str | Path | None = None,
    run_dir: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    outputs: bool = True,
    data: Any = None,
    callbacks: Sequence[Callback | Callable[[Trainer, dict[str, Any]], None]] = (),
) -> Run:
    """Train a model and return the Run.

    `config`: a RunConfig, a dict, or a path to a config.json (default: the reference VAE).
    `run_dir`: where to write (default runs/<config.name>, suffixed -2, -3... if taken).
    `resume`: a run folder to continue from its last checkpoint (its own config is used).
    `data`: your own data instead of the config's dataset: an array or tensor, an (x, y)
    pair, a torch Dataset or DataSplits (docs/own-data.md); the run keeps a copy (up to
    1 GiB) and records its fingerprint, so later commands read the same examples.
    `callbacks`: `vaekit.training.callbacks.Callback` instances, whose hooks run after each
    step (`on_step_end`), epoch (`on_epoch_end`, with the metrics row if there is one), on an
    error and at the end; or plain functions f(trainer, row), called after each metrics row
    (rank 0 only), e.g. to save snapshots of the weights during a long run.
    Under torchrun, every process calls this; see `vaekit.distributed` for the semantics.
    """
    context = distributed.context_from_env()
    try:
        return _train(config, run_dir, resume, progress, outputs, data, context, callbacks)
    finally:
        distributed.teardown()


def _train(config, run_dir, resume, progress, outputs, data, context, callbacks) -> Run:
    if resume is not None:
        run = RunFolder(resume).require()
        config = run.load_config() if config is None else _as_config(config)
        if not run.checkpoint_path.exists():
            raise RunError(f"{run.path}: no checkpoint to resume from")
    else:
        config, run = _as_config(config), None
    check_objective(config)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    device = pick_device(distributed.device_for(config.train.device, context))
    distributed.init(context, device)
    if run is None:  # rank 0 picks the folder; every rank learns its choice
        run = RunFolder(distributed.on_main(lambda: str(new_run_dir(config, run_dir)), context))
    given = None  # data from Python, to keep in the run folder
    if data is None:
        data = load_data(config.data)  # with the validation split of data.valid_size
    else:
        data = splits_from_memory(data, config.data)
        if not (data.name == config.data.name and is_registered(data.name)):
            given = data  # not the config's dataset: recorded as "memory" data below
            config.data.name, config.data.fingerprint = MEMORY, fingerprint(data)
            config.data.path = str((run.path / STORED_FILE).resolve())
        if data.valid is not None:
            config.data.valid_size = 0  # its own validation split
        elif config.data.valid_size:
            data = hold_out_validation(data, config.data.valid_size)
    if config.data.shape is not None and tuple(config.data.shape) != data.shape:
        raise RunError(
            f"data shape {data.shape} differs from the config's {tuple(config.data.shape)}"
        )
    config.data.shape, config.data.kind = list(data.shape), data.train.kind
    if context.is_main and (hint := underfit_hint(config)):
        print(hint, file=sys.stderr)  # before the time is spent: colour images, defaults
    configure_model(config.model, data)
    data = prepare_data(config, data)  # e.g. M2 keeps a few labels and hides the rest
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, data.shape)
    if resume is None:
        model.initialise()  # e.g. m1m2 copies its trained feature VAE's weights
    train_storage = data.train.storage  # uint8 pixels stay uint8: no float copy of the set
    check_fits_likelihood(train_storage, config.model.likelihood, data.source)
    if config.train.perturb and not in_unit_range(train_storage):
        raise ConfigError("train.perturb needs data in [0, 1] (images)")
    if config.train.denoise:  # the encoder sees corrupted inputs, the likelihood clean ones
        add_denoising(model, config.train.denoise, train_storage)
    if model.gradient_trained:
        trainer = Trainer(
            config,
            model,
            data,
            run,
            progress=progress,
            device=device,
            context=context,
            callbacks=callbacks,
        )
        if resume is not None:
            trainer.load_checkpoint()
            check_unfinished(run, trainer.state, config.train)
        model, fit = trainer.model, trainer.fit
    else:  # fitted in one step (PCA): no loop, no checkpoint, so nothing to resume either
        model = model.to(device)
        fit = partial(fit_in_one_step, model, data, config, run, progress)
    fresh = resume is None and context.is_main  # this command starts the run folder
    made = fresh and not run.path.exists()
    if fresh:
        run.path.mkdir(parents=True, exist_ok=True)
    with removed_if_unstarted(run, fresh, made):
        if context.is_main:
            if given is not None and not store_splits(
                given, run.path / STORED_FILE, config.data.fingerprint
            ):
                config.data.path = None  # too large to keep: later commands ask for it
            run.save_config(config)  # last: a resumed run was checked and loaded first
        history = fit()
    if context.is_main and run.best_path.exists() and final_row(history).get("best"):
        keep_best_weights(model, run)  # the weights of the best validation epoch
    model.after_training(data.train.storage)  # e.g. the autoencoder fits its sampling Gaussian
    if context.is_main:
        if not weights_are_finite(model):
            raise TrainingDiverged(f"{run.weights_path}: not written, the weights are NaN or inf")
        save_weights(run.weights_path, model)
        if outputs:
            write_outputs(run, model, data, history)
    distributed.barrier(context)
    return Run(run.path, config, model.eval(), history, rank=context.rank)


@contextmanager
def removed_if_unstarted(run: RunFolder, fresh: bool, made: bool) -> Iterator[None]:
    """On any error before a fresh run's first checkpoint, remove what the run wrote
    (config.json, metrics, best weights) and its folder if it `made` it, so that the same
    command can start over; a folder with a checkpoint is kept for --resume."""
    try:
        yield
    except BaseException:
        if fresh and not run.checkpoint_path.exists() and not run.weights_path.exists():
            stored = run.path / STORED_FILE
            for path in (run.config_path, run.metrics_path, run.best_path, run.log_path, stored):
                path.unlink(missing_ok=True)
            shutil.rmtree(run.tensorboard_path, ignore_errors=True)
            shutil.rmtree(run.best_dir, ignore_errors=True)
            if made:
                with suppress(OSError):  # not empty: files of someone else's
                    run.path.rmdir()
        raise


def keep_best_weights(model: nn.Module, run: RunFolder) -> None:
    """Load best.safetensors (the best validation epoch's weights) into `model`."""
    tensors, _ = load_tensors(run.best_path)
    load_weights_into(model, tensors, run.best_path)


def check_unfinished(run: RunFolder, state: TrainState, cfg) -> None:
    """Refuse to resume a finished run (one whose final weights were written); a run that
    spent a budget, or stopped early, continues only under a larger budget or patience."""
    if state.out_of_time:
        more_time = cfg.time_budget and state.train_seconds < cfg.time_budget
        more_steps = cfg.max_steps and state.global_step < cfg.max_steps
        if more_time or more_steps or not (cfg.time_budget or cfg.max_steps):
            state.out_of_time = False  # a larger budget: train on
        elif run.weights_path.exists():
            raise RunError(
                f"{run.path}: already spent its {state.stop_reason or 'time budget'} "
                f"({state.train_seconds:.0f} s, {state.global_step} steps of training); to "
                "train longer, resume with a larger --time-budget T or --steps N"
            )
    if state.stopped_early:
        if not cfg.early_stop or state.evals_since_best < cfg.early_stop:
            state.stopped_early = False  # more patience, or none: train on
        elif run.weights_path.exists():
            raise RunError(
                f"{run.path}: stopped early ({state.stop_reason}); to train longer, resume "
                f"with --early-stop N (N > {cfg.early_stop}) or --early-stop 0"
            )
    done = state.epoch
    if done >= cfg.epochs and run.weights_path.exists():
        raise RunError(
            f"{run.path}: already trained for {done} of {cfg.epochs} epochs; "
            f"to train longer, resume with --epochs N (N > {done})"
        )


def fit_in_one_step(
    model: nn.Module, data: DataSplits, config: RunConfig, run: RunFolder, progress: bool
) -> list[dict[str, Any]]:
    """Fit a model that is not gradient-trained (`model.fit(train_x)`); one metrics row."""
    started = time.perf_counter()
    model.fit(data.train.x, seed=config.train.seed)
    seconds = time.perf_counter() - started
    test = evaluation_set(data.test, config.data.binarize)
    batch = config.train.eval_batch_size
    row = {
        "epoch": 1,
        "train_mse": reconstruction_mse(model, data.train, batch),
        "test_mse": reconstruction_mse(model, test, batch),
        "train_seconds": seconds,
    }
    if hasattr(model, "explained_variance_ratio"):
        row["explained_variance_ratio"] = model.explained_variance_ratio
    run.write_metrics([row])
    if progress:
        print(
            f"fitted {config.model.name} in {seconds:.1f} s: test reconstruction MSE "
            f"{row['test_mse']:.5f} per pixel",
            file=sys.stderr,
        )
    return [row]


def _as_config(config: RunConfig | dict | str | Path | None) -> RunConfig:
    if config is None:
        return RunConfig().validate()
    if isinstance(config, RunConfig):
        return config.validate()
    if isinstance(config, dict):
        return RunConfig.from_dict(config)
    return RunConfig.load(config)
