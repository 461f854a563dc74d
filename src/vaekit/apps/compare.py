"""Train several models on the same data with the same budget and compare them in one table.

`compare(["pca", "ae", "vae"], "runs/compare")` trains (or reuses) one run folder per model
under the output folder, all from one base config (same data, epochs, batch size, latent
size, seed), evaluates each on the test set and writes

  comparison.json  every number, with units and the sample counts behind it
  comparison.md    the table (each column with its unit) and which model wins what
  comparison.png   images: reconstructions of the same test images and prior samples, one
                   row per model; tables: each feature's distribution in the test rows and
                   in every model's samples

Columns: reconstruction MSE (every model); -ELBO and the IWAE bound on the NLL (models with
an ELBO); sample quality (Frechet distance, precision, recall; `quality.py`) in two feature
spaces, vaekit's cached classifier's and pixel PCA's; linear-probe accuracy of the latent
codes; parameter count; training time.

A winner is named only when it is one: a fraction (precision, recall) that differs from the
runner-up's by at most two standard errors, an IWAE bound within two standard errors, or
any other number equal as shown, is a tie; and a sample-quality winner must win in both
feature spaces (the classifier's features can favour what pixel statistics do not).
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
from vaekit.data.memory import NAME as MEMORY
from vaekit.data.memory import fingerprint
from vaekit.data.registry import load_data
from vaekit.evaluation.metrics import iwae_bounds, reconstruction_mse
from vaekit.evaluation.run import elbo_sections, measure_quality, probe_section, quality_setup
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
    rows, trained, new_runs = [], [], []
    for name, config in zip(models, configs):
        model, history, is_new = train_or_reuse(config, out / name, data, progress)
        trained.append(model)
        new_runs += [str(out / name)] if is_new else []
        rows.append(evaluate_model(name, config, model, history, data, test, iwae_k, probes))
        say(progress, f"compare: {name} done ({time.perf_counter() - started:.0f} s so far)")
    if quality:
        setup = quality_setup(data, test, configs[0].data.binarize, n_samples, progress)
        for row, model in zip(rows, trained):
            row["sample_quality"] = measure_quality(model, setup)
    report = {
        "dataset": data.name,
        "kind": data.kind,
        "n_train": len(data.train),
        "n_test": len(test),
        "data_dims": math.prod(data.shape),
        "base_config": configs[0].to_dict(),
        "iwae_k": iwae_k,
        "units": report_units(data.kind),
        "models": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    if data.kind == "image":
        save_figure(trained, models, test, out / "comparison.png")
    else:
        columns = RunFolder(out / models[0]).load_config().data.columns
        save_table_figure(trained, models, test, out / "comparison.png", columns)
    report["seconds_total"] = time.perf_counter() - started
    report["files"] = [str(out / name) for name in FILES]
    report["trained_runs"] = new_runs  # run folders written by this call (reused ones not)
    atomic_write_text(out / "comparison.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "comparison.md", format_markdown(report))
    return report


def report_units(kind: str) -> dict[str, str]:
    """The unit of every number in comparison.json, for data of `kind` (image or table)."""
    example = "image" if kind == "image" else "example"
    mse = "squared error per pixel, intensities in [0, 1]"
    if kind != "image":
        mse = "squared error per feature, in the data's units"
    return {
        "reconstruction_mse": f"{mse}, test set",
        "neg_elbo, recon, kl, iwae_nll, iwae_stderr": f"nats per test {example} "
        "(log-likelihoods summed over the data dimensions)",
        "frechet_distance": "squared units of the feature classifier's 128-d feature space",
        "pixel_pca.frechet_distance": "squared pixel intensities (pixel PCA coordinates)",
        "precision, recall, linear_probe": "fractions",
        "train_seconds": "seconds of training steps (PCA: the fit), this machine",
    }


def say(progress: bool, message: str) -> None:
    """A progress line on stderr."""
    if progress:
        print(message, file=sys.stderr)


def train_or_reuse(
    config: RunConfig, path: Path, data: DataSplits, progress: bool
) -> tuple[nn.Module, list[dict[str, Any]], bool]:
    """A finished run in `path` with the same config is reused; otherwise train one there.
    Returns the model, its metrics and whether it was trained now."""

    if RunFolder(path).weights_path.exists():
        reused = open_run(path)
        saved = reused.config.to_dict()
        wanted = config.to_dict()
        for raw in (saved, wanted):  # fields recorded from the data when training starts
            raw["data"].update(shape=None, kind=None)
            raw["model"]["n_classes"] = None
        recorded = saved["data"]
        if recorded["name"] == MEMORY and recorded.get("fingerprint") == fingerprint(data):
            for key in ("name", "path", "fingerprint"):  # data given from Python: the same
                recorded[key] = wanted["data"].get(key)
        if saved != wanted:
            raise RunError(
                f"{path}: holds a different run; remove it or choose another output folder"
            )
        say(progress, f"compare: reusing the finished run {path}")
        return reused.model, reused.folder.read_metrics(), False
    run = train(config, path, progress=progress, data=data)
    return run.model, run.history, True


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
        "iwae_stderr": None,
        "linear_probe": None,
        "sample_quality": None,
    }
    if model.has_elbo:
        sections = elbo_sections(model, test, batch)
        row |= {key: sections["elbo"][key] for key in ("neg_elbo", "recon", "kl")}
        row["active_units"] = sections["latent"]["active_units"]
        if iwae_k:
            bound = iwae_bounds(model, test, [iwae_k])[0]
            row["iwae_nll"], row["iwae_stderr"] = bound["nll"], bound["stderr"]
    probe = probe_section(model, data, test, config.data.binarize, batch) if probes else {}
    if probe and "skipped" not in probe:
        row["linear_probe"] = probe["linear_accuracy"]
        row["probe"] = probe
    return row


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


def save_table_figure(
    models: list[nn.Module],
    names: list[str],
    test,
    path: Path,
    columns: list[str] | None = None,
) -> Path:
    """Tables: each feature's distribution in the test rows and in each model's samples
    (as many as test rows, same seed): a row of features is not a picture."""
    samples = {}
    with torch.no_grad():
        for name, model in zip(names, models):
            generator = torch.Generator(device=next(model.parameters()).device).manual_seed(0)
            samples[name] = model.sample(len(test), generator=generator).cpu()
    title = f"Test rows and each model's samples ({len(test)} of each)"
    return plots.save_feature_distributions(test.x, samples, path, title, columns)


# --- the table ------------------------------------------------------------------------------
def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _cell(quality: dict[str, Any] | None, key: str, spec: str) -> str:
    """A sample-quality cell: the classifier's value / pixel PCA's (— where not measured)."""
    if not quality or "skipped" in quality:
        return "—"
    pca = quality.get("pixel_pca") or {}
    return f"{_fmt(quality.get(key), spec)} / {_fmt(pca.get(key), spec)}"


def format_markdown(report: dict[str, Any]) -> str:
    """comparison.md: the setup in words, the table (units in the headers), and which
    model wins what, ties and disagreements said as such."""
    rows = report["models"]
    base = report["base_config"]
    k = report["iwae_k"]
    image = report.get("kind", "image") == "image"
    noun = "image" if image else "row"
    quality = next((r["sample_quality"] for r in rows if r["sample_quality"]), None) or {}
    mse_unit = "per pixel" if image else "per feature"
    lines = [
        f"# Model comparison on {report['dataset']}",
        "",
        f"Trained on {report['n_train']} training {noun}s ({report['data_dims']} dims each), "
        f"evaluated on {report['n_test']} test {noun}s. Shared budget: "
        f"{base['train']['epochs']} epochs, batch {base['train']['batch_size']}, "
        f"Adam lr {base['train']['lr']}, seed {base['train']['seed']}, latent size "
        f"{base['model']['latent_dim']}, arch {base['model']['arch']} "
        f"(hidden {base['model']['hidden']}), likelihood {base['model']['likelihood']}. "
        "PCA is fitted in one step.",
        "",
        f"| model | recon MSE ({mse_unit}) ↓ | -ELBO (nats/{noun}) ↓ | NLL, IWAE k={k} "
        f"(nats/{noun}) ↓ | Fréchet dist. (feature units² / intensity²) ↓ | "
        "precision (%, classifier / pixel PCA) ↑ | recall (%, classifier / pixel PCA) ↑ | "
        f"linear probe (% of test {noun}s) ↑ | parameters (count) | train time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        sq = r["sample_quality"]
        lines.append(
            f"| {r['name']} | {_fmt(r['reconstruction_mse'], '.5f')} | {_fmt(r['neg_elbo'], '.2f')} "
            f"| {_fmt(r['iwae_nll'], '.2f')} | {_cell(sq, 'frechet_distance', '.2f')} "
            f"| {_cell(sq, 'precision', '.1%')} | {_cell(sq, 'recall', '.1%')} "
            f"| {_fmt(r['linear_probe'], '.1%')} | {r['parameters']:,} "
            f"| {_fmt(r['train_seconds'], '.0f')} |"
        )
    lines += ["", *_verdict(rows), "", *_legend(report, k, quality)]
    return "\n".join(lines) + "\n"


# --- who wins: ties and the two feature spaces ----------------------------------------------
def _fraction_margin(a: float, b: float, n_a: int, n_b: int) -> float:
    """Two standard errors of the difference of two shares of n_a and n_b examples."""
    p = (a + b) / 2
    return 2 * math.sqrt(p * (1 - p) * (1 / n_a + 1 / n_b))


def _leaders(rows: list[dict[str, Any]], value, lowest: bool, tied) -> list[str]:
    """Names of the best row by `value` and of every row tied with it (`tied(best, row)`);
    [] when no row has the value."""
    scored = [r for r in rows if value(r) is not None]
    if not scored:
        return []
    best = (min if lowest else max)(scored, key=value)
    return [best["name"]] + [r["name"] for r in scored if r is not best and tied(best, r)]


def _shown_equal(spec: str):
    """Tie rule for numbers without a standard error: equal as the table shows them."""
    return lambda value: lambda a, b: format(value(a), spec) == format(value(b), spec)


def _quality_value(key: str, space: str):
    """A row's sample-quality `key` in `space` (classifier or pixel_pca), None if unmeasured."""

    def get(row: dict[str, Any]) -> float | None:
        quality = row["sample_quality"]
        if not quality or "skipped" in quality:
            return None
        return (quality if space == "classifier" else quality.get("pixel_pca") or {}).get(key)

    return get


def _quality_leaders(rows: list[dict[str, Any]], key: str, space: str) -> list[str]:
    value = _quality_value(key, space)
    if key == "frechet_distance":
        return _leaders(rows, value, True, _shown_equal(".2f")(value))
    count = "n_generated" if key == "precision" else "n_real"

    def tied(a: dict[str, Any], b: dict[str, Any]) -> bool:
        n_a, n_b = a["sample_quality"][count], b["sample_quality"][count]
        return abs(value(a) - value(b)) <= _fraction_margin(value(a), value(b), n_a, n_b)

    return _leaders(rows, value, False, tied)


def _say(leaders: list[str], why: str) -> str:
    """A verdict: the one winner in bold, or the tie."""
    if len(leaders) == 1:
        return f"**{leaders[0]}**"
    return f"tie between {', '.join(leaders)} ({why})"


def _say_samples(rows: list[dict[str, Any]], key: str) -> str | None:
    """A sample-quality verdict: a winner only where both feature spaces name the same one."""
    classifier = _quality_leaders(rows, key, "classifier")
    pca = _quality_leaders(rows, key, "pixel_pca")
    if not classifier:
        return None
    if len(classifier) == 1 and classifier == pca:
        return f"**{classifier[0]}** (in the classifier's features and in pixel PCA)"

    def side(leaders: list[str]) -> str:
        if not leaders:
            return "not measured"
        return f"{leaders[0]} leads" if len(leaders) == 1 else f"tie between {', '.join(leaders)}"

    return f"no winner: {side(classifier)} in the classifier's features, {side(pca)} in pixel PCA"


def _verdict(rows: list[dict[str, Any]]) -> list[str]:
    """Which model wins each figure (samples: precision says how many look real, recall how
    much of the test set they cover, the Fréchet distance mixes both)."""
    mse = lambda r: r["reconstruction_mse"]  # noqa: E731
    nll = lambda r: r["iwae_nll"]  # noqa: E731

    def nll_tied(a: dict[str, Any], b: dict[str, Any]) -> bool:
        margin = 2 * math.hypot(a.get("iwae_stderr") or 0.0, b.get("iwae_stderr") or 0.0)
        return abs(a["iwae_nll"] - b["iwae_nll"]) <= margin

    mse_leaders = _leaders(rows, mse, True, _shown_equal(".5f")(mse))
    nll_leaders = _leaders(rows, nll, True, nll_tied)
    found = [
        ("Best reconstructions (lowest MSE)", mse_leaders and _say(mse_leaders, "equal as shown")),
        ("Most realistic samples (highest precision)", _say_samples(rows, "precision")),
        ("Samples covering most of the data (highest recall)", _say_samples(rows, "recall")),
        ("Lowest Fréchet distance of samples", _say_samples(rows, "frechet_distance")),
        (
            "Best likelihood bound (lowest IWAE NLL)",
            nll_leaders and _say(nll_leaders, "within 2 standard errors"),
        ),
    ]
    return [f"- {what}: {said}" for what, said in found if said]


def _legend(report: dict[str, Any], k: int, quality: dict[str, Any]) -> list[str]:
    n = report["n_test"]
    image = report.get("kind", "image") == "image"
    noun = "image" if image else "row"
    mse = "squared error per pixel on [0,1] intensities" if image else "squared error per feature"
    lines = [
        "Units and sample counts:",
        f"- recon MSE: {mse} between each of the {n} test {noun}s and its reconstruction "
        "(VAE: decoded posterior mean; AE: decoded code; PCA: projection).",
        f"- -ELBO: nats per test {noun}, 1 posterior sample per {noun}, averaged over {n} "
        f"{noun}s; NLL (IWAE): the importance-weighted bound with k={k} samples per {noun}. "
        "Both only where a model defines a likelihood (not AE, not PCA).",
    ]
    if quality and "skipped" not in quality:
        clf = quality["classifier"]
        pca = quality.get("pixel_pca") or {}
        lines.append(
            f"- Fréchet distance, precision, recall (k={quality['neighbours']}): "
            f"{quality['n_generated']} generated images ({quality['generated']}) against "
            f"{quality['n_real']} test images, in two feature spaces: the 128-d features of "
            f"vaekit's {clf['dataset']} classifier (test accuracy {clf['test_accuracy']:.2%}; "
            "not an Inception FID), then the first "
            f"{pca.get('components', '?')} principal components of the training images' "
            "pixels. AE samples come from a Gaussian fitted to its training codes, PCA "
            "samples from N(0, diag(component variances))."
        )
    elif quality:
        lines.append(f"- sample quality withheld: {quality['skipped']}.")
    lines += [
        "- Winners: a share (precision, recall) within 2 standard errors of the best one, an "
        "IWAE NLL within 2 standard errors, or another number equal as shown, is a tie; a "
        "sample-quality winner is named only when both feature spaces name it.",
        f"- linear probe: test accuracy of logistic regression on the latent codes (means), "
        f"fitted on the {report['n_train']} training codes.",
        "- train time: seconds of training steps (PCA: the fit) on this machine; parameters: "
        "numbers stored by the model.",
        f"- total time of this comparison: {report.get('seconds_total', 0):.0f} s.",
    ]
    return lines
