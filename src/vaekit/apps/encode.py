"""Applying a trained run to data: the inputs every application shares, and `encode`.

`open_inputs(run, data, split)` gives the run's model and the examples to work on: every
example of `data` (a folder, .npy/.npz or CSV, read with the run's options: its image
colour and size, its table columns and standardisation statistics), or, without `data`,
the `split` of the run's own dataset. Each example has an id (file path, table id or row
number, array index, or "split/index" for built-in datasets) and a label where the data has
labels. Anomaly scoring (`anomaly.py`), denoising (`denoise.py`) and `encode` build on it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vaekit.config.runs import RunFolder
from vaekit.config.schema import DataConfig, RunConfig
from vaekit.core.errors import ConfigError, DataError
from vaekit.core.files import atomic_write_bytes, atomic_write_text
from vaekit.data.arrays import READERS, Items, items_for_path, read_items, split_indices
from vaekit.data.datasets import Dataset
from vaekit.data.registry import load_data
from vaekit.data.sequences import is_molecules, vocabulary_of
from vaekit.evaluation.metrics import class_probabilities, known_label_accuracy
from vaekit.models.base import gaussian_kl
from vaekit.models.batched import encode_all
from vaekit.models.loading import open_run
from vaekit.models.m2 import known_classes
from vaekit.models.registry import model_class


@dataclass
class Inputs:
    """A run's model and the examples an application works on."""

    run: RunFolder
    config: RunConfig
    model: nn.Module
    items: Items
    source: str  # what the examples are, in words: a path or "mnist, test split"

    @property
    def is_images(self) -> bool:
        """False for tables and vectors (kind "table", examples shaped (D,))."""
        return self.items.kind == "image"

    def texts(self) -> Texts | None:
        """A sequence run's examples as strings (SMILES for molecules), for the output
        files to show what each id is; None for other runs."""
        data = self.config.data
        if data.kind != "sequence":
            return None
        name = "smiles" if is_molecules(data) else "text"
        return Texts(name, vocabulary_of(data).decode(self.items.x))


@dataclass
class Texts:
    """A column of strings beside the ids: its name ("smiles" or "text") and values."""

    name: str
    values: list[str]


def data_items(config: DataConfig, path: str | Path | None, split: str = "test") -> Items:
    """Every example of `path` read with `config`'s options, or the `split` of its dataset."""
    config = replace(config, limit_train=None, limit_test=None)
    if path is not None:
        if config.shape and config.name == "folder":
            config.color = "grayscale" if config.shape[0] == 1 else "rgb"
        return items_for_path(path, config)
    if config.name in READERS:
        items = read_items(config)
        parts = split_indices(items, config)
        if split not in parts:
            raise ConfigError(f"{items.source} has no split {split!r} (known: train, test)")
        return items.subset(parts[split])
    splits = load_data(config)
    chosen = {"train": splits.train, "test": splits.test, "valid": splits.valid}.get(split)
    if chosen is None:
        known = "train, test" + (", valid" if splits.valid is not None else "")
        raise ConfigError(f"{splits.name} has no split {split!r} (known: {known})")
    ids = [f"{split}/{i}" for i in range(len(chosen))]
    return Items(chosen.x, chosen.y, ids, splits.classes, f"{splits.name}, {split} split")


def open_inputs(
    run_dir: str | Path, data: str | Path | None = None, split: str = "test", device: str = "cpu"
) -> Inputs:
    """The run's model (unconditional models only) and the examples to apply it to."""

    run = open_run(run_dir, device)
    if run.model.needs_labels:
        raise ConfigError(
            f"{run.path}: a conditional ({run.config.model.name}) run; applications take unconditional models"
        )
    items = check_shape(data_items(run.config.data, data, split), run.model)
    return Inputs(run.folder, run.config, run.model, items, items.source)


def check_shape(items: Items, model: nn.Module) -> Items:
    """`items`, if its examples have the shape the model takes (a DataError otherwise)."""
    if tuple(items.x.shape[1:]) != tuple(model.shape):
        raise DataError(
            f"{items.source}: examples are shaped {tuple(items.x.shape[1:])}, the run's model "
            f"takes {tuple(model.shape)}"
        )
    return items


# --- encode -------------------------------------------------------------------------------
def encoding_columns(latent_dim: int, variances: bool) -> list[str]:
    names = [f"z_mean_{d}" for d in range(latent_dim)]
    return names + ([f"z_log_var_{d}" for d in range(latent_dim)] if variances else [])


def encoding_npy(
    ids: list[str],
    labels: list[str] | None,
    mean: torch.Tensor,
    log_var: torch.Tensor | None,
    texts: Texts | None = None,
) -> bytes:
    """A structured .npy: fields id, smiles/text (sequence runs), label (if any), z_mean and
    z_log_var (if any), no pickle."""
    width = lambda names: max(1, *(len(s) for s in names))  # noqa: E731
    fields = [("id", f"<U{width(ids)}")]
    fields += [(texts.name, f"<U{width(texts.values)}")] if texts is not None else []
    fields += [("label", f"<U{width(labels)}")] if labels is not None else []
    fields += [("z_mean", "<f4", (mean.shape[1],))]
    fields += [("z_log_var", "<f4", (mean.shape[1],))] if log_var is not None else []
    table = np.zeros(len(ids), dtype=fields)
    table["id"] = ids
    if texts is not None:
        table[texts.name] = texts.values
    if labels is not None:
        table["label"] = labels
    table["z_mean"] = mean.numpy()
    if log_var is not None:
        table["z_log_var"] = log_var.numpy()
    buffer = io.BytesIO()
    np.save(buffer, table, allow_pickle=False)
    return buffer.getvalue()


def id_columns(
    ids: list[str], texts: Texts | None, labels: list[str] | None
) -> tuple[list[str], list[list[str]]]:
    """The leading columns of a per-example CSV: id, smiles/text (sequence runs), label (if
    any); their header and each example's values."""
    header = ["id"] + ([texts.name] if texts else []) + (["label"] if labels is not None else [])
    rows = [
        [ids[i]]
        + ([texts.values[i]] if texts else [])
        + ([labels[i]] if labels is not None else [])
        for i in range(len(ids))
    ]
    return header, rows


def encoding_csv(
    ids: list[str],
    labels: list[str] | None,
    mean: torch.Tensor,
    log_var: torch.Tensor | None,
    texts: Texts | None = None,
) -> str:
    """CSV: id, smiles/text (sequence runs), label (if any), z_mean_0..., z_log_var_0... (if any)."""
    values = mean if log_var is None else torch.cat([mean, log_var], 1)
    header, firsts = id_columns(ids, texts, labels)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header + encoding_columns(mean.shape[1], log_var is not None))
    for first, row in zip(firsts, values.tolist()):
        writer.writerow(first + [f"{v:.7g}" for v in row])
    return buffer.getvalue()


def encode_run(
    run_dir: str | Path,
    output: str | Path,
    data: str | Path | None = None,
    *,
    split: str = "test",
    device: str = "cpu",
) -> dict[str, Any]:
    """Write the latent means and log-variances of every example to `output` (.npy or .csv)."""
    output = Path(output)
    if output.suffix.lower() not in (".npy", ".csv"):
        raise ConfigError(f"{output}: output must be a .npy or .csv file")
    inputs = open_inputs(run_dir, data, split, device)
    mean, log_var = encode_all(inputs.model, inputs.items.x)
    ids, labels, texts = inputs.items.ids, inputs.items.label_names(), inputs.texts()
    if output.suffix.lower() == ".npy":
        atomic_write_bytes(output, encoding_npy(ids, labels, mean, log_var, texts))
    else:
        atomic_write_text(output, encoding_csv(ids, labels, mean, log_var, texts))
    return {
        "output": str(output),
        "n_examples": len(ids),
        "latent_dim": mean.shape[1],
        "log_variances": log_var is not None,
        "labels": labels is not None,
        "source": inputs.source,
        "mean_kl": _mean_kl(mean, log_var),
    }


def _mean_kl(mean: torch.Tensor, log_var: torch.Tensor | None) -> float | None:
    """Average KL(q(z|x) || N(0, I)), nats per example: do the codes carry information?"""

    return None if log_var is None else gaussian_kl(mean, log_var).sum(1).double().mean().item()


# --- classify (models with a classifier: M2) ------------------------------------------------
def classify_run(
    run_dir: str | Path,
    output: str | Path | None = None,
    data: str | Path | None = None,
    *,
    split: str = "test",
    device: str = "cpu",
) -> dict[str, Any]:
    """Predict the class of every example with the run's classifier q(y|x) and write a CSV
    (id, label if known, predicted, then the probability of each class) to `output`
    (default RUN/predictions.csv). With labels, the report holds the accuracy."""

    model_config = RunFolder(run_dir).load_config().model
    if not model_class(model_config).can_classify:
        raise ConfigError(
            f"{run_dir}: a {model_config.name} run has no classifier (train one with --model m2)"
        )
    inputs = open_inputs(run_dir, data, split, device)
    output = Path(output) if output is not None else inputs.run.file("predictions.csv")
    if output.suffix.lower() != ".csv":
        raise ConfigError(f"{output}: output must be a .csv file")
    probabilities = class_probabilities(inputs.model, Dataset(inputs.items.x, None, "inputs"))
    predicted = probabilities.argmax(1)
    names, _ = known_classes(inputs.items.classes)  # without an "unlabelled" class
    names = names or [str(c) for c in range(probabilities.shape[1])]
    labels = inputs.items.label_names()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header, firsts = id_columns(inputs.items.ids, None, labels)
    writer.writerow(header + ["predicted"] + [f"p_{name}" for name in names])
    for i, (first, row) in enumerate(zip(firsts, probabilities.tolist())):
        writer.writerow(first + [names[predicted[i]]] + [f"{p:.6f}" for p in row])
    atomic_write_text(output, buffer.getvalue())
    accuracy = None
    if inputs.items.y is not None:
        accuracy, _ = known_label_accuracy(predicted, inputs.items.y, inputs.items.classes)
    return {
        "output": str(output),
        "n_examples": len(predicted),
        "accuracy": accuracy,
        "source": inputs.source,
    }
