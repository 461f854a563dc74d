"""`vaekit export`: a run's encoder and decoder as ONNX or TorchScript graphs.

The export folder holds, for format onnx (.onnx) or torchscript (.pt):

- `encoder`: x (batch, *shape) -> z_mean, z_log_var (batch, latent_dim);
- `decoder`: z (batch, latent_dim) -> x_mean (batch, *shape), E[x | z] in data space, and
  for a Bernoulli likelihood also `logits`, the decoder's raw parameters;
- `prior` (hierarchical VAEs only): noise (batch, latent_dim) -> z, the prior's layers
  drawn top-down from standard normal noise (`sample_prior` with the noise given);
- `export.json`: the graphs' inputs and outputs (names, shapes with "batch", dtypes, value
  ranges), the preprocessing the run's data had, latent_dim, how to sample, the vaekit
  version and the run folder's format.

No graph holds a random op. Sampling is: draw z ~ N(0, I) (batch, latent_dim) with numpy
(hierarchical VAEs: draw the noise and run `prior` to get z) and run `decoder` on z.

Every graph is checked against the PyTorch model on the same inputs before anything is
written; the files are written into a temporary folder next to the output folder and moved
in at the end, so a failed export leaves the output folder as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vaekit.core.errors import ConfigError, RunError
from vaekit.core.files import FORMAT_VERSION
from vaekit.core.version import VERSION
from vaekit.models.hvae import HierarchicalVAE
from vaekit.models.loading import open_run

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
PARITY_TOLERANCE = 1e-4  # max abs difference allowed between PyTorch and an exported graph
PARITY_BATCH = 16
EXTRA_HINT = "pip install 'vaekit[export]'"


# --- the graphs -------------------------------------------------------------------------
class EncoderGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z_mean, z_log_var = self.model.encode(x)
        return z_mean, z_log_var


class DecoderGraph(nn.Module):
    def __init__(self, model: nn.Module, logits: bool) -> None:
        super().__init__()
        self.model, self.logits = model, logits

    def forward(self, z: torch.Tensor):
        params = self.model.decode(z)
        if self.logits:
            return self.model.likelihood.mean(params), params
        return self.model.likelihood.mean(params)


class HierarchicalPrior(nn.Module):
    """noise (B, latent_dim), bottom layer first -> z (B, latent_dim): z_L = noise_L, then
    z_l = mean_l(z_{l+1}) + exp(log_var_l(z_{l+1}) / 2) * noise_l down to z_1."""

    def __init__(self, model: HierarchicalVAE) -> None:
        super().__init__()
        self.model = model
        self.sizes = list(model.sizes)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        parts = list(torch.split(noise, self.sizes, dim=1))
        return self.model.descend(parts[-1], lambda i, shape: parts[i])


def check_exportable(model: nn.Module, name: str) -> None:
    """One-line ConfigError for the models export does not handle."""
    if model.needs_labels:
        raise ConfigError(
            f"model {name} is conditional (needs labels); export takes unconditional models"
        )
    if isinstance(model, HierarchicalVAE):
        if model.vamp:
            raise ConfigError("export does not handle VampPrior models yet (prior vamp)")
        return
    if not model.one_gaussian_latent:
        raise ConfigError(
            f"model {name} has no Gaussian encoder (z_mean, z_log_var); export takes VAEs"
        )
    if model.config.prior == "vamp" or name == "vamp":
        raise ConfigError("export does not handle VampPrior models yet (prior vamp)")


def graphs(model: nn.Module) -> dict[str, tuple[nn.Module, list[str], list[str]]]:
    """name -> (module, input names, output names)."""
    logits = model.likelihood.name == "bernoulli"
    out = {
        "encoder": (EncoderGraph(model), ["x"], ["z_mean", "z_log_var"]),
        "decoder": (
            DecoderGraph(model, logits),
            ["z"],
            ["x_mean", *(["logits"] if logits else [])],
        ),
    }
    if isinstance(model, HierarchicalVAE):
        out["prior"] = (HierarchicalPrior(model), ["noise"], ["z"])
    return out


# --- inputs for the parity check --------------------------------------------------------
def parity_inputs(
    model: nn.Module, kind: str, binarized: bool, seed: int = 0
) -> dict[str, torch.Tensor]:
    """x in the data's range (uniform [0, 1] pixels, 0/1 if binarised, N(0, 1) table
    features), z from the prior N(0, I) and standard normal noise."""
    g = torch.Generator().manual_seed(seed)
    shape = (PARITY_BATCH, *model.shape)
    if kind == "table":
        x = torch.randn(shape, generator=g)
    else:
        x = torch.rand(shape, generator=g)
        if binarized:
            x = torch.bernoulli(x, generator=g)
    z = torch.randn(PARITY_BATCH, model.latent_dim, generator=g)
    return {"x": x, "z": z, "noise": torch.randn(PARITY_BATCH, model.latent_dim, generator=g)}


# --- the two formats --------------------------------------------------------------------
def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise ConfigError(f"onnx export needs the export extra: {EXTRA_HINT}") from None
    return onnxruntime


def save_onnx(module: nn.Module, example: torch.Tensor, path: Path, inputs, outputs) -> None:
    axes = {name: {0: "batch"} for name in [*inputs, *outputs]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notes
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=17,
        )


def run_onnx(path: Path, name: str, value: np.ndarray) -> list[np.ndarray]:
    onnxruntime = _require_onnx()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {name: value})


def save_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced, str(path))


def run_torchscript(path: Path, value: torch.Tensor) -> list[np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        out = loaded(value)
    out = out if isinstance(out, tuple) else (out,)
    return [t.numpy() for t in out]


def as_tuple(out) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


# --- export.json ------------------------------------------------------------------------
def preprocessing(config) -> dict[str, Any]:
    data = config.data
    if data.kind == "table":
        return {
            "kind": "table",
            "steps": ["x = (features - center) / scale, as float32, columns in the order given"],
            "columns": data.columns,
            "center": data.center,
            "scale": data.scale,
        }
    steps = ["pixels as float32 / 255 (uint8 -> [0, 1]), channels first (C, H, W)"]
    if data.resize:
        steps.insert(0, f"resize to {data.resize[0]}x{data.resize[1]} (height x width)")
    if data.binarize != "none":
        steps.append(
            "binarise: the run was trained on Bernoulli draws of the [0, 1] images; "
            "feed 0/1 values (e.g. x > 0.5, or np.random.binomial(1, x))"
        )
    return {"kind": "image", "steps": steps, "binarize": data.binarize}


def describe(
    config, model: nn.Module, fmt: str, specs: dict, io: dict[str, dict]
) -> dict[str, Any]:
    table = config.data.kind == "table"
    x_range = None if table else [0, 1]  # binarised runs: 0 or 1
    data_shape = ["batch", *model.shape]
    latent = ["batch", model.latent_dim]
    tensors = {
        "x": {"shape": data_shape, "dtype": "float32", "range": x_range},
        "z_mean": {"shape": latent, "dtype": "float32", "range": None},
        "z_log_var": {"shape": latent, "dtype": "float32", "range": None},
        "z": {"shape": latent, "dtype": "float32", "range": None},
        "noise": {"shape": latent, "dtype": "float32", "range": None},
        "logits": {"shape": data_shape, "dtype": "float32", "range": None},
        "x_mean": {
            "shape": data_shape,
            "dtype": "float32",
            "range": None if config.model.likelihood != "bernoulli" else [0, 1],
        },
    }
    hierarchical = "prior" in specs
    result: dict[str, Any] = {"graphs": {}}
    for name, (_, inputs, outputs) in specs.items():
        result["graphs"][name] = {
            "file": io[name]["file"],
            "inputs": [{"name": n, **tensors[n]} for n in inputs],
            "outputs": [{"name": n, **tensors[n]} for n in outputs],
            "parity_max_abs_diff": io[name]["parity"],
        }
    if hierarchical:
        sampling = (
            "draw noise ~ N(0, I) shaped (batch, latent_dim) with numpy, run prior on it to "
            "get z, then run decoder on z (it reads z's first latent_layers[0] entries, z_1)"
        )
    else:
        sampling = "draw z ~ N(0, I) shaped (batch, latent_dim) with numpy and run decoder on z"
    return {
        "vaekit_version": VERSION,
        "format_version": FORMAT_VERSION,
        "export_format": fmt,
        "model": config.model.name,
        "arch": config.model.arch,
        "likelihood": config.model.likelihood,
        "latent_dim": model.latent_dim,
        **({"latent_layers": list(model.sizes)} if hierarchical else {}),
        "data_shape": list(model.shape),
        "preprocessing": preprocessing(config),
        "sampling": sampling,
        "parity_tolerance": PARITY_TOLERANCE,
        **result,
    }


# --- export -----------------------------------------------------------------------------
def export_run(
    run_dir: str | Path, fmt: str = "onnx", output: str | Path | None = None, seed: int = 0
) -> dict[str, Any]:
    """Export the run's graphs in `fmt` (onnx | torchscript) to `output` (default
    RUN/export); returns {"output", "format", "files", "parity": {graph.output: max abs}}."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    run = open_run(run_dir, "cpu")  # the run folder's errors first: they name what to fix
    if fmt == "onnx":
        _require_onnx()
    model, config = run.model, run.config
    check_exportable(model, config.model.name)
    out = Path(output) if output is not None else run.path / "export"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    specs = graphs(model)
    values = parity_inputs(model, config.data.kind or "image", config.data.binarize != "none", seed)
    # the temporary folder goes in the nearest existing folder above `out` (same file
    # system, so the final renames are atomic); missing parents are made only on success
    base = next(p for p in out.absolute().parents if p.is_dir())
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=base))
    try:
        io: dict[str, dict] = {}
        parity: dict[str, float] = {}
        for name, (module, inputs, outputs) in specs.items():
            module.eval()
            value = values[inputs[0]]
            path = tmp / f"{name}{FORMATS[fmt]}"
            with torch.no_grad():
                expected = [t.numpy() for t in as_tuple(module(value))]
                if fmt == "onnx":
                    save_onnx(module, value[:2], path, inputs, outputs)
                    got = run_onnx(path, inputs[0], value.numpy())
                else:
                    save_torchscript(module, value[:2], path)
                    got = run_torchscript(path, value)
            diffs = {}
            for label, a, b in zip(outputs, expected, got, strict=True):
                diffs[label] = float(np.max(np.abs(a - b))) if a.size else 0.0
                parity[f"{name}.{label}"] = diffs[label]
            io[name] = {"file": path.name, "parity": diffs}
            worst = max(diffs, key=diffs.get)
            if not diffs[worst] <= PARITY_TOLERANCE:
                raise RunError(
                    f"{run.path}: exported {name} differs from the PyTorch model: "
                    f"max abs difference of {worst} {diffs[worst]:.3g} > {PARITY_TOLERANCE:g}; "
                    "nothing was written"
                )
        meta = describe(config, model, fmt, specs, io)
        (tmp / "export.json").write_text(json.dumps(meta, indent=2) + "\n")
        names = [*(io[n]["file"] for n in specs), "export.json"]
        _move_into(tmp, out, names)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "output": out,
        "format": fmt,
        "files": [out / n for n in names],
        "parity": parity,
        "latent_dim": model.latent_dim,
    }


def _move_into(tmp: Path, out: Path, names: list[str]) -> None:
    """The finished files into `out`: the whole folder renamed if `out` is new, else each
    file renamed over its old version."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
        return
    for name in names:
        os.replace(tmp / name, out / name)
