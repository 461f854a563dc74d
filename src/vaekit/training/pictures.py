"""The pictures every finished run leaves: samples, reconstructions, latent plot, loss curves.

What is drawn depends on the data's kind: images get grids of samples and reconstructions;
a table gets no image grids (a row of features is not a picture) but a per-feature plot of
test rows against their reconstructions (feature_reconstructions.png); sequences get text
files instead: samples.txt (samples.smi for molecules) and reconstructions.txt.
"""

from __future__ import annotations

import torch
from torch import nn

from vaekit import plots
from vaekit.config.runs import RunFolder
from vaekit.core.files import atomic_write_text
from vaekit.data.datasets import DataSplits
from vaekit.data.sequences import is_molecules, vocabulary_of
from vaekit.evaluation.sequences import reconstruction_pairs, sample_strings, sequence_lines
from vaekit.models.base import label_args
from vaekit.models.batched import encode_all, reconstruct_all

TABLE_ROWS = 1000  # test rows in a table run's per-feature reconstruction plot
SEQUENCE_RECONSTRUCTIONS = 1000  # test sequences in reconstructions.txt
# every file write_outputs may leave in a run folder: exploration writes beside them, never
# over them (apps/explore.check_beside_training)
TRAINING_FILES = frozenset(
    {
        "samples.png",
        "reconstructions.png",
        "analogies.png",
        "feature_reconstructions.png",
        "latent.png",
        "loss_curves.png",
        "samples.txt",
        "samples.smi",
        "reconstructions.txt",
    }
)


def write_outputs(run: RunFolder, model: nn.Module, data: DataSplits, history: list[dict]) -> None:
    """The pictures every run leaves: samples, reconstructions, latent plot, loss curves."""
    model.eval()
    device = next(model.parameters()).device
    if data.kind == "image":
        write_image_pictures(run, model, data, device)
    elif data.kind == "sequence":
        write_sequence_texts(run, model, data)
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


def sequence_files(molecules: bool) -> tuple[str, str]:
    """The names of a sequence run's sample and reconstruction files."""
    return ("samples.smi" if molecules else "samples.txt"), "reconstructions.txt"


def write_sequence_texts(run: RunFolder, model: nn.Module, data: DataSplits) -> None:
    """Samples from the prior (one per line, temperature 1) and up to
    SEQUENCE_RECONSTRUCTIONS test sequences as 'original -> greedy decoding' lines under
    their exact-match rate."""
    config = run.load_config()
    vocabulary = vocabulary_of(config.data)
    samples_name, reconstructions_name = sequence_files(is_molecules(config.data))
    samples = sample_strings(model, vocabulary, config.n_samples, seed=0)
    atomic_write_text(run.file(samples_name), "".join(f"{s}\n" for s in samples))
    test = data.test.spread(SEQUENCE_RECONSTRUCTIONS)
    pairs, rate = reconstruction_pairs(model, test, vocabulary)
    header = (
        f"# exact match of greedy decoding: {rate:.2%} of {len(test)} test sequences "
        "(= exact, x differs)\n"
    )
    lines = "".join(f"{line}\n" for line in sequence_lines(pairs))
    atomic_write_text(run.file(reconstructions_name), header + lines)
