from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from dataclasses import fields as fields_of
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from vaekit.config.runs import RunFolder, load_weights_into
from vaekit.config.schema import RunConfig
from vaekit.core.device import pick_device, resolve_precision
from vaekit.core.errors import ConfigError, RunError, TrainingDiverged, VaekitError
from vaekit.core.files import load_tensors, save_tensors
from vaekit.core.noise import batch_shard, binarize, perturb
from vaekit.core.progress import progress_bar
from vaekit.data.batches import BatchIterator
from vaekit.data.binarize import BINARIZE_TEST_SEED, BINARIZE_VALID_SEED, binarize_fixed
from vaekit.data.datasets import Dataset, DataSplits
from vaekit.data.sequences import token_counts
from vaekit.evaluation.metrics import (
    classification_accuracy,
    collapse_warning,
    evaluate_elbo,
    reconstruction_mse,
)
from vaekit.models.registry import model_class
from vaekit.training import distributed
from vaekit.training.callbacks import Callback, as_callback, standard_callbacks
from vaekit.training.checkpoint import check_checkpoint, flatten_optimizer, unflatten_optimizer
from vaekit.training.logs import log_callbacks
from vaekit.training.optim import make_optimizer
from vaekit.training.steps import AutogradStep, choose_step, objective_for


class Interrupted(VaekitError):
    """Training was stopped by Ctrl-C or SIGTERM after saving a checkpoint."""

    exit_code = 130


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0  # batches done in the current epoch
    global_step: int = 0
    train_seconds: float = 0.0
    epoch_sums: dict[str, float] = field(default_factory=dict)  # running sums since the last row
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per evaluation
    best_valid: float | None = None  # lowest validation -ELBO so far (with a validation split)
    best_epoch: int = 0  # the epoch whose weights are in best.safetensors
    out_of_time: bool = False  # a budget (time or steps) ended the run
    stop_reason: str = ""  # why the run ended before its epochs, for the last metrics row
    stopped_early: bool = False  # early stopping ended the run
    evals_since_best: int = 0  # evaluations since the best validation -ELBO
    lr_scale: float = 1.0  # lr_schedule plateau: the cuts so far, multiplied
    best_k: list[list[float]] = field(default_factory=list)  # [valid -ELBO, epoch], best first


def place(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a dataset to the device once when it fits; otherwise pin it for fast copies."""
    if device.type == "cpu":
        return tensor
    try:
        return tensor.to(device)
    except torch.OutOfMemoryError:
        return tensor.pin_memory()


def loss_options(config: RunConfig, model: nn.Module) -> dict[str, Any]:
    """The objective's settings beyond beta that differ from the ELBO's, for `model.loss`."""
    cfg = config.train
    options: dict[str, Any] = {}
    if cfg.free_bits > 0:
        options["free_bits"] = cfg.free_bits
    if cfg.iw_k > 1:
        options["iw_k"] = cfg.iw_k
    if options and not model.objective_options:
        raise ConfigError(
            f"model {config.model.name} trains on its own objective: free bits and the IWAE "
            "objective apply to the other VAEs only"
        )
    return options


def check_objective(config: RunConfig) -> None:
    """Refuse, before any work, objective options the model cannot use (free bits for an AE)."""

    model = model_class(config.model)
    if model.gradient_trained:
        loss_options(config, model)


@contextmanager
def stop_requests():
    """Turn the first Ctrl-C / SIGTERM into a flag checked between steps (a second Ctrl-C
    interrupts at once). Outside the main thread, signals are left alone."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["stop"] = True

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Trainer:
    """Fits a model to `data` according to `config.train`, writing into `run` (if given).

    `callbacks`: Callback instances, or functions f(trainer, row) called after each metrics
    row; they run after the Trainer's own (time budget, interval checkpoints, best weights)."""

    def __init__(
        self,
        config: RunConfig,
        model: nn.Module,
        data: DataSplits,
        run: RunFolder | None = None,
        progress: bool = True,
        device: torch.device | None = None,
        context: distributed.Context = distributed.SINGLE,
        callbacks: Sequence[Callback | Callable[[Trainer, dict[str, Any]], None]] = (),
    ) -> None:
        self.config, self.cfg = config, config.train
        self.callbacks = (
            standard_callbacks(self.cfg)
            + log_callbacks(self.cfg)
            + [as_callback(c) for c in callbacks]
        )
        self.context = context
        self.device = device or pick_device(self.cfg.device)
        self.model = model.to(self.device)
        self.run = run if context.is_main else None  # only rank 0 writes
        self.progress = progress and context.is_main
        self.train_x = place(data.train.storage, self.device)  # uint8 pixels stay uint8
        labels = train_labels(self.model, data.train.y)
        self.train_y = None if labels is None else place(labels, self.device)
        self.test_set, self.valid_set = data.test, data.valid
        if (self.cfg.early_stop or self.cfg.lr_schedule == "plateau") and data.valid is None:
            raise ConfigError(
                "early stopping and lr_schedule plateau watch the validation -ELBO: hold out a "
                "validation split with data.valid_size N (--valid-size N)"
            )
        if config.data.binarize == "dynamic":
            self.test_set = binarize_fixed(data.test, seed=BINARIZE_TEST_SEED)
            if data.valid is not None:
                self.valid_set = binarize_fixed(data.valid, seed=BINARIZE_VALID_SEED)
        self.clock_started = time.perf_counter()  # start of the current timed stretch
        self.optimizer = make_optimizer(self.model, self.cfg.lr, self.cfg.weight_decay)
        self.precision = resolve_precision(self.cfg.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.state = TrainState()
        self.checkpoint_due = False  # a step-interval checkpoint waits for the next finite loss
        self.stop = {"stop": False}
        self.batches = BatchIterator(
            self.train_x,
            self.train_y,
            distributed.check_batch_size(self.cfg.batch_size, context),
            seed=self.cfg.seed,
            rank=context.rank,
            world_size=context.world_size,
            lengths=self.bucket_lengths(data.train),
        )
        options = loss_options(config, self.model)
        objective = objective_for(self.model, options, self.device, context.parallel)
        autograd = AutogradStep(objective, self.optimizer, self.scaler)
        self.step = choose_step(
            self.model, self.cfg, self.precision, context.parallel, autograd, self.forward_context
        )

    def bucket_lengths(self, train: Dataset) -> torch.Tensor | None:
        """Each training sequence's length, for batches of similar length (train.length_buckets
        on a sequence run); None otherwise."""
        if train.kind != "sequence" or not self.cfg.length_buckets:
            return None
        return token_counts(train.storage)

    def autocast(self):
        """Autocast the networks to bf16/fp16 when asked for; the model sums in fp32."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if dtype is None:
            return nullcontext()  # fp32: cheaper than a disabled autocast
        return torch.autocast(self.device.type, dtype=dtype)

    @contextmanager
    def forward_context(self):
        """Where a step's forward runs: this rank's share of the batch's noise draws, and the
        precision's autocast."""
        with batch_shard(self.context.rank, self.context.world_size), self.autocast():
            yield

    # --- schedule ---------------------------------------------------------------------
    def beta_at(self, step: int) -> float:
        """KL weight: ramps linearly from 0 to beta over the warm-up epochs, steps, or
        fraction of the run (progress_fraction: by a time budget, training time)."""
        if self.cfg.kl_warmup_fraction:
            done = self.progress_fraction(step)
            return self.cfg.beta * min(1.0, done / self.cfg.kl_warmup_fraction)
        warmup_steps = self.cfg.kl_warmup_steps or self.cfg.kl_warmup_epochs * len(self.batches)
        if warmup_steps == 0:
            return self.cfg.beta
        return self.cfg.beta * min(1.0, (step + 1) / warmup_steps)

    def train_seconds(self) -> float:
        """Training time so far, this stretch included (evaluation is not counted)."""
        return self.state.train_seconds + time.perf_counter() - self.clock_started

    def progress_fraction(self, step: int | None = None) -> float:
        """How far the run is, in [0, 1], after `step` steps (default: those taken): by
        epochs, or by a budget that ends it sooner (a time budget: training time so far)."""
        step = self.state.global_step if step is None else step
        done = step / (self.cfg.epochs * len(self.batches))
        if self.cfg.max_steps:
            done = max(done, step / self.cfg.max_steps)
        if self.cfg.time_budget:
            done = max(done, self.train_seconds() / self.cfg.time_budget)
        return min(1.0, done)

    @property
    def lr_varies(self) -> bool:
        """Whether the learning rate changes during the run (a schedule or a warm-up)."""
        return self.cfg.lr_schedule != "constant" or self.cfg.lr_warmup_steps > 0

    def lr_now(self) -> float:
        """The learning rate of the next step: constant, cosine from lr down to lr_min, or
        cut on plateaus; during the warm-up, that times (step + 1) / lr_warmup_steps."""
        lr = self.cfg.lr
        if self.cfg.lr_schedule == "cosine":
            cosine = 0.5 * (1.0 + math.cos(math.pi * self.progress_fraction()))
            lr = self.cfg.lr_min + (self.cfg.lr - self.cfg.lr_min) * cosine
        elif self.cfg.lr_schedule == "plateau":
            lr *= self.state.lr_scale
        if self.cfg.lr_warmup_steps:
            lr *= min(1.0, (self.state.global_step + 1) / self.cfg.lr_warmup_steps)
        return lr

    # --- checkpoints ------------------------------------------------------------------
    def rng_state(self) -> dict[str, torch.Tensor]:
        """The random number generators' states, as checkpoint tensors."""
        states = {"rng.cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    def save_checkpoint(self, rng: dict[str, torch.Tensor] | None = None) -> None:
        """Write the checkpoint (`rng`: the RNG states to record, default the current ones)."""
        self.checkpoint_due = False
        if self.run is None:
            return
        if not weights_are_finite(self.model):  # never overwrite a good checkpoint with NaN
            raise self.diverged("the weights became NaN or infinite", self.state.step_in_epoch)
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim_tensors, optim_meta = flatten_optimizer(self.optimizer.state_dict())
        tensors.update(optim_tensors)
        tensors.update(rng or self.rng_state())
        meta = {
            "kind": "checkpoint",
            "state": asdict(self.state),
            "optimizer": optim_meta,
            "grad_scaler": self.scaler.state_dict(),
        }
        save_tensors(self.run.checkpoint_path, tensors, meta)

    def load_checkpoint(self) -> None:
        """Continue from the run's checkpoint: its weights checked against the model, the
        rest against the checkpoint schema (`check_checkpoint`) before the optimizer, RNG
        and state are loaded; a damaged file is named as damaged and nothing is written."""
        path = self.run.checkpoint_path
        tensors, meta = load_tensors(path, "checkpoint")
        if meta.get("kind") != "checkpoint":
            raise RunError(f"{path}: not a vaekit training checkpoint")
        model_tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        load_weights_into(self.model, model_tensors, path)  # another model's: says so
        fields = tuple(f.name for f in fields_of(TrainState))
        check_checkpoint(path, tensors, meta, self.optimizer, fields, len(self.batches))
        try:
            self.optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
            if meta.get("grad_scaler"):
                self.scaler.load_state_dict(meta["grad_scaler"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise RunError(f"{path}: damaged checkpoint ({err})") from None
        torch.set_rng_state(tensors["rng.cpu"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.state = TrainState(**meta["state"])

    # --- the loop ---------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, float]:
        """One optimiser step on a batch (labels y for models that need them); under
        torchrun, all ranks agree on stopping.

        A checkpoint due after the previous step is written here, once these weights have
        given a finite loss, with the RNG states from before this step drew anything."""
        rng = self.rng_state() if self.checkpoint_due else None
        x = x.to(self.device, non_blocking=True)
        y = None if y is None else y.to(self.device, non_blocking=True)
        with self.forward_context():
            if self.config.data.binarize == "dynamic":
                x = binarize(x)
            if self.cfg.perturb:  # a background model: inputs and targets alike
                x = perturb(x, self.cfg.perturb)
            terms = self.step.forward(x, y, self.beta_at(self.state.global_step))
        loss = terms.loss.item()
        flags = [float(not math.isfinite(loss)), float(self.stop["stop"])]
        diverged, self.stop["stop"] = distributed.all_reduce_max(flags, self.context)
        if diverged:
            raise self.diverged(f"the loss became {loss}", self.state.step_in_epoch + 1)
        if rng is not None:
            self.save_checkpoint(rng)
        if self.lr_varies:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr_now()
        self.step.backward()  # sets every .grad
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients (fp16: unscaled)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)  # optimizer.step(), unless fp16 found inf gradients
        self.scaler.update()
        return {"loss": loss, "recon": terms.recon.item(), "kl": terms.kl.item()}

    def fit(self) -> list[dict[str, Any]]:
        """Train to the end (epochs or time budget); the metrics rows. Callbacks hear of an
        error before it is raised on, and of the end."""
        try:
            for callback in self.callbacks:
                callback.on_fit_start(self)
            history = self.fit_epochs()
        except BaseException as error:
            for callback in self.callbacks:
                callback.on_exception(self, error)
            raise
        for callback in self.callbacks:
            callback.on_fit_end(self)
        return history

    def fit_epochs(self) -> list[dict[str, Any]]:
        state, steps = self.state, len(self.batches)
        self.model.train()
        with stop_requests() as self.stop:
            while state.epoch < self.cfg.epochs and not (state.out_of_time or state.stopped_early):
                with progress_bar(
                    steps,
                    f"epoch {state.epoch + 1}/{self.cfg.epochs}",
                    self.progress,
                    initial=state.step_in_epoch,
                    dynamic_ncols=True,
                ) as bar:  # closed on errors too, so the error line stands alone
                    self.clock_started = time.perf_counter()
                    for x, y in self.batches.epoch(state.epoch, state.step_in_epoch):
                        values = self.train_step(x) if y is None else self.train_step(x, y)
                        sums = state.epoch_sums
                        sums["n"] = sums.get("n", 0.0) + len(x)
                        for key, value in values.items():
                            sums[key] = sums.get(key, 0.0) + value * len(x)
                        state.step_in_epoch += 1
                        state.global_step += 1
                        bar.update(1)
                        if state.step_in_epoch % 25 == 0:
                            bar.set_postfix(
                                loss=f"{sums['loss'] / sums['n']:.2f}",
                                recon=f"{sums['recon'] / sums['n']:.2f}",
                                kl=f"{sums['kl'] / sums['n']:.2f}",
                            )
                        for callback in self.callbacks:
                            callback.on_step_end(self)
                        if state.out_of_time:
                            break  # a budget is spent: finish like a last epoch
                        if self.stop["stop"]:
                            self.stop_clock()
                            self.save_checkpoint()
                            raise Interrupted(self.interrupted_message())
                    self.stop_clock()
                self.end_epoch()
        return state.history

    def stop_clock(self) -> None:
        """Add the current timed stretch to the training time and start a new one."""
        now = time.perf_counter()
        self.state.train_seconds += now - self.clock_started
        self.clock_started = now

    def end_epoch(self) -> None:
        """Count the epoch; on evaluation epochs (every `eval_every`, the last one, and when
        the time budget runs out) reduce the sums, evaluate and append a metrics row."""
        state = self.state
        state.epoch += 1
        last = state.epoch >= self.cfg.epochs or state.out_of_time
        row = None
        if last or state.epoch % self.cfg.eval_every == 0:
            sums = distributed.all_reduce_sums(state.epoch_sums, self.context)
            if self.context.is_main:  # rank 0 evaluates, records and saves
                row = self.record(sums)
                state.history.append(row)
            state.epoch_sums = {}
        for callback in self.callbacks:
            callback.on_epoch_end(self, row)
        if row is not None and self.progress:
            self.print_row(row)
        state.step_in_epoch = 0
        self.save_checkpoint()
        if self.run is not None:
            self.run.write_metrics(state.history)

    def evaluate(self, dataset: Dataset, prefix: str) -> dict[str, Any]:
        """The ELBO's numbers on `dataset` (test or validation) as metrics-row entries."""
        result = evaluate_elbo(self.model, dataset, self.cfg.eval_batch_size)
        keys = ("neg_elbo", "recon", "kl", "bits_per_dim", "nats_per_token")
        row = {f"{prefix}_{key}": result[key] for key in keys if key in result}
        row["active_units"] = result["active_units"]
        return row | {"_result": result}

    def record(self, sums: dict[str, float]) -> dict[str, Any]:
        """The metrics row of the epochs since the last one: the training sums `sums`, the
        evaluation on the validation and test sets, the training time."""
        state = self.state
        row: dict[str, Any] = {
            "epoch": state.epoch,
            "step": state.global_step,
            "beta": self.beta_at(state.global_step - 1),
            "train_loss": sums["loss"] / sums["n"],
            "train_recon": sums["recon"] / sums["n"],
        }
        if self.lr_varies:
            row["lr"] = self.optimizer.param_groups[0]["lr"]
        warning = None
        if self.model.has_elbo:
            row["train_kl"] = sums["kl"] / sums["n"]
            row["train_neg_elbo"] = (sums["recon"] + sums["kl"]) / sums["n"]
            if self.valid_set is not None:
                row |= self.evaluate(self.valid_set, "valid")
                del row["_result"]
            row |= self.evaluate(self.test_set, "test")
            warning = collapse_warning(row.pop("_result"))
            if self.model.can_classify and self.test_set.y is not None:  # M2
                accuracy = classification_accuracy(
                    self.model, self.test_set, self.cfg.eval_batch_size
                )
                row["test_accuracy"] = accuracy["accuracy"]
            test_loss = row["test_neg_elbo"]
        else:  # no ELBO (autoencoder): the reconstruction error is the test number
            del row["beta"]
            test_loss = row["test_mse"] = reconstruction_mse(
                self.model, self.test_set, self.cfg.eval_batch_size
            )
        row["train_seconds"] = state.train_seconds
        if state.out_of_time:
            row["stopped"] = state.stop_reason or f"time budget of {self.cfg.time_budget:g} s spent"
        if not math.isfinite(test_loss):  # keep the previous checkpoint, which was good
            raise self.diverged(f"the test loss became {test_loss}", state.step_in_epoch)
        if warning:
            row["warning"] = warning
        return row

    def print_row(self, row: dict[str, Any]) -> None:
        """The metrics row as one line on stderr, and its warning if it has one."""
        tqdm.write(format_epoch(row, self.cfg.epochs), file=sys.stderr)
        if row.get("warning"):
            tqdm.write(f"warning: {row['warning']}", file=sys.stderr)

    def diverged(self, what: str, step: int) -> TrainingDiverged:
        """The error that stops a diverged run, saying what is kept and what to try."""
        kept = ""
        if self.run is not None and self.run.checkpoint_path.exists():
            kept = f"; the last good checkpoint {self.run.checkpoint_path} is kept"
        elif self.run is not None:
            kept = f"; nothing was saved in {self.run.path} yet"
        return TrainingDiverged(
            f"training diverged: {what} at epoch {self.state.epoch + 1}, step {step}{kept}. "
            "Start again with a lower learning rate (--lr) or gradient clipping (--grad-clip 1)"
        )

    def interrupted_message(self) -> str:
        where = f"epoch {self.state.epoch + 1}, step {self.state.step_in_epoch}"
        if self.run is None:
            return f"interrupted at {where}"
        return f"interrupted at {where}; checkpoint saved. Continue with: vaekit train --resume {self.run.path}"


def train_labels(model: nn.Module, y: torch.Tensor | None) -> torch.Tensor | None:
    """The labels the training loss takes: for conditional models, and for models that
    learn from (partly hidden) labels such as M2; None for the others."""
    if model.trains_on_labels or model.needs_labels:
        return y
    return None


def weights_are_finite(model: nn.Module) -> bool:
    """No parameter or buffer of `model` holds NaN or infinity."""
    return all(t.isfinite().all() for t in model.state_dict().values() if t.is_floating_point())


def format_epoch(row: dict[str, Any], epochs: int) -> str:
    if "test_neg_elbo" not in row:  # models without an ELBO
        return (
            f"epoch {row['epoch']}/{epochs}  train reconstruction {row['train_recon']:.2f} "
            f"nats  test reconstruction MSE {row['test_mse']:.5f} per pixel"
        )
    valid = ""
    if "valid_neg_elbo" in row:
        valid = f"valid -ELBO {row['valid_neg_elbo']:.2f}{' (best)' if row.get('best') else ''}  "
    return (
        f"epoch {row['epoch']}/{epochs}  train -ELBO {row['train_neg_elbo']:.2f}  {valid}"
        f"test -ELBO {row['test_neg_elbo']:.2f} (recon {row['test_recon']:.2f}, "
        f"KL {row['test_kl']:.2f}) nats"
        + (f" ({row['test_nats_per_token']:.3f}/token)" if "test_nats_per_token" in row else "")
        + f"  active units {row['active_units']}"
        + (f"  test accuracy {row['test_accuracy']:.2%}" if "test_accuracy" in row else "")
    )
