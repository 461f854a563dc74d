"""Train several models on the same data with the same budget and compare them in one table.

`compare(["pca", "ae", "vae"], "runs/compare")` trains (or reuses) one run folder per model
under the output folder, all from one base config (same data, epochs, batch size, latent
size, seed), evaluates each on the test set and writes

  comparison.json  every number, with units and the sample counts behind it
  comparison.md    the table
  comparison.png   reconstructions of the same test images and prior samples, one row per model

Columns: reconstruction MSE (every model); -ELBO and the IWAE bound on the NLL (models with
an ELBO); sample quality in the feature space of vaekit's cached classifier (Frechet
distance, precision, recall; `quality.py`); linear-probe accuracy of the latent codes;
parameter count; training time.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from torch import nn

from vaekit import plots
from vaekit.config.runs import RunFolder
from vaekit.config.schema import RunConfig
from vaekit.core.errors import ConfigError, RunError
from vaekit.core.files import atomic_write_text
from vaekit.data.binarize import evaluation_set
from vaekit.data.datasets import DataSplits
from vaekit.data.registry import load_data
from vaekit.evaluation.metrics import iwae_bounds, reconstruction_mse
from vaekit.evaluation.quality import feature_classifier, sample_quality
from vaekit.evaluation.run import MAX_QUALITY_SAMPLES, elbo_sections, probe_section
from vaekit.models.base import label_args
from vaekit.models.loading import open_run
from vaekit.training.fit import train
from vaekit.training.trainer import check_objective

# name -> changes to the base config: each is one of the tutorials' variants
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "pca": {"model": {"name": "pca"}},
    "ae": {"model": {"name": "ae"}},
    "vae": {},
    "beta-vae": {"train": {"beta": 4.0}},
    "cvae": {"model": {"name": "cvae"}},
    "iwae": {"train": {"iw_k": 5}},
    "free-bits": {"train": {"free_bits": 0.5}},
    "conv-vae": {"model": {"arch": "conv", "hidden": [256], "channels": [32, 64]}},
    "resnet-vae": {"model": {"arch": "resnet", "hidden": [256], "channels": [32, 64]}},
}
FILES = ("comparison.json", "comparison.md", "comparison.png")
FIGURE_IMAGES = 8  # test images reconstructed and prior samples drawn per model in the figure


def variant_config(base: RunConfig, variant: str) -> RunConfig:
    """The base config with a variant's changes, named after the variant."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown model {variant!r} for compare (known: {', '.join(VARIANTS)})")
    raw = base.to_dict()
    for section, changes in VARIANTS[variant].items():
        raw[section].update(copy.deepcopy(changes))
    raw["name"], raw["preset"] = variant, base.preset
    raw["model"]["n_classes"] = None  # recorded from the data by models that use labels
    return RunConfig.from_dict(raw)


def compare(
    models: list[str],
    out: str | Path,
    base: RunConfig | None = None,
    *,
    data: DataSplits | None = None,
    iwae_k: int = 100,
    n_samples: int | None = None,
    probes: bool = True,
    quality: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or reuse) each model under `out`/<model>, evaluate all on the test set, and
    write comparison.json, comparison.md and comparison.png into `out`. Returns the report.

    `base`: the shared config (default: the reference VAE's). `iwae_k`: importance samples
    per test image for the NLL bound. `n_samples`: generated images for sample quality
    (default: as many as test images, at most 10,000)."""
    if not models or len(set(models)) != len(models):
        raise ConfigError(f"--models needs distinct names, got {','.join(models) or 'none'}")
    configs = [variant_config(base or RunConfig(), m) for m in models]  # checks names first

    for config in configs:  # an impossible combination fails now, not after training others
        check_objective(config)
    started = time.perf_counter()
    out = Path(out)
    data = data or load_data(configs[0].data)
    test = evaluation_set(data.test, configs[0].data.binarize)
    rows, trained = [], []
    for name, config in zip(models, configs):
        model, history = train_or_reuse(config, out / name, data, progress)
        trained.append(model)
        rows.append(evaluate_model(name, config, model, history, data, test, iwae_k, probes))
        say(progress, f"compare: {name} done ({time.perf_counter() - started:.0f} s so far)")
    if quality:
        add_sample_quality(rows, trained, data, test, configs[0], n_samples, progress)
    report = {
        "dataset": data.name,
        "n_train": len(data.train),
        "n_test": len(test),
        "data_dims": math.prod(data.shape),
        "base_config": configs[0].to_dict(),
        "iwae_k": iwae_k,
        "units": {
            "reconstruction_mse": "squared error per pixel, intensities in [0, 1], test set",
            "neg_elbo, recon, kl, iwae_nll": "nats per test image (log-likelihoods summed over pixels)",
            "frechet_distance": "squared units of the feature classifier's 128-d feature space",
            "precision, recall, linear_probe": "fractions",
            "train_seconds": "seconds of training steps (PCA: the fit), this machine",
        },
        "models": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    save_figure(trained, models, test, out / "comparison.png")
    report["seconds_total"] = time.perf_counter() - started
    atomic_write_text(out / "comparison.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "comparison.md", format_markdown(report))
    return report


def say(progress: bool, message: str) -> None:
    """A progress line on stderr."""
    if progress:
        print(message, file=sys.stderr)


def train_or_reuse(
    config: RunConfig, path: Path, data: DataSplits, progress: bool
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """A finished run in `path` with the same config is reused; otherwise train one there."""

    if RunFolder(path).weights_path.exists():
        reused = open_run(path)
        saved = reused.config.to_dict()
        wanted = config.to_dict()
        for raw in (saved, wanted):  # fields recorded from the data when training starts
            raw["data"].update(shape=None, kind=None)
            raw["model"]["n_classes"] = None
        if saved != wanted:
            raise RunError(
                f"{path}: holds a different run; remove it or choose another output folder"
            )
        say(progress, f"compare: reusing the finished run {path}")
        return reused.model, reused.folder.read_metrics()
    run = train(config, path, progress=progress, data=data)
    return run.model, run.history


def count_parameters(model: nn.Module) -> int:
    """Numbers the model stores: trainable weights, and fitted values such as PCA's."""
    return sum(p.numel() for p in model.parameters())


def evaluate_model(
    name: str,
    config: RunConfig,
    model: nn.Module,
    history: list[dict[str, Any]],
    data: DataSplits,
    test,
    iwae_k: int,
    probes: bool,
) -> dict[str, Any]:
    """One row of the comparison: every metric defined for this model, None elsewhere."""
    batch = config.train.eval_batch_size
    row: dict[str, Any] = {
        "name": name,
        "model": config.model.name,
        "changes": VARIANTS[name],
        "parameters": count_parameters(model),
        "train_seconds": history[-1]["train_seconds"] if history else None,
        "epochs": config.train.epochs if model.gradient_trained else 0,
        "reconstruction_mse": reconstruction_mse(model, test, batch),
        "neg_elbo": None,
        "recon": None,
        "kl": None,
        "iwae_nll": None,
        "linear_probe": None,
        "sample_quality": None,
    }
    if model.has_elbo:
        sections = elbo_sections(model, test, batch)
        row |= {key: sections["elbo"][key] for key in ("neg_elbo", "recon", "kl")}
        row["active_units"] = sections["latent"]["active_units"]
        if iwae_k:
            row["iwae_nll"] = iwae_bounds(model, test, [iwae_k])[0]["nll"]
    probe = probe_section(model, data, test, config.data.binarize, batch) if probes else {}
    if probe and "skipped" not in probe:
        row["linear_probe"] = probe["linear_accuracy"]
        row["probe"] = probe
    return row


def add_sample_quality(
    rows: list[dict[str, Any]],
    models: list[nn.Module],
    data: DataSplits,
    test,
    config: RunConfig,
    n_samples: int | None,
    progress: bool,
) -> None:
    """Frechet distance, precision and recall of each model's samples (one shared classifier)."""

    if data.train.y is None or data.test.y is None:
        for row in rows:
            row["sample_quality"] = {"skipped": f"{data.name} has no labels for the classifier"}
        return
    binary = config.data.binarize == "dynamic"
    classifier = feature_classifier(data, binary, progress=progress)
    real = test.head(MAX_QUALITY_SAMPLES)
    n = n_samples or len(real)
    for row, model in zip(rows, models):
        row["sample_quality"] = sample_quality(model, real, classifier, n, binary, seed=0)


# --- the figure -----------------------------------------------------------------------------
@torch.no_grad()
def figure_rows(models: list[nn.Module], names: list[str], test) -> list[tuple]:
    """(name, reconstructions, samples) per model, after a row of the test images."""
    originals = test.x[:FIGURE_IMAGES]
    labels = None if test.y is None else test.y[:FIGURE_IMAGES]
    rows: list[tuple] = [("test images", originals, None)]
    for name, model in zip(names, models):
        device = next(model.parameters()).device
        recon = model.reconstruct(originals.to(device), **label_args(model, labels, device))
        generator = torch.Generator(device=device).manual_seed(0)
        rows.append((name, recon, model.sample(FIGURE_IMAGES, generator=generator)))
    return rows


def save_figure(models: list[nn.Module], names: list[str], test, path: Path) -> Path:
    """Left: the same test images reconstructed by each model (originals on top); right:
    prior samples of each model (same seed)."""

    rows = figure_rows(models, names, test)
    fig, axes = plt.subplots(
        len(rows), 2, figsize=(12, 0.85 * len(rows) + 0.5), squeeze=False, layout="constrained"
    )
    for (name, left, right), (ax_left, ax_right) in zip(rows, axes):
        for ax, images in ((ax_left, left), (ax_right, right)):
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if images is not None:
                grid = plots.image_grid(images, FIGURE_IMAGES)
                ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255)
        ax_left.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
    axes[0, 0].set_title("reconstructions of these test images", fontsize=10)
    axes[0, 1].set_title("samples (AE: Gaussian fitted to its codes)", fontsize=10)
    return plots.save_figure(fig, path)


# --- the table ------------------------------------------------------------------------------
def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def format_markdown(report: dict[str, Any]) -> str:
    """comparison.md: the setup in words, the table, and which model wins what."""
    rows = report["models"]
    base = report["base_config"]
    k = report["iwae_k"]
    quality = next((r["sample_quality"] for r in rows if r["sample_quality"]), None) or {}
    lines = [
        f"# Model comparison on {report['dataset']}",
        "",
        f"Trained on {report['n_train']} training images ({report['data_dims']} dims each), "
        f"evaluated on {report['n_test']} test images. Shared budget: "
        f"{base['train']['epochs']} epochs, batch {base['train']['batch_size']}, "
        f"Adam lr {base['train']['lr']}, seed {base['train']['seed']}, latent size "
        f"{base['model']['latent_dim']}, arch {base['model']['arch']} "
        f"(hidden {base['model']['hidden']}), likelihood {base['model']['likelihood']}. "
        "PCA is fitted in one step.",
        "",
        "| model | recon MSE ↓ | -ELBO ↓ | NLL (IWAE) ↓ | Fréchet dist. ↓ | precision ↑ | "
        "recall ↑ | linear probe ↑ | parameters | train time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        sq = (
            r["sample_quality"]
            if r["sample_quality"] and "skipped" not in r["sample_quality"]
            else {}
        )
        lines.append(
            f"| {r['name']} | {_fmt(r['reconstruction_mse'], '.5f')} | {_fmt(r['neg_elbo'], '.2f')} "
            f"| {_fmt(r['iwae_nll'], '.2f')} | {_fmt(sq.get('frechet_distance'), '.2f')} "
            f"| {_fmt(sq.get('precision'), '.1%')} | {_fmt(sq.get('recall'), '.1%')} "
            f"| {_fmt(r['linear_probe'], '.1%')} | {r['parameters']:,} "
            f"| {_fmt(r['train_seconds'], '.0f')} s |"
        )
    lines += ["", *_verdict(rows), "", *_legend(report, k, quality)]
    return "\n".join(lines) + "\n"


def _best(rows: list[dict[str, Any]], key, lowest: bool = True) -> str | None:
    scored = [(key(r), r["name"]) for r in rows if key(r) is not None]
    if not scored:
        return None
    return (min(scored) if lowest else max(scored))[1]


def _quality(key: str):
    """The sample-quality figure `key` of a row, None where it was not measured."""

    def get(row: dict[str, Any]) -> float | None:
        quality = row["sample_quality"]
        return quality.get(key) if quality else None

    return get


def _verdict(rows: list[dict[str, Any]]) -> list[str]:
    """Which model wins each figure (samples: precision says how many look real, recall how
    much of the test set they cover, the Fréchet distance mixes both)."""
    found = [
        ("Best reconstructions (lowest MSE)", _best(rows, lambda r: r["reconstruction_mse"])),
        ("Most realistic samples (highest precision)", _best(rows, _quality("precision"), False)),
        (
            "Samples covering most of the data (highest recall)",
            _best(rows, _quality("recall"), False),
        ),
        ("Lowest Fréchet distance of samples", _best(rows, _quality("frechet_distance"))),
        ("Best likelihood bound (lowest IWAE NLL)", _best(rows, lambda r: r["iwae_nll"])),
    ]
    return [f"- {what}: **{name}**" for what, name in found if name is not None]


def _legend(report: dict[str, Any], k: int, quality: dict[str, Any]) -> list[str]:
    n = report["n_test"]
    lines = [
        "Units and sample counts:",
        f"- recon MSE: squared error per pixel on [0,1] intensities between each of the {n} "
        "test images and its reconstruction (VAE: decoded posterior mean; AE: decoded code; "
        "PCA: projection).",
        f"- -ELBO: nats per test image, 1 posterior sample per image, averaged over {n} images; "
        f"NLL (IWAE): the importance-weighted bound with k={k} samples per image. Both only "
        "where a model defines a likelihood (not AE, not PCA).",
    ]
    if quality and "skipped" not in quality:
        clf = quality["classifier"]
        lines.append(
            f"- Fréchet distance, precision, recall (k={quality['neighbours']}): "
            f"{quality['n_generated']} generated images ({quality['generated']}) against "
            f"{quality['n_real']} test images, in the 128-d features of vaekit's "
            f"{clf['dataset']} classifier (test accuracy {clf['test_accuracy']:.2%}); "
            "not an Inception FID. AE samples come from a Gaussian fitted to its training codes,"
            " PCA samples from N(0, diag(component variances))."
        )
    lines += [
        "- linear probe: test accuracy of logistic regression on the latent codes (means), "
        f"fitted on the {report['n_train']} training codes.",
        "- train time: seconds of training steps (PCA: the fit) on this machine; parameters: "
        "numbers stored by the model.",
        f"- total time of this comparison: {report.get('seconds_total', 0):.0f} s.",
    ]
    return lines
