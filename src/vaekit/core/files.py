"""vaekit's cache folder: downloaded datasets and the feature classifiers of `evaluate`."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from vaekit.core.errors import RunError, VaekitError

# The run folder's format: every file vaekit writes into a run (config.json, the weights,
# the checkpoint) records it as `format_version`, and readers refuse a newer one by name.
# 1: files without the field (vaekit 0.1.0; config.json called it `version`).
# 2: `format_version` in every file; checkpoints validated against a schema on load.
FORMAT_VERSION = 2


def cache_dir() -> Path:
    """`$VAEKIT_CACHE` if set, else `~/.cache/vaekit` (created on first write, not here)."""
    configured = os.environ.get("VAEKIT_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "vaekit"


_UMASK = os.umask(0o022)  # read the process's umask (there is no other way) and restore it


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


def read_file(path: Path, read, error: type[VaekitError], what: str, not_found: str):
    """`read(path)`, with a missing file, a folder or an unreadable file as one-line `error`s:
    "PATH: `not_found`", "PATH: is a folder, expected `what`", "PATH: cannot read (...)"."""
    try:
        return read(path)
    except FileNotFoundError:
        raise error(f"{path}: {not_found}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, expected {what}") from None
    except OSError as err:
        raise error(f"{path}: cannot read ({err.strerror})") from None


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
    header = {"vaekit": json.dumps(meta | {"format_version": FORMAT_VERSION})}
    _atomic_replace(Path(path), lambda tmp: save_file(tensors, tmp, metadata=header))


def load_tensors(path: Path, what: str = "file") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of a safetensors file and its JSON metadata document (an object, of a
    format this vaekit reads); problems are one-line RunErrors, "PATH: damaged `what` (...)"."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: file not found")
    try:
        tensors = load_file(str(path))

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        meta = json.loads(header.get("vaekit", "{}"))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as err:
        reason = "a pickle or torch.save file: vaekit never unpickles" if is_pickle(path) else err
        raise RunError(f"{path}: not a readable safetensors file ({reason})") from None
    except RecursionError:
        raise RunError(f"{path}: damaged {what} (metadata nested too deeply)") from None
    if not isinstance(meta, dict):
        raise RunError(f"{path}: damaged {what} (metadata is a {type_name(meta)}, not an object)")
    check_format_version(meta.get("format_version", 1), path, RunError, what)
    return tensors, meta


def check_format_version(version: Any, path: Path, error: type[VaekitError], what: str) -> int:
    """The run-folder format a file was written in (absent: 1), refusing a newer one by name:
    its fields may mean things this vaekit does not know."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise error(
            f"{path}: damaged {what} (format_version {version!r} is not a positive integer)"
        )
    if version > FORMAT_VERSION:
        raise error(
            f"{path}: written by a newer vaekit (format {version}; this vaekit reads up to "
            f"{FORMAT_VERSION}); upgrade vaekit"
        )
    return version


def type_name(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages: object, list, text, ..."""
    names = {dict: "object", list: "list", str: "text", bool: "boolean", type(None): "null"}
    return names.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__
    )


def is_pickle(path: Path) -> bool:
    """Whether `path` starts like a pickle (protocol 2+) or a torch.save zip archive."""
    try:
        with open(path, "rb") as f:
            start = f.read(4)
    except OSError:
        return False
    return start[:1] == b"\x80" or start == b"PK\x03\x04"
