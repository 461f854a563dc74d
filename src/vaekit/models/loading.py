from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vaekit.config.runs import RunFolder, load_weights_into
from vaekit.config.schema import RunConfig
from vaekit.core.device import pick_device
from vaekit.core.errors import RunError
from vaekit.core.files import load_tensors
from vaekit.models.base import Model
from vaekit.models.registry import build_model


@dataclass
class OpenedRun:
    """A run folder opened for use: its paths, its config and its trained model (eval mode)."""

    folder: RunFolder
    config: RunConfig
    model: nn.Module

    @property
    def path(self) -> Path:
        return self.folder.path


def open_run(run_dir: str | Path, device: str = "cpu", *, final_weights: bool = False) -> OpenedRun:
    """Open a run folder: check it, read its config, build its model and load the weights.

    Every job opens runs here, so the checks and their messages are written once. The
    weights are the final ones (model.safetensors), else the checkpoint's; with
    `final_weights` only a finished run is accepted (evaluation reports finished runs)."""
    folder = RunFolder(run_dir).require()
    if final_weights and not folder.weights_path.exists():
        raise RunError(
            f"{folder.weights_path}: weights file not found (training unfinished? "
            f"continue it with: vaekit train --resume {folder.path})"
        )
    config = folder.load_config()
    shape = tuple(config.data.shape) if config.data.shape else None
    if shape is None:
        raise RunError(f"{folder.config_path}: the data shape is not recorded")
    model = build_model(config.model, shape)
    load_weights_into(model, *_weights(folder))
    return OpenedRun(folder, config, model.to(pick_device(device)).eval())


def _weights(folder: RunFolder) -> tuple[dict[str, torch.Tensor], Path]:
    """The model tensors of a run and the file they come from: final weights, else the
    model part of the checkpoint."""
    if folder.weights_path.exists():
        tensors, _ = load_tensors(folder.weights_path)
        return tensors, folder.weights_path
    if folder.checkpoint_path.exists():
        all_tensors, _ = load_tensors(folder.checkpoint_path)
        tensors = {k[6:]: v for k, v in all_tensors.items() if k.startswith("model.")}
        return tensors, folder.checkpoint_path
    raise RunError(f"{folder.path}: no weights (model.safetensors) and no checkpoint")


def load(run_dir: str | Path, device: str = "cpu") -> nn.Module:
    """The trained model of a run folder, in eval mode (final weights, else the checkpoint's)."""
    return open_run(run_dir, device).model


class FixedLabel(Model):
    """A label-conditioned model (cvae, m2, m1m2) seen as an unconditional one: it decodes,
    samples and (without a classifier of its own) encodes with one fixed class, so the
    exploration pictures show that class in the styles the latent space holds."""

    def __init__(self, model: nn.Module, label: int) -> None:
        super().__init__()
        self.model, self.label = model, label
        self.latent_dim, self.shape = model.latent_dim, model.shape
        self.likelihood = model.likelihood
        self.has_analogies = model.has_analogies  # semi-supervised models: style x content
        if model.has_analogies:
            self.analogies = model.analogies

    def _y(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.full((n,), self.label, dtype=torch.long, device=device)

    def encode(self, x: torch.Tensor, y=None):
        if self.model.can_classify:  # its own guess of each image's label
            return self.model.encode(x)
        return self.model.encode(x, self._y(len(x), x.device))

    def decode(self, z: torch.Tensor, y=None) -> torch.Tensor:
        return self.model.decode(z, self._y(len(z), z.device))

    def decode_mean(self, z: torch.Tensor, y=None) -> torch.Tensor:
        return self.model.decode_mean(z, self._y(len(z), z.device))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y=None) -> torch.Tensor:
        return self.decode_mean(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int, generator=None, y=None) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model.sample(n, generator, y=self._y(n, device))
