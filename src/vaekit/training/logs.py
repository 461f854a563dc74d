"""Training logs beside metrics.jsonl: RUN/log.csv (always, for runs with a folder) and,
when asked for (train.tensorboard), TensorBoard event files in RUN/tensorboard/.

Both are written by rank 0 only (trainer.run is None elsewhere) and continue across
--resume: rows and events after the checkpoint's step are dropped before new ones are
written, so a resumed run's log has each step once.
"""

from __future__ import annotations

import csv
import io
import math
import time
from typing import TYPE_CHECKING, Any

import torch

from vaekit import plots
from vaekit.config.runs import is_number
from vaekit.config.schema import TrainConfig
from vaekit.core.errors import ConfigError
from vaekit.core.files import atomic_write_text
from vaekit.models.base import label_args
from vaekit.training.callbacks import Callback

if TYPE_CHECKING:  # for annotations only: trainer.py imports callbacks, which import this
    from vaekit.training.trainer import Trainer

LOG_EVERY = 10  # log.csv: a row every this many optimiser steps, and at each epoch end
LOG_FIELDS = ("step", "epoch", "train_seconds", "lr", "loss")
TENSORBOARD_EXTRA = (
    "TensorBoard logging needs the tensorboard extra: pip install 'vaekit[tensorboard]'"
)
GRID_IMAGES = 64  # prior samples in the TensorBoard sample grid
RECON_IMAGES = 32  # test images (with their reconstructions) in the reconstruction grid


def running_loss(trainer: Trainer) -> float | None:
    """The mean training loss since the last metrics row (this rank's batches)."""
    sums = trainer.state.epoch_sums
    return sums["loss"] / sums["n"] if sums.get("n") else None


def read_log(text: str) -> list[dict[str, str]]:
    """The complete rows of a log.csv's text (a line cut short by a crash is dropped)."""
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        if all(row.get(key) not in (None, "") for key in LOG_FIELDS):
            try:
                int(row["step"])
            except ValueError:
                continue
            rows.append(row)
    return rows


def csv_text(rows: list[dict[str, Any]], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, LOG_FIELDS, extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class CsvLog(Callback):
    """RUN/log.csv: step, epoch, train_seconds, lr and the running train loss every
    LOG_EVERY steps and at each epoch end. On resume, rows after the checkpoint's step
    (written after it, by a run that then crashed) are dropped before appending."""

    def __init__(self, every: int = LOG_EVERY) -> None:
        self.every = every
        self.last_step = -1

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.run is None:
            return
        path, step = trainer.run.log_path, trainer.state.global_step
        kept = read_log(path.read_text()) if path.exists() else []
        kept = [row for row in kept if int(row["step"]) <= step]
        atomic_write_text(path, csv_text(kept, header=True))
        self.last_step = int(kept[-1]["step"]) if kept else -1

    def on_step_end(self, trainer: Trainer) -> None:
        state = trainer.state
        if state.global_step % self.every == 0:
            self.write(trainer, state.epoch + 1, trainer.train_seconds(), running_loss(trainer))

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any] | None) -> None:
        loss = row.get("train_loss") if row is not None else running_loss(trainer)
        self.write(trainer, trainer.state.epoch, trainer.state.train_seconds, loss)

    def write(self, trainer: Trainer, epoch: int, seconds: float, loss: float | None) -> None:
        step = trainer.state.global_step
        if trainer.run is None or step == self.last_step:
            return
        row = {
            "step": step,
            "epoch": epoch,
            "train_seconds": f"{seconds:.3f}",
            "lr": f"{trainer.optimizer.param_groups[0]['lr']:.6g}",
            "loss": "nan" if loss is None else f"{loss:.6g}",
        }
        with trainer.run.log_path.open("a") as file:  # one whole line per write
            file.write(csv_text([row], header=False))
        self.last_step = step


def summary_writer_class():
    """torch's SummaryWriter, or the one-line error naming the tensorboard extra."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(TENSORBOARD_EXTRA) from None
    return SummaryWriter


class TensorBoardLog(Callback):
    """RUN/tensorboard/: per step the loss, learning rate and images per second; per
    evaluation epoch every number of the metrics row and, for images, a grid of prior
    samples and one of test images above their reconstructions."""

    def __init__(self) -> None:
        self.writer_class = summary_writer_class()  # refused before training starts
        self.writer = None
        self.last = (0.0, 0.0, 0.0)  # (loss sum, examples, time) at the previous step

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.run is None:
            return
        # events after the checkpoint's step (from a run that crashed) are dropped
        self.writer = self.writer_class(
            log_dir=str(trainer.run.tensorboard_path),
            purge_step=trainer.state.global_step + 1 if trainer.state.global_step else None,
        )
        self.restart_clock(trainer)

    def restart_clock(self, trainer: Trainer) -> None:
        sums = trainer.state.epoch_sums
        self.last = (sums.get("loss", 0.0), sums.get("n", 0.0), time.perf_counter())

    def on_step_end(self, trainer: Trainer) -> None:
        if self.writer is None:
            return
        sums, step, now = trainer.state.epoch_sums, trainer.state.global_step, time.perf_counter()
        loss_sum, n, then = self.last
        if sums.get("n", 0.0) < n:  # the sums were reset by a metrics row
            loss_sum, n = 0.0, 0.0
        examples = sums.get("n", 0.0) - n
        if examples > 0:
            self.writer.add_scalar("train/loss", (sums["loss"] - loss_sum) / examples, step)
            if now > then:
                self.writer.add_scalar("train/images_per_second", examples / (now - then), step)
        self.writer.add_scalar("train/lr", trainer.optimizer.param_groups[0]["lr"], step)
        self.last = (sums.get("loss", 0.0), sums.get("n", 0.0), now)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any] | None) -> None:
        if self.writer is None:
            return
        step = trainer.state.global_step
        if row is not None:
            for key, value in row.items():
                if is_number(value) and math.isfinite(value) and key not in ("epoch", "step"):
                    self.writer.add_scalar(f"epoch/{key}", value, step)
            if trainer.test_set.kind == "image":
                self.add_grids(trainer, step)
        self.writer.flush()
        self.restart_clock(trainer)  # evaluation time is not training throughput

    def add_grids(self, trainer: Trainer, step: int) -> None:
        """The samples and reconstructions grids; drawn from their own generator, so that
        logging does not change the training's random draws."""
        model, device = trainer.model, trainer.device
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                generator = torch.Generator(device=device).manual_seed(0)
                samples = model.sample(GRID_IMAGES, generator=generator)
                test = trainer.test_set.head(RECON_IMAGES)
                originals = test.x.to(device)
                labels = label_args(model, test.y, device)
                recons = model.reconstruct(originals, **labels)
        finally:
            model.train(was_training)
        self.add_image("samples", plots.square_grid(samples), step)
        self.add_image("reconstructions", plots.reconstruction_grid(originals, recons), step)

    def add_image(self, tag: str, array, step: int) -> None:
        dataformats = "HW" if array.ndim == 2 else "HWC"
        self.writer.add_image(tag, array, step, dataformats=dataformats)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        self.close()

    def on_fit_end(self, trainer: Trainer) -> None:
        self.close()


def log_callbacks(train_config: TrainConfig) -> list[Callback]:
    """The logs of a run: log.csv always, TensorBoard when asked for."""
    callbacks: list[Callback] = [CsvLog()]
    if train_config.tensorboard:
        callbacks.append(TensorBoardLog())
    return callbacks
