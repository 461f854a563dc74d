"""The optimizer's state as checkpoint tensors + JSON (no pickle), and the schema every
checkpoint is checked against before any of it is used.

A checkpoint is read back only after `check_checkpoint` has found every part well-formed:
the trainer state's types and ranges, the optimizer's groups and its moments (one per
parameter, of the parameter's shape and dtype, finite), the RNG state. A damaged file is
then one line, "PATH: damaged checkpoint (what)", before anything is loaded or written,
instead of a traceback or a "diverged" message that blames the learning rate."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from vaekit.config.runs import check_metrics_row, is_number
from vaekit.core.errors import RunError
from vaekit.core.files import type_name

SUM_KEYS = ("n", "loss", "recon", "kl")  # the running sums of TrainState.epoch_sums
# TrainState fields added after checkpoints were first written: absent in older checkpoints,
# which resume with the fields' defaults
LATER_STATE = ("stop_reason", "stopped_early", "evals_since_best", "lr_scale", "best_k")
TENSOR_PREFIXES = ("model.", "optim.", "rng.")


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


# --- the schema -----------------------------------------------------------------------
class Damaged(Exception):
    """What is wrong with a checkpoint; `check_checkpoint` turns it into a RunError."""


def check_checkpoint(
    path: Path,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    state_fields: tuple[str, ...],
    steps_per_epoch: int,
) -> None:
    """Raise RunError "PATH: damaged checkpoint (...)" unless every part of the checkpoint
    fits `optimizer` (fresh, over the model's parameters), the trainer state's
    `state_fields` and an epoch of `steps_per_epoch` batches. The model's tensors are
    checked by `load_weights_into`."""
    if meta.get("kind") != "checkpoint":
        raise RunError(f"{path}: not a vaekit training checkpoint")
    try:
        unknown = [k for k in tensors if not k.startswith(TENSOR_PREFIXES)]
        if unknown:
            raise Damaged(f"unexpected tensor {unknown[0]!r}")
        check_state(meta.get("state"), state_fields, steps_per_epoch)
        check_optimizer(meta.get("optimizer"), tensors, optimizer)
        check_rng(tensors)
        scaler = meta.get("grad_scaler") or {}
        if not isinstance(scaler, dict) or not all(map(is_finite, scaler.values())):
            raise Damaged(f"grad_scaler {scaler!r} is not an object of numbers")
    except Damaged as err:
        raise RunError(f"{path}: damaged checkpoint ({err})") from None


def check_state(state: Any, fields: tuple[str, ...], steps_per_epoch: int) -> None:
    """The trainer state: exactly `fields`, each of its type and in its range."""
    if not isinstance(state, dict):
        raise Damaged(f"state is a {type_name(state)}, not an object")
    missing = [key for key in fields if key not in state and key not in LATER_STATE]
    extra = sorted(set(state) - set(fields))
    if missing or extra:
        raise Damaged(f"state has no {missing[0]}" if missing else f"state has {extra[0]!r}")
    for key in ("epoch", "global_step", "best_epoch"):
        count(state[key], f"state.{key}")
    count(state["step_in_epoch"], "state.step_in_epoch", steps_per_epoch)
    if state["step_in_epoch"] > state["global_step"]:
        raise Damaged("state.step_in_epoch is past state.global_step")
    if not is_finite(state["train_seconds"]) or state["train_seconds"] < 0:
        raise Damaged(f"state.train_seconds {state['train_seconds']!r} is not a duration")
    if state["best_valid"] is not None and not is_number(state["best_valid"]):
        raise Damaged(f"state.best_valid {state['best_valid']!r} is not a number")
    for key in ("out_of_time", "stopped_early"):
        if not isinstance(state.get(key, False), bool):
            raise Damaged(f"state.{key} {state[key]!r} is not true or false")
    if not isinstance(state.get("stop_reason", ""), str):
        raise Damaged("state.stop_reason is not text")
    count(state.get("evals_since_best", 0), "state.evals_since_best")
    scale = state.get("lr_scale", 1.0)
    if not is_finite(scale) or not 0 < scale <= 1:
        raise Damaged(f"state.lr_scale {scale!r} is not in (0, 1]")
    best_k = state.get("best_k", [])
    if not isinstance(best_k, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(map(is_finite, pair)) for pair in best_k
    ):
        raise Damaged("state.best_k is not a list of [validation -ELBO, epoch] pairs")
    sums = state["epoch_sums"]
    if not isinstance(sums, dict) or not all(
        k in SUM_KEYS and is_finite(v) for k, v in sums.items()
    ):
        raise Damaged(f"state.epoch_sums is not an object of the sums {', '.join(SUM_KEYS)}")
    if sums and (set(sums) != set(SUM_KEYS) or sums["n"] <= 0):
        raise Damaged("state.epoch_sums misses a sum or counts no examples")
    if not isinstance(state["history"], list):
        raise Damaged(f"state.history is a {type_name(state['history'])}, not a list")
    for i, row in enumerate(state["history"]):
        try:
            check_metrics_row(row, f"state.history[{i}]")
        except RunError as err:
            raise Damaged(str(err)) from None


def check_optimizer(meta: Any, tensors: dict[str, torch.Tensor], optimizer) -> None:
    """The optimizer's groups match `optimizer`'s (same settings, of the same types, over
    the same parameters); each moment has its parameter's shape and dtype and is finite."""
    if not isinstance(meta, dict) or set(meta) != {"param_groups", "scalars"}:
        raise Damaged("optimizer is not an object of param_groups and scalars")
    expected = optimizer.state_dict()["param_groups"]
    groups = meta["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(expected):
        raise Damaged(f"optimizer.param_groups is not a list of {len(expected)} groups")
    for i, (group, want) in enumerate(zip(groups, expected, strict=True)):
        check_group(group, want, f"optimizer.param_groups[{i}]")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    names: dict[int, set[str]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            param_id, name = parse_state_key(key[len("optim.") :], len(params), key)
            check_moment(key, name, value, params[param_id])
            names.setdefault(param_id, set()).add(name)
    scalars = meta["scalars"]
    if not isinstance(scalars, dict):
        raise Damaged("optimizer.scalars is not an object")
    for key, value in scalars.items():
        param_id, name = parse_state_key(key, len(params), f"optimizer.scalars {key!r}")
        if not is_finite(value):
            raise Damaged(f"optimizer.scalars {key!r} is not a number")
        names.setdefault(param_id, set()).add(name)
    if len({frozenset(n) for n in names.values()}) > 1:
        raise Damaged("the optimizer's parameters hold different kinds of state")


def check_group(group: Any, want: dict[str, Any], where: str) -> None:
    """One parameter group: the keys of `want`, values of the same kinds, the same params."""
    if not isinstance(group, dict) or set(group) != set(want):
        raise Damaged(f"{where} does not have the optimizer's settings")
    if group["params"] != want["params"]:
        raise Damaged(f"{where}.params is not {want['params']}")
    for key, value in want.items():
        if key != "params" and not same_kind(group[key], value):
            raise Damaged(f"{where}.{key} {group[key]!r} is not like {value!r}")
    if group.get("lr", 0) < 0:
        raise Damaged(f"{where}.lr is negative")


def same_kind(value: Any, want: Any) -> bool:
    """Whether a JSON value can stand for the optimizer setting `want`."""
    if isinstance(want, bool) or want is None:
        return value is None or isinstance(value, bool)
    if is_number(want):
        return is_finite(value)
    if isinstance(want, (list, tuple)):
        return isinstance(value, list) and len(value) == len(want) and all(map(is_finite, value))
    return type(value) is type(want)


def parse_state_key(key: str, n_params: int, where: str) -> tuple[int, str]:
    """`PARAM.NAME` of a moment or scalar: a parameter index below `n_params` and a name."""
    param_id, _, name = key.partition(".")
    if not param_id.isdigit() or int(param_id) >= n_params or not name:
        raise Damaged(f"{where} names no parameter of the model")
    return int(param_id), name


def check_moment(key: str, name: str, value: torch.Tensor, param: torch.Tensor) -> None:
    """A step count: one finite non-negative float; any other moment: the parameter's
    shape and dtype, finite."""
    if name == "step":
        if value.numel() != 1 or not value.is_floating_point() or not value.item() >= 0:
            raise Damaged(f"{key} is not a step count")
        return
    if value.shape != param.shape or value.dtype != param.dtype:
        raise Damaged(
            f"{key} has shape {tuple(value.shape)} and dtype {value.dtype}; its parameter "
            f"{tuple(param.shape)} and {param.dtype}"
        )
    if not value.isfinite().all():
        raise Damaged(f"{key} holds NaN or infinite values")


def check_rng(tensors: dict[str, torch.Tensor]) -> None:
    """The CPU generator's state: bytes of the length torch uses; CUDA's, bytes if present."""
    cpu = tensors.get("rng.cpu")
    if cpu is None:
        raise Damaged("no rng.cpu")
    if cpu.dtype != torch.uint8 or cpu.shape != torch.get_rng_state().shape:
        raise Damaged(f"rng.cpu is not a generator state ({cpu.dtype}, {tuple(cpu.shape)})")
    cuda = tensors.get("rng.cuda")
    if cuda is not None and (cuda.dtype != torch.uint8 or cuda.dim() != 1):
        raise Damaged("rng.cuda is not a generator state")


def count(value: Any, where: str, most: float = math.inf) -> None:
    """An integer from 0 to `most`."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= most:
        limit = "" if most == math.inf else f" to {most}"
        raise Damaged(f"{where} {value!r} is not an integer from 0{limit}")


def is_finite(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return is_number(value) and math.isfinite(value)
