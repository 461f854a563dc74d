from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vaekit.config.runs import RunFolder, load_weights_into
from vaekit.core.device import pick_device
from vaekit.core.errors import RunError
from vaekit.core.files import load_tensors
from vaekit.models.base import Model
from vaekit.models.registry import build_model


def load(run_dir: str | Path, device: str = "cpu") -> nn.Module:
    """The trained model of a run folder, in eval mode (final weights, else the checkpoint's)."""
    run = RunFolder(run_dir).require()
    config = run.load_config()
    shape = tuple(config.data.shape) if config.data.shape else None
    if shape is None:
        raise RunError(f"{run.config_path}: the data shape is not recorded")
    model = build_model(config.model, shape)
    if run.weights_path.exists():
        tensors, _ = load_tensors(run.weights_path)
        source = run.weights_path
    elif run.checkpoint_path.exists():
        all_tensors, _ = load_tensors(run.checkpoint_path)
        tensors = {k[6:]: v for k, v in all_tensors.items() if k.startswith("model.")}
        source = run.checkpoint_path
    else:
        raise RunError(f"{run.path}: no weights (model.safetensors) and no checkpoint")
    load_weights_into(model, tensors, source)
    return model.to(pick_device(device)).eval()


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
