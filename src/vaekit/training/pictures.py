"""The pictures every finished run leaves: samples, reconstructions, latent plot, loss curves.

What is drawn depends on the data's kind: images get grids of samples and reconstructions;
a table gets no image grids (a row of features is not a picture) but a per-feature plot of
test rows against their reconstructions (feature_reconstructions.png).
"""

from __future__ import annotations

import torch
from torch import nn

from vaekit import plots
from vaekit.config.runs import RunFolder
from vaekit.data.datasets import DataSplits
from vaekit.models.base import label_args
from vaekit.models.batched import encode_all, reconstruct_all

TABLE_ROWS = 1000  # test rows in a table run's per-feature reconstruction plot


def write_outputs(run: RunFolder, model: nn.Module, data: DataSplits, history: list[dict]) -> None:
    """The pictures every run leaves: samples, reconstructions, latent plot, loss curves."""
    model.eval()
    device = next(model.parameters()).device
    if data.kind == "image":
        write_image_pictures(run, model, data, device)
    else:
        write_table_pictures(run, model, data, device)
    subset = data.test.head(5000)
    z_mean = encode_all(model, subset.storage, subset.y, batch_size=1000)[0]
    plots.save_latent_scatter(z_mean, subset.y, run.file("latent.png"), data.classes)
    if history and "train_loss" in history[0]:
        plots.save_loss_curves(history, run.file("loss_curves.png"))


def write_image_pictures(
    run: RunFolder, model: nn.Module, data: DataSplits, device: torch.device
) -> None:
    """Image grids: samples from the prior, test images above their reconstructions and,
    for M2, analogies."""
    n_samples = run.load_config().n_samples
    generator = torch.Generator(device=device).manual_seed(0)
    plots.save_grid(model.sample(n_samples, generator=generator), run.file("samples.png"))
    originals = data.test.head(32).x.to(device)  # (32, C, H, W) float32
    labels = label_args(model, None if data.test.y is None else data.test.y[:32], device)
    plots.save_reconstructions(
        originals, model.reconstruct(originals, **labels), run.file("reconstructions.png")
    )
    if model.has_analogies:  # M2: style from a test image, content from each label
        inputs = data.test.head(10).x.to(device)
        plots.save_analogies(
            inputs, model.analogies(inputs), run.file("analogies.png"), data.classes
        )


def write_table_pictures(
    run: RunFolder, model: nn.Module, data: DataSplits, device: torch.device
) -> None:
    """Per-feature scatter of test rows (N, D) against their reconstructions."""
    rows = data.test.head(TABLE_ROWS)
    recons = reconstruct_all(model, rows.storage, rows.y, batch_size=500)
    names = run.load_config().data.columns
    plots.save_feature_reconstructions(
        rows.x, recons, run.file("feature_reconstructions.png"), names
    )
