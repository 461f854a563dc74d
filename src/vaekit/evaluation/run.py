"""Evaluation of a trained model: numbers a paper could quote, each with its unit and sample count.

- `evaluate_elbo`: -ELBO, reconstruction and KL (nats per example), bits/dim, KL per latent
  dimension, active units. Training calls it at the end of every epoch.
- `iwae_bounds`: the importance-weighted bound (Burda et al. 2015) as a negative
  log-likelihood estimate, for several k at once, in bounded memory.
- `evaluate_run`: everything above plus reconstruction MSE, linear-probe and k-NN accuracy
  of the latent means, and sample quality (`quality.py`); writes `evaluation.json`.

Deterministic: posterior samples come from generators with fixed seeds, so the same weights
always give the same numbers (and training's own random stream is untouched).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from vaekit.config.schema import DataConfig
from vaekit.core.errors import ConfigError
from vaekit.core.files import atomic_write_text
from vaekit.data.binarize import binarization_note, evaluation_set
from vaekit.data.datasets import Dataset, DataSplits
from vaekit.data.registry import load_data
from vaekit.evaluation.metrics import (
    ACTIVE_UNIT_THRESHOLD,
    classification_accuracy,
    collapse_warning,
    data_dims,
    evaluate_elbo,
    iwae_bounds,
    latent_means,
    probe_accuracy,
    reconstruction_mse,
)
from vaekit.evaluation.quality import (
    FeatureClassifier,
    PixelPCA,
    feature_classifier,
    pixel_pca,
    sample_quality,
    too_few,
)
from vaekit.evaluation.sequences import exact_match_rate
from vaekit.models.loading import open_run

MAX_QUALITY_SAMPLES = 10_000
EVALUATION_FILE = "evaluation.json"
# unlabelled datasets whose sample quality is measured with a labelled relative's classifier
FEATURE_DATASETS = {"binarized-mnist": "mnist"}


def units(kind: str = "image") -> dict[str, str]:
    """The unit of every number of a report on data of `kind` (image, table or sequence)."""
    if kind == "sequence":
        return {
            "elbo, iwae.nll": "nats per sequence (log-likelihoods summed over the tokens)",
            "nats_per_token": "nats per sequence / mean tokens per sequence (<eos> counted)",
            "exact_match": "share reproduced token for token by greedy decoding of E[z|x]",
            "accuracies": "fractions of the examples counted in n_*",
        }
    if kind != "image":
        return {
            "elbo, iwae.nll": "nats per example (log-likelihoods summed over the features)",
            "reconstruction_mse": "squared error per feature, in the data's units",
            "accuracies": "fractions of the examples counted in n_*",
        }
    return {
        "elbo, iwae.nll": "nats per image (log-likelihoods summed over the pixels)",
        "bits_per_dim": "nats / (data_dims * ln 2)",
        "reconstruction_mse": "squared error per pixel, intensities in [0, 1]",
        "accuracies, precision, recall": "fractions of the examples counted in n_*",
        "frechet_distance": "squared units of the feature classifier's 128-d feature space",
        "pixel_pca.frechet_distance": "squared pixel intensities (pixel PCA coordinates)",
    }


# --- importance-weighted bound ----------------------------------------------------------


# --- reconstructions and latent probes --------------------------------------------------


# --- the whole evaluation ---------------------------------------------------------------


def _resolve(run_or_model, data, binarize, device):
    """(model, run folder or None, DataConfig or None, DataSplits, binarize)."""

    run = None
    if isinstance(run_or_model, nn.Module):
        model = run_or_model.to(device).eval()
        config = data if isinstance(data, DataConfig) else None
    else:
        opened = open_run(run_or_model, device, final_weights=True)
        model, run = opened.model, opened.folder
        config = data if isinstance(data, DataConfig) else opened.config.data
    if not isinstance(data, DataSplits):
        config = config or DataConfig()
        data = load_data(replace(config, limit_train=None, limit_test=None))
    if binarize is None:
        binarize = config.binarize if config is not None else "none"
    return model, run, config, data, binarize


def _split(data: DataSplits, split: str) -> Dataset:

    chosen = {"train": data.train, "test": data.test, "valid": data.valid}.get(split)
    if chosen is None:
        known = "train, test" + (", valid" if data.valid is not None else "")
        raise ConfigError(f"{data.name} has no split {split!r} (known: {known})")
    return chosen


def _quality_classifier(data: DataSplits, binary: bool, progress: bool):
    """The feature classifier for `data` (a labelled relative's for unlabelled data)."""

    if data.train.y is None or data.test.y is None:
        relative = FEATURE_DATASETS.get(data.name)
        if relative is None:
            return None
        data = load_data(DataConfig(name=relative))
        binary = True
    return feature_classifier(data, binary, progress=progress)


@dataclass
class QualitySetup:
    """What sample quality is measured with: real images, the generated count, the two
    feature spaces; or `skipped`, one line saying why it is withheld."""

    real: Dataset
    n_generated: int
    binary: bool
    classifier: FeatureClassifier | None = None
    pca: PixelPCA | None = None
    skipped: str | None = None


def quality_setup(
    splits: DataSplits,
    evaluated: Dataset,
    binarize: str = "none",
    n_samples: int | None = None,
    progress: bool = True,
) -> QualitySetup:
    """The feature spaces for the sample quality of models of `splits`, checked against
    `evaluated` (at most MAX_QUALITY_SAMPLES real images; as many generated by default).
    Binarised data (dynamic, or binarized-mnist) is compared with Bernoulli draws of the
    samples. Too few images or a table are found before a classifier is trained."""
    binary = binarize == "dynamic" or splits.name == "binarized-mnist"
    real = evaluated.head(MAX_QUALITY_SAMPLES)
    setup = QualitySetup(real, n_samples or len(real), binary)
    if evaluated.kind != "image":
        setup.skipped = "sample quality needs images (its feature classifier is a CNN)"
        return setup
    setup.skipped = too_few(len(real), setup.n_generated)
    if setup.skipped:
        return setup
    setup.classifier = _quality_classifier(splits, binary, progress)
    if setup.classifier is None:
        setup.skipped = f"{splits.name} has no labels to train a feature classifier on"
        return setup
    setup.pca = pixel_pca(splits.train)
    return setup


def measure_quality(model: nn.Module, setup: QualitySetup, seed: int = 0) -> dict[str, Any]:
    """`sample_quality` of the model's samples with `setup`, or {"skipped": why}."""
    if setup.skipped:
        return {"skipped": setup.skipped}
    return sample_quality(
        model, setup.real, setup.classifier, setup.n_generated, setup.binary, seed, setup.pca
    )


def evaluate_run(
    run_or_model: str | Path | nn.Module,
    *,
    data: DataSplits | Any = None,
    split: str = "test",
    k: int | Sequence[int] = 5000,
    limit: int | None = None,
    n_samples: int | None = None,
    probes: bool = True,
    quality: bool = True,
    binarize: str | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    device: str = "cpu",
    json_path: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a run folder (or a model) and return the report as a dict.

    `data`: a DataConfig or DataSplits (default: the run's dataset); the limits of a
    DataConfig are dropped (whole splits), use `limit` to evaluate fewer examples.
    `k`: one or several importance-sample counts for the IWAE bound. `limit`: evaluate the
    first N examples of `split` only. `n_samples`: generated images for sample quality
    (default: as many as evaluated images, at most 10,000). `binarize`: "none" or "dynamic"
    (default: the run's setting). The report goes to RUN/evaluation.json and `json_path`.
    """

    ks = [k] if isinstance(k, int) else list(k)
    if not ks or min(ks) < 1:
        raise ConfigError(f"k must be one or more sample counts >= 1, got {k!r}")
    model, run, _, splits, binarize = _resolve(run_or_model, data, binarize, device)
    evaluated = evaluation_set(_split(splits, split), binarize).head(limit)
    report: dict[str, Any] = {
        "run": str(run.path) if run else None,
        "dataset": splits.name,
        "split": split,
        "n_examples": len(evaluated),
        "kind": evaluated.kind,  # image | table | sequence: only images have bits/dim
        "data_dims": data_dims(evaluated),  # sequences: mean tokens per sequence
        "binarization": binarization_note(
            splits.name, binarize, getattr(model.likelihood, "name", "bernoulli")
        ),
        "units": units(evaluated.kind),
        "seed": seed,
    }
    report["elbo"] = report["latent"] = report["iwae"] = None  # models without an ELBO
    if model.has_elbo:
        report |= elbo_sections(model, evaluated, batch_size, seed)
        report["iwae"] = iwae_bounds(model, evaluated, ks, seed, progress=progress)
    report |= reconstruction_section(model, evaluated, batch_size)
    report["classification"] = None  # models with a classifier (M2) report its accuracy
    if model.can_classify and evaluated.y is not None:
        report["classification"] = classification_accuracy(
            model, evaluated, batch_size, splits.classes
        )
    report["probes"] = None
    if probes:
        report["probes"] = probe_section(model, splits, evaluated, binarize, batch_size)
    report["sample_quality"] = None
    if quality and evaluated.kind == "sequence":
        report["sample_quality"] = {"skipped": "image quality metrics; for molecules see sample"}
    elif quality:
        setup = quality_setup(splits, evaluated, binarize, n_samples, progress)
        report["sample_quality"] = measure_quality(model, setup, seed)
    text = json.dumps(report, indent=2) + "\n"
    if run is not None:
        atomic_write_text(run.file(EVALUATION_FILE), text)
    if json_path is not None:
        atomic_write_text(Path(json_path), text)
    return report


def reconstruction_section(model: nn.Module, data: Dataset, batch_size: int) -> dict[str, Any]:
    """How well the model reconstructs `data`: the squared error per value, or for
    sequences the exact-match rate of greedy decoding."""
    if data.kind == "sequence":
        return {"reconstruction_mse": None, "reconstruction": exact_match_rate(model, data)}
    return {"reconstruction_mse": reconstruction_mse(model, data, batch_size)}


def elbo_sections(
    model: nn.Module, data: Dataset, batch_size: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """The report's ELBO and latent-usage sections (models with an ELBO); `vaekit compare`
    takes its -ELBO columns from them too."""
    elbo = evaluate_elbo(model, data, batch_size, seed)
    latent = {
        "kl_per_dim": elbo["kl_per_dim"],
        "active_units": elbo["active_units"],
        "latent_dim": elbo["latent_dim"],
        "threshold": ACTIVE_UNIT_THRESHOLD,
        "warning": collapse_warning(elbo),
    }
    return {
        "elbo": {
            key: elbo[key]
            for key in ("neg_elbo", "recon", "kl", "bits_per_dim", "nats_per_token")
            if key in elbo
        },
        "latent": latent,
    }


def probe_section(
    model: nn.Module, splits: DataSplits, evaluated: Dataset, binarize: str, batch_size: int
) -> dict[str, Any]:
    """Linear-probe and k-NN accuracy of the latent means, fitted on the training split
    (binarised as for evaluation); {"skipped": why} for unlabelled data."""
    if splits.train.y is None or evaluated.y is None:
        return {"skipped": f"{splits.name} has no labels"}
    train = evaluation_set(splits.train, binarize)
    return probe_accuracy(
        latent_means(model, train, batch_size),
        train.y,
        latent_means(model, evaluated, batch_size),
        evaluated.y,
    )


# --- the table --------------------------------------------------------------------------
Row = tuple[str, str, str, str]  # quantity, value, unit, what it is computed from


def format_report(report: dict[str, Any]) -> str:
    """The report as a table: quantity, value, unit, and the samples behind each number."""
    noun = {"image": "images", "sequence": "sequences"}.get(report.get("kind", "image"), "examples")
    images = f"{report['n_examples']} {report['split']} {noun}"
    dims = f"{report['data_dims']} dims"
    if noun == "sequences":
        dims = f"{report['data_dims']:.1f} tokens on average"
    rows = _elbo_rows(report, images) + _iwae_rows(report, images)
    rows += _other_rows(report, images, noun)
    if noun != "images":  # bits/dim is an image unit: a table reports nats per example
        rows = [row for row in rows if row[2] != "bits/dim"]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{report['dataset']}, {report['split']} split: {report['n_examples']} {noun} of "
        f"{dims}; binarisation: {report['binarization']}",
        "",
    ]
    for quantity, value, unit, basis in rows:
        line = f"{quantity:<{widths[0]}}  {value:>{widths[1]}}  {unit:<{widths[2]}}  {basis}"
        lines.append(line.rstrip())
    latent = report["latent"]
    if latent:
        kl = " ".join(f"{v:.2f}" for v in latent["kl_per_dim"])
        lines += ["", f"KL per latent dimension (nats/example, {images}): {kl}"]
    if latent and latent["warning"]:
        lines.append(f"warning: {latent['warning']}")
    return "\n".join(lines)


def _elbo_rows(report: dict[str, Any], images: str) -> list[Row]:
    elbo, latent = report["elbo"], report["latent"]
    if elbo is None:
        return [("-ELBO, IWAE bound, KL", "skipped", "", "the model defines no likelihood bound")]
    basis = f"{images}, 1 posterior sample each"
    per_token = []
    if "nats_per_token" in elbo:
        per_token = [("-ELBO", f"{elbo['nats_per_token']:.4f}", "nats/token", basis)]
    return [
        ("-ELBO", f"{elbo['neg_elbo']:.2f}", "nats/example", basis),
        *per_token,
        ("  reconstruction -E_q[log p(x|z)]", f"{elbo['recon']:.2f}", "nats/example", basis),
        ("  KL(q(z|x) || p(z))", f"{elbo['kl']:.2f}", "nats/example", f"{images}, closed form"),
        ("-ELBO", f"{elbo['bits_per_dim']:.4f}", "bits/dim", basis),
        (
            f"active units (Cov_x E_q[z_d] > {latent['threshold']})",
            f"{latent['active_units']}/{latent['latent_dim']}",
            "latent dims",
            images,
        ),
    ]


def _iwae_rows(report: dict[str, Any], images: str) -> list[Row]:
    rows = []
    for row in report["iwae"] or []:
        basis = f"{images} x {row['k']} importance sample{'s' if row['k'] > 1 else ''}"
        basis += f", +-{row['stderr']:.2f} s.e. over {images.rsplit(' ', 1)[-1]}"
        if "seconds" in row:
            basis += f" ({row['seconds']:.0f} s for all k)"
        quantity = f"NLL, IWAE bound k={row['k']}"
        rows.append((quantity, f"{row['nll']:.2f}", "nats/example", basis))
        rows.append((quantity, f"{row['bits_per_dim']:.4f}", "bits/dim", ""))
        if "nats_per_token" in row:
            rows.append((quantity, f"{row['nats_per_token']:.4f}", "nats/token", ""))
    return rows


def _other_rows(report: dict[str, Any], images: str, noun: str = "images") -> list[Row]:
    share = f"of {noun}"
    if report.get("reconstruction"):  # sequences
        rate = f"{report['reconstruction']['exact_match']:.2%}"
        rows = [("exact match, greedy decoding of E[z|x]", rate, share, images)]
    else:
        mse = f"{report['reconstruction_mse']:.5f}"
        unit = "per pixel, [0,1]" if noun == "images" else "per feature, data units"
        rows = [("reconstruction MSE (posterior mean)", mse, unit, images)]
    if report.get("classification"):
        accuracy = f"{report['classification']['accuracy']:.2%}"
        rows.append(("classifier q(y|x) accuracy", accuracy, share, images))
    probes = report["probes"]
    if probes and "skipped" in probes:
        rows.append(("latent probes", "skipped", "", probes["skipped"]))
    elif probes:
        fit = f"fit on {probes['n_train']} train latent means, scored on {probes['n_test']}"
        rows += [
            ("linear probe accuracy", f"{probes['linear_accuracy']:.2%}", share, fit),
            (
                f"{probes['knn_neighbours']}-NN accuracy",
                f"{probes['knn_accuracy']:.2%}",
                share,
                fit,
            ),
            (
                "majority-class rate",
                f"{probes['chance_accuracy']:.2%}",
                share,
                f"{probes['n_test']} {noun}",
            ),
        ]
    return rows + _quality_rows(report["sample_quality"])


def _quality_rows(quality: dict[str, Any] | None) -> list[Row]:
    if not quality:
        return []
    if "skipped" in quality:
        return [("sample quality", "withheld", "", quality["skipped"])]
    clf = quality["classifier"]
    basis = (
        f"{quality['n_generated']} generated ({quality['generated']}) vs "
        f"{quality['n_real']} real images"
    )
    pca = quality.get("pixel_pca")
    in_pca = f"  in pixel PCA ({pca['components']} components)" if pca else ""
    rows = [
        (
            "Frechet distance (not Inception FID)",
            f"{quality['frechet_distance']:.2f}",
            "feature units^2",
            basis,
        ),
        *([(in_pca, f"{pca['frechet_distance']:.2f}", "intensity^2", basis)] if pca else []),
        ("precision (k=3)", f"{quality['precision']:.2%}", "of generated", basis),
        *([(in_pca, f"{pca['precision']:.2%}", "of generated", basis)] if pca else []),
        ("recall (k=3)", f"{quality['recall']:.2%}", "of real", basis),
        *([(in_pca, f"{pca['recall']:.2%}", "of real", basis)] if pca else []),
    ]
    binarised = " (binarised)" if clf["binary"] else ""
    test_images = f"{clf['n_test']} {clf['dataset']} test images{binarised}"
    rows.append(
        ("  feature classifier accuracy", f"{clf['test_accuracy']:.2%}", "of images", test_images)
    )
    if "majority_rate" in clf:
        majority = f"{clf['majority_rate']:.2%}"
        rows.append(("  majority-class rate", majority, "of images", test_images))
    return rows


def read_evaluation(path: Path) -> dict[str, Any] | None:
    """The run's evaluation.json as a dict, or None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"error": f"{path.name} is not valid JSON"}
    return value if isinstance(value, dict) else {"value": value}
