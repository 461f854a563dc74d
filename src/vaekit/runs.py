"""Run folders: config, weights, checkpoints and metrics, written atomically, loaded safely.

Layout of `runs/<name>/`:
  config.json          the RunConfig (round-trips: training it again repeats the run)
  model.safetensors    final model weights
  checkpoint.safetensors  model + optimizer + trainer state for --resume (no pickle)
  best.safetensors     weights of the best validation epoch (runs with a validation split)
  metrics.jsonl        one JSON object per epoch
  *.png                pictures written at the end of training
Nothing here unpickles: tensors come from safetensors, everything else from JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import RunConfig
from .errors import ConfigError, RunError, VaekitError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
BEST_FILE = "best.safetensors"
METRICS_FILE = "metrics.jsonl"


# --- atomic writes ----------------------------------------------------------------------
_UMASK = os.umask(0o022)  # read the process's umask (there is no other way) and restore it
os.umask(_UMASK)


def _atomic_replace(path: Path, write) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    If anything fails (disk full, permission denied, an interrupt), `path` is left as it
    was and the temporary file is removed; an OSError becomes a one-line VaekitError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise write_failed(path, err) from err
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, (OSError, SafetensorError)):  # safetensors' I/O errors
            raise write_failed(path, err) from err
        raise


def write_failed(path: Path, err: Exception) -> VaekitError:
    """The error for a write that failed and left `path` unchanged."""
    reason = getattr(err, "strerror", None) or err
    return VaekitError(f"{path}: write failed ({reason}); the file was left unchanged")


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_replace(Path(path), lambda tmp: Path(tmp).write_text(text))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_replace(Path(path), lambda tmp: Path(tmp).write_bytes(data))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """safetensors file with a JSON document in its metadata header, written atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {"vaekit": json.dumps(meta)}
    _atomic_replace(Path(path), lambda tmp: save_file(tensors, tmp, metadata=header))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: file not found")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        meta = json.loads(header.get("vaekit", "{}"))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as err:
        reason = "a pickle or torch.save file: vaekit never unpickles" if is_pickle(path) else err
        raise RunError(f"{path}: not a readable safetensors file ({reason})") from None
    return tensors, meta


def is_pickle(path: Path) -> bool:
    """Whether `path` starts like a pickle (protocol 2+) or a torch.save zip archive."""
    try:
        with open(path, "rb") as f:
            start = f.read(4)
    except OSError:
        return False
    return start[:1] == b"\x80" or start == b"PK\x03\x04"


# --- model weights ----------------------------------------------------------------------
def save_weights(path: Path, model: nn.Module) -> None:
    save_tensors(path, model.state_dict(), {"kind": "weights"})


def load_weights_into(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise RunError(f"{source}: weights do not match the config ({what})")
    for key, value in expected.items():
        if tensors[key].shape != value.shape:
            raise RunError(
                f"{source}: weights do not match the config ({key}: file has "
                f"{tuple(tensors[key].shape)}, model expects {tuple(value.shape)})"
            )
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:
        raise RunError(
            f"{source}: weights hold NaN or infinite values ({broken[0]}); the run diverged"
        )
    model.load_state_dict(tensors)


# --- optimizer state (flattened into tensors + JSON, no pickle) -------------------------
def flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for param_id, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            key = f"{param_id}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{key}"] = value
            else:
                scalars[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            param_id, name = key[len("optim.") :].split(".", 1)
            state.setdefault(int(param_id), {})[name] = value
    for key, value in meta["scalars"].items():
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    groups = meta["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}


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
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

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
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise RunError(f"{self.metrics_path}:{line_no}: not valid JSON") from None
        return rows

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
