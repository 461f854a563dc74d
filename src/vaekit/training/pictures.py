"""The pictures every finished run leaves: samples, reconstructions, latent plot, loss curves."""

from __future__ import annotations

import torch
from torch import nn

from vaekit import plots
from vaekit.config.runs import RunFolder
from vaekit.data.batches import BatchIterator
from vaekit.data.datasets import DataSplits
from vaekit.models.base import label_args


def write_outputs(run: RunFolder, model: nn.Module, data: DataSplits, history: list[dict]) -> None:
    """The pictures every run leaves: samples, reconstructions, latent plot, loss curves."""
    model.eval()
    device = next(model.parameters()).device
    n_samples = run.load_config().n_samples
    generator = torch.Generator(device=device).manual_seed(0)
    plots.save_grid(model.sample(n_samples, generator=generator), run.file("samples.png"))
    originals = data.test.x[:32].to(device)
    labels = label_args(model, None if data.test.y is None else data.test.y[:32], device)
    plots.save_reconstructions(
        originals, model.reconstruct(originals, **labels), run.file("reconstructions.png")
    )
    subset = data.test.head(5000)
    with torch.no_grad():
        z_mean = torch.cat(
            [
                model.encode(x.to(device), **label_args(model, y, device))[0]
                for x, y in BatchIterator(subset.x, subset.y, 1000, shuffle=False)
            ]
        )
    plots.save_latent_scatter(z_mean, subset.y, run.file("latent.png"), data.classes)
    if model.has_analogies:  # M2: style from a test image, content from each label
        inputs = data.test.x[:10].to(device)
        plots.save_analogies(
            inputs, model.analogies(inputs), run.file("analogies.png"), data.classes
        )
    if history and "train_loss" in history[0]:
        plots.save_loss_curves(history, run.file("loss_curves.png"))
