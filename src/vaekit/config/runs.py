"""Run folders: config, weights, checkpoints and metrics, written atomically, loaded safely.

Layout of `runs/<name>/`:
  config.json          the RunConfig (round-trips: training it again repeats the run)
  model.safetensors    final model weights
  checkpoint.safetensors  model + optimizer + trainer state for --resume (no pickle)
  best.safetensors     weights of the best validation epoch (runs with a validation split)
  metrics.jsonl        one JSON object per epoch
  log.csv              step, epoch, train_seconds, lr, loss every 10 steps and per epoch
  tensorboard/         TensorBoard event files (train.tensorboard)
  *.png                pictures written at the end of training
Nothing here unpickles: tensors come from safetensors, everything else from JSON.
Every file records the run-folder format `format_version` (FORMAT_VERSION, core/files.py):
a newer one is refused by name, older ones (format 1: none recorded) are migrated on read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaekit.config.schema import RunConfig
from vaekit.core.errors import ConfigError, RunError
from vaekit.core.files import (
    _UMASK,
    FORMAT_VERSION,  # noqa: F401  (the run folder's format)
    atomic_write_text,
    save_tensors,
    type_name,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
BEST_FILE = "best.safetensors"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "log.csv"
TENSORBOARD_DIR = "tensorboard"


# --- atomic writes ----------------------------------------------------------------------
os.umask(_UMASK)


# --- model weights ----------------------------------------------------------------------
def save_weights(path: Path, model: nn.Module) -> None:
    save_tensors(path, model.state_dict(), {"kind": "weights"})


def squeezed(shape: torch.Size) -> tuple[int, ...]:
    """A shape without its singleton dimensions: runs written before tables had a kind of
    their own stored table rows as (1, 1, D) images, so their weights load by this shape."""
    return tuple(size for size in shape if size != 1)


def load_weights_into(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise RunError(f"{source}: weights do not match the config ({what})")
    for key, value in expected.items():
        if squeezed(tensors[key].shape) == squeezed(value.shape):
            tensors[key] = tensors[key].reshape(value.shape)  # old tables: (1, 1, D) -> (D,)
        if tensors[key].shape != value.shape:
            raise RunError(
                f"{source}: weights do not match the config ({key}: file has "
                f"{tuple(tensors[key].shape)}, model expects {tuple(value.shape)})"
            )
        if tensors[key].dtype != value.dtype:  # int8 "weights" would load, cast, and mislead
            raise RunError(
                f"{source}: weights do not match the config ({key}: file has "
                f"{str(tensors[key].dtype).removeprefix('torch.')}, model expects "
                f"{str(value.dtype).removeprefix('torch.')})"
            )
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:
        raise RunError(
            f"{source}: weights hold NaN or infinite values ({broken[0]}); the run diverged"
        )
    model.load_state_dict(tensors)


# --- metrics rows -----------------------------------------------------------------------
NUMBER_KEYS = (  # the numbers readers format: a row holding other values there is damaged
    "step",
    "train_seconds",
    "train_loss",
    "train_recon",
    "train_mse",
    "test_mse",
    "test_neg_elbo",
    "test_recon",
    "test_kl",
    "test_bits_per_dim",
    "valid_neg_elbo",
    "active_units",
)
ELBO_KEYS = ("test_neg_elbo", "test_recon", "test_kl", "test_bits_per_dim", "active_units")


def check_metrics_row(row: Any, where: str) -> dict[str, Any]:
    """`row` if it is a metrics row (an object with a positive epoch, numbers where numbers
    belong, and the test numbers: the ELBO's, or a reconstruction MSE); else RunError."""

    def damaged(what: str) -> RunError:
        return RunError(f"{where}: not a metrics row ({what})")

    if not isinstance(row, dict):
        raise damaged(f"a {type_name(row)}, not an object")
    epoch = row.get("epoch")
    if not is_number(epoch) or not isinstance(epoch, int) or epoch < 1:
        raise damaged(f"epoch {epoch!r} is not a positive integer")
    for key in NUMBER_KEYS:
        if key in row and not is_number(row[key]):
            raise damaged(f"{key} {row[key]!r} is not a number")
    if "test_mse" not in row and not all(key in row for key in ELBO_KEYS):
        missing = next(key for key in ELBO_KEYS if key not in row)
        raise damaged(f"no {missing} and no test_mse")
    if row.get("best") and "valid_neg_elbo" not in row:
        raise damaged("best without valid_neg_elbo")
    return row


def is_number(value: Any) -> bool:
    """An int or a float (NaN and infinity included: a diverged run records them), not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- the run folder ---------------------------------------------------------------------
class RunFolder:
    """Paths and I/O of one run folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def best_path(self) -> Path:
        return self.path / BEST_FILE

    @property
    def best_dir(self) -> Path:
        """The k best validation epochs' weights, `epoch-N.safetensors` (train.keep_best)."""
        return self.path / "best"

    def best_epoch_path(self, epoch: int) -> Path:
        return self.best_dir / f"epoch-{epoch}.safetensors"

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE

    @property
    def tensorboard_path(self) -> Path:
        return self.path / TENSORBOARD_DIR

    def require(self) -> RunFolder:
        if self.path.is_file():
            raise RunError(f"{self.path}: is a file, expected a run folder")
        if not self.path.is_dir():
            raise RunError(f"{self.path}: run folder not found")
        if not self.config_path.exists():
            raise RunError(f"{self.path}: not a vaekit run folder (no {CONFIG_FILE})")
        return self

    def load_config(self) -> RunConfig:
        self.require()
        try:
            return RunConfig.load(self.config_path)
        except ConfigError as err:
            raise RunError(str(err)) from None

    def save_config(self, config: RunConfig) -> None:
        config.save(self.config_path)

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        rows = []
        for line_no, line in enumerate(self.metrics_path.read_text().splitlines(), 1):
            if line.strip():
                where = f"{self.metrics_path}:{line_no}"
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    raise RunError(f"{where}: not valid JSON") from None
                rows.append(check_metrics_row(row, where))
        return rows

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
